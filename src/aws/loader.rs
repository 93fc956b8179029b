//! The AWS configuration of the binary's commands, loaded so that start-up stays quiet and quick.
//!
//! aws-config's own loader runs its region chain (`AWS_REGION`, the profile, then EC2 instance
//! metadata) on every load, and the binary loads more than once (discovery, the credentials
//! watcher, the SSM client). On a laptop each instance-metadata probe costs a connect timeout and
//! logs a warning. Here:
//!
//! - a region already known (`--region`, or the one in an RDS endpoint name) is handed to the
//!   loader, so the chain, and instance metadata, are never consulted;
//! - otherwise the chain runs once per profile for the whole process, with a single bounded
//!   instance-metadata attempt, and its answer (even "none") is reused by every later load.
//!
//! Credentials still come from aws-config's default chain, resolved lazily on first use.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;

use crate::aws::discover::{DbSource, Source};
use crate::cli::ServeArgs;

/// Time allowed for one instance-metadata connect, and for its answer (aws-config's defaults are
/// 1 s each with 4 attempts). Metadata answers within milliseconds where it exists.
const IMDS_TIMEOUT: Duration = Duration::from_millis(500);

/// The region each profile's chain found (`None` key: no named profile), looked up once.
fn regions() -> &'static Mutex<HashMap<Option<String>, Option<String>>> {
    static REGIONS: OnceLock<Mutex<HashMap<Option<String>, Option<String>>>> = OnceLock::new();
    REGIONS.get_or_init(Default::default)
}

/// The region the flags already name, without asking the AWS configuration: `--region`, else
/// the one in an RDS endpoint name given with `--db-endpoint`.
pub fn known_region(source: &Source, args: &ServeArgs) -> Option<String> {
    args.region.clone().or_else(|| match &source.db {
        DbSource::Endpoint { host, .. } => crate::iam::region_from_endpoint(host),
        _ => None,
    })
}

/// The region of the AWS configuration for `profile` (environment, profile file, then one
/// bounded instance-metadata attempt), looked up at most once per process.
pub async fn config_region(profile: Option<&str>) -> Option<String> {
    let key = profile.map(str::to_owned);
    if let Some(found) = regions().lock().expect("region cache").get(&key) {
        return found.clone();
    }
    let mut file = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(p) = profile {
        file = file.profile_name(p);
    }
    let imds = aws_config::imds::Client::builder()
        .max_attempts(1)
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .build();
    let chain = RegionProviderChain::first_try(
        aws_config::environment::EnvironmentVariableRegionProvider::new(),
    )
    .or_else(file.build())
    .or_else(
        aws_config::imds::region::ImdsRegionProvider::builder()
            .imds_client(imds)
            .build(),
    );
    let found = chain.region().await.map(|r| r.as_ref().to_owned());
    tracing::debug!(profile = ?key, region = ?found, "region from the AWS configuration");
    regions()
        .lock()
        .expect("region cache")
        .insert(key, found.clone());
    found
}

/// The region to use: `known` (from the flags, see [`known_region`]), else the AWS
/// configuration's ([`config_region`]).
pub async fn region(profile: Option<&str>, known: Option<String>) -> Option<String> {
    match known {
        Some(r) => Some(r),
        None => config_region(profile).await,
    }
}

/// The credentials provider of the default chain for `profile`, for calls in `region` (given,
/// so neither the loader nor the credentials chain runs a region lookup of its own). Nothing is
/// fetched yet: credentials are resolved on first use.
pub async fn credentials(profile: Option<&str>, region: &str) -> SharedCredentialsProvider {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_owned()));
    if let Some(name) = profile {
        loader = loader.profile_name(name);
    }
    loader
        .load()
        .await
        .credentials_provider()
        .unwrap_or_else(|| {
            // Only when a loader was told `no_credentials()`; make every request say so.
            SharedCredentialsProvider::new(
                aws_credential_types::credential_fn::provide_credentials_fn(|| async {
                    Err(CredentialsError::not_loaded(
                        "credentials were disabled in the AWS configuration",
                    ))
                }),
            )
        })
}

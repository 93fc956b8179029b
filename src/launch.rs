//! From a planned database ([`crate::config::Planned`]) to a running proxy: AWS discovery, the
//! validated [`Config`], the transport (direct, or a pool of SSM sessions that looks the bastion up
//! again for every new session), the token cache, and the start-up progress a person sees.
//!
//! `serve`, `exec`, `dsn`, `doctor` and `admin` all go through [`prepare`]; `doctor` and `admin`
//! then open their own connections instead of calling [`start`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::aws::api::{self, Api};
use crate::aws::discover::{self, DbSource, Resolved, TargetSpec};
use crate::aws::loader;
use crate::config::{self, Config, Planned};
use crate::iam::{self, TokenCache};
use crate::local::LocalProxy;
use crate::progress::Progress;
use crate::proxy::password::{PasswordSource, SecretCache};
use crate::ssm::{SsmConfig, TargetResolver};
use crate::tunnel::ssm::Ssm;
use crate::tunnel::{Connector, Direct};

/// How long start-up waits for the first SSM session before serving anyway (sessions keep being
/// retried in the background, and clients get a MySQL error that says why meanwhile).
pub const FIRST_SESSION_WAIT: Duration = Duration::from_secs(30);

/// A database whose configuration is known and whose AWS lookups are done.
pub struct Prepared {
    /// Its name.
    pub name: String,
    /// The validated configuration (endpoint, user and region filled in from discovery).
    pub cfg: Config,
    /// What discovery found.
    pub resolved: Resolved,
    /// The SSM target now, when the bytes go through Session Manager.
    pub target: Option<String>,
    /// The credentials provider.
    pub provider: SharedCredentialsProvider,
    /// The AWS API client, for the region of the database.
    pub api: Api,
}

/// A database being served.
pub struct Running {
    /// Its name.
    pub name: String,
    /// The proxy.
    pub local: LocalProxy,
    /// Its configuration.
    pub cfg: Config,
    /// The SSM pool, when used.
    pub ssm: Option<Ssm>,
}

/// Loads credentials, runs discovery and validates the configuration of one database.
pub async fn prepare(planned: &Planned, progress: &Progress) -> Result<Prepared> {
    let mut args = planned.args.clone();
    let source = config::source(&args)?;
    let profile = args.profile.clone();
    // The region first (from the flags when they name it, else looked up once), so that no
    // AWS configuration load below runs a region lookup, or probes instance metadata, again.
    let aws_region = loader::region(profile.as_deref(), loader::known_region(&source, &args)).await;
    let api_region = config::api_region(&source, &args, aws_region.clone())?;
    let provider = loader::credentials(profile.as_deref(), &api_region).await;
    let api = Api::new(provider.clone(), args.profile.clone(), api_region)
        .context("setting up TLS for AWS API calls")?;
    let what = match &source.db {
        DbSource::Endpoint { .. } => None,
        DbSource::Stack(s) => Some(format!("Reading CloudFormation stack {s}")),
        DbSource::Cluster(c) => Some(format!("Looking up DB cluster {c}")),
        DbSource::Instance(i) => Some(format!("Looking up DB instance {i}")),
    };
    let resolved = match what {
        None => discover::resolve(&api, &source)
            .await
            .map_err(|e| credentials_fix(e, profile.as_deref()))?,
        Some(doing) => {
            let step = progress.step(doing);
            match discover::resolve(&api, &source).await {
                Ok(r) => {
                    step.ok(format!("{}:{}", r.host, r.port));
                    r
                }
                Err(e) => {
                    step.fail("");
                    return Err(credentials_fix(e, profile.as_deref()));
                }
            }
        }
    };
    config::apply_discovered(&mut args, &resolved);
    config::discover_secret(&mut args, &resolved)?;
    let mut cfg = config::build(&args, aws_region)?;
    cfg.target = resolved.target.clone();
    let api = api.with_region(cfg.proxy.region.clone());
    let target = match &resolved.target {
        None => None,
        Some(TargetSpec::Fixed(t)) => Some(t.clone()),
        Some(spec) => {
            let step = progress.step(format!("Finding the bastion: {spec}"));
            match spec.resolve(&api).await {
                Ok(t) => {
                    step.ok(&t);
                    Some(t)
                }
                Err(e) => {
                    step.fail("");
                    return Err(credentials_fix(e, profile.as_deref()));
                }
            }
        }
    };
    Ok(Prepared {
        name: planned.name.clone(),
        cfg,
        resolved,
        target,
        provider,
        api,
    })
}

/// A discovery failure for the person starting the proxy: when no credentials could be loaded,
/// what to run or pass (the generic text of the credentials chain names no fix); anything else as
/// it is (an expired SSO login already names its `aws sso login --profile …`).
fn credentials_fix(e: discover::Error, profile: Option<&str>) -> anyhow::Error {
    let context = match &e {
        discover::Error::Api(api::Error::Credentials(
            iam::Error::NoCredentials { context, .. } | iam::Error::Credentials { context, .. },
        )) => context,
        _ => return e.into(),
    };
    let details = if context.is_empty() {
        String::new()
    } else {
        format!(" (details: {context})")
    };
    let profile = profile
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
    let fix = match profile {
        Some(p) => format!(
            "no usable AWS credentials for profile `{p}`: run `aws sso login --profile {p}` \
             (SSO) or `aws configure --profile {p}` (access keys), or pass another --profile"
        ),
        None => "no usable AWS credentials (looked in the environment, ~/.aws/config and \
                 ~/.aws/credentials, SSO, web identity, ECS and EC2 instance metadata): run \
                 `aws configure` (access keys), or `aws sso login --profile NAME` and pass \
                 --profile NAME (or set AWS_PROFILE=NAME), or set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY"
            .to_owned(),
    };
    anyhow::anyhow!("{fix}{details}")
}

/// Starts serving a prepared database.
pub async fn start(prepared: Prepared, progress: &Progress) -> Result<Running> {
    let Prepared {
        name,
        mut cfg,
        resolved,
        target,
        provider,
        api,
    } = prepared;
    if let Some(source) = password_source(&cfg, &api) {
        // Read once now: a person sees at start whether the secret can be read (and the first
        // client does not wait for it). Serving goes on either way; clients get the reason.
        let step = progress.step(format!(
            "Reading the database password from {}",
            source.describe()
        ));
        match source.credentials().await {
            Ok(c) => step.ok(format!("user {}", crate::proxy::printable(&c.username))),
            Err(e) => step.fail(format!("{e} (clients get this error until it is fixed)")),
        }
        cfg.proxy.upstream_password = Some(source);
    }
    let tokens = Arc::new(TokenCache::new(provider, cfg.profile.clone()));
    cfg.resolve_compression(target.is_some());
    let (connector, ssm): (Arc<dyn Connector>, _) = match &target {
        Some(target) => {
            let ssm = open_ssm(&cfg, &resolved, target, &api).await?;
            wait_first_session(
                &ssm,
                target,
                progress,
                " (still retrying; clients get a MySQL error meanwhile)",
            )
            .await;
            (Arc::new(ssm.clone()), Some(ssm))
        }
        None => (Arc::new(Direct::new(cfg.dial.clone())), None),
    };
    let local = LocalProxy::start_with(&cfg, connector, tokens).await?;
    Ok(Running {
        name,
        local,
        cfg,
        ssm,
    })
}

/// The Secrets Manager password source of `--secret` (already resolved from `auto` by
/// [`prepare`]), or `None` when logins use IAM tokens.
pub fn password_source(cfg: &Config, api: &Api) -> Option<Arc<dyn PasswordSource>> {
    let id = cfg.secret.as_ref()?;
    Some(Arc::new(SecretCache::secrets_manager(
        api.clone(),
        id.clone(),
    )))
}

/// Waits up to [`FIRST_SESSION_WAIT`] for the first live session of `ssm`, shown as a step; false
/// when none came up (the step says why, then `meanwhile`).
pub async fn wait_first_session(
    ssm: &Ssm,
    target: &str,
    progress: &Progress,
    meanwhile: &str,
) -> bool {
    let step = progress.step(format!("Opening an SSM session to {target}"));
    if ssm.pool().wait_live(1, FIRST_SESSION_WAIT).await {
        let detail = ssm
            .pool()
            .handshake_info()
            .map(|i| format!("agent {}, {:?} mode", i.agent_version, i.mode).to_lowercase())
            .unwrap_or_default();
        step.ok(detail);
        true
    } else {
        step.fail(format!(
            "{}{meanwhile}",
            ssm.pool()
                .last_error()
                .unwrap_or_else(|| "no session yet".into())
        ));
        false
    }
}

/// A resolver for the SSM pool that looks the target up again before every new session
/// (`None` for a fixed target).
fn target_resolver(spec: &TargetSpec, api: &Api) -> Option<TargetResolver> {
    if matches!(spec, TargetSpec::Fixed(_)) {
        return None;
    }
    let spec = spec.clone();
    let api = api.clone();
    Some(Arc::new(move || {
        let spec = spec.clone();
        let api = api.clone();
        Box::pin(async move { spec.resolve(&api).await.map_err(|e| e.to_string()) })
    }))
}

/// The SSM transport for `target`, following the bastion when it is discovered.
pub async fn open_ssm(cfg: &Config, resolved: &Resolved, target: &str, api: &Api) -> Result<Ssm> {
    let sdk = iam::load_sdk_config(cfg.profile.as_deref(), Some(&cfg.proxy.region)).await;
    let mut sc = SsmConfig::new(
        target.to_owned(),
        cfg.proxy.endpoint_host.clone(),
        cfg.proxy.endpoint_port,
        cfg.proxy.region.clone(),
    );
    if let Some(spec) = &resolved.target {
        sc.target_resolver = target_resolver(spec, api);
    }
    if let Some(n) = cfg.ssm_sessions {
        sc.sessions = n;
    }
    if let Some(t) = cfg.ssm_stall_timeout {
        sc.stall_timeout = t;
    }
    Ssm::new(sc, &sdk).context("starting the SSM session pool")
}

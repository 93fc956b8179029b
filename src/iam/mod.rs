//! RDS IAM authentication: the token that replaces a MySQL password.
//!
//! This module owns everything between "which AWS identity are we" and "here is the string to send
//! as a `mysql_clear_password` answer":
//!
//! - [`presign`] (in `token.rs`): the SigV4 query-string presign of an `rds-db` `connect` request,
//!   byte-identical to botocore's `generate_db_auth_token`. Pure, no I/O, no clock.
//! - [`region_from_endpoint`] (in `endpoint.rs`): the signing region read off an RDS endpoint name.
//! - [`TokenCache`] (in `cache.rs`): the production [`TokenSource`]. One token per
//!   [`TokenRequest`], refreshed ahead of expiry, single-flight per key, never logged.
//! - [`load_aws`] and [`credentials()`] (in `credentials.rs`): aws-config's default credentials
//!   chain and region, and the translation of its failures into [`Error`]s a person can act on.
//!
//! It does not own TLS or the MySQL exchange (the token is sent only over verified TLS by
//! `mysql`), nor discovery of the endpoint (`aws`).
//!
//! Secrets (secret access key, session token, the token itself) never appear in `Debug`,
//! `Display`, errors or logs produced here.

mod cache;
mod credentials;
mod endpoint;
mod token;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub use cache::{CREDENTIALS_MIN_VALIDITY, REFRESH_AGE, TokenCache};
pub use credentials::{
    CREDENTIALS_TIMEOUT, EXPIRY_WARNING, credentials, load_aws, load_sdk_config, watch_expiry,
};
pub use endpoint::region_from_endpoint;
pub use token::{AuthToken, TOKEN_LIFETIME, TokenRequest, presign};

/// Something that hands out RDS IAM tokens; the proxy holds an `Arc<dyn TokenSource>`.
///
/// [`TokenCache`] is the production implementation. Tests can wrap a static credentials provider
/// in a `TokenCache` or implement this trait with a fake.
pub trait TokenSource: Send + Sync + 'static {
    /// A token for `req`: a cached one while it is fresh, a newly minted one otherwise.
    fn token<'a>(
        &'a self,
        req: &'a TokenRequest,
    ) -> Pin<Box<dyn Future<Output = Result<AuthToken, Error>> + Send + 'a>>;

    /// Forget a cached token for `req` (called after the server rejected it, before one retry).
    fn invalidate(&self, req: &TokenRequest);

    /// How many tokens this source has minted, for metrics (0 when it does not count).
    fn mints(&self) -> u64 {
        0
    }
    /// Looks credentials up ahead of logins; returns when to do it again (`None`: no need). The
    /// default does nothing.
    fn warm(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Option<std::time::SystemTime>, Error>> + Send + '_>>
    {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// Why no token could be produced.
///
/// The `Display` text is shown verbatim to MySQL clients, so every message says what to do first
/// and carries the AWS SDK's own explanation (which holds no secrets) last, as `details`. The
/// error is `Clone` because a failed single-flight mint is handed to every caller that waited
/// for it; that is also why the SDK error is kept as text rather than as a `source`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request cannot be signed as given (empty user, malformed host or region, bad clock).
    #[error("cannot sign an RDS IAM token: {reason}")]
    InvalidRequest {
        /// What is wrong with the request.
        reason: String,
    },

    /// No provider in the credentials chain had credentials.
    #[error("{}{}", no_credentials_message(.profile), details(.context))]
    NoCredentials {
        /// The AWS profile in use (`None`: the default chain without a named profile).
        profile: Option<String>,
        /// What the credentials chain reported.
        context: String,
    },

    /// The AWS SSO (IAM Identity Center) login behind the profile has expired or never happened.
    #[error("{}{}", sso_message(.profile), details(.context))]
    SsoLoginRequired {
        /// The AWS profile in use.
        profile: Option<String>,
        /// What the SSO provider reported.
        context: String,
    },

    /// The credentials exist but have expired (static session keys, an assumed role, STS said so).
    #[error("{}{}", expired_message(.profile, .expired_at), details(.context))]
    CredentialsExpired {
        /// The AWS profile in use.
        profile: Option<String>,
        /// When they expired, if the provider said.
        expired_at: Option<SystemTime>,
        /// What the provider reported.
        context: String,
    },

    /// The credentials provider did not answer in time (network to STS, SSO or instance metadata,
    /// or a slow `credential_process`).
    #[error(
        "loading AWS credentials from {} timed out after {}s: check network access to AWS (STS, SSO, instance metadata) or your credential_process, then reconnect",
        source_phrase(.profile),
        .after.as_secs()
    )]
    CredentialsTimedOut {
        /// The AWS profile in use.
        profile: Option<String>,
        /// How long we waited.
        after: Duration,
    },

    /// The AWS configuration files or environment are inconsistent (unknown profile type, a role
    /// chain loop, a syntax error in `~/.aws/config`...).
    #[error(
        "the AWS configuration for {} is invalid: fix ~/.aws/config, ~/.aws/credentials or the AWS_* environment variables{}",
        source_phrase(.profile),
        details(.context)
    )]
    InvalidConfiguration {
        /// The AWS profile in use.
        profile: Option<String>,
        /// What the provider reported.
        context: String,
    },

    /// Any other credentials failure (STS or SSO errors, a failing `credential_process`...).
    #[error(
        "could not load AWS credentials from {}{}",
        source_phrase(.profile),
        details(.context)
    )]
    Credentials {
        /// The AWS profile in use.
        profile: Option<String>,
        /// What the provider reported.
        context: String,
    },

    /// aws-sigv4 could not sign, or produced something we do not recognise.
    #[error("signing the RDS IAM token failed: {0}")]
    Signing(String),
}

/// "profile `x`" or "the default credentials chain", for messages.
fn source_phrase(profile: &Option<String>) -> String {
    match profile {
        Some(name) => format!("profile `{name}`"),
        None => "the default credentials chain".to_owned(),
    }
}

/// The trailing " (details: ...)" part, empty when there is nothing to add.
fn details(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" (details: {context})")
    }
}

/// What to do when the chain found nothing.
fn no_credentials_message(profile: &Option<String>) -> String {
    match profile {
        Some(name) => format!(
            "no AWS credentials found for profile `{name}`: run `aws sso login --profile {name}` \
             (SSO) or `aws configure --profile {name}` (access keys), or choose another profile \
             with AWS_PROFILE"
        ),
        None => "no AWS credentials found in the default chain (environment, ~/.aws profiles, web \
                 identity, ECS, EC2 instance metadata): run `aws configure`, or `aws sso login \
                 --profile <name>` and set AWS_PROFILE=<name>, or set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY"
            .to_owned(),
    }
}

/// What to do when the SSO login is missing or expired.
fn sso_message(profile: &Option<String>) -> String {
    match profile {
        Some(name) => format!(
            "your AWS SSO session for profile {name} has expired or is missing: run `aws sso login --profile {name}`"
        ),
        None => "your AWS SSO session for the default profile has expired or is missing: run `aws sso login`"
            .to_owned(),
    }
}

/// What to do when credentials have expired.
fn expired_message(profile: &Option<String>, expired_at: &Option<SystemTime>) -> String {
    let when = match expired_at {
        Some(at) => format!(" (at {})", humantime::format_rfc3339_seconds(*at)),
        None => String::new(),
    };
    let refresh = match profile {
        Some(name) => format!(
            "refresh them (`aws sso login --profile {name}` for SSO, new keys for session \
             credentials) and reconnect"
        ),
        None => {
            "refresh them (`aws sso login` for SSO, new AWS_SESSION_TOKEN and keys for session \
                 credentials) and reconnect"
                .to_owned()
        }
    };
    format!(
        "the AWS credentials from {} have expired{when}: {refresh}",
        source_phrase(profile)
    )
}

//! Where AWS credentials come from, and what to tell a person when they do not come.
//!
//! [`load_aws`] resolves aws-config's default chain (environment, profiles including SSO and
//! `credential_process`, web identity, ECS, IMDS) and region. [`map_credentials_error`] turns an
//! aws-config [`CredentialsError`] into an [`Error`] whose text names the profile and the command
//! that fixes it.
//!
//! How aws-config reports the cases that matter (aws-config 1.13, read from its sources):
//!
//! - Nothing anywhere: `CredentialsNotLoaded` carrying the chain's "no credentials found in chain.
//!   Attempted: ..." list (a named profile that does not exist is `CredentialsNotLoaded` too).
//! - SSO: the profile provider wraps the SSO provider's failure as `ProviderError` →
//!   (`ProviderError` → `TokenError::ProviderError` →) the SSO token provider's own error: "the SSO
//!   token has expired and cannot be refreshed" or "failed to load the cached SSO token" → "failed
//!   to read `~/.aws/sso/cache/<sha1>.json`". The SSO token provider's error only implements the
//!   deprecated `Error::cause`, not `source`, so the chain is walked with `cause`. A token the
//!   portal no longer accepts comes back from `GetRoleCredentials` as "UnauthorizedException:
//!   Session token not found or invalid".
//! - Expired base credentials for an assumed role: STS "ExpiredToken... is expired".
//! - `ProviderTimedOut` and `InvalidConfiguration` map one to one.

use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use super::Error;

/// How long one credentials lookup (STS, SSO, IMDS, `credential_process`) may take.
pub const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest provider explanation kept in an error; MySQL clients truncate messages near 512 bytes,
/// and the part that says what to do comes first.
const MAX_CONTEXT_CHARS: usize = 400;

/// Deepest error chain walked (a guard against a cycle in somebody's `cause`).
const MAX_CHAIN_DEPTH: usize = 16;

/// Wrapper messages that say nothing the variant does not already say.
const GENERIC_MESSAGES: [&str; 9] = [
    "the credential provider was not enabled",
    "an error occurred while loading credentials",
    "the credentials provider was not properly configured",
    "unexpected credentials error",
    "the access token provider was not enabled",
    "an error occurred while loading an access token",
    "the access token provider was not properly configured",
    "service error",
    "dispatch failure",
];

/// Markers of an SSO login that has expired or never happened, matched case-insensitively against
/// the error chain.
const SSO_LOGIN_MARKERS: [&str; 7] = [
    "sso token has expired",
    "failed to load the cached sso token",
    "cached sso token file",
    "/sso/cache/",
    "\\sso\\cache\\",
    "session token not found or invalid",
    "unauthorizedexception",
];

/// Markers of credentials that exist but have expired.
const EXPIRED_MARKERS: [&str; 4] = [
    "expiredtoken",
    "token included in the request is expired",
    "has expired",
    "credentials have expired",
];

/// Load the default credentials chain (env, profiles incl. SSO, web identity, ECS, IMDS) and region
/// via aws-config, honouring an optional profile name. Returns the provider and the region the
/// config resolved (if any).
///
/// Nothing is fetched yet: credentials are resolved on the first token request, so a missing
/// login shows up as a readable error on the MySQL connection, not as a startup failure.
pub async fn load_aws(profile: Option<&str>) -> (SharedCredentialsProvider, Option<String>) {
    load_aws_from(aws_config::defaults(BehaviorVersion::latest()), profile).await
}

/// The whole AWS SDK configuration (region, endpoint overrides such as `AWS_ENDPOINT_URL_SSM`,
/// credentials) for SDK clients, honouring an optional profile name and region override.
pub async fn load_sdk_config(profile: Option<&str>, region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(name) = profile {
        loader = loader.profile_name(name);
    }
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_owned()));
    }
    loader.load().await
}

/// [`load_aws`] over a given loader (tests pass one with in-memory profile files).
pub(super) async fn load_aws_from(
    loader: ConfigLoader,
    profile: Option<&str>,
) -> (SharedCredentialsProvider, Option<String>) {
    let loader = match profile {
        Some(name) => loader.profile_name(name),
        None => loader,
    };
    let config = loader.load().await;
    let region = config.region().map(|r| r.as_ref().to_owned());
    let provider = match config.credentials_provider() {
        Some(provider) => provider,
        // Only when a loader was told `no_credentials()`; make every request say so.
        None => SharedCredentialsProvider::new(
            aws_credential_types::credential_fn::provide_credentials_fn(|| async {
                Err(CredentialsError::not_loaded(
                    "credentials were disabled in the AWS configuration",
                ))
            }),
        ),
    };
    (provider, region)
}

/// Fetch credentials once from `provider` (no caching), bounded by [`CREDENTIALS_TIMEOUT`], with
/// failures (and credentials that are already expired) mapped to an [`Error`] naming `profile`
/// (or `AWS_PROFILE`). For one-shot use such as printing a token; the proxy uses
/// [`TokenCache`](super::TokenCache).
pub async fn credentials(
    provider: &SharedCredentialsProvider,
    profile: Option<&str>,
) -> Result<Credentials, Error> {
    let profile = effective_profile(profile.map(str::to_owned));
    fetch(provider, &profile, CREDENTIALS_TIMEOUT, SystemTime::now()).await
}

/// One provider lookup bounded by `timeout`; `now` decides whether what came back has expired.
pub(super) async fn fetch(
    provider: &SharedCredentialsProvider,
    profile: &Option<String>,
    timeout: Duration,
    now: SystemTime,
) -> Result<Credentials, Error> {
    let creds = match tokio::time::timeout(timeout, provider.provide_credentials()).await {
        Ok(Ok(creds)) => creds,
        Ok(Err(err)) => {
            let mapped = map_credentials_error(&err, profile);
            tracing::debug!(error = %mapped, "aws credentials lookup failed");
            return Err(mapped);
        }
        Err(_elapsed) => {
            return Err(Error::CredentialsTimedOut {
                profile: profile.clone(),
                after: timeout,
            });
        }
    };
    if let Some(expiry) = creds.expiry()
        && expiry <= now
    {
        return Err(Error::CredentialsExpired {
            profile: profile.clone(),
            expired_at: Some(expiry),
            context: "the credentials provider returned credentials that are already expired"
                .to_owned(),
        });
    }
    Ok(creds)
}

/// The profile to name in messages: the one asked for, else `AWS_PROFILE` (what aws-config
/// itself falls back to), else none (the default chain).
pub(super) fn effective_profile(explicit: Option<String>) -> Option<String> {
    explicit.or_else(|| {
        std::env::var("AWS_PROFILE")
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
    })
}

/// Translate an aws-config credentials failure into an [`Error`] that names `profile` and says
/// what to run.
pub(super) fn map_credentials_error(err: &CredentialsError, profile: &Option<String>) -> Error {
    let chain = error_chain(err);
    let lowered = chain.join(": ").to_ascii_lowercase();
    let profile = profile.clone();
    if let CredentialsError::ProviderTimedOut(details) = err {
        return Error::CredentialsTimedOut {
            profile,
            after: details.timeout_duration(),
        };
    }
    let context = context_from(&chain);
    if SSO_LOGIN_MARKERS.iter().any(|m| lowered.contains(m)) {
        return Error::SsoLoginRequired { profile, context };
    }
    match err {
        CredentialsError::CredentialsNotLoaded(_) => Error::NoCredentials { profile, context },
        _ if EXPIRED_MARKERS.iter().any(|m| lowered.contains(m)) => Error::CredentialsExpired {
            profile,
            expired_at: None,
            context,
        },
        CredentialsError::InvalidConfiguration(_) => {
            Error::InvalidConfiguration { profile, context }
        }
        _ => Error::Credentials { profile, context },
    }
}

/// Every message in the chain, outermost first. Walks `cause` rather than `source` because the
/// SSO token provider's error only overrides `cause` (for every other error `cause` is `source`).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut messages = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(err);
    while let Some(current) = next {
        if messages.len() == MAX_CHAIN_DEPTH {
            break;
        }
        messages.push(current.to_string());
        #[allow(deprecated)] // see the function doc: `cause` reaches errors `source` cannot
        {
            next = current.cause();
        }
    }
    messages
}

/// One line of provider explanation: generic wrappers and repeats dropped, whitespace collapsed,
/// length capped.
fn context_from(chain: &[String]) -> String {
    let mut kept: Vec<String> = Vec::new();
    for message in chain {
        let flat = message.split_whitespace().collect::<Vec<_>>().join(" ");
        let generic = GENERIC_MESSAGES
            .iter()
            .any(|g| flat.eq_ignore_ascii_case(g));
        if flat.is_empty() || generic || kept.last() == Some(&flat) {
            continue;
        }
        kept.push(flat);
    }
    let joined = kept.join(": ");
    if joined.chars().count() <= MAX_CONTEXT_CHARS {
        joined
    } else {
        let mut cut: String = joined.chars().take(MAX_CONTEXT_CHARS).collect();
        cut.push('…');
        cut
    }
}

/// Warn this long before the current credentials expire.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(15 * 60);

/// Watches the credentials behind `profile` for as long as the proxy runs: logs when they change
/// and when they expire, warns [`EXPIRY_WARNING`] ahead with the command that renews them, and
/// logs the failure (which names `aws sso login --profile …`) once when they cannot be had.
/// Nothing is cached here: the token cache fetches on its own, so a renewed login is used by the
/// next connection whether or not this task has noticed it.
pub async fn watch_expiry(provider: SharedCredentialsProvider, profile: Option<String>) {
    let profile = effective_profile(profile);
    let renew = match &profile {
        Some(p) => format!("`aws sso login --profile {p}` (or renew the profile's credentials)"),
        None => "`aws sso login` (or renew your credentials)".to_owned(),
    };
    let mut last_expiry: Option<Option<SystemTime>> = None;
    let mut last_error: Option<String> = None;
    let mut warned_for: Option<SystemTime> = None;
    loop {
        let now = SystemTime::now();
        let pause = match fetch(&provider, &profile, CREDENTIALS_TIMEOUT, now).await {
            Ok(creds) => {
                if last_error.take().is_some() {
                    tracing::info!("AWS credentials are available again");
                }
                let expiry = creds.expiry();
                if last_expiry != Some(expiry) {
                    match expiry {
                        Some(t) => tracing::info!(
                            expires = %humantime::format_rfc3339_seconds(t),
                            in_minutes = left(t, now).as_secs() / 60,
                            "AWS credentials loaded"
                        ),
                        None => tracing::debug!("AWS credentials loaded (they do not expire)"),
                    }
                    last_expiry = Some(expiry);
                }
                match expiry {
                    None => Duration::from_secs(30 * 60),
                    Some(t) => {
                        let remaining = left(t, now);
                        if remaining <= EXPIRY_WARNING && warned_for != Some(t) {
                            tracing::warn!(
                                "AWS credentials expire in {} min (at {}): run {renew} to keep new \
                                 connections working",
                                remaining.as_secs().div_ceil(60),
                                humantime::format_rfc3339_seconds(t)
                            );
                            warned_for = Some(t);
                        }
                        // Look again at the warning point, at expiry, and at least every 5 min.
                        let until_warning = remaining.saturating_sub(EXPIRY_WARNING);
                        let next = if until_warning.is_zero() {
                            remaining
                        } else {
                            until_warning
                        };
                        next.clamp(Duration::from_secs(20), Duration::from_secs(300))
                    }
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!("{text}");
                    last_error = Some(text);
                }
                last_expiry = None;
                Duration::from_secs(30)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

fn left(t: SystemTime, now: SystemTime) -> Duration {
    t.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error that, like aws-config's SSO token provider error, only overrides `cause`.
    #[derive(Debug)]
    struct CauseOnly {
        inner: std::io::Error,
    }
    impl fmt::Display for CauseOnly {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("failed to load the cached SSO token")
        }
    }
    impl std::error::Error for CauseOnly {
        #[allow(deprecated)] // mirrors the upstream type under test
        fn cause(&self) -> Option<&dyn std::error::Error> {
            Some(&self.inner)
        }
    }

    fn sso_missing_error() -> CredentialsError {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let file = format!("failed to read `/home/me/.aws/sso/cache/abc.json`: {io}");
        let inner = CredentialsError::provider_error(CauseOnly {
            inner: std::io::Error::other(file),
        });
        CredentialsError::provider_error(inner)
    }

    #[test]
    fn sso_missing_token_maps_to_sso_login_with_provider_context() {
        let err = map_credentials_error(&sso_missing_error(), &Some("dev".into()));
        assert!(matches!(err, Error::SsoLoginRequired { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "your AWS SSO session for profile dev has expired or is missing: run `aws sso login --profile dev`"
            ),
            "{text}"
        );
        // The chain below the cause-only error is reached.
        assert!(text.contains("/home/me/.aws/sso/cache/abc.json"), "{text}");
        assert!(
            !text.contains("an error occurred while loading credentials"),
            "{text}"
        );
    }

    #[test]
    fn sso_expired_token_and_portal_rejection_map_to_sso_login() {
        for message in [
            "the SSO token has expired and cannot be refreshed",
            "UnauthorizedException: Session token not found or invalid",
        ] {
            let err = CredentialsError::provider_error(CredentialsError::provider_error(message));
            let mapped = map_credentials_error(&err, &None);
            assert!(
                matches!(mapped, Error::SsoLoginRequired { .. }),
                "{mapped:?}"
            );
            let text = mapped.to_string();
            assert!(text.contains("run `aws sso login`"), "{text}");
            assert!(text.contains(message), "{text}");
        }
    }

    #[test]
    fn not_loaded_maps_to_no_credentials_naming_the_profile() {
        let err = CredentialsError::not_loaded(
            "no credentials found in chain. Attempted:\n  Environment: environment variable not set",
        );
        let named = map_credentials_error(&err, &Some("prod".into())).to_string();
        assert!(
            named.starts_with("no AWS credentials found for profile `prod`"),
            "{named}"
        );
        assert!(named.contains("aws sso login --profile prod"), "{named}");
        assert!(named.contains("aws configure --profile prod"), "{named}");
        assert!(!named.contains('\n'), "{named}");
        assert!(named.contains("Attempted: Environment: environment variable not set"));

        let unnamed = map_credentials_error(&CredentialsError::not_loaded_no_source(), &None);
        let text = unnamed.to_string();
        assert!(text.contains("default chain"), "{text}");
        assert!(text.contains("aws configure"), "{text}");
        assert!(text.contains("AWS_PROFILE"), "{text}");
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
        // Nothing but generic wrappers: no empty "(details: )".
        assert!(!text.contains("details"), "{text}");
    }

    #[test]
    fn timeouts_expired_config_and_other_failures() {
        let timed_out = map_credentials_error(
            &CredentialsError::provider_timed_out(std::time::Duration::from_secs(5)),
            &Some("p".into()),
        );
        assert!(matches!(timed_out, Error::CredentialsTimedOut { .. }));
        assert!(timed_out.to_string().contains("timed out after 5s"));

        let expired = map_credentials_error(
            &CredentialsError::provider_error(
                "ExpiredToken: The security token included in the request is expired",
            ),
            &Some("p".into()),
        );
        assert!(
            matches!(expired, Error::CredentialsExpired { .. }),
            "{expired:?}"
        );
        assert!(expired.to_string().contains("have expired"));

        let config = map_credentials_error(
            &CredentialsError::invalid_configuration("profile formed an infinite loop"),
            &None,
        );
        assert!(matches!(config, Error::InvalidConfiguration { .. }));
        assert!(config.to_string().contains("infinite loop"));

        let other = map_credentials_error(
            &CredentialsError::provider_error(
                "AccessDenied: not authorized to perform sts:AssumeRole",
            ),
            &Some("p".into()),
        );
        assert!(matches!(other, Error::Credentials { .. }));
        assert!(other.to_string().contains("profile `p`"));
        assert!(other.to_string().contains("sts:AssumeRole"));
    }

    #[test]
    fn long_context_is_capped_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let err = map_credentials_error(&CredentialsError::provider_error(long), &None);
        let Error::Credentials { context, .. } = err else {
            panic!("expected Credentials");
        };
        assert_eq!(context.chars().count(), MAX_CONTEXT_CHARS + 1);
        assert!(context.ends_with('…'));
    }

    #[tokio::test]
    async fn one_shot_credentials_fetch_and_map() {
        let good = Credentials::new("AKIDEXAMPLE", "secret", None, None, "static");
        let provider = SharedCredentialsProvider::new(good);
        let creds = credentials(&provider, Some("p"))
            .await
            .expect("static credentials");
        assert_eq!(creds.access_key_id(), "AKIDEXAMPLE");

        let stale = Credentials::new(
            "ASIAOLD",
            "secret",
            Some("session".into()),
            Some(SystemTime::now() - Duration::from_secs(60)),
            "static",
        );
        let err = credentials(&SharedCredentialsProvider::new(stale), Some("p"))
            .await
            .expect_err("expired");
        assert!(
            matches!(
                err,
                Error::CredentialsExpired {
                    expired_at: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("the AWS credentials from profile `p` have expired")
        );

        let missing = SharedCredentialsProvider::new(
            aws_credential_types::credential_fn::provide_credentials_fn(|| async {
                Err(CredentialsError::not_loaded_no_source())
            }),
        );
        let err = credentials(&missing, Some("ops")).await.expect_err("none");
        assert!(err.to_string().contains("profile `ops`"), "{err}");
    }

    #[allow(deprecated)] // ProfileFiles/ProfileFileKind are aws-config's (deprecated) re-exports
    fn loader_with_profiles(config: &str, credentials: &str) -> ConfigLoader {
        use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
        let files = ProfileFiles::builder()
            .include_default_config_file(false)
            .include_default_credentials_file(false)
            .with_contents(ProfileFileKind::Config, config)
            .with_contents(ProfileFileKind::Credentials, credentials)
            .build();
        aws_config::defaults(BehaviorVersion::latest()).profile_files(files)
    }

    /// Environment credentials come before profiles in the default chain; with them set, the
    /// profile-specific assertions below cannot hold, so those tests only check what still can.
    fn env_credentials_present() -> bool {
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
    }

    #[tokio::test]
    async fn load_aws_resolves_a_static_profile_and_its_region() {
        let loader = loader_with_profiles(
            "[profile rdsiam-test]\nregion = eu-west-3\n",
            "[rdsiam-test]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
        );
        let (provider, region) = load_aws_from(loader, Some("rdsiam-test")).await;
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            assert_eq!(region.as_deref(), Some("eu-west-3"));
        }
        use aws_credential_types::provider::ProvideCredentials;
        let creds = provider
            .provide_credentials()
            .await
            .expect("profile credentials");
        if !env_credentials_present() {
            assert_eq!(creds.access_key_id(), "AKIDPROFILE");
        }
    }

    #[tokio::test]
    async fn load_aws_sso_profile_without_login_maps_to_sso_login_required() {
        if env_credentials_present() {
            return;
        }
        // A session name nobody has logged in to: its cache file cannot exist, so aws-config fails
        // while reading it, before any network call.
        let loader = loader_with_profiles(
            "[profile rdsiam-sso]\n\
             sso_session = rdsiam-test-session-that-never-logged-in\n\
             sso_account_id = 111122223333\n\
             sso_role_name = ReadOnly\n\
             region = eu-west-1\n\
             [sso-session rdsiam-test-session-that-never-logged-in]\n\
             sso_start_url = https://example.awsapps.com/start\n\
             sso_region = eu-west-1\n\
             sso_registration_scopes = sso:account:access\n",
            "",
        );
        let (provider, _) = load_aws_from(loader, Some("rdsiam-sso")).await;
        use aws_credential_types::provider::ProvideCredentials;
        let err = provider
            .provide_credentials()
            .await
            .expect_err("no SSO login exists for this session");
        let mapped = map_credentials_error(&err, &Some("rdsiam-sso".into()));
        assert!(
            matches!(mapped, Error::SsoLoginRequired { .. }),
            "{mapped:?}"
        );
        let text = mapped.to_string();
        assert!(
            text.starts_with(
                "your AWS SSO session for profile rdsiam-sso has expired or is missing: run `aws sso login --profile rdsiam-sso`"
            ),
            "{text}"
        );
        assert!(text.contains("details: "), "{text}");
    }

    #[tokio::test]
    async fn load_aws_legacy_sso_profile_without_login_maps_to_sso_login_required() {
        if env_credentials_present() {
            return;
        }
        // The older form, with the start URL in the profile (token cache keyed by the URL).
        let loader = loader_with_profiles(
            "[profile rdsiam-legacy]\n\
             sso_start_url = https://rdsiam-test-never-logged-in.awsapps.com/start\n\
             sso_region = eu-west-1\n\
             sso_account_id = 111122223333\n\
             sso_role_name = ReadOnly\n\
             region = eu-west-1\n",
            "",
        );
        let (provider, _) = load_aws_from(loader, Some("rdsiam-legacy")).await;
        use aws_credential_types::provider::ProvideCredentials;
        let err = provider
            .provide_credentials()
            .await
            .expect_err("no SSO login exists for this start URL");
        let mapped = map_credentials_error(&err, &Some("rdsiam-legacy".into()));
        assert!(
            matches!(mapped, Error::SsoLoginRequired { .. }),
            "{mapped:?}"
        );
        assert!(
            mapped
                .to_string()
                .contains("`aws sso login --profile rdsiam-legacy`")
        );
    }
}

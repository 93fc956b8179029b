//! Upstream logins with a database password instead of an IAM token (`--secret ARN|NAME`): for
//! databases or users without IAM authentication, and to avoid IAM's new-connection rate limit.
//!
//! The user name and password come from a Secrets Manager secret in the RDS-managed master secret
//! shape or the common `{"username", "password"}` shape ([`crate::aws::secrets`]). They are kept
//! in memory, re-read at most every [`REREAD_EVERY`] (a rotation is picked up), and re-read before
//! the next login when the database refused them (rotation again), but never more often than
//! [`MIN_REREAD`] however many logins fail. Reads are single-flight. The password only lives in a
//! [`Secret`] and is sent only inside TLS verified against the endpoint name (the login path,
//! `login`, answers `mysql_native_password`, and `caching_sha2_password` fast and full
//! authentication).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::aws::api::Api;
use crate::aws::secrets::{self, MasterCredentials};
use crate::secret::Secret;

/// Kept credentials are re-read when older than this.
pub const REREAD_EVERY: Duration = Duration::from_secs(5 * 60);

/// Never re-read more often than this, even after refusals.
pub const MIN_REREAD: Duration = Duration::from_secs(10);

/// A database user name and password.
#[derive(Clone, Debug)]
pub struct DbCredentials {
    /// The user name.
    pub username: String,
    /// The password (redacted in Debug).
    pub password: Secret,
}

/// Where upstream passwords come from.
pub trait PasswordSource: Send + Sync + fmt::Debug + 'static {
    /// The credentials to log in with (kept ones while fresh).
    fn credentials(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<DbCredentials, String>> + Send + '_>>;
    /// The database refused them: read them again before the next login (rate-limited).
    fn rejected(&self);
    /// What the credentials come from, for messages (`secret <name>`).
    fn describe(&self) -> String;
}

/// How the secret is read: Secrets Manager in production, a closure in tests.
type Fetch = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<MasterCredentials, String>> + Send>>
        + Send
        + Sync,
>;

/// What is kept between reads.
struct Kept {
    /// The credentials.
    creds: DbCredentials,
    /// When they were read.
    at: Instant,
}

/// A [`PasswordSource`] over one secret, kept and re-read as the module describes.
pub struct SecretCache {
    /// The secret's ARN or name.
    id: String,
    /// Reads it.
    fetch: Fetch,
    /// The last read credentials.
    kept: Mutex<Option<Kept>>,
    /// When the last read started (rate limit).
    last_read: Mutex<Option<Instant>>,
    /// The database refused the kept credentials.
    stale: std::sync::atomic::AtomicBool,
    /// One read at a time.
    flight: tokio::sync::Mutex<()>,
}

impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCache")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SecretCache {
    /// Reads the secret `id` (ARN or name) with `secretsmanager:GetSecretValue` through `api`
    /// (in the ARN's region when `id` is an ARN). A refusal names the identity
    /// (`sts:GetCallerIdentity`, best effort) and the permissions it lacks.
    pub fn secrets_manager(api: Api, id: impl Into<String>) -> Self {
        let id = id.into();
        let api = match secrets::region_of(&id) {
            Some(region) => api.with_region(region.to_owned()),
            None => api,
        };
        let api = std::sync::Arc::new(api);
        let secret_id = id.clone();
        Self::with_fetch(id, move || {
            let api = api.clone();
            let secret_id = secret_id.clone();
            Box::pin(async move { read(&api, &secret_id).await })
        })
    }

    /// A cache over any way of reading the secret (tests).
    pub fn with_fetch(
        id: impl Into<String>,
        fetch: impl Fn() -> Pin<Box<dyn Future<Output = Result<MasterCredentials, String>> + Send>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        SecretCache {
            id: id.into(),
            fetch: Box::new(fetch),
            kept: Mutex::new(None),
            last_read: Mutex::new(None),
            stale: std::sync::atomic::AtomicBool::new(false),
            flight: tokio::sync::Mutex::new(()),
        }
    }

    /// The kept credentials if they may still be used at `now`.
    fn fresh(&self, now: Instant) -> Option<DbCredentials> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let kept = kept.as_ref()?;
        let young = now.saturating_duration_since(kept.at) < REREAD_EVERY;
        let stale = self.stale.load(std::sync::atomic::Ordering::Relaxed);
        let read_recently = self
            .last_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_REREAD);
        (young && (!stale || read_recently)).then(|| kept.creds.clone())
    }

    async fn get(&self) -> Result<DbCredentials, String> {
        if let Some(c) = self.fresh(Instant::now()) {
            return Ok(c);
        }
        let _one = self.flight.lock().await;
        if let Some(c) = self.fresh(Instant::now()) {
            return Ok(c);
        }
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.stale
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let read = (self.fetch)().await;
        match read {
            Ok(m) => {
                let creds = DbCredentials {
                    username: m.username,
                    password: m.password,
                };
                *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(Kept {
                    creds: creds.clone(),
                    at: Instant::now(),
                });
                tracing::debug!(secret = %self.id, "read the database password from Secrets Manager");
                Ok(creds)
            }
            // The reason names the secret already when it comes from Secrets Manager.
            Err(e) if e.contains(&self.id) => {
                Err(format!("cannot read the database password: {e}"))
            }
            Err(e) => Err(format!(
                "cannot read the database password from Secrets Manager secret {}: {e}",
                self.id
            )),
        }
    }
}

/// One `GetSecretValue`, its failure worded for `--secret`.
async fn read(api: &Api, id: &str) -> Result<MasterCredentials, String> {
    match secrets::master_credentials(api, id).await {
        Ok(m) => Ok(m),
        Err(e @ secrets::Error::Denied { .. }) => {
            let identity = crate::aws::discover::caller_identity(api)
                .await
                .ok()
                .map(|i| i.arn);
            Err(e.for_secret_flag(identity.as_deref()))
        }
        Err(e) => Err(e.for_secret_flag(None)),
    }
}

impl PasswordSource for SecretCache {
    fn credentials(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<DbCredentials, String>> + Send + '_>> {
        Box::pin(self.get())
    }

    fn rejected(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn describe(&self) -> String {
        format!("Secrets Manager secret {}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counting(reads: Arc<AtomicU32>) -> SecretCache {
        SecretCache::with_fetch("db-secret", move || {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                Ok(MasterCredentials {
                    username: "app".into(),
                    password: Secret::new(format!("pw{n}")),
                })
            })
        })
    }

    /// Moves the cache's memory of its last read `by` into the past.
    fn age(cache: &SecretCache, by: Duration) {
        if let Some(k) = cache.kept.lock().unwrap().as_mut() {
            k.at = k.at.checked_sub(by).unwrap();
        }
        if let Some(at) = cache.last_read.lock().unwrap().as_mut() {
            *at = at.checked_sub(by).unwrap();
        }
    }

    /// Kept for five minutes; a refusal makes the next login re-read (a rotation), but refusals
    /// at login rate re-read at most once per ten seconds.
    #[tokio::test]
    async fn rereads_every_five_minutes_and_after_a_refusal_but_not_at_login_rate() {
        let reads = Arc::new(AtomicU32::new(0));
        let cache = counting(reads.clone());
        assert_eq!(cache.credentials().await.unwrap().password.expose(), "pw1");
        assert_eq!(cache.credentials().await.unwrap().password.expose(), "pw1");
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        age(&cache, MIN_REREAD);
        cache.rejected();
        assert_eq!(cache.credentials().await.unwrap().password.expose(), "pw2");
        for _ in 0..20 {
            cache.rejected();
            cache.credentials().await.unwrap();
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "refusals within 10 s: no more reads"
        );

        age(&cache, REREAD_EVERY);
        assert_eq!(cache.credentials().await.unwrap().password.expose(), "pw3");
    }

    #[tokio::test]
    async fn failures_name_the_secret_and_debug_shows_no_password() {
        let cache = SecretCache::with_fetch("arn:aws:secretsmanager:r:1:secret:x", || {
            Box::pin(async { Err("AccessDeniedException: not authorized".to_owned()) })
        });
        let e = cache.credentials().await.unwrap_err();
        assert!(e.contains("arn:aws:secretsmanager:r:1:secret:x") && e.contains("AccessDenied"));
        let ok = counting(Arc::new(AtomicU32::new(0)));
        let creds = ok.credentials().await.unwrap();
        let text = format!("{ok:?} {creds:?}");
        assert!(!text.contains("pw1"), "{text}");
    }
}

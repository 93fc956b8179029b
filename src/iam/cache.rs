//! [`TokenCache`]: the production [`TokenSource`], one token per [`TokenRequest`] over an
//! aws-config credentials provider.
//!
//! Refresh policy: a cached token is handed out while it is younger than [`REFRESH_AGE`] (so it
//! has at least five of its fifteen minutes left when a connection uses it) and while the
//! credentials that signed it stay valid for at least [`CREDENTIALS_MIN_VALIDITY`] more (RDS
//! requires them to be valid when the connection is made). Otherwise a new one is minted.
//!
//! Concurrency: mints are single-flight per key. The first caller mints while holding the key's
//! async lock; callers that arrive meanwhile wait on that lock and then take the fresh token, or
//! the same error if the mint failed, so a burst of N logins costs one credentials lookup and one
//! signature. A mint whose caller goes away is simply abandoned; the next waiter tries itself.
//!
//! Credentials with an expiry (SSO, assumed roles, IMDS, ECS) are kept between mints while they
//! stay valid for [`CREDENTIALS_REUSE_MARGIN`], so several users do not each call STS or SSO.
//! Credentials without an expiry (static keys) are re-read on every mint, which is cheap and
//! picks up edits to `~/.aws/credentials`.
//!
//! A token the database rejected (access denied) is dropped, and only that token: a mistyped user
//! name must not cost everyone a credentials lookup. The kept credentials are marked suspect
//! instead (revoked or rotated credentials look the same from here), and the next mint re-reads
//! them only if the last lookup is at least [`CREDENTIALS_REFETCH_INTERVAL`] old, so rejections at
//! login rate cause at most one STS/SSO call per interval.
//!
//! [`TokenCache::warm`] looks the credentials up ahead of any login (at start-up, and again before
//! kept ones expire), so a slow lookup (an SSO refresh, AssumeRole, a prompting
//! `credential_process`) does not run while a database's handshake clock is ticking.
//!
//! The token is never logged: minting logs user, endpoint, region and expiry at debug level.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use super::credentials::{CREDENTIALS_TIMEOUT, effective_profile, fetch};
use super::token::{AuthToken, TokenRequest, presign};
use super::{Error, TokenSource};

/// A cached token is reused while younger than this (a token lives 15 minutes).
pub const REFRESH_AGE: Duration = Duration::from_secs(10 * 60);

/// A cached token is reused only while the credentials that signed it stay valid this much longer.
pub const CREDENTIALS_MIN_VALIDITY: Duration = Duration::from_secs(60);

/// Cached credentials are reused for a new mint while valid for at least this much longer.
pub const CREDENTIALS_REUSE_MARGIN: Duration = Duration::from_secs(5 * 60);

/// After a rejected token, kept credentials are looked up again at most this often.
pub const CREDENTIALS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Caching, single-flight [`TokenSource`] over an aws-config credentials provider.
///
/// One token per (host, port, user, region), reused while younger than [`REFRESH_AGE`] and while
/// the credentials it was signed with stay valid for ≥ [`CREDENTIALS_MIN_VALIDITY`] more.
pub struct TokenCache {
    /// Where credentials come from (aws-config's default chain in production).
    provider: SharedCredentialsProvider,
    /// Profile named in error messages (`None`: the default chain).
    profile: Option<String>,
    /// Wall clock for signing and ages; injectable so tests control time.
    clock: Box<dyn Fn() -> SystemTime + Send + Sync>,
    /// Upper bound on one credentials lookup.
    credentials_timeout: Duration,
    /// Tokens minted since creation (metrics, tests).
    mints: AtomicU64,
    /// Per-request state. A std mutex: it is never held across an await.
    slots: Mutex<HashMap<TokenRequest, Slot>>,
    /// The last credentials with an expiry, reused across keys while comfortably valid.
    credentials: Mutex<Option<Credentials>>,
    /// When the provider was last asked (rate limit of refetches after a rejected token).
    last_fetch: Mutex<Option<SystemTime>>,
    /// A token was rejected since the last lookup: the kept credentials may be revoked.
    suspect: std::sync::atomic::AtomicBool,
}

/// Everything the cache knows about one [`TokenRequest`].
#[derive(Default)]
struct Slot {
    /// The current token, if any.
    cached: Option<Cached>,
    /// Held (asynchronously) by the one caller minting for this key.
    flight: Arc<tokio::sync::Mutex<()>>,
    /// Finished mint attempts for this key; waiters compare it to tell "a mint finished while I
    /// waited" from "nothing happened".
    attempts: u64,
    /// The error of the latest attempt, tagged with its attempt number, for waiters to share.
    last_failure: Option<(u64, Error)>,
}

/// A minted token and what decides its reuse.
struct Cached {
    /// The token.
    token: AuthToken,
    /// Expiry of the credentials that signed it (`None`: they do not expire).
    credentials_expiry: Option<SystemTime>,
}

impl TokenCache {
    /// A cache over `provider`. `profile` is the AWS profile in use, named in error messages; when
    /// `None`, `AWS_PROFILE` is named if set (aws-config honours it too).
    pub fn new(provider: SharedCredentialsProvider, profile: Option<String>) -> Self {
        Self::with_profile_label(provider, effective_profile(profile))
    }

    /// [`TokenCache::new`] without looking at the environment.
    fn with_profile_label(provider: SharedCredentialsProvider, profile: Option<String>) -> Self {
        Self {
            provider,
            profile,
            clock: Box::new(SystemTime::now),
            credentials_timeout: CREDENTIALS_TIMEOUT,
            mints: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            credentials: Mutex::new(None),
            last_fetch: Mutex::new(None),
            suspect: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Replace the wall clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// How many tokens were minted (for metrics and tests).
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// A fresh token for `req`: cached, or minted once for all concurrent callers.
    async fn get(&self, req: &TokenRequest) -> Result<AuthToken, Error> {
        let (flight, seen_attempts) = {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(req.clone()).or_default();
            if let Some(token) = self.fresh(slot) {
                return Ok(token);
            }
            (Arc::clone(&slot.flight), slot.attempts)
        };

        let _minting = flight.lock().await;
        {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(req.clone()).or_default();
            if let Some(token) = self.fresh(slot) {
                return Ok(token);
            }
            if slot.attempts > seen_attempts
                && let Some((attempt, err)) = &slot.last_failure
                && *attempt == slot.attempts
            {
                // The mint we waited for failed; its error is ours too.
                return Err(err.clone());
            }
        }

        let result = self.mint(req).await;
        let now = (self.clock)();
        let mut slots = lock(&self.slots);
        let slot = slots.entry(req.clone()).or_default();
        slot.attempts += 1;
        match &result {
            Ok((token, credentials_expiry)) => {
                slot.cached = Some(Cached {
                    token: token.clone(),
                    credentials_expiry: *credentials_expiry,
                });
                slot.last_failure = None;
            }
            Err(err) => slot.last_failure = Some((slot.attempts, err.clone())),
        }
        prune(&mut slots, now);
        result.map(|(token, _)| token)
    }

    /// The slot's token if it may still be handed out.
    fn fresh(&self, slot: &Slot) -> Option<AuthToken> {
        let cached = slot.cached.as_ref()?;
        let now = (self.clock)();
        // A token from the future (clock stepped back) is not trusted.
        let age = now.duration_since(cached.token.signed_at()).ok()?;
        let credentials_ok = match cached.credentials_expiry {
            None => true,
            Some(expiry) => expiry
                .duration_since(now)
                .is_ok_and(|left| left >= CREDENTIALS_MIN_VALIDITY),
        };
        (age < REFRESH_AGE && credentials_ok).then(|| cached.token.clone())
    }

    /// Fetch credentials and sign one token; returns it with the credentials' expiry.
    async fn mint(&self, req: &TokenRequest) -> Result<(AuthToken, Option<SystemTime>), Error> {
        let creds = self.credentials().await?;
        let now = (self.clock)();
        let token = presign(req, &creds, now)?;
        self.mints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            user = ?req.user,
            endpoint = %format_args!("{}:{}", req.host, req.port),
            region = %req.region,
            expires_at = %humantime::format_rfc3339_seconds(token.expires_at()),
            "minted rds iam token"
        );
        Ok((token, creds.expiry()))
    }

    /// Credentials for a mint: the kept ones if comfortably valid (and not suspect, or looked up
    /// less than [`CREDENTIALS_REFETCH_INTERVAL`] ago), else a provider lookup.
    async fn credentials(&self) -> Result<Credentials, Error> {
        let now = (self.clock)();
        if let Some(creds) = lock(&self.credentials).as_ref()
            && let Some(expiry) = creds.expiry()
            && expiry
                .duration_since(now)
                .is_ok_and(|left| left >= CREDENTIALS_REUSE_MARGIN)
            && (!self.suspect.load(Ordering::Relaxed) || self.fetched_within(now))
        {
            return Ok(creds.clone());
        }
        *lock(&self.last_fetch) = Some(now);
        self.suspect.store(false, Ordering::Relaxed);
        let creds = fetch(&self.provider, &self.profile, self.credentials_timeout, now).await?;
        *lock(&self.credentials) = creds.expiry().is_some().then(|| creds.clone());
        Ok(creds)
    }

    /// Whether the provider was asked less than [`CREDENTIALS_REFETCH_INTERVAL`] before `now`.
    fn fetched_within(&self, now: SystemTime) -> bool {
        lock(&self.last_fetch).is_some_and(|at| {
            now.duration_since(at)
                .is_ok_and(|ago| ago < CREDENTIALS_REFETCH_INTERVAL)
        })
    }

    /// Looks the credentials up now (kept ones are reused while comfortably valid), so that the
    /// first login does not wait for STS or SSO while the database's handshake clock runs.
    /// Returns when they should be looked at again: shortly before kept credentials stop being
    /// reused, or `None` for credentials without an expiry (static keys, re-read on each mint).
    pub async fn warm(&self) -> Result<Option<SystemTime>, Error> {
        let creds = self.credentials().await?;
        Ok(creds
            .expiry()
            .map(|expiry| expiry - CREDENTIALS_REUSE_MARGIN - Duration::from_secs(30)))
    }
}

impl TokenSource for TokenCache {
    fn token<'a>(
        &'a self,
        req: &'a TokenRequest,
    ) -> Pin<Box<dyn Future<Output = Result<AuthToken, Error>> + Send + 'a>> {
        Box::pin(self.get(req))
    }

    /// Drops the token for `req`, and only that token; the kept credentials are marked suspect so
    /// that the next mint may look them up again (at most once per
    /// [`CREDENTIALS_REFETCH_INTERVAL`]).
    fn invalidate(&self, req: &TokenRequest) {
        if let Some(slot) = lock(&self.slots).get_mut(req) {
            slot.cached = None;
        }
        self.suspect.store(true, Ordering::Relaxed);
        tracing::debug!(
            user = ?req.user,
            endpoint = %format_args!("{}:{}", req.host, req.port),
            "rds iam token invalidated"
        );
    }

    fn warm(&self) -> Pin<Box<dyn Future<Output = Result<Option<SystemTime>, Error>> + Send + '_>> {
        Box::pin(TokenCache::warm(self))
    }

    fn mints(&self) -> u64 {
        TokenCache::mints(self)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("profile", &self.profile)
            .field("keys", &lock(&self.slots).len())
            .field("mints", &self.mints())
            .finish_non_exhaustive()
    }
}

/// Drop slots nobody uses whose token has expired (or that never got one), so the map does not
/// grow with every user name ever tried.
fn prune(slots: &mut HashMap<TokenRequest, Slot>, now: SystemTime) {
    slots.retain(|_, slot| {
        let in_use = Arc::strong_count(&slot.flight) > 1;
        let live = slot
            .cached
            .as_ref()
            .is_some_and(|c| c.token.expires_at() > now);
        in_use || live
    });
}

/// Lock a std mutex, ignoring poisoning: nothing panics while these locks are held, and the data
/// (a cache) is valid in any state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::error::CredentialsError;
    use aws_credential_types::provider::{ProvideCredentials, future};
    use std::time::UNIX_EPOCH;
    use tokio::sync::Semaphore;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SESSION_TOKEN: &str = "FwoGZXIvYXdzEBYaDHqa0AP1/Example+SessionToken==";

    type Outcome = Box<dyn Fn(SystemTime) -> Result<Credentials, CredentialsError> + Send + Sync>;

    /// A credentials provider that counts lookups, can be held at a gate, and answers from a
    /// closure of "now".
    struct FakeProvider {
        /// Lookups started.
        calls: AtomicU64,
        /// When set, each lookup waits for a permit.
        gate: Option<Arc<Semaphore>>,
        /// The test clock, shared with the cache.
        now: Arc<Mutex<SystemTime>>,
        /// What a lookup returns, given "now".
        outcome: Outcome,
    }

    impl fmt::Debug for FakeProvider {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("FakeProvider")
        }
    }

    impl ProvideCredentials for FakeProvider {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::new(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = &self.gate {
                    gate.acquire().await.expect("gate never closes").forget();
                }
                let now = *self.now.lock().expect("clock lock");
                (self.outcome)(now)
            })
        }
    }

    /// A cache over a [`FakeProvider`], with the clock both share.
    struct Harness {
        /// The cache under test (profile `dev`).
        cache: Arc<TokenCache>,
        /// The fake behind it, for its call count.
        provider: Arc<FakeProvider>,
        /// The test clock.
        now: Arc<Mutex<SystemTime>>,
    }

    impl Harness {
        fn new(gate: Option<Arc<Semaphore>>, outcome: Outcome) -> Self {
            let now = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600)));
            let provider = Arc::new(FakeProvider {
                calls: AtomicU64::new(0),
                gate,
                now: Arc::clone(&now),
                outcome,
            });
            let dyn_provider: Arc<dyn ProvideCredentials> = Arc::clone(&provider) as _;
            let shared = SharedCredentialsProvider::from(dyn_provider);
            let clock = Arc::clone(&now);
            let cache = TokenCache::with_profile_label(shared, Some("dev".into()))
                .with_clock(move || *clock.lock().expect("clock lock"));
            Self {
                cache: Arc::new(cache),
                provider,
                now,
            }
        }

        /// Static keys: no expiry.
        fn static_keys() -> Self {
            Self::new(
                None,
                Box::new(|_| Ok(Credentials::new("AKIDSTATIC", SECRET, None, None, "fake"))),
            )
        }

        fn advance(&self, by: Duration) {
            *self.now.lock().expect("clock lock") += by;
        }

        fn calls(&self) -> u64 {
            self.provider.calls.load(Ordering::SeqCst)
        }
    }

    fn request(user: &str) -> TokenRequest {
        TokenRequest {
            host: "mydb.cluster-abc.eu-west-1.rds.amazonaws.com".into(),
            port: 3306,
            user: user.into(),
            region: "eu-west-1".into(),
        }
    }

    #[tokio::test]
    async fn reuses_within_refresh_age_and_remints_after() {
        let h = Harness::static_keys();
        let req = request("alice");
        let first = h.cache.token(&req).await.expect("mints");
        h.advance(REFRESH_AGE - Duration::from_secs(1));
        let again = h.cache.token(&req).await.expect("cached");
        assert_eq!(first, again);
        assert_eq!(h.cache.mints(), 1);

        h.advance(Duration::from_secs(1));
        let renewed = h.cache.token(&req).await.expect("re-mints");
        assert_ne!(first.expose(), renewed.expose());
        assert_eq!(renewed.signed_at(), first.signed_at() + REFRESH_AGE);
        assert_eq!(h.cache.mints(), 2);
    }

    #[tokio::test]
    async fn clock_stepping_back_forces_a_new_token() {
        let h = Harness::static_keys();
        let req = request("alice");
        h.cache.token(&req).await.expect("mints");
        *h.now.lock().expect("clock lock") -= Duration::from_secs(3600);
        h.cache.token(&req).await.expect("re-mints");
        assert_eq!(h.cache.mints(), 2);
    }

    #[tokio::test]
    async fn remints_when_signing_credentials_expire_soon() {
        let h = Harness::new(
            None,
            // Temporary credentials valid for 5 more minutes from whenever they are fetched.
            Box::new(|now| {
                Ok(Credentials::new(
                    "ASIATEMP",
                    SECRET,
                    Some(SESSION_TOKEN.into()),
                    Some(now + Duration::from_secs(5 * 60)),
                    "fake",
                ))
            }),
        );
        let req = request("alice");
        h.cache.token(&req).await.expect("mints");
        // 3 min later the credentials have 2 min left: the token is still handed out.
        h.advance(Duration::from_secs(3 * 60));
        h.cache.token(&req).await.expect("cached");
        assert_eq!(h.cache.mints(), 1);
        assert_eq!(h.calls(), 1);
        // With 59 s left, the token is not reused although it is only 4 min old.
        h.advance(Duration::from_secs(61));
        h.cache.token(&req).await.expect("re-mints");
        assert_eq!(h.cache.mints(), 2);
        assert_eq!(h.calls(), 2, "nearly expired credentials are fetched again");
    }

    #[tokio::test]
    async fn temporary_credentials_are_shared_across_keys() {
        let h = Harness::new(
            None,
            Box::new(|now| {
                Ok(Credentials::new(
                    "ASIATEMP",
                    SECRET,
                    Some(SESSION_TOKEN.into()),
                    Some(now + Duration::from_secs(3600)),
                    "fake",
                ))
            }),
        );
        h.cache.token(&request("alice")).await.expect("mints");
        h.cache.token(&request("bob")).await.expect("mints");
        assert_eq!(h.cache.mints(), 2);
        assert_eq!(h.calls(), 1, "one lookup serves both users");
    }

    #[tokio::test]
    async fn expired_credentials_from_the_provider_are_an_error() {
        let h = Harness::new(
            None,
            Box::new(|now| {
                Ok(Credentials::new(
                    "ASIAOLD",
                    SECRET,
                    Some(SESSION_TOKEN.into()),
                    Some(now - Duration::from_secs(1)),
                    "fake",
                ))
            }),
        );
        let err = h.cache.token(&request("alice")).await.expect_err("expired");
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
        let text = err.to_string();
        assert!(
            text.contains("profile `dev` have expired (at 2025-12-31T23:59:59Z)"),
            "{text}"
        );
        assert!(text.contains("aws sso login --profile dev"), "{text}");
        assert_eq!(h.cache.mints(), 0);
    }

    #[tokio::test]
    async fn separate_keys_get_separate_tokens() {
        let h = Harness::static_keys();
        let base = request("alice");
        let variants = [
            base.clone(),
            TokenRequest {
                user: "bob".into(),
                ..base.clone()
            },
            TokenRequest {
                host: "other.cluster-abc.eu-west-1.rds.amazonaws.com".into(),
                ..base.clone()
            },
            TokenRequest {
                port: 3307,
                ..base.clone()
            },
            TokenRequest {
                region: "eu-west-2".into(),
                ..base.clone()
            },
        ];
        let mut tokens = Vec::new();
        for req in &variants {
            tokens.push(h.cache.token(req).await.expect("mints").expose().to_owned());
        }
        assert_eq!(h.cache.mints(), 5);
        for (i, a) in tokens.iter().enumerate() {
            for b in &tokens[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Each is cached under its own key.
        for req in &variants {
            h.cache.token(req).await.expect("cached");
        }
        assert_eq!(h.cache.mints(), 5);
    }

    /// Wait until `n` callers hold the key's flight lock handle (one minting, the rest queued).
    async fn wait_for_callers(cache: &TokenCache, req: &TokenRequest, n: usize) {
        loop {
            let count = lock(&cache.slots)
                .get(req)
                .map(|slot| Arc::strong_count(&slot.flight) - 1)
                .unwrap_or(0);
            if count == n {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_mint() {
        let gate = Arc::new(Semaphore::new(0));
        let h = Harness::new(
            Some(Arc::clone(&gate)),
            Box::new(|_| Ok(Credentials::new("AKIDSTATIC", SECRET, None, None, "fake"))),
        );
        let req = request("alice");
        const CALLERS: usize = 16;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let cache = Arc::clone(&h.cache);
            let req = req.clone();
            tasks.spawn(async move { cache.token(&req).await });
        }
        wait_for_callers(&h.cache, &req, CALLERS).await;
        gate.add_permits(CALLERS);
        let mut tokens = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            tokens.push(joined.expect("task ran").expect("token"));
        }
        assert_eq!(tokens.len(), CALLERS);
        assert!(tokens.iter().all(|t| t == &tokens[0]));
        assert_eq!(h.cache.mints(), 1);
        assert_eq!(h.calls(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_failure() {
        let gate = Arc::new(Semaphore::new(0));
        let h = Harness::new(
            Some(Arc::clone(&gate)),
            Box::new(|_| {
                Err(CredentialsError::not_loaded(
                    "no providers in chain provided credentials",
                ))
            }),
        );
        let req = request("alice");
        const CALLERS: usize = 8;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let cache = Arc::clone(&h.cache);
            let req = req.clone();
            tasks.spawn(async move { cache.token(&req).await });
        }
        wait_for_callers(&h.cache, &req, CALLERS).await;
        gate.add_permits(CALLERS);
        while let Some(joined) = tasks.join_next().await {
            let err = joined.expect("task ran").expect_err("fails");
            assert!(matches!(err, Error::NoCredentials { .. }), "{err:?}");
        }
        assert_eq!(h.calls(), 1, "waiters take the failed mint's error");
        // A later call tries again.
        gate.add_permits(1);
        h.cache.token(&req).await.expect_err("still failing");
        assert_eq!(h.calls(), 2);
    }

    #[tokio::test]
    async fn invalidate_forces_a_new_mint() {
        let h = Harness::static_keys();
        let req = request("alice");
        h.cache.token(&req).await.expect("mints");
        h.cache.token(&req).await.expect("cached");
        assert_eq!(h.cache.mints(), 1);
        h.cache.invalidate(&req);
        h.cache.token(&req).await.expect("re-mints");
        assert_eq!(h.cache.mints(), 2);
        // Invalidating an unknown key is harmless.
        h.cache.invalidate(&request("nobody"));
    }

    /// Access denied for one user (a typo, a user without rds-db:connect) drops that user's token
    /// only: other users keep theirs, and the kept credentials are looked up again at most once
    /// per refetch interval however many rejections come in.
    #[tokio::test]
    async fn rejections_drop_one_token_and_refetch_credentials_at_most_once_per_interval() {
        let h = Harness::new(
            None,
            Box::new(|now| {
                Ok(Credentials::new(
                    "ASIATEMP",
                    SECRET,
                    Some(SESSION_TOKEN.into()),
                    Some(now + Duration::from_secs(3600)),
                    "fake",
                ))
            }),
        );
        let alice = request("alice");
        let alice_token = h.cache.token(&alice).await.expect("mints");
        assert_eq!(h.calls(), 1);
        for i in 0..50 {
            let typo = request(&format!("alcie{i}"));
            h.cache.token(&typo).await.expect("mints");
            h.cache.invalidate(&typo);
        }
        assert_eq!(
            h.calls(),
            1,
            "rejections within the interval never reach the provider"
        );
        assert_eq!(
            h.cache.token(&alice).await.expect("cached"),
            alice_token,
            "another user's rejection left alice's token alone"
        );
        h.advance(CREDENTIALS_REFETCH_INTERVAL);
        for i in 0..50 {
            let typo = request(&format!("bob{i}"));
            h.cache.token(&typo).await.expect("mints");
            h.cache.invalidate(&typo);
        }
        assert_eq!(h.calls(), 2, "one refetch per interval after rejections");
    }

    /// Warming looks the credentials up once, so the first login's mint needs no lookup; it says
    /// when to warm again (before the kept credentials stop being reused).
    #[tokio::test]
    async fn warm_fetches_ahead_of_the_first_mint() {
        let h = Harness::new(
            None,
            Box::new(|now| {
                Ok(Credentials::new(
                    "ASIATEMP",
                    SECRET,
                    Some(SESSION_TOKEN.into()),
                    Some(now + Duration::from_secs(3600)),
                    "fake",
                ))
            }),
        );
        let now = *h.now.lock().expect("clock");
        let again = h
            .cache
            .warm()
            .await
            .expect("warms")
            .expect("expiring credentials");
        assert!(again > now && again < now + Duration::from_secs(3600) - CREDENTIALS_REUSE_MARGIN);
        assert_eq!(h.calls(), 1);
        h.cache.token(&request("alice")).await.expect("mints");
        assert_eq!(h.calls(), 1, "the mint used the warmed credentials");
        let h = Harness::static_keys();
        assert_eq!(h.cache.warm().await.expect("warms"), None);
    }

    #[tokio::test]
    async fn failing_provider_gives_the_mapped_error_naming_the_profile() {
        let h = Harness::new(
            None,
            Box::new(|_| {
                Err(CredentialsError::not_loaded(
                    "no providers in chain provided credentials",
                ))
            }),
        );
        let err = h.cache.token(&request("alice")).await.expect_err("fails");
        let text = err.to_string();
        assert!(matches!(err, Error::NoCredentials { .. }), "{err:?}");
        assert!(
            text.starts_with("no AWS credentials found for profile `dev`"),
            "{text}"
        );
        assert!(text.contains("`aws sso login --profile dev`"), "{text}");
        assert!(
            text.contains("no providers in chain provided credentials"),
            "{text}"
        );
        assert_eq!(h.cache.mints(), 0);
    }

    #[tokio::test]
    async fn slow_provider_times_out() {
        let gate = Arc::new(Semaphore::new(0)); // never opened
        let mut h = Harness::new(
            Some(gate),
            Box::new(|_| Ok(Credentials::new("AKIDSTATIC", SECRET, None, None, "fake"))),
        );
        Arc::get_mut(&mut h.cache)
            .expect("sole owner")
            .credentials_timeout = Duration::from_millis(20);
        let err = h
            .cache
            .token(&request("alice"))
            .await
            .expect_err("times out");
        assert!(matches!(err, Error::CredentialsTimedOut { .. }), "{err:?}");
        assert!(err.to_string().contains("profile `dev` timed out"));
    }

    #[tokio::test]
    async fn static_credentials_work_end_to_end() {
        // What a test (or a CI job with fixed keys) wires up: a static provider, no aws-config.
        let creds = Credentials::new("AKIDEXAMPLE", SECRET, None, None, "static");
        let cache =
            TokenCache::with_profile_label(SharedCredentialsProvider::new(creds.clone()), None);
        let when = humantime::parse_rfc3339("2026-01-02T03:04:05Z").expect("time");
        let cache = cache.with_clock(move || when);
        let req = request("iam_user");
        let req = TokenRequest {
            host: "mydb.cluster-abc123xyz.eu-west-1.rds.amazonaws.com".into(),
            ..req
        };
        let source: Arc<dyn TokenSource> = Arc::new(cache);
        let token = source.token(&req).await.expect("mints");
        // The first botocore vector: same request, keys and time.
        assert!(token.expose().ends_with(
            "X-Amz-Signature=42033bb4f7721e8d312009de31ad3c2e2bbf37f7b08f5fc7af67cc14585e2f8d"
        ));
        assert_eq!(token, presign(&req, &creds, when).expect("signs"));
    }

    #[tokio::test]
    async fn load_aws_profile_credentials_mint_through_the_cache() {
        #[allow(deprecated)] // aws-config's (deprecated) re-exports of the profile-file types
        let loader = {
            use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
            let files = ProfileFiles::builder()
                .include_default_config_file(false)
                .include_default_credentials_file(false)
                .with_contents(ProfileFileKind::Config, "[profile rdsiam-e2e]\nregion = eu-west-1\n")
                .with_contents(
                    ProfileFileKind::Credentials,
                    "[rdsiam-e2e]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n",
                )
                .build();
            aws_config::defaults(aws_config::BehaviorVersion::latest()).profile_files(files)
        };
        let (provider, _region) =
            super::super::credentials::load_aws_from(loader, Some("rdsiam-e2e")).await;
        let when = humantime::parse_rfc3339("2026-01-02T03:04:05Z").expect("time");
        let cache = TokenCache::new(provider, Some("rdsiam-e2e".into())).with_clock(move || when);
        let req = TokenRequest {
            host: "mydb.cluster-abc123xyz.eu-west-1.rds.amazonaws.com".into(),
            port: 3306,
            user: "iam_user".into(),
            region: "eu-west-1".into(),
        };
        let token = cache.token(&req).await.expect("mints");
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // Environment keys would win over the profile in the default chain.
            assert!(token.expose().ends_with(
                "X-Amz-Signature=42033bb4f7721e8d312009de31ad3c2e2bbf37f7b08f5fc7af67cc14585e2f8d"
            ));
        }
        assert_eq!(cache.mints(), 1);
    }

    #[tokio::test]
    async fn debug_output_never_contains_secrets() {
        let h = Harness::new(
            None,
            Box::new(|now| {
                Ok(Credentials::new(
                    "ASIATEMP",
                    SECRET,
                    Some(SESSION_TOKEN.into()),
                    Some(now + Duration::from_secs(3600)),
                    "fake",
                ))
            }),
        );
        let token = h.cache.token(&request("alice")).await.expect("mints");
        let expired = Error::CredentialsExpired {
            profile: Some("dev".into()),
            expired_at: None,
            context: "x".into(),
        };
        let shown = [
            format!("{token:?}"),
            format!("{token}"),
            format!("{:?}", h.cache),
            format!("{expired:?}"),
            format!("{expired}"),
        ];
        for text in shown {
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains("SessionToken"), "{text}");
            assert!(!text.contains("X-Amz-Signature"), "{text}");
            assert!(!text.contains(token.expose()), "{text}");
        }
    }
}

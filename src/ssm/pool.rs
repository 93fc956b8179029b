//! A pool of warm SSM sessions to one target and destination, and the configuration of the SSM
//! transport ([`SsmConfig`]).
//!
//! Each of the N slots runs a task that opens a session (StartSession → WebSocket → handshake),
//! publishes it, waits for it to end and opens the next, with capped exponential backoff after
//! failures and **no retry limit** while the pool lives. Sessions are opened ahead, so the first
//! connection does not pay for StartSession. [`Pool::connect`] opens a stream on the live session
//! with the fewest open streams, waiting at most [`SsmConfig::connect_timeout`] for one to become
//! ready and then failing with the last error a slot saw (a refused StartSession names the
//! missing permission or the disconnected target).
//!
//! New streams go only to sessions that are connected and making progress, the least loaded
//! first: a session resuming its WebSocket or in a stall episode ([`super::stall`]) is skipped.
//!
//! **Idle and maximum-duration policy.** A session that ends while streams are open on it (a
//! failure, a stall, the service's maximum session duration mid-use) is replaced at once. One that
//! ends with no stream open — most likely the organisation's idle timeout or maximum duration — is
//! replaced only when a client next needs a session, so those settings keep their meaning: an idle
//! proxy does not hold sessions open forever. Open connections keep their session alive with a
//! smux NOP every few minutes (see the session task).
//!
//! Several sessions matter for throughput: the agent paces each session to about 0.9 MiB/s
//! downstream (spec §9), and its pump is per session. Basic-mode sessions (old agents) carry one
//! connection each and are replaced when it closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use rustls::ClientConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Error;
use super::api::{Api, DOCUMENT_REMOTE_HOST, SessionRequest};
use super::proto::payload::CLIENT_VERSION;
use super::session::{self, SessionHandle, SessionParams};
use super::stream::SsmStream;
use super::websocket::{DialConfig, Signer};

/// Default number of warm sessions.
pub const DEFAULT_SESSIONS: usize = 2;

/// Default time [`Pool::connect`] waits for a usable session.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// First delay after a failed session open.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);

/// Longest delay between session opens.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A session that lived at least this long resets the backoff when it ends.
const HEALTHY_LIFETIME: Duration = Duration::from_secs(10);

/// Resolves the target anew for each session (e.g. the current task of an ECS service, so a
/// replaced task is followed).
pub type TargetResolver =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Everything the SSM transport needs besides AWS credentials.
#[derive(Clone)]
pub struct SsmConfig {
    /// `i-…`, `mi-…` or `ecs:<cluster>_<taskId>_<runtimeId>`.
    pub target: String,
    /// When set, called before each new session instead of using `target` as is.
    pub target_resolver: Option<TargetResolver>,
    /// Destination host the agent dials (the RDS endpoint name).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Region for signing the WebSocket upgrade (the API client uses the SDK config's region).
    pub region: String,
    /// SSM document; [`DOCUMENT_REMOTE_HOST`] by default.
    pub document: String,
    /// Warm sessions kept open.
    pub sessions: usize,
    /// How long a connect waits for a usable session.
    pub connect_timeout: Duration,
    /// Largest Output payload sent upstream (the plugin uses 1024).
    pub max_payload: usize,
    /// StartSession → HandshakeComplete time limit.
    pub handshake_timeout: Duration,
    /// WebSocket ping period; a socket silent for three periods is dropped and resumed.
    pub ping_interval: Duration,
    /// How long to retry ResumeSession before replacing the session.
    pub resume_for: Duration,
    /// How long a session may make no progress before it is resumed once, then replaced.
    pub stall_timeout: Duration,
    /// Sign the WebSocket upgrade with SigV4 (current plugins do).
    pub sign_websocket: bool,
    /// TLS roots for `wss://` (None: the embedded bundle, which has the Amazon Trust roots).
    pub tls: Option<Arc<ClientConfig>>,
    /// Longest delay between attempts to open a session.
    pub backoff_max: Duration,
    /// The client version advertised (default [`CLIENT_VERSION`]).
    pub client_version: String,
    /// StartSession `Reason`.
    pub reason: Option<String>,
}

impl std::fmt::Debug for SsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsmConfig")
            .field("target", &self.target)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("region", &self.region)
            .field("document", &self.document)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl SsmConfig {
    /// Defaults for forwarding to `host:port` through `target`, signing for `region`.
    pub fn new(
        target: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        region: impl Into<String>,
    ) -> Self {
        Self {
            target: target.into(),
            target_resolver: None,
            host: host.into(),
            port,
            region: region.into(),
            document: DOCUMENT_REMOTE_HOST.to_owned(),
            sessions: DEFAULT_SESSIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_payload: 1024,
            handshake_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            resume_for: Duration::from_secs(120),
            stall_timeout: super::session::DEFAULT_STALL_TIMEOUT,
            sign_websocket: true,
            tls: None,
            backoff_max: BACKOFF_MAX,
            client_version: CLIENT_VERSION.to_owned(),
            reason: None,
        }
    }

    /// `ssm <target> → host:port`.
    pub fn describe(&self) -> String {
        format!("ssm {} → {}:{}", self.target, self.host, self.port)
    }
}

/// How often a waiting connect looks again at the sessions' health.
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// State shared by the slots and [`Pool::connect`].
struct Inner {
    /// The configuration.
    config: SsmConfig,
    /// Counters for metrics.
    stats: PoolStats,
    /// SSM API client.
    api: Api,
    /// Session parameters (target filled in per session).
    params: SessionParams,
    /// One entry per slot: its live session.
    slots: Mutex<Vec<Option<Arc<SessionHandle>>>>,
    /// Bumped whenever a slot changes; waiters watch it.
    changed: watch::Sender<u64>,
    /// Bumped by every connect: slots whose session ended while idle wait for it.
    demand: watch::Sender<u64>,
    /// Slots waiting for demand now.
    idle_slots: std::sync::atomic::AtomicUsize,
    /// The most recent failure to open a session.
    last_error: Mutex<Option<String>>,
    /// Stops the slots.
    cancel: CancellationToken,
    /// The slot tasks.
    tracker: TaskTracker,
}

/// What a pool has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Sessions opened (StartSession through handshake).
    pub started: AtomicU64,
    /// Attempts to open a session that failed.
    pub open_failures: AtomicU64,
    /// Sessions that ended and were replaced.
    pub replaced: AtomicU64,
    /// WebSocket reconnects that resumed a session.
    pub resumes: Arc<AtomicU64>,
    /// Sessions given up because they stopped making progress.
    pub stalls: Arc<AtomicU64>,
    /// Stream messages resent.
    pub retransmits: Arc<AtomicU64>,
}

/// N warm sessions to one target; see the module docs.
#[derive(Clone)]
pub struct Pool {
    /// Shared with the slot tasks.
    inner: Arc<Inner>,
    /// Cancels the slots when the last clone of the pool is dropped.
    _guard: Arc<tokio_util::sync::DropGuard>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts the slots (needs a Tokio runtime). `aws` supplies the region and endpoint of the
    /// API client and the credentials for signing.
    pub fn new(config: SsmConfig, aws: &aws_config::SdkConfig) -> Result<Self, Error> {
        let tls = match &config.tls {
            Some(tls) => tls.clone(),
            None => crate::tls::upstream_client_config(&crate::tls::CaSource::Embedded).map_err(
                |e| Error::WebSocket {
                    url: String::new(),
                    message: format!("TLS roots: {e}"),
                },
            )?,
        };
        let signer = match (config.sign_websocket, aws.credentials_provider()) {
            (true, Some(credentials)) => Some(Signer {
                credentials,
                region: config.region.clone(),
            }),
            (true, None) => {
                return Err(Error::Credentials(
                    "no credentials provider in the AWS configuration".to_owned(),
                ));
            }
            (false, _) => None,
        };
        Ok(Self::with_parts(config, Api::new(aws), tls, signer))
    }

    /// [`Self::new`] from explicit parts.
    pub fn with_parts(
        config: SsmConfig,
        api: Api,
        tls: Arc<ClientConfig>,
        signer: Option<Signer>,
    ) -> Self {
        let request = SessionRequest {
            target: config.target.clone(),
            document: config.document.clone(),
            host: config.host.clone(),
            port: config.port,
            reason: config.reason.clone(),
        };
        let dial = DialConfig {
            tls,
            signer,
            client_id: super::proto::message::MessageId::random().to_string(),
            client_version: config.client_version.clone(),
        };
        let mut params = SessionParams::new(request, dial);
        params.max_payload = config
            .max_payload
            .clamp(1, super::proto::message::MAX_PAYLOAD_LEN);
        params.handshake_timeout = config.handshake_timeout;
        params.ping_interval = config.ping_interval;
        params.dead_after = config.ping_interval * 3;
        params.resume_for = config.resume_for;
        params.stall_timeout = config.stall_timeout;
        let n = config.sessions.max(1);
        let (changed, _) = watch::channel(0);
        let (demand, _) = watch::channel(0);
        let stats = PoolStats {
            resumes: params.resumes.clone(),
            stalls: params.stalls.clone(),
            retransmits: params.retransmits.clone(),
            ..PoolStats::default()
        };
        let inner = Arc::new(Inner {
            config,
            stats,
            api,
            params,
            slots: Mutex::new(vec![None; n]),
            changed,
            demand,
            idle_slots: std::sync::atomic::AtomicUsize::new(0),
            last_error: Mutex::new(None),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        for slot in 0..n {
            let inner2 = inner.clone();
            inner
                .tracker
                .spawn(run_slot(inner2, slot).instrument(info_span!("ssm_slot", slot)));
        }
        inner.tracker.close();
        let guard = Arc::new(inner.cancel.clone().drop_guard());
        Self {
            inner,
            _guard: guard,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SsmConfig {
        &self.inner.config
    }

    /// Opens a stream on the least-loaded session that is connected and making progress, waiting
    /// for one up to the connect timeout. A session that is resuming its WebSocket or in a stall
    /// episode gets no new streams (code review L5); a slot whose session ended while idle is
    /// refilled now (see the module docs).
    pub async fn connect(&self) -> Result<SsmStream, Error> {
        let deadline = tokio::time::Instant::now() + self.inner.config.connect_timeout;
        let mut rx = self.inner.changed.subscribe();
        self.inner.demand.send_modify(|v| *v += 1);
        loop {
            if self.inner.cancel.is_cancelled() {
                return Err(Error::Shutdown);
            }
            rx.borrow_and_update();
            let mut candidates: Vec<Arc<SessionHandle>> = lock(&self.inner.slots)
                .iter()
                .flatten()
                .filter(|s| s.can_open() && s.is_healthy())
                .cloned()
                .collect();
            candidates.sort_by_key(|s| (s.open_streams(), s.opened_streams()));
            for session in candidates {
                if let Ok(stream) = session.open_stream() {
                    return Ok(stream);
                }
            }
            // No usable session: say so to idle slots (again on every look, so none misses it),
            // and, as health changes are not announced, look again shortly even without news.
            self.inner.demand.send_modify(|v| *v += 1);
            let soon = (tokio::time::Instant::now() + HEALTH_POLL).min(deadline);
            let _ = tokio::time::timeout_at(soon, rx.changed()).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NoSession {
                    target: self.inner.config.target.clone(),
                    after: self.inner.config.connect_timeout,
                    last_error: lock(&self.inner.last_error).clone(),
                });
            }
        }
    }

    /// Live sessions now.
    pub fn live_sessions(&self) -> usize {
        lock(&self.inner.slots)
            .iter()
            .flatten()
            .filter(|s| s.is_alive())
            .count()
    }

    /// Ids of the live sessions.
    pub fn session_ids(&self) -> Vec<String> {
        lock(&self.inner.slots)
            .iter()
            .flatten()
            .filter(|s| s.is_alive())
            .map(|s| s.session_id().to_owned())
            .collect()
    }

    /// Waits until `n` sessions are live (or the timeout passes); true if they are.
    pub async fn wait_live(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if self.live_sessions() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.live_sessions() >= n;
            }
        }
    }

    /// Sessions in a stall episode now.
    pub fn stalled_sessions(&self) -> usize {
        lock(&self.inner.slots)
            .iter()
            .flatten()
            .filter(|s| s.is_alive() && s.is_stalled())
            .count()
    }

    /// Slots whose session ended while idle and that open a new one when a client connects.
    pub fn idle_slots(&self) -> usize {
        self.inner.idle_slots.load(Ordering::Relaxed)
    }

    /// Sessions connected and making progress now.
    pub fn healthy_sessions(&self) -> usize {
        lock(&self.inner.slots)
            .iter()
            .flatten()
            .filter(|s| s.is_alive() && s.is_healthy())
            .count()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    /// The handshake of a live session (agent version, mux or basic), if one is live.
    pub fn handshake_info(&self) -> Option<super::proto::handshake::HandshakeInfo> {
        lock(&self.inner.slots)
            .iter()
            .flatten()
            .find(|s| s.is_alive())
            .map(|s| s.info().clone())
    }

    /// The most recent failure to open a session.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Stops the slots and ends every session (TerminateSession), waiting for them.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.wait().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One slot: open a session, publish it, wait for its end, repeat; back off after failures.
async fn run_slot(inner: Arc<Inner>, slot: usize) {
    let mut delay = BACKOFF_INITIAL;
    let cancel = inner.cancel.clone();
    // The slot holds the pool state alive only through `inner`; a dropped Pool cancels it.
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let params = match &inner.config.target_resolver {
            Some(resolve) => match resolve().await {
                Ok(target) => {
                    let mut p = inner.params.clone();
                    p.request.target = target;
                    Arc::new(p)
                }
                Err(e) => {
                    record_error(&inner, format!("resolving the SSM target: {e}"));
                    if !sleep_or_cancel(&cancel, &mut delay, inner.config.backoff_max).await {
                        return;
                    }
                    continue;
                }
            },
            None => Arc::new(inner.params.clone()),
        };
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session::open(inner.api.clone(), params) => r,
        };
        match opened {
            Ok(handle) => {
                inner.stats.started.fetch_add(1, Ordering::Relaxed);
                let handle = Arc::new(handle);
                let started = Instant::now();
                lock(&inner.slots)[slot] = Some(handle.clone());
                inner.changed.send_modify(|v| *v += 1);
                tokio::select! {
                    _ = handle.closed() => {}
                    _ = cancel.cancelled() => {
                        handle.shutdown().await;
                        lock(&inner.slots)[slot] = None;
                        return;
                    }
                }
                let in_use = handle.open_streams() > 0;
                lock(&inner.slots)[slot] = None;
                inner.stats.replaced.fetch_add(1, Ordering::Relaxed);
                inner.changed.send_modify(|v| *v += 1);
                if let Some(why) = handle.failure() {
                    info!(session_id = %handle.session_id(), reason = %why, "ssm session ended");
                    record_error(&inner, why);
                }
                if !in_use {
                    // Ended while idle (the service's idle timeout or maximum session duration,
                    // most likely): reopen only when a client needs a session, so those settings
                    // keep their meaning.
                    let mut demand = inner.demand.subscribe();
                    demand.borrow_and_update();
                    debug!("ssm session ended while idle; a new one opens when a client connects");
                    inner.idle_slots.fetch_add(1, Ordering::Relaxed);
                    let woke = tokio::select! {
                        _ = cancel.cancelled() => false,
                        _ = demand.changed() => true,
                    };
                    inner.idle_slots.fetch_sub(1, Ordering::Relaxed);
                    if !woke {
                        return;
                    }
                }
                if started.elapsed() >= HEALTHY_LIFETIME || handle.opened_streams() > 0 {
                    delay = BACKOFF_INITIAL;
                    continue;
                }
                if !sleep_or_cancel(&cancel, &mut delay, inner.config.backoff_max).await {
                    return;
                }
            }
            Err(e) => {
                inner.stats.open_failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot open ssm session");
                record_error(&inner, e.to_string());
                inner.changed.send_modify(|v| *v += 1);
                if !sleep_or_cancel(&cancel, &mut delay, inner.config.backoff_max).await {
                    return;
                }
            }
        }
    }
}

fn record_error(inner: &Inner, message: String) {
    *lock(&inner.last_error) = Some(message);
}

/// Sleeps `delay` (with up to 25 % jitter) and doubles it up to `max`; false if cancelled.
async fn sleep_or_cancel(cancel: &CancellationToken, delay: &mut Duration, max: Duration) -> bool {
    let jitter = delay.mul_f64(rand::random::<f64>() * 0.25);
    let d = *delay + jitter;
    *delay = (*delay * 2).min(max);
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Convenience for [`SharedCredentialsProvider`] users.
pub fn signer(credentials: SharedCredentialsProvider, region: impl Into<String>) -> Signer {
    Signer {
        credentials,
        region: region.into(),
    }
}

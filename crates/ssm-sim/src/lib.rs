//! `ssm-sim`: a local AWS for rds-iam-proxy's tests, benchmarks and newcomers (DESIGN.md decision
//! 9; spec §12) — AWS Systems Manager Session Manager port forwarding (the SSM API, the message
//! gateway's WebSocket and the SSM agent) and a mock AWS account, on one loopback port. It is a
//! test double in its own crate: it uses only rds-iam-proxy's public API (the same sans-IO codecs
//! our client uses), and the product depends on it only as a dev-dependency. The `ssm-sim`
//! binary (`src/main.rs`) runs it as a process.
//!
//! * [`http`]: one HTTP/1.1 listener serves the awsJson1_1 API (`POST /`, `X-Amz-Target:
//!   AmazonSSM.StartSession|ResumeSession|TerminateSession`, errors as `{"__type","message"}`) and
//!   the data-channel WebSocket (`GET /v1/data-channel/<SessionId>`, signed or unsigned upgrade,
//!   then a text OpenDataChannel carrying the current token);
//! * [`ssm::gateway`]: relays AgentMessages between the client's WebSocket and the agent, through
//!   the fault injector ([`ssm::faults`]) and the injected round-trip time, and resets the socket
//!   on demand;
//! * [`ssm::agent`]: the agent side of one session with the agent's reliability rules
//!   ([`rds_iam_proxy::ssm::proto::reliable::Config::agent`]), the handshake, a smux v1 server that dials
//!   the routed destination per stream (ConnectToPortError + FIN when that fails), basic mode for
//!   agent versions too old for smux, `channel_closed` on TerminateSession, idle timeout, and an
//!   optional realistic pump (1 KiB per message, 1 ms pause, as the real agent);
//! * [`ssm::link`]: the optional rate-limited client → agent link ([`SimConfig::uplink_rate`]);
//! * [`aws`]: the AWS account (CloudFormation, RDS, STS, EC2, ECS, Secrets Manager);
//! * [`binary`]: where the `ssm-sim` binary is, for other crates' tests that run it as a process.
//!
//! The agent is faithful by default where flow control is concerned (spec §5, §7.4): head-only
//! retransmission on a 100 ms scan, no send window (100 000 tracked messages, then sent once
//! untracked), and a smux side that stops taking client messages — acknowledgements included —
//! while 4 MiB wait for a destination that does not read. [`SimConfig::fast_agent`] brings back
//! the older, gentler agent some tests were written against. Tests can make the agent stop
//! acknowledging ([`SimServer::set_acks`], [`SimServer::set_session_acks`],
//! [`SimConfig::stop_acks_after`]) and read what it saw ([`StatsSnapshot`]: API calls, duplicate
//! client messages, retransmissions).
//!
//! Start one with [`SimServer::start`]; point `aws-sdk-ssm` (or the AWS CLI with
//! `AWS_ENDPOINT_URL_SSM`) at [`SimServer::endpoint_url`]. Destinations are routed: a
//! StartSession whose `host`/`portNumber` match a [`Route`] is forwarded to its dial address;
//! without a route only loopback destinations are dialled.
//!
//! The same port serves the AWS API mock of [`aws`] (CloudFormation, RDS, STS, EC2,
//! ECS, Secrets Manager), told apart from SSM by the service in each request's SigV4 credential
//! scope, so `AWS_ENDPOINT_URL=<endpoint url>` points every client at the simulator. Its world
//! comes from [`SimConfig::aws_world`] and changes through [`SimServer::aws_world`]; with a world
//! configured, StartSession reaches only targets the world says are up, and a change that stops
//! a target ends its live sessions.

pub mod aws;
pub mod binary;
pub mod http;
pub mod ssm;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aws::{AwsWorld, TargetState};
use crate::ssm::{agent, link};

pub use ssm::faults::Faults;

/// The default agent version: current, smux without keep-alive.
pub const DEFAULT_AGENT_VERSION: &str = "3.3.987.0";

/// A destination override: StartSession for `host:port` is forwarded to `dial`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Host as given in the StartSession `host` parameter.
    pub host: String,
    /// Port as given in `portNumber`.
    pub port: u16,
    /// Address the agent dials instead (`127.0.0.1:3306`).
    pub dial: String,
}

impl std::str::FromStr for Route {
    type Err = String;

    /// `HOST:PORT=DIALADDR`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (from, dial) = s
            .split_once('=')
            .ok_or_else(|| format!("route {s:?}: expected HOST:PORT=DIALADDR"))?;
        let (host, port) = from
            .rsplit_once(':')
            .ok_or_else(|| format!("route {s:?}: expected HOST:PORT before '='"))?;
        let port = port
            .parse()
            .map_err(|_| format!("route {s:?}: {port:?} is not a port"))?;
        if dial.is_empty() {
            return Err(format!("route {s:?}: empty dial address"));
        }
        Ok(Route {
            host: host.to_owned(),
            port,
            dial: dial.to_owned(),
        })
    }
}

/// Whether the agent sends its HandshakeRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeBehaviour {
    /// As the agent does.
    Normal,
    /// Never: the client must time out.
    Never,
}

/// Everything the simulator can be told.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen (`127.0.0.1:0` by default).
    pub listen: SocketAddr,
    /// Destination routes.
    pub routes: Vec<Route>,
    /// AgentVersion in the HandshakeRequest (`3.0.196.0` or older forces basic mode).
    pub agent_version: String,
    /// Message faults on the gateway.
    pub faults: Faults,
    /// Realistic agent pump: 1024-byte messages with a 1 ms pause after each.
    pub realistic: bool,
    /// Bytes per agent message when not realistic.
    pub agent_chunk: usize,
    /// Round-trip time added by the gateway (half each way).
    pub rtt: Duration,
    /// Close every client WebSocket with 1000 "Bye" after this long.
    pub ws_reset_every: Option<Duration>,
    /// Answer ResumeSession without a token (the session is gone).
    pub refuse_resume: bool,
    /// Answer every StartSession with this error (`__type`, message).
    pub start_session_error: Option<(String, String)>,
    /// Targets whose agent is "not connected" (StartSession → TargetNotConnected).
    pub disconnected_targets: Vec<String>,
    /// Service idle timeout: no stream data either way for this long ends the session.
    pub idle_timeout: Duration,
    /// How long the agent waits for the HandshakeResponse.
    pub handshake_timeout: Duration,
    /// Whether the agent starts the handshake.
    pub handshake: HandshakeBehaviour,
    /// Verify SigV4 upgrade signatures (when present) with this secret key.
    pub verify_secret: Option<String>,
    /// Require the upgrade to be signed.
    pub require_signature: bool,
    /// Raw WebSocket binary messages sent to every client right after OpenDataChannel, before any
    /// agent traffic (for testing how clients treat garbage from the service).
    pub inject_frames: Vec<bytes::Bytes>,
    /// The AWS account the API mock serves and StartSession checks targets against
    /// ([`aws`]); `None`: an empty account, and every target is reachable.
    pub aws_world: Option<AwsWorld>,
    /// The agent as this simulator had it before it was made faithful (issue 10): the pump stops
    /// while more than [`agent::FAST_AGENT_WINDOW`] bytes are unacknowledged, the head is
    /// retransmitted as soon as its RTO expires (no 100 ms scan, so gaps are repaired one per
    /// round trip), and a destination that does not read makes the agent drop in-order client
    /// messages unacknowledged instead of stopping its input. Gentler than the real agent; off by
    /// default.
    pub fast_agent: bool,
    /// Messages the agent keeps for retransmission before it sends new ones once, untracked
    /// (the agent's 100 000; smaller values reach that path in tests).
    pub agent_max_unacked: usize,
    /// Bytes per second the client → agent link carries (`None`: unlimited). Frames queue and are
    /// delivered in order, never dropped; past a small backlog ([`link::Uplink::buffer`]) the
    /// gateway stops reading the client's WebSocket, so the client's writes block as on a slow
    /// TCP path. The listener's receive buffer is kept small (64 KiB) when set.
    pub uplink_rate: Option<u64>,
    /// Each session's agent stops acknowledging this long after the session started: it stops
    /// taking client messages in (they wait, unacknowledged and unprocessed, as behind a blocked
    /// smux session) and never starts again. See also [`SimServer::set_acks`].
    pub stop_acks_after: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            routes: Vec::new(),
            agent_version: DEFAULT_AGENT_VERSION.to_owned(),
            faults: Faults::default(),
            realistic: false,
            agent_chunk: 32 * 1024,
            rtt: Duration::ZERO,
            ws_reset_every: None,
            refuse_resume: false,
            start_session_error: None,
            disconnected_targets: Vec::new(),
            idle_timeout: Duration::from_secs(20 * 60),
            handshake_timeout: Duration::from_secs(15),
            handshake: HandshakeBehaviour::Normal,
            verify_secret: None,
            require_signature: false,
            inject_frames: Vec::new(),
            aws_world: None,
            fast_agent: false,
            agent_max_unacked: agent::AGENT_MAX_UNACKED,
            uplink_rate: None,
            stop_acks_after: None,
        }
    }
}

/// Counters, for tests and the binary's log.
#[derive(Debug, Default)]
pub struct Stats {
    /// StartSession calls that created a session.
    pub start_session: AtomicU64,
    /// ResumeSession calls.
    pub resume_session: AtomicU64,
    /// TerminateSession calls.
    pub terminate_session: AtomicU64,
    /// WebSocket connections accepted (OpenDataChannel valid).
    pub ws_connections: AtomicU64,
    /// WebSocket upgrades whose signature was verified.
    pub signed_upgrades: AtomicU64,
    /// smux streams opened.
    pub streams: AtomicU64,
    /// Destination dials that failed.
    pub dial_failures: AtomicU64,
    /// Messages the fault injector dropped.
    pub dropped: AtomicU64,
    /// Messages it duplicated.
    pub duplicated: AtomicU64,
    /// Sessions whose handshake completed in basic mode.
    pub basic_sessions: AtomicU64,
    /// Sessions whose handshake completed in mux mode.
    pub mux_sessions: AtomicU64,
    /// `input_stream_data` messages the agent took in (duplicates included).
    pub input_messages: AtomicU64,
    /// Their payload bytes.
    pub input_bytes: AtomicU64,
    /// Of those, duplicates: messages already delivered or already buffered (retransmissions
    /// the agent did not need).
    pub input_duplicates: AtomicU64,
    /// Their payload bytes.
    pub input_duplicate_bytes: AtomicU64,
    /// Client messages the agent dropped unacknowledged: out-of-order buffer full, or (fast agent
    /// only) in order while its destinations were backed up.
    pub input_dropped: AtomicU64,
    /// Messages the agent retransmitted.
    pub agent_retransmits: AtomicU64,
    /// Messages the agent sent once without tracking them (its unacknowledged buffer was full).
    pub agent_untracked: AtomicU64,
    /// Times an agent stopped taking client messages in (smux receive budget full, or
    /// acknowledgements switched off).
    pub ingress_stalls: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::start_session`].
    pub start_session: u64,
    /// See [`Stats::resume_session`].
    pub resume_session: u64,
    /// See [`Stats::terminate_session`].
    pub terminate_session: u64,
    /// See [`Stats::ws_connections`].
    pub ws_connections: u64,
    /// See [`Stats::signed_upgrades`].
    pub signed_upgrades: u64,
    /// See [`Stats::streams`].
    pub streams: u64,
    /// See [`Stats::dial_failures`].
    pub dial_failures: u64,
    /// See [`Stats::dropped`].
    pub dropped: u64,
    /// See [`Stats::duplicated`].
    pub duplicated: u64,
    /// See [`Stats::basic_sessions`].
    pub basic_sessions: u64,
    /// See [`Stats::mux_sessions`].
    pub mux_sessions: u64,
    /// See [`Stats::input_messages`].
    pub input_messages: u64,
    /// See [`Stats::input_bytes`].
    pub input_bytes: u64,
    /// See [`Stats::input_duplicates`].
    pub input_duplicates: u64,
    /// See [`Stats::input_duplicate_bytes`].
    pub input_duplicate_bytes: u64,
    /// See [`Stats::input_dropped`].
    pub input_dropped: u64,
    /// See [`Stats::agent_retransmits`].
    pub agent_retransmits: u64,
    /// See [`Stats::agent_untracked`].
    pub agent_untracked: u64,
    /// See [`Stats::ingress_stalls`].
    pub ingress_stalls: u64,
}

impl StatsSnapshot {
    /// Duplicate client payload bytes as a fraction of all client payload bytes the agent took in
    /// (0 when none).
    pub fn duplicate_ratio(&self) -> f64 {
        if self.input_bytes == 0 {
            0.0
        } else {
            self.input_duplicate_bytes as f64 / self.input_bytes as f64
        }
    }
}

impl Stats {
    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            start_session: l(&self.start_session),
            resume_session: l(&self.resume_session),
            terminate_session: l(&self.terminate_session),
            ws_connections: l(&self.ws_connections),
            signed_upgrades: l(&self.signed_upgrades),
            streams: l(&self.streams),
            dial_failures: l(&self.dial_failures),
            dropped: l(&self.dropped),
            duplicated: l(&self.duplicated),
            basic_sessions: l(&self.basic_sessions),
            mux_sessions: l(&self.mux_sessions),
            input_messages: l(&self.input_messages),
            input_bytes: l(&self.input_bytes),
            input_duplicates: l(&self.input_duplicates),
            input_duplicate_bytes: l(&self.input_duplicate_bytes),
            input_dropped: l(&self.input_dropped),
            agent_retransmits: l(&self.agent_retransmits),
            agent_untracked: l(&self.agent_untracked),
            ingress_stalls: l(&self.ingress_stalls),
        }
    }
}

/// One session as the simulated service knows it.
#[derive(Debug)]
pub struct SimSession {
    /// The session id.
    pub id: String,
    /// The StartSession target.
    pub target: String,
    /// Mutable parts.
    pub state: Mutex<SessionState>,
    /// Events to the agent task.
    pub agent_tx: mpsc::UnboundedSender<agent::AgentEvent>,
    /// Wakes the agent task when the gateway has drained what it sent.
    pub agent_wake: Arc<tokio::sync::Notify>,
    /// Cancelled when the session is terminated (for whatever reason).
    pub terminated: CancellationToken,
    /// Whether this session's agent acknowledges (takes client messages in); see
    /// [`SimServer::set_session_acks`].
    pub acks: AtomicBool,
}

/// The mutable part of a [`SimSession`].
#[derive(Debug)]
pub struct SessionState {
    /// The token a new OpenDataChannel must carry.
    pub token: String,
    /// The current cell-number.
    pub cell: String,
}

/// State shared by the listener, the gateway connections and the agents.
#[derive(Debug)]
pub struct SimState {
    /// The configuration.
    pub config: SimConfig,
    /// The address the listener is bound to.
    pub addr: SocketAddr,
    /// Sessions by id (terminated ones stay, so ResumeSession can say they are gone).
    pub sessions: Mutex<HashMap<String, Arc<SimSession>>>,
    /// Counters.
    pub stats: Stats,
    /// Session counter for ids.
    pub next_session: AtomicU64,
    /// Stops everything.
    pub cancel: CancellationToken,
    /// Every task the simulator spawns.
    pub tracker: TaskTracker,
    /// Bumped by [`SimServer::reset_connections`]; gateway connections close when it changes.
    pub reset_epoch: tokio::sync::watch::Sender<u64>,
    /// The AWS world (see [`SimConfig::aws_world`]).
    pub aws_world: Mutex<Option<AwsWorld>>,
    /// The AWS API calls answered so far, as `service:Operation` (bounded, oldest dropped).
    pub aws_calls: Mutex<std::collections::VecDeque<String>>,
    /// Whether agents acknowledge at all; see [`SimServer::set_acks`].
    pub acks: AtomicBool,
}

impl SimState {
    /// Looks up a session.
    pub fn session(&self, id: &str) -> Option<Arc<SimSession>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// Records an answered AWS API call.
    pub fn record_aws_call(&self, call: String) {
        let mut calls = lock(&self.aws_calls);
        if calls.len() == MAX_RECORDED_CALLS {
            calls.pop_front();
        }
        calls.push_back(call);
    }
}

/// How many AWS API calls [`AwsWorldHandle::calls`] remembers.
const MAX_RECORDED_CALLS: usize = 10_000;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running simulator. Dropping it stops everything.
#[derive(Debug)]
pub struct SimServer {
    /// Shared state.
    state: Arc<SimState>,
}

impl SimServer {
    /// Binds `config.listen` and starts serving.
    pub async fn start(config: SimConfig) -> std::io::Result<SimServer> {
        let listener = if config.uplink_rate.is_some() {
            // A small receive buffer, so the kernel does not hide the slow link behind megabytes
            // of loopback buffering (accepted sockets inherit it).
            let socket = match config.listen {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            socket.set_recv_buffer_size(link::MIN_LINK_BUFFER as u32)?;
            socket.bind(config.listen)?;
            socket.listen(1024)?
        } else {
            TcpListener::bind(config.listen).await?
        };
        let addr = listener.local_addr()?;
        let (reset_epoch, _) = tokio::sync::watch::channel(0);
        let aws_world = Mutex::new(config.aws_world.clone());
        let state = Arc::new(SimState {
            config,
            addr,
            sessions: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            next_session: AtomicU64::new(1),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            reset_epoch,
            aws_world,
            aws_calls: Mutex::new(std::collections::VecDeque::new()),
            acks: AtomicBool::new(true),
        });
        state.tracker.spawn(http::serve(state.clone(), listener));
        Ok(SimServer { state })
    }

    /// `http://127.0.0.1:<port>`: the SSM endpoint URL.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// Counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    /// Ids of sessions not yet terminated.
    pub fn live_sessions(&self) -> Vec<String> {
        lock(&self.state.sessions)
            .values()
            .filter(|s| !s.terminated.is_cancelled())
            .map(|s| s.id.clone())
            .collect()
    }

    /// The TokenValue each session (live or ended) currently holds, for tests that prove it
    /// never shows up in a client's logs.
    pub fn session_tokens(&self) -> Vec<String> {
        lock(&self.state.sessions)
            .values()
            .map(|s| lock(&s.state).token.clone())
            .collect()
    }

    /// Terminates a session as the TerminateSession API would (channel_closed to the client).
    pub fn terminate(&self, session_id: &str, reason: &str) -> bool {
        match self.state.session(session_id) {
            Some(s) if !s.terminated.is_cancelled() => {
                let _ = s
                    .agent_tx
                    .send(agent::AgentEvent::Terminate(reason.to_owned()));
                true
            }
            _ => false,
        }
    }

    /// The AWS world the API mock serves: read it, change it while the simulator runs.
    pub fn aws_world(&self) -> AwsWorldHandle {
        AwsWorldHandle {
            state: self.state.clone(),
        }
    }

    /// Switches acknowledgement on or off for every agent, present and future. While off, an agent
    /// takes no client message in — no acknowledgement, no data to the destination; acks from the
    /// client wait too — exactly as the real agent does while its smux session is blocked (spec
    /// §7.4). What waited is processed, in order, once switched back on. Agent → client traffic
    /// goes on (and is retransmitted, its acks being among what waits).
    pub fn set_acks(&self, on: bool) {
        self.state.acks.store(on, Ordering::Release);
        for s in lock(&self.state.sessions).values() {
            s.agent_wake.notify_one();
        }
    }

    /// Like [`Self::set_acks`] for one session only; false when there is no such session.
    pub fn set_session_acks(&self, session_id: &str, on: bool) -> bool {
        match self.state.session(session_id) {
            Some(s) => {
                s.acks.store(on, Ordering::Release);
                s.agent_wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Closes every client WebSocket now with 1000 "Bye" (sessions stay resumable).
    pub fn reset_connections(&self) {
        self.state.reset_epoch.send_modify(|e| *e += 1);
    }

    /// Stops the listener, every session and every connection, and waits for their tasks.
    pub async fn shutdown(self) {
        self.state.cancel.cancel();
        self.state.tracker.close();
        self.state.tracker.wait().await;
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.state.cancel.cancel();
    }
}

/// A handle on a running simulator's AWS world ([`SimServer::aws_world`]).
#[derive(Clone, Debug)]
pub struct AwsWorldHandle {
    state: Arc<SimState>,
}

impl AwsWorldHandle {
    /// A copy of the world as it is now (an empty [`AwsWorld::default`] when none is configured).
    pub fn get(&self) -> AwsWorld {
        lock(&self.state.aws_world).clone().unwrap_or_default()
    }

    /// Whether a world is configured (StartSession checks targets only then).
    pub fn is_configured(&self) -> bool {
        lock(&self.state.aws_world).is_some()
    }

    /// Changes the world (configuring [`AwsWorld::default`] first when there is none) and then
    /// ends, as TerminateSession would, every live session whose target the changed world no
    /// longer lets connect (a stopped task, an instance no longer running). Returns what
    /// `change` returns.
    pub fn update<R>(&self, change: impl FnOnce(&mut AwsWorld) -> R) -> R {
        let (out, world) = {
            let mut guard = lock(&self.state.aws_world);
            let world = guard.get_or_insert_with(AwsWorld::default);
            (change(world), world.clone())
        };
        self.end_unreachable_sessions(&world);
        out
    }

    /// Replaces the world, with the same effect on live sessions as [`AwsWorldHandle::update`].
    pub fn set(&self, world: AwsWorld) {
        self.update(|w| *w = world);
    }

    /// The AWS API calls the simulator answered so far, oldest first, as `service:Operation`
    /// (`ecs:ListTasks`, `ssm:StartSession`; `service:` alone when the operation was missing).
    /// Errors count; requests refused before the service was known do not.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state.aws_calls).iter().cloned().collect()
    }

    fn end_unreachable_sessions(&self, world: &AwsWorld) {
        let sessions: Vec<Arc<SimSession>> = lock(&self.state.sessions)
            .values()
            .filter(|s| !s.terminated.is_cancelled())
            .filter(|s| world.target_state(&s.target) == TargetState::NotConnected)
            .cloned()
            .collect();
        for s in sessions {
            tracing::info!(session_id = %s.id, target = %s.target, "sim: target went away, ending session");
            let _ = s.agent_tx.send(agent::AgentEvent::Terminate(format!(
                "{} is not connected.",
                s.target
            )));
        }
    }
}

/// Random printable text for tokens and cell numbers.
pub(crate) fn random_text(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}

/// Base64 alphabet, to make cell numbers carry `+`, `/` (and a trailing `=`) like the real ones.
pub(crate) const BASE64: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

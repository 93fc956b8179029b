//! The soak with faults, shared by `examples/soak.rs` (the long run people start with
//! `scripts/soak --duration 30m`) and `tests/soak.rs` (a compressed run in the test suite).
//!
//! ```text
//! N workers (mysql_async) ──▶ rds-iam-proxy (the binary) ──SSM data channel──▶ simulator ──▶ MariaDB
//!                              --ssm-target, --ssm-sessions     resets every R, loss, reordering,
//!                                                                one TerminateSession partway
//! ```
//!
//! Each worker loops over checksummed work on its own connection: a random-size blob (client-side
//! MD5) is inserted, the server's `LENGTH`/`MD5` of the stored value is compared with the client's,
//! the blob is read back and hashed again, a server-made value (`REPEAT(SHA2(..))`) is compared
//! with the client's own computation and with the server's MD5 of it, and the row is deleted.
//! Every query runs under a watchdog, so a hang becomes a reported failure, never a stuck run.
//!
//! Partway through, a sentinel connection starts a long `SELECT SLEEP` and, once MariaDB shows it
//! running, one live session is terminated as `TerminateSession` would. Connections on that
//! session have to die: each must get an error (the proxy's "lost the link" ERR 1105 when it was
//! waiting for an answer, the client library's lost-connection error otherwise), reconnect, first
//! check what it had in flight (an acknowledged insert must be there intact; an unacknowledged one
//! absent or intact), and carry on.
//!
//! A run passes when no query hung, no checksum or read-back differed, and every error was a
//! link-loss error within [`TERMINATION_WINDOW`] of the termination.

// The example and the test use different parts.
#![allow(dead_code)]

use super::{logged_proxy, upstream};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;
use sha2::Sha512;
use ssm_sim::{Faults, Route, SimConfig, SimServer, StatsSnapshot};

use logged_proxy::{LoggedProxy, isolated};
use upstream::{RdsLikeUpstream, StartOptions};

/// Errors a connection of the terminated session may report are accepted until this long after
/// the termination.
pub const TERMINATION_WINDOW: Duration = Duration::from_secs(60);

/// The SSM target the proxy asks for (the simulator accepts any).
const TARGET: &str = "i-0500a0a0a0a0a0a0a";

/// The IAM database user the workers log in as (checked by botocore in the upstream's PAM).
const USER: &str = "iamuser";

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// How long the workers start new rounds.
    pub duration: Duration,
    /// Concurrent worker connections.
    pub connections: usize,
    /// `--ssm-sessions` of the proxy.
    pub ssm_sessions: usize,
    /// The simulator closes every WebSocket this long after it opened.
    pub reset_every: Duration,
    /// Probability of losing a message (each direction).
    pub loss: f64,
    /// Probability of delaying a message past later ones.
    pub reorder: f64,
    /// When the one TerminateSession happens, from the start of the run.
    pub terminate_at: Duration,
    /// Largest blob a worker inserts.
    pub max_blob: usize,
    /// How long one query may take before it counts as hung.
    pub watchdog: Duration,
    /// Seed for the faults and the data (0: random).
    pub seed: u64,
    /// A reader that stops reading a large result this long, every `pause_every` (None: no such
    /// reader), next to the workers on the same sessions.
    pub pause_every: Option<Duration>,
    /// How long that reader pauses each time.
    pub pause_for: Duration,
    /// The proxy binary.
    pub proxy_bin: PathBuf,
}

/// The kinds of outcome a query can have besides success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The proxy's ERR 1105 "lost the link to the database": the command was waiting.
    LinkLostErr,
    /// The client library's lost-connection error (the answer was under way, or nothing waited).
    ConnectionLost,
    /// A reconnect's login was refused with a MySQL error.
    LoginRefused,
    /// Any other server error.
    OtherServerError,
    /// The client library could not make sense of what came back (packets out of order, an
    /// unexpected packet): what an ERR written into an answer would cause.
    Protocol,
    /// A result differed from what was written or computed.
    Corrupted,
    /// No answer within the watchdog.
    Hung,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::LinkLostErr => "link_lost_err_1105",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::LoginRefused => "login_refused",
            ErrorKind::OtherServerError => "other_server_error",
            ErrorKind::Protocol => "protocol_error",
            ErrorKind::Corrupted => "corrupted",
            ErrorKind::Hung => "hung",
        }
    }

    /// Whether a connection that had to die may report this.
    fn is_link_loss(self) -> bool {
        matches!(
            self,
            ErrorKind::LinkLostErr | ErrorKind::ConnectionLost | ErrorKind::LoginRefused
        )
    }
}

/// One error as a worker saw it.
#[derive(Clone, Debug)]
pub struct ErrorEvent {
    /// Seconds since the start of the run.
    pub at: f64,
    /// Which worker (`usize::MAX`: the sentinel).
    pub worker: usize,
    /// What it was doing.
    pub op: &'static str,
    /// The kind.
    pub kind: ErrorKind,
    /// The message.
    pub detail: String,
}

/// What a run measured.
#[derive(Debug)]
pub struct SoakReport {
    /// The configuration.
    pub config: SoakConfig,
    /// Seconds from start until the last worker stopped.
    pub elapsed: f64,
    /// Queries answered with a result.
    pub queries: u64,
    /// Blob bytes sent to the server and received from it.
    pub bytes_up: u64,
    /// See `bytes_up`.
    pub bytes_down: u64,
    /// Rounds of the whole work completed.
    pub rounds: u64,
    /// Successful reconnects after an error.
    pub reconnects: u64,
    /// In-flight work checked after a reconnect (acknowledged or not).
    pub rechecked: u64,
    /// Microseconds per successful query.
    pub latency_us: Vec<f64>,
    /// Every error.
    pub errors: Vec<ErrorEvent>,
    /// Seconds since start when the session was terminated (None: never).
    pub terminated_at: Option<f64>,
    /// The terminated session's id.
    pub terminated_session: Option<String>,
    /// How the sentinel's `SELECT SLEEP` ended.
    pub sentinel: String,
    /// Whether the sentinel got the proxy's link-lost ERR.
    pub sentinel_got_err: bool,
    /// The simulator's counters at the end.
    pub sim: StatsSnapshot,
    /// Rounds started and completed after the termination (each worker does at least one).
    pub rounds_after_termination: u64,
    /// Workers that completed a round after the termination.
    pub workers_carried_on: usize,
    /// Pauses the pausing reader completed (then read its whole result, every row checked).
    pub pauses: u64,
}

impl SoakReport {
    /// Errors that break the run's promises: hangs, corruption, any error outside the window
    /// after the termination, and errors of a kind a dying connection would not report.
    pub fn violations(&self) -> Vec<&ErrorEvent> {
        self.errors
            .iter()
            .filter(|e| !self.excused(e))
            .collect::<Vec<_>>()
    }

    fn excused(&self, e: &ErrorEvent) -> bool {
        let Some(t) = self.terminated_at else {
            return false;
        };
        e.kind.is_link_loss() && e.at >= t && e.at <= t + TERMINATION_WINDOW.as_secs_f64()
    }

    /// Whether every promise held: no violation, the termination happened, and every worker
    /// carried on after it.
    pub fn passed(&self) -> bool {
        self.violations().is_empty()
            && self.terminated_at.is_some()
            && self.workers_carried_on == self.config.connections
    }

    /// Errors by kind.
    pub fn errors_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for e in &self.errors {
            *m.entry(e.kind.name()).or_insert(0) += 1;
        }
        m
    }

    fn pct_ms(&self, p: f64) -> f64 {
        if self.latency_us.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latency_us.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] / 1e3
    }

    /// The figures as `(name, value)` rows, for the table.
    pub fn figures(&self) -> Vec<(String, String)> {
        let c = &self.config;
        let mut rows = vec![
            (
                "duration".into(),
                format!(
                    "{:.0} s run ({} s of new rounds)",
                    self.elapsed,
                    c.duration.as_secs()
                ),
            ),
            ("connections".into(), c.connections.to_string()),
            ("ssm sessions".into(), c.ssm_sessions.to_string()),
            (
                "faults".into(),
                format!(
                    "WebSocket reset every {} s, {:.1} % loss, {:.1} % reordering, TerminateSession at {} s",
                    c.reset_every.as_secs(),
                    c.loss * 100.0,
                    c.reorder * 100.0,
                    c.terminate_at.as_secs()
                ),
            ),
            ("queries answered".into(), self.queries.to_string()),
            (
                "pausing reader".into(),
                match c.pause_every {
                    Some(every) => format!(
                        "{} pauses of {} s (one every {} s), every row read back intact",
                        self.pauses,
                        c.pause_for.as_secs(),
                        every.as_secs()
                    ),
                    None => "none".into(),
                },
            ),
            ("rounds of checksummed work".into(), self.rounds.to_string()),
            (
                "rounds after the termination".into(),
                format!(
                    "{} ({} of {} workers carried on)",
                    self.rounds_after_termination, self.workers_carried_on, c.connections
                ),
            ),
            (
                "blob bytes up / down".into(),
                format!(
                    "{:.1} MiB / {:.1} MiB",
                    self.bytes_up as f64 / 1048576.0,
                    self.bytes_down as f64 / 1048576.0
                ),
            ),
            (
                "WebSocket resets (resumed)".into(),
                format!(
                    "{} ResumeSession, {} WebSockets opened",
                    self.sim.resume_session, self.sim.ws_connections
                ),
            ),
            (
                "messages dropped by the simulator".into(),
                self.sim.dropped.to_string(),
            ),
            (
                "sessions started".into(),
                format!(
                    "{} (TerminateSession of {} at {})",
                    self.sim.start_session,
                    self.terminated_session.as_deref().unwrap_or("none"),
                    self.terminated_at
                        .map_or("-".into(), |t| format!("{t:.1} s"))
                ),
            ),
            ("reconnects".into(), self.reconnects.to_string()),
            (
                "in-flight work rechecked after reconnect".into(),
                self.rechecked.to_string(),
            ),
            ("sentinel SELECT SLEEP".into(), shorten(&self.sentinel, 160)),
        ];
        let by_kind = self.errors_by_kind();
        rows.push((
            "errors by kind".into(),
            if by_kind.is_empty() {
                "none".into()
            } else {
                by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ));
        rows.push((
            "violations (hung, corrupted, unexpected error)".into(),
            self.violations().len().to_string(),
        ));
        rows.push((
            "latency p50 / p99 / max".into(),
            format!(
                "{:.2} / {:.2} / {:.1} ms",
                self.pct_ms(50.0),
                self.pct_ms(99.0),
                self.pct_ms(100.0)
            ),
        ));
        rows.push((
            "result".into(),
            if self.passed() { "PASS" } else { "FAIL" }.into(),
        ));
        rows
    }

    /// The figures as a Markdown table.
    pub fn table(&self) -> String {
        let rows = self.figures();
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let v = rows.iter().map(|(_, x)| x.len()).max().unwrap_or(0);
        let mut out = format!(
            "| {:<w$} | {:<v$} |\n|-{}-|-{}-|\n",
            "figure",
            "value",
            "-".repeat(w),
            "-".repeat(v)
        );
        for (k, x) in rows {
            out.push_str(&format!("| {k:<w$} | {x:<v$} |\n"));
        }
        for e in self.violations().iter().take(20) {
            out.push_str(&format!(
                "VIOLATION at {:.1} s, worker {}, {}: {} — {}\n",
                e.at,
                e.worker,
                e.op,
                e.kind.name(),
                shorten(&e.detail, 300)
            ));
        }
        out
    }

    /// Everything, as JSON.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.config;
        json!({
            "config": {
                "duration_s": c.duration.as_secs_f64(),
                "connections": c.connections,
                "ssm_sessions": c.ssm_sessions,
                "reset_every_s": c.reset_every.as_secs_f64(),
                "loss": c.loss,
                "reorder": c.reorder,
                "terminate_at_s": c.terminate_at.as_secs_f64(),
                "max_blob_bytes": c.max_blob,
                "watchdog_s": c.watchdog.as_secs_f64(),
                "seed": c.seed,
                "termination_window_s": TERMINATION_WINDOW.as_secs_f64(),
            },
            "elapsed_s": self.elapsed,
            "queries": self.queries,
            "rounds": self.rounds,
            "rounds_after_termination": self.rounds_after_termination,
            "workers_carried_on": self.workers_carried_on,
            "pauses": self.pauses,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "reconnects": self.reconnects,
            "rechecked_after_reconnect": self.rechecked,
            "terminated_at_s": self.terminated_at,
            "terminated_session": self.terminated_session,
            "sentinel": self.sentinel,
            "sentinel_got_link_lost_err": self.sentinel_got_err,
            "sim": {
                "start_session": self.sim.start_session,
                "resume_session": self.sim.resume_session,
                "terminate_session": self.sim.terminate_session,
                "ws_connections": self.sim.ws_connections,
                "streams": self.sim.streams,
                "dropped": self.sim.dropped,
                "duplicated": self.sim.duplicated,
            },
            "latency_ms": {
                "n": self.latency_us.len(),
                "p50": self.pct_ms(50.0),
                "p99": self.pct_ms(99.0),
                "max": self.pct_ms(100.0),
            },
            "errors_by_kind": self.errors_by_kind(),
            "errors": self.errors.iter().take(200).map(|e| json!({
                "at_s": e.at,
                "worker": e.worker,
                "op": e.op,
                "kind": e.kind.name(),
                "detail": e.detail,
                "excused": self.excused(e),
            })).collect::<Vec<_>>(),
            "violations": self.violations().len(),
            "pass": self.passed(),
        })
    }
}

/// Runs the soak. Panics only when the setup fails (database, simulator, proxy).
pub async fn run(config: SoakConfig) -> SoakReport {
    // The soak judges what arrives, never how fast: the server's own login clock
    // (`connect_timeout`, 10 s as on RDS) would turn a login slowed by the injected faults into a
    // dropped connection, a wall-clock verdict. Latency under faults is the benchmarks' to report.
    let up = RdsLikeUpstream::start_with(&StartOptions {
        server_args: vec!["--connect-timeout=600".to_owned()],
        ..StartOptions::default()
    });
    up.root_sql(
        "CREATE TABLE proxytest.soak (id BIGINT PRIMARY KEY, data LONGBLOB NOT NULL) \
         ENGINE=InnoDB",
    );
    let seed = if config.seed == 0 {
        rand::random()
    } else {
        config.seed
    };
    let sim = SimServer::start(SimConfig {
        routes: vec![Route {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            dial: up.dial_addr(),
        }],
        faults: Faults {
            drop: config.loss,
            reorder: config.reorder,
            seed,
            ..Faults::default()
        },
        ws_reset_every: Some(config.reset_every),
        verify_secret: Some(up.secret.clone()),
        require_signature: true,
        ..SimConfig::default()
    })
    .await
    .expect("start the SSM simulator");
    let logs = LogDir::create();
    let log = logs.path.join("proxy.log");
    let proxy = start_proxy(&config, &up, &sim, &log);
    let opts: Opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.port)
        .user(Some(USER))
        .db_name(Some("proxytest"))
        // mysql_async would otherwise move to the server's unix socket, around the proxy.
        .prefer_socket(false)
        .max_allowed_packet(Some(64 << 20))
        .wait_timeout(Some(28800))
        .into();

    let shared = Arc::new(Shared {
        started: Instant::now(),
        deadline: Instant::now() + config.duration,
        config: config.clone(),
        opts,
        tally: Mutex::new(Tally::default()),
        terminated_at: Mutex::new(None),
    });
    let mut workers = Vec::new();
    for worker in 0..config.connections {
        let shared = shared.clone();
        let seed = seed.wrapping_add(worker as u64 + 1);
        workers.push(tokio::spawn(work(shared, worker, seed)));
    }
    let pauser = config
        .pause_every
        .map(|every| tokio::spawn(pause_reading(shared.clone(), every)));
    let (terminated_session, sentinel, sentinel_got_err) =
        terminate_partway(&shared, &sim, &up).await;
    for w in workers {
        w.await.expect("worker task");
    }
    if let Some(p) = pauser {
        p.await.expect("pausing reader task");
    }
    let elapsed = shared.started.elapsed().as_secs_f64();
    let sim_stats = sim.stats();
    proxy.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("X-Amz-Signature=") && !text.contains(&up.secret),
        "a token or the secret reached the proxy's log"
    );
    sim.shutdown().await;
    let tally = std::mem::take(&mut *lock(&shared.tally));
    let terminated_at = *lock(&shared.terminated_at);
    let _ = up.root_sql("DROP TABLE proxytest.soak");
    drop(logs);
    drop(up);
    SoakReport {
        config,
        elapsed,
        queries: tally.queries,
        bytes_up: tally.bytes_up,
        bytes_down: tally.bytes_down,
        rounds: tally.rounds,
        reconnects: tally.reconnects,
        rechecked: tally.rechecked,
        latency_us: tally.latency_us,
        errors: tally.errors,
        terminated_at,
        terminated_session,
        sentinel,
        sentinel_got_err,
        sim: sim_stats,
        rounds_after_termination: tally.rounds_after_termination,
        workers_carried_on: tally.workers_carried_on,
        pauses: tally.pauses,
    }
}

/// Rows (about 1 KiB each) of the pausing reader's result.
const PAUSE_ROWS: u64 = 4_000;

/// The pausing reader: every `every`, an unbuffered read of a large result that takes one row,
/// stops reading for `pause_for` (the proxy must hold the rest without stalling the session),
/// then reads every row and checks it. Errors are recorded like the workers' (a link loss after
/// the termination is excused, corruption and hangs never are).
async fn pause_reading(shared: Arc<Shared>, every: Duration) {
    const WORKER: usize = usize::MAX - 1;
    let sql = format!(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {PAUSE_ROWS}) \
         SELECT n, REPEAT(MD5(n), 32) FROM s"
    );
    loop {
        tokio::time::sleep(every).await;
        // Like the workers, past the deadline only until one pause has been read back whole
        // (a loaded machine can have the termination cut every earlier one), for at most two
        // watchdog periods.
        let now = Instant::now();
        if now >= shared.deadline
            && (lock(&shared.tally).pauses > 0
                || now >= shared.deadline + 2 * shared.config.watchdog)
        {
            return;
        }
        let Some(mut conn) = connect(&shared, WORKER).await else {
            continue;
        };
        let r: Result<(), (&'static str, Failed)> = async {
            timed(
                &shared,
                "pause_setup",
                conn.query_drop(format!(
                    "SET SESSION max_recursive_iterations = {PAUSE_ROWS}"
                )),
            )
            .await?;
            let mut result = timed(&shared, "pause_query", conn.query_iter(sql.as_str())).await?;
            let mut n = 0u64;
            loop {
                let row = timed(&shared, "pause_read", result.next()).await?;
                let Some(row) = row else { break };
                n += 1;
                let (seq, text): (u64, String) = mysql_async::from_row(row);
                let want = md5_hex(n.to_string().as_bytes()).repeat(32);
                if seq != n || text != want {
                    return Err(corrupted("pause_read", format!("row {n} differs")));
                }
                if n == 1 {
                    tokio::time::sleep(shared.config.pause_for).await;
                }
            }
            if n != PAUSE_ROWS {
                return Err(corrupted("pause_read", format!("{n} rows of {PAUSE_ROWS}")));
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => lock(&shared.tally).pauses += 1,
            Err((op, failed)) => shared.error(WORKER, op, failed.kind, failed.detail),
        }
        let _ = tokio::time::timeout(shared.config.watchdog, conn.disconnect()).await;
    }
}

/// State the workers share.
struct Shared {
    started: Instant,
    deadline: Instant,
    config: SoakConfig,
    opts: Opts,
    tally: Mutex<Tally>,
    /// Seconds since start of the TerminateSession.
    terminated_at: Mutex<Option<f64>>,
}

impl Shared {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Whether a worker starts another round: until the deadline, and past it (for at most two
    /// watchdog periods) until it has done one round after the termination, so that every
    /// worker shows it carried on, however slow the machine.
    fn keep_going(&self, carried_on: bool) -> bool {
        let now = Instant::now();
        now < self.deadline || (!carried_on && now < self.deadline + 2 * self.config.watchdog)
    }

    fn error(&self, worker: usize, op: &'static str, kind: ErrorKind, detail: String) {
        let at = self.now();
        lock(&self.tally).errors.push(ErrorEvent {
            at,
            worker,
            op,
            kind,
            detail,
        });
    }
}

#[derive(Default)]
struct Tally {
    queries: u64,
    workers_carried_on: usize,
    bytes_up: u64,
    bytes_down: u64,
    rounds: u64,
    rounds_after_termination: u64,
    reconnects: u64,
    rechecked: u64,
    latency_us: Vec<f64>,
    errors: Vec<ErrorEvent>,
    pauses: u64,
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A row whose fate a lost connection left open.
#[derive(Clone, Debug)]
struct InFlight {
    id: i64,
    len: usize,
    md5: String,
    /// The server acknowledged the INSERT: the row must be there.
    acked: bool,
    /// The round's DELETE of the row went out: its fate is open again (gone, or still there).
    deleting: bool,
}

/// How a query failed, for the worker's loop.
struct Failed {
    kind: ErrorKind,
    detail: String,
}

fn classify(e: mysql_async::Error) -> Failed {
    let detail = e.to_string();
    let kind = match &e {
        mysql_async::Error::Server(s) if s.code == 1105 && s.message.contains("lost the link") => {
            ErrorKind::LinkLostErr
        }
        mysql_async::Error::Server(_) => ErrorKind::OtherServerError,
        mysql_async::Error::Io(_)
        | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
            ErrorKind::ConnectionLost
        }
        // Out-of-order or unexpected packets: bytes the client could not make sense of.
        mysql_async::Error::Driver(_) => ErrorKind::Protocol,
        _ => ErrorKind::OtherServerError,
    };
    Failed { kind, detail }
}

/// One worker: connect, loop over rounds until the deadline; after an error, reconnect, recheck
/// what was in flight, and go on.
async fn work(shared: Arc<Shared>, worker: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_id: i64 = (worker as i64 + 1) * 1_000_000_000;
    let mut in_flight: Option<InFlight> = None;
    let mut reconnecting = false;
    let mut carried_on = false;
    while shared.keep_going(carried_on) {
        let mut conn = match connect(&shared, worker).await {
            Some(c) => c,
            None => continue,
        };
        if reconnecting {
            lock(&shared.tally).reconnects += 1;
        }
        reconnecting = true;
        if let Some(f) = in_flight.take() {
            match recheck(&shared, &mut conn, &f).await {
                Ok(()) => lock(&shared.tally).rechecked += 1,
                Err(failed) => {
                    let corrupted = failed.kind == ErrorKind::Corrupted;
                    shared.error(worker, "recheck", failed.kind, failed.detail);
                    if !corrupted {
                        // Not settled yet: again on the next connection.
                        in_flight = Some(f);
                    }
                    continue;
                }
            }
        }
        let mut first = true;
        while shared.keep_going(carried_on) {
            next_id += 1;
            // Read before the round: a round that started before the termination proves nothing.
            let after_termination = lock(&shared.terminated_at).is_some();
            let r = round(&shared, &mut conn, &mut rng, next_id, first, &mut in_flight).await;
            first = false;
            match r {
                Ok(()) => {
                    let mut t = lock(&shared.tally);
                    t.rounds += 1;
                    if after_termination {
                        t.rounds_after_termination += 1;
                        if !carried_on {
                            t.workers_carried_on += 1;
                        }
                        carried_on = true;
                    }
                }
                Err((op, failed)) => {
                    shared.error(worker, op, failed.kind, failed.detail);
                    break;
                }
            }
        }
        if !shared.keep_going(carried_on) {
            let _ = tokio::time::timeout(shared.config.watchdog, conn.disconnect()).await;
        }
    }
}

/// A new connection through the proxy, or None (the error recorded, after a pause).
async fn connect(shared: &Shared, worker: usize) -> Option<Conn> {
    match tokio::time::timeout(shared.config.watchdog, Conn::new(shared.opts.clone())).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            let mut f = classify(e);
            if f.kind != ErrorKind::ConnectionLost {
                f.kind = ErrorKind::LoginRefused;
            }
            shared.error(worker, "login", f.kind, f.detail);
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
        Err(_) => {
            shared.error(
                worker,
                "login",
                ErrorKind::Hung,
                format!("no login within {:?}", shared.config.watchdog),
            );
            None
        }
    }
}

/// Runs `fut` under the watchdog, timing it; a hang or error comes back as `(op, Failed)`.
async fn timed<T>(
    shared: &Shared,
    op: &'static str,
    fut: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, (&'static str, Failed)> {
    let t = Instant::now();
    match tokio::time::timeout(shared.config.watchdog, fut).await {
        Ok(Ok(v)) => {
            let us = t.elapsed().as_secs_f64() * 1e6;
            let mut tally = lock(&shared.tally);
            tally.queries += 1;
            tally.latency_us.push(us);
            Ok(v)
        }
        Ok(Err(e)) => Err((op, classify(e))),
        Err(_) => Err((
            op,
            Failed {
                kind: ErrorKind::Hung,
                detail: format!("no answer within {:?}", shared.config.watchdog),
            },
        )),
    }
}

fn corrupted(op: &'static str, detail: String) -> (&'static str, Failed) {
    (
        op,
        Failed {
            kind: ErrorKind::Corrupted,
            detail,
        },
    )
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A blob size: mostly small, a quarter up to 128 KiB, a few up to `max`.
fn blob_size(rng: &mut StdRng, max: usize) -> usize {
    let cap = |n: usize| n.min(max).max(1);
    match rng.random_range(0..100) {
        0..70 => rng.random_range(0..=cap(4096)),
        70..95 => rng.random_range(0..=cap(128 * 1024)),
        _ => rng.random_range(0..=max),
    }
}

/// One round of checksummed work on row `id`; the first on a connection uploads a blob of the
/// largest size, so that every connection moves one (uploads larger than the SSM stream's send
/// buffer once stalled in the proxy's TLS writer).
async fn round(
    shared: &Shared,
    conn: &mut Conn,
    rng: &mut StdRng,
    id: i64,
    first: bool,
    in_flight: &mut Option<InFlight>,
) -> Result<(), (&'static str, Failed)> {
    let len = if first {
        shared.config.max_blob
    } else {
        blob_size(rng, shared.config.max_blob)
    };
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    let md5 = md5_hex(&data);

    // Upload: the row's fate is open until the server says OK.
    *in_flight = Some(InFlight {
        id,
        len,
        md5: md5.clone(),
        acked: false,
        deleting: false,
    });
    timed(
        shared,
        "insert",
        conn.exec_drop(
            "INSERT INTO soak (id, data) VALUES (?, ?)",
            (id, data.as_slice()),
        ),
    )
    .await?;
    if conn.affected_rows() != 1 {
        return Err(corrupted(
            "insert",
            format!("INSERT affected {} rows", conn.affected_rows()),
        ));
    }
    if let Some(f) = in_flight.as_mut() {
        f.acked = true;
    }
    lock(&shared.tally).bytes_up += len as u64;

    // The server's checksum of what it stored.
    let got: Option<(u64, String)> = timed(
        shared,
        "server_md5",
        conn.exec_first(
            "SELECT LENGTH(data), MD5(data) FROM soak WHERE id = ?",
            (id,),
        ),
    )
    .await?;
    if got != Some((len as u64, md5.clone())) {
        return Err(corrupted(
            "server_md5",
            format!("row {id}: server has {got:?}, client sent ({len}, {md5})"),
        ));
    }

    // Download: the client's checksum of what comes back.
    let back: Option<Vec<u8>> = timed(
        shared,
        "read_back",
        conn.exec_first("SELECT data FROM soak WHERE id = ?", (id,)),
    )
    .await?;
    let back = back.unwrap_or_default();
    if back.len() != len || md5_hex(&back) != md5 {
        return Err(corrupted(
            "read_back",
            format!("row {id}: read back {} bytes, wrote {len}", back.len()),
        ));
    }
    lock(&shared.tally).bytes_down += len as u64;

    // A value the server makes, checked against the client's own computation and the server's
    // MD5 of it.
    let seed: u64 = rng.random();
    let reps = rng.random_range(1..=512usize);
    let unit: String = Sha512::digest(seed.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = unit.repeat(reps);
    let made: Option<(Vec<u8>, String)> = timed(
        shared,
        "server_blob",
        conn.exec_first(
            "SELECT x, MD5(x) FROM (SELECT REPEAT(SHA2(?, 512), ?) AS x) t",
            (seed.to_string(), reps as u64),
        ),
    )
    .await?;
    let good = made
        .as_ref()
        .is_some_and(|(x, m)| x == expected.as_bytes() && *m == md5_hex(expected.as_bytes()));
    if !good {
        return Err(corrupted(
            "server_blob",
            format!(
                "REPEAT(SHA2({seed}), {reps}) came back as {} bytes, expected {}",
                made.map_or(0, |(x, _)| x.len()),
                expected.len()
            ),
        ));
    }
    lock(&shared.tally).bytes_down += expected.len() as u64;

    // Clean up: the row goes, and with it the open question.
    if let Some(f) = in_flight.as_mut() {
        f.deleting = true;
    }
    timed(
        shared,
        "delete",
        conn.exec_drop("DELETE FROM soak WHERE id = ?", (id,)),
    )
    .await?;
    if conn.affected_rows() != 1 {
        return Err(corrupted(
            "delete",
            format!("DELETE of row {id} affected {} rows", conn.affected_rows()),
        ));
    }
    *in_flight = None;
    Ok(())
}

/// After a reconnect: an acknowledged insert must be there intact; an unacknowledged one, or one
/// whose DELETE went out unanswered, absent or intact. Either way the row goes.
async fn recheck(shared: &Shared, conn: &mut Conn, f: &InFlight) -> Result<(), Failed> {
    let got: Option<(u64, String)> = timed(
        shared,
        "recheck",
        conn.exec_first(
            "SELECT LENGTH(data), MD5(data) FROM soak WHERE id = ?",
            (f.id,),
        ),
    )
    .await
    .map_err(|(_, f)| f)?;
    let intact = got.as_ref() == Some(&(f.len as u64, f.md5.clone()));
    // Absent is fine unless the insert was acknowledged and no DELETE of it went out.
    if !(intact || (got.is_none() && (!f.acked || f.deleting))) {
        return Err(Failed {
            kind: ErrorKind::Corrupted,
            detail: format!(
                "row {} (insert {}): found {got:?}, expected ({}, {})",
                f.id,
                if f.acked {
                    "acknowledged"
                } else {
                    "unacknowledged"
                },
                f.len,
                f.md5
            ),
        });
    }
    timed(
        shared,
        "recheck",
        conn.exec_drop("DELETE FROM soak WHERE id = ?", (f.id,)),
    )
    .await
    .map_err(|(_, f)| f)?;
    Ok(())
}

/// At `terminate_at`: starts the sentinel's long `SELECT SLEEP`, waits until MariaDB runs it,
/// terminates one live session, and waits for the sentinel's outcome. Returns the session id, a
/// description of the sentinel's end, and whether it was the proxy's link-lost ERR.
async fn terminate_partway(
    shared: &Arc<Shared>,
    sim: &SimServer,
    up: &RdsLikeUpstream,
) -> (Option<String>, String, bool) {
    let at = shared.started + shared.config.terminate_at;
    tokio::time::sleep_until(at.into()).await;
    let sentinel_conn = match connect(shared, usize::MAX).await {
        Some(c) => c,
        None => return (None, "could not connect".into(), false),
    };
    let watchdog = shared.config.watchdog;
    let sentinel = tokio::spawn(async move {
        let mut c = sentinel_conn;
        let r = tokio::time::timeout(
            watchdog,
            c.query_first::<(u8, String), _>("SELECT SLEEP(3600), 'soak-sentinel'"),
        )
        .await;
        match r {
            Err(_) => Err(Failed {
                kind: ErrorKind::Hung,
                detail: format!("no answer within {watchdog:?}"),
            }),
            Ok(Ok(v)) => Ok(format!("answered {v:?}")),
            // MariaDB's answer to KILL QUERY during SLEEP.
            Ok(Err(mysql_async::Error::Server(e))) if e.code == 1317 => {
                Ok("interrupted by KILL QUERY (ERROR 1317)".to_owned())
            }
            Ok(Err(e)) => Err(classify(e)),
        }
    });
    let running = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                   WHERE USER = 'iamuser' AND INFO LIKE 'SELECT SLEEP(3600)%'";
    let mut waited = 0;
    while up.root_sql(running).trim() != "1" && waited < 300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let live = sim.live_sessions();
    let Some(id) = live.first().cloned() else {
        return (None, "no live session to terminate".into(), false);
    };
    let t = shared.now();
    sim.terminate(&id, "terminated by the soak (TerminateSession)");
    *lock(&shared.terminated_at) = Some(t);
    // With several sessions the sentinel may be on another one: then its SLEEP is cut short by
    // KILL QUERY after a while, and it must end normally.
    let mut sentinel = sentinel;
    let outcome = match tokio::time::timeout(Duration::from_secs(20), &mut sentinel).await {
        Ok(r) => r.expect("sentinel task"),
        Err(_) => {
            let thread = up.root_sql(
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE USER = 'iamuser' AND INFO LIKE 'SELECT SLEEP(3600)%' LIMIT 1",
            );
            if !thread.trim().is_empty() {
                up.root_sql(&format!("KILL QUERY {}", thread.trim()));
            }
            match sentinel.await.expect("sentinel task") {
                Ok(how) => {
                    return (Some(id), format!("on a surviving session: {how}"), false);
                }
                Err(f) => Err(f),
            }
        }
    };
    match outcome {
        Ok(how) => (Some(id), how, false),
        Err(f) => {
            let got_err = f.kind == ErrorKind::LinkLostErr;
            shared.error(usize::MAX, "sentinel", f.kind, f.detail.clone());
            (
                Some(id),
                format!("{}: {}", f.kind.name(), f.detail),
                got_err,
            )
        }
    }
}

/// A scratch directory for the proxy's log; removed on drop.
struct LogDir {
    path: PathBuf,
}

impl LogDir {
    fn create() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "rds-iam-proxy-soak-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir(&path).expect("create the soak's temp dir");
        LogDir { path }
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The proxy binary over SSM through the simulator, as a user would start it; logs to a file.
fn start_proxy(
    config: &SoakConfig,
    up: &RdsLikeUpstream,
    sim: &SimServer,
    log: &Path,
) -> LoggedProxy {
    let mut cmd = isolated(&config.proxy_bin);
    cmd.env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
        .arg("--db-endpoint")
        .arg(up.endpoint())
        .args(["--ssm-target", TARGET, "--ssm-sessions"])
        .arg(config.ssm_sessions.to_string())
        .args(["--listen", "127.0.0.1:0", "--ca-bundle"])
        .arg(&up.ca)
        .arg("--region")
        .arg(&up.region);
    LoggedProxy::spawn(cmd, log)
}

//! SSM flow control with real clients through the proxy binary, over the simulator's faithful
//! agent, on a one-session pool (issue 10):
//!
//! * a client that stops reading a large result must not freeze its neighbours: one client
//!   pauses an unbuffered 64 MiB result after its first row, another runs `SELECT 1` every
//!   100 ms throughout, a third logs in midway; afterwards the paused client reads every byte
//!   (realistic pacing and fast mode);
//! * an agent that stops acknowledging for longer than the proxy's stall bound
//!   (`--ssm-stall-timeout`) costs one ResumeSession, then a replacement session — no loop — and
//!   the waiting client gets an error, never a hang;
//! * a 64 MiB upload over a rate-limited uplink arrives intact; the duplicate ratio the agent saw
//!   is printed.
//!
//! Every wait is bounded, so a defect shows up as a failed assertion with numbers, not a hung test.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::process::{ProxyProcess, cmd_for};
use crate::common::upstream::RdsLikeUpstream;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use ssm_sim::{Route, SimConfig, SimServer, StatsSnapshot};

const TARGET: &str = "i-0123456789abcdef0";

/// Rows of the paused result and bytes of text per row: 64 MiB of row data.
const RESULT_ROWS: u64 = 65_536;
const ROW_LEN: usize = 1024;

/// How long the paused client stops reading (the 60 s: long enough for the real agent
/// to wedge a session that drops in-order data).
const PAUSE: Duration = Duration::from_secs(60);

/// The neighbour's period and the round trip it must stay under. Generous: a regression guard
/// against a neighbour frozen for the whole pause, not a benchmark (benches measure latency).
const PING_EVERY: Duration = Duration::from_millis(100);
const NEIGHBOUR_BOUND: Duration = Duration::from_secs(2);

/// A fresh login midway must finish within this.
const LOGIN_BOUND: Duration = Duration::from_secs(5);

/// Longest wait for any single step (a row, a query, a login) before the client counts as hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the paused client may take to read the rest after resuming: 64 MiB at the realistic
/// agent's ~0.88 MiB/s is ~73 s if nothing was spooled during the pause.
const DRAIN_DEADLINE: Duration = Duration::from_secs(150);

/// The proxy's stall bound in the stall test (`--ssm-stall-timeout`).
const STALL_BOUND: Duration = Duration::from_secs(5);

/// Upload size, chunk and link rate.
const UPLOAD_BYTES: usize = 64 << 20;
const UPLOAD_CHUNK: usize = 1 << 20;
const UPLINK_RATE: u64 = 4 << 20;

/// The simulator routed to `up`, with its signatures checked.
fn sim_config(up: &RdsLikeUpstream) -> SimConfig {
    SimConfig {
        routes: vec![Route {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            dial: up.dial_addr(),
        }],
        verify_secret: Some(up.secret.clone()),
        require_signature: true,
        ..SimConfig::default()
    }
}

/// The proxy binary for `up`, over SSM through `sim`, one session, plus `extra` arguments.
fn ssm_proxy(up: &RdsLikeUpstream, sim: &SimServer, extra: &[&str]) -> ProxyProcess {
    let mut cmd: Command = cmd_for(up, true);
    cmd.env_remove("RDS_IAM_PROXY_DIAL")
        .env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
        .args(["--ssm-target", TARGET, "--ssm-sessions", "1"])
        .args(extra);
    let mut p = ProxyProcess::spawn_any(cmd);
    // "rds-iam-proxy listening on 127.0.0.1:PORT, forwarding to …"
    p.port = p
        .start_line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.trim_end_matches(',').rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| {
            let _ = p.child.wait();
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the proxy did not start (arguments {extra:?}):\n{}",
                p.stderr_so_far()
            )
        });
    assert!(p.start_line.contains(TARGET), "{}", p.start_line);
    p
}

/// SIGTERM, then at most `grace` for the proxy to exit (killed on drop otherwise); its log.
fn stop_proxy(mut p: ProxyProcess, grace: Duration) -> String {
    let pid = p.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(p.child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    p.stderr_so_far()
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn opts(port: u16, db: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("iamuser"))
        .db_name(db)
        // Never switch to the server's unix socket, which would bypass the proxy.
        .prefer_socket(false)
        .max_allowed_packet(Some(64 << 20))
        .into()
}

/// Runs `f`, giving up after `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = mysql_async::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

/// The row the paused query yields for `seq`.
fn expected_row(seq: u64) -> Vec<u8> {
    vec![b'A' + (seq % 26) as u8; ROW_LEN]
}

/// What the paused client saw.
#[derive(Debug, Default)]
struct PausedReport {
    /// Rows received and equal to what the query must yield, in order.
    rows_ok: u64,
    /// Row bytes received intact.
    bytes_ok: u64,
    /// Time to read the rest after the pause.
    drain: Duration,
    /// The first thing that went wrong.
    error: Option<String>,
}

/// Client A: an unbuffered 64 MiB result, one row, a pause, then the rest, every row checked.
async fn paused_reader(
    port: u16,
    pause: Duration,
    first_row: tokio::sync::oneshot::Sender<()>,
) -> PausedReport {
    let mut report = PausedReport::default();
    if let Err(e) = paused_reader_inner(port, pause, first_row, &mut report).await {
        report.error = Some(e);
    }
    report
}

async fn paused_reader_inner(
    port: u16,
    pause: Duration,
    first_row: tokio::sync::oneshot::Sender<()>,
    report: &mut PausedReport,
) -> Result<(), String> {
    let mut conn = within(
        STEP_TIMEOUT,
        "paused client: login",
        mysql_async::Conn::new(opts(port, Some("proxytest"))),
    )
    .await?;
    // The Sequence engine streams: the server writes as fast as the path drains.
    let sql = format!(
        "SELECT seq, REPEAT(CHAR(65 + seq % 26), {ROW_LEN}) FROM seq_1_to_{RESULT_ROWS} ORDER BY seq"
    );
    let mut result = within(
        STEP_TIMEOUT,
        "paused client: query",
        conn.query_iter(sql.as_str()),
    )
    .await?;
    let mut rows = within(
        STEP_TIMEOUT,
        "paused client: result",
        result.stream::<(u64, Vec<u8>)>(),
    )
    .await?
    .ok_or("paused client: no result set")?;
    let mut expect = 1u64;
    let mut check = |row: Option<mysql_async::Result<(u64, Vec<u8>)>>| -> Result<bool, String> {
        match row {
            None => Ok(false),
            Some(Err(e)) => Err(format!("paused client: row {expect}: {e}")),
            Some(Ok((seq, data))) => {
                if seq != expect || data != expected_row(seq) {
                    return Err(format!(
                        "paused client: row {expect} corrupted (seq {seq}, {} bytes)",
                        data.len()
                    ));
                }
                expect += 1;
                Ok(true)
            }
        }
    };
    let row = tokio::time::timeout(STEP_TIMEOUT, rows.next())
        .await
        .map_err(|_| "paused client: no first row".to_owned())?;
    check(row)?;
    let _ = first_row.send(());
    tokio::time::sleep(pause).await;
    let resumed = Instant::now();
    loop {
        if resumed.elapsed() > DRAIN_DEADLINE {
            report.rows_ok = expect - 1;
            return Err(format!(
                "paused client: rest not read within {DRAIN_DEADLINE:?}"
            ));
        }
        let row = match tokio::time::timeout(STEP_TIMEOUT, rows.next()).await {
            Ok(r) => r,
            Err(_) => {
                report.rows_ok = expect - 1;
                return Err(format!(
                    "paused client: row {expect} did not come within {STEP_TIMEOUT:?} after resuming"
                ));
            }
        };
        match check(row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                report.rows_ok = expect - 1;
                return Err(e);
            }
        }
    }
    report.drain = resumed.elapsed();
    report.rows_ok = expect - 1;
    report.bytes_ok = report.rows_ok * ROW_LEN as u64;
    drop(rows);
    drop(result);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.disconnect()).await;
    Ok(())
}

/// What the neighbour saw.
#[derive(Debug, Default)]
struct NeighbourReport {
    /// Round trips of the `SELECT 1`s that completed.
    round_trips: Vec<Duration>,
    /// The first thing that went wrong (a hung or failed query ends the loop).
    error: Option<String>,
}

impl NeighbourReport {
    fn worst(&self) -> Duration {
        self.round_trips.iter().copied().max().unwrap_or_default()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.round_trips.clone();
        v.sort();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Client B: `SELECT 1` every [`PING_EVERY`] until `stop`; `ready` once the first one answered.
async fn neighbour(
    port: u16,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> NeighbourReport {
    let mut ready = Some(ready);
    let mut report = NeighbourReport::default();
    let mut conn = match within(
        STEP_TIMEOUT,
        "neighbour: login",
        mysql_async::Conn::new(opts(port, None)),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        let t = Instant::now();
        match within(
            STEP_TIMEOUT,
            "neighbour: SELECT 1",
            conn.query_first::<u8, _>("SELECT 1"),
        )
        .await
        {
            Ok(Some(1)) => {
                report.round_trips.push(t.elapsed());
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(other) => {
                report.error = Some(format!("neighbour: SELECT 1 gave {other:?}"));
                break;
            }
            Err(e) => {
                report.round_trips.push(t.elapsed());
                report.error = Some(e);
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.disconnect()).await;
    report
}

/// Client C: a fresh login and a `SELECT 1`; the time both took.
async fn fresh_login(port: u16) -> Result<Duration, String> {
    let t = Instant::now();
    let mut conn = within(
        STEP_TIMEOUT,
        "fresh client: login",
        mysql_async::Conn::new(opts(port, None)),
    )
    .await?;
    let one = within(
        STEP_TIMEOUT,
        "fresh client: SELECT 1",
        conn.query_first::<u8, _>("SELECT 1"),
    )
    .await?;
    let took = t.elapsed();
    if one != Some(1) {
        return Err(format!("fresh client: SELECT 1 gave {one:?}"));
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.disconnect()).await;
    Ok(took)
}

/// A, B and C on one session of a proxy over a simulator in `realistic` or fast mode.
async fn paused_reader_next_to_neighbours(realistic: bool) {
    let mode = if realistic { "realistic" } else { "fast" };
    let up = RdsLikeUpstream::start();
    let sim = SimServer::start(SimConfig {
        realistic,
        ..sim_config(&up)
    })
    .await
    .unwrap();
    let proxy = ssm_proxy(&up, &sim, &[]);
    let port = proxy.port;
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    // The neighbour is logged in and answering before the paused client starts its query.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let b = tokio::spawn(neighbour(port, stop.clone(), ready_tx));
    let _ = tokio::time::timeout(STEP_TIMEOUT, ready_rx).await;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let a = tokio::spawn(paused_reader(port, PAUSE, first_tx));
    // C logs in halfway through the pause.
    let c = tokio::spawn(async move {
        if tokio::time::timeout(STEP_TIMEOUT, first_rx).await.is_err() {
            return Err("fresh client: the paused client never got its first row".to_owned());
        }
        tokio::time::sleep(PAUSE / 2).await;
        fresh_login(port).await
    });
    let a = a.await.unwrap();
    stop.store(true, Ordering::Release);
    let b = b.await.unwrap();
    let c = c.await.unwrap();
    let stats = sim.stats();
    let log = stop_proxy(proxy, Duration::from_secs(15));
    assert!(!log.contains(&up.secret), "secret in the proxy's log");
    sim.shutdown().await;

    let summary = format!(
        "{mode} mode, {:.0}s in all\n\
         paused client: {} of {RESULT_ROWS} rows intact, rest read in {:.1}s, error: {:?}\n\
         neighbour: {} round trips, p50 {:?}, p99 {:?}, worst {:?}, error: {:?}\n\
         fresh login midway: {c:?}\n\
         sim: {}\n\
         --- proxy log (tail):\n{}",
        started.elapsed().as_secs_f64(),
        a.rows_ok,
        a.drain.as_secs_f64(),
        a.error,
        b.round_trips.len(),
        b.percentile(0.5),
        b.percentile(0.99),
        b.worst(),
        b.error,
        stats_line(&stats),
        tail(&log, 25),
    );
    eprintln!("{summary}");
    assert!(
        b.error.is_none() && b.worst() < NEIGHBOUR_BOUND,
        "the neighbour must keep answering, worst round trip under {NEIGHBOUR_BOUND:?}:\n{summary}"
    );
    // It ran throughout: at least half the pings the pause had room for.
    let expected_pings = (PAUSE.as_millis() / PING_EVERY.as_millis() / 2) as usize;
    assert!(
        b.round_trips.len() >= expected_pings,
        "the neighbour ran throughout (≥ {expected_pings} round trips):\n{summary}"
    );
    match &c {
        Ok(took) => assert!(
            *took < LOGIN_BOUND,
            "a fresh login midway must finish within {LOGIN_BOUND:?}:\n{summary}"
        ),
        Err(_) => panic!("a fresh login midway must succeed:\n{summary}"),
    }
    assert!(
        a.error.is_none() && a.rows_ok == RESULT_ROWS,
        "the paused client reads every byte intact afterwards:\n{summary}"
    );
    assert_eq!(a.bytes_ok, RESULT_ROWS * ROW_LEN as u64);
}

fn stats_line(s: &StatsSnapshot) -> String {
    format!(
        "StartSession {}, ResumeSession {}, TerminateSession {}, websockets {}, streams {}, \
         client messages {} ({} B, {} duplicates = {:.2}% of bytes, {} dropped), \
         agent retransmits {}, untracked {}, input stalls {}",
        s.start_session,
        s.resume_session,
        s.terminate_session,
        s.ws_connections,
        s.streams,
        s.input_messages,
        s.input_bytes,
        s.input_duplicates,
        100.0 * s.duplicate_ratio(),
        s.input_dropped,
        s.agent_retransmits,
        s.agent_untracked,
        s.ingress_stalls,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_reader_does_not_freeze_its_neighbours_realistic_agent() {
    paused_reader_next_to_neighbours(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_reader_does_not_freeze_its_neighbours_fast_agent() {
    paused_reader_next_to_neighbours(false).await;
}

/// The agent stops acknowledging for longer than the proxy's stall bound: one ResumeSession,
/// then a replacement session, never a loop; the client waiting on the stuck session gets an
/// error, not a hang, and a new client gets in on the replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_that_stops_acknowledging_costs_one_resume_then_a_new_session() {
    let up = RdsLikeUpstream::start();
    let sim = SimServer::start(sim_config(&up)).await.unwrap();
    let bound = format!("{}s", STALL_BOUND.as_secs());
    let proxy = ssm_proxy(&up, &sim, &["--ssm-stall-timeout", &bound]);
    let port = proxy.port;

    let mut conn = within(
        STEP_TIMEOUT,
        "login",
        mysql_async::Conn::new(opts(port, None)),
    )
    .await
    .unwrap();
    let one = within(
        STEP_TIMEOUT,
        "SELECT 1",
        conn.query_first::<u8, _>("SELECT 1"),
    )
    .await
    .unwrap();
    assert_eq!(one, Some(1));
    let sessions = sim.live_sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let before = sim.stats();

    // The agent takes nothing more in: the next query is never acknowledged.
    assert!(sim.set_session_acks(&sessions[0], false));
    let t = Instant::now();
    let hang_limit = STALL_BOUND * 6;
    let outcome = tokio::time::timeout(hang_limit, conn.query_first::<u8, _>("SELECT 2")).await;
    let waited = t.elapsed();
    drop(conn);

    // A fresh client gets in (on the replacement session).
    let fresh = fresh_login(port).await;
    // Let a few more stall bounds pass: a resume loop would show up in the counters.
    tokio::time::sleep(STALL_BOUND * 3).await;
    let after = sim.stats();
    let log = stop_proxy(proxy, Duration::from_secs(15));
    sim.shutdown().await;
    let summary = format!(
        "query on the stuck session: {outcome:?} after {waited:?}\n\
         fresh login: {fresh:?}\n\
         sim before: {}\nsim after:  {}\n--- proxy log (tail):\n{}",
        stats_line(&before),
        stats_line(&after),
        tail(&log, 25)
    );
    eprintln!("{summary}");
    assert!(
        matches!(outcome, Ok(Err(_))),
        "the client on the stuck session gets an error within {hang_limit:?}, not a hang or an answer:\n{summary}"
    );
    let resumes = after.resume_session - before.resume_session;
    assert!(
        resumes <= 2,
        "at most one ResumeSession per stall episode, no loop (saw {resumes}):\n{summary}"
    );
    assert!(
        after.start_session > before.start_session,
        "the stuck session is replaced by a new one:\n{summary}"
    );
    assert!(fresh.is_ok(), "a fresh client gets in:\n{summary}");
}

/// Deterministic bytes that do not compress (the tunnel leg may be compressed).
fn chunk_bytes(index: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (index as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut out = Vec::with_capacity(UPLOAD_CHUNK);
    while out.len() < UPLOAD_CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(UPLOAD_CHUNK);
    out
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 64 MiB up a 4 MiB/s link arrives intact; the duplicate ratio is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_a_slow_uplink_arrives_intact() {
    let up = RdsLikeUpstream::start();
    let sim = SimServer::start(SimConfig {
        uplink_rate: Some(UPLINK_RATE),
        ..sim_config(&up)
    })
    .await
    .unwrap();
    let proxy = ssm_proxy(&up, &sim, &[]);
    let port = proxy.port;
    let result: Result<(Duration, Vec<(usize, String)>), String> = async {
        let mut conn = within(
            STEP_TIMEOUT,
            "login",
            mysql_async::Conn::new(opts(port, Some("proxytest"))),
        )
        .await?;
        within(
            STEP_TIMEOUT,
            "CREATE TABLE",
            conn.query_drop("CREATE TABLE upload (id INT PRIMARY KEY, data LONGBLOB)"),
        )
        .await?;
        let t = Instant::now();
        for i in 0..UPLOAD_BYTES / UPLOAD_CHUNK {
            within(
                STEP_TIMEOUT,
                &format!("INSERT of chunk {i}"),
                conn.exec_drop(
                    "INSERT INTO upload (id, data) VALUES (?, ?)",
                    (i, chunk_bytes(i)),
                ),
            )
            .await?;
        }
        let took = t.elapsed();
        let sums: Vec<(usize, String)> = within(
            STEP_TIMEOUT,
            "checksums",
            conn.query("SELECT id, LOWER(MD5(data)) FROM upload ORDER BY id"),
        )
        .await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.disconnect()).await;
        Ok((took, sums))
    }
    .await;
    let stats = sim.stats();
    let log = stop_proxy(proxy, Duration::from_secs(15));
    sim.shutdown().await;
    let summary = format!(
        "upload: {}\nsim: {}\n--- proxy log (tail):\n{}",
        match &result {
            Ok((took, _)) => format!(
                "{} MiB in {:.1}s = {:.2} MiB/s on a {} MiB/s link ({:.0}%), duplicate ratio {:.2}%",
                UPLOAD_BYTES >> 20,
                took.as_secs_f64(),
                (UPLOAD_BYTES >> 20) as f64 / took.as_secs_f64(),
                UPLINK_RATE >> 20,
                100.0 * (UPLOAD_BYTES as f64 / took.as_secs_f64()) / UPLINK_RATE as f64,
                100.0 * stats.duplicate_ratio(),
            ),
            Err(e) => e.clone(),
        },
        stats_line(&stats),
        tail(&log, 15)
    );
    eprintln!("{summary}");
    let (_, sums) = result.unwrap_or_else(|e| panic!("the upload failed: {e}\n{summary}"));
    let expected: Vec<(usize, String)> = (0..UPLOAD_BYTES / UPLOAD_CHUNK)
        .map(|i| (i, md5_hex(&chunk_bytes(i))))
        .collect();
    assert!(
        sums == expected,
        "every chunk arrives intact (server MD5s match the bytes sent):\n{summary}"
    );
    assert!(stats.input_bytes >= UPLOAD_BYTES as u64, "{summary}");
}

//! `cargo bench --bench load`: many concurrent clients through ONE proxy process,
//! each running a checked mix of queries for a bounded time, once over the Direct transport and
//! once over ONE simulated SSM session (the `ssm-sim` binary as its own process, the proxy started
//! with `--ssm-target … --ssm-sessions 1` and `AWS_ENDPOINT_URL_SSM` pointing at it).
//!
//! Each client logs in (as `benchuser`, see `support::BENCH_USER`; logins run at most
//! [`LOGIN_PARALLEL`] at a time and are not part of the query latency), creates a temporary table,
//! and once every client is in, all of them loop over this mix until the time is up, each query
//! timed and its result checked:
//!
//! | op | statement | check |
//! |---|---|---|
//! | `select1` | `SELECT 1` | 1 |
//! | `rows` | a recursive CTE of 20 rows `(n, 'row-n')` | every row |
//! | `64k` | `SELECT REPEAT('<16 chars unique to client and round>', 4096)` | all 65,536 bytes |
//! | `prepared` | `SELECT ? + 1, CONCAT('p-', ?)` (binary protocol) | both columns |
//! | `insert` | `REPLACE INTO` the temporary table | affected rows |
//! | `readback` | `SELECT v FROM` it by key (binary protocol) | the value just written |
//!
//! Reported per transport: clients, queries, failed queries, queries/s, p50/p99/max latency over
//! all queries (and p50/p99 per op), login time, CPU seconds of each process during the run, and
//! the proxy's peak resident memory (VmHWM from `/proc`, plus the largest VmRSS sampled every
//! 50 ms) against [`RSS_BOUND_MIB`]. A table on stdout, everything in `target/bench-load.json`.
//! The benchmark exits non-zero if any query failed or the memory bound was exceeded; latencies
//! and rates are measured, never asserted.
//!
//! Environment:
//! - `RDS_IAM_PROXY_LOAD_CLIENTS` (default 500), `RDS_IAM_PROXY_LOAD_SECS` (default 30 per
//!   transport), `RDS_IAM_PROXY_LOAD_TRANSPORTS` (default `direct,ssm`).
//! - `RDS_IAM_PROXY_BENCH_BIN=PATH`: benchmark another build of the proxy.
//!
//! Needs what `tests/upstream` needs (root, MariaDB, python3-botocore). Everything it starts or
//! writes is removed at the end, also on panic or Ctrl-C.

mod support;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use support::*;
use upstream::RdsLikeUpstream;

/// The memory bound for the proxy process under this load, per transport: peak resident set
/// (VmHWM, or the largest sampled VmRSS) in MiB. Measured with 500 clients for 30 s, two runs:
/// 72 and 79 MiB direct, 79 and 88 MiB over one SSM session; the bound leaves 1.8x headroom over
/// the largest.
const RSS_BOUND_MIB: f64 = 160.0;

/// Logins in flight at once while the clients connect.
const LOGIN_PARALLEL: usize = 32;

/// The SSM target the proxy asks for (the simulator accepts any).
const SSM_TARGET: &str = "i-0123456789abcdef0";

/// Client-side packet limit: above the 64 KiB row.
const CLIENT_MAX_PACKET: usize = 4 * 1024 * 1024;

/// How long any one query may take before it counts as failed (a hang, not a slow answer).
const QUERY_WATCHDOG: Duration = Duration::from_secs(120);

/// The ops of the mix, in the order each round runs them.
const OPS: [&str; 6] = ["select1", "rows", "64k", "prepared", "insert", "readback"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Direct,
    Ssm,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Direct => "direct",
            Transport::Ssm => "ssm (1 session)",
        }
    }
}

struct Settings {
    clients: usize,
    run_for: Duration,
    transports: Vec<Transport>,
}

impl Settings {
    fn from_env() -> Self {
        let num = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
                })
                .unwrap_or(default)
        };
        let transports = std::env::var("RDS_IAM_PROXY_LOAD_TRANSPORTS")
            .unwrap_or_else(|_| "direct,ssm".into())
            .split(',')
            .map(|t| match t.trim() {
                "direct" => Transport::Direct,
                "ssm" => Transport::Ssm,
                other => panic!("RDS_IAM_PROXY_LOAD_TRANSPORTS: unknown transport {other:?}"),
            })
            .collect();
        Settings {
            clients: num("RDS_IAM_PROXY_LOAD_CLIENTS", 500) as usize,
            run_for: Duration::from_secs(num("RDS_IAM_PROXY_LOAD_SECS", 30)),
            transports,
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ok = runtime.block_on(async {
        tokio::select! {
            ok = run(&settings) => ok,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: cleaning up");
                false
            }
        }
    });
    drop(runtime);
    if !ok {
        std::process::exit(1);
    }
}

/// Runs every transport; false if a query failed or a bound was exceeded.
async fn run(settings: &Settings) -> bool {
    let load_start = loadavg();
    let db = BenchDb::start();
    let mariadb_version = db.mariadb_version.clone();

    let mut results = Vec::new();
    for &transport in &settings.transports {
        eprintln!(
            "{}: {} clients for {} s ...",
            transport.name(),
            settings.clients,
            settings.run_for.as_secs()
        );
        results.push(run_transport(settings, transport, &db.up, &db.scratch).await);
    }

    let load_end = loadavg();
    println!(
        "\nrds-iam-proxy load: {} clients per transport through one proxy, {} s each",
        settings.clients,
        settings.run_for.as_secs()
    );
    println!(
        "machine: {} cores, load average {load_start} at start, {load_end} at end; {mariadb_version}; \
         cargo profile {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        profile()
    );
    println!("proxy binary: {}\n", proxy_bin().display());
    println!("{}", render(&results));

    let ok = results.iter().all(|r| r.failed == 0 && r.within_bound());
    let doc = json!({
        "machine": {
            "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "mariadb_version": mariadb_version,
            "cargo_profile": profile(),
            "proxy_binary": proxy_bin(),
        },
        "clients": settings.clients,
        "seconds_per_transport": settings.run_for.as_secs(),
        "login_parallel": LOGIN_PARALLEL,
        "query_watchdog_s": QUERY_WATCHDOG.as_secs(),
        "rss_bound_mib": RSS_BOUND_MIB,
        "mix": OPS,
        "transports": results.iter().map(Outcome::to_json).collect::<Vec<_>>(),
        "pass": ok,
    });
    let path = write_json("bench-load.json", &doc);
    println!("JSON: {}", path.display());
    if !ok {
        eprintln!("FAILED: a query failed or the proxy exceeded its memory bound (see above)");
    }
    drop(db);
    ok
}

/// What one transport's run measured.
struct Outcome {
    transport: Transport,
    clients: usize,
    queries: u64,
    failed: u64,
    /// The first few failures, worded.
    failures: Vec<String>,
    /// Seconds from the start signal until the last client stopped.
    run_secs: f64,
    /// Microseconds per query, per op (indexed like [`OPS`]).
    latency_us: Vec<Vec<f64>>,
    login_secs: f64,
    login_ms: Vec<f64>,
    upstream_sessions: u64,
    peak: Mem,
    max_sampled_rss_kib: u64,
    end: Mem,
    cpu: Vec<(&'static str, f64)>,
}

impl Outcome {
    fn all_latencies(&self) -> Vec<f64> {
        self.latency_us.iter().flatten().copied().collect()
    }

    fn peak_mib(&self) -> f64 {
        self.peak
            .hwm_mib()
            .max(self.max_sampled_rss_kib as f64 / 1024.0)
    }

    fn within_bound(&self) -> bool {
        self.peak_mib() <= RSS_BOUND_MIB
    }

    fn qps(&self) -> f64 {
        self.queries as f64 / self.run_secs
    }

    fn to_json(&self) -> serde_json::Value {
        let all = self.all_latencies();
        let ms = |v: &[f64], p: f64| percentile(v, p) / 1e3;
        json!({
            "transport": self.transport.name(),
            "clients": self.clients,
            "queries": self.queries,
            "failed_queries": self.failed,
            "failures": self.failures,
            "run_seconds": self.run_secs,
            "queries_per_second": self.qps(),
            "latency_ms": {
                "p50": ms(&all, 50.0),
                "p99": ms(&all, 99.0),
                "max": all.iter().copied().fold(0.0, f64::max) / 1e3,
            },
            "latency_ms_by_op": OPS.iter().zip(&self.latency_us).map(|(op, v)| json!({
                "op": op,
                "n": v.len(),
                "p50": ms(v, 50.0),
                "p99": ms(v, 99.0),
            })).collect::<Vec<_>>(),
            "logins": {
                "seconds_for_all": self.login_secs,
                "p50_ms": percentile(&self.login_ms, 50.0),
                "p99_ms": percentile(&self.login_ms, 99.0),
                "upstream_sessions_seen": self.upstream_sessions,
            },
            "proxy_memory": {
                "vmhwm_mib": self.peak.hwm_mib(),
                "max_sampled_vmrss_mib": self.max_sampled_rss_kib as f64 / 1024.0,
                "vmrss_at_end_mib": self.end.rss_mib(),
                "bound_mib": RSS_BOUND_MIB,
                "within_bound": self.within_bound(),
            },
            "cpu_seconds_during_run": self.cpu.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Per-client tallies.
#[derive(Default)]
struct Tally {
    queries: u64,
    failed: u64,
    failures: Vec<String>,
    latency_us: Vec<Vec<f64>>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency_us: vec![Vec::new(); OPS.len()],
            ..Tally::default()
        }
    }

    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() < 5 {
            self.failures.push(what);
        }
    }
}

async fn run_transport(
    settings: &Settings,
    transport: Transport,
    up: &RdsLikeUpstream,
    scratch: &TempDir,
) -> Outcome {
    let tag = match transport {
        Transport::Direct => "direct",
        Transport::Ssm => "ssm",
    };
    let sim = match transport {
        Transport::Direct => None,
        Transport::Ssm => Some(SimProcess::start(up, &scratch.path.join("ssm-sim.log"))),
    };
    let log = scratch.path.join(format!("proxy-{tag}.log"));
    let proxy = match &sim {
        None => ProxyProcess::start(up, &log),
        Some(sim) => ProxyProcess::start_with(up, &log, |cmd| {
            cmd.env("AWS_ENDPOINT_URL_SSM", &sim.url).args([
                "--ssm-target",
                SSM_TARGET,
                "--ssm-sessions",
                "1",
            ]);
        }),
    };
    check_open_files(proxy.pid(), settings.clients);
    let opts: Opts = bench_opts(proxy.port, CLIENT_MAX_PACKET)
        .db_name(Some("proxytest"))
        .into();

    // Logins, bounded, untimed for the query latency; memory is sampled from here on.
    let sampling = Arc::new(AtomicBool::new(true));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_rss(proxy.pid(), sampling.clone(), max_rss.clone()));
    let login_started = Instant::now();
    let gate = Arc::new(Semaphore::new(LOGIN_PARALLEL));
    let mut logins = JoinSet::new();
    for client in 0..settings.clients {
        let gate = gate.clone();
        let opts = opts.clone();
        logins.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let t = Instant::now();
            let mut c = Conn::new(opts)
                .await
                .unwrap_or_else(|e| panic!("client {client}: login through the proxy: {e}"));
            let ms = t.elapsed().as_secs_f64() * 1e3;
            c.query_drop(
                "CREATE TEMPORARY TABLE load_t (id INT PRIMARY KEY, v VARCHAR(64) NOT NULL)",
            )
            .await
            .unwrap_or_else(|e| panic!("client {client}: temporary table: {e}"));
            (client, c, ms)
        });
    }
    let mut conns = Vec::with_capacity(settings.clients);
    let mut login_ms = Vec::with_capacity(settings.clients);
    while let Some(r) = logins.join_next().await {
        let (client, c, ms) = r.expect("login task");
        conns.push((client, c));
        login_ms.push(ms);
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    let upstream_sessions = count_sessions(up);

    // The run: every client starts together and stops at the deadline.
    let pids = [
        ("proxy", proxy.pid()),
        ("mariadbd", up.pid),
        ("clients (this process)", std::process::id()),
    ]
    .into_iter()
    .chain(sim.as_ref().map(|s| ("ssm-sim", s.pid())))
    .collect::<Vec<_>>();
    let cpu_before: Vec<f64> = pids.iter().map(|(_, p)| proc_cpu_secs(*p)).collect();
    let started = Instant::now();
    let deadline = started + settings.run_for;
    let mut runs = JoinSet::new();
    for (client, conn) in conns {
        runs.spawn(client_loop(client, conn, deadline));
    }
    let mut total = Tally::new();
    let mut finished = Vec::with_capacity(settings.clients);
    while let Some(r) = runs.join_next().await {
        let (tally, conn) = r.expect("client task");
        total.queries += tally.queries;
        total.failed += tally.failed;
        for f in tally.failures {
            if total.failures.len() < 10 {
                total.failures.push(f);
            }
        }
        for (all, mine) in total.latency_us.iter_mut().zip(tally.latency_us) {
            all.extend(mine);
        }
        finished.extend(conn);
    }
    let run_secs = started.elapsed().as_secs_f64();
    let cpu: Vec<(&'static str, f64)> = pids
        .iter()
        .zip(cpu_before)
        .map(|((name, pid), before)| (*name, proc_cpu_secs(*pid) - before))
        .collect();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let peak = proc_mem(proxy.pid());

    let mut closes = JoinSet::new();
    for c in finished {
        closes.spawn(async move {
            let _ = c.disconnect().await;
        });
    }
    while closes.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = proc_mem(proxy.pid());
    proxy.stop();
    drop(sim);

    Outcome {
        transport,
        clients: settings.clients,
        queries: total.queries,
        failed: total.failed,
        failures: total.failures,
        run_secs,
        latency_us: total.latency_us,
        login_secs,
        login_ms,
        upstream_sessions,
        peak,
        max_sampled_rss_kib: max_rss.load(Ordering::Relaxed),
        end,
        cpu,
    }
}

/// One client's loop: rounds of the mix until the deadline. Returns its tally, and the connection
/// unless a failure left it unusable.
async fn client_loop(client: usize, mut conn: Conn, deadline: Instant) -> (Tally, Option<Conn>) {
    let mut tally = Tally::new();
    let mut round: u64 = 0;
    while Instant::now() < deadline {
        for (op, name) in OPS.iter().enumerate() {
            let t = Instant::now();
            let r =
                tokio::time::timeout(QUERY_WATCHDOG, run_op(&mut conn, op, client, round)).await;
            let us = t.elapsed().as_secs_f64() * 1e6;
            tally.queries += 1;
            match r {
                Ok(Ok(())) => tally.latency_us[op].push(us),
                Ok(Err(e)) => tally.fail(format!("client {client} round {round} {name}: {e}")),
                Err(_) => {
                    tally.fail(format!(
                        "client {client} round {round} {name}: no answer within {}s",
                        QUERY_WATCHDOG.as_secs()
                    ));
                    return (tally, None);
                }
            }
        }
        round += 1;
    }
    (tally, Some(conn))
}

/// Runs op `op` of the mix and checks its result.
async fn run_op(conn: &mut Conn, op: usize, client: usize, round: u64) -> Result<(), String> {
    let e = |e: mysql_async::Error| e.to_string();
    let key = (round % 64) as u32;
    let value = format!("c{client}-r{round}");
    match OPS[op] {
        "select1" => {
            let one: Option<u8> = conn.query_first("SELECT 1").await.map_err(e)?;
            check(one == Some(1), || format!("SELECT 1 gave {one:?}"))
        }
        "rows" => {
            let rows: Vec<(u32, String)> = conn
                .query(
                    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20) \
                     SELECT n, CONCAT('row-', n) FROM s",
                )
                .await
                .map_err(e)?;
            let good = rows.len() == 20
                && rows
                    .iter()
                    .enumerate()
                    .all(|(i, (n, s))| *n as usize == i + 1 && *s == format!("row-{n}"));
            check(good, || format!("bad row set: {rows:?}"))
        }
        "64k" => {
            let unit = format!("{client:08x}{round:08x}");
            let got: Option<Vec<u8>> = conn
                .query_first(format!("SELECT REPEAT('{unit}', 4096)"))
                .await
                .map_err(e)?;
            let got = got.unwrap_or_default();
            let good = got.len() == 65536 && got.chunks(16).all(|c| c == unit.as_bytes());
            check(good, || format!("64 KiB value wrong ({} bytes)", got.len()))
        }
        "prepared" => {
            let n = (client as i64) * 1_000_000 + round as i64;
            let got: Option<(i64, String)> = conn
                .exec_first("SELECT ? + 1, CONCAT('p-', ?)", (n, n))
                .await
                .map_err(e)?;
            check(got == Some((n + 1, format!("p-{n}"))), || {
                format!("prepared gave {got:?} for {n}")
            })
        }
        "insert" => {
            conn.exec_drop("REPLACE INTO load_t (id, v) VALUES (?, ?)", (key, &value))
                .await
                .map_err(e)?;
            let n = conn.affected_rows();
            check(n == 1 || n == 2, || format!("REPLACE affected {n} rows"))
        }
        "readback" => {
            let got: Option<String> = conn
                .exec_first("SELECT v FROM load_t WHERE id = ?", (key,))
                .await
                .map_err(e)?;
            check(got.as_deref() == Some(value.as_str()), || {
                format!("read back {got:?}, wrote {value:?}")
            })
        }
        other => unreachable!("op {other}"),
    }
}

fn check(good: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if good { Ok(()) } else { Err(what()) }
}

/// Samples the proxy's VmRSS every 50 ms into `max_kib` while `on`.
async fn sample_rss(pid: u32, on: Arc<AtomicBool>, max_kib: Arc<AtomicU64>) {
    while on.load(Ordering::Relaxed) {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            max_kib.fetch_max(rss, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `benchuser` sessions MariaDB has now.
fn count_sessions(up: &RdsLikeUpstream) -> u64 {
    up.root_sql(&format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{BENCH_USER}'"
    ))
    .trim()
    .parse()
    .expect("session count")
}

/// The proxy must be allowed two descriptors per client (client and upstream legs).
fn check_open_files(pid: u32, clients: usize) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft {
        assert!(
            soft > 2 * clients + 64,
            "the proxy may open only {soft} files: raise `ulimit -n` above {}",
            2 * clients + 64
        );
    }
}

fn render(results: &[Outcome]) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "transport",
            "clients",
            "queries",
            "failed",
            "queries/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "logins s",
            "proxy peak RSS MiB",
            "bound MiB",
            "result",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in results {
        let all = r.all_latencies();
        rows.push(vec![
            r.transport.name().to_owned(),
            r.clients.to_string(),
            r.queries.to_string(),
            r.failed.to_string(),
            format!("{:.0}", r.qps()),
            format!("{:.2}", percentile(&all, 50.0) / 1e3),
            format!("{:.2}", percentile(&all, 99.0) / 1e3),
            format!("{:.1}", all.iter().copied().fold(0.0, f64::max) / 1e3),
            format!("{:.1}", r.login_secs),
            format!("{:.1}", r.peak_mib()),
            format!("{RSS_BOUND_MIB:.0}"),
            if r.failed == 0 && r.within_bound() {
                "PASS".into()
            } else {
                "FAIL".into()
            },
        ]);
    }
    let last = rows[0].len() - 1;
    let mut out = markdown_table(&rows, |j| j != 0 && j != last);
    for r in results {
        let _ = write!(out, "\n{}: p50/p99 ms by op:", r.transport.name());
        for (op, v) in OPS.iter().zip(&r.latency_us) {
            let _ = write!(
                out,
                " {op} {:.2}/{:.2}",
                percentile(v, 50.0) / 1e3,
                percentile(v, 99.0) / 1e3
            );
        }
        let _ = write!(
            out,
            "\n{}: {} upstream sessions seen after login; login p50 {:.1} ms; proxy VmHWM {:.1} MiB, \
             largest sampled VmRSS {:.1} MiB, VmRSS after the clients left {:.1} MiB; CPU s during the run:",
            r.transport.name(),
            r.upstream_sessions,
            percentile(&r.login_ms, 50.0),
            r.peak.hwm_mib(),
            r.max_sampled_rss_kib as f64 / 1024.0,
            r.end.rss_mib(),
        );
        for (name, secs) in &r.cpu {
            let _ = write!(out, " {name} {secs:.1}");
        }
        out.push('\n');
        for f in &r.failures {
            let _ = writeln!(out, "  failure: {f}");
        }
    }
    out
}

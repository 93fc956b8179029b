//! `cargo bench --bench proxy`: the same MySQL session DIRECT (mysql_async over verified TLS with an
//! IAM token, straight to an RDS-shaped MariaDB) and THROUGH the proxy (the real binary as a
//! separate process; the client connects plainly with no password), measured in one run.
//!
//! | part | what | target |
//! |---|---|---|
//! | 1 | bulk read of a 64 MiB result (64 rows x 1 MiB), best and median MiB/s | proxy ≥ 0.90 × direct (best of N) |
//! | 2 | `SELECT 1` round trips on one warm connection, p50/p99 | added p50 ≤ 50 µs |
//! | 3 | connect + login + first `SELECT 1`, fresh connection each time, p50 | proxy ≤ 1.5 × direct |
//! | 4 | 1,000 idle logged-in clients held through a fresh proxy, twice, VmRSS/VmHWM | ≤ 64 MiB |
//!
//! Direct and proxied runs alternate (run by run, or block by block for part 2) so that load from
//! other tenants of the machine hits both alike. Timings are never asserted: the table says
//! PASS/MISS per target and `target/bench-proxy.json` keeps every figure. Under the table, the CPU
//! time of mariadbd, this client process and the proxy per unit of work (from `/proc/<pid>/stat`)
//! says where the time went: on a small machine the paths are CPU-bound, so the ratio of the
//! totals predicts the throughput ratio.
//!
//! Part 1 makes its 1 MiB value once per session (`SET @bulk_row = REPEAT(..)`) and selects it 64
//! times: REPEAT itself runs at ~200 MiB/s in mariadbd and would otherwise hide the transport.
//! Part 4 holds the idle set twice on the same proxy: the first wave lands on fresh, partly
//! untouched heap pages; the second, after the first has closed, shows the steady state.
//!
//! The harness's own IAM users check each token with a python+botocore process (~300 ms of CPU
//! per login), which would swamp part 3 and make part 4 take minutes. So the benchmark adds one
//! user, `benchuser`, whose PAM service accepts any password: both logins still do TLS and the
//! `mysql_clear_password` exchange with a real-size token, only the server-side check is cheap.
//!
//! Environment:
//! - `RDS_IAM_PROXY_BENCH_QUICK=1`: every part with small counts (a CI smoke run, well under a
//!   minute once built).
//! - `RDS_IAM_PROXY_BENCH_BIN=PATH`: benchmark another build of the proxy (to compare two builds).
//!
//! Needs what `tests/upstream` needs: root, MariaDB 10.11, python3-botocore. Everything it starts
//! or writes (MariaDB, proxies, `/etc/pam.d/rdsiam-bench-*`, a temp dir) is removed at the end,
//! also on panic or Ctrl-C.

mod support;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, SslOpts, Value};
use rds_iam_proxy::iam::{TokenRequest, presign};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use support::*;
use upstream::RdsLikeUpstream;

/// Client-side packet limit: above the 1 MiB rows of part 1.
const CLIENT_MAX_PACKET: usize = 64 * 1024 * 1024;

/// How many of each thing to do.
#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Rows of the bulk result.
    bulk_rows: usize,
    /// Bytes per bulk row.
    bulk_row_bytes: usize,
    /// Timed bulk reads per side (after one warm-up each).
    bulk_reps: usize,
    /// Untimed `SELECT 1`s per side before timing.
    rtt_warmup: usize,
    /// Timed blocks of `SELECT 1`s per side; the sides alternate block by block.
    rtt_blocks: usize,
    /// `SELECT 1`s per block.
    rtt_block: usize,
    /// Timed fresh connections per side (after warm-ups).
    connects: usize,
    /// Untimed fresh connections per side first.
    connect_warmup: usize,
    /// Idle clients held through the proxy.
    idle: usize,
    /// Clients logging in at once while the idle set is opened.
    idle_parallel: usize,
}

const FULL: Counts = Counts {
    bulk_rows: 64,
    bulk_row_bytes: 1024 * 1024,
    bulk_reps: 7,
    rtt_warmup: 500,
    rtt_blocks: 10,
    rtt_block: 500,
    connects: 60,
    connect_warmup: 3,
    idle: 1000,
    idle_parallel: 16,
};

const QUICK: Counts = Counts {
    bulk_rows: 64,
    bulk_row_bytes: 1024 * 1024,
    bulk_reps: 2,
    rtt_warmup: 50,
    rtt_blocks: 2,
    rtt_block: 100,
    connects: 5,
    connect_warmup: 1,
    idle: 100,
    idle_parallel: 16,
};

// Targets from the issue.
const BULK_MIN_RATIO: f64 = 0.90;
const RTT_MAX_ADDED_P50_US: f64 = 50.0;
const CONNECT_MAX_RATIO: f64 = 1.5;
const IDLE_MAX_RSS_MIB: f64 = 64.0;

fn main() {
    let quick = std::env::var("RDS_IAM_PROXY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let counts = if quick { QUICK } else { FULL };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::select! {
            _ = run(counts, quick) => {}
            _ = tokio::signal::ctrl_c() => eprintln!("interrupted: cleaning up"),
        }
    });
    // Dropping the runtime ends the client tasks; the guards inside `run` have already removed
    // the proxy processes, the PAM file, the temp dir and the database.
}

async fn run(counts: Counts, quick: bool) {
    let load_start = loadavg();
    let db = BenchDb::start();
    let (up, scratch) = (&db.up, &db.scratch);
    let mariadb_version = db.mariadb_version.clone();
    let mariadb_files = up.root_sql("SELECT @@open_files_limit").trim().to_owned();

    let direct = direct_opts(up);
    let proxy = ProxyProcess::start(up, &scratch.path.join("proxy.log"));
    let proxied = proxied_opts(proxy.port);

    // Both paths really are what they claim: TLS upstream as the benchmark user.
    for (name, opts) in [("direct", &direct), ("proxy", &proxied)] {
        let mut c = Conn::new(opts.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: login as {BENCH_USER}: {e}"));
        let user: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
        let cipher: Option<(String, String)> = c
            .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .await
            .unwrap();
        assert_eq!(user.as_deref(), Some("benchuser@%"), "{name}");
        assert!(!cipher.unwrap_or_default().1.is_empty(), "{name}: no TLS");
        c.disconnect().await.unwrap();
    }

    let pids = Pids {
        server: up.pid,
        client: std::process::id(),
        proxy: proxy.pid(),
    };
    eprintln!("part 1: bulk read ...");
    let bulk = bulk_read(&counts, &direct, &proxied, &pids).await;
    eprintln!("part 2: SELECT 1 round trips ...");
    let (rtt, rtt_cpu) = round_trips(&counts, &direct, &proxied, &pids).await;
    eprintln!("part 3: connect + login + first query ...");
    let (connect, connect_cpu) = connects(&counts, &direct, &proxied, &pids).await;
    let first_proxy_mem = proc_mem(proxy.pid());
    proxy.stop();

    eprintln!(
        "part 4: {} idle connections through a fresh proxy ...",
        counts.idle
    );
    let idle = idle_connections(&counts, up, scratch).await;
    let load_end = loadavg();

    let machine = Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_start,
        load_end,
        mariadb_version,
        profile: profile(),
        quick,
    };
    let expected_bulk = counts.bulk_rows * counts.bulk_row_bytes;
    let cpu_rows = [
        CpuRow {
            what: "1 bulk read, ms per MiB",
            direct: bulk.cpu_direct,
            direct_units: bulk.direct.len() as f64 * mib(expected_bulk) / 1e3,
            proxied: bulk.cpu_proxy,
            proxied_units: bulk.proxy.len() as f64 * mib(expected_bulk) / 1e3,
        },
        CpuRow {
            what: "2 SELECT 1, us per query",
            direct: rtt_cpu.0,
            direct_units: rtt.direct.len() as f64 / 1e6,
            proxied: rtt_cpu.1,
            proxied_units: rtt.proxy.len() as f64 / 1e6,
        },
        CpuRow {
            what: "3 connect, ms per session",
            direct: connect_cpu.0,
            direct_units: connect.direct.len() as f64 / 1e3,
            proxied: connect_cpu.1,
            proxied_units: connect.proxy.len() as f64 / 1e3,
        },
    ];
    let table = render(&machine, &counts, &bulk, &rtt, &connect, &idle, &cpu_rows);
    println!("{table}");

    let doc = json!({
        "machine": {
            "nproc": machine.nproc,
            "loadavg_start": machine.load_start,
            "loadavg_end": machine.load_end,
            "mariadb_version": machine.mariadb_version,
            "mariadb_open_files_limit": mariadb_files,
            "cargo_profile": machine.profile,
            "quick": quick,
            "proxy_binary": proxy_bin(),
        },
        "bulk_read": {
            "rows": counts.bulk_rows,
            "row_bytes": counts.bulk_row_bytes,
            "result_mib": mib(counts.bulk_rows * counts.bulk_row_bytes),
            "reps": counts.bulk_reps,
            "direct_mib_s": bulk.direct,
            "proxy_mib_s": bulk.proxy,
            "direct_best_mib_s": bulk.best().0,
            "proxy_best_mib_s": bulk.best().1,
            "direct_median_mib_s": bulk.median().0,
            "proxy_median_mib_s": bulk.median().1,
            "ratio_best": bulk.ratio_best(),
            "ratio_median": bulk.ratio_median(),
            "cpu_ms_per_mib": {
                "direct": bulk.cpu_direct.per(bulk.direct.len() as f64 * mib(expected_bulk) / 1e3),
                "proxied": bulk.cpu_proxy.per(bulk.proxy.len() as f64 * mib(expected_bulk) / 1e3),
            },
            "target": format!("proxy >= {BULK_MIN_RATIO:.2} x direct (best of {})", counts.bulk_reps),
            "pass": bulk.pass(),
        },
        "select1_round_trips": {
            "n": rtt.direct.len(),
            "direct_p50_us": percentile(&rtt.direct, 50.0),
            "direct_p99_us": percentile(&rtt.direct, 99.0),
            "proxy_p50_us": percentile(&rtt.proxy, 50.0),
            "proxy_p99_us": percentile(&rtt.proxy, 99.0),
            "added_p50_us": rtt.added(50.0),
            "added_p99_us": rtt.added(99.0),
            "cpu_us_per_query": {
                "direct": rtt_cpu.0.per(rtt.direct.len() as f64 / 1e6),
                "proxied": rtt_cpu.1.per(rtt.proxy.len() as f64 / 1e6),
            },
            "target": format!("added p50 <= {RTT_MAX_ADDED_P50_US} us"),
            "pass": rtt.rtt_pass(),
        },
        "connect_login_first_query": {
            "n": connect.direct.len(),
            "direct_p50_ms": percentile(&connect.direct, 50.0),
            "proxy_p50_ms": percentile(&connect.proxy, 50.0),
            "direct_p90_ms": percentile(&connect.direct, 90.0),
            "proxy_p90_ms": percentile(&connect.proxy, 90.0),
            "ratio_p50": connect.ratio(),
            "cpu_ms_per_connect": {
                "direct": connect_cpu.0.per(connect.direct.len() as f64 / 1e3),
                "proxied": connect_cpu.1.per(connect.proxy.len() as f64 / 1e3),
            },
            "target": format!("proxy <= {CONNECT_MAX_RATIO} x direct (p50)"),
            "pass": connect.connect_pass(),
        },
        "idle_connections": {
            "n": idle.n,
            "proxy_max_open_files": idle.max_files,
            "vmrss_before_mib": idle.before.rss_mib(),
            "waves": idle.waves.iter().map(|w| json!({
                "open_seconds": w.open_secs,
                "upstream_sessions_seen": w.upstream_sessions,
                "vmrss_holding_mib": w.holding.rss_mib(),
                "vmhwm_holding_mib": w.holding.hwm_mib(),
                "kib_per_connection": idle.kib_per_conn(w),
                "vmrss_after_close_mib": w.after_close.rss_mib(),
            })).collect::<Vec<_>>(),
            "worst_vmrss_holding_mib": idle.worst_rss_mib(),
            "worst_vmhwm_mib": idle.worst_hwm_mib(),
            "target": format!("VmRSS and VmHWM while holding <= {IDLE_MAX_RSS_MIB} MiB, every wave"),
            "pass": idle.pass(),
        },
        "context": {
            "proxy_after_parts_1_to_3_vmrss_mib": first_proxy_mem.rss_mib(),
            "proxy_after_parts_1_to_3_vmhwm_mib": first_proxy_mem.hwm_mib(),
            "direct_client": "mysql_async 0.37, rustls, CA = harness CA, name verified as the endpoint host, mysql_clear_password with a presigned token",
            "proxied_client": "mysql_async 0.37, plain TCP to the proxy, no password",
        },
    });
    let path = write_json("bench-proxy.json", &doc);
    println!("JSON: {}", path.display());

    drop(db);
}

// ---------------------------------------------------------------------------------------------
// Client options

/// The direct session: TLS to MariaDB, the harness CA as the only root, the certificate's name
/// (the endpoint host) verified, and an IAM token sent through `mysql_clear_password`.
fn direct_opts(up: &RdsLikeUpstream) -> Opts {
    let creds = aws_credential_types::Credentials::new(&up.akid, &up.secret, None, None, "bench");
    let request = TokenRequest {
        host: up.endpoint_host.clone(),
        port: up.endpoint_port,
        user: BENCH_USER.into(),
        region: up.region.clone(),
    };
    let token = presign(&request, &creds, SystemTime::now()).expect("presign");
    let ssl = SslOpts::default()
        .with_root_certs(vec![up.ca.clone().into()])
        .with_disable_built_in_roots(true)
        // The certificate names only the endpoint host; we dial 127.0.0.1. Verify against the
        // name, as the proxy does.
        .with_danger_tls_hostname_override(Some(up.endpoint_host.clone()));
    bench_opts(up.port, CLIENT_MAX_PACKET)
        .pass(Some(token.expose().to_owned()))
        .ssl_opts(ssl)
        .enable_cleartext_plugin(true)
        .into()
}

/// The proxied session: plain TCP to the proxy, no password.
fn proxied_opts(port: u16) -> Opts {
    bench_opts(port, CLIENT_MAX_PACKET).into()
}

// ---------------------------------------------------------------------------------------------
// Part 1: bulk read

struct Bulk {
    /// MiB/s per timed run.
    direct: Vec<f64>,
    proxy: Vec<f64>,
    /// CPU seconds spent in the timed direct runs, and in the timed proxied runs.
    cpu_direct: Cpu,
    cpu_proxy: Cpu,
}

impl Bulk {
    fn best(&self) -> (f64, f64) {
        (max(&self.direct), max(&self.proxy))
    }
    fn median(&self) -> (f64, f64) {
        (
            percentile(&self.direct, 50.0),
            percentile(&self.proxy, 50.0),
        )
    }
    fn ratio_best(&self) -> f64 {
        let (d, p) = self.best();
        p / d
    }
    fn ratio_median(&self) -> f64 {
        let (d, p) = self.median();
        p / d
    }
    fn pass(&self) -> bool {
        self.ratio_best() >= BULK_MIN_RATIO
    }
}

async fn bulk_read(counts: &Counts, direct: &Opts, proxied: &Opts, pids: &Pids) -> Bulk {
    // The row value is made once per session: REPEAT itself runs at only ~200 MiB/s in mariadbd
    // (byte-by-byte appends), which would make the server, not the transport, the bottleneck.
    let make = format!("SET @bulk_row = REPEAT('x', {})", counts.bulk_row_bytes);
    let sql = format!(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows}) \
         SELECT @bulk_row FROM s",
        rows = counts.bulk_rows,
    );
    let expected = counts.bulk_rows * counts.bulk_row_bytes;
    let mut d = Conn::new(direct.clone()).await.expect("direct connect");
    let mut p = Conn::new(proxied.clone()).await.expect("proxy connect");
    for c in [&mut d, &mut p] {
        c.query_drop(&make).await.expect("make the bulk row");
        read_all(c, &sql, expected).await;
    }
    let mut out = Bulk {
        direct: Vec::new(),
        proxy: Vec::new(),
        cpu_direct: Cpu::default(),
        cpu_proxy: Cpu::default(),
    };
    for _ in 0..counts.bulk_reps {
        let c0 = pids.cpu();
        out.direct
            .push(mib(expected) / read_all(&mut d, &sql, expected).await);
        let c1 = pids.cpu();
        out.proxy
            .push(mib(expected) / read_all(&mut p, &sql, expected).await);
        let c2 = pids.cpu();
        out.cpu_direct.add(c0, c1);
        out.cpu_proxy.add(c1, c2);
    }
    d.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
    out
}

/// Runs `sql`, streams every row, checks the byte count; returns the seconds taken.
async fn read_all(conn: &mut Conn, sql: &str, expected: usize) -> f64 {
    let t = Instant::now();
    let mut result = conn.query_iter(sql).await.expect("bulk query");
    let mut bytes = 0usize;
    result
        .for_each(|row: Row| {
            if let Some(Value::Bytes(b)) = row.as_ref(0) {
                bytes += b.len();
            }
        })
        .await
        .expect("bulk rows");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(bytes, expected, "bulk result size");
    secs
}

// ---------------------------------------------------------------------------------------------
// Part 2: round trips

struct Samples {
    /// Microseconds (part 2) or milliseconds (part 3) per operation.
    direct: Vec<f64>,
    proxy: Vec<f64>,
}

impl Samples {
    fn added(&self, pct: f64) -> f64 {
        percentile(&self.proxy, pct) - percentile(&self.direct, pct)
    }
    fn ratio(&self) -> f64 {
        percentile(&self.proxy, 50.0) / percentile(&self.direct, 50.0)
    }
    /// Part 2's target.
    fn rtt_pass(&self) -> bool {
        self.added(50.0) <= RTT_MAX_ADDED_P50_US
    }
    /// Part 3's target.
    fn connect_pass(&self) -> bool {
        self.ratio() <= CONNECT_MAX_RATIO
    }
}

/// The samples, and the CPU spent in the timed direct and proxied blocks.
async fn round_trips(
    counts: &Counts,
    direct: &Opts,
    proxied: &Opts,
    pids: &Pids,
) -> (Samples, (Cpu, Cpu)) {
    let mut d = Conn::new(direct.clone()).await.expect("direct connect");
    let mut p = Conn::new(proxied.clone()).await.expect("proxy connect");
    for _ in 0..counts.rtt_warmup {
        select1(&mut d).await;
        select1(&mut p).await;
    }
    let mut out = Samples {
        direct: Vec::new(),
        proxy: Vec::new(),
    };
    let mut cpu = (Cpu::default(), Cpu::default());
    for _ in 0..counts.rtt_blocks {
        for (conn, samples, cpu) in [
            (&mut d, &mut out.direct, &mut cpu.0),
            (&mut p, &mut out.proxy, &mut cpu.1),
        ] {
            let c0 = pids.cpu();
            for _ in 0..counts.rtt_block {
                let t = Instant::now();
                select1(conn).await;
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            cpu.add(c0, pids.cpu());
        }
    }
    d.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
    (out, cpu)
}

async fn select1(conn: &mut Conn) {
    let one: Option<u8> = conn.query_first("SELECT 1").await.expect("SELECT 1");
    assert_eq!(one, Some(1));
}

// ---------------------------------------------------------------------------------------------
// Part 3: connect + login + first query

/// The samples (ms), and the CPU spent in the timed direct and proxied runs (disconnects included).
async fn connects(
    counts: &Counts,
    direct: &Opts,
    proxied: &Opts,
    pids: &Pids,
) -> (Samples, (Cpu, Cpu)) {
    let mut out = Samples {
        direct: Vec::new(),
        proxy: Vec::new(),
    };
    let mut cpu = (Cpu::default(), Cpu::default());
    for i in 0..counts.connect_warmup + counts.connects {
        for (opts, samples, cpu) in [
            (direct, &mut out.direct, &mut cpu.0),
            (proxied, &mut out.proxy, &mut cpu.1),
        ] {
            let c0 = pids.cpu();
            let t = Instant::now();
            let mut c = Conn::new(opts.clone()).await.expect("connect");
            select1(&mut c).await;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            c.disconnect().await.expect("disconnect");
            if i >= counts.connect_warmup {
                samples.push(ms);
                cpu.add(c0, pids.cpu());
            }
        }
    }
    (out, cpu)
}

// ---------------------------------------------------------------------------------------------
// Part 4: idle connections

/// Part 4: a fresh proxy holds the idle set twice over (a second wave after the first has
/// closed, when the allocator hands out reused memory instead of fresh pages).
struct Idle {
    n: usize,
    max_files: String,
    before: Mem,
    waves: Vec<Wave>,
}

/// One set of idle connections, opened, held and closed.
struct Wave {
    open_secs: f64,
    /// `benchuser` sessions MariaDB saw while the set was held.
    upstream_sessions: u64,
    holding: Mem,
    after_close: Mem,
}

impl Idle {
    fn kib_per_conn(&self, wave: &Wave) -> f64 {
        (wave.holding.rss_kib as f64 - self.before.rss_kib as f64) / self.n as f64
    }
    fn worst_rss_mib(&self) -> f64 {
        self.waves
            .iter()
            .map(|w| w.holding.rss_mib())
            .fold(0.0, f64::max)
    }
    fn worst_hwm_mib(&self) -> f64 {
        self.waves
            .iter()
            .map(|w| w.holding.hwm_mib())
            .fold(0.0, f64::max)
    }
    fn pass(&self) -> bool {
        self.worst_rss_mib() <= IDLE_MAX_RSS_MIB && self.worst_hwm_mib() <= IDLE_MAX_RSS_MIB
    }
}

const IDLE_WAVES: usize = 2;

async fn idle_connections(counts: &Counts, up: &RdsLikeUpstream, scratch: &TempDir) -> Idle {
    let proxy = ProxyProcess::start(up, &scratch.path.join("proxy-idle.log"));
    let opts = proxied_opts(proxy.port);
    let max_files = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_owned())
        .unwrap_or_else(|| "?".into());
    if let Ok(soft) = max_files.parse::<usize>() {
        assert!(
            soft > 2 * counts.idle + 64,
            "the proxy may open only {soft} files: raise `ulimit -n` above {}",
            2 * counts.idle + 64
        );
    }
    let before = proc_mem(proxy.pid());
    let mut waves = Vec::new();
    for _ in 0..IDLE_WAVES {
        waves.push(idle_wave(counts, up, &opts, proxy.pid()).await);
    }
    proxy.stop();
    Idle {
        n: counts.idle,
        max_files,
        before,
        waves,
    }
}

async fn idle_wave(counts: &Counts, up: &RdsLikeUpstream, opts: &Opts, pid: u32) -> Wave {
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(counts.idle_parallel));
    let mut tasks = JoinSet::new();
    for _ in 0..counts.idle {
        let gate = gate.clone();
        let opts = opts.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let mut c = Conn::new(opts).await.expect("idle connect");
            select1(&mut c).await;
            c
        });
    }
    let mut conns = Vec::with_capacity(counts.idle);
    while let Some(c) = tasks.join_next().await {
        conns.push(c.expect("idle connect task"));
    }
    let open_secs = t.elapsed().as_secs_f64();
    // Let the proxy settle (nothing should change: the sessions are idle).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let holding = proc_mem(pid);
    let upstream_sessions: u64 = up
        .root_sql(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{BENCH_USER}'"
        ))
        .trim()
        .parse()
        .expect("session count");

    let mut tasks = JoinSet::new();
    for c in conns {
        tasks.spawn(async move { c.disconnect().await });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("disconnect task").expect("disconnect");
    }
    // The proxy notices the closes and drops both legs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Wave {
        open_secs,
        upstream_sessions,
        holding,
        after_close: proc_mem(pid),
    }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting

/// The processes whose CPU time is accounted.
struct Pids {
    server: u32,
    client: u32,
    proxy: u32,
}

impl Pids {
    fn cpu(&self) -> Cpu {
        Cpu {
            server: proc_cpu_secs(self.server),
            client: proc_cpu_secs(self.client),
            proxy: proc_cpu_secs(self.proxy),
        }
    }
}

/// CPU seconds (user + system) per process: a reading, or a sum of differences of readings.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: f64,
    client: f64,
    proxy: f64,
}

impl Cpu {
    /// Adds `to - from`.
    fn add(&mut self, from: Cpu, to: Cpu) {
        self.server += to.server - from.server;
        self.client += to.client - from.client;
        self.proxy += to.proxy - from.proxy;
    }

    /// Each process's CPU time divided by `units` (e.g. MiB read, scaled to ms), as JSON.
    fn per(&self, units: f64) -> serde_json::Value {
        json!({
            "mariadbd": self.server / units,
            "client": self.client / units,
            "proxy": self.proxy / units,
            "total": (self.server + self.client + self.proxy) / units,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers and the table

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// CPU time of one part, for the lines under the table.
struct CpuRow {
    what: &'static str,
    direct: Cpu,
    /// What `direct` is divided by (operations, scaled to the unit shown).
    direct_units: f64,
    proxied: Cpu,
    proxied_units: f64,
}

struct Machine {
    nproc: usize,
    load_start: String,
    load_end: String,
    mariadb_version: String,
    profile: String,
    quick: bool,
}

fn render(
    m: &Machine,
    c: &Counts,
    bulk: &Bulk,
    rtt: &Samples,
    connect: &Samples,
    idle: &Idle,
    cpu: &[CpuRow],
) -> String {
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut row = |cells: [&str; 7]| rows.push(cells.map(str::to_owned));
    row([
        "part",
        "metric",
        "direct",
        "proxy",
        "proxy vs direct",
        "target",
        "result",
    ]);
    let size = format!(
        "1 bulk read {:.0} MiB ({}x{} KiB) x{}",
        mib(c.bulk_rows * c.bulk_row_bytes),
        c.bulk_rows,
        c.bulk_row_bytes / 1024,
        c.bulk_reps
    );
    let (db, pb) = bulk.best();
    let (dm, pm) = bulk.median();
    row([
        &size,
        "best MiB/s",
        &format!("{db:.0}"),
        &format!("{pb:.0}"),
        &format!("{:.2}x", bulk.ratio_best()),
        &format!(">= {BULK_MIN_RATIO:.2}x"),
        verdict(bulk.pass()),
    ]);
    row([
        "",
        "median MiB/s",
        &format!("{dm:.0}"),
        &format!("{pm:.0}"),
        &format!("{:.2}x", bulk.ratio_median()),
        "",
        "",
    ]);
    let n = format!("2 SELECT 1, warm conn x{}", rtt.direct.len());
    for (pct, label, target, result) in [
        (
            50.0,
            "p50 us",
            format!("<= +{RTT_MAX_ADDED_P50_US:.0} us"),
            verdict(rtt.rtt_pass()),
        ),
        (99.0, "p99 us", String::new(), ""),
    ] {
        row([
            if pct == 50.0 { &n } else { "" },
            label,
            &format!("{:.1}", percentile(&rtt.direct, pct)),
            &format!("{:.1}", percentile(&rtt.proxy, pct)),
            &format!("{:+.1} us", rtt.added(pct)),
            &target,
            result,
        ]);
    }
    let n = format!("3 connect+login+SELECT 1 x{}", connect.direct.len());
    row([
        &n,
        "p50 ms",
        &format!("{:.2}", percentile(&connect.direct, 50.0)),
        &format!("{:.2}", percentile(&connect.proxy, 50.0)),
        &format!("{:.2}x", connect.ratio()),
        &format!("<= {CONNECT_MAX_RATIO}x"),
        verdict(connect.connect_pass()),
    ]);
    row([
        "",
        "p90 ms",
        &format!("{:.2}", percentile(&connect.direct, 90.0)),
        &format!("{:.2}", percentile(&connect.proxy, 90.0)),
        &format!(
            "{:.2}x",
            percentile(&connect.proxy, 90.0) / percentile(&connect.direct, 90.0)
        ),
        "",
        "",
    ]);
    for (i, w) in idle.waves.iter().enumerate() {
        let first = i == 0;
        let n = if first {
            format!("4 {} idle conns, proxy RSS", idle.n)
        } else {
            String::new()
        };
        row([
            &n,
            &format!("wave {} VmRSS MiB", i + 1),
            &if first {
                format!("{:.1} before", idle.before.rss_mib())
            } else {
                String::new()
            },
            &format!("{:.1} holding", w.holding.rss_mib()),
            &format!("{:.1} KiB/conn", idle.kib_per_conn(w)),
            &if first {
                format!("<= {IDLE_MAX_RSS_MIB:.0} MiB")
            } else {
                String::new()
            },
            if first { verdict(idle.pass()) } else { "" },
        ]);
        row([
            "",
            &format!("wave {} VmHWM MiB", i + 1),
            "",
            &format!("{:.1} holding", w.holding.hwm_mib()),
            &format!("{:.1} after close", w.after_close.rss_mib()),
            "",
            "",
        ]);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nrds-iam-proxy benchmark: direct TLS session vs. the same session through the proxy{}",
        if m.quick { " (QUICK mode)" } else { "" }
    );
    let _ = writeln!(
        out,
        "machine: {} cores, load average {} at start, {} at end; {}; cargo profile {}",
        m.nproc, m.load_start, m.load_end, m.mariadb_version, m.profile
    );
    let _ = writeln!(out, "proxy binary: {}", proxy_bin().display());
    for (i, w) in idle.waves.iter().enumerate() {
        let _ = writeln!(
            out,
            "idle wave {}: {} logged-in sessions seen upstream, opened in {:.1} s",
            i + 1,
            w.upstream_sessions,
            w.open_secs
        );
    }
    out.push('\n');
    out.push_str(&markdown_table(&rows, |j| (2..=4).contains(&j)));
    let _ = writeln!(
        out,
        "\nCPU time (10 ms ticks from /proc), mariadbd + client + proxy = total:"
    );
    let w = cpu.iter().map(|r| r.what.len()).max().unwrap_or(0);
    for r in cpu {
        let d = |c: f64| c / r.direct_units;
        let p = |c: f64| c / r.proxied_units;
        let _ = writeln!(
            out,
            "  {:<w$}  direct {:.1} + {:.1} = {:.1}   proxied {:.1} + {:.1} + {:.1} = {:.1}",
            r.what,
            d(r.direct.server),
            d(r.direct.client),
            d(r.direct.server + r.direct.client + r.direct.proxy),
            p(r.proxied.server),
            p(r.proxied.client),
            p(r.proxied.proxy),
            p(r.proxied.server + r.proxied.client + r.proxied.proxy),
        );
    }
    out
}

//! `cargo bench --features sim --bench flow`: what one connection's behaviour costs the others on
//! a shared SSM session (DESIGN.md decision 11), and what holding a paused client's results costs.
//!
//! Scenarios, each printed as a table row and kept in `target/bench-flow.json`:
//! * **neighbour**: the real proxy over ONE simulated session (realistic agent: 1 KiB messages,
//!   1 ms pacing, 20 ms RTT) to the RDS-shaped MariaDB. Client A starts an unbuffered read of a
//!   large result, takes one row and pauses; client B runs `SELECT 1` every 100 ms during the
//!   pause. Reported: B's p50/p99/max round trip (goal: max ≤ 2 × RTT + 50 ms), then A reads on and
//!   every row is checked.
//! * **spool**: a connection's spool (`rds_iam_proxy::spool`) taking 1 GiB (8 MiB in memory, the
//!   rest sealed on disk) and giving it back: MiB/s each way, and this process's resident memory
//!   while it held the 1 GiB (goal: within the memory bound, not the spool's size).
//!
//! `RDS_IAM_PROXY_BENCH_QUICK=1` shrinks the sizes and the pause for a smoke run.

mod support;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};
use mysql_async::prelude::Queryable;
use rds_iam_proxy::spool::{Spool, SpoolBudget, SpoolLimits};
use rds_iam_proxy::ssm::sim::{Route, SimConfig, SimServer};
use serde_json::json;

use support::*;

/// Added round trip of the simulated link.
const RTT: Duration = Duration::from_millis(20);

/// The neighbour's goal: its worst round trip.
fn neighbour_goal_ms() -> f64 {
    2.0 * RTT.as_secs_f64() * 1000.0 + 50.0
}

struct Sizes {
    /// Rows (1 KiB each) of the paused client's result.
    rows: u64,
    /// How long it pauses.
    pause: Duration,
    /// Bytes through the spool.
    spool: u64,
}

const FULL: Sizes = Sizes {
    rows: 32_000,
    pause: Duration::from_secs(20),
    spool: 1 << 30,
};

const QUICK: Sizes = Sizes {
    rows: 4_000,
    pause: Duration::from_secs(3),
    spool: 64 << 20,
};

fn main() {
    let quick = std::env::var("RDS_IAM_PROXY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sizes = if quick { QUICK } else { FULL };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let spool = spool_bench(sizes.spool);
    let neighbour = runtime.block_on(async {
        tokio::select! {
            n = neighbour_bench(&sizes) => Some(n),
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted: cleaning up"); None }
        }
    });
    let Some(neighbour) = neighbour else { return };
    let rows = vec![
        vec![
            "scenario".to_owned(),
            "figure".to_owned(),
            "value".to_owned(),
            "goal".to_owned(),
        ],
        vec![
            "neighbour SELECT 1 during a pause".into(),
            "p50 / p99 / max ms".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                neighbour.p50_ms, neighbour.p99_ms, neighbour.max_ms
            ),
            format!(
                "max ≤ {:.0} ms: {}",
                neighbour_goal_ms(),
                verdict(neighbour.max_ms <= neighbour_goal_ms())
            ),
        ],
        vec![
            "paused client afterwards".into(),
            "rows intact / MiB".into(),
            format!(
                "{} / {:.1}",
                if neighbour.intact { "yes" } else { "NO" },
                neighbour.result_mib
            ),
            "every row".into(),
        ],
        vec![
            "spool, into".into(),
            "MiB/s".into(),
            format!("{:.0}", spool.in_mib_s),
            String::new(),
        ],
        vec![
            "spool, back out".into(),
            "MiB/s".into(),
            format!("{:.0}", spool.out_mib_s),
            String::new(),
        ],
        vec![
            format!("spool holding {:.0} MiB", spool.held_mib),
            "RSS growth MiB".into(),
            format!("{:.1}", spool.rss_growth_mib),
            format!(
                "≤ {:.0} (the memory bound + a chunk): {}",
                spool.bound_mib,
                verdict(spool.rss_growth_mib <= spool.bound_mib + 4.0)
            ),
        ],
    ];
    println!("{}", markdown_table(&rows, |c| c == 2));
    let doc = json!({
        "profile": profile(),
        "quick": quick,
        "neighbour": {
            "rtt_ms": RTT.as_millis() as u64,
            "pause_s": sizes.pause.as_secs(),
            "samples": neighbour.samples,
            "p50_ms": neighbour.p50_ms,
            "p99_ms": neighbour.p99_ms,
            "max_ms": neighbour.max_ms,
            "goal_max_ms": neighbour_goal_ms(),
            "paused_result_mib": neighbour.result_mib,
            "paused_result_intact": neighbour.intact,
        },
        "spool": {
            "bytes": sizes.spool,
            "into_mib_s": spool.in_mib_s,
            "out_mib_s": spool.out_mib_s,
            "rss_growth_mib": spool.rss_growth_mib,
            "memory_bound_mib": spool.bound_mib,
        },
    });
    let path = write_json("bench-flow.json", &doc);
    println!("\n{}", path.display());
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

struct SpoolFigures {
    in_mib_s: f64,
    out_mib_s: f64,
    held_mib: f64,
    rss_growth_mib: f64,
    bound_mib: f64,
}

/// 1 GiB through one connection's spool with the default per-connection bounds.
fn spool_bench(total: u64) -> SpoolFigures {
    let limits = SpoolLimits {
        disk: total,
        ..SpoolLimits::DEFAULT
    };
    let budget = Arc::new(SpoolBudget::new(limits, std::env::temp_dir()));
    let mut spool = Spool::new(budget);
    let chunk = Bytes::from((0..64 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let me = std::process::id();
    let before = proc_mem(me).rss_mib();
    let t = Instant::now();
    let mut pushed = 0u64;
    while pushed + chunk.len() as u64 <= total {
        spool.push(chunk.clone()).expect("spool push");
        pushed += chunk.len() as u64;
    }
    let in_s = t.elapsed().as_secs_f64();
    let held = proc_mem(me).rss_mib();
    let t = Instant::now();
    let mut got = 0u64;
    loop {
        let f = spool.front().expect("spool read");
        if f.is_empty() {
            break;
        }
        assert_eq!(f[0], (got % 64 % 251) as u8, "spooled bytes differ");
        got += f.len() as u64;
        spool.consume(f.len());
    }
    let out_s = t.elapsed().as_secs_f64();
    assert_eq!(got, pushed);
    SpoolFigures {
        in_mib_s: pushed as f64 / (1 << 20) as f64 / in_s,
        out_mib_s: pushed as f64 / (1 << 20) as f64 / out_s,
        held_mib: pushed as f64 / (1 << 20) as f64,
        rss_growth_mib: held - before,
        bound_mib: limits.memory as f64 / (1 << 20) as f64,
    }
}

struct Neighbour {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    result_mib: f64,
    intact: bool,
}

fn expected_row(n: u64) -> String {
    format!("{:x}", Md5::digest(n.to_string().as_bytes())).repeat(32)
}

async fn neighbour_bench(sizes: &Sizes) -> Neighbour {
    let db = BenchDb::start();
    let up = &db.up;
    let sim = SimServer::start(SimConfig {
        routes: vec![Route {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            dial: up.dial_addr(),
        }],
        realistic: true,
        rtt: RTT,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let proxy = ProxyProcess::start_with(up, &db.scratch.path.join("flow-proxy.log"), |cmd| {
        cmd.env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url()).args([
            "--ssm-target",
            "i-0123456789abcdef0",
            "--ssm-sessions",
            "1",
        ]);
    });
    let port = proxy.port;
    let opts = || bench_opts(port, 64 << 20);
    let mut a = mysql_async::Conn::new(opts()).await.expect("client A");
    let mut b = mysql_async::Conn::new(opts()).await.expect("client B");
    a.query_drop(format!(
        "SET SESSION max_recursive_iterations = {}",
        sizes.rows
    ))
    .await
    .unwrap();
    let sql = format!(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {}) \
         SELECT n, REPEAT(MD5(n), 32) FROM s",
        sizes.rows
    );
    let mut result = a.query_iter(sql).await.expect("A's query");
    let first: mysql_async::Row = result.next().await.unwrap().expect("a first row");
    assert_eq!(first.get::<u64, _>(0), Some(1));
    // A pauses; B works.
    let mut rtts = Vec::new();
    let until = Instant::now() + sizes.pause;
    while Instant::now() < until {
        let t = Instant::now();
        let one: Option<u8> = b.query_first("SELECT 1").await.expect("B's SELECT 1");
        assert_eq!(one, Some(1));
        rtts.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut n = 1;
    let mut intact = true;
    while let Some(row) = result.next().await.expect("A's rows") {
        n += 1;
        let (seq, text): (u64, String) = mysql_async::from_row(row);
        intact &= seq == n && text == expected_row(n);
    }
    intact &= n == sizes.rows;
    drop(result);
    let _ = a.disconnect().await;
    let _ = b.disconnect().await;
    drop(proxy);
    sim.shutdown().await;
    Neighbour {
        samples: rtts.len(),
        p50_ms: percentile(&rtts, 50.0),
        p99_ms: percentile(&rtts, 99.0),
        max_ms: rtts.iter().copied().fold(0.0, f64::max),
        result_mib: sizes.rows as f64 * 1030.0 / (1 << 20) as f64,
        intact,
    }
}

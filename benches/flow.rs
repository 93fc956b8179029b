//! `cargo bench --bench flow`: what one connection's behaviour costs the others on
//! a shared SSM session (DESIGN.md decision 11), and what holding a paused client's results costs.
//!
//! Scenarios, each printed as a table row and kept in `target/bench-flow.json`:
//! * **neighbour**: the real proxy over ONE simulated session (then over the default two) (realistic agent: 1 KiB messages,
//!   1 ms pacing, 20 ms RTT) to the RDS-shaped MariaDB. Client A starts an unbuffered read of a
//!   large result, takes one row and pauses; client B runs `SELECT 1` every 100 ms during the
//!   pause. Reported: B's p50/p99/max round trip (goal: max ≤ 2 × RTT + 50 ms), then A reads on and
//!   every row is checked.
//! * **uplink**: a 64 MiB upload (prepared INSERTs of 1 MiB of incompressible bytes) over ONE
//!   session whose uplink the simulator limits to 4 MiB/s: payload throughput as a fraction of the
//!   link rate, the same for the bytes on the wire (message headers included; with the plugin's
//!   1 KiB messages a header is 12 % of a message), and the duplicate ratio (payload bytes the
//!   agent received twice ÷ all; goal ≤ 3 %); every chunk's MD5 is checked on the server.
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
use serde_json::json;
use ssm_sim::{SimConfig, SimServer};

use support::*;

/// Added round trip of the simulated link.
const RTT: Duration = Duration::from_millis(20);

/// The neighbour's goal: its worst round trip.
fn neighbour_goal_ms() -> f64 {
    2.0 * RTT.as_secs_f64() * 1000.0 + 50.0
}

struct Sizes {
    /// Bytes uploaded over the limited uplink.
    upload: usize,
    /// Rows (1 KiB each) of the paused client's result.
    rows: u64,
    /// How long it pauses.
    pause: Duration,
    /// Bytes through the spool.
    spool: u64,
}

const FULL: Sizes = Sizes {
    upload: 64 << 20,
    rows: 32_000,
    pause: Duration::from_secs(20),
    spool: 1 << 30,
};

const QUICK: Sizes = Sizes {
    upload: 8 << 20,
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
    let ran = runtime.block_on(async {
        tokio::select! {
            n = async {
                (
                    neighbour_bench(&sizes, 1).await,
                    neighbour_bench(&sizes, 2).await,
                    uplink_bench(&sizes).await,
                )
            } => Some(n),
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted: cleaning up"); None }
        }
    });
    let Some((neighbour, pooled, uplink)) = ran else {
        return;
    };
    let rows = vec![
        vec![
            "scenario".to_owned(),
            "figure".to_owned(),
            "value".to_owned(),
            "goal".to_owned(),
        ],
        vec![
            "neighbour SELECT 1 during a pause, 1 session".into(),
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
            "the same, 2 sessions (the default)".into(),
            "p50 / p99 / max ms".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                pooled.p50_ms, pooled.p99_ms, pooled.max_ms
            ),
            format!(
                "max ≤ {:.0} ms: {}",
                neighbour_goal_ms(),
                verdict(pooled.max_ms <= neighbour_goal_ms())
            ),
        ],
        vec![
            "paused client afterwards".into(),
            "rows intact / MiB".into(),
            format!(
                "{} / {:.1}",
                if neighbour.intact && pooled.intact {
                    "yes"
                } else {
                    "NO"
                },
                neighbour.result_mib
            ),
            "every row".into(),
        ],
        vec![
            format!(
                "upload {} MiB, uplink {} MiB/s",
                sizes.upload >> 20,
                UPLINK_RATE >> 20
            ),
            "payload / wire fraction of the link".into(),
            format!(
                "{:.2} / {:.2}",
                uplink.payload_fraction, uplink.wire_fraction
            ),
            format!("wire ≥ 0.90: {}", verdict(uplink.wire_fraction >= 0.90)),
        ],
        vec![
            "upload duplicates".into(),
            "% of payload bytes".into(),
            format!("{:.2}", 100.0 * uplink.duplicate_ratio),
            format!("≤ 3 %: {}", verdict(uplink.duplicate_ratio <= 0.03)),
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
        "neighbour_two_sessions": {
            "samples": pooled.samples,
            "p50_ms": pooled.p50_ms,
            "p99_ms": pooled.p99_ms,
            "max_ms": pooled.max_ms,
            "paused_result_intact": pooled.intact,
        },
        "uplink": {
            "link_bytes_per_s": UPLINK_RATE,
            "upload_bytes": sizes.upload,
            "seconds": uplink.seconds,
            "payload_fraction": uplink.payload_fraction,
            "wire_fraction": uplink.wire_fraction,
            "duplicate_ratio": uplink.duplicate_ratio,
            "intact": uplink.intact,
            "client_messages": uplink.messages,
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

/// The neighbour scenario with `sessions` in the pool (with two, the least-loaded placement puts
/// the neighbour on the session the paused client does not use).
async fn neighbour_bench(sizes: &Sizes, sessions: usize) -> Neighbour {
    let db = BenchDb::start();
    let up = &db.up;
    let sim = realistic_sim(up, RTT).await;
    let log = db.scratch.path.join(format!("flow-proxy-{sessions}.log"));
    let proxy = ProxyProcess::start_with(up, &log, |cmd| {
        cmd.env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
            .args(["--ssm-target", "i-0123456789abcdef0", "--ssm-sessions"])
            .arg(sessions.to_string());
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

/// The simulated uplink's rate.
const UPLINK_RATE: u64 = 4 << 20;

/// Bytes of one INSERT.
const UPLOAD_CHUNK: usize = 1 << 20;

struct Uplink {
    seconds: f64,
    payload_fraction: f64,
    wire_fraction: f64,
    duplicate_ratio: f64,
    intact: bool,
    messages: u64,
}

/// Chunk `i` of the upload: bytes from a xorshift stream (incompressible).
fn chunk(i: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
    (0..UPLOAD_CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn uplink_bench(sizes: &Sizes) -> Uplink {
    let db = BenchDb::start();
    let up = &db.up;
    let sim = SimServer::start(SimConfig {
        routes: vec![route_to(up)],
        uplink_rate: Some(UPLINK_RATE),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let proxy = ProxyProcess::start_with(up, &db.scratch.path.join("uplink-proxy.log"), |cmd| {
        cmd.env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url()).args([
            "--ssm-target",
            "i-0123456789abcdef0",
            "--ssm-sessions",
            "1",
        ]);
    });
    let mut conn =
        mysql_async::Conn::new(bench_opts(proxy.port, 64 << 20).db_name(Some("proxytest")))
            .await
            .expect("login");
    conn.query_drop("CREATE TABLE flow_upload (id INT PRIMARY KEY, data LONGBLOB)")
        .await
        .unwrap();
    let chunks = sizes.upload / UPLOAD_CHUNK;
    let before = sim.stats();
    let t = Instant::now();
    for i in 0..chunks {
        conn.exec_drop(
            "INSERT INTO flow_upload (id, data) VALUES (?, ?)",
            (i, chunk(i)),
        )
        .await
        .expect("INSERT");
    }
    let seconds = t.elapsed().as_secs_f64();
    let after = sim.stats();
    let sums: Vec<(usize, String)> = conn
        .query("SELECT id, LOWER(MD5(data)) FROM flow_upload ORDER BY id")
        .await
        .unwrap();
    let intact = sums.len() == chunks
        && sums
            .iter()
            .all(|(i, md5)| *md5 == format!("{:x}", Md5::digest(chunk(*i))));
    conn.query_drop("DROP TABLE flow_upload").await.unwrap();
    let _ = conn.disconnect().await;
    drop(proxy);
    sim.shutdown().await;
    let payload = (after.input_bytes - before.input_bytes) as f64;
    let messages = after.input_messages - before.input_messages;
    // 120-byte AgentMessage header and about 4 bytes of WebSocket framing per message.
    let wire = payload + 124.0 * messages as f64;
    let dup = (after.input_duplicate_bytes - before.input_duplicate_bytes) as f64;
    Uplink {
        seconds,
        payload_fraction: sizes.upload as f64 / seconds / UPLINK_RATE as f64,
        wire_fraction: wire / seconds / UPLINK_RATE as f64,
        duplicate_ratio: if payload > 0.0 { dup / payload } else { 0.0 },
        intact,
        messages,
    }
}

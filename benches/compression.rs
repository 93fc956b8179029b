//! `cargo bench --bench compression`: two parts.
//!
//! **Codec.** What each MySQL compression level costs and carries, on ordinary business rows
//! (ids, dates, e-mails, statuses, amounts, notes, JSON, as text-protocol row packets) and on
//! random bytes, through the proxy's own codec (`mysql::proto::compress`). For each algorithm and
//! level, and for 16 KiB frames (what a server's write buffer makes) and 256 KiB frames, it prints
//! the ratio, compress and decompress speed (MB/s of packet stream, one core), CPU per MiB, and
//! what one connection carries over a ~1 MiB/s tunnel (the SSM agent's pacing) with compression
//! overlapping the sending: `min(compress speed, 1 MiB/s × ratio)`. The figures argue the default
//! levels (`DEFAULT_ZLIB_LEVEL`, `DEFAULT_ZSTD_LEVEL`; see docs/compression.md). JSON:
//! `target/bench-compression.json`.
//!
//! **Tunnel.** The proxy binary through `ssm-sim --realistic --rtt 20ms` (the agent's pacing and
//! a 20 ms round trip) to the RDS-shaped MariaDB (zlib), one SSM session, one mysql_async
//! connection, default settings against `--compression off`: reading ~8 MiB of ordinary business
//! rows (goal ≥ 3× faster), reading 8 MiB of random blobs (goal ≥ 0.95×, i.e. not slower), and
//! uploading 64 MiB of ordinary rows in 1 MiB statements. Prints a table and writes
//! `target/bench-compression-tunnel.json` (with the bytes the proxy's metrics counted on the
//! compressed leg).
//!
//! `RDS_IAM_PROXY_BENCH_QUICK=1` shrinks both; `RDS_IAM_PROXY_BENCH_ONLY=codec|tunnel` runs one.

#[allow(dead_code)]
#[path = "../tests/common/process.rs"]
mod process;
mod support;
#[allow(dead_code)]
#[path = "../tests/common/compression.rs"]
mod test_data;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::time::Instant;

use mysql_async::prelude::Queryable;
use rds_iam_proxy::mysql::proto::compress::{Algorithm, Decoder, Encoder, Limits, Sequence};
use serde_json::json;

// `process` reaches the proxy-process helper as `super::logged_proxy`.
use support::logged_proxy;
use support::{BenchDb, ProxyProcess, SimProcess, bench_opts, markdown_table, mib, write_json};

/// The tunnel the levels are chosen for: one SSM session, ~1 MiB/s.
const LINK_BYTES_PER_SEC: f64 = 1_048_576.0;

fn main() {
    let only = std::env::var("RDS_IAM_PROXY_BENCH_ONLY").unwrap_or_default();
    if only != "tunnel" {
        codec();
    }
    if only != "codec" {
        tunnel();
    }
}

fn codec() {
    let quick = std::env::var_os("RDS_IAM_PROXY_BENCH_QUICK").is_some();
    let len = if quick { 1 << 20 } else { 16 << 20 };
    let sets = [("rows", rows(len)), ("random", random(len))];
    let configs = [
        (Algorithm::Zlib, 1),
        (Algorithm::Zlib, 2),
        (Algorithm::Zlib, 3),
        (Algorithm::Zlib, 6),
        (Algorithm::Zstd, 1),
        (Algorithm::Zstd, 3),
        (Algorithm::Zstd, 6),
    ];
    println!(
        "{:<7} {:<7} {:>6} {:>6} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "data",
        "codec",
        "frame",
        "ratio",
        "comp MB/s",
        "dec MB/s",
        "comp ms",
        "dec ms",
        "1MiB/s link"
    );
    println!(
        "{:<7} {:<7} {:>6} {:>6} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "", "", "", "", "", "", "per MiB", "per MiB", "MB/s"
    );
    let mut json = Vec::new();
    for (data_name, data) in &sets {
        for frame in [16 << 10, 256 << 10] {
            for (algorithm, level) in configs {
                let m = measure(data, algorithm, level, frame);
                println!(
                    "{:<7} {:<7} {:>5}K {:>6.2} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>12.2}",
                    data_name,
                    format!("{algorithm}-{level}"),
                    frame >> 10,
                    m.ratio,
                    m.compress_mb_s,
                    m.decompress_mb_s,
                    m.compress_ms_per_mib,
                    m.decompress_ms_per_mib,
                    m.link_mb_s
                );
                json.push(format!(
                    "{{\"data\":\"{data_name}\",\"algorithm\":\"{algorithm}\",\"level\":{level},\"frame\":{frame},\"ratio\":{:.3},\"compress_mb_s\":{:.1},\"decompress_mb_s\":{:.1},\"compress_ms_per_mib\":{:.3},\"decompress_ms_per_mib\":{:.3},\"link_1mib_s_mb_s\":{:.3}}}",
                    m.ratio,
                    m.compress_mb_s,
                    m.decompress_mb_s,
                    m.compress_ms_per_mib,
                    m.decompress_ms_per_mib,
                    m.link_mb_s
                ));
            }
        }
    }
    let json = format!("[\n  {}\n]\n", json.join(",\n  "));
    println!("{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("the codec figures as JSON");
    let path = write_json("bench-compression.json", &doc);
    eprintln!("wrote {}", path.display());
}

struct Measurement {
    ratio: f64,
    compress_mb_s: f64,
    decompress_mb_s: f64,
    compress_ms_per_mib: f64,
    decompress_ms_per_mib: f64,
    link_mb_s: f64,
}

fn measure(data: &[u8], algorithm: Algorithm, level: i32, frame: usize) -> Measurement {
    let mut encoder = Encoder::new(algorithm, level).max_frame(frame);
    let mut wire = Vec::with_capacity(data.len() + data.len() / 100);
    let started = Instant::now();
    // One write per frame, as the splice would hand over its reads.
    for chunk in data.chunks(frame) {
        let mut seq = Sequence::default();
        encoder
            .encode(chunk, &mut seq, &mut wire)
            .expect("the encoder does not fail");
    }
    let compress = started.elapsed().as_secs_f64();

    let mut decoder = Decoder::new(algorithm, Limits::default());
    let mut out = Vec::with_capacity(data.len());
    let started = Instant::now();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let progress = decoder
            .decode(rest, &mut out)
            .expect("our own frames decode");
        rest = &rest[progress.consumed..];
    }
    let decompress = started.elapsed().as_secs_f64();
    assert!(out == data, "round trip");

    let mb = data.len() as f64 / 1e6;
    let mib = data.len() as f64 / 1_048_576.0;
    let ratio = data.len() as f64 / wire.len() as f64;
    let compress_mb_s = mb / compress;
    Measurement {
        ratio,
        compress_mb_s,
        decompress_mb_s: mb / decompress,
        compress_ms_per_mib: compress * 1e3 / mib,
        decompress_ms_per_mib: decompress * 1e3 / mib,
        link_mb_s: compress_mb_s.min(LINK_BYTES_PER_SEC * ratio / 1e6),
    }
}

/// A small deterministic generator (xorshift), so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Text-protocol row packets of an orders table, `len` bytes of stream.
fn rows(len: usize) -> Vec<u8> {
    const FIRST: &[&str] = &[
        "anna", "ben", "carla", "dmitri", "eva", "farid", "grace", "hugo", "ines", "jonas", "kim",
        "lena", "marco", "nina", "omar", "petra",
    ];
    const LAST: &[&str] = &[
        "smith", "mueller", "rossi", "garcia", "dubois", "kowalski", "nakamura", "larsen", "silva",
        "novak", "ivanova", "okafor",
    ];
    const DOMAINS: &[&str] = &["example.com", "mail.example.org", "corp.example.net"];
    const STATUSES: &[&str] = &[
        "active",
        "pending",
        "shipped",
        "cancelled",
        "refunded",
        "on_hold",
    ];
    const WORDS: &[&str] = &[
        "customer",
        "asked",
        "for",
        "delivery",
        "before",
        "friday",
        "invoice",
        "sent",
        "again",
        "address",
        "changed",
        "call",
        "back",
        "discount",
        "applied",
        "order",
        "split",
        "into",
        "two",
        "parcels",
        "gift",
        "wrap",
        "requested",
        "payment",
        "failed",
        "retry",
        "tomorrow",
        "the",
        "a",
        "and",
        "please",
        "note",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(len + 512);
    let mut id = 1_000_000u64;
    let mut seq = 1u8;
    while out.len() < len {
        let words = 3 + rng.below(10);
        let note: Vec<&str> = (0..words).map(|_| rng.pick(WORDS)).collect();
        let fields = [
            id.to_string(),
            format!(
                "2024-{:02}-{:02} {:02}:{:02}:{:02}",
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            format!(
                "{}.{}{}@{}",
                rng.pick(FIRST),
                rng.pick(LAST),
                rng.below(100),
                rng.pick(DOMAINS)
            ),
            rng.pick(STATUSES).to_owned(),
            format!("{}.{:02}", rng.below(5000), rng.below(100)),
            note.join(" "),
            format!(
                "{{\"sku\":\"SKU-{:05}\",\"qty\":{},\"gift\":{},\"tags\":[\"{}\",\"{}\"]}}",
                rng.below(100_000),
                1 + rng.below(9),
                rng.below(2) == 0,
                rng.pick(STATUSES),
                rng.pick(WORDS)
            ),
        ];
        let mut payload = Vec::new();
        for field in &fields {
            payload.push(field.len() as u8); // every field is under 251 bytes
            payload.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&payload);
        seq = seq.wrapping_add(1);
        id += 1 + rng.below(3);
    }
    out.truncate(len);
    out
}

fn random(len: usize) -> Vec<u8> {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    (0..len).map(|_| rng.next() as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Tunnel

/// The SSM target the simulator serves.
const SSM_TARGET: &str = "i-0123456789abcdef0";

/// One row of ordinary business data, as MariaDB computes it from `seq`.
const ROW: &str = "seq, CONCAT('customer', seq % 9973, '@mail.example.com'), \
     DATE_ADD('2024-01-01', INTERVAL seq % 365 DAY), \
     ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned'), \
     CAST(seq * 37 % 1000000 / 100 AS DECIMAL(10,2)), \
     CONCAT('order note ', seq % 211), \
     CONCAT('{\"sku\":\"A-', seq % 977, '\",\"qty\":', 1 + seq % 9, '}')";

/// What one scenario took with one setting.
struct Run {
    /// Bytes of result or statement text carried.
    bytes: usize,
    secs: f64,
}

/// One setting's runs, and what the proxy's metrics counted on the compressed leg.
struct Setting {
    rows: Run,
    blobs: Run,
    upload: Run,
    /// `(direction, form) → bytes` from `/metrics`.
    metrics: Vec<(String, u64)>,
}

fn tunnel() {
    let quick = std::env::var_os("RDS_IAM_PROXY_BENCH_QUICK").is_some();
    let (rows, blobs, upload) = if quick {
        (12_000, 1024, 4 << 20)
    } else {
        (96_000, 8192, 64 << 20)
    };
    let db = BenchDb::start();
    let sim = SimProcess::start_with(
        &db.up,
        &db.scratch.path.join("ssm-sim.log"),
        &["--realistic", "--rtt", "20ms"],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let text = test_data::business_rows(upload);
    let mut settings = Vec::new();
    for (name, extra) in [("off", &["--compression", "off"][..]), ("default", &[][..])] {
        eprintln!("tunnel: --compression {name} ...");
        let health = format!("127.0.0.1:{}", process::free_port());
        let proxy = ProxyProcess::start_with(
            &db.up,
            &db.scratch.path.join(format!("proxy-{name}.log")),
            |cmd| {
                cmd.env("AWS_ENDPOINT_URL_SSM", &sim.url)
                    .args(["--ssm-target", SSM_TARGET, "--ssm-sessions", "1"])
                    .args(["--health-addr", &health])
                    .args(extra);
            },
        );
        let port = proxy.port;
        let setting = rt.block_on(run_setting(port, rows, blobs, &text, &health));
        drop(proxy);
        settings.push((name, setting));
    }
    report(&settings, &db.mariadb_version);
}

async fn run_setting(port: u16, rows: usize, blobs: usize, text: &[u8], health: &str) -> Setting {
    let opts = bench_opts(port, 64 << 20).db_name(Some("proxytest"));
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("log in through the proxy");
    conn.query_drop("SELECT 1").await.expect("warm up");
    let rows = read(&mut conn, &format!("SELECT {ROW} FROM seq_1_to_{rows}")).await;
    let blobs = read(
        &mut conn,
        &format!("SELECT RANDOM_BYTES(1024) FROM seq_1_to_{blobs}"),
    )
    .await;
    let started = Instant::now();
    for chunk in text.chunks(1 << 20) {
        let sql = format!("DO LENGTH('{}')", std::str::from_utf8(chunk).expect("text"));
        conn.query_drop(sql).await.expect("upload");
    }
    let upload = Run {
        bytes: text.len(),
        secs: started.elapsed().as_secs_f64(),
    };
    conn.disconnect().await.expect("disconnect");
    let (_, page) = process::http_get(health, "/metrics");
    let metrics = [
        ("database_to_client", "compressed"),
        ("database_to_client", "uncompressed"),
        ("client_to_database", "compressed"),
        ("client_to_database", "uncompressed"),
    ]
    .iter()
    .map(|(d, f)| {
        (
            format!("{d}_{f}"),
            test_data::compression_metric(&page, d, f),
        )
    })
    .collect();
    Setting {
        rows,
        blobs,
        upload,
        metrics,
    }
}

/// Runs `sql`, reading its whole result; counts the bytes of its values.
async fn read(conn: &mut mysql_async::Conn, sql: &str) -> Run {
    let started = Instant::now();
    let mut result = conn.query_iter(sql).await.expect("query");
    let mut bytes = 0usize;
    result
        .for_each(|row: mysql_async::Row| {
            for i in 0..row.len() {
                if let Some(mysql_async::Value::Bytes(b)) = row.as_ref(i) {
                    bytes += b.len();
                }
            }
        })
        .await
        .expect("read the result");
    Run {
        bytes,
        secs: started.elapsed().as_secs_f64(),
    }
}

fn report(settings: &[(&str, Setting)], mariadb: &str) {
    let off = &settings[0].1;
    let on = &settings[1].1;
    let scenarios = [
        ("read ordinary rows", &off.rows, &on.rows, 3.0),
        ("read random blobs", &off.blobs, &on.blobs, 0.95),
        ("upload ordinary rows", &off.upload, &on.upload, 3.0),
    ];
    let mut table = vec![
        [
            "one connection, one session",
            "MiB",
            "off s",
            "default s",
            "off MiB/s",
            "default MiB/s",
            "speed-up",
            "goal",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let mut json_rows = Vec::new();
    for (name, a, b, goal) in scenarios {
        let speedup = a.secs / b.secs;
        table.push(vec![
            name.to_owned(),
            format!("{:.1}", mib(b.bytes)),
            format!("{:.2}", a.secs),
            format!("{:.2}", b.secs),
            format!("{:.2}", mib(a.bytes) / a.secs),
            format!("{:.2}", mib(b.bytes) / b.secs),
            format!("{speedup:.2}×"),
            format!(
                "≥ {goal}× {}",
                if speedup >= goal { "met" } else { "MISSED" }
            ),
        ]);
        json_rows.push(json!({
            "scenario": name,
            "bytes": b.bytes,
            "off_secs": a.secs,
            "default_secs": b.secs,
            "speedup": speedup,
            "goal": goal,
            "met": speedup >= goal,
        }));
    }
    println!(
        "\nTunnel: ssm-sim --realistic --rtt 20ms, MariaDB {mariadb} (zlib), --ssm-sessions 1, \
         one mysql_async connection\n"
    );
    println!("{}", markdown_table(&table, |j| j != 0));
    let counted: serde_json::Map<String, serde_json::Value> = on
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    println!("compressed leg, as the proxy counted it (default setting): {counted:?}");
    let count = |k: &str| {
        on.metrics
            .iter()
            .find(|(n, _)| n == k)
            .map_or(0, |(_, v)| *v)
    };
    let up_ratio = count("client_to_database_uncompressed") as f64
        / count("client_to_database_compressed").max(1) as f64;
    println!(
        "the simulator paces only the agent → client direction, so uploads are not link-bound \
         here; they crossed the tunnel {up_ratio:.2}× smaller (what an uplink paced like the \
         downlink would gain)"
    );
    let doc = json!({
        "transport": "ssm-sim --realistic --rtt 20ms",
        "mariadb": mariadb,
        "load": support::loadavg(),
        "scenarios": json_rows,
        "compressed_leg_bytes": counted,
        "upload_wire_ratio": up_ratio,
        "off_compressed_leg_bytes": off
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>(),
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    let path = write_json("bench-compression-tunnel.json", &doc);
    eprintln!("wrote {}", path.display());
}

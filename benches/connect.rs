//! `cargo bench --bench connect`: what a new connection costs over the tunnel (issue 13,
//! DESIGN.md decision 13), from the client's TCP connect to its first result.
//!
//! The real proxy binary over the SSM simulator in realistic mode (1 KiB messages, 1 ms pacing,
//! 20 ms injected round trip) to the RDS-shaped MariaDB, logging in a user whose PAM service
//! accepts any password, so only the protocol counts. After one warm-up connection (the SSM
//! session is up, the credentials are loaded), each scenario opens connections that run
//! `SELECT 1` and close:
//!
//! * **sequential, raw client**: 20 connections 300 ms apart (a GUI, a test suite), with a minimal
//!   client written with the crate's codec that sends nothing but its login and the query, so
//!   every round trip is the proxy's. Reported: connect → first result p50 / p90 / max, the same
//!   in round trips of the link, and the round trips the proxy counted for its upstream login
//!   (the `round_trips` field of its "logged in" line).
//! * **sequential, mysql_async**: the same with a real driver (its own set-up queries included).
//! * **10 parallel**: ten raw connections at once (a pool filling up): p50 and max.
//!
//! Prints a table and writes `target/bench-connect.json`. `RDS_IAM_PROXY_BENCH_QUICK=1` makes
//! fewer connections.

mod support;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mysql_async::prelude::Queryable;
use rds_iam_proxy::mysql::proto::capabilities::Capabilities;
use rds_iam_proxy::mysql::proto::handshake::HandshakeResponse41;
use rds_iam_proxy::mysql::proto::packet;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// Added round trip of the simulated link.
const RTT: Duration = Duration::from_millis(20);

/// Time between sequential connections.
const GAP: Duration = Duration::from_millis(300);

/// One scenario's connect → first result times, in ms.
struct Timings {
    name: &'static str,
    ms: Vec<f64>,
}

impl Timings {
    fn row(&self) -> Vec<String> {
        let rtt = RTT.as_secs_f64() * 1000.0;
        let p50 = percentile(&self.ms, 50.0);
        vec![
            self.name.to_owned(),
            self.ms.len().to_string(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                p50,
                percentile(&self.ms, 90.0),
                self.ms.iter().copied().fold(0.0, f64::max)
            ),
            format!("{:.1}", p50 / rtt),
        ]
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "connections": self.ms.len(),
            "p50_ms": percentile(&self.ms, 50.0),
            "p90_ms": percentile(&self.ms, 90.0),
            "max_ms": self.ms.iter().copied().fold(0.0, f64::max),
            "p50_rtts": percentile(&self.ms, 50.0) / (RTT.as_secs_f64() * 1000.0),
        })
    }
}

fn main() {
    let quick = std::env::var("RDS_IAM_PROXY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let n = if quick { 5 } else { 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let Some((scenarios, trips)) = runtime.block_on(async {
        tokio::select! {
            r = run(n) => Some(r),
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted: cleaning up"); None }
        }
    }) else {
        return;
    };
    let mut rows = vec![vec![
        "scenario".to_owned(),
        "connections".to_owned(),
        "connect → first result p50 / p90 / max ms".to_owned(),
        format!("p50 in RTTs ({} ms)", RTT.as_millis()),
    ]];
    rows.extend(scenarios.iter().map(Timings::row));
    println!("{}", markdown_table(&rows, |c| c > 0));
    println!(
        "upstream round trips per login, as the proxy counted them: {}",
        trips
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let doc = json!({
        "rtt_ms": RTT.as_millis() as u64,
        "profile": profile(),
        "upstream_round_trips_per_login": trips,
        "scenarios": scenarios
            .iter()
            .map(|s| (s.name.to_owned(), s.json()))
            .collect::<serde_json::Map<_, _>>(),
    });
    println!("{}", write_json("bench-connect.json", &doc).display());
}

async fn run(n: usize) -> (Vec<Timings>, Vec<u32>) {
    let db = BenchDb::start();
    let up = &db.up;
    let sim = realistic_sim(up, RTT).await;
    let log = db.scratch.path.join("connect-proxy.log");
    let proxy = ProxyProcess::start_with(up, &log, |cmd| {
        cmd.env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url()).args([
            "-v",
            "--ssm-target",
            "i-0123456789abcdef0",
        ]);
    });
    let port = proxy.port;
    // Warm-up: the SSM session and the credentials.
    raw_connect_select_1(port).await;

    let mut raw = Timings {
        name: "sequential, raw client",
        ms: Vec::new(),
    };
    for _ in 0..n {
        tokio::time::sleep(GAP).await;
        raw.ms.push(raw_connect_select_1(port).await);
    }
    let mut driver = Timings {
        name: "sequential, mysql_async",
        ms: Vec::new(),
    };
    for _ in 0..n.div_ceil(2) {
        tokio::time::sleep(GAP).await;
        let t = Instant::now();
        let mut conn = mysql_async::Conn::new(bench_opts(port, 1 << 20))
            .await
            .expect("mysql_async connect");
        let one: Option<u8> = conn.query_first("SELECT 1").await.expect("SELECT 1");
        assert_eq!(one, Some(1));
        driver.ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let _ = conn.disconnect().await;
    }
    tokio::time::sleep(GAP).await;
    let parallel = Timings {
        name: "10 parallel, raw client",
        ms: futures_util::future::join_all((0..10).map(|_| raw_connect_select_1(port))).await,
    };
    drop(proxy);
    sim.shutdown().await;
    // The same without the tunnel: what the server and the two processes' CPU take.
    let direct_log = db.scratch.path.join("connect-direct.log");
    let direct_proxy = ProxyProcess::start(up, &direct_log);
    raw_connect_select_1(direct_proxy.port).await;
    let mut direct = Timings {
        name: "sequential, raw client, Direct (no tunnel)",
        ms: Vec::new(),
    };
    for _ in 0..n {
        tokio::time::sleep(GAP / 3).await;
        direct
            .ms
            .push(raw_connect_select_1(direct_proxy.port).await);
    }
    drop(direct_proxy);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut handshakes = std::collections::BTreeMap::<String, usize>::new();
    for l in log_text
        .lines()
        .filter(|l| l.contains("TLS to the database"))
    {
        let kind = l
            .split("handshake=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?");
        *handshakes.entry(kind.to_owned()).or_default() += 1;
    }
    eprintln!("TLS handshakes over the tunnel: {handshakes:?}");
    let trips = log_text
        .lines()
        .filter(|l| l.contains("logged in"))
        .filter_map(|l| {
            let rest = &l[l.find("round_trips=")? + "round_trips=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    (vec![raw, driver, parallel, direct], trips)
}

/// Connects to the proxy with a minimal client (login with no password, then `SELECT 1`, nothing
/// else), reads the whole result and returns the milliseconds from connect to the last packet.
async fn raw_connect_select_1(port: u16) -> f64 {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut buf = BytesMut::new();
    let greeting = read_packet(&mut s, &mut buf).await;
    assert_eq!(greeting.first(), Some(&10), "a HandshakeV10");
    let response = HandshakeResponse41 {
        capabilities: Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | Capabilities::LONG_PASSWORD
            | Capabilities::TRANSACTIONS,
        max_packet_size: 1 << 24,
        character_set: 45,
        username: Bytes::from_static(BENCH_USER.as_bytes()),
        auth_response: Bytes::new(),
        database: None,
        auth_plugin_name: Some(Bytes::from_static(b"mysql_native_password")),
        connect_attrs: None,
        zstd_level: None,
    };
    let mut payload = BytesMut::new();
    response.encode(&mut payload);
    write_packet(&mut s, 1, &payload).await;
    let ok = read_packet(&mut s, &mut buf).await;
    assert_eq!(ok.first(), Some(&0), "an OK to the login: {ok:?}");
    write_packet(&mut s, 0, b"\x03SELECT 1").await;
    // Column count, column definition, EOF, row, EOF.
    let mut eofs = 0;
    while eofs < 2 {
        let p = read_packet(&mut s, &mut buf).await;
        assert_ne!(p.first(), Some(&0xFF), "an ERR to SELECT 1: {p:?}");
        if p.first() == Some(&0xFE) && p.len() < 9 {
            eofs += 1;
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    write_packet(&mut s, 0, b"\x01").await;
    ms
}

async fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let mut out = BytesMut::new();
    packet::encode(seq, payload, &mut out);
    s.write_all(&out).await.expect("write");
}

async fn read_packet(s: &mut TcpStream, buf: &mut BytesMut) -> Bytes {
    loop {
        if let Some(p) = packet::decode(buf, 1 << 24).expect("a MySQL packet") {
            return p.payload;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read_buf(buf))
            .await
            .expect("the proxy answered within 30 s")
            .expect("read");
        assert!(n > 0, "the proxy closed the connection");
    }
}

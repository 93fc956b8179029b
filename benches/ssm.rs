//! SSM transport benchmarks against the simulator (`cargo bench --bench ssm`).
//!
//! Prints a table and writes `target/bench-ssm.json`. Scenarios:
//! * lab mode (no pacing, no added RTT), one session, one connection: downstream and upstream;
//! * realistic mode (agent pump 1 KiB + 1 ms pause, 20 ms RTT): one session vs a pool of 4
//!   sessions with 4 connections, and upstream on one session;
//! * warm latency: connect → first echoed byte on a ready session (20 ms RTT);
//! * cold start: new connector → first echoed byte (20 ms RTT).
//!
//! `SSM_BENCH_QUICK=1` shrinks the transfers for a smoke run.

#[path = "../tests/common/ssm.rs"]
mod ssm_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rds_iam_proxy::tunnel::Connector;
use rds_iam_proxy::tunnel::ssm::Ssm;
use serde_json::json;
use ssm_sim::SimConfig;
use ssm_sim::ssm::agent::{REALISTIC_CHUNK, REALISTIC_PAUSE};
use ssm_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server speaking a tiny protocol: `D<u64>` → it sends that many bytes; `U<u64>` → it reads that
/// many bytes and answers one byte; `E` → echo until EOF.
async fn bench_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut op = [0u8; 1];
                if s.read_exact(&mut op).await.is_err() {
                    return;
                }
                match op[0] {
                    b'D' | b'U' => {
                        let Ok(n) = s.read_u64().await else { return };
                        if op[0] == b'D' {
                            let block = vec![0x5au8; 64 * 1024];
                            let mut left = n as usize;
                            while left > 0 {
                                let k = left.min(block.len());
                                if s.write_all(&block[..k]).await.is_err() {
                                    return;
                                }
                                left -= k;
                            }
                        } else {
                            let mut buf = vec![0u8; 64 * 1024];
                            let mut left = n as usize;
                            while left > 0 {
                                match s.read(&mut buf[..left.min(64 * 1024)]).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(k) => left -= k,
                                }
                            }
                            let _ = s.write_all(b"k").await;
                        }
                    }
                    _ => {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                }
            });
        }
    });
    addr
}

async fn download(ssm: &Ssm, bytes: u64) -> f64 {
    let mut s = ssm.connect().await.unwrap();
    let started = Instant::now();
    s.write_all(b"D").await.unwrap();
    s.write_all(&bytes.to_be_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got += n as u64;
    }
    started.elapsed().as_secs_f64()
}

async fn upload(ssm: &Ssm, bytes: u64) -> f64 {
    let mut s = ssm.connect().await.unwrap();
    let started = Instant::now();
    s.write_all(b"U").await.unwrap();
    s.write_all(&bytes.to_be_bytes()).await.unwrap();
    let block = vec![0xa5u8; 256 * 1024];
    let mut left = bytes as usize;
    while left > 0 {
        let k = left.min(block.len());
        s.write_all(&block[..k]).await.unwrap();
        left -= k;
    }
    let mut ok = [0u8; 1];
    s.read_exact(&mut ok).await.unwrap();
    started.elapsed().as_secs_f64()
}

async fn first_byte(ssm: &Ssm) -> f64 {
    let started = Instant::now();
    let mut s = ssm.connect().await.unwrap();
    s.write_all(b"Ex").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    started.elapsed().as_secs_f64()
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The realistic pump's ceiling: 1 KiB per pause of the simulated agent (spec §9: ≈ 0.86 MiB/s).
fn pacing_ceiling() -> f64 {
    REALISTIC_CHUNK as f64 / REALISTIC_PAUSE.as_secs_f64() / (1 << 20) as f64
}

async fn setup(sim: SimConfig, sessions: usize, max_payload: usize) -> (ssm_sim::SimServer, Ssm) {
    let mut cfg = ssm_config(sessions);
    cfg.max_payload = max_payload;
    let (server, ssm) = start(sim, cfg).await;
    assert!(
        ssm.pool()
            .wait_live(sessions, Duration::from_secs(20))
            .await
    );
    (server, ssm)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let quick = std::env::var_os("SSM_BENCH_QUICK").is_some();
    let dest = bench_server().await;
    let mut rows: Vec<(String, String, f64, String)> = Vec::new();
    let rtt = Duration::from_millis(20);

    // Lab mode.
    let lab_bytes: u64 = if quick { 64 << 20 } else { 512 << 20 };
    let (sim, ssm) = setup(sim_config(dest), 1, 32 * 1024).await;
    let t = download(&ssm, lab_bytes).await;
    rows.push((
        "lab_downstream_1_session".into(),
        "MiB/s".into(),
        mib_s(lab_bytes, t),
        format!("{} MiB", lab_bytes >> 20),
    ));
    let t = upload(&ssm, lab_bytes).await;
    rows.push((
        "lab_upstream_1_session_32k_payload".into(),
        "MiB/s".into(),
        mib_s(lab_bytes, t),
        format!("{} MiB", lab_bytes >> 20),
    ));
    ssm.shutdown().await;
    sim.shutdown().await;
    let (sim, ssm) = setup(sim_config(dest), 1, 1024).await;
    let up_bytes: u64 = if quick { 16 << 20 } else { 128 << 20 };
    let t = upload(&ssm, up_bytes).await;
    rows.push((
        "lab_upstream_1_session_1k_payload".into(),
        "MiB/s".into(),
        mib_s(up_bytes, t),
        format!("{} MiB", up_bytes >> 20),
    ));
    ssm.shutdown().await;
    sim.shutdown().await;

    // Realistic mode.
    let ceiling = pacing_ceiling();
    rows.push((
        "realistic_pacing_ceiling".into(),
        "MiB/s".into(),
        ceiling,
        "1 KiB per 1.13 ms (Go's 1 ms sleep)".into(),
    ));
    let realistic = SimConfig {
        realistic: true,
        rtt,
        ..sim_config(dest)
    };
    let real_bytes: u64 = if quick { 2 << 20 } else { 8 << 20 };
    let (sim, ssm) = setup(realistic.clone(), 1, 1024).await;
    let t = download(&ssm, real_bytes).await;
    let one = mib_s(real_bytes, t);
    rows.push((
        "realistic_downstream_1_session".into(),
        "MiB/s".into(),
        one,
        format!("{:.2} × ceiling", one / ceiling),
    ));
    let up_real: u64 = if quick { 8 << 20 } else { 64 << 20 };
    let t = upload(&ssm, up_real).await;
    rows.push((
        "realistic_upstream_1_session_1k_payload".into(),
        "MiB/s".into(),
        mib_s(up_real, t),
        format!("{} MiB", up_real >> 20),
    ));
    // Warm latency.
    let mut lat = Vec::new();
    for _ in 0..(if quick { 5 } else { 30 }) {
        lat.push(first_byte(&ssm).await);
    }
    let warm = median(lat);
    rows.push((
        "warm_connect_to_first_byte".into(),
        "ms".into(),
        warm * 1000.0,
        format!(
            "median, RTT {} ms = {:.2} RTT",
            rtt.as_millis(),
            warm / rtt.as_secs_f64()
        ),
    ));
    ssm.shutdown().await;
    sim.shutdown().await;

    let (sim, ssm) = setup(realistic.clone(), 4, 1024).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let ssm = ssm.clone();
        tasks.push(tokio::spawn(
            async move { download(&ssm, real_bytes).await },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pool = mib_s(4 * real_bytes, started.elapsed().as_secs_f64());
    rows.push((
        "realistic_downstream_pool_4x4".into(),
        "MiB/s".into(),
        pool,
        format!("{:.2} × one session", pool / one),
    ));
    ssm.shutdown().await;
    sim.shutdown().await;

    // Cold start.
    let sim = ssm_sim::SimServer::start(realistic.clone()).await.unwrap();
    let started = Instant::now();
    let ssm = Ssm::new(ssm_config(1), &sdk_config(&sim.endpoint_url())).unwrap();
    first_byte(&ssm).await;
    rows.push((
        "cold_start_to_first_byte".into(),
        "ms".into(),
        started.elapsed().as_secs_f64() * 1000.0,
        format!("RTT {} ms", rtt.as_millis()),
    ));
    ssm.shutdown().await;
    sim.shutdown().await;

    println!("{:<42} {:>10} {:<6} note", "scenario", "value", "unit");
    for (name, unit, value, note) in &rows {
        println!("{name:<42} {value:>10.2} {unit:<6} {note}");
    }
    let json = json!({
        "quick": quick,
        "results": rows.iter().map(|(n, u, v, note)| json!({"scenario": n, "value": v, "unit": u, "note": note})).collect::<Vec<_>>(),
    });
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let path = std::path::Path::new(&dir).join("bench-ssm.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("wrote {}", path.display());
}

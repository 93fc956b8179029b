//! `cargo bench --bench postgres`: the PostgreSQL engine's four measures, the same session DIRECT
//! (tokio-postgres over verified TLS with a token as the cleartext password, straight to the
//! RDS-shaped PostgreSQL) and THROUGH the proxy (the real binary as a separate process, started
//! with `--engine postgres`; the client connects plainly with no password), in one run.
//!
//! | part | what | target |
//! |---|---|---|
//! | 1 | bulk read: `COPY … TO STDOUT` of 64 MiB (64 rows x 1 MiB), best and median MiB/s | proxy ≥ 0.90 × direct (best of N) |
//! | 2 | `SELECT 1` round trips (simple query) on one warm connection, p50/p99 | added p50 ≤ 50 µs |
//! | 3 | connect + login + first `SELECT 1`, fresh connection each time, p50 | proxy ≤ 1.5 × direct |
//! | 4 | idle logged-in clients held through a fresh proxy, twice, VmRSS/VmHWM | ≤ 64 MiB at 1,000 (extrapolated from the second wave: the fixture's server allows 100 connections) |
//!
//! Direct and proxied runs alternate so that load from other tenants hits both alike. Timings are
//! never asserted: the table says PASS/MISS per target and `target/bench-postgres.json` keeps
//! every figure.
//!
//! The fixture's IAM users have each token checked by a python+botocore process (~300 ms of CPU
//! per login), which would swamp part 3: the benchmark adds a role `benchuser` whose PAM service
//! accepts any password (`hostssl … pam` all the same), so both logins still do TLS and the
//! cleartext-password exchange with a real-size token and only the server-side check is cheap.
//!
//! `RDS_IAM_PROXY_BENCH_QUICK=1`: small counts (a smoke run). `RDS_IAM_PROXY_BENCH_BIN=PATH`:
//! another build of the proxy. Needs what `tests/upstream/postgres` needs: root, Debian's
//! PostgreSQL, python3-botocore. Everything it starts or writes is removed at the end.

#[path = "../tests/common/clients.rs"]
mod clients;
#[path = "../tests/common/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../tests/common/proxy.rs"]
mod proxy;
mod support;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use futures_util::StreamExt;
use postgres::RdsLikePostgres;
use rds_iam_proxy::iam::{TokenRequest, presign};
use serde_json::json;
use support::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, NoTls, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

/// How many of each measure.
struct Counts {
    bulk_reps: usize,
    rtt: usize,
    connects: usize,
    idle: usize,
}

const FULL: Counts = Counts {
    bulk_reps: 7,
    rtt: 5000,
    connects: 60,
    idle: 90,
};
const QUICK: Counts = Counts {
    bulk_reps: 2,
    rtt: 500,
    connects: 10,
    idle: 20,
};

const BULK_MIN_RATIO: f64 = 0.90;
const RTT_MAX_ADDED_P50_US: f64 = 50.0;
const CONNECT_MAX_RATIO: f64 = 1.5;
const IDLE_MAX_RSS_MIB: f64 = 64.0;
const IDLE_TARGET_N: f64 = 1000.0;

/// 64 rows of 1 MiB, the value made once (a materialized CTE) so the transport is measured.
const BULK_SQL: &str = "COPY (WITH r AS MATERIALIZED (SELECT repeat('x', 1048575) AS v) SELECT v \
     FROM r, generate_series(1, 64)) TO STDOUT";
const BULK_BYTES: usize = 64 * 1024 * 1024;

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
}

async fn run(counts: Counts, quick: bool) {
    let load_start = loadavg();
    eprintln!("starting the RDS-shaped PostgreSQL ...");
    let up = RdsLikePostgres::start();
    let pam = PamService::create();
    let scratch = TempDir::create();
    let hba = up.dir.join("data/pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(
        &hba,
        format!(
            "hostssl all {BENCH_USER} 127.0.0.1/32 pam pamservice={}\n{rules}",
            pam.name
        ),
    )
    .expect("write pg_hba.conf");
    up.superuser_sql(&format!(
        "CREATE ROLE {BENCH_USER} LOGIN; GRANT rds_iam TO {BENCH_USER}; SELECT pg_reload_conf()"
    ));
    let server_pid = up.pid;

    let proxy = start_proxy(&up, &scratch.path.join("proxy.log"));
    let direct = Target::Direct(Arc::new(direct_config(&up)));
    let proxied = Target::Proxied(Box::new(proxied_config(proxy.port)));
    for t in [&direct, &proxied] {
        let c = t.connect().await;
        let row = c
            .query_one(
                "SELECT current_user::text, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), BENCH_USER);
        assert!(row.get::<_, bool>(1), "TLS upstream");
    }

    eprintln!("part 1: bulk read ...");
    let (mut bulk_d, mut bulk_p) = (Vec::new(), Vec::new());
    for _ in 0..counts.bulk_reps {
        bulk_d.push(bulk(&direct).await);
        bulk_p.push(bulk(&proxied).await);
    }
    eprintln!("part 2: SELECT 1 round trips ...");
    let (mut rtt_d, mut rtt_p) = (Vec::new(), Vec::new());
    {
        let (cd, cp) = (direct.connect().await, proxied.connect().await);
        for _ in 0..counts.rtt / 100 {
            for _ in 0..100 {
                rtt_d.push(select1(&cd).await);
            }
            for _ in 0..100 {
                rtt_p.push(select1(&cp).await);
            }
        }
    }
    eprintln!("part 3: connect + login + first query ...");
    let (mut con_d, mut con_p) = (Vec::new(), Vec::new());
    for _ in 0..counts.connects {
        con_d.push(connect_once(&direct).await);
        con_p.push(connect_once(&proxied).await);
    }
    let proxy_cpu = proc_cpu_secs(proxy.pid());
    let server_mem = proc_mem(server_pid);
    drop(proxy);

    eprintln!(
        "part 4: {} idle connections through a fresh proxy ...",
        counts.idle
    );
    let proxy = start_proxy(&up, &scratch.path.join("proxy-idle.log"));
    let target = Target::Proxied(Box::new(proxied_config(proxy.port)));
    // Two waves on the same proxy: the first lands on fresh heap pages and one-time set-up, the
    // second (after the first closed) shows the steady state, which the per-connection figure
    // is taken from.
    let mut waves = Vec::new();
    for _ in 0..2 {
        let before = proc_mem(proxy.pid());
        let mut held = Vec::new();
        for _ in 0..counts.idle {
            let c = target.connect().await;
            c.simple_query("SELECT 1").await.unwrap();
            held.push(c);
        }
        let holding = proc_mem(proxy.pid());
        drop(held);
        // Let the proxy see the closes before the next wave.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        waves.push((before, holding));
    }
    let (before, holding) = waves.pop().expect("two waves");
    let (first_before, first_holding) = waves.pop().expect("two waves");
    drop(proxy);
    let load_end = loadavg();

    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let median = |v: &[f64]| percentile(v, 50.0);
    let bulk_ratio = best(&bulk_p) / best(&bulk_d);
    let added_p50 = percentile(&rtt_p, 50.0) - percentile(&rtt_d, 50.0);
    let connect_ratio = percentile(&con_p, 50.0) / percentile(&con_d, 50.0);
    let per_conn_kib = (holding.rss_mib() - before.rss_mib()) * 1024.0 / counts.idle as f64;
    let at_target_mib = before.rss_mib() + per_conn_kib * IDLE_TARGET_N / 1024.0;
    let verdict = |pass: bool| if pass { "PASS" } else { "MISS" };
    let rows = vec![
        vec![
            "part".to_owned(),
            "direct".to_owned(),
            "proxy".to_owned(),
            "measure".to_owned(),
            "target".to_owned(),
            "verdict".to_owned(),
        ],
        vec![
            "1 bulk COPY 64 MiB, best (median) MiB/s".to_owned(),
            format!("{:.0} ({:.0})", best(&bulk_d), median(&bulk_d)),
            format!("{:.0} ({:.0})", best(&bulk_p), median(&bulk_p)),
            format!("{bulk_ratio:.2} x"),
            format!(">= {BULK_MIN_RATIO:.2} x"),
            verdict(bulk_ratio >= BULK_MIN_RATIO).to_owned(),
        ],
        vec![
            "2 SELECT 1 p50 (p99) us".to_owned(),
            format!(
                "{:.0} ({:.0})",
                percentile(&rtt_d, 50.0),
                percentile(&rtt_d, 99.0)
            ),
            format!(
                "{:.0} ({:.0})",
                percentile(&rtt_p, 50.0),
                percentile(&rtt_p, 99.0)
            ),
            format!("+{added_p50:.0} us"),
            format!("<= +{RTT_MAX_ADDED_P50_US:.0} us"),
            verdict(added_p50 <= RTT_MAX_ADDED_P50_US).to_owned(),
        ],
        vec![
            "3 connect+login+SELECT 1 p50 ms".to_owned(),
            format!("{:.1}", percentile(&con_d, 50.0)),
            format!("{:.1}", percentile(&con_p, 50.0)),
            format!("{connect_ratio:.2} x"),
            format!("<= {CONNECT_MAX_RATIO} x"),
            verdict(connect_ratio <= CONNECT_MAX_RATIO).to_owned(),
        ],
        vec![
            format!("4 {} idle clients, 2nd wave: VmRSS MiB", counts.idle),
            "-".to_owned(),
            format!(
                "{:.1} (before {:.1}, HWM {:.1})",
                holding.rss_mib(),
                before.rss_mib(),
                holding.hwm_mib()
            ),
            format!("{per_conn_kib:.1} KiB/conn, {at_target_mib:.1} MiB at 1,000"),
            format!("<= {IDLE_MAX_RSS_MIB:.0} MiB"),
            verdict(at_target_mib <= IDLE_MAX_RSS_MIB).to_owned(),
        ],
    ];
    println!(
        "PostgreSQL engine: direct vs through the proxy ({} cores, load {load_start} -> {load_end}, \
         {}{})\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        profile(),
        if quick { ", QUICK counts" } else { "" }
    );
    println!("{}", markdown_table(&rows, |i| (1..=3).contains(&i)));
    let doc = json!({
        "machine": {
            "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "postgres_version": up.server_version,
            "cargo_profile": profile(),
            "quick": quick,
            "proxy_binary": proxy_bin(),
        },
        "bulk_copy_out": {
            "bytes": BULK_BYTES, "reps": counts.bulk_reps,
            "direct_mib_s": bulk_d, "proxy_mib_s": bulk_p, "ratio_best": bulk_ratio,
            "target": format!("proxy >= {BULK_MIN_RATIO:.2} x direct (best of {})", counts.bulk_reps),
            "pass": bulk_ratio >= BULK_MIN_RATIO,
        },
        "select1_round_trips": {
            "n": rtt_d.len(),
            "direct_p50_us": percentile(&rtt_d, 50.0), "direct_p99_us": percentile(&rtt_d, 99.0),
            "proxy_p50_us": percentile(&rtt_p, 50.0), "proxy_p99_us": percentile(&rtt_p, 99.0),
            "added_p50_us": added_p50,
            "target": format!("added p50 <= {RTT_MAX_ADDED_P50_US} us"),
            "pass": added_p50 <= RTT_MAX_ADDED_P50_US,
        },
        "connect_login_first_query": {
            "n": con_d.len(),
            "direct_p50_ms": percentile(&con_d, 50.0), "proxy_p50_ms": percentile(&con_p, 50.0),
            "ratio_p50": connect_ratio,
            "target": format!("proxy <= {CONNECT_MAX_RATIO} x direct (p50)"),
            "pass": connect_ratio <= CONNECT_MAX_RATIO,
        },
        "idle_connections": {
            "n": counts.idle,
            "first_wave_vmrss_before_mib": first_before.rss_mib(),
            "first_wave_vmrss_holding_mib": first_holding.rss_mib(),
            "vmrss_before_mib": before.rss_mib(),
            "vmrss_holding_mib": holding.rss_mib(),
            "vmhwm_holding_mib": holding.hwm_mib(),
            "kib_per_connection": per_conn_kib,
            "extrapolated_vmrss_at_1000_mib": at_target_mib,
            "target": format!("VmRSS <= {IDLE_MAX_RSS_MIB} MiB at 1,000 (extrapolated from {})", counts.idle),
            "pass": at_target_mib <= IDLE_MAX_RSS_MIB,
        },
        "context": {
            "proxy_cpu_seconds_parts_1_to_3": proxy_cpu,
            "server_postmaster_vmrss_mib": server_mem.rss_mib(),
            "direct_client": "tokio-postgres 0.7, rustls (harness CA, endpoint name verified), token as the cleartext password",
            "proxied_client": "tokio-postgres 0.7, plain TCP to the proxy, no password",
        },
    });
    let path = write_json("bench-postgres.json", &doc);
    println!("JSON: {}", path.display());
    drop(scratch);
    drop(pam);
    drop(up);
}

/// The proxy binary for `up`, `--engine postgres`, dialing it directly.
fn start_proxy(up: &RdsLikePostgres, log: &std::path::Path) -> LoggedProxy {
    let mut cmd = isolated(&proxy_bin());
    cmd.env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .args(["--engine", "postgres", "--db-endpoint"])
        .arg(up.endpoint())
        .args([
            "--dial",
            &up.dial_addr(),
            "--listen",
            "127.0.0.1:0",
            "--ca-bundle",
        ])
        .arg(&up.ca)
        .args(["--region", &up.region, "--max-pending-logins", "4096"]);
    LoggedProxy::spawn(cmd, log)
}

/// Where a session goes.
enum Target {
    /// Straight to the database over verified TLS with a fresh token each time.
    Direct(Arc<Direct>),
    /// Through the proxy, no TLS, no password.
    Proxied(Box<Config>),
}

/// What a direct login needs.
struct Direct {
    config: Config,
    tls: Arc<rustls::ClientConfig>,
    token: TokenRequest,
    creds: aws_credential_types::Credentials,
}

fn direct_config(up: &RdsLikePostgres) -> Direct {
    let mut config = Config::new();
    config
        .host(&up.endpoint_host)
        .hostaddr("127.0.0.1".parse().unwrap())
        .port(up.port)
        .user(BENCH_USER)
        .dbname(&up.database)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = rds_iam_proxy::tls::upstream_client_config(&rds_iam_proxy::tls::CaSource::File(
        up.ca.clone(),
    ))
    .unwrap();
    Direct {
        config,
        tls,
        token: TokenRequest {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            user: BENCH_USER.to_owned(),
            region: up.region.clone(),
        },
        creds: up.credentials(),
    }
}

fn proxied_config(port: u16) -> Config {
    let mut c = Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(BENCH_USER)
        .dbname("proxytest")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    c
}

impl Target {
    /// A logged-in client (its connection task spawned).
    async fn connect(&self) -> Client {
        match self {
            Target::Direct(d) => {
                // A real-size token, minted as the proxy would (the server accepts any).
                let token = presign(&d.token, &d.creds, SystemTime::now()).unwrap();
                let mut config = d.config.clone();
                config.password(token.expose());
                let (client, conn) = config
                    .connect(RustlsConnect(d.tls.clone()))
                    .await
                    .expect("direct login");
                tokio::spawn(conn);
                client
            }
            Target::Proxied(config) => {
                let (client, conn) = config
                    .connect(NoTls)
                    .await
                    .expect("login through the proxy");
                tokio::spawn(conn);
                client
            }
        }
    }
}

/// One COPY of [`BULK_SQL`] on a fresh session: MiB/s.
async fn bulk(t: &Target) -> f64 {
    let c = t.connect().await;
    let started = Instant::now();
    let stream = c.copy_out(BULK_SQL).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut n = 0usize;
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(n, BULK_BYTES, "the whole result");
    mib(n) / secs
}

/// One `SELECT 1` (simple query): microseconds.
async fn select1(c: &Client) -> f64 {
    let started = Instant::now();
    let rows = c.simple_query("SELECT 1").await.unwrap();
    let us = started.elapsed().as_secs_f64() * 1e6;
    assert!(!rows.is_empty());
    us
}

/// Connect, log in and run the first `SELECT 1`: milliseconds.
async fn connect_once(t: &Target) -> f64 {
    let started = Instant::now();
    let c = t.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    drop(c);
    ms
}

// ---------------------------------------------------------------------------------------------
// rustls for tokio-postgres's direct sessions (verified against the endpoint name).

struct RustlsConnect(Arc<rustls::ClientConfig>);

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnectOne;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnectOne, Self::Error> {
        Ok(RustlsConnectOne(
            self.0.clone(),
            rustls::pki_types::ServerName::try_from(domain.to_owned())?,
        ))
    }
}

struct RustlsConnectOne(
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

impl TlsConnect<Socket> for RustlsConnectOne {
    type Stream = RustlsStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.0)
                .connect(self.1, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

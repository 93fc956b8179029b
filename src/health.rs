//! The health and metrics endpoint (`--health-addr`): `/startup`, `/readiness` and `/liveness` for
//! orchestrators and scripts, and `/metrics` in the Prometheus text format. A deliberately small
//! HTTP/1.1 responder: one bounded request per connection, then close.
//!
//! One endpoint serves every database of the process: readiness needs all of them ready (and,
//! over SSM, a live session), and every metric carries a `database` label.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::ssm::Pool;

/// One database as the health endpoint sees it.
#[derive(Clone)]
pub struct Watched {
    /// The database's name (`default` without a config file).
    pub name: String,
    /// Its engine.
    pub proxy: Proxy,
    /// Its SSM pool, when it goes through Session Manager.
    pub ssm: Option<Pool>,
}

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// Time allowed to receive a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, dbs: Vec<Watched>, stop: CancellationToken) {
    let dbs = std::sync::Arc::new(dbs);
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(%e, "health endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let dbs = dbs.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &dbs)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, dbs: &[Watched]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if path == "/quitquitquit" {
        let local = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
        let (status, body) = match method {
            "POST" if local => crate::shutdown::quit_request(),
            "POST" => (403, "POST /quitquitquit only from this host\n".to_owned()),
            _ => (405, "POST /quitquitquit stops the proxy\n".to_owned()),
        };
        return respond(&mut stream, status, "text/plain", &body).await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    let (status, body) = route(path.split('?').next().unwrap_or(""), dbs);
    let content_type = if path.starts_with("/metrics") {
        "text/plain; version=0.0.4"
    } else {
        "text/plain"
    };
    respond(&mut stream, status, content_type, &body).await
}

/// The status and body for `path`.
pub fn route(path: &str, dbs: &[Watched]) -> (u16, String) {
    match path {
        "/liveness" => (200, "ok\n".into()),
        "/startup" => {
            let waiting: Vec<&str> = dbs
                .iter()
                .filter(|d| !d.proxy.stats().started.load(Ordering::Relaxed))
                .map(|d| d.name.as_str())
                .collect();
            if waiting.is_empty() {
                (200, "ok\n".into())
            } else {
                (503, format!("starting: {}\n", waiting.join(", ")))
            }
        }
        "/readiness" => {
            let problems: Vec<String> = dbs.iter().filter_map(not_ready).collect();
            if problems.is_empty() {
                (200, "ok\n".into())
            } else {
                (503, problems.join("\n") + "\n")
            }
        }
        "/metrics" => (200, metrics(dbs)),
        _ => (
            404,
            "endpoints: /startup /readiness /liveness /metrics\n".into(),
        ),
    }
}

/// Why `db` is not ready, if it is not.
fn not_ready(db: &Watched) -> Option<String> {
    let stats = db.proxy.stats();
    let open = stats.open.load(Ordering::Relaxed);
    let max = db.proxy.config().max_connections as u64;
    let name = &db.name;
    if !stats.serving.load(Ordering::Relaxed) {
        Some(format!("{name}: not serving (starting or draining)"))
    } else if open >= max {
        Some(format!("{name}: at --max-connections ({open}/{max})"))
    } else if let Some(pool) = &db.ssm
        && pool.healthy_sessions() == 0
        && pool.idle_slots() == 0
    {
        // A slot waiting for a client after an idle end is ready: the next connect opens it.
        if pool.live_sessions() == 0 {
            let last = pool.last_error().unwrap_or_else(|| "opening".into());
            Some(format!("{name}: no live SSM session ({last})"))
        } else {
            Some(format!(
                "{name}: every SSM session is resuming its WebSocket or stalled ({} stalled)",
                pool.stalled_sessions()
            ))
        }
    } else {
        None
    }
}

/// Metric families in the order first seen, each with its samples, so every family's HELP and
/// TYPE appear once however many databases report it (the Prometheus text format requires it).
#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    by_name: std::collections::HashMap<&'static str, (&'static str, &'static str, Vec<String>)>,
}

impl Families {
    /// One sample: `labels` is the inside of the braces (the database label comes first).
    fn sample(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: String,
        value: impl std::fmt::Display,
        suffix: &str,
    ) {
        let entry = self.by_name.entry(name).or_insert_with(|| {
            self.order.push(name);
            (kind, help, Vec::new())
        });
        entry
            .2
            .push(format!("rds_iam_proxy_{name}{suffix}{{{labels}}} {value}"));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for name in &self.order {
            let (kind, help, lines) = &self.by_name[name];
            let _ = writeln!(out, "# HELP rds_iam_proxy_{name} {help}");
            let _ = writeln!(out, "# TYPE rds_iam_proxy_{name} {kind}");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

/// The Prometheus text exposition of every database's counters.
pub fn metrics(dbs: &[Watched]) -> String {
    let mut f = Families::default();
    for db in dbs {
        proxy_metrics(&mut f, &db.proxy, &db.name);
        if let Some(pool) = &db.ssm {
            ssm_metrics(&mut f, pool, &db.name);
        }
    }
    f.render()
}

/// The SSM pool's series.
fn ssm_metrics(f: &mut Families, pool: &Pool, name: &str) {
    let s = pool.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let db = format!("database=\"{name}\"");
    for (metric, kind, help, v) in [
        (
            "ssm_sessions_live",
            "gauge",
            "SSM sessions open now.",
            pool.live_sessions() as u64,
        ),
        (
            "ssm_sessions_started_total",
            "counter",
            "SSM sessions opened (StartSession through handshake).",
            load(&s.started),
        ),
        (
            "ssm_session_failures_total",
            "counter",
            "Attempts to open an SSM session that failed.",
            load(&s.open_failures),
        ),
        (
            "ssm_sessions_replaced_total",
            "counter",
            "SSM sessions that ended and were replaced.",
            load(&s.replaced),
        ),
        (
            "ssm_reconnects_total",
            "counter",
            "WebSocket reconnects that resumed an SSM session.",
            load(&s.resumes),
        ),
        (
            "ssm_sessions_stalled",
            "gauge",
            "SSM sessions making no progress now (a stall episode).",
            pool.stalled_sessions() as u64,
        ),
        (
            "ssm_sessions_stalled_total",
            "counter",
            "SSM sessions given up and replaced because they stopped making progress.",
            load(&s.stalls),
        ),
        (
            "ssm_retransmits_total",
            "counter",
            "SSM stream messages resent.",
            load(&s.retransmits),
        ),
    ] {
        f.sample(metric, kind, help, db.clone(), v, "");
    }
}

/// The engine's series for one database.
fn proxy_metrics(f: &mut Families, proxy: &Proxy, name: &str) {
    let s = proxy.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let db = format!("database=\"{name}\"");
    for (metric, kind, help, v) in [
        (
            "open_connections",
            "gauge",
            "Client connections open now.",
            load(&s.open),
        ),
        (
            "connections_total",
            "counter",
            "Client connections accepted.",
            load(&s.total),
        ),
        (
            "connections_refused_total",
            "counter",
            "Client connections refused at --max-connections.",
            load(&s.refused),
        ),
        (
            "logins_total",
            "counter",
            "Logins completed.",
            load(&s.logins),
        ),
        (
            "token_mints_total",
            "counter",
            "IAM authentication tokens minted.",
            proxy.token_mints(),
        ),
        (
            "stall_spooled_bytes_total",
            "counter",
            "Bytes held encrypted on disk for clients that stopped reading.",
            load(&proxy.spool().spooled_to_disk),
        ),
        (
            "stall_spool_bytes",
            "gauge",
            "Bytes held now for clients that stopped reading (memory and disk).",
            proxy.spool().memory_in_use() as u64 + proxy.spool().disk_in_use(),
        ),
        (
            "stall_connections_ended_total",
            "counter",
            "Connections ended because their client stopped reading past the spool's bounds.",
            load(&s.stalled_ends),
        ),
    ] {
        f.sample(metric, kind, help, db.clone(), v, "");
    }
    const FAILURES: &str = "Logins that failed, by reason.";
    let failures = s.failures_by_reason();
    if failures.is_empty() {
        // The family is always present, so dashboards find it before the first failure.
        f.sample(
            "login_failures_total",
            "counter",
            FAILURES,
            format!("{db},reason=\"none\""),
            0,
            "",
        );
    }
    for (reason, n) in failures {
        f.sample(
            "login_failures_total",
            "counter",
            FAILURES,
            format!("{db},reason=\"{reason}\""),
            n,
            "",
        );
    }
    for (direction, v) in [
        ("client_to_database", load(&s.bytes_up)),
        ("database_to_client", load(&s.bytes_down)),
    ] {
        f.sample(
            "bytes_total",
            "counter",
            "Bytes relayed after login, by direction.",
            format!("{db},direction=\"{direction}\""),
            v,
            "",
        );
    }
    const LOGIN: &str = "Time from accept to the client's login OK.";
    const H: &str = "login_duration_seconds";
    let (buckets, count, sum) = s.login_latency.snapshot();
    for (bound, n) in buckets {
        f.sample(
            H,
            "histogram",
            LOGIN,
            format!("{db},le=\"{bound}\""),
            n,
            "_bucket",
        );
    }
    f.sample(
        H,
        "histogram",
        LOGIN,
        format!("{db},le=\"+Inf\""),
        count,
        "_bucket",
    );
    f.sample(H, "histogram", LOGIN, db.clone(), sum, "_sum");
    f.sample(H, "histogram", LOGIN, db, count, "_count");
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Polls `http://addr/readiness` until it answers 200 or `timeout` passes (the `wait` subcommand).
pub async fn wait_ready(addr: &str, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe(addr).await {
            Ok(200) => return Ok(()),
            Ok(code) => format!("readiness answered {code}"),
            Err(e) => format!("cannot reach {addr}: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the proxy at {addr} was not ready within {}s ({last})",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probe(addr: &str) -> std::io::Result<u16> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    s.write_all(b"GET /readiness HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

//! The health and metrics endpoint (`--health-addr`): `/startup`, `/readiness` and `/liveness` for
//! orchestrators and scripts, and `/metrics` in the Prometheus text format. A deliberately small
//! HTTP/1.1 responder: one bounded request per connection, then close.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// Time allowed to receive a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, proxy: Proxy, stop: CancellationToken) {
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
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &proxy)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, proxy: &Proxy) -> std::io::Result<()> {
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
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    let (status, body) = route(path.split('?').next().unwrap_or(""), proxy);
    let content_type = if path.starts_with("/metrics") {
        "text/plain; version=0.0.4"
    } else {
        "text/plain"
    };
    respond(&mut stream, status, content_type, &body).await
}

/// The status and body for `path`.
pub fn route(path: &str, proxy: &Proxy) -> (u16, String) {
    let stats = proxy.stats();
    match path {
        "/liveness" => (200, "ok\n".into()),
        "/startup" => {
            if stats.started.load(Ordering::Relaxed) {
                (200, "ok\n".into())
            } else {
                (503, "starting\n".into())
            }
        }
        "/readiness" => {
            let open = stats.open.load(Ordering::Relaxed);
            let max = proxy.config().max_connections as u64;
            if !stats.serving.load(Ordering::Relaxed) {
                (503, "not serving (starting or draining)\n".into())
            } else if open >= max {
                (503, format!("at --max-connections ({open}/{max})\n"))
            } else {
                (200, "ok\n".into())
            }
        }
        "/metrics" => (200, metrics(proxy)),
        _ => (
            404,
            "endpoints: /startup /readiness /liveness /metrics\n".into(),
        ),
    }
}

/// The Prometheus text exposition of the proxy's counters.
pub fn metrics(proxy: &Proxy) -> String {
    let s = proxy.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP rds_iam_proxy_{name} {help}");
        let _ = writeln!(out, "# TYPE rds_iam_proxy_{name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "rds_iam_proxy_{name}{labels} {v}");
        }
    };
    metric(
        "open_connections",
        "gauge",
        "Client connections open now.",
        &[(String::new(), load(&s.open))],
    );
    metric(
        "connections_total",
        "counter",
        "Client connections accepted.",
        &[(String::new(), load(&s.total))],
    );
    metric(
        "connections_refused_total",
        "counter",
        "Client connections refused at --max-connections.",
        &[(String::new(), load(&s.refused))],
    );
    metric(
        "logins_total",
        "counter",
        "Logins completed.",
        &[(String::new(), load(&s.logins))],
    );
    let failures: Vec<(String, u64)> = s
        .failures_by_reason()
        .into_iter()
        .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n))
        .collect();
    metric(
        "login_failures_total",
        "counter",
        "Logins that failed, by reason.",
        &failures,
    );
    metric(
        "bytes_total",
        "counter",
        "Bytes relayed after login, by direction.",
        &[
            (
                "{direction=\"client_to_database\"}".into(),
                load(&s.bytes_up),
            ),
            (
                "{direction=\"database_to_client\"}".into(),
                load(&s.bytes_down),
            ),
        ],
    );
    metric(
        "token_mints_total",
        "counter",
        "IAM authentication tokens minted.",
        &[(String::new(), proxy.token_mints())],
    );
    let (buckets, count, sum) = s.login_latency.snapshot();
    let _ = writeln!(
        out,
        "# HELP rds_iam_proxy_login_duration_seconds Time from accept to the client's login OK."
    );
    let _ = writeln!(out, "# TYPE rds_iam_proxy_login_duration_seconds histogram");
    for (bound, n) in buckets {
        let _ = writeln!(
            out,
            "rds_iam_proxy_login_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "rds_iam_proxy_login_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "rds_iam_proxy_login_duration_seconds_sum {sum}");
    let _ = writeln!(out, "rds_iam_proxy_login_duration_seconds_count {count}");
    out
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
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

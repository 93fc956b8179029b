//! The health and metrics endpoint (`--health-addr`): `/startup`, `/readiness` and `/liveness` for
//! orchestrators and scripts, and `/metrics` in the Prometheus text format. A deliberately small
//! HTTP/1.1 responder: one bounded request per connection, then close.
//!
//! One endpoint serves every database of the process: readiness needs all of them ready (and,
//! over SSM, a live session), and every metric carries a `database` label.
//!
//! Hardened for a port anything on the host can reach: the request head is bounded
//! ([`MAX_REQUEST`]) and parsed by a sans-IO function ([`parse_request`], fuzzed), at most
//! [`MAX_CONCURRENT`] requests are served at once (more are closed unanswered), the address must be
//! loopback unless `--allow-remote` (checked by `config`), HEAD gets the head only, and bodies
//! never carry AWS error text (ARNs, account ids): readiness says what kind of failure it is, and
//! the detail stays in the proxy's log.

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
pub const MAX_REQUEST: usize = 8 * 1024;

/// Most requests served at once; connections past it are closed without an answer.
pub const MAX_CONCURRENT: usize = 32;

/// The one path that takes a POST: stop the proxy gracefully (Kubernetes Jobs, CI).
pub const QUIT_PATH: &str = "/quitquitquit";

/// A request method the endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`: head and body.
    Get,
    /// `HEAD`: the same head, no body.
    Head,
    /// `POST`: only `/quitquitquit` (stop the proxy), from this host.
    Post,
}

/// What the bytes received so far amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head is not complete yet; read more (the caller stops at [`MAX_REQUEST`]).
    Incomplete,
    /// A request to answer: its method and path (without the query string).
    Request {
        /// GET or HEAD.
        method: Method,
        /// The path, starting with `/`.
        path: &'a str,
    },
    /// A request refused with this status and a short plain-text reason.
    Reject(u16, &'static str),
}

/// Parses an HTTP/1.x request head from the bytes received so far (sans-IO: no reads, no
/// allocation). Bounded: a head not complete within [`MAX_REQUEST`] bytes is refused with 431.
pub fn parse_request(buf: &[u8]) -> Parsed<'_> {
    let window = &buf[..buf.len().min(MAX_REQUEST)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_REQUEST {
            Parsed::Reject(431, "request head too large\n")
        } else {
            Parsed::Incomplete
        };
    };
    let line_end = window[..end]
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(end);
    let Ok(line) = std::str::from_utf8(&window[..line_end]) else {
        return Parsed::Reject(400, "bad request line\n");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Reject(400, "bad request line\n");
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Parsed::Reject(400, "HTTP/1.0 or HTTP/1.1 only\n");
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => return Parsed::Reject(405, "only GET and HEAD\n"),
    };
    let path = target.split('?').next().unwrap_or_default();
    if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
        return Parsed::Reject(400, "bad request target\n");
    }
    if method == Method::Post && path != QUIT_PATH {
        return Parsed::Reject(405, "only GET and HEAD\n");
    }
    Parsed::Request { method, path }
}

/// Time allowed to receive a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, dbs: Vec<Watched>, stop: CancellationToken) {
    let dbs = std::sync::Arc::new(dbs);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Busy: closing costs nothing, answering would cost a task per connection.
            tracing::debug!("health endpoint: {MAX_CONCURRENT} requests in progress; closed one");
            continue;
        };
        let dbs = dbs.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &dbs)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, dbs: &[Watched]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match parse_request(&buf) {
            Parsed::Incomplete => {}
            Parsed::Reject(status, why) => {
                return respond(&mut stream, status, "text/plain", why, true).await;
            }
            Parsed::Request { method, path } if path == QUIT_PATH => {
                let local = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
                let (status, body) = match method {
                    Method::Post if local => crate::shutdown::quit_request(),
                    Method::Post => (403, "POST /quitquitquit only from this host\n".to_owned()),
                    _ => (405, "POST /quitquitquit stops the proxy\n".to_owned()),
                };
                return respond(&mut stream, status, "text/plain", &body, true).await;
            }
            Parsed::Request { method, path } => {
                let (status, body) = route(path, dbs);
                let content_type = if path == "/metrics" {
                    "text/plain; version=0.0.4"
                } else {
                    "text/plain"
                };
                let with_body = method == Method::Get;
                return respond(&mut stream, status, content_type, &body, with_body).await;
            }
        }
        let room = (MAX_REQUEST - buf.len().min(MAX_REQUEST)).clamp(1, chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
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
            let last = match pool.last_error() {
                Some(e) => format!("the last attempt failed: {}", failure_kind(&e)),
                None => "opening".into(),
            };
            Some(format!(
                "{name}: no live SSM session ({last}; the proxy's log has the details)"
            ))
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

/// What kind of failure an AWS error text describes, without any of its text: errors name ARNs,
/// account ids, instance and session ids, which an unauthenticated health endpoint must not show.
pub fn failure_kind(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| e.contains(w));
    if has(&[
        "accessdenied",
        "access denied",
        "not authorized",
        "unauthorized",
    ]) {
        "access denied by AWS (check the IAM policy for ssm:StartSession)"
    } else if has(&["targetnotconnected", "not connected"]) {
        "the SSM target is not connected (is its agent running?)"
    } else if has(&["throttl", "rate exceeded", "too many requests"]) {
        "throttled by AWS"
    } else if has(&["expired", "sso"]) {
        "AWS credentials expired (log in again, e.g. aws sso login)"
    } else if has(&["credential"]) {
        "no usable AWS credentials"
    } else if has(&["timed out", "timeout"]) {
        "timed out"
    } else if has(&["dns", "resolve", "connect", "network", "websocket", "tls"]) {
        "network error reaching AWS"
    } else {
        "error"
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
    // The engine as a label of its own series (an info metric), so that the other series keep
    // their labels and a query can join on `database`.
    f.sample(
        "database_info",
        "gauge",
        "Always 1; the engine (wire protocol) this database's proxy speaks.",
        format!("{db},engine=\"{}\"", proxy.config().engine),
        1,
        "",
    );
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
            "login_round_trips_total",
            "counter",
            "Round trips to the database the completed logins took, added up (divide by \
             logins_total for the mean).",
            load(&s.login_round_trips),
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
    let c = &s.compression;
    for (direction, form, v) in [
        (
            "client_to_database",
            "uncompressed",
            load(&c.up_uncompressed),
        ),
        ("client_to_database", "compressed", load(&c.up_compressed)),
        ("database_to_client", "compressed", load(&c.down_compressed)),
        (
            "database_to_client",
            "uncompressed",
            load(&c.down_uncompressed),
        ),
    ] {
        f.sample(
            "compression_bytes_total",
            "counter",
            "Bytes through the compressed database leg, by direction: the frames on the wire \
             (compressed) and the packet stream they carry (uncompressed).",
            format!("{db},direction=\"{direction}\",form=\"{form}\""),
            v,
            "",
        );
    }
    for (algorithm, v) in [
        ("zlib", load(&c.zlib_logins)),
        ("zstd", load(&c.zstd_logins)),
    ] {
        f.sample(
            "compressed_logins_total",
            "counter",
            "Logins whose database leg is compressed, by algorithm.",
            format!("{db},algorithm=\"{algorithm}\""),
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
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
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
    if with_body {
        stream.write_all(body.as_bytes()).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_and_head_and_strips_the_query() {
        assert_eq!(
            parse_request(b"GET /readiness?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Parsed::Request {
                method: Method::Get,
                path: "/readiness"
            }
        );
        assert_eq!(
            parse_request(b"HEAD /metrics HTTP/1.0\r\n\r\n"),
            Parsed::Request {
                method: Method::Head,
                path: "/metrics"
            }
        );
        assert_eq!(
            parse_request(b"GET /readiness HTTP/1.1\r\n"),
            Parsed::Incomplete
        );
    }

    #[test]
    fn refuses_what_it_does_not_serve() {
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\n\r\n"),
            Parsed::Reject(405, "only GET and HEAD\n")
        );
        assert_eq!(
            parse_request(b"POST /quitquitquit HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Request {
                method: Method::Post,
                path: QUIT_PATH
            }
        );
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET readiness HTTP/1.1\r\n\r\n",
            b"GET / SSH-2.0\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(bad), Parsed::Reject(400, _)),
                "{bad:?}"
            );
        }
    }

    /// The head is bounded: without its end within 8 KiB it is refused, whatever follows.
    #[test]
    fn an_endless_head_is_refused_at_the_bound() {
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_REQUEST - 1, b'a');
        assert_eq!(parse_request(&head), Parsed::Incomplete);
        head.push(b'a');
        assert!(matches!(parse_request(&head), Parsed::Reject(431, _)));
        head.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_request(&head), Parsed::Reject(431, _)));
    }

    #[test]
    fn failure_kinds_never_carry_the_aws_text() {
        let raw = "AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/dev/me is \
                   not authorized to perform: ssm:StartSession on resource: \
                   arn:aws:ecs:eu-west-1:123456789012:task/abc";
        let kind = failure_kind(raw);
        assert!(kind.starts_with("access denied"), "{kind}");
        assert!(!kind.contains("arn:") && !kind.contains("123456789012"));
        assert!(failure_kind("TargetNotConnected: ecs:cluster_task_ctr").contains("not connected"));
        assert_eq!(failure_kind("something odd"), "error");
    }
}

//! Operating the proxy as a process: `exec` runs a client through a private proxy and returns its
//! exit code, `dsn` prints connection strings, `--health-addr` serves health and Prometheus
//! metrics that follow real state, `wait` blocks until ready, and SIGTERM drains an in-flight
//! query before exit.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{BIN, ProxyProcess, cmd_for, free_port, http_get, mariadb};
use crate::common::upstream::RdsLikeUpstream;

/// A sample of the `default` database: `name` alone, or `name{label="v"}` for one more label.
fn metric(body: &str, name: &str) -> u64 {
    let labelled = match name.split_once('{') {
        Some((family, rest)) => format!("{family}{{database=\"default\",{rest} "),
        None => format!("{name}{{database=\"default\"}} "),
    };
    body.lines()
        .find(|l| l.starts_with(&labelled))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
}

#[test]
fn exec_runs_the_client_through_a_private_proxy_and_returns_its_exit_code() {
    let up = RdsLikeUpstream::start();
    let exec = |args: &[&str]| {
        let mut c = cmd_for(&up, true);
        c.env_remove("RDS_IAM_PROXY_LISTEN")
            .args(["exec", "--db-user", "iamuser", "--"])
            .args(args);
        c.output().unwrap()
    };
    let out = exec(&[
        "mariadb",
        "--skip-ssl",
        "--batch",
        "--skip-column-names",
        "-e",
        "SELECT CURRENT_USER(), VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME = 'Ssl_cipher'",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser@%\t1");

    // The client's failure is the exit code of exec.
    let out = exec(&[
        "mariadb",
        "--skip-ssl",
        "-e",
        "SELECT * FROM no_such_db.no_such_table",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such"));

    // Any other program gets the environment.
    let out = exec(&[
        "sh",
        "-c",
        "echo $MYSQL_HOST $MYSQL_USER $DATABASE_URL; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("127.0.0.1 iamuser mysql://iamuser@127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn dsn_prints_connection_strings() {
    let out = Command::new(BIN)
        .args([
            "dsn",
            "--listen",
            "127.0.0.1:3307",
            "--db-user",
            "app user",
            "--database",
            "shop",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("mysql://app%20user@127.0.0.1:3307/shop"),
        "{text}"
    );
    assert!(
        text.contains("jdbc:mysql://127.0.0.1:3307/shop?user=app%20user"),
        "{text}"
    );
    assert!(text.contains("MYSQL_TCP_PORT=3307"), "{text}");
}

#[test]
fn health_metrics_wait_and_a_draining_sigterm() {
    let up = RdsLikeUpstream::start();
    let health = format!("127.0.0.1:{}", free_port());
    let mut cmd = cmd_for(&up, true);
    cmd.args(["--health-addr", &health, "--max-sigterm-delay", "20s"]);
    let proxy = ProxyProcess::spawn(cmd);
    let port = proxy.port;

    let waited = Command::new(BIN)
        .args(["wait", "--health-addr", &health, "--timeout", "20s"])
        .output()
        .unwrap();
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert_eq!(http_get(&health, "/startup").0, 200);
    assert_eq!(http_get(&health, "/liveness").0, 200);
    assert_eq!(http_get(&health, "/readiness").0, 200);
    assert_eq!(http_get(&health, "/nope").0, 404);
    let (_, before) = http_get(&health, "/metrics");
    assert_eq!(metric(&before, "rds_iam_proxy_logins_total"), 0);

    let ok = mariadb(port, "iamuser")
        .args(["-e", "SELECT 1"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let bad = mariadb(port, "nobody_here")
        .args(["-e", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let (_, after) = http_get(&health, "/metrics");
    assert_eq!(metric(&after, "rds_iam_proxy_logins_total"), 1);
    assert_eq!(metric(&after, "rds_iam_proxy_connections_total"), 2);
    assert!(metric(&after, "rds_iam_proxy_token_mints_total") >= 1);
    assert!(
        after.contains("rds_iam_proxy_login_failures_total{database=\"default\",reason="),
        "{after}"
    );
    assert!(
        metric(
            &after,
            "rds_iam_proxy_bytes_total{direction=\"database_to_client\"}"
        ) > 0
    );
    assert_eq!(
        metric(&after, "rds_iam_proxy_login_duration_seconds_count"),
        1
    );

    // SIGTERM while a query runs: the proxy stops accepting, the query still completes, then the
    // process exits cleanly.
    let sleeper = mariadb(port, "iamuser")
        .args(["-e", "SELECT SLEEP(3), 'done'"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(
        &http_get(&health, "/metrics").1,
        "rds_iam_proxy_logins_total",
    ) < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sleeper never logged in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = proxy.terminate();
    let out = sleeper.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0\tdone");
    assert!(status.success(), "{status:?}");
    // New connections are refused once the proxy has gone.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// The health endpoint at its edges, in-process: HEAD gets the head without a body; a request
/// head that does not end within 8 KiB gets 431; past 32 requests in progress a connection is
/// closed unanswered, and the endpoint answers again once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoint_bounds_heads_caps_concurrency_and_answers_head_without_a_body() {
    use rds_iam_proxy::health::{self, MAX_CONCURRENT, MAX_REQUEST, Watched};
    use rds_iam_proxy::iam::TokenCache;
    use rds_iam_proxy::proxy::{Proxy, ProxyConfig};
    use rds_iam_proxy::tunnel::Direct;
    use std::io::{Read, Write};
    use std::sync::Arc;

    let creds = aws_credential_types::Credentials::new("AKID", "secret", None, None, "test");
    let tokens = Arc::new(TokenCache::new(
        aws_credential_types::provider::SharedCredentialsProvider::new(creds),
        None,
    ));
    let proxy = Proxy::new(
        ProxyConfig::new("db.test", 3306, "us-east-1"),
        Arc::new(Direct::new("127.0.0.1:9".to_owned())),
        tokens,
    )
    .expect("proxy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let dbs = vec![Watched {
        name: "default".into(),
        proxy,
        ssm: None,
    }];
    tokio::spawn(health::serve(listener, dbs, stop.clone()));

    let exchange = |request: Vec<u8>| {
        let addr = addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&request);
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let head = tokio::task::spawn_blocking(exchange(
        b"HEAD /liveness HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ))
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 3\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD got a body: {head:?}");

    let mut endless = b"GET /liveness HTTP/1.1\r\nX-Filler: ".to_vec();
    endless.resize(MAX_REQUEST + 1024, b'a');
    let big = tokio::task::spawn_blocking(exchange(endless))
        .await
        .unwrap();
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");

    // Hold every slot with connections that send nothing.
    let held: Vec<TcpStream> = (0..MAX_CONCURRENT)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tokio::task::spawn_blocking(exchange(b"GET /liveness HTTP/1.1\r\n\r\n".to_vec()))
        .await
        .unwrap();
    assert_eq!(refused, "", "answered past the concurrency cap");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = tokio::task::spawn_blocking(exchange(b"GET /liveness HTTP/1.1\r\n\r\n".to_vec()))
        .await
        .unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("ok\n"),
        "{ok}"
    );
    stop.cancel();
}

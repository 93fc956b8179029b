//! Operating the proxy as a process: `exec` runs a client through a private proxy and returns its
//! exit code, `dsn` prints connection strings, `--health-addr` serves health and Prometheus
//! metrics that follow real state, `wait` blocks until ready, and SIGTERM drains an in-flight
//! query before exit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::upstream::RdsLikeUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_rds-iam-proxy");

fn proxy_cmd(up: &RdsLikeUpstream) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("RDS_IAM_PROXY_") || k.starts_with("AWS_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("AWS_CONFIG_FILE", "/nonexistent/rds-iam-proxy-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/rds-iam-proxy-test/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("RDS_IAM_PROXY_DB_ENDPOINT", up.endpoint())
        .env("RDS_IAM_PROXY_DIAL", up.dial_addr())
        .env("RDS_IAM_PROXY_REGION", &up.region)
        .env("RDS_IAM_PROXY_CA_BUNDLE", &up.ca)
        .stdin(Stdio::null());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (code, body)
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_runs_the_client_through_a_private_proxy_and_returns_its_exit_code() {
    let up = RdsLikeUpstream::start();
    let out = proxy_cmd(&up)
        .args(["exec", "--db-user", "iamuser", "--", "mariadb", "--skip-ssl", "--batch"])
        .args(["--skip-column-names", "-e"])
        .arg("SELECT CURRENT_USER(), VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser@%\t1");

    // The client's failure is the exit code of exec.
    let out = proxy_cmd(&up)
        .args([
            "exec",
            "--db-user",
            "iamuser",
            "--",
            "mariadb",
            "--skip-ssl",
        ])
        .args(["-e", "SELECT * FROM no_such_db.no_such_table"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such"));

    // Any other program gets the environment.
    let out = proxy_cmd(&up)
        .args(["exec", "--db-user", "iamuser", "--", "sh", "-c"])
        .arg("echo $MYSQL_HOST $MYSQL_USER $DATABASE_URL; exit 7")
        .output()
        .unwrap();
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
    let mut child = proxy_cmd(&up)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--health-addr",
            &health,
            "--max-sigterm-delay",
            "20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(',')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let child = Proc(child);

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

    let mariadb = |sql: &str| {
        Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "--skip-ssl",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-P",
                &port.to_string(),
                "-u",
                "iamuser",
                "--batch",
                "--skip-column-names",
            ])
            .args(["-e", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ok = mariadb("SELECT 1").wait_with_output().unwrap();
    assert!(ok.status.success());
    let bad = Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "--skip-ssl",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-P",
            &port.to_string(),
            "-u",
            "eduser_does_not_exist",
            "-e",
            "SELECT 1",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let (_, after) = http_get(&health, "/metrics");
    assert_eq!(metric(&after, "rds_iam_proxy_logins_total"), 1);
    assert_eq!(metric(&after, "rds_iam_proxy_connections_total"), 2);
    assert!(metric(&after, "rds_iam_proxy_token_mints_total") >= 1);
    assert!(
        after.contains("rds_iam_proxy_login_failures_total{reason="),
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
    let sleeper = mariadb("SELECT SLEEP(3), 'done'");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = http_get(&health, "/metrics");
        if metric(&m, "rds_iam_proxy_logins_total") == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sleeper never logged in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = sleeper.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0\tdone");
    let mut child = child;
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // New connections are refused once draining began.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

//! Kubernetes and CI lifecycle, with the binary in front of the RDS-shaped MariaDB:
//! `POST /quitquitquit` on the health address and `rds-iam-proxy shutdown` stop the proxy
//! gracefully (a running query finishes, then exit 0), other methods are refused, `shutdown` to
//! nothing names the fix, and `--min-sigterm-delay` keeps accepting after SIGTERM until the wait
//! ends (here: a second SIGTERM).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{BIN, ProxyProcess, cmd_for, free_port, mariadb, try_http_get};
use crate::common::upstream::RdsLikeUpstream;

/// One HTTP request with `method` (no body); the status code and body.
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").into(),
    )
}

/// The proxy for `up` with a health address; returns it and that address.
fn proxy_with_health(up: &RdsLikeUpstream, extra: &[(&str, &str)]) -> (ProxyProcess, String) {
    let health = format!("127.0.0.1:{}", free_port());
    let mut cmd = cmd_for(up, true);
    cmd.env("RDS_IAM_PROXY_HEALTH_ADDR", &health)
        .env("RDS_IAM_PROXY_DB_USER", "iamuser");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    (ProxyProcess::spawn(cmd), health)
}

/// Waits for the process to exit by itself (bounded), and returns its status and stderr.
fn wait_exit(mut p: ProxyProcess) -> (std::process::ExitStatus, String) {
    for _ in 0..600 {
        if let Some(status) = p.child.try_wait().unwrap() {
            return (status, p.stderr_so_far());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the proxy did not exit:\n{}", p.stderr_so_far());
}

#[test]
fn quitquitquit_lets_a_running_query_finish_then_exits_zero() {
    let up = RdsLikeUpstream::start();
    let (proxy, health) = proxy_with_health(&up, &[("RDS_IAM_PROXY_MAX_SIGTERM_DELAY", "60s")]);
    let port = proxy.port;

    // Only POST stops it.
    assert_eq!(http(&health, "GET", "/quitquitquit").0, 405);
    assert_eq!(try_http_get(&health, "/liveness").unwrap().0, 200);

    // A client in the middle of a query when the request comes.
    let client = std::thread::spawn(move || {
        mariadb(port, "iamuser")
            .args(["-e", "SELECT SLEEP(3), CURRENT_USER()"])
            .output()
            .unwrap()
    });
    assert!(
        proxy.wait_for_stderr("logged in", Duration::from_secs(60)),
        "{}",
        proxy.stderr_so_far()
    );
    let (code, body) = http(&health, "POST", "/quitquitquit");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("stopping"), "{body}");

    let out = client.join().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("iamuser@"),
        "the running query did not finish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, stderr) = wait_exit(proxy);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("POST /quitquitquit received"), "{stderr}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn shutdown_subcommand_stops_a_running_proxy() {
    let up = RdsLikeUpstream::start();
    let (proxy, health) = proxy_with_health(&up, &[]);
    let out = Command::new(BIN)
        .args(["shutdown", "--health-addr", &health])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{health} is stopping")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (status, stderr) = wait_exit(proxy);
    assert!(status.success(), "{status:?}\n{stderr}");

    // Nothing there any more: the error says what to check.
    let out = Command::new(BIN)
        .args(["shutdown", "--health-addr", &health])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "is rds-iam-proxy running with --health-addr {health}"
        )),
        "{err}"
    );
}

#[test]
fn min_sigterm_delay_keeps_accepting_until_a_second_sigterm() {
    let up = RdsLikeUpstream::start();
    let (proxy, health) = proxy_with_health(&up, &[("RDS_IAM_PROXY_MIN_SIGTERM_DELAY", "10m")]);
    let port = proxy.port;
    let pid = proxy.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        proxy.wait_for_stderr(
            "still accepting new connections for 10m (--min-sigterm-delay)",
            Duration::from_secs(30)
        ),
        "{}",
        proxy.stderr_so_far()
    );
    // After SIGTERM: new logins still work, and the pod still reads ready.
    let out = mariadb(port, "iamuser")
        .args(["-e", "SELECT CURRENT_USER()"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("iamuser@"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(try_http_get(&health, "/readiness").unwrap().0, 200);

    // The second SIGTERM ends the wait.
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("second SIGTERM received"), "{stderr}");
}

#[test]
fn a_closed_stderr_never_keeps_the_proxy_from_stopping() {
    // Like a proxy whose log pipe's reader ended on Ctrl-C: the SIGTERM line cannot be written.
    let mut cmd = crate::common::process::isolated_cmd();
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDCLOSEDSTDERR")
        .env("AWS_SECRET_ACCESS_KEY", "closed/stderr/secret")
        .env(
            "RDS_IAM_PROXY_DB_ENDPOINT",
            "mydb.cluster-abc123.eu-west-1.rds.amazonaws.com:3306",
        )
        .env("RDS_IAM_PROXY_DIAL", "127.0.0.1:9")
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("rds-iam-proxy listening on"), "{line}");
    drop(child.stderr.take());
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the proxy did not stop on SIGTERM with its stderr closed");
}

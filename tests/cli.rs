//! The command-line contract, run as a real process: `token` reproduces botocore's tokens, flags
//! are validated with messages that name the flag, and the proxy started from the command line
//! serves the mariadb CLI against the RDS-shaped upstream, reports missing AWS credentials to the
//! client as a MySQL error, and stops on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::upstream::RdsLikeUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_rds-iam-proxy");

/// The binary with an environment that cannot reach real AWS credentials or metadata.
fn proxy_cmd() -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("RDS_IAM_PROXY_") {
            c.env_remove(k);
        }
    }
    c.env("AWS_CONFIG_FILE", "/nonexistent/rds-iam-proxy-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/rds-iam-proxy-test/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    c
}

#[test]
fn token_subcommand_reproduces_every_botocore_vector() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/iam-token-vectors.json"
    ))
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 3);
    for v in vectors {
        let mut c = proxy_cmd();
        c.env("AWS_ACCESS_KEY_ID", v["akid"].as_str().unwrap())
            .env("AWS_SECRET_ACCESS_KEY", v["secret"].as_str().unwrap());
        if let Some(t) = v["token"].as_str() {
            c.env("AWS_SESSION_TOKEN", t);
        }
        let endpoint = format!("{}:{}", v["host"].as_str().unwrap(), v["port"]);
        let out = c
            .args(["token", "--db-endpoint", &endpoint])
            .args(["--db-user", v["user"].as_str().unwrap()])
            .args(["--region", v["region"].as_str().unwrap()])
            .args(["--signing-time", v["time"].as_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(printed.trim_end(), v["expected_token"].as_str().unwrap());
        assert!(printed.ends_with('\n') && !printed.trim_end().contains('\n'));
        // The secret never shows up anywhere.
        let all = format!("{printed}{}", String::from_utf8_lossy(&out.stderr));
        assert!(!all.contains(v["secret"].as_str().unwrap()));
    }
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = proxy_cmd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--db-endpoint", "RDS_IAM_PROXY_DB_ENDPOINT"),
        ("--dial", "RDS_IAM_PROXY_DIAL"),
        ("--listen", "RDS_IAM_PROXY_LISTEN"),
        ("--region", "RDS_IAM_PROXY_REGION"),
        ("--db-user", "RDS_IAM_PROXY_DB_USER"),
        ("--ca-bundle", "RDS_IAM_PROXY_CA_BUNDLE"),
        ("--local-tls", "RDS_IAM_PROXY_LOCAL_TLS"),
        ("--profile", "RDS_IAM_PROXY_PROFILE"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(help.contains(env), "{env} missing from --help");
    }
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    for (args, needle) in [
        (vec!["--db-endpoint", "mysql://db:3306"], "--db-endpoint"),
        (
            vec![
                "--db-endpoint",
                "db.test:3306",
                "--region",
                "us-east-1",
                "--listen",
                "0.0.0.0:3306",
            ],
            "loopback",
        ),
        (vec!["--db-endpoint", "db.test:3306"], "--region"),
        (
            vec![
                "--db-endpoint",
                "db.test:3306",
                "--region",
                "us-east-1",
                "--ca-bundle",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
    ] {
        let out = proxy_cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// A proxy process that is killed if the test fails before stopping it.
struct ProxyProcess(Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_proxy(up: &RdsLikeUpstream, creds: bool) -> (ProxyProcess, u16) {
    let mut c = proxy_cmd();
    if creds {
        c.env("AWS_ACCESS_KEY_ID", &up.akid)
            .env("AWS_SECRET_ACCESS_KEY", &up.secret);
    }
    let ca = up.ca.display().to_string();
    let child = c
        .env("RDS_IAM_PROXY_DB_ENDPOINT", up.endpoint())
        .env("RDS_IAM_PROXY_REGION", &up.region)
        .args([
            "--dial",
            &up.dial_addr(),
            "--listen",
            "127.0.0.1:0",
            "--ca-bundle",
            &ca,
        ])
        .args(["-vv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = ProxyProcess(child);
    let mut line = String::new();
    BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "rds-iam-proxy listening on 127.0.0.1:PORT, forwarding to fake-rds.test:3306 via tcp ..."
    assert!(
        line.contains(&up.endpoint()) && line.contains(&up.dial_addr()),
        "{line}"
    );
    let addr = line
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(',');
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    (p, port)
}

fn mariadb(port: u16, user: &str, sql: &str) -> std::process::Output {
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
            user,
            "--batch",
            "--skip-column-names",
        ])
        .args(["-e", sql])
        .env_remove("MYSQL_PWD")
        .output()
        .unwrap()
}

fn stop(mut p: ProxyProcess) -> String {
    let pid = p.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let status = p.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(p.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    stderr
}

#[test]
fn the_binary_serves_the_mariadb_cli_and_stops_on_sigterm() {
    let up = RdsLikeUpstream::start();
    let (p, port) = start_proxy(&up, true);
    let out = mariadb(port, "iamuser", "SELECT CURRENT_USER()");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser@%");
    let logs = stop(p);
    // Trace-level logs name the connection's end and never carry the token or the secret.
    assert!(logs.contains("closed_by=client"), "{logs}");
    assert!(!logs.contains(&up.secret), "secret in logs");
    assert!(!logs.contains("X-Amz-Signature"), "token in logs");
}

#[test]
fn missing_aws_credentials_reach_the_client_as_a_mysql_error() {
    let up = RdsLikeUpstream::start();
    let (p, port) = start_proxy(&up, false);
    let out = mariadb(port, "iamuser", "SELECT 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1045"), "{stderr}");
    assert!(stderr.contains("credentials"), "{stderr}");
    assert!(
        stderr.contains("aws sso login") || stderr.contains("aws configure"),
        "{stderr}"
    );
    // The proxy is still up and still says the same thing to the next client.
    let again = mariadb(port, "iamuser", "SELECT 1");
    assert!(String::from_utf8_lossy(&again.stderr).contains("credentials"));
    stop(p);
}

//! The command-line contract, run as a real process: `token` reproduces botocore's tokens, flags
//! are validated with messages that name the flag, and the proxy started from the command line
//! serves the mariadb CLI against the RDS-shaped upstream, reports missing AWS credentials to the
//! client as a MySQL error, and stops on SIGTERM.

mod common;

use std::process::Command;

use common::process::{ProxyProcess, cmd_for, isolated_cmd, mariadb};
use common::upstream::RdsLikeUpstream;

fn proxy_cmd() -> Command {
    isolated_cmd()
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
        ("--unix-socket", "RDS_IAM_PROXY_UNIX_SOCKET"),
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
        (
            vec![
                "token",
                "--db-endpoint",
                "db.test:3306",
                "--db-user",
                "u",
                "--region",
                "us-east-1",
                "--signing-time",
                "yesterday",
            ],
            "--signing-time `yesterday` is not RFC 3339",
        ),
    ] {
        let out = proxy_cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

fn start_proxy(up: &RdsLikeUpstream, creds: bool) -> ProxyProcess {
    let mut cmd = cmd_for(up, creds);
    cmd.arg("-vv");
    let p = ProxyProcess::spawn(cmd);
    // "rds-iam-proxy listening on 127.0.0.1:PORT, forwarding to fake-rds.test:3306 via tcp ..."
    assert!(
        p.start_line.contains(&up.endpoint()) && p.start_line.contains(&up.dial_addr()),
        "{}",
        p.start_line
    );
    p
}

fn run_sql(port: u16, user: &str, sql: &str) -> std::process::Output {
    mariadb(port, user).args(["-e", sql]).output().unwrap()
}

#[test]
fn the_binary_serves_the_mariadb_cli_and_stops_on_sigterm() {
    let up = RdsLikeUpstream::start();
    let p = start_proxy(&up, true);
    let out = run_sql(p.port, "iamuser", "SELECT CURRENT_USER()");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser@%");
    let (status, logs) = p.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    // Trace-level logs name the connection's end and never carry the token or the secret.
    assert!(logs.contains("closed_by=client"), "{logs}");
    assert!(!logs.contains(&up.secret), "secret in logs");
    assert!(!logs.contains("X-Amz-Signature"), "token in logs");
}

#[test]
fn missing_aws_credentials_reach_the_client_as_a_mysql_error() {
    let up = RdsLikeUpstream::start();
    let p = start_proxy(&up, false);
    let out = run_sql(p.port, "iamuser", "SELECT 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1045"), "{stderr}");
    assert!(stderr.contains("credentials"), "{stderr}");
    assert!(
        stderr.contains("aws sso login") || stderr.contains("aws configure"),
        "{stderr}"
    );
    // The proxy is still up and still says the same thing to the next client.
    let again = run_sql(p.port, "iamuser", "SELECT 1");
    assert!(String::from_utf8_lossy(&again.stderr).contains("credentials"));
    let (status, _) = p.terminate();
    assert!(status.success());
}

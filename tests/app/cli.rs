//! The command-line contract, run as a real process: `token` reproduces botocore's tokens, flags
//! are validated with messages that name the flag, and the proxy started from the command line
//! serves the mariadb CLI against the RDS-shaped upstream, reports missing AWS credentials to the
//! client as a MySQL error, and stops on SIGTERM.

use std::process::Command;

use crate::common::process::{ProxyProcess, cmd_for, isolated_cmd, mariadb};
use crate::common::upstream::RdsLikeUpstream;

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
        ("--stack", "RDS_IAM_PROXY_STACK"),
        ("--db-cluster", "RDS_IAM_PROXY_DB_CLUSTER"),
        ("--ecs-cluster", "RDS_IAM_PROXY_ECS_CLUSTER"),
        ("--instance-tag", "RDS_IAM_PROXY_INSTANCE_TAG"),
        ("--config", "RDS_IAM_PROXY_CONFIG"),
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

#[test]
fn proxy_flags_before_a_subcommand_are_refused_not_ignored() {
    let out = proxy_cmd()
        .args(["--stack", "Other", "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--stack must come after the subcommand"),
        "{err}"
    );
}

/// `init` writes a commented example that the binary itself accepts, refuses to overwrite it,
/// and a config file with a misspelt key is refused with the file, line and key named.
#[test]
fn init_writes_a_config_the_binary_accepts_and_bad_keys_are_named() {
    let dir = std::env::temp_dir().join(format!("rds-iam-proxy-cli-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("nested").join("config.toml");
    let init = |force: bool| {
        let mut c = proxy_cmd();
        c.arg("init").arg("--config").arg(&path);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let out = init(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[databases.main]") && text.contains("# [databases.reporting]"));
    let again = init(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(init(true).status.success());
    // The example names a database the binary accepts: `dsn` reads it without AWS (a db-user is
    // given, so the stack need not be read).
    let out = proxy_cmd()
        .arg("--config")
        .arg(&path)
        .args(["dsn", "main", "--db-user", "u"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("mysql://u@127.0.0.1:3306/"));

    std::fs::write(
        &path,
        "[databases.main]\nstack = \"S\"\nlisen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = proxy_cmd().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:1: ", path.display())) && err.contains("unknown field `lisen`"),
        "{err}"
    );
    let out = proxy_cmd()
        .arg("--config")
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
    std::fs::remove_dir_all(&dir).unwrap();
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

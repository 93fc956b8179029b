//! Secrets never reach any output. The proxy binary runs at full trace (`-vv` and `RUST_LOG=trace`,
//! so aws-config, aws-smithy, hyper, rustls and tungstenite trace too) over SSM (the simulator,
//! reached through `AWS_ENDPOINT_URL_SSM`) to the RDS-shaped MariaDB, with `--local-password`, and
//! real clients run a whole session: logins, queries, COM_CHANGE_USER and failed logins. Neither
//! the proxy's stdout and stderr nor what the clients print may hold the AWS secret key, the
//! session token, the local password, an IAM token, a SigV4 signature or the SSM session's
//! TokenValue, in plain, URL-encoded or hex form.
//!
//! The RDS-shaped MariaDB only accepts tokens signed without a session token (pam_exec passes at
//! most 511 bytes of the password), so the full successful session uses static keys; a second
//! run sets `AWS_SESSION_TOKEN`, which signs every SSM call and WebSocket upgrade and ends up in
//! the IAM token the database then refuses, and the `token` subcommand prints a token made with it.

use std::process::{Command, Output};

use crate::common::process::{ProxyProcess, cmd_for, isolated_cmd};
use crate::common::upstream::RdsLikeUpstream;
use mysql_async::prelude::*;
use ssm_sim::{Route, SimConfig, SimServer};

const TARGET: &str = "i-0123456789abcdef0";
const LOCAL_PASSWORD: &str = "L0cal-pw-5ecret!";

/// A fresh session token shaped like STS's (base64, ~900 characters).
fn session_token() -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body: String = (0..880)
        .map(|_| B64[rand::random_range(0..B64.len())] as char)
        .collect();
    format!("IQoJb3JpZ2luX2Vj{body}==")
}

fn sim_config(up: &RdsLikeUpstream) -> SimConfig {
    SimConfig {
        routes: vec![Route {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            dial: up.dial_addr(),
        }],
        verify_secret: Some(up.secret.clone()),
        require_signature: true,
        ..SimConfig::default()
    }
}

/// The proxy binary over SSM at full trace, requiring the local password.
fn traced_proxy(up: &RdsLikeUpstream, sim: &SimServer) -> Command {
    let mut cmd = cmd_for(up, true);
    cmd.env_remove("RDS_IAM_PROXY_DIAL")
        .env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
        .env("RUST_LOG", "trace")
        .env("RDS_IAM_PROXY_LOCAL_PASSWORD", LOCAL_PASSWORD)
        .args(["-vv", "--ssm-target", TARGET, "--ssm-sessions", "1"]);
    cmd
}

/// The mariadb CLI on `port` as `user` with `password`.
fn mariadb(port: u16, user: &str, password: &str, sql: &str) -> Output {
    crate::common::process::mariadb(port, user)
        .arg(format!("--password={password}"))
        .args(["-e", sql])
        .output()
        .unwrap()
}

fn mysql_opts(port: u16, user: &str) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(LOCAL_PASSWORD))
        .prefer_socket(false)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(v: &str) -> String {
    v.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The ways a secret could show up: as is, URL-encoded (inside a presigned URL), hex (a dumped
/// frame or buffer); for long secrets also their head, middle and tail (a truncated log field).
fn forms(secret: &str) -> Vec<String> {
    let mut pieces = vec![secret.to_owned()];
    if secret.len() > 48 {
        let mid = secret.len() / 2;
        pieces.push(secret[..24].to_owned());
        pieces.push(secret[mid..mid + 24].to_owned());
        pieces.push(secret[secret.len() - 24..].to_owned());
    }
    let mut out = Vec::new();
    for p in pieces {
        out.push(url_encode(&p));
        out.push(hex(&p));
        out.push(p);
    }
    out.sort();
    out.dedup();
    out
}

/// Asserts that none of `secrets` (named) appears in `output` in any form, nor any IAM token or
/// SigV4 signature.
fn assert_no_secrets(what: &str, output: &str, secrets: &[(&str, &str)]) {
    for (name, secret) in secrets {
        assert!(!secret.is_empty(), "{name} is empty");
        for form in forms(secret) {
            if let Some(at) = output.find(&form) {
                let from = output[..at].rfind('\n').map_or(0, |i| i + 1);
                let to = output[at..].find('\n').map_or(output.len(), |i| at + i);
                panic!(
                    "{what} shows the {name} ({form:?}) in:\n{}",
                    &output[from..to.min(from + 2000)]
                );
            }
        }
    }
    for marker in ["X-Amz-Signature", "Signature=", "Action=connect&DBUser"] {
        if let Some(at) = output.find(marker) {
            let from = at.saturating_sub(300);
            panic!(
                "{what} shows {marker:?}: …{}…",
                &output[from..(at + 300).min(output.len())]
            );
        }
    }
}

/// A proxy process whose stdout and stderr are read as it runs (at trace level it writes far
/// more than a pipe holds).
struct Traced {
    proxy: ProxyProcess,
    output: Vec<std::thread::JoinHandle<String>>,
}

impl Traced {
    fn spawn(cmd: Command) -> Traced {
        use std::io::Read;
        let mut proxy = ProxyProcess::spawn(cmd);
        let drain = |r: Box<dyn Read + Send>| {
            let mut r = r;
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        // stderr is drained by ProxyProcess from the start; the rest of stdout here.
        let output = vec![drain(Box::new(proxy.child.stdout.take().expect("stdout")))];
        Traced { proxy, output }
    }

    /// Stops the proxy (SIGTERM, clean exit) and returns everything it printed.
    fn finish(self) -> String {
        let mut all = self.proxy.start_line.clone();
        let (status, stderr) = self.proxy.terminate();
        for o in self.output {
            all += &o.join().unwrap();
        }
        all += &stderr;
        assert!(status.success(), "{status:?}\n{all}");
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_at_trace_level_prints_no_secret() {
    let up = RdsLikeUpstream::start();
    let sim = SimServer::start(sim_config(&up)).await.unwrap();
    let proxy = Traced::spawn(traced_proxy(&up, &sim));
    let port = proxy.proxy.port;
    let mut client_output = String::new();

    // The mariadb CLI logs in with the local password and runs queries.
    let out = tokio::task::spawn_blocking(move || {
        mariadb(
            port,
            "iamuser",
            LOCAL_PASSWORD,
            "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version'; \
             SELECT COUNT(*) > 0 FROM information_schema.tables",
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines[0], "iamuser@%");
    assert!(lines[1].starts_with("Ssl_version\tTLSv1."), "{lines:?}");
    assert_eq!(lines[2], "1");
    client_output += &text(&out);

    // mysql_async: login, query, COM_CHANGE_USER to another IAM user, query.
    let mut conn = mysql_async::Conn::new(mysql_opts(port, "iamuser"))
        .await
        .unwrap();
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("iamuser@%"));
    conn.change_user(mysql_async::ChangeUserOpts::default().with_user(Some("iamuser2".into())))
        .await
        .unwrap();
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("iamuser2@%"));
    conn.disconnect().await.unwrap();

    // Failed logins: a wrong local password, and a user the database rejects the token for.
    let out = tokio::task::spawn_blocking(move || {
        mariadb(port, "iamuser", "not-the-password", "SELECT 1")
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("local password"), "{}", text(&out));
    client_output += &text(&out);
    // The wrong password locked this address out for a second.
    tokio::time::sleep(
        rds_iam_proxy::proxy::throttle::FIRST_DELAY + std::time::Duration::from_millis(200),
    )
    .await;
    match mysql_async::Conn::new(mysql_opts(port, "nosuchuser")).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1045, "{}", e.message);
            assert!(e.message.contains("rds-db:connect"), "{}", e.message);
            client_output += &e.message;
        }
        other => panic!("expected access denied, got {:?}", other.map(|_| ())),
    }

    let logs = proxy.finish();
    let ssm_tokens = sim.session_tokens();
    assert!(!ssm_tokens.is_empty(), "no SSM session was started");
    // The run really traced the dependencies that see secrets.
    for target in [
        "aws_smithy_runtime",
        "aws_runtime",
        "hyper_util",
        "rustls::",
        "tokio_tungstenite",
    ] {
        assert!(
            logs.lines()
                .any(|l| l.contains(" TRACE ") && l.contains(target)),
            "no TRACE line from {target}"
        );
    }
    let mut secrets = vec![
        ("AWS secret access key", up.secret.as_str()),
        ("local password", LOCAL_PASSWORD),
    ];
    for t in &ssm_tokens {
        secrets.push(("SSM session TokenValue", t.as_str()));
    }
    assert_no_secrets("the traced proxy", &logs, &secrets);
    assert_no_secrets("the clients", &client_output, &secrets);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_never_shows_in_traced_ssm_logs_or_the_token_subcommand() {
    let up = RdsLikeUpstream::start();
    let sim = SimServer::start(sim_config(&up)).await.unwrap();
    let session = session_token();
    let mut cmd = traced_proxy(&up, &sim);
    cmd.env("AWS_SESSION_TOKEN", &session)
        .args(["--log-format", "json"]);
    let proxy = Traced::spawn(cmd);
    let port = proxy.proxy.port;

    // The SSM calls and the WebSocket upgrade are signed with the session token (the simulator
    // checks the signature); the IAM token carries it too, and is more than the test database's
    // PAM checker can read, so the login is refused, as a MySQL error.
    let out =
        tokio::task::spawn_blocking(move || mariadb(port, "iamuser", LOCAL_PASSWORD, "SELECT 1"))
            .await
            .unwrap();
    assert!(!out.status.success());
    let client_output = text(&out);
    assert!(
        client_output.contains("1045") && client_output.contains("rejected the IAM token"),
        "{client_output}"
    );
    let stats = sim.stats();
    assert!(stats.signed_upgrades >= 1, "{stats:?}");

    let logs = proxy.finish();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"level\":\"TRACE\"") && l.contains("aws_smithy_runtime")),
        "JSON trace lines missing"
    );
    let mut secrets = vec![
        ("AWS secret access key", up.secret.as_str()),
        ("session token", session.as_str()),
        ("local password", LOCAL_PASSWORD),
    ];
    let ssm_tokens = sim.session_tokens();
    for t in &ssm_tokens {
        secrets.push(("SSM session TokenValue", t.as_str()));
    }
    assert_no_secrets("the traced proxy (JSON)", &logs, &secrets);
    assert_no_secrets("the client", &client_output, &secrets);
    sim.shutdown().await;

    // `token` prints the token on stdout, and nothing secret on stderr, even at trace.
    let out = isolated_cmd()
        .env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("AWS_SESSION_TOKEN", &session)
        .env("RUST_LOG", "trace")
        .args(["token", "-vv", "--db-endpoint", &up.endpoint()])
        .args(["--db-user", "iamuser", "--region", &up.region])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = stdout.trim_end_matches('\n');
    assert!(!token.contains('\n'), "one line only: {stdout}");
    assert!(
        token.contains(&format!("X-Amz-Security-Token={}", url_encode(&session))),
        "the token was not made with the session token"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains(" TRACE "), "not traced");
    secrets.push(("IAM token", token));
    assert_no_secrets("`token` stderr", &stderr, &secrets);
}

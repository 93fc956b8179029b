//! The RDS-shaped upstream itself, tested without the proxy: the `mariadb`
//! CLI and a bare rustls handshake talk straight to it.
//!
//! It must behave like RDS with IAM auth: TLS with a certificate that names
//! only the endpoint, `REQUIRE SSL`, a cleartext token checked by an
//! independent SigV4 recomputation, and error 1045 for every bad token, with
//! the checker's reason in its log.
//!
//! The direct CLI dials 127.0.0.1 while the certificate names only
//! `fake-rds.test`, so the CLI runs with `--ssl-ca` (it then verifies the
//! chain; `chain_is_verified_against_the_instance_ca` proves it) but without
//! `--ssl-verify-server-cert`. Name verification is proved separately with
//! rustls and the endpoint name as the TLS server name.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::upstream::{RdsLikeUpstream, TokenOptions, upstream_script};

/// How the direct CLI does TLS.
#[derive(Clone, Copy)]
enum Tls<'a> {
    /// `--ssl --ssl-ca=<ca>`: chain verified, name not checked.
    Ca(&'a Path),
    /// `--ssl --ssl-ca=<ca> --ssl-verify-server-cert`: name checked against
    /// `-h 127.0.0.1`.
    CaAndName(&'a Path),
    /// `--skip-ssl`.
    Off,
}

fn cli_command(up: &RdsLikeUpstream, user: &str, password: &str, tls: Tls) -> Command {
    let mut cmd = Command::new("mariadb");
    cmd.args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1"])
        .arg(format!("--port={}", up.port))
        .arg(format!("--user={user}"))
        .arg(format!("--password={password}"))
        .args([
            "--batch",
            "--skip-column-names",
            "--connect-timeout=30",
            "--max-allowed-packet=128M",
        ]);
    match tls {
        Tls::Ca(ca) => {
            cmd.arg("--ssl").arg(format!("--ssl-ca={}", ca.display()));
        }
        Tls::CaAndName(ca) => {
            cmd.arg("--ssl")
                .arg(format!("--ssl-ca={}", ca.display()))
                .arg("--ssl-verify-server-cert");
        }
        Tls::Off => {
            cmd.arg("--skip-ssl");
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn cli(up: &RdsLikeUpstream, user: &str, password: &str, tls: Tls, sql: &str) -> Output {
    cli_command(up, user, password, tls)
        .args(["-e", sql])
        .output()
        .expect("run the mariadb CLI")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run SQL as `user` over TLS; panic unless it succeeds.
fn sql_ok(up: &RdsLikeUpstream, user: &str, password: &str, sql: &str) -> String {
    let out = cli(up, user, password, Tls::Ca(&up.ca), sql);
    assert!(
        out.status.success(),
        "{user}: {sql:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

fn log_lines(up: &RdsLikeUpstream) -> Vec<String> {
    up.verify_log().lines().map(str::to_owned).collect()
}

/// Assert that a login with `password` as iamuser is refused with 1045
/// and that the checker logged exactly one rejection with `reason`.
fn assert_rejected(up: &RdsLikeUpstream, case: &str, password: &str, reason: &str) {
    let before = log_lines(up).len();
    let out = cli(
        up,
        "iamuser",
        password,
        Tls::Ca(&up.ca),
        "SELECT CURRENT_USER()",
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{case}: login succeeded");
    assert!(
        stdout(&out).is_empty(),
        "{case}: got rows: {}",
        stdout(&out)
    );
    assert!(
        err.contains("ERROR 1045 (28000): Access denied for user 'iamuser'@'127.0.0.1'"),
        "{case}: expected ERROR 1045, got: {err}"
    );
    let lines = log_lines(up);
    assert_eq!(
        lines.len(),
        before + 1,
        "{case}: expected one new checker line, log:\n{}",
        lines.join("\n")
    );
    let last = &lines[before];
    assert!(
        last.contains(&format!(" reject user=iamuser reason={reason} ")),
        "{case}: expected reason={reason}, got: {last}"
    );
    assert!(
        !last.contains("X-Amz-Signature") && !last.contains("Action="),
        "{case}: the log must not hold the token: {last}"
    );
}

#[test]
fn checker_reproduces_the_known_answer_and_botocore() {
    // verify-token --self-test: the pinned-time botocore signer reproduces
    // the aws-sdk-rds known answer byte for byte, and botocore's own
    // generate_db_auth_token verifies.
    let out = Command::new("/usr/bin/python3")
        .arg(upstream_script("verify-token"))
        .arg("--self-test")
        .output()
        .expect("run verify-token --self-test");
    assert!(out.status.success(), "self-test failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "self-test ok\n");

    // The token subcommand works without an instance and signs exactly
    // what the reference says for a fixed time.
    let out = Command::new(upstream_script("rds-like-mariadb"))
        .args([
            "token",
            "--host",
            "prod-instance.us-east-1.rds.amazonaws.com",
            "--port",
            "3306",
            "--user",
            "peccy",
            "--region",
            "us-east-1",
            "--akid",
            "akid",
            "--secret",
            "secret",
            "--time",
            "2024-08-26T22:00:00Z",
        ])
        .output()
        .expect("run rds-like-mariadb token");
    assert!(out.status.success(), "token failed: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy\
         &X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request\
         &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
         &X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89\n"
    );
}

#[test]
fn iam_users_log_in_with_a_botocore_token_over_tls() {
    let up = RdsLikeUpstream::start();
    assert_eq!(up.endpoint(), "fake-rds.test:3306");
    assert_eq!(up.dial_addr(), format!("127.0.0.1:{}", up.port));
    assert_eq!(up.iam_users, ["iamuser", "iamuser2"]);
    assert_eq!(up.region, "us-east-1");

    // Accounts are RDS-shaped: PAM (cleartext) IAM users and a native
    // password user, all REQUIRE SSL, no anonymous users.
    let accounts = up.root_sql(
        "SELECT User, Host, plugin, authentication_string, ssl_type FROM mysql.user \
         WHERE User NOT IN ('root', 'mariadb.sys') ORDER BY User",
    );
    assert_eq!(
        accounts,
        format!(
            "iamuser\t%\tpam\t{svc}\tANY\niamuser2\t%\tpam\t{svc}\tANY\n\
             pwuser\t%\tmysql_native_password\t{hash}\tANY\n",
            svc = up.pam_service,
            hash = up
                .root_sql(&format!("SELECT PASSWORD('{}')", up.pw_password))
                .trim(),
        )
    );
    assert_eq!(
        up.root_sql(
            "SELECT @@pam_use_cleartext_plugin, @@have_ssl, @@max_allowed_packet, \
             @@bind_address, @@port"
        ),
        format!("1\tYES\t134217728\t127.0.0.1\t{}\n", up.port)
    );

    let token = up.botocore_token("iamuser");
    assert!(
        token.starts_with("fake-rds.test:3306/?Action=connect&DBUser=iamuser&"),
        "{token}"
    );
    assert!(token.len() < 511, "token too long for pam_exec: {token}");
    let got = sql_ok(
        &up,
        "iamuser",
        &token,
        "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version'",
    );
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("iamuser@%"));
    let ssl = lines.next().expect("Ssl_version row");
    assert!(ssl.starts_with("Ssl_version\tTLSv1."), "{ssl}");
    assert!(
        log_lines(&up)
            .last()
            .expect("a checker line")
            .contains(" accept user=iamuser reason=ok "),
        "{}",
        up.verify_log()
    );

    // The token is reusable while fresh, as on RDS; iamuser2 has its own.
    let token2 = up.botocore_token("iamuser2");
    assert_eq!(
        sql_ok(&up, "iamuser2", &token2, "SELECT CURRENT_USER()"),
        "iamuser2@%\n"
    );

    // What the proxy tests need an IAM user to be able to do.
    let got = sql_ok(
        &up,
        "iamuser",
        &token,
        "CREATE TABLE proxytest.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO proxytest.t VALUES (1, 'one'), (2, 'two'); \
         PREPARE s FROM 'SELECT v FROM proxytest.t WHERE id = ?'; \
         SET @id = 2; EXECUTE s USING @id; DEALLOCATE PREPARE s; \
         SELECT SLEEP(0); \
         SHOW SESSION STATUS LIKE 'Com_stmt_prepare'; \
         SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'mysql'",
    );
    let rows: Vec<&str> = got.lines().collect();
    assert_eq!(rows[0], "two");
    assert_eq!(rows[1], "0");
    assert!(rows[2].starts_with("Com_stmt_prepare\t"), "{got}");
    assert!(rows[3].parse::<u32>().expect("a count") > 0, "{got}");
    assert_eq!(
        sql_ok(
            &up,
            "iamuser2",
            &token2,
            "SELECT v FROM proxytest.t ORDER BY id"
        ),
        "one\ntwo\n"
    );

    // 64 MiB in one row comes back (max_allowed_packet=128M).
    let big = sql_ok(
        &up,
        "iamuser",
        &token,
        "SELECT REPEAT('x', 64 * 1024 * 1024)",
    );
    assert_eq!(big.len(), 64 * 1024 * 1024 + 1);
    assert!(big.bytes().take(64 * 1024 * 1024).all(|b| b == b'x'));
}

#[test]
fn checker_rejects_every_bad_token_with_1045_and_a_reason() {
    let up = RdsLikeUpstream::start();
    let good = up.botocore_token("iamuser");
    assert_eq!(
        sql_ok(&up, "iamuser", &good, "SELECT CURRENT_USER()"),
        "iamuser@%\n"
    );

    let with = |opts: TokenOptions| up.botocore_token_with("iamuser", &opts);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "signed with another secret",
            with(TokenOptions {
                secret: Some("not-the-instance-secret".into()),
                ..Default::default()
            }),
            "wrong-signature",
        ),
        (
            "token for iamuser2 used as iamuser",
            up.botocore_token("iamuser2"),
            "wrong-user",
        ),
        (
            "signed for another host",
            with(TokenOptions {
                host: Some("other-rds.test".into()),
                ..Default::default()
            }),
            "wrong-host",
        ),
        (
            "signed for another port",
            with(TokenOptions {
                port: Some(3307),
                ..Default::default()
            }),
            "wrong-host",
        ),
        (
            "signed for another region",
            with(TokenOptions {
                region: Some("eu-west-1".into()),
                ..Default::default()
            }),
            "wrong-region",
        ),
        (
            "signed with another access key id",
            with(TokenOptions {
                akid: Some("AKIDSOMEONEELSE".into()),
                ..Default::default()
            }),
            "wrong-akid",
        ),
        (
            "signed 20 minutes ago",
            with(TokenOptions {
                ago_secs: Some(20 * 60),
                ..Default::default()
            }),
            "stale",
        ),
        (
            "signed 20 minutes in the future",
            with(TokenOptions {
                ago_secs: Some(-20 * 60),
                ..Default::default()
            }),
            "future",
        ),
        (
            "garbage",
            "this is not a token".into(),
            "control-or-space-char",
        ),
        ("garbage without spaces", "garbage".into(), "malformed"),
        (
            "garbage query",
            "fake-rds.test:3306/?no-equals-sign".into(),
            "malformed-query",
        ),
        (
            "a trailing newline",
            format!("{good}\n"),
            "surrounding-whitespace",
        ),
        ("with a scheme", format!("https://{good}"), "has-scheme"),
        (
            "an extra parameter",
            good.replace("&X-Amz-Signature=", "&Extra=1&X-Amz-Signature="),
            "unexpected-param",
        ),
        (
            "a flipped signature digit",
            {
                let (head, sig) = good.split_at(good.len() - 64);
                let flipped = if sig.starts_with('0') { "1" } else { "0" };
                format!("{head}{flipped}{}", &sig[1..])
            },
            "wrong-signature",
        ),
        (
            "over pam_exec's 511-byte cap",
            format!("{good}{}", "&x".repeat(120)),
            "too-long-truncated",
        ),
    ];
    for (case, token, reason) in &cases {
        assert_rejected(&up, case, token, reason);
    }

    // The good token still works: the rejections were the tokens' fault.
    assert_eq!(
        sql_ok(&up, "iamuser", &good, "SELECT CURRENT_USER()"),
        "iamuser@%\n"
    );
    let log = up.verify_log();
    assert_eq!(log.matches(" accept ").count(), 2, "{log}");
    assert_eq!(log.matches(" reject ").count(), cases.len(), "{log}");
}

#[test]
fn require_ssl_refuses_a_good_token_without_tls() {
    let up = RdsLikeUpstream::start();
    let token = up.botocore_token("iamuser");
    let before = log_lines(&up).len();
    let out = cli(&up, "iamuser", &token, Tls::Off, "SELECT CURRENT_USER()");
    assert!(!out.status.success(), "plain login succeeded");
    assert!(
        stderr(&out).contains("ERROR 1045 (28000)"),
        "{}",
        stderr(&out)
    );
    // PAM runs before the REQUIRE SSL check (research §5 pitfall 6): the
    // checker accepted the token, so the refusal is REQUIRE SSL's.
    let lines = log_lines(&up);
    assert_eq!(lines.len(), before + 1, "{lines:?}");
    assert!(
        lines[before].contains(" accept user=iamuser reason=ok "),
        "{lines:?}"
    );

    // Same for the password user.
    let out = cli(
        &up,
        &up.pw_user,
        &up.pw_password,
        Tls::Off,
        "SELECT CURRENT_USER()",
    );
    assert!(
        stderr(&out).contains("ERROR 1045 (28000)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        sql_ok(&up, &up.pw_user, &up.pw_password, "SELECT CURRENT_USER()"),
        "pwuser@%\n"
    );
    let out = cli(
        &up,
        &up.pw_user,
        "wrong-password",
        Tls::Ca(&up.ca),
        "SELECT 1",
    );
    assert!(
        stderr(&out).contains("ERROR 1045 (28000)"),
        "{}",
        stderr(&out)
    );
    // The password user never reaches the checker.
    assert_eq!(log_lines(&up).len(), before + 1);
}

/// Read one MySQL packet: (sequence id, payload).
fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).expect("packet header");
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).expect("packet payload");
    (head[3], payload)
}

/// Connect, check the greeting, send SSLRequest and run a rustls handshake
/// with `server_name`, trusting only the instance CA.
fn tls_handshake(up: &RdsLikeUpstream, server_name: &str) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;

    let mut tcp = TcpStream::connect(up.dial_addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (seq, greeting) = read_packet(&mut tcp);
    assert_eq!(seq, 0);
    assert_eq!(greeting[0], 10, "protocol version 10");
    let version_end = greeting[1..].iter().position(|&b| b == 0).unwrap() + 1;
    let version = String::from_utf8_lossy(&greeting[1..version_end]).into_owned();
    assert!(version.starts_with("5.5.5-10.11."), "{version}");
    // capability flags (lower 2 bytes) sit after the 4-byte thread id, 8
    // bytes of scramble and a filler byte.
    let caps_at = version_end + 1 + 4 + 8 + 1;
    let caps = u16::from_le_bytes([greeting[caps_at], greeting[caps_at + 1]]);
    const CLIENT_SSL: u32 = 0x0800;
    assert!(u32::from(caps) & CLIENT_SSL != 0, "server offers TLS");

    // SSLRequest: caps, max packet, charset, 23 zero bytes.
    const CLIENT_LONG_PASSWORD: u32 = 0x0001;
    const CLIENT_PROTOCOL_41: u32 = 0x0200;
    const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
    let client_caps =
        CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION;
    let mut payload = Vec::with_capacity(32);
    payload.extend_from_slice(&client_caps.to_le_bytes());
    payload.extend_from_slice(&(16u32 << 20).to_le_bytes());
    payload.push(45); // utf8mb4_general_ci
    payload.extend_from_slice(&[0u8; 23]);
    let mut packet = vec![payload.len() as u8, 0, 0, 1];
    packet.extend_from_slice(&payload);
    tcp.write_all(&packet).expect("send SSLRequest");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(&up.ca).expect("read CA"))
        .expect("add CA");
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| format!("{e:?}"))?;
    }
    Ok(format!("{:?}", conn.protocol_version().expect("version")))
}

#[test]
fn certificate_names_only_the_endpoint() {
    let up = RdsLikeUpstream::start();

    // The name the proxy verifies against: accepted.
    let version = tls_handshake(&up, "fake-rds.test").expect("verified handshake");
    assert!(version.starts_with("TLSv1_"), "{version}");
    // Not the address it dials, not localhost.
    for other in ["127.0.0.1", "localhost", "other-rds.test"] {
        let err = tls_handshake(&up, other).expect_err(other);
        assert!(err.contains("NotValidForName"), "{other}: {err}");
    }

    // The SAN holds exactly one DNS name.
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-ext",
            "subjectAltName,basicConstraints",
            "-in",
        ])
        .arg(up.info["cert"].as_str().expect("cert path"))
        .output()
        .expect("openssl");
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let san: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("DNS:") || l.contains("IP"))
        .collect();
    assert_eq!(san, ["DNS:fake-rds.test"], "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");

    // The CLI checking the name against the address it dials fails before
    // authentication.
    let token = up.botocore_token("iamuser");
    let before = log_lines(&up).len();
    let out = cli(&up, "iamuser", &token, Tls::CaAndName(&up.ca), "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR 2026"),
        "expected a TLS error: {}",
        stderr(&out)
    );
    assert_eq!(log_lines(&up).len(), before, "no token was sent");
}

#[test]
fn instances_run_side_by_side_and_clean_up() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(RdsLikeUpstream::start);
        let b = s.spawn(RdsLikeUpstream::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port, b.port);
    assert_ne!(a.dir, b.dir);
    assert_ne!(a.pam_service, b.pam_service);
    assert_ne!(a.pw_password, b.pw_password);

    // Each CLI checks the chain against the CA it is given: b's CA does
    // not verify a's server.
    let token = a.botocore_token("iamuser");
    let out = cli(&a, "iamuser", &token, Tls::Ca(&b.ca), "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR 2026"),
        "expected a TLS error: {}",
        stderr(&out)
    );
    assert_eq!(
        sql_ok(&a, "iamuser", &token, "SELECT CURRENT_USER()"),
        "iamuser@%\n"
    );
    assert_eq!(
        sql_ok(
            &b,
            "iamuser",
            &b.botocore_token("iamuser"),
            "SELECT CURRENT_USER()"
        ),
        "iamuser@%\n"
    );

    let leftovers = |up: &RdsLikeUpstream| {
        (
            up.dir.clone(),
            Path::new("/etc/pam.d").join(&up.pam_service),
            up.pid,
            up.info["watchdog_pid"].as_u64().expect("watchdog pid") as u32,
        )
    };
    let (dir, pam, pid, watchdog) = leftovers(&a);
    assert!(dir.is_dir() && pam.is_file());
    assert!(process_alive(pid) && process_alive(watchdog));
    drop(a);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!pam.exists(), "{} left behind", pam.display());
    assert!(!process_alive(pid), "mariadbd {pid} still running");
    assert!(
        !process_alive(watchdog),
        "watchdog {watchdog} still running"
    );
    // stop is idempotent.
    let out = Command::new(upstream_script("rds-like-mariadb"))
        .arg("stop")
        .arg(&dir)
        .output()
        .expect("run stop");
    assert!(out.status.success(), "{}", stderr(&out));

    // b is untouched by a's stop.
    assert_eq!(b.root_sql("SELECT 1"), "1\n");
}

/// Running, not a zombie (the stopped server is reparented, and may wait
/// for its reaper).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

#[test]
fn iam_users_kill_their_own_queries_only() {
    let up = RdsLikeUpstream::start();
    let token = up.botocore_token("iamuser");
    let token2 = up.botocore_token("iamuser2");

    let mut sleeper = cli_command(&up, "iamuser", &token, Tls::Ca(&up.ca))
        .args(["-e", "SELECT SLEEP(600)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sleeper");
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let id = up.root_sql(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE USER = 'iamuser' AND INFO = 'SELECT SLEEP(600)'",
        );
        if !id.trim().is_empty() {
            break id.trim().to_owned();
        }
        if Instant::now() > deadline || sleeper.try_wait().unwrap().is_some() {
            let _ = sleeper.kill();
            let out = sleeper.wait_with_output().unwrap();
            panic!("the sleeper never showed up: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // Another user may not.
    let out = cli(
        &up,
        "iamuser2",
        &token2,
        Tls::Ca(&up.ca),
        &format!("KILL QUERY {id}"),
    );
    assert!(
        stderr(&out).contains("ERROR 1095"),
        "iamuser2 killed iamuser's query: {}",
        stderr(&out)
    );
    // The owner may.
    sql_ok(&up, "iamuser", &token, &format!("KILL QUERY {id}"));

    let deadline = Instant::now() + Duration::from_secs(60);
    while sleeper.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = sleeper.kill();
            let _ = sleeper.wait();
            panic!("KILL QUERY did not end the sleeper");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = sleeper.wait_with_output().unwrap();
    // MariaDB ends a killed SLEEP() with an error (MySQL returns 1).
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR 1317 (70100)"),
        "{}",
        stderr(&out)
    );
}

//! End to end through the proxy against the RDS-shaped MariaDB (TLS required, PAM cleartext, a
//! checker that recomputes every token's SigV4 signature with botocore): real client libraries log
//! in with no password, and every failure reaches them as a readable MySQL error while the proxy
//! keeps serving.

use crate::common::clients::{
    self, ClientReport, Target, assert_report_sane, mariadb_cli_check, mysql_async_check,
    mysql2_check, pymysql_check,
};
use crate::common::proxy::{RunningProxy, UpstreamSpec};
use crate::common::upstream::RdsLikeUpstream;
use mysql_async::prelude::*;

fn opts(t: &Target) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(t.host.clone())
        .tcp_port(t.port)
        .user(Some(t.user.clone()))
        // Never take the server's unix socket: that would bypass the proxy.
        .prefer_socket(false)
        .into()
}

async fn current_user(t: &Target) -> Result<String, mysql_async::Error> {
    let mut conn = mysql_async::Conn::new(opts(t)).await?;
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await?;
    conn.disconnect().await?;
    Ok(user.unwrap_or_default())
}

async fn login_error(t: &Target) -> (u16, String) {
    match mysql_async::Conn::new(opts(t)).await {
        Ok(_) => panic!("login as {} unexpectedly succeeded", t.user),
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        Err(other) => panic!("expected a MySQL error for {}, got {other}", t.user),
    }
}

async fn blocking(f: fn(&Target) -> ClientReport, t: &Target) -> ClientReport {
    let t = t.clone();
    tokio::task::spawn_blocking(move || f(&t)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_log_in_without_a_password_over_an_iam_tls_session() {
    let up = RdsLikeUpstream::start();
    let px = RunningProxy::start(&UpstreamSpec::of(&up), |_| {}).await;
    let t = px.target("iamuser");

    // Each report checks: CURRENT_USER() is the IAM user, Ssl_cipher of the upstream leg is set,
    // the greeting's connection id equals CONNECTION_ID(), a server-side prepared statement, a
    // 4 MiB blob whose MD5 matches the server's, and KILL QUERY from a second connection stopping
    // a SELECT SLEEP(30) on the first.
    let r = mysql_async_check(&t).await;
    assert_report_sane(&r, "iamuser");
    for check in [pymysql_check, mysql2_check, mariadb_cli_check] {
        let r = blocking(check, &t).await;
        assert_report_sane(&r, "iamuser");
    }
    // The checker saw and accepted real tokens, signed for the endpoint name, not the dial address.
    let log = up.verify_log();
    assert!(log.contains("accept"), "verify log: {log}");
    assert!(!log.contains("reject"), "verify log: {log}");
    assert_eq!(
        px.proxy
            .stats()
            .login_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(px.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_variants_db_user_override_change_user_direct_auth_and_local_tls() {
    let up = RdsLikeUpstream::start();
    let spec = UpstreamSpec::of(&up);

    // --db-user: whatever the client calls itself, it is the configured IAM user upstream.
    let px = RunningProxy::start(&spec, |c| c.db_user = Some("iamuser2".into())).await;
    assert_eq!(
        current_user(&px.target("anyone")).await.unwrap(),
        "iamuser2@%"
    );
    px.stop().await;

    // COM_CHANGE_USER becomes an IAM login for the new user.
    let px = RunningProxy::start(&spec, |_| {}).await;
    let t = px.target("iamuser");
    let mut conn = mysql_async::Conn::new(opts(&t)).await.unwrap();
    let before: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(before.as_deref(), Some("iamuser@%"));
    conn.change_user(mysql_async::ChangeUserOpts::default().with_user(Some("iamuser2".into())))
        .await
        .unwrap();
    let after: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(after.as_deref(), Some("iamuser2@%"));
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    assert!(
        !cipher.unwrap().1.is_empty(),
        "still TLS upstream after change user"
    );
    conn.disconnect().await.unwrap();
    px.stop().await;

    // Direct auth: the token rides in the first packet, no auth switch.
    let px = RunningProxy::start(&spec, |c| c.direct_auth = true).await;
    assert_eq!(
        current_user(&px.target("iamuser")).await.unwrap(),
        "iamuser@%"
    );
    px.stop().await;

    // Local TLS: the mariadb CLI (which prefers TLS) gets an encrypted local leg too.
    let px = RunningProxy::start(&spec, |c| c.local_tls = true).await;
    let port = px.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-P",
                &port,
            ])
            .args([
                "-u",
                "iamuser",
                "--ssl",
                "-e",
                "status; SELECT CURRENT_USER();",
            ])
            .env_remove("MYSQL_PWD")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Cipher in use is"),
        "local leg not TLS: {stdout}"
    );
    assert!(stdout.contains("iamuser@%"), "{stdout}");
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_the_client_as_mysql_errors_and_the_proxy_keeps_serving() {
    let up = RdsLikeUpstream::start();
    up.root_sql(
        "INSTALL SONAME 'auth_ed25519'; \
         CREATE USER 'eduser'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('secret-ed'); \
         GRANT SELECT ON *.* TO 'eduser'@'%';",
    );
    let spec = UpstreamSpec::of(&up);
    let px = RunningProxy::start(&spec, |_| {}).await;

    // A user the server does not know. MariaDB answers unknown users with a decoy auth switch to
    // a random loaded plugin (MySQL with access denied): either way the message says what to do.
    let (code, msg) = login_error(&px.target("nosuchuser")).await;
    assert!(code == 1045 || code == 1251, "{code}: {msg}");
    assert!(
        msg.contains("AWSAuthenticationPlugin") && msg.contains("nosuchuser"),
        "{msg}"
    );

    // A user with another auth plugin: the server never asks for mysql_clear_password. With the
    // token in the first packet its switch cannot be told from the decoy an unknown user gets, so
    // it is access denied naming both causes and the plugin asked for.
    let (code, msg) = login_error(&px.target("eduser")).await;
    assert_eq!(code, 1045, "{msg}");
    assert!(
        msg.contains("does not exist there or is not an IAM user"),
        "{msg}"
    );
    assert!(
        msg.contains("AWSAuthenticationPlugin") && msg.contains("client_ed25519"),
        "{msg}"
    );

    // The same errors through other client libraries, as they display them.
    let (code, msg) = tokio::task::spawn_blocking({
        let t = px.target("nosuchuser");
        move || clients::pymysql_expect_error(&t)
    })
    .await
    .unwrap();
    assert!(code == 1045 || code == 1251, "{code}: {msg}");
    assert!(msg.contains("AWSAuthenticationPlugin"), "{msg}");
    let cli = tokio::task::spawn_blocking({
        let t = px.target("eduser");
        move || clients::mariadb_cli_expect_error(&t)
    })
    .await
    .unwrap();
    assert!(cli.contains("AWSAuthenticationPlugin"), "{cli}");

    // Still serving.
    assert_eq!(
        current_user(&px.target("iamuser")).await.unwrap(),
        "iamuser@%"
    );

    // A token signed for the wrong region is rejected by the checker, and the error says which
    // region and user were used.
    let wrong_region = RunningProxy::start(&spec, |c| c.region = "eu-west-3".into()).await;
    let (code, msg) = login_error(&wrong_region.target("iamuser")).await;
    assert_eq!(code, 1045, "{msg}");
    assert!(
        msg.contains("eu-west-3") && msg.contains("iamuser"),
        "{msg}"
    );
    assert!(
        up.verify_log().contains("wrong-region"),
        "{}",
        up.verify_log()
    );
    wrong_region.stop().await;

    // A certificate that does not name the endpoint: TLS fails before any token is sent.
    let attempts_before = up.verify_log().lines().count();
    let mut wrong_name = spec.clone();
    wrong_name.endpoint_host = "wrong-name.test".into();
    let px2 = RunningProxy::start(&wrong_name, |_| {}).await;
    let (code, msg) = login_error(&px2.target("iamuser")).await;
    assert_eq!(code, 1105, "{msg}");
    assert!(
        msg.contains("wrong-name.test") && msg.contains(&spec.ca.display().to_string()),
        "{msg}"
    );
    assert_eq!(
        up.verify_log().lines().count(),
        attempts_before,
        "no token may be sent"
    );
    px2.stop().await;

    // Nothing listening at the dial address.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut unreachable = spec.clone();
    unreachable.dial = closed.to_string();
    let px3 = RunningProxy::start(&unreachable, |_| {}).await;
    let (code, msg) = login_error(&px3.target("iamuser")).await;
    assert_eq!(code, 1105, "{msg}");
    assert!(
        msg.contains(&spec.endpoint_host) && msg.contains(&closed.to_string()),
        "{msg}"
    );
    // libmariadb shows it too (it calls an ERR with a 2xxx code "malformed" and drops the text).
    let cli = tokio::task::spawn_blocking({
        let t = px3.target("iamuser");
        move || clients::mariadb_cli_expect_error(&t)
    })
    .await
    .unwrap();
    assert!(
        cli.contains(&closed.to_string()) && !cli.contains("malformed"),
        "{cli}"
    );
    px3.stop().await;

    // And the first proxy still serves after all of that.
    assert_eq!(
        current_user(&px.target("iamuser")).await.unwrap(),
        "iamuser@%"
    );
    let stats = px.proxy.stats();
    assert_eq!(
        stats
            .login_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    px.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_password_is_checked_from_the_clients_scramble() {
    use rds_iam_proxy::proxy::LocalPassword;
    let up = RdsLikeUpstream::start();
    let px = RunningProxy::start(&UpstreamSpec::of(&up), |c| {
        c.local_password = Some(LocalPassword::new("local pw!"))
    })
    .await;
    let with_pass = |pass: Option<&str>| {
        let t = px.target("iamuser");
        mysql_async::OptsBuilder::from_opts(opts(&t)).pass(pass.map(str::to_owned))
    };
    // mysql_async answers the caching_sha2_password greeting with the SHA-256 scramble.
    let mut conn = mysql_async::Conn::new(with_pass(Some("local pw!")))
        .await
        .unwrap();
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("iamuser@%"));
    conn.disconnect().await.unwrap();
    for wrong in [Some("wrong"), None] {
        match mysql_async::Conn::new(with_pass(wrong)).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1045, "{}", e.message);
                assert!(e.message.contains("local password"), "{}", e.message);
            }
            other => panic!(
                "{wrong:?}: expected access denied, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // A wrong password locks this address out for a second (the second attempt above was
    // refused unchecked); then the mariadb CLI (libmariadb) with the password on the command line.
    tokio::time::sleep(
        rds_iam_proxy::proxy::throttle::FIRST_DELAY + std::time::Duration::from_millis(200),
    )
    .await;
    let port = px.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "--skip-ssl",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-P",
                &port,
                "-u",
                "iamuser",
                "-plocal pw!",
                "--batch",
                "--skip-column-names",
            ])
            .args(["-e", "SELECT CURRENT_USER()"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser@%");
    px.stop().await;
}

//! `--secret`: the proxy logs in upstream with a Secrets Manager secret's user name and password
//! instead of an IAM token (issue 11 item 5). Against the scripted MySQL 8.4 upstream:
//! `caching_sha2_password` fast and full authentication (the password in clear only inside the
//! verified TLS), a refusal that makes the next login read the secret again, and COM_CHANGE_USER
//! refused; against the RDS-shaped MariaDB: the mariadb CLI logs in as its password user.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::fake::*;
use rds_iam_proxy::aws::secrets::MasterCredentials;
use rds_iam_proxy::mysql::proto::ErrPacket;
use rds_iam_proxy::mysql::proto::scramble::sha2_scramble;
use rds_iam_proxy::proxy::password::SecretCache;
use rds_iam_proxy::secret::Secret;

/// A secret holding `app` / `pw`, counting its reads.
fn secret(reads: Arc<AtomicU32>, user: &'static str, password: &'static str) -> Arc<SecretCache> {
    Arc::new(SecretCache::with_fetch("db-secret", move || {
        reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Ok(MasterCredentials {
                username: user.into(),
                password: Secret::new(password),
            })
        })
    }))
}

/// Up to the HandshakeResponse41 the proxy sends upstream (returned).
async fn to_upstream_login(
    h: &Harness,
) -> (
    TestClient,
    ServerConn,
    rds_iam_proxy::mysql::proto::HandshakeResponse41,
) {
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    client
        .send_response(&client_response("whoever", "mysql_native_password", b""))
        .await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    let r = server.read_response().await;
    (client, server, r)
}

/// caching_sha2_password full authentication: the scramble first, then (asked with `01 04`) the
/// password in clear inside TLS; the client gets the server's OK. The fast path (`01 03`) too.
#[tokio::test]
async fn caching_sha2_full_and_fast_authentication_with_the_secrets_password() {
    let reads = Arc::new(AtomicU32::new(0));
    let h = Harness::start({
        let reads = reads.clone();
        move |c| c.upstream_password = Some(secret(reads, "app", "s3cret pw"))
    })
    .await;
    for full in [true, false] {
        let (mut client, mut server, r) = to_upstream_login(&h).await;
        assert_eq!(
            &r.username[..],
            b"app",
            "the secret's user, not the client's"
        );
        assert_eq!(
            r.auth_plugin_name.as_deref(),
            Some(&b"caching_sha2_password"[..])
        );
        assert_eq!(
            &r.auth_response[..],
            &sha2_scramble("s3cret pw", UPSTREAM_SCRAMBLE)[..]
        );
        if full {
            server.send(3, &[0x01, 0x04]).await;
            let p = server.expect_packet("the password").await;
            assert_eq!((p.seq, &p.payload[..]), (4, &b"s3cret pw\0"[..]));
            server.send(5, PLAIN_OK).await;
        } else {
            server.send(3, &[0x01, 0x03]).await;
            server.send(4, PLAIN_OK).await;
        }
        let ok = client.expect_packet("OK").await;
        assert_eq!(&ok.payload[..], PLAIN_OK);
        drop((client, server));
    }
    assert_eq!(
        reads.load(Ordering::SeqCst),
        1,
        "the secret is kept between logins"
    );
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (2, 0));
}

/// The server refuses the password (a rotation): the client gets 1045 naming the secret and what
/// happens next, never the password. (That the refusal makes a later login re-read the secret,
/// at most once per 10 s, is `src/proxy/password.rs::rereads_every_five_minutes_and_after_a_refusal_but_not_at_login_rate`.)
#[tokio::test]
async fn a_refused_password_is_reported_naming_the_secret() {
    let reads = Arc::new(AtomicU32::new(0));
    let h = Harness::start({
        let reads = reads.clone();
        move |c| c.upstream_password = Some(secret(reads, "app", "0ld-pw-xyz"))
    })
    .await;
    let (mut client, mut server, _) = to_upstream_login(&h).await;
    let denied = ErrPacket::new(1045, b"28000", "Access denied for user 'app'@'10.0.0.1'");
    server.send(3, &encode_err(&denied)).await;
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1045);
    let msg = err.message_str();
    for part in [
        "'app'",
        "Secrets Manager secret db-secret",
        "rotated",
        "Access denied",
    ] {
        assert!(msg.contains(part), "lacks {part:?}: {msg}");
    }
    assert!(
        !msg.contains("0ld-pw-xyz"),
        "the password in a message: {msg}"
    );
    drop((client, server));
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    h.finish().await;
}

/// COM_CHANGE_USER cannot switch to another user's password: ERR 1251 naming --secret, close.
#[tokio::test]
async fn change_user_is_refused_with_a_secret() {
    let h = Harness::start(|c| {
        c.upstream_password = Some(secret(Arc::new(AtomicU32::new(0)), "app", "pw"))
    })
    .await;
    let (mut client, mut server, _) = to_upstream_login(&h).await;
    server.send(3, &[0x01, 0x03]).await;
    server.send(4, PLAIN_OK).await;
    client.expect_packet("OK").await;
    client.send(0, b"\x11bob\0\0\0").await;
    let err = client.expect_err(1).await;
    assert_eq!(err.code, 1251);
    assert!(
        err.message_str().contains("--secret"),
        "{}",
        err.message_str()
    );
    client.expect_closed("change user refused").await;
    server.expect_closed("nothing upstream").await;
    drop((client, server));
    h.finish().await;
}

/// A real client through the proxy to the RDS-shaped MariaDB, logged in as its password user
/// (`mysql_native_password`, REQUIRE SSL) from the secret, with no password on the client side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mariadb_cli_logs_in_as_the_secrets_user() {
    use crate::common::proxy::{RunningProxy, UpstreamSpec};
    use crate::common::upstream::RdsLikeUpstream;
    let up = RdsLikeUpstream::start();
    let user = up.pw_user.clone();
    let password = up.pw_password.clone();
    let px = RunningProxy::start(&UpstreamSpec::of(&up), move |c| {
        let (user, password) = (user.clone(), password.clone());
        c.upstream_password = Some(Arc::new(SecretCache::with_fetch("db-secret", move || {
            let (user, password) = (user.clone(), password.clone());
            Box::pin(async move {
                Ok(MasterCredentials {
                    username: user,
                    password: Secret::new(password),
                })
            })
        })));
    })
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
                "anyone",
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
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}@%", up.pw_user)
    );
    px.stop().await;
}

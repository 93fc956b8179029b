//! The PostgreSQL engine end to end: real clients (psql, psycopg, node-postgres, pgJDBC, pgx,
//! tokio-postgres) through the proxy to the RDS-shaped PostgreSQL
//! (`tests/upstream/postgres/rds-like-postgres`: TLS naming only the fake endpoint, `hostssl …
//! pam` with the botocore token checker), Direct and over the SSM simulator. Each logs in with no password, is `current_user` = the IAM user
//! with `pg_stat_ssl.ssl` true, sends parameters, reads a 4 MiB bytea whose MD5 matches the
//! server's, COPYs out and in with checksums (about 69 MB each way for psql), and cancels a
//! `pg_sleep(30)` through its own cancel API.
//!
//! Bad input from either side ends that one connection with a clear `ErrorResponse` and the proxy
//! keeps serving: garbage, truncated and oversized startup packets, a client that never sends
//! its startup, an upstream asking SCRAM or MD5, a wrong-name certificate, a rejected token, a
//! cancel request for a key the proxy never gave out, a database leg lost under a query.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::common::postgres::*;
use crate::common::process::{ProxyProcess, free_port, http_get, isolated_cmd};
use crate::common::proxy::RunningProxy;
use bytes::BytesMut;
use rds_iam_proxy::postgres::proto::frame::{MAX_LOGIN_MESSAGE_LEN, take_message};
use rds_iam_proxy::postgres::proto::{ErrorResponse, ProtocolVersion, StartupMessage};
use rds_iam_proxy::proxy::{Engine, ProxyConfig};
use rds_iam_proxy::spool::SpoolLimits;
use rds_iam_proxy::tunnel::{ConnectFuture, Connector, Direct};
use ssm_sim::{Route, SimConfig, SimServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TARGET: &str = "i-0123456789abcdef0";

/// Bound on every wait for the proxy in the raw-socket tests.
const GUARD: Duration = Duration::from_secs(30);

fn postgres(c: &mut ProxyConfig) {
    c.engine = Engine::Postgres;
}

fn target(port: u16, up: &RdsLikePostgres, user: &str) -> PgTarget {
    PgTarget {
        port,
        user: user.into(),
        dbname: up.database.clone(),
    }
}

/// Runs a blocking client check off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A login that must fail, as node-postgres and psycopg show it: node-postgres's SQLSTATE (libpq
/// gives none for a failed connection) and libpq's text (the message and its DETAIL), which must
/// hold node-postgres's message.
fn both_expect_error(t: &PgTarget) -> PgError {
    let node = node_pg_expect_error(t);
    let libpq = psycopg_expect_error(t);
    assert!(
        libpq.message.contains(&node.message),
        "libpq shows {libpq:?}, node-postgres {node:?}"
    );
    PgError {
        sqlstate: node.sqlstate,
        message: libpq.message,
    }
}

/// The login failed with `sqlstate` and a message holding every one of `parts`.
fn assert_refused(e: &PgError, sqlstate: &str, parts: &[&str]) {
    assert_eq!(e.sqlstate, sqlstate, "{e:?}");
    for part in parts {
        assert!(e.message.contains(part), "{part:?} missing: {e:?}");
    }
}

/// The proxy still logs psql in as `user`.
async fn still_serving(port: u16, up: &RdsLikePostgres, user: &str) {
    let t = target(port, up, user);
    let out = blocking(move || {
        psql_at(&t)
            .args(["-c", "SELECT current_user"])
            .output()
            .unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "psql after the bad input: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_log_in_without_a_password_direct() {
    let up = RdsLikePostgres::start();
    let proxy = RunningProxy::start(&up.spec(), postgres).await;
    let port = proxy.addr.port();
    let user = up.iam_users[0].clone();

    let up = Arc::new(up);
    // psql with the big COPY (about 69 MB each way) and Ctrl-C.
    let r = every_client(&target(port, &up, &user), &up, BIG_COPY_ROWS).await;
    assert!(r.copy_out_bytes > 64 << 20, "{r:?}");
    assert_eq!(r.copy_in_rows, u64::from(BIG_COPY_ROWS), "{r:?}");

    // Every login was checked by the token checker, none with a password from the client.
    assert!(up.verify_log().contains(&user), "{}", up.verify_log());
    let stats = proxy.proxy.stats();
    assert_eq!(stats.login_failures.load(Ordering::Relaxed), 0);
    assert!(stats.logins.load(Ordering::Relaxed) >= 8);
    assert_eq!(proxy.stop().await, 0);
}

/// Every real client's checks at `t` (COPY of [`COPY_ROWS`] rows; `psql_rows` for psql), each
/// report asserted; returns psql's.
async fn every_client(t: &PgTarget, up: &Arc<RdsLikePostgres>, psql_rows: u32) -> PgReport {
    let user = t.user.clone();
    let r = tokio_postgres_check(t, COPY_ROWS).await;
    assert_pg_report(&r, &user, true, true);
    type Check = fn(&PgTarget) -> PgReport;
    let checks: [(Check, bool); 4] = [
        (|t| psycopg_check(t, COPY_ROWS), true),
        (node_pg_check, false),
        (|t| jdbc_check(t, COPY_ROWS), true),
        (|t| pgx_check(t, COPY_ROWS), true),
    ];
    for (check, copy) in checks {
        let t = t.clone();
        let r = blocking(move || check(&t)).await;
        assert_pg_report(&r, &user, copy, true);
    }
    let (t, up) = (t.clone(), up.clone());
    let r = blocking(move || psql_check(&t, &up, psql_rows)).await;
    assert_pg_report(&r, &user, true, false);
    r
}

/// The binary for `up` over SSM through `sim`, its engine chosen by the endpoint's port (5432).
fn ssm_proxy(up: &RdsLikePostgres, sim: &SimServer, health: &str) -> ProxyProcess {
    let mut cmd: Command = isolated_cmd();
    cmd.args(["--health-addr", health]);
    cmd.env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("RDS_IAM_PROXY_DB_ENDPOINT", up.endpoint())
        .env("RDS_IAM_PROXY_REGION", &up.region)
        .env("RDS_IAM_PROXY_CA_BUNDLE", &up.ca)
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0")
        .env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
        .args(["--ssm-target", TARGET, "--ssm-sessions", "2"]);
    let p = ProxyProcess::spawn(cmd);
    assert!(
        p.start_line.contains(TARGET) && p.start_line.contains(&up.endpoint()),
        "{}",
        p.start_line
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_log_in_over_ssm() {
    let up = RdsLikePostgres::start();
    let sim = SimServer::start(SimConfig {
        routes: vec![Route {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            dial: up.dial_addr(),
        }],
        verify_secret: Some(up.secret.clone()),
        require_signature: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let proxy = ssm_proxy(&up, &sim, &health);
    let user = up.iam_users[0].clone();
    let up = Arc::new(up);
    every_client(&target(proxy.port, &up, &user), &up, COPY_ROWS).await;

    let (code, metrics) = blocking(move || http_get(&health, "/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("rds_iam_proxy_database_info{database=\"default\",engine=\"postgres\"} 1"),
        "{metrics}"
    );
    let stats = sim.stats();
    assert!(stats.signed_upgrades >= 1, "{stats:?}");
    assert!(stats.streams >= 8, "{stats:?}");
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!logs.contains(&up.secret), "secret in logs");
    assert!(!logs.contains("X-Amz-Signature="), "token in logs");
    sim.shutdown().await;
}

/// Reads the proxy's answer to a raw client up to its close: every message, decoded as
/// `ErrorResponse`s (anything else fails the test).
async fn errors_until_close(s: &mut TcpStream) -> Vec<ErrorResponse> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while let Some(m) = take_message(&mut buf, MAX_LOGIN_MESSAGE_LEN).unwrap() {
            assert_eq!(m.tag, b'E', "only ErrorResponses: {m:?}");
            out.push(ErrorResponse::decode(&m.body).unwrap());
        }
        let n = tokio::time::timeout(GUARD, s.read_buf(&mut buf))
            .await
            .expect("the proxy closes in time")
            .unwrap_or(0);
        if n == 0 {
            assert!(buf.is_empty(), "a cut message: {buf:?}");
            return out;
        }
    }
}

/// Sends `bytes` on a new connection and returns the one FATAL the proxy answers before closing.
async fn one_fatal(port: u16, bytes: &[u8]) -> ErrorResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut errs = errors_until_close(&mut s).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = errs.remove(0);
    assert_eq!(e.severity().as_deref(), Some("FATAL"), "{e}");
    assert!(e.message().unwrap().starts_with("rds-iam-proxy: "), "{e}");
    e
}

/// A connector that counts the streams it opens (to see that nothing reached the database).
struct Counting {
    inner: Direct,
    opened: Arc<AtomicU64>,
}

impl Connector for Counting {
    fn connect(&self) -> ConnectFuture<'_> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.inner.connect()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A proxy for `up` (configured by `tweak`) whose connector counts the streams it opens.
async fn counting_proxy(
    up: &RdsLikePostgres,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> (RunningProxy, Arc<AtomicU64>) {
    let opened = Arc::new(AtomicU64::new(0));
    let connector = Arc::new(Counting {
        inner: Direct::new(up.dial_addr()),
        opened: opened.clone(),
    });
    let proxy = RunningProxy::start_with(&up.spec(), connector, tweak).await;
    (proxy, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_startup_packets_get_a_fatal_and_never_reach_the_database() {
    let up = RdsLikePostgres::start();
    let (proxy, opened) = counting_proxy(&up, |c| {
        c.engine = Engine::Postgres;
        c.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let port = proxy.addr.port();

    // Garbage: a protocol 9.0 "startup".
    let e = one_fatal(port, &[0, 0, 0, 8, 0, 9, 0, 0]).await;
    assert_eq!(e.sqlstate().as_deref(), Some("0A000"), "{e}");
    assert!(e.message().unwrap().contains("only 3.x"), "{e}");
    // Oversized: a length word of 2 GiB - 1, refused before anything is buffered.
    let e = one_fatal(port, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await;
    assert_eq!(e.sqlstate().as_deref(), Some("08P01"), "{e}");
    assert!(e.message().unwrap().contains("exceeds"), "{e}");
    // Negative and too short lengths.
    for bad in [[0xff, 0xff, 0xff, 0xf0], [0, 0, 0, 3]] {
        let e = one_fatal(port, &bad).await;
        assert_eq!(e.sqlstate().as_deref(), Some("08P01"), "{e}");
    }
    // No user, and a user with bytes that are not UTF-8.
    let packet = |body: &[u8]| {
        let mut out = BytesMut::new();
        rds_iam_proxy::postgres::proto::frame::put_startup(body, &mut out);
        out
    };
    let e = one_fatal(port, &packet(b"\0\x03\0\0database\0x\0\0")).await;
    assert!(e.message().unwrap().contains("no user name"), "{e}");
    let e = one_fatal(port, &packet(b"\0\x03\0\0user\0\xff\0\0")).await;
    assert!(e.message().unwrap().contains("UTF-8"), "{e}");
    // Data sent behind an SSLRequest without waiting for the answer.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 1, 2, 3])
        .await
        .unwrap();
    let mut first = [0u8; 1];
    // The SSLRequest may be answered before the stray bytes are seen, or refused at once.
    let errs = match tokio::time::timeout(GUARD, s.read_exact(&mut first)).await {
        Ok(Ok(_)) if first[0] == b'N' => errors_until_close(&mut s).await,
        Ok(Ok(_)) => {
            let mut rest = vec![first[0]];
            s.read_to_end(&mut rest).await.unwrap();
            let mut buf = BytesMut::from(&rest[..]);
            let m = take_message(&mut buf, MAX_LOGIN_MESSAGE_LEN)
                .unwrap()
                .unwrap();
            vec![ErrorResponse::decode(&m.body).unwrap()]
        }
        other => panic!("no answer: {other:?}"),
    };
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message().unwrap().contains("without waiting"),
        "{}",
        errs[0]
    );
    // Truncated: half a startup packet, then nothing: the handshake timeout ends it.
    let e = one_fatal(port, &[0, 0, 0, 40, 0, 3, 0, 0, b'u']).await;
    assert_eq!(e.sqlstate().as_deref(), Some("08P01"), "{e}");
    assert!(e.message().unwrap().contains("within 2s"), "{e}");

    assert_eq!(
        opened.load(Ordering::Relaxed),
        0,
        "nothing went to the database"
    );
    still_serving(port, &up, &up.iam_users[0]).await;
    assert_eq!(opened.load(Ordering::Relaxed), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_encryption_requests_and_direct_tls_end_only_that_connection() {
    let up = RdsLikePostgres::start();
    let (proxy, opened) = counting_proxy(&up, postgres).await;
    let port = proxy.addr.port();
    const SSL: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    const GSS: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    // GSSENCRequest and SSLRequest are each refused with N (no --local-tls); asked again, FATAL.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    for request in [GSS, SSL] {
        s.write_all(&request).await.unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[0], b'N');
    }
    s.write_all(&SSL).await.unwrap();
    let errs = errors_until_close(&mut s).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].sqlstate().as_deref(), Some("08P01"));
    assert!(errs[0].message().unwrap().contains("same encryption twice"));
    // A TLS ClientHello at once (PostgreSQL 17's sslnegotiation=direct): closed, no bytes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(
        rest.is_empty(),
        "no PostgreSQL bytes to a TLS client: {rest:?}"
    );
    assert_eq!(opened.load(Ordering::Relaxed), 0);
    still_serving(port, &up, &up.iam_users[0]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_its_startup_is_told_and_dropped() {
    let up = RdsLikePostgres::start();
    let proxy = RunningProxy::start(&up.spec(), |c| {
        c.engine = Engine::Postgres;
        c.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let port = proxy.addr.port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let errs = errors_until_close(&mut s).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].sqlstate().as_deref(), Some("08P01"));
    assert!(
        errs[0]
            .message()
            .unwrap()
            .contains("no startup packet from the client within 1s"),
        "{}",
        errs[0]
    );
    let stats = proxy.proxy.stats();
    assert_eq!(stats.login_failures.load(Ordering::Relaxed), 1);
    still_serving(port, &up, &up.iam_users[0]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_asking_scram_or_md5_is_refused_naming_grant_rds_iam() {
    for auth in [PgAuth::Scram, PgAuth::Md5] {
        let up = RdsLikePostgres::start_with(&PgStartOptions {
            auth,
            ..PgStartOptions::default()
        });
        let proxy = RunningProxy::start(&up.spec(), postgres).await;
        let user = up.iam_users[0].clone();
        let t = target(proxy.addr.port(), &up, &user);
        let e = blocking(move || both_expect_error(&t)).await;
        let want = match auth {
            PgAuth::Scram => "SASL (SCRAM-SHA-256",
            _ => "AuthenticationMD5Password",
        };
        let parts = [
            want,
            "not an IAM database user",
            "GRANT rds_iam TO \"iamuser\"",
        ];
        assert_refused(&e, "28000", &parts);
        // The server never saw the token (it asked for something else first).
        assert!(!up.server_log().contains("X-Amz-Signature"));
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_name_certificate_is_refused_before_the_token_goes() {
    let up = RdsLikePostgres::start();
    let mut spec = up.spec();
    // The proxy expects another name than the certificate's (DNS:fake-rds.test only).
    spec.endpoint_host = "other-db.test".into();
    let proxy = RunningProxy::start(&spec, postgres).await;
    let t = target(proxy.addr.port(), &up, &up.iam_users[0]);
    let e = blocking(move || both_expect_error(&t)).await;
    let parts = [
        "TLS verification of other-db.test:5432 failed",
        "must name other-db.test",
        "--ca-bundle",
    ];
    assert_refused(&e, "08001", &parts);
    assert_eq!(up.verify_log(), "", "no token reached the checker");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_28p01_naming_what_to_check_and_is_not_reused() {
    let up = RdsLikePostgres::start();
    let mut spec = up.spec();
    // Credentials the checker does not know: every token is rejected.
    spec.secret = "wrongwrongwrongwrongwrongwrongwrongwrong".into();
    let proxy = RunningProxy::start(&spec, postgres).await;
    let user = up.iam_users[0].clone();
    for round in 1..=2u64 {
        let t = target(proxy.addr.port(), &up, &user);
        let e = blocking(move || both_expect_error(&t)).await;
        let parts = [
            "rejected the IAM token for user 'iamuser'",
            "rds-db:connect",
            "GRANT rds_iam TO \"iamuser\"",
            "The database said: PAM authentication failed",
        ];
        assert_refused(&e, "28P01", &parts);
        // The rejected token was dropped: each of the two logins minted a new one.
        assert_eq!(proxy.proxy.token_mints(), 2 * round);
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_a_client_gets_53300() {
    let up = RdsLikePostgres::start();
    let proxy = RunningProxy::start(&up.spec(), |c| {
        c.engine = Engine::Postgres;
        c.max_connections = 1;
    })
    .await;
    let user = up.iam_users[0].clone();
    let t = target(proxy.addr.port(), &up, &user);
    let (held, conn) = tokio_postgres::connect(&t.rust_conninfo(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let t2 = t.clone();
    let e = blocking(move || both_expect_error(&t2)).await;
    assert_eq!(e.sqlstate, "53300", "{e:?}");
    assert!(e.message.contains("--max-connections"), "{e:?}");
    drop(held);
    let _ = conn.await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_with_an_unknown_key_opens_nothing_upstream() {
    let up = RdsLikePostgres::start();
    let (proxy, opened) = counting_proxy(&up, postgres).await;
    let port = proxy.addr.port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // CancelRequest: length 16, code 1234.5678, pid 4242, key 1 2 3 4.
    s.write_all(&[
        0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x10, 0x92, 1, 2, 3, 4,
    ])
    .await
    .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "a cancel request is answered with nothing");
    assert_eq!(opened.load(Ordering::Relaxed), 0);
    still_serving(port, &up, &up.iam_users[0]).await;
    proxy.stop().await;
}

/// A TCP relay between the proxy and the database that the test can cut.
struct Cuttable {
    addr: std::net::SocketAddr,
    cut: Arc<tokio::sync::Notify>,
}

impl Cuttable {
    async fn start(to: String) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cut = Arc::new(tokio::sync::Notify::new());
        let cut2 = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                let mut b = TcpStream::connect(&to).await.unwrap();
                let cut = cut2.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Cuttable { addr, cut }
    }
}

struct Via(Direct);

impl Connector for Via {
    fn connect(&self) -> ConnectFuture<'_> {
        self.0.connect()
    }
    fn describe(&self) -> String {
        "the test's cuttable relay".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_leg_lost_under_a_query_is_a_fatal_08006_naming_the_hop() {
    let up = RdsLikePostgres::start();
    let relay = Cuttable::start(up.dial_addr()).await;
    let connector = Arc::new(Via(Direct::new(relay.addr.to_string())));
    let proxy = RunningProxy::start_with(&up.spec(), connector, postgres).await;
    let t = target(proxy.addr.port(), &up, &up.iam_users[0]);
    let (client, conn) = tokio_postgres::connect(&t.rust_conninfo(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    let running = (0..400).any(|_| {
        let n = up.superuser_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE \
             'SELECT pg_sleep%'",
        );
        if n.trim() == "1" {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    assert!(running);
    relay.cut.notify_waiters();
    let outcome = tokio::time::timeout(GUARD, sleeping)
        .await
        .unwrap()
        .unwrap();
    let e = outcome.expect_err("the query fails");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("a server error: {e:?}"));
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert_eq!(db.severity(), "FATAL");
    for part in [
        "lost the link to the database fake-rds.test:5432 via the test's cuttable relay",
        "may or may not have run",
        "reconnect",
    ] {
        assert!(db.message().contains(part), "{part:?} missing: {db:?}");
    }
    let _ = conn.await;
    // New connections go through a fresh relay connection.
    let up = Arc::new(up);
    still_serving(proxy.addr.port(), &up, &up.iam_users[0]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_parameters_reach_the_database_with_the_db_user() {
    let up = RdsLikePostgres::start();
    let iam = up.iam_users[1].clone();
    let db_user = iam.clone();
    let proxy = RunningProxy::start(&up.spec(), move |c| {
        c.engine = Engine::Postgres;
        c.db_user = Some(db_user);
    })
    .await;
    // The client names another user; --db-user wins. Its application_name and options go on.
    let t = target(proxy.addr.port(), &up, "someone-else");
    let out = blocking(move || {
        psql_at(&t)
            .env("PGAPPNAME", "my-app")
            .env("PGOPTIONS", "-c search_path=custom_path")
            .args([
                "-c",
                "SELECT current_user, current_setting('application_name'), current_setting('search_path')",
            ])
            .output()
            .unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{iam}|my-app|custom_path")
    );
    // A 3.2 StartupMessage (PostgreSQL 18's) reaches the server, which answers with
    // NegotiateProtocolVersion (this one speaks 3.0), relayed before AuthenticationOk.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut m = BytesMut::new();
    StartupMessage::new(ProtocolVersion::V3_2, "x", &[("database", &up.database)])
        .encode(&mut m)
        .unwrap();
    s.write_all(&m).await.unwrap();
    let mut buf = BytesMut::new();
    let mut tags = Vec::new();
    while !tags.contains(&b'Z') {
        tokio::time::timeout(GUARD, s.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        while let Some(m) = take_message(&mut buf, MAX_LOGIN_MESSAGE_LEN).unwrap() {
            tags.push(m.tag);
        }
    }
    assert_eq!(&tags[..2], b"vR", "{tags:?}");
    assert!(tags.contains(&b'K') && tags.contains(&b'S'), "{tags:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_password_is_proved_with_scram_never_sent_in_clear() {
    let up = RdsLikePostgres::start();
    let proxy = RunningProxy::start(&up.spec(), |c| {
        c.engine = Engine::Postgres;
        c.local_password = Some(rds_iam_proxy::proxy::LocalPassword::new("s3cret pw"));
    })
    .await;
    let user = up.iam_users[0].clone();
    let t = target(proxy.addr.port(), &up, &user);
    let run = |password: Option<&'static str>| {
        let t = t.clone();
        blocking(move || {
            let mut c = psql_at(&t);
            c.args(["-w", "-c", "SELECT current_user"]);
            if let Some(p) = password {
                c.env("PGPASSWORD", p);
            }
            c.output().unwrap()
        })
    };
    let right = run(Some("s3cret pw")).await;
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&right.stdout).trim(), user);
    // No password: libpq is asked for one (SASL) and has none.
    let none = run(None).await;
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no password supplied"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    let wrong = run(Some("guess")).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        stderr.contains("rds-iam-proxy: wrong local password")
            && stderr.contains("--local-password"),
        "{stderr}"
    );
    // The peer is locked out for a moment: the next try is refused unchecked.
    let locked = run(Some("s3cret pw")).await;
    let stderr = String::from_utf8_lossy(&locked.stderr);
    assert!(
        stderr.contains("too many wrong local passwords"),
        "{stderr}"
    );
    let stats = proxy.proxy.stats();
    assert_eq!(stats.logins.load(Ordering::Relaxed), 1);
    proxy.stop().await;
}

/// The binary for `up` dialling it directly, configured through its environment.
fn direct_cmd(up: &RdsLikePostgres) -> Command {
    let mut cmd: Command = isolated_cmd();
    cmd.env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("RDS_IAM_PROXY_DB_ENDPOINT", up.endpoint())
        .env("RDS_IAM_PROXY_DIAL", up.dial_addr())
        .env("RDS_IAM_PROXY_REGION", &up.region)
        .env("RDS_IAM_PROXY_CA_BUNDLE", &up.ca)
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_psql_with_libpq_variables_and_dsn_prints_postgres_forms() {
    let up = RdsLikePostgres::start();
    let user = up.iam_users[0].clone();
    let mut cmd = direct_cmd(&up);
    cmd.env("PGDATABASE", &up.database)
        .env("PGPASSWORD", "never-sent")
        .args(["exec", "--db-user", &user, "--"])
        .args([
            "psql",
            "-XAt",
            "-c",
            "SELECT current_user || ' ' || current_setting('port')",
        ]);
    let out = blocking(move || cmd.output().unwrap()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("{user} ")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A failing statement: psql's own exit code comes back.
    let mut cmd = direct_cmd(&up);
    cmd.env("PGDATABASE", &up.database)
        .args(["exec", "--db-user", &user, "--"])
        .args([
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT nonsense",
        ]);
    let out = blocking(move || cmd.output().unwrap()).await;
    assert_eq!(out.status.code(), Some(1), "the client's exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));

    // dsn: the engine follows the port (5432), and so does the default listen address.
    let mut cmd = direct_cmd(&up);
    cmd.env_remove("RDS_IAM_PROXY_LISTEN").args([
        "dsn",
        "--db-user",
        &user,
        "--database",
        "proxytest",
    ]);
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "postgres://iamuser@127.0.0.1:5432/proxytest",
        "host=127.0.0.1 port=5432 user='iamuser' dbname='proxytest'",
        "jdbc:postgresql://127.0.0.1:5432/proxytest?user=iamuser&sslmode=disable",
        "PGHOST=127.0.0.1",
        "PGPORT=5432",
        "PGUSER=iamuser",
        "PGDATABASE=proxytest",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_every_hop_to_select_1_with_the_engine_from_discovery() {
    // A port that is not 5432: PostgreSQL is what RDS says the cluster runs.
    let up = RdsLikePostgres::start_with(&PgStartOptions {
        endpoint_port: Some(6543),
        ..PgStartOptions::default()
    });
    let world = serde_json::json!({
        "account": "123456789012",
        "region": up.region,
        "caller": {"arn": "arn:aws:iam::123456789012:user/dev"},
        "db_clusters": [{
            "identifier": "pgdb",
            "endpoint": up.endpoint_host,
            "port": up.endpoint_port,
            "engine": "aurora-postgresql",
        }],
    });
    let sim = SimServer::start(SimConfig {
        aws_world: Some(ssm_sim::aws::AwsWorld::from_json(&world.to_string()).unwrap()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut cmd: Command = isolated_cmd();
    cmd.env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("AWS_REGION", &up.region)
        .env("AWS_ENDPOINT_URL", sim.endpoint_url())
        .env("RDS_IAM_PROXY_CA_BUNDLE", &up.ca)
        .env("RDS_IAM_PROXY_DIAL", up.dial_addr())
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0")
        .args([
            "doctor",
            "--db-cluster",
            "pgdb",
            "--db-user",
            &up.iam_users[0],
        ]);
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut at = 0;
    for hop in [
        "✓ AWS credentials: arn:aws:iam::123456789012:user/dev",
        "✓ database endpoint: fake-rds.test:6543",
        "✓ reach the database:",
        "(server 15.",
        "✓ TLS: verified fake-rds.test",
        "✓ IAM token: accepted for user iamuser",
        "✓ SELECT 1: returned 1",
    ] {
        let found = text[at..]
            .find(hop)
            .unwrap_or_else(|| panic!("missing or out of order: {hop:?} in:\n{text}"));
        at += found + hop.len();
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tls_serves_clients_that_require_tls_and_direct_tls() {
    let up = RdsLikePostgres::start();
    let proxy = RunningProxy::start(&up.spec(), |c| {
        c.engine = Engine::Postgres;
        c.local_tls = true;
    })
    .await;
    let t = target(proxy.addr.port(), &up, &up.iam_users[0]);
    let out = blocking(move || {
        let mut c = Command::new("psql");
        c.args(["-X", "-A", "-t", "-d"])
            .arg(format!("{} sslmode=require", t.conninfo()))
            .args(["-c", "\\conninfo", "-c", "SELECT current_user"])
            .env_remove("PGPASSWORD");
        c.output().unwrap()
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("SSL connection (protocol: TLSv1.3"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("iamuser"), "{stdout}");
    // PostgreSQL 17's direct TLS (libpq 18 in psycopg's wheel): ClientHello at once, ALPN
    // `postgresql`; the cancel request travels the same way.
    let t = target(proxy.addr.port(), &up, &up.iam_users[0]);
    let r = blocking(move || {
        psycopg_check_with(
            &t,
            1000,
            &["--sslmode", "require", "--sslnegotiation", "direct"],
        )
    })
    .await;
    assert_eq!(r.local_tls, Some(true), "{r:?}");
    assert_pg_report(&r, "iamuser", true, true);
    // Without --local-tls a client that requires TLS is told by libpq itself.
    let plain = RunningProxy::start(&up.spec(), postgres).await;
    let t = target(plain.addr.port(), &up, &up.iam_users[0]);
    let out = blocking(move || {
        let mut c = Command::new("psql");
        c.args(["-X", "-d"])
            .arg(format!("{} sslmode=require", t.conninfo()))
            .args(["-c", "SELECT 1"]);
        c.output().unwrap()
    })
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server does not support SSL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    plain.stop().await;
    proxy.stop().await;
}

/// Direct TCP that says it shares one transport (as an SSM session does), so that the proxy
/// drains the database leg into its spool whatever the client does.
struct SharedTcp(Direct);

impl Connector for SharedTcp {
    fn connect(&self) -> ConnectFuture<'_> {
        self.0.connect()
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn shared(&self) -> bool {
        true
    }
}

/// A client that logs in by hand (`StartupMessage`, messages up to `ReadyForQuery`).
async fn raw_login(port: u16, up: &RdsLikePostgres) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut m = BytesMut::new();
    StartupMessage::new(
        ProtocolVersion::V3_0,
        &up.iam_users[0],
        &[("database", &up.database)],
    )
    .encode(&mut m)
    .unwrap();
    s.write_all(&m).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        tokio::time::timeout(GUARD, s.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        while let Some(m) = take_message(&mut buf, MAX_LOGIN_MESSAGE_LEN).unwrap() {
            assert_ne!(m.tag, b'E', "login failed");
            if m.tag == b'Z' {
                assert!(buf.is_empty());
                return s;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_over_a_shared_transport_gets_a_fatal_at_a_message_boundary() {
    let up = RdsLikePostgres::start();
    let dir = std::env::temp_dir().join(format!(
        "rds-iam-proxy-pg-spool-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir(&dir).unwrap();
    let spool_dir = dir.clone();
    let connector = Arc::new(SharedTcp(Direct::new(up.dial_addr())));
    let proxy = RunningProxy::start_with(&up.spec(), connector, move |c| {
        c.engine = Engine::Postgres;
        c.spool = SpoolLimits {
            memory: 256 << 10,
            disk: 1 << 20,
            total_memory: 64 << 20,
            total_disk: 64 << 20,
        };
        c.spool_dir = Some(spool_dir);
    })
    .await;
    let mut s = raw_login(proxy.addr.port(), &up).await;
    // About 20 MB of COPY data, far beyond the 1.25 MiB the proxy may hold; then read nothing.
    let mut q = BytesMut::new();
    rds_iam_proxy::postgres::proto::frame::put_message(
        b'Q',
        b"COPY (SELECT repeat('x', 1000) FROM generate_series(1, 20000)) TO STDOUT\0",
        &mut q,
    );
    s.write_all(&q).await.unwrap();
    let stats = proxy.proxy.stats();
    let mut ended = false;
    for _ in 0..600 {
        if stats.stalled_ends.load(Ordering::Relaxed) == 1 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ended, "the proxy never gave up on the paused client");
    // Now read: whole messages up to the last one held, then the proxy's FATAL, then the end.
    let mut buf = BytesMut::new();
    let mut tags = Vec::new();
    let mut last = None;
    loop {
        let n = tokio::time::timeout(GUARD, s.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        while let Some(m) = take_message(&mut buf, 1 << 20).unwrap() {
            if m.tag == b'E' {
                last = Some(ErrorResponse::decode(&m.body).unwrap());
            }
            tags.push(m.tag);
        }
        if n == 0 {
            break;
        }
    }
    assert!(buf.is_empty(), "a cut message: {} bytes", buf.len());
    assert_eq!(tags.first(), Some(&b'H'), "CopyOutResponse first");
    assert_eq!(tags.last(), Some(&b'E'), "the FATAL last");
    assert!(tags[1..tags.len() - 1].iter().all(|t| *t == b'd'));
    assert!(tags.len() < 20_000, "the rest was discarded");
    let e = last.unwrap();
    assert_eq!(e.sqlstate().as_deref(), Some("08006"), "{e}");
    assert!(e.message().unwrap().contains("stopped reading"), "{e}");
    assert!(e.message().unwrap().contains("--stall-spool-memory"), "{e}");
    still_serving(proxy.addr.port(), &up, &up.iam_users[0]).await;
    proxy.stop().await;
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "spool files left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_iam_token_hop_when_the_token_is_rejected() {
    let up = RdsLikePostgres::start();
    let world = serde_json::json!({
        "account": "123456789012",
        "region": up.region,
        "caller": {"arn": "arn:aws:iam::123456789012:user/dev"},
    });
    let sim = SimServer::start(SimConfig {
        aws_world: Some(ssm_sim::aws::AwsWorld::from_json(&world.to_string()).unwrap()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut cmd = direct_cmd(&up);
    // Credentials the token checker does not know (the AWS mock accepts any).
    cmd.env(
        "AWS_SECRET_ACCESS_KEY",
        "wrongwrongwrongwrongwrongwrongwrongwrong",
    )
    .env("AWS_ENDPOINT_URL", sim.endpoint_url())
    .args(["doctor", "--db-user", &up.iam_users[0]]);
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("✓ reach the database:"), "{text}");
    assert!(text.contains("✓ TLS: verified fake-rds.test"), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("✗ IAM token:") && last.contains("rejected the IAM token"),
        "{text}"
    );
    assert!(!text.contains("SELECT 1"), "{text}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_password_logs_in_with_scram_and_a_wrong_one_names_the_secret() {
    let up = RdsLikePostgres::start();
    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pg-AbCdEf";
    const WRONG: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:old-AbCdEf";
    let secret = |password: &str| {
        serde_json::json!({"username": up.pw_user, "password": password}).to_string()
    };
    let world = serde_json::json!({
        "account": "123456789012",
        "region": up.region,
        "caller": {"arn": "arn:aws:iam::123456789012:user/dev"},
        "secrets": [
            {"name": "pg", "arn": ARN, "secret_string": secret(&up.pw_password)},
            {"name": "old", "arn": WRONG, "secret_string": secret("not-the-password")},
        ],
    });
    let sim = SimServer::start(SimConfig {
        aws_world: Some(ssm_sim::aws::AwsWorld::from_json(&world.to_string()).unwrap()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    for (arn, ok) in [(ARN, true), (WRONG, false)] {
        let mut cmd = direct_cmd(&up);
        cmd.env("AWS_ENDPOINT_URL", sim.endpoint_url())
            .args(["--secret", arn, "-vv"])
            .env("RUST_LOG", "trace");
        let proxy = ProxyProcess::spawn(cmd);
        // The client names anyone; the secret's user logs in (SCRAM-SHA-256 upstream).
        let t = target(proxy.port, &up, "anyone");
        let out = blocking(move || {
            psql_at(&t)
                .args(["-c", "SELECT current_user"])
                .output()
                .unwrap()
        })
        .await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        if ok {
            assert!(out.status.success(), "{stderr}");
            assert_eq!(stdout.trim(), up.pw_user);
        } else {
            assert!(!out.status.success());
            for part in [
                "refused the password of 'pwuser' from Secrets Manager secret",
                "rotated",
                "password authentication failed",
            ] {
                assert!(stderr.contains(part), "{part:?} missing: {stderr}");
            }
        }
        let (_, logs) = proxy.terminate();
        for shown in [&stdout, &stderr, &logs] {
            assert!(!shown.contains(&up.pw_password), "the password was shown");
        }
    }
    // doctor: the secret read, then the password login and SELECT 1.
    let mut cmd = direct_cmd(&up);
    cmd.env("AWS_ENDPOINT_URL", sim.endpoint_url())
        .args(["doctor", "--secret", ARN]);
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for hop in [
        "✓ password: user pwuser logged in with the password from Secrets Manager secret",
        "✓ SELECT 1: returned 1",
    ] {
        assert!(text.contains(hop), "{hop:?} missing:\n{text}");
    }
    assert!(!text.contains(&up.pw_password));
    sim.shutdown().await;
}

//! The login path at its edges (issue 11, code review M3, L1–L4, L9, L12, L17), against the
//! scripted upstream: a failed COM_CHANGE_USER ends the connection (as MySQL does); one pipelined
//! behind an unanswered command is refused without desynchronising; the proxy's ERR packets take
//! the sequence id after the command they answer (the SSLRequest case is in `bad_input.rs`);
//! wrong local passwords lock the peer out for a growing delay; logins past
//! `--max-pending-logins` are refused before any database connection is opened; user names are
//! escaped in ERR text.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::common::fake::*;
use bytes::{Bytes, BytesMut};
use rds_iam_proxy::iam::{self, AuthToken, TokenCache, TokenRequest, TokenSource};
use rds_iam_proxy::mysql::proto::{ComChangeUser, ErrPacket};
use rds_iam_proxy::proxy::LocalPassword;

/// The proxy's per-step login timeout in these tests.
const TIMEOUT: Duration = Duration::from_secs(2);

fn change_user(user: &str) -> Bytes {
    let cu = ComChangeUser {
        username: Bytes::copy_from_slice(user.as_bytes()),
        auth_response: Bytes::copy_from_slice(NATIVE_ANSWER),
        database: Bytes::new(),
        character_set: Some(255),
        auth_plugin_name: Some(Bytes::from_static(b"mysql_native_password")),
        connect_attrs: Some(client_attrs()),
    };
    let mut b = BytesMut::new();
    cu.encode(&mut b, mysql8_client_caps());
    b.freeze()
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
}

/// A token source that cannot mint for one user (as if that user's SSO role were gone) and
/// hands out the cache's tokens for everyone else.
struct FailsFor {
    inner: Arc<TokenCache>,
    user: &'static str,
}

impl TokenSource for FailsFor {
    fn token<'a>(
        &'a self,
        req: &'a TokenRequest,
    ) -> Pin<Box<dyn Future<Output = Result<AuthToken, iam::Error>> + Send + 'a>> {
        if req.user == self.user {
            return Box::pin(async {
                Err(iam::Error::SsoLoginRequired {
                    profile: Some("dev".into()),
                    context: String::new(),
                })
            });
        }
        self.inner.token(req)
    }

    fn invalidate(&self, req: &TokenRequest) {
        self.inner.invalidate(req)
    }
}

// ---------------------------------------------------------------------------------------------
// COM_CHANGE_USER with MySQL's semantics (L1, L2)
// ---------------------------------------------------------------------------------------------

/// The server refuses the new user but keeps the connection open: the proxy still ends it after
/// the ERR, so the client cannot go on as the previous user (open transaction included).
#[tokio::test]
async fn change_user_refused_by_the_server_ends_the_connection_even_if_the_server_keeps_it() {
    let h = Harness::start(|c| c.handshake_timeout = TIMEOUT).await;
    let (mut client, mut server, _) = h.logged_in().await;
    client.send(0, &change_user("bob")).await;
    server.expect_packet("COM_CHANGE_USER").await;
    server.switch_to_clear_password(1).await;
    verify_token(&server.read_token(2).await, "bob");
    let denied = ErrPacket::new(1045, b"28000", "Access denied for user 'bob'@'10.0.0.1'");
    server.send(3, &encode_err(&denied)).await;
    // The server does not close; the proxy must.
    let err = client.expect_err(1).await;
    assert_eq!(err.code, 1045);
    assert_contains(&err.message_str(), &["'bob'", "connection is closed"]);
    client
        .expect_closed("a failed change user ends the session")
        .await;
    server
        .expect_closed("the proxy closed the database leg")
        .await;
    drop((client, server));
    h.finish().await;
}

/// No token for the new user: ERR 1045 naming the user and the SSO login, then the close. Nothing
/// of the change reaches the database.
#[tokio::test]
async fn change_user_without_a_token_ends_the_connection() {
    let h = Harness::start_with(
        |c| c.handshake_timeout = TIMEOUT,
        |cache| {
            Arc::new(FailsFor {
                inner: cache,
                user: "bob",
            })
        },
    )
    .await;
    let (mut client, mut server, _) = h.logged_in().await;
    client.send(0, &change_user("bob")).await;
    let err = client.expect_err(1).await;
    assert_eq!((err.code, err.sql_state), (1045, Some(*b"28000")));
    assert_contains(
        &err.message_str(),
        &["'bob'", "aws sso login", "connection is closed"],
    );
    client
        .expect_closed("a failed change user ends the session")
        .await;
    server.expect_closed("nothing of the change upstream").await;
    drop((client, server));
    h.finish().await;
}

/// COM_QUERY and COM_CHANGE_USER in one write: the change is refused. The database gets the query
/// and nothing after it; the client reads the query's whole answer, then the ERR for the change
/// (seq 1), then the close. Before, the proxy read the query's answer as the change's reply.
#[tokio::test]
async fn change_user_pipelined_behind_a_query_is_refused_after_the_queries_answer() {
    let h = Harness::start(|c| c.handshake_timeout = TIMEOUT).await;
    let (mut client, mut server, _) = h.logged_in().await;
    let query = frame(0, b"\x03\x00\x01SELECT 1");
    let mut both = query.to_vec();
    both.extend_from_slice(&frame(0, &change_user("bob")));
    client.send_raw(&both).await;
    let q = server.expect_packet("the query").await;
    assert_eq!(q.raw, query);
    let rs = canned_result_set();
    server.send_raw(&rs).await;
    // The proxy sent nothing after the query and closed its writing side.
    server.expect_closed("no COM_CHANGE_USER upstream").await;
    drop(server);
    assert_eq!(
        client.read_exact_raw(rs.len()).await,
        rs,
        "the query's answer, whole"
    );
    let err = client.expect_err(1).await;
    assert_eq!(err.code, 1043);
    assert_contains(
        &err.message_str(),
        &[
            "COM_CHANGE_USER arrived before the answer",
            "not made",
            "closed",
        ],
    );
    client.expect_closed("after the refusal").await;
    drop(client);
    h.finish().await;
}

/// A client that sends COM_CHANGE_USER while a result set is still arriving (its first packets
/// already relayed, so the proxy thought the command answered): the next "reply" the proxy reads
/// is a row with sequence id 3, not the change's seq 1, so the connection is ended instead of
/// relaying a row as a login reply.
#[tokio::test]
async fn change_user_sent_in_the_middle_of_an_answer_ends_the_connection() {
    let h = Harness::start(|c| c.handshake_timeout = TIMEOUT).await;
    let (mut client, mut server, _) = h.logged_in().await;
    client.send(0, b"\x03\x00\x01SELECT 1").await;
    server.expect_packet("the query").await;
    // Column count (seq 1) and definition (seq 2) only; the row and the EOF come later.
    server.send(1, b"\x01").await;
    server
        .send(
            2,
            b"\x03def\x00\x00\x00\x011\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00",
        )
        .await;
    client.expect_packet("column count").await;
    client.expect_packet("column definition").await;
    client.send(0, &change_user("bob")).await;
    server.expect_packet("COM_CHANGE_USER").await;
    server.send(3, b"\x011").await;
    client
        .expect_closed("the proxy gave up rather than desynchronise")
        .await;
    server.expect_closed("the database leg closed").await;
    drop((client, server));
    h.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Sequence ids of the proxy's own ERR packets (L3)
// ---------------------------------------------------------------------------------------------

/// A 3-packet command (16 MiB − 1, 16 MiB − 1, then 5 bytes; seq 0, 1, 2) whose database leg is
/// lost: the proxy's ERR answers at seq 3, not 1 ("Got packets out of order" otherwise).
#[tokio::test]
async fn link_lost_err_after_a_multi_packet_command_takes_the_next_sequence_id() {
    let h = Harness::start(|c| c.handshake_timeout = TIMEOUT).await;
    let (mut client, mut server, _) = h.logged_in().await;
    const FULL: usize = 0xFF_FFFF;
    let mut bytes = Vec::with_capacity(2 * (FULL + 4) + 9);
    bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0]);
    bytes.push(0x03);
    bytes.resize(4 + FULL, b'a');
    bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 1]);
    bytes.resize(2 * (4 + FULL), b'b');
    bytes.extend_from_slice(&frame(2, b"tail!"));
    let total = bytes.len();
    let sending = tokio::spawn(async move {
        client.send_raw(&bytes).await;
        client
    });
    server.read_exact_raw(total).await;
    let mut client = sending.await.expect("client task");
    drop(server);
    let err = client.expect_err(3).await;
    assert_eq!(err.code, 1105);
    assert_contains(&err.message_str(), &["lost the link"]);
    drop(client);
    h.finish().await;
}

/// LOAD DATA LOCAL: the statement, the server's file request, the file, its empty end packet
/// (seq 3) — and the database gone before its OK. The client waits for that OK, so the proxy
/// answers it at seq 4. Before, the file's end did not count as awaiting an answer at all.
#[tokio::test]
async fn link_lost_during_load_data_is_answered_after_the_file() {
    let h = Harness::start(|c| c.handshake_timeout = TIMEOUT).await;
    let (mut client, mut server, _) = h.logged_in().await;
    client
        .send(0, b"\x03\x00\x01LOAD DATA LOCAL INFILE 'f' INTO TABLE t")
        .await;
    server.expect_packet("the statement").await;
    server.send(1, b"\xfbf").await;
    client.expect_packet("the file request").await;
    client.send(2, b"1,2\n").await;
    client.send(3, b"").await;
    server.expect_packet("file data").await;
    server.expect_packet("end of file").await;
    drop(server);
    let err = client.expect_err(4).await;
    assert_eq!(err.code, 1105);
    drop(client);
    h.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Local password throttle (L12)
// ---------------------------------------------------------------------------------------------

async fn local_password_login(h: &Harness, password: &str) -> (TestClient, ServerConn) {
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    let (g, _) = client.read_greeting().await;
    let answer =
        rds_iam_proxy::mysql::proto::scramble::native_scramble(password, &g.auth_plugin_data);
    client
        .send_response(&client_response(
            "iamuser",
            "mysql_native_password",
            &answer,
        ))
        .await;
    (client, server)
}

/// A wrong local password locks the peer out for a second: a right password sent within it is
/// refused without being checked (so parallel guesses gain nothing), and is accepted after it.
/// A second wrong one doubles the lockout.
#[tokio::test]
async fn wrong_local_passwords_lock_the_peer_out_for_a_growing_delay() {
    let h = Harness::start(|c| {
        c.handshake_timeout = TIMEOUT;
        c.local_password = Some(LocalPassword::new("s3cret"));
    })
    .await;
    let (mut client, _server) = local_password_login(&h, "guess").await;
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1045);
    assert_contains(
        &err.message_str(),
        &["wrong or missing local password", "after 1s"],
    );

    let (mut client, _server) = local_password_login(&h, "s3cret").await;
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1045);
    assert_contains(
        &err.message_str(),
        &["too many wrong local passwords", "not checked"],
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut client, _server) = local_password_login(&h, "guess2").await;
    let err = client.expect_err(2).await;
    assert_contains(&err.message_str(), &["after 2s"]);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut client, mut server) = local_password_login(&h, "s3cret").await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    server.read_response().await;
    server.switch_to_clear_password(3).await;
    server.read_token(4).await;
    server.send(5, PLAIN_OK).await;
    let ok = client.expect_packet("OK").await;
    assert_eq!(&ok.payload[..], PLAIN_OK);
    drop((client, server));
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (1, 3), "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Pending logins (M3)
// ---------------------------------------------------------------------------------------------

/// With `--max-pending-logins 2`, two clients that connect and say nothing hold both places; a
/// third is refused at once with ERR 1040 as packet 0 naming the flag and /readiness, and no
/// database connection is opened for it. A place freed by a login is reused.
#[tokio::test]
async fn logins_past_the_pending_cap_are_refused_before_any_database_connection() {
    let h = Harness::start(|c| {
        c.handshake_timeout = Duration::from_secs(10);
        c.max_pending_logins = 2;
    })
    .await;
    let (mut c1, mut s1) = h.pair().await;
    let (_c2, mut s2) = h.pair().await;
    s1.greet(&mysql84_greeting()).await;
    s2.greet(&mysql84_greeting()).await;
    c1.read_greeting().await;

    let mut third = h.client().await;
    let p = third.expect_packet("ERR in place of a greeting").await;
    assert_eq!(p.seq, 0);
    let err = ErrPacket::decode(&p.payload).expect("ERR");
    assert_eq!(err.code, 1040);
    assert_contains(&err.message_str(), &["--max-pending-logins", "/readiness"]);
    third.expect_closed("refused").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), h.upstream.accept())
            .await
            .is_err(),
        "a database connection was opened for a refused client"
    );

    // The first client logs in; its place frees, and a new client gets a greeting.
    c1.send_response(&client_response("iamuser", "mysql_native_password", b""))
        .await;
    s1.read_ssl_request().await;
    s1.start_tls(h.pki.good.clone()).await.expect("TLS");
    s1.read_response().await;
    s1.switch_to_clear_password(3).await;
    s1.read_token(4).await;
    s1.send(5, PLAIN_OK).await;
    c1.expect_packet("OK").await;
    let (mut c4, mut s4) = h.pair().await;
    s4.greet(&mysql84_greeting()).await;
    c4.read_greeting().await;
    let stats = h.stats();
    assert_eq!(
        h.proxy
            .stats()
            .refused_pending
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(stats.logins, 1);
}

// ---------------------------------------------------------------------------------------------
// Client-chosen text is escaped (L17)
// ---------------------------------------------------------------------------------------------

/// A user name with a newline and an escape sequence: the ERR text shows them escaped, never raw.
#[tokio::test]
async fn user_names_are_escaped_in_err_text() {
    let h = Harness::start(|c| c.handshake_timeout = TIMEOUT).await;
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    let user = "eve\nINFO forged line\x1b[31m";
    client
        .send_response(&client_response(user, "mysql_native_password", b""))
        .await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    server.read_response().await;
    let mut switch = b"\xfecaching_sha2_password\0".to_vec();
    switch.extend_from_slice(UPSTREAM_SCRAMBLE);
    switch.push(0);
    server.send(3, &switch).await;
    let err = client.expect_err(2).await;
    let msg = err.message_str();
    assert!(
        !msg.contains('\n') && !msg.contains('\x1b'),
        "raw control characters: {msg:?}"
    );
    assert_contains(&msg, &[r"'eve\nINFO forged line\u{1b}[31m'"]);
    drop((client, server));
    h.finish().await;
}

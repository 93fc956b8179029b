//! The database leg dies after login. A client waiting for an answer of which it has had nothing
//! yet gets a MySQL ERR from the proxy (sequence id 1, a server-range code, SQLSTATE 08S01) that
//! names the hop, then a close; a client whose answer was already under way, an idle client, a
//! command the server never answers and a pipelining client get the bare close, never bytes
//! written into the middle of an answer. The proxy keeps serving after each case.

use crate::common::fake::*;
use bytes::Bytes;
use rds_iam_proxy::mysql::proto::ErrPacket;

/// `COM_QUERY SELECT 1` with an empty query-attributes prefix (the client announced
/// QUERY_ATTRIBUTES).
const SELECT_1: &[u8] = b"\x03\x00\x01SELECT 1";

/// The proxy answered the waiting command with the link-lost ERR and closed.
async fn assert_link_lost_err(client: &mut TestClient, h: &Harness) -> ErrPacket {
    let err = client.expect_err(1).await;
    assert_eq!(
        err.code, 1105,
        "a server-range code (2xxx is dropped by libmariadb)"
    );
    assert_eq!(
        err.sql_state.as_ref(),
        Some(b"08S01"),
        "communication link failure"
    );
    let msg = err.message_str();
    for part in [
        "rds-iam-proxy",
        "lost the link to the database mysql8.test:3306",
        &format!("via tcp {}", h.upstream.addr),
        "the database closed the connection",
        "may or may not have run",
        "reconnect",
    ] {
        assert!(msg.contains(part), "message lacks {part:?}: {msg}");
    }
    err
}

/// Closes the client, runs a good session, stops the proxy, and checks nothing is left open.
async fn still_serving(h: Harness, client: TestClient) {
    drop(client);
    h.good_session().await;
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (2, 0), "{stats:?}");
}

/// A command answered, a second one sent, and the database gone before any of its answer: the
/// client reads the first answer whole, then the proxy's ERR for the second.
#[tokio::test]
async fn waiting_command_gets_an_err_naming_the_hop() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server, _) = h.logged_in().await;
    client.send(0, SELECT_1).await;
    server.expect_packet("first COM_QUERY").await;
    let rs = canned_result_set();
    server.send_raw(&rs).await;
    assert_eq!(client.read_exact_raw(rs.len()).await, rs);

    client.send(0, SELECT_1).await;
    let q = server.expect_packet("second COM_QUERY").await;
    assert_eq!(q.raw, frame(0, SELECT_1));
    drop(server);
    assert_link_lost_err(&mut client, &h).await;
    still_serving(h, client).await;
}

/// The answer had started (a whole packet, then half of the next) when the database went away:
/// the client gets exactly what the server sent and then the close, nothing written by the proxy.
#[tokio::test]
async fn answer_under_way_is_never_cut_into() {
    // After the first packet (`01 00 00 01 01`), and inside the second.
    for cut in [5, 5 + 4 + 3] {
        let h = Harness::start(|_| {}).await;
        let (mut client, mut server, _) = h.logged_in().await;
        client.send(0, SELECT_1).await;
        server.expect_packet("COM_QUERY").await;
        let rs = canned_result_set();
        let part = rs.slice(..cut);
        server.send_raw(&part).await;
        assert_eq!(client.read_exact_raw(cut).await, part, "cut at {cut}");
        drop(server);
        // Not one byte more than the server sent.
        match client.next().await {
            Err(Closed::Eof) => {}
            Err(Closed::Error(e)) => panic!("cut at {cut}: bytes after the cut: {e}"),
            Ok(p) => panic!(
                "cut at {cut}: the proxy wrote into the answer: seq {} {:02x?}",
                p.seq, &p.payload
            ),
        }
        still_serving(h, client).await;
    }
}

/// No command waits: the database closing is passed on as a close.
#[tokio::test]
async fn idle_connection_is_closed_without_an_err() {
    let h = Harness::start(|_| {}).await;
    let (mut client, server, _) = h.logged_in().await;
    drop(server);
    client
        .expect_closed("the database closed an idle session")
        .await;
    still_serving(h, client).await;
}

/// COM_STMT_CLOSE has no answer: an ERR after it would be taken as the answer to the client's
/// next command.
#[tokio::test]
async fn command_without_an_answer_is_not_answered() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server, _) = h.logged_in().await;
    let close = Bytes::from_static(b"\x19\x01\x00\x00\x00");
    client.send(0, &close).await;
    let p = server.expect_packet("COM_STMT_CLOSE").await;
    assert_eq!(p.payload, close);
    drop(server);
    client.expect_closed("nothing was waiting").await;
    still_serving(h, client).await;
}

/// A client that sends its next command before the previous answer: the proxy can no longer tell
/// where an answer would begin, so it never answers for the server on that connection.
#[tokio::test]
async fn pipelining_client_is_never_answered_for_the_server() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server, _) = h.logged_in().await;
    let mut two = frame(0, SELECT_1).to_vec();
    two.extend_from_slice(&frame(0, SELECT_1));
    client.send_raw(&two).await;
    server.expect_packet("first COM_QUERY").await;
    server.expect_packet("second COM_QUERY").await;
    let rs = canned_result_set();
    let both = [rs.clone(), rs].concat();
    server.send_raw(&both).await;
    assert_eq!(client.read_exact_raw(both.len()).await, both);
    // Even one command at a time from now on: the connection stays in doubt.
    client.send(0, SELECT_1).await;
    server.expect_packet("third COM_QUERY").await;
    drop(server);
    client.expect_closed("pipelined commands").await;
    still_serving(h, client).await;
}

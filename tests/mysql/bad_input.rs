//! Hostile or broken input from either side of the proxy. Each case must end that one connection
//! with a clear MySQL ERR (or a clean close where no reply is possible), send nothing it should
//! not (no token without verified TLS), and leave the proxy serving: after every case a full good
//! session runs through the same proxy, and the counters show one failure, one login and no
//! connection left open.

use std::time::Duration;

use crate::common::fake::*;
use bytes::{Bytes, BytesMut};
use rds_iam_proxy::mysql::proto::{Capabilities, ErrPacket, SslRequest};

/// The proxy's per-step login timeout in these tests.
const TIMEOUT: Duration = Duration::from_secs(2);

async fn harness() -> Harness {
    Harness::start(|c| c.handshake_timeout = TIMEOUT).await
}

/// A harness, a client that has read the local greeting, and the upstream leg the proxy opened.
async fn greeted() -> (Harness, TestClient, ServerConn) {
    let h = harness().await;
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    (h, client, server)
}

/// The upstream leg of a connection the client broke before its login went upstream: the proxy
/// does not drop it mid-handshake (the server would count that toward `max_connect_errors`); it
/// completes the handshake itself, over verified TLS, as the unused-connection user with no
/// password and no token, takes the server's access denied, and closes. Nothing of the broken
/// client's bytes reaches the server.
async fn upstream_untouched(mut server: ServerConn, pki: &Pki) {
    let ssl = server.read_ssl_request().await;
    assert!(ssl.capabilities.contains(Capabilities::SSL));
    server.start_tls(pki.good.clone()).await.expect("TLS");
    unused_login_refused(server).await;
}

/// The rest of [`upstream_untouched`] once TLS is up: the unused-connection login (no password,
/// no attributes) is refused by the server, and the proxy closes.
async fn unused_login_refused(mut server: ServerConn) {
    let r = server.read_response().await;
    assert_eq!(&r.username[..], b"rds-iam-proxy-unused-connection");
    assert!(
        r.auth_response.is_empty(),
        "a password for an unused connection"
    );
    assert!(r.connect_attrs.is_none() && r.database.is_none());
    let denied = ErrPacket::new(
        1045,
        b"28000",
        "Access denied for user 'rds-iam-proxy-unused-connection'",
    );
    server.send(3, &encode_err(&denied)).await;
    server.expect_closed("after the access denied").await;
}

/// Runs a good session through the same proxy, stops it, and checks the counters: the bad case
/// counted as one failure, the good one as a login, nothing left open.
async fn still_serving(h: Harness) {
    h.good_session().await;
    let stats = h.finish().await;
    assert_eq!(
        (stats.total, stats.logins, stats.login_failures, stats.open),
        (2, 1, 1, 0),
        "{stats:?}"
    );
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
}

fn login(user: &str) -> Bytes {
    encode_response(&client_response(user, "mysql_native_password", b""))
}

/// The upstream asserts what it saw never carried the token in cleartext.
fn no_token_in_cleartext(server: &ServerConn) {
    let raw = server.raw_received();
    for needle in [&b"Action=connect"[..], b"X-Amz-", b"rds-db"] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "token material in cleartext upstream"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The client side
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_sends_a_garbage_login_packet() {
    let (h, mut client, server) = greeted().await;
    client.send(1, b"\x01\x02\x03hello").await;
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1043, Some(*b"08S01")));
    assert_contains(
        &err.message_str(),
        &["rds-iam-proxy", "malformed login packet", "truncated"],
    );
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

#[tokio::test]
async fn client_speaks_http_instead_of_mysql() {
    let (h, mut client, server) = greeted().await;
    client
        .send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    // "GET " read as a header announces 5,522,759 bytes: refused at once, not awaited.
    let p = client.expect_packet("ERR").await;
    let err = ErrPacket::decode(&p.payload).expect("ERR");
    assert_eq!(err.code, 1043);
    assert_contains(
        &err.message_str(),
        &["bad packet from the client", "exceeds"],
    );
    client.expect_closed("after ERR").await;
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

/// A header announcing 16 MiB − 1 bytes is refused from the header alone: the proxy answers while
/// the payload is still missing (so it did not wait to buffer it), at the sequence id after the
/// client's.
#[tokio::test]
async fn client_announces_a_16_mib_login_packet() {
    let (h, mut client, server) = greeted().await;
    let mut bytes = vec![0xFF, 0xFF, 0xFF, 0x01];
    bytes.extend_from_slice(&[0x41; 100]);
    client.send_raw(&bytes).await;
    let p = client.expect_packet("ERR").await;
    let err = ErrPacket::decode(&p.payload).expect("ERR");
    assert_eq!(err.code, 1043);
    assert_contains(
        &err.message_str(),
        &["bad packet from the client", "16777215", "exceeds"],
    );
    assert!(
        !err.message_str().contains("within"),
        "the proxy waited for the payload: {}",
        err.message_str()
    );
    client.expect_closed("after ERR").await;
    upstream_untouched(server, &h.pki).await;
    // The client's packet was seq 1; an ERR at seq 1 is "packets out of order" to libmysqlclient,
    // Connector/C and PyMySQL, which then drop the message.
    assert_eq!(p.seq, 2, "ERR sequence id after the client's seq-1 packet");
    still_serving(h).await;
}

#[tokio::test]
async fn client_sends_only_the_fixed_head_of_its_login() {
    let (h, mut client, server) = greeted().await;
    let full = login("iamuser");
    client.send(1, &full[..32]).await;
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1043, Some(*b"08S01")));
    assert_contains(
        &err.message_str(),
        &["malformed login packet", "truncated", "username"],
    );
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

#[tokio::test]
async fn client_closes_in_the_middle_of_its_login_packet() {
    let (h, mut client, server) = greeted().await;
    let full = frame(1, &login("iamuser"));
    client.send_raw(&full[..full.len() / 2]).await;
    client.shutdown_write().await;
    // Nobody to tell: the proxy just closes.
    client.expect_closed("client went away mid-packet").await;
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

/// The client asks for TLS although the greeting offered none: the proxy completes a TLS
/// handshake with a throwaway certificate just to deliver the ERR (seq 3, after the client's login
/// at seq 2), so the client shows "--local-tls" instead of "wrong version number". Nothing reaches
/// the database.
#[tokio::test]
async fn client_asks_for_tls_when_local_tls_is_off() {
    let (h, mut client, server) = greeted().await;
    let ssl = SslRequest {
        capabilities: mysql8_client_caps() | Capabilities::SSL,
        max_packet_size: 16 * 1024 * 1024,
        character_set: 255,
    };
    let mut payload = BytesMut::new();
    ssl.encode(&mut payload);
    client.send(1, &payload).await;
    client
        .start_tls(None)
        .await
        .expect("TLS to deliver the ERR");
    let mut r = client_response("iamuser", "mysql_native_password", NATIVE_ANSWER);
    r.capabilities = r.capabilities | Capabilities::SSL;
    client.send(2, &encode_response(&r)).await;
    let err = client.expect_err(3).await;
    assert_eq!((err.code, err.sql_state), (1043, Some(*b"08S01")));
    assert_contains(
        &err.message_str(),
        &["asked for TLS", "--local-tls", "--ssl-mode=DISABLED"],
    );
    drop(client);
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

#[tokio::test]
async fn client_never_sends_its_login() {
    let (h, mut client, server) = greeted().await;
    let p = client.expect_packet("ERR after the timeout").await;
    let err = ErrPacket::decode(&p.payload).expect("ERR");
    assert_eq!(err.code, 1043);
    assert_contains(
        &err.message_str(),
        &["did not send its login response within 2s"],
    );
    client.expect_closed("after ERR").await;
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

#[tokio::test]
async fn client_without_protocol_41() {
    let (h, mut client, server) = greeted().await;
    let mut r = client_response("iamuser", "mysql_native_password", NATIVE_ANSWER);
    r.capabilities = r.capabilities - Capabilities::PROTOCOL_41;
    client.send(1, &encode_response(&r)).await;
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1043);
    assert_contains(&err.message_str(), &["PROTOCOL_41"]);
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

#[tokio::test]
async fn client_without_a_user_name() {
    let (h, mut client, server) = greeted().await;
    client.send(1, &login("")).await;
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1045, Some(*b"28000")));
    assert_contains(&err.message_str(), &["IAM database user name", "--db-user"]);
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

/// With `--local-tls`, a client that asks for TLS and then sends plaintext gets at most a TLS
/// alert (never a MySQL packet in the clear) and the close; nothing goes upstream.
#[tokio::test]
async fn client_sends_garbage_instead_of_a_tls_client_hello() {
    let h = Harness::start(|c| {
        c.handshake_timeout = TIMEOUT;
        c.local_tls = true;
    })
    .await;
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    let ssl = SslRequest {
        capabilities: mysql8_client_caps() | Capabilities::SSL,
        max_packet_size: 16 * 1024 * 1024,
        character_set: 255,
    };
    let mut payload = BytesMut::new();
    ssl.encode(&mut payload);
    let mut bytes = frame(1, &payload).to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    client.send_raw(&bytes).await;
    let reply = client.read_until_closed().await;
    assert!(
        reply.is_empty() || (reply[0] == 0x15 && reply[1] == 0x03),
        "expected nothing or a TLS alert record, got {:02x?}",
        &reply[..reply.len().min(32)]
    );
    upstream_untouched(server, &h.pki).await;
    still_serving(h).await;
}

/// A malformed COM_CHANGE_USER after login (a user name without its NUL) is answered with an ERR
/// and the connection ends, as MySQL does after any failed change user: the session never goes on
/// as the previous user. Nothing reaches the database.
#[tokio::test]
async fn client_sends_a_malformed_change_user_and_is_disconnected() {
    let h = harness().await;
    let (mut client, mut server, _) = h.logged_in().await;
    client.send(0, b"\x11bob-without-a-terminator").await;
    let p = client.expect_packet("ERR").await;
    assert_eq!(p.seq, 1);
    let err = ErrPacket::decode(&p.payload).expect("ERR");
    assert_eq!((err.code, err.sql_state), (1043, Some(*b"08S01")));
    assert_contains(
        &err.message_str(),
        &["malformed COM_CHANGE_USER", "connection is closed"],
    );
    client
        .expect_closed("a failed change user ends the session")
        .await;
    server
        .expect_closed("nothing of the broken COM_CHANGE_USER upstream")
        .await;
    drop((client, server));
    let stats = h.finish().await;
    assert_eq!(
        (stats.total, stats.logins, stats.login_failures, stats.open),
        (1, 1, 0, 0),
        "{stats:?}"
    );
}

/// A COM_CHANGE_USER announcing 1 MiB (the proxy buffers at most 128 KiB of one) ends that
/// connection from its header alone; none of it reaches the database.
#[tokio::test]
async fn client_announces_an_oversized_change_user_and_is_disconnected() {
    let h = harness().await;
    let (mut client, mut server, _) = h.logged_in().await;
    let mut head = vec![0x00, 0x00, 0x10, 0x00, 0x11];
    head.extend_from_slice(&[b'x'; 64]);
    client.send_raw(&head).await;
    // A forwarded header would leave a partial packet here, which expect_closed refuses.
    server.expect_closed("connection ended").await;
    drop(server);
    let rest = client.read_until_closed().await;
    assert!(rest.is_empty(), "{rest:02x?}");
    let stats = h.finish().await;
    assert_eq!(
        (stats.total, stats.logins, stats.open),
        (1, 1, 0),
        "{stats:?}"
    );
}

/// A client that sends its login one byte a second. Each byte arrives well inside the login
/// timeout, so only a deadline for the whole packet can end it; returns how many bytes it managed
/// to send, the packet's length, and what the proxy answered.
async fn trickle_login(mut client: TestClient) -> (usize, usize, RawPacket) {
    client.read_greeting().await;
    let bytes = frame(1, &login("iamuser"));
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            p = client.next() => {
                let p = p.expect("an ERR before the close");
                client.expect_closed("after the timeout ERR").await;
                return (sent, bytes.len(), p);
            }
            _ = tick.tick(), if sent < bytes.len() => {
                if client.try_send_raw(&bytes[sent..sent + 1]).await.is_err() {
                    // The proxy gave up between two bytes; its ERR is waiting to be read.
                    sent = bytes.len();
                } else {
                    sent += 1;
                }
            }
        }
    }
}

/// Slow-loris clients trickling their logins are cut at the login timeout (a deadline for the
/// whole packet, not an idle timer that each byte resets), while a normal client logs in and
/// works next to them.
#[tokio::test]
async fn clients_trickling_a_byte_a_second_are_cut_at_the_login_timeout_while_others_are_served() {
    const SLOW: usize = 3;
    let h = harness().await;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let (client, mut server) = h.pair().await;
        server.greet(&mysql84_greeting()).await;
        slow.push((tokio::spawn(trickle_login(client)), server));
    }
    assert_eq!(h.stats().open as usize, SLOW, "the slow logins are pending");
    h.good_session().await;
    for (task, server) in slow {
        let (sent, len, p) = task.await.expect("trickler");
        assert!(
            sent < len,
            "the whole {len}-byte login got through ({sent} bytes)"
        );
        let err = ErrPacket::decode(&p.payload).expect("ERR");
        assert_eq!(err.code, 1043);
        assert_contains(
            &err.message_str(),
            &["did not send its login response within 2s"],
        );
        upstream_untouched(server, &h.pki).await;
    }
    let stats = h.finish().await;
    assert_eq!(
        (stats.total, stats.logins, stats.login_failures, stats.open),
        (SLOW as u64 + 1, 1, SLOW as u64, 0),
        "{stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The upstream side before TLS: the client gets the ERR in place of the greeting (seq 0)
// ---------------------------------------------------------------------------------------------

/// The client's view when the upstream fails before the proxy could greet: an ERR as packet #0
/// without SQLSTATE (capabilities are not agreed yet), then close.
async fn err_instead_of_greeting(client: &mut TestClient) -> ErrPacket {
    let err = client.expect_err(0).await;
    assert_eq!(err.sql_state, None, "no SQLSTATE before the greeting");
    err
}

#[tokio::test]
async fn upstream_closes_right_after_accept() {
    let h = harness().await;
    let (mut client, server) = h.pair().await;
    drop(server);
    let err = err_instead_of_greeting(&mut client).await;
    assert_eq!(err.code, 1105);
    assert_contains(
        &err.message_str(),
        &[
            "mysql8.test:3306",
            "did not send a valid MySQL greeting",
            "closed",
        ],
    );
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_never_sends_its_greeting() {
    let h = harness().await;
    let (mut client, mut server) = h.pair().await;
    let err = err_instead_of_greeting(&mut client).await;
    assert_eq!(err.code, 1105);
    assert_contains(
        &err.message_str(),
        &[
            "mysql8.test:3306",
            "did not send a valid MySQL greeting",
            "within 2s",
        ],
    );
    server.expect_closed("no greeting").await;
    assert_eq!(server.raw_received(), b"", "bytes sent to a silent server");
    still_serving(h).await;
}

/// Bytes right behind the greeting, before the proxy asked for TLS, would be read as the start
/// of the TLS handshake (plaintext injected ahead of the server's TLS): refused before the
/// SSLRequest leaves (it goes in one write with the ClientHello), no token.
#[tokio::test]
async fn upstream_sends_bytes_before_the_tls_handshake() {
    let h = harness().await;
    let (mut client, mut server) = h.pair().await;
    let mut bytes = frame(0, &encode_greeting(&mysql84_greeting())).to_vec();
    bytes.extend_from_slice(b"\x16\x03\x03\x00\x05hello");
    server.send_raw(&bytes).await;
    client.read_greeting().await;
    client_logs_in(&mut client).await;
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1043, Some(*b"08S01")));
    assert_contains(
        &err.message_str(),
        &["mysql8.test:3306", "sent data before the TLS handshake"],
    );
    server.expect_closed("refused before the SSLRequest").await;
    no_token_in_cleartext(&server);
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_speaks_ssh_instead_of_mysql() {
    let h = harness().await;
    let (mut client, mut server) = h.pair().await;
    server.send_raw(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    let err = err_instead_of_greeting(&mut client).await;
    assert_eq!(err.code, 1105);
    assert_contains(
        &err.message_str(),
        &[
            "did not send a valid MySQL greeting",
            "exceeds",
            "really a MySQL endpoint",
        ],
    );
    drop(server);
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_sends_a_greeting_of_another_protocol_version() {
    let h = harness().await;
    let (mut client, mut server) = h.pair().await;
    let mut g = encode_greeting(&mysql84_greeting()).to_vec();
    g[0] = 9;
    server.send(0, &g).await;
    let err = err_instead_of_greeting(&mut client).await;
    assert_eq!(err.code, 1043);
    assert_contains(
        &err.message_str(),
        &["greeting the proxy cannot read", "protocol version"],
    );
    server.expect_closed("bad greeting").await;
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_err_in_place_of_the_greeting_is_forwarded_as_packet_0() {
    let h = harness().await;
    let (mut client, mut server) = h.pair().await;
    let too_many = ErrPacket::before_greeting(1040, "Too many connections");
    server.send(0, &encode_err(&too_many)).await;
    let p = client.expect_packet("ERR").await;
    assert_eq!(p.seq, 0);
    assert_eq!(p.payload, encode_err(&too_many), "forwarded byte for byte");
    client.expect_closed("after ERR").await;
    server.expect_closed("refused").await;
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_without_tls_gets_no_login_and_no_token() {
    let h = harness().await;
    let (mut client, mut server) = h.pair().await;
    let mut g = mysql84_greeting();
    g.capabilities = g.capabilities - Capabilities::SSL;
    server.greet(&g).await;
    let err = err_instead_of_greeting(&mut client).await;
    assert_eq!(err.code, 1043);
    assert_contains(
        &err.message_str(),
        &[
            "mysql8.test:3306",
            "does not offer TLS",
            "never sent in cleartext",
        ],
    );
    server.expect_closed("no TLS").await;
    assert_eq!(
        server.raw_received(),
        b"",
        "anything sent to a TLS-less server"
    );
    still_serving(h).await;
}

// ---------------------------------------------------------------------------------------------
// The upstream side during TLS and authentication: the client's login is answered with an ERR
// ---------------------------------------------------------------------------------------------

/// A client that logged in with mysql_native_password (so no `01 03`): its ERR comes at seq 2.
async fn client_logs_in(client: &mut TestClient) {
    client.send(1, &login("iamuser")).await;
}

#[tokio::test]
async fn upstream_closes_after_the_ssl_request() {
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    drop(server);
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1105);
    assert_contains(
        &err.message_str(),
        &["TLS handshake with mysql8.test:3306 failed"],
    );
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_certificate_for_the_wrong_name_gets_no_token() {
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    let tls = server.start_tls(h.pki.wrong_name.clone()).await;
    assert!(
        tls.is_err(),
        "the proxy accepted a certificate for other.test"
    );
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1105);
    let ca = h.pki.ca_path.display().to_string();
    assert_contains(
        &err.message_str(),
        &[
            "TLS verification of mysql8.test:3306 failed",
            "must name mysql8.test",
            &ca,
        ],
    );
    server.expect_closed("TLS refused").await;
    no_token_in_cleartext(&server);
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_certificate_from_another_ca_gets_no_token() {
    let (h, mut client, mut server) = greeted().await;
    let stranger = Pki::new();
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    let tls = server.start_tls(stranger.good.clone()).await;
    assert!(
        tls.is_err(),
        "the proxy accepted a certificate from an unknown CA"
    );
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1105);
    let ca = h.pki.ca_path.display().to_string();
    assert_contains(&err.message_str(), &["TLS verification", &ca]);
    server.expect_closed("TLS refused").await;
    no_token_in_cleartext(&server);
    still_serving(h).await;
}

/// `openssl s_server` limited to TLS 1.1 (what old yaSSL-era MySQL builds speak), with a
/// throwaway certificate for the endpoint name; killed and cleaned up on drop.
struct LegacyTlsServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    addr: std::net::SocketAddr,
}

impl LegacyTlsServer {
    fn start() -> LegacyTlsServer {
        use std::io::BufRead;
        let dir = std::env::temp_dir().join(format!(
            "rip-tls11-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        // stdin stays open: s_server stops at EOF on it.
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-naccept",
                "1",
                "-tls1_1",
            ])
            // OpenSSL 3 allows TLS 1.1 only at security level 0.
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "s_server exited");
            if let Some(a) = line.trim().strip_prefix("ACCEPT ") {
                break a.parse().expect("ACCEPT address");
            }
        };
        LegacyTlsServer { child, dir, addr }
    }
}

impl Drop for LegacyTlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database that speaks only TLS 1.1 (a real OpenSSL answers the proxy's ClientHello): the
/// handshake fails, no token leaves, and the client is told TLS 1.2 or later is required.
#[tokio::test]
async fn upstream_offering_only_tls_1_1_is_refused_and_gets_no_token() {
    let legacy = LegacyTlsServer::start();
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    server.relay_to(legacy.addr).await;
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1105);
    assert_contains(
        &err.message_str(),
        &[
            "TLS handshake with mysql8.test:3306 failed",
            "TLS 1.2 or 1.3",
        ],
    );
    no_token_in_cleartext(&server);
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_rejects_the_token() {
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    server.read_response().await;
    server.switch_to_clear_password(3).await;
    let token = server.read_token(4).await;
    verify_token(&token, "iamuser");
    let denied = ErrPacket::new(
        1045,
        b"28000",
        "Access denied for user 'iamuser'@'10.0.0.1' (using password: YES)",
    );
    server.send(5, &encode_err(&denied)).await;
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1045, Some(*b"28000")));
    assert_contains(
        &err.message_str(),
        &[
            "'iamuser'",
            "us-east-1",
            "rds-db:connect",
            "AWSAuthenticationPlugin",
            "Access denied for user 'iamuser'@'10.0.0.1'",
        ],
    );
    server.expect_closed("login refused").await;
    assert_eq!(h.tokens.mints(), 1);
    still_serving_after_fresh_token(h).await;
}

/// After a rejected token the cache was invalidated: the good session mints a new one.
async fn still_serving_after_fresh_token(h: Harness) {
    h.good_session().await;
    assert_eq!(h.tokens.mints(), 2, "the rejected token was reused");
    still_serving_counts(h).await;
}

async fn still_serving_counts(h: Harness) {
    let stats = h.finish().await;
    assert_eq!(
        (stats.total, stats.logins, stats.login_failures, stats.open),
        (2, 1, 1, 0),
        "{stats:?}"
    );
}

/// The upstream answers the login (before any token) with something other than a switch to
/// mysql_clear_password; the proxy refuses with 1251 and sends no token.
async fn upstream_wants_another_auth(reply: &[u8], asked: &str) {
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    server.read_response().await;
    server.send(3, reply).await;
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1251, Some(*b"08004")));
    assert_contains(
        &err.message_str(),
        &[
            "'iamuser'",
            asked,
            "AWSAuthenticationPlugin",
            "not an IAM database user",
        ],
    );
    server.expect_closed("no token for a non-IAM account").await;
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_switches_to_caching_sha2() {
    let mut switch = b"\xfecaching_sha2_password\0".to_vec();
    switch.extend_from_slice(UPSTREAM_SCRAMBLE);
    switch.push(0);
    upstream_wants_another_auth(&switch, "caching_sha2_password").await;
}

#[tokio::test]
async fn upstream_asks_for_caching_sha2_full_authentication() {
    upstream_wants_another_auth(&[0x01, 0x04], "caching_sha2_password").await;
}

#[tokio::test]
async fn upstream_sends_the_pre_41_old_password_switch() {
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    server.read_response().await;
    server.send(3, &[0xFE]).await;
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1043);
    assert_contains(
        &err.message_str(),
        &["malformed login reply", "old-password"],
    );
    server.expect_closed("no token").await;
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_never_answers_the_token() {
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    server.read_response().await;
    server.switch_to_clear_password(3).await;
    server.read_token(4).await;
    // Silence: the proxy gives up after its login timeout and closes this leg.
    server.expect_closed("timed out").await;
    let err = client.expect_err(2).await;
    assert_eq!(err.code, 1105, "server lost");
    assert_contains(
        &err.message_str(),
        &["mysql8.test:3306", "failed during login", "within 2s"],
    );
    still_serving(h).await;
}

#[tokio::test]
async fn upstream_asks_for_a_second_factor() {
    let (h, mut client, mut server) = greeted().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    server.read_response().await;
    server.switch_to_clear_password(3).await;
    server.read_token(4).await;
    server.send(5, b"\x02authentication_fido_client\0").await;
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1251, Some(*b"08004")));
    assert_contains(
        &err.message_str(),
        &["'iamuser'", "second authentication factor", "IAM only"],
    );
    server.expect_closed("MFA refused").await;
    still_serving(h).await;
}

// ---------------------------------------------------------------------------------------------
// Counters across many failures on one proxy
// ---------------------------------------------------------------------------------------------

/// `open` counts a connection while its login is pending and drops back to zero; every failure
/// above, run back to back on one proxy, is one `login_failures`.
#[tokio::test]
async fn counters_follow_failures_and_open_returns_to_zero() {
    let h = harness().await;
    // One pending login is open.
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    assert_eq!(h.stats().open, 1);
    // A handful of failures of different kinds, one after the other.
    client.send(1, b"garbage").await;
    client.expect_err(2).await;
    upstream_untouched(server, &h.pki).await;

    let (mut client, server) = h.pair().await;
    drop(server);
    client.expect_err(0).await;

    let (mut client, mut server) = h.pair().await;
    let mut g = mysql84_greeting();
    g.capabilities = g.capabilities - Capabilities::SSL;
    server.greet(&g).await;
    client.expect_err(0).await;

    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    client.send(1, &login("iamuser")).await;
    server.read_ssl_request().await;
    assert!(server.start_tls(h.pki.wrong_name.clone()).await.is_err());
    client.expect_err(2).await;

    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    drop(client);
    upstream_untouched(server, &h.pki).await;

    h.good_session().await;
    let stats = h.finish().await;
    assert_eq!(
        (stats.total, stats.logins, stats.login_failures, stats.open),
        (6, 1, 5, 0),
        "{stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The proxy's own side: AWS credentials and the connection limit
// ---------------------------------------------------------------------------------------------

/// No token can be made (expired SSO login): the client is told what to run, and the upstream,
/// already in TLS, gets no login packet at all.
#[tokio::test]
async fn aws_credentials_fail_then_the_next_login_works() {
    let h = Harness::start_with(|c| c.handshake_timeout = TIMEOUT, SsoExpiredOnce::wrap).await;
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    client_logs_in(&mut client).await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    let err = client.expect_err(2).await;
    assert_eq!((err.code, err.sql_state), (1045, Some(*b"28000")));
    assert_contains(
        &err.message_str(),
        &[
            "cannot create an IAM token for 'iamuser' on mysql8.test:3306",
            "aws sso login --profile dev",
        ],
    );
    // No token: the handshake is completed as the unused-connection user, without a password.
    unused_login_refused(server).await;
    still_serving(h).await;
}

/// Over `--max-connections`, a client gets ERR 1040 as packet #0 and no upstream connection is
/// opened for it; once the slot frees, logins work again.
#[tokio::test]
async fn connection_limit_refuses_with_1040_and_recovers() {
    let h = Harness::start(|c| {
        c.handshake_timeout = TIMEOUT;
        c.max_connections = 1;
    })
    .await;
    let (mut first, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    first.read_greeting().await;
    let mut second = h.client().await;
    let err = second.expect_err(0).await;
    assert_eq!((err.code, err.sql_state), (1040, None));
    assert_contains(
        &err.message_str(),
        &["too many connections", "limit 1", "--max-connections"],
    );
    // The first one goes away; its slot is free again.
    drop(first);
    upstream_untouched(server, &h.pki).await;
    h.good_session().await;
    let stats = h.finish().await;
    assert_eq!(
        (stats.total, stats.logins, stats.login_failures, stats.open),
        (3, 1, 1, 0),
        "{stats:?}"
    );
}

/// A login still pending when shutdown's grace runs out is cut: `serve` reports it, the client
/// sees the close, and the `open` gauge still returns to zero.
#[tokio::test]
async fn open_returns_to_zero_after_a_forced_shutdown() {
    let h = Harness::start(|c| {
        c.handshake_timeout = TIMEOUT;
        c.shutdown_grace = Duration::ZERO;
    })
    .await;
    let (mut client, mut server) = h.pair().await;
    server.greet(&mysql84_greeting()).await;
    client.read_greeting().await;
    assert_eq!(h.stats().open, 1);
    let (left, stats) = h.stop().await;
    assert_eq!(left, 1, "serve reports the connection it cut");
    client.expect_closed("cut by shutdown").await;
    server.expect_closed("cut by shutdown").await;
    assert_eq!(
        stats.open, 0,
        "open gauge after every connection task ended: {stats:?}"
    );
}

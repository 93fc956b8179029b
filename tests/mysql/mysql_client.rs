//! The admin's MySQL client (`admin::client`) against a scripted server: every authentication path
//! (caching_sha2 fast and full, native, the switch to mysql_clear_password, a switch with a new
//! nonce), TLS verified against the endpoint name before anything about the password leaves,
//! readable refusals, and a hostile server's answers turned into errors. The password is looked
//! for in every byte that crossed the socket below TLS.

use crate::common::fake::*;
use bytes::{BufMut, Bytes, BytesMut};
use rds_iam_proxy::admin::client::{self, Client};
use rds_iam_proxy::mysql::proto::buf::put_lenenc_bytes;
use rds_iam_proxy::mysql::proto::command::{EofPacket, SERVER_MORE_RESULTS_EXISTS, TextRow};
use rds_iam_proxy::mysql::proto::scramble::PasswordVerifier;
use rds_iam_proxy::mysql::proto::{AuthSwitchRequest, Capabilities, ErrPacket, HandshakeV10};
use rds_iam_proxy::secret::Secret;
use rds_iam_proxy::tls::{self, CaSource};
use rds_iam_proxy::tunnel::{Connector, Direct};
use tokio_rustls::TlsConnector;

const PASSWORD: &str = "Master/Pa55-word'\"";

fn options(pki: &Pki) -> client::Options {
    client::Options {
        tls: TlsConnector::from(
            tls::upstream_client_config(&CaSource::File(pki.ca_path.clone())).unwrap(),
        ),
        server_name: tls::server_name(HOST).unwrap(),
        timeout: GUARD,
    }
}

/// Starts a login as `admin` in the background; the test plays the server on the returned side.
async fn start_login(
    pki: &Pki,
) -> (
    tokio::task::JoinHandle<Result<Client, client::Error>>,
    ServerConn,
) {
    let up = FakeUpstream::bind().await;
    let opts = options(pki);
    let dial = Direct::new(up.addr.to_string());
    let login = tokio::spawn(async move {
        let stream = dial.connect().await.unwrap();
        Client::login(stream, &opts, "admin", &Secret::new(PASSWORD)).await
    });
    let server = up.accept().await;
    (login, server)
}

fn greeting(plugin: &str, caps: Capabilities) -> HandshakeV10 {
    HandshakeV10 {
        auth_plugin_name: Some(Bytes::copy_from_slice(plugin.as_bytes())),
        capabilities: caps,
        ..mysql84_greeting()
    }
}

fn payload(f: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::new();
    f(&mut b);
    b.freeze()
}

fn column(name: &str) -> Bytes {
    payload(|b| {
        for part in [&b"def"[..], b"", b"", b"", name.as_bytes(), b""] {
            put_lenenc_bytes(b, part);
        }
        b.put_slice(&[
            0x0c, 0x2d, 0x00, 0x00, 0x01, 0x00, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x00,
        ]);
    })
}

fn eof(status: u16) -> Bytes {
    payload(|b| {
        EofPacket {
            warnings: 0,
            status_flags: status,
        }
        .encode(b)
    })
}

fn row(values: &[Option<&str>]) -> Bytes {
    payload(|b| {
        TextRow(
            values
                .iter()
                .map(|v| v.map(|s| Bytes::copy_from_slice(s.as_bytes())))
                .collect(),
        )
        .encode(b)
    })
}

/// Asserts nothing below TLS carried the password.
fn assert_no_password(server: &ServerConn) {
    let raw = server.raw_received();
    assert!(
        !raw.windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()),
        "the password crossed the socket in cleartext"
    );
}

/// Greeting, SSLRequest, TLS and the HandshakeResponse41; returns its auth response.
async fn until_response(server: &mut ServerConn, g: &HandshakeV10, pki: &Pki) -> Bytes {
    server.greet(g).await;
    let ssl = server.read_ssl_request().await;
    assert!(
        !ssl.capabilities.intersects(
            Capabilities::DEPRECATE_EOF | Capabilities::QUERY_ATTRIBUTES | Capabilities::COMPRESS
        ),
        "{:?}",
        ssl.capabilities
    );
    server.start_tls(pki.good.clone()).await.unwrap();
    let r = server.read_response().await;
    assert_eq!(&r.username[..], b"admin");
    assert_eq!(
        r.capabilities, ssl.capabilities,
        "same flags as the SSLRequest"
    );
    assert_eq!(
        r.auth_plugin_name.as_deref(),
        g.auth_plugin_name.as_deref(),
        "answers the announced plugin"
    );
    r.auth_response
}

#[tokio::test]
async fn caching_sha2_fast_auth_then_a_result_set() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    let g = mysql84_greeting();
    let answer = until_response(&mut server, &g, &pki).await;
    let verifier = PasswordVerifier::new(PASSWORD);
    assert!(verifier.verify(Some(b"caching_sha2_password"), UPSTREAM_SCRAMBLE, &answer));
    server.send(3, &[0x01, 0x03]).await; // fast auth success
    server.send(4, PLAIN_OK).await;
    let mut c = login.await.unwrap().unwrap();
    assert_eq!(c.server_version(), "8.4.3");
    assert_eq!(c.connection_id(), 0x0A0B_0C0D);

    let query = tokio::spawn(async move {
        let r = c.query("SELECT CURRENT_USER(), NULL", GUARD).await;
        (c, r)
    });
    let q = server.expect_packet("COM_QUERY").await;
    assert_eq!(
        (q.seq, &q.payload[..]),
        (0, &b"\x03SELECT CURRENT_USER(), NULL"[..])
    );
    server.send(1, &[2]).await;
    server.send(2, &column("CURRENT_USER()")).await;
    server.send(3, &column("NULL")).await;
    server.send(4, &eof(2)).await;
    server.send(5, &row(&[Some("admin@%"), None])).await;
    server.send(6, &eof(2)).await;
    let (c, r) = query.await.unwrap();
    let r = r.unwrap();
    assert_eq!(r.sets.len(), 1);
    assert_eq!(r.sets[0].columns, ["CURRENT_USER()", "NULL"]);
    assert_eq!(r.sets[0].rows, [vec![Some("admin@%".to_owned()), None]]);

    c.quit().await;
    let quit = server.expect_packet("COM_QUIT").await;
    assert_eq!((quit.seq, &quit.payload[..]), (0, &[0x01][..]));
    server.expect_closed("after COM_QUIT").await;
    assert_no_password(&server);
}

#[tokio::test]
async fn caching_sha2_full_auth_sends_the_password_inside_tls_only() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    until_response(&mut server, &mysql84_greeting(), &pki).await;
    server.send(3, &[0x01, 0x04]).await; // perform full authentication
    let p = server.expect_packet("the password").await;
    assert_eq!(p.seq, 4);
    assert_eq!(&p.payload[..], format!("{PASSWORD}\0").as_bytes());
    server.send(5, PLAIN_OK).await;
    login.await.unwrap().unwrap();
    assert_no_password(&server);
}

#[tokio::test]
async fn native_then_the_switch_to_clear_password_as_rds_iam_does() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    let g = greeting("mysql_native_password", mysql84_caps());
    let answer = until_response(&mut server, &g, &pki).await;
    assert!(PasswordVerifier::new(PASSWORD).verify(
        Some(b"mysql_native_password"),
        UPSTREAM_SCRAMBLE,
        &answer
    ));
    server.switch_to_clear_password(3).await;
    let p = server.expect_packet("the clear password").await;
    assert_eq!(p.seq, 4);
    assert_eq!(token_from_auth(&p.payload), PASSWORD);
    server.send(5, PLAIN_OK).await;
    login.await.unwrap().unwrap();
    assert_no_password(&server);
}

#[tokio::test]
async fn a_switch_brings_a_new_nonce() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    let g = greeting("caching_sha2_password", mysql84_caps());
    until_response(&mut server, &g, &pki).await;
    let nonce = b"aNewNonceFromSwitch!";
    let mut data = nonce.to_vec();
    data.push(0);
    let switch = payload(|b| {
        AuthSwitchRequest {
            plugin_name: Bytes::from_static(b"mysql_native_password"),
            plugin_data: Bytes::from(data),
        }
        .encode(b)
    });
    server.send(3, &switch).await;
    let p = server.expect_packet("the native answer").await;
    assert_eq!(p.seq, 4);
    assert!(PasswordVerifier::new(PASSWORD).verify(
        Some(b"mysql_native_password"),
        nonce,
        &p.payload
    ));
    // A second switch is not followed.
    server.send(5, &switch).await;
    let e = login.await.unwrap().unwrap_err();
    assert!(
        e.to_string().contains("second authentication switch"),
        "{e}"
    );
}

#[tokio::test]
async fn a_server_without_tls_hears_nothing() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    let g = greeting(
        "mysql_native_password",
        Capabilities(mysql84_caps().0 & !Capabilities::SSL.0),
    );
    server.greet(&g).await;
    let e = login.await.unwrap().unwrap_err();
    assert!(matches!(e, client::Error::NoTls), "{e}");
    server.expect_closed("no TLS, no login").await;
    assert_eq!(server.raw_received(), b"");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_before_any_login() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    server.greet(&mysql84_greeting()).await;
    server.read_ssl_request().await;
    let _ = server.start_tls(pki.wrong_name.clone()).await;
    let e = login.await.unwrap().unwrap_err();
    assert!(e.is_certificate_error(), "{e}");
    assert_no_password(&server);
    let raw = server.raw_received();
    assert!(!raw.windows(5).any(|w| w == b"admin"), "user name sent");
}

#[tokio::test]
async fn refusals_and_failed_statements_read_like_the_mysql_cli() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    until_response(&mut server, &mysql84_greeting(), &pki).await;
    let denied = ErrPacket::new(1045, b"28000", "Access denied for user 'admin'@'10.0.0.1'");
    server.send(3, &encode_err(&denied)).await;
    let e = login.await.unwrap().unwrap_err();
    assert_eq!(
        e.to_string(),
        "the server refused the login of 'admin': ERROR 1045 (28000): Access denied for user \
         'admin'@'10.0.0.1'"
    );
    assert!(!format!("{e:?}").contains(PASSWORD));

    let (login, mut server) = start_login(&pki).await;
    until_response(&mut server, &mysql84_greeting(), &pki).await;
    server.send(3, &[0x01, 0x03]).await;
    server.send(4, PLAIN_OK).await;
    let mut c = login.await.unwrap().unwrap();
    let q = tokio::spawn(async move { c.query("GRANT nonsense", GUARD).await });
    server.expect_packet("COM_QUERY").await;
    let syntax = ErrPacket::new(1064, b"42000", "You have an error in your SQL syntax");
    server.send(1, &encode_err(&syntax)).await;
    let e = q.await.unwrap().unwrap_err();
    assert_eq!(
        e.to_string(),
        "ERROR 1064 (42000): You have an error in your SQL syntax"
    );
}

#[tokio::test]
async fn multi_results_are_all_read() {
    let pki = Pki::new();
    let (login, mut server) = start_login(&pki).await;
    until_response(&mut server, &mysql84_greeting(), &pki).await;
    server.send(3, &[0x01, 0x03]).await;
    server.send(4, PLAIN_OK).await;
    let mut c = login.await.unwrap().unwrap();
    let q = tokio::spawn(async move { c.query("CALL p()", GUARD).await });
    server.expect_packet("COM_QUERY").await;
    server.send(1, &[1]).await;
    server.send(2, &column("a")).await;
    server.send(3, &eof(0)).await;
    server.send(4, &row(&[Some("1")])).await;
    server.send(5, &eof(SERVER_MORE_RESULTS_EXISTS)).await;
    // OK: 3 rows affected, 1 warning, no more results.
    server
        .send(6, &[0x00, 0x03, 0x00, 0x02, 0x00, 0x01, 0x00])
        .await;
    let r = q.await.unwrap().unwrap();
    assert_eq!((r.sets.len(), r.affected_rows, r.warnings), (1, 3, 1));
}

/// A hostile server's answers: each is an error with a reason, never a panic or a hang.
#[tokio::test]
async fn hostile_answers_are_errors() {
    type Script = fn(&mut BytesMut);
    let cases: [(&str, &str, Script); 7] = [
        ("5000 columns", "column_count", |b| {
            b.put_slice(&[0xFC, 0x88, 0x13])
        }),
        ("a local file request", "local file", |b| {
            b.put_slice(b"\xFB/etc/passwd")
        }),
        (
            "a packet over 1 MiB",
            "larger than this client keeps",
            |_| {},
        ),
        (
            "a row with an extra value",
            "more values than columns",
            |_| {},
        ),
        ("a bad column definition", "catalog", |_| {}),
        ("an empty packet", "query_response", |_| {}),
        ("results without end", "more than 10000 results", |_| {}),
    ];
    let pki = Pki::new();
    for (what, expect, first) in cases {
        let (login, mut server) = start_login(&pki).await;
        until_response(&mut server, &mysql84_greeting(), &pki).await;
        server.send(3, &[0x01, 0x03]).await;
        server.send(4, PLAIN_OK).await;
        let mut c = login.await.unwrap().unwrap();
        let q = tokio::spawn(async move { c.query("SELECT 1", GUARD).await });
        server.expect_packet("COM_QUERY").await;
        match what {
            "a packet over 1 MiB" => {
                // Only the header: the client must refuse before buffering 2 MiB.
                server.send_raw(&[0x00, 0x00, 0x20, 0x01]).await;
            }
            "a row with an extra value" => {
                server.send(1, &[1]).await;
                server.send(2, &column("a")).await;
                server.send(3, &eof(0)).await;
                server.send(4, &row(&[Some("1"), Some("2")])).await;
            }
            "results without end" => {
                // OK packets that each announce another result, forever.
                let mut all = BytesMut::new();
                for i in 0..10_001u32 {
                    rds_iam_proxy::mysql::proto::packet::encode(
                        (i + 1) as u8,
                        &[0x00, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x00],
                        &mut all,
                    );
                }
                server.send_raw(&all).await;
            }
            "a bad column definition" => {
                server.send(1, &[1]).await;
                server.send(2, b"\x03xyz").await;
            }
            _ => server.send(1, &payload(first)).await,
        }
        let e = q.await.unwrap().unwrap_err();
        assert!(e.to_string().contains(expect), "{what}: {e}");
    }
    // An authentication method the client does not have.
    let (login, mut server) = start_login(&pki).await;
    until_response(&mut server, &mysql84_greeting(), &pki).await;
    let switch = payload(|b| {
        AuthSwitchRequest {
            plugin_name: Bytes::from_static(b"client_ed25519"),
            plugin_data: Bytes::from_static(b"12345678901234567890123456789012"),
        }
        .encode(b)
    });
    server.send(3, &switch).await;
    let e = login.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, client::Error::UnsupportedAuth { plugin, .. } if plugin == "client_ed25519"),
        "{e}"
    );
    // Garbage instead of a greeting.
    let (login, mut server) = start_login(&pki).await;
    server.send(0, b"\x09not a v10 greeting").await;
    let e = login.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("greeting"), "{e}");
}

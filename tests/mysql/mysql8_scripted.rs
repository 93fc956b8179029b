//! What a MariaDB upstream cannot show: the proxy against a scripted MySQL 8.4-shaped server
//! (`caching_sha2_password` greeting, QUERY_ATTRIBUTES, DEPRECATE_EOF, SESSION_TRACK,
//! OPTIONAL_RESULTSET_METADATA, an AuthSwitchRequest carrying a scramble), with a raw client
//! written with the crate's codec. Every byte on both legs is asserted.

use crate::common::fake::*;
use bytes::{BufMut, Bytes, BytesMut};
use rds_iam_proxy::mysql::proto::buf::put_lenenc_bytes;
use rds_iam_proxy::mysql::proto::{Capabilities, ComChangeUser, ErrPacket, HandshakeResponse41};

/// The local greeting carries the upstream's identity, not its auth or transport features.
#[tokio::test]
async fn local_greeting_mirrors_the_mysql84_upstream() {
    let h = Harness::start(|_| {}).await;
    let upstream = mysql84_greeting();
    let mut scrambles = Vec::new();
    for _ in 0..2 {
        let (mut client, mut server) = h.pair().await;
        server.greet(&upstream).await;
        let (g, raw) = client.read_greeting().await;
        assert_eq!(&g.server_version[..], b"8.4.3");
        assert_eq!(g.connection_id, 0x0A0B_0C0D, "connection id (KILL QUERY)");
        assert_eq!(g.character_set, 255);
        assert_eq!(g.status_flags, 0x0002);
        assert_eq!(
            g.auth_plugin_name.as_deref(),
            Some(&b"caching_sha2_password"[..])
        );
        // Capabilities: exactly the upstream's, minus what the proxy owns.
        let caps = g.capabilities;
        assert_eq!(caps, mysql84_caps() - proxy_owned(), "local caps {caps:?}");
        for owned in [
            Capabilities::SSL,
            Capabilities::COMPRESS,
            Capabilities::ZSTD_COMPRESSION_ALGORITHM,
            Capabilities::MULTI_FACTOR_AUTHENTICATION,
        ] {
            assert!(!caps.intersects(owned), "{owned:?} offered locally");
        }
        for kept in [
            Capabilities::QUERY_ATTRIBUTES,
            Capabilities::DEPRECATE_EOF,
            Capabilities::SESSION_TRACK,
            Capabilities::OPTIONAL_RESULTSET_METADATA,
            Capabilities::PLUGIN_AUTH,
            Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA,
            Capabilities::CONNECT_ATTRS,
            Capabilities::PROTOCOL_41,
            Capabilities::SECURE_CONNECTION,
            Capabilities::LONG_PASSWORD,
        ] {
            assert!(caps.contains(kept), "{kept:?} missing locally");
        }
        // A fresh 20-byte scramble without NULs, not the upstream's.
        let s = g.auth_plugin_data.clone();
        assert_eq!(s.len(), 20, "scramble length");
        assert!(!s.contains(&0), "scramble holds a NUL");
        assert_ne!(&s[..], &UPSTREAM_SCRAMBLE[..], "upstream scramble reused");
        scrambles.push(s);
        // Raw layout: MySQL (not MariaDB) greeting, auth data length 21, 10 reserved zero bytes.
        let fixed = 1 + b"8.4.3\0".len() + 4 + 8 + 1 + 2 + 1 + 2 + 2;
        assert_eq!(raw[fixed], 21, "auth-plugin-data length");
        assert_eq!(&raw[fixed + 1..fixed + 11], &[0u8; 10], "reserved bytes");
        // The client walks away: the proxy completes the upstream handshake as the
        // unused-connection user (no password) rather than aborting it, then closes.
        drop(client);
        server.read_ssl_request().await;
        server.start_tls(h.pki.good.clone()).await.expect("TLS");
        let r = server.read_response().await;
        assert_eq!(&r.username[..], b"rds-iam-proxy-unused-connection");
        assert!(r.auth_response.is_empty());
        server
            .send(
                3,
                &encode_err(&ErrPacket::new(1045, b"28000", "Access denied")),
            )
            .await;
        server.expect_closed("client left before its login").await;
    }
    assert_ne!(
        scrambles[0], scrambles[1],
        "scramble reused across connections"
    );
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (0, 2));
}

/// The upstream leg: SSLRequest, then inside TLS a HandshakeResponse41 with the client's choices,
/// then the token after the switch; the client gets the upstream's OK.
#[tokio::test]
async fn upstream_gets_the_clients_login_over_tls_with_a_valid_token() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server) = h.pair().await;
    let client_login = client_response("app_user+ro", "mysql_native_password", NATIVE_ANSWER);
    let pki = &h.pki;
    let server_side = async {
        let seen = server.login_until_ok(&mysql84_greeting(), pki).await;
        server.send(5, &session_track_ok()).await;
        seen
    };
    let client_side = async {
        client.read_greeting().await;
        client.send_response(&client_login).await;
        client.expect_packet("OK").await
    };
    let (seen, ok) = tokio::join!(server_side, client_side);

    // SSLRequest: same flags as the response, the client's max packet and charset.
    let c = client_login.capabilities;
    let r = seen.response.capabilities;
    assert_eq!(
        seen.ssl_request.capabilities, r,
        "SSLRequest vs response flags"
    );
    assert_eq!(seen.ssl_request.max_packet_size, 16 * 1024 * 1024);
    assert_eq!(seen.ssl_request.character_set, 255);
    // Flags: framing identical, auth and TLS forced, nothing the upstream did not offer, nothing
    // the proxy owns except SSL.
    assert_eq!(
        r & framing_flags(),
        c & framing_flags(),
        "framing flags {r:?}"
    );
    for forced in [
        Capabilities::SSL,
        Capabilities::PLUGIN_AUTH,
        Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA,
        Capabilities::PROTOCOL_41,
        Capabilities::SECURE_CONNECTION,
    ] {
        assert!(r.contains(forced), "{forced:?} not sent upstream: {r:?}");
    }
    assert_eq!(
        r - mysql84_caps(),
        Capabilities::EMPTY,
        "not offered: {r:?}"
    );
    assert_eq!(
        r & (proxy_owned() - Capabilities::SSL),
        Capabilities::EMPTY,
        "proxy-owned flags sent upstream: {r:?}"
    );
    assert_eq!(
        r - Capabilities::SSL,
        c,
        "the client's flags otherwise unchanged"
    );
    // Fields.
    let resp = &seen.response;
    assert_eq!(&resp.username[..], b"app_user+ro");
    assert_eq!(resp.database.as_deref(), Some(&b"appdb"[..]));
    assert_eq!(resp.character_set, 255);
    assert_eq!(resp.max_packet_size, 16 * 1024 * 1024);
    assert_eq!(resp.connect_attrs.as_ref(), Some(&client_attrs()));
    assert_eq!(resp.auth_response.len(), 0, "auth data before the switch");
    assert_eq!(
        resp.auth_plugin_name.as_deref(),
        Some(&b"caching_sha2_password"[..]),
        "the plugin the greeting announced"
    );
    assert_eq!(resp.zstd_level, None);
    verify_token(&seen.token, "app_user+ro");
    // Nothing but the SSLRequest travelled in cleartext.
    let raw = server.raw_received();
    assert_eq!(
        &raw[..36],
        &frame(1, &{
            let mut b = BytesMut::new();
            seen.ssl_request.encode(&mut b);
            b
        })[..]
    );
    for secret in [&b"app_user"[..], b"Action=connect", b"X-Amz", b"appdb"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret),
            "{} in cleartext upstream",
            String::from_utf8_lossy(secret)
        );
    }
    // The client's OK is the upstream's, at seq 2.
    assert_eq!((ok.seq, ok.payload.clone()), (2, session_track_ok()));
    drop(client);
    drop(server);
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (1, 0));
}

/// `--db-user` replaces whatever name the client logs in with, in the login and the token.
#[tokio::test]
async fn db_user_override_is_what_the_upstream_sees() {
    let h = Harness::start(|c| c.db_user = Some("iamuser".into())).await;
    let (mut client, mut server) = h.pair().await;
    let pki = &h.pki;
    let server_side = async move {
        let seen = server.login_until_ok(&mysql84_greeting(), pki).await;
        assert_eq!(&seen.response.username[..], b"iamuser");
        verify_token(&seen.token, "iamuser");
        server.send(5, PLAIN_OK).await;
    };
    let client_side = async {
        client.read_greeting().await;
        client
            .send_response(&client_response("alice", "caching_sha2_password", b""))
            .await;
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, &ok.payload[..]), (2, PLAIN_OK));
    };
    tokio::join!(server_side, client_side);
    drop(client);
    h.finish().await;
}

/// Which clients get `01 03` before the OK, and the sequence ids on both legs.
#[tokio::test]
async fn fast_auth_only_for_a_caching_sha2_scramble_and_ok_is_byte_identical() {
    let h = Harness::start(|_| {}).await;
    let no_plugin_auth = {
        let mut r = client_response("iamuser", "", NATIVE_ANSWER);
        r.capabilities = r.capabilities - Capabilities::PLUGIN_AUTH;
        r.auth_plugin_name = None;
        r
    };
    let no_lenenc = {
        let mut r = client_response("iamuser", "caching_sha2_password", SHA2_ANSWER);
        r.capabilities = r.capabilities - Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA;
        r
    };
    let cases: Vec<(&str, HandshakeResponse41, bool)> = vec![
        (
            "caching_sha2 with a scramble",
            client_response("iamuser", "caching_sha2_password", SHA2_ANSWER),
            true,
        ),
        (
            "caching_sha2 with a 1-byte-length scramble",
            no_lenenc,
            true,
        ),
        (
            "caching_sha2, empty",
            client_response("iamuser", "caching_sha2_password", b""),
            false,
        ),
        (
            "caching_sha2, lone NUL",
            client_response("iamuser", "caching_sha2_password", b"\0"),
            false,
        ),
        (
            "mysql_native_password with a scramble",
            client_response("iamuser", "mysql_native_password", NATIVE_ANSWER),
            false,
        ),
        (
            "mysql_native_password, empty",
            client_response("iamuser", "mysql_native_password", b""),
            false,
        ),
        ("no PLUGIN_AUTH", no_plugin_auth, false),
    ];
    let ok_payload = session_track_ok();
    for (name, login, fast) in cases {
        let (mut client, mut server) = h.pair().await;
        let pki = &h.pki;
        let ok_up = ok_payload.clone();
        let server_side = async move {
            let seen = server.login_until_ok(&mysql84_greeting(), pki).await;
            let r = seen.response.capabilities;
            assert!(
                r.contains(
                    Capabilities::PLUGIN_AUTH | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
                ),
                "{name}: {r:?}"
            );
            assert_eq!(
                seen.response.auth_plugin_name.as_deref(),
                Some(&b"caching_sha2_password"[..]),
                "{name}"
            );
            assert!(seen.response.auth_response.is_empty(), "{name}");
            verify_token(&seen.token, "iamuser");
            server.send(5, &ok_up).await;
            server
        };
        let client_side = async {
            client.read_greeting().await;
            client.send_response(&login).await;
            let first = client.expect_packet("first reply").await;
            if fast {
                assert_eq!(
                    (first.seq, &first.payload[..]),
                    (2, &[0x01, 0x03][..]),
                    "{name}: fast-auth success"
                );
                let ok = client.expect_packet("OK").await;
                assert_eq!((ok.seq, &ok.payload), (3, &ok_payload), "{name}");
            } else {
                assert_eq!((first.seq, &first.payload), (2, &ok_payload), "{name}");
            }
        };
        let (server, ()) = tokio::join!(server_side, client_side);
        drop(server);
        client.expect_closed("upstream closed").await;
    }
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (7, 0));
}

/// A COM_QUERY with a query-attributes prefix: `03`, parameter count 1, set count 1, NULL bitmap,
/// new-params-bound flag, type LONGLONG, name `n`, value 42, then the query text.
fn query_with_attribute() -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(&[0x03, 0x01, 0x01, 0x00, 0x01, 0x08, 0x00]);
    put_lenenc_bytes(&mut b, b"n");
    b.put_u64_le(42);
    b.put_slice(b"SELECT mysql_query_attribute_string('n')");
    b.freeze()
}

/// After login the proxy is a byte pipe: query attributes, large packets and result sets pass
/// unchanged both ways, and COM_QUIT ends both legs.
#[tokio::test]
async fn command_phase_is_byte_identical_both_ways() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server) = h.pair().await;
    let big_query = {
        let mut q = b"\x03\x00\x01SELECT '".to_vec();
        q.extend(std::iter::repeat_n(b'q', 300 * 1024));
        q.push(b'\'');
        frame(0, &q)
    };
    let big_row = {
        let mut out = canned_result_set().to_vec();
        // A second result set whose row is 200 KiB (more than one read on every hop).
        let mut row = BytesMut::new();
        put_lenenc_bytes(&mut row, &vec![b'r'; 200 * 1024]);
        out.extend_from_slice(&frame(1, &[0x01]));
        out.extend_from_slice(&frame(
            2,
            b"\x03def\x00\x00\x00\x01r\x00\x0c\x3f\x00\xff\xff\xff\x00\xfc\x90\x00\x00\x00\x00",
        ));
        out.extend_from_slice(&frame(3, &row));
        out.extend_from_slice(&frame(4, &[0xFE, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]));
        Bytes::from(out)
    };
    let pki = &h.pki;
    let big_q = big_query.clone();
    let big_r = big_row.clone();
    let server_side = async move {
        server.login_until_ok(&mysql84_greeting(), pki).await;
        server.send(5, PLAIN_OK).await;
        let q1 = server.expect_packet("COM_QUERY 1").await;
        assert_eq!(
            q1.raw,
            frame(0, b"\x03\x00\x01SELECT 1"),
            "query, no attributes"
        );
        let q2 = server.expect_packet("COM_QUERY 2").await;
        assert_eq!(
            q2.raw,
            frame(0, &query_with_attribute()),
            "query with attribute"
        );
        server.send_raw(&canned_result_set()).await;
        let q3 = server.read_exact_raw(big_q.len()).await;
        assert!(q3 == big_q, "300 KiB query changed on the way");
        server.send_raw(&big_r).await;
        let quit = server.expect_packet("COM_QUIT").await;
        assert_eq!(&quit.raw[..], &[1, 0, 0, 0, 0x01]);
        server.expect_closed("client quit").await;
    };
    let client_side = async {
        client.read_greeting().await;
        client
            .send_response(&client_response("iamuser", "mysql_native_password", b""))
            .await;
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, &ok.payload[..]), (2, PLAIN_OK));
        // Two commands in one write: the scanner must keep them apart and unchanged.
        let mut two = frame(0, b"\x03\x00\x01SELECT 1").to_vec();
        two.extend_from_slice(&frame(0, &query_with_attribute()));
        client.send_raw(&two).await;
        let rs = canned_result_set();
        assert_eq!(client.read_exact_raw(rs.len()).await, rs);
        client.send_raw(&big_query).await;
        let got = client.read_exact_raw(big_row.len()).await;
        assert!(got == big_row, "200 KiB result changed on the way");
        client.send(0, &[0x01]).await;
        client.shutdown_write().await;
        client.expect_closed("after COM_QUIT").await;
        two.len()
    };
    let ((), two_len) = tokio::join!(server_side, client_side);
    // Every command-phase byte, and nothing of the login, is counted.
    let up = two_len + big_query.len() + 5;
    let down = canned_result_set().len() + big_row.len();
    assert_eq!(
        h.bytes(),
        (up as u64, down as u64),
        "(bytes_up, bytes_down)"
    );
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (1, 0));
}

/// A command the client sent right behind its login (read ahead by the proxy) is relayed after
/// the login, not lost.
#[tokio::test]
async fn command_pipelined_behind_the_login_is_relayed() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server) = h.pair().await;
    let pki = &h.pki;
    let server_side = async move {
        server.login_until_ok(&mysql84_greeting(), pki).await;
        server.send(5, PLAIN_OK).await;
        let q = server.expect_packet("pipelined COM_QUERY").await;
        assert_eq!(q.raw, frame(0, b"\x03\x00\x01SELECT 1"));
        server.send_raw(&canned_result_set()).await;
        server.expect_closed("client closed").await;
    };
    let client_side = async {
        client.read_greeting().await;
        let mut both = frame(
            1,
            &encode_response(&client_response("iamuser", "mysql_native_password", b"")),
        )
        .to_vec();
        both.extend_from_slice(&frame(0, b"\x03\x00\x01SELECT 1"));
        client.send_raw(&both).await;
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, &ok.payload[..]), (2, PLAIN_OK));
        let rs = canned_result_set();
        assert_eq!(client.read_exact_raw(rs.len()).await, rs);
        client.shutdown_write().await;
        client.expect_closed("after close").await;
    };
    tokio::join!(server_side, client_side);
    h.finish().await;
}

/// Token first (the default; `--switch-auth` turns it off): the token rides in the
/// HandshakeResponse41 as `mysql_clear_password` data and the server answers OK without a switch.
#[tokio::test]
async fn direct_auth_sends_the_token_in_the_first_packet() {
    let h = Harness::start(|c| c.direct_auth = true).await;
    let (mut client, mut server) = h.pair().await;
    let pki = h.pki.good.clone();
    let server_side = async move {
        server.greet(&mysql84_greeting()).await;
        let ssl = server.read_ssl_request().await;
        server.start_tls(pki).await.expect("TLS");
        let resp = server.read_response().await;
        assert_eq!(ssl.capabilities, resp.capabilities);
        assert!(
            resp.capabilities
                .contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA)
        );
        assert_eq!(
            resp.auth_plugin_name.as_deref(),
            Some(&b"mysql_clear_password"[..])
        );
        assert!(
            resp.auth_response.len() > 250,
            "token needs a lenenc length"
        );
        let token = token_from_auth(&resp.auth_response);
        verify_token(&token, "iamuser");
        assert_eq!(&resp.username[..], b"iamuser");
        server.send(3, &session_track_ok()).await;
        server.expect_closed("client closed").await;
    };
    let client_side = async {
        client.read_greeting().await;
        client
            .send_response(&client_response(
                "iamuser",
                "caching_sha2_password",
                SHA2_ANSWER,
            ))
            .await;
        let fast = client.expect_packet("fast auth").await;
        assert_eq!((fast.seq, &fast.payload[..]), (2, &[0x01, 0x03][..]));
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, ok.payload), (3, session_track_ok()));
        client.shutdown_write().await;
        client.expect_closed("after close").await;
    };
    tokio::join!(server_side, client_side);
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (1, 0));
}

/// A server that still switches to `mysql_clear_password` after a token-first response gets the
/// token once more, and the proxy remembers it: the next login waits for the switch (nothing but
/// the announced plugin's empty answer in its first packet).
#[tokio::test]
async fn an_endpoint_that_asks_again_gets_the_classic_order_from_then_on() {
    let h = Harness::start(|c| c.direct_auth = true).await;
    for round in 0..2 {
        let (mut client, mut server) = h.pair().await;
        let pki = h.pki.good.clone();
        let server_side = async move {
            server.greet(&mysql84_greeting()).await;
            server.read_ssl_request().await;
            server.start_tls(pki).await.expect("TLS");
            let resp = server.read_response().await;
            if round == 0 {
                assert_eq!(
                    resp.auth_plugin_name.as_deref(),
                    Some(&b"mysql_clear_password"[..])
                );
                verify_token(&token_from_auth(&resp.auth_response), "iamuser");
            } else {
                assert_eq!(
                    resp.auth_plugin_name.as_deref(),
                    Some(&b"caching_sha2_password"[..])
                );
                assert!(resp.auth_response.is_empty(), "no token before the switch");
            }
            server.switch_to_clear_password(3).await;
            verify_token(&server.read_token(4).await, "iamuser");
            server.send(5, &session_track_ok()).await;
            server.expect_closed("client closed").await;
        };
        let client_side = async {
            client.read_greeting().await;
            client
                .send_response(&client_response(
                    "iamuser",
                    "caching_sha2_password",
                    SHA2_ANSWER,
                ))
                .await;
            let fast = client.expect_packet("fast auth").await;
            assert_eq!((fast.seq, &fast.payload[..]), (2, &[0x01, 0x03][..]));
            let ok = client.expect_packet("OK").await;
            assert_eq!((ok.seq, ok.payload), (3, session_track_ok()));
            client.shutdown_write().await;
            client.expect_closed("after close").await;
        };
        tokio::join!(server_side, client_side);
    }
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (2, 0));
}

fn change_user(user: &str, plugin: &str, auth: &[u8], db: &str) -> Bytes {
    let cu = ComChangeUser {
        username: Bytes::copy_from_slice(user.as_bytes()),
        auth_response: Bytes::copy_from_slice(auth),
        database: Bytes::copy_from_slice(db.as_bytes()),
        character_set: Some(255),
        auth_plugin_name: Some(Bytes::copy_from_slice(plugin.as_bytes())),
        connect_attrs: Some(client_attrs()),
    };
    let mut b = BytesMut::new();
    cu.encode(&mut b, mysql8_client_caps());
    b.freeze()
}

/// COM_CHANGE_USER is replayed upstream as an IAM login for the new user: announced plugin, empty
/// auth, the switch answered with a fresh token for that user; the client gets OK (after `01 03`
/// when it sent a caching_sha2 scramble). Commands keep flowing afterwards.
#[tokio::test]
async fn change_user_is_replayed_as_an_iam_login() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server) = h.pair().await;
    let pki = &h.pki;
    let server_side = async move {
        let seen = server.login_until_ok(&mysql84_greeting(), pki).await;
        let caps = seen.response.capabilities;
        server.send(5, PLAIN_OK).await;
        for (user, db) in [("bob", "otherdb"), ("carol", "")] {
            let p = server.expect_packet("COM_CHANGE_USER").await;
            assert_eq!(p.seq, 0, "COM_CHANGE_USER starts a command");
            let cu = ComChangeUser::decode(&p.payload, caps).expect("COM_CHANGE_USER decodes");
            assert_eq!(&cu.username[..], user.as_bytes());
            assert!(cu.auth_response.is_empty(), "auth data sent upstream");
            assert_eq!(&cu.database[..], db.as_bytes());
            assert_eq!(cu.character_set, Some(255));
            assert_eq!(
                cu.auth_plugin_name.as_deref(),
                Some(&b"caching_sha2_password"[..]),
                "the plugin the greeting announced"
            );
            assert_eq!(cu.connect_attrs, Some(client_attrs()));
            server.switch_to_clear_password(1).await;
            let token = server.read_token(2).await;
            verify_token(&token, user);
            server.send(3, &session_track_ok()).await;
        }
        let q = server.expect_packet("COM_QUERY after change user").await;
        assert_eq!(q.raw, frame(0, b"\x03\x00\x01SELECT CURRENT_USER()"));
        server.send_raw(&canned_result_set()).await;
        server.expect_closed("client closed").await;
    };
    let client_side = async {
        client.read_greeting().await;
        client
            .send_response(&client_response("iamuser", "mysql_native_password", b""))
            .await;
        client.expect_packet("OK").await;
        // caching_sha2 with a scramble: 01 03 first.
        client
            .send(
                0,
                &change_user("bob", "caching_sha2_password", SHA2_ANSWER, "otherdb"),
            )
            .await;
        let fast = client.expect_packet("fast auth").await;
        assert_eq!((fast.seq, &fast.payload[..]), (1, &[0x01, 0x03][..]));
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, ok.payload), (2, session_track_ok()));
        // mysql_native_password: the OK directly.
        client
            .send(
                0,
                &change_user("carol", "mysql_native_password", NATIVE_ANSWER, ""),
            )
            .await;
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, ok.payload), (1, session_track_ok()));
        client.send(0, b"\x03\x00\x01SELECT CURRENT_USER()").await;
        let rs = canned_result_set();
        assert_eq!(client.read_exact_raw(rs.len()).await, rs);
        client.shutdown_write().await;
        client.expect_closed("after close").await;
    };
    tokio::join!(server_side, client_side);
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (1, 0));
}

/// LOAD DATA LOCAL INFILE: the server asks for the file (`0xFB`), the client streams it in
/// packets with seq 2, 3, ... and an empty packet. File packets starting with `0x11` are data, not
/// COM_CHANGE_USER, and pass unchanged.
async fn load_data_round_trip(file_packets: usize) {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server) = h.pair().await;
    let query = frame(
        0,
        b"\x03\x00\x01LOAD DATA LOCAL INFILE '/tmp/t.csv' INTO TABLE t",
    );
    // Each file packet looks like a COM_CHANGE_USER for `bob`; the last one is empty.
    let packets: Vec<Bytes> = (0..=file_packets)
        .map(|i| {
            let seq = (2 + i) as u8;
            if i == file_packets {
                return frame(seq, b"");
            }
            let mut p = b"\x11bob\0\0otherdb\0".to_vec();
            p.extend_from_slice(format!("{i:06}").as_bytes());
            frame(seq, &p)
        })
        .collect();
    let file: Bytes = packets.concat().into();
    let final_seq = (2 + file_packets + 1) as u8;
    let ok = frame(final_seq, &[0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00]);
    let pki = &h.pki;
    let (q, o) = (query.clone(), ok.clone());
    let server_side = async move {
        server.login_until_ok(&mysql84_greeting(), pki).await;
        server.send(5, PLAIN_OK).await;
        let got = server.expect_packet("LOAD DATA query").await;
        assert_eq!(got.raw, q);
        server.send(1, b"\xfb/tmp/t.csv").await;
        for (i, want) in packets.iter().enumerate() {
            let got = server.expect_packet("a file packet").await;
            assert!(
                got.raw == *want,
                "file packet #{i} (seq {}) arrived upstream as seq {} {:02x?}",
                want[3],
                got.seq,
                &got.payload[..got.payload.len().min(40)]
            );
        }
        server.send_raw(&o).await;
        server.expect_closed("client closed").await;
    };
    let client_side = async {
        client.read_greeting().await;
        client
            .send_response(&client_response("iamuser", "mysql_native_password", b""))
            .await;
        client.expect_packet("OK").await;
        client.send_raw(&query).await;
        let req = client.expect_packet("LOCAL INFILE request").await;
        assert_eq!((req.seq, &req.payload[..]), (1, &b"\xfb/tmp/t.csv"[..]));
        client.send_raw(&file).await;
        let got = client.expect_packet("OK after the file").await;
        assert_eq!(got.raw, ok);
        client.shutdown_write().await;
        client.expect_closed("after close").await;
    };
    tokio::join!(server_side, client_side);
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (1, 0));
}

#[tokio::test]
async fn x11_at_the_start_of_a_non_command_packet_passes_through() {
    // File packets with seq 2 and 3, both starting with 0x11.
    load_data_round_trip(2).await;
}

#[tokio::test]
async fn x11_in_load_data_after_the_sequence_id_wraps_to_zero_passes_through() {
    // 300 file packets: seq 2..=255, then 0, 1, ... The packet with seq 0 is file data starting
    // with 0x11, not a COM_CHANGE_USER (the command was COM_QUERY, still unanswered).
    load_data_round_trip(300).await;
}

/// A client may set a framing flag the proxy did not offer (mysql2 always sets QUERY_ATTRIBUTES):
/// like a server, the proxy takes the intersection. The flag is not forwarded upstream, so both
/// legs use the same framing, and the login completes.
#[tokio::test]
async fn framing_flag_not_offered_is_masked_not_forwarded() {
    let h = Harness::start(|_| {}).await;
    let flags = [
        ("QUERY_ATTRIBUTES", Capabilities::QUERY_ATTRIBUTES),
        ("DEPRECATE_EOF", Capabilities::DEPRECATE_EOF),
        ("SESSION_TRACK", Capabilities::SESSION_TRACK),
        (
            "OPTIONAL_RESULTSET_METADATA",
            Capabilities::OPTIONAL_RESULTSET_METADATA,
        ),
    ];
    for (name, flag) in flags {
        let (mut client, mut server) = h.pair().await;
        let mut greeting = mysql84_greeting();
        greeting.capabilities = greeting.capabilities - flag;
        let pki = &h.pki;
        let server_side = async move {
            let seen = server.login_until_ok(&greeting, pki).await;
            server
                .send(5, &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00])
                .await;
            seen
        };
        let client_side = async move {
            let (g, _) = client.read_greeting().await;
            assert!(!g.capabilities.intersects(flag), "{name} offered locally");
            // The client asks for it anyway.
            client
                .send_response(&client_response("iamuser", "mysql_native_password", b""))
                .await;
            let ok = client.expect_packet("the login OK").await;
            assert_eq!(ok.payload.first(), Some(&0x00), "{name}: login OK");
        };
        let (seen, ()) = tokio::join!(server_side, client_side);
        assert!(
            !seen.response.capabilities.intersects(flag),
            "{name} forwarded upstream though the server did not offer it"
        );
        assert!(!seen.ssl_request.capabilities.intersects(flag));
    }
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (4, 0));
}

/// An upstream ERR at the end of login other than access denied (here 1049 Unknown database) is
/// forwarded as the server worded it, at the client's sequence id, without `01 03`.
#[tokio::test]
async fn upstream_error_at_the_end_of_login_is_forwarded_unchanged() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server) = h.pair().await;
    let unknown_db = ErrPacket::new(1049, b"42000", "Unknown database 'appdb'");
    let pki = &h.pki;
    let e = unknown_db.clone();
    let server_side = async move {
        server.login_until_ok(&mysql84_greeting(), pki).await;
        server.send(5, &encode_err(&e)).await;
        server.expect_closed("login failed").await;
    };
    let client_side = async {
        client.read_greeting().await;
        client
            .send_response(&client_response(
                "iamuser",
                "caching_sha2_password",
                SHA2_ANSWER,
            ))
            .await;
        let p = client.expect_packet("ERR").await;
        assert_eq!((p.seq, p.payload), (2, encode_err(&unknown_db)));
        client.expect_closed("after ERR").await;
    };
    tokio::join!(server_side, client_side);
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (0, 1));
}

/// A command pipelined right behind COM_CHANGE_USER waits until the change is done: the upstream
/// sees COM_CHANGE_USER, the token exchange, and only then the query.
#[tokio::test]
async fn command_pipelined_behind_change_user_waits_for_it() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server, _) = h.logged_in().await;
    let mut both = frame(
        0,
        &change_user("bob", "mysql_native_password", NATIVE_ANSWER, "appdb"),
    )
    .to_vec();
    both.extend_from_slice(&frame(0, b"\x03\x00\x01SELECT CURRENT_USER()"));
    client.send_raw(&both).await;
    let p = server.expect_packet("COM_CHANGE_USER").await;
    assert_eq!((p.seq, p.payload[0]), (0, 0x11));
    server.switch_to_clear_password(1).await;
    verify_token(&server.read_token(2).await, "bob");
    server.send(3, PLAIN_OK).await;
    let q = server.expect_packet("the pipelined query").await;
    assert_eq!(q.raw, frame(0, b"\x03\x00\x01SELECT CURRENT_USER()"));
    let ok = client.expect_packet("change-user OK").await;
    assert_eq!((ok.seq, &ok.payload[..]), (1, PLAIN_OK));
    drop(server);
    // The query waited with no byte of its answer: the proxy answers it for the lost server.
    let err = client.expect_err(1).await;
    assert_eq!(err.code, 1105, "{}", err.message_str());
    assert!(
        err.message_str().contains("lost the link"),
        "{}",
        err.message_str()
    );
    drop(client);
    h.finish().await;
}

/// The server refuses the new user's token: the client gets 1045 at seq 1 with the IAM
/// checklist for that user (the server then closes, as MySQL does after a failed change user).
#[tokio::test]
async fn change_user_refused_by_the_server_explains_iam() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server, _) = h.logged_in().await;
    client
        .send(
            0,
            &change_user("bob", "caching_sha2_password", SHA2_ANSWER, ""),
        )
        .await;
    server.expect_packet("COM_CHANGE_USER").await;
    server.switch_to_clear_password(1).await;
    verify_token(&server.read_token(2).await, "bob");
    let denied = ErrPacket::new(
        1045,
        b"28000",
        "Access denied for user 'bob'@'10.0.0.1' (using password: YES)",
    );
    server.send(3, &encode_err(&denied)).await;
    drop(server);
    let p = client.expect_packet("ERR").await;
    assert_eq!(p.seq, 1);
    let err = ErrPacket::decode(&p.payload).expect("ERR");
    assert_eq!((err.code, err.sql_state), (1045, Some(*b"28000")));
    let msg = err.message_str();
    for part in [
        "'bob'",
        "us-east-1",
        "change user",
        "rds-db:connect",
        "Access denied",
    ] {
        assert!(msg.contains(part), "lacks {part:?}: {msg}");
    }
    client.expect_closed("server closed").await;
    drop(client);
    h.finish().await;
}

/// The new user is not an IAM user (the server wants caching_sha2): 1251 at seq 1, no token, and
/// the connection ends.
#[tokio::test]
async fn change_user_to_a_non_iam_account_is_refused() {
    let h = Harness::start(|_| {}).await;
    let (mut client, mut server, _) = h.logged_in().await;
    client
        .send(0, &change_user("root", "mysql_native_password", b"", ""))
        .await;
    server.expect_packet("COM_CHANGE_USER").await;
    let mut switch = b"\xfecaching_sha2_password\0".to_vec();
    switch.extend_from_slice(UPSTREAM_SCRAMBLE);
    switch.push(0);
    server.send(1, &switch).await;
    let p = client.expect_packet("ERR").await;
    assert_eq!(p.seq, 1);
    let err = ErrPacket::decode(&p.payload).expect("ERR");
    assert_eq!(err.code, 1251);
    assert!(
        err.message_str().contains("'root'") && err.message_str().contains("caching_sha2_password"),
        "{}",
        err.message_str()
    );
    client.expect_closed("connection ended").await;
    server.expect_closed("no token for root").await;
    drop(client);
    h.finish().await;
}

/// Local TLS (`--local-tls`): the greeting offers SSL, the client's SSLRequest (seq 1) is followed
/// by TLS, its login comes at seq 2, and the replies continue from there (`01 03` at 3, OK at 4).
///
/// The SSLRequest and the ClientHello arrive in one segment. Any client that writes them back to
/// back can make them arrive so (on this single-threaded test runtime even two separate writes
/// always do, because the proxy's task runs only after both); the bytes after the SSLRequest are
/// the start of the TLS handshake and belong to it.
#[tokio::test]
async fn local_tls_login_with_the_client_hello_right_behind_the_ssl_request() {
    let h = Harness::start(|c| c.local_tls = true).await;
    let (mut client, mut server) = h.pair().await;
    let pki = &h.pki;
    let server_side = async move {
        server.greet(&mysql84_greeting()).await;
        // If the proxy refuses the client, the client side reports why.
        let Ok(p) = server.next().await else { return };
        assert_eq!((p.seq, p.payload.len()), (1, 32), "SSLRequest");
        server.start_tls(pki.good.clone()).await.expect("TLS");
        server.read_response().await;
        server.switch_to_clear_password(3).await;
        verify_token(&server.read_token(4).await, "iamuser");
        server.send(5, PLAIN_OK).await;
        server.expect_closed("client closed").await;
    };
    let client_side = async {
        let (g, _) = client.read_greeting().await;
        assert!(
            g.capabilities.contains(Capabilities::SSL),
            "local TLS offered"
        );
        let mut ssl = BytesMut::new();
        rds_iam_proxy::mysql::proto::SslRequest {
            capabilities: mysql8_client_caps() | Capabilities::SSL,
            max_packet_size: 16 * 1024 * 1024,
            character_set: 255,
        }
        .encode(&mut ssl);
        if let Err(e) = client.start_tls(Some(frame(1, &ssl))).await {
            panic!("local TLS handshake failed: {e}");
        }
        let mut login = client_response("iamuser", "caching_sha2_password", SHA2_ANSWER);
        login.capabilities = login.capabilities | Capabilities::SSL;
        client.send(2, &encode_response(&login)).await;
        let fast = client.expect_packet("fast auth").await;
        assert_eq!((fast.seq, &fast.payload[..]), (3, &[0x01, 0x03][..]));
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, &ok.payload[..]), (4, PLAIN_OK));
        client.shutdown_write().await;
        client.expect_closed("after close").await;
    };
    tokio::join!(server_side, client_side);
    let stats = h.finish().await;
    assert_eq!((stats.logins, stats.login_failures), (1, 0));
}

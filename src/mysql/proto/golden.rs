//! Golden bytes captured from real peers on this machine (MariaDB 10.11.19 server, mariadb CLI
//! 10.11 / libmariadb 3.3.20), with the decoders' expected reading of each, and round-trip and
//! no-panic checks over every connection-phase type.
//!
//! The byte constants are public (hidden from the docs) because the fuzz targets' seed corpora
//! (`fuzz/examples/seed_corpus.rs`) start from them; the checks are tests only.

#[cfg(test)]
use bytes::{Bytes, BytesMut};

#[cfg(test)]
use super::*;
#[cfg(test)]
use crate::mysql::proto::packet;

/// A MariaDB 10.11.19 greeting (header included), as read from a fresh server.
pub const MARIADB_GREETING: &[u8] = &[
    0x64, 0x00, 0x00, 0x00, 0x0a, 0x35, 0x2e, 0x35, 0x2e, 0x35, 0x2d, 0x31, 0x30, 0x2e, 0x31, 0x31,
    0x2e, 0x31, 0x39, 0x2d, 0x4d, 0x61, 0x72, 0x69, 0x61, 0x44, 0x42, 0x2d, 0x30, 0x2b, 0x64, 0x65,
    0x62, 0x31, 0x32, 0x75, 0x31, 0x00, 0x17, 0x00, 0x00, 0x00, 0x7a, 0x63, 0x62, 0x40, 0x5a, 0x25,
    0x46, 0x71, 0x00, 0xfe, 0xff, 0x08, 0x02, 0x00, 0xff, 0x81, 0x15, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x1d, 0x00, 0x00, 0x00, 0x29, 0x74, 0x2f, 0x29, 0x22, 0x6a, 0x74, 0x28, 0x68, 0x54, 0x4a,
    0x59, 0x00, 0x6d, 0x79, 0x73, 0x71, 0x6c, 0x5f, 0x6e, 0x61, 0x74, 0x69, 0x76, 0x65, 0x5f, 0x70,
    0x61, 0x73, 0x73, 0x77, 0x6f, 0x72, 0x64, 0x00,
];
/// mariadb CLI 10.11: HandshakeResponse41 for `-u iamuser -D proxytest`, no password, no TLS.
pub const MARIADB_CLI_RESPONSE: &[u8] = &[
    0xc9, 0x00, 0x00, 0x01, 0x8c, 0xa2, 0xbf, 0x00, 0x00, 0x00, 0x10, 0x00, 0x21, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x1d, 0x00, 0x00, 0x00, 0x69, 0x61, 0x6d, 0x75, 0x73, 0x65, 0x72, 0x00, 0x00, 0x70, 0x72, 0x6f,
    0x78, 0x79, 0x74, 0x65, 0x73, 0x74, 0x00, 0x6d, 0x79, 0x73, 0x71, 0x6c, 0x5f, 0x6e, 0x61, 0x74,
    0x69, 0x76, 0x65, 0x5f, 0x70, 0x61, 0x73, 0x73, 0x77, 0x6f, 0x72, 0x64, 0x00, 0x7f, 0x03, 0x5f,
    0x6f, 0x73, 0x05, 0x4c, 0x69, 0x6e, 0x75, 0x78, 0x0c, 0x5f, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74,
    0x5f, 0x6e, 0x61, 0x6d, 0x65, 0x0a, 0x6c, 0x69, 0x62, 0x6d, 0x61, 0x72, 0x69, 0x61, 0x64, 0x62,
    0x04, 0x5f, 0x70, 0x69, 0x64, 0x05, 0x31, 0x31, 0x36, 0x34, 0x38, 0x0f, 0x5f, 0x63, 0x6c, 0x69,
    0x65, 0x6e, 0x74, 0x5f, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x06, 0x33, 0x2e, 0x33, 0x2e,
    0x32, 0x30, 0x09, 0x5f, 0x70, 0x6c, 0x61, 0x74, 0x66, 0x6f, 0x72, 0x6d, 0x06, 0x78, 0x38, 0x36,
    0x5f, 0x36, 0x34, 0x0c, 0x70, 0x72, 0x6f, 0x67, 0x72, 0x61, 0x6d, 0x5f, 0x6e, 0x61, 0x6d, 0x65,
    0x05, 0x6d, 0x79, 0x73, 0x71, 0x6c, 0x0c, 0x5f, 0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0x5f, 0x68,
    0x6f, 0x73, 0x74, 0x09, 0x31, 0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31,
];

/// The OK that ends a login (research §1.7): no rows, autocommit.
pub const LOGIN_OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

#[cfg(test)]
fn one_packet(bytes: &[u8]) -> Packet {
    let mut b = BytesMut::from(bytes);
    let p = packet::decode(&mut b, 1 << 20).unwrap().unwrap();
    assert!(b.is_empty(), "exactly one packet");
    p
}

#[test]
fn mariadb_greeting_decodes_and_reencodes_byte_for_byte() {
    let p = one_packet(MARIADB_GREETING);
    assert_eq!(p.seq, 0);
    let g = HandshakeV10::decode(&p.payload).unwrap();
    assert_eq!(&g.server_version[..], b"5.5.5-10.11.19-MariaDB-0+deb12u1");
    assert_eq!(g.connection_id, 0x17);
    assert_eq!(g.capabilities.lower(), 0x81ff_fffe);
    assert_eq!(g.capabilities.mariadb_ext(), 0x1d);
    assert_eq!(g.character_set, 8);
    assert_eq!(g.status_flags, 0x0002);
    assert_eq!(g.auth_plugin_data.len(), 20);
    assert_eq!(
        g.auth_plugin_name.as_deref(),
        Some(&b"mysql_native_password"[..])
    );
    let mut out = BytesMut::new();
    g.encode(&mut out);
    assert_eq!(&out[..], &p.payload[..]);
}

#[test]
fn mariadb_cli_response_decodes_and_reencodes_byte_for_byte() {
    let p = one_packet(MARIADB_CLI_RESPONSE);
    assert_eq!(p.seq, 1);
    assert!(!SslRequest::matches(&p.payload));
    let r = HandshakeResponse41::decode(&p.payload).unwrap();
    assert_eq!(r.capabilities.lower(), 0x00bf_a28c);
    assert_eq!(r.capabilities.mariadb_ext(), 0x1d);
    assert_eq!(&r.username[..], b"iamuser");
    assert!(r.auth_response.is_empty());
    assert_eq!(r.database.as_deref(), Some(&b"proxytest"[..]));
    assert_eq!(
        r.auth_plugin_name.as_deref(),
        Some(&b"mysql_native_password"[..])
    );
    let attrs = r.connect_attrs.as_ref().unwrap();
    assert!(
        attrs
            .iter()
            .any(|(k, v)| &k[..] == b"program_name" && &v[..] == b"mysql")
    );
    let mut out = BytesMut::new();
    r.encode(&mut out);
    assert_eq!(&out[..], &p.payload[..]);
}

#[test]
fn login_ok_decodes() {
    let ok = OkPacket::decode(LOGIN_OK).unwrap();
    assert_eq!(ok.status_flags, 2);
    let mut out = BytesMut::new();
    ok.encode(&mut out);
    assert_eq!(&out[..], LOGIN_OK);
    assert!(matches!(
        LoginReply::decode(Bytes::from_static(LOGIN_OK)),
        Ok(LoginReply::Ok(_))
    ));
}

#[test]
fn err_packets_with_and_without_sql_state() {
    let e = ErrPacket::new(
        1045,
        b"28000",
        "Access denied for user 'iamuser'@'localhost'",
    );
    let mut out = BytesMut::new();
    e.encode(&mut out);
    assert_eq!(&out[..4], &[0xFF, 0x15, 0x04, b'#']);
    assert_eq!(ErrPacket::decode(&out).unwrap(), e);
    let e = ErrPacket::before_greeting(1105, "upstream unreachable");
    let mut out = BytesMut::new();
    e.encode(&mut out);
    assert_eq!(ErrPacket::decode(&out).unwrap(), e);
}

#[test]
fn auth_switch_to_clear_password_as_mariadb_pam_sends_it() {
    // MariaDB PAM: 0xFE "mysql_clear_password" NUL, no data.
    let mut payload = vec![0xFE];
    payload.extend_from_slice(b"mysql_clear_password\0");
    let Ok(LoginReply::AuthSwitch(s)) = LoginReply::decode(Bytes::from(payload.clone())) else {
        panic!("expected an auth switch");
    };
    assert_eq!(&s.plugin_name[..], b"mysql_clear_password");
    assert!(s.plugin_data.is_empty());
    let mut out = BytesMut::new();
    s.encode(&mut out);
    assert_eq!(&out[..], &payload[..]);
    // The pre-4.1 lone 0xFE is refused.
    assert!(LoginReply::decode(Bytes::from_static(&[0xFE])).is_err());
}

#[test]
fn response_round_trips_under_flag_combinations() {
    let base =
        Capabilities::PROTOCOL_41 | Capabilities::SECURE_CONNECTION | Capabilities::LONG_PASSWORD;
    let extras = [
        Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA,
        Capabilities::CONNECT_WITH_DB,
        Capabilities::PLUGIN_AUTH,
        Capabilities::CONNECT_ATTRS,
        Capabilities::ZSTD_COMPRESSION_ALGORITHM,
    ];
    for mask in 0..(1u32 << extras.len()) {
        let mut caps = base;
        for (i, f) in extras.iter().enumerate() {
            if mask & (1 << i) != 0 {
                caps = caps | *f;
            }
        }
        let lenenc = caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA);
        let r = HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: 16 << 20,
            character_set: 45,
            username: Bytes::from_static(b"iam_user"),
            auth_response: Bytes::from(vec![7u8; if lenenc { 1200 } else { 20 }]),
            database: caps
                .contains(Capabilities::CONNECT_WITH_DB)
                .then(|| Bytes::from_static(b"app")),
            auth_plugin_name: caps
                .contains(Capabilities::PLUGIN_AUTH)
                .then(|| Bytes::from_static(b"mysql_clear_password")),
            connect_attrs: caps.contains(Capabilities::CONNECT_ATTRS).then(|| {
                vec![(
                    Bytes::from_static(b"_client_name"),
                    Bytes::from_static(b"rds-iam-proxy"),
                )]
            }),
            zstd_level: caps
                .contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM)
                .then_some(3),
        };
        let mut out = BytesMut::new();
        r.encode(&mut out);
        assert_eq!(
            HandshakeResponse41::decode(&out).unwrap(),
            r,
            "caps {caps:?}"
        );
    }
}

#[test]
fn ssl_request_round_trip_with_mariadb_extension() {
    let s = SslRequest {
        capabilities: Capabilities::from_parts(0x00bf_aa8c, 0x1d),
        max_packet_size: 1 << 24,
        character_set: 33,
    };
    let mut out = BytesMut::new();
    s.encode(&mut out);
    assert_eq!(out.len(), handshake::SSL_REQUEST_LEN);
    assert!(SslRequest::matches(&out));
    assert_eq!(SslRequest::decode(&out).unwrap(), s);
}

#[test]
fn greeting_round_trip_mysql8_shape() {
    let g = HandshakeV10 {
        server_version: Bytes::from_static(b"8.4.3"),
        connection_id: 4242,
        auth_plugin_data: Bytes::from_static(b"abcdefghijklmnopqrst"),
        capabilities: Capabilities::from_parts(0xdfff_ffff, 0),
        character_set: 255,
        status_flags: 2,
        auth_plugin_name: Some(Bytes::from_static(b"caching_sha2_password")),
    };
    let mut out = BytesMut::new();
    g.encode(&mut out);
    assert_eq!(HandshakeV10::decode(&out).unwrap(), g);
}

#[test]
fn change_user_round_trip() {
    let caps = Capabilities::PROTOCOL_41
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | Capabilities::CONNECT_ATTRS;
    let c = ComChangeUser {
        username: Bytes::from_static(b"iamuser2"),
        auth_response: Bytes::from_static(&[1, 2, 3]),
        database: Bytes::from_static(b"proxytest"),
        character_set: Some(45),
        auth_plugin_name: Some(Bytes::from_static(b"mysql_native_password")),
        connect_attrs: Some(vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))]),
    };
    let mut out = BytesMut::new();
    c.encode(&mut out, caps);
    assert_eq!(ComChangeUser::decode(&out, caps).unwrap(), c);
}

/// Every prefix of every golden packet, and pseudo-random bytes of many lengths, must decode to a
/// value or an error: never a panic.
#[test]
fn no_panics_on_truncated_or_random_input() {
    let caps_all = Capabilities(u64::MAX);
    let inputs: Vec<Vec<u8>> = [MARIADB_GREETING, MARIADB_CLI_RESPONSE]
        .iter()
        .flat_map(|g| (0..g.len()).map(move |n| g[4..n.max(4)].to_vec()))
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = Vec::new();
    for len in 0..600 {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.push(seed as u8);
        }
        random.push(v);
    }
    for input in inputs.iter().chain(random.iter()) {
        let _ = HandshakeV10::decode(input);
        let _ = HandshakeResponse41::decode(input);
        let _ = SslRequest::decode(input);
        let _ = AuthSwitchRequest::decode(input);
        let _ = AuthMoreData::decode(input);
        let _ = ComChangeUser::decode(input, caps_all);
        let _ = ComChangeUser::decode(input, Capabilities::EMPTY);
        let _ = OkPacket::decode(input);
        let _ = ErrPacket::decode(input);
        let _ = LoginReply::decode(Bytes::copy_from_slice(input));
        let mut b = BytesMut::from(&input[..]);
        let _ = packet::decode(&mut b, 1 << 16);
    }
}

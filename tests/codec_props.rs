//! Property tests of the connection-phase codec and the splice's command scanner: every packet
//! type decodes what it encodes, no byte string makes a decoder panic, and the scanner forwards
//! every byte exactly once whatever the read boundaries.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use rds_iam_proxy::mysql::packet;
use rds_iam_proxy::mysql::{
    AuthSwitchRequest, Capabilities, ComChangeUser, ErrPacket, HandshakeResponse41, HandshakeV10,
    LoginReply, OkPacket, SslRequest,
};
use rds_iam_proxy::proxy::splice::{CommandScanner, Step};

fn no_nul(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(1u8..=255, 0..max).prop_map(Bytes::from)
}

fn any_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Capabilities whose MariaDB extension is only present when the CLIENT_MYSQL bit is clear, as on
/// the wire.
fn caps() -> impl Strategy<Value = Capabilities> {
    (any::<u32>(), any::<u32>()).prop_map(|(lower, ext)| {
        let lower = lower | Capabilities::PROTOCOL_41.lower();
        let c = Capabilities::from_parts(lower, 0);
        if c.uses_mariadb_ext() {
            Capabilities::from_parts(lower, ext)
        } else {
            c
        }
    })
}

fn attrs() -> impl Strategy<Value = Vec<(Bytes, Bytes)>> {
    proptest::collection::vec((any_bytes(40), any_bytes(300)), 0..6)
}

prop_compose! {
    fn greeting()(
        server_version in no_nul(60),
        connection_id in any::<u32>(),
        scramble in proptest::collection::vec(1u8..=255, 20..=20),
        caps in caps(),
        character_set in any::<u8>(),
        status_flags in any::<u16>(),
        plugin in no_nul(40),
    ) -> HandshakeV10 {
        let caps = caps | Capabilities::SECURE_CONNECTION | Capabilities::PLUGIN_AUTH;
        HandshakeV10 {
            server_version,
            connection_id,
            auth_plugin_data: Bytes::from(scramble),
            capabilities: caps,
            character_set,
            status_flags,
            auth_plugin_name: Some(plugin),
        }
    }
}

prop_compose! {
    fn response()(
        caps in caps(),
        max_packet_size in any::<u32>(),
        character_set in any::<u8>(),
        username in no_nul(64),
        auth in any_bytes(1500),
        short_auth in any_bytes(255),
        database in no_nul(64),
        plugin in no_nul(40),
        attrs in attrs(),
        zstd in any::<u8>(),
    ) -> HandshakeResponse41 {
        let lenenc = caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA);
        let secure = caps.contains(Capabilities::SECURE_CONNECTION);
        let auth_response = if lenenc {
            auth
        } else if secure {
            short_auth
        } else {
            // NUL-terminated form: no NUL inside.
            Bytes::from(short_auth.iter().map(|b| b.max(&1)).copied().collect::<Vec<u8>>())
        };
        HandshakeResponse41 {
            capabilities: caps,
            max_packet_size,
            character_set,
            username,
            auth_response,
            database: caps.contains(Capabilities::CONNECT_WITH_DB).then_some(database),
            auth_plugin_name: caps.contains(Capabilities::PLUGIN_AUTH).then_some(plugin),
            connect_attrs: caps.contains(Capabilities::CONNECT_ATTRS).then_some(attrs),
            zstd_level: caps
                .contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM)
                .then_some(zstd),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn greeting_round_trips(g in greeting()) {
        let mut out = BytesMut::new();
        g.encode(&mut out);
        prop_assert_eq!(HandshakeV10::decode(&out).unwrap(), g);
    }

    #[test]
    fn response_round_trips(r in response()) {
        let mut out = BytesMut::new();
        r.encode(&mut out);
        // Trailing optional fields that are empty are written as empty, and read back as such,
        // except a database or plugin at the very end of the packet; compare re-encodings.
        let back = HandshakeResponse41::decode(&out).unwrap();
        let mut again = BytesMut::new();
        back.encode(&mut again);
        prop_assert_eq!(&again[..], &out[..]);
        prop_assert_eq!(back.capabilities, r.capabilities);
        prop_assert_eq!(back.username, r.username);
        prop_assert_eq!(back.auth_response, r.auth_response);
        prop_assert_eq!(back.connect_attrs.unwrap_or_default(), r.connect_attrs.unwrap_or_default());
    }

    #[test]
    fn ssl_request_round_trips(caps in caps(), max in any::<u32>(), cs in any::<u8>()) {
        let s = SslRequest { capabilities: caps | Capabilities::SSL, max_packet_size: max, character_set: cs };
        let mut out = BytesMut::new();
        s.encode(&mut out);
        prop_assert!(SslRequest::matches(&out));
        prop_assert_eq!(SslRequest::decode(&out).unwrap(), s);
    }

    #[test]
    fn change_user_round_trips(
        caps in caps(),
        username in no_nul(64),
        auth in any_bytes(255),
        database in no_nul(64),
        cs in any::<u16>(),
        plugin in no_nul(40),
        attrs in attrs(),
    ) {
        let caps = caps | Capabilities::SECURE_CONNECTION;
        let c = ComChangeUser {
            username,
            auth_response: auth,
            database,
            character_set: Some(cs),
            auth_plugin_name: caps.contains(Capabilities::PLUGIN_AUTH).then_some(plugin),
            connect_attrs: caps.contains(Capabilities::CONNECT_ATTRS).then_some(attrs),
        };
        let mut out = BytesMut::new();
        c.encode(&mut out, caps);
        prop_assert_eq!(ComChangeUser::decode(&out, caps).unwrap(), c);
    }

    #[test]
    fn err_ok_and_switch_round_trip(
        code in any::<u16>(),
        state in proptest::array::uniform5(b'0'..=b'Z'),
        msg in any_bytes(300),
        affected in any::<u64>(),
        insert_id in any::<u64>(),
        status in any::<u16>(),
        warnings in any::<u16>(),
        trailer in any_bytes(100),
        plugin in no_nul(40),
        data in any_bytes(100),
    ) {
        let e = ErrPacket { code, sql_state: Some(state), message: msg };
        let mut out = BytesMut::new();
        e.encode(&mut out);
        prop_assert_eq!(ErrPacket::decode(&out).unwrap(), e);
        let ok = OkPacket { affected_rows: affected, last_insert_id: insert_id, status_flags: status, warnings, trailer };
        let mut out = BytesMut::new();
        ok.encode(&mut out);
        prop_assert_eq!(OkPacket::decode(&out).unwrap(), ok);
        let s = AuthSwitchRequest { plugin_name: plugin, plugin_data: data };
        let mut out = BytesMut::new();
        s.encode(&mut out);
        if !s.plugin_name.is_empty() || !s.plugin_data.is_empty() {
            prop_assert_eq!(AuthSwitchRequest::decode(&out).unwrap(), s);
        }
    }

    #[test]
    fn decoders_never_panic(bytes in any_bytes(2048), caps in caps()) {
        let _ = HandshakeV10::decode(&bytes);
        let _ = HandshakeResponse41::decode(&bytes);
        let _ = SslRequest::decode(&bytes);
        let _ = ComChangeUser::decode(&bytes, caps);
        let _ = ErrPacket::decode(&bytes);
        let _ = OkPacket::decode(&bytes);
        let _ = LoginReply::decode(bytes.clone());
        let mut b = BytesMut::from(&bytes[..]);
        let _ = packet::decode(&mut b, 64 * 1024);
        let mut sc = CommandScanner::default();
        let _ = sc.step(&bytes);
    }

    /// Random command streams (queries, LOAD DATA file runs, change-user packets), cut at random
    /// read boundaries: the scanner forwards every other byte once, in order, and finds every
    /// COM_CHANGE_USER exactly.
    #[test]
    fn scanner_forwards_every_byte_once(
        commands in proptest::collection::vec((0u8..3, any_bytes(300)), 1..20),
        cuts in proptest::collection::vec(1usize..700, 1..50),
    ) {
        let mut stream = Vec::new();
        let mut expected_fwd = Vec::new();
        let mut expected_cu = Vec::new();
        for (kind, body) in &commands {
            let mut b = BytesMut::new();
            match kind {
                0 => {
                    let mut p = vec![0x03];
                    p.extend_from_slice(body);
                    packet::encode(0, &p, &mut b);
                    expected_fwd.extend_from_slice(&b);
                }
                1 => {
                    // A LOAD DATA LOCAL exchange: query, file packets (any first byte), terminator.
                    packet::encode(0, b"\x03LOAD DATA LOCAL INFILE 'x' INTO TABLE t", &mut b);
                    for (i, chunk) in body.chunks(7).enumerate() {
                        let mut data = chunk.to_vec();
                        data.insert(0, 0x11);
                        packet::encode((2 + i) as u8, &data, &mut b);
                    }
                    packet::encode(200, b"", &mut b);
                    expected_fwd.extend_from_slice(&b);
                }
                _ => {
                    let mut p = vec![0x11];
                    p.extend(body.iter().map(|x| x.max(&1)));
                    p.push(0);
                    packet::encode(0, &p, &mut b);
                    expected_cu.push(b.to_vec());
                }
            }
            stream.extend_from_slice(&b);
        }
        let mut sc = CommandScanner::default();
        let mut buf = BytesMut::new();
        let (mut fwd, mut cu) = (Vec::new(), Vec::new());
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < stream.len() {
            let n = (*cut.next().unwrap()).min(stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            loop {
                match sc.step(&buf).unwrap() {
                    Step::Forward(n) => fwd.extend_from_slice(&buf.split_to(n)),
                    Step::ChangeUser(n) => cu.push(buf.split_to(n).to_vec()),
                    Step::NeedMore => break,
                }
            }
        }
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        prop_assert_eq!(fwd, expected_fwd);
        prop_assert_eq!(cu, expected_cu);
    }
}

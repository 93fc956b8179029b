//! Client → proxy, connection phase: what a local MySQL client sends before the splice
//! (SSLRequest, HandshakeResponse41) and the COM_CHANGE_USER the splice replays, framed the way
//! the proxy frames them. Each packet is decoded as every type it could be; whatever decodes must
//! encode to bytes that decode to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::mysql::proto::packet::MAX_LOGIN_PAYLOAD;
use rds_iam_proxy::mysql::proto::{
    Capabilities, ComChangeUser, HandshakeResponse41, SslRequest, packet,
};

/// What mariadb and mysql clients ask for; COM_CHANGE_USER is read with these until the stream
/// holds a HandshakeResponse41 whose flags take over (as the splice uses the client's flags).
const CLIENT_CAPS: Capabilities = Capabilities(
    Capabilities::PROTOCOL_41.0
        | Capabilities::SECURE_CONNECTION.0
        | Capabilities::PLUGIN_AUTH.0
        | Capabilities::CONNECT_ATTRS.0
        | Capabilities::CONNECT_WITH_DB.0,
);

fuzz_target!(|data: &[u8]| {
    let mut caps = CLIENT_CAPS;
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = packet::decode(&mut buf, MAX_LOGIN_PAYLOAD) {
        assert!(p.payload.len() < MAX_LOGIN_PAYLOAD.min(packet::MAX_PAYLOAD_LEN));
        let mut framed = BytesMut::new();
        packet::encode(p.seq, &p.payload, &mut framed);
        let again = packet::decode(&mut framed, MAX_LOGIN_PAYLOAD).unwrap();
        assert_eq!(again.as_ref(), Some(&p));
        assert!(framed.is_empty());
        if let Some(c) = payload(&p.payload, caps) {
            caps = c;
        }
    }
    payload(data, caps);
});

/// Decodes `p` as each client packet; returns the flags of a HandshakeResponse41.
fn payload(p: &[u8], caps: Capabilities) -> Option<Capabilities> {
    ssl_request(p);
    for caps in [caps, Capabilities(u64::MAX), Capabilities::EMPTY] {
        change_user(p, caps);
    }
    response(p)
}

fn ssl_request(p: &[u8]) {
    let decoded = SslRequest::decode(p);
    if SslRequest::matches(p) {
        assert!(decoded.is_ok(), "an SSLRequest by `matches` must decode");
    }
    let Ok(s) = decoded else { return };
    assert_eq!(p.len(), 32);
    let mut out = BytesMut::new();
    s.encode(&mut out);
    assert_eq!(SslRequest::decode(&out).unwrap(), s);
}

fn response(p: &[u8]) -> Option<Capabilities> {
    let r = HandshakeResponse41::decode(p).ok()?;
    let caps = r.capabilities;
    let mut out = BytesMut::new();
    r.encode(&mut out);
    let back = HandshakeResponse41::decode(&out).expect("a re-encoded HandshakeResponse41 decodes");
    // Optional trailing fields that were absent are written empty when their flag is set (the
    // wire has no "absent" once a later field follows), so compare with absent read as empty.
    let present = |flag: Capabilities, absent: bool| caps.contains(flag) && absent;
    let mut expected = r.clone();
    if present(Capabilities::CONNECT_WITH_DB, expected.database.is_none()) {
        expected.database = Some(Default::default());
    }
    if present(
        Capabilities::PLUGIN_AUTH,
        expected.auth_plugin_name.is_none(),
    ) {
        expected.auth_plugin_name = Some(Default::default());
    }
    if present(
        Capabilities::CONNECT_ATTRS,
        expected.connect_attrs.is_none(),
    ) {
        expected.connect_attrs = Some(Vec::new());
    }
    if present(
        Capabilities::ZSTD_COMPRESSION_ALGORITHM,
        expected.zstd_level.is_none(),
    ) {
        expected.zstd_level = Some(3);
    }
    assert_eq!(back, expected);

    // The SSLRequest the proxy sends upstream carries the client's flags, size and collation.
    let ssl = SslRequest {
        capabilities: caps | Capabilities::SSL,
        max_packet_size: r.max_packet_size,
        character_set: r.character_set,
    };
    let mut out = BytesMut::new();
    ssl.encode(&mut out);
    assert!(SslRequest::matches(&out));
    assert_eq!(SslRequest::decode(&out).unwrap(), ssl);
    Some(caps)
}

fn change_user(p: &[u8], caps: Capabilities) {
    let Ok(c) = ComChangeUser::decode(p, caps) else {
        return;
    };
    let mut out = BytesMut::new();
    c.encode(&mut out, caps);
    let back = ComChangeUser::decode(&out, caps).expect("a re-encoded COM_CHANGE_USER decodes");
    let mut expected = c.clone();
    if caps.contains(Capabilities::PLUGIN_AUTH)
        && expected.character_set.is_some()
        && expected.auth_plugin_name.is_none()
    {
        expected.auth_plugin_name = Some(Default::default());
    }
    assert_eq!(back, expected);
}

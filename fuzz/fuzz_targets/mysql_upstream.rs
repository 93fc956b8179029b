//! Upstream → proxy, connection phase: the database's greeting (HandshakeV10 or ERR) and its
//! answers during login (OK, ERR, AuthSwitchRequest, AuthMoreData, next-factor), framed the way
//! the proxy frames them. Whatever decodes must encode to bytes that decode to the same value, and
//! the local greeting the proxy derives from an acceptable upstream greeting must decode exactly as
//! built (it is what every local client parses).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::mysql::proto::handshake::plugin;
use rds_iam_proxy::mysql::proto::packet::MAX_LOGIN_PAYLOAD;
use rds_iam_proxy::mysql::proto::{
    AuthMoreData, AuthSwitchRequest, Capabilities, ErrPacket, HandshakeV10, LoginReply, OkPacket,
    packet,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut first = true;
    while let Ok(Some(p)) = packet::decode(&mut buf, MAX_LOGIN_PAYLOAD) {
        if first {
            greeting(&p.payload);
            first = false;
        } else {
            login_reply(&p.payload);
        }
    }
    greeting(data);
    login_reply(data);
});

fn greeting(p: &[u8]) {
    err(p);
    let Ok(g) = HandshakeV10::decode(p) else {
        return;
    };
    let mut out = BytesMut::new();
    g.encode(&mut out);
    let back = HandshakeV10::decode(&out).expect("a re-encoded greeting decodes");
    assert_eq!(back, g);

    // The proxy's greeting to its client: the upstream's identity, its own scramble and plugin,
    // the upstream's flags less what the proxy owns (DESIGN.md decision 1).
    if !g.capabilities.contains(Capabilities::UPSTREAM_REQUIRED) {
        return;
    }
    let local = HandshakeV10 {
        server_version: g.server_version.clone(),
        connection_id: g.connection_id,
        auth_plugin_data: Bytes::from_static(b"0123456789abcdefghij"),
        capabilities: g.capabilities - Capabilities::NEVER - Capabilities::SSL,
        character_set: g.character_set,
        status_flags: g.status_flags,
        auth_plugin_name: Some(Bytes::from_static(plugin::CACHING_SHA2_PASSWORD.as_bytes())),
    };
    let mut out = BytesMut::new();
    local.encode(&mut out);
    assert_eq!(HandshakeV10::decode(&out).unwrap(), local);
}

fn login_reply(p: &[u8]) {
    err(p);
    ok(p);
    let Ok(reply) = LoginReply::decode(Bytes::copy_from_slice(p)) else {
        return;
    };
    let mut out = BytesMut::new();
    match reply {
        LoginReply::Ok(raw) => assert_eq!(&raw[..], p),
        LoginReply::Err(e) => {
            e.encode(&mut out);
            assert_eq!(&out[..], p);
        }
        LoginReply::AuthSwitch(s) => {
            s.encode(&mut out);
            assert_eq!(AuthSwitchRequest::decode(&out).unwrap(), s);
        }
        LoginReply::MoreData(m) => {
            m.encode(&mut out);
            assert_eq!(&out[..], p);
            assert_eq!(AuthMoreData::decode(&out).unwrap(), m);
        }
        LoginReply::NextFactor => assert_eq!(p.first(), Some(&0x02)),
    }
}

/// An ERR payload re-encodes byte for byte.
fn err(p: &[u8]) {
    if let Ok(e) = ErrPacket::decode(p) {
        let mut out = BytesMut::new();
        e.encode(&mut out);
        assert_eq!(&out[..], p);
        let _ = e.message_str();
    }
}

/// An OK payload re-encodes to the same values (integers may shrink to their shortest form).
fn ok(p: &[u8]) {
    if let Ok(ok) = OkPacket::decode(p) {
        let mut out = BytesMut::new();
        ok.encode(&mut out);
        assert_eq!(OkPacket::decode(&out).unwrap(), ok);
        assert!(out.len() <= p.len());
    }
}

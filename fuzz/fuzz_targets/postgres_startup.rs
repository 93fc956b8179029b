//! PostgreSQL connection phase, both directions (`rds_iam_proxy::postgres::proto`), over any
//! chunking (the shared "chunked stream" layout). Byte 0's bit 7 picks the direction:
//!
//! - frontend (clear): untyped startup packets (SSLRequest, GSSENCRequest, StartupMessage,
//!   CancelRequest) until a StartupMessage, then typed `'p'` messages read as PasswordMessage,
//!   SASLInitialResponse and SASLResponse, whose data also goes through the SCRAM verifier;
//! - backend (set): typed messages read as backend messages of the connection phase.
//!
//! What must hold: no panic; the framers (and the relay's boundary tracker) find the same
//! messages and the same error in one read as in the fuzzer's reads; whatever decodes re-encodes
//! to exactly the bytes it came from.
#![no_main]

use std::num::NonZeroU32;
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::postgres::proto::frame::{
    Boundaries, MAX_LOGIN_MESSAGE_LEN, MAX_STARTUP_LEN, take_message, take_startup,
};
use rds_iam_proxy::postgres::proto::scram::ScramVerifier;
use rds_iam_proxy::postgres::proto::{
    BackendMessage, Error, Message, PasswordMessage, SaslInitialResponse, SaslResponse,
    StartupPacket,
};
use rds_iam_proxy_fuzz::Chunked;

/// One frame the framers took off the stream: its raw bytes, and whether it is a startup packet.
#[derive(Debug, PartialEq)]
enum Frame {
    Startup(Vec<u8>),
    Typed(Message),
}

fn verifier() -> &'static ScramVerifier {
    static V: OnceLock<ScramVerifier> = OnceLock::new();
    // One iteration: the fuzzer exercises the parser, not PBKDF2.
    V.get_or_init(|| ScramVerifier::new("fuzz-pw", &[9; 16], NonZeroU32::MIN).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let backend = data.first().is_some_and(|b| b & 0x80 != 0);
    let chunked = Chunked::parse(data);
    let whole = frames(std::iter::once(chunked.stream), backend);
    let pieces = frames(chunked.reads(), backend);
    assert_eq!(whole, pieces, "framing depends on how the bytes arrive");
    // The relay's boundary tracker sees the same boundaries however the bytes arrive.
    let mut one = Boundaries::default();
    one.feed(chunked.stream);
    let mut many = Boundaries::default();
    for read in chunked.reads() {
        many.feed(read);
    }
    assert_eq!(
        (one.boundary(), one.at_boundary(), one.last_tag()),
        (many.boundary(), many.at_boundary(), many.last_tag()),
        "message boundaries depend on how the bytes arrive"
    );
    for f in &whole.0 {
        match f {
            Frame::Startup(body) => startup(body),
            Frame::Typed(m) if backend => backend_message(m),
            Frame::Typed(m) => frontend_message(m),
        }
    }
});

/// Frames the stream as the proxy would: startup packets first (frontend only), then typed.
fn frames<'a>(reads: impl Iterator<Item = &'a [u8]>, backend: bool) -> (Vec<Frame>, Option<Error>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut typed = backend;
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let next = if typed {
                take_message(&mut buf, MAX_LOGIN_MESSAGE_LEN).map(|m| m.map(Frame::Typed))
            } else {
                take_startup(&mut buf, MAX_STARTUP_LEN).map(|b| {
                    b.map(|body| {
                        // After a StartupMessage, typed messages follow.
                        if matches!(StartupPacket::decode(&body), Ok(StartupPacket::Startup(_))) {
                            typed = true;
                        }
                        Frame::Startup(body.to_vec())
                    })
                })
            };
            match next {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn startup(body: &[u8]) {
    let Ok(p) = StartupPacket::decode(body) else {
        return;
    };
    let mut out = BytesMut::new();
    p.encode(&mut out).expect("a decoded packet encodes");
    assert_eq!(&out[4..], body, "startup packet re-encodes byte for byte");
}

fn backend_message(m: &Message) {
    let Ok(b) = BackendMessage::decode(m) else {
        return;
    };
    let mut out = BytesMut::new();
    b.encode(&mut out).expect("a decoded message encodes");
    assert_eq!(out[0], m.tag);
    assert_eq!(
        &out[5..],
        &m.body[..],
        "backend message re-encodes byte for byte"
    );
}

fn frontend_message(m: &Message) {
    if let Ok(p) = PasswordMessage::decode(m) {
        let mut out = BytesMut::new();
        p.encode(&mut out).unwrap();
        assert_eq!(&out[5..], &m.body[..]);
    }
    if let Ok(s) = SaslInitialResponse::decode(m) {
        let mut out = BytesMut::new();
        s.encode(&mut out).unwrap();
        assert_eq!(&out[5..], &m.body[..]);
        if let Some(data) = &s.data {
            scram(data, b"");
        }
    }
    if let Ok(s) = SaslResponse::decode(m) {
        let mut out = BytesMut::new();
        s.encode(&mut out);
        assert_eq!(&out[5..], &m.body[..]);
        // The body split in two as a client-first and a client-final message, and whole as a
        // client-final message after a well-formed client-first.
        let (first, last) = s.data.split_at(s.data.len() / 2);
        scram(first, last);
        scram(b"n,,n=,r=fuzz", &s.data);
    }
}

fn scram(client_first: &[u8], client_final: &[u8]) {
    if let Ok((exchange, server_first)) = verifier().server_first(client_first, "srvnonce") {
        assert!(server_first.starts_with("r="));
        if let Ok(v) = exchange.server_final(client_final) {
            assert!(v.starts_with("v="));
        }
    }
}

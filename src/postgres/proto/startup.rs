//! What a client sends before its first typed message: `SSLRequest`, `GSSENCRequest`,
//! `StartupMessage` and `CancelRequest`. Each is an untyped packet (see [`super::frame`]) whose
//! body starts with an `int32`: a protocol version, or a request code with major 1234.

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;
use super::frame::{self, Reader, check_no_nul, put_cstr};

/// `SSLRequest`'s code, 1234.5679.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// `GSSENCRequest`'s code, 1234.5680.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// `CancelRequest`'s code, 1234.5678.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Shortest cancel key: protocol 3.0's 4 bytes.
pub const MIN_CANCEL_KEY_LEN: usize = 4;
/// Longest cancel key protocol 3.2 allows (PostgreSQL 18 sends 32).
pub const MAX_CANCEL_KEY_LEN: usize = 256;

/// A protocol version word: major in the high 16 bits, minor in the low 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion(pub u32);

impl ProtocolVersion {
    /// 3.0: every server since 7.4.
    pub const V3_0: ProtocolVersion = ProtocolVersion(0x0003_0000);
    /// 3.2: PostgreSQL 18 (variable-length cancel keys). 3.1 was never used.
    pub const V3_2: ProtocolVersion = ProtocolVersion(0x0003_0002);

    /// The major version.
    pub fn major(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The minor version.
    pub fn minor(self) -> u16 {
        self.0 as u16
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

/// `SSLRequest`: the client asks for TLS before anything else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SslRequest;

impl SslRequest {
    /// The whole 8-byte packet.
    pub const BYTES: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

    /// Appends the packet.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(&Self::BYTES);
    }
}

/// `GSSENCRequest`: the client asks for GSSAPI encryption (the proxy refuses it with `N`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GssEncRequest;

impl GssEncRequest {
    /// The whole 8-byte packet.
    pub const BYTES: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

    /// Appends the packet.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(&Self::BYTES);
    }
}

/// `StartupMessage`: the protocol version and the session parameters (`user`, `database`,
/// `options`, `application_name`, `_pq_.*` protocol options, …), in the client's order.
///
/// Names and values must be UTF-8 here: a client whose parameters are not is refused with a
/// clear error rather than passed on half-understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupMessage {
    /// The requested protocol version (3.0 or 3.2; a server answers a newer minor with
    /// `NegotiateProtocolVersion`).
    pub version: ProtocolVersion,
    /// `(name, value)` pairs, in order. `user` is always present.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// A startup message for `user` with the given further parameters.
    pub fn new(version: ProtocolVersion, user: &str, more: &[(&str, &str)]) -> Self {
        let mut params = vec![("user".to_owned(), user.to_owned())];
        params.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        StartupMessage { version, params }
    }

    /// The value of parameter `name` (the last one if a client repeated it, as the server does).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `user` parameter.
    pub fn user(&self) -> &str {
        self.get("user").unwrap_or_default()
    }

    /// The database: the `database` parameter, or the user name as the server defaults it.
    pub fn database(&self) -> &str {
        self.get("database")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.user())
    }

    /// Decodes the body after the length word; the version word has been checked to be 3.x by
    /// [`StartupPacket::decode`] or is checked here.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let version = ProtocolVersion(r.u32("protocol version")?);
        if version.major() != 3 {
            return Err(Error::UnsupportedProtocol {
                major: version.major(),
                minor: version.minor(),
            });
        }
        let mut params = Vec::new();
        loop {
            let name = r.cstr_utf8("parameter name")?;
            if name.is_empty() {
                break;
            }
            let value = r.cstr_utf8("parameter value")?;
            params.push((name.to_owned(), value.to_owned()));
        }
        // PostgreSQL: "invalid startup packet layout: expected terminator as last byte".
        r.finish("startup packet terminator")?;
        let m = StartupMessage { version, params };
        if m.get("user").is_none_or(str::is_empty) {
            return Err(Error::Malformed {
                field: "user",
                reason: "no user name in the startup packet",
            });
        }
        Ok(m)
    }

    /// Appends the whole packet (length word included). Fails if a name is empty or a name or
    /// value holds a NUL.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let mut body = BytesMut::with_capacity(64);
        body.put_u32(self.version.0);
        for (k, v) in &self.params {
            if k.is_empty() {
                return Err(Error::Malformed {
                    field: "parameter name",
                    reason: "empty",
                });
            }
            check_no_nul(k.as_bytes(), "parameter name")?;
            check_no_nul(v.as_bytes(), "parameter value")?;
            put_cstr(&mut body, k.as_bytes());
            put_cstr(&mut body, v.as_bytes());
        }
        body.put_u8(0);
        if body.len() + 4 > frame::MAX_STARTUP_LEN {
            return Err(Error::TooLong {
                len: body.len() as u64 + 4,
                max: frame::MAX_STARTUP_LEN,
            });
        }
        frame::put_startup(&body, dst);
        Ok(())
    }
}

/// `CancelRequest`: sent on a new connection to cancel the query of the backend the key names.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// The backend's process id, from its `BackendKeyData`.
    pub process_id: u32,
    /// The secret key from the same `BackendKeyData`: 4 bytes in protocol 3.0, up to 256 in 3.2.
    pub secret_key: Bytes,
}

impl std::fmt::Debug for CancelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelRequest")
            .field("process_id", &self.process_id)
            .field("secret_key_len", &self.secret_key.len())
            .finish()
    }
}

impl CancelRequest {
    /// Decodes the body after the length word (code included).
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        if r.u32("request code")? != CANCEL_REQUEST_CODE {
            return Err(Error::Malformed {
                field: "request code",
                reason: "not a CancelRequest",
            });
        }
        let process_id = r.u32("process id")?;
        let secret_key = r.rest();
        check_key_len(secret_key.len(), "cancel secret key")?;
        Ok(CancelRequest {
            process_id,
            secret_key: Bytes::copy_from_slice(secret_key),
        })
    }

    /// Appends the whole packet. Fails on a key outside 4..=256 bytes.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        check_key_len(self.secret_key.len(), "cancel secret key")?;
        let mut body = BytesMut::with_capacity(8 + self.secret_key.len());
        body.put_u32(CANCEL_REQUEST_CODE);
        body.put_u32(self.process_id);
        body.put_slice(&self.secret_key);
        frame::put_startup(&body, dst);
        Ok(())
    }
}

/// Checks a cancel key's length against protocol 3.2's bounds (3.0's 4 bytes included).
pub(crate) fn check_key_len(len: usize, field: &'static str) -> Result<(), Error> {
    if (MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&len) {
        Ok(())
    } else {
        Err(Error::Malformed {
            field,
            reason: "must be 4 to 256 bytes",
        })
    }
}

/// Any untyped packet a client may start a connection (or, after `N`/TLS, continue it) with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// `SSLRequest`.
    SslRequest,
    /// `GSSENCRequest`.
    GssEncRequest,
    /// `StartupMessage`.
    Startup(StartupMessage),
    /// `CancelRequest`.
    Cancel(CancelRequest),
}

impl StartupPacket {
    /// Decodes the body [`frame::take_startup`] returned.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let code = Reader::new(body).u32("protocol version")?;
        match code {
            SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
                if body.len() != 4 {
                    return Err(Error::Malformed {
                        field: "encryption request",
                        reason: "must be exactly 8 bytes",
                    });
                }
                Ok(if code == SSL_REQUEST_CODE {
                    StartupPacket::SslRequest
                } else {
                    StartupPacket::GssEncRequest
                })
            }
            CANCEL_REQUEST_CODE => CancelRequest::decode(body).map(StartupPacket::Cancel),
            _ => StartupMessage::decode(body).map(StartupPacket::Startup),
        }
    }

    /// Appends the whole packet.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        match self {
            StartupPacket::SslRequest => SslRequest.encode(dst),
            StartupPacket::GssEncRequest => GssEncRequest.encode(dst),
            StartupPacket::Startup(m) => m.encode(dst)?,
            StartupPacket::Cancel(c) => c.encode(dst)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::proto::frame::{MAX_STARTUP_LEN, take_startup};

    fn one(bytes: &[u8]) -> Result<StartupPacket, Error> {
        let mut b = BytesMut::from(bytes);
        let body = take_startup(&mut b, MAX_STARTUP_LEN)?.expect("whole packet");
        assert!(b.is_empty());
        StartupPacket::decode(&body)
    }

    #[test]
    fn encryption_requests_are_the_spec_codes() {
        assert_eq!(one(&SslRequest::BYTES).unwrap(), StartupPacket::SslRequest);
        assert_eq!(
            one(&GssEncRequest::BYTES).unwrap(),
            StartupPacket::GssEncRequest
        );
        assert_eq!(
            u32::from_be_bytes([0x04, 0xd2, 0x16, 0x2f]),
            SSL_REQUEST_CODE
        );
        assert_eq!(SSL_REQUEST_CODE, (1234 << 16) | 5679);
        assert_eq!(GSSENC_REQUEST_CODE, (1234 << 16) | 5680);
        assert_eq!(CANCEL_REQUEST_CODE, (1234 << 16) | 5678);
        // With a trailing byte it is not an SSLRequest.
        assert!(one(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0]).is_err());
    }

    #[test]
    fn startup_message_round_trips_for_3_0_and_3_2() {
        for v in [ProtocolVersion::V3_0, ProtocolVersion::V3_2] {
            let m = StartupMessage::new(
                v,
                "iamuser",
                &[("database", "app"), ("_pq_.test_option", "on")],
            );
            let mut out = BytesMut::new();
            m.encode(&mut out).unwrap();
            assert_eq!(one(&out).unwrap(), StartupPacket::Startup(m.clone()));
            assert_eq!(m.user(), "iamuser");
            assert_eq!(m.database(), "app");
        }
        assert_eq!(ProtocolVersion::V3_2.to_string(), "3.2");
    }

    #[test]
    fn startup_message_rejections() {
        let enc = |body: &[u8]| {
            let mut out = BytesMut::new();
            frame::put_startup(body, &mut out);
            one(&out)
        };
        // Protocol 2.0.
        assert_eq!(
            enc(&[0, 2, 0, 0, 0]).unwrap_err(),
            Error::UnsupportedProtocol { major: 2, minor: 0 }
        );
        // No user.
        assert!(matches!(
            enc(b"\0\x03\0\0database\0x\0\0").unwrap_err(),
            Error::Malformed { field: "user", .. }
        ));
        // Missing terminator, trailing bytes, non-UTF-8.
        assert!(matches!(
            enc(b"\0\x03\0\0user\0x\0").unwrap_err(),
            Error::Truncated { .. }
        ));
        assert!(matches!(
            enc(b"\0\x03\0\0user\0x\0\0junk").unwrap_err(),
            Error::Malformed { .. }
        ));
        assert!(matches!(
            enc(b"\0\x03\0\0user\0\xff\0\0").unwrap_err(),
            Error::Malformed {
                reason: "not UTF-8",
                ..
            }
        ));
        let bad = StartupMessage::new(ProtocolVersion::V3_0, "a\0b", &[]);
        assert!(bad.encode(&mut BytesMut::new()).is_err());
    }

    #[test]
    fn cancel_request_keys_of_3_0_and_3_2() {
        for key_len in [4usize, 32, 256] {
            let c = CancelRequest {
                process_id: 4242,
                secret_key: Bytes::from(vec![0xA5; key_len]),
            };
            let mut out = BytesMut::new();
            c.encode(&mut out).unwrap();
            assert_eq!(out.len(), 12 + key_len);
            assert_eq!(one(&out).unwrap(), StartupPacket::Cancel(c.clone()));
            assert!(!format!("{c:?}").contains("165"), "the key never shows");
        }
        for key_len in [0usize, 3, 257] {
            let mut body = BytesMut::new();
            body.put_u32(CANCEL_REQUEST_CODE);
            body.put_u32(1);
            body.put_slice(&vec![1; key_len]);
            let mut out = BytesMut::new();
            frame::put_startup(&body, &mut out);
            assert!(one(&out).is_err(), "key of {key_len}");
        }
    }
}

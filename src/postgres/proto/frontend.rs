//! The client's typed messages of the connection phase: all three share type `'p'`, and which
//! one it is follows from what the server asked (cleartext or MD5 password → `PasswordMessage`;
//! `AuthenticationSASL` → `SASLInitialResponse`; `AuthenticationSASLContinue` → `SASLResponse`).
//! A client may also send `Terminate` (`'X'`) and go.

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;
use super::frame::{self, Message, Reader, check_no_nul, put_cstr};

/// Type byte of `PasswordMessage`, `SASLInitialResponse` and `SASLResponse`.
pub const TAG_PASSWORD: u8 = b'p';
/// Type byte of `Terminate`.
pub const TAG_TERMINATE: u8 = b'X';

fn expect_password_tag(m: &Message) -> Result<&[u8], Error> {
    if m.tag == TAG_PASSWORD {
        Ok(&m.body)
    } else {
        Err(Error::UnexpectedTag {
            tag: m.tag,
            expected: "a password or SASL message ('p')",
        })
    }
}

/// `PasswordMessage`: a cleartext password (or an IAM token), or an MD5 hash. `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordMessage {
    /// The password bytes, without the NUL.
    pub password: Bytes,
}

impl std::fmt::Debug for PasswordMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PasswordMessage(<redacted, {} bytes>)",
            self.password.len()
        )
    }
}

impl PasswordMessage {
    /// Decodes a framed `'p'` message as a password.
    pub fn decode(m: &Message) -> Result<Self, Error> {
        let mut r = Reader::new(expect_password_tag(m)?);
        let password = r.cstr("password")?;
        r.finish("PasswordMessage")?;
        Ok(PasswordMessage {
            password: Bytes::copy_from_slice(password),
        })
    }

    /// Appends the whole message. Fails if the password holds a NUL.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        check_no_nul(&self.password, "password")?;
        let mut body = BytesMut::with_capacity(self.password.len() + 1);
        put_cstr(&mut body, &self.password);
        frame::put_message(TAG_PASSWORD, &body, dst);
        Ok(())
    }
}

/// `SASLInitialResponse`: the chosen mechanism and its first message (SCRAM's client-first).
#[derive(Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    /// The mechanism, one the server offered.
    pub mechanism: String,
    /// The initial response; `None` is the wire's length −1.
    pub data: Option<Bytes>,
}

impl std::fmt::Debug for SaslInitialResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslInitialResponse")
            .field("mechanism", &self.mechanism)
            .field("data_len", &self.data.as_ref().map(Bytes::len))
            .finish()
    }
}

impl SaslInitialResponse {
    /// Decodes a framed `'p'` message as a `SASLInitialResponse`.
    pub fn decode(m: &Message) -> Result<Self, Error> {
        let mut r = Reader::new(expect_password_tag(m)?);
        let mechanism = r.cstr_utf8("SASL mechanism")?.to_owned();
        let len = r.i32("SASL initial response length")?;
        let data = match len {
            -1 => None,
            n if n < 0 => {
                return Err(Error::Malformed {
                    field: "SASL initial response length",
                    reason: "negative",
                });
            }
            n => Some(Bytes::copy_from_slice(
                r.bytes(n as usize, "SASL initial response")?,
            )),
        };
        r.finish("SASLInitialResponse")?;
        Ok(SaslInitialResponse { mechanism, data })
    }

    /// Appends the whole message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        check_no_nul(self.mechanism.as_bytes(), "SASL mechanism")?;
        let data_len = self.data.as_ref().map_or(0, Bytes::len);
        let mut body = BytesMut::with_capacity(self.mechanism.len() + 5 + data_len);
        put_cstr(&mut body, self.mechanism.as_bytes());
        match &self.data {
            None => body.put_i32(-1),
            Some(d) => {
                body.put_i32(i32::try_from(d.len()).map_err(|_| Error::TooLong {
                    len: d.len() as u64,
                    max: i32::MAX as usize,
                })?);
                body.put_slice(d);
            }
        }
        frame::put_message(TAG_PASSWORD, &body, dst);
        Ok(())
    }
}

/// `SASLResponse`: a later SASL message (SCRAM's client-final, with the proof).
#[derive(Clone, PartialEq, Eq)]
pub struct SaslResponse {
    /// The mechanism's message.
    pub data: Bytes,
}

impl std::fmt::Debug for SaslResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SaslResponse(<{} bytes>)", self.data.len())
    }
}

impl SaslResponse {
    /// Decodes a framed `'p'` message as a `SASLResponse`.
    pub fn decode(m: &Message) -> Result<Self, Error> {
        expect_password_tag(m)?;
        Ok(SaslResponse {
            data: m.body.clone(),
        })
    }

    /// Appends the whole message.
    pub fn encode(&self, dst: &mut BytesMut) {
        frame::put_message(TAG_PASSWORD, &self.data, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::proto::frame::take_message;

    fn framed(bytes: &BytesMut) -> Message {
        let mut b = bytes.clone();
        let m = take_message(&mut b, 1 << 16).unwrap().unwrap();
        assert!(b.is_empty());
        m
    }

    #[test]
    fn password_round_trips_and_never_shows() {
        let p = PasswordMessage {
            password: Bytes::from_static(b"host:5432/?Action=connect&X-Amz-Signature=s3cr3t"),
        };
        let mut out = BytesMut::new();
        p.encode(&mut out).unwrap();
        assert_eq!(PasswordMessage::decode(&framed(&out)).unwrap(), p);
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let bad = PasswordMessage {
            password: Bytes::from_static(b"a\0b"),
        };
        assert!(bad.encode(&mut BytesMut::new()).is_err());
    }

    #[test]
    fn sasl_messages_round_trip() {
        for data in [
            None,
            Some(Bytes::from_static(b"n,,n=,r=abc")),
            Some(Bytes::new()),
        ] {
            let s = SaslInitialResponse {
                mechanism: "SCRAM-SHA-256".into(),
                data,
            };
            let mut out = BytesMut::new();
            s.encode(&mut out).unwrap();
            assert_eq!(SaslInitialResponse::decode(&framed(&out)).unwrap(), s);
        }
        let s = SaslResponse {
            data: Bytes::from_static(b"c=biws,r=abc,p=proof"),
        };
        let mut out = BytesMut::new();
        s.encode(&mut out);
        assert_eq!(SaslResponse::decode(&framed(&out)).unwrap(), s);
        assert!(!format!("{s:?}").contains("proof"));
    }

    #[test]
    fn malformed_frontend_messages_are_errors() {
        let m = |tag, body: &'static [u8]| Message {
            tag,
            body: Bytes::from_static(body),
        };
        assert!(PasswordMessage::decode(&m(b'p', b"no nul")).is_err());
        assert!(PasswordMessage::decode(&m(b'p', b"a\0b\0")).is_err());
        assert!(PasswordMessage::decode(&m(b'Q', b"a\0")).is_err());
        assert!(SaslInitialResponse::decode(&m(b'p', b"M\0\xff\xff\xff\xfe")).is_err());
        assert!(SaslInitialResponse::decode(&m(b'p', b"M\0\x7f\xff\xff\xff")).is_err());
        assert!(SaslInitialResponse::decode(&m(b'p', b"M\0\0\0\0\x01ab")).is_err());
        assert!(SaslResponse::decode(&m(b'X', b"")).is_err());
    }
}

//! Generic response packets: [`OkPacket`], [`ErrPacket`], and the classification of what a server
//! sends during login ([`LoginReply`]).
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html>,
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_err_packet.html>.
//! The proxy forwards the upstream's final OK unchanged; it builds ERR packets itself to report its
//! own failures in a form every MySQL client displays.

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;
use super::buf::{Reader, put_lenenc_int};
use super::handshake::{AuthMoreData, AuthSwitchRequest};

/// `OK_Packet` (header `0x00`, or `0xFE` at the end of a result set under `DEPRECATE_EOF`).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct OkPacket {
    /// `int<lenenc>` affected rows.
    pub affected_rows: u64,
    /// `int<lenenc>` last insert id.
    pub last_insert_id: u64,
    /// `int<2>` status flags.
    pub status_flags: u16,
    /// `int<2>` warnings.
    pub warnings: u16,
    /// Everything after the warnings (info and session state, whose layout depends on
    /// `SESSION_TRACK`), kept raw.
    pub trailer: Bytes,
}

impl OkPacket {
    /// Header byte.
    pub const HEADER: u8 = 0x00;

    /// Parses an OK payload (header `0x00` or `0xFE`).
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        match r.u8("header")? {
            0x00 | 0xFE => {}
            _ => {
                return Err(Error::Malformed {
                    field: "header",
                    reason: "OK packet must start with 0x00 or 0xFE",
                });
            }
        }
        Ok(OkPacket {
            affected_rows: r.lenenc_int("affected_rows")?,
            last_insert_id: r.lenenc_int("last_insert_id")?,
            status_flags: r.u16("status_flags")?,
            warnings: r.u16("warnings")?,
            trailer: Bytes::copy_from_slice(r.rest()),
        })
    }

    /// Writes the payload with header `0x00`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(Self::HEADER);
        put_lenenc_int(dst, self.affected_rows);
        put_lenenc_int(dst, self.last_insert_id);
        dst.put_u16_le(self.status_flags);
        dst.put_u16_le(self.warnings);
        dst.put_slice(&self.trailer);
    }
}

/// `ERR_Packet`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ErrPacket {
    /// `int<2>` error code.
    pub code: u16,
    /// `string[5]` SQLSTATE after a `#` marker (4.1 protocol, after capabilities were agreed).
    pub sql_state: Option<[u8; 5]>,
    /// `string<EOF>` human-readable message.
    pub message: Bytes,
}

impl ErrPacket {
    /// Header byte.
    pub const HEADER: u8 = 0xFF;

    /// An error with a SQLSTATE, for use after the greeting.
    pub fn new(code: u16, sql_state: &[u8; 5], message: impl Into<String>) -> Self {
        ErrPacket {
            code,
            sql_state: Some(*sql_state),
            message: Bytes::from(message.into()),
        }
    }

    /// An error sent in place of the greeting: no SQLSTATE, as capabilities are not agreed yet.
    pub fn before_greeting(code: u16, message: impl Into<String>) -> Self {
        ErrPacket {
            code,
            sql_state: None,
            message: Bytes::from(message.into()),
        }
    }

    /// Parses an ERR payload.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        if r.u8("header")? != Self::HEADER {
            return Err(Error::Malformed {
                field: "header",
                reason: "ERR packet must start with 0xFF",
            });
        }
        let code = r.u16("error_code")?;
        let mut sql_state = None;
        if r.remaining() >= 6 && payload[3] == b'#' {
            r.u8("sql_state_marker")?;
            let s = r.bytes(5, "sql_state")?;
            sql_state = Some([s[0], s[1], s[2], s[3], s[4]]);
        }
        Ok(ErrPacket {
            code,
            sql_state,
            message: Bytes::copy_from_slice(r.rest()),
        })
    }

    /// Writes the payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(Self::HEADER);
        dst.put_u16_le(self.code);
        if let Some(state) = &self.sql_state {
            dst.put_u8(b'#');
            dst.put_slice(state);
        }
        dst.put_slice(&self.message);
    }

    /// The message as text (lossy).
    pub fn message_str(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }

    /// This ERR as a whole packet (header included) with sequence id `seq`, ready to write.
    pub fn to_packet(&self, seq: u8) -> bytes::BytesMut {
        let mut payload = bytes::BytesMut::new();
        self.encode(&mut payload);
        let mut out = bytes::BytesMut::with_capacity(payload.len() + super::packet::HEADER_LEN);
        super::packet::encode(seq, &payload, &mut out);
        out
    }
}

/// What a server may answer to a HandshakeResponse41, an auth-switch response or COM_CHANGE_USER.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LoginReply {
    /// `0x00`: logged in. The raw payload is kept so it can be forwarded unchanged.
    Ok(Bytes),
    /// `0xFF`: refused.
    Err(ErrPacket),
    /// `0xFE`: switch to another auth plugin.
    AuthSwitch(AuthSwitchRequest),
    /// `0x01`: more data for the current plugin.
    MoreData(AuthMoreData),
    /// `0x02`: MySQL 8.0.27+ multi-factor authentication asks for the next factor.
    NextFactor,
}

impl LoginReply {
    /// Classifies a login-phase payload.
    pub fn decode(payload: Bytes) -> Result<Self, Error> {
        match payload.first() {
            Some(0x00) => Ok(LoginReply::Ok(payload)),
            Some(0xFF) => Ok(LoginReply::Err(ErrPacket::decode(&payload)?)),
            Some(0xFE) => Ok(LoginReply::AuthSwitch(AuthSwitchRequest::decode(&payload)?)),
            Some(0x01) => Ok(LoginReply::MoreData(AuthMoreData::decode(&payload)?)),
            Some(0x02) => Ok(LoginReply::NextFactor),
            Some(_) => Err(Error::Malformed {
                field: "status_tag",
                reason: "unexpected packet during authentication",
            }),
            None => Err(Error::Truncated {
                field: "status_tag",
            }),
        }
    }
}

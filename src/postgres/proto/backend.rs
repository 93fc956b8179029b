//! The server's side of the connection phase: the single-byte answer to an encryption request,
//! `Authentication*` (`'R'`), `ParameterStatus` (`'S'`), `BackendKeyData` (`'K'`),
//! `ReadyForQuery` (`'Z'`), `ErrorResponse` (`'E'`), `NoticeResponse` (`'N'`) and
//! `NegotiateProtocolVersion` (`'v'`). The proxy decodes these from the upstream and encodes them
//! towards its client (its own errors included).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;
use super::frame::{self, Message, Reader, check_no_nul, put_cstr};
use super::startup::{ProtocolVersion, check_key_len};

/// Message type bytes of the backend messages this codec knows.
pub mod tag {
    /// `Authentication*`.
    pub const AUTHENTICATION: u8 = b'R';
    /// `ParameterStatus`.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// `BackendKeyData`.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// `ReadyForQuery`.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// `ErrorResponse`.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// `NoticeResponse`.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// `NegotiateProtocolVersion`.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// The server's one-byte answer to `SSLRequest` (`S`/`N`) or `GSSENCRequest` (`G`/`N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionResponse {
    /// `S` (or `G`): start the TLS (or GSSAPI) handshake now.
    Accept,
    /// `N`: carry on unencrypted (or send another request).
    Refuse,
    /// `E`: an `ErrorResponse` follows, unencrypted and so unauthenticated: a client must not
    /// show its text as the server's (it may come from anyone on the path).
    Error,
}

impl EncryptionResponse {
    /// Reads the answer to an `SSLRequest` (`gss == false`) or a `GSSENCRequest`.
    pub fn decode(byte: u8, gss: bool) -> Result<Self, Error> {
        match (byte, gss) {
            (b'S', false) | (b'G', true) => Ok(EncryptionResponse::Accept),
            (b'N', _) => Ok(EncryptionResponse::Refuse),
            (b'E', _) => Ok(EncryptionResponse::Error),
            _ => Err(Error::Malformed {
                field: "encryption response",
                reason: "not S, G, N or E",
            }),
        }
    }

    /// The byte to send (`gss` picks `G` over `S` for [`Self::Accept`]).
    pub fn byte(self, gss: bool) -> u8 {
        match self {
            EncryptionResponse::Accept if gss => b'G',
            EncryptionResponse::Accept => b'S',
            EncryptionResponse::Refuse => b'N',
            EncryptionResponse::Error => b'E',
        }
    }
}

/// Authentication request codes (the `Int32` after `'R'`).
pub mod auth_code {
    /// `AuthenticationOk`.
    pub const OK: u32 = 0;
    /// `AuthenticationKerberosV5` (gone since 9.4).
    pub const KERBEROS_V5: u32 = 2;
    /// `AuthenticationCleartextPassword`: what RDS IAM (and `pam`) asks.
    pub const CLEARTEXT_PASSWORD: u32 = 3;
    /// `AuthenticationMD5Password`.
    pub const MD5_PASSWORD: u32 = 5;
    /// `AuthenticationGSS`.
    pub const GSS: u32 = 7;
    /// `AuthenticationGSSContinue`.
    pub const GSS_CONTINUE: u32 = 8;
    /// `AuthenticationSSPI`.
    pub const SSPI: u32 = 9;
    /// `AuthenticationSASL`.
    pub const SASL: u32 = 10;
    /// `AuthenticationSASLContinue`.
    pub const SASL_CONTINUE: u32 = 11;
    /// `AuthenticationSASLFinal`.
    pub const SASL_FINAL: u32 = 12;
}

/// `Authentication*`: the server's request for credentials, or its verdict.
#[derive(Clone, PartialEq, Eq)]
pub enum Authentication {
    /// `AuthenticationOk` (0).
    Ok,
    /// `AuthenticationCleartextPassword` (3).
    CleartextPassword,
    /// `AuthenticationMD5Password` (5) with its salt.
    Md5Password {
        /// The 4-byte salt.
        salt: [u8; 4],
    },
    /// `AuthenticationSASL` (10): the mechanisms the server offers, in its order of preference.
    Sasl {
        /// E.g. `SCRAM-SHA-256-PLUS`, `SCRAM-SHA-256`.
        mechanisms: Vec<String>,
    },
    /// `AuthenticationSASLContinue` (11): the mechanism's challenge (SCRAM's server-first).
    SaslContinue(Bytes),
    /// `AuthenticationSASLFinal` (12): the mechanism's outcome (SCRAM's server signature).
    SaslFinal(Bytes),
    /// Any other code (Kerberos V5, GSS, GSSContinue, SSPI, or unknown), kept whole so it can be
    /// re-encoded; the proxy refuses these.
    Unsupported {
        /// The request code.
        code: u32,
        /// Whatever followed it.
        data: Bytes,
    },
}

impl std::fmt::Debug for Authentication {
    // SASL payloads carry nonces and signatures: shapes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authentication::Sasl { mechanisms } => f
                .debug_struct("AuthenticationSASL")
                .field("mechanisms", mechanisms)
                .finish(),
            Authentication::SaslContinue(d) | Authentication::SaslFinal(d) => {
                write!(f, "{}({} bytes)", self.name(), d.len())
            }
            Authentication::Unsupported { code, data } => {
                write!(
                    f,
                    "Authentication(unsupported: code {code}, {} bytes)",
                    data.len()
                )
            }
            _ => f.write_str(self.name()),
        }
    }
}

impl Authentication {
    /// The request code on the wire.
    pub fn code(&self) -> u32 {
        match self {
            Authentication::Ok => auth_code::OK,
            Authentication::CleartextPassword => auth_code::CLEARTEXT_PASSWORD,
            Authentication::Md5Password { .. } => auth_code::MD5_PASSWORD,
            Authentication::Sasl { .. } => auth_code::SASL,
            Authentication::SaslContinue(_) => auth_code::SASL_CONTINUE,
            Authentication::SaslFinal(_) => auth_code::SASL_FINAL,
            Authentication::Unsupported { code, .. } => *code,
        }
    }

    /// The message's name in the protocol documentation, for errors a person reads.
    pub fn name(&self) -> &'static str {
        match self.code() {
            auth_code::OK => "AuthenticationOk",
            auth_code::KERBEROS_V5 => "AuthenticationKerberosV5",
            auth_code::CLEARTEXT_PASSWORD => "AuthenticationCleartextPassword",
            auth_code::MD5_PASSWORD => "AuthenticationMD5Password",
            auth_code::GSS => "AuthenticationGSS",
            auth_code::GSS_CONTINUE => "AuthenticationGSSContinue",
            auth_code::SSPI => "AuthenticationSSPI",
            auth_code::SASL => "AuthenticationSASL",
            auth_code::SASL_CONTINUE => "AuthenticationSASLContinue",
            auth_code::SASL_FINAL => "AuthenticationSASLFinal",
            _ => "Authentication (unknown code)",
        }
    }

    /// Decodes an `'R'` body.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let code = r.u32("authentication code")?;
        let a = match code {
            auth_code::OK => Authentication::Ok,
            auth_code::CLEARTEXT_PASSWORD => Authentication::CleartextPassword,
            auth_code::MD5_PASSWORD => {
                let s = r.bytes(4, "MD5 salt")?;
                Authentication::Md5Password {
                    salt: [s[0], s[1], s[2], s[3]],
                }
            }
            auth_code::SASL => {
                let mut mechanisms = Vec::new();
                loop {
                    let m = r.cstr_utf8("SASL mechanism")?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m.to_owned());
                }
                if mechanisms.is_empty() {
                    return Err(Error::Malformed {
                        field: "SASL mechanism list",
                        reason: "empty",
                    });
                }
                Authentication::Sasl { mechanisms }
            }
            auth_code::SASL_CONTINUE => {
                Authentication::SaslContinue(Bytes::copy_from_slice(r.rest()))
            }
            auth_code::SASL_FINAL => Authentication::SaslFinal(Bytes::copy_from_slice(r.rest())),
            code => Authentication::Unsupported {
                code,
                data: Bytes::copy_from_slice(r.rest()),
            },
        };
        r.finish("authentication request")?;
        Ok(a)
    }

    /// Appends the whole `'R'` message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let mut body = BytesMut::with_capacity(16);
        body.put_u32(self.code());
        match self {
            Authentication::Ok | Authentication::CleartextPassword => {}
            Authentication::Md5Password { salt } => body.put_slice(salt),
            Authentication::Sasl { mechanisms } => {
                if mechanisms.is_empty() {
                    return Err(Error::Malformed {
                        field: "SASL mechanism list",
                        reason: "empty",
                    });
                }
                for m in mechanisms {
                    if m.is_empty() {
                        return Err(Error::Malformed {
                            field: "SASL mechanism",
                            reason: "empty",
                        });
                    }
                    check_no_nul(m.as_bytes(), "SASL mechanism")?;
                    put_cstr(&mut body, m.as_bytes());
                }
                body.put_u8(0);
            }
            Authentication::SaslContinue(d)
            | Authentication::SaslFinal(d)
            | Authentication::Unsupported { data: d, .. } => body.put_slice(d),
        }
        frame::put_message(tag::AUTHENTICATION, &body, dst);
        Ok(())
    }
}

/// `ParameterStatus`: a run-time parameter the client should know (`server_version`,
/// `client_encoding`, `DateStyle`, `integer_datetimes`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterStatus {
    /// Parameter name.
    pub name: String,
    /// Its current value.
    pub value: String,
}

impl ParameterStatus {
    /// Decodes an `'S'` body.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let name = r.cstr_utf8("parameter name")?.to_owned();
        let value = r.cstr_utf8("parameter value")?.to_owned();
        r.finish("ParameterStatus")?;
        Ok(ParameterStatus { name, value })
    }

    /// Appends the whole `'S'` message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        check_no_nul(self.name.as_bytes(), "parameter name")?;
        check_no_nul(self.value.as_bytes(), "parameter value")?;
        let mut body = BytesMut::with_capacity(self.name.len() + self.value.len() + 2);
        put_cstr(&mut body, self.name.as_bytes());
        put_cstr(&mut body, self.value.as_bytes());
        frame::put_message(tag::PARAMETER_STATUS, &body, dst);
        Ok(())
    }
}

/// `BackendKeyData`: what a client needs to cancel this backend's queries later.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendKeyData {
    /// The backend's process id.
    pub process_id: u32,
    /// The secret key: 4 bytes in protocol 3.0, 4 to 256 in 3.2 (PostgreSQL 18 sends 32).
    pub secret_key: Bytes,
}

impl std::fmt::Debug for BackendKeyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendKeyData")
            .field("process_id", &self.process_id)
            .field("secret_key_len", &self.secret_key.len())
            .finish()
    }
}

impl BackendKeyData {
    /// Decodes a `'K'` body.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let process_id = r.u32("process id")?;
        let key = r.rest();
        check_key_len(key.len(), "BackendKeyData secret key")?;
        Ok(BackendKeyData {
            process_id,
            secret_key: Bytes::copy_from_slice(key),
        })
    }

    /// Appends the whole `'K'` message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        check_key_len(self.secret_key.len(), "BackendKeyData secret key")?;
        let mut body = BytesMut::with_capacity(4 + self.secret_key.len());
        body.put_u32(self.process_id);
        body.put_slice(&self.secret_key);
        frame::put_message(tag::BACKEND_KEY_DATA, &body, dst);
        Ok(())
    }
}

/// The transaction status in `ReadyForQuery`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block (always the case right after login).
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

/// `ReadyForQuery`: login is over (or a query cycle is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyForQuery {
    /// The transaction status.
    pub status: TransactionStatus,
}

impl ReadyForQuery {
    /// Decodes a `'Z'` body.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let status = match r.u8("transaction status")? {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            _ => {
                return Err(Error::Malformed {
                    field: "transaction status",
                    reason: "not I, T or E",
                });
            }
        };
        r.finish("ReadyForQuery")?;
        Ok(ReadyForQuery { status })
    }

    /// Appends the whole `'Z'` message.
    pub fn encode(&self, dst: &mut BytesMut) {
        let b = match self.status {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        };
        frame::put_message(tag::READY_FOR_QUERY, &[b], dst);
    }
}

/// Field type codes of `ErrorResponse` / `NoticeResponse`.
pub mod field {
    /// Severity, localized (`ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, …).
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (9.6 and later).
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// SQLSTATE code.
    pub const CODE: u8 = b'C';
    /// Primary message.
    pub const MESSAGE: u8 = b'M';
    /// Detail.
    pub const DETAIL: u8 = b'D';
    /// Hint.
    pub const HINT: u8 = b'H';
    /// Source file.
    pub const FILE: u8 = b'F';
    /// Source line.
    pub const LINE: u8 = b'L';
    /// Source routine.
    pub const ROUTINE: u8 = b'R';
}

/// One `(code, value)` field of an error or notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field type byte (see [`field`]).
    pub code: u8,
    /// The value, as sent (normally UTF-8; kept as bytes so any server's text survives).
    pub value: Bytes,
}

/// The fields both `ErrorResponse` and `NoticeResponse` carry.
fn decode_fields(body: &[u8]) -> Result<Vec<Field>, Error> {
    let mut r = Reader::new(body);
    let mut fields = Vec::new();
    loop {
        let code = r.u8("error field type")?;
        if code == 0 {
            break;
        }
        let value = r.cstr("error field value")?;
        fields.push(Field {
            code,
            value: Bytes::copy_from_slice(value),
        });
    }
    r.finish("error fields terminator")?;
    Ok(fields)
}

fn encode_fields(tag: u8, fields: &[Field], dst: &mut BytesMut) -> Result<(), Error> {
    let mut body = BytesMut::with_capacity(64);
    for f in fields {
        if f.code == 0 {
            return Err(Error::Malformed {
                field: "error field type",
                reason: "zero",
            });
        }
        check_no_nul(&f.value, "error field value")?;
        body.put_u8(f.code);
        put_cstr(&mut body, &f.value);
    }
    body.put_u8(0);
    frame::put_message(tag, &body, dst);
    Ok(())
}

fn get(fields: &[Field], code: u8) -> Option<Cow<'_, str>> {
    fields
        .iter()
        .find(|f| f.code == code)
        .map(|f| String::from_utf8_lossy(&f.value))
}

/// `ErrorResponse`: a refusal; during login the server closes the connection after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The fields, in wire order.
    pub fields: Vec<Field>,
}

impl ErrorResponse {
    /// A `FATAL` error (what ends a login) with a SQLSTATE and a message, as PostgreSQL writes
    /// its own: `S` and `V` severities, `C`, `M`.
    pub fn fatal(sqlstate: &str, message: impl Into<String>) -> Self {
        Self::with_severity("FATAL", sqlstate, message)
    }

    /// An `ERROR` (what ends a query but not the session).
    pub fn error(sqlstate: &str, message: impl Into<String>) -> Self {
        Self::with_severity("ERROR", sqlstate, message)
    }

    fn with_severity(severity: &'static str, sqlstate: &str, message: impl Into<String>) -> Self {
        let text = |s: &str| Bytes::from(s.replace('\0', " "));
        ErrorResponse {
            fields: vec![
                Field {
                    code: field::SEVERITY,
                    value: Bytes::from_static(severity.as_bytes()),
                },
                Field {
                    code: field::SEVERITY_NONLOCALIZED,
                    value: Bytes::from_static(severity.as_bytes()),
                },
                Field {
                    code: field::CODE,
                    value: text(sqlstate),
                },
                Field {
                    code: field::MESSAGE,
                    value: text(&message.into()),
                },
            ],
        }
    }

    /// Adds a `D` (detail) field.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.push(field::DETAIL, detail.into());
        self
    }

    /// Adds an `H` (hint) field: what the person should do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.push(field::HINT, hint.into());
        self
    }

    fn push(&mut self, code: u8, text: String) {
        self.fields.push(Field {
            code,
            value: Bytes::from(text.replace('\0', " ")),
        });
    }

    /// The value of field `code`, lossily as text.
    pub fn get(&self, code: u8) -> Option<Cow<'_, str>> {
        get(&self.fields, code)
    }

    /// The SQLSTATE (`C`).
    pub fn sqlstate(&self) -> Option<Cow<'_, str>> {
        self.get(field::CODE)
    }

    /// The primary message (`M`).
    pub fn message(&self) -> Option<Cow<'_, str>> {
        self.get(field::MESSAGE)
    }

    /// The severity, the non-localized one when present.
    pub fn severity(&self) -> Option<Cow<'_, str>> {
        self.get(field::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(field::SEVERITY))
    }

    /// Decodes an `'E'` body.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        Ok(ErrorResponse {
            fields: decode_fields(body)?,
        })
    }

    /// Appends the whole `'E'` message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        encode_fields(tag::ERROR_RESPONSE, &self.fields, dst)
    }
}

impl std::fmt::Display for ErrorResponse {
    /// `SEVERITY SQLSTATE: message`, as a person reads it in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity().as_deref().unwrap_or("ERROR"),
            self.sqlstate().as_deref().unwrap_or("?????"),
            self.message().as_deref().unwrap_or("(no message)")
        )
    }
}

/// `NoticeResponse`: a warning or notice; same fields as an error, nothing ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoticeResponse {
    /// The fields, in wire order.
    pub fields: Vec<Field>,
}

impl NoticeResponse {
    /// The value of field `code`, lossily as text.
    pub fn get(&self, code: u8) -> Option<Cow<'_, str>> {
        get(&self.fields, code)
    }

    /// Decodes an `'N'` body.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        Ok(NoticeResponse {
            fields: decode_fields(body)?,
        })
    }

    /// Appends the whole `'N'` message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        encode_fields(tag::NOTICE_RESPONSE, &self.fields, dst)
    }
}

/// `NegotiateProtocolVersion`: the server speaks an older minor version than asked, or does not
/// know some `_pq_.` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiateProtocolVersion {
    /// The newest version the server supports for the requested major. The protocol chapter
    /// calls this the "newest minor version", but servers send the whole version word
    /// (PostgreSQL 15 sends 3.0 as `0x00030000`; see the golden bytes).
    pub newest: ProtocolVersion,
    /// The `_pq_.` options it did not recognise.
    pub unrecognized: Vec<String>,
}

impl NegotiateProtocolVersion {
    /// Decodes a `'v'` body. The option count is checked against the bytes present before
    /// anything is allocated for it.
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let newest = ProtocolVersion(r.u32("newest protocol version")?);
        let count = r.u32("unrecognized option count")? as usize;
        // Each option is at least its NUL.
        if count > r.remaining() {
            return Err(Error::Malformed {
                field: "unrecognized option count",
                reason: "more options than bytes",
            });
        }
        let mut unrecognized = Vec::with_capacity(count);
        for _ in 0..count {
            unrecognized.push(r.cstr_utf8("unrecognized option")?.to_owned());
        }
        r.finish("NegotiateProtocolVersion")?;
        Ok(NegotiateProtocolVersion {
            newest,
            unrecognized,
        })
    }

    /// Appends the whole `'v'` message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let mut body = BytesMut::with_capacity(16);
        body.put_u32(self.newest.0);
        let count = u32::try_from(self.unrecognized.len()).map_err(|_| Error::Malformed {
            field: "unrecognized option count",
            reason: "too many",
        })?;
        body.put_u32(count);
        for o in &self.unrecognized {
            check_no_nul(o.as_bytes(), "unrecognized option")?;
            put_cstr(&mut body, o.as_bytes());
        }
        frame::put_message(tag::NEGOTIATE_PROTOCOL_VERSION, &body, dst);
        Ok(())
    }
}

/// Any backend message of the connection phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage {
    /// `'R'`.
    Authentication(Authentication),
    /// `'S'`.
    ParameterStatus(ParameterStatus),
    /// `'K'`.
    BackendKeyData(BackendKeyData),
    /// `'Z'`.
    ReadyForQuery(ReadyForQuery),
    /// `'E'`.
    ErrorResponse(ErrorResponse),
    /// `'N'`.
    NoticeResponse(NoticeResponse),
    /// `'v'`.
    NegotiateProtocolVersion(NegotiateProtocolVersion),
}

impl BackendMessage {
    /// Decodes one framed message; any other type is [`Error::UnexpectedTag`].
    pub fn decode(m: &Message) -> Result<Self, Error> {
        let b = &m.body[..];
        Ok(match m.tag {
            tag::AUTHENTICATION => BackendMessage::Authentication(Authentication::decode(b)?),
            tag::PARAMETER_STATUS => BackendMessage::ParameterStatus(ParameterStatus::decode(b)?),
            tag::BACKEND_KEY_DATA => BackendMessage::BackendKeyData(BackendKeyData::decode(b)?),
            tag::READY_FOR_QUERY => BackendMessage::ReadyForQuery(ReadyForQuery::decode(b)?),
            tag::ERROR_RESPONSE => BackendMessage::ErrorResponse(ErrorResponse::decode(b)?),
            tag::NOTICE_RESPONSE => BackendMessage::NoticeResponse(NoticeResponse::decode(b)?),
            tag::NEGOTIATE_PROTOCOL_VERSION => {
                BackendMessage::NegotiateProtocolVersion(NegotiateProtocolVersion::decode(b)?)
            }
            other => {
                return Err(Error::UnexpectedTag {
                    tag: other,
                    expected: "a connection-phase backend message (R, S, K, Z, E, N or v)",
                });
            }
        })
    }

    /// Appends the whole message.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        match self {
            BackendMessage::Authentication(a) => a.encode(dst),
            BackendMessage::ParameterStatus(p) => p.encode(dst),
            BackendMessage::BackendKeyData(k) => k.encode(dst),
            BackendMessage::ReadyForQuery(z) => {
                z.encode(dst);
                Ok(())
            }
            BackendMessage::ErrorResponse(e) => e.encode(dst),
            BackendMessage::NoticeResponse(n) => n.encode(dst),
            BackendMessage::NegotiateProtocolVersion(v) => v.encode(dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::proto::frame::take_message;

    fn round_trip(m: &BackendMessage) {
        let mut out = BytesMut::new();
        m.encode(&mut out).unwrap();
        let mut buf = out.clone();
        let framed = take_message(&mut buf, 1 << 16).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(&BackendMessage::decode(&framed).unwrap(), m);
    }

    #[test]
    fn every_backend_message_round_trips() {
        for m in [
            BackendMessage::Authentication(Authentication::Ok),
            BackendMessage::Authentication(Authentication::CleartextPassword),
            BackendMessage::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] }),
            BackendMessage::Authentication(Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
            }),
            BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from_static(
                b"r=abc,s=c2FsdA==,i=4096",
            ))),
            BackendMessage::Authentication(Authentication::SaslFinal(Bytes::from_static(b"v=xyz"))),
            BackendMessage::Authentication(Authentication::Unsupported {
                code: 7,
                data: Bytes::new(),
            }),
            BackendMessage::ParameterStatus(ParameterStatus {
                name: "server_version".into(),
                value: "15.18".into(),
            }),
            BackendMessage::BackendKeyData(BackendKeyData {
                process_id: 77,
                secret_key: Bytes::from_static(&[9; 32]),
            }),
            BackendMessage::ReadyForQuery(ReadyForQuery {
                status: TransactionStatus::Idle,
            }),
            BackendMessage::ErrorResponse(
                ErrorResponse::fatal("28000", "no")
                    .detail("d")
                    .hint("GRANT rds_iam TO iamuser"),
            ),
            BackendMessage::NoticeResponse(NoticeResponse {
                fields: vec![Field {
                    code: b'M',
                    value: Bytes::from_static(b"hi"),
                }],
            }),
            BackendMessage::NegotiateProtocolVersion(NegotiateProtocolVersion {
                newest: ProtocolVersion::V3_0,
                unrecognized: vec!["_pq_.x".into()],
            }),
        ] {
            round_trip(&m);
        }
    }

    #[test]
    fn unsupported_authentication_is_named_by_its_code() {
        let a = Authentication::decode(&[0, 0, 0, 9]).unwrap();
        assert_eq!(a.name(), "AuthenticationSSPI");
        assert_eq!(
            format!("{a:?}"),
            "Authentication(unsupported: code 9, 0 bytes)"
        );
        let a = Authentication::decode(&[0, 0, 1, 0, 0xAA]).unwrap();
        assert_eq!(a.code(), 256);
    }

    #[test]
    fn error_builder_writes_what_libpq_reads() {
        let e =
            ErrorResponse::fatal("28000", "IAM login refused").hint("GRANT rds_iam TO \"iamuser\"");
        assert_eq!(e.sqlstate().as_deref(), Some("28000"));
        assert_eq!(e.severity().as_deref(), Some("FATAL"));
        assert_eq!(e.to_string(), "FATAL 28000: IAM login refused");
        let mut out = BytesMut::new();
        e.encode(&mut out).unwrap();
        assert_eq!(out[0], b'E');
        assert!(out.ends_with(b"\"iamuser\"\0\0"));
        // A NUL in a message cannot cut the message short.
        let e = ErrorResponse::error("08P01", "a\0b");
        assert_eq!(e.message().as_deref(), Some("a b"));
    }

    #[test]
    fn malformed_backend_messages_are_errors() {
        for (tag, body) in [
            (b'R', &b"\0\0"[..]),
            (b'R', b"\0\0\0\x05\x01\x02"),
            (b'R', b"\0\0\0\x0a\0"),
            (b'R', b"\0\0\0\x0aSCRAM"),
            (b'R', b"\0\0\0\x00junk"),
            (b'S', b"name\0"),
            (b'K', b"\0\0\0\x01\x02"),
            (b'Z', b"X"),
            (b'Z', b"II"),
            (b'E', b"Mno terminator\0"),
            (b'v', b"\0\0\0\0\xff\xff\xff\xff"),
            (b'D', b""),
        ] {
            let m = Message {
                tag,
                body: Bytes::copy_from_slice(body),
            };
            assert!(BackendMessage::decode(&m).is_err(), "{tag} {body:?}");
        }
    }

    #[test]
    fn encryption_answers() {
        assert_eq!(
            EncryptionResponse::decode(b'S', false).unwrap(),
            EncryptionResponse::Accept
        );
        assert!(EncryptionResponse::decode(b'S', true).is_err());
        assert_eq!(
            EncryptionResponse::decode(b'G', true).unwrap(),
            EncryptionResponse::Accept
        );
        assert_eq!(
            EncryptionResponse::decode(b'N', true).unwrap(),
            EncryptionResponse::Refuse
        );
        assert!(EncryptionResponse::decode(b'R', false).is_err());
        assert_eq!(EncryptionResponse::Accept.byte(true), b'G');
    }
}

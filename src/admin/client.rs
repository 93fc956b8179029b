//! A minimal MySQL client: a password login and SQL text, for `rds-iam-proxy admin`, which logs in
//! once as the master user (password from Secrets Manager) and then as the IAM user (an IAM token)
//! to check its work.
//!
//! Over any [`BoxStream`] (a tunnel stream or TCP): the greeting → SSLRequest and TLS verified
//! against the endpoint name ([`PacketStream::start_tls`], the same upgrade as the proxy's upstream
//! leg) → HandshakeResponse41 → the answers of `mysql_native_password`, `caching_sha2_password`
//! (the fast path, and full authentication, which sends the password itself: only ever inside that
//! verified TLS) and `mysql_clear_password` → `COM_QUERY` with OK, ERR and text result sets. A
//! server without TLS is refused before anything about the password leaves.
//!
//! Bounded like the rest of the crate: login packets as in the proxy, result packets up to
//! [`MAX_RESULT_PACKET`], at most [`MAX_ROWS`] rows and [`MAX_RESULT_BYTES`] per statement; a
//! hostile or broken server gets an [`Error`], never a panic. The password is a [`Secret`], whose
//! `Debug` prints a mask, and no error carries it.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;

use crate::mysql::framed::{PacketStream, ReadError, StartTlsError};
use crate::mysql::proto::command::{
    COM_QUIT, ColumnDefinition41, ComQuery, EofPacket, QueryResponse, SERVER_MORE_RESULTS_EXISTS,
    TextRow,
};
use crate::mysql::proto::handshake::plugin;
use crate::mysql::proto::scramble::{native_scramble, sha2_scramble};
use crate::mysql::proto::{
    self, AuthMoreData, Capabilities, ErrPacket, HandshakeResponse41, HandshakeV10, LoginReply,
    SslRequest,
};
use crate::secret::Secret;
use crate::tls;
use crate::tunnel::BoxStream;

/// Largest packet read in the command phase.
pub const MAX_RESULT_PACKET: usize = 1 << 20;

/// Most rows kept from one statement.
pub const MAX_ROWS: usize = 10_000;

/// Most bytes of values kept from one statement.
pub const MAX_RESULT_BYTES: usize = 16 << 20;

/// Round trips a login may take after the HandshakeResponse41 (switch, more data, OK).
const MAX_LOGIN_ROUNDS: usize = 4;

/// `utf8mb4_general_ci`, understood by MySQL 5.7+, 8.x and MariaDB.
const UTF8MB4_GENERAL_CI: u8 = 45;

/// What the client asks for, within what the server offers (`SSL` is required separately).
const WANTED: Capabilities = Capabilities(
    Capabilities::LONG_PASSWORD.0
        | Capabilities::PROTOCOL_41.0
        | Capabilities::SECURE_CONNECTION.0
        | Capabilities::PLUGIN_AUTH.0
        | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA.0
        | Capabilities::TRANSACTIONS.0
        | Capabilities::MULTI_RESULTS.0
        | Capabilities::CONNECT_ATTRS.0,
);

/// A failure of the client, naming what it was doing; never containing the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection failed or closed.
    #[error("the connection broke while {during}: {reason}")]
    Io {
        /// What the client was doing.
        during: &'static str,
        /// The socket error, or "closed by the server".
        reason: String,
    },
    /// The server did not answer in time.
    #[error("no answer from the server within {}s while {during}", .after.as_secs())]
    Timeout {
        /// What the client was doing.
        during: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The server sent something that is not valid MySQL protocol here.
    #[error("the server sent an invalid packet while {during}: {source}")]
    Protocol {
        /// What the client was doing.
        during: &'static str,
        /// What was wrong.
        #[source]
        source: proto::Error,
    },
    /// The server sent an ERR instead of its greeting (too many connections, host blocked).
    #[error("the server refused the connection: {}", describe(.0))]
    Greeting(ErrPacket),
    /// The server offers no TLS: no password is ever sent to it.
    #[error(
        "the server does not offer TLS, and rds-iam-proxy sends a password only over verified TLS"
    )]
    NoTls,
    /// The server lacks a protocol feature the client needs.
    #[error("the server lacks {0:?} (needed for a 4.1 pluggable-auth login)")]
    MissingCapabilities(Capabilities),
    /// The TLS upgrade failed.
    #[error("TLS: {0}")]
    Tls(#[source] StartTlsError),
    /// The server refused the login.
    #[error("the server refused the login of '{user}': {}", describe(.err))]
    Refused {
        /// The user name.
        user: String,
        /// The server's ERR.
        err: ErrPacket,
    },
    /// The server asked for an authentication method this client does not have.
    #[error(
        "the server asked '{user}' for the '{plugin}' authentication method; this client speaks \
         mysql_native_password, caching_sha2_password and mysql_clear_password"
    )]
    UnsupportedAuth {
        /// The user name.
        user: String,
        /// The plugin (or step) asked for.
        plugin: String,
    },
    /// A statement failed.
    #[error("{}", describe(.0))]
    Server(ErrPacket),
    /// The server asked for a local file (`LOAD DATA LOCAL`): never sent.
    #[error("the server asked for a local file (LOAD DATA LOCAL); this client sends none")]
    LocalInfile,
    /// A result exceeded the client's bounds.
    #[error("the result is larger than this client keeps ({what})")]
    TooLarge {
        /// Which bound.
        what: &'static str,
    },
}

impl Error {
    /// The rustls error, when the TLS handshake failed.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            Error::Tls(StartTlsError::Tls(e)) => tls::rustls_error(e),
            _ => None,
        }
    }

    /// True when TLS failed because the certificate is not trusted or not for the endpoint name.
    pub fn is_certificate_error(&self) -> bool {
        self.tls_error().is_some_and(tls::is_certificate_error)
    }

    fn read(during: &'static str, e: ReadError) -> Self {
        match e {
            ReadError::Eof => Error::Io {
                during,
                reason: "closed by the server".into(),
            },
            ReadError::Timeout(after) => Error::Timeout { during, after },
            ReadError::Io(e) => Error::Io {
                during,
                reason: e.to_string(),
            },
            ReadError::Protocol(source) => Error::Protocol { during, source },
        }
    }

    fn write(during: &'static str, e: std::io::Error) -> Self {
        Error::Io {
            during,
            reason: e.to_string(),
        }
    }

    fn protocol(during: &'static str, source: proto::Error) -> Self {
        Error::Protocol { during, source }
    }
}

/// `ERROR 1045 (28000): Access denied ...`, as the mysql CLI prints it.
fn describe(err: &ErrPacket) -> String {
    match err.sql_state {
        Some(s) => format!(
            "ERROR {} ({}): {}",
            err.code,
            String::from_utf8_lossy(&s),
            err.message_str()
        ),
        None => format!("ERROR {}: {}", err.code, err.message_str()),
    }
}

/// How to reach and verify the server.
#[derive(Clone)]
pub struct Options {
    /// TLS client configuration (the RDS CA bundle, or `--ca-bundle`).
    pub tls: TlsConnector,
    /// The endpoint name: SNI, and the name the certificate must carry.
    pub server_name: ServerName<'static>,
    /// Time allowed for each login step.
    pub timeout: Duration,
}

/// One result set of a statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// The column names.
    pub columns: Vec<String>,
    /// The rows, `None` for NULL (text is decoded lossily).
    pub rows: Vec<Vec<Option<String>>>,
}

/// What a statement returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Rows affected, summed over the statement's results.
    pub affected_rows: u64,
    /// Warnings, summed.
    pub warnings: u32,
    /// The result sets, in order (none for DDL and DML).
    pub sets: Vec<ResultSet>,
}

/// A logged-in connection.
pub struct Client {
    io: PacketStream,
    server_version: String,
    connection_id: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server_version", &self.server_version)
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Logs in as `user` with `password` over `stream`.
    pub async fn login(
        stream: BoxStream,
        options: &Options,
        user: &str,
        password: &Secret,
    ) -> Result<Client, Error> {
        let timeout = options.timeout;
        let mut io = PacketStream::new(stream, BytesMut::new());
        let p = io
            .read_packet(timeout)
            .await
            .map_err(|e| Error::read("waiting for the greeting", e))?;
        if p.payload.first() == Some(&ErrPacket::HEADER) {
            let err = ErrPacket::decode(&p.payload)
                .map_err(|e| Error::protocol("reading the greeting", e))?;
            return Err(Error::Greeting(err));
        }
        let greeting = HandshakeV10::decode(&p.payload)
            .map_err(|e| Error::protocol("reading the greeting", e))?;
        if !greeting.capabilities.contains(Capabilities::SSL) {
            return Err(Error::NoTls);
        }
        let required =
            Capabilities::PROTOCOL_41 | Capabilities::SECURE_CONNECTION | Capabilities::PLUGIN_AUTH;
        if !greeting.capabilities.contains(required) {
            return Err(Error::MissingCapabilities(required - greeting.capabilities));
        }
        let caps = (WANTED & greeting.capabilities) | Capabilities::SSL;
        let ssl_request = SslRequest {
            capabilities: caps,
            max_packet_size: MAX_RESULT_PACKET as u32,
            character_set: UTF8MB4_GENERAL_CI,
        };
        let mut io = io
            .start_tls(
                &ssl_request,
                p.seq.wrapping_add(1),
                &options.tls,
                options.server_name.clone(),
                timeout,
            )
            .await
            .map_err(Error::Tls)?;

        // From here on the link is TLS verified against the endpoint name.
        let mut plugin_name = greeting
            .auth_plugin_name
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| Bytes::from_static(plugin::MYSQL_NATIVE_PASSWORD.as_bytes()));
        let first =
            auth_response(&plugin_name, &greeting.auth_plugin_data, password).unwrap_or_default();
        if first.len() > 250 && !caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            return Err(Error::UnsupportedAuth {
                user: user.to_owned(),
                plugin: "a password over 250 bytes without PLUGIN_AUTH_LENENC_CLIENT_DATA".into(),
            });
        }
        let response = HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: MAX_RESULT_PACKET as u32,
            character_set: UTF8MB4_GENERAL_CI,
            username: Bytes::copy_from_slice(user.as_bytes()),
            auth_response: Bytes::from(first),
            database: None,
            auth_plugin_name: Some(plugin_name.clone()),
            connect_attrs: caps
                .contains(Capabilities::CONNECT_ATTRS)
                .then(connect_attrs),
            zstd_level: None,
        };
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        io.queue(p.seq.wrapping_add(2), &payload);
        io.flush()
            .await
            .map_err(|e| Error::write("sending the login", e))?;

        let mut switched = false;
        for _ in 0..MAX_LOGIN_ROUNDS {
            let p = io
                .read_packet(timeout)
                .await
                .map_err(|e| Error::read("waiting for the login result", e))?;
            let next = p.seq.wrapping_add(1);
            let reply = LoginReply::decode(p.payload)
                .map_err(|e| Error::protocol("reading the login result", e))?;
            let answer = match reply {
                LoginReply::Ok(_) => {
                    return Ok(Client {
                        io,
                        server_version: String::from_utf8_lossy(&greeting.server_version)
                            .into_owned(),
                        connection_id: greeting.connection_id,
                    });
                }
                LoginReply::Err(err) => {
                    return Err(Error::Refused {
                        user: user.to_owned(),
                        err,
                    });
                }
                LoginReply::AuthSwitch(switch) if !switched => {
                    switched = true;
                    plugin_name = switch.plugin_name;
                    let nonce = switch
                        .plugin_data
                        .strip_suffix(&[0])
                        .unwrap_or(&switch.plugin_data);
                    auth_response(&plugin_name, nonce, password).ok_or_else(|| {
                        Error::UnsupportedAuth {
                            user: user.to_owned(),
                            plugin: String::from_utf8_lossy(&plugin_name).into_owned(),
                        }
                    })?
                }
                LoginReply::AuthSwitch(_) => {
                    return Err(Error::protocol(
                        "logging in",
                        proto::Error::Malformed {
                            field: "auth_switch_request",
                            reason: "a second authentication switch",
                        },
                    ));
                }
                LoginReply::MoreData(more)
                    if &plugin_name[..] == plugin::CACHING_SHA2_PASSWORD.as_bytes() =>
                {
                    match more.data.first() {
                        // The OK follows.
                        Some(&AuthMoreData::FAST_AUTH_SUCCESS) => continue,
                        Some(&AuthMoreData::PERFORM_FULL_AUTHENTICATION) => {
                            nul_terminated(password)
                        }
                        _ => {
                            return Err(Error::protocol(
                                "logging in",
                                proto::Error::Malformed {
                                    field: "auth_more_data",
                                    reason: "caching_sha2_password expects 0x03 or 0x04",
                                },
                            ));
                        }
                    }
                }
                LoginReply::MoreData(_) => {
                    return Err(Error::UnsupportedAuth {
                        user: user.to_owned(),
                        plugin: format!("more data for {}", String::from_utf8_lossy(&plugin_name)),
                    });
                }
                LoginReply::NextFactor => {
                    return Err(Error::UnsupportedAuth {
                        user: user.to_owned(),
                        plugin: "a second authentication factor".into(),
                    });
                }
            };
            io.queue(next, &answer);
            io.flush()
                .await
                .map_err(|e| Error::write("answering the authentication", e))?;
        }
        Err(Error::protocol(
            "logging in",
            proto::Error::Malformed {
                field: "login",
                reason: "the login did not end after four round trips",
            },
        ))
    }

    /// The server's version string.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The server's id for this connection.
    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    /// Runs one statement (no multi-statements), waiting at most `timeout` for each packet.
    pub async fn query(&mut self, sql: &str, timeout: Duration) -> Result<QueryResult, Error> {
        let mut payload = BytesMut::with_capacity(sql.len() + 1);
        ComQuery { query: sql }.encode(&mut payload);
        if payload.len() >= proto::packet::MAX_PAYLOAD_LEN {
            return Err(Error::TooLarge {
                what: "a statement of 16 MiB or more",
            });
        }
        self.io.queue(0, &payload);
        self.io
            .flush()
            .await
            .map_err(|e| Error::write("sending the statement", e))?;
        let mut result = QueryResult::default();
        let mut kept = 0usize;
        for _ in 0..MAX_ROWS {
            let p = self.read(timeout).await?;
            let status = match QueryResponse::decode(&p.payload)
                .map_err(|e| Error::protocol("reading the statement's result", e))?
            {
                QueryResponse::Ok(ok) => {
                    result.affected_rows = result.affected_rows.saturating_add(ok.affected_rows);
                    result.warnings += u32::from(ok.warnings);
                    ok.status_flags
                }
                QueryResponse::Err(err) => return Err(Error::Server(err)),
                QueryResponse::LocalInfile => return Err(Error::LocalInfile),
                QueryResponse::ResultSet { column_count } => {
                    let (set, eof) = self
                        .read_result_set(column_count, timeout, &mut kept)
                        .await?;
                    result.warnings += u32::from(eof.warnings);
                    result.sets.push(set);
                    eof.status_flags
                }
            };
            if status & SERVER_MORE_RESULTS_EXISTS == 0 {
                return Ok(result);
            }
        }
        Err(Error::TooLarge {
            what: "more than 10000 results",
        })
    }

    async fn read(&mut self, timeout: Duration) -> Result<proto::Packet, Error> {
        let p = self
            .io
            .read_packet_limit(timeout, MAX_RESULT_PACKET)
            .await
            .map_err(|e| match e {
                ReadError::Protocol(proto::Error::PacketTooLarge { .. }) => Error::TooLarge {
                    what: "a packet of 1 MiB or more",
                },
                e => Error::read("reading the statement's result", e),
            })?;
        Ok(p)
    }

    async fn read_result_set(
        &mut self,
        column_count: u64,
        timeout: Duration,
        kept: &mut usize,
    ) -> Result<(ResultSet, EofPacket), Error> {
        let n = usize::try_from(column_count).map_err(|_| Error::TooLarge { what: "columns" })?;
        let mut set = ResultSet::default();
        for _ in 0..n {
            let p = self.read(timeout).await?;
            let c = ColumnDefinition41::decode(&p.payload)
                .map_err(|e| Error::protocol("reading a column definition", e))?;
            *kept += c.name.len();
            set.columns
                .push(String::from_utf8_lossy(&c.name).into_owned());
        }
        let p = self.read(timeout).await?;
        EofPacket::decode(&p.payload)
            .map_err(|e| Error::protocol("reading the end of the column definitions", e))?;
        loop {
            let p = self.read(timeout).await?;
            if EofPacket::matches(&p.payload) {
                let eof = EofPacket::decode(&p.payload)
                    .map_err(|e| Error::protocol("reading the end of the rows", e))?;
                return Ok((set, eof));
            }
            if p.payload.first() == Some(&ErrPacket::HEADER) {
                let err = ErrPacket::decode(&p.payload)
                    .map_err(|e| Error::protocol("reading an error after rows", e))?;
                return Err(Error::Server(err));
            }
            let row =
                TextRow::decode(&p.payload, n).map_err(|e| Error::protocol("reading a row", e))?;
            *kept += p.payload.len();
            if set.rows.len() >= MAX_ROWS {
                return Err(Error::TooLarge {
                    what: "more than 10000 rows",
                });
            }
            if *kept > MAX_RESULT_BYTES {
                return Err(Error::TooLarge {
                    what: "more than 16 MiB of values",
                });
            }
            set.rows.push(
                row.0
                    .iter()
                    .map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            );
        }
    }

    /// Says goodbye (`COM_QUIT`) and closes the stream; errors are irrelevant by then.
    pub async fn quit(mut self) {
        self.io.queue(0, &[COM_QUIT]);
        let _ = self.io.flush().await;
        let (mut stream, _) = self.io.into_parts();
        let _ = stream.shutdown().await;
    }
}

/// The answer to `plugin`'s challenge `nonce`, or `None` for a plugin this client lacks. An empty
/// password answers empty, as MySQL clients do.
pub fn auth_response(plugin_name: &[u8], nonce: &[u8], password: &Secret) -> Option<Vec<u8>> {
    let pw = password.expose();
    if plugin_name == plugin::MYSQL_NATIVE_PASSWORD.as_bytes() {
        Some(if pw.is_empty() {
            Vec::new()
        } else {
            native_scramble(pw, nonce).to_vec()
        })
    } else if plugin_name == plugin::CACHING_SHA2_PASSWORD.as_bytes() {
        Some(if pw.is_empty() {
            Vec::new()
        } else {
            sha2_scramble(pw, nonce).to_vec()
        })
    } else if plugin_name == plugin::MYSQL_CLEAR_PASSWORD.as_bytes() {
        // Only ever reached inside TLS verified against the endpoint name.
        Some(nul_terminated(password))
    } else {
        None
    }
}

/// `password\0`: the cleartext answer (mysql_clear_password, caching_sha2 full authentication).
fn nul_terminated(password: &Secret) -> Vec<u8> {
    let mut v = Vec::with_capacity(password.expose().len() + 1);
    v.extend_from_slice(password.expose().as_bytes());
    v.push(0);
    v
}

/// Connection attributes that name the tool in the server's processlist and audit log.
fn connect_attrs() -> Vec<(Bytes, Bytes)> {
    vec![
        (
            Bytes::from_static(b"_client_name"),
            Bytes::from_static(b"rds-iam-proxy"),
        ),
        (
            Bytes::from_static(b"_client_version"),
            Bytes::from_static(env!("CARGO_PKG_VERSION").as_bytes()),
        ),
        (
            Bytes::from_static(b"program_name"),
            Bytes::from_static(b"rds-iam-proxy admin"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::proto::scramble::PasswordVerifier;

    const NONCE: &[u8; 20] = b"0123456789abcdefghij";

    #[test]
    fn scrambles_satisfy_the_servers_verifier() {
        let pw = Secret::new("Master-Pa55word!");
        let server = PasswordVerifier::new("Master-Pa55word!");
        for name in [plugin::MYSQL_NATIVE_PASSWORD, plugin::CACHING_SHA2_PASSWORD] {
            let answer = auth_response(name.as_bytes(), NONCE, &pw).unwrap();
            assert!(
                server.verify(Some(name.as_bytes()), NONCE, &answer),
                "{name}"
            );
            // Another nonce, another password: refused.
            assert!(!server.verify(Some(name.as_bytes()), b"jihgfedcba9876543210", &answer));
            let other = auth_response(name.as_bytes(), NONCE, &Secret::new("x")).unwrap();
            assert!(!server.verify(Some(name.as_bytes()), NONCE, &other));
            // The scramble never holds the password.
            assert!(
                !answer
                    .windows(pw.expose().len())
                    .any(|w| w == pw.expose().as_bytes())
            );
        }
    }

    #[test]
    fn clear_and_full_auth_send_the_password_nul_terminated_and_unknown_plugins_nothing() {
        let pw = Secret::new("p");
        assert_eq!(
            auth_response(b"mysql_clear_password", NONCE, &pw).unwrap(),
            b"p\0"
        );
        assert_eq!(nul_terminated(&pw), b"p\0");
        assert_eq!(auth_response(b"client_ed25519", NONCE, &pw), None);
        assert_eq!(
            auth_response(b"mysql_native_password", NONCE, &Secret::new("")),
            Some(Vec::new())
        );
    }

    #[test]
    fn refusals_carry_the_servers_words_only() {
        let err = Error::Refused {
            user: "admin".into(),
            err: ErrPacket::new(1045, b"28000", "Access denied for user 'admin'@'%'"),
        };
        assert_eq!(
            err.to_string(),
            "the server refused the login of 'admin': ERROR 1045 (28000): Access denied for \
             user 'admin'@'%'"
        );
    }
}

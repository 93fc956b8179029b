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
use crate::mysql::proto::auth::{self, Credential, Exchange, Next};
use crate::mysql::proto::command::{
    COM_QUIT, ColumnDefinition41, ComQuery, EofPacket, QueryResponse, SERVER_MORE_RESULTS_EXISTS,
    TextRow,
};
use crate::mysql::proto::{
    self, Capabilities, ErrPacket, HandshakeResponse41, HandshakeV10, SslRequest,
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

    /// A failed login of `user`, in this client's words.
    fn login(user: &str, e: auth::Error) -> Self {
        let unsupported = |plugin: String| Error::UnsupportedAuth {
            user: user.to_owned(),
            plugin,
        };
        let malformed = |field, reason| {
            Error::protocol("logging in", proto::Error::Malformed { field, reason })
        };
        match e {
            auth::Error::Refused(err) => Error::Refused {
                user: user.to_owned(),
                err,
            },
            auth::Error::Malformed(e) => Error::protocol("reading the login result", e),
            auth::Error::Plugin { plugin } | auth::Error::PluginAfterToken { plugin } => {
                unsupported(String::from_utf8_lossy(&plugin).into_owned())
            }
            auth::Error::MoreData { plugin } => unsupported(format!(
                "more data for {}",
                String::from_utf8_lossy(&plugin)
            )),
            auth::Error::SecondSwitch { .. } => {
                malformed("auth_switch_request", "a second authentication switch")
            }
            auth::Error::Sha2Step => malformed(
                "auth_more_data",
                "caching_sha2_password expects 0x03 or 0x04",
            ),
            auth::Error::NextFactor => unsupported("a second authentication factor".into()),
            auth::Error::FirstAnswerTooLong { .. } => unsupported(
                "a password over 250 bytes without PLUGIN_AUTH_LENENC_CLIENT_DATA".into(),
            ),
            auth::Error::TooManyRounds => {
                malformed("login", "the login did not end after four round trips")
            }
        }
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
        let (mut exchange, first) = Exchange::start(
            Credential::Password(password),
            greeting.auth_plugin_name.as_deref(),
            &greeting.auth_plugin_data,
            false,
            caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA),
        )
        .map_err(|e| Error::login(user, e))?;
        let response = HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: MAX_RESULT_PACKET as u32,
            character_set: UTF8MB4_GENERAL_CI,
            username: Bytes::copy_from_slice(user.as_bytes()),
            auth_response: Bytes::copy_from_slice(first.auth_response.bytes()),
            database: None,
            auth_plugin_name: Some(first.plugin),
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

        loop {
            let p = io
                .read_packet(timeout)
                .await
                .map_err(|e| Error::read("waiting for the login result", e))?;
            match exchange.next(p.payload) {
                Next::Send(answer) => {
                    io.queue(p.seq.wrapping_add(1), answer.bytes());
                    io.flush()
                        .await
                        .map_err(|e| Error::write("answering the authentication", e))?;
                }
                Next::Wait => {}
                Next::Done(_) => {
                    return Ok(Client {
                        io,
                        server_version: String::from_utf8_lossy(&greeting.server_version)
                            .into_owned(),
                        connection_id: greeting.connection_id,
                    });
                }
                Next::Failed(e) => return Err(Error::login(user, e)),
            }
        }
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

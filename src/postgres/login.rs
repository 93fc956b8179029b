//! The login bridge for one PostgreSQL connection, client first (DESIGN.md decisions 3 and 14):
//!
//! 1. [`client_startup`]: the client's untyped packets. `SSLRequest` is answered `S` and TLS
//!    follows when `--local-tls` is on, else `N`; with `--local-tls`, PostgreSQL 17's direct TLS
//!    (a ClientHello at once, ALPN `postgresql`) is taken too; `GSSENCRequest` is answered `N`; a
//!    `CancelRequest` ends the login there (see [`super::cancel`]); the `StartupMessage` (protocol
//!    3.0, or 3.2 of PostgreSQL 18) is taken without asking for a password, or, with
//!    `--local-password`, after a SCRAM-SHA-256 proof of it ([`check_local_password`]).
//! 2. [`open_upstream`]: a stream to the database, `SSLRequest`, and TLS verified against the
//!    endpoint NAME with the configured CAs; the IAM token is fetched meanwhile.
//! 3. [`authenticate`]: the client's `StartupMessage` upstream (its parameters, the user replaced
//!    by `--db-user` when set), then `AuthenticationCleartextPassword` answered with the token.
//!    A server that asks for anything else (SCRAM, MD5, ...) is refused with the fix named; a
//!    rejected token invalidates the cached one.
//! 4. [`finish`]: `AuthenticationOk`, `ParameterStatus`, `BackendKeyData` (with a key minted by
//!    the proxy, see [`super::cancel`]), notices and `ReadyForQuery` go to the client as the
//!    server sent them.
//!
//! No upstream connection is opened before the client has sent a valid startup packet, so
//! scanners and broken clients cost the database nothing. Every failure reaches the client as an
//! `ErrorResponse` naming the hop and the fix; client-chosen text is escaped
//! ([`crate::text::printable`]) wherever it is shown.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::keys::{self, KeyGuard};
use super::proto::backend::tag;
use super::proto::frame::{
    self, MAX_LOGIN_MESSAGE_LEN, MAX_STARTUP_LEN, Message, looks_like_tls_client_hello,
};
use super::proto::{
    Authentication, BackendKeyData, CancelRequest, EncryptionResponse, ErrorResponse,
    PasswordMessage, SaslInitialResponse, SaslResponse, SslRequest, StartupMessage, StartupPacket,
    scram, sqlstate,
};
use crate::iam::AuthToken;
use crate::io::{RoundTripCount, RoundTrips};
use crate::proxy::listener::Peer;
use crate::proxy::password::DbCredentials;
use crate::proxy::shared::{Shared, Side};
use crate::proxy::throttle::PeerKey;
use crate::text::printable;
use crate::tls;
use crate::tunnel::BoxStream;

/// Most messages the server may send between the password and `ReadyForQuery` (parameters,
/// notices): far above what any server sends, low enough that a hostile one cannot keep a login
/// going for ever.
const MAX_LOGIN_MESSAGES: usize = 1024;

/// A failed login: whose fault, a short reason label for metrics, what the client is told.
#[derive(Debug)]
pub struct Failure {
    /// Whose side failed.
    pub side: Side,
    /// A stable label (`upstream_unreachable`, `tls`, `token`, `not_iam_user`, ...).
    pub reason: &'static str,
    /// The `ErrorResponse` for the client (`None` when the client is gone or speaks no
    /// PostgreSQL).
    pub reply: Option<ErrorResponse>,
    /// Detail for the log line.
    pub detail: String,
}

impl Failure {
    /// A failure told to the client as FATAL `state`: `rds-iam-proxy: {msg}`.
    fn new(side: Side, reason: &'static str, state: &str, msg: String) -> Self {
        Failure {
            side,
            reason,
            reply: Some(ErrorResponse::fatal(state, format!("rds-iam-proxy: {msg}"))),
            detail: msg,
        }
    }

    /// A failure of a client that cannot be told (gone, or mid-TLS).
    fn silent(reason: &'static str, detail: String) -> Self {
        Failure {
            side: Side::Client,
            reason,
            reply: None,
            detail,
        }
    }
}

/// What a client's connection turned out to be.
pub(crate) enum Outcome {
    /// A logged-in session, ready to relay.
    Established(Established),
    /// A `CancelRequest` for another connection, and the client's stream (to be closed with a
    /// TLS close_notify when it came over local TLS, as libpq expects).
    Cancel(CancelRequest, BoxStream),
}

/// Both legs after a successful login, ready to relay.
pub(crate) struct Established {
    /// The client stream (plain or local TLS).
    pub client: BoxStream,
    /// Bytes the client sent beyond its startup.
    pub client_read_ahead: BytesMut,
    /// The upstream TLS stream.
    pub upstream: BoxStream,
    /// Bytes the server sent beyond `ReadyForQuery`.
    pub upstream_read_ahead: BytesMut,
    /// The IAM database user logged in.
    pub db_user: String,
    /// The server's process id for this session (also what the client was given).
    pub backend_pid: u32,
    /// The cancel key handed to the client, forgotten when this is dropped.
    pub cancel_key: Option<KeyGuard>,
    /// Round trips the upstream login took (TCP or tunnel stream, TLS, startup, password).
    pub round_trips: u32,
}

/// One leg during login: the stream and what was read from it but not yet used.
pub(crate) struct Leg {
    /// The stream.
    io: BoxStream,
    /// Read, not yet decoded.
    buf: BytesMut,
}

/// Why a read during login failed.
#[derive(Debug)]
enum ReadError {
    /// The socket failed.
    Io(std::io::Error),
    /// The peer closed.
    Eof,
    /// Nothing came in time.
    Timeout(Duration),
    /// The bytes are not what the protocol allows here.
    Protocol(super::proto::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Eof => f.write_str("the connection was closed"),
            ReadError::Timeout(d) => write!(f, "nothing arrived within {}s", d.as_secs()),
            ReadError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl Leg {
    /// A leg over `io` with nothing read yet.
    pub(crate) fn new(io: BoxStream) -> Self {
        Leg {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Reads more into the buffer, before `deadline`.
    async fn fill(&mut self, deadline: Instant, window: Duration) -> Result<(), ReadError> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(4096);
        }
        match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
            Err(_) => Err(ReadError::Timeout(window)),
            Ok(Ok(0)) => Err(ReadError::Eof),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ReadError::Eof),
            Ok(Err(e)) => Err(ReadError::Io(e)),
        }
    }

    /// One untyped startup packet's body.
    async fn startup(&mut self, deadline: Instant, window: Duration) -> Result<Bytes, ReadError> {
        loop {
            match frame::take_startup(&mut self.buf, MAX_STARTUP_LEN) {
                Ok(Some(body)) => return Ok(body),
                Ok(None) => self.fill(deadline, window).await?,
                Err(e) => return Err(ReadError::Protocol(e)),
            }
        }
    }

    /// One typed message.
    async fn message(&mut self, deadline: Instant, window: Duration) -> Result<Message, ReadError> {
        loop {
            match frame::take_message(&mut self.buf, MAX_LOGIN_MESSAGE_LEN) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => self.fill(deadline, window).await?,
                Err(e) => return Err(ReadError::Protocol(e)),
            }
        }
    }

    /// Writes and flushes `bytes`.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Reads one byte, before `deadline` (the answer to an encryption request).
    async fn byte(&mut self, deadline: Instant, window: Duration) -> Result<u8, ReadError> {
        if self.buf.is_empty() {
            let mut one = [0u8; 1];
            return match tokio::time::timeout_at(deadline, self.io.read(&mut one)).await {
                Err(_) => Err(ReadError::Timeout(window)),
                Ok(Ok(0)) => Err(ReadError::Eof),
                Ok(Ok(_)) => Ok(one[0]),
                Ok(Err(e)) => Err(ReadError::Io(e)),
            };
        }
        Ok(self.buf.split_to(1)[0])
    }

    /// Tells the client `err` (it may already be gone).
    async fn send_error(&mut self, err: &ErrorResponse) {
        let mut out = BytesMut::new();
        if err.encode(&mut out).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.send(&out)).await;
        }
    }

    /// The stream itself (past the buffered bytes).
    pub(crate) fn io_mut(&mut self) -> &mut BoxStream {
        &mut self.io
    }

    /// The stream and the bytes read ahead.
    fn into_parts(self) -> (BoxStream, BytesMut) {
        (self.io, self.buf)
    }
}

/// Runs the whole login for one accepted client. `pending` is its place among the logins not yet
/// authenticated locally (`--max-pending-logins`), given back once its startup was read. On
/// failure the client has been sent an `ErrorResponse` (when it can read one).
pub(crate) async fn run<P>(
    inner: &Arc<Shared>,
    client: BoxStream,
    peer: &Peer,
    pending: P,
) -> Result<Outcome, Failure> {
    let mut client = Leg::new(client);
    let startup = match client_startup(inner, &mut client).await {
        Ok(Start::Startup(m)) => m,
        Ok(Start::Cancel(c)) => return Ok(Outcome::Cancel(c, client.io)),
        Err(f) => return Err(tell(&mut client, f).await),
    };
    if let Err(f) = check_local_password(inner, &mut client, peer).await {
        return Err(tell(&mut client, f).await);
    }
    // Authenticated locally: no longer a pending login.
    drop(pending);
    match bridge(inner, &mut client, &startup).await {
        Ok((upstream, db_user, key, round_trips)) => {
            let (client, client_read_ahead) = client.into_parts();
            let (upstream, upstream_read_ahead) = upstream.into_parts();
            Ok(Outcome::Established(Established {
                client,
                client_read_ahead,
                upstream,
                upstream_read_ahead,
                db_user,
                backend_pid: key.as_ref().map_or(0, |k| k.process_id()),
                cancel_key: key,
                round_trips,
            }))
        }
        Err(f) => Err(tell(&mut client, f).await),
    }
}

/// With `--local-password`: the client proves the password with SCRAM-SHA-256
/// (`AuthenticationSASL`, `…Continue`, `…Final`; the `AuthenticationOk` that follows is the
/// server's), so it never crosses the local leg in clear. A locked-out peer is refused unchecked;
/// a wrong proof locks it out for a growing delay ([`crate::proxy::throttle`]).
async fn check_local_password(
    inner: &Shared,
    client: &mut Leg,
    peer: &Peer,
) -> Result<(), Failure> {
    let Some(local) = &inner.config.local_password else {
        return Ok(());
    };
    let denied = |reason: &'static str, state: &str, msg: String| {
        Failure::new(Side::Client, reason, state, msg)
    };
    let Some(verifier) = &local.postgres else {
        // The configuration refuses such a password for this engine; never let a client in
        // unchecked should one get here.
        return Err(denied(
            "local_password",
            sqlstate::INVALID_PASSWORD,
            "the local password cannot be checked for PostgreSQL clients (it is not printable \
             ASCII); restart the proxy with another --local-password"
                .into(),
        ));
    };
    let key = PeerKey::from(peer);
    let now = std::time::Instant::now();
    if let Some(left) = inner.password_throttle.locked_out(&key, now) {
        return Err(denied(
            "local_password_throttled",
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!(
                "too many wrong local passwords from this address; the password was not \
                 checked. Try again in {}s",
                left.as_secs().max(1)
            ),
        ));
    }
    let window = inner.config.handshake_timeout;
    let deadline = Instant::now() + window;
    let gone = |e: std::io::Error| Failure::silent("client_gone", format!("client went away: {e}"));
    let protocol = |e: super::proto::Error| {
        denied(
            "client_protocol",
            sqlstate::PROTOCOL_VIOLATION,
            format!("the client's SCRAM-SHA-256 exchange is malformed: {e}"),
        )
    };
    let read = |e: ReadError| match e {
        ReadError::Protocol(e) => protocol(e),
        ReadError::Timeout(d) => denied(
            "client_timeout",
            sqlstate::PROTOCOL_VIOLATION,
            format!("no password from the client within {}s", d.as_secs()),
        ),
        // libpq with no password at hand says so itself and closes.
        other => Failure::silent(
            "local_password_missing",
            format!("the client left instead of proving the local password: {other}"),
        ),
    };
    let mut out = BytesMut::new();
    Authentication::Sasl {
        mechanisms: vec![scram::MECHANISM.to_owned()],
    }
    .encode(&mut out)
    .map_err(protocol)?;
    client.send(&out).await.map_err(gone)?;
    let m = client.message(deadline, window).await.map_err(read)?;
    let initial = SaslInitialResponse::decode(&m).map_err(protocol)?;
    let (Some(client_first), true) = (initial.data, initial.mechanism == scram::MECHANISM) else {
        return Err(protocol(super::proto::Error::Scram {
            reason: "the client chose no SCRAM-SHA-256 first message",
        }));
    };
    let mut random = [0u8; 18];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
    let (exchange, server_first) = verifier
        .server_first(&client_first, &scram::nonce_from_random(&random))
        .map_err(protocol)?;
    let mut out = BytesMut::new();
    Authentication::SaslContinue(Bytes::from(server_first))
        .encode(&mut out)
        .map_err(protocol)?;
    client.send(&out).await.map_err(gone)?;
    let m = client.message(deadline, window).await.map_err(read)?;
    let response = SaslResponse::decode(&m).map_err(protocol)?;
    match exchange.server_final(&response.data) {
        Ok(server_final) => {
            inner.password_throttle.succeeded(&key);
            let mut out = BytesMut::new();
            Authentication::SaslFinal(Bytes::from(server_final))
                .encode(&mut out)
                .map_err(protocol)?;
            client.send(&out).await.map_err(gone)
        }
        Err(super::proto::Error::Scram {
            reason: "wrong password",
        }) => {
            let delay = inner.password_throttle.failed(key, now);
            Err(denied(
                "local_password",
                sqlstate::INVALID_PASSWORD,
                format!(
                    "wrong local password (this proxy was started with --local-password); the \
                     next attempt from this address is checked after {}s",
                    delay.as_secs()
                ),
            ))
        }
        Err(e) => Err(protocol(e)),
    }
}

/// Sends `f`'s reply to the client, and gives `f` back.
async fn tell(client: &mut Leg, f: Failure) -> Failure {
    if let Some(reply) = &f.reply {
        client.send_error(reply).await;
    }
    f
}

/// What the client's first packets asked for.
enum Start {
    /// A session.
    Startup(StartupMessage),
    /// The cancellation of another session's query.
    Cancel(CancelRequest),
}

/// Step 1: the client's untyped packets up to its `StartupMessage` or `CancelRequest`, each
/// encryption request answered once, all within the handshake timeout.
async fn client_startup(inner: &Shared, client: &mut Leg) -> Result<Start, Failure> {
    let window = inner.config.handshake_timeout;
    let deadline = Instant::now() + window;
    let mut asked_tls = false;
    let mut asked_gss = false;
    loop {
        let body = match client.startup(deadline, window).await {
            Ok(body) => body,
            Err(ReadError::Protocol(_))
                if !asked_tls && looks_like_tls_client_hello(&client.buf) =>
            {
                let Some(acceptor) = &inner.local_tls else {
                    return Err(Failure::silent(
                        "client_direct_tls",
                        "the client started TLS at once (sslnegotiation=direct), but the proxy \
                         was started without --local-tls: start it with --local-tls, or connect \
                         with sslnegotiation=postgres (the default)"
                            .into(),
                    ));
                };
                asked_tls = true;
                accept_tls(acceptor, client, deadline, window, true).await?;
                continue;
            }
            Err(e) => return Err(startup_failure(client, e)),
        };
        let packet = StartupPacket::decode(&body).map_err(|e| {
            Failure::new(
                Side::Client,
                "client_protocol",
                protocol_state(&e),
                format!("invalid startup packet from the client: {e}"),
            )
        })?;
        let answer = match packet {
            StartupPacket::Startup(m) => return Ok(Start::Startup(m)),
            StartupPacket::Cancel(c) => return Ok(Start::Cancel(c)),
            StartupPacket::SslRequest if !asked_tls => {
                asked_tls = true;
                inner.local_tls.is_some()
            }
            StartupPacket::GssEncRequest if !asked_gss => {
                asked_gss = true;
                false
            }
            _ => {
                return Err(Failure::new(
                    Side::Client,
                    "client_protocol",
                    sqlstate::PROTOCOL_VIOLATION,
                    "the client asked for the same encryption twice".into(),
                ));
            }
        };
        // Bytes sent before the answer would be taken as encrypted later (CVE-2021-23214).
        if !client.buf.is_empty() {
            return Err(Failure::new(
                Side::Client,
                "client_protocol",
                sqlstate::PROTOCOL_VIOLATION,
                "the client sent data after its encryption request without waiting for the \
                 answer"
                    .into(),
            ));
        }
        let byte = if answer {
            EncryptionResponse::Accept
        } else {
            EncryptionResponse::Refuse
        }
        .byte(false);
        client
            .send(&[byte])
            .await
            .map_err(|e| Failure::silent("client_gone", format!("client went away: {e}")))?;
        if answer && let Some(acceptor) = &inner.local_tls {
            accept_tls(acceptor, client, deadline, window, false).await?;
        }
    }
}

/// Local TLS on `client` (after `S`, or at once for `direct`: PostgreSQL 17's
/// `sslnegotiation=direct`, whose ClientHello is already in the leg's buffer and is handed to
/// the TLS server first). A direct client must have negotiated ALPN `postgresql`, as PostgreSQL
/// requires, so that a TLS client of some other protocol is not taken for one.
async fn accept_tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    client: &mut Leg,
    deadline: Instant,
    window: Duration,
    direct: bool,
) -> Result<(), Failure> {
    let hello = std::mem::take(&mut client.buf);
    let raw = std::mem::replace(&mut client.io, Box::new(tokio::io::duplex(1).0));
    let accept = acceptor.accept_with(raw, |conn| {
        let mut rest = &hello[..];
        while !rest.is_empty() {
            match conn.read_tls(&mut rest) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        // Processed now, so that the handshake starts by answering it; an error shows up as
        // the handshake's.
        let _ = conn.process_new_packets();
    });
    let tls = tokio::time::timeout_at(deadline, accept)
        .await
        .map_err(|_| {
            Failure::silent(
                "client_tls",
                format!("local TLS handshake not done within {}s", window.as_secs()),
            )
        })?
        .map_err(|e| Failure::silent("client_tls", format!("local TLS handshake failed: {e}")))?;
    if direct && tls.get_ref().1.alpn_protocol() != Some(DIRECT_TLS_ALPN) {
        return Err(Failure::silent(
            "client_tls",
            "a client started TLS at once without ALPN `postgresql`; closed".into(),
        ));
    }
    client.io = Box::new(tls);
    Ok(())
}

/// The ALPN protocol of PostgreSQL over TLS, which direct TLS requires.
pub const DIRECT_TLS_ALPN: &[u8] = b"postgresql";

/// The SQLSTATE for a malformed startup packet: 0A000 for what is well-formed but not spoken
/// (protocol 2), 08P01 otherwise.
fn protocol_state(e: &super::proto::Error) -> &'static str {
    match e {
        super::proto::Error::UnsupportedProtocol { .. }
        | super::proto::Error::Unsupported { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
        _ => sqlstate::PROTOCOL_VIOLATION,
    }
}

/// What a failed read of the client's startup is: a TLS ClientHello where it cannot be taken
/// (a second one) cannot be answered in PostgreSQL; the rest is answered with an
/// `ErrorResponse`.
fn startup_failure(client: &Leg, e: ReadError) -> Failure {
    match e {
        ReadError::Protocol(_) if looks_like_tls_client_hello(&client.buf) => Failure::silent(
            "client_direct_tls",
            "the client sent a TLS ClientHello inside TLS or after its encryption request; closed"
                .into(),
        ),
        ReadError::Protocol(e) => Failure::new(
            Side::Client,
            "client_protocol",
            protocol_state(&e),
            format!("invalid startup packet from the client: {e}"),
        ),
        ReadError::Timeout(d) => Failure::new(
            Side::Client,
            "client_timeout",
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "no startup packet from the client within {}s (--handshake-timeout)",
                d.as_secs()
            ),
        ),
        ReadError::Eof => Failure::silent(
            "client_gone",
            "client went away before its startup packet".into(),
        ),
        ReadError::Io(e) => Failure::silent(
            "client_gone",
            format!("client went away during its startup: {e}"),
        ),
    }
}

/// Steps 2 to 4 for the client's `startup`: returns the upstream leg, the user logged in and the
/// cancel key given to the client.
async fn bridge(
    inner: &Arc<Shared>,
    client: &mut Leg,
    startup: &StartupMessage,
) -> Result<(Leg, String, Option<KeyGuard>, u32), Failure> {
    let cfg = &inner.config;
    let db_user = cfg
        .db_user
        .clone()
        .unwrap_or_else(|| startup.user().to_owned());
    let (upstream, kept) = tokio::join!(open_upstream(inner), credential(inner, &db_user));
    let (mut upstream, trips) = upstream?;
    let kept = kept?;
    // With --secret the secret's user logs in, whatever the client named.
    let db_user = match &kept {
        Kept::Token(_) => db_user,
        Kept::Password(creds) => creds.username.clone(),
    };
    let upstream_startup = upstream_startup(startup, &db_user);
    authenticate(inner, &mut upstream, &upstream_startup, &kept).await?;
    let (welcome, key) = finish(inner, &mut upstream).await?;
    client
        .send(&welcome)
        .await
        .map_err(|e| Failure::silent("client_gone", format!("client went away: {e}")))?;
    Ok((upstream, db_user, key, trips.get()))
}

/// What the upstream login answers with: an IAM token for the user, or the `--secret` user name
/// and password.
enum Kept {
    /// An IAM token.
    Token(AuthToken),
    /// The secret's credentials.
    Password(DbCredentials),
}

/// Fetches the login's credential (while TLS is negotiated): the token for `db_user`, or the
/// `--secret` credentials.
async fn credential(inner: &Shared, db_user: &str) -> Result<Kept, Failure> {
    let cfg = &inner.config;
    if let Some(source) = &cfg.upstream_password {
        return source.credentials().await.map(Kept::Password).map_err(|e| {
            Failure::new(
                Side::Proxy,
                "secret",
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                e,
            )
        });
    }
    inner
        .tokens
        .token(&cfg.token_request(db_user))
        .await
        .map(Kept::Token)
        .map_err(|e| {
            Failure::new(
                Side::Proxy,
                "token",
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                format!(
                    "cannot create an IAM token for '{}' on {}: {e}",
                    printable(db_user),
                    cfg.endpoint()
                ),
            )
        })
}

/// The `StartupMessage` sent upstream: the client's, in its order, with `user` set to `db_user`.
pub(crate) fn upstream_startup(client: &StartupMessage, db_user: &str) -> StartupMessage {
    let mut m = client.clone();
    for (k, v) in &mut m.params {
        if k == "user" {
            *v = db_user.to_owned();
        }
    }
    m
}

/// Step 2: a stream to the database, `SSLRequest`, and TLS verified against the endpoint name.
/// Also what a forwarded `CancelRequest` travels over.
pub(crate) async fn open_upstream(inner: &Shared) -> Result<(Leg, RoundTripCount), Failure> {
    let cfg = &inner.config;
    let endpoint = cfg.endpoint();
    let via = inner.connector.describe();
    let window = cfg.handshake_timeout;
    let deadline = Instant::now() + window;
    let stream = inner.connector.connect().await.map_err(|e| {
        Failure::new(
            Side::Upstream,
            "upstream_unreachable",
            sqlstate::UNABLE_TO_ESTABLISH,
            format!(
                "could not reach the database {endpoint} via {via}: {e}. Check that the \
                 database is running and reachable from here (or through the tunnel)."
            ),
        )
    })?;
    let (stream, trips) = RoundTrips::new(stream);
    let mut leg = Leg::new(Box::new(stream));
    let mut out = BytesMut::new();
    SslRequest.encode(&mut out);
    leg.send(&out)
        .await
        .map_err(|e| upstream_io(&endpoint, &ReadError::Io(e)))?;
    let answer = leg
        .byte(deadline, window)
        .await
        .map_err(|e| upstream_io(&endpoint, &e))?;
    match EncryptionResponse::decode(answer, false) {
        Ok(EncryptionResponse::Accept) => {}
        Ok(EncryptionResponse::Refuse) => {
            return Err(Failure::new(
                Side::Upstream,
                "upstream_no_tls",
                sqlstate::UNABLE_TO_ESTABLISH,
                format!(
                    "the database {endpoint} does not offer TLS, and an IAM token is never sent \
                     in cleartext. Enable TLS on the server (RDS and Aurora always offer it)."
                ),
            ));
        }
        _ => {
            return Err(Failure::new(
                Side::Upstream,
                "upstream_protocol",
                sqlstate::UNABLE_TO_ESTABLISH,
                format!(
                    "the database {endpoint} did not answer the TLS request as PostgreSQL does \
                     (byte {answer:#04x}); is {via} really a PostgreSQL endpoint?"
                ),
            ));
        }
    }
    let tls = tokio::time::timeout_at(
        deadline,
        inner
            .upstream_tls
            .connect(inner.server_name.clone(), leg.io),
    )
    .await
    .map_err(|_| {
        Failure::new(
            Side::Upstream,
            "tls",
            sqlstate::UNABLE_TO_ESTABLISH,
            format!(
                "the TLS handshake with {endpoint} did not finish within {}s",
                window.as_secs()
            ),
        )
    })?
    .map_err(|e| tls_failure(inner, &endpoint, e))?;
    Ok((Leg::new(Box::new(tls)), trips))
}

/// The failure of the upstream TLS handshake, with the fix for a certificate problem.
fn tls_failure(inner: &Shared, endpoint: &str, e: std::io::Error) -> Failure {
    let host = &inner.config.endpoint_host;
    let ca = &inner.config.ca_source;
    let is_cert = tls::rustls_error(&e).is_some_and(tls::is_certificate_error);
    let msg = if is_cert {
        format!(
            "TLS verification of {endpoint} failed: {e}. The server certificate must name {host} \
             and chain to {ca}. For a region or partition missing from the embedded bundle, pass \
             --ca-bundle with AWS's global-bundle.pem."
        )
    } else {
        format!("the TLS handshake with {endpoint} failed: {e}")
    };
    Failure::new(Side::Upstream, "tls", sqlstate::UNABLE_TO_ESTABLISH, msg)
}

/// The database failed (or closed) during login.
fn upstream_io(endpoint: &str, e: &ReadError) -> Failure {
    Failure::new(
        Side::Upstream,
        "upstream_io",
        sqlstate::CONNECTION_FAILURE,
        format!("the connection to the database {endpoint} failed during login: {e}"),
    )
}

/// Step 3: the `StartupMessage`, then the token as the answer to
/// `AuthenticationCleartextPassword`, up to `AuthenticationOk`. Messages the server sends before
/// it (`NegotiateProtocolVersion`, notices) are kept in `upstream`'s buffer for [`finish`].
async fn authenticate(
    inner: &Shared,
    upstream: &mut Leg,
    startup: &StartupMessage,
    kept: &Kept,
) -> Result<(), Failure> {
    let cfg = &inner.config;
    let endpoint = cfg.endpoint();
    let user = startup.user().to_owned();
    let window = cfg.handshake_timeout;
    let deadline = Instant::now() + window;
    let mut out = BytesMut::new();
    startup.encode(&mut out).map_err(|e| {
        Failure::new(
            Side::Client,
            "client_protocol",
            sqlstate::PROTOCOL_VIOLATION,
            format!("the client's startup parameters cannot be sent on: {e}"),
        )
    })?;
    upstream
        .send(&out)
        .await
        .map_err(|e| upstream_io(&endpoint, &ReadError::Io(e)))?;
    let mut stage = Stage::Nothing;
    let mut scram: Option<scram::ScramClient> = None;
    let mut expect: Option<scram::ScramClientFinal> = None;
    let password = match kept {
        Kept::Token(token) => token.expose().as_bytes(),
        Kept::Password(creds) => creds.password.expose().as_bytes(),
    };
    let mut before: Vec<Message> = Vec::new();
    loop {
        let m = upstream
            .message(deadline, window)
            .await
            .map_err(|e| upstream_io(&endpoint, &e))?;
        match m.tag {
            tag::AUTHENTICATION => {
                let auth =
                    Authentication::decode(&m.body).map_err(|e| bad_upstream(&endpoint, &e))?;
                let is_password = matches!(kept, Kept::Password(_));
                let step = decide(&auth, stage, is_password);
                let mut out = BytesMut::new();
                let scram_err = |e: super::proto::Error| {
                    Failure::new(
                        Side::Upstream,
                        "scram",
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        format!("the SCRAM-SHA-256 login to {endpoint} failed: {e}"),
                    )
                };
                match step {
                    AuthStep::SendPassword => {
                        PasswordMessage {
                            password: Bytes::copy_from_slice(password),
                        }
                        .encode(&mut out)
                        .map_err(|e| bad_upstream(&endpoint, &e))?;
                        stage = Stage::Sent;
                    }
                    AuthStep::StartScram => {
                        let mut random = [0u8; 18];
                        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
                        let secret = String::from_utf8_lossy(password);
                        let (client, first) =
                            scram::ScramClient::start(&secret, &scram::nonce_from_random(&random))
                                .map_err(scram_err)?;
                        SaslInitialResponse {
                            mechanism: scram::MECHANISM.to_owned(),
                            data: Some(Bytes::from(first)),
                        }
                        .encode(&mut out)
                        .map_err(|e| bad_upstream(&endpoint, &e))?;
                        scram = Some(client);
                        stage = Stage::ScramStarted;
                    }
                    AuthStep::ContinueScram => {
                        let (Some(client), Authentication::SaslContinue(data)) =
                            (scram.take(), &auth)
                        else {
                            return Err(not_iam(inner, &user, &auth));
                        };
                        let (final_msg, check) = client.client_final(data).map_err(scram_err)?;
                        SaslResponse {
                            data: Bytes::from(final_msg),
                        }
                        .encode(&mut out);
                        expect = Some(check);
                        stage = Stage::Sent;
                    }
                    AuthStep::CheckScram => {
                        let (Some(check), Authentication::SaslFinal(data)) = (&expect, &auth)
                        else {
                            return Err(not_iam(inner, &user, &auth));
                        };
                        check.verify(data).map_err(scram_err)?;
                        expect = None;
                        continue;
                    }
                    AuthStep::Done => {
                        // Keep what came before AuthenticationOk, in order, for the client.
                        let mut front = BytesMut::new();
                        for b in before.iter().chain(std::iter::once(&m)) {
                            frame::put_message(b.tag, &b.body, &mut front);
                        }
                        front.unsplit(std::mem::take(&mut upstream.buf));
                        upstream.buf = front;
                        return Ok(());
                    }
                    AuthStep::Refuse if is_password => {
                        return Err(Failure::new(
                            Side::Upstream,
                            "unsupported_auth",
                            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                            format!(
                                "the database {endpoint} asked '{}' for {}; with --secret the \
                                 PostgreSQL engine answers a cleartext password or \
                                 SCRAM-SHA-256 (set the user's password with \
                                 password_encryption = 'scram-sha-256')",
                                printable(&user),
                                auth.name()
                            ),
                        ));
                    }
                    AuthStep::Refuse => {
                        return Err(not_iam(inner, &user, &auth));
                    }
                }
                upstream
                    .send(&out)
                    .await
                    .map_err(|e| upstream_io(&endpoint, &ReadError::Io(e)))?;
            }
            tag::ERROR_RESPONSE => {
                let err =
                    ErrorResponse::decode(&m.body).map_err(|e| bad_upstream(&endpoint, &e))?;
                if stage != Stage::Nothing && rejects_password(&err) {
                    return Err(match kept {
                        Kept::Token(_) => {
                            inner.tokens.invalidate(&cfg.token_request(&user));
                            token_rejected(inner, &user, &err)
                        }
                        Kept::Password(_) => password_rejected(inner, &user, &err),
                    });
                }
                // Anything else (no such database, too many connections) is the server's own
                // word: the client sees it as the server sent it.
                return Err(Failure {
                    side: Side::Upstream,
                    reason: "upstream_refused",
                    detail: format!("the database {endpoint} refused the login: {err}"),
                    reply: Some(err),
                });
            }
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION
                if before.len() < MAX_LOGIN_MESSAGES =>
            {
                before.push(m)
            }
            other => {
                return Err(bad_upstream(
                    &endpoint,
                    &super::proto::Error::UnexpectedTag {
                        tag: other,
                        expected: "an authentication request",
                    },
                ));
            }
        }
    }
}

/// Where the upstream login's exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Nothing sent yet.
    Nothing,
    /// The SCRAM client-first message went.
    ScramStarted,
    /// The credential (a password, a token, or the SCRAM proof) went.
    Sent,
}

/// What to do with one authentication request of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthStep {
    /// Answer with the IAM token (or the `--secret` password) in clear, inside TLS.
    SendPassword,
    /// Start SCRAM-SHA-256 (`--secret` only).
    StartScram,
    /// Answer the server-first message with the proof.
    ContinueScram,
    /// Check the server's signature.
    CheckScram,
    /// Logged in.
    Done,
    /// The server asks for something the credential cannot answer (or asks twice).
    Refuse,
}

/// The decision for `auth` at `stage`, `password` telling a `--secret` password from a token:
/// a token answers one `AuthenticationCleartextPassword` and nothing else (SCRAM, MD5, GSS, a
/// second request are refused); a password answers that too, or SCRAM-SHA-256;
/// `AuthenticationOk` ends the exchange.
pub(crate) fn decide(auth: &Authentication, stage: Stage, password: bool) -> AuthStep {
    match (auth, stage) {
        (Authentication::Ok, _) => AuthStep::Done,
        (Authentication::CleartextPassword, Stage::Nothing) => AuthStep::SendPassword,
        (Authentication::Sasl { mechanisms }, Stage::Nothing)
            if password && mechanisms.iter().any(|m| m == scram::MECHANISM) =>
        {
            AuthStep::StartScram
        }
        (Authentication::SaslContinue(_), Stage::ScramStarted) if password => {
            AuthStep::ContinueScram
        }
        (Authentication::SaslFinal(_), Stage::Sent) if password => AuthStep::CheckScram,
        _ => AuthStep::Refuse,
    }
}

/// Whether the server's error says the password (the token) was wrong: 28P01
/// (`invalid_password`, what `pam` and `password` report) or 28000.
pub(crate) fn rejects_password(err: &ErrorResponse) -> bool {
    matches!(
        err.sqlstate().as_deref(),
        Some(sqlstate::INVALID_PASSWORD | sqlstate::INVALID_AUTHORIZATION_SPECIFICATION)
    )
}

/// The server asked `user` for `auth` instead of a cleartext password: the user is not an IAM
/// user (no `rds_iam` role), or does not exist.
fn not_iam(inner: &Shared, user: &str, auth: &Authentication) -> Failure {
    let endpoint = inner.config.endpoint();
    let user = printable(user);
    let asked = match auth {
        Authentication::Sasl { mechanisms } => format!("SASL ({})", mechanisms.join(", ")),
        Authentication::CleartextPassword => "a second password".to_owned(),
        other => other.name().to_owned(),
    };
    Failure::new(
        Side::Upstream,
        "not_iam_user",
        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
        format!(
            "the database {endpoint} asked '{user}' for {asked} instead of a cleartext password, \
             so '{user}' is not an IAM database user (or does not exist). As an administrator, \
             run CREATE USER \"{user}\"; GRANT rds_iam TO \"{user}\"; or log in as a user that \
             has the rds_iam role."
        ),
    )
}

/// The server rejected the token of `user`.
fn token_rejected(inner: &Shared, user: &str, err: &ErrorResponse) -> Failure {
    let cfg = &inner.config;
    let endpoint = cfg.endpoint();
    let region = &cfg.region;
    let user = printable(user);
    let mut f = Failure::new(
        Side::Upstream,
        "access_denied",
        sqlstate::INVALID_PASSWORD,
        format!(
            "the database {endpoint} rejected the IAM token for user '{user}' (region {region}). \
             Check that your IAM identity may rds-db:connect to \
             arn:aws:rds-db:{region}:<account>:dbuser:<DbiResourceId or cluster resource \
             id>/{user}, that IAM database authentication is enabled on the database, and that \
             '{user}' has the rds_iam role (GRANT rds_iam TO \"{user}\")."
        ),
    );
    let said = printable(err.message().as_deref().unwrap_or_default()).into_owned();
    f.detail = format!("{} The database said: {said}", f.detail);
    f.reply = f
        .reply
        .map(|r| r.detail(format!("The database said: {said}")));
    f
}

/// The server refused the `--secret` password of `user`: read the secret again next time.
fn password_rejected(inner: &Shared, user: &str, err: &ErrorResponse) -> Failure {
    let cfg = &inner.config;
    let source = cfg
        .upstream_password
        .as_ref()
        .map(|s| {
            s.rejected();
            s.describe()
        })
        .unwrap_or_default();
    let said = printable(err.message().as_deref().unwrap_or_default()).into_owned();
    let mut f = Failure::new(
        Side::Upstream,
        "access_denied",
        sqlstate::INVALID_PASSWORD,
        format!(
            "the database {} refused the password of '{}' from {source}. If the secret was just \
             rotated, the next login reads it again; otherwise check that the secret holds this \
             database's credentials.",
            cfg.endpoint(),
            printable(user)
        ),
    );
    f.detail = format!("{} The database said: {said}", f.detail);
    f.reply = f
        .reply
        .map(|r| r.detail(format!("The database said: {said}")));
    f
}

/// The server sent what PostgreSQL does not send during login.
fn bad_upstream(endpoint: &str, e: &super::proto::Error) -> Failure {
    Failure::new(
        Side::Upstream,
        "upstream_protocol",
        sqlstate::PROTOCOL_VIOLATION,
        format!("the database {endpoint} sent a message the proxy cannot read during login: {e}"),
    )
}

/// Step 4: the server's messages from `AuthenticationOk` (kept in `upstream`'s buffer with
/// whatever preceded it) up to `ReadyForQuery`, for the client, with the cancel key replaced by
/// one the proxy minted.
async fn finish(
    inner: &Arc<Shared>,
    upstream: &mut Leg,
) -> Result<(BytesMut, Option<KeyGuard>), Failure> {
    let endpoint = inner.config.endpoint();
    let window = inner.config.handshake_timeout;
    let deadline = Instant::now() + window;
    let mut welcome = BytesMut::new();
    let mut key = None;
    for _ in 0..MAX_LOGIN_MESSAGES {
        let m = upstream
            .message(deadline, window)
            .await
            .map_err(|e| upstream_io(&endpoint, &e))?;
        match m.tag {
            tag::BACKEND_KEY_DATA => {
                let real =
                    BackendKeyData::decode(&m.body).map_err(|e| bad_upstream(&endpoint, &e))?;
                let (minted, guard) = keys::mint(inner, real);
                minted
                    .encode(&mut welcome)
                    .map_err(|e| bad_upstream(&endpoint, &e))?;
                key = guard;
            }
            tag::ERROR_RESPONSE => {
                let err =
                    ErrorResponse::decode(&m.body).map_err(|e| bad_upstream(&endpoint, &e))?;
                return Err(Failure {
                    side: Side::Upstream,
                    reason: "upstream_refused",
                    detail: format!("the database {endpoint} ended the login: {err}"),
                    reply: Some(err),
                });
            }
            tag::READY_FOR_QUERY => {
                frame::put_message(m.tag, &m.body, &mut welcome);
                return Ok((welcome, key));
            }
            tag::AUTHENTICATION
            | tag::PARAMETER_STATUS
            | tag::NOTICE_RESPONSE
            | tag::NEGOTIATE_PROTOCOL_VERSION => {
                frame::put_message(m.tag, &m.body, &mut welcome);
            }
            other => {
                return Err(bad_upstream(
                    &endpoint,
                    &super::proto::Error::UnexpectedTag {
                        tag: other,
                        expected: "ParameterStatus, BackendKeyData or ReadyForQuery",
                    },
                ));
            }
        }
    }
    Err(Failure::new(
        Side::Upstream,
        "upstream_protocol",
        sqlstate::PROTOCOL_VIOLATION,
        format!(
            "the database {endpoint} sent more than {MAX_LOGIN_MESSAGES} messages before ReadyForQuery"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::proto::ProtocolVersion;

    #[test]
    fn only_one_cleartext_request_is_answered_with_the_token() {
        use Authentication as A;
        let token = |a: &A, s: Stage| decide(a, s, false);
        assert_eq!(
            token(&A::CleartextPassword, Stage::Nothing),
            AuthStep::SendPassword
        );
        assert_eq!(token(&A::CleartextPassword, Stage::Sent), AuthStep::Refuse);
        assert_eq!(token(&A::Ok, Stage::Sent), AuthStep::Done);
        // `trust`: logged in without being asked; nothing secret went.
        assert_eq!(token(&A::Ok, Stage::Nothing), AuthStep::Done);
        let sasl = A::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()],
        };
        for other in [sasl, A::Md5Password { salt: [1, 2, 3, 4] }] {
            assert_eq!(token(&other, Stage::Nothing), AuthStep::Refuse, "{other:?}");
        }
    }

    #[test]
    fn a_secret_password_answers_cleartext_or_scram_in_order() {
        use Authentication as A;
        let pw = |a: &A, s: Stage| decide(a, s, true);
        let sasl = |m: &str| A::Sasl {
            mechanisms: vec![m.into()],
        };
        assert_eq!(
            pw(&sasl("SCRAM-SHA-256"), Stage::Nothing),
            AuthStep::StartScram
        );
        assert_eq!(
            pw(&sasl("SCRAM-SHA-256-PLUS"), Stage::Nothing),
            AuthStep::Refuse
        );
        let cont = A::SaslContinue(Bytes::new());
        let fin = A::SaslFinal(Bytes::new());
        assert_eq!(pw(&cont, Stage::ScramStarted), AuthStep::ContinueScram);
        assert_eq!(pw(&cont, Stage::Nothing), AuthStep::Refuse);
        assert_eq!(pw(&fin, Stage::Sent), AuthStep::CheckScram);
        assert_eq!(pw(&fin, Stage::ScramStarted), AuthStep::Refuse);
        assert_eq!(
            pw(&A::Md5Password { salt: [0; 4] }, Stage::Nothing),
            AuthStep::Refuse
        );
        assert_eq!(
            pw(&A::CleartextPassword, Stage::Nothing),
            AuthStep::SendPassword
        );
    }

    #[test]
    fn the_upstream_startup_keeps_the_clients_parameters_with_the_iam_user() {
        let client = StartupMessage::new(
            ProtocolVersion::V3_0,
            "someone",
            &[("database", "app"), ("application_name", "psql")],
        );
        let up = upstream_startup(&client, "iamuser");
        assert_eq!(up.user(), "iamuser");
        assert_eq!(up.get("database"), Some("app"));
        assert_eq!(up.get("application_name"), Some("psql"));
        assert_eq!(up.params.len(), 3);
        assert_eq!(up.version, client.version);
    }

    #[test]
    fn wrong_password_states_count_as_a_rejected_token() {
        assert!(rejects_password(&ErrorResponse::fatal("28P01", "x")));
        assert!(rejects_password(&ErrorResponse::fatal("28000", "x")));
        assert!(!rejects_password(&ErrorResponse::fatal("3D000", "no db")));
        assert!(!rejects_password(&ErrorResponse::fatal("53300", "busy")));
    }
}

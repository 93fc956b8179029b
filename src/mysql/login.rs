//! The login bridge for one connection, upstream first (DESIGN.md decisions 1, 3 and 4):
//!
//! 1. open the upstream stream and read its greeting (an ERR there is passed to the client as is);
//! 2. greet the client with the upstream's version, connection id, charset and status, and the
//!    upstream's capabilities minus what the proxy owns; announce `caching_sha2_password`;
//! 3. read the client's HandshakeResponse41 (after local TLS if the client asks and it is enabled)
//!    and accept it whatever it holds;
//! 4. upstream: SSLRequest, TLS verified against the endpoint name, HandshakeResponse41 with the
//!    client's flags, database, charset and attributes, then answer the switch to
//!    `mysql_clear_password` with the IAM token;
//! 5. finish the local login (fast-auth-OK first when the client sent a caching_sha2 scramble) with
//!    the upstream's own OK.
//!
//! Every failure becomes a MySQL ERR packet the client shows, worded for the person who must act.
//! A client that fails before its login went upstream (it left, sent garbage, a wrong local
//! password, or nothing within [`PRE_AUTH_WINDOW`]) does not leave an aborted handshake on the
//! server, which counts toward `max_connect_errors` and can get the proxy's host blocked: the
//! proxy completes that handshake itself as a failed login of [`UNUSED_CONNECTION_USER`] (no
//! password, no token), which servers do not count.
//! A client that asks for TLS when the proxy offers none (`--local-tls` off) is answered inside a
//! TLS session with a throwaway certificate, so that it can show that ERR instead of a TLS error.
//! Wrong local passwords lock the peer out for a growing delay ([`crate::proxy::throttle`]). Client-chosen
//! text (the user name) is escaped ([`crate::proxy::printable`]) wherever it is shown.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rand::Rng;

use super::framed::{PacketStream, Prefixed, ReadError, StartTlsError};
use crate::iam::AuthToken;
use crate::io::{RoundTripCount, RoundTrips};
use crate::mysql::proto::auth::{
    self, Credential, Exchange, IamLogin, Next, PasswordLogin, Phase, Refusal,
};
use crate::mysql::proto::compress::{Algorithm, DEFAULT_ZSTD_LEVEL};
use crate::mysql::proto::handshake::plugin;
use crate::mysql::proto::{
    Capabilities, ErrPacket, HandshakeResponse41, HandshakeV10, SslRequest, codes,
};
use crate::proxy::config::Compression;
use crate::proxy::listener::Peer;
use crate::proxy::password::DbCredentials;
use crate::proxy::shared::{Shared, Side};
use crate::proxy::throttle::PeerKey;
use crate::tls;
use crate::tunnel::BoxStream;

/// A failed login: whose fault, a short reason label for metrics, and what the client is told.
#[derive(Debug)]
pub struct Failure {
    /// Whose side failed.
    pub side: Side,
    /// A stable label (`upstream_unreachable`, `tls`, `token`, `access_denied`, ...).
    pub reason: &'static str,
    /// The ERR packet for the client (`None` when the client is gone).
    pub reply: Option<ErrPacket>,
    /// Detail for the log line.
    pub detail: String,
}

impl Failure {
    fn new(side: Side, reason: &'static str, code: u16, state: &[u8; 5], msg: String) -> Self {
        Failure {
            side,
            reason,
            detail: msg.clone(),
            reply: Some(ErrPacket::new(code, state, format!("rds-iam-proxy: {msg}"))),
        }
    }

    fn client_gone(err: ReadError) -> Self {
        Failure {
            side: Side::Client,
            reason: "client_gone",
            detail: format!("client went away during login: {err}"),
            reply: None,
        }
    }

    /// The exchange's (or the token's) failure, in the words of [`auth`].
    fn from_refusal(side: Side, r: Refusal) -> Self {
        Failure {
            side,
            reason: r.reason,
            reply: Some(r.reply),
            detail: r.detail,
        }
    }

    fn forward(side: Side, reason: &'static str, err: ErrPacket) -> Self {
        Failure {
            side,
            reason,
            detail: err.message_str(),
            reply: Some(err),
        }
    }
}

/// What the splice needs to know about an established session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Capabilities agreed with the client.
    pub client_caps: Capabilities,
    /// Capabilities sent upstream.
    pub upstream_caps: Capabilities,
    /// The plugin the upstream greeting announced (sent with COM_CHANGE_USER so the server switches).
    pub upstream_plugin: Bytes,
    /// The client's collation id.
    pub character_set: u8,
    /// The upstream connection id (also shown to the client).
    pub connection_id: u32,
    /// The IAM database user logged in.
    pub db_user: String,
    /// The protocol compression of the database leg (after the server's OK), if any.
    pub compression: Option<Algorithm>,
}

/// Both legs after a successful login, ready to splice.
pub struct Established {
    /// The client stream (plain or local TLS).
    pub client: BoxStream,
    /// Bytes the client sent beyond its login.
    pub client_read_ahead: BytesMut,
    /// The upstream TLS stream.
    pub upstream: BoxStream,
    /// Bytes the upstream sent beyond its final OK.
    pub upstream_read_ahead: BytesMut,
    /// Session facts.
    pub session: Session,
    /// Round trips to the database the login took (greeting, TLS, authentication).
    pub round_trips: u32,
}

/// The client leg during login: its packet stream and the next sequence id to write.
struct ClientLeg {
    io: PacketStream,
    next_seq: u8,
}

impl ClientLeg {
    async fn send_err(&mut self, err: &ErrPacket) {
        let mut payload = BytesMut::new();
        err.encode(&mut payload);
        self.io.queue(self.next_seq, &payload);
        // The client may already be gone; nothing more to do then.
        let _ = self.io.flush().await;
    }
}

/// Runs the whole login for one accepted client from `peer`. `pending` is its place among the
/// logins not yet authenticated locally (`--max-pending-logins`), given back as soon as the
/// client's login response has been read and its local password checked. On failure the client
/// has been sent an ERR packet (when it is still there).
pub(crate) async fn run<P: Send + 'static>(
    inner: &Arc<Shared>,
    client: BoxStream,
    peer: &Peer,
    pending: P,
) -> Result<Established, Failure> {
    let mut leg = ClientLeg {
        io: PacketStream::new(client, BytesMut::new()),
        next_seq: 0,
    };
    let mut pending = Some(pending);
    match bridge(inner, &mut leg, peer, &mut pending).await {
        Ok(est) => Ok(est),
        Err(failure) => {
            if let Some(err) = &failure.reply {
                leg.send_err(err).await;
            }
            Err(failure)
        }
    }
}

async fn bridge<P: Send + 'static>(
    inner: &Arc<Shared>,
    leg: &mut ClientLeg,
    peer: &Peer,
    pending: &mut Option<P>,
) -> Result<Established, Failure> {
    prefetch_token(inner).await;

    // 1. Upstream first.
    let (upstream, greeting, trips) = upstream_greeting(inner).await?;

    // Steps 2 and 3 end with the client authenticated locally. If they fail, the greeted
    // upstream connection is not just dropped (the server would count an aborted handshake
    // toward max_connect_errors): it is completed in the background (`complete_unused`).
    let login = match client_phase(inner, leg, peer, pending, &greeting).await {
        Ok(login) => login,
        Err(f) => {
            let from = Unused::Greeted {
                upstream,
                caps: greeting.capabilities,
                character_set: greeting.character_set,
                plugin: greeting.auth_plugin_name.clone(),
            };
            retire(inner, from, pending.take());
            return Err(f);
        }
    };

    // 4. Upstream: TLS, then the login.
    let (upstream, ok_payload, db_user) =
        upstream_login(inner, upstream, &greeting, &login).await?;

    // 5. Finish the local login with the upstream's OK.
    finish_client(leg, &login.response, ok_payload).await?;

    let (client, client_read_ahead) = take(&mut leg.io).into_parts();
    let (upstream, upstream_read_ahead) = upstream.into_parts();
    Ok(Established {
        round_trips: trips.get(),
        client,
        client_read_ahead,
        upstream,
        upstream_read_ahead,
        session: Session {
            client_caps: login.response.capabilities,
            upstream_caps: login.upstream_caps,
            upstream_plugin: greeting
                .auth_plugin_name
                .clone()
                .unwrap_or_else(|| Bytes::from_static(plugin::MYSQL_NATIVE_PASSWORD.as_bytes())),
            character_set: login.response.character_set,
            connection_id: greeting.connection_id,
            db_user,
            compression: compression_of(login.upstream_caps),
        },
    })
}

/// With a fixed `--db-user` the token can be minted before the database's handshake clock
/// starts; a failure here shows up again (and is reported) at the real use in [`upstream_login`].
async fn prefetch_token(inner: &Shared) {
    let cfg = &inner.config;
    if let Some(user) = cfg
        .db_user
        .as_ref()
        .filter(|_| cfg.upstream_password.is_none())
    {
        let _ = inner.tokens.token(&cfg.token_request(user)).await;
    }
}

/// Step 1: opens the upstream stream and reads its HandshakeV10. An ERR greeting is passed to the
/// client as is; a server without the capabilities an IAM login needs is refused. The stream
/// counts the login's round trips from here on.
async fn upstream_greeting(
    inner: &Shared,
) -> Result<(PacketStream, HandshakeV10, RoundTripCount), Failure> {
    let timeout = inner.config.handshake_timeout;
    let endpoint = inner.config.endpoint();
    let stream = inner.connector.connect().await.map_err(|e| Failure {
        side: Side::Upstream,
        reason: "upstream_unreachable",
        detail: e.to_string(),
        reply: Some(ErrPacket::before_greeting(
            codes::UPSTREAM_ERROR,
            format!(
                "rds-iam-proxy could not reach the database {endpoint} via {}: {e}. Check that the \
                 database is running and reachable from here (or through the tunnel).",
                inner.connector.describe()
            ),
        )),
    })?;
    let (stream, trips) = RoundTrips::new(stream);
    let mut upstream = PacketStream::new(Box::new(stream), BytesMut::new());
    let greeting_packet = upstream.read_packet(timeout).await.map_err(|e| Failure {
        side: Side::Upstream,
        reason: "upstream_handshake",
        detail: format!("reading the upstream greeting: {e}"),
        reply: Some(ErrPacket::before_greeting(
            codes::UPSTREAM_ERROR,
            format!(
                "rds-iam-proxy: the database {endpoint} did not send a valid MySQL greeting ({e}); \
                 is {} really a MySQL endpoint?",
                inner.connector.describe()
            ),
        )),
    })?;
    if greeting_packet.payload.first() == Some(&ErrPacket::HEADER) {
        let err = ErrPacket::decode(&greeting_packet.payload).unwrap_or_else(|_| {
            ErrPacket::before_greeting(codes::UPSTREAM_ERROR, "malformed error from the database")
        });
        return Err(Failure::forward(Side::Upstream, "upstream_refused", err));
    }
    let greeting = HandshakeV10::decode(&greeting_packet.payload).map_err(|e| {
        let msg = format!("the database {endpoint} sent a greeting the proxy cannot read: {e}");
        Failure {
            side: Side::Upstream,
            reason: "upstream_handshake",
            detail: msg.clone(),
            reply: Some(ErrPacket::before_greeting(
                codes::HANDSHAKE_ERROR,
                format!("rds-iam-proxy: {msg}"),
            )),
        }
    })?;
    require_upstream_caps(greeting.capabilities, &endpoint)?;
    Ok((upstream, greeting, trips))
}

/// Refuses an upstream greeting that lacks [`Capabilities::UPSTREAM_REQUIRED`] (TLS above all:
/// an IAM token is never sent in cleartext).
fn require_upstream_caps(upstream: Capabilities, endpoint: &str) -> Result<(), Failure> {
    if upstream.contains(Capabilities::UPSTREAM_REQUIRED) {
        return Ok(());
    }
    let missing = Capabilities::UPSTREAM_REQUIRED - upstream;
    let msg = if missing.contains(Capabilities::SSL) {
        format!(
            "the database {endpoint} does not offer TLS, and an IAM token is never sent in \
             cleartext. Enable TLS on the server (RDS and Aurora always offer it)."
        )
    } else {
        format!("the database {endpoint} lacks required protocol features {missing:?}")
    };
    Err(Failure {
        side: Side::Upstream,
        reason: "upstream_no_tls",
        detail: msg.clone(),
        reply: Some(ErrPacket::before_greeting(
            codes::HANDSHAKE_ERROR,
            format!("rds-iam-proxy: {msg}"),
        )),
    })
}

/// What steps 2 and 3 settle: the client's login, the database user, and the capabilities for
/// the upstream leg.
struct ClientLogin {
    /// The client's HandshakeResponse41.
    response: HandshakeResponse41,
    /// The IAM database user (`--db-user`, or the client's user name).
    db_user: String,
    /// Capabilities for the upstream leg ([`negotiate_caps`]).
    upstream_caps: Capabilities,
}

/// Steps 2 and 3: greets the client, reads and checks its login, gives back its place among the
/// pending logins once it is authenticated locally, and negotiates the upstream capabilities.
async fn client_phase<P>(
    inner: &Shared,
    leg: &mut ClientLeg,
    peer: &Peer,
    pending: &mut Option<P>,
    greeting: &HandshakeV10,
) -> Result<ClientLogin, Failure> {
    let cfg = &inner.config;
    let local_tls = inner.local_tls.is_some();
    let scramble = greet_client(leg, greeting, local_tls).await?;
    let response = read_client_login(inner, leg, peer, &scramble).await?;
    // Authenticated locally: this login no longer counts against --max-pending-logins.
    drop(pending.take());
    let db_user = match &cfg.db_user {
        Some(u) => u.clone(),
        None => String::from_utf8(response.username.to_vec()).unwrap_or_default(),
    };
    if db_user.is_empty() && cfg.upstream_password.is_none() {
        return Err(Failure::new(
            Side::Client,
            "no_user",
            codes::ACCESS_DENIED,
            b"28000",
            "log in with your IAM database user name (any password, or none), or start the \
             proxy with --db-user"
                .into(),
        ));
    }
    let upstream_caps =
        negotiate_caps(greeting.capabilities, local_tls, &response, cfg.compression)?;
    Ok(ClientLogin {
        response,
        db_user,
        upstream_caps,
    })
}

/// What the local greeting offers: the upstream's capabilities minus what the proxy owns
/// ([`Capabilities::NEVER`], and TLS unless local TLS is on).
fn local_caps(upstream: Capabilities, local_tls: bool) -> Capabilities {
    let caps = upstream - Capabilities::NEVER - Capabilities::SSL;
    if local_tls {
        caps | Capabilities::SSL
    } else {
        caps
    }
}

/// The capabilities of the upstream leg (DESIGN.md decision 1): the client's choice within what
/// was offered locally, minus what the proxy owns, with TLS and pluggable auth forced on (and the
/// length-encoded auth response when the server has it); the database and attribute flags only
/// with a database and attributes. Refused when a framing flag would differ between the legs.
///
/// Compression (DESIGN.md decision 12) is the proxy's own business on the database leg: the
/// client is never offered it ([`Capabilities::NEVER`]), and upstream the proxy asks for zstd
/// when `compression` allows it and the server offers it, else zlib likewise, else nothing.
fn negotiate_caps(
    upstream: Capabilities,
    local_tls: bool,
    response: &HandshakeResponse41,
    compression: Compression,
) -> Result<Capabilities, Failure> {
    let client_caps = response.capabilities;
    let offered = local_caps(upstream, local_tls);
    let forced = Capabilities::PROTOCOL_41
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | (Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA & upstream);
    let mut caps = ((client_caps & offered) - Capabilities::NEVER - Capabilities::SSL)
        | forced
        | Capabilities::SSL;
    if response.database.is_none() {
        caps = caps - Capabilities::CONNECT_WITH_DB;
    }
    if response.connect_attrs.is_none() {
        caps = caps - Capabilities::CONNECT_ATTRS;
    }
    let compressed = Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION_ALGORITHM;
    // Clients may set flags that were not offered (mysql2 always sets QUERY_ATTRIBUTES) and then
    // use only the intersection, as servers do: compare what each leg will actually use.
    let mismatch =
        Capabilities((caps.0 ^ (client_caps & offered).0) & (Capabilities::FRAMING - compressed).0);
    if mismatch != Capabilities::EMPTY {
        return Err(Failure::new(
            Side::Client,
            "capability_mismatch",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            format!(
                "the client asked for {mismatch:?}, which the database did not offer; the \
                 connection cannot be relayed safely"
            ),
        ));
    }
    if compression.zstd && upstream.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM) {
        caps = caps | Capabilities::ZSTD_COMPRESSION_ALGORITHM;
    } else if compression.zlib && upstream.contains(Capabilities::COMPRESS) {
        caps = caps | Capabilities::COMPRESS;
    }
    Ok(caps)
}

/// The compression the upstream capabilities ([`negotiate_caps`]) put on the database leg.
fn compression_of(caps: Capabilities) -> Option<Algorithm> {
    if caps.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM) {
        Some(Algorithm::Zstd)
    } else if caps.contains(Capabilities::COMPRESS) {
        Some(Algorithm::Zlib)
    } else {
        None
    }
}

/// Step 2: greets the client with the upstream's identity (version, connection id, charset,
/// status), its capabilities minus what the proxy owns, and `caching_sha2_password` with a fresh
/// scramble, which it returns.
async fn greet_client(
    leg: &mut ClientLeg,
    greeting: &HandshakeV10,
    local_tls: bool,
) -> Result<Bytes, Failure> {
    let local_greeting = HandshakeV10 {
        server_version: greeting.server_version.clone(),
        connection_id: greeting.connection_id,
        auth_plugin_data: fresh_scramble(),
        capabilities: local_caps(greeting.capabilities, local_tls),
        character_set: greeting.character_set,
        status_flags: greeting.status_flags,
        auth_plugin_name: Some(Bytes::from_static(plugin::CACHING_SHA2_PASSWORD.as_bytes())),
    };
    let mut payload = BytesMut::new();
    local_greeting.encode(&mut payload);
    leg.io.queue(0, &payload);
    // An error before the client's packet is decoded answers its seq 1 with seq 2.
    leg.next_seq = 2;
    leg.io
        .flush()
        .await
        .map_err(|e| Failure::client_gone(ReadError::Io(e)))?;
    Ok(local_greeting.auth_plugin_data)
}

/// Step 3: the client's HandshakeResponse41, after local TLS if it asks for it, within the
/// pre-auth window; then its local password (`--local-password`) against `scramble`.
async fn read_client_login(
    inner: &Shared,
    leg: &mut ClientLeg,
    peer: &Peer,
    scramble: &[u8],
) -> Result<HandshakeResponse41, Failure> {
    let cfg = &inner.config;
    let window = cfg.handshake_timeout.min(PRE_AUTH_WINDOW);
    let deadline = tokio::time::Instant::now() + window;
    let left = || {
        deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(std::time::Duration::from_millis(1))
    };
    let in_window = |e: ReadError| match e {
        ReadError::Timeout(_) => ReadError::Timeout(window),
        other => other,
    };
    let mut packet = leg
        .io
        .read_packet(left())
        .await
        .map_err(|e| client_read_failure(in_window(e), "its login response"))?;
    if SslRequest::matches(&packet.payload) {
        let Some(acceptor) = &inner.local_tls else {
            return Err(refuse_tls(inner, leg, packet.seq).await);
        };
        // Bytes read past the SSLRequest are the start of the client's TLS handshake (clients
        // may send both in one write): hand them to the TLS acceptor, never to MySQL parsing.
        let (raw, ahead) = take(&mut leg.io).into_parts();
        let raw = Prefixed::new(ahead.freeze(), raw);
        let tls = tokio::time::timeout(left(), acceptor.accept(raw))
            .await
            .map_err(|_| Failure::client_gone(ReadError::Timeout(window)))?
            .map_err(|e| Failure {
                side: Side::Client,
                reason: "client_tls",
                detail: format!("local TLS handshake failed: {e}"),
                reply: None,
            })?;
        leg.io = PacketStream::new(Box::new(tls), BytesMut::new());
        leg.next_seq = 3;
        packet = leg
            .io
            .read_packet(left())
            .await
            .map_err(|e| client_read_failure(in_window(e), "its login response"))?;
    }
    leg.next_seq = packet.seq.wrapping_add(1);
    let response = HandshakeResponse41::decode(&packet.payload).map_err(|e| {
        Failure::new(
            Side::Client,
            "client_protocol",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            format!("malformed login packet from the client: {e}"),
        )
    })?;
    check_local_password(inner, peer, scramble, &response)?;
    Ok(response)
}

/// With `--local-password`: refuses a locked-out peer unchecked, else checks the client's
/// answer to `scramble` and updates the peer's throttle.
fn check_local_password(
    inner: &Shared,
    peer: &Peer,
    scramble: &[u8],
    response: &HandshakeResponse41,
) -> Result<(), Failure> {
    let Some(verifier) = &inner.config.local_password else {
        return Ok(());
    };
    let key = PeerKey::from(peer);
    let now = std::time::Instant::now();
    if let Some(left) = inner.password_throttle.locked_out(&key, now) {
        return Err(Failure::new(
            Side::Client,
            "local_password_throttled",
            codes::ACCESS_DENIED,
            b"28000",
            format!(
                "too many wrong local passwords from this address; the password was not \
                 checked. Try again in {}s",
                left.as_secs().max(1)
            ),
        ));
    }
    let plugin_name = response
        .auth_plugin_name
        .as_deref()
        .filter(|_| response.capabilities.contains(Capabilities::PLUGIN_AUTH));
    if !verifier.verify(plugin_name, scramble, &response.auth_response) {
        let delay = inner.password_throttle.failed(key, now);
        return Err(Failure::new(
            Side::Client,
            "local_password",
            codes::ACCESS_DENIED,
            b"28000",
            format!(
                "wrong or missing local password (this proxy was started with \
                 --local-password); the next attempt from this address is checked after {}s",
                delay.as_secs()
            ),
        ));
    }
    inner.password_throttle.succeeded(&key);
    Ok(())
}

/// Step 4: the upstream login — [`secure_upstream`], then [`authenticate`]. Returns the TLS
/// stream, the server's OK payload and the user logged in.
async fn upstream_login(
    inner: &Arc<Shared>,
    upstream: PacketStream,
    greeting: &HandshakeV10,
    login: &ClientLogin,
) -> Result<(PacketStream, Bytes, String), Failure> {
    let (mut upstream, kept) = secure_upstream(inner, upstream, greeting, login).await?;
    let (ok_payload, username) = authenticate(inner, &mut upstream, greeting, login, &kept).await?;
    Ok((upstream, ok_payload, username))
}

/// Step 4a: SSLRequest and TLS verified against the endpoint name, with the credential (the IAM
/// token, or the `--secret` password) fetched meanwhile. When the credential cannot be had, the
/// TLS connection is retired politely and the failure returned.
async fn secure_upstream(
    inner: &Arc<Shared>,
    upstream: PacketStream,
    greeting: &HandshakeV10,
    login: &ClientLogin,
) -> Result<(PacketStream, Kept), Failure> {
    let cfg = &inner.config;
    let endpoint = cfg.endpoint();
    let response = &login.response;
    let ssl_request = SslRequest {
        capabilities: login.upstream_caps,
        max_packet_size: response.max_packet_size,
        character_set: response.character_set,
    };
    let tls_connect = upstream.start_tls(
        &ssl_request,
        1,
        &inner.upstream_tls,
        inner.server_name.clone(),
        cfg.handshake_timeout,
    );
    let token_request = cfg.token_request(&login.db_user);
    let credential = async {
        match &cfg.upstream_password {
            Some(source) => source.credentials().await.map(Kept::Password).map_err(|e| {
                Failure::new(Side::Proxy, "secret", codes::ACCESS_DENIED, b"28000", e)
            }),
            None => inner
                .tokens
                .token(&token_request)
                .await
                .map(Kept::Token)
                .map_err(|e| {
                    Failure::from_refusal(
                        Side::Proxy,
                        iam_login(inner, &endpoint, login).no_token(&e),
                    )
                }),
        }
    };
    let (tls, credential) = tokio::join!(tls_connect, credential);
    let upstream = tls_outcome(inner, &endpoint, tls)?;
    match credential {
        Ok(kept) => Ok((upstream, kept)),
        Err(f) => {
            let from = Unused::Tls {
                upstream,
                caps: login.upstream_caps,
                character_set: response.character_set,
                plugin: greeting.auth_plugin_name.clone(),
            };
            retire(inner, from, None::<()>);
            Err(f)
        }
    }
}

/// Step 4b: over verified TLS, the HandshakeResponse41 and the auth exchange of [`auth`] with the
/// kept credential. Returns the server's OK payload and the user logged in. A credential refused
/// by the server invalidates the cached token (or re-reads the secret) for the next login.
async fn authenticate(
    inner: &Arc<Shared>,
    upstream: &mut PacketStream,
    greeting: &HandshakeV10,
    login: &ClientLogin,
    kept: &Kept,
) -> Result<(Bytes, String), Failure> {
    let cfg = &inner.config;
    let endpoint = cfg.endpoint();
    let response = &login.response;
    let r_caps = login.upstream_caps;
    let iam = iam_login(inner, &endpoint, login);
    let (username, credential) = match kept {
        Kept::Token(token) => (login.db_user.clone(), Credential::IamToken(token.expose())),
        Kept::Password(creds) => (
            creds.username.clone(),
            Credential::Password(&creds.password),
        ),
    };
    let source = cfg.upstream_password.as_ref().map(|s| s.describe());
    let refusal = |e: auth::Error| {
        let r = match &source {
            None => iam.refusal(e),
            Some(source) => PasswordLogin {
                endpoint: &endpoint,
                user: &username,
                source,
            }
            .refusal(e),
        };
        Failure::from_refusal(Side::Upstream, r)
    };
    // Token first saves a round trip; it needs the long first answer a token makes, and is
    // dropped for good once this endpoint asked for the token again.
    let lenenc = r_caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA);
    let token_first = cfg.direct_auth && lenenc && !inner.token_first_declined();
    let (mut exchange, first) = Exchange::start(
        credential,
        greeting.auth_plugin_name.as_deref(),
        &greeting.auth_plugin_data,
        token_first,
        lenenc,
    )
    .map_err(refusal)?;
    let upstream_response = HandshakeResponse41 {
        capabilities: r_caps,
        max_packet_size: response.max_packet_size,
        character_set: response.character_set,
        username: Bytes::from(username.clone()),
        auth_response: Bytes::copy_from_slice(first.auth_response.bytes()),
        database: response.database.clone(),
        auth_plugin_name: Some(first.plugin),
        connect_attrs: response.connect_attrs.clone(),
        // The level the server compresses with (docs/compression.md, "Levels").
        zstd_level: (compression_of(r_caps) == Some(Algorithm::Zstd))
            .then_some(DEFAULT_ZSTD_LEVEL as u8),
    };
    let mut payload = BytesMut::new();
    upstream_response.encode(&mut payload);
    upstream.queue(2, &payload);
    upstream
        .flush()
        .await
        .map_err(|e| upstream_io_failure(&endpoint, e))?;
    let outcome = drive(upstream, &mut exchange, cfg.handshake_timeout, &endpoint).await?;
    if exchange.declined_token_first() {
        inner.decline_token_first();
    }
    match outcome {
        Ok(ok_payload) => Ok((ok_payload, username)),
        Err(e) => {
            if e.rejects_credential() {
                match &cfg.upstream_password {
                    // Perhaps rotated: read the secret again before the next login.
                    Some(source) => source.rejected(),
                    // A cached token may be the problem (clock skew, rotated credentials): the
                    // next login mints.
                    None => inner.tokens.invalidate(&cfg.token_request(&login.db_user)),
                }
            }
            Err(refusal(e))
        }
    }
}

/// How messages describe this client's IAM login.
fn iam_login<'a>(inner: &'a Shared, endpoint: &'a str, login: &'a ClientLogin) -> IamLogin<'a> {
    IamLogin {
        endpoint,
        user: &login.db_user,
        region: &inner.config.region,
        phase: Phase::Login,
    }
}

/// Step 5: finishes the local login with the upstream's OK (fast-auth-OK first when the client
/// sent a caching_sha2 scramble).
async fn finish_client(
    leg: &mut ClientLeg,
    response: &HandshakeResponse41,
    ok_payload: Bytes,
) -> Result<(), Failure> {
    for payload in auth::local_success(
        response.auth_plugin_name.as_deref(),
        &response.auth_response,
        ok_payload,
    ) {
        leg.next_seq = leg.io.queue(leg.next_seq, &payload);
    }
    leg.io
        .flush()
        .await
        .map_err(|e| Failure::client_gone(ReadError::Io(e)))
}

/// How long a client has, from the greeting, to send its login (TLS included): less than the
/// MySQL/RDS default `connect_timeout` (10 s), so that the proxy can still complete the upstream
/// handshake itself when the client fails, instead of the server timing it out and counting an
/// aborted handshake against the host (`max_connect_errors`).
pub const PRE_AUTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(8);

/// The user name of the logins the proxy completes on upstream connections no client will use.
/// No such account should exist; the server refuses it as an ordinary access denied, which does
/// not count toward `max_connect_errors`, and its log line says where it came from.
pub const UNUSED_CONNECTION_USER: &str = "rds-iam-proxy-unused-connection";

/// An upstream connection whose client failed before its login went upstream.
enum Unused {
    /// Greeted, nothing sent yet.
    Greeted {
        /// The stream.
        upstream: PacketStream,
        /// The server's capabilities.
        caps: Capabilities,
        /// The server's collation.
        character_set: u8,
        /// The plugin the server announced.
        plugin: Option<Bytes>,
    },
    /// The SSLRequest and TLS are done; the HandshakeResponse is due.
    Tls {
        /// The TLS stream.
        upstream: PacketStream,
        /// The capabilities of the SSLRequest.
        caps: Capabilities,
        /// The collation of the SSLRequest.
        character_set: u8,
        /// The plugin the server announced.
        plugin: Option<Bytes>,
    },
}

/// Completes `from` in the background (bounded by the handshake timeout), holding `permit` (a
/// place among the pending logins) until it is done.
fn retire<P: Send + 'static>(inner: &Arc<Shared>, from: Unused, permit: Option<P>) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let timeout = inner.config.handshake_timeout;
        match tokio::time::timeout(timeout, complete_unused(&inner, from)).await {
            Ok(Ok(())) => {
                inner
                    .stats
                    .upstream_completed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!("completed the upstream handshake of a connection no client used");
            }
            Ok(Err(e)) => tracing::debug!(
                "could not complete the upstream handshake of a connection no client used: {e}"
            ),
            Err(_) => tracing::debug!(
                "the upstream handshake of a connection no client used did not finish in time"
            ),
        }
    });
}

/// Finishes the handshake of an upstream connection no client will use, so that the server sees
/// an ordinary failed login (access denied for [`UNUSED_CONNECTION_USER`], no password) instead
/// of an aborted handshake. Over verified TLS like every login; nothing secret is sent.
async fn complete_unused(inner: &Shared, from: Unused) -> Result<(), String> {
    let timeout = inner.config.handshake_timeout;
    let (mut upstream, caps, character_set, plugin) = match from {
        Unused::Greeted {
            upstream,
            caps,
            character_set,
            plugin,
        } => {
            let caps = Capabilities::UPSTREAM_REQUIRED
                | (Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA & caps);
            let ssl = SslRequest {
                capabilities: caps,
                max_packet_size: 16 * 1024 * 1024,
                character_set,
            };
            let tls = upstream
                .start_tls(
                    &ssl,
                    1,
                    &inner.upstream_tls,
                    inner.server_name.clone(),
                    timeout,
                )
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            (tls, caps, character_set, plugin)
        }
        Unused::Tls {
            upstream,
            caps,
            character_set,
            plugin,
        } => (upstream, caps, character_set, plugin),
    };
    // Any further question (a plugin switch, caching_sha2's full authentication) gets an empty
    // answer; a few rounds at most.
    let (mut exchange, first) =
        Exchange::start(Credential::Nothing, plugin.as_deref(), &[], false, false)
            .map_err(|e| e.to_string())?;
    let response = HandshakeResponse41 {
        // Never compressed: the login is meant to fail, and nothing follows it.
        capabilities: caps
            - Capabilities::CONNECT_WITH_DB
            - Capabilities::CONNECT_ATTRS
            - Capabilities::COMPRESS
            - Capabilities::ZSTD_COMPRESSION_ALGORITHM,
        max_packet_size: 16 * 1024 * 1024,
        character_set,
        username: Bytes::from_static(UNUSED_CONNECTION_USER.as_bytes()),
        auth_response: Bytes::new(),
        database: None,
        auth_plugin_name: Some(first.plugin),
        connect_attrs: None,
        zstd_level: None,
    };
    let mut payload = BytesMut::new();
    response.encode(&mut payload);
    upstream.queue(2, &payload);
    upstream.flush().await.map_err(|e| e.to_string())?;
    match drive(
        &mut upstream,
        &mut exchange,
        timeout,
        &inner.config.endpoint(),
    )
    .await
    {
        Err(f) => Err(f.detail),
        Ok(Err(auth::Error::Refused(_))) => Ok(()),
        Ok(Ok(_)) => {
            // An account of that name without a password exists: log out at once.
            upstream.queue(0, &[0x01]);
            let _ = upstream.flush().await;
            Ok(())
        }
        Ok(Err(auth::Error::NextFactor)) => Err("the server asked for a second factor".into()),
        Ok(Err(auth::Error::TooManyRounds)) => Err("the server kept asking".into()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// The upstream leg after the SSLRequest and TLS, or the failure the client is told.
fn tls_outcome(
    inner: &Shared,
    endpoint: &str,
    tls: Result<PacketStream, StartTlsError>,
) -> Result<PacketStream, Failure> {
    let timeout = inner.config.handshake_timeout;
    match tls {
        Ok(upstream) => Ok(upstream),
        Err(StartTlsError::Io(e)) => Err(upstream_io_failure(endpoint, e)),
        Err(StartTlsError::DataBeforeTls) => Err(Failure::new(
            Side::Upstream,
            "upstream_protocol",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            format!("the database {endpoint} sent data before the TLS handshake"),
        )),
        Err(StartTlsError::Timeout(_)) => Err(Failure::new(
            Side::Upstream,
            "tls",
            codes::UPSTREAM_ERROR,
            b"HY000",
            format!(
                "the TLS handshake with {endpoint} did not finish within {}s",
                timeout.as_secs()
            ),
        )),
        Err(StartTlsError::Tls(e)) => Err(tls_failure(inner, endpoint, e)),
    }
}

/// What the upstream login answers with, fetched while TLS is negotiated.
enum Kept {
    /// An IAM token for the client's database user.
    Token(AuthToken),
    /// The `--secret` user name and password.
    Password(DbCredentials),
}

/// Runs `exchange` over `upstream` after its first packet went: reads each login reply and sends
/// what the exchange answers. The outer error is the connection failing, the inner one the login.
async fn drive(
    upstream: &mut PacketStream,
    exchange: &mut Exchange<'_>,
    timeout: std::time::Duration,
    endpoint: &str,
) -> Result<Result<Bytes, auth::Error>, Failure> {
    loop {
        let p = upstream
            .read_packet(timeout)
            .await
            .map_err(|e| upstream_read_failure(endpoint, e))?;
        match exchange.next(p.payload) {
            Next::Send(answer) => {
                upstream.queue(p.seq.wrapping_add(1), answer.bytes());
                upstream
                    .flush()
                    .await
                    .map_err(|e| upstream_io_failure(endpoint, e))?;
            }
            Next::Wait => {}
            Next::Done(ok) => return Ok(Ok(ok)),
            Next::Failed(e) => return Ok(Err(e)),
        }
    }
}

/// Moves the stream out of `io`, leaving an inert placeholder.
fn take(io: &mut PacketStream) -> PacketStream {
    let placeholder = PacketStream::new(Box::new(tokio::io::duplex(1).0), BytesMut::new());
    std::mem::replace(io, placeholder)
}

/// 20 random printable bytes: never a NUL, never the upstream's scramble.
fn fresh_scramble() -> Bytes {
    let mut rng = rand::rng();
    Bytes::from(
        (0..20)
            .map(|_| rng.random_range(0x21u8..0x7f))
            .collect::<Vec<u8>>(),
    )
}

/// The client sent an SSLRequest although the greeting offered no TLS (`--local-tls` is off). A
/// plaintext ERR would land in the middle of its TLS handshake ("wrong version number"), so the
/// proxy completes the handshake with a throwaway self-signed certificate, reads the client's
/// login inside it, and answers that with the ERR: the client shows the proxy's explanation. A
/// client that verifies certificates stops at the certificate instead, which says as much as a
/// TLS error can. Nothing of it reaches the database.
async fn refuse_tls(inner: &Shared, leg: &mut ClientLeg, ssl_seq: u8) -> Failure {
    let timeout = inner.config.handshake_timeout;
    let failure = || {
        Failure::new(
            Side::Client,
            "client_wants_tls",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            "the client asked for TLS, but the proxy was started without --local-tls: start it \
             with --local-tls, or connect without TLS (mysql --ssl-mode=DISABLED or --skip-ssl; \
             the connection to the database is TLS either way)"
                .into(),
        )
    };
    let Some(acceptor) = inner.refusal_tls() else {
        leg.next_seq = ssl_seq.wrapping_add(1);
        return failure();
    };
    let (raw, ahead) = take(&mut leg.io).into_parts();
    let raw = Prefixed::new(ahead.freeze(), raw);
    let tls = match tokio::time::timeout(timeout, acceptor.accept(raw)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let mut f = failure();
            f.reply = None;
            f.detail = format!("{} (its TLS handshake failed too: {e})", f.detail);
            return f;
        }
        Err(_) => return Failure::client_gone(ReadError::Timeout(timeout)),
    };
    leg.io = PacketStream::new(Box::new(tls), BytesMut::new());
    leg.next_seq = ssl_seq.wrapping_add(2);
    if let Ok(p) = leg.io.read_packet(timeout).await {
        leg.next_seq = p.seq.wrapping_add(1);
    }
    failure()
}

fn client_read_failure(e: ReadError, what: &str) -> Failure {
    match e {
        ReadError::Protocol(p) => Failure::new(
            Side::Client,
            "client_protocol",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            format!("bad packet from the client while waiting for {what}: {p}"),
        ),
        ReadError::Timeout(t) => Failure::new(
            Side::Client,
            "client_timeout",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            format!("the client did not send {what} within {}s", t.as_secs()),
        ),
        other => Failure::client_gone(other),
    }
}

fn upstream_io_failure(endpoint: &str, e: std::io::Error) -> Failure {
    Failure::new(
        Side::Upstream,
        "upstream_io",
        codes::UPSTREAM_ERROR,
        b"HY000",
        format!("lost the connection to the database {endpoint} during login: {e}"),
    )
}

fn upstream_read_failure(endpoint: &str, e: ReadError) -> Failure {
    Failure::new(
        Side::Upstream,
        "upstream_io",
        codes::UPSTREAM_ERROR,
        b"HY000",
        format!("the database {endpoint} failed during login: {e}"),
    )
}

fn tls_failure(inner: &Shared, endpoint: &str, e: std::io::Error) -> Failure {
    let host = &inner.config.endpoint_host;
    let ca = &inner.config.ca_source;
    let rustls_error = tls::rustls_error(&e);
    let is_cert = rustls_error.is_some_and(tls::is_certificate_error);
    let is_version = rustls_error.is_some_and(tls::is_version_mismatch);
    let msg = if is_cert {
        format!(
            "TLS verification of {endpoint} failed: {e}. The server certificate must name {host} \
             and chain to {ca}. For a region or partition missing from the embedded bundle, pass \
             --ca-bundle with AWS's global-bundle.pem."
        )
    } else if is_version {
        format!(
            "the TLS handshake with {endpoint} failed: {e}. The database offers no TLS version \
             the proxy accepts: it needs TLS 1.2 or 1.3 (RDS and Aurora MySQL support both; \
             older MySQL builds stop at TLS 1.1)."
        )
    } else {
        format!("the TLS handshake with {endpoint} failed: {e}")
    };
    Failure::new(Side::Upstream, "tls", codes::UPSTREAM_ERROR, b"HY000", msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server offering every standard flag but query attributes (a MariaDB-like greeting).
    fn server() -> Capabilities {
        Capabilities(0xffff_ffff) - Capabilities::QUERY_ATTRIBUTES
    }

    /// What a typical client sends: 4.1 auth, pluggable auth, framing flags, no TLS.
    fn client() -> Capabilities {
        Capabilities::LONG_PASSWORD
            | Capabilities::FOUND_ROWS
            | Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::TRANSACTIONS
            | Capabilities::MULTI_RESULTS
            | Capabilities::PS_MULTI_RESULTS
            | Capabilities::PLUGIN_AUTH
            | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capabilities::DEPRECATE_EOF
    }

    fn response(caps: Capabilities) -> HandshakeResponse41 {
        HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: 16 * 1024 * 1024,
            character_set: 45,
            username: Bytes::from_static(b"app"),
            auth_response: Bytes::new(),
            database: None,
            auth_plugin_name: Some(Bytes::from_static(b"caching_sha2_password")),
            connect_attrs: None,
            zstd_level: None,
        }
    }

    fn negotiated(upstream: Capabilities, caps: Capabilities) -> Capabilities {
        negotiate_caps(upstream, false, &response(caps), Compression::OFF).expect("negotiates")
    }

    fn compressed(upstream: Capabilities, compression: Compression) -> Option<Algorithm> {
        let asked = client() | Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION_ALGORITHM;
        let caps = negotiate_caps(upstream, false, &response(asked), compression)
            .expect("negotiates: the client's own compression flags are not a mismatch");
        assert!(
            !(caps.contains(Capabilities::COMPRESS)
                && caps.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM)),
            "one algorithm at most: {caps:?}"
        );
        compression_of(caps)
    }

    #[test]
    fn the_database_leg_prefers_zstd_then_zlib_within_what_is_allowed_and_offered() {
        let zstd_only = Compression {
            zstd: true,
            zlib: false,
        };
        let zlib_only = Compression {
            zstd: false,
            zlib: true,
        };
        let mysql8 = server();
        let mariadb = server() - Capabilities::ZSTD_COMPRESSION_ALGORITHM;
        let none = mariadb - Capabilities::COMPRESS;
        assert_eq!(compressed(mysql8, Compression::ANY), Some(Algorithm::Zstd));
        assert_eq!(compressed(mariadb, Compression::ANY), Some(Algorithm::Zlib));
        assert_eq!(compressed(none, Compression::ANY), None);
        assert_eq!(compressed(mysql8, zlib_only), Some(Algorithm::Zlib));
        assert_eq!(compressed(mysql8, zstd_only), Some(Algorithm::Zstd));
        assert_eq!(compressed(mariadb, zstd_only), None, "not offered: off");
        assert_eq!(compressed(mysql8, Compression::OFF), None);
    }

    #[test]
    fn the_client_is_never_offered_compression_even_when_the_database_leg_uses_it() {
        assert!(
            !local_caps(server(), false)
                .intersects(Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION_ALGORITHM)
        );
        // A client that did not ask for compression gets the database leg compressed anyway.
        let caps = negotiate_caps(server(), false, &response(client()), Compression::ANY).unwrap();
        assert_eq!(compression_of(caps), Some(Algorithm::Zstd));
    }

    #[test]
    fn local_greeting_strips_what_the_proxy_owns() {
        let offered = local_caps(server(), false);
        assert!(!offered.intersects(Capabilities::NEVER), "{offered:?}");
        assert!(!offered.contains(Capabilities::SSL));
        assert_eq!(offered, server() - Capabilities::NEVER - Capabilities::SSL);
    }

    #[test]
    fn local_greeting_offers_tls_only_with_local_tls() {
        assert!(local_caps(server(), true).contains(Capabilities::SSL));
        assert!(!local_caps(server(), false).contains(Capabilities::SSL));
    }

    #[test]
    fn upstream_gets_the_clients_flags_within_the_offer() {
        let caps = negotiated(server(), client() | Capabilities::INTERACTIVE);
        assert!(
            caps.contains(client() | Capabilities::INTERACTIVE),
            "{caps:?}"
        );
        assert!(!caps.contains(Capabilities::LOCAL_FILES), "not asked for");
    }

    #[test]
    fn upstream_always_gets_tls() {
        assert!(negotiated(server(), client()).contains(Capabilities::SSL));
        let with_local_tls = negotiate_caps(
            server(),
            true,
            &response(client() | Capabilities::SSL),
            Compression::OFF,
        )
        .expect("negotiates");
        assert!(with_local_tls.contains(Capabilities::SSL));
    }

    #[test]
    fn upstream_gets_pluggable_auth_even_when_the_client_lacks_it() {
        let caps = negotiated(
            server(),
            client() - Capabilities::PLUGIN_AUTH - Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA,
        );
        assert!(caps.contains(Capabilities::PLUGIN_AUTH | Capabilities::SECURE_CONNECTION));
        assert!(caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA));
    }

    #[test]
    fn lenenc_auth_data_only_when_the_server_has_it() {
        let old_server = server() - Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let caps = negotiated(old_server, client());
        assert!(!caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA));
    }

    #[test]
    fn compression_and_mfa_never_go_upstream() {
        let asked = client()
            | Capabilities::COMPRESS
            | Capabilities::ZSTD_COMPRESSION_ALGORITHM
            | Capabilities::MULTI_FACTOR_AUTHENTICATION
            | Capabilities::SSL_VERIFY_SERVER_CERT;
        let caps = negotiated(server(), asked);
        assert!(!caps.intersects(Capabilities::NEVER), "{caps:?}");
    }

    #[test]
    fn connect_with_db_only_with_a_database() {
        let asked = client() | Capabilities::CONNECT_WITH_DB;
        assert!(!negotiated(server(), asked).contains(Capabilities::CONNECT_WITH_DB));
        let mut with_db = response(asked);
        with_db.database = Some(Bytes::from_static(b"shop"));
        let caps = negotiate_caps(server(), false, &with_db, Compression::OFF).expect("negotiates");
        assert!(caps.contains(Capabilities::CONNECT_WITH_DB));
    }

    #[test]
    fn connect_attrs_only_with_attributes() {
        let asked = client() | Capabilities::CONNECT_ATTRS;
        assert!(!negotiated(server(), asked).contains(Capabilities::CONNECT_ATTRS));
        let mut with_attrs = response(asked);
        with_attrs.connect_attrs = Some(vec![(
            Bytes::from_static(b"_client_name"),
            Bytes::from_static(b"test"),
        )]);
        let caps =
            negotiate_caps(server(), false, &with_attrs, Compression::OFF).expect("negotiates");
        assert!(caps.contains(Capabilities::CONNECT_ATTRS));
    }

    #[test]
    fn framing_flags_not_offered_are_ignored_on_both_legs() {
        // mysql2 always sets QUERY_ATTRIBUTES; the server() greeting did not offer it.
        let caps = negotiated(server(), client() | Capabilities::QUERY_ATTRIBUTES);
        assert!(!caps.contains(Capabilities::QUERY_ATTRIBUTES));
    }

    #[test]
    fn framing_flags_that_would_differ_are_refused() {
        // Without PROTOCOL_41 the client would frame differently from the forced upstream leg.
        let f = negotiate_caps(
            server(),
            false,
            &response(client() - Capabilities::PROTOCOL_41),
            Compression::ANY,
        )
        .expect_err("refused");
        assert_eq!(f.reason, "capability_mismatch");
        assert_eq!(f.side, Side::Client);
        let reply = f.reply.expect("an ERR for the client");
        assert_eq!(reply.code, codes::HANDSHAKE_ERROR);
        assert!(f.detail.contains("PROTOCOL_41"), "{}", f.detail);
    }

    #[test]
    fn an_upstream_without_tls_is_refused() {
        let f =
            require_upstream_caps(server() - Capabilities::SSL, "db:3306").expect_err("refused");
        assert_eq!(f.reason, "upstream_no_tls");
        assert!(f.detail.contains("does not offer TLS"), "{}", f.detail);
    }

    #[test]
    fn an_upstream_without_pluggable_auth_is_refused() {
        let f = require_upstream_caps(server() - Capabilities::PLUGIN_AUTH, "db:3306")
            .expect_err("refused");
        assert_eq!(f.reason, "upstream_no_tls");
        assert!(f.detail.contains("PLUGIN_AUTH"), "{}", f.detail);
        assert!(require_upstream_caps(server(), "db:3306").is_ok());
    }
}

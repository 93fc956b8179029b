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
use crate::mysql::proto::auth::{
    self, Credential, Exchange, IamLogin, Next, PasswordLogin, Phase, Refusal,
};
use crate::mysql::proto::handshake::plugin;
use crate::mysql::proto::{
    Capabilities, ErrPacket, HandshakeResponse41, HandshakeV10, SslRequest, codes,
};
use crate::proxy::password::DbCredentials;
use crate::proxy::throttle::PeerKey;
use crate::proxy::{Peer, Shared, Side};
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
    let cfg = &inner.config;
    let timeout = cfg.handshake_timeout;
    let endpoint = cfg.endpoint();

    // With a fixed --db-user the token can be minted before the database's handshake clock
    // starts; a failure here shows up again (and is reported) at the real use below.
    if let Some(user) = cfg
        .db_user
        .as_ref()
        .filter(|_| cfg.upstream_password.is_none())
    {
        let _ = inner.tokens.token(&cfg.token_request(user)).await;
    }

    // 1. Upstream first.
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
    let mut upstream = PacketStream::new(stream, BytesMut::new());
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
    let upstream_caps = greeting.capabilities;
    if !upstream_caps.contains(Capabilities::UPSTREAM_REQUIRED) {
        let missing = Capabilities::UPSTREAM_REQUIRED - upstream_caps;
        let msg = if missing.contains(Capabilities::SSL) {
            format!(
                "the database {endpoint} does not offer TLS, and an IAM token is never sent in \
                 cleartext. Enable TLS on the server (RDS and Aurora always offer it)."
            )
        } else {
            format!("the database {endpoint} lacks required protocol features {missing:?}")
        };
        return Err(Failure {
            side: Side::Upstream,
            reason: "upstream_no_tls",
            detail: msg.clone(),
            reply: Some(ErrPacket::before_greeting(
                codes::HANDSHAKE_ERROR,
                format!("rds-iam-proxy: {msg}"),
            )),
        });
    }

    // Steps 2 and 3 end with the client authenticated locally. If they fail, the greeted
    // upstream connection is not just dropped (the server would count an aborted handshake
    // toward max_connect_errors): it is completed in the background (`complete_unused`).
    let client_phase = async {
        // 2. Greet the client with the upstream's identity.
        let mut local_caps = upstream_caps - Capabilities::NEVER - Capabilities::SSL;
        if inner.local_tls.is_some() {
            local_caps = local_caps | Capabilities::SSL;
        }
        let local_greeting = HandshakeV10 {
            server_version: greeting.server_version.clone(),
            connection_id: greeting.connection_id,
            auth_plugin_data: fresh_scramble(),
            capabilities: local_caps,
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

        // 3. The client's response, after local TLS if asked for, within the pre-auth window.
        let window = timeout.min(PRE_AUTH_WINDOW);
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
        if let Some(verifier) = &cfg.local_password {
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
            if !verifier.verify(
                plugin_name,
                &local_greeting.auth_plugin_data,
                &response.auth_response,
            ) {
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
        }
        // Authenticated locally: this login no longer counts against --max-pending-logins.
        drop(pending.take());
        let client_caps = response.capabilities;
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

        // Capabilities for the upstream leg: the client's choice within what was offered, with TLS
        // and pluggable auth forced on; framing flags must come out identical.
        let forced = Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | (Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA & upstream_caps);
        let mut r_caps = ((client_caps & local_caps) - Capabilities::NEVER - Capabilities::SSL)
            | forced
            | Capabilities::SSL;
        if response.database.is_none() {
            r_caps = r_caps - Capabilities::CONNECT_WITH_DB;
        }
        if response.connect_attrs.is_none() {
            r_caps = r_caps - Capabilities::CONNECT_ATTRS;
        }
        // Clients may set flags that were not offered (mysql2 always sets QUERY_ATTRIBUTES) and then
        // use only the intersection, as servers do: compare what each leg will actually use.
        let mismatch =
            Capabilities((r_caps.0 ^ (client_caps & local_caps).0) & Capabilities::FRAMING.0);
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

        Ok::<_, Failure>((response, client_caps, db_user, r_caps))
    }
    .await;
    let (response, client_caps, db_user, r_caps) = match client_phase {
        Ok(x) => x,
        Err(f) => {
            let from = Unused::Greeted {
                upstream,
                caps: upstream_caps,
                character_set: greeting.character_set,
                plugin: greeting.auth_plugin_name.clone(),
            };
            retire(inner, from, pending.take());
            return Err(f);
        }
    };

    // 4. Upstream: TLS, then the login. The token or password is fetched while TLS is negotiated.
    let ssl_request = SslRequest {
        capabilities: r_caps,
        max_packet_size: response.max_packet_size,
        character_set: response.character_set,
    };
    let tls_connect = upstream.start_tls(
        &ssl_request,
        1,
        &inner.upstream_tls,
        inner.server_name.clone(),
        timeout,
    );
    let iam = IamLogin {
        endpoint: &endpoint,
        user: &db_user,
        region: &cfg.region,
        phase: Phase::Login,
    };
    let token_request = cfg.token_request(&db_user);
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
                .map_err(|e| Failure::from_refusal(Side::Proxy, iam.no_token(&e))),
        }
    };
    let (tls, credential) = tokio::join!(tls_connect, credential);
    let mut upstream = tls_outcome(inner, &endpoint, tls)?;
    let kept = match credential {
        Ok(kept) => kept,
        Err(f) => {
            let from = Unused::Tls {
                upstream,
                caps: r_caps,
                character_set: response.character_set,
                plugin: greeting.auth_plugin_name.clone(),
            };
            retire(inner, from, None::<()>);
            return Err(f);
        }
    };
    let (username, credential) = match &kept {
        Kept::Token(token) => (db_user.clone(), Credential::IamToken(token.expose())),
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
    let (mut exchange, first) = Exchange::start(
        credential,
        greeting.auth_plugin_name.as_deref(),
        &greeting.auth_plugin_data,
        cfg.direct_auth,
        r_caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA),
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
        zstd_level: None,
    };
    let mut payload = BytesMut::new();
    upstream_response.encode(&mut payload);
    upstream.queue(2, &payload);
    upstream
        .flush()
        .await
        .map_err(|e| upstream_io_failure(&endpoint, e))?;
    let ok_payload = match drive(&mut upstream, &mut exchange, timeout, &endpoint).await? {
        Ok(ok) => ok,
        Err(e) => {
            if e.rejects_credential() {
                match &cfg.upstream_password {
                    // Perhaps rotated: read the secret again before the next login.
                    Some(source) => source.rejected(),
                    // A cached token may be the problem (clock skew, rotated credentials): the
                    // next login mints.
                    None => inner.tokens.invalidate(&token_request),
                }
            }
            return Err(refusal(e));
        }
    };
    let db_user = username;

    // 5. Finish the local login with the upstream's OK.
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
        .map_err(|e| Failure::client_gone(ReadError::Io(e)))?;

    let (client, client_read_ahead) = take(&mut leg.io).into_parts();
    let (upstream, upstream_read_ahead) = upstream.into_parts();
    Ok(Established {
        client,
        client_read_ahead,
        upstream,
        upstream_read_ahead,
        session: Session {
            client_caps,
            upstream_caps: r_caps,
            upstream_plugin: greeting
                .auth_plugin_name
                .clone()
                .unwrap_or_else(|| Bytes::from_static(plugin::MYSQL_NATIVE_PASSWORD.as_bytes())),
            character_set: response.character_set,
            connection_id: greeting.connection_id,
            db_user,
        },
    })
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
        capabilities: caps - Capabilities::CONNECT_WITH_DB - Capabilities::CONNECT_ATTRS,
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

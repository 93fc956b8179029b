//! `COM_CHANGE_USER` after login: the client's packet, taken out of the stream by the splice, is
//! replayed upstream as an IAM login of the new user through the same exchange as the first login
//! ([`crate::mysql::proto::auth`]), and the outcome is relayed. A failed change ends the connection,
//! as MySQL does: the session never goes on as the previous user.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::compressed::UpstreamWriter;
use super::framed::{ReadError, read_packet_from};
use super::login::Session;
use super::write_client;
use crate::mysql::proto::auth::{self, Credential, Exchange, IamLogin, Next, Phase};
use crate::mysql::proto::packet::{self, MAX_LOGIN_PAYLOAD};
use crate::mysql::proto::{Capabilities, ComChangeUser, ErrPacket, codes};
use crate::proxy::relay::DirError;
use crate::proxy::shared::{Shared, Side};

/// Replays a client's COM_CHANGE_USER upstream as an IAM login for the new user and relays the
/// outcome. `Ok` means the change succeeded and the session goes on as the new user. Any failure
/// (a malformed packet, no token, the server's refusal, a reply out of turn) sends the client an
/// ERR and returns `Err`, which ends the connection: like MySQL, which disconnects after a failed
/// change, the proxy never lets a session go on as the previous user after a change was asked for.
pub(super) async fn change_user<R, W, U>(
    inner: &Shared,
    session: &Session,
    upstream_r: &mut R,
    client_w: &mut W,
    upstream_w: &Mutex<UpstreamWriter<U>>,
    payload: Bytes,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    U: AsyncWrite + Unpin,
{
    let cfg = &inner.config;
    let endpoint = cfg.endpoint();
    // Tells the client why (its COM_CHANGE_USER was seq 0, so the answer is seq 1), then ends.
    async fn fail<W: AsyncWrite + Unpin>(
        client_w: &mut W,
        side: Side,
        err: ErrPacket,
        rest: &[u8],
    ) -> Result<(), DirError> {
        let detail = err.message_str();
        let mut out = err.to_packet(1);
        out.extend_from_slice(rest);
        let _ = write_client(client_w, &out).await;
        let _ = client_w.shutdown().await;
        Err(DirError::new(
            side,
            format!("change user failed, connection closed: {detail}"),
        ))
    }
    let request = match ComChangeUser::decode(&payload, session.client_caps) {
        Ok(r) => r,
        Err(e) => {
            let err = ErrPacket::new(
                codes::HANDSHAKE_ERROR,
                b"08S01",
                format!(
                    "rds-iam-proxy: malformed COM_CHANGE_USER ({e}); the connection is closed \
                     (a failed change user always ends the session, as in MySQL)"
                ),
            );
            return fail(client_w, Side::Client, err, &[]).await;
        }
    };
    if let Some(passwords) = &cfg.upstream_password {
        let err = ErrPacket::new(
            codes::NOT_SUPPORTED_AUTH_MODE,
            b"08004",
            format!(
                "rds-iam-proxy: COM_CHANGE_USER is not available when the proxy logs in with a \
                 password from {} (--secret): it logs in as that secret's user only. The \
                 connection is closed; open a new one instead.",
                passwords.describe()
            ),
        );
        return fail(client_w, Side::Client, err, &[]).await;
    }
    let db_user = cfg
        .db_user
        .clone()
        .unwrap_or_else(|| String::from_utf8_lossy(&request.username).into_owned());
    let iam = IamLogin {
        endpoint: &endpoint,
        user: &db_user,
        region: &cfg.region,
        phase: Phase::ChangeUser,
    };
    let token_request = cfg.token_request(&db_user);
    let token = match inner.tokens.token(&token_request).await {
        Ok(t) => t,
        Err(e) => return fail(client_w, Side::Proxy, iam.no_token(&e).reply, &[]).await,
    };
    tracing::info!(user = %crate::text::printable(&db_user), "change user");
    let upstream_caps = session.upstream_caps;
    let (mut exchange, first) = match Exchange::start(
        Credential::IamToken(token.expose()),
        Some(&session.upstream_plugin),
        &[],
        false,
        true,
    ) {
        Ok(x) => x,
        Err(e) => return fail(client_w, Side::Upstream, iam.refusal(e).reply, &[]).await,
    };
    let replay = ComChangeUser {
        username: Bytes::from(db_user.clone()),
        auth_response: Bytes::copy_from_slice(first.auth_response.bytes()),
        database: request.database.clone(),
        character_set: Some(
            request
                .character_set
                .unwrap_or(u16::from(session.character_set)),
        ),
        auth_plugin_name: Some(first.plugin),
        connect_attrs: request
            .connect_attrs
            .clone()
            .filter(|_| upstream_caps.contains(Capabilities::CONNECT_ATTRS)),
    };
    let mut up = upstream_w.lock().await;
    let mut p = BytesMut::new();
    replay.encode(&mut p, upstream_caps);
    let mut out = BytesMut::new();
    packet::encode(0, &p, &mut out);
    // A new command (a compressed leg restarts its frame ids), answered from id 1.
    up.note(true, 0);
    let up_err =
        |e: std::io::Error| DirError::new(Side::Upstream, format!("writing to the database: {e}"));
    up.write_all(&out).await.map_err(up_err)?;
    up.flush().await.map_err(up_err)?;

    let mut rbuf = BytesMut::with_capacity(1024);
    let mut expected_seq = 1u8;
    loop {
        let p = read_packet_from(
            upstream_r,
            &mut rbuf,
            cfg.handshake_timeout,
            MAX_LOGIN_PAYLOAD,
        )
        .await
        .map_err(|e| {
            DirError::new(
                Side::Upstream,
                match e {
                    ReadError::Timeout(_) => {
                        "the database did not answer COM_CHANGE_USER".to_owned()
                    }
                    ReadError::Eof => "the database closed the connection".to_owned(),
                    ReadError::Io(e) => format!("reading from the database: {e}"),
                    ReadError::Protocol(e) => format!("bad packet from the database: {e}"),
                },
            )
        })?;
        if p.seq != expected_seq {
            // Not the reply to this COM_CHANGE_USER: the tail of an earlier answer (a client that
            // sent the change while a result was still arriving). Nothing can be relayed safely.
            let msg = format!(
                "the database's reply to COM_CHANGE_USER came with sequence id {} instead of \
                 {expected_seq}: the client changed user before reading the whole answer to its \
                 previous command",
                p.seq
            );
            let _ = client_w.shutdown().await;
            return Err(DirError::new(Side::Client, msg));
        }
        expected_seq = p.seq.wrapping_add(2);
        match exchange.next(p.payload) {
            Next::Send(answer) => {
                let mut out = BytesMut::new();
                packet::encode(p.seq.wrapping_add(1), answer.bytes(), &mut out);
                up.note(false, p.seq.wrapping_add(1));
                up.write_all(&out).await.map_err(up_err)?;
                up.flush().await.map_err(up_err)?;
            }
            Next::Wait => expected_seq = p.seq.wrapping_add(1),
            Next::Done(ok) => {
                let mut out = BytesMut::new();
                let mut seq = 1u8;
                for payload in auth::local_success(
                    request.auth_plugin_name.as_deref(),
                    &request.auth_response,
                    ok,
                ) {
                    seq = packet::encode(seq, &payload, &mut out);
                }
                out.extend_from_slice(&rbuf);
                return write_client(client_w, &out).await;
            }
            Next::Failed(auth::Error::Malformed(e)) => {
                return Err(DirError::new(
                    Side::Upstream,
                    format!("malformed reply to COM_CHANGE_USER: {e}"),
                ));
            }
            Next::Failed(e) => {
                if e.rejects_credential() {
                    // A cached token may be the problem: the next login mints.
                    inner.tokens.invalidate(&token_request);
                }
                // The server's own words, or the proxy's: what it said after is passed on too.
                let rest = if matches!(e, auth::Error::Refused(_)) {
                    &rbuf[..]
                } else {
                    &[]
                };
                let reply = iam.refusal(e).reply;
                return fail(client_w, Side::Upstream, reply, rest).await;
            }
        }
    }
}

//! The message gateway (MGS) side of one client WebSocket: checks the upgrade signature and the
//! OpenDataChannel frame, attaches the connection to the session's agent, and relays AgentMessages
//! both ways through the fault lines. Resets the socket on the configured schedule.
//!
//! Client frames cross the optional rate-limited link ([`super::link::Uplink`]) before the fault
//! line; while its backlog is full the WebSocket is not read. Toward the client, the gateway stops
//! taking frames from the agent while [`WRITER_HIGH_WATER`] bytes wait for the socket, so a client
//! that does not read its WebSocket pushes back on the agent's pump as TCP would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, info};

use super::agent::AgentEvent;
use super::faults::FaultLine;
use super::link::Uplink;
use crate::aws::sigv4::parse_amz_date;
use crate::{SimSession, SimState, lock};
use rds_iam_proxy::ssm::outbox::{Outgoing, outbox};
use rds_iam_proxy::ssm::proto::payload::{MESSAGE_SCHEMA_VERSION, OpenDataChannel};

/// Bytes handed to the socket writer and not yet written above which the gateway stops taking
/// frames from the agent.
pub const WRITER_HIGH_WATER: usize = 1 << 20;

/// Time allowed for the OpenDataChannel frame after the upgrade.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

type ServerWs = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Checks a SigV4 upgrade signature when present (and when a secret is configured).
/// `Ok(true)`: signed and verified; `Ok(false)`: unsigned, or signed without a secret to check.
pub fn check_signature(state: &SimState, req: &Request<Incoming>) -> Result<bool, String> {
    let headers = req.headers();
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        if state.config.require_signature {
            return Err("the upgrade request is not signed".to_owned());
        }
        return Ok(false);
    };
    let Some(secret) = &state.config.verify_secret else {
        return Ok(true);
    };
    let field = |name: &str| -> Option<String> {
        auth.split([' ', ','])
            .find_map(|p| p.trim().strip_prefix(name).map(str::to_owned))
    };
    let credential = field("Credential=").ok_or("Authorization has no Credential")?;
    let mut scope = credential.split('/');
    let access_key = scope.next().unwrap_or_default().to_owned();
    let _date = scope.next();
    let region = scope.next().unwrap_or_default().to_owned();
    let service = scope.next().unwrap_or_default();
    if service != rds_iam_proxy::ssm::websocket::SIGNING_NAME {
        return Err(format!(
            "signed for service {service:?}, expected ssmmessages"
        ));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("signed request has no X-Amz-Date")?;
    let time = parse_amz_date(amz_date).ok_or("bad X-Amz-Date")?;
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Host header")?;
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let url = format!("ws://{host}{}", req.uri());
    let creds =
        aws_credential_types::Credentials::new(access_key, secret.clone(), token, None, "sim");
    let expected =
        rds_iam_proxy::ssm::websocket::sign_with(&url, host, &region, creds.into(), time)
            .map_err(|e| e.to_string())?;
    let expected_auth = expected
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if expected_auth != auth {
        return Err("the upgrade signature does not match".to_owned());
    }
    Ok(true)
}

/// Serves one client WebSocket of `session` until it closes, is reset or the session ends.
pub async fn serve(state: Arc<SimState>, session: Arc<SimSession>, ws: ServerWs) {
    let (mut sink, mut stream) = ws.split();
    // 1. OpenDataChannel, as text, with the current token.
    // The plugin pings ("keepalive") as soon as the socket is open, so control frames may come
    // before the OpenDataChannel text frame: skip them (tungstenite answers pings itself).
    let first = tokio::time::timeout(OPEN_TIMEOUT, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    let open = match first {
        Ok(Some(Ok(Message::Text(t)))) => OpenDataChannel::decode(t.as_str()).ok(),
        _ => None,
    };
    let uuid = |s: &str| {
        s.parse::<rds_iam_proxy::ssm::proto::message::MessageId>()
            .is_ok()
    };
    let refusal = match &open {
        None => Some("expected an OpenDataChannel text frame"),
        Some(o)
            if lock(&session.state).token != o.token_value || session.terminated.is_cancelled() =>
        {
            Some("invalid or expired token")
        }
        Some(o)
            if o.message_schema_version != MESSAGE_SCHEMA_VERSION
                || !uuid(&o.request_id)
                || !uuid(&o.client_id) =>
        {
            Some("malformed OpenDataChannel")
        }
        Some(_) => None,
    };
    let Some(open) = open.filter(|_| refusal.is_none()) else {
        let why = refusal.unwrap_or_default();
        debug!(reason = why, "refusing data channel");
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: why.into(),
            })))
            .await;
        return;
    };
    state.stats.ws_connections.fetch_add(1, Ordering::Relaxed);
    let conn_id = state.stats.ws_connections.load(Ordering::Relaxed);
    debug!(session_id = %session.id, conn_id, "data channel open");

    // 2. Attach to the agent: it sends toward the client through `to_client`.
    for f in &state.config.inject_frames {
        if sink.send(Message::Binary(f.clone())).await.is_err() {
            return;
        }
    }
    let (to_client, mut from_agent) = outbox(4 << 20, session.agent_wake.clone());
    let _ = session.agent_tx.send(AgentEvent::Attach {
        conn_id,
        outbox: to_client,
        client_version: open.client_version.clone().unwrap_or_default(),
    });

    // 3. The socket writer; `unwritten` counts frame bytes handed to it and not yet flushed.
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Outgoing>();
    let unwritten = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(tokio::sync::Notify::new());
    let (w_unwritten, w_written) = (unwritten.clone(), written.clone());
    let writer = tokio::spawn(async move {
        let flushed = |n: usize| {
            w_unwritten.fetch_sub(n, Ordering::AcqRel);
            w_written.notify_one();
        };
        while let Some(item) = wrx.recv().await {
            match item {
                Outgoing::Frame(f) => {
                    let mut batch = f.len();
                    if sink.feed(Message::Binary(f)).await.is_err() {
                        return;
                    }
                    // Batch what is already queued under one flush.
                    let mut n = 0;
                    while n < 256 {
                        match wrx.try_recv() {
                            Ok(Outgoing::Frame(f)) => {
                                batch += f.len();
                                if sink.feed(Message::Binary(f)).await.is_err() {
                                    return;
                                }
                                n += 1;
                            }
                            Ok(Outgoing::Close(code, reason)) => {
                                let _ = sink.flush().await;
                                let _ = sink
                                    .send(Message::Close(Some(CloseFrame {
                                        code: code.into(),
                                        reason: reason.into(),
                                    })))
                                    .await;
                                return;
                            }
                            Err(_) => break,
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                    flushed(batch);
                }
                Outgoing::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: code.into(),
                            reason: reason.into(),
                        })))
                        .await;
                    return;
                }
            }
        }
    });

    // 4. Relay through the fault lines.
    let cfg = &state.config;
    let half_rtt = cfg.rtt / 2;
    let mut to_agent = FaultLine::new(cfg.faults.clone(), half_rtt, false);
    let mut toward_client = FaultLine::new(cfg.faults.clone(), half_rtt, true);
    let mut uplink = cfg.uplink_rate.map(Uplink::new);
    let to_writer = |f: Bytes| {
        unwritten.fetch_add(f.len(), Ordering::AcqRel);
        let _ = wtx.send(Outgoing::Frame(f));
    };
    let reset_at = cfg.ws_reset_every.map(|d| Instant::now() + d);
    let mut epoch = state.reset_epoch.subscribe();
    epoch.borrow_and_update();
    let close_with = loop {
        let next = [
            to_agent.next_release(),
            toward_client.next_release(),
            uplink.as_ref().and_then(Uplink::next_release),
        ]
        .into_iter()
        .flatten()
        .min();
        let read_ws = uplink.as_ref().is_none_or(Uplink::has_room);
        let take_from_agent = unwritten.load(Ordering::Acquire) < WRITER_HIGH_WATER;
        tokio::select! {
            _ = session.terminated.cancelled() => {
                // Let the agent's channel_closed (already queued) go out first.
                while let Some(Outgoing::Frame(f)) = from_agent.try_recv() {
                    to_writer(f);
                }
                break Some((1000, String::new()));
            }
            _ = epoch.changed() => break Some((1000, "Bye".to_owned())),
            _ = async { tokio::time::sleep_until(reset_at.unwrap_or_else(Instant::now)).await }, if reset_at.is_some() => {
                info!(session_id = %session.id, "sim resetting websocket");
                break Some((1000, "Bye".to_owned()));
            }
            _ = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {}
            _ = written.notified(), if !take_from_agent => {}
            msg = stream.next(), if read_ws => match msg {
                Some(Ok(Message::Binary(b))) => match uplink.as_mut() {
                    Some(link) => link.push(b, Instant::now()),
                    None => {
                        let v = to_agent.push(b, Instant::now());
                        count(&state, v);
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
            item = from_agent.recv(), if take_from_agent => match item {
                Some(Outgoing::Frame(f)) => {
                    from_agent.written(f.len());
                    let v = toward_client.push(f, Instant::now());
                    count(&state, v);
                }
                Some(Outgoing::Close(code, reason)) => {
                    // channel_closed and whatever precedes it go out before the close.
                    for f in toward_client.pop_due(Instant::now() + Duration::from_secs(3600)) {
                        to_writer(f);
                    }
                    break Some((code, reason));
                }
                None => break Some((1000, String::new())),
            },
        }
        let now = Instant::now();
        if let Some(link) = uplink.as_mut() {
            for f in link.pop_due(now) {
                let v = to_agent.push(f, now);
                count(&state, v);
            }
        }
        for f in to_agent.pop_due(now) {
            let _ = session.agent_tx.send(AgentEvent::Frame(conn_id, f));
        }
        for f in toward_client.pop_due(now) {
            to_writer(f);
        }
    };
    let _ = session.agent_tx.send(AgentEvent::Detach(conn_id));
    if let Some((code, reason)) = close_with {
        let _ = wtx.send(Outgoing::Close(code, reason));
    }
    drop(wtx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    debug!(session_id = %session.id, conn_id, "data channel closed");
}

fn count(state: &SimState, v: super::faults::Verdict) {
    if v.dropped {
        state.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
    if v.duplicated {
        state.stats.duplicated.fetch_add(1, Ordering::Relaxed);
    }
}

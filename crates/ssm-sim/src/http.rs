//! The simulator's HTTP/1.1 listener: the SSM awsJson1_1 API and the data-channel WebSocket
//! upgrade on one port (spec §1.1, §2.1, §12.1–12.2), and the AWS API mock
//! ([`crate::aws`]) beside them. API requests are routed by the service in their SigV4
//! credential scope: `ssm` is answered here, every other service by the mock.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rds_iam_proxy::ssm::api::{DOCUMENT_LOCAL, DOCUMENT_REMOTE_HOST};
use rds_iam_proxy::ssm::websocket::ws_config;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info, warn};

use crate::aws::{self, ApiRequest, ApiResponse, AwsWorld, Routed, TargetState};
use crate::ssm::{agent, gateway};
use crate::{BASE64, SessionState, SimSession, SimState, lock, random_text};

/// Largest API request body accepted.
const MAX_BODY: usize = 1 << 20;

/// JSON content type of awsJson1_1.
const JSON_1_1: &str = "application/x-amz-json-1.1";

/// Accepts connections until the simulator stops.
pub async fn serve(state: Arc<SimState>, listener: TcpListener) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = state.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "sim accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let st = state.clone();
        let cancel = state.cancel.clone();
        state.tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, Infallible>(handle(st, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = conn => if let Err(e) = r {
                    debug!(%peer, error = %e, "sim http connection ended");
                }
            }
        });
    }
}

async fn handle(state: Arc<SimState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && req.uri().path().starts_with("/v1/data-channel/") {
        return upgrade(state, req);
    }
    if req.method() != Method::POST {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "not an AWS API request (those are POSTs)",
        );
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &format!("body: {e}"),
            );
        }
    };
    let routed = {
        let world = lock(&state.aws_world);
        let empty;
        let world = match world.as_ref() {
            Some(w) => w,
            None => {
                empty = AwsWorld::default();
                &empty
            }
        };
        let request = ApiRequest {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body: &body,
        };
        aws::route(world, &request)
    };
    let (region, operation) = match routed {
        Routed::Answer(answer) => {
            if let Some(call) = &answer.call {
                state.record_aws_call(call.clone());
            }
            return api_response(answer);
        }
        Routed::Ssm { region, operation } => (region, operation),
    };
    state.record_aws_call(format!("ssm:{operation}"));
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &format!("invalid JSON: {e}"),
            );
        }
    };
    match operation.as_str() {
        "StartSession" => start_session(&state, &input, &region),
        "ResumeSession" => resume_session(&state, &input),
        "TerminateSession" => terminate_session(&state, &input),
        other => error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("unknown operation {other:?}"),
        ),
    }
}

fn api_response(answer: ApiResponse) -> Response<Full<Bytes>> {
    Response::builder()
        .status(answer.status)
        .header(CONTENT_TYPE, answer.content_type)
        .header("x-amzn-RequestId", answer.request_id)
        .body(Full::new(Bytes::from(answer.body)))
        .expect("static response parts are valid")
}

/// What the AWS world says about a session to `target` (nothing without a world): the caller
/// may be denied `ssm:StartSession`, and the target may be down.
fn world_gate(state: &SimState, target: &str, region: &str) -> Option<Response<Full<Bytes>>> {
    let world = lock(&state.aws_world);
    let world = world.as_ref()?.seen_from(region);
    if world.is_denied("ssm:StartSession") {
        let message =
            world.access_denied_message("ssm:StartSession", Some(&world.session_resource(target)));
        return Some(error(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            &message,
        ));
    }
    (world.target_state(target) == TargetState::NotConnected).then(|| target_not_connected(target))
}

fn target_not_connected(target: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::BAD_REQUEST,
        "TargetNotConnected",
        &format!("{target} is not connected."),
    )
}

fn ok(body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, JSON_1_1)
        .header(
            "x-amzn-RequestId",
            rds_iam_proxy::ssm::proto::message::MessageId::random().to_string(),
        )
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, JSON_1_1)
        .body(Full::new(Bytes::from(
            json!({"__type": code, "message": message}).to_string(),
        )))
        .expect("static response parts are valid")
}

fn validation(message: &str) -> Response<Full<Bytes>> {
    error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// The first value of document parameter `name`.
fn param<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input
        .get("Parameters")?
        .get(name)?
        .as_array()?
        .first()?
        .as_str()
}

fn start_session(state: &Arc<SimState>, input: &Value, region: &str) -> Response<Full<Bytes>> {
    let cfg = &state.config;
    if let Some((code, message)) = &cfg.start_session_error {
        return error(StatusCode::BAD_REQUEST, code, message);
    }
    let Some(target) = input
        .get("Target")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 400)
    else {
        return validation("Target is required (1 to 400 characters)");
    };
    if let Some(refused) = world_gate(state, target, region) {
        return refused;
    }
    if cfg.disconnected_targets.iter().any(|t| t == target) {
        return target_not_connected(target);
    }
    let document = input
        .get("DocumentName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if document != DOCUMENT_REMOTE_HOST && document != DOCUMENT_LOCAL {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidDocument",
            &format!("the simulator knows only the port-forwarding documents, not {document:?}"),
        );
    }
    let Some(port) = param(input, "portNumber").and_then(|p| p.parse::<u16>().ok()) else {
        return validation("portNumber is required and must be a port number");
    };
    let host = match (document, param(input, "host")) {
        (DOCUMENT_REMOTE_HOST, Some(h)) if !h.is_empty() => h.to_owned(),
        (DOCUMENT_REMOTE_HOST, _) => {
            return validation("host is required by AWS-StartPortForwardingSessionToRemoteHost");
        }
        _ => "localhost".to_owned(),
    };
    let local_port = param(input, "localPortNumber").unwrap_or("").to_owned();
    let n = state.next_session.fetch_add(1, Ordering::Relaxed);
    let id = format!("sim-{n}-{}", random_text(17, b"0123456789abcdef"));
    let token = new_token();
    let cell = new_cell();
    let (agent_tx, agent_rx) = tokio::sync::mpsc::unbounded_channel();
    let session = Arc::new(SimSession {
        id: id.clone(),
        target: target.to_owned(),
        state: std::sync::Mutex::new(SessionState {
            token: token.clone(),
            cell: cell.clone(),
        }),
        agent_tx,
        agent_wake: Arc::new(tokio::sync::Notify::new()),
        terminated: state.cancel.child_token(),
        acks: std::sync::atomic::AtomicBool::new(true),
    });
    lock(&state.sessions).insert(id.clone(), session.clone());
    state.stats.start_session.fetch_add(1, Ordering::Relaxed);
    let dial = resolve_route(state, &host, port);
    info!(session_id = %id, %target, %host, port, dial = ?dial, "sim StartSession");
    let props = agent::Destination {
        document: document.to_owned(),
        host,
        port,
        local_port,
        dial,
    };
    state
        .tracker
        .spawn(agent::run(state.clone(), session, props, agent_rx));
    ok(json!({"SessionId": id, "StreamUrl": stream_url(state, &id, &cell), "TokenValue": token}))
}

/// The dial address for a destination: a route, else the destination itself if it is loopback.
fn resolve_route(state: &SimState, host: &str, port: u16) -> Option<String> {
    if let Some(r) = state
        .config
        .routes
        .iter()
        .find(|r| r.host == host && r.port == port)
    {
        return Some(r.dial.clone());
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| format!("{host}:{port}"))
}

fn stream_url(state: &SimState, id: &str, cell: &str) -> String {
    let cell = url::form_urlencoded::byte_serialize(cell.as_bytes()).collect::<String>();
    format!(
        "ws://{}/v1/data-channel/{id}?role=publish_subscribe&cell-number={cell}",
        state.addr
    )
}

fn new_token() -> String {
    format!("AAEAA{}", random_text(120, BASE64))
}

fn new_cell() -> String {
    format!("{}=", random_text(43, BASE64))
}

fn session_id(input: &Value) -> Option<&str> {
    input
        .get("SessionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn resume_session(state: &Arc<SimState>, input: &Value) -> Response<Full<Bytes>> {
    let Some(id) = session_id(input) else {
        return validation("SessionId is required");
    };
    state.stats.resume_session.fetch_add(1, Ordering::Relaxed);
    let Some(session) = state.session(id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "DoesNotExistException",
            &format!("Session {id} does not exist."),
        );
    };
    if session.terminated.is_cancelled() || state.config.refuse_resume {
        return ok(json!({"SessionId": id}));
    }
    let (token, cell) = {
        let mut st = lock(&session.state);
        st.token = new_token();
        st.cell = new_cell();
        (st.token.clone(), st.cell.clone())
    };
    ok(json!({"SessionId": id, "StreamUrl": stream_url(state, id, &cell), "TokenValue": token}))
}

fn terminate_session(state: &Arc<SimState>, input: &Value) -> Response<Full<Bytes>> {
    let Some(id) = session_id(input) else {
        return validation("SessionId is required");
    };
    state
        .stats
        .terminate_session
        .fetch_add(1, Ordering::Relaxed);
    if let Some(session) = state.session(id)
        && !session.terminated.is_cancelled()
    {
        let _ = session
            .agent_tx
            .send(agent::AgentEvent::Terminate(String::new()));
    }
    ok(json!({"SessionId": id}))
}

/// Answers a WebSocket upgrade on `/v1/data-channel/<id>` and hands the socket to the gateway.
fn upgrade(state: Arc<SimState>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let id = req
        .uri()
        .path()
        .trim_start_matches("/v1/data-channel/")
        .to_owned();
    let Some(session) = state.session(&id) else {
        return plain(StatusCode::NOT_FOUND, "no such session");
    };
    let is_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if !is_upgrade {
        return plain(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    }
    match gateway::check_signature(&state, &req) {
        Ok(signed) => {
            if signed {
                state.stats.signed_upgrades.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(why) => return plain(StatusCode::FORBIDDEN, &why),
    }
    let accept = derive_accept_key(key.as_bytes());
    let st = state.clone();
    state.tracker.spawn(async move {
        match hyper::upgrade::on(&mut req).await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config()),
                )
                .await;
                gateway::serve(st, session, ws).await;
            }
            Err(e) => debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header("Sec-WebSocket-Accept", accept)
        .body(Full::new(Bytes::new()))
        .expect("static response parts are valid")
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(message.to_owned())))
        .expect("static response parts are valid")
}

//! The data-channel WebSocket: dial the StreamUrl, sign the upgrade, send OpenDataChannel
//! (spec §2).
//!
//! `wss://` URLs are dialled over rustls with the roots given by the caller (the embedded bundle
//! carries the Amazon Trust roots that sign `ssmmessages.<region>.amazonaws.com`); `ws://` URLs
//! (the simulator) are dialled in the clear. The upgrade GET is SigV4-signed for service
//! `ssmmessages` over `host` and `x-amz-date` (+ `x-amz-security-token`) with the empty-body hash,
//! as the plugin has done since 1.2.764.0, unless the URL is already presigned or signing is off.
//! Nothing here reads or writes AgentMessages; [`super::session`] owns the socket afterwards.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use futures_util::SinkExt;
use rustls::ClientConfig;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::Error;
use super::api::strip_query;
use super::proto::message::MAX_FRAME_LEN;
use super::proto::payload::{MESSAGE_SCHEMA_VERSION, OpenDataChannel};
use crate::io::BoxStream;

/// SigV4 signing name of the message gateway.
pub const SIGNING_NAME: &str = "ssmmessages";

/// Time allowed for TCP connect, TLS and the upgrade together (gorilla's default is 45 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Query keys that mark a URL as presigned, in which case the upgrade is not signed again.
const PRESIGN_KEYS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// The WebSocket as the session layer sees it.
pub type WsStream = WebSocketStream<BoxStream>;

/// How to sign the upgrade request.
#[derive(Clone, Debug)]
pub struct Signer {
    /// Where credentials come from (re-read on every dial, so resumes sign with fresh keys).
    pub credentials: SharedCredentialsProvider,
    /// The region signed for.
    pub region: String,
}

/// What a dial needs besides the grant.
#[derive(Clone, Debug)]
pub struct DialConfig {
    /// TLS roots for `wss://`.
    pub tls: Arc<ClientConfig>,
    /// Sign the upgrade (None: unsigned, as plugins before 1.2.764.0).
    pub signer: Option<Signer>,
    /// One UUID per process, reused on reconnect.
    pub client_id: String,
    /// What we claim in OpenDataChannel.
    pub client_version: String,
}

/// WebSocket limits: a frame never exceeds an AgentMessage of [`MAX_FRAME_LEN`]; anything larger
/// is refused by the WebSocket layer before it is buffered.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_LEN + 1024))
        .max_frame_size(Some(MAX_FRAME_LEN + 1024))
}

/// Dials `stream_url`, upgrades (signed unless configured otherwise) and sends OpenDataChannel
/// with `token`. The socket is then ready for AgentMessages.
pub async fn connect(
    stream_url: &str,
    token: &str,
    config: &DialConfig,
) -> Result<WsStream, Error> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_inner(stream_url, token, config))
        .await
        .map_err(|_| {
            ws_error(
                stream_url,
                format!("no upgrade within {}s", HANDSHAKE_TIMEOUT.as_secs()),
            )
        })?
}

async fn connect_inner(
    stream_url: &str,
    token: &str,
    config: &DialConfig,
) -> Result<WsStream, Error> {
    let url = url::Url::parse(stream_url)
        .map_err(|e| ws_error(stream_url, format!("invalid URL: {e}")))?;
    let tls = match url.scheme() {
        "wss" => true,
        "ws" => false,
        other => {
            return Err(ws_error(
                stream_url,
                format!("unsupported scheme {other:?}"),
            ));
        }
    };
    let host = url
        .host_str()
        .ok_or_else(|| ws_error(stream_url, "URL has no host".to_owned()))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let host_for_dial = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();

    let mut request = stream_url
        .into_client_request()
        .map_err(|e| ws_error(stream_url, format!("invalid request: {e}")))?;
    let presigned = url
        .query_pairs()
        .any(|(k, _)| PRESIGN_KEYS.contains(&k.as_ref()));
    if let Some(signer) = config.signer.as_ref().filter(|_| !presigned) {
        let host_header = request
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&host)
            .to_owned();
        for (name, value) in sign_upgrade(stream_url, &host_header, signer).await? {
            let value = HeaderValue::from_str(&value)
                .map_err(|e| ws_error(stream_url, format!("signature header: {e}")))?;
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| ws_error(stream_url, format!("signature header: {e}")))?;
            request.headers_mut().insert(name, value);
        }
    }

    // Direct, or a CONNECT tunnel through the proxy HTTPS_PROXY (or ALL_PROXY) names.
    let tcp = crate::http_proxy::connect(url.scheme(), &host_for_dial, port)
        .await
        .map_err(|e| ws_error(stream_url, e))?;
    let _ = tcp.set_nodelay(true);
    let io: BoxStream = if tls {
        let name = rustls::pki_types::ServerName::try_from(host_for_dial.clone())
            .map_err(|e| ws_error(stream_url, format!("invalid TLS name {host}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(config.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ws_error(stream_url, format!("TLS with {host}: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(request, io, Some(ws_config()))
            .await
            .map_err(|e| ws_error(stream_url, upgrade_message(e)))?;

    let open = OpenDataChannel {
        message_schema_version: MESSAGE_SCHEMA_VERSION.to_owned(),
        request_id: super::proto::message::MessageId::random().to_string(),
        token_value: token.to_owned(),
        client_instance_id: None,
        client_id: config.client_id.clone(),
        client_version: Some(config.client_version.clone()),
    };
    ws.send(Message::text(open.encode()))
        .await
        .map_err(|e| ws_error(stream_url, format!("sending OpenDataChannel: {e}")))?;
    Ok(ws)
}

/// The SigV4 headers (`authorization`, `x-amz-date`, optionally `x-amz-security-token`) for a GET
/// of `url` with only `host` signed.
pub async fn sign_upgrade(
    url: &str,
    host: &str,
    signer: &Signer,
) -> Result<Vec<(String, String)>, Error> {
    let creds = signer
        .credentials
        .provide_credentials()
        .await
        .map_err(|e| Error::Credentials(aws_sdk_ssm::error::DisplayErrorContext(e).to_string()))?;
    sign_with(url, host, &signer.region, creds.into(), SystemTime::now())
}

/// [`sign_upgrade`] with given identity and time (deterministic, for tests).
pub fn sign_with(
    url: &str,
    host: &str,
    region: &str,
    identity: Identity,
    time: SystemTime,
) -> Result<Vec<(String, String)>, Error> {
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Error::Credentials(format!("signing parameters: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "GET",
        url,
        [("host", host)].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| ws_error(url, format!("cannot sign: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| ws_error(url, format!("cannot sign: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect())
}

fn upgrade_message(e: tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                .unwrap_or_default();
            format!("upgrade refused with HTTP {status} {body}")
        }
        other => format!("upgrade failed: {other}"),
    }
}

/// A WebSocket error naming the URL without its query.
pub fn ws_error(url: &str, message: String) -> Error {
    Error::WebSocket {
        url: strip_query(url).to_owned(),
        message,
    }
}

//! The SSM control plane: StartSession, ResumeSession and TerminateSession through `aws-sdk-ssm`
//! (spec §1).
//!
//! The SDK client is built from an [`aws_config::SdkConfig`], so the standard endpoint overrides
//! (`AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL`) and credential chain apply unchanged; the same
//! config provides the credentials that sign the WebSocket upgrade ([`super::websocket`]).
//! Failures are mapped to [`Error`] variants that say which permission or which target is at fault.

use std::fmt;

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};

use super::Error;

/// The document for port forwarding to a host other than the target itself.
pub const DOCUMENT_REMOTE_HOST: &str = "AWS-StartPortForwardingSessionToRemoteHost";

/// The document for port forwarding to the target itself.
pub const DOCUMENT_LOCAL: &str = "AWS-StartPortForwardingSession";

/// What StartSession or ResumeSession hand back: where to connect and with what token.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// The session id (`user-0123456789abcdef0`).
    pub session_id: String,
    /// The WebSocket URL, used exactly as given.
    pub stream_url: String,
    /// The bearer token for OpenDataChannel. Secret: never logged.
    pub token: String,
}

impl fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGrant")
            .field("session_id", &self.session_id)
            .field("stream_url", &strip_query(&self.stream_url))
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A URL without its query string, for messages.
pub fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// The session to start: target and destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    /// `i-…`, `mi-…` or `ecs:<cluster>_<taskId>_<runtimeId>`.
    pub target: String,
    /// The SSM document ([`DOCUMENT_REMOTE_HOST`] by default).
    pub document: String,
    /// Destination host the agent dials (the RDS endpoint).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Optional `Reason` shown in CloudTrail/EventBridge.
    pub reason: Option<String>,
}

/// The SSM API as the transport uses it.
#[derive(Clone, Debug)]
pub struct Api {
    /// The SDK client.
    client: aws_sdk_ssm::Client,
}

impl Api {
    /// A client from an SDK config (region, credentials, endpoint overrides).
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_ssm::Client::new(config),
        }
    }

    /// StartSession for port forwarding to `request.host:request.port`.
    pub async fn start_session(&self, request: &SessionRequest) -> Result<SessionGrant, Error> {
        let mut call = self
            .client
            .start_session()
            .target(&request.target)
            .document_name(&request.document)
            .parameters("portNumber", vec![request.port.to_string()])
            // The plugin sends "0": the local side picks its own port (we have no listener here).
            .parameters("localPortNumber", vec!["0".to_owned()]);
        if request.document != DOCUMENT_LOCAL {
            call = call.parameters("host", vec![request.host.clone()]);
        }
        if let Some(reason) = &request.reason {
            call = call.reason(reason);
        }
        let out = call.send().await.map_err(|e| map_start_error(e, request))?;
        grant(
            "StartSession",
            out.session_id,
            out.stream_url,
            out.token_value,
        )?
        .ok_or(Error::Api {
            operation: "StartSession",
            message: "the response carried no TokenValue".to_owned(),
        })
    }

    /// ResumeSession: a fresh StreamUrl and token for a session whose WebSocket dropped.
    /// `Ok(None)` means the session is gone (no token, or DoesNotExistException).
    pub async fn resume_session(&self, session_id: &str) -> Result<Option<SessionGrant>, Error> {
        match self
            .client
            .resume_session()
            .session_id(session_id)
            .send()
            .await
        {
            Ok(out) => {
                let id = out.session_id.or_else(|| Some(session_id.to_owned()));
                grant("ResumeSession", id, out.stream_url, out.token_value)
            }
            Err(SdkError::ServiceError(e)) if e.err().is_does_not_exist_exception() => Ok(None),
            Err(e) => Err(api_error("ResumeSession", e)),
        }
    }

    /// TerminateSession.
    pub async fn terminate_session(&self, session_id: &str) -> Result<(), Error> {
        self.client
            .terminate_session()
            .session_id(session_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error("TerminateSession", e))
    }
}

/// Builds a grant; `Ok(None)` when the token is missing or empty (the plugin's "timed out").
fn grant(
    operation: &'static str,
    session_id: Option<String>,
    stream_url: Option<String>,
    token: Option<String>,
) -> Result<Option<SessionGrant>, Error> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let missing = |what: &str| Error::Api {
        operation,
        message: format!("the response carried no {what}"),
    };
    Ok(Some(SessionGrant {
        session_id: session_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("SessionId"))?,
        stream_url: stream_url
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("StreamUrl"))?,
        token,
    }))
}

fn map_start_error<E, R>(err: SdkError<E, R>, request: &SessionRequest) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    if let SdkError::ServiceError(service) = &err {
        let code = service.err().code().unwrap_or_default().to_owned();
        let message = service.err().message().unwrap_or_default().to_owned();
        match code.as_str() {
            "TargetNotConnected" => {
                return Error::TargetNotConnected {
                    target: request.target.clone(),
                    message,
                };
            }
            "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
                return Error::AccessDenied {
                    target: request.target.clone(),
                    document: request.document.clone(),
                    code,
                    message,
                };
            }
            _ => {}
        }
    }
    api_error("StartSession", err)
}

fn api_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    let message = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("unknown error"),
                e.message().unwrap_or_default()
            )
        }
        other => aws_sdk_ssm::error::DisplayErrorContext(other).to_string(),
    };
    Error::Api { operation, message }
}

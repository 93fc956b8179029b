//! A small SigV4-signed client for the handful of AWS API calls discovery, `doctor` and `admin`
//! make: CloudFormation, RDS, STS and EC2 (the Query protocol, XML answers) and ECS and Secrets
//! Manager (awsJson1_1).
//!
//! Why not the SDK crates: each `aws-sdk-*` crate is one large compilation unit (minutes on two
//! cores, EC2's far more) for one or two operations here. The wire formats of these calls are
//! small and stable, signing is `aws-sigv4` (the SDK's own signer), and credentials come from the
//! same aws-config chain as the IAM tokens, so the errors for a missing or expired login are the
//! same everywhere.
//!
//! Endpoints follow the SDKs' rules: `AWS_ENDPOINT_URL_<SERVICE>` (e.g.
//! `AWS_ENDPOINT_URL_CLOUDFORMATION`), else `AWS_ENDPOINT_URL`, else
//! `https://<service>.<region>.amazonaws.com` (`.amazonaws.com.cn` in China). That is how the tests
//! point the real binary at the simulator. One TLS connection per call: discovery makes a few calls
//! at start-up and when a bastion task is replaced, so a connection pool would buy nothing.
//!
//! Failures are [`Error`]s that name the call (`cloudformation:DescribeStacks`), the AWS error code
//! and message, and for an access denial the permission to grant. Nothing here logs or formats a
//! credential or a signature.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::iam;
use crate::io::BoxStream;

/// Time allowed for TCP connect and TLS together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for one whole call once connected.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response body read (DescribeStacks with many outputs is a few KiB).
const MAX_RESPONSE: usize = 4 << 20;

/// Attempts for a call that failed in transit or with a throttling / 5xx answer.
const ATTEMPTS: u32 = 3;

/// How a service is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Form-encoded `Action=…&Version=…` POSTs answered with XML.
    Query {
        /// The API version sent with every call.
        version: &'static str,
    },
    /// awsJson1_1 POSTs with `X-Amz-Target: <prefix>.<Operation>`.
    Json {
        /// The target prefix.
        target_prefix: &'static str,
    },
}

/// One AWS service as this client calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The signing name, which is also the endpoint prefix and the IAM action prefix.
    pub name: &'static str,
    /// The suffix of its endpoint override variable, `AWS_ENDPOINT_URL_<env>`.
    pub env: &'static str,
    /// The protocol.
    pub protocol: Protocol,
}

/// AWS CloudFormation.
pub const CLOUDFORMATION: Service = Service {
    name: "cloudformation",
    env: "CLOUDFORMATION",
    protocol: Protocol::Query {
        version: "2010-05-15",
    },
};

/// Amazon RDS.
pub const RDS: Service = Service {
    name: "rds",
    env: "RDS",
    protocol: Protocol::Query {
        version: "2014-10-31",
    },
};

/// AWS STS.
pub const STS: Service = Service {
    name: "sts",
    env: "STS",
    protocol: Protocol::Query {
        version: "2011-06-15",
    },
};

/// Amazon EC2.
pub const EC2: Service = Service {
    name: "ec2",
    env: "EC2",
    protocol: Protocol::Query {
        version: "2016-11-15",
    },
};

/// Amazon ECS.
pub const ECS: Service = Service {
    name: "ecs",
    env: "ECS",
    protocol: Protocol::Json {
        target_prefix: "AmazonEC2ContainerServiceV20141113",
    },
};

/// AWS Secrets Manager.
pub const SECRETS_MANAGER: Service = Service {
    name: "secretsmanager",
    env: "SECRETS_MANAGER",
    protocol: Protocol::Json {
        target_prefix: "secretsmanager",
    },
};

/// A failed AWS API call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable credentials (the message names the profile and `aws sso login`).
    #[error(transparent)]
    Credentials(#[from] iam::Error),
    /// The endpoint could not be reached or the exchange broke off.
    #[error("{call}: cannot reach {url}: {reason}. Check your network (or AWS_ENDPOINT_URL*)")]
    Unreachable {
        /// `service:Operation`.
        call: String,
        /// The endpoint URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// AWS answered with an error.
    #[error("{call} failed: {code}: {message}{}", hint(.call, .code))]
    Api {
        /// `service:Operation`.
        call: String,
        /// HTTP status.
        status: u16,
        /// The AWS error code (`AccessDenied`, `ValidationError`, ...).
        code: String,
        /// AWS's message.
        message: String,
    },
    /// AWS answered with something this client cannot read.
    #[error("{call}: unexpected answer from AWS: {reason}")]
    Malformed {
        /// `service:Operation`.
        call: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl Error {
    /// The AWS error code, for an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether AWS refused the call for lack of permission.
    pub fn is_access_denied(&self) -> bool {
        self.code().is_some_and(is_access_denied_code)
    }
}

fn is_access_denied_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation"
    )
}

/// The fix appended to an access denial.
fn hint(call: &str, code: &str) -> String {
    if is_access_denied_code(code) {
        format!(
            ". Your AWS identity needs `{call}`: attach the stack's ConnectPolicyArn policy \
             (deploy/README.md) or ask your AWS administrator"
        )
    } else if matches!(
        code,
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired"
    ) {
        ". Your AWS credentials have expired: log in again (e.g. `aws sso login`)".to_owned()
    } else if matches!(
        code,
        "InvalidClientTokenId" | "UnrecognizedClientException" | "SignatureDoesNotMatch"
    ) {
        ". AWS does not accept these credentials: check the profile and keys in use".to_owned()
    } else {
        String::new()
    }
}

/// A client for one region and one set of credentials.
#[derive(Clone)]
pub struct Api {
    credentials: SharedCredentialsProvider,
    profile: Option<String>,
    region: String,
    tls: Arc<ClientConfig>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("profile", &self.profile)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A client signing with `credentials` for `region`. `profile` only names the profile in
    /// error messages.
    pub fn new(
        credentials: SharedCredentialsProvider,
        profile: Option<String>,
        region: impl Into<String>,
    ) -> Result<Self, crate::tls::Error> {
        Ok(Self {
            credentials,
            profile,
            region: region.into(),
            // The embedded bundle carries the Amazon Trust roots that sign the AWS API endpoints.
            tls: crate::tls::upstream_client_config(&crate::tls::CaSource::Embedded)?,
        })
    }

    /// The region calls go to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The profile named in errors.
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// The same client for another region.
    pub fn with_region(&self, region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            ..self.clone()
        }
    }

    /// A Query-protocol call: `params` are sent after `Action` and `Version`; the answer is the
    /// XML text (parse it with [`Xml::parse`]).
    pub async fn query(
        &self,
        service: Service,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<String, Error> {
        let Protocol::Query { version } = service.protocol else {
            unreachable!("query() on a JSON service is a programming error");
        };
        let mut body = form_pair("Action", action);
        body.push('&');
        body.push_str(&form_pair("Version", version));
        for (k, v) in params {
            body.push('&');
            body.push_str(&form_pair(k, v));
        }
        let call = format!("{}:{action}", service.name);
        let (status, text) = self
            .send(
                service,
                &call,
                "application/x-www-form-urlencoded; charset=utf-8",
                None,
                body.into_bytes(),
            )
            .await?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        Err(query_error(&call, status, &text))
    }

    /// An awsJson1_1 call; the answer is the parsed JSON object.
    pub async fn json(
        &self,
        service: Service,
        operation: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let Protocol::Json { target_prefix } = service.protocol else {
            unreachable!("json() on a Query service is a programming error");
        };
        let call = format!("{}:{operation}", service.name);
        let target = format!("{target_prefix}.{operation}");
        let (status, text) = self
            .send(
                service,
                &call,
                "application/x-amz-json-1.1",
                Some(&target),
                body.to_string().into_bytes(),
            )
            .await?;
        let value: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return value.ok_or_else(|| Error::Malformed {
                call,
                reason: "the body is not JSON".into(),
            });
        }
        let (code, message) = match &value {
            Some(v) => (
                v.get("__type")
                    .and_then(|t| t.as_str())
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
                    .unwrap_or_else(|| format!("HTTP {status}")),
                v.get("message")
                    .or_else(|| v.get("Message"))
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            ),
            None => (format!("HTTP {status}"), snippet(&text)),
        };
        Err(Error::Api {
            call,
            status,
            code,
            message,
        })
    }

    /// Signs and sends one POST, retrying transport failures, throttling and 5xx answers.
    async fn send(
        &self,
        service: Service,
        call: &str,
        content_type: &str,
        target: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, String), Error> {
        let url = endpoint_url(service, &self.region);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            // Credentials are fetched per attempt so a refreshed login is used at once.
            let creds = iam::credentials(&self.credentials, self.profile.as_deref()).await?;
            let request = self.signed_request(
                service,
                call,
                &url,
                content_type,
                target,
                &body,
                creds.into(),
            )?;
            match tokio::time::timeout(CALL_TIMEOUT, self.exchange(&url, request)).await {
                Ok(Ok((status, text))) => {
                    let retry = status >= 500
                        || text.contains("Throttling")
                        || text.contains("RequestLimitExceeded");
                    debug!(call, status, attempt, "aws api call");
                    if retry && attempt + 1 < ATTEMPTS {
                        last = Some((status, text));
                        continue;
                    }
                    return Ok((status, text));
                }
                Ok(Err(reason)) => {
                    debug!(call, attempt, %reason, "aws api call failed in transit");
                    if attempt + 1 == ATTEMPTS {
                        return Err(Error::Unreachable {
                            call: call.to_owned(),
                            url,
                            reason,
                        });
                    }
                }
                Err(_) => {
                    if attempt + 1 == ATTEMPTS {
                        return Err(Error::Unreachable {
                            call: call.to_owned(),
                            url,
                            reason: format!("no answer within {CALL_TIMEOUT:?}"),
                        });
                    }
                }
            }
        }
        Ok(last.expect("the loop returns unless it recorded an answer"))
    }

    #[allow(clippy::too_many_arguments)]
    fn signed_request(
        &self,
        service: Service,
        call: &str,
        url: &str,
        content_type: &str,
        target: Option<&str>,
        body: &[u8],
        identity: Identity,
    ) -> Result<http::Request<Full<Bytes>>, Error> {
        let malformed = |reason: String| Error::Malformed {
            call: call.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| malformed(format!("endpoint {url}: {e}")))?;
        let host = host_header(&parsed).ok_or_else(|| malformed(format!("endpoint {url}")))?;
        let mut headers: Vec<(&str, &str)> =
            vec![("host", host.as_str()), ("content-type", content_type)];
        if let Some(t) = target {
            headers.push(("x-amz-target", t));
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service.name)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| malformed(format!("signing parameters: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| malformed(format!("cannot sign: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| malformed(format!("cannot sign: {e}")))?
            .into_parts();
        let mut builder = http::Request::builder().method("POST").uri(url);
        for (name, value) in &headers {
            builder = builder.header(*name, *value);
        }
        for (name, value) in instructions.headers() {
            builder = builder.header(name, value);
        }
        builder
            .header(
                "user-agent",
                concat!("rds-iam-proxy/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| malformed(format!("request: {e}")))
    }

    /// One connection, one request, the whole answer.
    async fn exchange(
        &self,
        url: &str,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(u16, String), String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let host = parsed.host_str().ok_or("no host")?.to_owned();
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let dial_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        // Direct, or a CONNECT tunnel through the proxy HTTPS_PROXY (or ALL_PROXY) names.
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            crate::http_proxy::connect(parsed.scheme(), &dial_host, port),
        )
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))??;
        let _ = tcp.set_nodelay(true);
        let stream: BoxStream = match parsed.scheme() {
            "https" => {
                let name = ServerName::try_from(dial_host.clone())
                    .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    TlsConnector::from(self.tls.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| format!("TLS handshake with {host} timed out"))?
                .map_err(|e| format!("TLS with {host}: {e}"))?;
                Box::new(tls)
            }
            "http" => Box::new(tcp),
            other => return Err(format!("unsupported scheme `{other}`")),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string());
        let result = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = Limited::new(response.into_body(), MAX_RESPONSE)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the answer: {e}"))?
                    .to_bytes();
                let text = String::from_utf8(body.to_vec())
                    .map_err(|_| "the answer is not UTF-8".to_owned())?;
                Ok((status, text))
            }
            Err(e) => Err(e),
        };
        driver.abort();
        result
    }
}

/// The endpoint for `service` in `region`, honouring the standard override variables.
pub fn endpoint_url(service: Service, region: &str) -> String {
    let specific = format!("AWS_ENDPOINT_URL_{}", service.env);
    for var in [specific.as_str(), "AWS_ENDPOINT_URL"] {
        if let Ok(v) = std::env::var(var) {
            let v = v.trim();
            if !v.is_empty() {
                return v.to_owned();
            }
        }
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{}.{region}.{suffix}", service.name)
}

/// `host[:port]` as the Host header carries it (port only when not the scheme's default).
fn host_header(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// What the Query protocol percent-encodes: everything but RFC 3986's unreserved characters
/// (so a space is `%20`, never `+`, and `~` stays as it is).
const QUERY_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `k=v` with both sides percent-encoded (RFC 3986 unreserved characters kept, as AWS's Query
/// protocol expects).
fn form_pair(k: &str, v: &str) -> String {
    format!(
        "{}={}",
        utf8_percent_encode(k, QUERY_ESCAPED),
        utf8_percent_encode(v, QUERY_ESCAPED)
    )
}

/// The first part of an unreadable body, for an error message.
fn snippet(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.is_empty() {
        "(empty body)".to_owned()
    } else {
        t
    }
}

/// The error of a Query-protocol answer: `<ErrorResponse><Error><Code/><Message/>` or EC2's
/// `<Response><Errors><Error><Code/><Message/>`.
fn query_error(call: &str, status: u16, text: &str) -> Error {
    let doc = Xml::parse(text).ok();
    let parsed = doc.as_ref().and_then(|doc| {
        let error = doc.find_all("Error").into_iter().next()?;
        Some((
            error.text("Code").unwrap_or_default().to_owned(),
            error.text("Message").unwrap_or_default().to_owned(),
        ))
    });
    let (code, message) = match parsed {
        Some((code, message)) if !code.is_empty() => (code, message),
        _ => (format!("HTTP {status}"), snippet(text)),
    };
    Error::Api {
        call: call.to_owned(),
        status,
        code,
        message,
    }
}

/// A parsed XML answer, read by element names (namespaces ignored).
pub struct Xml<'i> {
    doc: roxmltree::Document<'i>,
}

impl<'i> Xml<'i> {
    /// Parses `text`.
    pub fn parse(text: &'i str) -> Result<Self, String> {
        let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
        Ok(Self { doc })
    }

    /// The root element.
    pub fn root(&self) -> Node<'_, 'i> {
        Node(self.doc.root_element())
    }

    /// Every element named `name` anywhere in the document, in document order.
    pub fn find_all(&self, name: &str) -> Vec<Node<'_, 'i>> {
        self.root().descendants(name)
    }
}

/// An element of an [`Xml`] answer.
#[derive(Clone, Copy)]
pub struct Node<'a, 'i>(roxmltree::Node<'a, 'i>);

impl<'a, 'i> Node<'a, 'i> {
    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<Node<'a, 'i>> {
        self.0
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .map(Node)
    }

    /// The child elements named `name`.
    pub fn children(&self, name: &str) -> Vec<Node<'a, 'i>> {
        self.0
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == name)
            .map(Node)
            .collect()
    }

    /// Every element below this one named `name`.
    pub fn descendants(&self, name: &str) -> Vec<Node<'a, 'i>> {
        self.0
            .descendants()
            .filter(|c| c.is_element() && c.tag_name().name() == name)
            .map(Node)
            .collect()
    }

    /// The text of the child element `name`, trimmed.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.child(name).map(|c| c.own_text())
    }

    /// This element's own text, trimmed.
    pub fn own_text(&self) -> &'a str {
        self.0.text().unwrap_or_default().trim()
    }

    /// Follows a path of child names (`"Endpoint/Address"`).
    pub fn path(&self, path: &str) -> Option<Node<'a, 'i>> {
        let mut node = *self;
        for part in path.split('/') {
            node = node.child(part)?;
        }
        Some(node)
    }

    /// The text at a path of child names.
    pub fn path_text(&self, path: &str) -> Option<&'a str> {
        self.path(path).map(|n| n.own_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_matches_aws_query() {
        assert_eq!(
            form_pair("Filter.1.Name", "tag:Name"),
            "Filter.1.Name=tag%3AName"
        );
        assert_eq!(form_pair("k", "a b/c~"), "k=a%20b%2Fc~");
        assert_eq!(form_pair("a*+-_.", "é"), "a%2A%2B-_.=%C3%A9");
    }

    #[test]
    fn query_errors_are_read_in_both_shapes() {
        let e = query_error(
            "cloudformation:DescribeStacks",
            400,
            "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error>\
             <Type>Sender</Type><Code>ValidationError</Code><Message>Stack with id X does not \
             exist</Message></Error><RequestId>r</RequestId></ErrorResponse>",
        );
        assert_eq!(e.code(), Some("ValidationError"));
        assert!(
            e.to_string().contains("Stack with id X does not exist"),
            "{e}"
        );
        let e = query_error(
            "ec2:DescribeInstances",
            403,
            "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not \
             authorized</Message></Error></Errors><RequestID>r</RequestID></Response>",
        );
        assert!(e.is_access_denied());
        assert!(
            e.to_string().contains("needs `ec2:DescribeInstances`"),
            "{e}"
        );
        let e = query_error("sts:GetCallerIdentity", 502, "<html>bad gateway</html>");
        assert_eq!(e.code(), Some("HTTP 502"));
    }

    #[test]
    fn endpoints_default_to_the_regional_names() {
        // Only checks the default shape: the variables may be set by the surrounding test run.
        if std::env::var_os("AWS_ENDPOINT_URL").is_none()
            && std::env::var_os("AWS_ENDPOINT_URL_RDS").is_none()
        {
            assert_eq!(
                endpoint_url(RDS, "eu-west-1"),
                "https://rds.eu-west-1.amazonaws.com"
            );
            assert_eq!(
                endpoint_url(RDS, "cn-north-1"),
                "https://rds.cn-north-1.amazonaws.com.cn"
            );
        }
    }

    #[test]
    fn xml_paths() {
        let doc = Xml::parse("<R xmlns=\"x\"><A><B><C> 1 </C></B><B><C>2</C></B></A></R>").unwrap();
        let a = doc.root().child("A").unwrap();
        let cs: Vec<_> = a.children("B").iter().filter_map(|b| b.text("C")).collect();
        assert_eq!(cs, ["1", "2"]);
        assert_eq!(doc.root().path_text("A/B/C"), Some("1"));
        assert!(Xml::parse("<unclosed>").is_err());
    }
}

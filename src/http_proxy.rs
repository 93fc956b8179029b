//! Corporate HTTP proxies for the connections rds-iam-proxy dials itself: the AWS API calls of
//! [`crate::aws::api`] and the SSM WebSocket of [`crate::ssm::websocket`]. Both ask [`connect`]
//! for a TCP stream to `host:port`; when the environment names a proxy for that destination, the
//! stream is an HTTP `CONNECT` tunnel through it, and TLS (or the WebSocket upgrade) runs inside.
//!
//! Which proxy applies is decided by hyper-util's [`Matcher`], the same rules the AWS SDK clients
//! (the SSM API, the SSO and STS credential providers) follow, so every AWS connection of the
//! process agrees: `HTTPS_PROXY`/`https_proxy` for `https`/`wss`, `HTTP_PROXY`/`http_proxy` for
//! `http`/`ws`, `ALL_PROXY`/`all_proxy` for both when those are unset, and `NO_PROXY`/`no_proxy`
//! (host names, domain suffixes, IP addresses and CIDR blocks, or `*`) for destinations to reach
//! directly. Credentials in the proxy URL (`http://USER:PASSWORD@proxy:3128`) are sent as
//! `Proxy-Authorization: Basic`; they never appear in a log line, an error or a Debug output
//! (nothing here keeps the URL text; [`Hop`] shows only the proxy's scheme, host and port).

use std::fmt;

use http::HeaderValue;
use hyper_util::client::proxy::matcher::Matcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest proxy answer to `CONNECT` read before giving up (a status line and a few headers).
const MAX_CONNECT_REPLY: usize = 16 * 1024;

/// The proxy settings of the environment.
pub struct Proxies {
    /// hyper-util's reading of the variables.
    matcher: Matcher,
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Matcher's own Debug omits credentials; keep it that way by saying even less.
        f.write_str("Proxies { .. }")
    }
}

/// One HTTP proxy to tunnel through.
#[derive(Clone)]
pub struct Hop {
    /// The proxy's host (no brackets for IPv6).
    host: String,
    /// The proxy's port.
    port: u16,
    /// `Proxy-Authorization` from the URL's user and password (marked sensitive).
    auth: Option<HeaderValue>,
    /// Which variable named it, for messages.
    pub variable: &'static str,
}

impl Hop {
    /// `http://HOST:PORT`, never with the credentials.
    pub fn url(&self) -> String {
        format!("http://{}", authority(&self.host, self.port))
    }

    /// Whether the URL carried a user name (and password).
    pub fn has_credentials(&self) -> bool {
        self.auth.is_some()
    }
}

impl fmt::Debug for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hop")
            .field("url", &self.url())
            .field("credentials", &self.has_credentials())
            .field("variable", &self.variable)
            .finish()
    }
}

impl Proxies {
    /// The settings in this process's environment (read now).
    pub fn from_env() -> Self {
        Proxies {
            matcher: Matcher::from_env(),
        }
    }

    /// Settings given as values: (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).
    pub fn from_values(https: &str, http: &str, all: &str, no: &str) -> Self {
        Proxies {
            matcher: Matcher::builder()
                .https(https.to_owned())
                .http(http.to_owned())
                .all(all.to_owned())
                .no(no.to_owned())
                .build(),
        }
    }

    /// The proxy for `scheme://host:port` (`http`, `https`, `ws` or `wss`), `None` to go direct;
    /// an error for a proxy this cannot speak to (SOCKS, or TLS to the proxy itself).
    pub fn hop_for(&self, scheme: &str, host: &str, port: u16) -> Result<Option<Hop>, String> {
        let (http_scheme, variable) = match scheme {
            "https" | "wss" => ("https", "HTTPS_PROXY"),
            "http" | "ws" => ("http", "HTTP_PROXY"),
            _ => return Ok(None),
        };
        let dst: http::Uri = format!("{http_scheme}://{}/", authority(host, port))
            .parse()
            .map_err(|e| format!("`{host}:{port}` is not a valid destination: {e}"))?;
        let Some(intercept) = self.matcher.intercept(&dst) else {
            return Ok(None);
        };
        let uri = intercept.uri();
        let shown = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "the proxy {shown} (from {variable} or ALL_PROXY) is reached over TLS, which \
                     rds-iam-proxy does not support: use an http:// proxy URL (CONNECT keeps the \
                     AWS traffic encrypted end to end)"
                ));
            }
            other => {
                return Err(format!(
                    "the proxy {shown} (from {variable} or ALL_PROXY) is a {} proxy, which \
                     rds-iam-proxy does not support: use an HTTP proxy (http://HOST:PORT)",
                    other.unwrap_or("non-HTTP")
                ));
            }
        }
        let proxy_host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Some(Hop {
            host: proxy_host,
            port: uri.port_u16().unwrap_or(80),
            auth: intercept.basic_auth().cloned(),
            variable: which_variable(http_scheme),
        }))
    }
}

/// The variable that named the proxy for `scheme` (`http` or `https`), in hyper-util's order.
fn which_variable(scheme: &str) -> &'static str {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    let specific: [&'static str; 2] = if scheme == "https" {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    specific
        .into_iter()
        .chain(["ALL_PROXY", "all_proxy"])
        .find(|v| set(v))
        .unwrap_or("ALL_PROXY")
}

/// `host:port`, with brackets for an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TCP stream to `host:port` for a `scheme` URL: direct, or tunnelled with `CONNECT` through
/// the proxy the environment names for it. The error says which hop failed and what to check.
pub async fn connect(scheme: &str, host: &str, port: u16) -> Result<TcpStream, String> {
    match Proxies::from_env().hop_for(scheme, host, port)? {
        None => TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", authority(host, port))),
        Some(hop) => tunnel(&hop, host, port).await,
    }
}

/// Opens a `CONNECT` tunnel to `host:port` through `hop`.
pub async fn tunnel(hop: &Hop, host: &str, port: u16) -> Result<TcpStream, String> {
    let target = authority(host, port);
    let proxy = hop.url();
    tracing::debug!(%proxy, %target, "connecting through the HTTP proxy");
    let mut tcp = TcpStream::connect((hop.host.as_str(), hop.port))
        .await
        .map_err(|e| {
            format!(
                "cannot reach the HTTP proxy {proxy} (from {}) on the way to {target}: {e}; \
                 check the proxy URL, or list {host} in NO_PROXY to go direct",
                hop.variable
            )
        })?;
    let _ = tcp.set_nodelay(true);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(auth) = &hop.auth {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    tcp.write_all(&request)
        .await
        .map_err(|e| format!("the HTTP proxy {proxy} closed the connection: {e}"))?;
    let status_line = read_reply_head(&mut tcp)
        .await
        .map_err(|e| format!("the HTTP proxy {proxy} did not answer CONNECT to {target}: {e}"))?;
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    // 407 is the standard answer; some proxies (tinyproxy among them) say 401 instead.
    match code {
        Some(200..=299) => Ok(tcp),
        Some(401 | 407) if hop.has_credentials() => Err(format!(
            "the HTTP proxy {proxy} refused the user name and password in {} ({status_line}): \
             check them",
            hop.variable
        )),
        Some(401 | 407) => Err(format!(
            "the HTTP proxy {proxy} wants credentials ({status_line}): put them in {}, as \
             http://USER:PASSWORD@HOST:PORT",
            hop.variable
        )),
        _ => Err(format!(
            "the HTTP proxy {proxy} refused CONNECT to {target} ({status_line}): ask its \
             administrator to allow it, or list {host} in NO_PROXY to go direct"
        )),
    }
}

/// Reads the proxy's answer up to the blank line, byte by byte so that nothing of the tunnel
/// after it is consumed; returns the status line.
async fn read_reply_head(tcp: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_REPLY {
            return Err(format!("an answer longer than {MAX_CONNECT_REPLY} bytes"));
        }
        match tcp.read(&mut byte).await {
            Ok(0) => return Err("the connection closed".to_owned()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if !line.starts_with("HTTP/") {
        return Err(format!("not an HTTP answer: {:?}", truncate(&line)));
    }
    Ok(truncate(&line).to_owned())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// For `doctor`: how a connection to `url` leaves this machine, when a proxy variable is set at
/// all (`None` when none is). Never shows credentials.
pub fn describe(url: &str) -> Option<Result<String, String>> {
    let any = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|x| !x.is_empty()));
    if !any {
        return None;
    }
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(Err(format!("{url}: {e}"))),
    };
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    Some(
        Proxies::from_env()
            .hop_for(parsed.scheme(), &host, port)
            .map(|hop| match hop {
                Some(h) => format!(
                    "AWS calls and the SSM WebSocket go through {} (from {}{}) to {}",
                    h.url(),
                    h.variable,
                    if h.has_credentials() {
                        ", with credentials"
                    } else {
                        ""
                    },
                    authority(&host, port)
                ),
                None => format!("none for {} (NO_PROXY), direct", authority(&host, port)),
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_and_wss_use_https_proxy_and_http_and_ws_use_http_proxy() {
        let p = Proxies::from_values("http://secure:1", "http://plain:2", "", "");
        for (scheme, host) in [
            ("https", "secure"),
            ("wss", "secure"),
            ("http", "plain"),
            ("ws", "plain"),
        ] {
            let hop = p
                .hop_for(scheme, "ssm.eu-west-1.amazonaws.com", 443)
                .unwrap();
            assert_eq!(hop.unwrap().host, host, "{scheme}");
        }
    }

    #[test]
    fn all_proxy_is_the_fallback_and_no_proxy_goes_direct() {
        let p = Proxies::from_values("", "", "http://any:3128", "internal.example,10.0.0.0/8");
        assert_eq!(
            p.hop_for("https", "ssm.eu-west-1.amazonaws.com", 443)
                .unwrap()
                .unwrap()
                .url(),
            "http://any:3128"
        );
        for host in ["db.internal.example", "internal.example", "10.1.2.3"] {
            assert!(p.hop_for("wss", host, 443).unwrap().is_none(), "{host}");
        }
        let none = Proxies::from_values("", "", "", "");
        assert!(none.hop_for("https", "a.example", 443).unwrap().is_none());
    }

    #[test]
    fn credentials_become_basic_auth_and_never_show() {
        let p = Proxies::from_values("http://al%40ice:s3cr%3At@proxy.corp:8080", "", "", "");
        let hop = p
            .hop_for("https", "sts.amazonaws.com", 443)
            .unwrap()
            .unwrap();
        assert!(hop.auth.as_ref().unwrap().is_sensitive());
        // "al@ice:s3cr:t" in base64.
        assert_eq!(hop.auth.as_ref().unwrap(), "Basic YWxAaWNlOnMzY3I6dA==");
        for shown in [hop.url(), format!("{hop:?}"), format!("{p:?}")] {
            assert!(!shown.contains("s3cr") && !shown.contains("ice"), "{shown}");
        }
        assert_eq!(hop.url(), "http://proxy.corp:8080");
    }

    #[test]
    fn socks_and_tls_proxies_are_refused_with_the_fix() {
        let socks = Proxies::from_values("socks5://proxy:1080", "", "", "");
        let e = socks.hop_for("https", "a.example", 443).unwrap_err();
        assert!(e.contains("use an HTTP proxy"), "{e}");
        let tls = Proxies::from_values("https://proxy:443", "", "", "");
        let e = tls.hop_for("https", "a.example", 443).unwrap_err();
        assert!(e.contains("use an http:// proxy URL"), "{e}");
    }

    #[tokio::test]
    async fn connect_is_sent_with_credentials_and_refusals_name_the_fix() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for reply in [
                "HTTP/1.1 200 Connection established\r\n\r\nafter",
                "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
                "HTTP/1.1 403 Forbidden\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8(got).unwrap());
                s.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        let p = Proxies::from_values(&format!("http://u:pw@127.0.0.1:{port}"), "", "", "");
        let hop = p.hop_for("https", "ssm.example", 443).unwrap().unwrap();
        let mut tcp = tunnel(&hop, "ssm.example", 443).await.unwrap();
        // Bytes after the proxy's blank line belong to the tunnel.
        let mut after = [0u8; 5];
        tcp.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"after");
        let e = tunnel(&hop, "ssm.example", 443).await.unwrap_err();
        assert!(e.contains("refused the user name and password"), "{e}");
        let e = tunnel(&hop, "ssm.example", 443).await.unwrap_err();
        assert!(e.contains("403") && e.contains("NO_PROXY"), "{e}");
        assert!(!e.contains("pw"), "{e}");
        let seen = server.await.unwrap();
        assert!(
            seen[0].starts_with("CONNECT ssm.example:443 HTTP/1.1\r\nHost: ssm.example:443\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains("Proxy-Authorization: Basic dTpwdw==\r\n"),
            "{}",
            seen[0]
        );
    }
}

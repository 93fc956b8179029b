//! A scripted MySQL upstream and a raw MySQL test client, both speaking through the crate's own
//! sans-IO codec, plus a [`Harness`] that runs a [`Proxy`] in process between them.
//!
//! The upstream is not a simulator: each test scripts it step by step ([`ServerConn`]), so the
//! test decides exactly which bytes the proxy sees and asserts exactly which bytes come out.
//!
//! ```text
//! TestClient ──tcp──▶ Proxy (in process) ──tcp──▶ FakeUpstream ─accept─▶ ServerConn
//!                      CaSource::File(test CA)      TLS with a cert for mysql8.test (rcgen)
//! ```
//!
//! Tokens are checked independently of the proxy's cache ([`verify_token`]): the signing time is
//! read back from `X-Amz-Date`, the token is re-presigned with the same static credentials, and
//! the SigV4 signature is recomputed here from scratch (SHA-256/HMAC, no aws-sigv4).
//!
//! Every wait is bounded by [`GUARD`]; it only turns a hang into a failure and is never used to
//! synchronise.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::{BufMut, Bytes, BytesMut};
use rds_iam_proxy::iam::{self, AuthToken, TokenCache, TokenRequest, TokenSource, presign};
use rds_iam_proxy::mysql::framed::Prefixed;
use rds_iam_proxy::mysql::proto::buf::put_lenenc_bytes;
use rds_iam_proxy::mysql::proto::packet;
use rds_iam_proxy::mysql::proto::{
    AuthSwitchRequest, Capabilities, ErrPacket, HandshakeResponse41, HandshakeV10, SslRequest,
};
use rds_iam_proxy::proxy::{Proxy, ProxyConfig};
use rds_iam_proxy::tls::CaSource;
use rds_iam_proxy::tunnel::{BoxStream, Direct};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The RDS endpoint name the proxy signs for and verifies TLS against.
pub const HOST: &str = "mysql8.test";
/// The RDS endpoint port signed into tokens (not the port the fake listens on).
pub const PORT: u16 = 3306;
/// The signing region.
pub const REGION: &str = "us-east-1";
/// Static test credentials (no session token: short tokens, and no expiry).
pub const ACCESS_KEY: &str = "AKIDTEST";
/// Secret of the static test credentials.
pub const SECRET_KEY: &str = "secret";

/// Upper bound on any single wait in a test: a hang becomes a failure, nothing more.
pub const GUARD: Duration = Duration::from_secs(15);

/// The scramble a MySQL 8.4 server sends (20 bytes, no NUL).
pub const UPSTREAM_SCRAMBLE: &[u8; 20] = b"Up5tr3amScr@mble!#20";

/// The usual end-of-login OK (`00 00 00 02 00 00 00`).
pub const PLAIN_OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

/// An end-of-login OK as MySQL 8 sends it to a SESSION_TRACK client: status
/// `AUTOCOMMIT|SESSION_STATE_CHANGED`, empty info, one system-variable change (`autocommit=ON`).
pub fn session_track_ok() -> Bytes {
    let mut entry = BytesMut::new();
    put_lenenc_bytes(&mut entry, b"autocommit");
    put_lenenc_bytes(&mut entry, b"ON");
    let mut state = BytesMut::new();
    state.put_u8(0x00); // SESSION_TRACK_SYSTEM_VARIABLES
    put_lenenc_bytes(&mut state, &entry);
    let mut ok = BytesMut::new();
    ok.put_slice(&[0x00, 0x00, 0x00]);
    ok.put_u16_le(0x4002);
    ok.put_u16_le(0);
    put_lenenc_bytes(&mut ok, b"");
    put_lenenc_bytes(&mut ok, &state);
    ok.freeze()
}

/// The static credentials every harness signs with.
pub fn static_credentials() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test")
}

// ---------------------------------------------------------------------------------------------
// Capability sets and packets
// ---------------------------------------------------------------------------------------------

/// What a MySQL 8.4.3 server offers (`0xdfffffff`: everything but CAPABILITY_EXTENSION), with
/// SSL, QUERY_ATTRIBUTES, DEPRECATE_EOF, SESSION_TRACK, PLUGIN_AUTH_LENENC_CLIENT_DATA,
/// CONNECT_ATTRS, and also COMPRESS, ZSTD and MFA, which the proxy must not pass on.
pub fn mysql84_caps() -> Capabilities {
    Capabilities::from_parts(0xdfff_ffff, 0)
}

/// Flags the proxy owns and must never show the client or forward (compression, MFA, TLS when
/// local TLS is off, the client-only bits). Written out here, not taken from the crate.
pub fn proxy_owned() -> Capabilities {
    Capabilities::SSL
        | Capabilities::COMPRESS
        | Capabilities::ZSTD_COMPRESSION_ALGORITHM
        | Capabilities::MULTI_FACTOR_AUTHENTICATION
        | Capabilities::CAPABILITY_EXTENSION
        | Capabilities::SSL_VERIFY_SERVER_CERT
        | Capabilities::REMEMBER_OPTIONS
        | Capabilities::IGNORE_SIGPIPE
}

/// The flags that change the command-phase wire format and must be equal on both legs.
pub fn framing_flags() -> Capabilities {
    Capabilities::QUERY_ATTRIBUTES
        | Capabilities::DEPRECATE_EOF
        | Capabilities::SESSION_TRACK
        | Capabilities::OPTIONAL_RESULTSET_METADATA
}

/// A MySQL 8.4.3 greeting with a distinctive connection id, charset and status.
pub fn mysql84_greeting() -> HandshakeV10 {
    HandshakeV10 {
        server_version: Bytes::from_static(b"8.4.3"),
        connection_id: 0x0A0B_0C0D,
        auth_plugin_data: Bytes::from_static(UPSTREAM_SCRAMBLE),
        capabilities: mysql84_caps(),
        character_set: 255, // utf8mb4_0900_ai_ci
        status_flags: 0x0002,
        auth_plugin_name: Some(Bytes::from_static(b"caching_sha2_password")),
    }
}

/// A libmysqlclient-8-like client: every framing flag, connect attributes, lenenc auth data.
pub fn mysql8_client_caps() -> Capabilities {
    Capabilities::LONG_PASSWORD
        | Capabilities::LONG_FLAG
        | Capabilities::CONNECT_WITH_DB
        | Capabilities::LOCAL_FILES
        | Capabilities::PROTOCOL_41
        | Capabilities::INTERACTIVE
        | Capabilities::TRANSACTIONS
        | Capabilities::SECURE_CONNECTION
        | Capabilities::MULTI_STATEMENTS
        | Capabilities::MULTI_RESULTS
        | Capabilities::PS_MULTI_RESULTS
        | Capabilities::PLUGIN_AUTH
        | Capabilities::CONNECT_ATTRS
        | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
        | Capabilities::CAN_HANDLE_EXPIRED_PASSWORDS
        | Capabilities::SESSION_TRACK
        | Capabilities::DEPRECATE_EOF
        | Capabilities::QUERY_ATTRIBUTES
        | Capabilities::OPTIONAL_RESULTSET_METADATA
}

/// Connection attributes as the mysql 8 CLI sends them, plus one value longer than 250 bytes
/// (a 3-byte lenenc length).
pub fn client_attrs() -> Vec<(Bytes, Bytes)> {
    vec![
        (
            Bytes::from_static(b"_client_name"),
            Bytes::from_static(b"libmysql"),
        ),
        (
            Bytes::from_static(b"_client_version"),
            Bytes::from_static(b"8.4.3"),
        ),
        (Bytes::from_static(b"_os"), Bytes::from_static(b"Linux")),
        (Bytes::from_static(b"_pid"), Bytes::from_static(b"4242")),
        (
            Bytes::from_static(b"program_name"),
            Bytes::from_static(b"mysql"),
        ),
        (
            Bytes::from_static(b"long_value"),
            Bytes::from(vec![b'x'; 300]),
        ),
    ]
}

/// A 32-byte caching_sha2_password scramble answer (what a client with a password sends).
pub const SHA2_ANSWER: &[u8; 32] = b"0123456789abcdef0123456789ABCDEF";
/// A 20-byte mysql_native_password answer.
pub const NATIVE_ANSWER: &[u8; 20] = b"native-answer-20byte";

/// The client's login: `plugin` and `auth` chosen by the test, everything else libmysqlclient-like.
pub fn client_response(user: &str, plugin: &str, auth: &[u8]) -> HandshakeResponse41 {
    HandshakeResponse41 {
        capabilities: mysql8_client_caps(),
        max_packet_size: 16 * 1024 * 1024,
        character_set: 255,
        username: Bytes::copy_from_slice(user.as_bytes()),
        auth_response: Bytes::copy_from_slice(auth),
        database: Some(Bytes::from_static(b"appdb")),
        auth_plugin_name: Some(Bytes::copy_from_slice(plugin.as_bytes())),
        connect_attrs: Some(client_attrs()),
        zstd_level: None,
    }
}

/// Encodes a payload into one framed packet.
pub fn frame(seq: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    packet::encode(seq, payload, &mut out);
    out.freeze()
}

/// Encodes a HandshakeResponse41 payload.
pub fn encode_response(r: &HandshakeResponse41) -> Bytes {
    let mut b = BytesMut::new();
    r.encode(&mut b);
    b.freeze()
}

/// Encodes a greeting payload.
pub fn encode_greeting(g: &HandshakeV10) -> Bytes {
    let mut b = BytesMut::new();
    g.encode(&mut b);
    b.freeze()
}

/// Encodes an ERR payload.
pub fn encode_err(e: &ErrPacket) -> Bytes {
    let mut b = BytesMut::new();
    e.encode(&mut b);
    b.freeze()
}

/// A canned DEPRECATE_EOF result set for `SELECT 1` (column count, one column definition, one
/// row, a terminating OK with header `0xFE`), sequence ids 1..=4, as raw bytes.
pub fn canned_result_set() -> Bytes {
    let mut coldef = BytesMut::new();
    for s in [&b"def"[..], b"", b"", b"", b"1", b""] {
        put_lenenc_bytes(&mut coldef, s);
    }
    coldef.put_slice(&[
        0x0c, 0x3f, 0x00, 0x01, 0x00, 0x00, 0x00, 0x08, 0x81, 0x00, 0x00, 0x00,
    ]);
    let mut out = BytesMut::new();
    packet::encode(1, &[0x01], &mut out);
    packet::encode(2, &coldef, &mut out);
    packet::encode(3, &[0x01, b'1'], &mut out);
    packet::encode(4, &[0xFE, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00], &mut out);
    out.freeze()
}

// ---------------------------------------------------------------------------------------------
// Packet reading shared by both ends
// ---------------------------------------------------------------------------------------------

/// One physical packet as read off a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPacket {
    /// Sequence id.
    pub seq: u8,
    /// Payload without header.
    pub payload: Bytes,
    /// The whole frame, header included, exactly as received.
    pub raw: Bytes,
}

/// A stream read in whole packets with no size limit (unlike the proxy's login reader).
struct PacketIo {
    io: BoxStream,
    rbuf: BytesMut,
    who: &'static str,
}

/// How a read ended when no packet came.
#[derive(Debug)]
pub enum Closed {
    /// Clean EOF with no partial packet.
    Eof,
    /// A socket or TLS error, or EOF inside a packet.
    Error(String),
}

impl PacketIo {
    fn new(io: BoxStream, who: &'static str) -> Self {
        PacketIo {
            io,
            rbuf: BytesMut::new(),
            who,
        }
    }

    /// The next packet, or how the stream ended. Panics after [`GUARD`].
    async fn next(&mut self) -> Result<RawPacket, Closed> {
        let who = self.who;
        tokio::time::timeout(GUARD, self.next_unguarded())
            .await
            .unwrap_or_else(|_| panic!("{who}: no packet and no close within {GUARD:?}"))
    }

    async fn next_unguarded(&mut self) -> Result<RawPacket, Closed> {
        loop {
            if let Some((len, seq)) = packet::peek_header(&self.rbuf)
                && self.rbuf.len() >= packet::HEADER_LEN + len
            {
                let raw = self.rbuf.split_to(packet::HEADER_LEN + len).freeze();
                let payload = raw.slice(packet::HEADER_LEN..);
                return Ok(RawPacket { seq, payload, raw });
            }
            self.rbuf.reserve(64 * 1024);
            match self.io.read_buf(&mut self.rbuf).await {
                Ok(0) if self.rbuf.is_empty() => return Err(Closed::Eof),
                Ok(0) => {
                    return Err(Closed::Error(format!(
                        "EOF inside a packet ({} bytes buffered)",
                        self.rbuf.len()
                    )));
                }
                Ok(_) => {}
                Err(e) => return Err(Closed::Error(e.to_string())),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }
}

// ---------------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------------

/// A throwaway CA (written to a temp PEM file for `CaSource::File`) and server configs for the
/// endpoint name and for a wrong name. The file is removed on drop.
pub struct Pki {
    /// The CA PEM file.
    pub ca_path: PathBuf,
    /// A server config whose certificate names `mysql8.test`, signed by the CA.
    pub good: Arc<ServerConfig>,
    /// A server config whose certificate names `other.test`, signed by the same CA.
    pub wrong_name: Arc<ServerConfig>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Pki {
    /// Generates the CA and both leaf certificates.
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rds-iam-proxy test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| -> Arc<ServerConfig> {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(vec![name.to_owned()]).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
            Arc::new(
                ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config"),
            )
        };
        let good = leaf(HOST);
        let wrong_name = leaf("other.test");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let ca_path = std::env::temp_dir().join(format!(
            "rds-iam-proxy-test-ca-{}-{}-{}.pem",
            std::process::id(),
            nanos,
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&ca_path, ca_cert.pem()).expect("write the CA PEM");
        Pki {
            ca_path,
            good,
            wrong_name,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_path);
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream
// ---------------------------------------------------------------------------------------------

/// Records every byte read from the raw TCP socket (below TLS), to prove what did or did not
/// travel in cleartext.
struct Recorder {
    inner: BoxStream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = buf.filled()[before..].to_vec();
            self.seen.lock().unwrap().extend_from_slice(&new);
        }
        r
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The listening side of the fake database.
pub struct FakeUpstream {
    listener: TcpListener,
    /// Where it listens (the proxy's dial address).
    pub addr: SocketAddr,
}

impl FakeUpstream {
    /// Binds 127.0.0.1:0.
    pub async fn bind() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        FakeUpstream { listener, addr }
    }

    /// The next connection the proxy opens.
    pub async fn accept(&self) -> ServerConn {
        let (tcp, _) = tokio::time::timeout(GUARD, self.listener.accept())
            .await
            .expect("the proxy did not connect upstream")
            .expect("accept upstream");
        ServerConn::new(tcp)
    }
}

/// What the upstream saw during a scripted IAM login.
#[derive(Debug)]
pub struct SeenLogin {
    /// The SSLRequest (seq 1).
    pub ssl_request: SslRequest,
    /// The HandshakeResponse41 (seq 2, inside TLS).
    pub response: HandshakeResponse41,
    /// The token text (from the switch answer, or from the response on the direct path).
    pub token: String,
}

/// One upstream connection, driven step by step by a test.
pub struct ServerConn {
    io: PacketIo,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl ServerConn {
    fn new(tcp: TcpStream) -> Self {
        let raw = Arc::new(Mutex::new(Vec::new()));
        let rec = Recorder {
            inner: Box::new(tcp),
            seen: raw.clone(),
        };
        ServerConn {
            io: PacketIo::new(Box::new(rec), "upstream"),
            raw,
        }
    }

    /// Every byte received on the TCP socket so far, below TLS.
    pub fn raw_received(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }

    /// Sends one packet.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) {
        self.io
            .write(&frame(seq, payload))
            .await
            .expect("upstream write");
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write(bytes).await.expect("upstream write");
    }

    /// The next packet, or how the proxy closed.
    pub async fn next(&mut self) -> Result<RawPacket, Closed> {
        self.io.next().await
    }

    /// The next packet; panics if the proxy closed.
    pub async fn expect_packet(&mut self, what: &str) -> RawPacket {
        match self.io.next().await {
            Ok(p) => p,
            Err(c) => panic!("upstream expected {what}, but the proxy closed: {c:?}"),
        }
    }

    /// Asserts the proxy sends nothing more and closes.
    pub async fn expect_closed(&mut self, why: &str) {
        match self.io.next().await {
            Ok(p) => panic!(
                "upstream expected the proxy to close ({why}), got packet seq {} {:02x?}",
                p.seq,
                &p.payload[..p.payload.len().min(64)]
            ),
            Err(Closed::Eof) => {}
            Err(Closed::Error(e)) => {
                assert!(
                    self.io.rbuf.is_empty(),
                    "proxy left a partial packet upstream ({why}): {e}"
                );
            }
        }
    }

    /// Sends the greeting (seq 0).
    pub async fn greet(&mut self, g: &HandshakeV10) {
        self.send(0, &encode_greeting(g)).await;
    }

    /// Reads the SSLRequest (must be seq 1, exactly 32 bytes).
    pub async fn read_ssl_request(&mut self) -> SslRequest {
        let p = self.expect_packet("SSLRequest").await;
        assert_eq!(p.seq, 1, "SSLRequest sequence id");
        assert_eq!(p.payload.len(), 32, "SSLRequest length");
        let r = SslRequest::decode(&p.payload).expect("SSLRequest decodes");
        assert!(
            r.capabilities.contains(Capabilities::SSL),
            "SSLRequest without SSL"
        );
        r
    }

    /// Runs the server side of TLS on the connection; on failure the raw stream is kept so the
    /// test can check what follows.
    pub async fn start_tls(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        // Bytes read past the SSLRequest are the start of the ClientHello: TLS gets them first.
        let placeholder: BoxStream = Box::new(tokio::io::duplex(1).0);
        let raw = std::mem::replace(&mut self.io.io, placeholder);
        let prefix = self.io.rbuf.split().freeze();
        let raw: BoxStream = Box::new(Prefixed::new(prefix, raw));
        let accept = TlsAcceptor::from(config).accept(raw).into_fallible();
        match tokio::time::timeout(GUARD, accept)
            .await
            .expect("TLS accept hung")
        {
            Ok(tls) => {
                self.io.io = Box::new(tls);
                Ok(())
            }
            Err((e, raw)) => {
                self.io.io = raw;
                Err(e)
            }
        }
    }

    /// Hands the raw connection (below TLS, with any bytes already read) to the TCP server at
    /// `addr` and relays both ways until either side closes: a real TLS server (such as `openssl
    /// s_server`) then answers the proxy's ClientHello. [`ServerConn::raw_received`] keeps
    /// recording.
    pub async fn relay_to(&mut self, addr: SocketAddr) {
        let placeholder: BoxStream = Box::new(tokio::io::duplex(1).0);
        let raw = std::mem::replace(&mut self.io.io, placeholder);
        let prefix = self.io.rbuf.split().freeze();
        let mut raw = Prefixed::new(prefix, raw);
        let mut other = tokio::time::timeout(GUARD, TcpStream::connect(addr))
            .await
            .expect("connect to the relay target hung")
            .expect("connect to the relay target");
        let _ = tokio::time::timeout(GUARD, tokio::io::copy_bidirectional(&mut raw, &mut other))
            .await
            .expect("relay hung");
    }

    /// Reads the HandshakeResponse41 (seq 2 after TLS).
    pub async fn read_response(&mut self) -> HandshakeResponse41 {
        let p = self.expect_packet("HandshakeResponse41").await;
        assert_eq!(p.seq, 2, "upstream HandshakeResponse41 sequence id");
        HandshakeResponse41::decode(&p.payload).expect("HandshakeResponse41 decodes")
    }

    /// Sends AuthSwitchRequest(mysql_clear_password) with a 20-byte scramble and NUL, as MySQL
    /// does.
    pub async fn switch_to_clear_password(&mut self, seq: u8) {
        let mut data = UPSTREAM_SCRAMBLE.to_vec();
        data.push(0);
        let switch = AuthSwitchRequest {
            plugin_name: Bytes::from_static(b"mysql_clear_password"),
            plugin_data: Bytes::from(data),
        };
        let mut b = BytesMut::new();
        switch.encode(&mut b);
        self.send(seq, &b).await;
    }

    /// Reads `token\0` at `seq` and returns the token text.
    pub async fn read_token(&mut self, seq: u8) -> String {
        let p = self.expect_packet("the IAM token").await;
        assert_eq!(p.seq, seq, "token packet sequence id");
        token_from_auth(&p.payload)
    }

    /// The default login: greeting, SSLRequest, TLS, response, switch, token; stops before the
    /// final OK (seq 5), which the caller sends.
    pub async fn login_until_ok(&mut self, greeting: &HandshakeV10, pki: &Pki) -> SeenLogin {
        self.greet(greeting).await;
        let ssl_request = self.read_ssl_request().await;
        self.start_tls(pki.good.clone())
            .await
            .expect("TLS with the proxy");
        let response = self.read_response().await;
        self.switch_to_clear_password(3).await;
        let token = self.read_token(4).await;
        SeenLogin {
            ssl_request,
            response,
            token,
        }
    }
}

/// The token text out of a `mysql_clear_password` answer (`token\0`).
pub fn token_from_auth(data: &[u8]) -> String {
    let (last, token) = data.split_last().expect("empty token packet");
    assert_eq!(*last, 0, "token is NUL-terminated");
    assert!(!token.contains(&0), "token holds a NUL");
    String::from_utf8(token.to_vec()).expect("token is UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Token verification, independent of the proxy's cache
// ---------------------------------------------------------------------------------------------

/// Checks that `token` is a valid RDS IAM token for `user` at `mysql8.test:3306` in us-east-1,
/// signed with the static test credentials and not expired: the layout, a fresh presign at the
/// token's own `X-Amz-Date`, and a SigV4 signature recomputed here from scratch.
pub fn verify_token(token: &str, user: &str) {
    let (authority, query) = token
        .split_once("/?")
        .unwrap_or_else(|| panic!("token has no '/?': {token}"));
    assert_eq!(authority, format!("{HOST}:{PORT}"), "token authority");
    let params: Vec<(&str, &str)> = query
        .split('&')
        .map(|kv| kv.split_once('=').expect("token parameter without '='"))
        .collect();
    let names: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "Action",
            "DBUser",
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature"
        ],
        "token parameters (botocore order, no session token)"
    );
    let get = |k: &str| params.iter().find(|(n, _)| *n == k).unwrap().1;
    assert_eq!(get("Action"), "connect");
    assert_eq!(get("DBUser"), uri_encode(user), "DBUser");
    assert_eq!(get("X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
    assert_eq!(get("X-Amz-Expires"), "900");
    assert_eq!(get("X-Amz-SignedHeaders"), "host");
    let amz_date = get("X-Amz-Date");
    let day = &amz_date[..8];
    assert_eq!(
        get("X-Amz-Credential"),
        format!("{ACCESS_KEY}%2F{day}%2F{REGION}%2Frds-db%2Faws4_request"),
        "credential scope"
    );
    let signed_at = parse_amz_date(amz_date);
    let now = SystemTime::now();
    assert!(
        signed_at <= now + Duration::from_secs(5),
        "token signed in the future: {amz_date}"
    );
    assert!(
        now < signed_at + Duration::from_secs(900),
        "token already expired: {amz_date}"
    );

    // 1. The same presign, at the token's own time, with the same static credentials.
    let request = TokenRequest {
        host: HOST.into(),
        port: PORT,
        user: user.into(),
        region: REGION.into(),
    };
    let again = presign(&request, &static_credentials(), signed_at).expect("presign");
    assert_eq!(again.expose(), token, "re-presigned token differs");

    // 2. SigV4 from scratch.
    let mut canonical_query: Vec<(&str, &str)> = params
        .iter()
        .copied()
        .filter(|(k, _)| *k != "X-Amz-Signature")
        .collect();
    canonical_query.sort();
    let canonical_query = canonical_query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let empty_hash = hex(&Sha256::digest(b""));
    let canonical_request =
        format!("GET\n/\n{canonical_query}\nhost:{HOST}:{PORT}\n\nhost\n{empty_hash}");
    let scope = format!("{day}/{REGION}/rds-db/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac_sha256(format!("AWS4{SECRET_KEY}").as_bytes(), day.as_bytes());
    let k_region = hmac_sha256(&k_date, REGION.as_bytes());
    let k_service = hmac_sha256(&k_region, b"rds-db");
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    let signature = hex(&hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    assert_eq!(
        get("X-Amz-Signature"),
        signature,
        "SigV4 signature recomputed independently"
    );
}

/// `20240102T030405Z` → time.
fn parse_amz_date(s: &str) -> SystemTime {
    assert_eq!(s.len(), 16, "X-Amz-Date format: {s}");
    let b = s.as_bytes();
    assert!(b[8] == b'T' && b[15] == b'Z', "X-Amz-Date format: {s}");
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    humantime::parse_rfc3339(&rfc).unwrap_or_else(|e| panic!("X-Amz-Date {s}: {e}"))
}

fn uri_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.iter().map(|x| x ^ 0x36).collect::<Vec<_>>());
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.iter().map(|x| x ^ 0x5c).collect::<Vec<_>>());
    outer.update(inner);
    outer.finalize().to_vec()
}

// ---------------------------------------------------------------------------------------------
// The raw test client
// ---------------------------------------------------------------------------------------------

/// A MySQL client written with the crate's codec, speaking to the proxy's listener.
pub struct TestClient {
    io: PacketIo,
}

impl TestClient {
    /// Connects to the proxy.
    pub async fn connect(addr: SocketAddr) -> TestClient {
        let tcp = tokio::time::timeout(GUARD, TcpStream::connect(addr))
            .await
            .expect("connect to the proxy hung")
            .expect("connect to the proxy");
        let _ = tcp.set_nodelay(true);
        TestClient {
            io: PacketIo::new(Box::new(tcp), "client"),
        }
    }

    /// Sends one packet.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) {
        self.io
            .write(&frame(seq, payload))
            .await
            .expect("client write");
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write(bytes).await.expect("client write");
    }

    /// Sends raw bytes; a write error (the proxy closed) is returned, not a panic.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write(bytes).await
    }

    /// Half-closes the client's write side (the proxy sees EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.io.io.shutdown().await;
    }

    /// The next packet, or how the proxy closed.
    pub async fn next(&mut self) -> Result<RawPacket, Closed> {
        self.io.next().await
    }

    /// The next packet; panics if the proxy closed.
    pub async fn expect_packet(&mut self, what: &str) -> RawPacket {
        match self.io.next().await {
            Ok(p) => p,
            Err(c) => panic!("client expected {what}, but the proxy closed: {c:?}"),
        }
    }

    /// Reads the local greeting (seq 0); returns the decoded greeting and its raw payload.
    pub async fn read_greeting(&mut self) -> (HandshakeV10, Bytes) {
        let p = self.expect_packet("the greeting").await;
        assert_eq!(p.seq, 0, "greeting sequence id");
        assert_ne!(
            p.payload.first(),
            Some(&0xFF),
            "got an ERR instead of a greeting: {:?}",
            ErrPacket::decode(&p.payload)
        );
        let g = HandshakeV10::decode(&p.payload).expect("the local greeting decodes");
        (g, p.payload)
    }

    /// Sends a HandshakeResponse41 at seq 1.
    pub async fn send_response(&mut self, r: &HandshakeResponse41) {
        self.send(1, &encode_response(r)).await;
    }

    /// Reads an ERR packet at `seq` and the close that follows it.
    pub async fn expect_err(&mut self, seq: u8) -> ErrPacket {
        let p = self.expect_packet("an ERR packet").await;
        assert_eq!(
            p.payload.first(),
            Some(&0xFF),
            "expected ERR, got {:02x?}",
            &p.payload[..p.payload.len().min(64)]
        );
        assert_eq!(p.seq, seq, "ERR sequence id");
        let err = ErrPacket::decode(&p.payload).expect("ERR decodes");
        self.expect_closed("after the ERR").await;
        err
    }

    /// Asserts the proxy sends nothing more and closes.
    pub async fn expect_closed(&mut self, why: &str) {
        match self.io.next().await {
            Ok(p) => panic!(
                "client expected the proxy to close ({why}), got packet seq {} {:02x?}",
                p.seq,
                &p.payload[..p.payload.len().min(64)]
            ),
            Err(Closed::Eof) => {}
            Err(Closed::Error(e)) => {
                assert!(
                    self.io.rbuf.is_empty(),
                    "proxy left a partial packet to the client ({why}): {e}"
                );
            }
        }
    }

    /// Reads raw bytes until the proxy closes the connection and returns them all.
    pub async fn read_until_closed(&mut self) -> Bytes {
        let fut = async {
            loop {
                self.io.rbuf.reserve(4096);
                match self.io.io.read_buf(&mut self.io.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(GUARD, fut)
            .await
            .expect("the proxy did not close");
        self.io.rbuf.split().freeze()
    }

    /// Reads exactly `n` raw bytes (for byte-identical comparisons across packet boundaries).
    pub async fn read_exact_raw(&mut self, n: usize) -> Bytes {
        let fut = async {
            while self.io.rbuf.len() < n {
                self.io.rbuf.reserve(64 * 1024);
                let got = self
                    .io
                    .io
                    .read_buf(&mut self.io.rbuf)
                    .await
                    .expect("client read");
                assert!(got > 0, "proxy closed after {} bytes", self.io.rbuf.len());
            }
            self.io.rbuf.split_to(n).freeze()
        };
        tokio::time::timeout(GUARD, fut)
            .await
            .expect("raw bytes did not arrive")
    }
}

impl ServerConn {
    /// Reads exactly `n` raw bytes (for byte-identical comparisons across packet boundaries).
    pub async fn read_exact_raw(&mut self, n: usize) -> Bytes {
        let fut = async {
            while self.io.rbuf.len() < n {
                self.io.rbuf.reserve(64 * 1024);
                let got = self
                    .io
                    .io
                    .read_buf(&mut self.io.rbuf)
                    .await
                    .expect("upstream read");
                assert!(got > 0, "proxy closed after {} bytes", self.io.rbuf.len());
            }
            self.io.rbuf.split_to(n).freeze()
        };
        tokio::time::timeout(GUARD, fut)
            .await
            .expect("raw bytes did not arrive")
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: proxy in process between a TestClient and a FakeUpstream
// ---------------------------------------------------------------------------------------------

/// Counter values at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub open: u64,
    pub total: u64,
    pub logins: u64,
    pub login_failures: u64,
}

/// A proxy serving a loopback listener, dialing a [`FakeUpstream`], trusting a fresh [`Pki`].
pub struct Harness {
    /// The test CA and server configs.
    pub pki: Pki,
    /// The fake database.
    pub upstream: FakeUpstream,
    /// The proxy.
    pub proxy: Proxy,
    /// The token cache (to count mints).
    pub tokens: Arc<TokenCache>,
    /// The proxy's listen address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    serve: Option<JoinHandle<usize>>,
}

impl Harness {
    /// Starts a proxy for `mysql8.test:3306` in us-east-1 with the test CA, a shutdown grace (so
    /// [`Harness::finish`] waits for connections to end) and `tweak` applied last.
    pub async fn start(tweak: impl FnOnce(&mut ProxyConfig)) -> Harness {
        Self::start_with(tweak, |cache| cache).await
    }

    /// [`Harness::start`] with the proxy's token source wrapped around the harness's cache.
    pub async fn start_with(
        tweak: impl FnOnce(&mut ProxyConfig),
        wrap: impl FnOnce(Arc<TokenCache>) -> Arc<dyn TokenSource>,
    ) -> Harness {
        let pki = Pki::new();
        let upstream = FakeUpstream::bind().await;
        let mut config = ProxyConfig::new(HOST, PORT, REGION);
        config.ca_source = CaSource::File(pki.ca_path.clone());
        config.handshake_timeout = Duration::from_secs(10);
        config.shutdown_grace = GUARD;
        // The scripted upstream's default login is the classic order (the switch, then the token,
        // as `login_until_ok` scripts it); the token-first tests turn it back on.
        config.direct_auth = false;
        tweak(&mut config);
        let tokens = Arc::new(TokenCache::new(
            SharedCredentialsProvider::new(static_credentials()),
            None,
        ));
        let proxy = Proxy::new(
            config,
            Arc::new(Direct::new(upstream.addr.to_string())),
            wrap(tokens.clone()),
        )
        .expect("Proxy::new");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let stop = CancellationToken::new();
        let serve = tokio::spawn({
            let p = proxy.clone();
            let s = stop.clone();
            async move { p.serve(listener, s).await }
        });
        Harness {
            pki,
            upstream,
            proxy,
            tokens,
            addr,
            shutdown: stop,
            serve: Some(serve),
        }
    }

    /// A new client connected to the proxy.
    pub async fn client(&self) -> TestClient {
        TestClient::connect(self.addr).await
    }

    /// A client connected, and the upstream connection the proxy opened for it.
    pub async fn pair(&self) -> (TestClient, ServerConn) {
        let c = self.client().await;
        let s = self.upstream.accept().await;
        (c, s)
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        let s = self.proxy.stats();
        StatsSnapshot {
            open: s.open.load(Ordering::Relaxed),
            total: s.total.load(Ordering::Relaxed),
            logins: s.logins.load(Ordering::Relaxed),
            login_failures: s.login_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops the proxy, waits for every connection task to end (the proxy reports none left
    /// after the grace) and returns the final counters.
    pub async fn finish(self) -> StatsSnapshot {
        let (left, stats) = self.stop().await;
        assert_eq!(left, 0, "connections still open at shutdown");
        assert_eq!(stats.open, 0, "open connections after all ended");
        stats
    }

    /// Stops the proxy; returns what `serve` returned (connections still open when the grace
    /// ran out) and the counters after it returned.
    pub async fn stop(mut self) -> (usize, StatsSnapshot) {
        self.shutdown.cancel();
        let serve = self.serve.take().expect("stop once");
        let left = tokio::time::timeout(GUARD + GUARD, serve)
            .await
            .expect("serve did not return")
            .expect("serve panicked");
        (left, self.stats())
    }

    /// Byte counters of the splice: (client → database, database → client).
    pub fn bytes(&self) -> (u64, u64) {
        let s = self.proxy.stats();
        (
            s.bytes_up.load(Ordering::Relaxed),
            s.bytes_down.load(Ordering::Relaxed),
        )
    }

    /// A client logged in through the proxy with mysql_native_password (steps run in order, no
    /// join needed); returns both ends and the capabilities sent upstream.
    pub async fn logged_in(&self) -> (TestClient, ServerConn, Capabilities) {
        let (mut client, mut server) = self.pair().await;
        server.greet(&mysql84_greeting()).await;
        client.read_greeting().await;
        client
            .send_response(&client_response("iamuser", "mysql_native_password", b""))
            .await;
        server.read_ssl_request().await;
        server.start_tls(self.pki.good.clone()).await.expect("TLS");
        let caps = server.read_response().await.capabilities;
        server.switch_to_clear_password(3).await;
        verify_token(&server.read_token(4).await, "iamuser");
        server.send(5, PLAIN_OK).await;
        let ok = client.expect_packet("OK").await;
        assert_eq!((ok.seq, &ok.payload[..]), (2, PLAIN_OK));
        (client, server, caps)
    }

    /// A complete good session through the proxy: MySQL 8.4 greeting, IAM login with a valid
    /// token, one COM_QUERY with its result set byte-identical both ways, COM_QUIT, close.
    /// Proves the proxy still serves after whatever the test did before.
    pub async fn good_session(&self) {
        let (mut client, mut server) = self.pair().await;
        let pki = &self.pki;
        // `async move`: the upstream connection is dropped (closed) when its script ends.
        let server_side = async move {
            let seen = server.login_until_ok(&mysql84_greeting(), pki).await;
            verify_token(&seen.token, "iamuser");
            assert_eq!(&seen.response.username[..], b"iamuser");
            server.send(5, PLAIN_OK).await;
            let q = server.expect_packet("COM_QUERY").await;
            assert_eq!(q.raw, frame(0, b"\x03\x00\x01SELECT 1"));
            server.send_raw(&canned_result_set()).await;
            let quit = server.expect_packet("COM_QUIT").await;
            assert_eq!(&quit.raw[..], &[1, 0, 0, 0, 0x01]);
            server.expect_closed("after COM_QUIT").await;
        };
        let client_side = async {
            let (g, _) = client.read_greeting().await;
            assert_eq!(&g.server_version[..], b"8.4.3");
            client
                .send_response(&client_response(
                    "iamuser",
                    "caching_sha2_password",
                    SHA2_ANSWER,
                ))
                .await;
            let fast = client.expect_packet("fast auth").await;
            assert_eq!((fast.seq, &fast.payload[..]), (2, &[0x01, 0x03][..]));
            let ok = client.expect_packet("OK").await;
            assert_eq!((ok.seq, &ok.payload[..]), (3, PLAIN_OK));
            client.send(0, b"\x03\x00\x01SELECT 1").await;
            let rs = canned_result_set();
            assert_eq!(client.read_exact_raw(rs.len()).await, rs);
            client.send(0, &[0x01]).await;
            client.shutdown_write().await;
            client.expect_closed("after COM_QUIT").await;
        };
        tokio::join!(server_side, client_side);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(serve) = self.serve.take() {
            serve.abort();
        }
    }
}

/// A token source whose first request fails as an expired AWS SSO login (profile `dev`), then
/// hands out the cache's tokens.
pub struct SsoExpiredOnce {
    inner: Arc<TokenCache>,
    failed: AtomicBool,
}

impl SsoExpiredOnce {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<TokenCache>) -> Arc<dyn TokenSource> {
        Arc::new(SsoExpiredOnce {
            inner,
            failed: AtomicBool::new(false),
        })
    }
}

impl TokenSource for SsoExpiredOnce {
    fn token<'a>(
        &'a self,
        req: &'a TokenRequest,
    ) -> Pin<Box<dyn Future<Output = Result<AuthToken, iam::Error>> + Send + 'a>> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Box::pin(async {
                Err(iam::Error::SsoLoginRequired {
                    profile: Some("dev".into()),
                    context: String::new(),
                })
            });
        }
        self.inner.token(req)
    }

    fn invalidate(&self, req: &TokenRequest) {
        self.inner.invalidate(req)
    }
}

// ---------------------------------------------------------------------------------------------
// Local TLS on the client side
// ---------------------------------------------------------------------------------------------

/// Accepts any server certificate (the proxy's local one is ephemeral and self-signed), still
/// checking handshake signatures.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Prepends `pending` to the first write, so an SSLRequest and the TLS ClientHello leave in one
/// segment (as a fast client can make them arrive).
struct Coalesce {
    pending: Option<Bytes>,
    out: BytesMut,
    first_len: Option<usize>,
    inner: BoxStream,
}

impl AsyncRead for Coalesce {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesce {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(p) = this.pending.take() {
            this.out.extend_from_slice(&p);
            this.out.extend_from_slice(buf);
            this.first_len = Some(buf.len());
        }
        if let Some(first) = this.first_len {
            while !this.out.is_empty() {
                let n = match Pin::new(&mut this.inner).poll_write(cx, &this.out) {
                    Poll::Ready(Ok(n)) => n,
                    other => return other,
                };
                let _ = this.out.split_to(n);
            }
            this.first_len = None;
            return Poll::Ready(Ok(first));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TestClient {
    /// Runs TLS to the proxy's local listener (any certificate accepted). With `coalesce`, those
    /// bytes (the SSLRequest frame) are sent in the same write as the ClientHello; without, the
    /// caller has sent the SSLRequest already.
    pub async fn start_tls(&mut self, coalesce: Option<Bytes>) -> io::Result<()> {
        assert!(self.io.rbuf.is_empty(), "bytes from the proxy before TLS");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        let placeholder: BoxStream = Box::new(tokio::io::duplex(1).0);
        let raw = std::mem::replace(&mut self.io.io, placeholder);
        // Record what the proxy sends during the handshake, to show it if TLS fails.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let raw: BoxStream = Box::new(Recorder {
            inner: raw,
            seen: seen.clone(),
        });
        let raw: BoxStream = match coalesce {
            Some(pending) => Box::new(Coalesce {
                pending: Some(pending),
                out: BytesMut::new(),
                first_len: None,
                inner: raw,
            }),
            None => raw,
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, raw);
        let tls = tokio::time::timeout(GUARD, connect)
            .await
            .expect("local TLS hung")
            .map_err(|e| {
                let got = seen.lock().unwrap().clone();
                let plain = got
                    .get(4..)
                    .filter(|p| p.first() == Some(&0xFF))
                    .and_then(|p| ErrPacket::decode(p).ok())
                    .map(|e| format!("a plaintext ERR {}: {}", e.code, e.message_str()))
                    .unwrap_or_else(|| format!("{:02x?}", &got[..got.len().min(32)]));
                io::Error::new(e.kind(), format!("{e}; the proxy sent {plain}"))
            })?;
        self.io.io = Box::new(tls);
        Ok(())
    }
}

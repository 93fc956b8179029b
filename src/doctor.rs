//! `rds-iam-proxy doctor`: every hop from the AWS credentials to `SELECT 1`, in order, one line
//! each with ✓ or ✗, and on the first failure the fix and a non-zero exit.
//!
//! The hops: AWS credentials (`sts:GetCallerIdentity`, and when they expire) → discovery (stack,
//! cluster or instance) → IAM database authentication on the cluster → the bastion (ECS task or
//! EC2 instance) → an SSM session (`ssm:StartSession` allowed, agent version, multiplexing) → TCP
//! to the endpoint through the tunnel (the server's greeting) → TLS verified against the RDS CAs
//! and the endpoint name → the IAM token accepted → `SELECT 1`.
//!
//! With `--secret` (a Secrets Manager password instead of IAM tokens), the IAM database
//! authentication hop is skipped and a Secrets Manager hop comes in its place: the secret
//! (`--secret auto`: the one discovery finds) read with `secretsmanager:GetSecretValue`, or the
//! identity and the permission it lacks (and `kms:Decrypt` for a customer managed key); the login
//! hop is then "password" (the secret's user logged in with it) instead of "IAM token".
//!
//! The last four run the real proxy in-process on a free loopback port and log in to it as a
//! MySQL (or, with `--engine postgres`, PostgreSQL) client would, so doctor checks exactly the
//! code path clients use; which hop failed is read from the proxy's failure reason, and the fix
//! from the error it sends.

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::aws::api::Api;
use crate::aws::discover::{self, DbSource, TargetSpec};
use crate::config::{self, Planned};
use crate::iam::{self, TokenCache};
use crate::local::LocalProxy;
use crate::mysql::framed::PacketStream;
use crate::mysql::proto::capabilities::Capabilities;
use crate::mysql::proto::command::{
    ColumnDefinition41, ComQuery, EofPacket, QueryResponse, TextRow,
};
use crate::mysql::proto::handshake::{HandshakeResponse41, HandshakeV10, plugin};
use crate::mysql::proto::packet;
use crate::mysql::proto::response::ErrPacket;
use crate::postgres::proto as pg;
use crate::progress::format_duration;
use crate::tunnel::{Connector, Direct};

/// Time allowed for each MySQL step of the check.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Prints one hop's line.
struct Report {
    started: Instant,
}

impl Report {
    fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    fn ok(&mut self, hop: &str, detail: impl AsRef<str>) {
        println!(
            "✓ {hop}: {} ({})",
            detail.as_ref(),
            format_duration(self.started.elapsed())
        );
        self.started = Instant::now();
    }

    /// Prints the failure and its fix; the caller returns the exit code.
    fn fail(&mut self, hop: &str, why: impl std::fmt::Display) -> std::process::ExitCode {
        println!("✗ {hop}: {why}");
        std::process::ExitCode::FAILURE
    }
}

/// Runs the checks for one database; the exit code is non-zero on the first failure.
pub async fn run(planned: &Planned) -> std::process::ExitCode {
    let mut r = Report::new();
    let mut args = planned.args.clone();
    if planned.name != config::ADHOC_NAME {
        println!("database `{}`", planned.name);
    }
    let source = match config::source(&args) {
        Ok(s) => s,
        Err(e) => return r.fail("configuration", e),
    };

    // 1. Credentials.
    let (provider, aws_region) = iam::load_aws(args.profile.as_deref()).await;
    let region = match config::api_region(&source, &args, aws_region.clone()) {
        Ok(region) => region,
        Err(e) => return r.fail("AWS region", e),
    };
    // The way out, when a proxy variable is set: the AWS calls below (and the credentials
    // providers') take it, and so does the SSM WebSocket.
    match crate::http_proxy::describe(&crate::aws::api::endpoint_url(
        crate::aws::api::STS,
        &region,
    )) {
        None => {}
        Some(Ok(way)) => r.ok("HTTP proxy", way),
        Some(Err(e)) => return r.fail("HTTP proxy", e),
    }
    let creds = match iam::credentials(&provider, args.profile.as_deref()).await {
        Ok(c) => c,
        Err(e) => return r.fail("AWS credentials", e),
    };
    let api = match Api::new(provider.clone(), args.profile.clone(), region) {
        Ok(a) => a,
        Err(e) => return r.fail("TLS setup", e),
    };
    match discover::caller_identity(&api).await {
        Ok(id) => {
            let expiry = match creds.expiry() {
                Some(t) => {
                    let left = t.duration_since(SystemTime::now()).unwrap_or_default();
                    format!("; they expire in {} min", left.as_secs() / 60)
                }
                None => "; they do not expire".to_owned(),
            };
            r.ok("AWS credentials", format!("{}{expiry}", id.arn));
        }
        Err(e) => return r.fail("AWS credentials", e),
    }

    // 2. Discovery.
    let resolved = match discover::resolve(&api, &source).await {
        Ok(res) => res,
        Err(e @ discover::Error::IamAuthDisabled { .. }) => {
            return r.fail("IAM database authentication", e);
        }
        Err(e) => return r.fail("discovery", e),
    };
    let found = match &source.db {
        DbSource::Endpoint { .. } => "given".to_owned(),
        DbSource::Stack(s) => format!("from stack {s}"),
        DbSource::Cluster(c) => format!("from DB cluster {c}"),
        DbSource::Instance(i) => format!("from DB instance {i}"),
    };
    r.ok(
        "database endpoint",
        format!("{}:{} ({found})", resolved.host, resolved.port),
    );
    config::apply_discovered(&mut args, &resolved);
    if let Err(e) = config::discover_secret(&mut args, &resolved) {
        return r.fail("Secrets Manager secret", e);
    }
    let mut cfg = match config::build(&args, aws_region) {
        Ok(c) => c,
        Err(e) => return r.fail("configuration", e),
    };
    cfg.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.unix_socket = None;
    cfg.health = None;
    let api = api.with_region(cfg.proxy.region.clone());

    // 3. IAM database authentication on the cluster, or the secret whose password is used instead.
    let mut secret_user = None;
    if let Some(source) = crate::launch::password_source(&cfg, &api) {
        match source.credentials().await {
            Ok(c) => {
                r.ok(
                    "Secrets Manager secret",
                    format!(
                        "secretsmanager:GetSecretValue allowed on {}; database user {}",
                        cfg.secret.as_deref().unwrap_or_default(),
                        crate::proxy::printable(&c.username)
                    ),
                );
                secret_user = Some(c.username);
            }
            Err(e) => {
                // The stack's master secret: its admin policy is the ready-made grant.
                let policy = resolved
                    .admin_policy_arn
                    .as_ref()
                    .filter(|_| cfg.secret == resolved.master_secret_arn && e.contains("may not"))
                    .map(|p| format!(" (the stack's AdminPolicyArn {p} grants it)"))
                    .unwrap_or_default();
                return r.fail("Secrets Manager secret", format!("{e}{policy}"));
            }
        }
        cfg.proxy.upstream_password = Some(source);
    } else if let Some(cluster) = &resolved.cluster_id {
        match discover::check_iam_auth(&api, cluster).await {
            Ok(_) => r.ok(
                "IAM database authentication",
                format!("enabled on cluster {cluster}"),
            ),
            Err(e @ discover::Error::IamAuthDisabled { .. }) => {
                return r.fail("IAM database authentication", e);
            }
            // Not being allowed to describe the cluster does not stop a connection.
            Err(e) if matches!(&e, discover::Error::Api(a) if a.is_access_denied()) => {
                println!("- IAM database authentication: not checked ({e})");
            }
            Err(e) => return r.fail("IAM database authentication", e),
        }
    }

    // 4. The bastion and 5. the SSM session.
    let connector: std::sync::Arc<dyn Connector>;
    let mut ssm = None;
    match &resolved.target {
        None => {
            connector = std::sync::Arc::new(Direct::new(cfg.dial.clone()));
        }
        Some(spec) => {
            let target = match spec.resolve(&api).await {
                Ok(t) => t,
                Err(e) => return r.fail("bastion", e),
            };
            if !matches!(spec, TargetSpec::Fixed(_)) {
                r.ok("bastion", &target);
            }
            let mut one = cfg.clone();
            one.ssm_sessions = Some(1);
            let s = match crate::launch::open_ssm(&one, &resolved, &target, &api).await {
                Ok(s) => s,
                Err(e) => return r.fail("SSM session", format!("{e:#}")),
            };
            if !s
                .pool()
                .wait_live(1, crate::launch::FIRST_SESSION_WAIT)
                .await
            {
                let why = s
                    .pool()
                    .last_error()
                    .unwrap_or_else(|| "no session within 30 s".into());
                s.shutdown().await;
                return r.fail("SSM session", why);
            }
            let detail = match s.pool().handshake_info() {
                Some(i) => {
                    let mode = match i.mode {
                        crate::ssm::proto::handshake::Mode::Mux => {
                            "multiplexed: one session carries many connections".to_owned()
                        }
                        _ => "basic mode: one connection per session (upgrade the SSM agent to \
                              3.0.222.0 or later for multiplexing)"
                            .to_owned(),
                    };
                    format!(
                        "ssm:StartSession allowed on {target}; agent {}, {mode}",
                        i.agent_version
                    )
                }
                None => format!("ssm:StartSession allowed on {target}"),
            };
            r.ok("SSM session", detail);
            connector = std::sync::Arc::new(s.clone());
            ssm = Some(s);
        }
    }

    // 6–9. Through the real proxy.
    let tokens = std::sync::Arc::new(TokenCache::new(provider, cfg.profile.clone()));
    cfg.resolve_compression(resolved.target.is_some());
    let code = match LocalProxy::start_with(&cfg, connector, tokens).await {
        Ok(local) => {
            let code = match cfg.proxy.engine {
                crate::proxy::Engine::Postgres => {
                    pg_login_checks(&mut r, &local, &cfg, secret_user).await
                }
                _ => login_checks(&mut r, &local, &cfg, secret_user).await,
            };
            local.shutdown().await;
            code
        }
        Err(e) => r.fail("local listener", format!("{e:#}")),
    };
    if let Some(s) = ssm {
        s.shutdown().await;
    }
    code
}

/// The login hop's name, what its line says, and the user doctor logs in as: with --secret the
/// secret's user (the proxy logs it in whatever the client names) and its password; otherwise
/// the IAM user and a token. `Err` when no user is known (the hop is reported failed).
fn who_logs_in(
    r: &mut Report,
    cfg: &config::Config,
    secret_user: Option<String>,
) -> Result<(&'static str, String, String), std::process::ExitCode> {
    let (credential, accepted) = match (&secret_user, &cfg.secret) {
        (Some(_), Some(id)) => ("password", format!("from Secrets Manager secret {id}")),
        _ => ("IAM token", "accepted".to_owned()),
    };
    match secret_user.or_else(|| cfg.proxy.db_user.clone()) {
        Some(user) => Ok((credential, accepted, user)),
        None => Err(r.fail(
            "IAM database user",
            "unknown: pass --db-user (or `db-user` in the config file) so doctor can log in",
        )),
    }
}

/// The line of a login that went through.
fn logged_in_line(credential: &str, accepted: &str, user: &str) -> String {
    if credential == "password" {
        format!(
            "user {} logged in with the password {accepted}",
            crate::proxy::printable(user)
        )
    } else {
        format!("{accepted} for user {user}")
    }
}

/// Reach, TLS, token and `SELECT 1`, as a client of the in-process proxy.
async fn login_checks(
    r: &mut Report,
    local: &LocalProxy,
    cfg: &config::Config,
    secret_user: Option<String>,
) -> std::process::ExitCode {
    let destination = local.proxy().destination();
    let (credential, accepted, user) = match who_logs_in(r, cfg, secret_user) {
        Ok(who) => who,
        Err(code) => return code,
    };
    let mut client = match MiniClient::connect(local).await {
        Ok(c) => c,
        Err(e) => return r.fail("local listener", e),
    };
    let greeting = match client.greeting().await {
        Ok(Ok(g)) => g,
        Ok(Err(err)) => return r.fail("reach the database", err.message_str()),
        Err(e) => return r.fail("reach the database", e),
    };
    r.ok(
        "reach the database",
        format!(
            "{destination} answered (server {})",
            String::from_utf8_lossy(&greeting.server_version)
        ),
    );
    let reply = match client.login(&greeting, &user).await {
        Ok(reply) => reply,
        Err(e) => return r.fail("login", e),
    };
    // The proxy counts a failed login once its connection task has sent the ERR, which can be
    // just after the client read it: wait (briefly) for the count before naming the hop.
    let mut failures = local.proxy().stats().failures_by_reason();
    if reply.is_err() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while failures.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            failures = local.proxy().stats().failures_by_reason();
        }
    }
    let tls_failed = failures.contains_key("tls") || failures.contains_key("upstream_no_tls");
    match reply {
        Ok(()) => {
            r.ok(
                "TLS",
                format!(
                    "verified {} against {}",
                    cfg.proxy.endpoint_host, cfg.proxy.ca_source
                ),
            );
            r.ok(credential, logged_in_line(credential, &accepted, &user));
        }
        Err(err) if tls_failed => return r.fail("TLS", err.message_str()),
        Err(err) => {
            r.ok(
                "TLS",
                format!(
                    "verified {} against {}",
                    cfg.proxy.endpoint_host, cfg.proxy.ca_source
                ),
            );
            return r.fail(credential, err.message_str());
        }
    }
    match client.select_one().await {
        Ok(()) => r.ok("SELECT 1", "returned 1"),
        Err(e) => return r.fail("SELECT 1", e),
    }
    r.ok(
        "compression",
        compression_outcome(cfg.proxy.compression, &local.proxy().stats().compression),
    );
    std::process::ExitCode::SUCCESS
}

/// What doctor says about the database leg's compression after its login: what was used, or why
/// none was.
fn compression_outcome(
    asked: crate::proxy::config::Compression,
    used: &crate::proxy::stats::CompressionStats,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    if used.zstd_logins.load(Relaxed) > 0 {
        "on: zstd on the database leg (the local leg is never compressed)".to_owned()
    } else if used.zlib_logins.load(Relaxed) > 0 {
        "on: zlib on the database leg (the local leg is never compressed)".to_owned()
    } else if asked == crate::proxy::config::Compression::OFF {
        "off (--compression auto compresses over SSM only; --compression zstd|zlib asks on any \
         transport)"
            .to_owned()
    } else {
        format!(
            "off: the server offers none of what --compression allows ({})",
            asked.describe()
        )
    }
}

/// Just enough of a MySQL client to log in to the local proxy and run `SELECT 1`, over the
/// proxy's own framing ([`PacketStream`]) and command codec. (The admin client in
/// `admin::client` insists on verified TLS; this leg is the local loopback one, in plain text
/// like most clients'.)
struct MiniClient {
    io: PacketStream,
}

impl MiniClient {
    async fn connect(local: &LocalProxy) -> Result<Self, String> {
        let addr = local.addr().ok_or("the check proxy has no TCP listener")?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Ok(Self {
            io: PacketStream::new(Box::new(stream), BytesMut::new()),
        })
    }

    async fn read(&mut self) -> Result<packet::Packet, String> {
        self.io
            .read_packet(STEP_TIMEOUT)
            .await
            .map_err(|e| format!("reading from the proxy: {e}"))
    }

    async fn write(&mut self, seq: u8, payload: &[u8]) -> Result<(), String> {
        self.io.queue(seq, payload);
        self.io.flush().await.map_err(|e| e.to_string())
    }

    /// The greeting, or the ERR the proxy sends instead when it cannot reach the database.
    async fn greeting(&mut self) -> Result<Result<HandshakeV10, ErrPacket>, String> {
        let p = self.read().await?;
        if p.payload.first() == Some(&ErrPacket::HEADER) {
            return ErrPacket::decode(&p.payload)
                .map(Err)
                .map_err(|e| e.to_string());
        }
        HandshakeV10::decode(&p.payload)
            .map(Ok)
            .map_err(|e| format!("unreadable greeting: {e}"))
    }

    async fn login(
        &mut self,
        greeting: &HandshakeV10,
        user: &str,
    ) -> Result<Result<(), ErrPacket>, String> {
        let caps = (Capabilities::LONG_PASSWORD
            | Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | Capabilities::TRANSACTIONS
            | Capabilities::MULTI_RESULTS)
            & greeting.capabilities;
        let response = HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: 1 << 24,
            character_set: 45,
            username: Bytes::copy_from_slice(user.as_bytes()),
            auth_response: Bytes::new(),
            database: None,
            auth_plugin_name: Some(Bytes::from_static(plugin::CACHING_SHA2_PASSWORD.as_bytes())),
            connect_attrs: None,
            zstd_level: None,
        };
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        self.write(1, &payload).await?;
        loop {
            let p = self.read().await?;
            match p.payload.first() {
                Some(0x00) => return Ok(Ok(())),
                Some(&ErrPacket::HEADER) => {
                    return ErrPacket::decode(&p.payload)
                        .map(Err)
                        .map_err(|e| e.to_string());
                }
                // AuthMoreData (fast-auth OK): the OK follows.
                Some(0x01) => continue,
                _ => return Err("unexpected packet during login".into()),
            }
        }
    }

    async fn select_one(&mut self) -> Result<(), String> {
        let mut q = BytesMut::new();
        ComQuery { query: "SELECT 1" }.encode(&mut q);
        self.write(0, &q).await?;
        let first = self.read().await?;
        match QueryResponse::decode(&first.payload).map_err(|e| e.to_string())? {
            QueryResponse::ResultSet { column_count: 1 } => {}
            QueryResponse::Err(e) => return Err(e.message_str()),
            other => return Err(format!("unexpected answer {other:?}")),
        }
        // One column definition, EOF, the row.
        let column = self.read().await?;
        ColumnDefinition41::decode(&column.payload).map_err(|e| e.to_string())?;
        let eof = self.read().await?;
        EofPacket::decode(&eof.payload).map_err(|e| e.to_string())?;
        let row = self.read().await?;
        let row = TextRow::decode(&row.payload, 1).map_err(|e| e.to_string())?;
        match row.0.as_slice() {
            [Some(v)] if v.as_ref() == b"1" => Ok(()),
            other => Err(format!("unexpected row {other:?}")),
        }
    }
}

/// Reach, TLS, token and `SELECT 1` for the PostgreSQL engine, as a client of the in-process
/// proxy (database `postgres`, which every role may connect to by default).
async fn pg_login_checks(
    r: &mut Report,
    local: &LocalProxy,
    cfg: &config::Config,
    secret_user: Option<String>,
) -> std::process::ExitCode {
    let destination = local.proxy().destination();
    let (credential, accepted, user) = match who_logs_in(r, cfg, secret_user) {
        Ok(who) => who,
        Err(code) => return code,
    };
    let mut client = match PgMiniClient::connect(local).await {
        Ok(c) => c,
        Err(e) => return r.fail("local listener", e),
    };
    let login = client.login(&user).await;
    let failures = local.proxy().stats().failures_by_reason();
    let tls = format!(
        "verified {} against {}",
        cfg.proxy.endpoint_host, cfg.proxy.ca_source
    );
    match login {
        Ok(Ok(version)) => {
            r.ok(
                "reach the database",
                format!("{destination} answered (server {version})"),
            );
            r.ok("TLS", tls);
            r.ok(credential, logged_in_line(credential, &accepted, &user));
        }
        Ok(Err(message)) | Err(message) => {
            let reached = !failures.contains_key("upstream_unreachable")
                && !failures.contains_key("upstream_io")
                && !failures.contains_key("upstream_protocol");
            if !reached {
                return r.fail("reach the database", message);
            }
            r.ok("reach the database", format!("{destination} answered"));
            if failures.contains_key("tls") || failures.contains_key("upstream_no_tls") {
                return r.fail("TLS", message);
            }
            r.ok("TLS", tls);
            return r.fail(credential, message);
        }
    }
    match client.select_one().await {
        Ok(()) => {
            r.ok("SELECT 1", "returned 1");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => r.fail("SELECT 1", e),
    }
}

/// Just enough of a PostgreSQL client to log in to the local proxy and run `SELECT 1` (simple
/// query protocol), over the proxy's own codec.
struct PgMiniClient {
    io: TcpStream,
    buf: BytesMut,
}

impl PgMiniClient {
    async fn connect(local: &LocalProxy) -> Result<Self, String> {
        let addr = local.addr().ok_or("the check proxy has no TCP listener")?;
        let io = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Ok(Self {
            io,
            buf: BytesMut::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("writing to the proxy: {e}"))
    }

    async fn message(&mut self) -> Result<pg::Message, String> {
        use tokio::io::AsyncReadExt;
        loop {
            match pg::frame::take_message(&mut self.buf, 1 << 20) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(format!("unreadable answer from the proxy: {e}")),
            }
            match tokio::time::timeout(STEP_TIMEOUT, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return Err("the proxy did not answer within 30 s".into()),
                Ok(Ok(0)) => return Err("the proxy closed the connection".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("reading from the proxy: {e}")),
            }
        }
    }

    /// Logs in as `user`: the server's version, or the message of the error that ended it.
    async fn login(&mut self, user: &str) -> Result<Result<String, String>, String> {
        let mut out = BytesMut::new();
        pg::StartupMessage::new(
            pg::ProtocolVersion::V3_0,
            user,
            &[
                ("database", "postgres"),
                ("application_name", "rds-iam-proxy doctor"),
            ],
        )
        .encode(&mut out)
        .map_err(|e| e.to_string())?;
        self.send(&out).await?;
        let mut version = String::from("unknown");
        loop {
            let m = self.message().await?;
            match pg::BackendMessage::decode(&m) {
                Ok(pg::BackendMessage::ReadyForQuery(_)) => return Ok(Ok(version)),
                Ok(pg::BackendMessage::ErrorResponse(e)) => {
                    return Ok(Err(e.message().unwrap_or_default().into_owned()));
                }
                Ok(pg::BackendMessage::ParameterStatus(p)) if p.name == "server_version" => {
                    version = p.value;
                }
                Ok(pg::BackendMessage::Authentication(pg::Authentication::Ok)) | Ok(_) => {}
                Err(e) => return Err(format!("unreadable answer during login: {e}")),
            }
        }
    }

    async fn select_one(&mut self) -> Result<(), String> {
        let mut out = BytesMut::new();
        pg::frame::put_message(b'Q', b"SELECT 1\0", &mut out);
        self.send(&out).await?;
        let mut value = None;
        loop {
            let m = self.message().await?;
            match m.tag {
                // DataRow: Int16 column count, then per column Int32 length and the bytes.
                b'D' => value = m.body.get(6..).map(|v| v.to_vec()),
                b'E' => {
                    let e = pg::ErrorResponse::decode(&m.body).map_err(|e| e.to_string())?;
                    return Err(e.message().unwrap_or_default().into_owned());
                }
                b'Z' => break,
                _ => {}
            }
        }
        match value.as_deref() {
            Some(b"1") => Ok(()),
            other => Err(format!("unexpected row {other:?}")),
        }
    }
}

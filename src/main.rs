//! `rds-iam-proxy`: parse the command line, set up logging, run, map errors to an exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tracing::{info, warn};

use rds_iam_proxy::cli::{
    Cli, Command, DsnArgs, ExecArgs, LogArgs, LogFormat, ServeArgs, TokenArgs, WaitArgs,
};
use rds_iam_proxy::iam::{self, TokenCache, TokenRequest};
use rds_iam_proxy::local::{LocalProxy, url_escape};
use rds_iam_proxy::ssm::SsmConfig;
use rds_iam_proxy::tunnel::ssm::Ssm;
use rds_iam_proxy::tunnel::{Connector, Direct};
use rds_iam_proxy::{config, health, shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rds-iam-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Token(args)) => token(args).await.map(|()| ExitCode::SUCCESS),
            Some(Command::Exec(args)) => exec(*args).await,
            Some(Command::Dsn(args)) => dsn(&args).map(|()| ExitCode::SUCCESS),
            Some(Command::Wait(args)) => wait(args).await.map(|()| ExitCode::SUCCESS),
            None => serve(cli.serve).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rds-iam-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Dependencies whose TRACE events print secrets; their TRACE level stays off whatever RUST_LOG
/// or -vv ask for (tests/secrets.rs runs a whole session at full trace and checks the output):
/// - `aws_sigv4` logs each canonical request, which holds the session token
///   (`X-Amz-Security-Token`) of every signed SSM call and every presigned IAM token;
/// - `aws_smithy_runtime::client::orchestrator` logs raw response bodies and operation outputs,
///   which hold the SSM session's `TokenValue` (StartSession, ResumeSession);
/// - `tungstenite` logs the WebSocket upgrade request (its `Authorization` signature and session
///   token) and every frame's payload, among them OpenDataChannel's `TokenValue`.
///
/// Their DEBUG events carry none of these and stay available.
const SECRET_BEARING_TRACE: &[&str] = &[
    "aws_sigv4",
    "aws_smithy_runtime::client::orchestrator",
    "tungstenite",
];

fn secret_bearing_trace(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == tracing::Level::TRACE
        && SECRET_BEARING_TRACE.iter().any(|t| {
            meta.target()
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

fn init_tracing(log: &LogArgs) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match (log.quiet, log.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "info,rds_iam_proxy=debug",
        (false, _) => "debug,rds_iam_proxy=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let never = tracing_subscriber::filter::filter_fn(|meta| !secret_bearing_trace(meta));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().finish().with(never).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(never)
            .init(),
    }
}

/// A running proxy, its configuration, and the SSM pool to end on shutdown (if any).
struct Started {
    local: LocalProxy,
    cfg: config::Config,
    ssm: Option<Ssm>,
}

/// Builds the configuration and starts the proxy (and its health endpoint) in-process.
async fn start(args: &ServeArgs) -> Result<Started> {
    let (provider, aws_region) = iam::load_aws(args.profile.as_deref()).await;
    let cfg = config::build(args, aws_region)?;
    let tokens = Arc::new(TokenCache::new(provider, cfg.profile.clone()));
    let mut ssm = None;
    let connector: Arc<dyn Connector> = match &cfg.ssm_target {
        Some(target) => {
            let sdk = iam::load_sdk_config(cfg.profile.as_deref(), Some(&cfg.proxy.region)).await;
            let mut sc = SsmConfig::new(
                target.clone(),
                cfg.proxy.endpoint_host.clone(),
                cfg.proxy.endpoint_port,
                cfg.proxy.region.clone(),
            );
            if let Some(n) = cfg.ssm_sessions {
                sc.sessions = n;
            }
            let s = Ssm::new(sc, &sdk).context("starting the SSM session pool")?;
            ssm = Some(s.clone());
            Arc::new(s)
        }
        None => Arc::new(Direct::new(cfg.dial.clone())),
    };
    let local = LocalProxy::start_with(&cfg, connector, tokens).await?;
    if let Some(addr) = cfg.health {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --health-addr {addr}"))?;
        tokio::spawn(health::serve(
            listener,
            local.proxy().clone(),
            local.stop_token(),
        ));
    }
    Ok(Started { local, cfg, ssm })
}

impl Started {
    /// Waits for the proxy to stop, then ends the SSM sessions (TerminateSession).
    async fn wait(self) -> usize {
        let left = self.local.wait().await;
        if let Some(ssm) = self.ssm {
            ssm.shutdown().await;
        }
        left
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let started = start(&args).await?;
    let (local, cfg) = (&started.local, &started.cfg);
    let user = match &cfg.proxy.db_user {
        Some(u) => format!("as IAM user {u}"),
        None => "as the user each client names".to_owned(),
    };
    println!(
        "rds-iam-proxy listening on {}, forwarding to {} (region {}, {user})",
        local.listening_on(),
        local.proxy().destination(),
        cfg.proxy.region
    );
    tokio::spawn(shutdown::on_signal(local.stop_token()));
    let left = started.wait().await;
    if left > 0 {
        warn!(
            open = left,
            "closed connections still open at the end of --max-sigterm-delay"
        );
    }
    info!("stopped");
    Ok(())
}

async fn exec(mut args: ExecArgs) -> Result<ExitCode> {
    if args.serve.listen.is_none() {
        args.serve.listen = Some("127.0.0.1:0".to_owned());
    }
    let Some(user) = args.serve.db_user.clone() else {
        bail!("exec needs the IAM database user: pass --db-user (or set RDS_IAM_PROXY_DB_USER)");
    };
    let started = start(&args.serve).await?;
    let local = &started.local;
    let addr = local.addr().context("exec needs a TCP listener")?;
    let (program, rest) = args
        .command
        .split_first()
        .context("exec needs a client to run after `--`")?;
    let mut cmd = tokio::process::Command::new(program);
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name == "mysql" || name == "mariadb" {
        cmd.arg("-h")
            .arg(addr.ip().to_string())
            .arg("-P")
            .arg(addr.port().to_string())
            .arg("-u")
            .arg(&user)
            .arg("--protocol=TCP");
    }
    cmd.args(rest)
        .env("MYSQL_HOST", addr.ip().to_string())
        .env("MYSQL_TCP_PORT", addr.port().to_string())
        .env("MYSQL_USER", &user)
        .env("DATABASE_URL", local.url())
        .env_remove("MYSQL_PWD");
    let status = cmd
        .status()
        .await
        .with_context(|| format!("cannot run `{program}`"))?;
    local.stop_token().cancel();
    started.wait().await;
    // The client's own exit code, or 128 + signal like a shell.
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn dsn(args: &DsnArgs) -> Result<()> {
    let addr: std::net::SocketAddr = args
        .listen
        .parse()
        .map_err(|_| config::Error::BadListen(args.listen.clone()))?;
    let (host, port) = (addr.ip(), addr.port());
    let user = &args.db_user;
    let db = args.database.as_deref().unwrap_or("");
    let u = url_escape(user);
    println!("mysql://{u}@{host}:{port}/{db}");
    println!("jdbc:mysql://{host}:{port}/{db}?user={u}&sslMode=PREFERRED");
    println!("jdbc:mariadb://{host}:{port}/{db}?user={u}");
    println!("MYSQL_HOST={host}");
    println!("MYSQL_TCP_PORT={port}");
    println!("MYSQL_USER={user}");
    println!("DATABASE_URL=mysql://{u}@{host}:{port}/{db}");
    Ok(())
}

async fn wait(args: WaitArgs) -> Result<()> {
    health::wait_ready(&args.health_addr, args.timeout)
        .await
        .map_err(anyhow::Error::msg)
}

async fn token(args: TokenArgs) -> Result<()> {
    let (host, port) = config::parse_endpoint(&args.db_endpoint)?;
    let (provider, aws_region) = iam::load_aws(args.profile.as_deref()).await;
    let region = config::resolve_region(args.region.clone(), &host, aws_region)?;
    let time = match &args.signing_time {
        Some(t) => humantime::parse_rfc3339_weak(t).with_context(|| {
            format!("--signing-time `{t}` is not RFC 3339 (e.g. 2026-01-02T03:04:05Z)")
        })?,
        None => SystemTime::now(),
    };
    let request = TokenRequest {
        host,
        port,
        user: args.db_user.clone(),
        region,
    };
    let creds = iam::credentials(&provider, args.profile.as_deref()).await?;
    let token = iam::presign(&request, &creds, time)?;
    println!("{}", token.expose());
    Ok(())
}

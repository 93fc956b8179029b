//! `rds-iam-proxy`: parse the command line, set up logging, run, map errors to an exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use rds_iam_proxy::cli::{Cli, Command, LogArgs, LogFormat, ServeArgs, TokenArgs};
use rds_iam_proxy::iam::{self, TokenCache, TokenRequest};
use rds_iam_proxy::proxy::Proxy;
use rds_iam_proxy::tunnel::Direct;
use rds_iam_proxy::{config, shutdown};

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
            Some(Command::Token(args)) => token(args).await,
            None => serve(cli.serve).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rds-iam-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(log: &LogArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match (log.quiet, log.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "info,rds_iam_proxy=debug",
        (false, _) => "debug,rds_iam_proxy=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let (provider, aws_region) = iam::load_aws(args.profile.as_deref()).await;
    let cfg = config::build(&args, aws_region)?;
    let tokens = Arc::new(TokenCache::new(provider, cfg.profile.clone()));
    let connector = Arc::new(Direct::new(cfg.dial.clone()));
    let proxy = Proxy::new(cfg.proxy.clone(), connector, tokens)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another MySQL server or proxy using it? Choose another \
                 address with --listen (e.g. 127.0.0.1:3307)",
                cfg.listen
            )
        })?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let user = match &cfg.proxy.db_user {
        Some(u) => format!("as IAM user {u}"),
        None => "as the user each client names".to_owned(),
    };
    println!(
        "rds-iam-proxy listening on {local}, forwarding to {} (region {}, {user})",
        proxy.destination(),
        cfg.proxy.region
    );
    let stop = CancellationToken::new();
    tokio::spawn(shutdown::on_signal(stop.clone()));
    let left = proxy.serve(listener, stop).await;
    if left > 0 {
        warn!(
            open = left,
            "closed connections still open at the end of --max-sigterm-delay"
        );
    }
    info!("stopped");
    Ok(())
}

async fn token(args: TokenArgs) -> Result<()> {
    let (host, port) = config::parse_endpoint(&args.db_endpoint)?;
    let (provider, aws_region) = iam::load_aws(args.profile.as_deref()).await;
    let region = args
        .region
        .clone()
        .or_else(|| iam::region_from_endpoint(&host))
        .or(aws_region)
        .ok_or_else(|| config::Error::NoRegion(host.clone()))?;
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

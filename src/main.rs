//! `rds-iam-proxy`: parse the command line, set up logging, run, map errors to an exit code.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

use tokio_util::sync::CancellationToken;

use rds_iam_proxy::aws::loader;
use rds_iam_proxy::cli::{
    Cli, Command, DsnArgs, ExecArgs, GlobalArgs, InitArgs, LogArgs, LogFormat, ManArgs, ServeArgs,
    TokenArgs, WaitArgs,
};
use rds_iam_proxy::config::Planned;
use rds_iam_proxy::iam::{self, TokenRequest};
use rds_iam_proxy::launch::{self, Running};
use rds_iam_proxy::local::url_escape;
use rds_iam_proxy::progress::Progress;
use rds_iam_proxy::{admin, config, config_file, doctor, health, manual, shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    init_tracing(&cli.global.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.global.threads.map_or(1, usize::from))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rds-iam-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = Progress::new(cli.global.log.quiet);
    let global = cli.global.clone();
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Token(args)) => token(args).await.map(|()| ExitCode::SUCCESS),
            Some(Command::Exec(args)) => exec(*args, &global, &progress).await,
            Some(Command::Dsn(args)) => dsn(&args, &global).await.map(|()| ExitCode::SUCCESS),
            Some(Command::Wait(args)) => wait(args).await.map(|()| ExitCode::SUCCESS),
            Some(Command::Shutdown(args)) => {
                shutdown::request_quit(&args.health_addr, args.timeout)
                    .await
                    .map_err(anyhow::Error::msg)?;
                println!(
                    "rds-iam-proxy at {} is stopping (draining, then exiting)",
                    args.health_addr
                );
                Ok(ExitCode::SUCCESS)
            }
            Some(Command::Doctor(args)) => {
                let file = config_file::load(global.config.as_deref())?;
                let planned = one(&args.serve, args.name.as_deref(), file.as_ref())?;
                Ok(doctor::run(&planned).await)
            }
            Some(Command::Init(args)) => init(&args, &global).map(|()| ExitCode::SUCCESS),
            Some(Command::Completions(args)) => {
                manual::completions(args.shell, &mut std::io::stdout())
                    .context("writing the completions")?;
                Ok(ExitCode::SUCCESS)
            }
            Some(Command::Man(args)) => man(&args).map(|()| ExitCode::SUCCESS),
            Some(Command::Admin(args)) => {
                let file = config_file::load(global.config.as_deref())?;
                let planned = one(&args.serve, args.name.as_deref(), file.as_ref())?;
                admin::run(&planned, &admin::Options::from(&*args), &progress)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            None => serve(&cli.serve, &cli.databases, &global, &progress)
                .await
                .map(|()| ExitCode::SUCCESS),
        }
    });
    // Background tasks (spinners, SSM slots) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rds-iam-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Dependencies whose TRACE events print secrets; their TRACE level stays off whatever RUST_LOG
/// or -vv ask for (tests/aws/secrets.rs runs a whole session at full trace and checks the output):
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

/// The log filter when RUST_LOG is not set. At the default level and with -q only our own lines
/// show: they say what failed and what to do, while a dependency's warning is noise there (e.g.
/// aws-config's Debug dump of an instance-metadata answer on a laptop). -v adds the dependencies'
/// warnings and information, -vv their debug output.
fn default_filter(quiet: bool, verbose: u8) -> &'static str {
    match (quiet, verbose) {
        (true, _) => "off,rds_iam_proxy=warn",
        (false, 0) => "off,rds_iam_proxy=info",
        (false, 1) => "info,rds_iam_proxy=debug",
        (false, _) => "debug,rds_iam_proxy=trace",
    }
}

fn init_tracing(log: &LogArgs) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = default_filter(log.quiet, log.verbose);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let never = tracing_subscriber::filter::filter_fn(|meta| !secret_bearing_trace(meta));
    // A log line that cannot be written (stderr closed, e.g. piped to a process that ended on
    // Ctrl-C) is dropped: tracing-subscriber would otherwise report it with eprintln!, which
    // panics on that same stderr, inside whatever task was logging (the signal handler's, for
    // one, which then never stops the proxy).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match log.log_format {
        LogFormat::Json => builder.json().finish().with(never).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(never)
            .init(),
    }
}

/// Prepares and starts every planned database, then the health endpoint and the credentials
/// watchers.
async fn start_all(planned: &[Planned], progress: &Progress) -> Result<Vec<Running>> {
    let mut running = Vec::new();
    for p in planned {
        let label = |e: anyhow::Error| {
            if planned.len() > 1 {
                e.context(format!("database `{}`", p.name))
            } else {
                e
            }
        };
        let prepared = launch::prepare(p, progress).await.map_err(label)?;
        running.push(launch::start(prepared, progress).await.map_err(label)?);
    }
    let mut profiles: Vec<(Option<String>, String)> = running
        .iter()
        .map(|r| (r.cfg.profile.clone(), r.cfg.proxy.region.clone()))
        .collect();
    profiles.dedup_by(|a, b| a.0 == b.0);
    for (profile, region) in profiles {
        let provider = loader::credentials(profile.as_deref(), &region).await;
        tokio::spawn(iam::watch_expiry(provider, profile));
    }
    if let Some(addr) = running.first().and_then(|r| r.cfg.health) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --health-addr {addr}"))?;
        let watched = running
            .iter()
            .map(|r| health::Watched {
                name: r.name.clone(),
                proxy: r.local.proxy().clone(),
                ssm: r.ssm.as_ref().map(|s| s.pool().clone()),
            })
            .collect();
        let stop = CancellationToken::new();
        for r in &running {
            // The endpoint stops with the first database to stop (they all stop together).
            let (db_stop, stop) = (r.local.stop_token(), stop.clone());
            tokio::spawn(async move {
                db_stop.cancelled().await;
                stop.cancel();
            });
        }
        tokio::spawn(health::serve(listener, watched, stop));
    }
    Ok(running)
}

/// Waits for every database to stop, then ends their SSM sessions; returns the connections that
/// were still open at the drain deadline.
async fn wait_all(running: Vec<Running>) -> usize {
    let mut left = 0;
    for r in running {
        left += r.local.wait().await;
        if let Some(ssm) = r.ssm {
            ssm.shutdown().await;
        }
    }
    left
}

async fn serve(
    args: &ServeArgs,
    names: &[String],
    global: &GlobalArgs,
    progress: &Progress,
) -> Result<()> {
    let file = config_file::load(global.config.as_deref())?;
    let planned = config::plan(args, names, file.as_ref())?;
    let running = start_all(&planned, progress).await?;
    // Handlers first, then the listening lines: a signal after the lines always drains.
    let stop = CancellationToken::new();
    for r in &running {
        let (db_stop, stop) = (r.local.stop_token(), stop.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            db_stop.cancel();
        });
    }
    // SIGINT/SIGTERM, and POST /quitquitquit on the health address, stop every database.
    shutdown::allow_quit_request(stop.clone());
    let min_delay = planned
        .first()
        .and_then(|p| p.args.min_sigterm_delay)
        .unwrap_or_default();
    tokio::spawn(shutdown::on_signal_after(stop, min_delay));
    for r in &running {
        let user = match (&r.cfg.secret, &r.cfg.proxy.db_user) {
            (Some(id), _) => format!("with the user and password of Secrets Manager secret {id}"),
            (None, Some(u)) => format!("as IAM user {u}"),
            (None, None) => "as the user each client names".to_owned(),
        };
        let name = if running.len() > 1 || r.name != config::ADHOC_NAME {
            format!("database {}, ", r.name)
        } else {
            String::new()
        };
        // One line per database; scripts and tests read the address (the fourth word).
        println!(
            "rds-iam-proxy listening on {}, forwarding to {} ({name}region {}, {user}, \
             compression {})",
            r.local.listening_on(),
            r.local.proxy().destination(),
            r.cfg.proxy.region,
            r.cfg.proxy.compression.describe()
        );
    }
    let left = wait_all(running).await;
    if left > 0 {
        warn!(
            open = left,
            "closed connections still open at the end of --max-sigterm-delay"
        );
    }
    info!("stopped");
    Ok(())
}

/// The one database a subcommand works on: `name` from the file, or the flags, or the only one.
fn one(args: &ServeArgs, name: Option<&str>, file: Option<&config_file::File>) -> Result<Planned> {
    let names: Vec<String> = name.map(str::to_owned).into_iter().collect();
    let mut planned = config::plan(args, &names, file)?;
    if planned.len() > 1 {
        let all: Vec<&str> = planned.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "the config file has several databases; name one: {}",
            all.join(", ")
        );
    }
    Ok(planned.remove(0))
}

async fn exec(args: ExecArgs, global: &GlobalArgs, progress: &Progress) -> Result<ExitCode> {
    let file = config_file::load(global.config.as_deref())?;
    let mut planned = one(&args.serve, args.name.as_deref(), file.as_ref())?;
    // A private proxy on a free port, unless --listen was given for this run.
    planned.args.listen = Some(
        args.serve
            .listen
            .clone()
            .unwrap_or("127.0.0.1:0".to_owned()),
    );
    planned.args.health_addr = args.serve.health_addr.clone();
    planned.args.unix_socket = args.serve.unix_socket.clone();
    let running = start_all(std::slice::from_ref(&planned), progress).await?;
    let r = &running[0];
    // With --secret the database user is the secret's (the client's name is not used upstream,
    // but the prompt shows it); the password never leaves the proxy.
    let user = match &r.cfg.proxy.upstream_password {
        Some(source) => match source.credentials().await {
            Ok(c) => Some(c.username),
            Err(e) => {
                running[0].local.stop_token().cancel();
                wait_all(running).await;
                bail!("exec: {e}");
            }
        },
        None => r.cfg.proxy.db_user.clone(),
    };
    let Some(user) = user else {
        running[0].local.stop_token().cancel();
        wait_all(running).await;
        bail!(
            "exec needs the IAM database user: pass --db-user (or set RDS_IAM_PROXY_DB_USER, or \
             `db-user` in the config file)"
        );
    };
    let addr = r
        .local
        .addr()
        .context("exec needs a TCP listener: drop --unix-socket, or add --listen")?;
    let url = r.local.url();
    let (program, rest) = args
        .command
        .split_first()
        .context("exec needs a client to run after `--`")?;
    let mut cmd = tokio::process::Command::new(program);
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut rest = rest;
    let postgres = r.cfg.proxy.engine == rds_iam_proxy::proxy::Engine::Postgres;
    if postgres {
        // libpq's variables serve psql, pg_dump and every libpq-based program; the password
        // variables are dropped (the proxy asks none, or --local-password's own).
        cmd.env("PGHOST", addr.ip().to_string())
            .env("PGPORT", addr.port().to_string())
            .env("PGUSER", &user)
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE");
    } else if name == "mysql" || name == "mariadb" {
        // The option-file flags must come first on these clients' command lines.
        let leading = rest
            .iter()
            .take_while(|a| {
                [
                    "--no-defaults",
                    "--defaults-file",
                    "--defaults-extra-file",
                    "--defaults-group-suffix",
                    "--print-defaults",
                ]
                .iter()
                .any(|f| a.as_str() == *f || a.starts_with(&format!("{f}=")))
            })
            .count();
        cmd.args(&rest[..leading]);
        rest = &rest[leading..];
        cmd.arg("-h")
            .arg(addr.ip().to_string())
            .arg("-P")
            .arg(addr.port().to_string())
            .arg("-u")
            .arg(&user)
            .arg("--protocol=TCP");
    }
    cmd.args(rest).env("DATABASE_URL", url);
    if !postgres {
        cmd.env("MYSQL_HOST", addr.ip().to_string())
            .env("MYSQL_TCP_PORT", addr.port().to_string())
            .env("MYSQL_USER", &user)
            .env_remove("MYSQL_PWD");
    }
    let status = cmd.status().await;
    running[0].local.stop_token().cancel();
    wait_all(running).await;
    let status = status.with_context(|| format!("cannot run `{program}`"))?;
    // The client's own exit code, or 128 + signal like a shell.
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

async fn dsn(args: &DsnArgs, global: &GlobalArgs) -> Result<()> {
    let file = config_file::load(global.config.as_deref())?;
    let planned = one(&args.serve, args.name.as_deref(), file.as_ref())?;
    let engine = config::engine_hint(&planned.args);
    let listen = planned
        .args
        .listen
        .clone()
        .unwrap_or(engine.default_listen().to_owned());
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| config::Error::BadListen(listen.clone()))?;
    let user = match &planned.args.db_user {
        // With --secret: the secret's user name (read once; its password is not printed).
        _ if config::secret_mode(&planned.args) => {
            let prepared = launch::prepare(&planned, &Progress::quiet()).await?;
            let source = launch::password_source(&prepared.cfg, &prepared.api)
                .context("dsn: --secret names no secret")?;
            source
                .credentials()
                .await
                .map_err(anyhow::Error::msg)?
                .username
        }
        Some(u) => u.clone(),
        // The user comes from the stack (or is missing): look it up quietly.
        None => launch::prepare(&planned, &Progress::quiet())
            .await?
            .cfg
            .proxy
            .db_user
            .context(
                "dsn needs the IAM database user: pass --db-user (or `db-user` in the config file)",
            )?,
    };
    let (host, port) = (addr.ip(), addr.port());
    let db = args.database.as_deref().unwrap_or("");
    let u = url_escape(&user);
    if engine == rds_iam_proxy::proxy::Engine::Postgres {
        let dbq = url_escape(db);
        let keyword = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        println!("postgres://{u}@{host}:{port}/{dbq}");
        let mut keywords = format!("host={host} port={port} user={}", keyword(&user));
        if !db.is_empty() {
            keywords.push_str(&format!(" dbname={}", keyword(db)));
        }
        println!("{keywords}");
        println!("jdbc:postgresql://{host}:{port}/{dbq}?user={u}&sslmode=disable");
        println!("PGHOST={host}");
        println!("PGPORT={port}");
        println!("PGUSER={user}");
        if !db.is_empty() {
            println!("PGDATABASE={db}");
        }
        println!("DATABASE_URL=postgres://{u}@{host}:{port}/{dbq}");
        return Ok(());
    }
    println!("mysql://{u}@{host}:{port}/{db}");
    println!("jdbc:mysql://{host}:{port}/{db}?user={u}&sslMode=PREFERRED");
    println!("jdbc:mariadb://{host}:{port}/{db}?user={u}");
    println!("MYSQL_HOST={host}");
    println!("MYSQL_TCP_PORT={port}");
    println!("MYSQL_USER={user}");
    println!("DATABASE_URL=mysql://{u}@{host}:{port}/{db}");
    Ok(())
}

fn init(args: &InitArgs, global: &GlobalArgs) -> Result<()> {
    let path = global
        .config
        .clone()
        .or_else(config_file::default_path)
        .context("no home directory to put the config file in: pass --config PATH")?;
    config_file::write_example(&path, args.force)?;
    println!(
        "wrote {}: edit it, then run `rds-iam-proxy` (or `rds-iam-proxy doctor`)",
        path.display()
    );
    Ok(())
}

fn man(args: &ManArgs) -> Result<()> {
    match &args.out_dir {
        None => manual::man_page(&mut std::io::stdout()).context("writing the man page"),
        Some(dir) => {
            let written = manual::write_man_pages(dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

async fn wait(args: WaitArgs) -> Result<()> {
    health::wait_ready(&args.health_addr, args.timeout)
        .await
        .map_err(anyhow::Error::msg)
}

async fn token(args: TokenArgs) -> Result<()> {
    let (host, port) = config::parse_endpoint(&args.db_endpoint)?;
    let known = args
        .region
        .clone()
        .or_else(|| iam::region_from_endpoint(&host));
    let aws_region = loader::region(args.profile.as_deref(), known).await;
    let region = config::resolve_region(args.region.clone(), &host, aws_region)?;
    let provider = loader::credentials(args.profile.as_deref(), &region).await;
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

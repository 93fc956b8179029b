//! The command line: flags, their environment variables (`RDS_IAM_PROXY_*`) and help text. No
//! logic lives here; `config` validates and turns these into the engine's configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::secret::Secret;

/// A passwordless local MySQL endpoint for Amazon RDS / Aurora MySQL.
///
/// Point any MySQL client at the listen address with your IAM database user name and no
/// password: rds-iam-proxy connects to the database over verified TLS, logs in with a freshly
/// minted IAM token, and then relays the session untouched.
#[derive(Parser, Debug)]
#[command(name = "rds-iam-proxy", version, about, long_about)]
#[command(subcommand_negates_reqs = true, subcommand_precedence_over_arg = true)]
pub struct Cli {
    /// Run the proxy (the default when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Databases of the config file to serve [default: all of them].
    #[arg(value_name = "NAME")]
    pub databases: Vec<String>,

    /// The config file and logging.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses the process's arguments. Flags of the proxy given before a subcommand are refused
    /// (the subcommand has its own: `rds-iam-proxy doctor --stack X`, not `rds-iam-proxy
    /// --stack X doctor`), so none is silently ignored; `--config` and logging flags go anywhere.
    pub fn parse_checked() -> Self {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let mut command = Self::command();
        let matches = command.get_matches_mut();
        if matches.subcommand_name().is_some() {
            let misplaced: Vec<String> = matches
                .ids()
                .filter(|id| command.get_arguments().any(|a| a.get_id() == *id))
                .filter(|id| !matches!(id.as_str(), "config" | "verbose" | "quiet" | "log_format"))
                .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| format!("--{}", id.as_str().replace('_', "-")))
                .collect();
            if !misplaced.is_empty() {
                command
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "{} must come after the subcommand (e.g. `rds-iam-proxy doctor --stack NAME`)",
                            misplaced.join(", ")
                        ),
                    )
                    .exit();
            }
        }
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// Flags every subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The config file with named databases [default: $XDG_CONFIG_HOME/rds-iam-proxy/config.toml,
    /// i.e. ~/.config/rds-iam-proxy/config.toml, if it exists]. `rds-iam-proxy init` writes one.
    #[arg(long, env = "RDS_IAM_PROXY_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Worker threads of the runtime that relays connections [default: 1]. One thread relays
    /// about 1 GB/s; more cost CPU per byte in wake-ups between threads and, on a small machine,
    /// take cores from the client and the database (`cargo bench --bench proxy`).
    #[arg(long, env = "RDS_IAM_PROXY_THREADS", value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check every hop from your AWS credentials to `SELECT 1`, one line each, and say what to
    /// fix first.
    Doctor(Box<DoctorArgs>),
    /// Write a commented example config file (to --config, or the default path).
    Init(InitArgs),
    /// Print an IAM authentication token, like `aws rds generate-db-auth-token`.
    Token(TokenArgs),
    /// Start the proxy on a free local port, run a MySQL client through it, and exit with the
    /// client's exit code (`rds-iam-proxy exec --db-endpoint … --db-user u -- mysql`).
    Exec(Box<ExecArgs>),
    /// Print connection strings (mysql://, JDBC, environment lines) for ORMs and GUI clients.
    Dsn(Box<DsnArgs>),
    /// Block until a running proxy's --health-addr reports ready (for scripts and CI).
    Wait(WaitArgs),
    /// Stop a running proxy gracefully (drain, then exit 0) through its --health-addr: sends
    /// POST /quitquitquit, for the end of a Kubernetes Job or a CI step.
    Shutdown(ShutdownArgs),
    /// Create the IAM database user, once after deploy: read the master password from Secrets
    /// Manager, log in through the tunnel over verified TLS, run deploy/bootstrap-iam-user.sql (or
    /// --sql FILE), then log in as the IAM user with a token to check.
    Admin(Box<AdminArgs>),
    /// Print shell completions (`rds-iam-proxy completions bash > ~/.local/share/bash-completion/
    /// completions/rds-iam-proxy`; zsh: a file `_rds-iam-proxy` in your $fpath; fish:
    /// ~/.config/fish/completions/rds-iam-proxy.fish).
    Completions(CompletionsArgs),
    /// Print the man page (`rds-iam-proxy man > rds-iam-proxy.1`), or write one page per command
    /// into a directory with --out-dir.
    Man(ManArgs),
}

/// Flags of `completions`.
#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Flags of `man`.
#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// Write rds-iam-proxy.1 and rds-iam-proxy-COMMAND.1 for every subcommand here instead of
    /// printing the main page.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Flags of `admin`.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// The database of the config file [default: the only one, or the flags].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// The Secrets Manager secret (ARN or name) with the master user's `username` and `password`
    /// [default: the stack's DbMasterSecretArn output, or the DB cluster's managed secret].
    #[arg(long, env = "RDS_IAM_PROXY_MASTER_SECRET", value_name = "ARN")]
    pub master_secret: Option<String>,

    /// Run this SQL file instead of deploy/bootstrap-iam-user.sql (e.g. for RDS for MariaDB, or
    /// more grants). The string literal 'iam_user' in it stands for the IAM database user.
    #[arg(long, value_name = "FILE")]
    pub sql: Option<PathBuf>,

    /// Print the statements, with the user name filled in, and connect to nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not log in as the IAM database user afterwards (for an administrator who may not
    /// rds-db:connect as it).
    #[arg(long)]
    pub no_verify: bool,

    /// The proxy's flags (where the database is, how to reach it, the IAM user).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of `doctor`.
#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The database of the config file to check [default: the only one, or the flags].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// The proxy's flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of `init`.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Flags of `exec`.
#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The database of the config file to use [default: the only one, or the flags].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// The proxy's flags (`--listen` defaults to a free loopback port here).
    #[command(flatten)]
    pub serve: ServeArgs,

    /// The client and its arguments, after `--`. The mysql/mariadb CLI gets -h/-P/-u; anything
    /// else gets MYSQL_HOST, MYSQL_TCP_PORT, MYSQL_USER and DATABASE_URL.
    #[arg(last = true, required = true, value_name = "CLIENT")]
    pub command: Vec<String>,
}

/// Flags of `dsn`.
#[derive(Args, Debug, Clone)]
pub struct DsnArgs {
    /// The database of the config file [default: the only one, or the flags].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// A default database (schema) for the connection strings.
    #[arg(long, value_name = "SCHEMA")]
    pub database: Option<String>,

    /// The proxy's flags (the listen address and user are printed; a stack is read for its user).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of `shutdown`.
#[derive(Args, Debug, Clone)]
pub struct ShutdownArgs {
    /// The running proxy's --health-addr.
    #[arg(long, env = "RDS_IAM_PROXY_HEALTH_ADDR", value_name = "ADDR")]
    pub health_addr: String,

    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// Flags of `wait`.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// The running proxy's --health-addr.
    #[arg(long, env = "RDS_IAM_PROXY_HEALTH_ADDR", value_name = "ADDR")]
    pub health_addr: String,

    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// Flags of the proxy itself. The same names (`db-endpoint`, `listen`, ...) are the keys of a
/// database in the config file, so the file and the command line cannot drift apart.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// The database endpoint, HOST:PORT (port 3306 if omitted). The token is signed for this name
    /// and TLS verifies it, wherever the bytes actually travel.
    #[arg(long, env = "RDS_IAM_PROXY_DB_ENDPOINT", value_name = "HOST:PORT")]
    pub db_endpoint: Option<String>,

    /// The database's wire protocol [default: what discovery reports for the DB cluster or
    /// instance, else postgres for port 5432, else mysql]. For postgres the default listen
    /// address is 127.0.0.1:5432.
    #[arg(long, env = "RDS_IAM_PROXY_ENGINE", value_enum)]
    pub engine: Option<crate::proxy::config::Engine>,

    /// Read the endpoint, user, region and bastion from the outputs of this CloudFormation stack
    /// (deploy/secure-db-connection.yaml) [default with no other source: SecureDbConnectionStack].
    #[arg(long, env = "RDS_IAM_PROXY_STACK", value_name = "NAME")]
    pub stack: Option<String>,

    /// Read the endpoint from this Aurora DB cluster (rds:DescribeDBClusters).
    #[arg(long, env = "RDS_IAM_PROXY_DB_CLUSTER", value_name = "ID")]
    pub db_cluster: Option<String>,

    /// Read the endpoint from this RDS DB instance (rds:DescribeDBInstances).
    #[arg(long, env = "RDS_IAM_PROXY_DB_INSTANCE", value_name = "ID")]
    pub db_instance: Option<String>,

    /// Use the cluster's reader endpoint (with --stack or --db-cluster).
    #[arg(long, env = "RDS_IAM_PROXY_READER")]
    pub reader: bool,

    /// Reach the database through the RUNNING task of this ECS service's cluster (with
    /// --ecs-service); a replaced task is followed.
    #[arg(long, env = "RDS_IAM_PROXY_ECS_CLUSTER", value_name = "CLUSTER")]
    pub ecs_cluster: Option<String>,

    /// The ECS service of the bastion task (with --ecs-cluster).
    #[arg(long, env = "RDS_IAM_PROXY_ECS_SERVICE", value_name = "SERVICE")]
    pub ecs_service: Option<String>,

    /// The container of the bastion task with the SSM agent [default: the first with a running
    /// ExecuteCommandAgent].
    #[arg(long, env = "RDS_IAM_PROXY_ECS_CONTAINER", value_name = "NAME")]
    pub ecs_container: Option<String>,

    /// Reach the database through this EC2 instance (i-…) with the SSM agent.
    #[arg(long, env = "RDS_IAM_PROXY_INSTANCE", value_name = "ID")]
    pub instance: Option<String>,

    /// Reach the database through the running EC2 instance with this tag (Key=Value).
    #[arg(long, env = "RDS_IAM_PROXY_INSTANCE_TAG", value_name = "KEY=VALUE")]
    pub instance_tag: Option<String>,

    /// Where to open TCP connections, if not the endpoint itself (e.g. the local end of a tunnel).
    #[arg(long, env = "RDS_IAM_PROXY_DIAL", value_name = "ADDR")]
    pub dial: Option<String>,

    /// Reach the database through AWS Systems Manager Session Manager port forwarding via this
    /// target: an EC2 instance id (i-…) or an ECS task (ecs:CLUSTER_TASKID_RUNTIMEID).
    #[arg(long, env = "RDS_IAM_PROXY_SSM_TARGET", value_name = "TARGET")]
    pub ssm_target: Option<String>,

    /// Warm SSM sessions to spread connections over; the agent paces each session to about
    /// 0.9 MiB/s downstream [default: 2].
    #[arg(long, env = "RDS_IAM_PROXY_SSM_SESSIONS", value_name = "N")]
    pub ssm_sessions: Option<usize>,

    /// Over SSM, a session whose sends stay unacknowledged, or whose receive sequence stops
    /// advancing while messages keep arriving, for this long is resumed once, then replaced
    /// [default: 60s].
    #[arg(long, env = "RDS_IAM_PROXY_SSM_STALL_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub ssm_stall_timeout: Option<std::time::Duration>,

    /// Over SSM, what one connection whose client stops reading may hold in memory before the rest
    /// goes to an encrypted temporary file (e.g. 8MiB) [default: 8MiB].
    #[arg(long, env = "RDS_IAM_PROXY_STALL_SPOOL_MEMORY", value_name = "SIZE", value_parser = parse_size)]
    #[serde(deserialize_with = "size")]
    pub stall_spool_memory: Option<u64>,

    /// Over SSM, what one connection whose client stops reading may hold on disk (encrypted,
    /// unlinked); past it that connection ends with a MySQL error [default: 1GiB].
    #[arg(long, env = "RDS_IAM_PROXY_STALL_SPOOL_DISK", value_name = "SIZE", value_parser = parse_size)]
    #[serde(deserialize_with = "size")]
    pub stall_spool_disk: Option<u64>,

    /// What all connections together may hold on disk for clients that stopped reading
    /// [default: 16GiB].
    #[arg(long, env = "RDS_IAM_PROXY_STALL_SPOOL_TOTAL", value_name = "SIZE", value_parser = parse_size)]
    #[serde(deserialize_with = "size")]
    pub stall_spool_total: Option<u64>,

    /// Local address to listen on, loopback only [default: 127.0.0.1:3306, or none when only
    /// --unix-socket is given; a free port for exec].
    #[arg(long, env = "RDS_IAM_PROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Listen on this Unix-domain socket (mode 0600: only your user can connect), for
    /// `mysql --socket PATH` and `mysql://…?socket=PATH`. Without --listen it replaces the TCP
    /// listener; with it, both serve. A stale socket file is replaced, anything else is refused.
    #[arg(long, env = "RDS_IAM_PROXY_UNIX_SOCKET", value_name = "PATH")]
    pub unix_socket: Option<PathBuf>,

    /// AWS region the token is signed for [default: from the endpoint name, else the AWS config].
    #[arg(long, env = "RDS_IAM_PROXY_REGION")]
    pub region: Option<String>,

    /// Log every client in as this IAM database user, whatever user name it sends.
    #[arg(long, env = "RDS_IAM_PROXY_DB_USER", value_name = "USER")]
    pub db_user: Option<String>,

    /// AWS profile for credentials [default: the standard chain: env, profile, SSO, web identity, ECS, IMDS].
    #[arg(long, env = "RDS_IAM_PROXY_PROFILE")]
    pub profile: Option<String>,

    /// PEM file of CAs that replaces the embedded RDS bundle (e.g. AWS's global-bundle.pem, or a
    /// lab's own CA). Verification of the chain and the endpoint name cannot be turned off.
    #[arg(long, env = "RDS_IAM_PROXY_CA_BUNDLE", value_name = "PATH")]
    pub ca_bundle: Option<PathBuf>,

    /// Offer TLS to local clients, with an ephemeral self-signed certificate (for clients that insist).
    #[arg(long, env = "RDS_IAM_PROXY_LOCAL_TLS")]
    pub local_tls: bool,

    /// Send the token only when the server switches to mysql_clear_password (one round trip more),
    /// instead of in the first login packet (the default; an endpoint that asks for the token again
    /// is remembered and gets this order from then on).
    #[arg(long, env = "RDS_IAM_PROXY_SWITCH_AUTH")]
    pub switch_auth: bool,

    /// The default now (the token in the first login packet); kept so older command lines work.
    #[arg(long, hide = true, conflicts_with = "switch_auth")]
    pub direct_auth: bool,

    /// Compress the database leg (MySQL protocol compression, inside TLS): `auto` compresses over
    /// SSM when the server offers it, zstd before zlib, and never over a direct connection;
    /// `zstd` or `zlib` ask for that one on any transport; `off` never. The local leg is never
    /// compressed [default: auto].
    #[arg(
        long,
        env = "RDS_IAM_PROXY_COMPRESSION",
        value_enum,
        value_name = "MODE"
    )]
    pub compression: Option<CompressionMode>,

    /// Time allowed for each login step (a packet from either side, a TLS handshake) [default: 30s].
    #[arg(long, env = "RDS_IAM_PROXY_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Option<std::time::Duration>,

    /// Maximum simultaneous client connections; more are refused with MySQL error 1040 [default: 4096].
    #[arg(long, env = "RDS_IAM_PROXY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Maximum logins in progress that have not authenticated locally yet (each holds a greeted
    /// database connection); more are refused at once with MySQL error 1040, before any database
    /// connection is opened [default: 32].
    #[arg(long, env = "RDS_IAM_PROXY_MAX_PENDING_LOGINS")]
    pub max_pending_logins: Option<usize>,

    /// Log in to the database with the `username` and `password` of this Secrets Manager secret
    /// (ARN or name; the RDS-managed master secret or any `{"username","password"}` secret) instead
    /// of an IAM token. `auto`: the secret discovery finds (the stack's DbMasterSecretArn output,
    /// or the MasterUserSecret of --db-cluster / --db-instance; IAM database authentication is then
    /// not required). Read with secretsmanager:GetSecretValue, re-read after an access denied and
    /// every 5 minutes; never logged; sent only over TLS verified against the endpoint name.
    #[arg(long, env = "RDS_IAM_PROXY_SECRET", value_name = "ARN|NAME")]
    pub secret: Option<String>,

    /// How long open connections may finish after SIGINT/SIGTERM before they are closed [default: 0s].
    #[arg(long, env = "RDS_IAM_PROXY_MAX_SIGTERM_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub max_sigterm_delay: Option<std::time::Duration>,

    /// After SIGTERM, keep accepting new connections this long before draining (for pods whose
    /// application still connects while it shuts down); SIGINT, a second SIGTERM or
    /// POST /quitquitquit ends the wait [default: 0s].
    #[arg(long, env = "RDS_IAM_PROXY_MIN_SIGTERM_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub min_sigterm_delay: Option<std::time::Duration>,

    /// Allow a non-loopback --listen address; requires --local-password.
    #[arg(long, env = "RDS_IAM_PROXY_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// Require this password from local clients (verified from the MySQL scramble).
    #[arg(
        long,
        env = "RDS_IAM_PROXY_LOCAL_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub local_password: Option<Secret>,

    /// Serve /startup, /readiness, /liveness and /metrics (Prometheus) over HTTP on this address,
    /// and stop gracefully on POST /quitquitquit (see `rds-iam-proxy shutdown`).
    #[arg(long, env = "RDS_IAM_PROXY_HEALTH_ADDR", value_name = "ADDR")]
    pub health_addr: Option<String>,
}

/// A duration in a config file, written as on the command line ("30s", "2m").
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration like 30s: {e}")))
}

/// A byte size in a config file, written as on the command line ("8MiB", "1GiB").
pub(crate) fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parses a byte size: a number with an optional unit, B, KiB, MiB, GiB, TiB (K, M, G, T and KB,
/// MB, GB, TB are read as the same powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 8MiB or 1GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit; use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Flags of `token`.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The database endpoint, HOST:PORT (port 3306 if omitted).
    #[arg(long, env = "RDS_IAM_PROXY_DB_ENDPOINT", value_name = "HOST:PORT")]
    pub db_endpoint: String,

    /// The IAM database user.
    #[arg(long, env = "RDS_IAM_PROXY_DB_USER", value_name = "USER")]
    pub db_user: String,

    /// AWS region [default: from the endpoint name, else the AWS config].
    #[arg(long, env = "RDS_IAM_PROXY_REGION")]
    pub region: Option<String>,

    /// AWS profile for credentials.
    #[arg(long, env = "RDS_IAM_PROXY_PROFILE")]
    pub profile: Option<String>,

    /// Sign as of this time (RFC 3339, e.g. 2026-01-02T03:04:05Z), for reproducible tokens.
    #[arg(long, value_name = "RFC3339")]
    pub signing_time: Option<String>,
}

/// Log output.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log line format.
    #[arg(long, env = "RDS_IAM_PROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--compression`: whether the database leg is compressed (DESIGN.md decision 12).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMode {
    /// Over SSM, whatever the server offers (zstd before zlib); never over a direct connection.
    #[default]
    Auto,
    /// zstd (MySQL 8.0.18+), on any transport, when the server offers it.
    Zstd,
    /// zlib, on any transport, when the server offers it.
    Zlib,
    /// Never compress.
    Off,
}

impl CompressionMode {
    /// What the database leg asks for, given whether the transport is SSM.
    pub fn resolve(self, over_ssm: bool) -> crate::proxy::config::Compression {
        use crate::proxy::config::Compression;
        match self {
            CompressionMode::Auto if over_ssm => Compression::ANY,
            CompressionMode::Auto | CompressionMode::Off => Compression::OFF,
            CompressionMode::Zstd => Compression {
                zstd: true,
                zlib: false,
            },
            CompressionMode::Zlib => Compression {
                zstd: false,
                zlib: true,
            },
        }
    }
}

/// Log line formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn compression_auto_means_ssm_only_and_the_others_mean_what_they_say() {
        use crate::proxy::config::Compression;
        let parse = |v: &[&str]| {
            let mut args = vec!["rds-iam-proxy", "--db-endpoint", "db.example:3306"];
            args.extend_from_slice(v);
            Cli::try_parse_from(args).unwrap().serve.compression
        };
        assert_eq!(parse(&[]), None, "unset: the file or the default decides");
        assert_eq!(
            parse(&["--compression", "zlib"]),
            Some(CompressionMode::Zlib)
        );
        assert!(
            Cli::try_parse_from(["rds-iam-proxy", "--compression", "gzip"]).is_err(),
            "only the four values"
        );
        let auto = CompressionMode::default();
        assert_eq!(auto, CompressionMode::Auto);
        assert_eq!(auto.resolve(true), Compression::ANY);
        assert_eq!(auto.resolve(false), Compression::OFF, "never over Direct");
        assert_eq!(CompressionMode::Off.resolve(true), Compression::OFF);
        let zstd = CompressionMode::Zstd.resolve(false);
        assert!(zstd.zstd && !zstd.zlib, "asked for: on any transport");
        let zlib = CompressionMode::Zlib.resolve(true);
        assert!(zlib.zlib && !zlib.zstd);
    }

    #[test]
    fn token_subcommand_parses_without_serve_flags() {
        let cli = Cli::try_parse_from([
            "rds-iam-proxy",
            "token",
            "--db-endpoint",
            "db.example:3306",
            "--db-user",
            "u",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Token(_))));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512 kb"), Ok(512 << 10));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("8 furlongs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn threads_are_counted_from_one_and_token_first_is_the_default() {
        let parse = |v: &[&str]| {
            let mut args = vec!["rds-iam-proxy"];
            args.extend_from_slice(v);
            Cli::try_parse_from(args)
        };
        assert_eq!(parse(&[]).unwrap().global.threads, None, "one, in main");
        assert_eq!(parse(&["--threads", "4"]).unwrap().global.threads, Some(4));
        let e = parse(&["--threads", "0"]).unwrap_err().to_string();
        assert!(e.contains("--threads"), "{e}");
        let cli = parse(&["--db-endpoint", "db.example:3306"]).unwrap();
        assert!(!cli.serve.switch_auth);
        let cli = parse(&["--db-endpoint", "db.example:3306", "--switch-auth"]).unwrap();
        assert!(cli.serve.switch_auth);
        assert!(
            parse(&["--db-endpoint", "d:3306", "--switch-auth", "--direct-auth"]).is_err(),
            "the old flag means the opposite"
        );
    }

    #[test]
    fn no_arguments_is_a_valid_command_line() {
        let cli = Cli::try_parse_from(["rds-iam-proxy"]).unwrap();
        assert!(cli.command.is_none() && cli.databases.is_empty());
    }
}

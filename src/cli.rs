//! The command line: flags, their environment variables (`RDS_IAM_PROXY_*`) and help text. No
//! logic lives here; `config` validates and turns these into the engine's configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::secret::Secret;

/// A passwordless local MySQL endpoint for Amazon RDS / Aurora MySQL.
///
/// Point any MySQL client at the listen address with your IAM database user name and no
/// password: rds-iam-proxy connects to the database over verified TLS, logs in with a freshly
/// minted IAM token, and then relays the session untouched.
#[derive(Parser, Debug)]
#[command(name = "rds-iam-proxy", version, about, long_about)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    /// Run the proxy (the default when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print an IAM authentication token, like `aws rds generate-db-auth-token`.
    Token(TokenArgs),
    /// Start the proxy on a free local port, run a MySQL client through it, and exit with the
    /// client's exit code (`rds-iam-proxy exec --db-endpoint … --db-user u -- mysql`).
    Exec(Box<ExecArgs>),
    /// Print connection strings (mysql://, JDBC, environment lines) for ORMs and GUI clients.
    Dsn(DsnArgs),
    /// Block until a running proxy's --health-addr reports ready (for scripts and CI).
    Wait(WaitArgs),
}

/// Flags of `exec`.
#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
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
    /// The proxy's local address.
    #[arg(
        long,
        env = "RDS_IAM_PROXY_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:3306"
    )]
    pub listen: String,

    /// The IAM database user.
    #[arg(long, env = "RDS_IAM_PROXY_DB_USER", value_name = "USER")]
    pub db_user: String,

    /// A default database (schema) for the connection strings.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
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

/// Flags of the proxy itself.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// The database endpoint, HOST:PORT (port 3306 if omitted). The token is signed for this name
    /// and TLS verifies it, wherever the bytes actually travel.
    #[arg(
        long,
        env = "RDS_IAM_PROXY_DB_ENDPOINT",
        value_name = "HOST:PORT",
        required = true
    )]
    pub db_endpoint: Option<String>,

    /// Where to open TCP connections, if not the endpoint itself (e.g. the local end of a tunnel).
    #[arg(long, env = "RDS_IAM_PROXY_DIAL", value_name = "ADDR")]
    pub dial: Option<String>,

    /// Reach the database through AWS Systems Manager Session Manager port forwarding via this
    /// target: an EC2 instance id (i-…) or an ECS task (ecs:<cluster>_<taskId>_<runtimeId>).
    #[arg(
        long,
        env = "RDS_IAM_PROXY_SSM_TARGET",
        value_name = "TARGET",
        conflicts_with = "dial"
    )]
    pub ssm_target: Option<String>,

    /// Warm SSM sessions to spread connections over; the agent paces each session to about
    /// 0.9 MiB/s downstream [default: 2].
    #[arg(
        long,
        env = "RDS_IAM_PROXY_SSM_SESSIONS",
        value_name = "N",
        requires = "ssm_target"
    )]
    pub ssm_sessions: Option<usize>,

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

    /// Send the token in the first login packet (saves one round trip) instead of answering the
    /// server's switch to mysql_clear_password.
    #[arg(long, env = "RDS_IAM_PROXY_DIRECT_AUTH")]
    pub direct_auth: bool,

    /// Time allowed for each login step (a packet from either side, a TLS handshake) [default: 30s].
    #[arg(long, env = "RDS_IAM_PROXY_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Option<std::time::Duration>,

    /// Maximum simultaneous client connections; more are refused with MySQL error 1040 [default: 4096].
    #[arg(long, env = "RDS_IAM_PROXY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// How long open connections may finish after SIGINT/SIGTERM before they are closed [default: 0s].
    #[arg(long, env = "RDS_IAM_PROXY_MAX_SIGTERM_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_sigterm_delay: Option<std::time::Duration>,

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

    /// Serve /startup, /readiness, /liveness and /metrics (Prometheus) over HTTP on this address.
    #[arg(long, env = "RDS_IAM_PROXY_HEALTH_ADDR", value_name = "ADDR")]
    pub health_addr: Option<String>,
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
    fn serve_requires_an_endpoint() {
        assert!(Cli::try_parse_from(["rds-iam-proxy"]).is_err());
    }
}

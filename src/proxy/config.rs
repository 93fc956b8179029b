//! What one proxy is configured with, engine-neutral: [`ProxyConfig`] (built from the command
//! line by `crate::config`), the [`Engine`] it speaks, the local password's verifiers and the
//! default limits. A leaf of `src/proxy/`: the engines read it, nothing here names an engine's
//! I/O.

use std::sync::Arc;
use std::time::Duration;

use super::password;
use crate::iam::TokenRequest;
use crate::mysql::proto::scramble::PasswordVerifier;
use crate::postgres::proto::scram::{DEFAULT_ITERATIONS, ScramVerifier};
use crate::spool::SpoolLimits;
use crate::tls::CaSource;

/// The database wire protocol a proxy speaks to its clients and to the database
/// (`--engine`, env `RDS_IAM_PROXY_ENGINE`, config key `engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Engine {
    /// MySQL and MariaDB (RDS and Aurora MySQL), in [`crate::mysql`].
    #[default]
    Mysql,
    /// PostgreSQL (RDS and Aurora PostgreSQL), in [`crate::postgres`].
    Postgres,
}

impl Engine {
    /// The name on the command line, in the config file and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Mysql => "mysql",
            Engine::Postgres => "postgres",
        }
    }

    /// The engine's usual port: 3306, 5432.
    pub fn default_port(self) -> u16 {
        match self {
            Engine::Mysql => 3306,
            Engine::Postgres => 5432,
        }
    }

    /// Where the proxy listens for this engine unless told otherwise.
    pub fn default_listen(self) -> &'static str {
        match self {
            Engine::Mysql => "127.0.0.1:3306",
            Engine::Postgres => "127.0.0.1:5432",
        }
    }

    /// The ALPN protocols local TLS offers: PostgreSQL's `postgresql` (which PostgreSQL 17's
    /// direct TLS requires), none for MySQL.
    pub fn alpn(self) -> &'static [&'static [u8]] {
        match self {
            Engine::Mysql => &[],
            Engine::Postgres => &[b"postgresql"],
        }
    }

    /// The engine of an RDS `Engine` value (`DescribeDBClusters` / `DescribeDBInstances`):
    /// `postgres` and `aurora-postgresql` are PostgreSQL; `mysql`, `mariadb`, `aurora-mysql` and
    /// `aurora` are MySQL; anything else is unknown.
    pub fn from_rds(engine: &str) -> Option<Engine> {
        match engine.trim().to_ascii_lowercase().as_str() {
            "postgres" | "aurora-postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" | "aurora-mysql" | "aurora" => Some(Engine::Mysql),
            _ => None,
        }
    }

    /// The engine to speak when none was named and discovery said nothing: PostgreSQL's port
    /// 5432 means PostgreSQL, anything else MySQL.
    pub fn by_port(port: u16) -> Engine {
        if port == Engine::Postgres.default_port() {
            Engine::Postgres
        } else {
            Engine::Mysql
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The optional local password (`--local-password`), kept only as each engine's verifier so the
/// clear password is never held. Redacted in Debug.
#[derive(Clone)]
pub struct LocalPassword {
    /// MySQL's stored double hashes; checked by the MySQL engine ([`crate::mysql`]).
    pub(crate) mysql: PasswordVerifier,
    /// PostgreSQL's SCRAM-SHA-256 keys (fresh random salt), checked by the PostgreSQL engine
    /// ([`crate::postgres`]); `None` for a password SCRAM cannot carry unchanged (not printable
    /// ASCII), which the configuration refuses for that engine.
    pub(crate) postgres: Option<ScramVerifier>,
}

impl LocalPassword {
    /// Derives every engine's verifier from `password`; the password itself is not kept.
    pub fn new(password: &str) -> Self {
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let iterations =
            std::num::NonZeroU32::new(DEFAULT_ITERATIONS).unwrap_or(std::num::NonZeroU32::MIN);
        LocalPassword {
            mysql: PasswordVerifier::new(password),
            postgres: ScramVerifier::new(password, &salt, iterations).ok(),
        }
    }

    /// Whether PostgreSQL clients can prove this password (SCRAM-SHA-256 needs printable ASCII).
    pub fn fits_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl std::fmt::Debug for LocalPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalPassword(<redacted>)")
    }
}

/// Default time allowed for each step of a login (a packet from either side, a TLS handshake).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap on simultaneous client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default cap on logins in progress that have not yet authenticated locally (each holds a
/// database connection that has greeted but not logged in).
pub const DEFAULT_MAX_PENDING_LOGINS: usize = 32;

/// What the engine needs to know; built from the command line by `config`.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The wire protocol spoken to clients and the database.
    pub engine: Engine,
    /// The RDS endpoint host: the name the token is signed for and TLS verifies.
    pub endpoint_host: String,
    /// The RDS endpoint port (signed into the token).
    pub endpoint_port: u16,
    /// The region the token is signed for.
    pub region: String,
    /// Log every client in as this database user instead of the name it sent.
    pub db_user: Option<String>,
    /// The CAs trusted for the upstream TLS leg.
    pub ca_source: CaSource,
    /// Offer TLS to local clients with an ephemeral self-signed certificate.
    pub local_tls: bool,
    /// Send the token in the first upstream login packet (the default; one round trip less)
    /// instead of answering the server's switch to `mysql_clear_password` (`--switch-auth`). An
    /// endpoint that asks for the token again gets the switch order from then on.
    pub direct_auth: bool,
    /// Time allowed for each login step.
    pub handshake_timeout: Duration,
    /// Cap on simultaneous client connections; more are refused (MySQL: ERR 1040).
    pub max_connections: usize,
    /// Cap on logins not yet authenticated locally; more are refused at once (MySQL: ERR 1040),
    /// before any database connection is opened for them.
    pub max_pending_logins: usize,
    /// How long open connections may finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Require this local password from clients (checked from its scramble, never in clear).
    pub local_password: Option<LocalPassword>,
    /// Bounds on what is held for clients that stop reading over a shared transport.
    pub spool: SpoolLimits,
    /// Where spool files go (the system's temporary directory when `None`).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Log in upstream with this user name and password (`--secret`) instead of IAM tokens.
    pub upstream_password: Option<Arc<dyn password::PasswordSource>>,
    /// What the database leg asks for (`--compression`, already resolved against the transport).
    pub compression: Compression,
}

/// The protocol compression the database leg asks for when the server offers it (DESIGN.md
/// decision 12); the local leg is never compressed. Resolved from `--compression` once the
/// transport is known, so a login only picks among what is allowed here and offered there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compression {
    /// zstd may be used (preferred when both are allowed and offered).
    pub zstd: bool,
    /// zlib may be used.
    pub zlib: bool,
}

impl Compression {
    /// Never compress.
    pub const OFF: Compression = Compression {
        zstd: false,
        zlib: false,
    };
    /// Whatever the server offers, zstd first.
    pub const ANY: Compression = Compression {
        zstd: true,
        zlib: true,
    };

    /// For the start-up line and `doctor`: what the database leg does.
    pub fn describe(self) -> &'static str {
        match (self.zstd, self.zlib) {
            (false, false) => "off",
            (true, true) => "zstd or zlib, as the server offers",
            (true, false) => "zstd, if the server offers it",
            (false, true) => "zlib, if the server offers it",
        }
    }
}

impl ProxyConfig {
    /// A config with defaults for everything but the endpoint and region.
    pub fn new(
        endpoint_host: impl Into<String>,
        endpoint_port: u16,
        region: impl Into<String>,
    ) -> Self {
        ProxyConfig {
            engine: Engine::default(),
            endpoint_host: endpoint_host.into(),
            endpoint_port,
            region: region.into(),
            db_user: None,
            ca_source: CaSource::Embedded,
            local_tls: false,
            direct_auth: true,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_logins: DEFAULT_MAX_PENDING_LOGINS,
            shutdown_grace: Duration::ZERO,
            local_password: None,
            spool: SpoolLimits::DEFAULT,
            spool_dir: None,
            upstream_password: None,
            compression: Compression::OFF,
        }
    }

    /// What to ask the token source for to log `user` in.
    pub fn token_request(&self, user: &str) -> TokenRequest {
        TokenRequest {
            host: self.endpoint_host.clone(),
            port: self.endpoint_port,
            user: user.to_owned(),
            region: self.region.clone(),
        }
    }

    /// `host:port` of the endpoint, for messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.endpoint_host, self.endpoint_port)
    }
}

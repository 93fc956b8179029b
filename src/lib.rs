//! rds-iam-proxy: a passwordless local database for Amazon RDS / Aurora with IAM authentication.
//!
//! A client connects to the proxy on 127.0.0.1 with a user name and no password. For each
//! connection the proxy opens a stream to the database through a [`tunnel::Connector`] (plain TCP,
//! or SSM Session Manager with no plugin), reads the server's greeting **before** greeting the
//! client (so both legs agree on every capability that shapes the wire format), accepts the
//! client's login locally, logs in upstream over TLS verified against the RDS endpoint name with a
//! freshly minted IAM token (or, with `--secret`, a Secrets Manager password), and then relays the
//! session byte for byte.
//!
//! The modules fall into four groups; arrows point down the list only.
//!
//! **App** — what a person runs. [`cli`] parses flags, [`config`] and [`config_file`] turn them and
//! the configuration file into one plan, [`launch`] resolves it against AWS (discovery, the SSM
//! target resolver) and [`local`] starts a proxy in-process (for `serve`, `exec` and Rust test
//! suites). [`doctor`] checks every hop, [`admin`] bootstraps the IAM database user, [`health`]
//! serves readiness, metrics and `POST /quitquitquit`, [`shutdown`] turns signals into a
//! cancellation, [`progress`] shows start-up steps, [`manual`] generates completions and man
//! pages. `main.rs` only parses, runs and maps errors to exit codes.
//!
//! **Engine** — the wire protocols (DESIGN.md decision 14). [`proxy`] is what every engine shares:
//! the listener with its limits, throttle and drain, per-connection statistics, the leaves every
//! engine reads ([`proxy::config`], [`proxy::shared`], [`proxy::relay`]: the two directions'
//! arbitration and read sizing) and the engine seam [`proxy::engine`], the one file that names
//! the engines' folders. [`mysql`] is everything of MySQL's: its sans-IO codec in
//! [`mysql::proto`] (packets, capability rules, the one upstream-auth exchange, the command
//! scanner, protocol compression) and the I/O around it ([`mysql::login`] bridges a login,
//! [`mysql::splice`] relays after it, replaying `COM_CHANGE_USER` as an IAM login,
//! [`mysql::compressed`] is the compressed database leg). [`postgres`] is PostgreSQL's: its
//! sans-IO startup and authentication codec in [`postgres::proto`], the login bridge, the relay
//! and the cancel requests.
//!
//! **Transport** — how bytes reach the database. [`tunnel`] is the `Connector` seam (`Direct`,
//! `Ssm`); [`ssm`] is the Session Manager data channel: its sans-IO layer in [`ssm::proto`]
//! (AgentMessage, payloads, reliable channel, smux, handshake) and the I/O around it (WebSocket,
//! session actor, stream table, pool); [`spool`] holds bytes for a client that stopped reading;
//! [`http_proxy`] tunnels the connections the proxy dials itself through a corporate HTTP proxy.
//!
//! **Shared** — leaves every group uses. [`iam`] mints and caches RDS IAM tokens from the default
//! credential chain; [`tls`] builds the rustls configurations (RDS CA bundle, local ephemeral
//! certificate); [`aws`] holds discovery (CloudFormation, RDS, ECS, EC2, STS), Secrets Manager and
//! the SigV4 client they use; [`io`] the byte-stream types and socket options; [`secret`] keeps
//! secrets out of `Debug`; [`text`] escapes peer-chosen text for logs and errors.
//!
//! The SSM simulator and the local AWS account that tests, benchmarks and newcomers use are not
//! part of this crate: they are the `ssm-sim` crate (`crates/ssm-sim`), which depends on this one.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod aws;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod doctor;
pub mod health;
pub mod http_proxy;
pub mod iam;
pub mod io;
pub mod launch;
pub mod local;
pub mod manual;
pub mod mysql;
pub mod postgres;
pub mod progress;
pub mod proxy;
pub mod secret;
pub mod shutdown;
pub mod spool;
pub mod ssm;
pub mod text;
pub mod tls;
pub mod tunnel;

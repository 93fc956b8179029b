//! rds-iam-proxy: a passwordless local MySQL endpoint for Amazon RDS / Aurora MySQL.
//!
//! A MySQL client connects to the proxy on 127.0.0.1 with a user name and no password. For each
//! connection the proxy:
//!
//! 1. opens a stream to the database through a [`tunnel::Connector`] (plain TCP today, SSM Session
//!    Manager next) and reads the server greeting **before** greeting the client, so both legs
//!    agree on every capability that shapes the wire format ([`mysql::login`]);
//! 2. accepts the client's login locally whatever it holds ([`mysql`] is the sans-IO codec);
//! 3. upgrades the upstream leg to TLS, verified against the RDS endpoint name with the embedded
//!    RDS CA bundle ([`tls`]), and logs in with an IAM token ([`iam`]) through
//!    `mysql_clear_password` — or, with `--secret`, with the user name and password of a Secrets
//!    Manager secret ([`proxy::password`]);
//! 4. relays the session byte for byte, replaying `COM_CHANGE_USER` as an IAM login
//!    ([`mysql::splice`]).
//!
//! [`cli`] and [`config`] turn flags into a [`proxy::ProxyConfig`]; [`proxy::Proxy::serve`] runs the
//! accept loop until a [`tokio_util::sync::CancellationToken`] fires ([`shutdown`]: signals,
//! `POST /quitquitquit`). [`ssm`] holds the Session Manager data-channel layers the SSM transport
//! is built on; [`http_proxy`] tunnels the connections the proxy dials itself (AWS API calls, the
//! SSM WebSocket) through a corporate HTTP proxy; [`manual`] generates completions and man pages.

#![forbid(unsafe_code)]

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

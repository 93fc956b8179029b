//! Starting a proxy in-process: the engine behind `serve` and `exec`, and a small API for Rust
//! test suites that want an RDS database as if it were a local one.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use rds_iam_proxy::local::LocalProxy;
//!
//! // Credentials and region come from the usual AWS places (env, profile, SSO, ECS/IMDS).
//! let db = LocalProxy::builder("mydb.cluster-abc123.eu-west-1.rds.amazonaws.com:3306")
//!     .db_user("app_iam_user")
//!     .start()
//!     .await?;
//! let url = db.url(); // mysql://app_iam_user@127.0.0.1:<free port>/
//! // ... point the code under test at `url` or `db.addr()` ...
//! db.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::config::{self, Config};
use crate::iam::{self, TokenCache, TokenSource};
use crate::proxy::Proxy;
use crate::tunnel::{Connector, Direct};

/// A proxy serving on a local address until [`LocalProxy::shutdown`] (or drop of the runtime).
pub struct LocalProxy {
    /// Where it listens.
    addr: SocketAddr,
    /// The IAM user clients are logged in as, when fixed.
    db_user: Option<String>,
    /// The engine.
    proxy: Proxy,
    /// Cancelling stops the accept loop.
    stop: CancellationToken,
    /// The accept loop.
    task: tokio::task::JoinHandle<usize>,
}

impl LocalProxy {
    /// A builder for a proxy to `endpoint` (`HOST[:PORT]`), listening on a free loopback port.
    pub fn builder(endpoint: &str) -> LocalProxyBuilder {
        LocalProxyBuilder {
            args: ServeArgs {
                db_endpoint: Some(endpoint.to_owned()),
                listen: Some("127.0.0.1:0".to_owned()),
                ..ServeArgs::default()
            },
            credentials: None,
        }
    }

    /// Binds `cfg.listen` and starts serving with the given seams.
    pub async fn start_with(
        cfg: &Config,
        connector: Arc<dyn Connector>,
        tokens: Arc<dyn TokenSource>,
    ) -> anyhow::Result<Self> {
        let proxy = Proxy::new(cfg.proxy.clone(), connector, tokens)?;
        let listener = TcpListener::bind(cfg.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another MySQL server or proxy using it? Choose another \
                 address with --listen (e.g. 127.0.0.1:3307)",
                cfg.listen
            )
        })?;
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let proxy = proxy.clone();
            let stop = stop.clone();
            async move { proxy.serve(listener, stop).await }
        });
        Ok(LocalProxy {
            addr,
            db_user: cfg.proxy.db_user.clone(),
            proxy,
            stop,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mysql://USER@HOST:PORT/` for the fixed IAM user (or without a user).
    pub fn url(&self) -> String {
        match &self.db_user {
            Some(u) => format!("mysql://{}@{}/", url_escape(u), self.addr),
            None => format!("mysql://{}/", self.addr),
        }
    }

    /// The engine, for its counters.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// A token that stops the proxy when cancelled (for signal handlers).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the proxy stops (after its stop token is cancelled); returns how many
    /// connections were still open when the drain deadline passed.
    pub async fn wait(self) -> usize {
        self.task.await.unwrap_or(0)
    }

    /// Stops accepting, closes open connections after the drain delay, and waits for it.
    pub async fn shutdown(self) -> usize {
        self.stop.cancel();
        self.wait().await
    }
}

/// Options for [`LocalProxy::builder`].
pub struct LocalProxyBuilder {
    /// The same options the command line takes.
    args: ServeArgs,
    /// Fixed credentials instead of the default chain.
    credentials: Option<Credentials>,
}

impl LocalProxyBuilder {
    /// Log every client in as this IAM database user.
    pub fn db_user(mut self, user: &str) -> Self {
        self.args.db_user = Some(user.to_owned());
        self
    }

    /// Sign tokens for this region (default: from the endpoint name, else the AWS config).
    pub fn region(mut self, region: &str) -> Self {
        self.args.region = Some(region.to_owned());
        self
    }

    /// Open TCP connections to this address instead of the endpoint.
    pub fn dial(mut self, addr: &str) -> Self {
        self.args.dial = Some(addr.to_owned());
        self
    }

    /// Trust these CAs instead of the embedded RDS bundle.
    pub fn ca_bundle(mut self, path: impl Into<PathBuf>) -> Self {
        self.args.ca_bundle = Some(path.into());
        self
    }

    /// Use this AWS profile.
    pub fn profile(mut self, profile: &str) -> Self {
        self.args.profile = Some(profile.to_owned());
        self
    }

    /// Use these credentials instead of the default chain.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Listen here instead of a free loopback port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.args.listen = Some(addr.to_string());
        self
    }

    /// Starts the proxy.
    pub async fn start(self) -> anyhow::Result<LocalProxy> {
        let (provider, aws_region) = match self.credentials {
            Some(c) => (SharedCredentialsProvider::new(c), None),
            None => iam::load_aws(self.args.profile.as_deref()).await,
        };
        let cfg = config::build(&self.args, aws_region)?;
        let tokens = Arc::new(TokenCache::new(provider, cfg.profile.clone()));
        let connector = Arc::new(Direct::new(cfg.dial.clone()));
        LocalProxy::start_with(&cfg, connector, tokens).await
    }
}

/// Percent-encodes what a URL user part cannot carry as is.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

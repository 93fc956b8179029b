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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::config::{self, Config};
use crate::iam::{self, TokenCache, TokenSource};
use crate::proxy::Proxy;
use crate::proxy::listener::{Listener, UnixSocket};
use crate::tunnel::{Connector, Direct};

/// A proxy serving on a local address until [`LocalProxy::shutdown`] (or drop of the runtime).
pub struct LocalProxy {
    /// Where it listens over TCP (`None`: only on the Unix socket).
    addr: Option<SocketAddr>,
    /// Its Unix socket, if any.
    unix_socket: Option<PathBuf>,
    /// The IAM user clients are logged in as, when fixed.
    db_user: Option<String>,
    /// The wire protocol it speaks (the URL's scheme).
    engine: crate::proxy::Engine,
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

    /// Binds `cfg.listen` and `cfg.unix_socket` and starts serving with the given seams.
    pub async fn start_with(
        cfg: &Config,
        connector: Arc<dyn Connector>,
        tokens: Arc<dyn TokenSource>,
    ) -> anyhow::Result<Self> {
        let proxy = Proxy::new(cfg.proxy.clone(), connector, tokens)?;
        let tcp = match cfg.listen {
            Some(listen) => Some(TcpListener::bind(listen).await.with_context(|| {
                let (server, other) = match cfg.proxy.engine {
                    crate::proxy::Engine::Postgres => ("PostgreSQL", "127.0.0.1:5433"),
                    _ => ("MySQL", "127.0.0.1:3307"),
                };
                format!(
                    "cannot listen on {listen}: is another {server} server or proxy using it? \
                     Choose another address with --listen (e.g. {other})"
                )
            })?),
            None => None,
        };
        let unix = cfg
            .unix_socket
            .as_deref()
            .map(UnixSocket::bind)
            .transpose()?;
        let listener = Listener::new(tcp, unix);
        let addr = listener.local_addr();
        let unix_socket = listener.unix_path().map(Path::to_owned);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let proxy = proxy.clone();
            let stop = stop.clone();
            async move { proxy.serve(listener, stop).await }
        });
        Ok(LocalProxy {
            addr,
            unix_socket,
            db_user: cfg.proxy.db_user.clone(),
            engine: cfg.proxy.engine,
            proxy,
            stop,
            task,
        })
    }

    /// The TCP address clients connect to (`None` when it listens only on a Unix socket).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The Unix socket clients connect to, if any.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    /// Where it listens, for people: `127.0.0.1:3306`, `socket /run/x.sock`, or both.
    pub fn listening_on(&self) -> String {
        match (self.addr, &self.unix_socket) {
            (Some(a), Some(p)) => format!("{a} and socket {}", p.display()),
            (Some(a), None) => a.to_string(),
            (None, Some(p)) => format!("socket {}", p.display()),
            (None, None) => "nothing".to_owned(),
        }
    }

    /// `mysql://USER@HOST:PORT/` for the fixed IAM user (or without a user); over the Unix
    /// socket only, `mysql://USER@localhost/?socket=PATH`. For PostgreSQL, `postgres://…` (over
    /// a socket named as libpq names them, `postgres://USER@/?host=DIR&port=PORT`).
    pub fn url(&self) -> String {
        let user = match &self.db_user {
            Some(u) => format!("{}@", url_escape(u)),
            None => String::new(),
        };
        if self.engine == crate::proxy::Engine::Postgres {
            return match (self.addr, &self.unix_socket) {
                (Some(a), _) => format!("postgres://{user}{a}/"),
                (None, Some(p)) => match libpq_socket(p) {
                    Some((dir, port)) => {
                        format!("postgres://{user}/?host={}&port={port}", socket_query(dir))
                    }
                    None => format!("postgres://{user}localhost/"),
                },
                (None, None) => format!("postgres://{user}localhost/"),
            };
        }
        match (self.addr, &self.unix_socket) {
            (Some(a), _) => format!("mysql://{user}{a}/"),
            (None, Some(p)) => format!("mysql://{user}localhost/?socket={}", socket_query(p)),
            (None, None) => format!("mysql://{user}localhost/"),
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

    /// Also listen on this Unix-domain socket (mode 0600).
    pub fn unix_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.args.unix_socket = Some(path.into());
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

/// What [`url_escape`] percent-encodes: everything but RFC 3986's unreserved characters.
const URL_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What [`socket_query`] percent-encodes: as [`URL_ESCAPED`], but `/` stays readable.
const SOCKET_PATH_ESCAPED: &AsciiSet = &URL_ESCAPED.remove(b'/');

/// Percent-encodes what a URL user part cannot carry as is.
pub fn url_escape(s: &str) -> String {
    percent_encode(s.as_bytes(), URL_ESCAPED).to_string()
}

/// The directory and port of a socket named as libpq looks for it (`DIR/.s.PGSQL.PORT`).
pub fn libpq_socket(path: &Path) -> Option<(&Path, u16)> {
    let port = path
        .file_name()?
        .to_str()?
        .strip_prefix(".s.PGSQL.")?
        .parse()
        .ok()?;
    Some((path.parent()?, port))
}

/// A socket path as a URL query value (`/` kept readable).
pub fn socket_query(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    percent_encode(path.as_os_str().as_bytes(), SOCKET_PATH_ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_all_but_unreserved_characters() {
        assert_eq!(url_escape("app_iam-user.1~"), "app_iam-user.1~");
        assert_eq!(url_escape("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
        assert_eq!(
            socket_query(Path::new("/run/my db/p.sock")),
            "/run/my%20db/p.sock"
        );
    }
}

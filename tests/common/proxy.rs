//! Runs the proxy in-process for a test: bound to a free loopback port, configured against an
//! upstream, with static test credentials; stopped (and its connections closed) on `stop`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use rds_iam_proxy::iam::TokenCache;
use rds_iam_proxy::proxy::{Proxy, ProxyConfig};
use rds_iam_proxy::tls::CaSource;
use rds_iam_proxy::tunnel::{Connector, Direct};
use tokio_util::sync::CancellationToken;

use super::clients::Target;

/// What a test proxy connects to.
#[derive(Clone, Debug)]
pub struct UpstreamSpec {
    /// Endpoint host (signed and verified).
    pub endpoint_host: String,
    /// Endpoint port (signed).
    pub endpoint_port: u16,
    /// Dial address.
    pub dial: String,
    /// Region.
    pub region: String,
    /// CA bundle.
    pub ca: PathBuf,
    /// Static credentials.
    pub akid: String,
    /// Static credentials.
    pub secret: String,
}

impl UpstreamSpec {
    /// The spec for an RDS-shaped MariaDB.
    pub fn of(up: &super::upstream::RdsLikeUpstream) -> Self {
        UpstreamSpec {
            endpoint_host: up.endpoint_host.clone(),
            endpoint_port: up.endpoint_port,
            dial: up.dial_addr(),
            region: up.region.clone(),
            ca: up.ca.clone(),
            akid: up.akid.clone(),
            secret: up.secret.clone(),
        }
    }
}

/// A proxy serving on a free loopback port.
pub struct RunningProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The engine (for its stats).
    pub proxy: Proxy,
    /// Cancelling stops it.
    stop: CancellationToken,
    /// The serve task.
    task: tokio::task::JoinHandle<usize>,
}

impl RunningProxy {
    /// Starts a proxy for `spec`; `tweak` adjusts the config first.
    pub async fn start(spec: &UpstreamSpec, tweak: impl FnOnce(&mut ProxyConfig)) -> Self {
        let connector = Arc::new(Direct::new(spec.dial.clone()));
        Self::start_with(spec, connector, tweak).await
    }

    /// Starts a proxy for `spec` over the given connector.
    pub async fn start_with(
        spec: &UpstreamSpec,
        connector: Arc<dyn Connector>,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        let mut config = ProxyConfig::new(
            spec.endpoint_host.clone(),
            spec.endpoint_port,
            spec.region.clone(),
        );
        config.ca_source = CaSource::File(spec.ca.clone());
        tweak(&mut config);
        let creds = Credentials::new(spec.akid.clone(), spec.secret.clone(), None, None, "test");
        let tokens = Arc::new(TokenCache::new(SharedCredentialsProvider::new(creds), None));
        let proxy = Proxy::new(config, connector, tokens).expect("proxy config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let proxy = proxy.clone();
            let stop = stop.clone();
            async move { proxy.serve(listener, stop).await }
        });
        RunningProxy {
            addr,
            proxy,
            stop,
            task,
        }
    }

    /// A client target for `user` with no password over plain TCP.
    pub fn target(&self, user: &str) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.addr.port(),
            user: user.into(),
            password: None,
            ssl_ca: None,
        }
    }

    /// Stops serving and closes every connection; returns how many were still open.
    pub async fn stop(self) -> usize {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

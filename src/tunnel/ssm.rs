//! The SSM Session Manager transport: each [`Connector::connect`] opens a new smux stream on a warm
//! session of a [`Pool`] (see [`crate::ssm`] for the layers underneath).

use super::{BoxStream, ConnectFuture, Connector, Error};
use crate::ssm::{self, Pool, SsmConfig};

/// Streams through AWS Systems Manager port forwarding to `host:port`, via an SSM agent on the
/// target (an EC2 instance or an ECS task).
#[derive(Clone, Debug)]
pub struct Ssm {
    /// The warm sessions.
    pool: Pool,
}

impl Ssm {
    /// Starts the session pool (needs a Tokio runtime): `config.sessions` sessions are opened in
    /// the background right away. `aws` supplies region, endpoint overrides and credentials.
    pub fn new(config: SsmConfig, aws: &aws_config::SdkConfig) -> Result<Self, ssm::Error> {
        Ok(Self {
            pool: Pool::new(config, aws)?,
        })
    }

    /// A connector over an existing pool.
    pub fn from_pool(pool: Pool) -> Self {
        Self { pool }
    }

    /// The session pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Ends every session (TerminateSession) and stops opening new ones.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }
}

impl Connector for Ssm {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            match self.pool.connect().await {
                Ok(stream) => Ok(Box::new(stream) as BoxStream),
                Err(source) => Err(Error::Ssm {
                    addr: self.describe(),
                    source,
                }),
            }
        })
    }

    fn describe(&self) -> String {
        self.pool.config().describe()
    }

    fn shared(&self) -> bool {
        true
    }
}

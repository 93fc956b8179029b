//! Shared helpers for the SSM tests: destination servers, an SDK config pointed at the simulator,
//! and deterministic data.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use rds_iam_proxy::ssm::SsmConfig;
use rds_iam_proxy::tunnel::ssm::Ssm;
use sha2::{Digest, Sha256};
use ssm_sim::{Route, SimConfig, SimServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The region everything signs for.
pub const REGION: &str = "us-east-1";
/// Static test credentials (the simulator verifies signatures with the secret).
pub const ACCESS_KEY: &str = "AKIDSSMSIMTEST";
/// The matching secret.
pub const SECRET_KEY: &str = "ssm-sim-test-secret";
/// The ECS-style target used by the tests.
pub const TARGET: &str =
    "ecs:lab_0f1e2d3c4b5a69788796a5b4c3d2e1f0_0f1e2d3c4b5a69788796a5b4c3d2e1f0-3811061257";
/// The destination name the sessions ask for (routed by the simulator).
pub const DB_HOST: &str = "db.cluster-test.us-east-1.rds.amazonaws.com";
/// Its port.
pub const DB_PORT: u16 = 3306;

/// A TCP server that echoes every byte; stops when the token is cancelled.
pub async fn echo_server(stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => r.unwrap(),
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy(&mut r, &mut w) => {}
                }
            });
        }
    });
    addr
}

/// An address where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// An SDK config for the simulator at `endpoint` with static credentials.
pub fn sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "ssm-test",
        )))
        .build()
}

/// A simulator config routing [`DB_HOST`]:[`DB_PORT`] to `dial`, verifying upgrade signatures.
pub fn sim_config(dial: SocketAddr) -> SimConfig {
    SimConfig {
        routes: vec![Route {
            host: DB_HOST.to_owned(),
            port: DB_PORT,
            dial: dial.to_string(),
        }],
        verify_secret: Some(SECRET_KEY.to_owned()),
        require_signature: true,
        ..SimConfig::default()
    }
}

/// A connector config for [`TARGET`] → [`DB_HOST`]:[`DB_PORT`] with `sessions` sessions.
pub fn ssm_config(sessions: usize) -> SsmConfig {
    let mut c = SsmConfig::new(TARGET, DB_HOST, DB_PORT, REGION);
    c.sessions = sessions;
    c.connect_timeout = Duration::from_secs(20);
    c
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts a simulator and a connector on it.
pub async fn start(sim: SimConfig, ssm: SsmConfig) -> (SimServer, Ssm) {
    init_tracing();
    let server = SimServer::start(sim).await.unwrap();
    let connector = Ssm::new(ssm, &sdk_config(&server.endpoint_url())).unwrap();
    (server, connector)
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `total` bytes of pattern `seed` in chunks while reading the echo, and returns the SHA-256
/// of what was sent and of what came back.
pub async fn echo_roundtrip<S>(
    stream: S,
    seed: u64,
    total: usize,
    chunk: usize,
) -> ([u8; 32], [u8; 32])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let mut h = Sha256::new();
        let mut sent = 0usize;
        let mut block = 0u64;
        while sent < total {
            let n = chunk.min(total - sent);
            let data = pattern(seed ^ block, n);
            h.update(&data);
            w.write_all(&data).await.unwrap();
            sent += n;
            block += 1;
        }
        w.flush().await.unwrap();
        (h.finalize().into(), w)
    });
    let mut h = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < total {
        let n = r.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended after {got} of {total} bytes");
        h.update(&buf[..n]);
        got += n;
    }
    let (sent_hash, _w): ([u8; 32], _) = writer.await.unwrap();
    (sent_hash, h.finalize().into())
}

//! The `ssm-sim` binary: it prints its endpoint URL and serves routed sessions.

// The SSM helpers the root crate's SSM tests use (destinations, SDK config, deterministic data).
#[path = "../../../tests/common/ssm.rs"]
mod ssm_support;

use std::process::Stdio;

use rds_iam_proxy::tunnel::Connector;
use rds_iam_proxy::tunnel::ssm::Ssm;
use ssm_support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_sim_binary_prints_its_endpoint_and_forwards() {
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssm-sim"))
        .args(["--listen", "127.0.0.1:0", "--route"])
        .arg(format!("{DB_HOST}:{DB_PORT}={echo}"))
        .args(["--verify-secret", SECRET_KEY, "--require-signature"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .next_line()
        .await
        .unwrap()
        .expect("one line with the endpoint URL");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let ssm = Ssm::new(ssm_config(1), &sdk_config(&url)).unwrap();
    assert!(ssm.describe().contains(TARGET) && ssm.describe().contains(DB_HOST));
    let (a, b) = echo_roundtrip(ssm.connect().await.unwrap(), 11, 500_000, 10_000).await;
    assert_eq!(a, b);
    ssm.shutdown().await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    stop.cancel();
}

//! `AWS_ENDPOINT_URL_SSM` (and the default credential chain) point the connector at the
//! simulator with no code change: the way the real binary is run against it. The environment is
//! process-wide, so the test runs its body in a child copy of this test binary started with those
//! variables (never `set_var` beside other tests' threads).

use crate::common::ssm::*;
use aws_config::BehaviorVersion;
use rds_iam_proxy::tunnel::Connector;
use rds_iam_proxy::tunnel::ssm::Ssm;
use tokio_util::sync::CancellationToken;

/// Set in the child that runs [`aws_endpoint_url_ssm_reaches_the_simulator`]'s body.
const CHILD: &str = "RDS_IAM_PROXY_TEST_ENDPOINT_ENV_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_endpoint_url_ssm_reaches_the_simulator() {
    if std::env::var_os(CHILD).is_some() {
        return reach_the_simulator_from_the_environment().await;
    }
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let sim = ssm_sim::SimServer::start(sim_config(echo)).await.unwrap();
    let test = "ssm_endpoint_env::aws_endpoint_url_ssm_reaches_the_simulator";
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sim.stats().start_session,
        1,
        "the SSM-specific endpoint won over AWS_ENDPOINT_URL"
    );
    stop.cancel();
    sim.shutdown().await;
}

/// The child's part: the SDK's default chain, from the environment alone, reaches the simulator
/// and carries a checksummed stream both ways.
async fn reach_the_simulator_from_the_environment() {
    let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let ssm = Ssm::new(ssm_config(1), &aws).unwrap();
    let (a, b) = echo_roundtrip(ssm.connect().await.unwrap(), 12, 100_000, 5000).await;
    assert_eq!(a, b);
    ssm.shutdown().await;
}

//! `AWS_ENDPOINT_URL_SSM` (and the default credential chain) point the connector at the
//! simulator with no code change: the way the real binary is run against it. One test per binary,
//! because it sets process environment variables.

mod ssm_support;

use aws_config::BehaviorVersion;
use rds_iam_proxy::tunnel::Connector;
use rds_iam_proxy::tunnel::ssm::Ssm;
use ssm_support::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_endpoint_url_ssm_reaches_the_simulator() {
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let sim = ssm_sim::SimServer::start(sim_config(echo)).await.unwrap();
    let vars = [
        ("AWS_ENDPOINT_URL_SSM", sim.endpoint_url()),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config".to_owned()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials".to_owned(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    for (k, v) in vars {
        // SAFETY: this test binary has this one test; nothing else reads the environment while
        // it is being set.
        unsafe { std::env::set_var(k, v) };
    }
    unsafe { std::env::remove_var("AWS_PROFILE") };
    let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let ssm = Ssm::new(ssm_config(1), &aws).unwrap();
    let (a, b) = echo_roundtrip(ssm.connect().await.unwrap(), 12, 100_000, 5000).await;
    assert_eq!(a, b);
    assert_eq!(
        sim.stats().start_session,
        1,
        "the SSM-specific endpoint won over AWS_ENDPOINT_URL"
    );
    ssm.shutdown().await;
    stop.cancel();
    sim.shutdown().await;
}

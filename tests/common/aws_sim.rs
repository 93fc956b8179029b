//! The SSM simulator with an AWS world (the API mock) in front of the RDS-shaped upstream, and the
//! binary pointed at it through nothing but AWS's standard environment. Feature `sim`.

use std::process::Command;

use ssm_sim::aws::AwsWorld;
use ssm_sim::{Route, SimConfig, SimServer};

use super::process::isolated_cmd;
use super::upstream::RdsLikeUpstream;

/// A simulator whose agent dials `up` for its endpoint, checks SigV4 with `up`'s credentials, and
/// answers the AWS API from `world`.
pub async fn sim_for(up: &RdsLikeUpstream, world: AwsWorld) -> SimServer {
    SimServer::start(SimConfig {
        routes: vec![Route {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            dial: up.dial_addr(),
        }],
        verify_secret: Some(up.secret.clone()),
        require_signature: true,
        aws_world: Some(world),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// The binary with nothing but AWS's standard environment: credentials, region, the mock's
/// endpoint, and the test CA (RDS's real CAs do not sign the test upstream).
pub fn bare(up: &RdsLikeUpstream, sim: &SimServer) -> Command {
    let mut c = isolated_cmd();
    c.env("AWS_ACCESS_KEY_ID", &up.akid)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("AWS_REGION", &up.region)
        .env("AWS_ENDPOINT_URL", sim.endpoint_url())
        .env("RDS_IAM_PROXY_CA_BUNDLE", &up.ca)
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0");
    c
}

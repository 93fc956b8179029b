//! The proxy binary over the SSM transport: `--ssm-target` through the simulator (reached with the
//! standard `AWS_ENDPOINT_URL_SSM` override) to the RDS-shaped MariaDB. Real clients log in and
//! read checksummed data; a refused dial and a terminated session behave as a user would expect.

use std::process::Command;

use crate::common::clients::{Target, assert_report_sane, mysql_async_check, pymysql_check};
use crate::common::process::{ProxyProcess, cmd_for, mariadb};
use crate::common::upstream::RdsLikeUpstream;
use ssm_sim::{Route, SimConfig, SimServer};

const TARGET: &str = "i-0123456789abcdef0";

/// The proxy binary for `up`, over SSM through `sim`.
fn ssm_proxy(up: &RdsLikeUpstream, sim: &SimServer, sessions: &str) -> ProxyProcess {
    let mut cmd: Command = cmd_for(up, true);
    cmd.env_remove("RDS_IAM_PROXY_DIAL")
        .env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
        .args(["--ssm-target", TARGET, "--ssm-sessions", sessions]);
    let p = ProxyProcess::spawn(cmd);
    assert!(
        p.start_line.contains(TARGET) && p.start_line.contains(&up.endpoint()),
        "{}",
        p.start_line
    );
    p
}

fn sim_config(up: &RdsLikeUpstream, dial: String) -> SimConfig {
    SimConfig {
        routes: vec![Route {
            host: up.endpoint_host.clone(),
            port: up.endpoint_port,
            dial,
        }],
        // The upgrade is signed with the same credentials the proxy signs tokens with.
        verify_secret: Some(up.secret.clone()),
        require_signature: true,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_through_ssm_to_the_rds_shaped_upstream() {
    let up = RdsLikeUpstream::start();
    let sim = SimServer::start(sim_config(&up, up.dial_addr()))
        .await
        .unwrap();
    let proxy = ssm_proxy(&up, &sim, "2");
    let t = Target {
        host: "127.0.0.1".into(),
        port: proxy.port,
        user: "iamuser".into(),
        password: None,
        ssl_ca: None,
    };
    // Login, TLS upstream, prepared statement, a 4 MiB blob with matching MD5, connection id and
    // KILL QUERY from a second connection: all through the SSM data channel.
    let r = mysql_async_check(&t).await;
    assert_report_sane(&r, "iamuser");
    let t2 = t.clone();
    let r = tokio::task::spawn_blocking(move || pymysql_check(&t2))
        .await
        .unwrap();
    assert_report_sane(&r, "iamuser");
    let stats = sim.stats();
    assert!(
        stats.start_session >= 1 && stats.signed_upgrades >= 1,
        "{stats:?}"
    );
    assert!(stats.streams >= 4, "{stats:?}");

    // The service ends every session: the pool replaces them and the next client still gets in.
    for id in sim.live_sessions() {
        assert!(sim.terminate(&id, "terminated by the test"));
    }
    let port = proxy.port;
    let out = tokio::task::spawn_blocking(move || {
        mariadb(port, "iamuser")
            .args(["-e", "SELECT CURRENT_USER()"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser@%");

    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!logs.contains(&up.secret), "secret in logs");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dial_on_the_agent_is_a_mysql_error_naming_target_and_destination() {
    let up = RdsLikeUpstream::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let sim = SimServer::start(sim_config(&up, closed)).await.unwrap();
    let proxy = ssm_proxy(&up, &sim, "1");
    let port = proxy.port;
    let out = tokio::task::spawn_blocking(move || {
        mariadb(port, "iamuser")
            .args(["-e", "SELECT 1"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !err.contains(TARGET) {
        let (_, logs) = proxy.terminate();
        panic!("{err}\n--- proxy log:\n{logs}");
    }
    assert!(err.contains(TARGET), "{err}");
    assert!(err.contains(&up.endpoint()), "{err}");
    let (status, _) = proxy.terminate();
    assert!(status.success());
    sim.shutdown().await;
}

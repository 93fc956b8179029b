//! One command from a stack name to a working database: the real binary against the AWS API mock
//! and the SSM simulator (one endpoint, reached through the standard `AWS_ENDPOINT_URL`), with
//! the RDS-shaped MariaDB behind the simulated bastion.
//!
//! Covers: `rds-iam-proxy` with no arguments (stack `SecureDbConnectionStack`), a config file
//! with two databases, a replaced bastion task followed without a restart, `--db-cluster` with and
//! without IAM authentication, `doctor` on the healthy setup and naming the right hop for each
//! broken one, `exec`, `dsn`, the SSM series of `/metrics`, and expired then renewed credentials.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::aws_sim::{bare, sim_for};
use crate::common::process::{ProxyProcess, free_port, mariadb, try_http_get};
use crate::common::upstream::RdsLikeUpstream;
use ssm_sim::SimServer;
use ssm_sim::aws::AwsWorld;

const STACK: &str = "SecureDbConnectionStack";
const TASK_1: &str = "1111111111111111aaaaaaaaaaaaaaaa";
const TASK_2: &str = "2222222222222222bbbbbbbbbbbbbbbb";

/// A world whose default stack, cluster `fakedb` and ECS bastion point at `up`.
fn world(up: &RdsLikeUpstream) -> AwsWorld {
    let json = serde_json::json!({
        "account": "123456789012",
        "region": up.region,
        "caller": {"arn": "arn:aws:iam::123456789012:user/dev"},
        "stacks": {
            STACK: {"outputs": {
                "DbEndpoint": up.endpoint_host,
                "DbReaderEndpoint": up.endpoint_host,
                "DbPort": up.endpoint_port.to_string(),
                "DbUser": "iamuser",
                "DbClusterIdentifier": "fakedb",
                "DbClusterResourceId": "cluster-TESTTESTTESTTEST",
                "DbMasterSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:master-AbCdEf",
                "EcsCluster": "bastion",
                "EcsService": "bastion",
                "EcsContainer": "bastion",
                "Region": up.region,
                "ConnectPolicyArn": "arn:aws:iam::123456789012:policy/connect"
            }}
        },
        "db_clusters": [{
            "identifier": "fakedb",
            "endpoint": up.endpoint_host,
            "reader_endpoint": up.endpoint_host,
            "port": up.endpoint_port
        }],
        "db_instances": [{
            "identifier": "noiam",
            "endpoint": up.endpoint_host,
            "port": up.endpoint_port,
            "iam_database_authentication_enabled": false
        }],
        "ec2_instances": [
            {"id": "i-0000000000000000a", "state": "stopped", "tags": {"Role": "bastion"}},
            {"id": "i-0123456789abcdef0", "tags": {"Role": "bastion", "Name": "bastion"}}
        ],
        "ecs_clusters": {"bastion": {"services": {"bastion": {"tasks": [
            {"id": TASK_1, "containers": [{"name": "bastion", "runtime_id": format!("{TASK_1}-1")}]}
        ]}}}}
    });
    AwsWorld::from_json(&json.to_string()).expect("a valid world")
}

fn select_user(port: u16, user: &str) -> Output {
    mariadb(port, user)
        .args(["-e", "SELECT CURRENT_USER()"])
        .output()
        .unwrap()
}

fn assert_logged_in(out: &Output, user: &str) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(got.starts_with(&format!("{user}@")), "{got}");
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_arguments_serve_the_default_stack_and_follow_a_replaced_task() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let proxy = ProxyProcess::spawn(bare(&up, &sim));
    assert!(
        proxy.start_line.contains(&up.endpoint()) && proxy.start_line.contains(TASK_1),
        "{}",
        proxy.start_line
    );
    let port = proxy.port;
    assert_logged_in(
        &blocking(move || select_user(port, "iamuser")).await,
        "iamuser",
    );
    let calls = sim.aws_world().calls();
    assert!(
        calls.iter().any(|c| c.contains("DescribeStacks")),
        "{calls:?}"
    );

    // ECS replaces the task: the old one stops (its sessions end), a new one runs.
    sim.aws_world().update(|w| {
        let service = w.ecs_service_mut("bastion", "bastion");
        for t in &mut service.tasks {
            t.stop("Task replaced by the test");
        }
        service.tasks.push(ssm_sim::aws::EcsTask::running(
            TASK_2,
            "bastion",
            &format!("{TASK_2}-1"),
        ));
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = blocking(move || select_user(port, "iamuser")).await;
        if out.status.success() {
            assert_logged_in(&out, "iamuser");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reconnected through the new task: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The world refuses sessions to the stopped task, so the session that carried this login
    // went to the new one: the pool looked the task up again (ListTasks after the change).
    let calls = sim.aws_world().calls();
    let last_change = calls
        .iter()
        .rposition(|c| c == "ecs:DescribeTasks")
        .unwrap();
    assert!(
        last_change > calls.iter().position(|c| c == "ecs:DescribeTasks").unwrap(),
        "{calls:?}"
    );
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    for step in [
        "✓ Reading CloudFormation stack SecureDbConnectionStack",
        "✓ Finding the bastion: ECS service bastion (cluster bastion)",
        "✓ Opening an SSM session to ecs:bastion_",
    ] {
        assert!(stderr.contains(step), "missing {step:?} in:\n{stderr}");
    }
}

/// An EC2 bastion found by tag (the stopped one with the same tag is passed over), and the
/// cluster's reader endpoint from RDS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec2_bastion_by_tag_and_the_reader_endpoint_of_a_cluster() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "--db-cluster",
        "fakedb",
        "--reader",
        "--instance-tag",
        "Role=bastion",
    ]);
    let proxy = ProxyProcess::spawn(cmd);
    assert!(
        proxy.start_line.contains("i-0123456789abcdef0"),
        "{}",
        proxy.start_line
    );
    let port = proxy.port;
    assert_logged_in(
        &blocking(move || select_user(port, "iamuser")).await,
        "iamuser",
    );
    let calls = sim.aws_world().calls();
    for call in [
        "rds:DescribeDBClusters",
        "ec2:DescribeInstances",
        "ssm:StartSession",
    ] {
        assert!(calls.iter().any(|c| c == call), "no {call} in {calls:?}");
    }
}

/// A config file with two databases: the stack's writer as `app`, and cluster `fakedb` through
/// the same bastion as `report` with another IAM user. One process serves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_with_two_databases_serves_both() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let dir = tempdir("two-dbs");
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        "[defaults]\nlisten = \"127.0.0.1:0\"\n\n[databases.app]\nstack = \"SecureDbConnectionStack\"\n\n\
         [databases.report]\ndb-cluster = \"fakedb\"\necs-cluster = \"bastion\"\n\
         ecs-service = \"bastion\"\ndb-user = \"iamuser2\"\nssm-sessions = 1\n",
    )
    .unwrap();
    let mut cmd = bare(&up, &sim);
    cmd.env_remove("RDS_IAM_PROXY_LISTEN")
        .arg("--config")
        .arg(&file);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let port: u16 = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.trim_end_matches(',').rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not a start line: {line}"));
        ports.push((line, port));
    }
    let (app, report) = (ports[0].clone(), ports[1].clone());
    assert!(app.0.contains("database app"), "{}", app.0);
    assert!(report.0.contains("database report"), "{}", report.0);
    assert_logged_in(
        &blocking(move || select_user(app.1, "whoever")).await,
        "iamuser",
    );
    assert_logged_in(
        &blocking(move || select_user(report.1, "whoever")).await,
        "iamuser2",
    );
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(dir).unwrap();
}

/// `doctor` on the healthy setup: every hop in order, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_the_healthy_setup() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let mut cmd = bare(&up, &sim);
    cmd.arg("doctor");
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hops = [
        "✓ AWS credentials: arn:aws:iam::123456789012:user/dev",
        "✓ database endpoint: fake-rds.test:3306 (from stack SecureDbConnectionStack)",
        "✓ IAM database authentication: enabled on cluster fakedb",
        "✓ bastion: ecs:bastion_",
        "✓ SSM session: ssm:StartSession allowed on ecs:bastion_",
        "✓ reach the database:",
        "✓ TLS: verified fake-rds.test",
        "✓ IAM token: accepted for user iamuser",
        "✓ SELECT 1: returned 1",
    ];
    let mut at = 0;
    for hop in hops {
        let found = text[at..]
            .find(hop)
            .unwrap_or_else(|| panic!("missing or out of order: {hop:?} in:\n{text}"));
        at += found + hop.len();
    }
    assert!(text.contains("multiplexed"), "{text}");
}

/// Runs `doctor` with `setup` applied and returns its stdout after checking it failed at `hop`
/// with `fix` in the message, and that no later hop ran.
async fn doctor_fails_at(
    setup: impl FnOnce(&RdsLikeUpstream, &SimServer, &mut Command),
    hop: &str,
    fix: &str,
) {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let mut cmd = bare(&up, &sim);
    cmd.arg("doctor");
    setup(&up, &sim, &mut cmd);
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "doctor passed:\n{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("✗ {hop}:")),
        "expected a failure at {hop:?}, got:\n{text}"
    );
    assert!(last.contains(fix), "no {fix:?} in {last:?}");
    assert!(!text.contains("✓ SELECT 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_missing_credentials() {
    doctor_fails_at(
        |_, _, c| {
            c.env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY");
        },
        "AWS credentials",
        "no AWS credentials",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_missing_stack() {
    doctor_fails_at(
        |_, _, c| {
            c.args(["--stack", "NoSuchStack"]);
        },
        "discovery",
        "CloudFormation stack `NoSuchStack` does not exist",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_service_without_a_running_task() {
    doctor_fails_at(
        |_, sim, _| {
            sim.aws_world().update(|w| {
                for t in &mut w.ecs_service_mut("bastion", "bastion").tasks {
                    t.stop("Essential container exited");
                }
            });
        },
        "bastion",
        "no RUNNING task",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_denied_start_session() {
    doctor_fails_at(
        |_, sim, _| {
            sim.aws_world().update(|w| w.deny("ssm:StartSession"));
        },
        "SSM session",
        "ssm:StartSession",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_disabled_iam_authentication() {
    doctor_fails_at(
        |_, sim, _| {
            sim.aws_world().update(|w| {
                for c in &mut w.db_clusters {
                    c.iam_database_authentication_enabled = false;
                }
            });
        },
        "IAM database authentication",
        "--enable-iam-database-authentication",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_wrong_ca() {
    doctor_fails_at(
        |_, _, c| {
            // The embedded RDS bundle does not sign the test upstream's certificate.
            c.env_remove("RDS_IAM_PROXY_CA_BUNDLE");
        },
        "TLS",
        "certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_rejected_token() {
    doctor_fails_at(
        |_, _, c| {
            c.args(["--db-user", "nobody_here"]);
        },
        "IAM token",
        "nobody_here",
    )
    .await;
}

/// `--db-instance` of an instance without IAM authentication is refused before serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_iam_authentication_is_refused_with_the_fix() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "--db-instance",
        "noiam",
        "--ecs-cluster",
        "bastion",
        "--ecs-service",
        "bastion",
    ]);
    let out = blocking(move || cmd.output().unwrap()).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IAM database authentication is disabled on RDS DB instance `noiam`")
            && err.contains("modify-db-instance"),
        "{err}"
    );
}

/// `exec` and `dsn` with no database flags: the stack supplies the endpoint and the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_dsn_from_the_stack() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "exec",
        "--",
        "mariadb",
        "--no-defaults",
        "--skip-ssl",
        "-N",
        "-e",
        "select 1",
    ]);
    let out = blocking(move || cmd.output().unwrap()).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "exec",
        "--",
        "mariadb",
        "--no-defaults",
        "--skip-ssl",
        "-e",
        "select nonsense",
    ]);
    let out = blocking(move || cmd.output().unwrap()).await;
    assert_eq!(out.status.code(), Some(1), "the client's exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));

    let mut cmd = bare(&up, &sim);
    cmd.env_remove("RDS_IAM_PROXY_LISTEN").arg("dsn");
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mysql://iamuser@127.0.0.1:3306/")
            && text.contains("jdbc:mysql://127.0.0.1:3306/?user=iamuser"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SSM series of `/metrics` follow the pool: live sessions, sessions started, and a resumed
/// WebSocket after the service drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_ssm_sessions_and_reconnects() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let health = format!("127.0.0.1:{}", free_port());
    let mut cmd = bare(&up, &sim);
    cmd.args(["--health-addr", &health]);
    let proxy = ProxyProcess::spawn(cmd);
    let h = health.clone();
    let (code, ready) = blocking(move || get(&h, "/readiness")).await;
    assert_eq!(code, 200, "{ready}");
    // Ready means one session is up; the pool's second one may still be opening.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let m = loop {
        let h = health.clone();
        let (_, m) = blocking(move || get(&h, "/metrics")).await;
        if m.contains("rds_iam_proxy_ssm_sessions_live{database=\"default\"} 2") {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one session only:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sample(&m, "rds_iam_proxy_ssm_sessions_started_total") >= 2,
        "{m}"
    );
    assert_eq!(sample(&m, "rds_iam_proxy_ssm_reconnects_total"), 0, "{m}");
    sim.reset_connections();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = health.clone();
        let (_, m) = blocking(move || get(&h, "/metrics")).await;
        if sample(&m, "rds_iam_proxy_ssm_reconnects_total") >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect counted:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let port = proxy.port;
    assert_logged_in(
        &blocking(move || select_user(port, "iamuser")).await,
        "iamuser",
    );
}

/// Credentials from a `credential_process` that first hands out expired keys: clients get a
/// MySQL error naming `aws sso login --profile …`; once the process hands out fresh keys, the
/// next connection works with no restart, and the coming expiry is warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_then_renewed_credentials() {
    let up = RdsLikeUpstream::start();
    let dir = tempdir("creds");
    let creds = dir.join("creds.json");
    let write_creds = |expiration: &str| {
        std::fs::write(
            &creds,
            serde_json::json!({
                "Version": 1,
                "AccessKeyId": up.akid,
                "SecretAccessKey": up.secret,
                "Expiration": expiration,
            })
            .to_string(),
        )
        .unwrap();
    };
    write_creds("2020-01-01T00:00:00Z");
    let config = dir.join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile dev]\nregion = {}\ncredential_process = cat {}\n",
            up.region,
            creds.display()
        ),
    )
    .unwrap();
    let mut cmd = crate::common::process::cmd_for(&up, false);
    cmd.env("AWS_CONFIG_FILE", &config)
        .args(["--profile", "dev"]);
    let proxy = ProxyProcess::spawn(cmd);
    let port = proxy.port;
    let out = blocking(move || select_user(port, "iamuser")).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aws sso login --profile dev"), "{err}");

    // Renewed: valid for ten more minutes, inside the warning window.
    let soon = std::time::SystemTime::now() + Duration::from_secs(600);
    write_creds(&humantime::format_rfc3339_seconds(soon).to_string());
    let out = blocking(move || select_user(port, "iamuser")).await;
    assert_logged_in(&out, "iamuser");
    // The credentials watcher retries every 30 s after a failure; wait for its warning.
    let stderr = blocking(move || {
        proxy.wait_for_stderr("AWS credentials expire in", Duration::from_secs(120));
        proxy.terminate().1
    })
    .await;
    assert!(
        stderr.contains("AWS credentials expire in") && stderr.contains("--profile dev"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rds-iam-proxy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// GET `path`, retrying until the endpoint answers (and, for `/readiness`, answers 200).
fn get(addr: &str, path: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((code, body)) = try_http_get(addr, path)
            && (path != "/readiness" || code == 200)
        {
            return (code, body);
        }
        if std::time::Instant::now() > deadline {
            panic!("{addr}{path} never answered as expected");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sample(body: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{database=\"default\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in:\n{body}"))
}

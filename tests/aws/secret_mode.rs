//! `--secret` end to end: the real binary against the AWS API mock's Secrets Manager and the SSM
//! simulator, with the RDS-shaped MariaDB behind the simulated bastion. The database's password
//! user (`mysql_native_password`, REQUIRE SSL) stands for a user without IAM authentication, and
//! the cluster has IAM database authentication off.
//!
//! Covers: `--secret auto` taking the stack's `DbMasterSecretArn` and a cluster's
//! `MasterUserSecret`; a whole session, `dsn` and `exec` at trace level printing no password;
//! `doctor` in secret mode passing (a Secrets Manager hop, a password hop, no IAM hop) and
//! failing at the Secrets Manager hop when `GetSecretValue` is denied, naming the identity, the
//! permission and KMS; a client of a proxy that may not read the secret getting the same fix.

use std::process::{Command, Output};

use crate::common::aws_sim::{bare, sim_for};
use crate::common::process::{ProxyProcess, mariadb};
use crate::common::upstream::RdsLikeUpstream;
use ssm_sim::aws::AwsWorld;

const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-db-AbCdEf";
const CALLER: &str = "arn:aws:iam::123456789012:user/dev";
const TASK: &str = "1111111111111111aaaaaaaaaaaaaaaa";

/// The default stack and cluster `fakedb` (IAM authentication off) pointing at `up` through an ECS
/// bastion; both name a secret holding the upstream's password user.
fn world(up: &RdsLikeUpstream) -> AwsWorld {
    let json = serde_json::json!({
        "account": "123456789012",
        "region": up.region,
        "caller": {"arn": CALLER},
        "stacks": {"SecureDbConnectionStack": {"outputs": {
            "DbEndpoint": up.endpoint_host,
            "DbReaderEndpoint": up.endpoint_host,
            "DbPort": up.endpoint_port.to_string(),
            "DbUser": "iamuser",
            "DbClusterIdentifier": "fakedb",
            "DbClusterResourceId": "cluster-TESTTESTTESTTEST",
            "DbMasterSecretArn": SECRET_ARN,
            "EcsCluster": "bastion",
            "EcsService": "bastion",
            "EcsContainer": "bastion",
            "Region": up.region,
            "ConnectPolicyArn": "arn:aws:iam::123456789012:policy/connect",
            "AdminPolicyArn": "arn:aws:iam::123456789012:policy/admin"
        }}},
        "db_clusters": [{
            "identifier": "fakedb",
            "endpoint": up.endpoint_host,
            "reader_endpoint": up.endpoint_host,
            "port": up.endpoint_port,
            "iam_database_authentication_enabled": false,
            "master_user_secret_arn": SECRET_ARN
        }],
        "db_instances": [{
            "identifier": "fakedb-1",
            "endpoint": up.endpoint_host,
            "port": up.endpoint_port,
            "iam_database_authentication_enabled": false,
            "cluster": "fakedb"
        }],
        "ecs_clusters": {"bastion": {"services": {"bastion": {"tasks": [
            {"id": TASK, "containers": [{"name": "bastion", "runtime_id": format!("{TASK}-1")}]}
        ]}}}},
        "secrets": [{
            "name": "app-db",
            "arn": SECRET_ARN,
            "secret_string": serde_json::json!({
                "username": up.pw_user,
                "password": up.pw_password,
                "engine": "mysql"
            })
            .to_string()
        }]
    });
    AwsWorld::from_json(&json.to_string()).expect("a valid world")
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Neither the database password nor the AWS secret key nor an IAM token is in `output`.
fn assert_no_secret(up: &RdsLikeUpstream, output: &str, what: &str) {
    assert!(
        !output.contains(&up.pw_password),
        "{what}: the database password was printed"
    );
    assert!(
        !output.contains(&up.secret) && !output.contains("X-Amz-Signature="),
        "{what}: the AWS secret key or an IAM token was printed"
    );
}

/// `--secret auto` from the stack through the simulator at full trace: the mariadb CLI logs in
/// as the secret's user with no password (over TLS upstream), and `dsn` and `exec` name the secret's user; nothing anywhere shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_auto_from_the_stack_at_trace_level_prints_no_password() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;

    let mut cmd = bare(&up, &sim);
    cmd.args(["--secret", "auto", "-vv"])
        .env("RUST_LOG", "trace");
    let proxy = ProxyProcess::spawn(cmd);
    assert!(
        proxy.start_line.contains(&format!(
            "with the user and password of Secrets Manager secret {SECRET_ARN}"
        )),
        "{}",
        proxy.start_line
    );
    let port = proxy.port;
    let out = tokio::task::spawn_blocking(move || {
        mariadb(port, "anyone")
            .args([
                "-e",
                "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version'",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let client = text(&out);
    assert!(out.status.success(), "{client}");
    let lines: Vec<&str> = client.lines().collect();
    assert_eq!(lines[0], format!("{}@%", up.pw_user));
    assert!(lines[1].starts_with("Ssl_version\tTLSv1."), "{lines:?}");
    let mut all = client;
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("TRACE"), "not a trace-level run:\n{logs}");
    assert!(
        logs.contains(&format!(
            "Reading the database password from Secrets Manager secret {SECRET_ARN}: user {}",
            up.pw_user
        )),
        "{logs}"
    );
    all += &logs;
    assert_no_secret(&up, &all, "serving at trace");

    // dsn: the secret's user name, never its password (nor the stack's IAM user).
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "dsn",
        "--secret",
        "auto",
        "--listen",
        "127.0.0.1:3307",
        "-vv",
    ])
    .env("RUST_LOG", "trace");
    let out = run(cmd).await;
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("mysql://{}@127.0.0.1:3307/\n", up.pw_user))
            && stdout.contains(&format!("MYSQL_USER={}\n", up.pw_user))
            && !stdout.contains("iamuser"),
        "{stdout}"
    );
    assert_no_secret(&up, &printed, "dsn");

    // exec: the client runs as the secret's user; no MYSQL_PWD, nothing printed.
    let mut cmd = bare(&up, &sim);
    cmd.args(["exec", "--secret", "auto", "-vv", "--"])
        .args(["mariadb", "--no-defaults", "--skip-ssl", "--batch"])
        .args(["--skip-column-names", "-e", "SELECT CURRENT_USER()"])
        .env("RUST_LOG", "trace");
    let out = run(cmd).await;
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}@%\n", up.pw_user)
    );
    assert_no_secret(&up, &printed, "exec");

    // Each run read the secret through Secrets Manager (and a stack without IAM was no obstacle).
    let calls = sim.aws_world().calls();
    assert!(
        calls
            .iter()
            .filter(|c| *c == "secretsmanager:GetSecretValue")
            .count()
            >= 3,
        "{calls:?}"
    );
    sim.shutdown().await;
}

/// `doctor --secret auto`: passes with a Secrets Manager hop and a password hop (no IAM hop: the
/// cluster has IAM authentication off); `--db-cluster` finds the cluster's MasterUserSecret and
/// `--db-instance` its cluster's (an instance IAM alone would refuse); with
/// GetSecretValue denied, doctor stops at the Secrets Manager hop naming the identity, the
/// permission on the ARN and KMS, and a serving proxy's client gets the same fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_in_secret_mode_passes_and_names_a_denied_secret() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;

    let mut cmd = bare(&up, &sim);
    cmd.args(["doctor", "--secret", "auto"]);
    let out = run(cmd).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let hops = [
        format!("✓ AWS credentials: {CALLER}"),
        "✓ database endpoint: fake-rds.test:3306 (from stack SecureDbConnectionStack)".into(),
        format!(
            "✓ Secrets Manager secret: secretsmanager:GetSecretValue allowed on {SECRET_ARN}; \
             database user {}",
            up.pw_user
        ),
        "✓ bastion: ecs:bastion_".into(),
        "✓ SSM session: ssm:StartSession allowed on ecs:bastion_".into(),
        "✓ reach the database:".into(),
        "✓ TLS: verified fake-rds.test".into(),
        format!(
            "✓ password: user {} logged in with the password from Secrets Manager secret \
             {SECRET_ARN}",
            up.pw_user
        ),
        "✓ SELECT 1: returned 1".into(),
    ];
    let mut at = 0;
    for hop in &hops {
        let found = report[at..]
            .find(hop.as_str())
            .unwrap_or_else(|| panic!("missing or out of order: {hop:?} in:\n{report}"));
        at += found + hop.len();
    }
    assert!(
        !report.contains("IAM database authentication") && !report.contains("IAM token"),
        "{report}"
    );
    assert_no_secret(&up, &text(&out), "doctor");

    // A DB cluster without IAM authentication: its MasterUserSecret, straight to the database.
    let mut cmd = bare(&up, &sim);
    cmd.args(["doctor", "--db-cluster", "fakedb", "--secret", "auto"])
        .args(["--dial", &up.dial_addr()]);
    let out = run(cmd).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        report.contains("(from DB cluster fakedb)")
            && report.contains(&format!("allowed on {SECRET_ARN}"))
            && report.contains("✓ SELECT 1: returned 1")
            && !report.contains("SSM session"),
        "{report}"
    );

    // An instance of that cluster (no secret of its own): the cluster's, through the simulator.
    let mut cmd = bare(&up, &sim);
    cmd.args(["doctor", "--db-instance", "fakedb-1", "--secret", "auto"])
        .args(["--ecs-cluster", "bastion", "--ecs-service", "bastion"]);
    let out = run(cmd).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        report.contains("(from DB instance fakedb-1)")
            && report.contains(&format!("allowed on {SECRET_ARN}"))
            && report.contains("✓ SSM session")
            && report.contains("✓ SELECT 1: returned 1"),
        "{report}"
    );
    // Without --secret that instance is refused: IAM database authentication is off.
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "doctor",
        "--db-instance",
        "fakedb-1",
        "--dial",
        &up.dial_addr(),
    ]);
    let out = run(cmd).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success() && report.contains("✗ IAM database authentication: "),
        "{report}"
    );

    // Denied: doctor stops at the secret, naming who, what, on which ARN, and KMS.
    sim.aws_world()
        .update(|w| w.deny("secretsmanager:GetSecretValue"));
    let mut cmd = bare(&up, &sim);
    cmd.args(["doctor", "--secret", "auto"]);
    let out = run(cmd).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "doctor passed:\n{report}");
    let last = report.lines().last().unwrap_or_default();
    let fix = [
        "✗ Secrets Manager secret: ",
        &format!(
            "the AWS identity {CALLER} may not read Secrets Manager secret {SECRET_ARN}: allow it \
             `secretsmanager:GetSecretValue` on that secret"
        ),
        "`kms:Decrypt`",
        "--secret",
    ];
    for part in fix {
        assert!(last.contains(part), "no {part:?} in {last:?}");
    }
    assert!(
        last.ends_with(
            " (the stack's AdminPolicyArn arn:aws:iam::123456789012:policy/admin grants it)"
        ) && !report.contains("✓ SELECT 1"),
        "{report}"
    );

    // A proxy serving meanwhile says so at start and tells its clients the same fix.
    let mut cmd = bare(&up, &sim);
    cmd.args(["--secret", SECRET_ARN]);
    let proxy = ProxyProcess::spawn(cmd);
    let port = proxy.port;
    let out = tokio::task::spawn_blocking(move || {
        mariadb(port, "anyone")
            .args(["-e", "SELECT 1"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("ERROR 1045")
            && said.contains(&format!("Secrets Manager secret {SECRET_ARN}: allow it"))
            && said.contains(CALLER)
            && said.contains("`secretsmanager:GetSecretValue`")
            && said.contains("`kms:Decrypt`"),
        "{said}"
    );
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("✗ Reading the database password from Secrets Manager secret")
            && logs.contains("clients get this error until it is fixed"),
        "{logs}"
    );
    sim.shutdown().await;
}

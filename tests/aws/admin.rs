//! `rds-iam-proxy admin`: the real binary creates a NEW IAM database user in the RDS-shaped MariaDB
//! with the master password it reads from the AWS API mock's Secrets Manager, through the SSM
//! simulator's bastion, and checks it with an IAM token; the proxy then logs that user in with no
//! password. Failures name the hop and the fix: an unknown secret, a denied GetSecretValue, a
//! stale master password, a failing statement. `--dry-run` prints and connects to nothing.
//!
//! The MariaDB stands in for RDS: its IAM users log in through PAM (`IDENTIFIED VIA pam USING
//! '<service>'`), so the SQL here is the MariaDB-flavoured `--sql` file an RDS for MariaDB user
//! would write; the token checker accepts a token for any user name the token was signed for.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::aws_sim::{bare, sim_for};
use crate::common::process::{ProxyProcess, isolated_cmd, mariadb};
use crate::common::upstream::RdsLikeUpstream;
use rds_iam_proxy::admin::script::BOOTSTRAP_SQL;
use ssm_sim::aws::AwsWorld;

const SECRET_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-fakedb-AbCdEf";
/// The IAM user the stack names; it does not exist in the database before `admin` runs.
const NEW_USER: &str = "bootstrapped";
const TASK: &str = "1111111111111111aaaaaaaaaaaaaaaa";

/// The master user: a password user with every privilege, as RDS creates it.
fn create_master(up: &RdsLikeUpstream) -> String {
    let password = format!("Mstr-{}", std::process::id());
    up.root_sql(&format!(
        "CREATE USER 'admin'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{password}') \
         REQUIRE SSL; GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%' WITH GRANT OPTION"
    ));
    password
}

/// The default stack pointing at `up` through an ECS bastion, and the master secret.
fn world(up: &RdsLikeUpstream, master_password: &str) -> AwsWorld {
    let json = serde_json::json!({
        "region": up.region,
        "stacks": {"SecureDbConnectionStack": {"outputs": {
            "DbEndpoint": up.endpoint_host,
            "DbReaderEndpoint": up.endpoint_host,
            "DbPort": up.endpoint_port.to_string(),
            "DbUser": NEW_USER,
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
        "ecs_clusters": {"bastion": {"services": {"bastion": {"tasks": [
            {"id": TASK, "containers": [{"name": "bastion", "runtime_id": format!("{TASK}-1")}]}
        ]}}}},
        "secrets": [{
            "name": "rds!cluster-fakedb",
            "arn": SECRET_ARN,
            "secret_string": serde_json::json!({"username": "admin", "password": master_password})
                .to_string()
        }]
    });
    AwsWorld::from_json(&json.to_string()).expect("a valid world")
}

/// A private directory for SQL files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("rds-iam-proxy-admin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bootstrap SQL for a MariaDB whose IAM users log in through PAM service `service`.
fn mariadb_sql(service: &str) -> String {
    format!(
        "-- For RDS for MariaDB-like servers: IAM users log in through PAM.\n\
         CREATE USER IF NOT EXISTS 'iam_user'@'%' IDENTIFIED VIA pam USING '{service}' REQUIRE SSL;\n\
         CREATE DATABASE IF NOT EXISTS app; # the application's database\n\
         GRANT ALL PRIVILEGES ON app.* TO 'iam_user'@'%';\n\
         /* show what it has */ SHOW GRANTS FOR 'iam_user'@'%';\n"
    )
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_a_new_iam_user_through_ssm_and_the_proxy_logs_it_in() {
    let up = RdsLikeUpstream::start();
    let master_password = create_master(&up);
    let sim = sim_for(&up, world(&up, &master_password)).await;
    let dir = TempDir::new("create");
    let sql = dir.file("mariadb.sql", &mariadb_sql(&up.pam_service));
    assert_eq!(
        up.root_sql(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User = '{NEW_USER}'"
        )),
        "0\n"
    );

    // Twice: the SQL is idempotent, and so is the command.
    for round in 1..=2 {
        let mut cmd = bare(&up, &sim);
        cmd.arg("admin").arg("--sql").arg(&sql);
        if round == 2 {
            // Everything the binary can log: still no password, no token.
            cmd.env("RUST_LOG", "trace");
        }
        let out = run(cmd).await;
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "round {round}:\n{stderr}\n--- stdout:\n{stdout}"
        );
        // One line per step and per statement, in order.
        let steps = [
            "✓ Reading CloudFormation stack SecureDbConnectionStack: fake-rds.test:3306",
            "✓ Finding the bastion: ",
            &format!("✓ Reading the master secret {SECRET_ARN}: master user admin"),
            "✓ Opening an SSM session to ecs:bastion_",
            "✓ Logging in as master user admin (TLS verified for fake-rds.test): server ",
            &format!("✓ [1/4] CREATE USER IF NOT EXISTS '{NEW_USER}'@'%' IDENTIFIED VIA pam USING"),
            "✓ [2/4] CREATE DATABASE IF NOT EXISTS app: OK, ",
            &format!("✓ [3/4] GRANT ALL PRIVILEGES ON app.* TO '{NEW_USER}'@'%': OK, 0 rows"),
            &format!("✓ [4/4] SHOW GRANTS FOR '{NEW_USER}'@'%': 2 rows"),
            &format!(
                "✓ Logging in as {NEW_USER} with an IAM token: CURRENT_USER() is {NEW_USER}@%"
            ),
        ];
        let mut at = 0;
        for step in steps {
            let found = stderr[at..].find(step).unwrap_or_else(|| {
                panic!("round {round}: missing or out of order: {step:?} in:\n{stderr}")
            });
            at += found + step.len();
        }
        // The result rows on stdout, then the closing line.
        assert!(
            stdout.contains(&format!(
                "GRANT ALL PRIVILEGES ON `app`.* TO `{NEW_USER}`@`%`"
            )),
            "{stdout}"
        );
        assert!(
            stdout.ends_with(&format!(
                "IAM database user {NEW_USER} is ready: run `rds-iam-proxy` and connect as \
                 {NEW_USER} with no password\n"
            )),
            "{stdout}"
        );
        assert!(
            !stdout.contains(&master_password) && !stderr.contains(&master_password),
            "the master password was printed"
        );
        assert!(
            !stderr.contains("X-Amz-Signature=") && !stderr.contains(&up.secret),
            "an IAM token or the AWS secret key was printed"
        );
    }
    assert_eq!(
        up.root_sql(&format!(
            "SELECT plugin, authentication_string, ssl_type FROM mysql.user WHERE User = '{NEW_USER}'"
        )),
        format!("pam\t{}\tANY\n", up.pam_service)
    );
    let calls = sim.aws_world().calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "secretsmanager:GetSecretValue")
            .count(),
        2,
        "{calls:?}"
    );
    assert!(
        up.verify_log()
            .contains(&format!(" accept user={NEW_USER} reason=ok ")),
        "{}",
        up.verify_log()
    );

    // The proxy with no arguments serves the stack, whose user now exists.
    let proxy = ProxyProcess::spawn(bare(&up, &sim));
    let port = proxy.port;
    let out = tokio::task::spawn_blocking(move || {
        mariadb(port, NEW_USER)
            .args([
                "-e",
                "SELECT CURRENT_USER(); CREATE TABLE app.t (i INT); SELECT COUNT(*) FROM app.t",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("{NEW_USER}@%\n0\n"));
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{logs}");
    sim.shutdown().await;
}

/// Each broken hop: the error names the call or the statement and what to do; nothing runs after
/// it. One upstream serves every case (direct transport with --dial for the statement case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_hop_and_the_fix() {
    let up = RdsLikeUpstream::start();
    let master_password = create_master(&up);
    let sim = sim_for(&up, world(&up, &master_password)).await;
    let dir = TempDir::new("fail");
    let fails = |out: &Output, case: &str| -> String {
        let (stdout, stderr) = text(out);
        assert!(!out.status.success(), "{case}: admin succeeded:\n{stderr}");
        assert!(
            !stdout.contains("is ready") && !stderr.contains(&master_password),
            "{case}:\n{stdout}\n{stderr}"
        );
        // The error (it may span lines) is everything from main's prefix on.
        let at = stderr
            .find("rds-iam-proxy: ")
            .unwrap_or_else(|| panic!("{case}: no error in:\n{stderr}"));
        stderr[at..].to_owned()
    };

    // A secret that does not exist.
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "admin",
        "--master-secret",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-XyZ123",
    ]);
    let e = fails(&run(cmd).await, "unknown secret");
    assert!(
        e.contains("secretsmanager:GetSecretValue")
            && e.contains("there is no secret arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-XyZ123")
            && e.contains("--master-secret"),
        "{e}"
    );

    // Not allowed to read it.
    sim.aws_world()
        .update(|w| w.deny("secretsmanager:GetSecretValue"));
    let mut cmd = bare(&up, &sim);
    cmd.arg("admin");
    let e = fails(&run(cmd).await, "denied");
    assert!(
        e.contains("secretsmanager:GetSecretValue on arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-fakedb-AbCdEf was refused")
            && e.contains("needs `secretsmanager:GetSecretValue`")
            && e.contains("(AdminPolicyArn: arn:aws:iam::123456789012:policy/admin)"),
        "{e}"
    );
    sim.aws_world().set(world(&up, &master_password));

    // A stale master password (the secret was rotated after it was read, say).
    sim.aws_world().set(world(&up, "not-the-password"));
    let mut cmd = bare(&up, &sim);
    cmd.arg("admin");
    let e = fails(&run(cmd).await, "stale password");
    assert!(
        e.contains("the server refused the login of 'admin': ERROR 1045 (28000)")
            && e.contains("rotated"),
        "{e}"
    );
    sim.aws_world().set(world(&up, &master_password));

    // A failing statement: its number, line, text and the server's words; the first one ran.
    let sql = dir.file(
        "bad.sql",
        &format!(
            "CREATE USER IF NOT EXISTS 'iam_user'@'%' IDENTIFIED VIA pam USING '{}';\n\n\
             GRANT NOPE ON app.* TO 'iam_user'@'%';\nSELECT 'never runs';\n",
            up.pam_service
        ),
    );
    let mut cmd = bare(&up, &sim);
    cmd.args([
        "admin",
        "--db-user",
        "halfway",
        "--dial",
        &up.dial_addr(),
        "--sql",
    ])
    .arg(&sql);
    let out = run(cmd).await;
    let e = fails(&out, "bad statement");
    assert!(
        e.contains(&format!(
            "statement 2 of 3 (line 3 of {}) failed:",
            sql.display()
        )) && e.contains("  GRANT NOPE ON app.* TO 'halfway'@'%'\n")
            && e.contains(
                "the server said: ERROR 1064 (42000): You have an error in your SQL syntax"
            ),
        "{e}"
    );
    let (_, stderr) = text(&out);
    assert!(stderr.contains("✓ [1/3] CREATE USER"), "{stderr}");
    assert!(!stderr.contains("[3/3]"), "{stderr}");
    assert!(
        !stderr.contains("Opening an SSM session"),
        "--dial is direct: {stderr}"
    );
    assert_eq!(
        up.root_sql("SELECT COUNT(*) FROM mysql.user WHERE User = 'halfway'"),
        "1\n"
    );
    sim.shutdown().await;
}

#[test]
fn dry_run_prints_the_statements_and_connects_to_nothing() {
    // No AWS credentials, endpoints or database: nothing to connect to.
    let out = isolated_cmd()
        .args(["admin", "--db-user", "alice", "--dry-run"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "-- deploy/bootstrap-iam-user.sql (built in), for the IAM database user alice\n\
         CREATE USER IF NOT EXISTS 'alice'@'%' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS' REQUIRE SSL;\n\
         CREATE DATABASE IF NOT EXISTS app;\n\
         GRANT ALL PRIVILEGES ON app.* TO 'alice'@'%';\n"
    );
    assert!(BOOTSTRAP_SQL.contains("'iam_user'@'%'"));

    let dir = TempDir::new("dry");
    let sql = dir.file(
        "x.sql",
        "GRANT SELECT ON `x;y`.* TO 'iam_user'@'%' -- 'iam_user'\n;",
    );
    let out = isolated_cmd()
        .args(["admin", "--db-user", "bob", "--dry-run", "--sql"])
        .arg(&sql)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.ends_with("GRANT SELECT ON `x;y`.* TO 'bob'@'%' -- 'iam_user';\n"),
        "{stdout}"
    );

    // A name that would need to be spliced into SQL is refused, as is a broken file.
    let out = isolated_cmd()
        .args([
            "admin",
            "--dry-run",
            "--db-user",
            "x'@'%'; DROP USER root; --",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("is not allowed"), "{stderr}");
    let bad = dir.file("bad.sql", "SELECT 1;\nSELECT 'unclosed;\n");
    let out = isolated_cmd()
        .args(["admin", "--dry-run", "--db-user", "bob", "--sql"])
        .arg(&bad)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success()
            && stderr.contains(&format!("cannot run {}", bad.display()))
            && stderr.contains("line 2: a '…' string opened here is never closed"),
        "{stderr}"
    );
}

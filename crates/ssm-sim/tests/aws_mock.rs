//! The simulator's AWS API mock (`ssm_sim::aws`), driven by botocore, the AWS SDK
//! for Python: its serializers, SigV4 signer and response parsers come from the AWS service
//! models, so what it parses here is what the real services' wire formats carry. Every
//! operation and every modelled error is called through `AWS_ENDPOINT_URL=<sim url>`, one URL
//! for all services. Also: changing the world while the simulator runs, the coupling of the
//! world with Session Manager sessions, and `ssm-sim --aws-world FILE`. Because botocore's
//! parsers are lenient (they skip unknown elements and ignore list-member names), the script
//! also checks each raw answer strictly against botocore's service model.
//!
//! botocore runs in `$RDS_IAM_PROXY_TEST_PYTHON` (default `python3`), which needs botocore 1.31
//! or newer: `pip install -r crates/ssm-sim/tests/aws_mock/requirements.txt` (scripts/test does
//! it).

// The SSM helpers the root crate's SSM tests use (destinations, SDK config, deterministic data).
#[path = "../../../tests/common/ssm.rs"]
mod ssm_support;

use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use rds_iam_proxy::ssm::SsmConfig;
use rds_iam_proxy::tunnel::Connector;
use rds_iam_proxy::tunnel::ssm::Ssm;
use serde_json::{Value, json};
use ssm_sim::aws::{AwsWorld, EXAMPLE_WORLD, EcsTask};
use ssm_sim::{Route, SimConfig, SimServer};
use ssm_support::{echo_roundtrip, echo_server};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// The example world's region, access key and secret.
const REGION: &str = "eu-west-1";
const ACCESS_KEY: &str = "AKIDSIMULATOR";
const SECRET_KEY: &str = "test-secret-key";
const STACK: &str = "SecureDbConnectionStack";
const TASK_ID: &str = "0123456789abcdef0123456789abcdef";
const TASK_ARN: &str =
    "arn:aws:ecs:eu-west-1:123456789012:task/bastion/0123456789abcdef0123456789abcdef";
const SECRET_ARN: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1234-AbCdEf";
const CALLER: &str = "arn:aws:iam::123456789012:user/alice";
const DB_HOST: &str = "mydb.cluster-abc123.eu-west-1.rds.amazonaws.com";
const INSTANCE: &str = "i-0123456789abcdef0";

/// Longest a botocore run may take.
const BOTOCORE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the simulator may take to end a session after a world change.
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(20);

fn example() -> AwsWorld {
    AwsWorld::from_json(EXAMPLE_WORLD).expect("the documented example world parses")
}

async fn start(world: AwsWorld) -> SimServer {
    SimServer::start(SimConfig {
        aws_world: Some(world),
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator")
}

fn python() -> String {
    std::env::var("RDS_IAM_PROXY_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One botocore call: service, operation (API name) and parameters.
fn call(service: &str, operation: &str, params: Value) -> Value {
    json!({"service": service, "operation": operation, "params": params})
}

/// The same call with other settings (`unsigned`, `region`, `access_key`, `secret_key`).
fn with(mut call: Value, settings: Value) -> Value {
    for (k, v) in settings.as_object().expect("settings are an object") {
        call[k] = v.clone();
    }
    call
}

/// Runs `calls` with botocore against `endpoint` (as `AWS_ENDPOINT_URL`, in a clean
/// environment) and returns one result per call: `{"ok": …}` or `{"error": …}`.
async fn botocore(endpoint: &str, calls: Vec<Value>) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/aws_mock/botocore_calls.py"
    );
    let n = calls.len();
    let job = json!({
        "region": REGION, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "calls": calls,
    });
    let mut child = Command::new(python())
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(job.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(BOTOCORE_TIMEOUT, child.wait_with_output())
        .await
        .expect("botocore finished in time")
        .expect("botocore ran");
    assert!(
        out.status.success(),
        "botocore_calls.py failed ({}); it needs botocore >= 1.31 in {} \
         (pip install -r crates/ssm-sim/tests/aws_mock/requirements.txt):\n{}",
        out.status,
        python(),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("botocore_calls.py printed JSON");
    let results = doc["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), n, "one result per call");
    results
}

/// The parsed response of a call that succeeded, after checking that the raw answer matched
/// the service model strictly (element and list-member names, JSON keys and types).
#[track_caller]
fn ok(result: &Value) -> &Value {
    let parsed = result
        .get("ok")
        .unwrap_or_else(|| panic!("expected success, botocore saw {result}"));
    assert_eq!(
        result["wire"],
        json!([]),
        "the raw answer strays from the service model"
    );
    parsed
}

/// Asserts a call failed with `code` and HTTP `status`; returns botocore's error message.
#[track_caller]
fn error(result: &Value, code: &str, status: u64) -> String {
    let e = result
        .get("error")
        .unwrap_or_else(|| panic!("expected {code}, botocore saw success: {result}"));
    assert_eq!(e["code"], code, "{result}");
    assert_eq!(e["http_status"], status, "{result}");
    e["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_parses_in_botocore() {
    let world = example();
    let sim = start(world.clone()).await;
    let stack_id = world.stack_id(STACK);
    let r = botocore(
        &sim.endpoint_url(),
        vec![
            call("sts", "GetCallerIdentity", json!({})),
            call("cloudformation", "DescribeStacks", json!({"StackName": STACK})),
            call("cloudformation", "DescribeStacks", json!({"StackName": stack_id})),
            call("cloudformation", "DescribeStacks", json!({})),
            call("rds", "DescribeDBClusters", json!({"DBClusterIdentifier": "mydb"})),
            call("rds", "DescribeDBInstances", json!({"DBInstanceIdentifier": "mydb-instance-1"})),
            call(
                "ec2",
                "DescribeInstances",
                json!({"Filters": [
                    {"Name": "tag:Role", "Values": ["bastion"]},
                    {"Name": "instance-state-name", "Values": ["running"]},
                ]}),
            ),
            call("ec2", "DescribeInstances", json!({"InstanceIds": [INSTANCE]})),
            call(
                "ec2",
                "DescribeInstances",
                json!({"Filters": [{"Name": "tag:Role", "Values": ["web", "bast*"]}]}),
            ),
            call(
                "ec2",
                "DescribeInstances",
                json!({"Filters": [{"Name": "tag:Role", "Values": ["web"]}]}),
            ),
            call(
                "ecs",
                "ListTasks",
                json!({"cluster": "bastion", "serviceName": "bastion", "desiredStatus": "RUNNING"}),
            ),
            call(
                "ecs",
                "DescribeTasks",
                json!({"cluster": "bastion", "tasks": [TASK_ARN, "ffffffffffffffffffffffffffffffff"]}),
            ),
            call("secretsmanager", "GetSecretValue", json!({"SecretId": SECRET_ARN})),
            call("secretsmanager", "GetSecretValue", json!({"SecretId": "rds!cluster-1234"})),
            call(
                "secretsmanager",
                "GetSecretValue",
                json!({"SecretId": SECRET_ARN.trim_end_matches("-AbCdEf"), "VersionStage": "AWSCURRENT"}),
            ),
            // STS answers in every region.
            with(call("sts", "GetCallerIdentity", json!({})), json!({"region": "us-west-2"})),
        ],
    )
    .await;

    let me = ok(&r[0]);
    assert_eq!(me["Account"], "123456789012");
    assert_eq!(me["Arn"], CALLER);
    assert_eq!(me["UserId"], "AIDAEXAMPLEALICE0001");

    let stack = &ok(&r[1])["Stacks"][0];
    assert_eq!(stack["StackName"], STACK);
    assert_eq!(stack["StackId"], stack_id);
    assert_eq!(stack["StackStatus"], "CREATE_COMPLETE");
    assert_eq!(stack["CreationTime"], "2024-01-01T00:00:00+00:00");
    let outputs: std::collections::BTreeMap<String, String> = stack["Outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["OutputKey"].as_str().unwrap().to_owned(),
                o["OutputValue"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(outputs, world.stacks[STACK].outputs);
    let mut keys: Vec<&str> = outputs.keys().map(String::as_str).collect();
    let mut all = rds_iam_proxy::aws::stack::ALL.to_vec();
    keys.sort_unstable();
    all.sort_unstable();
    assert_eq!(
        keys, all,
        "the example stack has exactly the template's outputs"
    );
    assert_eq!(
        ok(&r[2])["Stacks"][0]["StackName"],
        STACK,
        "found by stack id"
    );
    assert_eq!(ok(&r[3])["Stacks"].as_array().unwrap().len(), 1);

    let c = &ok(&r[4])["DBClusters"][0];
    assert_eq!(c["DBClusterIdentifier"], "mydb");
    assert_eq!(c["Endpoint"], DB_HOST);
    assert_eq!(
        c["ReaderEndpoint"],
        "mydb.cluster-ro-abc123.eu-west-1.rds.amazonaws.com"
    );
    assert_eq!(c["Port"], 3306);
    assert_eq!(c["IAMDatabaseAuthenticationEnabled"], true);
    assert_eq!(c["Status"], "available");
    assert_eq!(
        c["DbClusterResourceId"],
        "cluster-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    );
    assert_eq!(c["Engine"], "aurora-mysql");
    assert_eq!(c["MasterUsername"], "admin");
    assert_eq!(c["MasterUserSecret"]["SecretArn"], SECRET_ARN);
    assert_eq!(c["MasterUserSecret"]["SecretStatus"], "active");
    assert_eq!(
        c["DBClusterMembers"][0]["DBInstanceIdentifier"],
        "mydb-instance-1"
    );
    assert_eq!(c["DBClusterMembers"][0]["IsClusterWriter"], true);
    assert_eq!(
        c["DBClusterArn"],
        "arn:aws:rds:eu-west-1:123456789012:cluster:mydb"
    );

    let i = &ok(&r[5])["DBInstances"][0];
    assert_eq!(i["DBInstanceIdentifier"], "mydb-instance-1");
    assert_eq!(
        i["Endpoint"]["Address"],
        "mydb-instance-1.abc123.eu-west-1.rds.amazonaws.com"
    );
    assert_eq!(i["Endpoint"]["Port"], 3306);
    assert_eq!(i["IAMDatabaseAuthenticationEnabled"], true);
    assert_eq!(i["DBInstanceStatus"], "available");
    assert_eq!(i["DBClusterIdentifier"], "mydb");
    assert_eq!(i["Engine"], "aurora-mysql");
    assert!(i["DbiResourceId"].as_str().unwrap().starts_with("db-"));

    for n in [6, 7, 8] {
        let reservations = ok(&r[n])["Reservations"].as_array().unwrap();
        assert_eq!(reservations.len(), 1, "call {n}: {}", r[n]);
        let inst = &reservations[0]["Instances"][0];
        assert_eq!(inst["InstanceId"], INSTANCE);
        assert_eq!(inst["State"], json!({"Code": 16, "Name": "running"}));
        assert!(
            inst["Tags"]
                .as_array()
                .unwrap()
                .contains(&json!({"Key": "Role", "Value": "bastion"}))
        );
        assert_eq!(reservations[0]["OwnerId"], "123456789012");
    }
    assert_eq!(ok(&r[9])["Reservations"], json!([]));

    assert_eq!(ok(&r[10])["taskArns"], json!([TASK_ARN]));
    let d = ok(&r[11]);
    let t = &d["tasks"][0];
    assert_eq!(t["taskArn"], TASK_ARN);
    assert_eq!(t["lastStatus"], "RUNNING");
    assert_eq!(t["desiredStatus"], "RUNNING");
    assert_eq!(t["enableExecuteCommand"], true);
    assert_eq!(t["group"], "service:bastion");
    assert_eq!(
        t["clusterArn"],
        "arn:aws:ecs:eu-west-1:123456789012:cluster/bastion"
    );
    assert_eq!(t["createdAt"], "2024-01-01T00:00:00+00:00");
    let container = &t["containers"][0];
    assert_eq!(container["name"], "bastion");
    assert_eq!(
        container["runtimeId"],
        "0123456789abcdef0123456789abcdef-3053130958"
    );
    assert_eq!(container["lastStatus"], "RUNNING");
    assert_eq!(container["managedAgents"][0]["name"], "ExecuteCommandAgent");
    assert_eq!(container["managedAgents"][0]["lastStatus"], "RUNNING");
    assert_eq!(
        d["failures"],
        json!([{
            "arn": "arn:aws:ecs:eu-west-1:123456789012:task/bastion/ffffffffffffffffffffffffffffffff",
            "reason": "MISSING",
        }])
    );

    for n in [12, 13, 14] {
        let s = ok(&r[n]);
        assert_eq!(s["ARN"], SECRET_ARN, "{}", r[n]);
        assert_eq!(s["Name"], "rds!cluster-1234");
        assert_eq!(
            s["SecretString"],
            r#"{"username":"admin","password":"s3cr3t-master-password"}"#
        );
        assert_eq!(s["VersionStages"], json!(["AWSCURRENT"]));
    }
    assert_eq!(ok(&r[15])["Account"], "123456789012");

    let calls = sim.aws_world().calls();
    assert_eq!(calls.len(), r.len(), "{calls:?}");
    assert_eq!(calls[0], "sts:GetCallerIdentity");
    assert_eq!(calls[10], "ecs:ListTasks");
    assert_eq!(calls[12], "secretsmanager:GetSecretValue");
    sim.shutdown().await;
}

/// A call and the error botocore must see: code, HTTP status and, when given, the message.
struct Expect {
    call: Value,
    code: &'static str,
    status: u64,
    message: Option<&'static str>,
}

fn expect(call: Value, code: &'static str, status: u64, message: Option<&'static str>) -> Expect {
    Expect {
        call,
        code,
        status,
        message,
    }
}

/// Runs every call in one botocore process and checks each error; returns the messages.
async fn expect_errors(endpoint: &str, cases: Vec<Expect>) -> Vec<String> {
    let results = botocore(endpoint, cases.iter().map(|c| c.call.clone()).collect()).await;
    cases
        .iter()
        .zip(&results)
        .map(|(case, result)| {
            let message = error(result, case.code, case.status);
            if let Some(want) = case.message {
                assert_eq!(message, want, "{}", case.call);
            }
            message
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_modelled_error_reaches_botocore_with_its_real_code() {
    let sim = start(example()).await;
    let unsigned = json!({"unsigned": true});
    let wrong_secret = json!({"secret_key": "not-the-secret"});
    let unknown_key = json!({"access_key": "AKIDSOMEONEELSE"});
    let elsewhere = json!({"region": "us-west-2"});
    const MISMATCH: &str = "The request signature we calculated does not match the signature \
        you provided. Check your AWS Secret Access Key and signing method. Consult the service \
        documentation for details.";
    const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
    const NO_TOKEN: &str = "Request is missing Authentication Token";
    let cases = vec![
        expect(
            call(
                "cloudformation",
                "DescribeStacks",
                json!({"StackName": "Nope"}),
            ),
            "ValidationError",
            400,
            Some("Stack with id Nope does not exist"),
        ),
        expect(
            call(
                "rds",
                "DescribeDBClusters",
                json!({"DBClusterIdentifier": "nope"}),
            ),
            "DBClusterNotFoundFault",
            404,
            Some("DBCluster nope not found."),
        ),
        expect(
            call(
                "rds",
                "DescribeDBInstances",
                json!({"DBInstanceIdentifier": "nope"}),
            ),
            "DBInstanceNotFound",
            404,
            Some("DBInstance nope not found."),
        ),
        expect(
            call(
                "ec2",
                "DescribeInstances",
                json!({"InstanceIds": ["i-00000000000000000"]}),
            ),
            "InvalidInstanceID.NotFound",
            400,
            Some("The instance ID 'i-00000000000000000' does not exist"),
        ),
        expect(
            call(
                "ec2",
                "DescribeInstances",
                json!({"InstanceIds": ["i-1", "i-2"]}),
            ),
            "InvalidInstanceID.NotFound",
            400,
            Some("The instance IDs 'i-1, i-2' do not exist"),
        ),
        expect(
            call("ec2", "DescribeInstances", json!({"InstanceIds": ["nope"]})),
            "InvalidInstanceID.Malformed",
            400,
            Some("Invalid id: \"nope\""),
        ),
        expect(
            call(
                "ec2",
                "DescribeInstances",
                json!({"Filters": [{"Name": "owner-alias", "Values": ["amazon"]}]}),
            ),
            "InvalidParameterValue",
            400,
            Some("The filter 'owner-alias' is invalid"),
        ),
        expect(
            call("ec2", "DescribeInstances", json!({"DryRun": true})),
            "DryRunOperation",
            412,
            Some("Request would have succeeded, but DryRun flag is set."),
        ),
        expect(
            call("ecs", "ListTasks", json!({"cluster": "nope"})),
            "ClusterNotFoundException",
            400,
            Some("Cluster not found."),
        ),
        expect(
            call(
                "ecs",
                "ListTasks",
                json!({"cluster": "bastion", "serviceName": "nope"}),
            ),
            "ServiceNotFoundException",
            400,
            Some("Service not found."),
        ),
        expect(
            call(
                "ecs",
                "ListTasks",
                json!({"cluster": "bastion", "desiredStatus": "DONE"}),
            ),
            "InvalidParameterException",
            400,
            None,
        ),
        expect(
            call(
                "ecs",
                "DescribeTasks",
                json!({"cluster": "bastion", "tasks": []}),
            ),
            "InvalidParameterException",
            400,
            Some("Tasks cannot be empty."),
        ),
        expect(
            call(
                "ecs",
                "DescribeTasks",
                json!({"cluster": "nope", "tasks": [TASK_ID]}),
            ),
            "ClusterNotFoundException",
            400,
            Some("Cluster not found."),
        ),
        expect(
            call(
                "secretsmanager",
                "GetSecretValue",
                json!({"SecretId": "nope"}),
            ),
            "ResourceNotFoundException",
            400,
            Some("Secrets Manager can't find the specified secret."),
        ),
        expect(
            call(
                "secretsmanager",
                "GetSecretValue",
                json!({"SecretId": SECRET_ARN, "VersionStage": "AWSPREVIOUS"}),
            ),
            "ResourceNotFoundException",
            400,
            Some(
                "Secrets Manager can't find the specified secret value for staging label: \
                 AWSPREVIOUS",
            ),
        ),
        // Operations the mock does not model get each service's "unknown operation".
        expect(
            call("cloudformation", "ListStacks", json!({})),
            "InvalidAction",
            400,
            Some("Could not find operation ListStacks for version 2010-05-15"),
        ),
        expect(
            call("rds", "DescribeDBSnapshots", json!({})),
            "InvalidAction",
            400,
            Some("Could not find operation DescribeDBSnapshots for version 2014-10-31"),
        ),
        expect(
            call("sts", "GetSessionToken", json!({})),
            "InvalidAction",
            400,
            Some("Could not find operation GetSessionToken for version 2011-06-15"),
        ),
        expect(
            call("ec2", "DescribeVpcs", json!({})),
            "InvalidAction",
            400,
            Some("The action DescribeVpcs is not valid for this web service."),
        ),
        expect(
            call("ecs", "ListClusters", json!({})),
            "UnknownOperationException",
            400,
            None,
        ),
        expect(
            call("secretsmanager", "ListSecrets", json!({})),
            "UnknownOperationException",
            400,
            None,
        ),
        // Authentication, in each protocol.
        expect(
            with(
                call("sts", "GetCallerIdentity", json!({})),
                unsigned.clone(),
            ),
            "MissingAuthenticationToken",
            403,
            Some(NO_TOKEN),
        ),
        expect(
            with(
                call("ec2", "DescribeInstances", json!({})),
                unsigned.clone(),
            ),
            "MissingAuthenticationToken",
            403,
            Some(NO_TOKEN),
        ),
        expect(
            with(call("ecs", "ListTasks", json!({})), unsigned),
            "MissingAuthenticationTokenException",
            400,
            Some(NO_TOKEN),
        ),
        expect(
            with(
                call("cloudformation", "DescribeStacks", json!({})),
                wrong_secret.clone(),
            ),
            "SignatureDoesNotMatch",
            403,
            Some(MISMATCH),
        ),
        expect(
            with(
                call("ec2", "DescribeInstances", json!({})),
                wrong_secret.clone(),
            ),
            "SignatureDoesNotMatch",
            403,
            Some(MISMATCH),
        ),
        expect(
            with(
                call(
                    "secretsmanager",
                    "GetSecretValue",
                    json!({"SecretId": SECRET_ARN}),
                ),
                wrong_secret,
            ),
            "InvalidSignatureException",
            400,
            Some(MISMATCH),
        ),
        expect(
            with(
                call("sts", "GetCallerIdentity", json!({})),
                unknown_key.clone(),
            ),
            "InvalidClientTokenId",
            403,
            Some(INVALID_TOKEN),
        ),
        expect(
            with(
                call("ec2", "DescribeInstances", json!({})),
                unknown_key.clone(),
            ),
            "AuthFailure",
            401,
            Some("AWS was not able to validate the provided access credentials"),
        ),
        expect(
            with(call("ecs", "ListTasks", json!({})), unknown_key),
            "UnrecognizedClientException",
            400,
            Some(INVALID_TOKEN),
        ),
        // Resources live in the world's region only.
        expect(
            with(
                call(
                    "rds",
                    "DescribeDBClusters",
                    json!({"DBClusterIdentifier": "mydb"}),
                ),
                elsewhere.clone(),
            ),
            "DBClusterNotFoundFault",
            404,
            Some("DBCluster mydb not found."),
        ),
        expect(
            with(
                call("ecs", "ListTasks", json!({"cluster": "bastion"})),
                elsewhere,
            ),
            "ClusterNotFoundException",
            400,
            Some("Cluster not found."),
        ),
    ];
    expect_errors(&sim.endpoint_url(), cases).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_actions_get_each_services_access_denied() {
    let mut world = example();
    for action in [
        "cloudformation:DescribeStacks",
        "rds:Describe*",
        "sts:GetCallerIdentity",
        "ec2:DescribeInstances",
        "ecs:ListTasks",
        "ecs:DescribeTasks",
        "secretsmanager:GetSecretValue",
    ] {
        world.deny(action);
    }
    let sim = start(world).await;
    let denied = |action: &str, resource: Option<&str>| {
        let on = resource
            .map(|r| format!(" on resource: {r}"))
            .unwrap_or_default();
        format!(
            "User: {CALLER} is not authorized to perform: {action}{on} because no \
             identity-based policy allows the {action} action"
        )
    };
    let cases = vec![
        expect(
            call(
                "cloudformation",
                "DescribeStacks",
                json!({"StackName": STACK}),
            ),
            "AccessDenied",
            403,
            None,
        ),
        expect(
            call(
                "rds",
                "DescribeDBClusters",
                json!({"DBClusterIdentifier": "mydb"}),
            ),
            "AccessDenied",
            403,
            None,
        ),
        expect(
            call(
                "rds",
                "DescribeDBInstances",
                json!({"DBInstanceIdentifier": "mydb-instance-1"}),
            ),
            "AccessDenied",
            403,
            None,
        ),
        expect(
            call("sts", "GetCallerIdentity", json!({})),
            "AccessDenied",
            403,
            None,
        ),
        expect(
            call("ec2", "DescribeInstances", json!({})),
            "UnauthorizedOperation",
            403,
            None,
        ),
        expect(
            call("ecs", "ListTasks", json!({"cluster": "bastion"})),
            "AccessDeniedException",
            400,
            None,
        ),
        expect(
            call(
                "ecs",
                "DescribeTasks",
                json!({"cluster": "bastion", "tasks": [TASK_ID]}),
            ),
            "AccessDeniedException",
            400,
            None,
        ),
        expect(
            call(
                "secretsmanager",
                "GetSecretValue",
                json!({"SecretId": "rds!cluster-1234"}),
            ),
            "AccessDeniedException",
            400,
            None,
        ),
    ];
    let messages = expect_errors(&sim.endpoint_url(), cases).await;
    let want = [
        denied(
            "cloudformation:DescribeStacks",
            Some(&format!(
                "arn:aws:cloudformation:eu-west-1:123456789012:stack/{STACK}/*"
            )),
        ),
        denied(
            "rds:DescribeDBClusters",
            Some("arn:aws:rds:eu-west-1:123456789012:cluster:mydb"),
        ),
        denied(
            "rds:DescribeDBInstances",
            Some("arn:aws:rds:eu-west-1:123456789012:db:mydb-instance-1"),
        ),
        denied("sts:GetCallerIdentity", Some("*")),
        format!(
            "You are not authorized to perform this operation. {}",
            denied("ec2:DescribeInstances", None)
        ),
        denied("ecs:ListTasks", Some("*")),
        denied("ecs:DescribeTasks", Some(TASK_ARN)),
        denied("secretsmanager:GetSecretValue", Some(SECRET_ARN)),
    ];
    assert_eq!(messages, want);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_world_changes_while_the_simulator_runs() {
    let sim = start(example()).await;
    let url = sim.endpoint_url();
    let list = |desired: &str| {
        call(
            "ecs",
            "ListTasks",
            json!({"cluster": "bastion", "serviceName": "bastion", "desiredStatus": desired}),
        )
    };
    let r = botocore(&url, vec![list("RUNNING")]).await;
    assert_eq!(ok(&r[0])["taskArns"], json!([TASK_ARN]));

    // ECS replaces the task: the old one stops, a new one runs.
    let new_id = "fedcba9876543210fedcba9876543210";
    sim.aws_world().update(|w| {
        w.ecs_task_mut("bastion", TASK_ID)
            .unwrap()
            .stop("Task failed ELB health checks");
        w.ecs_service_mut("bastion", "bastion")
            .tasks
            .push(EcsTask::running(new_id, "bastion", &format!("{new_id}-1")));
    });
    let new_arn = TASK_ARN.replace(TASK_ID, new_id);
    let r = botocore(
        &url,
        vec![
            list("RUNNING"),
            list("STOPPED"),
            call(
                "ecs",
                "DescribeTasks",
                json!({"cluster": "bastion", "tasks": [TASK_ID]}),
            ),
        ],
    )
    .await;
    assert_eq!(ok(&r[0])["taskArns"], json!([new_arn]));
    assert_eq!(ok(&r[1])["taskArns"], json!([TASK_ARN]));
    let old = &ok(&r[2])["tasks"][0];
    assert_eq!(old["lastStatus"], "STOPPED");
    assert_eq!(old["stoppedReason"], "Task failed ELB health checks");
    assert_eq!(
        old["containers"][0]["managedAgents"][0]["lastStatus"],
        "STOPPED"
    );

    // A permission is taken away.
    sim.aws_world().update(|w| w.deny("ecs:ListTasks"));
    let r = botocore(&url, vec![list("RUNNING")]).await;
    error(&r[0], "AccessDeniedException", 400);
    assert!(sim.aws_world().get().is_denied("ecs:ListTasks"));
    sim.shutdown().await;
}

/// An SDK config (the Rust SDK, whose SSM calls the mock's signature check must accept) for
/// the simulator with the example world's key.
fn sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "aws-mock-test",
        )))
        .build()
}

/// Waits (up to [`SESSION_END_TIMEOUT`]) until the simulator has no live session.
async fn no_live_sessions(sim: &SimServer) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(SESSION_END_TIMEOUT, async {
        while !sim.live_sessions().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn start_session(target: &str) -> Value {
    call(
        "ssm",
        "StartSession",
        json!({
            "Target": target,
            "DocumentName": "AWS-StartPortForwardingSessionToRemoteHost",
            "Parameters": {"host": [DB_HOST], "portNumber": ["3306"], "localPortNumber": ["0"]},
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_reach_only_targets_the_world_says_are_up() {
    ssm_support::init_tracing();
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let world = example();
    let (_, task) = world.ecs_task("bastion", TASK_ID).unwrap();
    let target = task.ssm_target("bastion", "bastion").unwrap();
    let sim = SimServer::start(SimConfig {
        routes: vec![Route {
            host: DB_HOST.to_owned(),
            port: 3306,
            dial: echo.to_string(),
        }],
        verify_secret: Some(SECRET_KEY.to_owned()),
        require_signature: true,
        aws_world: Some(world),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let url = sim.endpoint_url();

    // The running task is reachable, through the Rust SDK's signed StartSession.
    let mut cfg = SsmConfig::new(&target, DB_HOST, 3306, REGION);
    cfg.sessions = 1;
    cfg.connect_timeout = Duration::from_secs(20);
    let ssm = Ssm::new(cfg, &sdk_config(&url)).unwrap();
    let (a, b) = echo_roundtrip(ssm.connect().await.unwrap(), 3, 50_000, 5_000).await;
    assert_eq!(a, b);
    let mut stream = ssm.connect().await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(sim.live_sessions().len(), 1);

    // Its agent goes away: the live session ends, and new sessions are refused.
    sim.aws_world().update(|w| {
        w.ecs_task_mut("bastion", TASK_ID).unwrap().containers[0].managed_agents[0].last_status =
            "STOPPED".into();
    });
    no_live_sessions(&sim)
        .await
        .expect("the session to the stopped agent ended");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(SESSION_END_TIMEOUT, stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the stream through the ended session closes (EOF or error)"
    );
    ssm.shutdown().await;

    let instance_world = |state: &str| {
        let state = state.to_owned();
        move |w: &mut AwsWorld| w.ec2_instances[0].state = state
    };
    let r = botocore(
        &url,
        vec![
            start_session(&target),
            start_session("ecs:bastion_ffffffffffffffffffffffffffffffff_ffff-1"),
            start_session(INSTANCE),
            start_session("i-00000000000000000"),
        ],
    )
    .await;
    assert_eq!(
        error(&r[0], "TargetNotConnected", 400),
        format!("{target} is not connected.")
    );
    error(&r[1], "TargetNotConnected", 400);
    let session = ok(&r[2]);
    assert!(session["SessionId"].as_str().unwrap().starts_with("sim-"));
    assert!(
        session["StreamUrl"]
            .as_str()
            .unwrap()
            .starts_with("ws://127.0.0.1:")
    );
    error(&r[3], "TargetNotConnected", 400);

    // The instance stops: its session ends too; and the caller loses ssm:StartSession.
    sim.aws_world().update(instance_world("stopped"));
    no_live_sessions(&sim)
        .await
        .expect("the session to the stopped instance ended");
    sim.aws_world().update(|w| {
        w.ec2_instances[0].state = "running".into();
        w.deny("ssm:StartSession");
    });
    let r = botocore(&url, vec![start_session(INSTANCE)]).await;
    assert_eq!(
        error(&r[0], "AccessDeniedException", 400),
        format!(
            "User: {CALLER} is not authorized to perform: ssm:StartSession on resource: \
             arn:aws:ec2:eu-west-1:123456789012:instance/{INSTANCE} because no identity-based \
             policy allows the ssm:StartSession action"
        )
    );

    // The replacement task is reachable again.
    let new_id = "fedcba9876543210fedcba9876543210";
    let replacement = EcsTask::running(new_id, "bastion", &format!("{new_id}-7"));
    let new_target = replacement.ssm_target("bastion", "bastion").unwrap();
    sim.aws_world().update(|w| {
        w.denied.clear();
        w.ecs_service_mut("bastion", "bastion")
            .tasks
            .push(replacement);
    });
    let mut cfg = SsmConfig::new(&new_target, DB_HOST, 3306, REGION);
    cfg.connect_timeout = Duration::from_secs(20);
    let ssm = Ssm::new(cfg, &sdk_config(&url)).unwrap();
    let (a, b) = echo_roundtrip(ssm.connect().await.unwrap(), 4, 20_000, 5_000).await;
    assert_eq!(a, b);
    ssm.shutdown().await;
    stop.cancel();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_sim_binary_serves_a_world_file() {
    let dir = std::env::temp_dir().join(format!("aws-mock-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("world.json");
    std::fs::write(&good, EXAMPLE_WORLD).unwrap();
    let bad = dir.join("typo.json");
    std::fs::write(&bad, r#"{"stacks": {"S": {"outputz": {}}}}"#).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_ssm-sim"))
        .arg("--aws-world")
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("typo.json is not a valid AWS world") && stderr.contains("outputz"),
        "{stderr}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_ssm-sim"))
        .args(["--listen", "127.0.0.1:0", "--aws-world"])
        .arg(&good)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next_line()
        .await
        .unwrap()
        .expect("one line with the endpoint URL");
    let r = botocore(
        &url,
        vec![
            call("sts", "GetCallerIdentity", json!({})),
            call(
                "cloudformation",
                "DescribeStacks",
                json!({"StackName": STACK}),
            ),
        ],
    )
    .await;
    assert_eq!(ok(&r[0])["Arn"], CALLER);
    assert_eq!(ok(&r[1])["Stacks"][0]["StackName"], STACK);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

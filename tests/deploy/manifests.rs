//! The Kubernetes examples in `deploy/kubernetes/` and the workflows in `.github/workflows/`,
//! checked offline: the manifests validate strictly against the Kubernetes OpenAPI schemas
//! (kubernetes-validate, for 1.29, the first release with native sidecars, and its default) and
//! pass checkov with every skip justified; they say what the README promises (a native sidecar
//! probed on /readiness, a Job that stops its proxy with POST /quitquitquit); the workflows
//! validate against the GitHub Actions workflow schema vendored in check-jsonschema, and the
//! release workflow builds the four binaries, the two-architecture image and the checksums.
//!
//! The validators come from `tests/schemas/requirements.txt` and `deploy/requirements-lint.txt`,
//! installed by `scripts/test` into the Python that `$PYTHON` names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const REQUIREMENTS: &str = "tests/schemas/requirements.txt";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn text(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python -m MODULE ARGS…` in the repository root.
fn python_module(module: &str, args: &[&str]) -> Output {
    Command::new(python())
        .arg("-m")
        .arg(module)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} -m {module}: {e}; install with: {} -m pip install -r {REQUIREMENTS}",
                python(),
                python()
            )
        })
}

/// Files under `dir` (relative to the root) ending in one of `exts`, sorted, as relative paths.
fn files(dir: &str, exts: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x))
        })
        .map(|p: PathBuf| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {exts:?} files in {dir}");
    found
}

#[test]
fn kubernetes_examples_validate_against_the_schemas() {
    let manifests = files("deploy/kubernetes", &["yaml"]);
    for version in ["1.29.0", "1.34.0"] {
        let mut args = vec!["--strict", "--kubernetes-version", version];
        args.extend(manifests.iter().map(String::as_str));
        let out = python_module("kubernetes_validate", &args);
        let report = text(&out);
        assert!(out.status.success(), "{report}");
        assert!(!report.contains("ERROR"), "{report}");
        for kind in [
            "deployment/app",
            "job/migrate",
            "serviceaccount/app-db",
            "networkpolicy/app",
        ] {
            assert!(
                report.contains(&format!("passed for resource {kind}")),
                "{kind} not validated:\n{report}"
            );
        }
    }
    // The schemas are really applied: a native sidecar is refused by 1.27's.
    let out = python_module(
        "kubernetes_validate",
        &[
            "--strict",
            "--kubernetes-version",
            "1.27.0",
            "deploy/kubernetes/sidecar.yaml",
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("'restartPolicy' was unexpected"),
        "{}",
        text(&out)
    );
}

/// Facts of the examples, read with PyYAML (installed with checkov and cfn-lint).
const FACTS: &str = r#"
import json, sys, yaml
docs = {}
for path in sys.argv[1:]:
    for d in yaml.safe_load_all(open(path)):
        docs[d["kind"]] = d
dep = docs["Deployment"]["spec"]["template"]["spec"]
side = [c for c in dep["initContainers"] if c["name"] == "rds-iam-proxy"][0]
job = docs["Job"]["spec"]["template"]["spec"]
work = [c for c in job["containers"] if c["name"] == "migrate"][0]
print(json.dumps({
    "sidecar_restart": side.get("restartPolicy"),
    "sidecar_readiness": " ".join(side["readinessProbe"]["exec"]["command"]),
    "sidecar_env": {e["name"]: e.get("value") for e in side["env"]},
    "irsa": docs["ServiceAccount"]["metadata"]["annotations"].get("eks.amazonaws.com/role-arn"),
    "job_restart": job["restartPolicy"],
    "job_script": " ".join(work["args"]),
    "job_proxy": [c["name"] for c in job["containers"]],
}))
"#;

#[test]
fn kubernetes_examples_do_what_the_readme_says() {
    let out = Command::new(python())
        .arg("-c")
        .arg(FACTS)
        .args([
            "deploy/kubernetes/sidecar.yaml",
            "deploy/kubernetes/job.yaml",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["sidecar_restart"], "Always", "{f}");
    assert!(
        f["sidecar_readiness"]
            .as_str()
            .unwrap()
            .ends_with("http://127.0.0.1:9801/readiness"),
        "{f}"
    );
    assert!(
        f["irsa"].as_str().unwrap().starts_with("arn:aws:iam::"),
        "{f}"
    );
    // Every RDS_IAM_PROXY_* variable the examples set is one the binary reads.
    let help = Command::new(env!("CARGO_BIN_EXE_rds-iam-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (name, _) in f["sidecar_env"].as_object().unwrap() {
        assert!(
            !name.starts_with("RDS_IAM_PROXY_") || help.contains(&format!("env: {name}=")),
            "{name} is not a variable of rds-iam-proxy --help"
        );
    }
    assert_eq!(f["job_restart"], "Never", "{f}");
    let script = f["job_script"].as_str().unwrap();
    assert!(
        script.contains("trap quit EXIT")
            && script.contains("POST /quitquitquit HTTP/1.1")
            && script.contains("/dev/tcp/127.0.0.1/9801"),
        "{script}"
    );
    assert!(f["job_proxy"].as_array().unwrap().len() == 2, "{f}");
}

#[test]
fn checkov_passes_the_examples_and_workflows_and_every_skip_is_justified() {
    let out = python_module(
        "checkov.main",
        &[
            "--framework",
            "kubernetes",
            "github_actions",
            "-d",
            "deploy/kubernetes",
            "-d",
            ".github/workflows",
            "--output",
            "json",
            // No calls to the checkov platform (no network in CI).
            "--skip-download",
        ],
    );
    // One JSON document per scanned directory, each a report or an array of them.
    let mut reports = Vec::new();
    for doc in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>() {
        match doc.unwrap_or_else(|e| panic!("checkov did not print JSON ({e}):\n{}", text(&out))) {
            Value::Array(r) => reports.extend(r),
            one => reports.push(one),
        }
    }
    let mut kinds = BTreeSet::new();
    for report in &reports {
        let summary = &report["summary"];
        assert_eq!(summary["parsing_errors"].as_u64(), Some(0), "{summary}");
        if summary["passed"].as_u64().unwrap_or(0) > 20 {
            kinds.insert(report["check_type"].as_str().unwrap_or("?").to_owned());
        }
    }
    assert!(
        kinds.contains("kubernetes") && kinds.contains("github_actions"),
        "checkov did not check both: {kinds:?}\n{}",
        text(&out)
    );
    let all = |key: &str| -> Vec<Value> {
        reports
            .iter()
            .flat_map(|r| r["results"][key].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let failures: Vec<String> = all("failed_checks")
        .iter()
        .map(|c| {
            format!(
                "{} {} ({}): {}",
                c["check_id"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["file_path"].as_str().unwrap_or("?"),
                c["check_name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut skipped = BTreeSet::new();
    for c in &all("skipped_checks") {
        let id = c["check_id"].as_str().unwrap_or("?");
        let why = c["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or("")
            .trim();
        assert!(
            why.len() >= 30,
            "{id} on {} is skipped without a reason",
            c["resource"]
        );
        skipped.insert(id.to_owned());
    }
    // Every skip written in the files was needed.
    for path in files("deploy/kubernetes", &["yaml"]) {
        let body = std::fs::read_to_string(root().join(&path)).unwrap();
        for line in body.lines() {
            if let Some(rest) = line.split("checkov.io/skip").nth(1) {
                let id = rest
                    .split_once(": ")
                    .and_then(|(_, r)| r.split('=').next())
                    .unwrap_or("");
                assert!(
                    skipped.contains(id),
                    "{path}: skip of {id} never needed; remove it"
                );
            }
        }
    }
}

#[test]
fn workflows_validate_against_the_github_actions_schema() {
    let workflows = files(".github/workflows", &["yml", "yaml"]);
    let mut args = vec!["--builtin-schema", "vendor.github-workflows"];
    args.extend(workflows.iter().map(String::as_str));
    let out = python_module("check_jsonschema", &args);
    assert!(out.status.success(), "{}", text(&out));

    // The schema really applies: a misspelt key is refused.
    let bad = std::env::temp_dir().join(format!("rdsiam-bad-workflow-{}.yml", std::process::id()));
    std::fs::write(
        &bad,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    stepz: []\n",
    )
    .unwrap();
    let out = python_module(
        "check_jsonschema",
        &[
            "--builtin-schema",
            "vendor.github-workflows",
            bad.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&bad);
    assert!(
        !out.status.success() && text(&out).contains("'stepz' was unexpected"),
        "{}",
        text(&out)
    );
}

/// What the release workflow builds and publishes, read with PyYAML.
const RELEASE_FACTS: &str = r#"
import json, sys, yaml
w = yaml.safe_load(open(sys.argv[1]))
on = w.get("on", w.get(True))
jobs = w["jobs"]
steps = lambda job: " ".join(str(s.get("run", "")) + " " + str(s.get("uses", "")) for s in jobs[job]["steps"])
print(json.dumps({
    "tags": on["push"]["tags"],
    "targets": sorted(m["target"] for m in jobs["binaries"]["strategy"]["matrix"]["include"]),
    "platforms": sorted(m["platform"] for m in jobs["image"]["strategy"]["matrix"]["include"]),
    "binaries": steps("binaries"),
    "manifest": steps("manifest"),
    "release": steps("release"),
    "release_needs": jobs["release"]["needs"],
}))
"#;

#[test]
fn release_workflow_builds_every_target_and_attaches_checksums() {
    let out = Command::new(python())
        .arg("-c")
        .arg(RELEASE_FACTS)
        .arg(".github/workflows/release.yml")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["tags"], serde_json::json!(["v*"]), "{f}");
    assert_eq!(
        f["targets"],
        serde_json::json!([
            "aarch64-apple-darwin",
            "aarch64-unknown-linux-gnu",
            "x86_64-apple-darwin",
            "x86_64-unknown-linux-gnu"
        ]),
        "{f}"
    );
    assert_eq!(
        f["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"]),
        "{f}"
    );
    let binaries = f["binaries"].as_str().unwrap();
    assert!(
        binaries.contains("cargo build --release --locked")
            && binaries.contains("sha256")
            && binaries.contains("completions")
            && binaries.contains("man --out-dir"),
        "{binaries}"
    );
    assert!(
        f["manifest"]
            .as_str()
            .unwrap()
            .contains("docker buildx imagetools create"),
        "{f}"
    );
    let release = f["release"].as_str().unwrap();
    assert!(
        release.contains("sha256sum -c")
            && release.contains("SHA256SUMS")
            && release.contains("gh release create"),
        "{release}"
    );
    assert_eq!(
        f["release_needs"],
        serde_json::json!(["binaries", "manifest"]),
        "{f}"
    );
}

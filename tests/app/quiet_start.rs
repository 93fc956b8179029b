//! A quiet, helpful start: the binary as a new user first runs it, with no AWS configuration, then
//! with a region but no credentials, against a local instance-metadata service that counts what
//! it is asked. At the default level no dependency prints a warning or a Debug dump, our one line
//! names the fix, the region is looked up in instance metadata at most once (never when a region
//! is configured), and `-v` still shows the details.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::common::process::{ProxyProcess, isolated_cmd};

/// Paths of the instance-metadata API.
const TOKEN_PATH: &str = "/latest/api/token";
const REGION_PATH: &str = "/latest/meta-data/placement/region";

/// A local EC2 instance-metadata service (IMDSv2) that hands out session tokens, knows no region
/// and no role, and records every request as "METHOD PATH".
struct FakeImds {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeImds {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        // Detached: the thread blocks in accept until the test process exits.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let mut words = first.split_whitespace();
                let line = format!(
                    "{} {}",
                    words.next().unwrap_or(""),
                    words.next().unwrap_or("")
                );
                let reply = if line == format!("PUT {TOKEN_PATH}") {
                    "HTTP/1.1 200 OK\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\
                     Content-Length: 5\r\nConnection: close\r\n\r\ntoken"
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                log.lock().unwrap().push(line);
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        FakeImds { url, requests }
    }

    fn count(&self, method_path: &str) -> usize {
        let r = self.requests.lock().unwrap();
        r.iter().filter(|l| *l == method_path).count()
    }

    fn all(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// The binary with no AWS configuration at all, instance metadata served by `imds`.
fn bare(imds: &FakeImds) -> std::process::Command {
    let mut c = isolated_cmd();
    c.env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0");
    c
}

/// Lines a dependency logged (any level), and Debug dumps of nested error values.
fn third_party_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            [
                "aws_config",
                "aws_runtime",
                "aws_smithy",
                "hyper",
                "rustls",
                "tungstenite",
            ]
            .iter()
            .any(|t| l.contains(t))
                || l.contains(" WARN ")
                || l.contains("{ source:")
        })
        .collect()
}

#[test]
fn no_aws_configuration_says_only_what_to_do() {
    let imds = FakeImds::start();
    let out = bare(&imds).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        third_party_lines(&stderr).is_empty(),
        "dependency output at the default level:\n{stderr}"
    );
    assert!(
        stderr.contains("pass --region") && stderr.contains("AWS_REGION"),
        "{stderr}"
    );
    // One region lookup at most, however many times the configuration is loaded.
    assert!(
        imds.count(&format!("GET {REGION_PATH}")) <= 1,
        "{:?}",
        imds.all()
    );
}

#[test]
fn region_without_credentials_names_the_fix() {
    let imds = FakeImds::start();
    let out = bare(&imds).env("AWS_REGION", "eu-west-1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        third_party_lines(&stderr).is_empty(),
        "dependency output at the default level:\n{stderr}"
    );
    for fix in [
        "aws configure",
        "aws sso login --profile",
        "--profile",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(stderr.contains(fix), "no `{fix}` in:\n{stderr}");
    }
    // A configured region is never looked up in instance metadata.
    assert_eq!(
        imds.count(&format!("GET {REGION_PATH}")),
        0,
        "{:?}",
        imds.all()
    );

    // The same with a named profile: the fix names it.
    let out = bare(&imds)
        .env("AWS_REGION", "eu-west-1")
        .args(["--profile", "dev"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("aws sso login --profile dev") && stderr.contains("another --profile"),
        "{stderr}"
    );
}

#[test]
fn verbose_still_shows_the_details() {
    let imds = FakeImds::start();
    let out = bare(&imds).arg("-v").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("aws_config") && stderr.contains("IMDS"),
        "-v hides the instance-metadata details:\n{stderr}"
    );
    let out = bare(&imds)
        .env("AWS_REGION", "eu-west-1")
        .arg("-vv")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("aws_config::meta::credentials::chain"),
        "-vv hides the credentials chain:\n{stderr}"
    );
}

#[test]
fn a_configured_region_never_reaches_instance_metadata() {
    let imds = FakeImds::start();
    // A direct endpoint whose name holds the region, static keys: serving starts (the token is
    // minted per connection), the credentials watcher loads the configuration again.
    let proxy = ProxyProcess::spawn({
        let mut c = bare(&imds);
        c.env("AWS_ACCESS_KEY_ID", "AKIDQUIETSTART")
            .env("AWS_SECRET_ACCESS_KEY", "quiet/start/secret")
            .env(
                "RDS_IAM_PROXY_DB_ENDPOINT",
                "mydb.cluster-abc123.eu-west-1.rds.amazonaws.com:3306",
            )
            .env("RDS_IAM_PROXY_DIAL", "127.0.0.1:9");
        c
    });
    assert!(
        proxy.start_line.contains("region eu-west-1"),
        "{}",
        proxy.start_line
    );
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    assert!(third_party_lines(&stderr).is_empty(), "{stderr}");
    assert!(imds.all().is_empty(), "{:?}", imds.all());
}

//! Corporate proxies, end to end: the binary reaches the simulator's AWS account and SSM (API calls
//! through its own client and the SDK's, and the SSM WebSocket) through a real HTTP proxy,
//! Debian's tinyproxy with Basic authentication, and logs in to the RDS-shaped MariaDB behind it;
//! `NO_PROXY` bypasses the proxy; wrong proxy credentials name the hop and the fix; `doctor` says
//! which proxy is in use; and `HTTPS_PROXY` is what real (https) AWS endpoints go through. The
//! proxy password never appears in any output, even at `-vv`. Feature `sim`; needs `tinyproxy`
//! (`scripts/test` installs Debian's `tinyproxy-bin`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::aws_sim::{bare, sim_for};
use crate::common::process::{ProxyProcess, isolated_cmd, mariadb};
use crate::common::upstream::RdsLikeUpstream;
use ssm_sim::aws::AwsWorld;

const PROXY_USER: &str = "corp";
const PROXY_PASSWORD: &str = "pr0xy-s3cret";
/// base64("corp:pr0xy-s3cret"), as it would appear in a Proxy-Authorization header.
const PROXY_BASIC: &str = "Y29ycDpwcjB4eS1zM2NyZXQ=";

/// tinyproxy on a free loopback port, with its own directory (config, log); stopped and removed
/// on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Tinyproxy {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rdsiam-tinyproxy-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = crate::common::process::free_port();
        let conf = dir.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
                 MaxClients 50\nAllow 127.0.0.1\nDisableViaHeader Yes\n\
                 BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n",
                dir.join("tinyproxy.log").display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (Debian's tinyproxy-bin; scripts/test installs it)");
        let tp = Tinyproxy { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        tp
    }

    /// The proxy URL with `password`.
    fn url(&self, password: &str) -> String {
        format!("http://{PROXY_USER}:{password}@127.0.0.1:{}", self.port)
    }

    /// The request lines tinyproxy logged ("CONNECT host:port HTTP/1.1", "POST http://…").
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("tinyproxy.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("Request (file descriptor ").map(|x| x.1))
            .filter_map(|l| l.split_once("): ").map(|x| x.1.to_owned()))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// The default stack and an ECS bastion in front of `up`.
fn world(up: &RdsLikeUpstream) -> AwsWorld {
    let task = "3333333333333333cccccccccccccccc";
    let json = serde_json::json!({
        "region": up.region,
        "stacks": {"SecureDbConnectionStack": {"outputs": {
            "DbEndpoint": up.endpoint_host,
            "DbPort": up.endpoint_port.to_string(),
            "DbUser": "iamuser",
            "EcsCluster": "bastion",
            "EcsService": "bastion",
            "EcsContainer": "bastion",
            "Region": up.region
        }}},
        "ecs_clusters": {"bastion": {"services": {"bastion": {"tasks": [
            {"id": task, "containers": [{"name": "bastion", "runtime_id": format!("{task}-1")}]}
        ]}}}}
    });
    AwsWorld::from_json(&json.to_string()).expect("a valid world")
}

fn no_proxy_env(c: &mut Command) -> &mut Command {
    for v in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PROXY_PASSWORD) && !text.contains(PROXY_BASIC),
        "the proxy password is in {what}:\n{text}"
    );
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_goes_through_a_real_http_proxy_with_credentials() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let tp = Tinyproxy::start();
    let sim_port = sim.endpoint_url().rsplit(':').next().unwrap().to_owned();
    let sim_port = sim_port.trim_end_matches('/').to_owned();

    let mut cmd = bare(&up, &sim);
    no_proxy_env(&mut cmd)
        .env("ALL_PROXY", tp.url(PROXY_PASSWORD))
        .arg("-vv");
    let proxy = ProxyProcess::spawn(cmd);
    let port = proxy.port;
    let out = blocking(move || {
        mariadb(port, "iamuser")
            .args(["-e", "SELECT CURRENT_USER()"])
            .output()
            .unwrap()
    })
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("iamuser@"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    assert_no_password("the -vv log", &stderr);

    let requests = tp.requests();
    let tunnelled = format!("CONNECT 127.0.0.1:{sim_port} ");
    // Our AWS API client (CloudFormation, ECS: one connection per call) and the SSM WebSockets
    // (one per session, two sessions by default): CONNECT tunnels. The SDK's SSM client: plain
    // HTTP requests forwarded by the proxy (the simulator speaks http).
    let api_calls = sim
        .aws_world()
        .calls()
        .iter()
        .filter(|c| !c.starts_with("ssm:"))
        .count();
    let tunnels = requests
        .iter()
        .filter(|r| r.starts_with(&tunnelled))
        .count();
    assert!(
        api_calls >= 2 && tunnels >= api_calls + 2,
        "{api_calls} API calls, {tunnels} tunnels: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("POST http://127.0.0.1:{sim_port}/"))),
        "{requests:#?}"
    );
    let calls = sim.aws_world().calls();
    assert!(
        calls.iter().any(|c| c.contains("DescribeStacks")),
        "{calls:?}"
    );

    // doctor says so, and passes through it.
    let mut cmd = bare(&up, &sim);
    no_proxy_env(&mut cmd)
        .env("ALL_PROXY", tp.url(PROXY_PASSWORD))
        .arg("doctor");
    let out = blocking(move || cmd.output().unwrap()).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "✓ HTTP proxy: AWS calls and the SSM WebSocket go through http://127.0.0.1:{} (from \
             ALL_PROXY, with credentials)",
            tp.port
        )),
        "{text}"
    );
    assert_no_password("doctor's output", &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_goes_direct_and_wrong_credentials_name_the_hop() {
    let up = RdsLikeUpstream::start();
    let sim = sim_for(&up, world(&up)).await;
    let tp = Tinyproxy::start();

    // NO_PROXY lists the simulator's address: nothing reaches the proxy.
    let mut cmd = bare(&up, &sim);
    no_proxy_env(&mut cmd)
        .env("HTTPS_PROXY", tp.url(PROXY_PASSWORD))
        .env("ALL_PROXY", tp.url(PROXY_PASSWORD))
        .env("NO_PROXY", "localhost,127.0.0.1");
    let proxy = ProxyProcess::spawn(cmd);
    let port = proxy.port;
    let out = blocking(move || {
        mariadb(port, "iamuser")
            .args(["-e", "SELECT CURRENT_USER()"])
            .output()
            .unwrap()
    })
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("iamuser@"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    assert!(tp.requests().is_empty(), "{:#?}", tp.requests());

    let mut cmd = bare(&up, &sim);
    no_proxy_env(&mut cmd)
        .env("ALL_PROXY", tp.url(PROXY_PASSWORD))
        .env("NO_PROXY", "127.0.0.1")
        .arg("doctor");
    let out = blocking(move || cmd.output().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✓ HTTP proxy: none for 127.0.0.1:"), "{text}");
    assert!(text.contains("(NO_PROXY), direct"), "{text}");

    // A wrong password: refused at the proxy, said so, with the variable to fix.
    let mut cmd = bare(&up, &sim);
    no_proxy_env(&mut cmd).env("ALL_PROXY", tp.url("not-the-password"));
    let out = blocking(move || cmd.output().unwrap()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the HTTP proxy http://127.0.0.1:{} refused the user name and password in ALL_PROXY",
            tp.port
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}

/// A one-shot fake proxy: records the CONNECT request it gets and refuses it with 403.
fn refusing_proxy() -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        head
    });
    (port, handle)
}

#[test]
fn real_aws_endpoints_take_https_proxy() {
    // No AWS_ENDPOINT_URL: the calls go to https://cloudformation.eu-west-1.amazonaws.com,
    // which only the fake proxy ever sees (as a CONNECT it refuses).
    let (port, seen) = refusing_proxy();
    let mut cmd = isolated_cmd();
    no_proxy_env(&mut cmd)
        .env(
            "HTTPS_PROXY",
            format!("http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"),
        )
        .env("AWS_ACCESS_KEY_ID", "AKIDHTTPSPROXY")
        .env("AWS_SECRET_ACCESS_KEY", "https/proxy/secret")
        .env("AWS_REGION", "eu-west-1")
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0")
        .arg("-vv");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let head = seen.join().unwrap();
    assert!(
        head.starts_with("CONNECT cloudformation.eu-west-1.amazonaws.com:443 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Proxy-Authorization: Basic {PROXY_BASIC}")),
        "{head}"
    );
    assert!(
        stderr.contains(&format!(
            "the HTTP proxy http://127.0.0.1:{port} refused CONNECT to \
             cloudformation.eu-west-1.amazonaws.com:443 (HTTP/1.1 403 Forbidden)"
        )),
        "{stderr}"
    );
    assert_no_password("the -vv log", &stderr);
}

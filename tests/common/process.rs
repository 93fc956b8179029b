//! The proxy binary as a process: an environment cut off from real AWS, the start line parsed
//! for the listen port, SIGTERM, and the mariadb CLI pointed at it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};

use super::upstream::RdsLikeUpstream;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rds-iam-proxy");

/// The binary with no AWS or proxy settings inherited, no config files and no instance metadata.
pub fn isolated_cmd() -> Command {
    super::logged_proxy::isolated(std::path::Path::new(BIN))
}

/// The binary configured (through its environment variables) for `up`, with the upstream's static
/// credentials when `creds`.
pub fn cmd_for(up: &RdsLikeUpstream, creds: bool) -> Command {
    let mut c = isolated_cmd();
    if creds {
        c.env("AWS_ACCESS_KEY_ID", &up.akid)
            .env("AWS_SECRET_ACCESS_KEY", &up.secret);
    }
    c.env("RDS_IAM_PROXY_DB_ENDPOINT", up.endpoint())
        .env("RDS_IAM_PROXY_DIAL", up.dial_addr())
        .env("RDS_IAM_PROXY_REGION", &up.region)
        .env("RDS_IAM_PROXY_CA_BUNDLE", &up.ca)
        .env("RDS_IAM_PROXY_LISTEN", "127.0.0.1:0");
    c
}

/// A running proxy process, killed on drop if the test did not stop it. Its stderr is drained
/// from the start on a thread, so a chatty process (trace logs) never blocks on a full pipe.
pub struct ProxyProcess {
    /// The process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Its start line.
    pub start_line: String,
    /// Everything it has written to stderr so far.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// The thread draining stderr (ends when the process closes it).
    drain: Option<std::thread::JoinHandle<()>>,
}

impl ProxyProcess {
    /// Spawns `cmd` and reads the start line
    /// ("rds-iam-proxy listening on 127.0.0.1:PORT, forwarding to …").
    pub fn spawn(cmd: Command) -> Self {
        let mut p = Self::spawn_any(cmd);
        p.port = p
            .start_line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.trim_end_matches(',').rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no start line, got {:?}", p.start_line));
        p
    }

    /// Spawns `cmd` and reads its first stdout line without parsing a port (`port` is 0): for a
    /// proxy that listens only on a Unix socket. An empty start line means it exited.
    pub fn spawn_any(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let drain = child.stderr.take().map(|e| {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(e).lines() {
                    let Ok(line) = line else { break };
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            })
        });
        let mut start_line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut start_line)
            .unwrap();
        ProxyProcess {
            child,
            port: 0,
            start_line,
            stderr,
            drain,
        }
    }

    /// What the process has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle` (true), or `timeout` passes (false).
    pub fn wait_for_stderr(&self, needle: &str, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.stderr.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// Sends SIGTERM, waits, and returns the exit status and everything logged to stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
        (status, self.stderr_so_far())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mariadb CLI for `user` at 127.0.0.1:`port`, plain TCP, batch output, no password.
pub fn mariadb(port: u16, user: &str) -> Command {
    let mut c = Command::new("mariadb");
    c.args([
        "--no-defaults",
        "--protocol=TCP",
        "--skip-ssl",
        "-h",
        "127.0.0.1",
    ])
    .args(["-P", &port.to_string(), "-u", user])
    .args(["--batch", "--skip-column-names"])
    .env_remove("MYSQL_PWD");
    c
}

/// A free loopback port (bound and released; good enough for a test's own listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET: the status code and the body.
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, out.clone()))?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    Ok((code, body))
}

/// [`try_http_get`] that must succeed.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap()
}

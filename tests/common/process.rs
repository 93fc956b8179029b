//! The proxy binary as a process: an environment cut off from real AWS, the start line parsed
//! for the listen port, SIGTERM, and the mariadb CLI pointed at it.

use std::io::{BufRead, BufReader, Read};
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

/// A running proxy process, killed on drop if the test did not stop it.
pub struct ProxyProcess {
    /// The process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Its start line.
    pub start_line: String,
}

impl ProxyProcess {
    /// Spawns `cmd` and reads the start line
    /// ("rds-iam-proxy listening on 127.0.0.1:PORT, forwarding to …").
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut start_line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut start_line)
            .unwrap();
        let port = start_line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.trim_end_matches(',').rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no start line, got {start_line:?}"));
        ProxyProcess {
            child,
            port,
            start_line,
        }
    }

    /// Sends SIGTERM, waits, and returns the exit status and everything logged to stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        // Drain stderr on a thread so a chatty process never blocks on a full pipe.
        let reader = self.child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        let stderr = reader.map(|r| r.join().unwrap()).unwrap_or_default();
        (status, stderr)
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

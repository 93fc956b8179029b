//! The proxy binary as a long-running process whose log goes to a file (for benchmarks and the
//! soak, where a chatty log must never fill a pipe): an environment cut off from real AWS and
//! from the caller's proxy settings, the start line parsed for the listen port, and SIGTERM (then
//! SIGKILL after 10 s) when stopped or dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// `bin` with no AWS or proxy settings inherited, no AWS config files and no instance metadata.
pub fn isolated(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("RDS_IAM_PROXY_") || k.starts_with("AWS_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("AWS_CONFIG_FILE", "/nonexistent/rds-iam-proxy-run/config")
        .env("XDG_CONFIG_HOME", "/nonexistent/rds-iam-proxy-run/xdg")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/rds-iam-proxy-run/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    c
}

/// A running proxy process.
pub struct LoggedProxy {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Kept open for the process's life (it printed its start line there).
    _stdout: Option<BufReader<ChildStdout>>,
}

impl LoggedProxy {
    /// Spawns `cmd` (which must make the proxy listen on `127.0.0.1:0`) with stderr to `log`, and
    /// reads the start line ("rds-iam-proxy listening on 127.0.0.1:PORT, forwarding to …").
    pub fn spawn(mut cmd: Command, log: &Path) -> Self {
        let log_file = std::fs::File::create(log).expect("create the proxy log");
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start the proxy");
        // From here on, Drop stops the process even if the start line never comes.
        let mut p = LoggedProxy {
            child,
            port: 0,
            _stdout: None,
        };
        let mut out = BufReader::new(p.child.stdout.take().expect("proxy stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read the start line");
        p.port = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.trim_end_matches(',').rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no listen address in the start line {line:?}; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        p._stdout = Some(out);
        p
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (what Drop does).
    pub fn stop(self) {}
}

impl Drop for LoggedProxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

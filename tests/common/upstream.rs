//! An RDS-shaped MariaDB for integration tests.
//!
//! [`RdsLikeUpstream::start`] runs `tests/upstream/rds-like-mariadb start`: a
//! private MariaDB 10.11 on a free loopback port with TLS (a throwaway CA; the
//! server certificate names only `DNS:<endpoint_host>`), IAM users that log in
//! through PAM with `mysql_clear_password`, and a `pam_exec` checker that
//! recomputes each token's SigV4 signature with botocore from the static
//! credentials in `akid`/`secret`. Dropping the value stops the server and
//! removes its directory and its `/etc/pam.d` file. Needs root, Debian's
//! `mariadb-server`, `mariadb-client` and `python3-botocore`.
//!
//! Instances are independent, so tests may start them in parallel.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Overrides for [`RdsLikeUpstream::start_with`]; `None` keeps the script's
/// default (`fake-rds.test`, `3306`, `us-east-1`, 900 s, the static test
/// credentials).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub endpoint_host: Option<String>,
    pub endpoint_port: Option<u16>,
    pub region: Option<String>,
    /// Oldest `X-Amz-Date` the checker accepts, in seconds.
    pub max_age: Option<u32>,
    pub akid: Option<String>,
    pub secret: Option<String>,
    /// Extra mariadbd options, after the script's defaults (later ones win), e.g.
    /// `--max-connect-errors=10`.
    pub server_args: Vec<String>,
}

/// Token options for [`RdsLikeUpstream::botocore_token_with`]: sign for
/// something other than what the instance expects.
#[derive(Debug, Clone, Default)]
pub struct TokenOptions {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub region: Option<String>,
    pub akid: Option<String>,
    pub secret: Option<String>,
    /// Sign this many seconds in the past (negative: in the future).
    pub ago_secs: Option<i64>,
    /// Signing time: ISO 8601 (`2024-08-26T22:00:00Z`), `YYYYMMDDTHHMMSSZ`
    /// or unix seconds.
    pub time: Option<String>,
}

#[derive(Debug)]
pub struct RdsLikeUpstream {
    pub dir: PathBuf,
    pub port: u16,
    pub endpoint_host: String,
    pub endpoint_port: u16,
    pub region: String,
    pub ca: PathBuf,
    pub socket: PathBuf,
    pub akid: String,
    pub secret: String,
    pub iam_users: Vec<String>,
    pub pw_user: String,
    pub pw_password: String,
    pub verify_log: PathBuf,
    /// mariadbd's process id.
    pub pid: u32,
    /// The PAM service name (`/etc/pam.d/<pam_service>`).
    pub pam_service: String,
    /// The server's error log.
    pub error_log: PathBuf,
    /// Everything the script printed, for fields not mirrored above.
    pub info: serde_json::Value,
}

/// Path of `tests/upstream/<name>`.
pub fn upstream_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("upstream")
        .join(name)
}

fn field<'a>(info: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    info.get(key)
        .unwrap_or_else(|| panic!("rds-like-mariadb output has no {key:?}: {info}"))
}

fn string(info: &serde_json::Value, key: &str) -> String {
    field(info, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {info}"))
        .to_owned()
}

fn number(info: &serde_json::Value, key: &str) -> u64 {
    field(info, key)
        .as_u64()
        .unwrap_or_else(|| panic!("{key:?} is not a number in {info}"))
}

impl RdsLikeUpstream {
    /// Start an instance with the defaults. Panics with the script's stderr
    /// if it fails.
    pub fn start() -> Self {
        Self::start_with(&StartOptions::default())
    }

    pub fn start_with(opts: &StartOptions) -> Self {
        let script = upstream_script("rds-like-mariadb");
        let mut cmd = Command::new(&script);
        cmd.arg("start")
            // A watchdog stops the instance if this test process dies
            // without running Drop (killed, aborted).
            .arg("--parent-pid")
            .arg(std::process::id().to_string());
        if let Some(v) = &opts.endpoint_host {
            cmd.arg("--endpoint-host").arg(v);
        }
        if let Some(v) = opts.endpoint_port {
            cmd.arg("--endpoint-port").arg(v.to_string());
        }
        if let Some(v) = &opts.region {
            cmd.arg("--region").arg(v);
        }
        if let Some(v) = opts.max_age {
            cmd.arg("--max-age").arg(v.to_string());
        }
        if let Some(v) = &opts.akid {
            cmd.arg("--akid").arg(v);
        }
        if let Some(v) = &opts.secret {
            cmd.arg("--secret").arg(v);
        }
        for v in &opts.server_args {
            cmd.arg(format!("--server-arg={v}"));
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            panic!(
                "rds-like-mariadb start failed ({}):\n{stderr}{stdout}",
                out.status
            );
        }
        let line = stdout.lines().next().unwrap_or_default();
        let info: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("rds-like-mariadb start printed no JSON line ({e}):\n{stdout}\n{stderr}")
        });
        let iam_users = field(&info, "iam_users")
            .as_array()
            .expect("iam_users is an array")
            .iter()
            .map(|u| u.as_str().expect("iam user name").to_owned())
            .collect();
        Self {
            dir: string(&info, "dir").into(),
            port: u16::try_from(number(&info, "port")).expect("port"),
            endpoint_host: string(&info, "endpoint_host"),
            endpoint_port: u16::try_from(number(&info, "endpoint_port")).expect("endpoint_port"),
            region: string(&info, "region"),
            ca: string(&info, "ca").into(),
            socket: string(&info, "socket").into(),
            akid: string(&info, "akid"),
            secret: string(&info, "secret"),
            iam_users,
            pw_user: string(&info, "pw_user"),
            pw_password: string(&info, "pw_password"),
            verify_log: string(&info, "verify_log").into(),
            pid: u32::try_from(number(&info, "pid")).expect("pid"),
            pam_service: string(&info, "pam_service"),
            error_log: string(&info, "error_log").into(),
            info,
        }
    }

    /// Where to dial: `127.0.0.1:PORT`.
    pub fn dial_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The RDS endpoint the tokens and the certificate name:
    /// `fake-rds.test:3306` by default.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.endpoint_host, self.endpoint_port)
    }

    /// Run SQL as root over the unix socket (`mariadb --batch
    /// --skip-column-names`); returns stdout. Panics if the CLI fails.
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run the mariadb CLI");
        assert!(
            out.status.success(),
            "root SQL {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("root SQL output is UTF-8")
    }

    /// A token for `user`, made by botocore's `generate_db_auth_token` with
    /// the instance's endpoint, region and static credentials.
    pub fn botocore_token(&self, user: &str) -> String {
        self.botocore_token_with(user, &TokenOptions::default())
    }

    /// A botocore token for `user` with some inputs changed (another secret,
    /// region, host, port or signing time).
    pub fn botocore_token_with(&self, user: &str, opts: &TokenOptions) -> String {
        let mut cmd = Command::new(upstream_script("rds-like-mariadb"));
        cmd.arg("token")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--user")
            .arg(user);
        if let Some(v) = &opts.host {
            cmd.arg("--host").arg(v);
        }
        if let Some(v) = opts.port {
            cmd.arg("--port").arg(v.to_string());
        }
        if let Some(v) = &opts.region {
            cmd.arg("--region").arg(v);
        }
        if let Some(v) = &opts.akid {
            cmd.arg("--akid").arg(v);
        }
        if let Some(v) = &opts.secret {
            cmd.arg("--secret").arg(v);
        }
        if let Some(v) = opts.ago_secs {
            cmd.arg(format!("--ago={v}"));
        }
        if let Some(v) = &opts.time {
            cmd.arg("--time").arg(v);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("run rds-like-mariadb token");
        assert!(
            out.status.success(),
            "rds-like-mariadb token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).expect("token is UTF-8");
        token.trim_end_matches('\n').to_owned()
    }

    /// The checker's log: one line per login attempt,
    /// `<time> accept|reject user=<u> reason=<slug> len=<n> [detail=<d>]`.
    pub fn verify_log(&self) -> String {
        std::fs::read_to_string(&self.verify_log).unwrap_or_default()
    }

    /// The server's error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// Stop now (also what Drop does). Returns the script's output.
    fn stop_output(&self) -> std::io::Result<Output> {
        Command::new(upstream_script("rds-like-mariadb"))
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
    }
}

impl Drop for RdsLikeUpstream {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- rds-like-mariadb {} (port {}) checker log:\n{}--- server error log (tail):\n{}",
                self.dir.display(),
                self.port,
                self.verify_log(),
                self.error_log()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        match self.stop_output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "rds-like-mariadb stop {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run rds-like-mariadb stop: {e}"),
        }
    }
}

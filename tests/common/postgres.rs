//! An RDS-shaped PostgreSQL for integration tests.
//!
//! [`RdsLikePostgres::start`] runs `tests/upstream/postgres/rds-like-postgres start`: Debian's
//! PostgreSQL in a private directory, run as the `postgres` OS user on a free loopback port, TLS
//! with a throwaway CA whose server certificate names only `DNS:<endpoint_host>`, `hostssl … pam`
//! in pg_hba.conf (the server asks for a cleartext password, as RDS IAM does) with the
//! `pam_exec` checker that recomputes each token's SigV4 signature with botocore from the static
//! credentials in `akid`/`secret`, and no plaintext `host` line. Roles: `iamuser`, `iamuser2`
//! (members of `rds_iam`), `pwuser` (SCRAM password); database `proxytest`. With
//! [`PgAuth::Scram`] or [`PgAuth::Md5`] the IAM users get that method instead (for tests of an
//! upstream that asks for something else). Dropping the value stops the server and removes its
//! directory and its `/etc/pam.d` file; a watchdog does the same if the test process dies.
//! Needs root, Debian's `postgresql` and `python3-botocore`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use rds_iam_proxy::iam::{self, AuthToken, TokenRequest};

use super::upstream::upstream_script;

/// The IAM users' method in pg_hba.conf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PgAuth {
    /// `pam`: a cleartext password checked by the botocore token checker (RDS IAM).
    #[default]
    Pam,
    /// `scram-sha-256`, with a random password ([`RdsLikePostgres::iam_password`]).
    Scram,
    /// `md5`, with a random password stored as an MD5 hash.
    Md5,
}

impl PgAuth {
    fn arg(self) -> &'static str {
        match self {
            PgAuth::Pam => "pam",
            PgAuth::Scram => "scram-sha-256",
            PgAuth::Md5 => "md5",
        }
    }
}

/// Overrides for [`RdsLikePostgres::start_with`]; `None` keeps the script's default
/// (`fake-rds.test`, `5432`, `us-east-1`, 900 s, the static test credentials).
#[derive(Debug, Clone, Default)]
pub struct PgStartOptions {
    pub endpoint_host: Option<String>,
    pub endpoint_port: Option<u16>,
    pub region: Option<String>,
    pub max_age: Option<u32>,
    pub akid: Option<String>,
    pub secret: Option<String>,
    pub auth: PgAuth,
}

#[derive(Debug)]
pub struct RdsLikePostgres {
    pub dir: PathBuf,
    pub port: u16,
    pub endpoint_host: String,
    pub endpoint_port: u16,
    pub region: String,
    pub ca: PathBuf,
    /// The unix-socket directory (the superuser logs in there, `trust`).
    pub socket_dir: PathBuf,
    pub akid: String,
    pub secret: String,
    pub auth: PgAuth,
    pub iam_users: Vec<String>,
    /// The role granted to the IAM users (`rds_iam`).
    pub iam_role: String,
    /// The IAM users' password with [`PgAuth::Scram`] / [`PgAuth::Md5`].
    pub iam_password: Option<String>,
    pub pw_user: String,
    pub pw_password: String,
    pub database: String,
    pub verify_log: PathBuf,
    pub server_log: PathBuf,
    /// The postmaster's process id.
    pub pid: u32,
    pub pam_service: String,
    /// `SHOW server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// How long `start` took, as the script measured it.
    pub start_seconds: f64,
    /// Everything the script printed.
    pub info: serde_json::Value,
}

fn script() -> PathBuf {
    upstream_script("postgres").join("rds-like-postgres")
}

fn string(info: &serde_json::Value, key: &str) -> String {
    info.get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| panic!("rds-like-postgres printed no string {key:?}: {info}"))
        .to_owned()
}

fn number(info: &serde_json::Value, key: &str) -> u64 {
    info.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("rds-like-postgres printed no number {key:?}: {info}"))
}

impl RdsLikePostgres {
    /// Start an RDS-shaped instance (pam). Panics with the script's stderr if it fails.
    pub fn start() -> Self {
        Self::start_with(&PgStartOptions::default())
    }

    pub fn start_with(opts: &PgStartOptions) -> Self {
        let mut cmd = Command::new(script());
        cmd.arg("start")
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--auth")
            .arg(opts.auth.arg());
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
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("run rds-like-postgres start");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "rds-like-postgres start failed ({}):\n{stderr}{stdout}",
            out.status
        );
        let line = stdout.lines().next().unwrap_or_default();
        let info: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("rds-like-postgres start printed no JSON line ({e}):\n{stdout}\n{stderr}")
        });
        let iam_users = info["iam_users"]
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
            socket_dir: string(&info, "socket_dir").into(),
            akid: string(&info, "akid"),
            secret: string(&info, "secret"),
            auth: opts.auth,
            iam_users,
            iam_role: string(&info, "iam_role"),
            iam_password: info["iam_password"].as_str().map(str::to_owned),
            pw_user: string(&info, "pw_user"),
            pw_password: string(&info, "pw_password"),
            database: string(&info, "database"),
            verify_log: string(&info, "verify_log").into(),
            server_log: string(&info, "server_log").into(),
            pid: u32::try_from(number(&info, "pid")).expect("pid"),
            pam_service: string(&info, "pam_service"),
            server_version: string(&info, "server_version"),
            start_seconds: info["start_seconds"].as_f64().unwrap_or_default(),
            info,
        }
    }

    /// Where to dial: `127.0.0.1:PORT`.
    pub fn dial_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The RDS endpoint the tokens and the certificate name (`fake-rds.test:5432`).
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.endpoint_host, self.endpoint_port)
    }

    /// The static credentials the checker verifies signatures with.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(&self.akid, &self.secret, None, None, "rds-like-postgres")
    }

    /// A token for `user` minted now by the project's own presigner
    /// ([`rds_iam_proxy::iam::presign`]), for the instance's endpoint, region and credentials.
    pub fn iam_token(&self, user: &str) -> AuthToken {
        self.iam_token_signed_with(user, &self.credentials())
    }

    /// A token for `user` signed with other credentials (which the checker rejects).
    pub fn iam_token_signed_with(&self, user: &str, creds: &Credentials) -> AuthToken {
        let req = TokenRequest {
            host: self.endpoint_host.clone(),
            port: self.endpoint_port,
            user: user.to_owned(),
            region: self.region.clone(),
        };
        iam::presign(&req, creds, SystemTime::now()).expect("presign a token")
    }

    /// A libpq connection string that dials 127.0.0.1 but verifies the certificate against the
    /// endpoint name (`host=` names, `hostaddr=` dials), with `sslmode=verify-full`.
    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host={} hostaddr=127.0.0.1 port={} user={user} dbname={} sslmode=verify-full \
             sslrootcert={} gssencmode=disable connect_timeout=20",
            self.endpoint_host,
            self.port,
            self.database,
            self.ca.display()
        )
    }

    /// Runs Debian's psql with `conninfo` and `PGPASSWORD=password`, `-XAtc sql`.
    pub fn psql(&self, conninfo: &str, password: &str, sql: &str) -> Output {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-c", sql, conninfo])
            .env("PGPASSWORD", password)
            .env_remove("PGSERVICE")
            .env_remove("PGSSLMODE")
            .stdin(Stdio::null())
            .output()
            .expect("run psql")
    }

    /// Runs SQL as the superuser over the unix socket (`psql -XAt`) in the test database;
    /// returns stdout. Panics if psql fails.
    pub fn superuser_sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg("-X")
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d"])
            .arg(&self.database)
            .args(["-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql as the superuser");
        assert!(
            out.status.success(),
            "superuser SQL {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("psql output is UTF-8")
    }

    /// The checker's log: one line per login attempt (never the token).
    pub fn verify_log(&self) -> String {
        std::fs::read_to_string(&self.verify_log).unwrap_or_default()
    }

    /// The server's log.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.server_log).unwrap_or_default()
    }

    /// Waits until the checker's log has a line matching `pred` (PAM writes it before the
    /// server answers, so this only covers file-system lag).
    pub fn wait_verify_line(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        for _ in 0..100 {
            if let Some(l) = self.verify_log().lines().find(|l| pred(l)) {
                return Some(l.to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for RdsLikePostgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.server_log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "--- rds-like-postgres {} (port {}) checker log:\n{}--- server log (tail):\n{}",
                self.dir.display(),
                self.port,
                self.verify_log(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            );
        }
        match Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "rds-like-postgres stop {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run rds-like-postgres stop: {e}"),
        }
    }
}

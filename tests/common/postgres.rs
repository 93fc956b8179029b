//! An RDS-shaped PostgreSQL for integration tests, and real PostgreSQL clients' checks.
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
//!
//! Through the proxy: [`RdsLikePostgres::spec`] for a test proxy, and one check per real client
//! ([`psql_check`], [`psycopg_check`], [`node_pg_check`], [`jdbc_check`], [`pgx_check`],
//! [`tokio_postgres_check`]), each giving a [`PgReport`] for [`assert_pg_report`]: `current_user`,
//! `pg_stat_ssl.ssl`, parameters, the 4 MiB bytea's MD5 ([`BLOB_SQL`]), COPY out and in with
//! checksums, and a cancelled `pg_sleep(30)`. The external programs live in `tests/clients/`.
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

// ---------------------------------------------------------------------------------------------
// Through the proxy: the spec a test proxy needs, and real PostgreSQL clients' checks.

impl RdsLikePostgres {
    /// What a test proxy ([`super::proxy::RunningProxy`]) needs to reach this instance.
    pub fn spec(&self) -> super::proxy::UpstreamSpec {
        super::proxy::UpstreamSpec {
            endpoint_host: self.endpoint_host.clone(),
            endpoint_port: self.endpoint_port,
            dial: self.dial_addr(),
            region: self.region.clone(),
            ca: self.ca.clone(),
            akid: self.akid.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// The 4 MiB pseudo-random bytea every PostgreSQL client check reads, with the server's MD5 of
/// it (the scripts in `tests/clients/` carry copies).
pub const BLOB_SQL: &str = "SELECT b, md5(b) FROM (SELECT decode(string_agg(md5('rds-iam-proxy:' \
     || i), '' ORDER BY i), 'hex') AS b FROM generate_series(1, 262144) i) s";

/// Its length.
pub const BLOB_LEN: usize = 4 * 1024 * 1024;

/// Rows of the big COPY check: about 69 MB of COPY text each way.
pub const BIG_COPY_ROWS: u32 = 1_700_000;

/// Rows of the other clients' COPY checks (about 4 MB).
pub const COPY_ROWS: u32 = 100_000;

/// `COPY … TO STDOUT` of `rows` rows `(i, md5(i::text))`.
pub fn copy_out_sql(rows: u32) -> String {
    format!("COPY (SELECT i, md5(i::text) FROM generate_series(1, {rows}) i) TO STDOUT")
}

/// The server's MD5 of that COPY's text.
pub fn copy_out_md5_sql(rows: u32) -> String {
    format!(
        "SELECT md5(string_agg(i || E'\\t' || md5(i::text) || E'\\n', '' ORDER BY i)) FROM \
         generate_series(1, {rows}) i"
    )
}

/// The server's row count and MD5 of what was copied into `copy_in`.
pub const COPY_IN_CHECK_SQL: &str = "SELECT count(*), md5(string_agg(i || E'\\t' || s || E'\\n', \
     '' ORDER BY i)) FROM copy_in";

/// The COPY text of rows `(i, md5(i))` for `1..=rows`: what the COPY-in checks send.
pub fn copy_rows_text(rows: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows as usize * 42);
    for i in 1..=rows {
        out.extend_from_slice(format!("{i}\t{}\n", md5_hex(i.to_string().as_bytes())).as_bytes());
    }
    out
}

/// Lower-case hex MD5.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What one PostgreSQL client saw through the proxy (the JSON of `tests/clients/*/pg_check.*`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PgReport {
    pub client: String,
    pub user: String,
    pub ssl: bool,
    /// Whether the process id the client was given is `pg_backend_pid()` (`None`: the client
    /// does not show it).
    pub backend_pid_match: Option<bool>,
    pub param: String,
    pub blob_len: usize,
    pub blob_md5_client: String,
    pub blob_md5_server: String,
    pub copy_out_bytes: u64,
    pub copy_out_md5_client: String,
    pub copy_out_md5_server: String,
    pub copy_in_rows: u64,
    pub copy_in_md5_client: String,
    pub copy_in_md5_server: String,
    pub cancel_sqlstate: String,
    /// Whether the local leg is TLS (psycopg only reports it).
    #[serde(default)]
    pub local_tls: Option<bool>,
}

/// Asserts everything a client must see through the proxy; `copy` says whether the client did
/// the COPY checks (node-postgres has no COPY of its own), `params` whether it sent parameters.
pub fn assert_pg_report(r: &PgReport, user: &str, copy: bool, params: bool) {
    let c = &r.client;
    assert_eq!(r.user, user, "{c}: current_user: {r:?}");
    assert!(
        r.ssl,
        "{c}: pg_stat_ssl.ssl is not true for its backend: {r:?}"
    );
    assert_ne!(
        r.backend_pid_match,
        Some(false),
        "{c}: BackendKeyData pid != pg_backend_pid(): {r:?}"
    );
    if params {
        assert_eq!(r.param, "42|hello", "{c}: parameters: {r:?}");
    }
    assert_eq!(r.blob_len, BLOB_LEN, "{c}: bytea length: {r:?}");
    assert_eq!(r.blob_md5_client.len(), 32, "{c}: {r:?}");
    assert_eq!(
        r.blob_md5_client, r.blob_md5_server,
        "{c}: bytea md5: {r:?}"
    );
    if copy {
        assert!(r.copy_out_bytes > 0, "{c}: {r:?}");
        assert_eq!(r.copy_out_md5_client.len(), 32, "{c}: {r:?}");
        assert_eq!(
            r.copy_out_md5_client, r.copy_out_md5_server,
            "{c}: COPY out: {r:?}"
        );
        assert!(r.copy_in_rows > 0, "{c}: {r:?}");
        assert_eq!(
            r.copy_in_md5_client, r.copy_in_md5_server,
            "{c}: COPY in: {r:?}"
        );
    }
    assert_eq!(
        r.cancel_sqlstate, "57014",
        "{c}: cancel of pg_sleep(30): {r:?}"
    );
}

/// A PostgreSQL client check's target: the proxy's port, the user, the database.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub port: u16,
    pub user: String,
    pub dbname: String,
}

impl PgTarget {
    /// libpq's keywords for it: no password, no TLS (the proxy's upstream leg is TLS).
    pub fn conninfo(&self) -> String {
        format!("{} gssencmode=disable", self.rust_conninfo())
    }

    /// The same for tokio-postgres, which has no `gssencmode` (nor GSSAPI).
    pub fn rust_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=disable connect_timeout=30",
            self.port, self.user, self.dbname
        )
    }

    fn script_args(&self) -> Vec<String> {
        vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.port.to_string(),
            "--user".into(),
            self.user.clone(),
            "--dbname".into(),
            self.dbname.clone(),
        ]
    }
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn run_json<T: serde::de::DeserializeOwned>(mut cmd: Command, what: &str) -> T {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstderr:\n{}\nstdout:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: unparsable report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn psycopg_command(t: &PgTarget) -> Command {
    let python = std::env::var("RDS_IAM_PROXY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut c = Command::new(python);
    c.arg(clients_dir().join("python/pg_check.py"))
        .args(t.script_args());
    c
}

fn node_pg_command(t: &PgTarget) -> Command {
    let dir = clients_dir().join("node");
    assert!(
        dir.join("node_modules/pg").is_dir(),
        "node-postgres is not installed: run `npm ci --prefix tests/clients/node` first"
    );
    let node = std::env::var("RDS_IAM_PROXY_TEST_NODE").unwrap_or_else(|_| "node".into());
    let mut c = Command::new(node);
    c.arg(dir.join("pg_check.js")).args(t.script_args());
    c
}

/// psycopg 3 (libpq underneath): every check, COPY of `copy_rows` rows each way.
pub fn psycopg_check(t: &PgTarget, copy_rows: u32) -> PgReport {
    psycopg_check_with(t, copy_rows, &[])
}

/// [`psycopg_check`] with more of the script's options (`--sslmode require`,
/// `--sslnegotiation direct`, ...).
pub fn psycopg_check_with(t: &PgTarget, copy_rows: u32, options: &[&str]) -> PgReport {
    let mut c = psycopg_command(t);
    c.args(["--copy-rows", &copy_rows.to_string()])
        .args(options);
    run_json(c, "psycopg pg_check.py")
}

/// node-postgres (pure JavaScript): every check but COPY.
pub fn node_pg_check(t: &PgTarget) -> PgReport {
    run_json(node_pg_command(t), "node-postgres pg_check.js")
}

/// pgJDBC (Debian's `libpostgresql-jdbc-java`, run as a single-file Java program): every check,
/// COPY of `copy_rows` rows each way through its `CopyManager`, `Statement.cancel()`.
pub fn jdbc_check(t: &PgTarget, copy_rows: u32) -> PgReport {
    let jar = std::env::var("RDS_IAM_PROXY_TEST_PGJDBC")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    assert!(
        std::path::Path::new(&jar).is_file(),
        "pgJDBC is not installed at {jar}: run scripts/test (it installs libpostgresql-jdbc-java)"
    );
    let mut c = Command::new("java");
    c.arg("-cp")
        .arg(jar)
        .arg(clients_dir().join("java/PgCheck.java"))
        .args(t.script_args())
        .args(["--copy-rows", &copy_rows.to_string()]);
    run_json(c, "pgJDBC PgCheck.java")
}

/// pgx v4 (Go; Debian's `golang-github-jackc-pgx-v4-dev`, built once per test process in GOPATH
/// mode against `/usr/share/gocode`, as the Go module proxy is not used): every check, COPY of
/// `copy_rows` rows each way through pgconn's `CopyTo` / `CopyFrom`, `CancelRequest`.
pub fn pgx_check(t: &PgTarget, copy_rows: u32) -> PgReport {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let bin = BUILT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg_check_go");
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(clients_dir().join("go/pg_check.go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .output()
            .expect("run go build (scripts/test installs golang-go)");
        assert!(
            built.status.success(),
            "go build tests/clients/go/pg_check.go failed (scripts/test installs golang-go and \
             golang-github-jackc-pgx-v4-dev): {}",
            String::from_utf8_lossy(&built.stderr)
        );
        out
    });
    let mut c = Command::new(bin);
    c.args(t.script_args())
        .args(["--copy-rows", &copy_rows.to_string()]);
    run_json(c, "pgx pg_check.go")
}

/// What a client shows when its login fails: SQLSTATE and message.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PgError {
    pub sqlstate: String,
    pub message: String,
}

/// psycopg's view of a login that must fail.
pub fn psycopg_expect_error(t: &PgTarget) -> PgError {
    let mut c = psycopg_command(t);
    c.arg("--expect-error");
    run_json(c, "psycopg pg_check.py --expect-error")
}

/// node-postgres's view of a login that must fail.
pub fn node_pg_expect_error(t: &PgTarget) -> PgError {
    let mut c = node_pg_command(t);
    c.arg("--expect-error");
    run_json(c, "node-postgres pg_check.js --expect-error")
}

/// Debian's psql at `t` with `-XAtq` and `args`, no password in the environment.
pub fn psql_at(t: &PgTarget) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(t.conninfo())
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .env("PGAPPNAME", "psql-check");
    c
}

fn psql_ok(mut c: Command, input: Option<&[u8]>, what: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = c
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql");
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("psql stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let out = child.wait_with_output().expect("psql output");
    assert!(
        out.status.success(),
        "psql {what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// psql: login, `current_user` and `pg_stat_ssl`, the bytea, COPY `copy_rows` rows out and in,
/// and a cancel of `pg_sleep(30)` by SIGINT (psql's Ctrl-C sends a CancelRequest). psql 15 has
/// no way to send parameters (`\bind` came in 16), so `param` stays empty.
pub fn psql_check(t: &PgTarget, up: &RdsLikePostgres, copy_rows: u32) -> PgReport {
    let mut r = PgReport {
        client: "psql".into(),
        ..PgReport::default()
    };
    let mut c = psql_at(t);
    c.args([
        "-c",
        "SELECT current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
    ]);
    let out = String::from_utf8(psql_ok(c, None, "login")).unwrap();
    let (user, ssl) = out.trim().split_once('|').expect("user|ssl");
    r.user = user.to_owned();
    r.ssl = ssl == "t";
    let mut c = psql_at(t);
    c.arg("-c")
        .arg(BLOB_SQL.replacen("SELECT b,", "SELECT encode(b, 'hex'),", 1));
    let out = String::from_utf8(psql_ok(c, None, "bytea")).unwrap();
    let (hex, md5) = out.trim().split_once('|').expect("hex|md5");
    let blob: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    r.blob_len = blob.len();
    r.blob_md5_client = md5_hex(&blob);
    r.blob_md5_server = md5.to_owned();
    let mut c = psql_at(t);
    c.arg("-c").arg(copy_out_sql(copy_rows));
    let out = psql_ok(c, None, "COPY out");
    r.copy_out_bytes = out.len() as u64;
    r.copy_out_md5_client = md5_hex(&out);
    r.copy_out_md5_server = up
        .superuser_sql(&copy_out_md5_sql(copy_rows))
        .trim()
        .to_owned();
    let data = copy_rows_text(copy_rows);
    r.copy_in_md5_client = md5_hex(&data);
    let mut c = psql_at(t);
    c.args([
        "-c",
        "CREATE TEMP TABLE copy_in (i int, s text)",
        "-c",
        "COPY copy_in FROM STDIN",
        "-c",
        COPY_IN_CHECK_SQL,
    ]);
    let out = String::from_utf8(psql_ok(c, Some(&data), "COPY in")).unwrap();
    let (rows, md5) = out.trim().rsplit_once('|').expect("count|md5");
    r.copy_in_rows = rows
        .trim()
        .rsplit('\n')
        .next()
        .unwrap_or(rows)
        .parse()
        .expect("count");
    r.copy_in_md5_server = md5.to_owned();
    r.cancel_sqlstate = psql_cancel(t, up);
    r
}

/// Runs `SELECT pg_sleep(30)` in psql, waits until the server shows it running, sends psql
/// SIGINT (what Ctrl-C does: psql sends a CancelRequest), and returns 57014 when psql reports
/// the cancellation.
fn psql_cancel(t: &PgTarget, up: &RdsLikePostgres) -> String {
    let mut c = psql_at(t);
    c.env("PGAPPNAME", "psql-cancel-check")
        .args(["-c", "SELECT pg_sleep(30)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("run psql");
    let running = (0..400).any(|_| {
        let n = up.superuser_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = \
             'psql-cancel-check' AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
        );
        if n.trim() == "1" {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    assert!(running, "psql's pg_sleep never showed in pg_stat_activity");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let out = child.wait_with_output().expect("psql output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("canceling statement due to user request") {
        "57014".into()
    } else {
        format!("psql: {} {stderr}", out.status)
    }
}

/// tokio-postgres (pure Rust, no TLS on the local leg): every check, COPY of `copy_rows` rows
/// each way, and `CancelToken::cancel_query`.
pub async fn tokio_postgres_check(t: &PgTarget, copy_rows: u32) -> PgReport {
    use futures_util::{SinkExt, StreamExt};
    use tokio_postgres::NoTls;

    let (client, conn) = tokio_postgres::connect(&t.rust_conninfo(), NoTls)
        .await
        .expect("tokio-postgres logs in through the proxy");
    let conn = tokio::spawn(conn);
    let mut r = PgReport {
        client: "tokio-postgres".into(),
        ..PgReport::default()
    };
    let row = client
        .query_one(
            "SELECT current_user::text, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
            &[],
        )
        .await
        .unwrap();
    r.user = row.get(0);
    r.ssl = row.get::<_, Option<bool>>(1).unwrap_or(false);
    // Extended protocol: Parse, Bind with parameters, Execute.
    let row = client
        .query_one(
            "SELECT $1::int4 + $2::int4, $3::text",
            &[&40i32, &2i32, &"hello"],
        )
        .await
        .unwrap();
    r.param = format!("{}|{}", row.get::<_, i32>(0), row.get::<_, String>(1));
    let row = client.query_one(BLOB_SQL, &[]).await.unwrap();
    let blob: Vec<u8> = row.get(0);
    r.blob_len = blob.len();
    r.blob_md5_client = md5_hex(&blob);
    r.blob_md5_server = row.get(1);
    // COPY out.
    let stream = client
        .copy_out(copy_out_sql(copy_rows).as_str())
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut md5 = <md5::Md5 as md5::Digest>::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        r.copy_out_bytes += chunk.len() as u64;
        md5::Digest::update(&mut md5, &chunk);
    }
    r.copy_out_md5_client = md5::Digest::finalize(md5)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    r.copy_out_md5_server = client
        .query_one(copy_out_md5_sql(copy_rows).as_str(), &[])
        .await
        .unwrap()
        .get(0);
    // COPY in.
    client
        .batch_execute("CREATE TEMP TABLE copy_in (i int, s text)")
        .await
        .unwrap();
    let data = copy_rows_text(copy_rows);
    r.copy_in_md5_client = md5_hex(&data);
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY copy_in FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    for chunk in data.chunks(256 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    sink.finish().await.unwrap();
    let row = client.query_one(COPY_IN_CHECK_SQL, &[]).await.unwrap();
    r.copy_in_rows = row.get::<_, i64>(0) as u64;
    r.copy_in_md5_server = row.get(1);
    // Cancel: pg_sleep(30), then the driver's CancelToken once the server shows it running.
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let token = client.cancel_token();
    let sleeping = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(30)").await;
        (client, r)
    });
    let (watcher, wconn) = tokio_postgres::connect(&t.rust_conninfo(), NoTls)
        .await
        .unwrap();
    let wconn = tokio::spawn(wconn);
    for _ in 0..400 {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND \
                 query LIKE 'SELECT pg_sleep%'",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(watcher);
    let _ = wconn.await;
    token
        .cancel_query(NoTls)
        .await
        .expect("send the cancel request");
    let (client, outcome) = sleeping.await.unwrap();
    r.cancel_sqlstate = match outcome {
        Ok(_) => "completed".into(),
        Err(e) => e
            .code()
            .map(|c| c.code().to_owned())
            .unwrap_or_else(|| e.to_string()),
    };
    drop(client);
    let _ = conn.await;
    r
}

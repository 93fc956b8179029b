//! Real MySQL client libraries, driven from integration tests.
//!
//! Each `*_check` connects to a [`Target`] (normally the proxy's local listener),
//! runs the same checks and returns a [`ClientReport`]; [`assert_report_sane`]
//! says whether the report is what a correct proxy must produce.
//!
//! | function              | runs                                              |
//! |-----------------------|---------------------------------------------------|
//! | [`pymysql_check`]     | `$RDS_IAM_PROXY_TEST_PYTHON` (default `python3`) `tests/clients/python/client_check.py` |
//! | [`mysql2_check`]      | `$RDS_IAM_PROXY_TEST_NODE` (default `node`) `tests/clients/node/client_check.js` |
//! | [`mariadb_cli_check`] | `$RDS_IAM_PROXY_TEST_MARIADB` (default `mariadb`), several sessions |
//! | [`mysql_async_check`] | in process, the `mysql_async` crate                |
//!
//! Nothing is installed at test time. Before the tests, CI runs (from the
//! repository root):
//!
//! ```sh
//! python3 -m pip install -r tests/clients/python/requirements.txt
//! npm ci --prefix tests/clients/node
//! ```
//!
//! and the `python3` on `PATH` must be the one pip installed into (or set
//! `RDS_IAM_PROXY_TEST_PYTHON`).
//!
//! TLS to the target: `ssl_ca: None` means plain TCP for every client (PyMySQL and
//! the mariadb CLI would otherwise try TLS on their own); `Some(ca)` means TLS with
//! the chain verified against `ca`.
//!
//! Every external program gets [`PROGRAM_TIMEOUT`]; on timeout it is killed and the
//! test panics. On any failure the program's stderr is in the panic message.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What one client saw. See `tests/clients/python/client_check.py` for the meaning
/// of each field.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClientReport {
    pub client: String,
    /// `SELECT CURRENT_USER()`, e.g. `iamuser@%`.
    pub current_user: String,
    /// `SHOW SESSION STATUS LIKE 'Ssl_cipher'`: through the proxy, the upstream leg.
    pub ssl_cipher: String,
    /// The connection id the library read from the server greeting.
    pub greeting_conn_id: u64,
    /// `SELECT CONNECTION_ID()`.
    pub query_conn_id: u64,
    /// `SELECT ? + 1, ?` prepared server-side with (41, 'hello'), values joined by `|`.
    pub prepared: String,
    pub blob_len: u64,
    pub blob_md5_client: String,
    pub blob_md5_server: String,
    pub kill_query: KillReport,
}

/// `KILL QUERY` of a running `SELECT SLEEP(30)` on the main connection, sent from a
/// second connection.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct KillReport {
    pub victim_conn_id: u64,
    /// `"interrupted"` when SLEEP returned 1 or failed with 1317 *and* the victim
    /// connection still answered afterwards with the same id; otherwise what
    /// happened.
    pub result: String,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `None`: no password at all (what clients send to the proxy).
    pub password: Option<String>,
    /// `None`: plain TCP. `Some(ca)`: TLS, server certificate verified against `ca`.
    pub ssl_ca: Option<PathBuf>,
}

/// Upper bound for any one external program run.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

/// Size of the blob every check reads.
pub const BLOB_LEN: u64 = 4_194_304;

/// Builds the 4 MiB pseudo-random `@blob` server-side: the 32-byte SHA-256 digests of
/// 512 x 256 distinct strings, in a fixed order. The Python and Node programs carry
/// the same SQL.
pub const BLOB_SETUP: [&str; 2] = [
    "SET SESSION group_concat_max_len = 16777216",
    "SET @blob = (WITH RECURSIVE a(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM a WHERE i < 511), \
     b(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM b WHERE j < 255) \
     SELECT GROUP_CONCAT(UNHEX(SHA2(CONCAT('rds-iam-proxy:', a.i, ':', b.j), 256)) \
     ORDER BY a.i, b.j SEPARATOR '') FROM a CROSS JOIN b)",
];

const SLEEP_SQL: &str = "SELECT SLEEP(30)";
const POLL_LIMIT: Duration = Duration::from_secs(10);

/// Asserts everything a correct proxy (or a plain server) must give a client.
pub fn assert_report_sane(r: &ClientReport, expected_user: &str) {
    let c = &r.client;
    assert!(
        r.current_user.starts_with(&format!("{expected_user}@")),
        "{c}: CURRENT_USER() = {:?}, expected {expected_user}@...: {r:?}",
        r.current_user
    );
    assert!(!r.ssl_cipher.is_empty(), "{c}: empty Ssl_cipher: {r:?}");
    assert_eq!(
        r.greeting_conn_id, r.query_conn_id,
        "{c}: greeting connection id != CONNECTION_ID(): {r:?}"
    );
    assert_eq!(r.prepared, "42|hello", "{c}: prepared statement: {r:?}");
    assert_eq!(r.blob_len, BLOB_LEN, "{c}: blob length: {r:?}");
    assert_eq!(r.blob_md5_client.len(), 32, "{c}: blob md5: {r:?}");
    assert_eq!(
        r.blob_md5_client, r.blob_md5_server,
        "{c}: blob md5 client != server: {r:?}"
    );
    assert_eq!(r.kill_query.result, "interrupted", "{c}: KILL QUERY: {r:?}");
}

// ---------------------------------------------------------------------------
// PyMySQL and mysql2: external programs printing JSON

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn python() -> String {
    std::env::var("RDS_IAM_PROXY_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn node() -> String {
    std::env::var("RDS_IAM_PROXY_TEST_NODE").unwrap_or_else(|_| "node".into())
}

fn mariadb() -> String {
    std::env::var("RDS_IAM_PROXY_TEST_MARIADB").unwrap_or_else(|_| "mariadb".into())
}

/// The arguments shared by client_check.py and client_check.js.
fn program_args(t: &Target) -> Vec<String> {
    let mut a = vec![
        "--host".into(),
        t.host.clone(),
        "--port".into(),
        t.port.to_string(),
        "--user".into(),
        t.user.clone(),
    ];
    if let Some(pw) = &t.password {
        a.push("--password".into());
        a.push(pw.clone());
    }
    if let Some(ca) = &t.ssl_ca {
        a.push("--ssl-ca".into());
        a.push(ca.display().to_string());
    }
    a
}

fn python_command() -> Command {
    let mut c = Command::new(python());
    c.arg(clients_dir().join("python/client_check.py"));
    c
}

fn node_command() -> Command {
    let dir = clients_dir().join("node");
    assert!(
        dir.join("node_modules/mysql2").is_dir(),
        "mysql2 is not installed: run `npm ci --prefix tests/clients/node` first"
    );
    let mut c = Command::new(node());
    c.arg(dir.join("client_check.js"));
    c
}

fn report_from(what: &str, out: &Finished) -> ClientReport {
    out.expect_success(what);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: unparsable report ({e}): stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[derive(serde::Deserialize)]
struct ErrorReport {
    error_code: u16,
    error_message: String,
}

fn error_from(what: &str, out: &Finished) -> (u16, String) {
    out.expect_success(what);
    let e: ErrorReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: unparsable error report ({e}): stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (e.error_code, e.error_message)
}

/// PyMySQL (text protocol; the prepared check uses SQL `PREPARE`/`EXECUTE`).
pub fn pymysql_check(t: &Target) -> ClientReport {
    let mut c = python_command();
    c.args(program_args(t));
    report_from("pymysql client_check.py", &run(c, b""))
}

/// node mysql2 (the prepared check uses `execute()`, i.e. the binary protocol).
pub fn mysql2_check(t: &Target) -> ClientReport {
    let mut c = node_command();
    c.args(program_args(t));
    report_from("mysql2 client_check.js", &run(c, b""))
}

/// Login must fail: returns PyMySQL's (error code, message). The code is the
/// server's (e.g. 1045) or PyMySQL's own client code (e.g. 2013 lost connection).
pub fn pymysql_expect_error(t: &Target) -> (u16, String) {
    let mut c = python_command();
    c.args(program_args(t)).arg("--expect-error");
    error_from("pymysql client_check.py --expect-error", &run(c, b""))
}

/// Login must fail: returns mysql2's (error code, message). The code is 0 when the
/// failure was not a MySQL error packet (e.g. a reset socket); the message then
/// starts with the Node error code (`ECONNRESET: ...`).
pub fn mysql2_expect_error(t: &Target) -> (u16, String) {
    let mut c = node_command();
    c.args(program_args(t)).arg("--expect-error");
    error_from("mysql2 client_check.js --expect-error", &run(c, b""))
}

// ---------------------------------------------------------------------------
// mariadb CLI

fn mariadb_command(t: &Target, extra: &[&str]) -> Command {
    let mut c = Command::new(mariadb());
    c.env_remove("MYSQL_PWD")
        .env_remove("MYSQL_HOST")
        .env_remove("MYSQL_TCP_PORT")
        .arg("--no-defaults")
        // "localhost" would otherwise mean the unix socket.
        .arg("--protocol=TCP")
        .arg(format!("--host={}", t.host))
        .arg(format!("--port={}", t.port))
        .arg(format!("--user={}", t.user))
        .args(["--batch", "--skip-column-names", "--skip-reconnect"])
        .arg("--connect-timeout=10")
        .arg("--max-allowed-packet=64M");
    if let Some(pw) = &t.password {
        c.arg(format!("--password={pw}"));
    }
    match &t.ssl_ca {
        // The 10.11 client sends an SSLRequest unless told not to.
        None => {
            c.arg("--skip-ssl");
        }
        Some(ca) => {
            c.arg("--ssl")
                .arg(format!("--ssl-ca={}", ca.display()))
                .arg("--ssl-verify-server-cert");
        }
    }
    c.args(extra);
    c
}

/// Runs one batch session with `script` on stdin; panics unless it exits 0.
fn mariadb_session(t: &Target, extra: &[&str], script: &str, what: &str) -> Vec<u8> {
    let out = run(mariadb_command(t, extra), script.as_bytes());
    out.expect_success(&format!("mariadb CLI ({what})"));
    out.stdout
}

/// The mariadb CLI in batch mode, several sessions: login facts + prepared, the blob
/// (`--raw`), then KILL QUERY between two concurrently running clients.
pub fn mariadb_cli_check(t: &Target) -> ClientReport {
    // Session 1: `status` prints the greeting's id ("Connection id:").
    let script = "status;\n\
        SELECT CONCAT('current_user=', CURRENT_USER());\n\
        SELECT CONCAT('query_conn_id=', CONNECTION_ID());\n\
        SHOW SESSION STATUS LIKE 'Ssl_cipher';\n\
        SELECT '--prepared--';\n\
        PREPARE s FROM 'SELECT ? + 1, ?';\n\
        SET @a = 41, @b = 'hello';\n\
        EXECUTE s USING @a, @b;\n\
        DEALLOCATE PREPARE s;\n";
    let out = mariadb_session(t, &[], script, "login checks");
    let text = String::from_utf8_lossy(&out).into_owned();
    let fail = |what: &str| -> ! { panic!("mariadb CLI: no {what} in output:\n{text}") };
    let mut greeting = None;
    let mut current_user = None;
    let mut query_id = None;
    let mut cipher = None;
    let mut prepared = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(v) = line.strip_prefix("Connection id:") {
            greeting = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("current_user=") {
            current_user = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("query_conn_id=") {
            query_id = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("Ssl_cipher\t") {
            cipher = Some(v.to_string());
        } else if line == "Ssl_cipher" {
            cipher = Some(String::new());
        } else if line == "--prepared--" {
            prepared = lines.next().map(|l| l.replace('\t', "|"));
        }
    }
    let greeting_conn_id = greeting.unwrap_or_else(|| fail("Connection id"));
    let current_user = current_user.unwrap_or_else(|| fail("CURRENT_USER()"));
    let query_conn_id = query_id.unwrap_or_else(|| fail("CONNECTION_ID()"));
    let ssl_cipher = cipher.unwrap_or_else(|| fail("Ssl_cipher"));
    let prepared = prepared.unwrap_or_else(|| fail("EXECUTE result"));

    // Session 2: the raw blob bytes, a newline, the server's MD5, a newline.
    let mut script = String::new();
    for s in BLOB_SETUP {
        script.push_str(s);
        script.push_str(";\n");
    }
    script.push_str("SELECT @blob;\nSELECT MD5(@blob);\n");
    let out = mariadb_session(t, &["--raw"], &script, "blob");
    let (blob, tail) = out.split_at(out.len().saturating_sub(33));
    let md5_server = match (blob.last(), tail) {
        (Some(b'\n'), [md5 @ .., b'\n']) if md5.len() == 32 => {
            String::from_utf8_lossy(md5).to_ascii_lowercase()
        }
        _ => panic!(
            "mariadb CLI: unexpected blob output ({} bytes, tail {:?})",
            out.len(),
            String::from_utf8_lossy(tail)
        ),
    };
    let blob = &blob[..blob.len() - 1];

    ClientReport {
        client: "mariadb-cli".into(),
        current_user,
        ssl_cipher,
        greeting_conn_id,
        query_conn_id,
        prepared,
        blob_len: blob.len() as u64,
        blob_md5_client: md5_hex(blob),
        blob_md5_server: md5_server,
        kill_query: mariadb_cli_kill_query(t),
    }
}

/// Session A prints its id, sleeps, then prints `after=<id>` (`--force` keeps it
/// going past an error 1317). Session B polls the process list until A's SLEEP is
/// running, then sends KILL QUERY. Both are live processes fed line by line
/// (`--unbuffered` flushes output after every statement).
fn mariadb_cli_kill_query(t: &Target) -> KillReport {
    let mut a = LineChild::spawn(
        mariadb_command(t, &["--unbuffered", "--force"]),
        "mariadb A",
    );
    a.send(&format!(
        "SELECT CONNECTION_ID();\n{SLEEP_SQL};\nSELECT CONCAT('after=', CONNECTION_ID());\n"
    ));
    let victim: u64 = a
        .line(Duration::from_secs(30))
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("mariadb A: no connection id; stderr {}", a.abort()));

    let mut b = LineChild::spawn(mariadb_command(t, &["--unbuffered"]), "mariadb B");
    let deadline = Instant::now() + POLL_LIMIT;
    let mut seen = false;
    while Instant::now() < deadline {
        b.send(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE ID = {victim} AND INFO LIKE 'SELECT SLEEP(%';\n"
        ));
        match b.line(Duration::from_secs(30)).as_deref().map(str::trim) {
            Some("0") => thread::sleep(Duration::from_millis(50)),
            Some("1") => {
                seen = true;
                break;
            }
            other => panic!(
                "mariadb B: process list poll gave {other:?}; stderr {}; A's stderr {}",
                b.abort(),
                a.abort()
            ),
        }
    }
    if seen {
        b.send(&format!("KILL QUERY {victim};\nSELECT 'killed';\n"));
        let ack = b.line(Duration::from_secs(30));
        if ack.as_deref() != Some("killed") {
            panic!(
                "mariadb B: KILL QUERY gave {ack:?}; stderr {}; A's stderr {}",
                b.abort(),
                a.abort()
            );
        }
    }
    let (_, b_err, b_status) = b.finish_status();
    assert!(b_status.success(), "mariadb B failed: {b_err}");

    let (a_out, a_err, _) = a.finish_status();
    let mut sleep_value = None;
    let mut after = None;
    for l in a_out.lines() {
        if let Some(v) = l.strip_prefix("after=") {
            after = v.trim().parse::<u64>().ok();
        } else if sleep_value.is_none() {
            sleep_value = Some(l.trim().to_string());
        }
    }
    let got_1317 = a_err.contains("ERROR 1317");
    let result = if !seen {
        format!("sleep never seen in processlist; A printed {a_out:?}, stderr {a_err:?}")
    } else if !(sleep_value.as_deref() == Some("1") || got_1317) {
        format!("SLEEP gave {sleep_value:?}, stderr {a_err:?}")
    } else if after != Some(victim) {
        format!("interrupted, but the connection then said after={after:?}; stderr {a_err:?}")
    } else {
        "interrupted".into()
    };
    KillReport {
        victim_conn_id: victim,
        result,
    }
}

/// Login must fail: returns the CLI's stderr (e.g. `ERROR 1045 (28000): Access
/// denied ...`). Panics if the login succeeds.
pub fn mariadb_cli_expect_error(t: &Target) -> String {
    let out = run(mariadb_command(t, &[]), b"SELECT 'logged-in';\n");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(
        !out.status.success(),
        "mariadb CLI: login unexpectedly succeeded; stdout {:?}, stderr {stderr:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

// ---------------------------------------------------------------------------
// mysql_async (in process)

fn mysql_async_opts(t: &Target) -> mysql_async::Opts {
    let mut b = mysql_async::OptsBuilder::default()
        .ip_or_hostname(t.host.clone())
        .tcp_port(t.port)
        .user(Some(t.user.clone()))
        .pass(t.password.clone())
        // Default true: after login it reads @@socket and, if that path exists here,
        // silently reconnects over the unix socket -- which would bypass the proxy.
        .prefer_socket(false)
        // Otherwise read from @@max_allowed_packet after login.
        .max_allowed_packet(Some(64 * 1024 * 1024));
    if let Some(ca) = &t.ssl_ca {
        b = b.ssl_opts(mysql_async::SslOpts::default().with_root_certs(vec![ca.clone().into()]));
    }
    b.into()
}

fn value_text(v: &mysql_async::Value) -> String {
    use mysql_async::Value;
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Double(d) if d.fract() == 0.0 => format!("{d:.0}"),
        Value::Double(d) => d.to_string(),
        Value::Float(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Value::Float(f) => f.to_string(),
        other => format!("{other:?}"),
    }
}

async fn first_row(
    conn: &mut mysql_async::Conn,
    sql: &str,
) -> Result<Vec<mysql_async::Value>, mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    let row: Option<mysql_async::Row> = conn.query_first(sql).await?;
    Ok(row.map(|r| r.unwrap()).unwrap_or_default())
}

async fn first_value(conn: &mut mysql_async::Conn, sql: &str) -> mysql_async::Value {
    let row = first_row(conn, sql)
        .await
        .unwrap_or_else(|e| panic!("mysql_async: {sql}: {e}"));
    row.into_iter()
        .next()
        .unwrap_or_else(|| panic!("mysql_async: no row from {sql}"))
}

async fn first_u64(conn: &mut mysql_async::Conn, sql: &str) -> u64 {
    let v = first_value(conn, sql).await;
    value_text(&v)
        .parse()
        .unwrap_or_else(|_| panic!("mysql_async: {sql} gave {v:?}"))
}

/// The `mysql_async` crate: binary-protocol prepared statement via `exec_first`.
pub async fn mysql_async_check(t: &Target) -> ClientReport {
    use mysql_async::prelude::Queryable;
    let opts = mysql_async_opts(t);
    let mut conn = mysql_async::Conn::new(opts.clone())
        .await
        .unwrap_or_else(|e| panic!("mysql_async: connect to {}:{}: {e}", t.host, t.port));

    let greeting_conn_id = u64::from(conn.id());
    let current_user = value_text(&first_value(&mut conn, "SELECT CURRENT_USER()").await);
    let query_conn_id = first_u64(&mut conn, "SELECT CONNECTION_ID()").await;
    let cipher_row = first_row(&mut conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .expect("mysql_async: SHOW SESSION STATUS");
    let ssl_cipher = cipher_row.get(1).map(value_text).unwrap_or_default();

    let row: Option<mysql_async::Row> = conn
        .exec_first("SELECT ? + 1, ?", (41, "hello"))
        .await
        .expect("mysql_async: exec_first");
    let prepared = row
        .expect("mysql_async: no row from the prepared statement")
        .unwrap()
        .iter()
        .map(value_text)
        .collect::<Vec<_>>()
        .join("|");

    for s in BLOB_SETUP {
        conn.query_drop(s)
            .await
            .unwrap_or_else(|e| panic!("mysql_async: {s}: {e}"));
    }
    let blob = match first_value(&mut conn, "SELECT @blob").await {
        mysql_async::Value::Bytes(b) => b,
        other => panic!("mysql_async: blob came back as {other:?}"),
    };
    let blob_md5_server = value_text(&first_value(&mut conn, "SELECT MD5(@blob)").await);
    conn.query_drop("SET @blob = NULL")
        .await
        .expect("mysql_async: SET @blob = NULL");

    let kill_query = mysql_async_kill_query(&opts, conn).await;

    ClientReport {
        client: "mysql_async".into(),
        current_user,
        ssl_cipher,
        greeting_conn_id,
        query_conn_id,
        prepared,
        blob_len: blob.len() as u64,
        blob_md5_client: md5_hex(&blob),
        blob_md5_server: blob_md5_server.to_ascii_lowercase(),
        kill_query,
    }
}

async fn mysql_async_kill_query(opts: &mysql_async::Opts, mut a: mysql_async::Conn) -> KillReport {
    use mysql_async::prelude::Queryable;
    let victim = first_u64(&mut a, "SELECT CONNECTION_ID()").await;
    let sleeper = tokio::spawn(async move {
        let r = first_row(&mut a, SLEEP_SQL).await;
        (a, r)
    });
    let mut b = mysql_async::Conn::new(opts.clone())
        .await
        .expect("mysql_async: second connection");
    let deadline = Instant::now() + POLL_LIMIT;
    let mut seen = false;
    while Instant::now() < deadline && !sleeper.is_finished() {
        let n = first_u64(
            &mut b,
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE ID = {victim} AND INFO LIKE 'SELECT SLEEP(%'"
            ),
        )
        .await;
        if n > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if seen {
        b.query_drop(format!("KILL QUERY {victim}"))
            .await
            .expect("mysql_async: KILL QUERY");
    }
    let _ = b.disconnect().await;
    let (mut a, outcome) = tokio::time::timeout(Duration::from_secs(90), sleeper)
        .await
        .expect("mysql_async: SLEEP never came back")
        .expect("mysql_async: sleeper task panicked");
    let interrupted = match &outcome {
        Ok(row) => row.first().map(value_text).as_deref() == Some("1"),
        Err(mysql_async::Error::Server(e)) => e.code == 1317,
        Err(_) => false,
    };
    let result = if !seen {
        format!("sleep never seen in processlist; outcome {outcome:?}")
    } else if !interrupted {
        format!("SLEEP gave {outcome:?}")
    } else {
        match first_row(&mut a, "SELECT CONNECTION_ID()").await {
            Ok(row) if row.first().map(value_text) == Some(victim.to_string()) => {
                "interrupted".into()
            }
            other => format!("interrupted, but the connection then gave {other:?}"),
        }
    };
    let _ = a.disconnect().await;
    KillReport {
        victim_conn_id: victim,
        result,
    }
}

// ---------------------------------------------------------------------------
// helpers

fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A finished program run.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Finished {
    fn expect_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstderr:\n{}\nstdout:\n{}",
            self.status,
            String::from_utf8_lossy(&self.stderr),
            String::from_utf8_lossy(&self.stdout)
        );
    }
}

fn spawn_piped(mut cmd: Command, what: &str) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", cmd.get_program()))
}

fn collect<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child`, killing it after [`PROGRAM_TIMEOUT`].
fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: still running after {PROGRAM_TIMEOUT:?}; killed");
            }
            Err(e) => panic!("{what}: wait: {e}"),
        }
    }
}

/// Runs `cmd` with `input` on stdin and collects its output.
fn run(cmd: Command, input: &[u8]) -> Finished {
    let what = format!("{:?}", cmd.get_program());
    let mut child = spawn_piped(cmd, &what);
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = collect(child.stdout.take().expect("stdout"));
    let err = collect(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, &what);
    let _ = writer.join();
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A running program fed line by line, whose stdout is read line by line with a
/// timeout. Killed on drop if still running.
struct LineChild {
    what: String,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
}

impl LineChild {
    fn spawn(cmd: Command, what: &str) -> Self {
        let mut child = spawn_piped(cmd, what);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let stderr = Some(collect(child.stderr.take().expect("stderr")));
        LineChild {
            what: what.into(),
            child,
            stdin,
            lines: rx,
            stderr,
        }
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.what));
    }

    /// The next stdout line, or `None` on timeout / end of output.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Closes stdin, waits (bounded), returns (rest of stdout, stderr, status).
    fn finish_status(&mut self) -> (String, String, ExitStatus) {
        drop(self.stdin.take());
        let status = wait_bounded(&mut self.child, &self.what);
        let mut rest = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push_str(&l);
            rest.push('\n');
        }
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (rest, String::from_utf8_lossy(&err).into_owned(), status)
    }

    /// Kills the program (for failure paths) and returns its stderr.
    fn abort(&mut self) -> String {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&err).into_owned()
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

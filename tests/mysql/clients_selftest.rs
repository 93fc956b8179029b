//! Self-test of the client checks in `tests/common/clients.rs`: runs all four
//! clients straight against a private, plain MariaDB (no proxy), so a failure in
//! the proxy tests can be blamed on the proxy and not on the checks.
//!
//! Needs `mariadbd`, `mariadb-install-db`, `mariadb-admin`, `mariadb` and `openssl`
//! on PATH, plus the client installs described in `tests/common/clients.rs`.

use crate::common::clients;

use clients::{ClientReport, Target, assert_report_sane};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A throwaway MariaDB on a free loopback port, TLS on, torn down on drop.
struct PlainServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn sh(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PlainServer {
    fn start() -> PlainServer {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "rds-iam-proxy-clients-selftest-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // From here on, Drop cleans up even if a step below panics.
        let mut server = PlainServer {
            dir,
            port: 0,
            child: None,
        };
        let d = server.dir.clone();
        server.make_certs();
        sh(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg("--user=root")
                .arg(format!("--datadir={}", d.join("data").display()))
                .arg("--auth-root-authentication-method=socket")
                .arg("--skip-test-db"),
            "mariadb-install-db",
        );
        server.port = free_port();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", server.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", server.socket().display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--ssl-ca={}", d.join("ca.pem").display()))
            .arg(format!("--ssl-cert={}", d.join("server.pem").display()))
            .arg(format!("--ssl-key={}", d.join("server.key").display()))
            .arg("--max-allowed-packet=128M")
            .arg("--skip-log-bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        server.child = Some(child);
        server.wait_ready();
        // checker: a password, no privileges at all (everything the checks do is
        // allowed to any user). nopass: no password, as clients log in to the proxy.
        server.root_sql(
            "CREATE USER 'checker'@'%' IDENTIFIED BY 'checker-pw'; \
             CREATE USER 'nopass'@'%';",
        );
        server
    }

    fn make_certs(&self) {
        let d = &self.dir;
        let openssl = |args: &str, what: &str| {
            sh(
                Command::new("openssl")
                    .current_dir(d)
                    .args(args.split_whitespace()),
                what,
            );
        };
        openssl(
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=clients-selftest-CA \
             -keyout ca.key -out ca.pem",
            "openssl CA",
        );
        openssl(
            "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
            "openssl CSR",
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile ext.cnf -out server.pem",
            "openssl sign",
        );
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    fn admin(&self) -> Command {
        let mut c = Command::new("mariadb-admin");
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--user=root");
        c
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self
                .admin()
                .arg("ping")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mariadbd exited ({status}): {}", self.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready: {}",
                self.error_log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn root_sql(&self, sql: &str) {
        sh(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket().display()))
                .arg("--user=root")
                .arg("-e")
                .arg(sql),
            "root SQL",
        );
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self
                .admin()
                .arg("shutdown")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn all_checks(t: &Target) -> Vec<ClientReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    vec![
        clients::pymysql_check(t),
        clients::mysql2_check(t),
        clients::mariadb_cli_check(t),
        rt.block_on(clients::mysql_async_check(t)),
    ]
}

fn check_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} not on PATH; see tests/common/clients.rs");
}

#[test]
fn client_checks_against_plain_mariadb() {
    for tool in [
        "mariadbd",
        "mariadb-install-db",
        "mariadb-admin",
        "mariadb",
        "openssl",
    ] {
        check_tool(tool);
    }
    let server = PlainServer::start();

    // TLS to the server, password user: the full report, Ssl_cipher included.
    let tls = Target {
        host: "127.0.0.1".into(),
        port: server.port,
        user: "checker".into(),
        password: Some("checker-pw".into()),
        ssl_ca: Some(server.ca()),
    };
    for r in all_checks(&tls) {
        eprintln!("TLS: {r:?}");
        assert_report_sane(&r, "checker");
    }

    // Plain TCP, no password: how clients talk to the proxy. Ssl_cipher must be
    // empty here (proves each client really stayed in cleartext).
    let plain = Target {
        host: "127.0.0.1".into(),
        port: server.port,
        user: "nopass".into(),
        password: None,
        ssl_ca: None,
    };
    let mut md5s = Vec::new();
    for mut r in all_checks(&plain) {
        eprintln!("plain: {r:?}");
        assert_eq!(r.ssl_cipher, "", "{}: TLS was used: {r:?}", r.client);
        r.ssl_cipher = "(plain)".into();
        assert_report_sane(&r, "nopass");
        md5s.push(r.blob_md5_server.clone());
    }
    // Every client read the same deterministic blob.
    md5s.dedup();
    assert_eq!(md5s.len(), 1, "blob differs between clients: {md5s:?}");

    // Failed logins reach each client readably.
    let bad = Target {
        password: Some("wrong".into()),
        ..tls.clone()
    };
    let (code, msg) = clients::pymysql_expect_error(&bad);
    assert_eq!(code, 1045, "pymysql: {msg}");
    assert!(msg.contains("Access denied"), "pymysql: {msg}");
    let (code, msg) = clients::mysql2_expect_error(&bad);
    assert_eq!(code, 1045, "mysql2: {msg}");
    assert!(msg.contains("Access denied"), "mysql2: {msg}");
    let msg = clients::mariadb_cli_expect_error(&bad);
    assert!(msg.contains("ERROR 1045"), "mariadb CLI: {msg}");

    drop(server);
}

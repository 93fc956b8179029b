//! The proxy binary on a Unix-domain socket (`--unix-socket`): the mariadb CLI over `--socket` and
//! a `mysql://…?socket=` URL log in through the RDS-shaped MariaDB; the socket file is mode 0600,
//! replaces a stale socket, refuses a live one and anything that is not a socket, and is removed
//! when the proxy exits.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::process::{ProxyProcess, cmd_for, isolated_cmd};
use crate::common::upstream::RdsLikeUpstream;
use mysql_async::prelude::*;

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "rip-unix-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir).unwrap();
        Scratch(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// What is left in the directory.
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The proxy binary for `up` on the socket `path` only (no --listen).
fn socket_proxy(up: &RdsLikeUpstream, path: &Path) -> Command {
    let mut cmd = cmd_for(up, true);
    cmd.env_remove("RDS_IAM_PROXY_LISTEN")
        .arg("--unix-socket")
        .arg(path);
    cmd
}

/// The mariadb CLI over the socket, no password, batch output.
fn mariadb_socket(path: &Path, sql: &str) -> Output {
    Command::new("mariadb")
        .args(["--no-defaults", "--protocol=SOCKET", "--skip-ssl"])
        .arg(format!("--socket={}", path.display()))
        .args(["-u", "iamuser", "--batch", "--skip-column-names", "-e", sql])
        .env_remove("MYSQL_PWD")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_and_a_socket_url_log_in_over_the_unix_socket() {
    let up = RdsLikeUpstream::start();
    let dir = Scratch::new("login");
    let path = dir.join("mysql.sock");
    // A stale socket from a proxy that was killed: nobody listens on it any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());

    let proxy = ProxyProcess::spawn_any(socket_proxy(&up, &path));
    assert!(
        proxy.start_line.starts_with(&format!(
            "rds-iam-proxy listening on socket {},",
            path.display()
        )),
        "{:?}",
        proxy.start_line
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(
        dir.entries(),
        ["mysql.sock"],
        "staging directory left behind"
    );

    // The mysql/mariadb CLI's --socket; the session upstream is IAM over TLS.
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || {
        mariadb_socket(
            &p,
            "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version'",
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("iamuser@%"), "{stdout}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("Ssl_version\tTLSv1.")),
        "{stdout}"
    );

    // A URL-style DSN with ?socket= (mysql_async reads it like other drivers do).
    let url = format!("mysql://iamuser@localhost/?socket={}", path.display());
    let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("iamuser@%"));

    // A second proxy on the same path while the first is alive is refused, and takes nothing.
    let second = socket_proxy(&up, &path).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = text(&second.stderr);
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("another process is listening on this socket"),
        "{err}"
    );
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("iamuser@%"), "first proxy disturbed");
    conn.disconnect().await.unwrap();

    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status:?}\n{logs}");
    assert!(logs.contains("peer=unix uid="), "{logs}");
    assert!(!path.exists(), "socket file left after exit");
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[tokio::test]
async fn with_listen_the_proxy_serves_tcp_and_the_socket() {
    let up = RdsLikeUpstream::start();
    let dir = Scratch::new("both");
    let path = dir.join("p.sock");
    let mut cmd = cmd_for(&up, true);
    cmd.arg("--unix-socket").arg(&path);
    let proxy = ProxyProcess::spawn(cmd);
    assert!(
        proxy
            .start_line
            .contains(&format!(" and socket {},", path.display())),
        "{}",
        proxy.start_line
    );
    let p = path.clone();
    let port = proxy.port;
    let (over_socket, over_tcp) = tokio::task::spawn_blocking(move || {
        (
            mariadb_socket(&p, "SELECT CURRENT_USER()"),
            crate::common::process::mariadb(port, "iamuser")
                .args(["-e", "SELECT CURRENT_USER()"])
                .output()
                .unwrap(),
        )
    })
    .await
    .unwrap();
    for out in [&over_socket, &over_tcp] {
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "iamuser@%");
    }
    let (status, _) = proxy.terminate();
    assert!(status.success());
    assert!(!path.exists());
}

#[test]
fn a_path_that_is_not_a_socket_is_refused_and_left_alone() {
    let dir = Scratch::new("refuse");
    let base = |path: &Path| {
        let mut c = isolated_cmd();
        c.args(["--db-endpoint", "db.example:3306", "--region", "us-east-1"])
            .arg("--unix-socket")
            .arg(path);
        c
    };
    let file = dir.join("my.cnf");
    std::fs::write(&file, b"[client]\nuser=me\n").unwrap();
    let out = base(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("--unix-socket {}", file.display()))
            && err.contains("not a socket (a regular file)")
            && err.contains("refusing to replace it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"[client]\nuser=me\n");

    let missing = dir.join("no-such-dir/p.sock");
    let out = base(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "--unix-socket {}: the directory {} does not exist",
            missing.display(),
            dir.join("no-such-dir").display()
        )),
        "{err}"
    );
    assert_eq!(dir.entries(), ["my.cnf"]);
}

/// Mode 0600 is what keeps other local users out: `nobody` is refused by the kernel (EACCES)
/// while the socket is the proxy's own, and reaches the proxy once the test loosens the mode.
#[test]
fn another_user_cannot_connect_to_the_socket() {
    let dir = Scratch::new("other-user");
    // Others may traverse the directory: only the socket's own mode stands in the way.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("p.sock");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = isolated_cmd();
    cmd.args(["--db-endpoint", "db.example:3306", "--region", "us-east-1"])
        .args(["--dial", &closed.to_string()])
        .arg("--unix-socket")
        .arg(&path);
    let proxy = ProxyProcess::spawn_any(cmd);
    assert!(proxy.start_line.contains("socket"), "{}", proxy.start_line);
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args([
                "mariadb",
                "--no-defaults",
                "--protocol=SOCKET",
                "--skip-ssl",
            ])
            .arg(format!("--socket={}", path.display()))
            .args(["-u", "iamuser", "-e", "SELECT 1"])
            .output()
            .unwrap()
    };
    let out = as_nobody();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("(13)"), "expected EACCES for nobody: {err}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    let err = text(&out.stderr);
    assert!(
        err.contains("rds-iam-proxy could not reach the database"),
        "with 0666 nobody should reach the proxy: {err}"
    );
    let (status, _) = proxy.terminate();
    assert!(status.success());
}

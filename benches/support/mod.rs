//! What the benchmarks share: the proxy binary as a process (logging to a file), a PAM service
//! that accepts any password (cheap logins), a scratch directory, the client options, and
//! readings from `/proc`. Every guard here removes what it created when dropped, also on panic.

// Each benchmark uses a different subset.
#![allow(dead_code)]

#[path = "../../tests/common/logged_proxy.rs"]
pub mod logged_proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use mysql_async::OptsBuilder;
use ssm_sim::{Route, SimConfig, SimServer};

use crate::upstream::RdsLikeUpstream;
pub use logged_proxy::{LoggedProxy, isolated};

/// The benchmark's database user: its PAM service ([`PamService`]) accepts any password, so a
/// login costs TLS and the `mysql_clear_password` exchange with a real-size token, without the
/// harness's python+botocore signature check (~300 ms of CPU per login).
pub const BENCH_USER: &str = "benchuser";

/// The RDS-shaped MariaDB with [`BENCH_USER`] (the rights the harness's IAM users have) and
/// `max_connections` raised to 3000, and a scratch directory for logs. Everything is removed on
/// drop (fields drop in this order).
pub struct BenchDb {
    /// Logs of the processes the benchmark starts.
    pub scratch: TempDir,
    /// The PAM service of [`BENCH_USER`].
    pub pam: PamService,
    /// The database.
    pub up: RdsLikeUpstream,
    /// `SELECT VERSION()`.
    pub mariadb_version: String,
}

impl BenchDb {
    /// Starts the database and adds the benchmark user.
    pub fn start() -> Self {
        eprintln!("starting the RDS-shaped MariaDB ...");
        let up = RdsLikeUpstream::start();
        let pam = PamService::create();
        let scratch = TempDir::create();
        up.root_sql(&format!(
            "CREATE USER '{BENCH_USER}'@'%' IDENTIFIED VIA pam USING '{svc}' REQUIRE SSL;
             GRANT SELECT ON *.* TO '{BENCH_USER}'@'%';
             GRANT ALL PRIVILEGES ON proxytest.* TO '{BENCH_USER}'@'%';
             SET GLOBAL max_connections = 3000;",
            svc = pam.name
        ));
        let mariadb_version = up.root_sql("SELECT VERSION()").trim().to_owned();
        BenchDb {
            scratch,
            pam,
            up,
            mariadb_version,
        }
    }
}

/// The simulator's route to `up`'s endpoint: the bastion dials the database.
pub fn route_to(up: &RdsLikeUpstream) -> Route {
    Route {
        host: up.endpoint_host.clone(),
        port: up.endpoint_port,
        dial: up.dial_addr(),
    }
}

/// The SSM simulator in this process, in realistic mode (1 KiB messages, 1 ms pacing) with `rtt`
/// added, routing to `up`.
pub async fn realistic_sim(up: &RdsLikeUpstream, rtt: std::time::Duration) -> SimServer {
    SimServer::start(SimConfig {
        routes: vec![route_to(up)],
        realistic: true,
        rtt,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

/// The proxy binary: this build's, unless `RDS_IAM_PROXY_BENCH_BIN` names another (to compare
/// two builds under the same benchmark).
pub fn proxy_bin() -> PathBuf {
    std::env::var_os("RDS_IAM_PROXY_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rds-iam-proxy")))
}

/// Options for [`BENCH_USER`] at 127.0.0.1:`port` with no password (add TLS and a token for a
/// direct session), accepting packets up to `max_packet`.
pub fn bench_opts(port: u16, max_packet: usize) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(BENCH_USER))
        // Otherwise mysql_async reads @@socket after login and reconnects over the server's unix
        // socket, bypassing the proxy.
        .prefer_socket(false)
        // Set both so that login is not followed by a settings query: "first query" is ours.
        .max_allowed_packet(Some(max_packet))
        .wait_timeout(Some(28800))
}

// ---------------------------------------------------------------------------------------------
// The proxy process

/// The real binary, started like a user would (flags plus AWS credentials in the environment),
/// logging to a file; stopped with SIGTERM (SIGKILL if it lingers) when dropped.
pub struct ProxyProcess(LoggedProxy);

impl std::ops::Deref for ProxyProcess {
    type Target = LoggedProxy;
    fn deref(&self) -> &LoggedProxy {
        &self.0
    }
}

impl ProxyProcess {
    /// The proxy for `up`, dialing it directly (`--dial`); stderr goes to `log`.
    pub fn start(up: &RdsLikeUpstream, log: &Path) -> Self {
        Self::start_with(up, log, |cmd| {
            cmd.arg("--dial").arg(up.dial_addr());
        })
    }

    /// The proxy for `up`, its transport chosen by `transport` (flags and environment added to
    /// the command line); stderr goes to `log`.
    pub fn start_with(
        up: &RdsLikeUpstream,
        log: &Path,
        transport: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = isolated(&proxy_bin());
        cmd.env("AWS_ACCESS_KEY_ID", &up.akid)
            .env("AWS_SECRET_ACCESS_KEY", &up.secret)
            .arg("--db-endpoint")
            .arg(up.endpoint())
            .args(["--listen", "127.0.0.1:0", "--ca-bundle"])
            .arg(&up.ca)
            .arg("--region")
            .arg(&up.region);
        transport(&mut cmd);
        ProxyProcess(LoggedProxy::spawn(cmd, log))
    }

    /// Stops the process (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(self) {}
}

// ---------------------------------------------------------------------------------------------
// The SSM simulator

/// The `ssm-sim` binary routing the endpoint to the MariaDB, verifying the proxy's signed
/// WebSocket upgrades with the upstream's secret, with `extra` flags (`--realistic`, `--rtt`);
/// killed on drop.
pub struct SimProcess {
    child: Child,
    /// Its endpoint (for `AWS_ENDPOINT_URL_SSM`).
    pub url: String,
}

impl SimProcess {
    /// The simulator in lab mode (no pacing, no added round trip).
    pub fn start(up: &RdsLikeUpstream, log: &Path) -> Self {
        Self::start_with(up, log, &[])
    }

    /// The simulator with `extra` flags.
    pub fn start_with(up: &RdsLikeUpstream, log: &Path, extra: &[&str]) -> Self {
        let log_file = std::fs::File::create(log).expect("create the simulator log");
        let mut child = Command::new(ssm_sim::binary::path())
            .env_remove("RUST_LOG")
            .env("SSM_SIM_VERIFY_SECRET", &up.secret)
            .arg("--route")
            .arg(format!("{}={}", up.endpoint(), up.dial_addr()))
            .arg("--require-signature")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start ssm-sim");
        let mut url = String::new();
        BufReader::new(child.stdout.take().expect("ssm-sim stdout"))
            .read_line(&mut url)
            .expect("read the simulator's URL");
        let url = url.trim().to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "ssm-sim printed {url:?}"
        );
        SimProcess { child, url }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Cleanup guards

/// `/etc/pam.d/rdsiam-bench-<random>`: accept every password. Removed on drop.
pub struct PamService {
    /// The service name (`USING '<name>'`).
    pub name: String,
    path: PathBuf,
}

/// `<prefix>-<pid>-<nanoseconds>`: a name no other run of this machine uses at the same time.
fn unique_name(prefix: &str) -> String {
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nonce:08x}", std::process::id())
}

impl PamService {
    /// Writes the service file.
    pub fn create() -> Self {
        let name = unique_name("rdsiam-bench");
        let path = Path::new("/etc/pam.d").join(&name);
        std::fs::write(
            &path,
            "# rds-iam-proxy benchmark: accept any password; removed when the benchmark ends\n\
             auth    required pam_permit.so\n\
             account required pam_permit.so\n",
        )
        .unwrap_or_else(|e| panic!("write {} (needs root): {e}", path.display()));
        PamService { name, path }
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A private temp dir for the proxy logs. Removed on drop; on a panic, the tail of every `*.log`
/// in it is printed first.
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
}

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn create() -> Self {
        let path = std::env::temp_dir().join(unique_name("rds-iam-proxy-bench"));
        std::fs::create_dir(&path).expect("create the temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for log in logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!("--- {} (tail):", log.display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc and the machine

/// Memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far.
    pub hwm_kib: u64,
}

impl Mem {
    /// VmRSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
    /// VmHWM in MiB.
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// VmRSS and VmHWM of a process.
pub fn proc_mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// User + system CPU seconds of a process so far.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / clock_ticks()
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The cargo profile, read off where cargo put this executable (`bench` builds into `release`).
pub fn profile() -> String {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.parent()?
                .parent()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let name = if dir == "release" && !cfg!(debug_assertions) {
        "bench".to_owned()
    } else {
        dir.clone()
    };
    format!(
        "{name} (target/{dir}, debug_assertions {})",
        if cfg!(debug_assertions) { "on" } else { "off" }
    )
}

/// `target/<name>` (or under `CARGO_TARGET_DIR`): where a benchmark writes its JSON.
pub fn json_path(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join(name)
}

/// Writes `doc` as pretty JSON to [`json_path`]`(name)`; returns the path.
pub fn write_json(name: &str, doc: &serde_json::Value) -> PathBuf {
    let path = json_path(name);
    std::fs::create_dir_all(path.parent().expect("json dir")).expect("create target dir");
    std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap() + "\n")
        .expect("write the JSON");
    path
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// Bytes in MiB.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Nearest-rank percentile.
pub fn percentile(v: &[f64], pct: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((pct / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Rows as a Markdown table, the first row the header; columns for which `right` is true are
/// right-aligned.
pub fn markdown_table<R: AsRef<[String]>>(rows: &[R], right: impl Fn(usize) -> bool) -> String {
    use std::fmt::Write as _;
    let cols = rows.first().map_or(0, |r| r.as_ref().len());
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.as_ref()[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .as_ref()
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(j, (cell, w))| {
                if right(j) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", line.join(" | "));
        if i == 0 {
            let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", sep.join("-|-"));
        }
    }
    out
}

//! `scripts/demo`, as a new user runs it: started in the background, it prints the connect line;
//! the mariadb CLI and PyMySQL log in with no password, `doctor` passes with the demo's
//! environment file, and Ctrl-C (SIGINT to its process group, as a terminal sends it) leaves no
//! process, listening socket, PAM file or directory behind. The demo runs the `ssm-sim` binary, built
//! beside this build's `rds-iam-proxy` (`ssm_sim::binary`).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::clients::{Target, assert_report_sane, mariadb_cli_check, pymysql_check};

/// What the demo printed about itself.
#[derive(Debug, Default)]
struct Demo {
    /// The proxy's port, from the `mysql -h 127.0.0.1 -P PORT -u USER` line.
    port: u16,
    /// The IAM database user from the same line.
    user: String,
    /// Process ids of the database, the simulator and the proxy.
    pids: Vec<u32>,
    /// Every loopback port it listens on (database, simulator, proxy, health).
    ports: Vec<u16>,
    /// The database's directory (its PAM service carries the same name).
    db_dir: PathBuf,
    /// The demo's own directory (environment file, logs).
    work: PathBuf,
}

/// The demo script as a child process; killed (and its tree with it, through the script's own
/// trap) if the test panics before stopping it.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped yet.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

fn signal_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) on the process group this test created (the script leads it).
    let rc = unsafe { libc::kill(-(pgid as i32), sig) };
    assert_eq!(rc, 0, "kill(-{pgid}, {sig})");
}

fn number_after<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn port_after(line: &str, key: &str) -> Option<u16> {
    number_after(line, &format!("{key}127.0.0.1:"))
}

/// Parses the demo's summary (see scripts/demo): one line per component, then the connect line.
fn parse(lines: &[String]) -> Demo {
    let mut d = Demo::default();
    for l in lines {
        let l = l.trim();
        if l.starts_with("database") || l.starts_with("AWS") || l.starts_with("proxy") {
            d.pids.extend(number_after::<u32>(l, "pid "));
            d.ports.extend(port_after(l, ", "));
            d.ports.extend(port_after(l, "http://"));
            d.ports.extend(port_after(l, "health "));
        }
        if let Some(dir) = l
            .strip_prefix("database")
            .and_then(|r| r.split(" dir ").nth(1))
        {
            d.db_dir = PathBuf::from(dir.trim());
        }
        if let Some(work) = l.strip_prefix("files") {
            d.work = PathBuf::from(work.trim());
        }
        if let Some(rest) = l.split("mysql -h 127.0.0.1 -P ").nth(1) {
            let mut words = rest.split_whitespace();
            d.port = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            assert_eq!(words.next(), Some("-u"), "{l}");
            d.user = words.next().unwrap_or_default().to_owned();
        }
    }
    d
}

/// Whether `pid` runs: a zombie (exited, waiting for a parent that may never reap it, as for
/// daemons orphaned to an init that does not reap) counts as gone.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let pid: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
        if !alive(pid) {
            continue;
        }
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn demo_serves_clients_and_doctor_then_leaves_nothing_behind() {
    let started = Instant::now();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rds-iam-proxy"))
        .parent()
        .unwrap()
        .to_owned();
    // The simulator's binary belongs to its own crate: built here, next to the proxy's.
    let sim_bin = ssm_sim::binary::path();
    assert_eq!(
        sim_bin.parent(),
        Some(bin_dir.as_path()),
        "ssm-sim beside rds-iam-proxy"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo");
    // Its own process group, as a shell gives a foreground command: Ctrl-C below goes to the
    // whole group (the script, the simulator and the proxy), as a terminal sends it.
    let mut child = Command::new(&script)
        .process_group(0)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/demo");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let demo = Running { child };

    // stdout lines go through a channel so that the wait for the connect line has a deadline.
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let err_log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = err_log.clone();
    let err_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("Ctrl-C stops everything");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => panic!(
                "no connect line from scripts/demo; stdout:\n{}\nstderr:\n{}",
                lines.join("\n"),
                err_log.lock().unwrap()
            ),
        }
    }
    let ready_after = started.elapsed();
    let d = parse(&lines);
    assert!(
        d.port != 0 && d.user == "iamuser",
        "{d:?}\n{}",
        lines.join("\n")
    );
    assert_eq!(d.pids.len(), 3, "{d:?}");
    assert_eq!(d.ports.len(), 4, "{d:?}");
    assert!(d.db_dir.is_dir() && d.work.is_dir(), "{d:?}");
    let pam = Path::new("/etc/pam.d").join(d.db_dir.file_name().unwrap());
    assert!(pam.exists(), "{}", pam.display());
    eprintln!("demo ready after {ready_after:?} (binaries prebuilt)");

    // Real clients, no password, plain TCP to the proxy.
    let target = Target {
        host: "127.0.0.1".into(),
        port: d.port,
        user: d.user.clone(),
        password: None,
        ssl_ca: None,
    };
    assert_report_sane(&mariadb_cli_check(&target), &d.user);
    assert_report_sane(&pymysql_check(&target), &d.user);

    // doctor with the environment file the demo tells people to source.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". '{}' && rds-iam-proxy doctor",
            d.work.join("env").display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let doctor =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{doctor}");
    assert!(doctor.contains("✓ SELECT 1"), "{doctor}");
    assert!(doctor.contains("stack SecureDbConnectionStack"), "{doctor}");

    // Ctrl-C: SIGINT to the process group; the script's trap takes everything down.
    let mut demo = demo;
    signal_group(demo.child.id(), libc::SIGINT);
    let status = demo.child.wait().unwrap();
    reader.join().unwrap();
    err_reader.join().unwrap();
    let err = err_log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("nothing left behind"), "{err}");
    // No process, no listener, no file.
    for pid in &d.pids {
        assert!(!alive(*pid), "pid {pid} still runs");
    }
    for needle in [d.db_dir.to_str().unwrap(), d.work.to_str().unwrap()] {
        let left = processes_mentioning(needle);
        assert!(left.is_empty(), "{left:?}");
    }
    for port in &d.ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "something still listens on 127.0.0.1:{port}"
        );
    }
    assert!(!pam.exists(), "{} is left", pam.display());
    assert!(!d.db_dir.exists(), "{} is left", d.db_dir.display());
    assert!(!d.work.exists(), "{} is left", d.work.display());
}

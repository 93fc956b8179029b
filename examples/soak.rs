//! The soak with faults, as a command: `scripts/soak --duration 30m` (or, with the proxy binary
//! already built, `cargo run --release --example soak -- --duration 30m`).
//!
//! Starts the RDS-shaped MariaDB (`tests/upstream`), the SSM simulator in this process, and the
//! proxy binary over one simulated session; N connections loop over checksummed work while the
//! simulator resets every WebSocket every 30 s, loses and reorders 1 % of the messages, and one
//! session is terminated partway (see `tests/common/soak.rs` for what is checked). Prints a table,
//! writes `target/soak.json`, and exits 1 if a query hung, came back corrupted, or failed other
//! than by the termination. Needs what the tests need: root, MariaDB, python3-botocore.

#[path = "../tests/common/logged_proxy.rs"]
mod logged_proxy;
#[path = "../tests/common/soak.rs"]
mod soak;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use soak::{SoakConfig, run};

/// A long, bounded run through the proxy and the SSM simulator with faults.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long the connections start new work (e.g. 30m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    duration: Duration,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// SSM sessions the proxy keeps (--ssm-sessions); with 1, every connection has to die at the
    /// termination.
    #[arg(long, default_value_t = 1)]
    ssm_sessions: usize,
    /// The simulator closes each WebSocket this long after it opened.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    reset_every: Duration,
    /// Probability of losing a message.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Probability of reordering a message.
    #[arg(long, default_value_t = 0.01)]
    reorder: f64,
    /// When to terminate a session [default: 40 % of --duration].
    #[arg(long, value_parser = humantime::parse_duration)]
    terminate_at: Option<Duration>,
    /// Largest blob in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_blob: usize,
    /// A query with no answer after this long is a hang.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    watchdog: Duration,
    /// Seed for faults and data (0: random).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A reader stops reading a large result every this often ("0s": no such reader).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3m")]
    pause_every: Duration,
    /// How long that reader pauses.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pause_for: Duration,
    /// The proxy binary [default: rds-iam-proxy next to this example's directory].
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// Where to write the figures as JSON [default: target/soak.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let terminate_at = a.terminate_at.unwrap_or(a.duration * 2 / 5);
    anyhow::ensure!(
        terminate_at < a.duration,
        "--terminate-at ({terminate_at:?}) must fall within --duration ({:?})",
        a.duration
    );
    anyhow::ensure!(a.connections > 0, "--connections must be at least 1");
    let proxy_bin = match a.proxy_bin {
        Some(p) => p,
        // target/<profile>/examples/soak → target/<profile>/rds-iam-proxy
        None => std::env::current_exe()?
            .parent()
            .and_then(|d| d.parent())
            .map(|d| d.join("rds-iam-proxy"))
            .unwrap_or_default(),
    };
    anyhow::ensure!(
        proxy_bin.is_file(),
        "no proxy binary at {}: build it (cargo build --release --bin rds-iam-proxy), pass \
         --proxy-bin, or run scripts/soak, which does both",
        proxy_bin.display()
    );
    let json_path = a.json.unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("soak.json")
    });
    let config = SoakConfig {
        duration: a.duration,
        connections: a.connections,
        ssm_sessions: a.ssm_sessions,
        reset_every: a.reset_every,
        loss: a.loss,
        reorder: a.reorder,
        terminate_at,
        max_blob: a.max_blob,
        watchdog: a.watchdog,
        seed: a.seed,
        pause_every: (!a.pause_every.is_zero()).then_some(a.pause_every),
        pause_for: a.pause_for,
        proxy_bin,
    };
    eprintln!(
        "soak: {} connections for {:?} through {} ...",
        config.connections,
        config.duration,
        config.proxy_bin.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(config));
    println!("{}", report.table());
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report.json())? + "\n",
    )?;
    println!("JSON: {}", json_path.display());
    if !report.passed() {
        eprintln!("soak FAILED: see the violations above");
        std::process::exit(1);
    }
    Ok(())
}

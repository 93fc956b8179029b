//! The soak with faults, compressed into a test (the long run is `scripts/soak`): real clients
//! through the proxy binary over the SSM simulator with WebSocket resets every few seconds, 1 %
//! message loss and 1 % reordering, and one TerminateSession partway. No query may hang or come
//! back corrupted; the only errors allowed are link losses right after the termination; the
//! sentinel waiting in `SELECT SLEEP` gets the proxy's MySQL error; every worker reconnects,
//! rechecks what it had in flight and carries on. A reader that stops reading a large result for
//! seconds at a time, on the same session, later reads every row intact.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::soak::{SoakConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_resets_loss_reordering_and_a_terminated_session() {
    let config = SoakConfig {
        duration: Duration::from_secs(20),
        connections: 6,
        ssm_sessions: 1,
        reset_every: Duration::from_secs(3),
        loss: 0.01,
        reorder: 0.01,
        terminate_at: Duration::from_secs(8),
        max_blob: 1024 * 1024,
        watchdog: Duration::from_secs(60),
        seed: 20_260_601,
        // A reader pauses its result for 4 s twice, next to the workers on the one session.
        pause_every: Some(Duration::from_secs(5)),
        pause_for: Duration::from_secs(4),
        proxy_bin: PathBuf::from(env!("CARGO_BIN_EXE_rds-iam-proxy")),
    };
    let report = run(config.clone()).await;
    eprintln!("{}", report.table());
    let violations = report.violations();
    assert!(
        violations.is_empty(),
        "{violations:#?}\nall errors: {:#?}",
        report.errors
    );
    assert!(report.terminated_at.is_some(), "{}", report.sentinel);
    assert!(
        report.sentinel_got_err,
        "the query waiting on the terminated session got: {}",
        report.sentinel
    );
    // One session: every connection was on it, so every worker died, reconnected and went on.
    assert!(
        report.reconnects >= config.connections as u64,
        "{report:#?}"
    );
    assert_eq!(report.workers_carried_on, config.connections);
    assert!(report.passed());
    // The faults really happened, and the streams lived through them until the termination.
    assert!(report.sim.resume_session >= 2, "{:?}", report.sim);
    assert!(report.sim.dropped > 0, "{:?}", report.sim);
    assert!(
        report.sim.start_session >= 2,
        "the terminated session was replaced"
    );
    assert!(report.rounds > 0 && report.queries > 0);
    assert!(
        report.pauses >= 1,
        "the pausing reader never completed a pause"
    );
}

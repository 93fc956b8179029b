//! A client that stops reading its results over a shared transport (DESIGN.md decision 11): the
//! proxy drains the database leg into the connection's spool — memory, then an unlinked encrypted
//! file — and delivers every byte intact when the client reads again; past the spool's bounds only
//! that connection ends, after its last whole row, with a MySQL error saying why and what to do.
//!
//! The engine is run in-process against the RDS-shaped MariaDB through a TCP connector that says it
//! is shared (as the SSM transport does), so the spool is exercised on its own; the SSM tests show
//! the same through the simulator with a neighbour on the same session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::proxy::{RunningProxy, UpstreamSpec};
use crate::common::upstream::RdsLikeUpstream;
use md5::{Digest, Md5};
use mysql_async::prelude::Queryable;
use rds_iam_proxy::spool::SpoolLimits;
use rds_iam_proxy::tunnel::{ConnectFuture, Connector, Direct};

/// TCP to the upstream, announced as shared like an SSM session.
struct SharedTcp(Direct);

impl Connector for SharedTcp {
    fn connect(&self) -> ConnectFuture<'_> {
        self.0.connect()
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn shared(&self) -> bool {
        true
    }
}

/// Rows of the test result: `n`, then the hex MD5 of `n` 32 times (1 KiB a row).
const ROWS: u64 = 24_000;

fn query() -> String {
    format!(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ROWS}) \
         SELECT n, REPEAT(MD5(n), 32) FROM s"
    )
}

fn expected_row(n: u64) -> String {
    let hex = format!("{:x}", Md5::digest(n.to_string().as_bytes()));
    hex.repeat(32)
}

/// A private, empty spool directory that the test removes.
struct SpoolDir(std::path::PathBuf);

impl SpoolDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("rds-iam-proxy-spool-{}", rand_suffix()));
        std::fs::create_dir(&p).unwrap();
        SpoolDir(p)
    }
    fn entries(&self) -> usize {
        std::fs::read_dir(&self.0).unwrap().count()
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn start(up: &RdsLikeUpstream, limits: SpoolLimits, dir: &SpoolDir) -> RunningProxy {
    let spec = UpstreamSpec::of(up);
    let connector = Arc::new(SharedTcp(Direct::new(spec.dial.clone())));
    let dir = dir.0.clone();
    RunningProxy::start_with(&spec, connector, move |c| {
        c.spool = limits;
        c.spool_dir = Some(dir);
    })
    .await
}

async fn connect(p: &RunningProxy) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(p.addr.port())
        .user(Some("iamuser"))
        .prefer_socket(false);
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    c.query_drop(format!("SET SESSION max_recursive_iterations = {ROWS}"))
        .await
        .unwrap();
    c
}

/// The server's view of the paused client's query: its thread has finished sending.
async fn server_done_sending(p: &RunningProxy, id: u32) -> bool {
    let mut c = connect(p).await;
    let state: Option<(Option<String>, Option<String>)> = c
        .exec_first(
            "SELECT COMMAND, STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
            (id,),
        )
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    matches!(state, Some((Some(cmd), _)) if cmd == "Sleep")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_client_is_spooled_to_disk_and_later_reads_every_row_intact() {
    let up = RdsLikeUpstream::start();
    let dir = SpoolDir::new();
    let limits = SpoolLimits {
        memory: 1 << 20,
        disk: 256 << 20,
        total_memory: 64 << 20,
        total_disk: 1 << 30,
    };
    let p = start(&up, limits, &dir).await;
    let mut a = connect(&p).await;
    let id = a.id();
    let mut result = a.query_iter(query()).await.unwrap();
    let first: mysql_async::Row = result.next().await.unwrap().unwrap();
    assert_eq!(first.get::<u64, _>(0), Some(1));

    // The client reads nothing more; the server still finishes sending, because the proxy drains
    // the leg into the spool (the SSM case: the session goes on for everyone else).
    let mut drained = false;
    for _ in 0..100 {
        if server_done_sending(&p, id).await {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        drained,
        "the server is still blocked sending to the paused client"
    );
    let spool = p.proxy.spool();
    assert!(
        spool.spooled_to_disk.load(Ordering::Relaxed) > 16 << 20,
        "most of the result should be on disk"
    );
    assert!(
        spool.memory_in_use() <= 2 << 20,
        "memory stays near its bound"
    );
    assert_eq!(dir.entries(), 0, "the spool file has no name");

    // A neighbour is served meanwhile.
    let mut b = connect(&p).await;
    let one: Option<u8> = b.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    b.disconnect().await.unwrap();

    // The paused client reads on: every row, in order, byte for byte.
    let mut n = 1;
    while let Some(row) = result.next().await.unwrap() {
        n += 1;
        let (seq, text): (u64, String) = mysql_async::from_row(row);
        assert_eq!(seq, n);
        assert_eq!(text, expected_row(n), "row {n} differs");
    }
    assert_eq!(n, ROWS);
    drop(result);
    let again: Option<u8> = a.query_first("SELECT 2").await.unwrap();
    assert_eq!(again, Some(2));
    a.disconnect().await.unwrap();
    assert_eq!(spool.disk_in_use(), 0);
    assert_eq!(p.proxy.stats().stalled_ends.load(Ordering::Relaxed), 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_spool_bound_only_that_connection_ends_after_its_last_whole_row() {
    let up = RdsLikeUpstream::start();
    let dir = SpoolDir::new();
    let limits = SpoolLimits {
        memory: 256 << 10,
        disk: 2 << 20,
        total_memory: 64 << 20,
        total_disk: 1 << 30,
    };
    let p = start(&up, limits, &dir).await;
    let mut a = connect(&p).await;
    let mut result = a.query_iter(query()).await.unwrap();
    let _first: mysql_async::Row = result.next().await.unwrap().unwrap();
    // Paused long enough for the proxy to hit the bound.
    for _ in 0..100 {
        if p.proxy.stats().stalled_ends.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(p.proxy.stats().stalled_ends.load(Ordering::Relaxed), 1);

    // A neighbour is unaffected.
    let mut b = connect(&p).await;
    let one: Option<u8> = b.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    // The client reads whole, correct rows, then the proxy's error in place of the next row.
    let mut n = 1;
    let err = loop {
        match result.next().await {
            Ok(Some(row)) => {
                n += 1;
                let (seq, text): (u64, String) = mysql_async::from_row(row);
                assert_eq!((seq, text), (n, expected_row(n)));
            }
            Ok(None) => panic!("the result ended normally after {n} rows"),
            Err(e) => break e,
        }
    };
    assert!(n > 100 && n < ROWS, "{n} rows before the error");
    let mysql_async::Error::Server(e) = err else {
        panic!("expected the proxy's ERR, got {err:?}");
    };
    assert_eq!(e.code, 1161);
    assert_eq!(e.state, "08S01");
    for part in [
        "stopped reading",
        "--stall-spool-memory 256 KiB",
        "--stall-spool-disk 2 MiB",
        "buffered",
    ] {
        assert!(e.message.contains(part), "{part:?} missing: {}", e.message);
    }
    drop(result);
    drop(a);
    let two: Option<u8> = b.query_first("SELECT 2").await.unwrap();
    assert_eq!(two, Some(2));
    b.disconnect().await.unwrap();
    assert_eq!(dir.entries(), 0);
    p.stop().await;
}

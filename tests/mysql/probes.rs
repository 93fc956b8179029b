//! Port probes against the proxy must not get the proxy's host blocked by the database (code
//! review M3, issue 11 item 1).
//!
//! The proxy dials the database before it greets a client (DESIGN.md decision 1), so every probe
//! (`nc -z`, a Kubernetes `tcpSocket` check, a scanner) used to leave an aborted handshake on the
//! server, and `max_connect_errors` of those in a row block the host until `FLUSH HOSTS`: over SSM
//! every user shares the agent's address. Now the proxy completes each unused handshake itself as
//! an ordinary failed login (access denied does not count).
//!
//! MariaDB never counts connections from 127.0.0.1 (its host cache skips that one loopback
//! address), so this test runs the RDS-shaped MariaDB with name resolution on and
//! `max_connect_errors=10`, and makes every connection to it, the proxy's included, from another
//! loopback address, 127.0.0.2: the host cache counts that one like any remote host, and nothing
//! leaves the machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::clients::{assert_report_sane, mariadb_cli_check};
use crate::common::proxy::{RunningProxy, UpstreamSpec};
use crate::common::upstream::{RdsLikeUpstream, StartOptions};
use rds_iam_proxy::tunnel::{BoxStream, ConnectFuture, Connector, Error as TunnelError};

/// The loopback address every connection to the database comes from.
const SOURCE: &str = "127.0.0.2:0";

/// A blocking TCP connection to `addr` from [`SOURCE`].
fn connect_from_source(addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SOURCE.parse::<SocketAddr>().unwrap().into())
        .expect("bind 127.0.0.2");
    s.connect(&addr.into()).expect("connect");
    s.into()
}

/// The proxy's transport for this test: TCP to the database from [`SOURCE`].
struct FromSource(String);

impl Connector for FromSource {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let dial = |source| TunnelError::Dial {
                addr: self.0.clone(),
                source,
            };
            let sock = tokio::net::TcpSocket::new_v4().map_err(dial)?;
            sock.bind(SOURCE.parse().unwrap()).map_err(dial)?;
            let stream = sock.connect(self.0.parse().unwrap()).await.map_err(dial)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
    fn describe(&self) -> String {
        format!("tcp {} from {SOURCE}", self.0)
    }
}

/// Connects, waits for the first packet (the greeting, or an ERR in its place), optionally sends
/// `garbage`, and closes: what a health probe or a scanner does. Returns the first packet.
fn probe(mut s: TcpStream, garbage: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).expect("the first packet");
    buf.truncate(n);
    if !garbage.is_empty() {
        let _ = s.write_all(garbage);
    }
    buf
}

/// The ERR code in a first packet, if it is an ERR.
fn err_code(packet: &[u8]) -> Option<u16> {
    (packet.get(4) == Some(&0xFF)).then(|| u16::from_le_bytes([packet[5], packet[6]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_probes_through_the_proxy_do_not_get_the_host_blocked() {
    let up = RdsLikeUpstream::start_with(&StartOptions {
        server_args: vec![
            "--skip-name-resolve=0".into(),
            "--max-connect-errors=10".into(),
        ],
        ..StartOptions::default()
    });
    let dial = up.dial_addr();

    // The control: probes straight at the server do get this host blocked after 10 (1129), so
    // the setup would show a proxy that aborts handshakes.
    tokio::task::spawn_blocking({
        let dial = dial.clone();
        move || {
            for _ in 0..11 {
                probe(connect_from_source(&dial), b"");
                std::thread::sleep(Duration::from_millis(20));
            }
            let blocked = probe(connect_from_source(&dial), b"");
            assert_eq!(
                err_code(&blocked),
                Some(1129),
                "the server did not block the host after aborted handshakes: {blocked:02x?}"
            );
        }
    })
    .await
    .unwrap();
    up.root_sql("FLUSH HOSTS");

    let spec = UpstreamSpec {
        dial: dial.clone(),
        ..UpstreamSpec::of(&up)
    };
    let connector = Arc::new(FromSource(dial.clone()));
    let px = RunningProxy::start_with(&spec, connector, |c| {
        c.handshake_timeout = Duration::from_secs(5)
    })
    .await;
    let proxy_addr = px.addr.to_string();
    // Half close right after the greeting (nc -z, tcpSocket), half send an HTTP request first.
    tokio::task::spawn_blocking(move || {
        for i in 0..50 {
            let garbage: &[u8] = if i % 2 == 0 {
                b""
            } else {
                b"GET / HTTP/1.0\r\n\r\n"
            };
            let first = probe(TcpStream::connect(&proxy_addr).expect("connect"), garbage);
            assert_eq!(err_code(&first), None, "probe {i} refused: {first:02x?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    // Each probe's upstream handshake is completed in the background.
    let stats = px.proxy.stats();
    for _ in 0..200 {
        if stats.upstream_completed.load(Ordering::Relaxed) >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.upstream_completed.load(Ordering::Relaxed), 50);

    // A real client still logs in through the proxy, and the server still takes this host.
    let target = px.target(&up.iam_users[0]);
    let report = tokio::task::spawn_blocking(move || mariadb_cli_check(&target))
        .await
        .unwrap();
    assert_report_sane(&report, &up.iam_users[0]);
    assert_eq!(
        err_code(&probe(connect_from_source(&dial), b"")),
        None,
        "the host is blocked"
    );
    px.stop().await;
}

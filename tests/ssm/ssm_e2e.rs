//! Byte streams through the SSM connector and the simulator to TCP destinations: many streams on
//! one session, large checksummed transfers, basic mode, refused dials and refused sessions.

use std::time::Duration;

use crate::common::ssm::*;
use rds_iam_proxy::tunnel::Connector;
use ssm_sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_streams_share_one_session() {
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let (sim, ssm) = start(sim_config(echo), ssm_config(1)).await;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let stream = ssm.connect().await.unwrap();
        tasks.push(tokio::spawn(async move {
            echo_roundtrip(stream, i, 64 * 1024 + i as usize * 37, 4096).await
        }));
    }
    for t in tasks {
        let (sent, got) = t.await.unwrap();
        assert_eq!(sent, got);
    }
    let stats = sim.stats();
    assert_eq!(stats.start_session, 1, "one session carries every stream");
    assert_eq!(stats.streams, 50);
    assert_eq!(stats.mux_sessions, 1);
    assert!(
        stats.signed_upgrades >= 1,
        "the upgrade was signed and verified"
    );
    ssm.shutdown().await;
    assert_eq!(
        sim.stats().terminate_session,
        1,
        "shutdown terminates the session"
    );
    stop.cancel();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfers_both_ways_arrive_intact() {
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let mut cfg = ssm_config(1);
    cfg.max_payload = 16 * 1024;
    let (sim, ssm) = start(sim_config(echo), cfg).await;
    let a = ssm.connect().await.unwrap();
    let b = ssm.connect().await.unwrap();
    let (ra, rb) = tokio::join!(
        echo_roundtrip(a, 1, 24 << 20, 100_000),
        echo_roundtrip(b, 2, 8 << 20, 1000)
    );
    assert_eq!(ra.0, ra.1);
    assert_eq!(rb.0, rb.1);
    ssm.shutdown().await;
    stop.cancel();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_agent_gets_basic_mode() {
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let sim_cfg = SimConfig {
        agent_version: "3.0.196.0".to_owned(),
        ..sim_config(echo)
    };
    let (sim, ssm) = start(sim_cfg, ssm_config(1)).await;
    for i in 0..3u64 {
        let stream = ssm.connect().await.unwrap();
        let (sent, got) = echo_roundtrip(stream, i, 300_000, 7000).await;
        assert_eq!(sent, got);
    }
    let stats = sim.stats();
    assert!(
        stats.basic_sessions >= 3,
        "each connection had its own basic-mode session: {stats:?}"
    );
    assert_eq!(stats.mux_sessions, 0);
    ssm.shutdown().await;
    stop.cancel();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_dial_names_target_and_destination() {
    let nowhere = closed_port().await;
    let (sim, ssm) = start(sim_config(nowhere), ssm_config(1)).await;
    let mut stream = ssm.connect().await.unwrap();
    let mut buf = [0u8; 16];
    let err = stream.read(&mut buf).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(TARGET), "{msg}");
    assert!(msg.contains(&format!("{DB_HOST}:{DB_PORT}")), "{msg}");
    assert!(msg.contains("ConnectToPortError"), "{msg}");
    // The session survives a refused dial.
    let mut again = ssm.connect().await.unwrap();
    assert!(again.read(&mut buf).await.is_err());
    assert_eq!(sim.stats().start_session, 1);
    ssm.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_start_session_is_explained() {
    let nowhere = closed_port().await;
    let sim_cfg = SimConfig {
        start_session_error: Some((
            "AccessDeniedException".to_owned(),
            "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ssm:StartSession".to_owned(),
        )),
        ..sim_config(nowhere)
    };
    let mut cfg = ssm_config(1);
    cfg.connect_timeout = Duration::from_secs(2);
    let (sim, ssm) = start(sim_cfg, cfg).await;
    let err = match ssm.connect().await {
        Ok(_) => panic!("connect succeeded without a session"),
        Err(e) => e,
    };
    let msg = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(msg.contains("ssm:StartSession"), "{msg}");
    assert!(msg.contains(TARGET), "{msg}");
    assert!(
        msg.contains("AWS-StartPortForwardingSessionToRemoteHost"),
        "{msg}"
    );
    ssm.shutdown().await;
    sim.shutdown().await;

    let sim_cfg = SimConfig {
        disconnected_targets: vec![TARGET.to_owned()],
        ..sim_config(nowhere)
    };
    let mut cfg = ssm_config(1);
    cfg.connect_timeout = Duration::from_secs(2);
    let (sim, ssm) = start(sim_cfg, cfg).await;
    let err = ssm.connect().await.err().expect("no session");
    let msg = format!("{}", std::error::Error::source(&err).unwrap());
    assert!(msg.contains("TargetNotConnected"), "{msg}");
    assert!(msg.contains(TARGET), "{msg}");
    ssm.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_close_reaches_the_destination() {
    // A destination that reports how many bytes it got before the client's FIN.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        let _ = tx.send(all.len());
    });
    let (sim, ssm) = start(sim_config(dest), ssm_config(1)).await;
    let mut stream = ssm.connect().await.unwrap();
    stream.write_all(&pattern(9, 100_000)).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(rx.await.unwrap(), 100_000);
    drop(stream);
    ssm.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_signatures_are_checked_and_unsigned_upgrades_accepted() {
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;

    // Wrong secret: the simulator refuses the upgrade, and the connector says so.
    let server = ssm_sim::SimServer::start(sim_config(echo)).await.unwrap();
    let mut bad = sdk_config(&server.endpoint_url()).to_builder();
    bad.set_credentials_provider(Some(
        aws_credential_types::provider::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new(ACCESS_KEY, "not-the-secret", None, None, "bad"),
        ),
    ));
    let mut cfg = ssm_config(1);
    cfg.connect_timeout = Duration::from_secs(2);
    let ssm = rds_iam_proxy::tunnel::ssm::Ssm::new(cfg, &bad.build()).unwrap();
    let err = ssm.connect().await.err().expect("upgrade refused");
    let msg = std::error::Error::source(&err).unwrap().to_string();
    assert!(msg.contains("403"), "{msg}");
    assert!(msg.contains("signature does not match"), "{msg}");
    ssm.shutdown().await;
    server.shutdown().await;

    // Unsigned upgrades (plugins before 1.2.764.0) are accepted unless signatures are required.
    let sim_cfg = SimConfig {
        require_signature: false,
        ..sim_config(echo)
    };
    let mut cfg = ssm_config(1);
    cfg.sign_websocket = false;
    let (sim, ssm) = start(sim_cfg, cfg).await;
    let (a, b) = echo_roundtrip(ssm.connect().await.unwrap(), 5, 10_000, 1000).await;
    assert_eq!(a, b);
    assert_eq!(sim.stats().signed_upgrades, 0);
    ssm.shutdown().await;
    stop.cancel();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_mode_with_rtt_delivers_intact() {
    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let sim_cfg = SimConfig {
        realistic: true,
        rtt: Duration::from_millis(20),
        ..sim_config(echo)
    };
    let (sim, ssm) = start(sim_cfg, ssm_config(2)).await;
    let (ra, rb) = tokio::join!(
        echo_roundtrip(ssm.connect().await.unwrap(), 6, 100_000, 3000),
        echo_roundtrip(ssm.connect().await.unwrap(), 7, 100_000, 3000)
    );
    assert_eq!(ra.0, ra.1);
    assert_eq!(rb.0, rb.1);
    assert!(
        sim.stats().start_session >= 2,
        "the pool keeps two sessions warm"
    );
    ssm.shutdown().await;
    stop.cancel();
    sim.shutdown().await;
}

/// AWS's session-manager-plugin pings as soon as the WebSocket is open, which can reach the gateway
/// before its OpenDataChannel text frame: the simulator must skip control frames there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_before_open_data_channel_is_tolerated_like_the_plugin_needs() {
    use futures_util::{SinkExt, StreamExt};
    use rds_iam_proxy::ssm::api::{Api, SessionRequest};
    use rds_iam_proxy::ssm::proto::message::AgentMessage;
    use rds_iam_proxy::ssm::proto::payload::{MESSAGE_SCHEMA_VERSION, OpenDataChannel};
    use tokio_tungstenite::tungstenite::Message;

    let stop = CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let mut sim_cfg = sim_config(echo);
    sim_cfg.require_signature = false;
    let sim = ssm_sim::SimServer::start(sim_cfg).await.unwrap();
    let api = Api::new(&sdk_config(&sim.endpoint_url()));
    let grant = api
        .start_session(&SessionRequest {
            target: TARGET.to_owned(),
            document: rds_iam_proxy::ssm::api::DOCUMENT_REMOTE_HOST.to_owned(),
            host: DB_HOST.to_owned(),
            port: DB_PORT,
            reason: None,
        })
        .await
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(grant.stream_url.as_str(), tcp)
        .await
        .unwrap();
    ws.send(Message::Ping(b"keepalive".to_vec().into()))
        .await
        .unwrap();
    let open = OpenDataChannel {
        message_schema_version: MESSAGE_SCHEMA_VERSION.to_owned(),
        request_id: rds_iam_proxy::ssm::proto::message::MessageId::random().to_string(),
        token_value: grant.token.clone(),
        client_instance_id: None,
        client_id: rds_iam_proxy::ssm::proto::message::MessageId::random().to_string(),
        client_version: Some("1.2.764.0".to_owned()),
    };
    ws.send(Message::Text(open.encode().into())).await.unwrap();
    // The agent starts the handshake: the first binary frame is an AgentMessage.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return AgentMessage::decode(&b).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("the gateway closed the channel: {other:?}"),
            }
        }
    })
    .await
    .expect("no handshake after a ping-first open");
    assert!(first.message_type.is_stream_data(), "{first:?}");
    stop.cancel();
    sim.shutdown().await;
}

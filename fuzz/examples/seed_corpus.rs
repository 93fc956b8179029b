//! Writes the fuzz targets' seed inputs, built from the golden vectors: the bytes captured from
//! MariaDB and its CLI (`rds_iam_proxy::mysql::proto::golden`) and the SSM spec §3.5 / §4 / §6 / §7.4
//! examples, which the unit tests show our encoders reproduce byte for byte.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus -- fuzz/corpus` writes
//! `<dir>/<target>/seed-<name>` files; the committed corpora are these plus what fuzzing found,
//! minimised with `cargo fuzz cmin`.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use rds_iam_proxy::mysql::proto::golden::{LOGIN_OK, MARIADB_CLI_RESPONSE, MARIADB_GREETING};
use rds_iam_proxy::mysql::proto::handshake::plugin;
use rds_iam_proxy::mysql::proto::{
    AuthMoreData, AuthSwitchRequest, Capabilities, ComChangeUser, ErrPacket, HandshakeResponse41,
    HandshakeV10, SslRequest, codes, packet,
};
use rds_iam_proxy::postgres::proto::golden as pg;
use rds_iam_proxy::postgres::proto::{
    BackendKeyData, GssEncRequest, ProtocolVersion, StartupMessage,
};
use rds_iam_proxy::ssm::proto::message::{
    AgentMessage, FLAG_SYN, MessageId, MessageType, PayloadType, SCHEMA_VERSION,
};
use rds_iam_proxy::ssm::proto::payload::{
    ACTION_SESSION_TYPE, AcknowledgeContent, ActionParameters, ActionStatus, AgentSessionState,
    CLIENT_VERSION, ChannelClosed, Flag, HandshakeComplete, HandshakeRequest, HandshakeResponse,
    MESSAGE_SCHEMA_VERSION, OpenDataChannel, PORT_TYPE_LOCAL_PORT_FORWARDING, PortProperties,
    ProcessedClientAction, RequestedClientAction, SESSION_TYPE_PORT, SessionTypeRequest,
};
use rds_iam_proxy::ssm::proto::reliable::acknowledge;
use rds_iam_proxy::ssm::proto::smux::{self, Frame};
use rds_iam_proxy_fuzz::Chunked;
use sha2::Digest;

/// The MessageId of the spec §3.5 vectors: dd01e56b-ff48-483e-a508-b5f073f31b16.
const ID_DD01: MessageId = MessageId([
    0xdd, 0x01, 0xe5, 0x6b, 0xff, 0x48, 0x48, 0x3e, 0xa5, 0x08, 0xb5, 0xf0, 0x73, 0xf3, 0x1b, 0x16,
]);

/// The CreatedDate of spec §3.5 vectors 1 and 2.
const CREATED: u64 = 1_503_434_274_948;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let mut written = 0;
    for (target, seeds) in [
        ("mysql_client", mysql_client()),
        ("mysql_upstream", mysql_upstream()),
        ("splice_scanner", splice_scanner()),
        ("ssm_message", ssm_message()),
        ("ssm_payload", ssm_payload()),
        ("ssm_reliable", ssm_reliable()),
        ("ssm_smux", ssm_smux()),
        ("health_request", health_request()),
        ("mysql_compress_decode", mysql_compress_decode()),
        ("mysql_compress_encode", mysql_compress_encode()),
        ("postgres_startup", postgres_startup()),
    ] {
        for (name, bytes) in seeds {
            write(&dir.join(target), name, &bytes);
            written += 1;
        }
    }
    println!("wrote {written} seeds under {}", dir.display());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
}

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Frames `payload` as one packet with sequence id `seq`.
fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet::encode(seq, payload, &mut out);
    out.to_vec()
}

fn payload_of(framed: &[u8]) -> Bytes {
    let mut b = BytesMut::from(framed);
    packet::decode(&mut b, 1 << 20).unwrap().unwrap().payload
}

fn mysql_client() -> Seeds {
    let cli = HandshakeResponse41::decode(&payload_of(MARIADB_CLI_RESPONSE)).unwrap();
    let ssl = SslRequest {
        capabilities: cli.capabilities | Capabilities::SSL,
        max_packet_size: cli.max_packet_size,
        character_set: cli.character_set,
    };
    let mut ssl_payload = BytesMut::new();
    ssl.encode(&mut ssl_payload);
    let mut tls_login = cli.clone();
    tls_login.capabilities = tls_login.capabilities | Capabilities::SSL;
    let mut login_payload = BytesMut::new();
    tls_login.encode(&mut login_payload);

    // A MySQL 8 client: caching_sha2 scramble answer, length-encoded auth data, zstd level.
    let mysql8 = HandshakeResponse41 {
        capabilities: Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::LONG_PASSWORD
            | Capabilities::PLUGIN_AUTH
            | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capabilities::CONNECT_WITH_DB
            | Capabilities::ZSTD_COMPRESSION_ALGORITHM,
        max_packet_size: 16 << 20,
        character_set: 255,
        username: Bytes::from_static(b"iam_user"),
        auth_response: Bytes::from(vec![0x5a; 32]),
        database: Some(Bytes::from_static(b"app")),
        auth_plugin_name: Some(Bytes::from_static(plugin::CACHING_SHA2_PASSWORD.as_bytes())),
        connect_attrs: None,
        zstd_level: Some(3),
    };
    let mut mysql8_payload = BytesMut::new();
    mysql8.encode(&mut mysql8_payload);

    let change = ComChangeUser {
        username: Bytes::from_static(b"iamuser2"),
        auth_response: Bytes::from_static(&[1, 2, 3]),
        database: Bytes::from_static(b"proxytest"),
        character_set: Some(45),
        auth_plugin_name: Some(Bytes::from_static(plugin::MYSQL_NATIVE_PASSWORD.as_bytes())),
        connect_attrs: Some(vec![(
            Bytes::from_static(b"_client_name"),
            Bytes::from_static(b"libmariadb"),
        )]),
    };
    let mut change_payload = BytesMut::new();
    change.encode(&mut change_payload, cli.capabilities);

    vec![
        ("mariadb-cli-response", MARIADB_CLI_RESPONSE.to_vec()),
        (
            "ssl-request-then-response",
            [pkt(1, &ssl_payload), pkt(2, &login_payload)].concat(),
        ),
        ("mysql8-response", pkt(1, &mysql8_payload)),
        (
            "response-then-change-user",
            [MARIADB_CLI_RESPONSE.to_vec(), pkt(0, &change_payload)].concat(),
        ),
    ]
}

fn mysql_upstream() -> Seeds {
    let switch = AuthSwitchRequest {
        plugin_name: Bytes::from_static(plugin::MYSQL_CLEAR_PASSWORD.as_bytes()),
        plugin_data: Bytes::new(),
    };
    let mut switch_payload = BytesMut::new();
    switch.encode(&mut switch_payload);

    let mysql8 = HandshakeV10 {
        server_version: Bytes::from_static(b"8.4.3"),
        connection_id: 4242,
        auth_plugin_data: Bytes::from_static(b"abcdefghijklmnopqrst"),
        capabilities: Capabilities::from_parts(0xdfff_ffff, 0),
        character_set: 255,
        status_flags: 2,
        auth_plugin_name: Some(Bytes::from_static(plugin::CACHING_SHA2_PASSWORD.as_bytes())),
    };
    let mut mysql8_payload = BytesMut::new();
    mysql8.encode(&mut mysql8_payload);
    let full_auth = [
        AuthMoreData::HEADER,
        AuthMoreData::PERFORM_FULL_AUTHENTICATION,
    ];
    let mut denied = BytesMut::new();
    ErrPacket::new(
        codes::ACCESS_DENIED,
        b"28000",
        "Access denied for user 'iamuser'@'10.0.0.1' (using password: YES)",
    )
    .encode(&mut denied);
    let mut too_many = BytesMut::new();
    ErrPacket::before_greeting(codes::TOO_MANY_CONNECTIONS, "Too many connections")
        .encode(&mut too_many);

    vec![
        (
            "mariadb-greeting-switch-ok",
            [
                MARIADB_GREETING.to_vec(),
                pkt(2, &switch_payload),
                pkt(4, LOGIN_OK),
            ]
            .concat(),
        ),
        (
            "mysql8-greeting-full-auth-denied",
            [pkt(0, &mysql8_payload), pkt(2, &full_auth), pkt(3, &denied)].concat(),
        ),
        ("err-instead-of-greeting", pkt(0, &too_many)),
        (
            "greeting-next-factor",
            [MARIADB_GREETING.to_vec(), pkt(2, &[0x02])].concat(),
        ),
    ]
}

fn health_request() -> Seeds {
    vec![
        (
            "get-readiness",
            b"GET /readiness HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "head-metrics",
            b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n".to_vec(),
        ),
        (
            "post",
            b"POST /readiness HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("mysql-bytes", b"\x20\x00\x00\x01\x85\xa6\xff\x01".to_vec()),
        (
            "no-end",
            b"GET /liveness HTTP/1.1\r\nX-Long: aaaaaaaa".to_vec(),
        ),
    ]
}

fn splice_scanner() -> Seeds {
    let query = pkt(0, b"\x03SELECT 1");
    let mut load = pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t");
    for seq in [2u8, 3, 4] {
        load.extend(pkt(seq, b"\x11row that starts like change user\n"));
    }
    load.extend(pkt(5, b""));
    let mut change = BytesMut::new();
    ComChangeUser {
        username: Bytes::from_static(b"iamuser2"),
        auth_response: Bytes::new(),
        database: Bytes::from_static(b"proxytest"),
        character_set: Some(45),
        auth_plugin_name: None,
        connect_attrs: None,
    }
    .encode(&mut change, Capabilities::EMPTY);
    let change = pkt(0, &change);
    let quit = pkt(0, b"\x01");
    let session = [query.clone(), load, change.clone(), query, quit].concat();
    vec![
        ("session-one-read", Chunked::encode(&[], &session)),
        ("session-bytewise", Chunked::encode(&[1], &session)),
        ("session-odd-reads", Chunked::encode(&[3, 7, 250], &session)),
        ("change-user-alone", Chunked::encode(&[5], &change)),
    ]
}

/// The spec §3.5 vector 1 shape: `input_stream_data` from the plugin.
fn input(seq: i64, payload_type: PayloadType, payload: &'static [u8]) -> AgentMessage {
    AgentMessage {
        message_type: MessageType::INPUT_STREAM_DATA,
        schema_version: SCHEMA_VERSION,
        created_date: CREATED,
        sequence_number: seq,
        flags: 0,
        message_id: ID_DD01,
        payload_type,
        payload: Bytes::from_static(payload),
    }
}

/// The §6.2 HandshakeRequest (AgentVersion 3.3.987.0, host db.internal, port 5432).
fn handshake_request() -> HandshakeRequest {
    let props = PortProperties {
        host: Some("db.internal".into()),
        local_port_number: Some("0".into()),
        port_number: Some("5432".into()),
        r#type: Some(PORT_TYPE_LOCAL_PORT_FORWARDING.into()),
        ..PortProperties::default()
    };
    HandshakeRequest {
        agent_version: "3.3.987.0".into(),
        requested_client_actions: vec![RequestedClientAction {
            action_type: ACTION_SESSION_TYPE.into(),
            action_parameters: ActionParameters::SessionType(SessionTypeRequest {
                session_type: SESSION_TYPE_PORT.into(),
                properties: props.to_value(),
            }),
        }],
    }
}

/// Stream messages the agent sends: the handshake request (§3.5 vector 4) and data.
fn output(seq: i64, payload_type: PayloadType, payload: Bytes) -> AgentMessage {
    AgentMessage {
        message_type: MessageType::OUTPUT_STREAM_DATA,
        schema_version: SCHEMA_VERSION,
        created_date: 1_700_000_000_000,
        sequence_number: seq,
        flags: if seq == 0 { FLAG_SYN } else { 0 },
        message_id: MessageId::from_random_bytes([7; 16]),
        payload_type,
        payload,
    }
}

fn acknowledge_json() -> Bytes {
    AcknowledgeContent {
        acknowledged_message_type: MessageType::OUTPUT_STREAM_DATA.to_string(),
        acknowledged_message_id: ID_DD01.to_string(),
        acknowledged_message_sequence_number: 0,
        is_sequential_message: true,
    }
    .encode()
}

fn ssm_message() -> Seeds {
    let ack = acknowledge(
        &output(0, PayloadType::HANDSHAKE_REQUEST, Bytes::from_static(b"{}")),
        1_700_000_000_000,
        MessageId::from_random_bytes([1; 16]),
    );
    let closed = AgentMessage {
        message_type: MessageType::CHANNEL_CLOSED,
        sequence_number: 0,
        payload_type: PayloadType::NONE,
        payload: ChannelClosed {
            session_id: "s-1".into(),
            message_type: "channel_closed".into(),
            schema_version: 1,
            output: "Session terminated".into(),
            ..ChannelClosed::default()
        }
        .encode(),
        ..output(0, PayloadType::NONE, Bytes::new())
    };
    // The service sends publication control with a zero date and a zeroed digest.
    let mut pause = AgentMessage {
        message_type: MessageType::PAUSE_PUBLICATION,
        created_date: 0,
        payload_type: PayloadType::NONE,
        ..output(0, PayloadType::NONE, Bytes::from_static(b"{}"))
    }
    .encode()
    .to_vec();
    pause[80..112].fill(0);
    let frame = |m: AgentMessage| [&[0u8][..], &m.encode()].concat();
    vec![
        (
            "input-hello",
            frame(input(7, PayloadType::OUTPUT, b"hello")),
        ),
        (
            "input-flag-terminate",
            frame(input(8, PayloadType::FLAG, &[0, 0, 0, 2])),
        ),
        ("acknowledge", frame(ack)),
        (
            "handshake-request",
            frame(output(
                0,
                PayloadType::HANDSHAKE_REQUEST,
                handshake_request().encode(),
            )),
        ),
        ("channel-closed", frame(closed)),
        ("pause-publication", [&[0u8][..], &pause].concat()),
    ]
}

fn ssm_payload() -> Seeds {
    let response = HandshakeResponse {
        client_version: CLIENT_VERSION.into(),
        processed_client_actions: vec![ProcessedClientAction {
            action_type: ACTION_SESSION_TYPE.into(),
            action_status: ActionStatus::SUCCESS,
            action_result: serde_json::Value::Null,
            error: String::new(),
        }],
        errors: None,
    };
    let open = OpenDataChannel {
        message_schema_version: MESSAGE_SCHEMA_VERSION.into(),
        request_id: "6b5b0a57-3b1e-4c39-9f7e-0c2f3a2b1d10".into(),
        token_value: "AAEAAtoken".into(),
        client_instance_id: None,
        client_id: "0f5e7c9a-1d2b-4c3d-8e9f-a0b1c2d3e4f5".into(),
        client_version: Some(CLIENT_VERSION.into()),
    };
    let closed = ChannelClosed {
        message_id: "a".into(),
        created_date: "2024-01-01T00:00:00.000Z".into(),
        destination_id: "i-1".into(),
        session_id: "s-1".into(),
        message_type: "channel_closed".into(),
        schema_version: 1,
        output: "Session terminated".into(),
    };
    let state = AgentSessionState {
        schema_version: 1,
        session_state: "Connected".into(),
        session_id: "s-1".into(),
    };
    let complete = HandshakeComplete {
        handshake_time_to_complete: 1_234_567,
        customer_message: String::new(),
    };
    vec![
        ("acknowledge", acknowledge_json().to_vec()),
        ("handshake-request", handshake_request().encode().to_vec()),
        ("handshake-response", response.encode().to_vec()),
        ("handshake-complete", complete.encode().to_vec()),
        ("open-data-channel", open.encode().into_bytes()),
        ("channel-closed", closed.encode().to_vec()),
        ("agent-session-state", state.encode().to_vec()),
        (
            "flag-connect-to-port-error",
            Flag::ConnectToPortError.encode().to_vec(),
        ),
    ]
}

/// Scripts in the layout of the `ssm_reliable` target: role, four bounds, operations.
fn ssm_reliable() -> Seeds {
    const STREAM: u8 = 0;
    const ACK: u8 = 1;
    const CLOSED: u8 = 2;
    const PUBLICATION: u8 = 3;
    const SEND: u8 = 4;
    const TICK: u8 = 5;
    const READY: u8 = 6;
    const RAW: u8 = 7;
    // Sequence selector 8 is "the expected number"; 9 the one after, 7 the one before.
    let client_in_order = [
        &[0u8, 7, 7, 7, 7][..],
        &[STREAM, 8, 5],
        b"hello",
        &[SEND, 10, SEND, 20, ACK, 0, STREAM, 8, 0, ACK, 0],
        &[TICK, 0, 250, TICK, 1, 0],
    ]
    .concat();
    let client_gaps = [
        &[0u8, 3, 3, 2, 2][..],
        &[STREAM, 10, 1, b'c', STREAM, 9, 1, b'b', STREAM, 9, 1, b'b'],
        &[STREAM, 12, 0, STREAM, 8, 1, b'a', STREAM, 7, 0],
        &[READY, 0, STREAM, 8, 0, READY, 1, STREAM, 8, 0],
        &[CLOSED, 0],
    ]
    .concat();
    let agent_paused = [
        &[1u8, 7, 7, 7, 7][..],
        &[SEND, 4, PUBLICATION, 0, SEND, 4, TICK, 3, 0, PUBLICATION, 1],
        &[TICK, 3, 0, ACK, 1, ACK, 0, ACK, 0x40, 2],
        b"{}",
    ]
    .concat();
    let hello = input(0, PayloadType::OUTPUT, b"hello").encode();
    let raw_len = (hello.len() as u16).to_be_bytes();
    let agent_raw = [&[1u8, 7, 7, 7, 7][..], &[RAW], &raw_len, &hello].concat();
    vec![
        ("client-in-order", client_in_order),
        ("client-gaps-duplicates-not-ready", client_gaps),
        ("agent-paused-retransmit", agent_paused),
        ("agent-raw-frame", agent_raw),
    ]
}

fn ssm_smux() -> Seeds {
    let mut session = BytesMut::new();
    Frame::syn(3).encode(&mut session);
    Frame::psh(3, Bytes::from_static(b"hi")).encode(&mut session);
    Frame::nop().encode(&mut session);
    smux::encode_data(5, &[0x42; 300], 128, &mut session);
    Frame::fin(3).encode(&mut session);
    let with_choice = |cuts: &[u8]| [&[0u8][..], &Chunked::encode(cuts, &session)].concat();
    vec![
        ("session-one-read", with_choice(&[])),
        ("session-bytewise", with_choice(&[1])),
        ("session-odd-reads", with_choice(&[3, 9, 200])),
    ]
}

/// MySQL's documented stored frame for `SELECT 1` (page_protocol_basic_compression_packet).
const DOC_STORED_SELECT_1: &[u8] = &[
    0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x03, 0x53, 0x45, 0x4c, 0x45,
    0x43, 0x54, 0x20, 0x31,
];

/// MySQL's documented zlib frame for a 46-byte COM_QUERY (same page).
const DOC_COMPRESSED_QUERY: &[u8] = &[
    0x22, 0x00, 0x00, 0x00, 0x32, 0x00, 0x00, 0x78, 0x9c, 0xd3, 0x63, 0x60, 0x60, 0x60, 0x2e, 0x4e,
    0xcd, 0x49, 0x4d, 0x2e, 0x51, 0x50, 0x32, 0x30, 0x34, 0x32, 0x36, 0x31, 0x35, 0x33, 0xb7, 0xb0,
    0xc4, 0xcd, 0x52, 0x02, 0x00, 0x0c, 0xd1, 0x0a, 0x6c,
];

/// MySQL's documented zlib frame holding the five packets of `SELECT repeat("a", 50)`'s result.
const DOC_COMPRESSED_RESULT_SET: &[u8] = &[
    0x4a, 0x00, 0x00, 0x01, 0x77, 0x00, 0x00, 0x78, 0x9c, 0x63, 0x64, 0x60, 0x60, 0x64, 0x54, 0x65,
    0x60, 0x60, 0x62, 0x4e, 0x49, 0x4d, 0x63, 0x60, 0x60, 0xe0, 0x2f, 0x4a, 0x2d, 0x48, 0x4d, 0x2c,
    0xd1, 0x50, 0x4a, 0x54, 0xd2, 0x51, 0x30, 0x35, 0xd0, 0x64, 0xe0, 0xe1, 0x60, 0x30, 0x02, 0x8a,
    0xff, 0x65, 0x64, 0x90, 0x67, 0x60, 0x60, 0x65, 0x60, 0x60, 0xfe, 0x07, 0x54, 0xcc, 0x60, 0xcc,
    0xc0, 0xc0, 0x62, 0x94, 0x48, 0x32, 0x00, 0xea, 0x67, 0x05, 0xeb, 0x07, 0x00, 0x8d, 0xf9, 0x1c,
    0x64,
];

/// A zstd frame (libzstd level 3) of a 277-byte COM_QUERY packet, `SELECT 'shipped', … 1`.
const ZSTD_QUERY: &[u8] = &[
    0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0xf5, 0x00, 0x00, 0xb8, 0x11, 0x01, 0x00, 0x00, 0x03, 0x53,
    0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x27, 0x73, 0x68, 0x69, 0x70, 0x70, 0x65, 0x64, 0x27, 0x2c,
    0x31, 0x01, 0x00, 0xf6, 0xa6, 0x4a, 0x13,
];

/// Layout of `mysql_compress_decode`: a chunked stream whose first byte picks the algorithm
/// (even: zlib, odd: zstd), then the compressed frames.
fn mysql_compress_decode() -> Seeds {
    let zlib = |cuts: &[u8], frames: &[u8]| Chunked::encode(cuts, &[&[0], frames].concat());
    let zstd_frame = [
        &[ZSTD_QUERY.len() as u8, 0, 0, 0, 0x15, 0x01, 0],
        ZSTD_QUERY,
    ]
    .concat();
    let mut wrong_length = DOC_COMPRESSED_QUERY.to_vec();
    wrong_length[4] += 1;
    let all = [
        DOC_STORED_SELECT_1,
        DOC_COMPRESSED_QUERY,
        DOC_COMPRESSED_RESULT_SET,
    ]
    .concat();
    vec![
        ("doc-stored-select-1", zlib(&[], DOC_STORED_SELECT_1)),
        ("doc-compressed-query", zlib(&[], DOC_COMPRESSED_QUERY)),
        (
            "doc-result-set-bytewise",
            zlib(&[1], DOC_COMPRESSED_RESULT_SET),
        ),
        ("doc-frames-odd-reads", zlib(&[3, 9, 250], &all)),
        (
            "zstd-query",
            Chunked::encode(&[], &[&[1], &zstd_frame[..]].concat()),
        ),
        ("wrong-uncompressed-length", zlib(&[], &wrong_length)),
        (
            "announces-16-mib",
            zlib(&[], &[0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff]),
        ),
    ]
}

/// Layout of `mysql_compress_encode`: selector (bit 0 zstd, the rest the level mod 10), the frame
/// cap (big-endian u16), the first sequence id, then the packet stream.
fn mysql_compress_encode() -> Seeds {
    let queries: Vec<u8> = (0u8..30)
        .flat_map(|seq| {
            pkt(
                seq,
                b"\x03SELECT * FROM orders WHERE status = 'shipped' AND note LIKE '%gift%'",
            )
        })
        .collect();
    // Incompressible: a SHA-256 chain.
    let mut noise = Vec::new();
    let mut block = sha2::Sha256::digest(b"noise").to_vec();
    for _ in 0..20 {
        noise.extend_from_slice(&block);
        block = sha2::Sha256::digest(&block).to_vec();
    }
    let with = |selector: u8, max_frame: u16, first_seq: u8, stream: &[u8]| {
        [
            &[selector][..],
            &max_frame.to_be_bytes(),
            &[first_seq],
            stream,
        ]
        .concat()
    };
    vec![
        ("zlib-level1-queries", with(0b10, 16384, 0, &queries)),
        ("zstd-level3-frames-of-100", with(0b111, 100, 250, &queries)),
        (
            "zlib-short",
            with(0b10, 0xffff, 0, &pkt(0, b"\x03SELECT 1")),
        ),
        ("zstd-noise", with(0b11, 4096, 0, &noise)),
    ]
}

/// PostgreSQL: psql's and PostgreSQL 15's captured bytes (`postgres::proto::golden`), and what
/// Debian's 15 cannot show (protocol 3.2's StartupMessage and 32-byte key). Layout byte 0x00:
/// frontend, one read; 0x80: backend, one read; low bits: read sizes (see the fuzz crate doc).
fn postgres_startup() -> Seeds {
    let cat = |layout: &[u8], parts: &[&[u8]]| {
        let mut v = layout.to_vec();
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    let mut startup_3_2 = BytesMut::new();
    GssEncRequest.encode(&mut startup_3_2);
    StartupMessage::new(
        ProtocolVersion::V3_2,
        "iamuser",
        &[("database", "app"), ("_pq_.fuzz", "on")],
    )
    .encode(&mut startup_3_2)
    .unwrap();
    let mut key_3_2 = BytesMut::new();
    BackendKeyData {
        process_id: 4242,
        secret_key: Bytes::from(vec![0x5a; 32]),
    }
    .encode(&mut key_3_2)
    .unwrap();
    vec![
        (
            "fe-startup-password",
            cat(&[0x00], &[pg::PSQL_STARTUP, pg::PSQL_BAD_PASSWORD]),
        ),
        (
            "fe-ssl-startup",
            cat(&[0x00], &[pg::PSQL_SSL_REQUEST, pg::PSQL_STARTUP]),
        ),
        ("fe-cancel", cat(&[0x00], &[pg::PSQL_CANCEL_REQUEST])),
        ("fe-scram", cat(&[0x00], &[pg::PSQL_SCRAM_CLIENT])),
        (
            "fe-scram-chunked",
            cat(&[0x03, 1, 3, 7], &[pg::PSQL_SCRAM_CLIENT]),
        ),
        ("fe-gssenc-3-2", cat(&[0x00], &[&startup_3_2])),
        (
            "be-login",
            cat(
                &[0x80],
                &[pg::SERVER_CLEARTEXT_REQUEST, pg::SERVER_LOGIN_OK],
            ),
        ),
        (
            "be-login-chunked",
            cat(&[0x82, 2, 9], &[pg::SERVER_LOGIN_OK]),
        ),
        ("be-pam-failed", cat(&[0x80], &[pg::SERVER_PAM_FAILED])),
        ("be-scram", cat(&[0x80], &[pg::SERVER_SCRAM])),
        ("be-md5", cat(&[0x80], &[pg::SERVER_MD5])),
        (
            "be-negotiate",
            cat(&[0x80], &[pg::SERVER_NEGOTIATE_3_2, &key_3_2]),
        ),
        (
            "be-notice-cancel",
            cat(&[0x80], &[pg::SERVER_NOTICE, pg::SERVER_QUERY_CANCELED]),
        ),
    ]
}

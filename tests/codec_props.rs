//! Property tests of the peer-facing codecs: the MySQL connection phase, the splice's command
//! scanner, and the SSM data channel (AgentMessage, its JSON payloads, smux v1 frames). Every type
//! decodes what it encodes, no byte string makes a decoder panic, whatever decodes re-encodes to
//! the same value, and the stream decoders (scanner, smux) frame any bytes the same way whatever
//! the read boundaries. The fuzz targets under `fuzz/` check the same invariants at depth.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use rds_iam_proxy::mysql::proto::packet;
use rds_iam_proxy::mysql::proto::scanner::{CommandScanner, Step};
use rds_iam_proxy::mysql::proto::{
    AuthSwitchRequest, Capabilities, ComChangeUser, ErrPacket, HandshakeResponse41, HandshakeV10,
    LoginReply, OkPacket, SslRequest,
};
use rds_iam_proxy::ssm::proto::message::{AgentMessage, MessageId, MessageType, PayloadType};
use rds_iam_proxy::ssm::proto::payload::{
    AcknowledgeContent, ActionParameters, ActionStatus, AgentSessionState, ChannelClosed, Flag,
    HandshakeComplete, HandshakeRequest, HandshakeResponse, OpenDataChannel, PortProperties,
    ProcessedClientAction, RequestedClientAction, SessionTypeRequest,
};
use rds_iam_proxy::ssm::proto::smux::{self, Cmd, Decoded, Frame, FrameDecoder};

fn no_nul(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(1u8..=255, 0..max).prop_map(Bytes::from)
}

fn any_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Capabilities whose MariaDB extension is only present when the CLIENT_MYSQL bit is clear, as on
/// the wire.
fn caps() -> impl Strategy<Value = Capabilities> {
    (any::<u32>(), any::<u32>()).prop_map(|(lower, ext)| {
        let lower = lower | Capabilities::PROTOCOL_41.lower();
        let c = Capabilities::from_parts(lower, 0);
        if c.uses_mariadb_ext() {
            Capabilities::from_parts(lower, ext)
        } else {
            c
        }
    })
}

fn attrs() -> impl Strategy<Value = Vec<(Bytes, Bytes)>> {
    proptest::collection::vec((any_bytes(40), any_bytes(300)), 0..6)
}

prop_compose! {
    fn greeting()(
        server_version in no_nul(60),
        connection_id in any::<u32>(),
        scramble in proptest::collection::vec(1u8..=255, 20..=20),
        caps in caps(),
        character_set in any::<u8>(),
        status_flags in any::<u16>(),
        plugin in no_nul(40),
    ) -> HandshakeV10 {
        let caps = caps | Capabilities::SECURE_CONNECTION | Capabilities::PLUGIN_AUTH;
        HandshakeV10 {
            server_version,
            connection_id,
            auth_plugin_data: Bytes::from(scramble),
            capabilities: caps,
            character_set,
            status_flags,
            auth_plugin_name: Some(plugin),
        }
    }
}

prop_compose! {
    fn response()(
        caps in caps(),
        max_packet_size in any::<u32>(),
        character_set in any::<u8>(),
        username in no_nul(64),
        auth in any_bytes(1500),
        short_auth in any_bytes(255),
        database in no_nul(64),
        plugin in no_nul(40),
        attrs in attrs(),
        zstd in any::<u8>(),
    ) -> HandshakeResponse41 {
        let lenenc = caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA);
        let secure = caps.contains(Capabilities::SECURE_CONNECTION);
        let auth_response = if lenenc {
            auth
        } else if secure {
            short_auth
        } else {
            // NUL-terminated form: no NUL inside.
            Bytes::from(short_auth.iter().map(|b| b.max(&1)).copied().collect::<Vec<u8>>())
        };
        HandshakeResponse41 {
            capabilities: caps,
            max_packet_size,
            character_set,
            username,
            auth_response,
            database: caps.contains(Capabilities::CONNECT_WITH_DB).then_some(database),
            auth_plugin_name: caps.contains(Capabilities::PLUGIN_AUTH).then_some(plugin),
            connect_attrs: caps.contains(Capabilities::CONNECT_ATTRS).then_some(attrs),
            zstd_level: caps
                .contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM)
                .then_some(zstd),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn greeting_round_trips(g in greeting()) {
        let mut out = BytesMut::new();
        g.encode(&mut out);
        prop_assert_eq!(HandshakeV10::decode(&out).unwrap(), g);
    }

    #[test]
    fn response_round_trips(r in response()) {
        let mut out = BytesMut::new();
        r.encode(&mut out);
        // Trailing optional fields that are empty are written as empty, and read back as such,
        // except a database or plugin at the very end of the packet; compare re-encodings.
        let back = HandshakeResponse41::decode(&out).unwrap();
        let mut again = BytesMut::new();
        back.encode(&mut again);
        prop_assert_eq!(&again[..], &out[..]);
        prop_assert_eq!(back.capabilities, r.capabilities);
        prop_assert_eq!(back.username, r.username);
        prop_assert_eq!(back.auth_response, r.auth_response);
        prop_assert_eq!(back.connect_attrs.unwrap_or_default(), r.connect_attrs.unwrap_or_default());
    }

    #[test]
    fn ssl_request_round_trips(caps in caps(), max in any::<u32>(), cs in any::<u8>()) {
        let s = SslRequest { capabilities: caps | Capabilities::SSL, max_packet_size: max, character_set: cs };
        let mut out = BytesMut::new();
        s.encode(&mut out);
        prop_assert!(SslRequest::matches(&out));
        prop_assert_eq!(SslRequest::decode(&out).unwrap(), s);
    }

    #[test]
    fn change_user_round_trips(
        caps in caps(),
        username in no_nul(64),
        auth in any_bytes(255),
        database in no_nul(64),
        cs in any::<u16>(),
        plugin in no_nul(40),
        attrs in attrs(),
    ) {
        let caps = caps | Capabilities::SECURE_CONNECTION;
        let c = ComChangeUser {
            username,
            auth_response: auth,
            database,
            character_set: Some(cs),
            auth_plugin_name: caps.contains(Capabilities::PLUGIN_AUTH).then_some(plugin),
            connect_attrs: caps.contains(Capabilities::CONNECT_ATTRS).then_some(attrs),
        };
        let mut out = BytesMut::new();
        c.encode(&mut out, caps);
        prop_assert_eq!(ComChangeUser::decode(&out, caps).unwrap(), c);
    }

    #[test]
    fn err_ok_and_switch_round_trip(
        code in any::<u16>(),
        state in proptest::array::uniform5(b'0'..=b'Z'),
        msg in any_bytes(300),
        affected in any::<u64>(),
        insert_id in any::<u64>(),
        status in any::<u16>(),
        warnings in any::<u16>(),
        trailer in any_bytes(100),
        plugin in no_nul(40),
        data in any_bytes(100),
    ) {
        let e = ErrPacket { code, sql_state: Some(state), message: msg };
        let mut out = BytesMut::new();
        e.encode(&mut out);
        prop_assert_eq!(ErrPacket::decode(&out).unwrap(), e);
        let ok = OkPacket { affected_rows: affected, last_insert_id: insert_id, status_flags: status, warnings, trailer };
        let mut out = BytesMut::new();
        ok.encode(&mut out);
        prop_assert_eq!(OkPacket::decode(&out).unwrap(), ok);
        let s = AuthSwitchRequest { plugin_name: plugin, plugin_data: data };
        let mut out = BytesMut::new();
        s.encode(&mut out);
        if !s.plugin_name.is_empty() || !s.plugin_data.is_empty() {
            prop_assert_eq!(AuthSwitchRequest::decode(&out).unwrap(), s);
        }
    }

    #[test]
    fn decoders_never_panic(bytes in any_bytes(2048), caps in caps()) {
        let _ = HandshakeV10::decode(&bytes);
        let _ = HandshakeResponse41::decode(&bytes);
        let _ = SslRequest::decode(&bytes);
        let _ = ComChangeUser::decode(&bytes, caps);
        let _ = ErrPacket::decode(&bytes);
        let _ = OkPacket::decode(&bytes);
        let _ = LoginReply::decode(bytes.clone());
        let mut b = BytesMut::from(&bytes[..]);
        let _ = packet::decode(&mut b, 64 * 1024);
        let mut sc = CommandScanner::default();
        let _ = sc.step(&bytes);
    }

    /// Random command streams (queries, LOAD DATA file runs, change-user packets), cut at random
    /// read boundaries: the scanner forwards every other byte once, in order, and finds every
    /// COM_CHANGE_USER exactly.
    #[test]
    fn scanner_forwards_every_byte_once(
        commands in proptest::collection::vec((0u8..3, any_bytes(300)), 1..20),
        cuts in proptest::collection::vec(1usize..700, 1..50),
    ) {
        let mut stream = Vec::new();
        let mut expected_fwd = Vec::new();
        let mut expected_cu = Vec::new();
        for (kind, body) in &commands {
            let mut b = BytesMut::new();
            match kind {
                0 => {
                    let mut p = vec![0x03];
                    p.extend_from_slice(body);
                    packet::encode(0, &p, &mut b);
                    expected_fwd.extend_from_slice(&b);
                }
                1 => {
                    // A LOAD DATA LOCAL exchange: query, file packets (any first byte), terminator.
                    packet::encode(0, b"\x03LOAD DATA LOCAL INFILE 'x' INTO TABLE t", &mut b);
                    for (i, chunk) in body.chunks(7).enumerate() {
                        let mut data = chunk.to_vec();
                        data.insert(0, 0x11);
                        packet::encode((2 + i) as u8, &data, &mut b);
                    }
                    packet::encode(200, b"", &mut b);
                    expected_fwd.extend_from_slice(&b);
                }
                _ => {
                    let mut p = vec![0x11];
                    p.extend(body.iter().map(|x| x.max(&1)));
                    p.push(0);
                    packet::encode(0, &p, &mut b);
                    expected_cu.push(b.to_vec());
                }
            }
            stream.extend_from_slice(&b);
        }
        let mut sc = CommandScanner::default();
        let mut buf = BytesMut::new();
        let (mut fwd, mut cu) = (Vec::new(), Vec::new());
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < stream.len() {
            let n = (*cut.next().unwrap()).min(stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            loop {
                match sc.step(&buf).unwrap() {
                    Step::Forward(n) => fwd.extend_from_slice(&buf.split_to(n)),
                    Step::ChangeUser(n) => cu.push(buf.split_to(n).to_vec()),
                    Step::NeedMore => break,
                }
            }
        }
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        prop_assert_eq!(fwd, expected_fwd);
        prop_assert_eq!(cu, expected_cu);
    }
}

/// `stream` as successive reads of the sizes in `cuts` (used in turn, repeated).
fn reads<'a>(stream: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    let mut cut = cuts.iter().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (read, after) = rest.split_at((*cut.next()?).clamp(1, rest.len()));
        rest = after;
        Some(read)
    })
}

/// What a scanner made of a stream: forwarded runs (merged) and change-user packets in order, the
/// bytes still waiting, and the error that stopped it.
#[derive(Debug, PartialEq, Eq)]
struct Scanned {
    events: Vec<(bool, Vec<u8>)>,
    pending: Vec<u8>,
    error: Option<String>,
}

fn scan<'a>(reads: impl Iterator<Item = &'a [u8]>) -> Scanned {
    let mut sc = CommandScanner::default();
    let mut buf = BytesMut::new();
    let mut events: Vec<(bool, Vec<u8>)> = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match sc.step(&buf) {
                Ok(Step::Forward(n)) => match events.last_mut() {
                    Some((false, run)) => run.extend_from_slice(&buf.split_to(n)),
                    _ => events.push((false, buf.split_to(n).to_vec())),
                },
                Ok(Step::ChangeUser(n)) => events.push((true, buf.split_to(n).to_vec())),
                Ok(Step::NeedMore) => break,
                Err(e) => {
                    return Scanned {
                        events,
                        pending: buf.to_vec(),
                        error: Some(e.to_string()),
                    };
                }
            }
        }
    }
    Scanned {
        events,
        pending: buf.to_vec(),
        error: None,
    }
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::INPUT_STREAM_DATA),
        Just(MessageType::OUTPUT_STREAM_DATA),
        Just(MessageType::ACKNOWLEDGE),
        Just(MessageType::CHANNEL_CLOSED),
        Just(MessageType::PAUSE_PUBLICATION),
        proptest::collection::vec(0x21u8..0x7f, 1..=32)
            .prop_map(|b| MessageType::new(std::str::from_utf8(&b).unwrap()).unwrap()),
    ]
}

prop_compose! {
    fn agent_message()(
        message_type in message_type(),
        schema_version in any::<u32>(),
        created_date in 1..=u64::MAX,
        sequence_number in any::<i64>(),
        flags in any::<u64>(),
        id in any::<[u8; 16]>(),
        payload_type in any::<u32>(),
        payload in any_bytes(2048),
    ) -> AgentMessage {
        AgentMessage {
            message_type,
            schema_version,
            created_date,
            sequence_number,
            flags,
            message_id: MessageId(id),
            payload_type: PayloadType(payload_type),
            payload,
        }
    }
}

/// JSON strings: any Unicode, including quotes, escapes and control characters.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

prop_compose! {
    fn handshake_request()(
        agent_version in text(),
        port in (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        session_type in text(),
        other in text(),
        n in 0usize..3,
    ) -> HandshakeRequest {
        let properties = PortProperties {
            host: port.0,
            local_connection_type: port.1,
            local_port_number: port.2,
            local_unix_socket: port.3,
            port_number: port.4,
            r#type: port.5,
        };
        let session = RequestedClientAction {
            action_type: "SessionType".into(),
            action_parameters: ActionParameters::SessionType(SessionTypeRequest {
                session_type,
                properties: properties.to_value(),
            }),
        };
        let unknown = RequestedClientAction {
            action_type: format!("x-{other}"),
            action_parameters: ActionParameters::Other(serde_json::json!({ "k": other, "n": [1, null] })),
        };
        HandshakeRequest {
            agent_version,
            requested_client_actions: [session, unknown].into_iter().take(n).collect(),
        }
    }
}

fn smux_frame(max: usize) -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<u32>().prop_map(Frame::syn),
        any::<u32>().prop_map(Frame::fin),
        Just(Frame::nop()),
        (
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..=max)
        )
            .prop_map(|(id, d)| Frame::psh(id, Bytes::from(d))),
    ]
}

/// Decodes `reads` with `decoder`: the frames, then the error or the bytes left over.
fn smux_decode<'a>(
    decoder: &FrameDecoder,
    reads: impl Iterator<Item = &'a [u8]>,
) -> (Vec<Frame>, Result<usize, String>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Frame(f)) => frames.push(f),
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => return (frames, Err(e.to_string())),
            }
        }
    }
    (frames, Ok(buf.len()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bytes, cut at any read boundaries, frame as in one read and as byte by byte: the
    /// same forwarded runs, change-user packets and error; nothing lost, nothing repeated.
    #[test]
    fn scanner_frames_any_bytes_alike_at_any_chunking(
        stream in any_bytes(1500),
        cuts in proptest::collection::vec(1usize..300, 1..12),
    ) {
        let whole = scan(std::iter::once(&stream[..]));
        let mut replay: Vec<u8> = whole.events.iter().flat_map(|(_, b)| b.clone()).collect();
        replay.extend_from_slice(&whole.pending);
        prop_assert_eq!(&replay[..], &stream[..]);
        for other in [scan(reads(&stream, &cuts)), scan(stream.chunks(1))] {
            prop_assert_eq!(&other.events, &whole.events);
            prop_assert_eq!(&other.error, &whole.error);
            prop_assert!(whole.pending.starts_with(&other.pending));
            if whole.error.is_none() {
                prop_assert_eq!(&other.pending, &whole.pending);
            }
        }
    }

    #[test]
    fn agent_message_round_trips(m in agent_message()) {
        let frame = m.encode();
        prop_assert_eq!(frame.len(), m.encoded_len());
        prop_assert_eq!(AgentMessage::decode(&frame).unwrap(), m.clone());
        prop_assert_eq!(AgentMessage::decode_bytes(frame.clone()).unwrap(), m.clone());
        // Any change to a non-empty payload breaks the digest.
        if !m.payload.is_empty() && m.message_type != MessageType::PAUSE_PUBLICATION {
            let mut bad = frame.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            prop_assert!(AgentMessage::decode(&bad).is_err());
        }
    }

    /// Any frame decodes or fails cleanly; with its lengths and digest made right, what decodes
    /// encodes back to the same message.
    #[test]
    fn agent_message_decoder_reads_any_frame(mut frame in any_bytes(600).prop_map(|b| b.to_vec()), fix in any::<bool>()) {
        if fix && frame.len() >= 120 {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&frame[120..]);
            let payload_len = (frame.len() - 120) as u32;
            frame[..4].copy_from_slice(&116u32.to_be_bytes());
            frame[80..112].copy_from_slice(&digest);
            frame[116..120].copy_from_slice(&payload_len.to_be_bytes());
        }
        if let Ok(m) = AgentMessage::decode(&frame) {
            prop_assert_eq!(AgentMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn json_payloads_round_trip(
        strings in proptest::collection::vec(text(), 7),
        number in any::<i64>(),
        flag in any::<bool>(),
        request in handshake_request(),
        errors in proptest::option::of(proptest::collection::vec(text(), 0..3)),
        status in any::<i64>(),
        instance in opt_text(),
    ) {
        let ack = AcknowledgeContent {
            acknowledged_message_type: strings[0].clone(),
            acknowledged_message_id: strings[1].clone(),
            acknowledged_message_sequence_number: number,
            is_sequential_message: flag,
        };
        prop_assert_eq!(AcknowledgeContent::decode(&ack.encode()).unwrap(), ack);
        let closed = ChannelClosed {
            message_id: strings[0].clone(),
            created_date: strings[1].clone(),
            destination_id: strings[2].clone(),
            session_id: strings[3].clone(),
            message_type: strings[4].clone(),
            schema_version: number,
            output: strings[5].clone(),
        };
        prop_assert_eq!(ChannelClosed::decode(&closed.encode()).unwrap(), closed);
        let state = AgentSessionState {
            schema_version: number,
            session_state: strings[0].clone(),
            session_id: strings[1].clone(),
        };
        prop_assert_eq!(AgentSessionState::decode(&state.encode()).unwrap(), state);
        let complete = HandshakeComplete {
            handshake_time_to_complete: number,
            customer_message: strings[6].clone(),
        };
        prop_assert_eq!(HandshakeComplete::decode(&complete.encode()).unwrap(), complete);
        prop_assert_eq!(HandshakeRequest::decode(&request.encode()).unwrap(), request.clone());
        for action in &request.requested_client_actions {
            if let ActionParameters::SessionType(st) = &action.action_parameters {
                let props = PortProperties::from_value(&st.properties).unwrap();
                prop_assert_eq!(props.to_value(), st.properties.clone());
            }
        }
        let response = HandshakeResponse {
            client_version: strings[0].clone(),
            processed_client_actions: vec![ProcessedClientAction {
                action_type: strings[1].clone(),
                action_status: ActionStatus(status),
                action_result: serde_json::Value::String(strings[2].clone()),
                error: strings[3].clone(),
            }],
            errors,
        };
        prop_assert_eq!(HandshakeResponse::decode(&response.encode()).unwrap(), response);
        let open = OpenDataChannel {
            message_schema_version: strings[0].clone(),
            request_id: strings[1].clone(),
            token_value: strings[2].clone(),
            client_instance_id: instance,
            client_id: strings[3].clone(),
            client_version: Some(strings[4].clone()),
        };
        prop_assert_eq!(OpenDataChannel::decode(&open.encode()).unwrap(), open);
        for f in [Flag::DisconnectToPort, Flag::TerminateSession, Flag::ConnectToPortError] {
            prop_assert_eq!(Flag::decode(&f.encode()).unwrap(), f);
        }
    }

    /// Any bytes: every JSON decoder answers with a value or an error, and a value re-decodes
    /// from its own encoding.
    #[test]
    fn json_decoders_read_any_bytes(bytes in any_bytes(400)) {
        if let Ok(v) = AcknowledgeContent::decode(&bytes) {
            prop_assert_eq!(AcknowledgeContent::decode(&v.encode()).unwrap(), v);
        }
        if let Ok(v) = ChannelClosed::decode(&bytes) {
            prop_assert_eq!(ChannelClosed::decode(&v.encode()).unwrap(), v);
        }
        if let Ok(v) = HandshakeRequest::decode(&bytes) {
            prop_assert_eq!(HandshakeRequest::decode(&v.encode()).unwrap(), v);
        }
        if let Ok(v) = HandshakeResponse::decode(&bytes) {
            prop_assert_eq!(HandshakeResponse::decode(&v.encode()).unwrap(), v);
        }
        let _ = HandshakeComplete::decode(&bytes);
        let _ = AgentSessionState::decode(&bytes);
        let _ = Flag::decode(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = OpenDataChannel::decode(text);
        }
    }

    /// Frames encode to bytes that decode back to them at any read boundaries.
    #[test]
    fn smux_frames_round_trip_at_any_chunking(
        frames in proptest::collection::vec(smux_frame(600), 0..20),
        cuts in proptest::collection::vec(1usize..700, 1..12),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        let decoder = FrameDecoder::new(600);
        let (decoded, rest) = smux_decode(&decoder, reads(&stream, &cuts));
        prop_assert_eq!(decoded, frames);
        prop_assert_eq!(rest, Ok(0));
    }

    /// Any bytes decode to the same frames and the same error whatever the read boundaries, and
    /// the frames re-encode to exactly the bytes they were read from.
    #[test]
    fn smux_any_stream_decodes_alike_at_any_chunking(
        stream in any_bytes(1500),
        cuts in proptest::collection::vec(1usize..300, 1..12),
        max in 0usize..70_000,
    ) {
        let decoder = FrameDecoder::new(max);
        let whole = smux_decode(&decoder, std::iter::once(&stream[..]));
        prop_assert_eq!(&smux_decode(&decoder, reads(&stream, &cuts)), &whole);
        prop_assert_eq!(&smux_decode(&decoder, stream.chunks(1)), &whole);
        let mut again = BytesMut::new();
        for f in &whole.0 {
            f.encode(&mut again);
        }
        prop_assert_eq!(&again[..], &stream[..again.len()]);
        if let Ok(left) = whole.1 {
            prop_assert_eq!(again.len() + left, stream.len());
        }
    }

    /// A write split by `encode_data` arrives as PSH frames of at most the frame size that join
    /// back into the write.
    #[test]
    fn smux_encode_data_splits_and_rejoins(
        data in any_bytes(5000),
        max in 1usize..=65535,
        id in any::<u32>(),
    ) {
        let mut out = BytesMut::new();
        smux::encode_data(id, &data, max, &mut out);
        let (frames, rest) = smux_decode(&FrameDecoder::new(max), std::iter::once(&out[..]));
        prop_assert_eq!(rest, Ok(0));
        let mut joined = Vec::new();
        for f in frames {
            prop_assert_eq!((f.cmd, f.stream_id), (Cmd::Psh, id));
            prop_assert!(!f.data.is_empty() && f.data.len() <= max);
            joined.extend_from_slice(&f.data);
        }
        prop_assert_eq!(&joined[..], &data[..]);
    }
}

//! The reliable channel (spec §5) fed arbitrary incoming messages — stream data with any sequence
//! number, acknowledgements of anything, closes, publication pauses, raw frames — interleaved with
//! our own sends, clock steps, retransmission polls and readiness changes, under small buffer
//! bounds. A model of what must hold is checked after every step: stream messages are delivered
//! once each, in sequence order, with no gap; only messages awaiting an acknowledgement are
//! acknowledged; the buffers stay within their bounds; the retransmission timer is armed exactly
//! when something awaits an acknowledgement.
//!
//! Input: a role byte, four bound bytes, then a script of one-byte operations with their arguments
//! (see `Op`); the script is read with zeros past the end of the input.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::ssm::proto::message::{
    AgentMessage, HEADER_LEN, MessageId, MessageType, PayloadType, SCHEMA_VERSION,
};
use rds_iam_proxy::ssm::proto::payload::{AcknowledgeContent, ChannelClosed};
use rds_iam_proxy::ssm::proto::reliable::{Config, Inbound, Now, ReliableChannel};
use rds_iam_proxy_fuzz::Cursor;

/// What the channel must have done so far.
#[derive(Default)]
struct Model {
    /// Next incoming sequence number to deliver (= stream messages delivered).
    expected: i64,
    /// Incoming sequence numbers buffered ahead of a gap.
    buffered: BTreeSet<i64>,
    /// Our sequence numbers awaiting an acknowledgement.
    outstanding: BTreeSet<i64>,
    /// Whether in-order messages are consumed.
    ready: bool,
    /// Whether the service paused us.
    paused: bool,
}

/// The script's operations, by `byte % 8`.
#[derive(Clone, Copy)]
enum Op {
    /// An incoming stream message: sequence selector, payload length, payload bytes.
    Stream,
    /// An acknowledge: sequence selector; with bit 6 of the selector, a raw payload instead.
    Acknowledge,
    /// `channel_closed` with a JSON or raw payload.
    ChannelClosed,
    /// `pause_publication` or `start_publication` (by the next byte's low bit).
    Publication,
    /// One of our sends: payload length.
    Send,
    /// The clock moves on (two bytes of milliseconds), then a retransmission poll.
    Tick,
    /// The owner becomes ready or not (next byte's low bit).
    Ready,
    /// A raw frame: two length bytes, then the frame, decoded as the WebSocket layer would.
    Raw,
}

const OPS: [Op; 8] = [
    Op::Stream,
    Op::Acknowledge,
    Op::ChannelClosed,
    Op::Publication,
    Op::Send,
    Op::Tick,
    Op::Ready,
    Op::Raw,
];

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let mut config = if input.u8() & 1 == 0 {
        Config::client()
    } else {
        Config::agent()
    };
    config.max_unacked = 1 + usize::from(input.u8() % 8);
    config.max_unacked_bytes = HEADER_LEN * (1 + usize::from(input.u8() % 8));
    config.max_out_of_order = 1 + usize::from(input.u8() % 8);
    config.max_out_of_order_bytes = HEADER_LEN * (1 + usize::from(input.u8() % 8));
    let mut ch = ReliableChannel::new(config.clone());
    let mut model = Model {
        ready: true,
        ..Model::default()
    };
    let origin = Instant::now();
    let mut ms = 0u64;

    for _ in 0..512 {
        if input.is_empty() {
            break;
        }
        let now = Now {
            instant: origin + Duration::from_millis(ms),
            unix_ms: 1_700_000_000_000 + ms,
        };
        match OPS[usize::from(input.u8() % 8)] {
            Op::Stream => {
                let sel = input.u8();
                let seq = if sel & 0x80 != 0 {
                    input.u64() as i64
                } else {
                    model.expected + i64::from(sel & 0x1f) - 8
                };
                let message_type = if sel & 0x40 != 0 {
                    config.role.outgoing_type()
                } else {
                    config.role.incoming_type()
                };
                let len = usize::from(input.u8() % 64);
                let payload = Bytes::copy_from_slice(input.take(len));
                let m = message(message_type, seq, PayloadType::OUTPUT, payload, now);
                incoming(&mut ch, &mut model, now, m);
            }
            Op::Acknowledge => {
                let sel = input.u8();
                let seq = match model.outstanding.iter().nth(usize::from(sel & 7)) {
                    Some(&s) if sel & 0x80 == 0 => s,
                    _ => i64::from(sel & 0x3f) - 8,
                };
                let payload = if sel & 0x40 != 0 {
                    let len = usize::from(input.u8());
                    Bytes::copy_from_slice(input.take(len))
                } else {
                    AcknowledgeContent {
                        acknowledged_message_type: config.role.outgoing_type().to_string(),
                        acknowledged_message_id: MessageId::default().to_string(),
                        acknowledged_message_sequence_number: seq,
                        is_sequential_message: true,
                    }
                    .encode()
                };
                let m = message(MessageType::ACKNOWLEDGE, 0, PayloadType::NONE, payload, now);
                incoming(&mut ch, &mut model, now, m);
            }
            Op::ChannelClosed => {
                let payload = if input.u8() & 1 == 0 {
                    ChannelClosed {
                        output: "closed".into(),
                        ..ChannelClosed::default()
                    }
                    .encode()
                } else {
                    let len = usize::from(input.u8());
                    Bytes::copy_from_slice(input.take(len))
                };
                let m = message(
                    MessageType::CHANNEL_CLOSED,
                    0,
                    PayloadType::NONE,
                    payload,
                    now,
                );
                incoming(&mut ch, &mut model, now, m);
            }
            Op::Publication => {
                let t = if input.u8() & 1 == 0 {
                    MessageType::PAUSE_PUBLICATION
                } else {
                    MessageType::START_PUBLICATION
                };
                let m = message(t, 0, PayloadType::NONE, Bytes::new(), now);
                incoming(&mut ch, &mut model, now, m);
            }
            Op::Send => {
                let len = usize::from(input.u8());
                send(&mut ch, &mut model, now, Bytes::from(vec![0x5a; len]));
            }
            Op::Tick => {
                ms += u64::from(input.u16());
                let now = origin + Duration::from_millis(ms);
                for frame in ch.poll_retransmit(now) {
                    let m = AgentMessage::decode(&frame).expect("a retransmission decodes");
                    assert_eq!(m.message_type, config.role.outgoing_type());
                    assert!(model.outstanding.contains(&m.sequence_number));
                }
            }
            Op::Ready => {
                model.ready = input.u8() & 1 == 1;
                ch.set_ready(model.ready);
            }
            Op::Raw => {
                let len = usize::from(input.u16() % 2048);
                if let Ok(m) = AgentMessage::decode(input.take(len)) {
                    incoming(&mut ch, &mut model, now, m);
                }
            }
        }
        check(&ch, &model);
    }
});

fn message(
    message_type: MessageType,
    sequence_number: i64,
    payload_type: PayloadType,
    payload: Bytes,
    now: Now,
) -> AgentMessage {
    AgentMessage {
        message_type,
        schema_version: SCHEMA_VERSION,
        created_date: now.unix_ms,
        sequence_number,
        flags: 0,
        message_id: MessageId::random(),
        payload_type,
        payload,
    }
}

/// One of our stream messages.
fn send(ch: &mut ReliableChannel, model: &mut Model, now: Now, payload: Bytes) {
    let seq = ch.next_sequence_number();
    let tracked = ch.unacked_len();
    let can = ch.can_send(payload.len());
    match ch.send(now, PayloadType::OUTPUT, payload.clone()) {
        Ok(frame) => {
            assert_eq!(ch.next_sequence_number(), seq + 1);
            if ch.unacked_len() > tracked {
                model.outstanding.insert(seq);
            }
            if let Some(frame) = frame {
                let m = AgentMessage::decode(&frame).expect("our frame decodes");
                assert_eq!(m.sequence_number, seq);
                assert_eq!(m.payload, payload);
            }
        }
        Err(_) => {
            assert!(!can, "send refused what can_send allowed");
            assert_eq!(ch.next_sequence_number(), seq);
            assert_eq!(ch.unacked_len(), tracked);
        }
    }
}

/// One incoming message, and what its outcome must mean.
fn incoming(ch: &mut ReliableChannel, model: &mut Model, now: Now, m: AgentMessage) {
    let role = ch.config().role;
    let seq = m.sequence_number;
    let stream = m.message_type == role.incoming_type();
    let result = ch.on_message(now, m.clone());
    let Ok(inbound) = result else {
        // Only an acknowledge whose payload does not parse fails; it still ends a pause.
        assert_eq!(m.message_type, MessageType::ACKNOWLEDGE);
        assert!(AcknowledgeContent::decode(&m.payload).is_err());
        model.paused = false;
        return;
    };
    match inbound {
        Inbound::Delivered { ack, messages } => {
            assert!(stream && model.ready);
            assert_eq!(seq, model.expected);
            assert_eq!(messages[0], m);
            for d in &messages {
                assert_eq!(d.sequence_number, model.expected);
                model.buffered.remove(&model.expected);
                model.expected += 1;
            }
            acknowledges(&ack, &m);
        }
        Inbound::Buffered { ack } => {
            // Never acknowledged ahead of a gap while the in-order message would be refused.
            assert!(stream && seq > model.expected && model.ready);
            assert!(model.buffered.insert(seq));
            acknowledges(&ack, &m);
        }
        Inbound::Duplicate { ack } => {
            assert!(stream && (seq < model.expected || model.buffered.contains(&seq)));
            acknowledges(&ack, &m);
        }
        Inbound::NotReady => assert!(
            stream && seq >= model.expected && !model.buffered.contains(&seq) && !model.ready
        ),
        Inbound::Overflow => {
            assert!(stream && seq > model.expected && !model.buffered.contains(&seq));
        }
        Inbound::Acknowledged {
            sequence_number, ..
        } => {
            assert_eq!(m.message_type, MessageType::ACKNOWLEDGE);
            assert!(model.outstanding.remove(&sequence_number));
            model.paused = false;
        }
        Inbound::UnknownAcknowledge { sequence_number } => {
            assert_eq!(m.message_type, MessageType::ACKNOWLEDGE);
            assert!(!model.outstanding.contains(&sequence_number));
            model.paused = false;
        }
        Inbound::ChannelClosed(_) => assert_eq!(m.message_type, MessageType::CHANNEL_CLOSED),
        Inbound::PausePublication => {
            assert_eq!(m.message_type, MessageType::PAUSE_PUBLICATION);
            model.paused = true;
        }
        Inbound::StartPublication => {
            assert_eq!(m.message_type, MessageType::START_PUBLICATION);
            model.paused = false;
        }
        Inbound::Ignored => assert!(
            !stream
                && ![
                    MessageType::ACKNOWLEDGE,
                    MessageType::CHANNEL_CLOSED,
                    MessageType::PAUSE_PUBLICATION,
                    MessageType::START_PUBLICATION,
                ]
                .contains(&m.message_type)
        ),
    }
    if stream {
        model.paused = false;
    }
}

/// `ack` is the acknowledge of `m`.
fn acknowledges(ack: &[u8], m: &AgentMessage) {
    let ack = AgentMessage::decode(ack).expect("our acknowledge decodes");
    assert_eq!(ack.message_type, MessageType::ACKNOWLEDGE);
    let content = AcknowledgeContent::decode(&ack.payload).expect("our acknowledge parses");
    assert_eq!(
        content.acknowledged_message_sequence_number,
        m.sequence_number
    );
}

fn check(ch: &ReliableChannel, model: &Model) {
    let config = ch.config();
    assert_eq!(ch.expected_sequence_number(), model.expected);
    assert_eq!(ch.out_of_order_len(), model.buffered.len());
    assert!(ch.out_of_order_len() <= config.max_out_of_order);
    assert_eq!(ch.unacked_len(), model.outstanding.len());
    assert!(ch.unacked_len() <= config.max_unacked);
    assert!(ch.unacked_len() <= 1 || ch.unacked_bytes() <= config.max_unacked_bytes);
    assert_eq!(ch.is_peer_paused(), model.paused);
    let timer_off = model.outstanding.is_empty() || (config.honour_pause && model.paused);
    assert_eq!(ch.next_retransmit_at().is_none(), timer_off);
    assert_eq!(
        ch.oldest_unacked().map(|o| o.sequence_number),
        model.outstanding.first().copied()
    );
}

//! AgentMessage frames from the WebSocket (spec §3): any frame decodes to a message or an error;
//! a decoded message encodes to a frame that decodes to the same message and differs from the
//! input only where the format allows (MessageType padding, the digest of exempt types).
//!
//! Input: one mode byte, then the frame. With the mode's low bit set, the harness first writes a
//! correct HeaderLength, PayloadLength and SHA-256 digest into the frame, so the fuzzer explores
//! what lies behind the digest check instead of stopping at it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::ssm::proto::message::{
    AgentMessage, HEADER_LEN, HEADER_LENGTH_FIELD, MAX_PAYLOAD_LEN, MessageId, MessageType,
};
use rds_iam_proxy::ssm::proto::payload::AcknowledgeContent;
use rds_iam_proxy::ssm::proto::reliable::acknowledge;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frame)) = data.split_first() else {
        return;
    };
    let mut frame = frame.to_vec();
    if mode & 1 == 1 && frame.len() >= HEADER_LEN {
        let payload_len = (frame.len() - HEADER_LEN) as u32;
        let digest = Sha256::digest(&frame[HEADER_LEN..]);
        frame[..4].copy_from_slice(&HEADER_LENGTH_FIELD.to_be_bytes());
        frame[80..112].copy_from_slice(&digest);
        frame[116..120].copy_from_slice(&payload_len.to_be_bytes());
    }

    let copied = AgentMessage::decode(&frame);
    let shared = AgentMessage::decode_bytes(Bytes::from(frame.clone()));
    let m = match (copied, shared) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            a
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            return;
        }
        (a, b) => panic!("decode and decode_bytes disagree: {a:?} / {b:?}"),
    };
    assert!(m.payload.len() <= MAX_PAYLOAD_LEN);

    let out = m.encode();
    assert_eq!(out.len(), m.encoded_len());
    assert_eq!(out.len(), frame.len());
    assert_eq!(
        AgentMessage::decode(&out).expect("a re-encoded message decodes"),
        m
    );
    // Same bytes but for the MessageType field (padding) and the digest (checked or exempt).
    assert_eq!(out[..4], frame[..4]);
    assert_eq!(out[36..80], frame[36..80]);
    assert_eq!(out[112..], frame[112..]);
    assert_eq!(m.message_type.as_str().trim(), m.message_type.as_str());
    assert_eq!(
        MessageType::new(m.message_type.as_str()).unwrap(),
        m.message_type
    );

    // What a receiver does next with a stream message: acknowledge it.
    if m.message_type.is_stream_data() {
        let ack = acknowledge(&m, 1, MessageId::default());
        let ack = AgentMessage::decode(&ack.encode()).expect("our acknowledge decodes");
        let content = AcknowledgeContent::decode(&ack.payload).expect("our acknowledge parses");
        assert_eq!(
            content.acknowledged_message_sequence_number,
            m.sequence_number
        );
        assert_eq!(content.acknowledged_message_type, m.message_type.as_str());
        let id: MessageId = content.acknowledged_message_id.parse().unwrap();
        assert_eq!(id, m.message_id);
    }
});

//! The compressed framing toward the upstream ([`Encoder`]): any packet-stream bytes, at any level
//! and frame size, must come back byte for byte through the [`Decoder`], in frames of at most the
//! cap, numbered on from the [`Sequence`] given, short payloads stored, and none longer on the wire
//! than stored would have been.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::mysql::proto::compress::{
    Algorithm, Decoder, Encoder, HEADER_LEN, Limits, MIN_COMPRESS_LENGTH, Sequence,
};
use rds_iam_proxy_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let selector = cursor.u8();
    let algorithm = if selector & 1 == 0 {
        Algorithm::Zlib
    } else {
        Algorithm::Zstd
    };
    let level = i32::from(selector >> 1) % 10;
    let max_frame = usize::from(cursor.u16()).max(1);
    let first_seq = cursor.u8();
    let stream = cursor.take(usize::MAX);

    let mut encoder = Encoder::new(algorithm, level).max_frame(max_frame);
    let mut seq = Sequence::default();
    for _ in 0..first_seq {
        seq.take();
    }
    let mut wire = Vec::new();
    let frames = encoder.encode(stream, &mut seq, &mut wire).unwrap();
    assert_eq!(frames, stream.len().div_ceil(max_frame));
    assert_eq!(seq.expected(), first_seq.wrapping_add(frames as u8));
    assert!(wire.len() <= stream.len() + frames * HEADER_LEN);

    let mut decoder = Decoder::new(algorithm, Limits::default());
    let mut out = Vec::new();
    let mut rest = &wire[..];
    let mut expected = first_seq;
    let mut chunks = stream.chunks(max_frame);
    while !rest.is_empty() {
        let progress = decoder.decode(rest, &mut out).unwrap();
        rest = &rest[progress.consumed..];
        if let Some(frame) = progress.frame {
            assert_eq!(frame.seq, expected);
            expected = expected.wrapping_add(1);
            let chunk = chunks.next().unwrap();
            assert_eq!(frame.plain_len(), chunk.len());
            if chunk.len() < MIN_COMPRESS_LENGTH {
                assert!(frame.is_stored());
            }
        }
    }
    decoder.finish().unwrap();
    assert!(chunks.next().is_none());
    assert!(out == stream);
});

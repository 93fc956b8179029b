//! smux v1 frames from the agent (spec §7.4), as the session task decodes them from the Output
//! payloads: any byte stream, cut into reads of any sizes, decodes to the same frames and the same
//! error as in one read; re-encoding the frames gives back exactly the bytes they were read from;
//! and dispatching them into a stream table (data to PSH, close on FIN) keeps its accounting.
//!
//! Input: one byte choosing the decoder's maximum frame size, then a chunked stream
//! ([`rds_iam_proxy_fuzz::Chunked`]).
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::ssm::mux::{Shared, Wakers};
use rds_iam_proxy::ssm::proto::smux::{self, Cmd, Decoded, Frame, FrameDecoder};
use rds_iam_proxy_fuzz::Chunked;
use tokio::sync::Notify;

const MAX_FRAME_SIZES: [usize; 4] = [smux::DEFAULT_MAX_FRAME_SIZE, 1, 300, 70_000];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let decoder = FrameDecoder::new(MAX_FRAME_SIZES[usize::from(choice) % MAX_FRAME_SIZES.len()]);
    let input = Chunked::parse(rest);
    let whole = decode(&decoder, std::iter::once(input.stream));
    let chunked = decode(&decoder, input.reads());
    assert_eq!(chunked.frames, whole.frames);
    assert_eq!(chunked.error, whole.error);

    // Frames re-encode to exactly the bytes they came from.
    let mut out = BytesMut::new();
    for f in &whole.frames {
        f.encode(&mut out);
    }
    assert_eq!(&out[..], &input.stream[..out.len()]);
    if whole.error.is_none() {
        assert_eq!(out.len() + whole.pending, input.stream.len());
    }

    dispatch(&whole.frames);

    // A write split by encode_data decodes back to the same bytes.
    let max = decoder.max_frame_size().max(1);
    let mut out = BytesMut::new();
    smux::encode_data(7, input.stream, max, &mut out);
    let mut data = Vec::new();
    while let Decoded::Frame(f) = decoder.decode(&mut out).expect("our own frames decode") {
        assert_eq!((f.cmd, f.stream_id), (Cmd::Psh, 7));
        assert!(!f.data.is_empty() && f.data.len() <= max);
        data.extend_from_slice(&f.data);
    }
    assert!(out.is_empty());
    assert_eq!(data, input.stream);
});

struct Outcome {
    frames: Vec<Frame>,
    /// Bytes left undecoded at the end.
    pending: usize,
    error: Option<String>,
}

fn decode<'a>(decoder: &FrameDecoder, reads: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Decoded::Frame(f)) => {
                    assert_eq!(before - buf.len(), f.encoded_len());
                    assert!(f.cmd == Cmd::Psh || f.data.is_empty());
                    assert!(f.data.len() <= decoder.max_frame_size());
                    frames.push(f);
                }
                Ok(Decoded::Incomplete { needed }) => {
                    assert_eq!(buf.len(), before, "Incomplete consumes nothing");
                    assert!(needed > 0 && needed <= smux::HEADER_LEN + decoder.max_frame_size());
                    break;
                }
                Err(e) => {
                    assert_eq!(buf.len(), before, "an error consumes nothing");
                    return Outcome {
                        frames,
                        pending: buf.len(),
                        error: Some(e.to_string()),
                    };
                }
            }
        }
    }
    Outcome {
        frames,
        pending: buf.len(),
        error: None,
    }
}

/// Feeds the frames to a stream table the way the session task does, with a few streams open.
fn dispatch(frames: &[Frame]) {
    let shared = Shared::new(
        "fuzz".into(),
        smux::MAX_RECEIVE_BUFFER,
        Arc::new(Notify::new()),
    );
    let mut t = shared.lock();
    for id in [3, 5, 7] {
        t.insert(id, true);
    }
    let mut wakers = Wakers::default();
    for f in frames {
        match f.cmd {
            Cmd::Psh => {
                // A small budget, so the fuzzer also reaches the fail-a-stream path.
                let _ = t.deliver(f.stream_id, f.data.clone(), 64 * 1024, &mut wakers);
            }
            Cmd::Fin => t.remote_close(f.stream_id, None, &mut wakers),
            Cmd::Syn | Cmd::Nop => {}
        }
        let buffered: usize = t.streams.values().map(|s| s.recv_len).sum();
        assert_eq!(t.recv_buffered, buffered);
    }
    for id in [3, 5] {
        t.remove(id);
    }
    let buffered: usize = t.streams.values().map(|s| s.recv_len).sum();
    assert_eq!(t.recv_buffered, buffered);
    let mut out = BytesMut::new();
    t.take_mux(&mut out, usize::MAX, 16 * 1024, &mut wakers);
    drop(t);
    wakers.wake();
}

//! The compressed framing from the upstream ([`Decoder`]): any byte stream, zlib or zstd, cut into
//! reads of any sizes, must decode exactly as when it arrives in one read — the same packet-stream
//! bytes, the same frames (and sequence ids), the same error — never panic, and never yield more
//! than the frames' headers announced within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::mysql::proto::compress::{Algorithm, Decoder, Error, FrameHeader, Limits};
use rds_iam_proxy_fuzz::Chunked;

/// Small limits, so that the bound errors are reached too.
const LIMITS: Limits = Limits {
    max_compressed: 64 * 1024,
    max_uncompressed: 256 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let input = Chunked::parse(data);
    let Some((&selector, stream)) = input.stream.split_first() else {
        return;
    };
    let algorithm = if selector & 1 == 0 {
        Algorithm::Zlib
    } else {
        Algorithm::Zstd
    };
    let whole = decode(algorithm, std::iter::once(stream));
    let cut = Chunked {
        cuts: input.cuts.clone(),
        stream,
    };
    let chunked = decode(algorithm, cut.reads());
    assert_eq!(chunked, whole);

    let (out, frames, _) = &whole;
    let announced: usize = frames.iter().map(|f| f.plain_len()).sum();
    // Stored bytes of an unfinished frame pass through before it ends; nothing else does.
    assert!(out.len() >= announced);
    assert!(out.len() <= announced + LIMITS.max_uncompressed);
    for f in frames {
        assert!(f.compressed_len <= LIMITS.max_compressed);
        assert!(f.plain_len() <= LIMITS.max_uncompressed);
    }
});

/// The packet-stream bytes, the frames, and how the stream ended.
fn decode<'a>(
    algorithm: Algorithm,
    reads: impl Iterator<Item = &'a [u8]>,
) -> (Vec<u8>, Vec<FrameHeader>, Result<(), Error>) {
    let mut decoder = Decoder::new(algorithm, LIMITS);
    let mut out = Vec::new();
    let mut frames = Vec::new();
    for mut read in reads {
        while !read.is_empty() {
            match decoder.decode(read, &mut out) {
                Ok(progress) => {
                    assert!(progress.consumed <= read.len());
                    assert!(progress.consumed > 0 || progress.frame.is_some());
                    read = &read[progress.consumed..];
                    frames.extend(progress.frame);
                }
                Err(e) => {
                    assert_eq!(decoder.decode(b"x", &mut out), Err(Error::Failed));
                    return (out, frames, Err(e));
                }
            }
        }
    }
    let end = decoder.finish();
    assert_eq!(end.is_ok(), decoder.at_frame_boundary());
    (out, frames, end)
}

//! Compressed MySQL frames written and read independently of the proxy's codec (straight
//! `flate2` and `zstd` calls), for tests that play the server's side of a compressed leg, and a
//! reader for the proxy's compression metrics.

use std::io::{Read, Write};

/// The two protocol-compression algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Zlib,
    Zstd,
}

/// `data` compressed as one independent stream of `algo` (what `compress_packet` sends).
pub fn compress(algo: Algo, data: &[u8]) -> Vec<u8> {
    match algo {
        Algo::Zlib => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Algo::Zstd => zstd::bulk::compress(data, 3).unwrap(),
    }
}

/// `payload` inflated with `algo`, which must give exactly `len` bytes.
pub fn decompress(algo: Algo, payload: &[u8], len: usize) -> Vec<u8> {
    let out = match algo {
        Algo::Zlib => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(payload)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Algo::Zstd => zstd::bulk::decompress(payload, len).unwrap(),
    };
    assert_eq!(out.len(), len, "the frame's uncompressed length");
    out
}

/// A frame with header fields as given (they may lie) and `payload` as is.
pub fn raw_frame(
    seq: u8,
    compressed_len: usize,
    uncompressed_len: usize,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = (compressed_len as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(&(uncompressed_len as u32).to_le_bytes()[..3]);
    out.extend_from_slice(payload);
    out
}

/// `data` as one compressed frame.
pub fn compressed_frame(algo: Algo, seq: u8, data: &[u8]) -> Vec<u8> {
    let payload = compress(algo, data);
    raw_frame(seq, payload.len(), data.len(), &payload)
}

/// `data` as one stored (uncompressed) frame.
pub fn stored_frame(seq: u8, data: &[u8]) -> Vec<u8> {
    raw_frame(seq, data.len(), 0, data)
}

/// The 7-byte header's fields: compressed length, sequence id, uncompressed length.
pub fn parse_header(h: &[u8]) -> (usize, u8, usize) {
    let n = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize;
    (n(&h[0..3]), h[3], n(&h[4..7]))
}

/// Ordinary business rows as tab-separated text (ids, dates, e-mails, statuses, amounts, notes,
/// JSON), one per line, at least `len` bytes: what compresses the way real result sets do.
pub fn business_rows(len: usize) -> Vec<u8> {
    const STATUS: [&str; 4] = ["new", "paid", "shipped", "returned"];
    let mut out = Vec::with_capacity(len + 256);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{}\t2024-{:02}-{:02}\tcustomer{}@mail.example.com\t{}\t{}.{:02}\torder note {}\t\
                 {{\"sku\":\"A-{}\",\"qty\":{}}}\n",
                1_000_000 + i,
                1 + i % 12,
                1 + i % 28,
                i % 9973,
                STATUS[(i % 4) as usize],
                i * 37 % 10_000,
                i % 100,
                i % 211,
                i % 977,
                1 + i % 9
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}

/// Bytes that do not compress: MD5 digests of `seed` and a counter, end to end.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&Md5::digest(format!("{seed}:{i}")));
        i += 1;
    }
    out.truncate(len);
    out
}

/// The value of the `/metrics` series `name` whose labels include `labels`.
fn metric(page: &str, name: &str, labels: &str) -> u64 {
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {labels} in:\n{page}"))
}

/// The value of one `rds_iam_proxy_compression_bytes_total` series in a `/metrics` page.
pub fn compression_metric(page: &str, direction: &str, form: &str) -> u64 {
    let labels = format!("direction=\"{direction}\",form=\"{form}\"");
    metric(page, "rds_iam_proxy_compression_bytes_total", &labels)
}

/// The value of `rds_iam_proxy_compressed_logins_total` for `algorithm`.
pub fn compressed_logins(page: &str, algorithm: &str) -> u64 {
    let labels = format!("algorithm=\"{algorithm}\"");
    metric(page, "rds_iam_proxy_compressed_logins_total", &labels)
}

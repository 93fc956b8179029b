//! `cargo bench --bench compression`: what each MySQL compression level costs and carries, on
//! ordinary business rows (ids, dates, e-mails, statuses, amounts, notes, JSON, as text-protocol
//! row packets) and on random bytes, through the proxy's own codec (`mysql::proto::compress`).
//!
//! For each algorithm and level, and for 16 KiB frames (what a server's write buffer makes) and
//! 256 KiB frames (what the proxy makes of an upload), it prints the ratio, compress and
//! decompress speed (MB/s of packet stream, one core), CPU per MiB, and what one connection
//! carries over a ~1 MiB/s tunnel (the SSM agent's pacing) with compression overlapping the
//! sending: `min(compress speed, 1 MiB/s × ratio)`. The table is followed by the same figures as
//! JSON (also written to `target/bench-compression.json`). Nothing is asserted: the figures argue
//! the default levels (`DEFAULT_ZLIB_LEVEL`, `DEFAULT_ZSTD_LEVEL`; see docs/compression.md).
//!
//! `RDS_IAM_PROXY_BENCH_QUICK=1` uses 1 MiB of data instead of 16 MiB.

use std::time::Instant;

use rds_iam_proxy::mysql::proto::compress::{Algorithm, Decoder, Encoder, Limits, Sequence};

/// The tunnel the levels are chosen for: one SSM session, ~1 MiB/s.
const LINK_BYTES_PER_SEC: f64 = 1_048_576.0;

fn main() {
    let quick = std::env::var_os("RDS_IAM_PROXY_BENCH_QUICK").is_some();
    let len = if quick { 1 << 20 } else { 16 << 20 };
    let sets = [("rows", rows(len)), ("random", random(len))];
    let configs = [
        (Algorithm::Zlib, 1),
        (Algorithm::Zlib, 2),
        (Algorithm::Zlib, 3),
        (Algorithm::Zlib, 6),
        (Algorithm::Zstd, 1),
        (Algorithm::Zstd, 3),
        (Algorithm::Zstd, 6),
    ];
    println!(
        "{:<7} {:<7} {:>6} {:>6} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "data",
        "codec",
        "frame",
        "ratio",
        "comp MB/s",
        "dec MB/s",
        "comp ms",
        "dec ms",
        "1MiB/s link"
    );
    println!(
        "{:<7} {:<7} {:>6} {:>6} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "", "", "", "", "", "", "per MiB", "per MiB", "MB/s"
    );
    let mut json = Vec::new();
    for (data_name, data) in &sets {
        for frame in [16 << 10, 256 << 10] {
            for (algorithm, level) in configs {
                let m = measure(data, algorithm, level, frame);
                println!(
                    "{:<7} {:<7} {:>5}K {:>6.2} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>12.2}",
                    data_name,
                    format!("{algorithm}-{level}"),
                    frame >> 10,
                    m.ratio,
                    m.compress_mb_s,
                    m.decompress_mb_s,
                    m.compress_ms_per_mib,
                    m.decompress_ms_per_mib,
                    m.link_mb_s
                );
                json.push(format!(
                    "{{\"data\":\"{data_name}\",\"algorithm\":\"{algorithm}\",\"level\":{level},\"frame\":{frame},\"ratio\":{:.3},\"compress_mb_s\":{:.1},\"decompress_mb_s\":{:.1},\"compress_ms_per_mib\":{:.3},\"decompress_ms_per_mib\":{:.3},\"link_1mib_s_mb_s\":{:.3}}}",
                    m.ratio,
                    m.compress_mb_s,
                    m.decompress_mb_s,
                    m.compress_ms_per_mib,
                    m.decompress_ms_per_mib,
                    m.link_mb_s
                ));
            }
        }
    }
    let json = format!("[\n  {}\n]\n", json.join(",\n  "));
    println!("{json}");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-compression.json");
    if let Err(e) = std::fs::write(&path, &json) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

struct Measurement {
    ratio: f64,
    compress_mb_s: f64,
    decompress_mb_s: f64,
    compress_ms_per_mib: f64,
    decompress_ms_per_mib: f64,
    link_mb_s: f64,
}

fn measure(data: &[u8], algorithm: Algorithm, level: i32, frame: usize) -> Measurement {
    let mut encoder = Encoder::new(algorithm, level).max_frame(frame);
    let mut wire = Vec::with_capacity(data.len() + data.len() / 100);
    let started = Instant::now();
    // One write per frame, as the splice would hand over its reads.
    for chunk in data.chunks(frame) {
        let mut seq = Sequence::default();
        encoder
            .encode(chunk, &mut seq, &mut wire)
            .expect("the encoder does not fail");
    }
    let compress = started.elapsed().as_secs_f64();

    let mut decoder = Decoder::new(algorithm, Limits::default());
    let mut out = Vec::with_capacity(data.len());
    let started = Instant::now();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let progress = decoder
            .decode(rest, &mut out)
            .expect("our own frames decode");
        rest = &rest[progress.consumed..];
    }
    let decompress = started.elapsed().as_secs_f64();
    assert!(out == data, "round trip");

    let mb = data.len() as f64 / 1e6;
    let mib = data.len() as f64 / 1_048_576.0;
    let ratio = data.len() as f64 / wire.len() as f64;
    let compress_mb_s = mb / compress;
    Measurement {
        ratio,
        compress_mb_s,
        decompress_mb_s: mb / decompress,
        compress_ms_per_mib: compress * 1e3 / mib,
        decompress_ms_per_mib: decompress * 1e3 / mib,
        link_mb_s: compress_mb_s.min(LINK_BYTES_PER_SEC * ratio / 1e6),
    }
}

/// A small deterministic generator (xorshift), so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Text-protocol row packets of an orders table, `len` bytes of stream.
fn rows(len: usize) -> Vec<u8> {
    const FIRST: &[&str] = &[
        "anna", "ben", "carla", "dmitri", "eva", "farid", "grace", "hugo", "ines", "jonas", "kim",
        "lena", "marco", "nina", "omar", "petra",
    ];
    const LAST: &[&str] = &[
        "smith", "mueller", "rossi", "garcia", "dubois", "kowalski", "nakamura", "larsen", "silva",
        "novak", "ivanova", "okafor",
    ];
    const DOMAINS: &[&str] = &["example.com", "mail.example.org", "corp.example.net"];
    const STATUSES: &[&str] = &[
        "active",
        "pending",
        "shipped",
        "cancelled",
        "refunded",
        "on_hold",
    ];
    const WORDS: &[&str] = &[
        "customer",
        "asked",
        "for",
        "delivery",
        "before",
        "friday",
        "invoice",
        "sent",
        "again",
        "address",
        "changed",
        "call",
        "back",
        "discount",
        "applied",
        "order",
        "split",
        "into",
        "two",
        "parcels",
        "gift",
        "wrap",
        "requested",
        "payment",
        "failed",
        "retry",
        "tomorrow",
        "the",
        "a",
        "and",
        "please",
        "note",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(len + 512);
    let mut id = 1_000_000u64;
    let mut seq = 1u8;
    while out.len() < len {
        let words = 3 + rng.below(10);
        let note: Vec<&str> = (0..words).map(|_| rng.pick(WORDS)).collect();
        let fields = [
            id.to_string(),
            format!(
                "2024-{:02}-{:02} {:02}:{:02}:{:02}",
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            format!(
                "{}.{}{}@{}",
                rng.pick(FIRST),
                rng.pick(LAST),
                rng.below(100),
                rng.pick(DOMAINS)
            ),
            rng.pick(STATUSES).to_owned(),
            format!("{}.{:02}", rng.below(5000), rng.below(100)),
            note.join(" "),
            format!(
                "{{\"sku\":\"SKU-{:05}\",\"qty\":{},\"gift\":{},\"tags\":[\"{}\",\"{}\"]}}",
                rng.below(100_000),
                1 + rng.below(9),
                rng.below(2) == 0,
                rng.pick(STATUSES),
                rng.pick(WORDS)
            ),
        ];
        let mut payload = Vec::new();
        for field in &fields {
            payload.push(field.len() as u8); // every field is under 251 bytes
            payload.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&payload);
        seq = seq.wrapping_add(1);
        id += 1 + rng.below(3);
    }
    out.truncate(len);
    out
}

fn random(len: usize) -> Vec<u8> {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    (0..len).map(|_| rng.next() as u8).collect()
}

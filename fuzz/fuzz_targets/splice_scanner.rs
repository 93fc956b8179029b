//! The splice's client → upstream command framing ([`CommandScanner`]): any byte stream, cut into
//! reads of any sizes, must be framed the same way as when it arrives in one read or byte by
//! byte — the same bytes forwarded, the same COM_CHANGE_USER packets taken out, the same error —
//! and every byte must be accounted for exactly once, in order.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::mysql::proto::ComChangeUser;
use rds_iam_proxy::mysql::proto::packet::{HEADER_LEN, peek_header};
use rds_iam_proxy::mysql::proto::scanner::{CommandScanner, Step};
use rds_iam_proxy_fuzz::Chunked;

/// Longest stream also fed one byte per read (quadratic in the worst case).
const BYTEWISE_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let input = Chunked::parse(data);
    let stream = input.stream;
    let whole = scan(std::iter::once(stream));

    // Every byte once, in order: forwarded runs, change-user packets, then what is still waiting.
    let mut replay: Vec<u8> = whole
        .events
        .iter()
        .flat_map(Event::bytes)
        .copied()
        .collect();
    replay.extend_from_slice(&whole.pending);
    assert_eq!(replay, stream);

    let chunked = scan(input.reads());
    same_framing(&whole, &chunked);
    if stream.len() <= BYTEWISE_MAX {
        same_framing(&whole, &scan(stream.chunks(1)));
    }
});

#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Consecutive forwarded bytes (runs of `Step::Forward` merged).
    Forward(Vec<u8>),
    /// A COM_CHANGE_USER packet, header included.
    ChangeUser(Vec<u8>),
}

impl Event {
    fn bytes(&self) -> &[u8] {
        match self {
            Event::Forward(b) | Event::ChangeUser(b) => b,
        }
    }
}

#[derive(Debug)]
struct Outcome {
    events: Vec<Event>,
    /// Bytes received but neither forwarded nor taken.
    pending: Vec<u8>,
    /// The error that ended the scan, if any.
    error: Option<String>,
    /// The scanner's COM_QUIT flag at the end.
    quit: bool,
}

/// Drives a scanner as `splice::client_to_upstream` does: append a read, step until `NeedMore`.
fn scan<'a>(reads: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut scanner = CommandScanner::default();
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match scanner.step(&buf) {
                Ok(Step::Forward(n)) => {
                    assert!(n > 0 && n <= buf.len(), "Forward({n}) of {}", buf.len());
                    let bytes = buf.split_to(n);
                    match events.last_mut() {
                        Some(Event::Forward(run)) => run.extend_from_slice(&bytes),
                        _ => events.push(Event::Forward(bytes.to_vec())),
                    }
                }
                Ok(Step::ChangeUser(n)) => {
                    assert!(n <= buf.len(), "ChangeUser({n}) of {}", buf.len());
                    let packet = buf.split_to(n);
                    let (len, seq) = peek_header(&packet).expect("a whole packet has a header");
                    assert_eq!((len + HEADER_LEN, seq), (n, 0));
                    assert_eq!(packet.get(HEADER_LEN), Some(&ComChangeUser::COMMAND));
                    events.push(Event::ChangeUser(packet.to_vec()));
                }
                Ok(Step::NeedMore) => break,
                Err(e) => {
                    return Outcome {
                        events,
                        pending: buf.to_vec(),
                        error: Some(e.to_string()),
                        quit: scanner.quit,
                    };
                }
            }
        }
    }
    Outcome {
        events,
        pending: buf.to_vec(),
        error: None,
        quit: scanner.quit,
    }
}

/// `other` (the same stream in other reads) framed exactly like `whole`.
fn same_framing(whole: &Outcome, other: &Outcome) {
    assert_eq!(other.events, whole.events);
    assert_eq!(other.error, whole.error);
    assert_eq!(other.quit, whole.quit);
    if whole.error.is_some() {
        // Reading stopped at the error: only part of what `whole` held had arrived.
        assert!(whole.pending.starts_with(&other.pending));
    } else {
        assert_eq!(other.pending, whole.pending);
    }
}

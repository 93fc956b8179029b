//! The health endpoint's request parser ([`parse_request`]): any bytes, fed as they would arrive
//! (growing prefixes), must parse without panicking; a request is only ever found in a complete
//! head within the bound, its path starts with `/` and is printable ASCII without a query; once
//! an answer (request or refusal) is reached, more bytes never change it; and past the bound
//! nothing is incomplete any more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::health::{MAX_REQUEST, Parsed, parse_request};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(2 * MAX_REQUEST)];
    let mut first_answer: Option<(usize, Parsed<'_>)> = None;
    // Prefixes at a few cut points (every byte would be quadratic on long inputs).
    let step = (data.len() / 64).max(1);
    let cuts = (0..data.len())
        .step_by(step)
        .chain(std::iter::once(data.len()));
    for cut in cuts {
        let parsed = parse_request(&data[..cut]);
        match &parsed {
            Parsed::Incomplete => {
                assert!(cut < MAX_REQUEST, "incomplete past the bound");
                assert!(first_answer.is_none(), "an answer was taken back");
            }
            Parsed::Request { path, .. } => {
                assert!(path.starts_with('/'));
                assert!(path.bytes().all(|b| b.is_ascii_graphic() && b != b'?'));
                let end = data[..cut].windows(4).position(|w| w == b"\r\n\r\n");
                assert!(
                    end.is_some_and(|e| e + 4 <= MAX_REQUEST),
                    "request without its head"
                );
            }
            Parsed::Reject(status, _) => assert!(matches!(status, 400 | 405 | 431)),
        }
        if !matches!(parsed, Parsed::Incomplete) {
            match &first_answer {
                None => first_answer = Some((cut, parsed)),
                Some((_, first)) => assert_eq!(first, &parsed, "more bytes changed the answer"),
            }
        }
    }
});

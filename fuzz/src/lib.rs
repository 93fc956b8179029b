//! What the fuzz targets share: how one fuzzer input is cut into the reads a socket would deliver,
//! and the input layouts the seed program (`examples/seed_corpus.rs`) writes.
//!
//! Layout of a "chunked stream" input: byte 0 says how many cut bytes follow (its low 4 bits,
//! 0..=15); each cut byte is the length of one read (0 counts as 1), used in turn and repeated;
//! everything after is the stream. With no cut bytes the stream arrives in one read.

/// Cut sizes and the stream of a chunked-stream input.
pub struct Chunked<'a> {
    /// Read sizes, used cyclically; never empty, never zero.
    pub cuts: Vec<usize>,
    /// The bytes the peer sends.
    pub stream: &'a [u8],
}

impl<'a> Chunked<'a> {
    /// Reads the layout described in the crate doc.
    pub fn parse(data: &'a [u8]) -> Self {
        let Some((&n, rest)) = data.split_first() else {
            return Self {
                cuts: vec![usize::MAX],
                stream: &[],
            };
        };
        let n = usize::from(n & 0x0f).min(rest.len());
        let (cuts, stream) = rest.split_at(n);
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c).max(1)).collect();
        if cuts.is_empty() {
            cuts.push(usize::MAX);
        }
        Self { cuts, stream }
    }

    /// The stream as successive reads.
    pub fn reads(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let mut rest = self.stream;
        let mut cut = self.cuts.iter().cycle();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let n = (*cut.next()?).min(rest.len());
            let (read, after) = rest.split_at(n);
            rest = after;
            Some(read)
        })
    }

    /// Writes the layout: the inverse of [`Self::parse`] (for the seed program).
    pub fn encode(cuts: &[u8], stream: &[u8]) -> Vec<u8> {
        assert!(cuts.len() < 16, "at most 15 cut sizes");
        let mut out = vec![cuts.len() as u8];
        out.extend_from_slice(cuts);
        out.extend_from_slice(stream);
        out
    }
}

/// A cursor handing out fuzzer bytes, zero once they run out, so a short input still drives a
/// whole scenario.
pub struct Cursor<'a> {
    /// The rest of the input.
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Starts at the beginning of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// True when every byte was taken.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(std::array::from_fn(|_| self.u8()))
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (out, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        out
    }
}

//! Bytes held for a client that stopped reading: memory first, then an unlinked temporary file
//! encrypted with a key that exists only in this process (DESIGN.md decision 11).
//!
//! Over SSM many connections share one session and smux v1 has no per-stream window, so the proxy
//! must keep taking every stream's bytes off the session whatever its client does. A connection
//! whose client pauses (a `mysql --quick … | less`, a suspended CLI, a slow cursor) parks what it
//! cannot deliver in its [`Spool`]: up to [`SpoolLimits::memory`] in memory, the rest on disk up to
//! [`SpoolLimits::disk`], both also capped for the whole process ([`SpoolBudget`]). Past the bound
//! [`Spool::push`] refuses and the caller ends that one connection with an error that says why.
//!
//! What rests on disk is query results, so it never rests there in clear: the file is created
//! already unlinked (`O_TMPFILE` where the kernel has it, else created `0600` and removed at once),
//! so it vanishes with the process on every exit path, and each chunk is sealed with AES-256-GCM
//! under a random key and a counter nonce, both held only in memory. Tampering with the file is
//! detected when the chunk is read back.
//!
//! This module owns the bytes and their bounds only; where packets begin, and what error the client
//! gets, is the engine's business (see `mysql::splice`).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use bytes::{Bytes, BytesMut};

/// Plaintext bytes sealed into one chunk on disk.
const CHUNK: usize = 64 * 1024;

/// Bytes of the length prefix of each sealed chunk.
const PREFIX: usize = 4;

/// Bytes of the AES-GCM tag after each sealed chunk.
const TAG: usize = 16;

/// Per-connection and process-wide bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes one connection may hold in memory.
    pub memory: usize,
    /// Bytes one connection may hold on disk beyond its memory.
    pub disk: u64,
    /// Bytes all connections together may hold in memory.
    pub total_memory: usize,
    /// Bytes all connections together may hold on disk.
    pub total_disk: u64,
}

impl SpoolLimits {
    /// 8 MiB in memory and 1 GiB on disk per connection; 256 MiB and 16 GiB for the process.
    pub const DEFAULT: SpoolLimits = SpoolLimits {
        memory: 8 << 20,
        disk: 1 << 30,
        total_memory: 256 << 20,
        total_disk: 16 << 30,
    };

    /// Most bytes one connection may hold.
    pub fn per_connection(&self) -> u64 {
        self.memory as u64 + self.disk
    }
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The process-wide account of spooled bytes, shared by every [`Spool`], and its counters.
#[derive(Debug)]
pub struct SpoolBudget {
    /// The bounds.
    pub limits: SpoolLimits,
    /// Where spool files are created (the system's temporary directory by default).
    pub dir: PathBuf,
    /// Bytes held in memory now, across connections.
    memory: AtomicUsize,
    /// Bytes held on disk now, across connections.
    disk: AtomicU64,
    /// Bytes ever written to spool files (a metric).
    pub spooled_to_disk: AtomicU64,
    /// Connections that ever parked bytes on disk (a metric).
    pub spilled_connections: AtomicU64,
    /// Connections refused more bytes at a bound (a metric).
    pub overflows: AtomicU64,
}

impl SpoolBudget {
    /// A budget with `limits`, spooling into `dir`.
    pub fn new(limits: SpoolLimits, dir: PathBuf) -> Self {
        Self {
            limits,
            dir,
            memory: AtomicUsize::new(0),
            disk: AtomicU64::new(0),
            spooled_to_disk: AtomicU64::new(0),
            spilled_connections: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
        }
    }

    /// Bytes held in memory now, across connections.
    pub fn memory_in_use(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    /// Bytes held on disk now, across connections.
    pub fn disk_in_use(&self) -> u64 {
        self.disk.load(Ordering::Relaxed)
    }

    fn take_memory(&self, n: usize) -> bool {
        self.memory
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.limits.total_memory).then_some(used + n)
            })
            .is_ok()
    }

    fn take_disk(&self, n: u64) -> bool {
        self.disk
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.limits.total_disk).then_some(used + n)
            })
            .is_ok()
    }
}

impl Default for SpoolBudget {
    fn default() -> Self {
        Self::new(SpoolLimits::DEFAULT, std::env::temp_dir())
    }
}

/// Why a spool refused bytes or could not give them back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This connection's bounds are reached.
    #[error(
        "{held} bytes are already held for this connection, the most allowed ({memory} in memory + {disk} on disk)"
    )]
    ConnectionFull {
        /// Bytes held.
        held: u64,
        /// The per-connection memory bound.
        memory: usize,
        /// The per-connection disk bound.
        disk: u64,
    },
    /// The process-wide disk bound is reached.
    #[error("the spool of all connections together is full ({total_disk} bytes on disk)")]
    ProcessFull {
        /// The process-wide disk bound.
        total_disk: u64,
    },
    /// The spool file could not be created, written or read.
    #[error("the spool file in {dir}: {source}")]
    Io {
        /// The spool directory.
        dir: String,
        /// What the OS said.
        source: io::Error,
    },
    /// A chunk read back did not decrypt: the file was changed under us.
    #[error("a spooled chunk failed authentication: the spool file was modified")]
    Tampered,
}

/// The on-disk middle of a spool: sealed chunks between `read_at` and `write_at`.
struct Disk {
    /// The unlinked file.
    file: File,
    /// The key, random per spool, never leaves memory.
    key: LessSafeKey,
    /// Nonce counter of the next chunk sealed.
    sealed: u64,
    /// Nonce counter of the next chunk opened.
    opened: u64,
    /// File offset of the next chunk to write.
    write_at: u64,
    /// File offset of the next chunk to read.
    read_at: u64,
    /// Plaintext bytes in the file not yet read back.
    plain: u64,
    /// Encoded bytes counted against the process budget.
    accounted: u64,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("write_at", &self.write_at)
            .field("read_at", &self.read_at)
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 8..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Disk {
    fn create(budget: &SpoolBudget) -> Result<Self, Error> {
        let io_err = |source| Error::Io {
            dir: budget.dir.display().to_string(),
            source,
        };
        let file = unlinked_file(&budget.dir).map_err(io_err)?;
        let mut raw = [0u8; 32];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| io_err(io::Error::other("no randomness")))?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).expect("a 32-byte AES-256 key");
        raw.fill(0);
        Ok(Self {
            file,
            key: LessSafeKey::new(key),
            sealed: 0,
            opened: 0,
            write_at: 0,
            read_at: 0,
            plain: 0,
            accounted: 0,
        })
    }

    /// Seals `plain` and appends it.
    fn write(&mut self, plain: &[u8]) -> io::Result<u64> {
        let mut sealed = Vec::with_capacity(PREFIX + plain.len() + TAG);
        sealed.extend_from_slice(&(plain.len() as u32).to_be_bytes());
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(nonce(self.sealed), Aad::empty(), &mut body)
            .map_err(|_| io::Error::other("sealing failed"))?;
        sealed.extend_from_slice(&body);
        self.file.write_all_at(&sealed, self.write_at)?;
        self.sealed += 1;
        self.write_at += sealed.len() as u64;
        self.plain += plain.len() as u64;
        Ok(sealed.len() as u64)
    }

    /// Reads back and opens the next chunk; `Ok(None)` when the file holds nothing unread.
    fn read(&mut self) -> Result<Option<Bytes>, io::Error> {
        if self.read_at >= self.write_at {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX];
        self.file.read_exact_at(&mut prefix, self.read_at)?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > CHUNK {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk length"));
        }
        let mut body = vec![0u8; len + TAG];
        self.file
            .read_exact_at(&mut body, self.read_at + PREFIX as u64)?;
        let plain = self
            .key
            .open_in_place(nonce(self.opened), Aad::empty(), &mut body)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "tampered"))?
            .len();
        body.truncate(plain);
        self.opened += 1;
        self.read_at += (PREFIX + len + TAG) as u64;
        self.plain -= plain as u64;
        Ok(Some(Bytes::from(body)))
    }
}

/// A file in `dir` that has no name: on Linux `O_TMPFILE`; elsewhere (or where the file system
/// lacks it) a `0600` file with a random name, removed before it is used.
fn unlinked_file(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(target_os = "linux")]
    {
        let r = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir);
        match r {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            Err(e) => return Err(e),
        }
    }
    let name = dir.join(format!(
        ".rds-iam-proxy-spool-{:016x}",
        rand::random::<u64>()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(f)
}

/// One connection's undelivered bytes, in order: `head` (memory, delivered first), then the sealed
/// chunks on disk, then `tail` (memory, waiting to fill a chunk).
#[derive(Debug)]
pub struct Spool {
    /// The process-wide account.
    budget: Arc<SpoolBudget>,
    /// Bytes to deliver first.
    head: VecDeque<Bytes>,
    /// Bytes in `head`.
    head_len: usize,
    /// The sealed middle, once anything went to disk.
    disk: Option<Disk>,
    /// Bytes after the disk part, sealed when a chunk is full.
    tail: BytesMut,
    /// Memory counted against the process budget (`head_len + tail.len()`).
    memory: usize,
    /// Bytes that may be delivered before the spool reads as empty, once capped.
    deliverable: Option<u64>,
    /// Bytes handed out so far.
    delivered: u64,
}

impl Spool {
    /// An empty spool accounted in `budget`.
    pub fn new(budget: Arc<SpoolBudget>) -> Self {
        Self {
            budget,
            head: VecDeque::new(),
            head_len: 0,
            disk: None,
            tail: BytesMut::new(),
            memory: 0,
            deliverable: None,
            delivered: 0,
        }
    }

    /// Bytes held, in memory and on disk.
    pub fn len(&self) -> u64 {
        self.memory as u64 + self.disk.as_ref().map_or(0, |d| d.plain) + self.tail.len() as u64
    }

    /// Whether nothing (more) can be delivered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 || self.deliverable.is_some_and(|cap| self.delivered >= cap)
    }

    /// Bytes held on disk now.
    pub fn on_disk(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.plain)
    }

    /// Appends `data`, in memory while this connection's and the process's memory bounds allow,
    /// else on disk; refuses (keeping nothing of `data`) past the disk bounds.
    pub fn push(&mut self, data: Bytes) -> Result<(), Error> {
        let n = data.len();
        if n == 0 {
            return Ok(());
        }
        let limits = self.budget.limits;
        let held = self.len();
        if held + n as u64 > limits.per_connection() {
            return Err(self.refuse(Error::ConnectionFull {
                held,
                memory: limits.memory,
                disk: limits.disk,
            }));
        }
        let on_disk = self.disk.as_ref().is_some_and(|d| d.plain > 0) || !self.tail.is_empty();
        if !on_disk && self.memory + n <= limits.memory && self.budget.take_memory(n) {
            self.memory += n;
            self.head_len += n;
            self.head.push_back(data);
            return Ok(());
        }
        // Past memory: everything after this point goes through the tail, in order.
        if self.disk.is_none() {
            self.disk = Some(Disk::create(&self.budget)?);
            self.budget
                .spilled_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = (CHUNK - self.tail.len()).min(rest.len());
            self.tail.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.tail.len() == CHUNK {
                self.seal_tail()?;
            }
        }
        Ok(())
    }

    fn refuse(&self, e: Error) -> Error {
        self.budget.overflows.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Writes the tail as one sealed chunk.
    fn seal_tail(&mut self) -> Result<(), Error> {
        let encoded = (PREFIX + self.tail.len() + TAG) as u64;
        if !self.budget.take_disk(encoded) {
            return Err(self.refuse(Error::ProcessFull {
                total_disk: self.budget.limits.total_disk,
            }));
        }
        let dir = self.budget.dir.display().to_string();
        let disk = self.disk.as_mut().expect("created before the tail fills");
        disk.accounted += encoded;
        disk.write(&self.tail)
            .map_err(|source| Error::Io { dir, source })?;
        self.budget
            .spooled_to_disk
            .fetch_add(self.tail.len() as u64, Ordering::Relaxed);
        self.tail.clear();
        Ok(())
    }

    /// The next bytes to deliver (empty when there are none), reading a chunk back from disk when
    /// memory has run dry. Hand [`Self::consume`] how many were delivered.
    pub fn front(&mut self) -> Result<Bytes, Error> {
        if self.head.is_empty() {
            self.refill()?;
        }
        let Some(front) = self.head.front() else {
            return Ok(Bytes::new());
        };
        Ok(match self.deliverable {
            Some(cap) => {
                let left = cap.saturating_sub(self.delivered);
                front.slice(..front.len().min(usize::try_from(left).unwrap_or(usize::MAX)))
            }
            None => front.clone(),
        })
    }

    fn refill(&mut self) -> Result<(), Error> {
        let dir = || self.budget.dir.display().to_string();
        if let Some(disk) = self.disk.as_mut() {
            match disk.read() {
                Ok(Some(chunk)) => {
                    // A chunk back from disk is memory again for as long as it waits.
                    self.budget.memory.fetch_add(chunk.len(), Ordering::AcqRel);
                    self.memory += chunk.len();
                    self.head_len += chunk.len();
                    self.head.push_back(chunk);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(Error::Tampered),
                Err(source) => return Err(Error::Io { dir: dir(), source }),
            }
            // The file is drained: start it over, give its space back.
            let _ = disk.file.set_len(0);
            self.budget.disk.fetch_sub(disk.accounted, Ordering::AcqRel);
            disk.accounted = 0;
            disk.write_at = 0;
            disk.read_at = 0;
        }
        if !self.tail.is_empty() {
            let tail = self.tail.split().freeze();
            self.budget.memory.fetch_add(tail.len(), Ordering::AcqRel);
            self.memory += tail.len();
            self.head_len += tail.len();
            self.head.push_back(tail);
        }
        Ok(())
    }

    /// `n` bytes of [`Self::front`] were delivered.
    pub fn consume(&mut self, mut n: usize) {
        self.delivered += n as u64;
        while n > 0 {
            let Some(front) = self.head.front_mut() else {
                break;
            };
            let k = n.min(front.len());
            if k == front.len() {
                self.head.pop_front();
            } else {
                let _ = front.split_to(k);
            }
            n -= k;
            self.head_len -= k;
            self.memory -= k;
            self.budget.memory.fetch_sub(k, Ordering::AcqRel);
        }
    }

    /// From now on deliver only the first `total` bytes ever pushed (counted from the start of the
    /// spool's life); the rest is discarded as it comes up.
    pub fn cap_delivery(&mut self, total: u64) {
        self.deliverable = Some(total.max(self.delivered));
    }

    /// Bytes handed out over the spool's life.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.budget.memory.fetch_sub(self.memory, Ordering::AcqRel);
        if let Some(d) = &self.disk {
            self.budget.disk.fetch_sub(d.accounted, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(memory: usize, disk: u64) -> Arc<SpoolBudget> {
        Arc::new(SpoolBudget::new(
            SpoolLimits {
                memory,
                disk,
                total_memory: 1 << 30,
                total_disk: 1 << 40,
            },
            std::env::temp_dir(),
        ))
    }

    fn drain(s: &mut Spool, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let f = s.front().unwrap();
            if f.is_empty() {
                break;
            }
            let n = f.len().min(step);
            out.extend_from_slice(&f[..n]);
            s.consume(n);
        }
        out
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn memory_then_disk_then_memory_again_in_order() {
        let b = budget(100_000, 10 << 20);
        let mut s = Spool::new(b.clone());
        let mut want = Vec::new();
        for i in 0..40u8 {
            let d = data(30_000 + i as usize, i);
            want.extend_from_slice(&d);
            s.push(Bytes::from(d)).unwrap();
        }
        assert!(s.on_disk() > 0);
        assert!(b.memory_in_use() <= 100_000 + CHUNK);
        // Read half, push more while the disk part drains, read the rest.
        let mut got = Vec::new();
        while got.len() < want.len() / 2 {
            let f = s.front().unwrap();
            let n = f.len().min(7_000);
            got.extend_from_slice(&f[..n]);
            s.consume(n);
        }
        for i in 40..50u8 {
            let d = data(1_000, i);
            want.extend_from_slice(&d);
            s.push(Bytes::from(d)).unwrap();
        }
        got.extend(drain(&mut s, 5_000));
        assert_eq!(got, want);
        assert_eq!(s.len(), 0);
        drop(s);
        assert_eq!(b.memory_in_use(), 0);
        assert_eq!(b.disk_in_use(), 0);
    }

    #[test]
    fn refuses_past_the_connection_bound_and_keeps_what_it_had() {
        let b = budget(1_000, 200_000);
        let mut s = Spool::new(b.clone());
        s.push(Bytes::from(data(150_000, 1))).unwrap();
        let e = s.push(Bytes::from(data(60_000, 2))).unwrap_err();
        assert!(matches!(e, Error::ConnectionFull { .. }), "{e}");
        assert_eq!(b.overflows.load(Ordering::Relaxed), 1);
        assert_eq!(drain(&mut s, 4096), data(150_000, 1));
    }

    #[test]
    fn process_wide_disk_bound_applies() {
        let b = Arc::new(SpoolBudget::new(
            SpoolLimits {
                memory: 0,
                disk: 1 << 30,
                total_memory: 0,
                total_disk: 100_000,
            },
            std::env::temp_dir(),
        ));
        let mut s = Spool::new(b.clone());
        s.push(Bytes::from(data(CHUNK, 1))).unwrap();
        let e = s.push(Bytes::from(data(CHUNK, 2))).unwrap_err();
        assert!(matches!(e, Error::ProcessFull { .. }), "{e}");
    }

    #[test]
    fn disk_holds_no_plaintext_and_detects_tampering() {
        let b = budget(0, 10 << 20);
        let mut s = Spool::new(b);
        let secret = b"SELECT-RESULT-ROW:credit-card=4111111111111111;".repeat(3000);
        s.push(Bytes::from(secret.clone())).unwrap();
        let disk = s.disk.as_ref().unwrap();
        let mut raw = vec![0u8; disk.write_at as usize];
        disk.file.read_exact_at(&mut raw, 0).unwrap();
        assert!(
            !raw.windows(17).any(|w| w == b"credit-card=41111"),
            "plaintext on disk"
        );
        // Flip one byte of the first sealed chunk: reading it back fails.
        let mut byte = [0u8; 1];
        disk.file.read_exact_at(&mut byte, 10).unwrap();
        disk.file.write_all_at(&[byte[0] ^ 1], 10).unwrap();
        assert!(matches!(s.front(), Err(Error::Tampered)));
    }

    #[test]
    fn capped_delivery_stops_at_the_cap() {
        let b = budget(1 << 20, 0);
        let mut s = Spool::new(b);
        s.push(Bytes::from(data(1000, 1))).unwrap();
        s.push(Bytes::from(data(1000, 2))).unwrap();
        let f = s.front().unwrap();
        s.consume(f.len().min(300));
        s.cap_delivery(1500);
        let rest = drain(&mut s, 10_000);
        assert_eq!(rest.len(), 1200);
        assert!(s.is_empty());
    }

    #[test]
    fn the_file_has_no_name() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", rand::random::<u32>()));
        std::fs::create_dir(&dir).unwrap();
        let f = unlinked_file(&dir).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        drop(f);
        std::fs::remove_dir(&dir).unwrap();
    }
}

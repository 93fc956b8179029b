//! Per-peer throttle of wrong local passwords (`--local-password`).
//!
//! Each wrong password from a peer (a TCP client's IP address, a Unix-socket client's user id)
//! locks that peer out for a delay that doubles with every consecutive failure, from
//! [`FIRST_DELAY`] up to [`MAX_DELAY`]. While locked out, a login from that peer is refused before
//! its password is even checked, so opening many connections at once does not multiply the
//! guessing rate. A correct password clears the peer's record. The table is bounded: past
//! [`MAX_PEERS`] entries, records whose lockout ended long ago are dropped first, then the oldest.
//!
//! Sans-IO: the caller passes "now", so tests need no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Peer;

/// The lockout after the first wrong password.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// The longest lockout.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Most peers remembered at once.
pub const MAX_PEERS: usize = 4096;

/// A record is forgotten this long after its lockout ended (the next failure starts over).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Who a failure is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A TCP client's address (its port changes with every connection).
    Ip(IpAddr),
    /// A Unix-socket client's user id (`None` when the kernel did not say).
    Uid(Option<u32>),
}

impl From<&Peer> for PeerKey {
    fn from(p: &Peer) -> Self {
        match p {
            Peer::Tcp(a) => PeerKey::Ip(a.ip().to_canonical()),
            Peer::Unix { uid, .. } => PeerKey::Uid(*uid),
        }
    }
}

/// One peer's consecutive failures.
#[derive(Clone, Copy, Debug)]
struct Record {
    /// Wrong passwords in a row.
    failures: u32,
    /// No password is checked for this peer before this instant.
    locked_until: Instant,
}

/// Wrong local passwords per peer, and the lockouts they earn.
#[derive(Debug, Default)]
pub struct PasswordThrottle {
    /// Records by peer.
    peers: Mutex<HashMap<PeerKey, Record>>,
}

impl PasswordThrottle {
    /// How long `peer` is still locked out at `now` (`None`: its password may be checked).
    pub fn locked_out(&self, peer: &PeerKey, now: Instant) -> Option<Duration> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let left = peers.get(peer)?.locked_until.checked_duration_since(now)?;
        (!left.is_zero()).then_some(left)
    }

    /// `peer` sent a wrong password at `now`; returns the lockout it earned.
    pub fn failed(&self, peer: PeerKey, now: Instant) -> Duration {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, r| now.saturating_duration_since(r.locked_until) < FORGET_AFTER);
            if peers.len() >= MAX_PEERS
                && let Some(oldest) = peers
                    .iter()
                    .min_by_key(|(_, r)| r.locked_until)
                    .map(|(k, _)| k.clone())
            {
                peers.remove(&oldest);
            }
        }
        let record = peers.entry(peer).or_insert(Record {
            failures: 0,
            locked_until: now,
        });
        if now.saturating_duration_since(record.locked_until) >= FORGET_AFTER {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        let delay = delay_after(record.failures);
        record.locked_until = now + delay;
        delay
    }

    /// `peer` logged in with the right password: its record goes.
    pub fn succeeded(&self, peer: &PeerKey) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }
}

/// The lockout after `failures` wrong passwords in a row: 1 s, 2 s, 4 s, … up to [`MAX_DELAY`].
pub fn delay_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_DELAY * (1u32 << doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> PeerKey {
        PeerKey::Ip(s.parse().unwrap())
    }

    #[test]
    fn lockouts_double_per_failure_up_to_the_cap_and_a_success_clears_them() {
        let t = PasswordThrottle::default();
        let now = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(t.locked_out(&a, now), None);
        assert_eq!(t.failed(a.clone(), now), Duration::from_secs(1));
        assert_eq!(t.locked_out(&a, now), Some(Duration::from_secs(1)));
        assert_eq!(
            t.locked_out(&ip("10.0.0.2"), now),
            None,
            "other peers unaffected"
        );
        let later = now + Duration::from_secs(1);
        assert_eq!(t.locked_out(&a, later), None);
        assert_eq!(t.failed(a.clone(), later), Duration::from_secs(2));
        let mut at = later;
        for _ in 0..20 {
            at += MAX_DELAY;
            t.failed(a.clone(), at);
        }
        assert_eq!(t.locked_out(&a, at), Some(MAX_DELAY));
        t.succeeded(&a);
        assert_eq!(t.locked_out(&a, at), None);
        assert_eq!(t.failed(a.clone(), at), FIRST_DELAY, "counting starts over");
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = PasswordThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 100) {
            t.failed(PeerKey::Ip(IpAddr::from(i.to_be_bytes())), now);
        }
        assert!(t.peers.lock().unwrap().len() <= MAX_PEERS);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_the_ipv4_peer() {
        let v4: Peer = Peer::Tcp("10.1.2.3:5000".parse().unwrap());
        let mapped: Peer = Peer::Tcp("[::ffff:10.1.2.3]:6000".parse().unwrap());
        assert_eq!(PeerKey::from(&v4), PeerKey::from(&mapped));
    }
}

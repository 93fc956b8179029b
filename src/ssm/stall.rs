//! Finding a session that stopped making progress, as a pure state machine the session task feeds
//! with what happens and asks, now and then, what to do (DESIGN.md decision 11).
//!
//! A session is **stalled** when, for longer than the bound, either
//! * messages we sent stay unacknowledged and no acknowledgement at all arrives (the agent stopped
//!   consuming: a destination that does not read, a broken relay), or
//! * stream messages keep arriving but the next expected one never does (a gap nobody repairs: the
//!   agent sent it untracked, or its retransmissions are lost).
//!
//! The first time a stall episode is seen the session is resumed (a fresh WebSocket through
//! ResumeSession: unwritten and unacknowledged messages go out again); if the episode outlives a
//! second bound the session is given up and replaced. Any progress ends the episode. So there is at
//! most one ResumeSession per episode, never a loop of them (code review M2).

use std::time::{Duration, Instant};

/// What the session task should do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: progress is being made (or nothing is outstanding).
    Fine,
    /// A stall episode just began: resume the session once. Carries what is stuck.
    Resume(String),
    /// The episode outlived the resume: give the session up. Carries what is stuck.
    GiveUp(String),
    /// Still in an episode that was already resumed; wait.
    Waiting,
}

/// The stall detector of one session.
#[derive(Clone, Debug)]
pub struct StallWatch {
    /// How long without progress makes a stall.
    bound: Duration,
    /// Last acknowledgement of one of our messages.
    last_ack: Instant,
    /// Last time the expected incoming sequence number advanced.
    last_delivery: Instant,
    /// Last stream message that arrived without advancing it (a duplicate or one ahead of a gap).
    last_stuck_arrival: Option<Instant>,
    /// When the current episode began (and it was resumed).
    episode: Option<Instant>,
}

impl StallWatch {
    /// A watch with `bound`, starting at `now`.
    pub fn new(bound: Duration, now: Instant) -> Self {
        Self {
            bound,
            last_ack: now,
            last_delivery: now,
            last_stuck_arrival: None,
            episode: None,
        }
    }

    /// One of our messages was acknowledged.
    pub fn acked(&mut self, now: Instant) {
        self.last_ack = now;
    }

    /// In-order stream data was delivered.
    pub fn delivered(&mut self, now: Instant) {
        self.last_delivery = now;
        self.last_stuck_arrival = None;
    }

    /// A stream message arrived that did not advance the expected sequence number.
    pub fn arrived_stuck(&mut self, now: Instant) {
        self.last_stuck_arrival = Some(now);
    }

    /// Whether an episode is under way.
    pub fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// Decides, given the send time of the oldest unacknowledged message (if any).
    pub fn check(&mut self, now: Instant, oldest_unacked: Option<Instant>) -> Verdict {
        let stuck = self.stuck(now, oldest_unacked);
        let Some(what) = stuck else {
            self.episode = None;
            return Verdict::Fine;
        };
        match self.episode {
            None => {
                self.episode = Some(now);
                Verdict::Resume(what)
            }
            Some(started) if now.saturating_duration_since(started) > self.bound => {
                Verdict::GiveUp(what)
            }
            Some(_) => Verdict::Waiting,
        }
    }

    fn stuck(&self, now: Instant, oldest_unacked: Option<Instant>) -> Option<String> {
        if let Some(sent) = oldest_unacked {
            // Progress is counted from the later of the last ack and the moment this message
            // became the oldest outstanding one (it cannot have been acked before it was sent).
            let since = self.last_ack.max(sent);
            let quiet = now.saturating_duration_since(since);
            if quiet > self.bound {
                return Some(format!(
                    "no acknowledgement of our messages for {}s",
                    quiet.as_secs()
                ));
            }
        }
        if let Some(arrival) = self.last_stuck_arrival
            && arrival > self.last_delivery
        {
            let quiet = now.saturating_duration_since(self.last_delivery);
            if quiet > self.bound {
                return Some(format!(
                    "messages arrive but the next one in sequence has not for {}s",
                    quiet.as_secs()
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Duration = Duration::from_secs(10);

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn unacked_sends_resume_once_then_give_up() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(B, t0);
        let sent = Some(at(t0, 1));
        assert_eq!(w.check(at(t0, 5), sent), Verdict::Fine);
        assert!(matches!(w.check(at(t0, 12), sent), Verdict::Resume(_)));
        // Every later check in the episode waits: no second resume, no loop.
        for s in 13..=22 {
            assert_eq!(w.check(at(t0, s), sent), Verdict::Waiting);
        }
        assert!(matches!(w.check(at(t0, 23), sent), Verdict::GiveUp(_)));
    }

    #[test]
    fn progress_ends_the_episode() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(B, t0);
        let sent = Some(at(t0, 0));
        assert!(matches!(w.check(at(t0, 11), sent), Verdict::Resume(_)));
        w.acked(at(t0, 12));
        assert_eq!(w.check(at(t0, 13), Some(at(t0, 12))), Verdict::Fine);
        assert!(!w.in_episode());
        // A new stall later is a new episode: it may resume again.
        assert!(matches!(
            w.check(at(t0, 30), Some(at(t0, 12))),
            Verdict::Resume(_)
        ));
    }

    #[test]
    fn an_idle_session_is_never_stalled() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(B, t0);
        assert_eq!(w.check(at(t0, 3600), None), Verdict::Fine);
    }

    #[test]
    fn a_gap_that_is_never_repaired_is_a_stall() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(B, t0);
        w.delivered(at(t0, 1));
        for s in 2..15 {
            w.arrived_stuck(at(t0, s));
        }
        assert!(matches!(w.check(at(t0, 12), None), Verdict::Resume(m) if m.contains("sequence")));
        w.delivered(at(t0, 13));
        assert_eq!(w.check(at(t0, 14), None), Verdict::Fine);
    }

    #[test]
    fn a_message_sent_after_a_long_quiet_is_timed_from_its_send() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(B, t0);
        // Nothing outstanding for an hour, then one message: not stalled until B after it.
        assert_eq!(w.check(at(t0, 3605), Some(at(t0, 3600))), Verdict::Fine);
        assert!(matches!(
            w.check(at(t0, 3611), Some(at(t0, 3600))),
            Verdict::Resume(_)
        ));
    }
}

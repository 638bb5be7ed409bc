//! The link to the upstream MD (core 0): connection state, connect deadline and reconnection
//! backoff, what must be replayed after a reconnection (our name, aggregate channels, covered
//! ranges, post-removes), the fired post-removes owed to it while it is down or settling, and
//! the senders whose post-removes it may have fired when a live link was lost.
//!
//! Settling (`messagedirector.upstream_settle_ms`): after a link is regained (not on the first
//! connection), the sessions at risk are ejected at once, but what is owed (the post-removes
//! fired while the link was away, then those of the ejected sessions and of any session that
//! ends meanwhile) is held until the link has stayed up for the settle period. Two reasons,
//! both seen in the fault tests: a restarted root has no subscriber for a sibling's objects
//! until that sibling has reconnected too (a delete sent at once is routed to nobody and lost),
//! and a connection that is accepted and dropped at once (a load balancer or relay in front of
//! a root that is still down) would swallow what was written into it. Held back this way, the
//! owed post-removes reach the upstream after datagrams sent since the regain, which is safe:
//! they only delete objects of sessions that are gone (left, or ejected at the regain), and new
//! clients are refused until the settle ends, so no re-login can create an object (its avatar,
//! same doid) that a late delete would hit; among themselves they keep the order they fired in.

use otp_wire::msgtypes::*;
use otp_wire::{InternalDatagram, Writer};
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

enum State {
    Down {
        retry_at: Instant,
    },
    Connecting {
        deadline: Instant,
    },
    Connected {
        /// Until when what is owed and the sessions at risk are held (None: settled).
        settle_until: Option<Instant>,
    },
}

/// How the link is timed and bounded (from `messagedirector`).
pub(super) struct Timing {
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// Bytes of owed datagrams kept while the link is down (`max_queued_bytes_upstream`).
    pub max_owed: usize,
    /// How long a regained link must stay up before what is owed is sent and the sessions at
    /// risk are ejected (`upstream_settle_ms`).
    pub settle: Duration,
}

pub(super) struct Upstream {
    pub addr: SocketAddr,
    pub conn: Option<usize>,
    state: State,
    ever_connected: bool,
    backoff: Duration,
    timing: Timing,
    /// The CONTROL_SET_CON_NAME text sent first on every connection (`md::link_name`).
    pub con_name: String,
    /// Channels with at least one local subscriber (what the upstream MD must send us).
    pub channels: BTreeSet<u64>,
    /// Post-removes registered upstream: (sender key, framed CONTROL_ADD_POST_REMOVE).
    post_removes: Vec<(u64, Vec<u8>)>,
    /// Framed datagrams owed to the upstream MD (fired post-removes) while the link is down,
    /// connecting or settling, in the order they came; sent once the link has settled.
    owed: Vec<u8>,
    /// The senders whose post-removes were registered upstream when a live link was lost:
    /// the upstream MD may have fired them (and deleted their objects).
    at_risk: BTreeSet<u64>,
}

/// A number chosen once per process, told upstream in our name so that the upstream MD can
/// recognise this process when it reconnects (std's hasher keys come from the OS's random
/// source; the process id and the time are mixed in for good measure).
pub(super) fn incarnation() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr, timing: Timing, con_name: String) -> Upstream {
        Upstream {
            addr,
            conn: None,
            state: State::Down {
                retry_at: Instant::now(),
            },
            ever_connected: false,
            backoff: timing.min_backoff,
            timing: Timing {
                max_backoff: timing.max_backoff.max(timing.min_backoff),
                ..timing
            },
            con_name,
            channels: BTreeSet::new(),
            post_removes: Vec::new(),
            owed: Vec::new(),
            at_risk: BTreeSet::new(),
        }
    }

    pub(super) fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }
    /// Connected and past the settle period: what is owed goes out as it comes.
    pub(super) fn is_settled(&self) -> bool {
        matches!(self.state, State::Connected { settle_until: None })
    }
    /// Connected, and the settle period is over: time to call `settled`.
    pub(super) fn settle_due(&self, now: Instant) -> bool {
        matches!(self.state, State::Connected { settle_until: Some(at) } if at <= now)
    }
    /// The settle period is over: from now on what is owed is written as it comes.
    pub(super) fn settled(&mut self) {
        if self.is_connected() {
            self.state = State::Connected { settle_until: None };
        }
    }
    pub(super) fn settle_period(&self) -> Duration {
        self.timing.settle
    }
    pub(super) fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }
    /// When the event loop must look at the link next: the next attempt, the deadline of the
    /// one under way, or the end of the settle period.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            State::Connecting { deadline } => Some(deadline),
            State::Connected { settle_until } => settle_until,
        }
    }
    pub(super) fn retry_due(&self, now: Instant) -> bool {
        matches!(self.state, State::Down { retry_at } if retry_at <= now)
    }
    pub(super) fn connect_overdue(&self, now: Instant) -> bool {
        matches!(self.state, State::Connecting { deadline } if deadline <= now)
    }
    pub(super) fn connect_timeout(&self) -> Duration {
        self.timing.connect_timeout
    }
    pub(super) fn set_connecting(&mut self, now: Instant) {
        self.state = State::Connecting {
            deadline: now + self.timing.connect_timeout,
        };
    }
    /// Returns true on the first connection of this process. A regained link settles (see
    /// the module's comment) unless the settle period is 0; the first connection does not.
    pub(super) fn set_connected(&mut self, now: Instant) -> bool {
        let first = !std::mem::replace(&mut self.ever_connected, true);
        let settle_until =
            (!first && !self.timing.settle.is_zero()).then(|| now + self.timing.settle);
        self.state = State::Connected { settle_until };
        self.backoff = self.timing.min_backoff;
        first
    }
    /// The link (or an attempt) is gone: returns how long until the next attempt, and whether
    /// a live link was lost (then its post-removes' senders are at risk).
    pub(super) fn set_down(&mut self, now: Instant) -> (Duration, bool) {
        let was_up = self.is_connected();
        if was_up {
            self.at_risk
                .extend(self.post_removes.iter().map(|(sender, _)| *sender));
        }
        self.conn = None;
        let wait = self.backoff;
        self.state = State::Down {
            retry_at: now + wait,
        };
        self.backoff = (self.backoff * 2).min(self.timing.max_backoff);
        (wait, was_up)
    }

    /// Notes post-remove registrations passing upstream so they can be replayed.
    pub(super) fn track(&mut self, frame: &[u8]) {
        let Ok(dg) = InternalDatagram::parse(&frame[2..]) else {
            return;
        };
        if !dg.is_control() {
            return;
        }
        let mut r = dg.payload_reader();
        let Ok(sender) = r.u64() else { return };
        match dg.msgtype {
            CONTROL_ADD_POST_REMOVE => self.post_removes.push((sender, frame.to_vec())),
            CONTROL_CLEAR_POST_REMOVES => self.post_removes.retain(|(s, _)| *s != sender),
            _ => {}
        }
    }

    /// Post-removes registered upstream now.
    pub(super) fn post_removes(&self) -> usize {
        self.post_removes.len()
    }

    /// Keeps a framed datagram owed to the upstream MD for the link's return; false (nothing
    /// kept) past `max_queued_bytes_upstream`.
    pub(super) fn owe(&mut self, frame: &[u8]) -> bool {
        if self.owed.len() + frame.len() > self.timing.max_owed {
            return false;
        }
        self.owed.extend_from_slice(frame);
        true
    }

    /// Bytes owed to the upstream MD, kept for the link's return.
    pub(super) fn owed_bytes(&self) -> usize {
        self.owed.len()
    }

    /// Everything a freshly connected upstream MD must be told, framed, appended to `out`:
    /// our name, then the state (channels, ranges, post-removes). What was owed to it while it
    /// was away follows once the link has settled (`take_owed`).
    ///
    /// The CONTROL_CLEAR_POST_REMOVES of post-removes fired while the link was down are not
    /// among what is owed: the new connection holds exactly the post-removes replayed here,
    /// and a clear sent after them would wipe a sender's newer registration (a participant
    /// that came back with the same sender key).
    pub(super) fn replay(&mut self, ranges: &[(u64, u64)], out: &mut Vec<u8>) {
        let mut w = Writer::control(out, CONTROL_SET_CON_NAME);
        w.string(&self.con_name);
        // A `name` too long for one datagram is left out (the rest still goes).
        let _ = w.finish();
        for &c in &self.channels {
            let mut w = Writer::control(out, CONTROL_ADD_CHANNEL);
            w.u64(c);
            w.finish_bounded();
        }
        for &(lo, hi) in ranges {
            let mut w = Writer::control(out, CONTROL_ADD_RANGE);
            w.u64(lo).u64(hi);
            w.finish_bounded();
        }
        for (_, frame) in &self.post_removes {
            out.extend_from_slice(frame);
        }
    }

    /// What was owed to the upstream MD, in order, appended to `out` (the buffer's memory is
    /// given back).
    pub(super) fn take_owed(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.owed);
        self.owed = Vec::new();
    }

    /// The senders whose post-removes the upstream MD may have fired since a live link was
    /// lost (taken: asked once, when the link is regained).
    pub(super) fn take_at_risk(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.at_risk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(max_owed: usize) -> Upstream {
        upstream_settling(max_owed, Duration::ZERO)
    }

    fn upstream_settling(max_owed: usize, settle: Duration) -> Upstream {
        Upstream::new(
            "127.0.0.1:1".parse().unwrap(),
            Timing {
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                connect_timeout: Duration::from_millis(50),
                max_owed,
                settle,
            },
            "child [otpd-md 0000000000000001]".into(),
        )
    }

    fn add_post_remove(sender: u64) -> Vec<u8> {
        let mut f = Vec::new();
        let mut w = Writer::control(&mut f, CONTROL_ADD_POST_REMOVE);
        w.u64(sender).blob(b"x");
        w.finish_bounded();
        f
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_a_connection_resets_it() {
        let mut u = upstream(100);
        let now = Instant::now();
        let waits: Vec<u128> = (0..4).map(|_| u.set_down(now).0.as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 400]);
        u.set_connecting(now);
        assert!(!u.connect_overdue(now));
        assert!(u.connect_overdue(now + Duration::from_millis(50)));
        assert_eq!(u.wake_at(), Some(now + Duration::from_millis(50)));
        assert!(u.set_connected(now));
        assert!(!u.set_connected(now));
        assert_eq!(u.set_down(now).0.as_millis(), 100);
    }

    #[test]
    fn senders_at_risk_are_those_registered_when_a_live_link_is_lost() {
        let mut u = upstream(100);
        let now = Instant::now();
        u.track(&add_post_remove(7));
        u.set_connecting(now);
        u.set_down(now); // a failed attempt: nothing was registered anywhere
        assert!(u.take_at_risk().is_empty());
        u.set_connected(now);
        u.track(&add_post_remove(8));
        assert!(u.set_down(now).1);
        assert_eq!(u.take_at_risk().into_iter().collect::<Vec<_>>(), [7, 8]);
        assert!(u.take_at_risk().is_empty());
    }

    #[test]
    fn what_is_owed_is_bounded_and_follows_the_replay() {
        let mut u = upstream(10);
        assert!(u.owe(b"0123456"));
        assert!(!u.owe(b"0123"));
        assert!(u.owe(b"789"));
        u.channels.insert(5);
        let mut out = Vec::new();
        u.replay(&[], &mut out);
        assert_eq!(
            u.owed_bytes(),
            10,
            "the replay leaves what is owed for the settle"
        );
        u.take_owed(&mut out);
        assert!(out.ends_with(b"0123456789"));
        assert_eq!(u.owed_bytes(), 0);
        let frames: Vec<&[u8]> = otp_wire::frames(&out[..out.len() - 10]).collect();
        let first = InternalDatagram::parse(&frames[0][2..]).unwrap();
        assert_eq!(first.msgtype, CONTROL_SET_CON_NAME);
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn a_regained_link_settles_and_a_loss_meanwhile_keeps_what_is_owed_and_at_risk() {
        let settle = Duration::from_millis(1000);
        let mut u = upstream_settling(100, settle);
        let t0 = Instant::now();
        u.set_connecting(t0);
        assert!(u.set_connected(t0), "the first connection");
        assert!(u.is_settled(), "the first connection does not settle");
        u.track(&add_post_remove(7));
        assert!(u.set_down(t0).1);
        assert!(u.owe(b"owed"));
        // Regained: settling until t1 + settle; a link dropped meanwhile (a relay accepting
        // while the root is still down) loses nothing owed and forgets nobody at risk.
        let t1 = t0 + Duration::from_millis(10);
        assert!(!u.set_connected(t1));
        assert!(!u.is_settled());
        assert_eq!(u.wake_at(), Some(t1 + settle));
        assert!(!u.settle_due(t1 + settle - Duration::from_millis(1)));
        assert!(u.set_down(t1).1);
        assert_eq!(u.owed_bytes(), 4);
        let t2 = t1 + Duration::from_millis(100);
        assert!(!u.set_connected(t2));
        assert!(
            !u.settle_due(t1 + settle),
            "the settle restarts with the link"
        );
        assert!(u.settle_due(t2 + settle));
        u.settled();
        assert!(u.is_settled());
        assert_eq!(u.wake_at(), None);
        assert_eq!(u.take_at_risk().into_iter().collect::<Vec<_>>(), [7]);
        let mut out = Vec::new();
        u.take_owed(&mut out);
        assert_eq!(out, b"owed");
    }
}

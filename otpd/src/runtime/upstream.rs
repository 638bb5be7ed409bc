//! The link to the upstream MD (core 0): connection state and reconnection backoff, and what
//! must be replayed after a reconnection: aggregate channels, covered ranges, post-removes.

use otp_wire::msgtypes::*;
use otp_wire::{InternalDatagram, Writer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

enum State {
    Down { retry_at: Instant },
    Connecting,
    Connected,
}

pub(super) struct Upstream {
    pub addr: SocketAddr,
    pub conn: Option<usize>,
    state: State,
    ever_connected: bool,
    backoff: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    /// Channels with at least one local subscriber (what the upstream MD must send us).
    pub channels: BTreeSet<u64>,
    /// Post-removes registered upstream: (sender key, framed CONTROL_ADD_POST_REMOVE).
    post_removes: Vec<(u64, Vec<u8>)>,
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr, min_backoff: Duration, max_backoff: Duration) -> Upstream {
        Upstream {
            addr,
            conn: None,
            state: State::Down {
                retry_at: Instant::now(),
            },
            ever_connected: false,
            backoff: min_backoff,
            min_backoff,
            max_backoff: max_backoff.max(min_backoff),
            channels: BTreeSet::new(),
            post_removes: Vec::new(),
        }
    }

    pub(super) fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected)
    }
    pub(super) fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting)
    }
    pub(super) fn retry_at(&self) -> Option<Instant> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            _ => None,
        }
    }
    pub(super) fn retry_due(&self, now: Instant) -> bool {
        self.retry_at().is_some_and(|t| t <= now)
    }
    pub(super) fn set_connecting(&mut self) {
        self.state = State::Connecting;
    }
    /// Returns true on the first connection of this process.
    pub(super) fn set_connected(&mut self) -> bool {
        self.state = State::Connected;
        self.backoff = self.min_backoff;
        !std::mem::replace(&mut self.ever_connected, true)
    }
    /// Returns how long until the next attempt.
    pub(super) fn set_down(&mut self) -> Duration {
        self.conn = None;
        let wait = self.backoff;
        self.state = State::Down {
            retry_at: Instant::now() + wait,
        };
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        wait
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

    /// Everything a freshly connected upstream MD must be told, framed, appended to `out`.
    pub(super) fn replay(&self, ranges: &[(u64, u64)], out: &mut Vec<u8>) {
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
}

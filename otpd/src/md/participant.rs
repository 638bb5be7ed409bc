//! What the MessageDirector keeps for one participant beside the routing tables (the channels
//! and ranges it subscribed, its post-removes, its name) and its control messages, as `Effect`s
//! the core applies through its router. Free of I/O.

use otp_wire::msgtypes::*;
use otp_wire::{Reader, RoutableHeader, Writer};
use rustc_hash::FxHashSet;
use smallvec::SmallVec;

/// The limits a participant's control messages are held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Single channels and ranges together (`max_subscriptions_per_participant`).
    pub subscriptions: usize,
    /// `max_post_removes_per_participant`.
    pub post_removes: usize,
}

#[derive(Default)]
pub struct Participant {
    pub singles: FxHashSet<u64>,
    /// Ranges added (removals do not count down: a range may be removed in parts).
    pub ranges: usize,
    /// (sender key, datagram body without length tag), in the order added.
    pub post_removes: Vec<(u64, Vec<u8>)>,
    /// CONTROL_SET_CON_NAME and CONTROL_SET_CON_URL.
    pub name: String,
    pub url: String,
}

/// What a control message asks of the core, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect<'a> {
    Subscribe(u64),
    Unsubscribe(u64),
    AddRange(u64, u64),
    RemoveRange(u64, u64),
    /// Send the control message itself to the upstream MD (post-remove registrations).
    Upstream,
    /// Send this event to the EventLogger.
    Log(&'a [u8]),
}

pub type Effects<'a> = SmallVec<[Effect<'a>; 4]>;

/// The outcome of a control message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handled: its effects, if any, are to be applied.
    Done,
    /// Not acted on, for this reason (the core logs it with the participant's name).
    Ignored(String),
    /// The participant broke a rule or sent a malformed message: close it, for this reason.
    Close(String),
}

impl Participant {
    /// Handles control message `msgtype` with `payload` (the bytes after the msgtype).
    #[allow(clippy::too_many_lines)] // one short arm per message type or key
    pub fn control<'a>(
        &mut self,
        msgtype: u16,
        payload: &'a [u8],
        limits: Limits,
        effects: &mut Effects<'a>,
    ) -> Verdict {
        let mut r = Reader::new(payload);
        let truncated = |name: &str| Verdict::Close(format!("truncated {name} control message"));
        let over_subscriptions = || {
            Verdict::Close(format!(
                "over max_subscriptions_per_participant = {}",
                limits.subscriptions
            ))
        };
        match msgtype {
            CONTROL_ADD_CHANNEL => {
                let Ok(channel) = r.u64() else {
                    return truncated("CONTROL_ADD_CHANNEL");
                };
                if self.singles.len() + self.ranges >= limits.subscriptions
                    && !self.singles.contains(&channel)
                {
                    return over_subscriptions();
                }
                if self.singles.insert(channel) {
                    effects.push(Effect::Subscribe(channel));
                }
            }
            CONTROL_REMOVE_CHANNEL => {
                let Ok(channel) = r.u64() else {
                    return truncated("CONTROL_REMOVE_CHANNEL");
                };
                if self.singles.remove(&channel) {
                    effects.push(Effect::Unsubscribe(channel));
                }
            }
            CONTROL_ADD_RANGE => {
                let (Ok(lo), Ok(hi)) = (r.u64(), r.u64()) else {
                    return truncated("CONTROL_ADD_RANGE");
                };
                if lo > hi {
                    return Verdict::Ignored(format!(
                        "asked for range {lo}-{hi} with bounds reversed"
                    ));
                }
                if self.singles.len() + self.ranges >= limits.subscriptions {
                    return over_subscriptions();
                }
                self.ranges += 1;
                effects.push(Effect::AddRange(lo, hi));
            }
            CONTROL_REMOVE_RANGE => {
                let (Ok(lo), Ok(hi)) = (r.u64(), r.u64()) else {
                    return truncated("CONTROL_REMOVE_RANGE");
                };
                if lo > hi {
                    return Verdict::Done;
                }
                // As Astron: the single channels inside the range go too.
                let inside: SmallVec<[u64; 8]> = self
                    .singles
                    .iter()
                    .copied()
                    .filter(|c| (lo..=hi).contains(c))
                    .collect();
                for channel in inside {
                    self.singles.remove(&channel);
                    effects.push(Effect::Unsubscribe(channel));
                }
                effects.push(Effect::RemoveRange(lo, hi));
            }
            CONTROL_ADD_POST_REMOVE => {
                let (Ok(sender), Ok(dg)) = (r.u64(), r.blob()) else {
                    return truncated("CONTROL_ADD_POST_REMOVE");
                };
                if !self.add_post_remove(sender, dg.to_vec(), limits) {
                    return Verdict::Close(format!(
                        "over max_post_removes_per_participant = {}",
                        limits.post_removes
                    ));
                }
                effects.push(Effect::Upstream);
            }
            CONTROL_CLEAR_POST_REMOVES => {
                let Ok(sender) = r.u64() else {
                    return truncated("CONTROL_CLEAR_POST_REMOVES");
                };
                self.clear_post_removes(sender);
                effects.push(Effect::Upstream);
            }
            CONTROL_SET_CON_NAME => {
                let Ok(name) = r.blob() else {
                    return truncated("CONTROL_SET_CON_NAME");
                };
                self.name = String::from_utf8_lossy(name).into_owned();
            }
            CONTROL_SET_CON_URL => {
                let Ok(url) = r.blob() else {
                    return truncated("CONTROL_SET_CON_URL");
                };
                self.url = String::from_utf8_lossy(url).into_owned();
            }
            CONTROL_LOG_MESSAGE => {
                let Ok(event) = r.blob() else {
                    return truncated("CONTROL_LOG_MESSAGE");
                };
                effects.push(Effect::Log(event));
            }
            other => {
                return Verdict::Ignored(format!("sent unknown control message type {other}"));
            }
        }
        Verdict::Done
    }

    /// Keeps `sender`'s post-remove `dg` (a datagram body) unless that would pass the limit
    /// (then false, nothing kept).
    pub fn add_post_remove(&mut self, sender: u64, dg: Vec<u8>, limits: Limits) -> bool {
        if self.post_removes.len() >= limits.post_removes {
            return false;
        }
        self.post_removes.push((sender, dg));
        true
    }

    pub fn clear_post_removes(&mut self, sender: u64) {
        self.post_removes.retain(|(s, _)| *s != sender);
    }
}

/// A departed participant's post-removes, in the order added: each routable one framed onto
/// `routes` (to be routed as if the participant had sent it, upstream too), then one
/// CONTROL_CLEAR_POST_REMOVES per sender onto `clears` (for the upstream MD). Returns how many
/// were not routable datagrams (dropped).
pub fn post_remove_frames(
    post_removes: &[(u64, Vec<u8>)],
    routes: &mut Vec<u8>,
    clears: &mut Vec<u8>,
) -> usize {
    let mut senders: SmallVec<[u64; 4]> = SmallVec::new();
    let mut dropped = 0;
    for (sender, dg) in post_removes {
        if !senders.contains(sender) {
            senders.push(*sender);
        }
        if dg.is_empty() || dg.len() > otp_wire::MAX_DATAGRAM_BODY {
            continue;
        }
        if !matches!(RoutableHeader::parse(dg), Ok(h) if !h.is_control()) {
            dropped += 1;
            continue;
        }
        let mut w = Writer::begin(routes);
        w.bytes(dg);
        w.finish_bounded();
    }
    for sender in senders {
        let mut w = Writer::control(clears, CONTROL_CLEAR_POST_REMOVES);
        w.u64(sender);
        w.finish_bounded();
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        subscriptions: 3,
        post_removes: 2,
    };

    fn control(p: &mut Participant, msgtype: u16, args: &[u64]) -> (Verdict, Vec<Effect<'static>>) {
        let mut payload = Vec::new();
        for a in args {
            payload.extend_from_slice(&a.to_le_bytes());
        }
        let payload: &'static [u8] = payload.leak();
        let mut effects = Effects::new();
        let v = p.control(msgtype, payload, LIMITS, &mut effects);
        (v, effects.into_vec())
    }

    #[test]
    fn subscriptions_count_against_the_limit_and_are_idempotent() {
        let mut p = Participant::default();
        use Effect::*;
        assert_eq!(
            control(&mut p, CONTROL_ADD_CHANNEL, &[5]),
            (Verdict::Done, vec![Subscribe(5)])
        );
        assert_eq!(
            control(&mut p, CONTROL_ADD_CHANNEL, &[5]),
            (Verdict::Done, vec![])
        );
        assert_eq!(
            control(&mut p, CONTROL_ADD_RANGE, &[10, 20]),
            (Verdict::Done, vec![AddRange(10, 20)])
        );
        assert_eq!(
            control(&mut p, CONTROL_ADD_CHANNEL, &[15]).1,
            vec![Subscribe(15)]
        );
        // Three held: a new one closes the participant, one already held does not.
        assert!(matches!(
            control(&mut p, CONTROL_ADD_CHANNEL, &[6]).0,
            Verdict::Close(_)
        ));
        assert_eq!(
            control(&mut p, CONTROL_ADD_CHANNEL, &[15]),
            (Verdict::Done, vec![])
        );
        assert!(matches!(
            control(&mut p, CONTROL_ADD_RANGE, &[1, 2]).0,
            Verdict::Close(_)
        ));
        // Removing a range drops the single channels inside it, then the range.
        assert_eq!(
            control(&mut p, CONTROL_REMOVE_RANGE, &[12, 30]),
            (Verdict::Done, vec![Unsubscribe(15), RemoveRange(12, 30)])
        );
        assert_eq!(
            control(&mut p, CONTROL_REMOVE_CHANNEL, &[5]).1,
            vec![Unsubscribe(5)]
        );
        assert_eq!(control(&mut p, CONTROL_REMOVE_CHANNEL, &[5]).1, vec![]);
        assert!(matches!(
            control(&mut p, CONTROL_ADD_RANGE, &[9, 3]).0,
            Verdict::Ignored(_)
        ));
        assert_eq!(
            control(&mut p, CONTROL_REMOVE_RANGE, &[9, 3]),
            (Verdict::Done, vec![])
        );
        assert!(matches!(control(&mut p, 9999, &[]).0, Verdict::Ignored(_)));
        assert_eq!(
            control(&mut p, CONTROL_ADD_CHANNEL, &[]).0,
            Verdict::Close("truncated CONTROL_ADD_CHANNEL control message".into())
        );
    }

    #[test]
    fn post_removes_fire_in_order_and_clear_by_sender() {
        let mut p = Participant::default();
        let dg = |to: u64, n: u8| {
            let mut f = Vec::new();
            let mut w = Writer::internal(&mut f, &[to], 77, 2000);
            w.u8(n);
            w.finish().unwrap();
            f[2..].to_vec()
        };
        let limits = Limits {
            subscriptions: 10,
            post_removes: 3,
        };
        assert!(p.add_post_remove(1, dg(100, 1), limits));
        assert!(p.add_post_remove(2, dg(200, 2), limits));
        assert!(p.add_post_remove(1, vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0], limits)); // control
        assert!(!p.add_post_remove(3, dg(300, 3), limits));
        let (mut routes, mut clears) = (Vec::new(), Vec::new());
        assert_eq!(
            post_remove_frames(&p.post_removes, &mut routes, &mut clears),
            1
        );
        let routed: Vec<(u64, u8)> = otp_wire::frames(&routes)
            .map(|f| {
                let h = RoutableHeader::parse(&f[2..]).unwrap();
                (h.recipients.get(0).unwrap(), f[2 + h.len])
            })
            .collect();
        assert_eq!(routed, vec![(100, 1), (200, 2)]);
        let cleared: Vec<u64> = otp_wire::frames(&clears)
            .map(|f| {
                let d = otp_wire::InternalDatagram::parse(&f[2..]).unwrap();
                assert_eq!(d.msgtype, CONTROL_CLEAR_POST_REMOVES);
                d.payload_reader().u64().unwrap()
            })
            .collect();
        assert_eq!(cleared, vec![1, 2]);
        p.clear_post_removes(1);
        assert_eq!(p.post_removes, vec![(2, dg(200, 2))]);
    }
}

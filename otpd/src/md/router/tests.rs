//! Tests of the router's guarantees: directed cases, and a simulated process of several cores
//! (routers joined by bounded FIFO queues, run turn by turn in an order proptest chooses, with
//! participants that come, subscribe, send and leave) checked against a model.

use super::*;
use crate::md::participant::{post_remove_frames, Limits, Participant};
use otp_wire::Writer;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};

// ---- a simulated process ----------------------------------------------------------------

/// A delivery, as the simulation's participants read it: (receiver, sender index, sequence).
type Got = (Pid, usize, u32);

#[derive(Default)]
struct UpstreamModel {
    channels: BTreeSet<u64>,
    ranges: BTreeSet<u64>,
    datagrams: Vec<(usize, u32)>,
    /// Every channel announcement and datagram, in the order the upstream MD hears them.
    heard: Vec<Heard>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    Added(u64),
    Removed(u64),
    Datagram(usize, u32),
}

impl UpstreamModel {
    /// Whether the upstream MD had `channel` announced when it heard datagram `seq` of `from`,
    /// and kept it announced from then on.
    fn announced_from(&self, channel: u64, from: usize, seq: u32) -> bool {
        let Some(at) = self
            .heard
            .iter()
            .position(|&e| e == Heard::Datagram(from, seq))
        else {
            return false;
        };
        let last_change = self.heard[..at]
            .iter()
            .rev()
            .find(|&&e| e == Heard::Added(channel) || e == Heard::Removed(channel));
        last_change == Some(&Heard::Added(channel))
            && !self.heard[at..].contains(&Heard::Removed(channel))
    }
}

struct SimHost {
    me: usize,
    outbox: Outbox<()>,
    got: Vec<Got>,
    /// Participants of this core that have left: deliveries to them are dropped (as a core
    /// does through the generation in the pid).
    gone: HashSet<Pid>,
    upstream: UpstreamModel,
}

/// The payload every simulated datagram carries: who sent it, and its number.
fn read_tag(frame: &[u8]) -> (usize, u32) {
    let h = RoutableHeader::parse(&frame[2..]).expect("a routable datagram");
    let p = &frame[2 + h.len..];
    (
        u32::from_le_bytes(p[..4].try_into().unwrap()) as usize,
        u32::from_le_bytes(p[4..8].try_into().unwrap()),
    )
}

impl Host for SimHost {
    type Extra = ();
    fn outbox(&mut self) -> &mut Outbox<()> {
        &mut self.outbox
    }
    fn deliver(&mut self, pid: Pid, frame: &[u8]) {
        assert_eq!(pid.core(), self.me, "delivered on the wrong core");
        if !self.gone.contains(&pid) {
            let (from, seq) = read_tag(frame);
            self.got.push((pid, from, seq));
        }
    }
    fn upstream(&mut self, event: Upstream<'_>) {
        assert_eq!(self.me, 0, "upstream events happen on core 0");
        let u = &mut self.upstream;
        match event {
            Upstream::Subscribed(c) => {
                assert!(u.channels.insert(c), "{c} announced twice");
                u.heard.push(Heard::Added(c));
            }
            Upstream::Unsubscribed(c) => {
                assert!(u.channels.remove(&c), "{c} not announced");
                u.heard.push(Heard::Removed(c));
            }
            Upstream::RangeAdded(lo, hi) => u.ranges.extend(lo..=hi),
            Upstream::RangeRemoved(lo, hi) => {
                for c in lo..=hi {
                    u.ranges.remove(&c);
                }
            }
            Upstream::Datagram(frame) | Upstream::Owed(frame) => {
                let (from, seq) = read_tag(frame);
                u.datagrams.push((from, seq));
                u.heard.push(Heard::Datagram(from, seq));
            }
        }
    }
}

struct SimCore {
    router: Router,
    host: SimHost,
}

/// Cores joined by bounded FIFO queues, run one loop turn at a time.
struct Sim {
    cores: Vec<SimCore>,
    inboxes: Vec<VecDeque<Batch<()>>>,
    /// Batches a core's queue holds; a full queue refuses more (the sender stalls).
    capacity: usize,
    frame: Vec<u8>,
}

impl Sim {
    fn new(cores: usize, upstream: bool, capacity: usize) -> Sim {
        Sim {
            cores: (0..cores)
                .map(|me| SimCore {
                    router: Router::new(me, cores, upstream),
                    host: SimHost {
                        me,
                        outbox: Outbox::new(me, cores),
                        got: Vec::new(),
                        gone: HashSet::new(),
                        upstream: UpstreamModel::default(),
                    },
                })
                .collect(),
            inboxes: (0..cores).map(|_| VecDeque::new()).collect(),
            capacity: capacity.max(1),
            frame: Vec::new(),
        }
    }

    /// Participant `p` of `core` (its slot is its index).
    fn pid(core: usize, p: usize) -> Pid {
        Pid::new(core, 0, p)
    }

    /// Core `core` reads datagram `seq` of participant `from` to `to` and routes it (and,
    /// as for a participant's datagram, sends it upstream first).
    fn send(&mut self, core: usize, from: usize, seq: u32, to: &[u64], exclude: Option<Pid>) {
        self.frame.clear();
        let mut w = Writer::internal(&mut self.frame, to, 1000 + from as u64, 2000);
        w.u32(from as u32).u32(seq);
        w.finish().unwrap();
        let c = &mut self.cores[core];
        let h = RoutableHeader::parse(&self.frame[2..]).unwrap();
        c.router.send_upstream(&self.frame, false, &mut c.host);
        c.router
            .route(&self.frame, h.recipients, exclude, &mut c.host);
    }

    fn at(&mut self, core: usize) -> (&mut Router, &mut SimHost) {
        let c = &mut self.cores[core];
        (&mut c.router, &mut c.host)
    }

    /// One loop turn of `core`: up to `batches` batches from its queue, what they resolved,
    /// then its outbox shipped.
    fn turn(&mut self, core: usize, batches: usize) {
        for _ in 0..batches {
            let Some(batch) = self.inboxes[core].pop_front() else {
                break;
            };
            let Batch {
                from, msgs, data, ..
            } = batch;
            let c = &mut self.cores[core];
            for msg in &msgs {
                c.router.handle(from, msg, &data, &mut c.host);
            }
        }
        let c = &mut self.cores[core];
        let (inboxes, capacity) = (&mut self.inboxes, self.capacity);
        c.host.outbox.ship(|to, batch| {
            if inboxes[to].len() >= capacity {
                Err(batch)
            } else {
                inboxes[to].push_back(batch);
                Ok(())
            }
        });
    }

    fn idle(&self) -> bool {
        self.inboxes.iter().all(|q| q.is_empty())
            && self
                .cores
                .iter()
                .all(|c| c.router.is_idle() && c.host.outbox.is_idle())
    }

    /// Runs every core until nothing is in flight anywhere.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.idle() {
                return;
            }
            for core in 0..self.cores.len() {
                self.turn(core, 64);
            }
        }
        panic!("the cores never caught up");
    }

    fn got(&self) -> Vec<Got> {
        self.cores.iter().flat_map(|c| c.host.got.clone()).collect()
    }
}

/// A channel homed on `core` (the `nth` of them).
fn channel_on(core: usize, cores: usize, nth: usize) -> u64 {
    (100..)
        .filter(|&c| home_core(c, cores) == core)
        .nth(nth)
        .unwrap()
}

// ---- directed cases ---------------------------------------------------------------------

#[test]
fn a_datagram_crosses_once_to_each_core_with_subscribers_and_to_no_other() {
    let mut sim = Sim::new(4, false, 8);
    let x = channel_on(1, 4, 0);
    let (sender, here) = (Sim::pid(0, 0), Sim::pid(0, 1));
    let (a, b, c) = (Sim::pid(1, 2), Sim::pid(1, 3), Sim::pid(2, 4));
    for p in [here, a, b, c] {
        let (r, h) = sim.at(p.core());
        r.subscribe(p, x, h);
    }
    // Core 2 also covers x with a range: still one crossing, one delivery.
    let (r, h) = sim.at(2);
    r.range(c, x - 5, x + 5, true, h);
    sim.settle();
    // The other recipient is homed here, with no subscriber.
    sim.send(0, 0, 1, &[x, channel_on(0, 4, 0)], Some(sender));
    // Delivered here at once; one fan-out for core 1 (two subscribers), one for core 2,
    // nothing for core 3.
    assert_eq!(sim.got(), vec![(here, 0, 1)]);
    let batches = &sim.cores[0].host.outbox.batches;
    for (core, fanouts) in [(1, 1), (2, 1), (3, 0)] {
        let n = batches[core]
            .msgs
            .iter()
            .filter(|m| matches!(m, Msg::Fanout { .. }))
            .count();
        assert_eq!(n, fanouts, "fan-outs to core {core}");
        assert_eq!(
            batches[core].msgs.len(),
            fanouts,
            "nothing else to core {core}"
        );
    }
    sim.settle();
    let mut got = sim.got();
    got.sort();
    assert_eq!(got, vec![(here, 0, 1), (a, 0, 1), (b, 0, 1), (c, 0, 1)]);
}

#[test]
fn every_replica_follows_the_subscriptions_of_the_other_cores() {
    // Channel x is homed on core 0; cores 1 and 2 subscribe it (away from its home).
    let mut sim = Sim::new(3, false, 8);
    let x = channel_on(0, 3, 0);
    let (p, q) = (Sim::pid(1, 1), Sim::pid(2, 2));
    let (r, h) = sim.at(1);
    r.subscribe(p, x, h);
    let (r, h) = sim.at(2);
    r.subscribe(q, x, h);
    sim.settle();
    assert_eq!(sim.cores[0].router.remote_cores(x), 0b110);
    assert_eq!(sim.cores[1].router.remote_cores(x), 0b100);
    let (r, h) = sim.at(1);
    r.unsubscribe(p, x, h);
    sim.settle();
    assert_eq!(sim.cores[0].router.remote_cores(x), 0b100);
    assert_eq!(sim.cores[2].router.remote_cores(x), 0);
    let (r, h) = sim.at(2);
    r.unsubscribe(q, x, h);
    sim.settle();
    assert!(sim
        .cores
        .iter()
        .all(|c| c.router.local.remote_channels() == 0));
    // A subscriber on the home core is not replicated: the others send it x in any case.
    let (r, h) = sim.at(0);
    r.subscribe(Sim::pid(0, 3), x, h);
    sim.settle();
    assert!(sim
        .cores
        .iter()
        .all(|c| c.router.local.remote_channels() == 0));
    sim.send(1, 5, 1, &[x], None);
    sim.settle();
    assert_eq!(sim.got(), vec![(Sim::pid(0, 3), 5, 1)]);
}

#[test]
fn a_late_absent_does_not_hide_a_subscription_made_here() {
    // Core 0's last subscriber of x (homed on core 1) leaves; before core 1 hears of it,
    // core 1 subscribes another participant of core 0 to x (a presubscription) and routes a
    // datagram to x.
    let mut sim = Sim::new(2, false, 8);
    let x = channel_on(1, 2, 0);
    let (leaver, joiner) = (Sim::pid(0, 1), Sim::pid(0, 2));
    let (r, h) = sim.at(0);
    r.subscribe(leaver, x, h);
    sim.settle();
    let (r, h) = sim.at(0);
    r.unsubscribe(leaver, x, h);
    sim.turn(0, 64); // ships "absent" to core 1
    let (r, h) = sim.at(1);
    r.subscribe(joiner, x, h);
    sim.turn(1, 64); // reads "absent": the pending subscription still counts
    sim.send(1, 3, 1, &[x], None);
    sim.settle();
    assert_eq!(sim.got(), vec![(joiner, 3, 1)]);
    assert_eq!(sim.cores[1].router.remote_cores(x), 1);
}

#[test]
fn a_full_queue_keeps_a_cores_batches_in_order() {
    let mut sim = Sim::new(2, false, 1);
    let x = 100;
    let receiver = Sim::pid(1, 1);
    let (r, h) = sim.at(1);
    r.subscribe(receiver, x, h);
    sim.settle();
    sim.inboxes[1].push_back(Batch::new(0)); // core 1's queue is full
    sim.send(0, 0, 1, &[x], None);
    sim.turn(0, 0);
    assert!(sim.cores[0].host.outbox.is_stalled());
    sim.send(0, 0, 2, &[x], None);
    sim.turn(0, 0);
    assert_eq!(sim.cores[0].host.outbox.stalled_batches(), 2);
    sim.settle();
    assert_eq!(sim.got(), vec![(receiver, 0, 1), (receiver, 0, 2)]);
}

#[test]
fn a_subscription_made_here_is_seen_by_the_next_datagram_routed_here() {
    // Core 1 subscribes a participant of core 0 (as a presubscription does), then routes a
    // datagram to it: the subscription is ahead of the datagram on the FIFO to core 0.
    let mut sim = Sim::new(3, false, 8);
    let x = 100;
    let receiver = Sim::pid(0, 1);
    let (r, h) = sim.at(1);
    r.subscribe(receiver, x, h);
    sim.send(1, 2, 1, &[x], None);
    sim.settle();
    assert_eq!(sim.got(), vec![(receiver, 2, 1)]);
    // And an unsubscription likewise.
    let (r, h) = sim.at(1);
    r.unsubscribe(receiver, x, h);
    sim.send(1, 2, 2, &[x], None);
    sim.settle();
    assert_eq!(sim.got(), vec![(receiver, 2, 1)]);
}

#[test]
fn a_subscription_made_here_is_announced_upstream_before_the_next_datagram_sent_up() {
    // A client's session subscribes its channel, then sends its login upstream: the answer
    // comes back on that channel, so the upstream MD must have it first, whichever core the
    // subscriber is on (its core announces a first subscriber through core 0, but the
    // datagram goes to core 0 straight from the core that made the subscription).
    for cores in [1, 2, 3, 4] {
        for me in 0..cores {
            for owner in 0..cores {
                let mut sim = Sim::new(cores, true, 8);
                let x = 100;
                let (r, h) = sim.at(me);
                r.subscribe(Sim::pid(owner, 1), x, h);
                sim.send(me, 1, 1, &[101], None);
                // The subscriber's core and core 0 run late, as on a loaded machine.
                for core in (0..cores).rev() {
                    sim.turn(core, 64);
                }
                sim.settle();
                let up = &sim.cores[0].host.upstream;
                assert!(
                    up.announced_from(x, 1, 1),
                    "{cores} cores, subscribed on {me} for core {owner}: {:?}",
                    up.heard
                );
            }
        }
    }
}

#[test]
fn a_subscription_on_its_way_keeps_its_channel_announced_while_the_last_one_leaves() {
    // The channel's last subscriber leaves while a participant subscribes (on its own core or,
    // as a presubscription, through another) and sends upstream: the leaver's core's "last
    // one gone" is not the last word.
    for cores in [2, 3] {
        for me in 0..cores {
            for owner in 0..cores {
                for gone in (1..cores).filter(|&g| g != owner) {
                    let mut sim = Sim::new(cores, true, 8);
                    let x = 100;
                    let (leaver, joiner) = (Sim::pid(gone, 0), Sim::pid(owner, 1));
                    let (r, h) = sim.at(gone);
                    r.subscribe(leaver, x, h);
                    sim.settle();
                    let (r, h) = sim.at(gone);
                    r.unsubscribe(leaver, x, h);
                    sim.turn(gone, 64); // ships "last one gone" to core 0
                    let (r, h) = sim.at(me);
                    r.subscribe(joiner, x, h);
                    sim.send(me, 1, 1, &[101], None);
                    sim.turn(me, 64);
                    sim.turn(0, 64);
                    sim.settle();
                    let up = &sim.cores[0].host.upstream;
                    assert!(
                        up.announced_from(x, 1, 1),
                        "{cores} cores, joined on {me} for {owner}, left on {gone}: {:?}",
                        up.heard
                    );
                    assert!(up.channels.contains(&x));
                }
            }
        }
    }
}

#[test]
fn ranges_go_through_the_authority_and_reach_upstream() {
    let mut sim = Sim::new(2, true, 8);
    let p = Sim::pid(1, 1);
    let (r, h) = sim.at(1);
    r.range(p, 100, 199, true, h);
    r.subscribe(p, 150, h);
    sim.settle();
    for c in &sim.cores {
        assert_eq!(c.router.ranges().coverage_of(p), vec![(100, 199)]);
    }
    let up = &sim.cores[0].host.upstream;
    assert_eq!(up.ranges, (100..=199).collect());
    assert_eq!(up.channels, [150].into());
    let (r, h) = sim.at(1);
    r.range(p, 120, 129, false, h);
    r.drop_ranges(p, h);
    r.unsubscribe(p, 150, h);
    sim.settle();
    for c in &sim.cores {
        assert!(c.router.ranges().is_empty());
    }
    let up = &sim.cores[0].host.upstream;
    assert!(up.ranges.is_empty() && up.channels.is_empty());
}

// ---- the simulation against a model ----------------------------------------------------

/// Channels the simulation uses, and the participants.
const CHANNELS: u64 = 8;
const FIRST_CHANNEL: u64 = 100;
const PARTICIPANTS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    /// Participant `p` sends to `to` (it hears itself if `echo`).
    Send { p: usize, to: Vec<u64>, echo: bool },
    /// Core `via` subscribes or unsubscribes `p` (its own core, or another as a
    /// presubscription does).
    Single {
        p: usize,
        channel: u64,
        on: bool,
        via: usize,
    },
    Range {
        p: usize,
        lo: u64,
        hi: u64,
        add: bool,
    },
    /// `p` registers a post-remove to `to` under sender key `key`...
    PostRemove { p: usize, to: Vec<u64>, key: u64 },
    /// ...or clears those of `key`.
    ClearPostRemoves { p: usize, key: u64 },
    /// `p` disconnects: it leaves every channel and range, and its post-removes fire.
    Leave { p: usize },
    /// One loop turn of a core, reading up to `batches` batches.
    Turn { core: usize, batches: usize },
    /// Every core runs until nothing is in flight.
    Settle,
}

fn op(cores: usize) -> impl Strategy<Value = Op> {
    let p = 0..PARTICIPANTS;
    let ch = FIRST_CHANNEL..FIRST_CHANNEL + CHANNELS;
    prop_oneof![
        6 => (p.clone(), proptest::collection::vec(ch.clone(), 1..4), proptest::bool::weighted(0.1))
            .prop_map(|(p, to, echo)| Op::Send { p, to, echo }),
        4 => (p.clone(), ch.clone(), proptest::bool::weighted(0.7), proptest::bool::weighted(0.2), 0..cores)
            .prop_map(move |(p, channel, on, other, via)| Op::Single {
                p,
                channel,
                on,
                via: if other { via } else { usize::MAX },
            }),
        1 => (p.clone(), ch.clone(), 0..4u64, proptest::bool::weighted(0.6))
            .prop_map(|(p, lo, w, add)| Op::Range { p, lo, hi: (lo + w).min(FIRST_CHANNEL + CHANNELS - 1), add }),
        1 => (p.clone(), proptest::collection::vec(ch.clone(), 1..3), 0..2u64)
            .prop_map(|(p, to, key)| Op::PostRemove { p, to, key }),
        1 => (p.clone(), 0..2u64).prop_map(|(p, key)| Op::ClearPostRemoves { p, key }),
        1 => p.prop_map(|p| Op::Leave { p }),
        6 => (0..cores, 1..4usize).prop_map(|(core, batches)| Op::Turn { core, batches }),
        1 => Just(Op::Settle),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<usize>, usize, bool, Vec<Op>)> {
    (1..=4usize).prop_flat_map(|cores| {
        (
            Just(cores),
            proptest::collection::vec(0..cores, PARTICIPANTS),
            1..4usize,
            any::<bool>(),
            proptest::collection::vec(op(cores), 1..150),
        )
    })
}

/// What the model knows of whether a participant gets a datagram through one channel.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Known {
    Yes,
    No,
    Unknown,
}

/// One datagram sent, and when: its sender as its tag names it (`PARTICIPANTS + p` for the
/// post-removes of `p`), the core that routed it, and the participant it must not reach.
struct Sent {
    t: usize,
    from: usize,
    core: usize,
    seq: u32,
    to: Vec<u64>,
    excluded: Option<usize>,
}

/// Post-remove limits in the simulation (a fifth is refused).
const PR_LIMITS: Limits = Limits {
    subscriptions: usize::MAX,
    post_removes: 4,
};

/// Every single-channel subscription change, by (participant, channel): (time, the core that
/// made it, subscribed or not).
type Changes = BTreeMap<(usize, u64), Vec<(usize, usize, bool)>>;

/// The subscription state at a settle point, read from the routers.
#[derive(Default, Clone)]
struct Snapshot {
    singles: BTreeSet<(usize, u64)>,
    ranges: BTreeSet<(usize, u64)>,
}

#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn run_scenario(
    cores: usize,
    homes: &[usize],
    capacity: usize,
    upstream: bool,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(cores, upstream, capacity);
    let pid = |p: usize| Sim::pid(homes[p], p);
    let mut ops = ops.to_vec();
    ops.push(Op::Settle);

    let mut sent: Vec<Sent> = Vec::new();
    let mut seq = [0u32; 2 * PARTICIPANTS];
    let mut left = [None::<usize>; PARTICIPANTS];
    let mut post_removes: Vec<Participant> =
        (0..PARTICIPANTS).map(|_| Participant::default()).collect();
    let mut singles: Changes = BTreeMap::new();
    // Every range change, by participant: its time; and the coverage it must end with.
    let mut range_ops: Vec<Vec<usize>> = vec![Vec::new(); PARTICIPANTS];
    let mut coverage: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); PARTICIPANTS];
    // Settle points and what the routers held then (time usize::MAX: the start).
    let mut settles: Vec<(usize, Snapshot)> = Vec::new();

    for (t, op) in ops.iter().enumerate() {
        match *op {
            Op::Send { p, ref to, echo } => {
                if left[p].is_some() {
                    continue;
                }
                seq[p] += 1;
                let exclude = (!echo).then_some(pid(p));
                sim.send(homes[p], p, seq[p], to, exclude);
                sent.push(Sent {
                    t,
                    from: p,
                    core: homes[p],
                    seq: seq[p],
                    to: to.clone(),
                    excluded: (!echo).then_some(p),
                });
            }
            Op::Single {
                p,
                channel,
                on,
                via,
            } => {
                if left[p].is_some() {
                    continue;
                }
                let via = if via == usize::MAX { homes[p] } else { via };
                let (r, h) = sim.at(via);
                if on {
                    r.subscribe(pid(p), channel, h);
                } else {
                    r.unsubscribe(pid(p), channel, h);
                }
                singles.entry((p, channel)).or_default().push((t, via, on));
            }
            Op::Range { p, lo, hi, add } => {
                if left[p].is_some() {
                    continue;
                }
                let (r, h) = sim.at(homes[p]);
                r.range(pid(p), lo, hi, add, h);
                range_ops[p].push(t);
                for c in lo..=hi {
                    if add {
                        coverage[p].insert(c);
                    } else {
                        coverage[p].remove(&c);
                    }
                }
            }
            Op::Leave { p } => {
                if left[p].is_some() {
                    continue;
                }
                left[p] = Some(t);
                let home = homes[p];
                sim.cores[home].host.gone.insert(pid(p));
                let (r, h) = sim.at(home);
                for c in FIRST_CHANNEL..FIRST_CHANNEL + CHANNELS {
                    if singles.contains_key(&(p, c)) {
                        r.unsubscribe(pid(p), c, h);
                        singles.entry((p, c)).or_default().push((t, home, false));
                    }
                }
                r.drop_ranges(pid(p), h);
                range_ops[p].push(t);
                coverage[p].clear();
                // Its post-removes, routed as if it had sent them (upstream too).
                let (mut routes, mut clears) = (Vec::new(), Vec::new());
                let kept = &post_removes[p].post_removes;
                prop_assert_eq!(post_remove_frames(kept, &mut routes, &mut clears), 0);
                let keys: BTreeSet<u64> = kept.iter().map(|(k, _)| *k).collect();
                prop_assert_eq!(otp_wire::frames(&clears).count(), keys.len());
                for frame in otp_wire::frames(&routes) {
                    let header = RoutableHeader::parse(&frame[2..]).unwrap();
                    r.send_upstream(frame, false, h);
                    r.route(frame, header.recipients, Some(pid(p)), h);
                    let (from, n) = read_tag(frame);
                    sent.push(Sent {
                        t,
                        from,
                        core: home,
                        seq: n,
                        to: header.recipients.iter().collect(),
                        excluded: Some(p),
                    });
                }
            }
            Op::PostRemove { p, ref to, key } => {
                if left[p].is_some() {
                    continue;
                }
                let from = PARTICIPANTS + p;
                seq[from] += 1;
                let mut frame = Vec::new();
                let mut w = Writer::internal(&mut frame, to, 1000 + from as u64, 2000);
                w.u32(from as u32).u32(seq[from]);
                w.finish().unwrap();
                post_removes[p].add_post_remove(key, frame[2..].to_vec(), PR_LIMITS);
            }
            Op::ClearPostRemoves { p, key } => post_removes[p].clear_post_removes(key),
            Op::Turn { core, batches } => sim.turn(core, batches),
            Op::Settle => {
                sim.settle();
                let prev = settles.last().map(|(t, _)| *t);
                let snap = check_settled(&sim, prev, &singles, &coverage, upstream, homes)?;
                settles.push((t, snap));
            }
        }
    }

    // Order and exactly-once: per receiver, each sender's numbers strictly increase.
    let got = sim.got();
    let mut latest: BTreeMap<(Pid, usize), u32> = BTreeMap::new();
    for &(to, from, n) in &got {
        if let Some(prev) = latest.insert((to, from), n) {
            prop_assert!(
                prev < n,
                "{to} got {n} from {from} after {prev} (order or duplicate)"
            );
        }
    }
    // A participant's post-removes reach each participant after everything it sent.
    let mut fired: HashSet<(Pid, usize)> = HashSet::new();
    for &(to, from, n) in &got {
        if from >= PARTICIPANTS {
            fired.insert((to, from - PARTICIPANTS));
        } else {
            prop_assert!(
                !fired.contains(&(to, from)),
                "{to} got {n} from {from} after its post-removes"
            );
        }
    }
    let got: HashSet<Got> = got.into_iter().collect();

    // Who each datagram had to reach, and who it must not have.
    for s in &sent {
        let settled = settles.iter().rev().find(|(t, _)| *t < s.t);
        let before = settled.map(|(_, snap)| snap.clone()).unwrap_or_default();
        let start = settled.map(|(t, _)| *t);
        let end = settles
            .iter()
            .find(|(t, _)| *t > s.t)
            .expect("a final settle")
            .0;
        for q in 0..PARTICIPANTS {
            let mut verdict = Known::No;
            for &c in &s.to {
                let single = single_known(&singles, &before, q, c, s, start, end);
                let ranged = if range_ops[q]
                    .iter()
                    .any(|&t| start.is_none_or(|st| t > st) && t < end)
                {
                    Known::Unknown
                } else if before.ranges.contains(&(q, c)) {
                    Known::Yes
                } else {
                    Known::No
                };
                for k in [single, ranged] {
                    verdict = match (verdict, k) {
                        (Known::Yes, _) | (_, Known::Yes) => Known::Yes,
                        (Known::Unknown, _) | (_, Known::Unknown) => Known::Unknown,
                        _ => Known::No,
                    };
                }
            }
            if s.excluded == Some(q) {
                verdict = Known::No;
            }
            // A participant that leaves before the next settle may lose what was on its way.
            if verdict == Known::Yes && left[q].is_some_and(|t| t < end) {
                verdict = Known::Unknown;
            }
            let reached = got.contains(&(pid(q), s.from, s.seq));
            match verdict {
                Known::Yes => prop_assert!(
                    reached,
                    "datagram {} of {} (t={}) to {:?} missed participant {}",
                    s.seq,
                    s.from,
                    s.t,
                    s.to,
                    q
                ),
                Known::No => prop_assert!(
                    !reached,
                    "datagram {} of {} (t={}) to {:?} reached participant {}",
                    s.seq,
                    s.from,
                    s.t,
                    s.to,
                    q
                ),
                Known::Unknown => {}
            }
        }
    }

    // Upstream: every datagram once, each sender's in order.
    let up = &sim.cores[0].host.upstream.datagrams;
    if upstream {
        prop_assert_eq!(up.len(), sent.len());
        let mut latest = [0u32; 2 * PARTICIPANTS];
        for &(from, n) in up {
            prop_assert!(
                latest[from] < n,
                "upstream got {} of {} out of order",
                n,
                from
            );
            latest[from] = n;
        }
    } else {
        prop_assert!(up.is_empty());
    }
    Ok(())
}

/// Whether participant `q` gets datagram `s` through its single subscription to `c`: known
/// when every change to it between the settle points around `s` was made on `s`'s core.
fn single_known(
    singles: &Changes,
    before: &Snapshot,
    q: usize,
    c: u64,
    s: &Sent,
    start: Option<usize>,
    end: usize,
) -> Known {
    let mut on = before.singles.contains(&(q, c));
    for &(t, via, change) in singles.get(&(q, c)).map_or(&[][..], |v| &v[..]) {
        if start.is_some_and(|st| t <= st) || t >= end {
            continue;
        }
        if via != s.core {
            return Known::Unknown;
        }
        if t < s.t {
            on = change;
        }
    }
    if on {
        Known::Yes
    } else {
        Known::No
    }
}

/// Checks a settled process and returns what its routers hold; `prev` is when the process
/// last settled.
fn check_settled(
    sim: &Sim,
    prev: Option<usize>,
    singles: &Changes,
    coverage: &[BTreeSet<u64>],
    upstream: bool,
    homes: &[usize],
) -> Result<Snapshot, TestCaseError> {
    let authority = sim.cores[0].router.ranges();
    // Which cores' participants subscribe a channel; every replica must say the same.
    let owners = |c: u64| -> u64 {
        sim.cores
            .iter()
            .enumerate()
            .filter(|(_, core)| !core.router.subscribers(c).is_empty())
            .fold(0, |m, (i, _)| m | 1 << i)
    };
    for core in &sim.cores {
        core.router
            .check_replica(FIRST_CHANNEL..FIRST_CHANNEL + CHANNELS, &owners);
    }
    let mut snap = Snapshot::default();
    for p in 0..PARTICIPANTS {
        let pid = Sim::pid(homes[p], p);
        // Every replica equals the authority, and each participant's coverage is what its own
        // changes, in order, make it.
        let runs = authority.coverage_of(pid);
        for c in &sim.cores[1..] {
            prop_assert_eq!(&c.router.ranges().coverage_of(pid), &runs);
        }
        let covered: BTreeSet<u64> = runs.iter().flat_map(|&(lo, hi)| lo..=hi).collect();
        prop_assert_eq!(&covered, &coverage[p], "coverage of {}", p);
        for c in FIRST_CHANNEL..FIRST_CHANNEL + CHANNELS {
            if covered.contains(&c) {
                snap.ranges.insert((p, c));
            }
            let on = sim.cores[pid.core()].router.subscribers(c).contains(&pid);
            if on {
                snap.singles.insert((p, c));
            }
            // Changes all made on one core since the last settle apply in order.
            let since: Vec<_> = singles
                .get(&(p, c))
                .map_or(&[][..], |v| &v[..])
                .iter()
                .filter(|(t, _, _)| prev.is_none_or(|p| *t > p))
                .collect();
            if let Some(&&(_, via, change)) = since.last() {
                if since.iter().all(|(_, v, _)| *v == via) {
                    prop_assert_eq!(on, change, "{} on {} after changes from core {}", p, c, via);
                }
            }
        }
    }
    if upstream {
        let up = &sim.cores[0].host.upstream;
        let subscribed: BTreeSet<u64> = (FIRST_CHANNEL..FIRST_CHANNEL + CHANNELS)
            .filter(|&c| owners(c) != 0)
            .collect();
        prop_assert_eq!(&up.channels, &subscribed);
        let covered: BTreeSet<u64> = authority
            .covered_runs()
            .iter()
            .flat_map(|&(lo, hi)| lo..=hi)
            .collect();
        prop_assert_eq!(&up.ranges, &covered);
    }
    Ok(snap)
}

proptest! {
    // ROUTER_SIM_CASES=100000 searches deeper (100,000 take about 16 s in release).
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("ROUTER_SIM_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)
    ))]

    /// Guarantees 1 to 6 of the module documentation, over random processes of one to four
    /// cores, random queue sizes, and random interleavings of sends, subscription changes,
    /// departures and loop turns.
    #[test]
    fn the_routing_guarantees_hold((cores, homes, capacity, upstream, ops) in scenario()) {
        run_scenario(cores, &homes, capacity, upstream, &ops)?;
    }
}

//! The ordered routing protocol between cores, free of I/O: each core's `Router` (the
//! subscriptions of its own participants, its replica of which other cores have subscribers
//! of each channel, its range-map replica) and `Outbox` (what it sends the other cores in a
//! loop turn, shipped in order).
//!
//! The core feeds the router datagrams from its participants and messages from other cores;
//! the router answers through a `Host`: the outbox, deliveries to the core's own participants,
//! and (core 0) what the upstream MD must hear.
//!
//! # The protocol
//!
//! A core keeps the single-channel subscriptions of its own participants. Every channel has a
//! home core (`home_core`), which gets the channel's datagrams from every other core in any
//! case; so only subscriptions away from the home are replicated: when a channel gains its
//! first local subscriber on a core other than its home, or loses its last, that core tells
//! every other core (`Present` / `Absent`), and each keeps, per channel, the set of those
//! cores (in the same hash entry as its own subscribers). Subscriptions change rarely and
//! datagrams flow often, so every delivery takes at most one crossing: routing a datagram read
//! on core A, A delivers at once to its own subscribers (single channels and ranges) and sends
//! the bytes once to each other core that may have subscribers (the home core, the replicated
//! ones, the cores of range subscribers: `Fanout`), which delivers to its own. An object's
//! channels are subscribed on their home core (the role instance that owns the object lives
//! there), so they cost no replica and no broadcast. A subscription made on A for a
//! participant of another core B (a presubscription) goes to B; unless B is the channel's
//! home, A counts B as a subscriber of that channel until B acknowledges it (`Applied`), so
//! A's next datagrams reach it. Range changes go to core 0, which applies them and replays
//! them to every replica. With an upstream MD, a home core tells core 0 alone of its first and
//! last subscribers (`Present`/`Absent`), so core 0 knows of every subscription.
//!
//! # Guarantees (each has a test in `router/tests.rs`)
//!
//! 1. **Order per sender.** Datagrams routed by one core for one sender reach every
//!    participant in the order they were routed, whatever channels they name and whichever
//!    cores subscribe them: a core delivers to its own participants at once, and every other
//!    core gets them on the one FIFO queue between the two. (The core routes a connection's
//!    datagrams in the order read, so this is the per-connection order rule of Astron; and a
//!    departed participant's post-removes, routed by its core after everything it sent, reach
//!    everyone after what it sent.)
//! 2. **Exactly once, never back.** A datagram reaches a participant at most once, however
//!    many of its recipients (channels and ranges) it subscribes, and never the `exclude`d
//!    sender: each core gets it at most once and delivers only to its own participants, each
//!    once.
//! 3. **Subscriptions take effect in order on the core that makes them.** A subscribe or
//!    unsubscribe made on core A (for any participant, of any core) is seen by every datagram
//!    routed on A after it, and by none routed before it: for a participant of another core
//!    the change travels on the same FIFO as A's later datagrams. Changes made on other cores
//!    are seen once they arrive (after any loop turn in which every core has caught up).
//! 4. **One range order.** Every replica applies the range changes in the authority's order,
//!    so once the cores have caught up each replica equals the authority's map. A range change
//!    is not immediate even on the core that made it.
//! 5. **Upstream in step.** Once the cores have caught up, the channels announced upstream are
//!    exactly those with a subscriber, and the ranges announced upstream cover exactly the
//!    channels some range covers; datagrams sent upstream from one core arrive in the order sent.
//!    A subscription made on core A is announced upstream (if it needs to be) before any
//!    datagram A sends upstream after it, and stays announced while it lasts (a session's
//!    login goes upstream just after it subscribed its channel, and the answer comes back on
//!    it): A's `Present` reaches core 0 before A's later datagrams do, and a subscription A
//!    makes for another core's participant is held announced by core 0 until that core has it.
//!    (Guarantees 3 and 5 are also why a home core's subscriptions need no replica: every
//!    core's datagrams reach the home core on its FIFO, after any change made there.)
//! 6. **Bounded and drained.** Once the cores have caught up, every replica equals the cores'
//!    own subscriptions away from each channel's home, and nothing is pending or held.
//!
//! Not the router's business: a participant that has gone (its slot reused) is recognised by
//! the host through the generation in its `Pid`, so a late delivery to it is dropped there.

use super::{home_core, Pid, RangeMap, SingleShard};
use otp_wire::{Recipients, RoutableHeader};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::VecDeque;

/// A message of the routing protocol between cores. Bulk bytes travel beside it in its
/// `Batch::data`, named by offset and length.
#[derive(Debug)]
pub enum Msg {
    /// Subscribe a participant of the receiving core (the sender made the subscription for
    /// it), then acknowledge with `Applied`. `held`: core 0 holds the channel announced
    /// upstream until the receiving core has the subscription (`UpstreamHold`), and is to be
    /// told when it has (`UpstreamRelease`).
    Subscribe {
        pid: Pid,
        channel: u64,
        held: bool,
        /// The sender counts the receiving core as a subscriber until `Applied`.
        ack: bool,
    },
    /// Unsubscribe a participant of the receiving core.
    Unsubscribe {
        pid: Pid,
        channel: u64,
    },
    /// The sending core has a subscription made for it by the receiving core (`Subscribe`):
    /// what it says of the channel from now on (`Present`/`Absent`) is current.
    Applied {
        channel: u64,
    },
    /// The sending core's participants gained their first subscription to `channel`...
    Present {
        channel: u64,
    },
    /// ...or lost their last.
    Absent {
        channel: u64,
    },
    /// Deliver `data[off..off+len]` (a framed datagram) to the receiving core's subscribers
    /// of its recipients (single channels and ranges), except `exclude`.
    Fanout {
        off: u32,
        len: u32,
        exclude: Option<Pid>,
    },
    /// Range subscription changes, sent to the range authority (core 0)...
    RangeOp {
        pid: Pid,
        lo: u64,
        hi: u64,
        add: bool,
    },
    RangeDrop {
        pid: Pid,
    },
    /// ...which applies them and replays them, in its order, to every other core's replica.
    RangeApply {
        pid: Pid,
        lo: u64,
        hi: u64,
        add: bool,
    },
    /// A subscription made on the sending core is on its way to its participant's core (to
    /// core 0, ahead of the sending core's later datagrams upstream)...
    UpstreamHold {
        channel: u64,
    },
    /// ...and has arrived (from the participant's core, after its `Present`). `core`: the
    /// core that made the subscription.
    UpstreamRelease {
        channel: u64,
        core: usize,
    },
    /// A framed datagram `data[off..off+len]` for the upstream MD (to core 0).
    UpstreamSend {
        off: u32,
        len: u32,
        /// `Upstream::Owed` rather than `Upstream::Datagram`.
        owed: bool,
    },
}

/// What one core sends another in one loop turn: the protocol's messages, the bytes they
/// name, and the host's own messages (`X`: new connections and the like), which the router
/// never reads and whose order relative to the protocol's does not matter.
pub struct Batch<X> {
    pub from: usize,
    pub msgs: Vec<Msg>,
    pub data: Vec<u8>,
    pub extra: Vec<X>,
}

impl<X> Batch<X> {
    pub fn new(from: usize) -> Batch<X> {
        Batch {
            from,
            msgs: Vec::new(),
            data: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.extra.is_empty()
    }

    /// Appends bytes to the batch's data; returns where they start.
    #[inline]
    pub fn push_bytes(&mut self, bytes: &[u8]) -> u32 {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        off
    }
}

/// One core's outgoing traffic: this turn's batch for each other core, and the batches that
/// wait, in order, because that core's queue was full.
pub struct Outbox<X> {
    me: usize,
    batches: Vec<Batch<X>>,
    waiting: Vec<VecDeque<Batch<X>>>,
}

impl<X> Outbox<X> {
    pub fn new(me: usize, cores: usize) -> Outbox<X> {
        assert!(cores <= 64, "a core set is a 64-bit mask");
        Outbox {
            me,
            batches: (0..cores).map(|_| Batch::new(me)).collect(),
            waiting: (0..cores).map(|_| VecDeque::new()).collect(),
        }
    }

    /// This turn's batch for `core` (never this core's own).
    #[inline]
    pub fn batch(&mut self, core: usize) -> &mut Batch<X> {
        debug_assert_ne!(core, self.me);
        &mut self.batches[core]
    }

    #[inline]
    pub fn push(&mut self, core: usize, msg: Msg) {
        self.batch(core).msgs.push(msg);
    }

    /// Queues one of the host's own messages for `core`.
    pub fn push_extra(&mut self, core: usize, msg: X) {
        self.batch(core).extra.push(msg);
    }

    /// True while some batch waits to be handed over (the core then stops reading its
    /// sockets until they drain).
    pub fn is_stalled(&self) -> bool {
        self.waiting.iter().any(|q| !q.is_empty())
    }

    /// Batches waiting for a full queue (the core's backlog).
    pub fn stalled_batches(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }

    /// True when nothing waits to be shipped (for tests).
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.batches.iter().all(Batch::is_empty) && !self.is_stalled()
    }

    /// End of a loop turn: hands each other core its batch through `send`, which gives a
    /// batch back when that core's queue is full; it then waits, in order, and goes first next
    /// time. Each pair of cores is one FIFO: nothing else needs to wait (no core acts for
    /// another, so no order spans two queues).
    pub fn ship(&mut self, mut send: impl FnMut(usize, Batch<X>) -> Result<(), Batch<X>>) {
        let me = self.me;
        for core in 0..self.batches.len() {
            if core == me {
                continue;
            }
            if !self.batches[core].is_empty() {
                // The next batch will likely be as large: size it so it does not regrow.
                let (m, d) = (self.batches[core].msgs.len(), self.batches[core].data.len());
                let next = Batch {
                    from: me,
                    msgs: Vec::with_capacity(m),
                    data: Vec::with_capacity(d),
                    extra: Vec::new(),
                };
                let batch = std::mem::replace(&mut self.batches[core], next);
                self.waiting[core].push_back(batch);
            }
            while let Some(batch) = self.waiting[core].pop_front() {
                if let Err(batch) = send(core, batch) {
                    self.waiting[core].push_front(batch);
                    break;
                }
            }
        }
    }
}

/// What the router needs from the core it runs on.
pub trait Host {
    /// The host's own messages between cores, which travel beside the protocol's.
    type Extra;
    /// Where messages to other cores go.
    fn outbox(&mut self) -> &mut Outbox<Self::Extra>;
    /// Writes a framed datagram to a participant of this core (which may have gone since).
    fn deliver(&mut self, pid: Pid, frame: &[u8]);
    /// Core 0 only, when an upstream MD is configured: what it must hear.
    fn upstream(&mut self, event: Upstream<'_>);
}

/// What the upstream MD must be told (the host turns these into control messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream<'a> {
    /// A channel gained its first subscriber in this process...
    Subscribed(u64),
    /// ...or lost its last one.
    Unsubscribed(u64),
    /// Part of this range had no subscriber before.
    RangeAdded(u64, u64),
    /// This run lost its last subscriber.
    RangeRemoved(u64, u64),
    /// A framed datagram from one of this process's participants.
    Datagram(&'a [u8]),
    /// A framed datagram the upstream MD must get even if the link is down now (a departed
    /// participant's fired post-removes): the host keeps it for the link's return.
    Owed(&'a [u8]),
}

/// Per core, a count that may run below zero for a while (a release can overtake its hold:
/// the two come from different cores). The entry goes when every count is back to zero.
type Counts = SmallVec<[(u8, i32); 2]>;

/// Adds `delta` to `core`'s count; returns true when every count is zero (drop the entry).
fn count(counts: &mut Counts, core: usize, delta: i32) -> bool {
    match counts.iter_mut().find(|(c, _)| *c as usize == core) {
        Some((_, n)) => *n += delta,
        None => counts.push((core as u8, delta)),
    }
    counts.retain(|(_, n)| *n != 0);
    counts.is_empty()
}

/// One core's part of the routing protocol (see the module documentation).
pub struct Router {
    me: usize,
    cores: usize,
    /// Whether an upstream MD is configured (then core 0 reports first and last subscribers).
    upstream: bool,
    /// For each channel, this core's participants that subscribe it and the other cores whose
    /// participants do (one entry, one probe).
    local: SingleShard,
    /// Subscriptions this core made for participants of other cores, not yet acknowledged
    /// (`Applied`): until then those cores count as subscribers of the channel here.
    pending: FxHashMap<u64, Counts>,
    ranges: RangeMap,
    /// Scratch: the local targets of the datagram at hand.
    targets: Vec<Pid>,
    routed: u64,
    delivered: u64,
    /// Core 0: channels held announced upstream while subscriptions to them made on one core
    /// travel to their participant's core (holds minus releases, per core that made them).
    holds: FxHashMap<u64, Counts>,
}

impl Router {
    /// The router of core `me` of `cores`.
    pub fn new(me: usize, cores: usize, upstream: bool) -> Router {
        assert!(me < cores && cores <= 64, "a core set is a 64-bit mask");
        Router {
            me,
            cores,
            upstream,
            local: SingleShard::default(),
            pending: FxHashMap::default(),
            ranges: RangeMap::default(),
            targets: Vec::new(),
            routed: 0,
            delivered: 0,
            holds: FxHashMap::default(),
        }
    }

    /// Datagrams routed here; deliveries made here (to this core's participants).
    pub fn routed(&self) -> u64 {
        self.routed
    }
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
    /// Channels this core's participants subscribe.
    pub fn channels(&self) -> usize {
        self.local.len()
    }
    /// This core's replica of the range map (core 0: the authority).
    pub fn ranges(&self) -> &RangeMap {
        &self.ranges
    }
    /// This core's participants that subscribe `channel`.
    pub fn subscribers(&self, channel: u64) -> &[Pid] {
        self.local.lookup(channel)
    }
    /// The other cores this core believes subscribe `channel` (bit = core).
    pub fn remote_cores(&self, channel: u64) -> u64 {
        let mut mask = self.local.remote(channel);
        if let Some(p) = self.pending.get(&channel) {
            for &(c, _) in p {
                mask |= 1 << c;
            }
        }
        mask
    }

    // ---- subscriptions -----------------------------------------------------------------

    /// Subscribes `pid` (of any core) to `channel`.
    ///
    /// For a participant of another core B the subscription goes to B; this core counts B
    /// as a subscriber until B acknowledges it, so its next datagrams reach the participant.
    /// Upstream, B announces a first subscriber through core 0 (`Present`); but a datagram
    /// this core sends upstream next goes to core 0 directly, and could get there (and be
    /// answered on the channel) first. So unless B is core 0 (which reads the subscription
    /// before the datagram), core 0 holds the channel announced (`UpstreamHold`, ahead of this
    /// core's later datagrams to core 0) until B has the subscription (`UpstreamRelease`).
    pub fn subscribe<H: Host>(&mut self, pid: Pid, channel: u64, host: &mut H) {
        let owner = pid.core();
        if owner == self.me {
            self.local_subscribe(pid, channel, host);
            return;
        }
        let held = self.upstream && owner != 0;
        if held {
            self.send(0, Msg::UpstreamHold { channel }, host);
        }
        // Datagrams to a channel always go to its home core: only another core needs counting.
        let ack = owner != home_core(channel, self.cores);
        if ack {
            count(self.pending.entry(channel).or_default(), owner, 1);
        }
        host.outbox().push(
            owner,
            Msg::Subscribe {
                pid,
                channel,
                held,
                ack,
            },
        );
    }

    /// Unsubscribes `pid` (of any core) from `channel`. For another core's participant the
    /// change reaches its core ahead of this core's later datagrams, which that core filters.
    pub fn unsubscribe<H: Host>(&mut self, pid: Pid, channel: u64, host: &mut H) {
        let owner = pid.core();
        if owner == self.me {
            self.local_unsubscribe(pid, channel, host);
        } else {
            host.outbox().push(owner, Msg::Unsubscribe { pid, channel });
        }
    }

    fn local_subscribe<H: Host>(&mut self, pid: Pid, channel: u64, host: &mut H) {
        let was = self.announced(channel);
        if self.local.subscribe(pid, channel) {
            self.broadcast(channel, true, host);
            self.announce(channel, was, host);
        }
    }

    fn local_unsubscribe<H: Host>(&mut self, pid: Pid, channel: u64, host: &mut H) {
        let was = self.announced(channel);
        if self.local.unsubscribe(pid, channel) {
            self.broadcast(channel, false, host);
            self.announce(channel, was, host);
        }
    }

    /// Tells every other core that this core's participants now subscribe `channel`
    /// (`present`), or no longer do. The channel's home core tells only core 0 (for the
    /// upstream MD): the others send the home core the channel's datagrams in any case.
    fn broadcast<H: Host>(&mut self, channel: u64, present: bool, host: &mut H) {
        let home = home_core(channel, self.cores) == self.me;
        if home && (self.me == 0 || !self.upstream) {
            return;
        }
        for core in (0..self.cores).filter(|&c| c != self.me && (!home || c == 0)) {
            let msg = if present {
                Msg::Present { channel }
            } else {
                Msg::Absent { channel }
            };
            host.outbox().push(core, msg);
        }
    }

    /// Core 0 with an upstream: whether the upstream MD must have `channel` announced (some
    /// core subscribes it, or a subscription to it is on its way).
    fn announced(&self, channel: u64) -> bool {
        self.me == 0
            && self.upstream
            && (self.local.anywhere(channel) || self.holds.contains_key(&channel))
    }

    /// Core 0 with an upstream: tells it of a change of `announced(channel)` from `was`.
    fn announce<H: Host>(&mut self, channel: u64, was: bool, host: &mut H) {
        if self.me != 0 || !self.upstream {
            return;
        }
        match (was, self.announced(channel)) {
            (false, true) => host.upstream(Upstream::Subscribed(channel)),
            (true, false) => host.upstream(Upstream::Unsubscribed(channel)),
            _ => {}
        }
    }

    /// Adds (or removes) `lo..=hi` to `pid`'s ranges, through the authority.
    pub fn range<H: Host>(&mut self, pid: Pid, lo: u64, hi: u64, add: bool, host: &mut H) {
        self.send(0, Msg::RangeOp { pid, lo, hi, add }, host);
    }

    /// Removes every range of `pid` (a participant that has gone), through the authority.
    pub fn drop_ranges<H: Host>(&mut self, pid: Pid, host: &mut H) {
        self.send(0, Msg::RangeDrop { pid }, host);
    }

    /// Core 0: apply a range change, replay it to every replica, tell the upstream MD.
    fn authority_range<H: Host>(&mut self, pid: Pid, lo: u64, hi: u64, add: bool, host: &mut H) {
        for core in 1..self.cores {
            host.outbox()
                .push(core, Msg::RangeApply { pid, lo, hi, add });
        }
        if add {
            if self.ranges.add(pid, lo, hi) && self.upstream {
                host.upstream(Upstream::RangeAdded(lo, hi));
            }
        } else {
            for (a, b) in self.ranges.remove(pid, lo, hi) {
                if self.upstream {
                    host.upstream(Upstream::RangeRemoved(a, b));
                }
            }
        }
    }

    fn authority_drop<H: Host>(&mut self, pid: Pid, host: &mut H) {
        for (lo, hi) in self.ranges.coverage_of(pid) {
            self.authority_range(pid, lo, hi, false, host);
        }
    }

    /// Sends a message without bytes to `core`; to this core, handles it at once.
    fn send<H: Host>(&mut self, core: usize, msg: Msg, host: &mut H) {
        if core == self.me {
            self.handle(self.me, &msg, &[], host);
        } else {
            host.outbox().push(core, msg);
        }
    }

    // ---- messages from other cores -----------------------------------------------------

    /// Handles a message from core `from`; `data` is its batch's bytes.
    pub fn handle<H: Host>(&mut self, from: usize, msg: &Msg, data: &[u8], host: &mut H) {
        match *msg {
            Msg::Fanout { off, len, exclude } => {
                let (off, len) = (off as usize, len as usize);
                self.fan_out(&data[off..off + len], exclude, host);
            }
            Msg::Subscribe {
                pid,
                channel,
                held,
                ack,
            } => {
                debug_assert_eq!(pid.core(), self.me);
                self.local_subscribe(pid, channel, host);
                if ack {
                    host.outbox().push(from, Msg::Applied { channel });
                }
                if held {
                    self.send(
                        0,
                        Msg::UpstreamRelease {
                            channel,
                            core: from,
                        },
                        host,
                    );
                }
            }
            Msg::Unsubscribe { pid, channel } => {
                debug_assert_eq!(pid.core(), self.me);
                self.local_unsubscribe(pid, channel, host);
            }
            Msg::Applied { channel } => {
                if let Some(p) = self.pending.get_mut(&channel) {
                    if count(p, from, -1) {
                        self.pending.remove(&channel);
                    }
                }
            }
            Msg::Present { channel } => {
                let was = self.announced(channel);
                self.local.set_remote(channel, from, true);
                self.announce(channel, was, host);
            }
            Msg::Absent { channel } => {
                let was = self.announced(channel);
                self.local.set_remote(channel, from, false);
                self.announce(channel, was, host);
            }
            Msg::RangeOp { pid, lo, hi, add } => self.authority_range(pid, lo, hi, add, host),
            Msg::RangeDrop { pid } => self.authority_drop(pid, host),
            Msg::RangeApply { pid, lo, hi, add } => {
                if add {
                    self.ranges.add(pid, lo, hi);
                } else {
                    self.ranges.remove(pid, lo, hi);
                }
            }
            Msg::UpstreamHold { channel } => self.hold(channel, from, 1, host),
            Msg::UpstreamRelease { channel, core } => self.hold(channel, core, -1, host),
            Msg::UpstreamSend { off, len, owed } => {
                let frame = &data[off as usize..off as usize + len as usize];
                host.upstream(if owed {
                    Upstream::Owed(frame)
                } else {
                    Upstream::Datagram(frame)
                });
            }
        }
    }

    /// Core 0: a subscription to `channel` made on `core` is on its way to its participant's
    /// core (+1), or has arrived (-1).
    fn hold<H: Host>(&mut self, channel: u64, core: usize, delta: i32, host: &mut H) {
        let was = self.announced(channel);
        if count(self.holds.entry(channel).or_default(), core, delta) {
            self.holds.remove(&channel);
        }
        self.announce(channel, was, host);
    }

    // ---- routing -------------------------------------------------------------------------

    /// Queues a framed datagram for the upstream MD (if one is configured), from any core;
    /// `owed`: one it must get even if the link is down now (see `Upstream::Owed`).
    pub fn send_upstream<H: Host>(&mut self, frame: &[u8], owed: bool, host: &mut H) {
        if !self.upstream {
            return;
        }
        if self.me == 0 {
            host.upstream(if owed {
                Upstream::Owed(frame)
            } else {
                Upstream::Datagram(frame)
            });
        } else {
            let batch = host.outbox().batch(0);
            let off = batch.push_bytes(frame);
            batch.msgs.push(Msg::UpstreamSend {
                off,
                len: frame.len() as u32,
                owed,
            });
        }
    }

    /// Routes a framed datagram (with `recipients`, from its `RoutableHeader`) to every
    /// subscriber of its recipients, except `exclude`: this core's at once, and once to each
    /// other core with subscribers, which delivers to its own.
    pub fn route<H: Host>(
        &mut self,
        frame: &[u8],
        recipients: Recipients<'_>,
        exclude: Option<Pid>,
        host: &mut H,
    ) {
        self.routed += 1;
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        let mut cores = 0u64;
        for channel in recipients.iter() {
            if let Some(subs) = self.local.get(channel) {
                targets.extend_from_slice(&subs.local);
                cores |= subs.remote;
            }
            if !self.pending.is_empty() {
                if let Some(p) = self.pending.get(&channel) {
                    for &(c, _) in p {
                        cores |= 1 << c;
                    }
                }
            }
            for &pid in self.ranges.lookup(channel) {
                if pid.core() == self.me {
                    targets.push(pid);
                } else {
                    cores |= 1 << pid.core();
                }
            }
            // The home core's own subscriptions are not replicated: it always gets the bytes.
            cores |= 1 << home_core(channel, self.cores);
        }
        self.deliver_all(frame, &mut targets, exclude, host);
        self.targets = targets;
        cores &= !(1 << self.me);
        let len = frame.len() as u32;
        while cores != 0 {
            let core = cores.trailing_zeros() as usize;
            cores &= cores - 1;
            let batch = host.outbox().batch(core);
            let off = batch.push_bytes(frame);
            batch.msgs.push(Msg::Fanout { off, len, exclude });
        }
    }

    /// Delivers a datagram another core routed to this core's subscribers of its recipients.
    fn fan_out<H: Host>(&mut self, frame: &[u8], exclude: Option<Pid>, host: &mut H) {
        let Ok(header) = RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..]) else {
            debug_assert!(false, "a routed datagram was checked where it was read");
            return;
        };
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        for channel in header.recipients.iter() {
            targets.extend_from_slice(self.local.lookup(channel));
            for &pid in self.ranges.lookup(channel) {
                if pid.core() == self.me {
                    targets.push(pid);
                }
            }
        }
        self.deliver_all(frame, &mut targets, exclude, host);
        self.targets = targets;
    }

    /// Delivers to each of this core's `targets` once, except `exclude`.
    fn deliver_all<H: Host>(
        &mut self,
        frame: &[u8],
        targets: &mut Vec<Pid>,
        exclude: Option<Pid>,
        host: &mut H,
    ) {
        if targets.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        for &pid in targets.iter() {
            if Some(pid) != exclude {
                self.delivered += 1;
                host.deliver(pid, frame);
            }
        }
    }

    /// Checks the replica against the cores' own subscriptions (for tests, once every core
    /// has caught up): `owners(channel)` is the set of cores whose participants subscribe it.
    /// A core knows the others but the channel's home (core 0 with an upstream: all of them).
    #[cfg(test)]
    fn check_replica(&self, channels: impl Iterator<Item = u64>, owners: &impl Fn(u64) -> u64) {
        for c in channels {
            let mut expected = owners(c) & !(1 << self.me);
            if self.me != 0 || !self.upstream {
                expected &= !(1 << home_core(c, self.cores));
            }
            assert_eq!(
                self.remote_cores(c),
                expected,
                "core {}: channel {c}",
                self.me
            );
        }
    }

    /// True when nothing is pending or held (for tests).
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.holds.is_empty()
    }
}

#[cfg(test)]
mod tests;

//! The ordered routing protocol between cores, free of I/O: each core's `Router` (its shard of
//! subscriptions, its range-map replica, the datagrams awaiting lookups) and `Outbox` (what it
//! sends the other cores in a loop turn, shipped in the order the protocol needs).
//!
//! The core feeds the router datagrams from its participants and messages from other cores;
//! the router answers through a `Host`: the outbox, deliveries to the core's own participants,
//! and (core 0, the range authority) what the upstream MD must hear.
//!
//! # The protocol
//!
//! A channel's subscriber list lives on its home core (`home_core`). Routing a datagram read
//! on core A: ranges are resolved from A's replica; channels homed on A at once; for the others
//! A sends one `Lookup` per home core and keeps the datagram in a FIFO until every answer is
//! in and every datagram read before it is dispatched. A datagram whose recipients are all
//! homed on one other core H, while nothing but datagrams delegated to H is in flight, is
//! handed to H whole (`Route`): the batch carrying it goes to H only once everything A queued
//! before it for other cores is in their queues, and its place in A's FIFO is held until H's
//! `Routed` acknowledgement, which H ships only once everything it delivered for it is queued.
//! Range changes go to core 0, which applies them and replays them to every replica.
//!
//! # Guarantees (each has a test in `router/tests.rs`)
//!
//! 1. **Order per sender.** Datagrams routed by one core for one sender reach every
//!    participant in the order they were routed, whatever channels they name and wherever those
//!    are homed, with lookups pending and datagrams delegated. (The core routes a connection's
//!    datagrams in the order read, so this is the per-connection order rule of Astron; and a
//!    departed participant's post-removes, routed by its core after everything it sent, reach
//!    everyone after what it sent.)
//! 2. **Exactly once, never back.** A datagram reaches a participant at most once, however
//!    many of its recipients (channels and ranges) it subscribes, and never the `exclude`d
//!    sender.
//! 3. **Subscriptions take effect in order on the core that makes them.** A subscribe or
//!    unsubscribe made on core A (for any participant, on any home) is seen by every datagram
//!    routed on A after it, and by none routed before it: the change travels to the home core
//!    on the same FIFO as the later datagram's lookup or delegation. Changes made on other
//!    cores are seen once they arrive (after any loop turn in which every core has caught up).
//! 4. **One range order.** Every replica applies the range changes in the authority's order,
//!    so once the cores have caught up each replica equals the authority's map. A range change
//!    is not immediate even on the core that made it.
//! 5. **Upstream in step.** Once the cores have caught up, the channels announced upstream are
//!    exactly those with a subscriber, and the ranges announced upstream cover exactly the
//!    channels some range covers; datagrams sent upstream from one core arrive in the order sent.
//!    A subscription made on core A is announced upstream (if it needs to be) before any
//!    datagram A sends upstream after it, and stays announced while it lasts (a session's
//!    login goes upstream just after it subscribed its channel, and the answer comes back on
//!    it): core 0 holds the channel announced until its home core has the subscription.
//! 6. **Bounded and drained.** When nothing is in flight the FIFO and its byte arena are empty.
//!
//! Not the router's business: a participant that has gone (its slot reused) is recognised by
//! the host through the generation in its `Pid`, so a late delivery to it is dropped there.

use super::{home_core, Pid, RangeMap, SingleShard};
use otp_wire::{Recipients, RoutableHeader};
use smallvec::SmallVec;
use std::collections::VecDeque;

/// A message of the routing protocol between cores. Bulk bytes travel beside it in its
/// `Batch::data`, named by offset and length.
#[derive(Debug)]
pub enum Msg {
    /// Single-channel subscription changes, sent to the channel's home core.
    /// `held`: core 0 holds the channel announced upstream until the home core has the
    /// subscription (`UpstreamHold`), and is to be told when it has (`UpstreamRelease`).
    Subscribe {
        pid: Pid,
        channel: u64,
        held: bool,
    },
    Unsubscribe {
        pid: Pid,
        channel: u64,
    },
    /// Who subscribes these channels (homed on the receiving core)? Answer with `Resolved`.
    Lookup {
        entry: u64,
        channels: SmallVec<[u64; 4]>,
    },
    Resolved {
        entry: u64,
        pids: SmallVec<[Pid; 8]>,
    },
    /// Route `data[off..off+len]` (a framed datagram whose recipients are all homed on the
    /// receiving core) on behalf of the sending core, then acknowledge it with `Routed`.
    Route {
        entry: u64,
        off: u32,
        len: u32,
        exclude: Option<Pid>,
    },
    /// Sent only after every delivery of the delegated datagram was queued ahead of it.
    Routed {
        entry: u64,
    },
    /// Write `data[off..off+len]` (a framed datagram) to participant `pid`.
    Deliver {
        pid: Pid,
        off: u32,
        len: u32,
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
    /// A channel gained its first / lost its last subscriber (to core 0, for upstream).
    UpstreamSub {
        channel: u64,
    },
    UpstreamUnsub {
        channel: u64,
    },
    /// A subscription made on the sending core is on its way to the channel's home core (to
    /// core 0, ahead of the sending core's later datagrams upstream)...
    UpstreamHold {
        channel: u64,
    },
    /// ...and has arrived (from the home core, after any `UpstreamSub` it caused). `core`:
    /// the core that made the subscription.
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

/// One core's outgoing traffic: this turn's batch for each other core, batches that wait to
/// be handed over (a full queue refused them, or they must let others go first), and the
/// `Routed` acknowledgements owed.
pub struct Outbox<X> {
    me: usize,
    batches: Vec<Batch<X>>,
    /// This turn's batch for the core carries a delegated datagram (`Msg::Route`).
    delegating: Vec<bool>,
    waiting: Vec<VecDeque<Waiting<X>>>,
    acks: Vec<Vec<u64>>,
    /// Loop turns shipped so far.
    turn: u64,
}

/// A batch not yet handed over: the turn that made it, and whether it delegates.
struct Waiting<X> {
    batch: Batch<X>,
    turn: u64,
    delegates: bool,
}

impl<X> Outbox<X> {
    pub fn new(me: usize, cores: usize) -> Outbox<X> {
        Outbox {
            me,
            batches: (0..cores).map(|_| Batch::new(me)).collect(),
            delegating: vec![false; cores],
            waiting: (0..cores).map(|_| VecDeque::new()).collect(),
            acks: (0..cores).map(|_| Vec::new()).collect(),
            turn: 0,
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

    /// Hands the framed datagram `entry` to `core` to route whole (see `ship` for when).
    fn delegate(&mut self, core: usize, entry: u64, frame: &[u8], exclude: Option<Pid>) {
        let batch = self.batch(core);
        let off = batch.push_bytes(frame);
        batch.msgs.push(Msg::Route {
            entry,
            off,
            len: frame.len() as u32,
            exclude,
        });
        self.delegating[core] = true;
    }

    /// True while some batch waits to be handed over (the core then stops reading its
    /// sockets until they drain).
    pub fn is_stalled(&self) -> bool {
        self.waiting.iter().any(|q| !q.is_empty())
    }

    /// True when nothing waits to be shipped (for tests).
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.batches.iter().all(|b| b.is_empty())
            && !self.is_stalled()
            && self.acks.iter().all(|a| a.is_empty())
    }

    /// Owes `core` the acknowledgement of its delegated datagram `entry`.
    fn ack(&mut self, core: usize, entry: u64) {
        self.acks[core].push(entry);
    }

    /// End of a loop turn: hands each other core its batch through `send`, which gives a
    /// batch back when that core's queue is full; it then waits, in order, and goes first next
    /// time. Two kinds of message wait for others, so that no core can deliver ahead of what
    /// this one queued earlier:
    /// * a batch that delegates a datagram goes only once every batch made no later than it
    ///   for the other cores is in its queue (the delegate may deliver to any core as soon as
    ///   it reads the datagram, and what this core dispatched before must be ahead of that);
    /// * the acknowledgements go last, and only once every batch is in its queue (a core that
    ///   reads an acknowledgement may then send to any core, and what this core delivered for
    ///   the delegated datagram must be ahead of that).
    pub fn ship(&mut self, mut send: impl FnMut(usize, Batch<X>) -> Result<(), Batch<X>>) {
        let me = self.me;
        self.turn += 1;
        for core in 0..self.batches.len() {
            if core == me || self.batches[core].is_empty() {
                continue;
            }
            // The next batch will likely be as large: size it so it does not regrow.
            let (m, d) = (self.batches[core].msgs.len(), self.batches[core].data.len());
            let next = Batch {
                from: me,
                msgs: Vec::with_capacity(m),
                data: Vec::with_capacity(d),
                extra: Vec::new(),
            };
            let batch = std::mem::replace(&mut self.batches[core], next);
            self.waiting[core].push_back(Waiting {
                batch,
                turn: self.turn,
                delegates: std::mem::take(&mut self.delegating[core]),
            });
        }
        // Core by core, in order; once more whenever that let a delegating batch go.
        loop {
            let mut progress = false;
            for core in 0..self.waiting.len() {
                while let Some(front) = self.waiting[core].front() {
                    if front.delegates && !self.shipped_elsewhere(core, front.turn) {
                        break;
                    }
                    let w = self.waiting[core].pop_front().expect("front exists");
                    match send(core, w.batch) {
                        Ok(()) => progress = true,
                        Err(batch) => {
                            self.waiting[core].push_front(Waiting { batch, ..w });
                            break;
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
        if self.is_stalled() {
            return;
        }
        for core in 0..self.acks.len() {
            if self.acks[core].is_empty() {
                continue;
            }
            let mut batch = Batch::new(me);
            batch
                .msgs
                .extend(self.acks[core].drain(..).map(|entry| Msg::Routed { entry }));
            if let Err(batch) = send(core, batch) {
                self.waiting[core].push_back(Waiting {
                    batch,
                    turn: self.turn,
                    delegates: false,
                });
            }
        }
    }

    /// True when every batch made in or before `turn` for a core other than `core` is handed
    /// over.
    fn shipped_elsewhere(&self, core: usize, turn: u64) -> bool {
        self.waiting
            .iter()
            .enumerate()
            .all(|(c, q)| c == core || q.front().is_none_or(|w| w.turn > turn))
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
    /// A subscription to this channel made on one core is on its way to the channel's home
    /// core: announce the channel now unless it is already (the subscriber's next datagram
    /// upstream may be answered on it at once).
    Held(u64),
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

/// A datagram read here, waiting for subscriber lookups on other cores, or (when `delegated`)
/// a datagram handed to its home core, waiting for that core's acknowledgement.
struct InFlight {
    delegated: bool,
    /// Where the framed datagram (length tag included) sits in the arena, as an absolute
    /// position (see `Router::arena_base`), and its length.
    at: u64,
    len: u32,
    exclude: Option<Pid>,
    waiting: u32,
    targets: SmallVec<[Pid; 8]>,
}

/// One core's part of the routing protocol (see the module documentation).
pub struct Router {
    me: usize,
    cores: usize,
    /// Whether an upstream MD is configured (then first and last subscribers are reported).
    upstream: bool,
    singles: SingleShard,
    ranges: RangeMap,
    in_flight: VecDeque<InFlight>,
    /// Id of `in_flight[0]`.
    base: u64,
    /// How many entries of `in_flight` are delegations, and to which core (all go to one).
    delegated: usize,
    delegate_core: usize,
    /// Bytes of waiting datagrams, in FIFO order; `arena_base` is the absolute position of
    /// `arena[0]`. Consumed from the front, compacted once the consumed part is half of it.
    arena: Vec<u8>,
    arena_base: u64,
    /// Scratch: channels to look up, per home core; the targets of the datagram at hand.
    lookups: Vec<SmallVec<[u64; 4]>>,
    targets: Vec<Pid>,
    routed: u64,
    delivered: u64,
    /// Core 0: channels held announced upstream while subscriptions to them travel to their
    /// home cores (see `subscribe`).
    holds: rustc_hash::FxHashMap<u64, Hold>,
}

/// Core 0's hold on an upstream channel, which stays announced while the hold lasts: per core
/// that made subscriptions to it, their holds minus their releases (a release may overtake its
/// hold: the two come from different cores), and whether the home core's last word meanwhile
/// was "no subscriber left" (the channel is then withdrawn when the hold ends, unless a new
/// first subscriber came since). The hold ends when every count is back to zero.
struct Hold {
    counts: SmallVec<[(usize, i32); 2]>,
    dropped: bool,
}

impl Router {
    /// The router of core `me` of `cores`.
    pub fn new(me: usize, cores: usize, upstream: bool) -> Router {
        Router {
            me,
            cores,
            upstream,
            singles: SingleShard::default(),
            ranges: RangeMap::default(),
            in_flight: VecDeque::new(),
            base: 0,
            delegated: 0,
            delegate_core: 0,
            arena: Vec::new(),
            arena_base: 0,
            lookups: (0..cores).map(|_| SmallVec::new()).collect(),
            targets: Vec::new(),
            routed: 0,
            delivered: 0,
            holds: Default::default(),
        }
    }

    /// Datagrams routed here, deliveries made for them (counted where they were routed).
    pub fn routed(&self) -> u64 {
        self.routed
    }
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
    /// Datagrams waiting for lookups or acknowledgements (the core's queue depth).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
    /// Channels homed here that have subscribers.
    pub fn channels(&self) -> usize {
        self.singles.len()
    }
    /// This core's replica of the range map (core 0: the authority).
    pub fn ranges(&self) -> &RangeMap {
        &self.ranges
    }
    /// The subscribers of `channel` if it is homed here.
    pub fn subscribers(&self, channel: u64) -> &[Pid] {
        self.singles.lookup(channel)
    }

    // ---- subscriptions -----------------------------------------------------------------

    /// Subscribes `pid` (of any core) to `channel`, on the channel's home core.
    ///
    /// Upstream, the home core announces a first subscriber through core 0; but a datagram
    /// this core sends upstream next goes to core 0 directly, and could get there (and be
    /// answered on the channel) first. So unless this core is the home, or the home is core 0
    /// (which reads the subscription before the datagram), core 0 holds the channel announced
    /// (`UpstreamHold`, ahead of this core's later datagrams to core 0) until the home core
    /// has the subscription (`UpstreamRelease`).
    pub fn subscribe<H: Host>(&mut self, pid: Pid, channel: u64, host: &mut H) {
        let home = home_core(channel, self.cores);
        if home == self.me {
            self.home_subscribe(pid, channel, None, host);
        } else if !self.upstream || home == 0 {
            host.outbox().push(
                home,
                Msg::Subscribe {
                    pid,
                    channel,
                    held: false,
                },
            );
        } else {
            self.send(0, Msg::UpstreamHold { channel }, host);
            host.outbox().push(
                home,
                Msg::Subscribe {
                    pid,
                    channel,
                    held: true,
                },
            );
        }
    }

    pub fn unsubscribe<H: Host>(&mut self, pid: Pid, channel: u64, host: &mut H) {
        let home = home_core(channel, self.cores);
        if home == self.me {
            self.home_unsubscribe(pid, channel, host);
        } else {
            host.outbox().push(home, Msg::Unsubscribe { pid, channel });
        }
    }

    /// `held`: made on core `from`, which told core 0 (`UpstreamHold`).
    fn home_subscribe<H: Host>(
        &mut self,
        pid: Pid,
        channel: u64,
        held: Option<usize>,
        host: &mut H,
    ) {
        if self.singles.subscribe(pid, channel) && self.upstream {
            self.send(0, Msg::UpstreamSub { channel }, host);
        }
        if let Some(core) = held {
            self.send(0, Msg::UpstreamRelease { channel, core }, host);
        }
    }

    /// Core 0: a subscription to `channel` made on `core` is on its way home (+1), or has
    /// arrived (-1). A new hold announces the channel; one made by a release finds it
    /// announced already (the home core has the subscription, and said so first if it was
    /// the first).
    fn hold<H: Host>(&mut self, channel: u64, core: usize, delta: i32, host: &mut H) {
        let h = self.holds.entry(channel).or_insert_with(|| {
            if delta > 0 {
                host.upstream(Upstream::Held(channel));
            }
            Hold {
                counts: SmallVec::new(),
                dropped: false,
            }
        });
        match h.counts.iter_mut().find(|(c, _)| *c == core) {
            Some((_, n)) => *n += delta,
            None => h.counts.push((core, delta)),
        }
        h.counts.retain(|(_, n)| *n != 0);
        if h.counts.is_empty() {
            let dropped = h.dropped;
            self.holds.remove(&channel);
            if dropped {
                host.upstream(Upstream::Unsubscribed(channel));
            }
        }
    }

    fn home_unsubscribe<H: Host>(&mut self, pid: Pid, channel: u64, host: &mut H) {
        if self.singles.unsubscribe(pid, channel) && self.upstream {
            self.send(0, Msg::UpstreamUnsub { channel }, host);
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

    /// Handles a message from core `from`; `data` is its batch's bytes. Call
    /// `dispatch_resolved` after a run of messages to dispatch what they completed.
    pub fn handle<H: Host>(&mut self, from: usize, msg: &Msg, data: &[u8], host: &mut H) {
        match *msg {
            Msg::Subscribe { pid, channel, held } => {
                self.home_subscribe(pid, channel, held.then_some(from), host);
            }
            Msg::Unsubscribe { pid, channel } => self.home_unsubscribe(pid, channel, host),
            Msg::Lookup {
                entry,
                ref channels,
            } => {
                let mut pids: SmallVec<[Pid; 8]> = SmallVec::new();
                for &c in channels {
                    pids.extend_from_slice(self.singles.lookup(c));
                }
                host.outbox().push(from, Msg::Resolved { entry, pids });
            }
            Msg::Resolved { entry, ref pids } => {
                let Some(p) = self.entry(entry) else {
                    return;
                };
                p.targets.extend_from_slice(pids);
                p.waiting -= 1;
            }
            Msg::Route {
                entry,
                off,
                len,
                exclude,
            } => {
                let (off, len) = (off as usize, len as usize);
                self.route_delegated(&data[off..off + len], exclude, host);
                host.outbox().ack(from, entry);
            }
            Msg::Routed { entry } => {
                if let Some(p) = self.entry(entry) {
                    debug_assert!(p.delegated);
                    p.waiting = 0;
                }
            }
            Msg::Deliver { pid, off, len } => {
                let (off, len) = (off as usize, len as usize);
                host.deliver(pid, &data[off..off + len]);
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
            // While held, the channel stays announced whatever the home core says; its last
            // word counts when the hold ends.
            Msg::UpstreamSub { channel } => match self.holds.get_mut(&channel) {
                Some(h) => h.dropped = false,
                None => host.upstream(Upstream::Subscribed(channel)),
            },
            Msg::UpstreamUnsub { channel } => match self.holds.get_mut(&channel) {
                Some(h) => h.dropped = true,
                None => host.upstream(Upstream::Unsubscribed(channel)),
            },
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

    fn entry(&mut self, entry: u64) -> Option<&mut InFlight> {
        let idx = entry.checked_sub(self.base)?;
        self.in_flight.get_mut(idx as usize)
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
    /// subscriber of its recipients, except `exclude`.
    pub fn route<H: Host>(
        &mut self,
        frame: &[u8],
        recipients: Recipients<'_>,
        exclude: Option<Pid>,
        host: &mut H,
    ) {
        self.routed += 1;
        if let Some(home) = self.delegation_target(recipients) {
            let entry = self.base + self.in_flight.len() as u64;
            host.outbox().delegate(home, entry, frame, exclude);
            let at = self.arena_base + self.arena.len() as u64;
            self.in_flight.push_back(InFlight {
                delegated: true,
                at,
                len: 0,
                exclude: None,
                waiting: 1,
                targets: SmallVec::new(),
            });
            self.delegated += 1;
            self.delegate_core = home;
            return;
        }
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        let mut remote = 0u32;
        for channel in recipients.iter() {
            targets.extend_from_slice(self.ranges.lookup(channel));
            let home = home_core(channel, self.cores);
            if home == self.me {
                targets.extend_from_slice(self.singles.lookup(channel));
            } else {
                if self.lookups[home].is_empty() {
                    remote += 1;
                }
                if !self.lookups[home].contains(&channel) {
                    self.lookups[home].push(channel);
                }
            }
        }
        if remote == 0 && self.in_flight.is_empty() {
            self.dispatch(frame, &mut targets, exclude, host);
        } else {
            let entry = self.base + self.in_flight.len() as u64;
            for core in 0..self.cores {
                if !self.lookups[core].is_empty() {
                    let channels = std::mem::take(&mut self.lookups[core]);
                    host.outbox().push(core, Msg::Lookup { entry, channels });
                }
            }
            let at = self.arena_base + self.arena.len() as u64;
            self.arena.extend_from_slice(frame);
            self.in_flight.push_back(InFlight {
                delegated: false,
                at,
                len: frame.len() as u32,
                exclude,
                waiting: remote,
                targets: SmallVec::from_slice(&targets),
            });
            if remote == 0 {
                self.dispatch_resolved(host);
            }
        }
        self.targets = targets;
    }

    /// The core to hand this datagram to whole, if that keeps the order: every recipient is
    /// homed on that one other core, and nothing read earlier is still in flight except
    /// datagrams handed to that same core.
    fn delegation_target(&self, recipients: Recipients<'_>) -> Option<usize> {
        if self.in_flight.len() != self.delegated {
            return None;
        }
        let mut home = None;
        for channel in recipients.iter() {
            let h = home_core(channel, self.cores);
            match home {
                None if h != self.me => home = Some(h),
                Some(x) if x == h => {}
                _ => return None,
            }
        }
        let home = home?;
        (self.delegated == 0 || self.delegate_core == home).then_some(home)
    }

    /// Routes a datagram another core delegated to this one (its home), for that core.
    fn route_delegated<H: Host>(&mut self, frame: &[u8], exclude: Option<Pid>, host: &mut H) {
        let Ok(header) = RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..]) else {
            debug_assert!(false, "a delegated datagram was checked where it was read");
            return;
        };
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        for channel in header.recipients.iter() {
            targets.extend_from_slice(self.ranges.lookup(channel));
            targets.extend_from_slice(self.singles.lookup(channel));
        }
        self.dispatch(frame, &mut targets, exclude, host);
        self.targets = targets;
    }

    /// Dispatches, in order, the datagrams at the front of the FIFO whose lookups are all
    /// answered (or whose delegation was acknowledged).
    pub fn dispatch_resolved<H: Host>(&mut self, host: &mut H) {
        while self.in_flight.front().is_some_and(|p| p.waiting == 0) {
            let p = self.in_flight.pop_front().expect("front exists");
            self.base += 1;
            if p.delegated {
                self.delegated -= 1;
                continue;
            }
            let mut targets = std::mem::take(&mut self.targets);
            targets.clear();
            targets.extend_from_slice(&p.targets);
            let arena = std::mem::take(&mut self.arena);
            let start = (p.at - self.arena_base) as usize;
            self.dispatch(
                &arena[start..start + p.len as usize],
                &mut targets,
                p.exclude,
                host,
            );
            self.arena = arena;
            self.targets = targets;
        }
        // Release consumed bytes: all of them when nothing is pending, else once they are
        // half the arena (so each byte is moved at most once on average).
        let consumed = match self.in_flight.front() {
            None => self.arena.len(),
            Some(p) => (p.at - self.arena_base) as usize,
        };
        if consumed == self.arena.len() {
            self.arena.clear();
            self.arena_base += consumed as u64;
        } else if consumed > self.arena.len() / 2 {
            self.arena.drain(..consumed);
            self.arena_base += consumed as u64;
        }
    }

    /// Delivers to each target once: local ones through the host, others into one batch per
    /// core (the bytes once per core, whatever the number of targets there).
    fn dispatch<H: Host>(
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
        let mut last_core = usize::MAX;
        let (mut off, len) = (0u32, frame.len() as u32);
        let mut delivered = 0u64;
        for &pid in targets.iter() {
            if Some(pid) == exclude {
                continue;
            }
            delivered += 1;
            let core = pid.core();
            if core == self.me {
                host.deliver(pid, frame);
            } else {
                let batch = host.outbox().batch(core);
                if core != last_core {
                    off = batch.push_bytes(frame);
                    last_core = core;
                }
                batch.msgs.push(Msg::Deliver { pid, off, len });
            }
        }
        self.delivered += delivered;
    }

    /// True when nothing is in flight and the arena holds no bytes (for tests).
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.arena.is_empty()
            && self.delegated == 0
            && self.holds.is_empty()
    }
}

#[cfg(test)]
mod tests;

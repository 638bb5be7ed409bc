//! Roles: the cluster's services (StateServer, DBSS, Database, ClientAgent, EventLogger) as
//! sans-IO state machines. A role takes datagrams and time and returns datagrams and
//! subscription changes in an `Output`; the runtime hosts one instance per core as an MD
//! participant, so a whole cluster can also be driven from a single test thread
//! (`otp_testkit::cluster_sim` does).

pub mod account;
pub mod database;
pub mod dbss;
pub mod doid_index;
pub mod event;
pub mod objects;
pub mod schema;
pub mod shards;
pub mod stateserver;
pub mod store;

pub use schema::{FieldFlags, Schema, ANY_CLASS};

use otp_wire::Doid;
use otp_wire::{Channel, InternalDatagram, MsgType, Writer};
use std::any::Any;
use std::time::Instant;

/// A job: a unit of blocking work (a database query, a file write) a role hands to its worker,
/// or the worker's answer to one. Each role knows the concrete types it sends and gets back.
/// (Sessions' jobs are `SessionJob`s; the same words, job and worker, name both.)
pub type AnyJob = Box<dyn Any + Send>;

/// Runs a role's blocking work on a thread of its own. The runtime gives it everything queued
/// (up to the batch limit) at once, so a database can commit a whole batch in one transaction;
/// it answers with exactly one result per item, in order, once the batch is durable.
pub trait Worker: Send + 'static {
    fn run(&mut self, batch: Vec<AnyJob>) -> Vec<AnyJob>;
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    pub queue: usize,
    pub batch: usize,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        WorkerLimits {
            queue: 65_536,
            batch: 256,
        }
    }
}

/// What a role asks of the runtime after handling an input. Subscription changes are applied
/// before the datagrams are routed, in the order given.
#[derive(Default, Debug)]
pub struct Output {
    /// Framed datagrams (length tag included), routed as sent by the role.
    pub datagrams: Vec<u8>,
    pub subscriptions: Vec<Subscription>,
    /// Jobs for the role's worker; answers come back through `Role::job_done`.
    pub jobs: Vec<AnyJob>,
    /// MessagePack events for the EventLogger (see `event::Event`).
    pub events: Vec<Vec<u8>>,
}

/// Finishes a datagram whose size depends on input (field values, stored objects, lists): one
/// that does not fit is dropped with a log line naming `what`, never sent truncated. Returns
/// whether it was kept.
pub fn finish_or_drop(w: Writer<'_>, what: &str) -> bool {
    match w.finish() {
        Ok(_) => true,
        Err(e) => {
            log::warn!("{what}: {e}; not sent");
            false
        }
    }
}

/// A subscription change a role asks for. The host keeps no copy of a role's subscriptions:
/// adding a channel twice is harmless (subscribing is idempotent) but costs a lookup, so roles
/// keep their own free of duplicates, and a `RemoveRange` removes the range only, not single
/// channels inside it (those are removed one by one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    Add(Channel),
    Remove(Channel),
    AddRange(Channel, Channel),
    RemoveRange(Channel, Channel),
}

impl Output {
    /// Starts a datagram; finish it with `Writer::finish_bounded` when its size is bounded by
    /// construction, else with [`finish_or_drop`].
    pub fn datagram(
        &mut self,
        recipients: &[Channel],
        sender: Channel,
        msgtype: MsgType,
    ) -> Writer<'_> {
        Writer::internal(&mut self.datagrams, recipients, sender, msgtype)
    }

    pub fn subscribe(&mut self, channel: Channel) {
        self.subscriptions.push(Subscription::Add(channel));
    }

    pub fn unsubscribe(&mut self, channel: Channel) {
        self.subscriptions.push(Subscription::Remove(channel));
    }

    pub fn subscribe_range(&mut self, lo: Channel, hi: Channel) {
        self.subscriptions.push(Subscription::AddRange(lo, hi));
    }

    /// Queues a job for the role's worker.
    pub fn job(&mut self, item: AnyJob) {
        self.jobs.push(item);
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
            && self.subscriptions.is_empty()
            && self.jobs.is_empty()
            && self.events.is_empty()
    }

    pub fn clear(&mut self) {
        self.datagrams.clear();
        self.subscriptions.clear();
        self.jobs.clear();
        self.events.clear();
    }

    /// The datagrams, as framed slices (for tests and the runtime).
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        otp_wire::frames(&self.datagrams)
    }
}

/// A role instance hosted by one core.
pub trait Role: Send {
    /// For logs.
    fn name(&self) -> &'static str;
    /// True when the role stands for many participants (a state server's objects, each
    /// reachable by the others): datagrams it sends are also delivered back to it when it
    /// subscribes one of their recipients. Otherwise, as for any participant, never.
    fn hears_itself(&self) -> bool {
        false
    }
    /// A channel this role's instance on that channel's home core will subscribe when it
    /// handles `dg` (a StateServer's new object). The runtime subscribes it as it routes `dg`,
    /// so that datagrams sent right after `dg` by the same participant reach it, as they
    /// would on astrond, where roles handle each datagram as it is routed. Called on the
    /// reading core's instance for every datagram read from a connection: keep it cheap.
    fn will_subscribe(&self, _dg: &InternalDatagram<'_>) -> Option<Channel> {
        None
    }
    /// Called once when the core starts: subscribe the role's channels here.
    fn start(&mut self, now: Instant, out: &mut Output);
    /// A datagram delivered to this role. `frame` is the whole datagram with its length tag.
    fn handle(&mut self, now: Instant, frame: &[u8], dg: &InternalDatagram<'_>, out: &mut Output);
    /// Time passes; called about every 50 ms.
    fn tick(&mut self, _now: Instant, _out: &mut Output) {}
    /// The role's figures for the metrics endpoint (`name`, value), read after each tick.
    fn metrics(&self, _out: &mut Vec<(&'static str, u64)>) {}
    /// True while the role has accepted work it has not finished (a clean stop waits for it).
    fn busy(&self) -> bool {
        false
    }
    /// The worker that runs this role's blocking work, taken once when the core starts.
    fn take_worker(&mut self) -> Option<Box<dyn Worker>> {
        None
    }
    /// The worker's limits: items queued for it at most (more wait in the role's core, which
    /// then stops reading its sockets), and items handed to it at once (one transaction).
    fn worker_limits(&self) -> WorkerLimits {
        WorkerLimits::default()
    }
    /// The answer to one job, in the order the jobs were queued.
    fn job_done(&mut self, _now: Instant, _answer: AnyJob, _out: &mut Output) {}
}

/// Which core hosts what: each role instance knows its core and whether a doid is its own.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub core: usize,
    pub cores: usize,
}

impl Placement {
    /// True when objects with this doid live on this instance's core.
    pub fn owns_doid(&self, doid: Doid) -> bool {
        crate::md::home_core(doid as u64, self.cores) == self.core
    }
}

//! Roles: the cluster's services (StateServer, DBSS, Database, ClientAgent, EventLogger) as
//! sans-IO state machines. A role takes datagrams and time and returns datagrams and
//! subscription changes in an `Output`; the runtime hosts one instance per core as an MD
//! participant, so a whole cluster can also be driven from a single test thread.

pub mod schema;

pub use schema::{FieldFlags, Schema};

use otp_wire::{Channel, InternalDatagram, MsgType, Writer};
use std::time::Instant;

/// What a role asks of the runtime after handling an input. Subscription changes are applied
/// before the datagrams are routed, in the order given.
#[derive(Default, Debug)]
pub struct Output {
    /// Framed datagrams (length tag included), routed as sent by the role.
    pub datagrams: Vec<u8>,
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    Add(Channel),
    Remove(Channel),
    AddRange(Channel, Channel),
    RemoveRange(Channel, Channel),
}

impl Output {
    /// Starts a datagram; finish it with `Writer::finish` (an error drops it and is logged by
    /// the caller).
    pub fn datagram(&mut self, recipients: &[Channel], sender: Channel, msgtype: MsgType) -> Writer<'_> {
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

    pub fn unsubscribe_range(&mut self, lo: Channel, hi: Channel) {
        self.subscriptions.push(Subscription::RemoveRange(lo, hi));
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty() && self.subscriptions.is_empty()
    }

    pub fn clear(&mut self) {
        self.datagrams.clear();
        self.subscriptions.clear();
    }

    /// The datagrams, as framed slices (for tests and the runtime).
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.datagrams[..];
        std::iter::from_fn(move || {
            if rest.len() < 2 {
                return None;
            }
            let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let (f, r) = rest.split_at((2 + len).min(rest.len()));
            rest = r;
            Some(f)
        })
    }
}

/// A role instance hosted by one core.
pub trait Role: Send {
    /// For logs.
    fn name(&self) -> &'static str;
    /// Called once when the core starts: subscribe the role's channels here.
    fn start(&mut self, now: Instant, out: &mut Output);
    /// A datagram delivered to this role. `frame` is the whole datagram with its length tag.
    fn handle(&mut self, now: Instant, frame: &[u8], dg: &InternalDatagram<'_>, out: &mut Output);
    /// Time passes; called about every `tick_interval`.
    fn tick(&mut self, _now: Instant, _out: &mut Output) {}
}

/// Which core hosts what: each role instance knows its core and whether a doid is its own.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub core: usize,
    pub cores: usize,
}

impl Placement {
    /// True when objects with this doid live on this instance's core.
    pub fn owns_doid(&self, doid: u32) -> bool {
        crate::md::home_core(doid as u64, self.cores) == self.core
    }
}

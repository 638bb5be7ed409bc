//! The dialect seam: what differs between the two client protocols a listener may speak.
//! A `Dialect` decodes the client's datagrams (calling into the session core for state,
//! limits and permission) and, through `ClientView`, writes what the client is told about
//! objects, fields and interests. `astron` is Astron's client protocol; `toontown` the 2003
//! Toontown client's, with the work its server did itself (logins, avatars, friends, zones).

pub(in crate::clientagent) mod astron;
pub mod toontown;

use super::session::core::{Interest, Refusal, SessionCore};
use super::session::{JobResult, SessionOut};
use otp_wire::{Reader, WireError, Writer};
use std::time::Instant;

/// An object coming into the client's view, as the cluster announced it.
pub(in crate::clientagent) struct Entrance<'a> {
    pub(in crate::clientagent) doid: u32,
    pub(in crate::clientagent) parent: u32,
    pub(in crate::clientagent) zone: u32,
    pub(in crate::clientagent) class: u16,
    /// The body carries an OTHER section after the required fields.
    pub(in crate::clientagent) other: bool,
    /// The required (and OTHER) values, as the cluster sent them.
    pub(in crate::clientagent) body: &'a [u8],
}

/// What the client is told about what the session core tracks: each dialect writes its own
/// messages (or none, where its client has no such message).
pub(in crate::clientagent) trait ClientView {
    /// `e` enters the client's view; false when it is not shown (the core then forgets it).
    fn enter_object(&mut self, core: &SessionCore, e: Entrance<'_>, out: &mut SessionOut) -> bool;
    /// The client now owns `e` (ENTER_OWNER).
    fn enter_owned(&mut self, e: Entrance<'_>, out: &mut SessionOut);
    /// `doid` left the client's interests.
    fn leave_object(&mut self, doid: u32, out: &mut SessionOut);
    /// `doid`, which the client sees, was deleted.
    fn delete_object(&mut self, doid: u32, out: &mut SessionOut);
    /// The client no longer owns `doid`.
    fn leave_owned(&mut self, doid: u32, out: &mut SessionOut);
    /// `doid`, seen or owned, moved.
    fn object_moved(&mut self, doid: u32, parent: u32, zone: u32, out: &mut SessionOut);
    /// The cluster updated fields of `doid` (of class `class`): `r` is at the first field
    /// (SET_FIELDS: at the count), in the cluster's numbering.
    fn field_update(
        &mut self,
        core: &SessionCore,
        doid: u32,
        class: u16,
        many: bool,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    );
    /// Interest `id`, asked for with `context`, is open (or closed).
    fn interest_done(&mut self, id: u16, context: u32, out: &mut SessionOut);
    /// The cluster opened interest `id` for the client (CLIENTAGENT_ADD_INTEREST).
    fn interest_added(&mut self, id: u16, context: u32, i: &Interest, out: &mut SessionOut);
    /// The cluster closed interest `id` for the client (CLIENTAGENT_REMOVE_INTEREST).
    fn interest_removed(&mut self, id: u16, context: u32, out: &mut SessionOut);
    /// The eject code for a client whose interests would pass `max_zones_total`: Astron's
    /// for an interest over its limits.
    fn zone_budget_code(&self) -> u16 {
        otp_wire::msgtypes::eject::CLIENT_DISCONNECT_FORBIDDEN_INTEREST
    }
}

/// Writes one client message that carries a doid only.
fn doid_message(msgtype: u16, doid: u32, out: &mut SessionOut) {
    let mut w = Writer::client(&mut out.to_client, msgtype);
    w.u32(doid);
    let _ = w.finish();
}

/// The protocol one session speaks, with that protocol's own state.
pub(in crate::clientagent) enum Dialect {
    /// Astron's client protocol (`AstronClient.cpp`).
    Astron(astron::State),
    /// The 2003 Toontown client's protocol (`config` value `toon2003`).
    Toontown2003(Box<toontown::State>),
}

impl Dialect {
    pub(in crate::clientagent) fn new(d: crate::config::Dialect) -> Dialect {
        match d {
            crate::config::Dialect::Toontown2003 => Dialect::Toontown2003(Box::default()),
            _ => Dialect::Astron(astron::State::default()),
        }
    }

    /// The dialect as the core's `ClientView`.
    pub(in crate::clientagent) fn view(&mut self) -> &mut dyn ClientView {
        match self {
            Dialect::Astron(s) => s,
            Dialect::Toontown2003(s) => &mut **s,
        }
    }

    /// One client datagram (`body`; `r` reads it from the start).
    pub(in crate::clientagent) fn on_client(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        body: &[u8],
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        match self {
            Dialect::Astron(s) => s.on_client(core, now, body, r, out),
            Dialect::Toontown2003(t) => toontown::Ctx { core, t }.on_client(now, body, r, out),
        }
    }

    /// An internal datagram the dialect serves itself (answers to its own requests, its own
    /// messages); true when handled, false when the core handles it (`r` may have moved).
    pub(in crate::clientagent) fn on_internal(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<bool, WireError> {
        match self {
            Dialect::Astron(s) => s.on_internal(core, now, msgtype, r, out),
            Dialect::Toontown2003(t) => toontown::Ctx { core, t }.on_internal(now, msgtype, r, out),
        }
    }

    /// The earliest time the dialect's own timers are due.
    pub(in crate::clientagent) fn next_deadline(&self) -> Option<Instant> {
        match self {
            Dialect::Astron(s) => s.next_deadline(),
            Dialect::Toontown2003(t) => t.next_deadline(),
        }
    }

    /// Time passes for the dialect's own timers.
    pub(in crate::clientagent) fn on_time(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        out: &mut SessionOut,
    ) {
        match self {
            Dialect::Astron(s) => s.on_time(core, now),
            Dialect::Toontown2003(t) => toontown::Ctx { core, t }.on_time(now, out),
        }
    }

    /// Another channel the client's own datagrams go out from (the 2003 avatar's puppet
    /// channel), whose echoes from the cluster are ignored as the session channel's are.
    pub(in crate::clientagent) fn own_sender(&self) -> Option<u64> {
        match self {
            Dialect::Astron(_) => None,
            Dialect::Toontown2003(t) => t.own_sender(),
        }
    }

    /// (account name, avatar, district, zone) as the dialect knows them: the 2003 dialect logs
    /// the account in and plays the toon itself; Astron's knows none of them (the session core
    /// reads what it can from its channel, and the account from `astron_account`).
    pub(in crate::clientagent) fn who(&self) -> Option<(Option<&str>, u32, u32, u32)> {
        match self {
            Dialect::Astron(_) => None,
            Dialect::Toontown2003(t) => Some(t.who()),
        }
    }

    /// An Astron session's account as its channel names it (`#ID`), if any.
    pub(in crate::clientagent) fn astron_account(&self) -> Option<&str> {
        match self {
            Dialect::Astron(s) => s.account(),
            Dialect::Toontown2003(_) => None,
        }
    }

    /// Shows an operator's message to the player; false when the dialect cannot (an Astron
    /// client has no system-message message of its own; a 2003 client needs a toon in play).
    pub(in crate::clientagent) fn system_message(
        &mut self,
        core: &mut SessionCore,
        text: &str,
        out: &mut SessionOut,
    ) -> bool {
        match self {
            Dialect::Astron(_) => astron::system_message(core, text, out),
            Dialect::Toontown2003(t) => toontown::Ctx { core, t }.system_message(text, out),
        }
    }

    /// The eject code for an operator's kick (`shutdown` false) or a server shutdown.
    pub(in crate::clientagent) fn admin_eject_code(&self, shutdown: bool) -> u16 {
        match (self, shutdown) {
            (Dialect::Astron(_), false) => otp_wire::msgtypes::eject::CLIENT_DISCONNECT_ADMIN_KICK,
            (Dialect::Astron(_), true) => otp_wire::msgtypes::eject::CLIENT_DISCONNECT_SHUTDOWN,
            (Dialect::Toontown2003(_), false) => toontown::LOST_KICKED,
            (Dialect::Toontown2003(_), true) => toontown::LOST_SHUTDOWN,
        }
    }

    /// The eject code for a client not logged in within `login_timeout_ms`.
    pub(in crate::clientagent) fn login_timeout_code(&self) -> u16 {
        match self {
            Dialect::Astron(_) => otp_wire::msgtypes::eject::CLIENT_DISCONNECT_GENERIC,
            Dialect::Toontown2003(_) => toontown::LOST_LOGIN_PROBLEM,
        }
    }

    /// The answer to a job the dialect asked for.
    pub(in crate::clientagent) fn on_job_done(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        id: u32,
        result: JobResult,
        out: &mut SessionOut,
    ) {
        if let Dialect::Toontown2003(t) = self {
            toontown::Ctx { core, t }.on_job_done(now, id, result, out);
        }
    }

    /// The connection is gone: the dialect's goodbyes.
    pub(in crate::clientagent) fn on_closed(
        &mut self,
        core: &mut SessionCore,
        out: &mut SessionOut,
    ) {
        if let Dialect::Toontown2003(t) = self {
            // The toon's friends hear it went offline (its puppet channel goes with the
            // connection's subscriptions).
            toontown::Ctx { core, t }.friends_offline(out);
        }
    }

    /// A client datagram held back earlier that may be handled now (the 2003 dialect holds
    /// the client's datagrams while it answers a SET_ZONE, Astron's while it checks a ban).
    pub(in crate::clientagent) fn next_held(&mut self) -> Option<Vec<u8>> {
        match self {
            Dialect::Astron(s) => s.next_held(),
            Dialect::Toontown2003(t) => t.next_held(),
        }
    }
}

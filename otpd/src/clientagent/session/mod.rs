//! One client's session as a sans-IO state machine: it takes client datagrams, internal
//! datagrams addressed to the client's channels, and time, and returns what to send the client,
//! what to route into the cluster, subscription and post-remove changes, events, and whether to
//! close (`SessionOut`). A `Session` is a core (`core.rs`: lifecycle, timers, limits, what the
//! client sees, `may_send`; `interests.rs`) and a dialect (`clientagent/dialect/`) that decodes
//! the client's datagrams and writes what it is told; `cluster.rs` serves the cluster's
//! datagrams. It follows Astron's `Client.cpp` message for message, adds the limits Astron
//! lacks, and never panics on input.

mod admin;
mod cluster;
pub(in crate::clientagent) mod core;
mod interests;

pub use self::core::{
    clip_text, CLIENT_DISCONNECT_CLUSTER_LOST, CLIENT_DISCONNECT_CLUSTER_UNAVAILABLE,
    CLIENT_DISCONNECT_RATE_LIMITED, MAX_REASON_BYTES,
};

use self::core::{min_opt, refuse, SessionCore};
use super::dialect::Dialect;
use super::ClientAgent;
use crate::roles::event::{encode, Ev};
use crate::roles::Subscription;
use otp_wire::channels::BCHAN_CLIENTS;
use otp_wire::msgtypes::eject::*;
use otp_wire::{InternalDatagram, Reader};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub const STATE_NEW: u16 = 0;
pub const STATE_ANONYMOUS: u16 = 1;
pub const STATE_ESTABLISHED: u16 = 2;

/// How the session ends; the runtime closes the connection accordingly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// CLIENT_EJECT was queued for the client: flush it, then close.
    Eject { code: u16, reason: String },
    /// CLIENTAGENT_DROP: close without another word.
    Drop,
    /// The client said CLIENT_DISCONNECT.
    Disconnect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostRemove {
    /// A datagram body (no length tag) to route when the client goes.
    Add(Vec<u8>),
    Clear,
}

/// What one session asks of the runtime after each call (the sessions' counterpart of the
/// roles' `Output`: a session also writes to its client and asks for jobs).
#[derive(Debug, Default)]
pub struct SessionOut {
    /// Client datagrams, each with its length tag.
    pub to_client: Vec<u8>,
    /// Internal datagrams, each with its length tag, sent from the client's participant.
    pub datagrams: Vec<u8>,
    /// Applied before `datagrams` are routed.
    pub subscriptions: Vec<Subscription>,
    pub post_removes: Vec<PostRemove>,
    /// MessagePack events for the EventLogger.
    pub events: Vec<Vec<u8>>,
    pub close: Option<Close>,
    /// Slow work to do off the event loop; each answer comes back through `on_job_done`.
    pub jobs: Vec<SessionJob>,
}

impl SessionOut {
    pub fn clear(&mut self) {
        self.to_client.clear();
        self.datagrams.clear();
        self.subscriptions.clear();
        self.post_removes.clear();
        self.events.clear();
        self.close = None;
        self.jobs.clear();
    }
}

/// Work too slow for a core's event loop (password hashing takes milliseconds by design):
/// the runtime runs it on a worker thread and hands the answer to `Session::on_job_done`.
pub enum SessionJob {
    /// Does `password` match `hash`? Answered with `JobResult::Checked`.
    CheckPassword {
        id: u32,
        password: Vec<u8>,
        hash: String,
    },
    /// A new salted hash of `password`. Answered with `JobResult::Hashed`.
    HashPassword { id: u32, password: Vec<u8> },
    /// A check against a dummy hash, for an account that does not exist: as long as a real
    /// one, answered `JobResult::Checked(false)`.
    CheckDummy { id: u32, password: Vec<u8> },
}

impl std::fmt::Debug for SessionJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        match self {
            SessionJob::CheckPassword { id, .. } => write!(f, "CheckPassword({id})"),
            SessionJob::HashPassword { id, .. } => write!(f, "HashPassword({id})"),
            SessionJob::CheckDummy { id, .. } => write!(f, "CheckDummy({id})"),
        }
    }
}

impl SessionJob {
    pub fn id(&self) -> u32 {
        match self {
            SessionJob::CheckPassword { id, .. }
            | SessionJob::HashPassword { id, .. }
            | SessionJob::CheckDummy { id, .. } => *id,
        }
    }

    /// Does the work (on a worker thread).
    pub fn run(&self) -> JobResult {
        match self {
            SessionJob::CheckPassword { password, hash, .. } => {
                JobResult::Checked(crate::clientagent::accounts::check_password(password, hash))
            }
            SessionJob::HashPassword { password, .. } => {
                JobResult::Hashed(crate::clientagent::accounts::hash_password(password))
            }
            SessionJob::CheckDummy { password, .. } => {
                JobResult::Checked(crate::clientagent::accounts::check_dummy_password(password))
            }
        }
    }
}

/// The answer to a `SessionJob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Checked(bool),
    Hashed(Result<String, String>),
    /// The worker's queue was full: the job was not done.
    Unavailable,
}

/// One client's session: the core every dialect shares, and the dialect it speaks.
pub struct Session {
    core: SessionCore,
    dialect: Dialect,
}

/// Extra passes `on_time` makes for timers that came due during a pass.
const MAX_TIME_PASSES: usize = 300;

impl Session {
    /// Starts a session on `channel` (allocated by the runtime from the agent's range).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ca: Arc<ClientAgent>,
        channel: u64,
        remote: SocketAddr,
        local: SocketAddr,
        tlvs: Vec<u8>,
        admitted: Option<IpAddr>,
        local_check: bool,
        now: Instant,
        out: &mut SessionOut,
    ) -> Session {
        let dialect = Dialect::new(ca.dialect);
        let core = SessionCore::new(ca, channel, remote, local, tlvs, admitted, local_check, now);
        core.ca.state_changed(None, Some(STATE_NEW as usize));
        out.subscriptions.push(Subscription::Add(channel));
        out.subscriptions.push(Subscription::Add(BCHAN_CLIENTS));
        if !local_check {
            let (r, l) = (remote.to_string(), local.to_string());
            out.events.push(encode(
                "client-connected",
                &[
                    ("role", Ev::Str("clientagent")),
                    ("sender", Ev::Str(&core.sender_name())),
                    ("remote_address", Ev::Str(&r)),
                    ("local_address", Ev::Str(&l)),
                ],
            ));
        }
        Session { core, dialect }
    }

    pub fn channel(&self) -> u64 {
        self.core.channel()
    }

    pub fn allocated_channel(&self) -> u64 {
        self.core.allocated
    }

    pub fn state(&self) -> u16 {
        self.core.state()
    }

    /// The eject code of this session's dialect for a server shutting down.
    pub fn shutdown_code(&self) -> u16 {
        self.dialect.admin_eject_code(true)
    }

    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// A name for logs.
    pub fn label(&self) -> String {
        self.core.label()
    }

    /// The earliest time `on_time` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.core.is_closed() {
            return None;
        }
        min_opt(self.core.next_deadline(), self.dialect.next_deadline())
    }

    /// Time passes: hello and heartbeat timeouts, interest operations that timed out, the
    /// dialect's own timers.
    pub fn on_time(&mut self, now: Instant, out: &mut SessionOut) {
        self.on_time_pass(now, out);
        // A 2003 SET_ZONE replayed by the pass may open an interest due at once
        // (interest_timeout_ms = 0): pass again until nothing is due at `now`. Each pass uses
        // up held datagrams; the bound keeps a timer that stays due from spinning here (the
        // runtime's next scan gets it).
        for _ in 0..MAX_TIME_PASSES {
            if self.next_deadline().is_none_or(|d| d > now) {
                break;
            }
            self.on_time_pass(now, out);
        }
    }

    fn on_time_pass(&mut self, now: Instant, out: &mut SessionOut) {
        if self.core.is_closed() {
            return;
        }
        let login_code = self.dialect.login_timeout_code();
        if self.core.timers_due(now, login_code, out) {
            return;
        }
        let due: Vec<u32> = self
            .core
            .ops
            .iter()
            .filter(|(_, op)| op.deadline <= now)
            .map(|(&c, _)| c)
            .collect();
        for ctx in due {
            log::debug!("{}: interest operation timed out; forcing", self.label());
            self.finish_op(ctx, now, out);
            if self.core.is_closed() {
                return;
            }
        }
        self.dialect.on_time(&mut self.core, now, out);
        self.replay_held(now, out);
    }

    /// Ejects the client on the runtime's behalf (a datagram too large to frame, a limit the
    /// runtime enforces).
    pub fn eject_now(&mut self, code: u16, reason: &str, security: bool, out: &mut SessionOut) {
        self.core.eject(refuse(code, reason), security, out);
    }

    // ---- from the client ---------------------------------------------------------------

    /// One client datagram (without its length tag).
    pub fn on_client(&mut self, now: Instant, body: &[u8], out: &mut SessionOut) {
        if self.core.is_closed() {
            return;
        }
        if let Some(r) = self.core.over_rate(now, body.len()) {
            self.core.eject(r, true, out);
            return;
        }
        self.on_client_unmetered(now, body, out);
        self.replay_held(now, out);
    }

    /// A client datagram, past the rate limit (also a held one, replayed).
    fn on_client_unmetered(&mut self, now: Instant, body: &[u8], out: &mut SessionOut) {
        let mut r = Reader::new(body);
        let res = self
            .dialect
            .on_client(&mut self.core, now, body, &mut r, out);
        match res {
            Err(refusal) => {
                let security = refusal.code != CLIENT_DISCONNECT_NO_HELLO
                    && refusal.code != CLIENT_DISCONNECT_BAD_VERSION
                    && refusal.code != CLIENT_DISCONNECT_BAD_DCHASH
                    && refusal.code != CLIENT_DISCONNECT_TRUNCATED_DATAGRAM;
                self.core.eject(refusal, security, out);
            }
            Ok(()) if !self.core.is_closed() && r.remaining() > 0 => self.core.eject(
                refuse(
                    CLIENT_DISCONNECT_OVERSIZED_DATAGRAM,
                    "Datagram contains excess data.",
                ),
                true,
                out,
            ),
            Ok(()) => {}
        }
    }

    /// Handles client datagrams the dialect held back and now lets go.
    fn replay_held(&mut self, now: Instant, out: &mut SessionOut) {
        while !self.core.is_closed() {
            let Some(body) = self.dialect.next_held() else {
                return;
            };
            self.on_client_unmetered(now, &body, out);
        }
    }

    // ---- from the cluster --------------------------------------------------------------

    /// One internal datagram (body, without its length tag) delivered to the client's
    /// participant.
    pub fn on_internal(&mut self, now: Instant, body: &[u8], out: &mut SessionOut) {
        if self.core.is_closed() {
            return;
        }
        let Ok(dg) = InternalDatagram::parse(body) else {
            return;
        };
        let Some(sender) = dg.sender else {
            return;
        };
        // The cluster's echo of the client's own datagrams (the StateServer sends an update
        // to its object's owner and zone, the sender among them).
        if sender == self.core.channel() || Some(sender) == self.dialect.own_sender() {
            return;
        }
        let mut r = dg.payload_reader();
        match self
            .dialect
            .on_internal(&mut self.core, now, dg.msgtype, &mut r, out)
        {
            Ok(true) => {
                self.replay_held(now, out);
                return;
            }
            Ok(false) => r = dg.payload_reader(),
            Err(e) => {
                log::warn!(
                    "{}: malformed {}: {e}",
                    self.label(),
                    otp_wire::msgtypes::internal_name(dg.msgtype)
                );
                return;
            }
        }
        if let Err(e) = self.internal(now, sender, dg.msgtype, &mut r, body, out) {
            log::warn!(
                "{}: malformed {} from {sender}: {e}",
                self.label(),
                otp_wire::msgtypes::internal_name(dg.msgtype)
            );
        }
        self.replay_held(now, out);
    }

    /// The answer to a job this session asked for (`SessionOut::jobs`).
    pub fn on_job_done(&mut self, now: Instant, id: u32, result: JobResult, out: &mut SessionOut) {
        if self.core.is_closed() {
            return;
        }
        self.dialect
            .on_job_done(&mut self.core, now, id, result, out);
    }

    /// The connection is gone (or going): delete session objects, answer whoever waits on a
    /// pending interest, and record a lost connection. `lost` names what happened when the
    /// connection ended without an eject, drop or disconnect. Call once.
    pub fn on_closed(&mut self, lost: Option<&str>, out: &mut SessionOut) {
        self.core.close(lost, out);
        self.dialect.on_closed(&mut self.core, out);
        self.core.delete_session_objects(out);
        for (_, op) in std::mem::take(&mut self.core.ops) {
            self.core.notify_done(op.interest_id, &op.callers, out);
        }
    }

    /// Checks what the session keeps against itself (for tests and fuzzing): every object
    /// the client was shown is one the session knows the class and location of, and the
    /// reverse. An error names the broken rule.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.core.check_invariants()
    }

    /// The open interests: id and number of zones (for tests and fuzzing).
    pub fn interest_zone_counts(&self) -> Vec<(u16, usize)> {
        self.core
            .interests
            .iter()
            .map(|(&id, i)| (id, i.zones.len()))
            .collect()
    }
}

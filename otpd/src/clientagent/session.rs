//! One client's session as a sans-IO state machine: it takes client datagrams, internal
//! datagrams addressed to the client's channels, and time, and returns what to send the client,
//! what to route into the cluster, subscription and post-remove changes, events, and whether to
//! close. It follows Astron's `Client.cpp` / `AstronClient.cpp` message for message, adds the
//! limits Astron lacks, and never panics on input.

use super::{ClientAgent, InterestPolicy};
use crate::roles::event::{encode, Ev};
use crate::roles::Subscription;
use otp_wire::channels::{location_channel, BCHAN_CLIENTS};
use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::*;
use otp_wire::{InternalDatagram, Reader, WireError, Writer};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const STATE_NEW: u16 = 0;
pub const STATE_ANONYMOUS: u16 = 1;
pub const STATE_ESTABLISHED: u16 = 2;

/// otpd's own eject code: a client sent more datagrams or bytes per second than its limits.
pub const CLIENT_DISCONNECT_RATE_LIMITED: u16 = 129;

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

/// What the session asks of the runtime.
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
                JobResult::Checked(super::accounts::check_password(password, hash))
            }
            SessionJob::HashPassword { password, .. } => {
                JobResult::Hashed(super::accounts::hash_password(password))
            }
            SessionJob::CheckDummy { password, .. } => {
                JobResult::Checked(super::accounts::check_dummy_password(password))
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

#[derive(Debug, Clone, Copy)]
pub(super) struct Obj {
    pub(super) class: u16,
    pub(super) parent: u32,
    pub(super) zone: u32,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Interest {
    pub(super) parent: u32,
    /// Distinct zones, in the order given.
    pub(super) zones: SmallVec<[u32; 4]>,
}

/// An interest being opened: waiting for the StateServer's count and objects.
#[derive(Debug)]
struct InterestOp {
    interest_id: u16,
    client_context: u32,
    parent: u32,
    zones: SmallVec<[u32; 4]>,
    callers: SmallVec<[u64; 2]>,
    deadline: Instant,
    total: Option<u32>,
    /// ENTER_INTEREST datagram bodies, in arrival order.
    generates: Vec<Vec<u8>>,
    /// Other datagram bodies held back until the interest is open.
    queued: Vec<Vec<u8>>,
}

impl InterestOp {
    fn is_ready(&self) -> bool {
        self.total
            .is_some_and(|t| self.generates.len() as u64 >= t as u64)
    }
}

/// Why a client datagram was refused.
pub(super) struct Refusal {
    pub(super) code: u16,
    pub(super) reason: String,
    pub(super) doid: Option<u32>,
    pub(super) field: Option<u16>,
}

impl From<WireError> for Refusal {
    fn from(_: WireError) -> Refusal {
        refuse(
            CLIENT_DISCONNECT_TRUNCATED_DATAGRAM,
            "Datagram unexpectedly ended while iterating.",
        )
    }
}

pub(super) fn refuse(code: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
        doid: None,
        field: None,
    }
}

/// Counts one second's datagrams and bytes.
#[derive(Debug)]
struct RateWindow {
    start: Instant,
    datagrams: u32,
    bytes: u64,
}

pub struct Session {
    pub(super) ca: Arc<ClientAgent>,
    state: u16,
    pub(super) channel: u64,
    allocated: u64,
    pub(super) remote: SocketAddr,
    local: SocketAddr,
    tlvs: Vec<u8>,
    /// The address counted against `max_connections_per_address`, released on drop.
    admitted: Option<IpAddr>,
    next_context: u32,
    pub(super) seen: FxHashSet<u32>,
    pub(super) session_objects: BTreeSet<u32>,
    pub(super) historical: FxHashSet<u32>,
    pub(super) visible: FxHashMap<u32, Obj>,
    declared: FxHashMap<u32, u16>,
    pub(super) owned: FxHashMap<u32, Obj>,
    /// Objects whose entrance is held in a pending interest op, by that op's context.
    pending_objects: FxHashMap<u32, u32>,
    pub(super) interests: BTreeMap<u16, Interest>,
    ops: BTreeMap<u32, InterestOp>,
    pub(super) sendable: FxHashMap<u32, Vec<u16>>,
    hello_deadline: Option<Instant>,
    /// When a client that is not logged in by then is ejected (`login_timeout_ms`); nothing
    /// the client sends moves it.
    login_deadline: Option<Instant>,
    heartbeat_deadline: Option<Instant>,
    rate: RateWindow,
    /// An end was decided (eject, drop, disconnect): input is ignored from then on.
    closed: bool,
    /// The end was the server's or the client's word, not a lost connection.
    clean: bool,
    /// A proxy's own health check (PROXY v2 LOCAL): no connection events.
    local_check: bool,
    /// The Toontown 2003 dialect's state (None for Astron clients).
    pub(super) toon: Option<Box<super::toontown::Toon>>,
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
        let hello = ca.limits.hello_timeout_ms;
        let ca_dialect = ca.dialect;
        let s = Session {
            hello_deadline: (hello > 0).then(|| now + Duration::from_millis(hello)),
            login_deadline: (ca.limits.login_timeout_ms > 0)
                .then(|| now + Duration::from_millis(ca.limits.login_timeout_ms)),
            heartbeat_deadline: ca.heartbeat_timeout.map(|t| now + t),
            ca,
            state: STATE_NEW,
            channel,
            allocated: channel,
            remote,
            local,
            tlvs,
            admitted,
            next_context: 1,
            seen: FxHashSet::default(),
            session_objects: BTreeSet::new(),
            historical: FxHashSet::default(),
            visible: FxHashMap::default(),
            declared: FxHashMap::default(),
            owned: FxHashMap::default(),
            pending_objects: FxHashMap::default(),
            interests: BTreeMap::new(),
            ops: BTreeMap::new(),
            sendable: FxHashMap::default(),
            rate: RateWindow {
                start: now,
                datagrams: 0,
                bytes: 0,
            },
            closed: false,
            clean: false,
            local_check,
            toon: (ca_dialect == crate::config::Dialect::Toontown2003).then(Box::default),
        };
        s.ca.state_changed(None, Some(STATE_NEW as usize));
        out.subscriptions.push(Subscription::Add(channel));
        out.subscriptions.push(Subscription::Add(BCHAN_CLIENTS));
        if !local_check {
            let (r, l) = (remote.to_string(), local.to_string());
            out.events.push(encode(
                "client-connected",
                &[
                    ("role", Ev::Str("clientagent")),
                    ("sender", Ev::Str(&s.sender_name())),
                    ("remote_address", Ev::Str(&r)),
                    ("local_address", Ev::Str(&l)),
                ],
            ));
        }
        s
    }

    pub fn channel(&self) -> u64 {
        self.channel
    }

    pub fn allocated_channel(&self) -> u64 {
        self.allocated
    }

    pub fn state(&self) -> u16 {
        self.state
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A name for logs.
    pub fn label(&self) -> String {
        format!("client {} ({})", self.remote, self.allocated)
    }

    pub(super) fn sender_name(&self) -> String {
        format!("Client:{}", self.allocated)
    }

    /// The earliest time `on_time` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut at = self.heartbeat_deadline;
        if self.state == STATE_NEW {
            at = min_opt(at, self.hello_deadline);
        }
        if self.state != STATE_ESTABLISHED {
            at = min_opt(at, self.login_deadline);
        }
        for op in self.ops.values() {
            at = min_opt(at, Some(op.deadline));
        }
        min_opt(at, self.toon_deadline())
    }

    /// Time passes: hello and heartbeat timeouts, interest operations that timed out.
    pub fn on_time(&mut self, now: Instant, out: &mut SessionOut) {
        self.on_time_pass(now, out);
        // A 2003 SET_ZONE replayed by the pass may open an interest due at once
        // (interest_timeout_ms = 0): pass again until nothing is due at `now`. Each pass uses
        // up held datagrams; the bound keeps a timer that stays due from spinning here (the
        // runtime's next scan gets it).
        for _ in 0..MAX_TIME_PASSES {
            if self.toon.is_none() || self.next_deadline().is_none_or(|d| d > now) {
                break;
            }
            self.on_time_pass(now, out);
        }
    }

    fn on_time_pass(&mut self, now: Instant, out: &mut SessionOut) {
        if self.closed {
            return;
        }
        if self.state == STATE_NEW && self.hello_deadline.is_some_and(|d| d <= now) {
            let ms = self.ca.limits.hello_timeout_ms;
            self.eject(
                refuse(
                    CLIENT_DISCONNECT_NO_HELLO,
                    format!("No CLIENT_HELLO within {ms} ms of connecting."),
                ),
                true,
                out,
            );
            return;
        }
        if self.state != STATE_ESTABLISHED && self.login_deadline.is_some_and(|d| d <= now) {
            let ms = self.ca.limits.login_timeout_ms;
            let code = if self.toon.is_some() {
                super::toontown::LOST_LOGIN_PROBLEM
            } else {
                CLIENT_DISCONNECT_GENERIC
            };
            self.eject(
                refuse(code, format!("Not logged in within {ms} ms of connecting.")),
                true,
                out,
            );
            return;
        }
        if self.heartbeat_deadline.is_some_and(|d| d <= now) {
            self.heartbeat_deadline = None;
            self.eject(
                refuse(
                    CLIENT_DISCONNECT_NO_HEARTBEAT,
                    "Server timed out while waiting for heartbeat.",
                ),
                false,
                out,
            );
            return;
        }
        let due: Vec<u32> = self
            .ops
            .iter()
            .filter(|(_, op)| op.deadline <= now)
            .map(|(&c, _)| c)
            .collect();
        for ctx in due {
            log::debug!("{}: interest operation timed out; forcing", self.label());
            self.finish_op(ctx, now, out);
            if self.closed {
                return;
            }
        }
        if self.toon.is_some() {
            self.toon_time(now, out);
            self.toon_replay(now, out);
        }
    }

    /// Ejects the client on the runtime's behalf (a datagram too large to frame, a limit the
    /// runtime enforces).
    pub fn eject_now(&mut self, code: u16, reason: &str, security: bool, out: &mut SessionOut) {
        self.eject(refuse(code, reason), security, out);
    }

    pub(super) fn eject(&mut self, mut r: Refusal, security: bool, out: &mut SessionOut) {
        if self.closed {
            return;
        }
        // A reason may quote what the client sent (a version string of up to 64 KiB): it goes
        // to the log, the event and the client clipped, so that a client cannot multiply its
        // bytes into the operator's disks.
        clip_text(&mut r.reason, MAX_REASON_BYTES);
        self.closed = true;
        self.clean = true;
        self.ca.count_eject(r.code);
        log::info!(
            "{}: ejecting ({}){}: {}",
            self.label(),
            r.code,
            if security { " [security]" } else { "" },
            r.reason
        );
        let code = r.code.to_string();
        let remote = self.remote.to_string();
        let sender = self.sender_name();
        let mut pairs: Vec<(&str, Ev<'_>)> = vec![
            ("reason_code", Ev::Str(&code)),
            ("reason_msg", Ev::Str(&r.reason)),
            ("role", Ev::Str("clientagent")),
            ("sender", Ev::Str(&sender)),
            ("channel", Ev::U64(self.allocated)),
            ("remote_address", Ev::Str(&remote)),
        ];
        if let Some(d) = r.doid {
            pairs.push(("doid", Ev::U64(d as u64)));
        }
        let field_name;
        if let Some(f) = r.field {
            let class = r
                .doid
                .and_then(|d| self.lookup_object(d))
                .unwrap_or(crate::roles::ANY_CLASS);
            field_name = self.ca.schema.field_name(class, f).to_string();
            pairs.push(("field", Ev::Str(&field_name)));
        }
        out.events.push(encode(
            if security {
                "client-ejected-security"
            } else {
                "client-ejected"
            },
            &pairs,
        ));
        let mut w = Writer::client(&mut out.to_client, CLIENT_EJECT);
        w.u16(r.code);
        // The reason is ours or the server's: cut it to fit rather than lose the eject.
        let mut reason = r.reason.as_str();
        while reason.len() > 60_000 {
            let mut cut = 60_000;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason = &reason[..cut];
        }
        w.string(reason);
        let _ = w.finish();
        out.close = Some(Close::Eject {
            code: r.code,
            reason: r.reason,
        });
    }

    // ---- from the client ---------------------------------------------------------------

    /// One client datagram (without its length tag).
    pub fn on_client(&mut self, now: Instant, body: &[u8], out: &mut SessionOut) {
        if self.closed {
            return;
        }
        if let Some(r) = self.over_rate(now, body.len()) {
            self.eject(r, true, out);
            return;
        }
        self.on_client_unmetered(now, body, out);
        if self.toon.is_some() {
            self.toon_replay(now, out);
        }
    }

    /// A client datagram, past the rate limit (also a held one, replayed).
    pub(super) fn on_client_unmetered(&mut self, now: Instant, body: &[u8], out: &mut SessionOut) {
        let mut r = Reader::new(body);
        let res = if self.toon.is_some() {
            self.toon_client(now, body, &mut r, out)
        } else {
            match self.state {
                STATE_NEW => self.pre_hello(now, &mut r, out),
                _ => self.after_hello(now, &mut r, out),
            }
        };
        match res {
            Err(refusal) => {
                let security = refusal.code != CLIENT_DISCONNECT_NO_HELLO
                    && refusal.code != CLIENT_DISCONNECT_BAD_VERSION
                    && refusal.code != CLIENT_DISCONNECT_BAD_DCHASH
                    && refusal.code != CLIENT_DISCONNECT_TRUNCATED_DATAGRAM;
                self.eject(refusal, security, out);
            }
            Ok(()) if !self.closed && r.remaining() > 0 => self.eject(
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

    fn over_rate(&mut self, now: Instant, len: usize) -> Option<Refusal> {
        let l = &self.ca.limits;
        if now.duration_since(self.rate.start) >= Duration::from_secs(1) {
            self.rate.start = now;
            self.rate.datagrams = 0;
            self.rate.bytes = 0;
        }
        self.rate.datagrams += 1;
        self.rate.bytes += len as u64 + 2;
        if l.max_datagrams_per_second != 0 && self.rate.datagrams > l.max_datagrams_per_second {
            return Some(refuse(
                CLIENT_DISCONNECT_RATE_LIMITED,
                format!(
                    "Client sent more than {} datagrams in one second.",
                    l.max_datagrams_per_second
                ),
            ));
        }
        if l.max_bytes_per_second != 0 && self.rate.bytes > l.max_bytes_per_second as u64 {
            return Some(refuse(
                CLIENT_DISCONNECT_RATE_LIMITED,
                format!(
                    "Client sent more than {} bytes in one second.",
                    l.max_bytes_per_second
                ),
            ));
        }
        None
    }

    fn pre_hello(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let msgtype = r.u16()?;
        if msgtype != CLIENT_HELLO {
            return Err(refuse(
                CLIENT_DISCONNECT_NO_HELLO,
                "First packet is not CLIENT_HELLO",
            ));
        }
        self.heartbeat(now);
        let hash = r.u32()?;
        let version = r.blob()?;
        if version != self.ca.version.as_bytes() {
            let mut msg = format!(
                "Client version mismatch: client={}",
                String::from_utf8_lossy(version)
            );
            if self.ca.send_version {
                msg.push_str(&format!(", server={}", self.ca.version));
            }
            return Err(refuse(CLIENT_DISCONNECT_BAD_VERSION, msg));
        }
        if hash != self.ca.hash {
            let mut msg = format!("Client DC hash mismatch: client=0x{hash:x}");
            if self.ca.send_hash {
                msg.push_str(&format!(", server=0x{:x}", self.ca.hash));
            }
            return Err(refuse(CLIENT_DISCONNECT_BAD_DCHASH, msg));
        }
        let _ = Writer::client(&mut out.to_client, CLIENT_HELLO_RESP).finish();
        self.set_state(STATE_ANONYMOUS);
        Ok(())
    }

    /// A datagram after HELLO: ANONYMOUS clients may only disconnect, beat and call
    /// anonymous UberDOGs; ESTABLISHED ones may also move objects and open interests.
    fn after_hello(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let msgtype = r.u16()?;
        let established = self.state == STATE_ESTABLISHED;
        match msgtype {
            CLIENT_DISCONNECT => self.client_disconnect(out),
            CLIENT_OBJECT_SET_FIELD => return self.client_set_field(r, false, out),
            CLIENT_OBJECT_SET_FIELDS => return self.client_set_field(r, true, out),
            CLIENT_HEARTBEAT => self.heartbeat(now),
            CLIENT_OBJECT_LOCATION if established => return self.client_location(r, out),
            CLIENT_ADD_INTEREST if established => {
                return self.client_add_interest(now, r, false, out)
            }
            CLIENT_ADD_INTEREST_MULTIPLE if established => {
                return self.client_add_interest(now, r, true, out)
            }
            CLIENT_REMOVE_INTEREST if established => {
                return self.client_remove_interest(now, r, out)
            }
            other if established => {
                return Err(refuse(
                    CLIENT_DISCONNECT_INVALID_MSGTYPE,
                    format!("Message type {other} not valid."),
                ))
            }
            other => {
                return Err(refuse(
                    CLIENT_DISCONNECT_INVALID_MSGTYPE,
                    format!("Message type {other} not allowed prior to authentication."),
                ))
            }
        }
        Ok(())
    }

    pub(super) fn client_disconnect(&mut self, out: &mut SessionOut) {
        out.events.push(encode(
            "client-disconnected",
            &[
                ("role", Ev::Str("clientagent")),
                ("sender", Ev::Str(&self.sender_name())),
            ],
        ));
        self.closed = true;
        self.clean = true;
        out.close = Some(Close::Disconnect);
    }

    /// Gives a client that has not logged in another `hello_timeout_ms` (2003 dialect).
    pub(super) fn extend_hello(&mut self, now: Instant) {
        let ms = self.ca.limits.hello_timeout_ms;
        if ms > 0 {
            self.hello_deadline = Some(now + Duration::from_millis(ms));
        }
    }

    pub(super) fn heartbeat(&mut self, now: Instant) {
        if let Some(t) = self.ca.heartbeat_timeout {
            self.heartbeat_deadline = Some(now + t);
        }
    }

    pub(super) fn set_state(&mut self, state: u16) {
        if state != self.state {
            self.ca
                .state_changed(Some(self.state as usize), Some(state as usize));
            self.state = state;
        }
    }

    /// The class of an object this client may address, or None.
    /// The one send-permission rule of both dialects: the client may update `field` of `doid`
    /// when it is `clsend`, or `ownsend` on an object it owns, or made sendable for it by the
    /// cluster (CLIENTAGENT_SET_FIELDS_SENDABLE). `field` is in the cluster's numbering.
    pub(super) fn may_send(
        &self,
        doid: u32,
        field: u16,
        flags: crate::roles::FieldFlags,
        owned: bool,
    ) -> bool {
        flags.clsend
            || (owned && flags.ownsend)
            || self.sendable.get(&doid).is_some_and(|f| f.contains(&field))
    }

    /// Checks what the session keeps against itself (for tests and fuzzing): every object
    /// the client was shown is one the session knows the class and location of, and the
    /// reverse. An error names the broken rule.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.seen.len() != self.visible.len()
            || !self.seen.iter().all(|d| self.visible.contains_key(d))
        {
            return Err(format!(
                "seen ({}) and visible ({}) disagree",
                self.seen.len(),
                self.visible.len()
            ));
        }
        Ok(())
    }

    /// The open interests: id and number of zones (for tests and fuzzing).
    pub fn interest_zone_counts(&self) -> Vec<(u16, usize)> {
        self.interests
            .iter()
            .map(|(&id, i)| (id, i.zones.len()))
            .collect()
    }

    pub(super) fn lookup_object(&self, doid: u32) -> Option<u16> {
        if let Some(u) = self.ca.uberdogs.get(&doid) {
            return Some(u.class);
        }
        if let Some(o) = self.owned.get(&doid) {
            return Some(o.class);
        }
        if self.seen.contains(&doid) {
            return self.visible.get(&doid).map(|o| o.class);
        }
        self.declared.get(&doid).copied()
    }

    /// CLIENT_OBJECT_SET_FIELD, or (with `many`) CLIENT_OBJECT_SET_FIELDS, which Astron lacks:
    /// every field is checked as a single update would be.
    fn client_set_field(
        &mut self,
        r: &mut Reader<'_>,
        many: bool,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        let count = if many { r.u16()? } else { 1 };
        let fields_start = r.rest_peek();
        let Some(class) = self.lookup_object(doid) else {
            if self.historical.contains(&doid) {
                // A late message for an object that was once visible: not the client's fault.
                r.rest();
                return Ok(());
            }
            let mut e = refuse(
                CLIENT_DISCONNECT_MISSING_OBJECT,
                format!("Client tried to send update to nonexistent object {doid}"),
            );
            e.doid = Some(doid);
            return Err(e);
        };
        let schema = self.ca.schema.clone();
        let cname = schema.class_name(class);
        if self.state != STATE_ESTABLISHED
            && !self.ca.uberdogs.get(&doid).is_some_and(|u| u.anonymous)
        {
            let mut e = refuse(
                CLIENT_DISCONNECT_ANONYMOUS_VIOLATION,
                format!("Client tried to send update to non-anonymous object {cname}({doid})"),
            );
            e.doid = Some(doid);
            return Err(e);
        }
        let owned = self.owned.contains_key(&doid);
        let ascii_only = !self.ca.limits.allow_utf8_strings;
        for _ in 0..count {
            let field = r.u16()?;
            let e = |code, reason: String| {
                let mut e = refuse(code, reason);
                e.doid = Some(doid);
                e.field = Some(field);
                e
            };
            if !schema.class_has_field(class, field) {
                return Err(e(
                    CLIENT_DISCONNECT_FORBIDDEN_FIELD,
                    format!(
                        "Client tried to send update for nonexistent field {field} to object {cname}({doid})"
                    ),
                ));
            }
            let flags = schema.flags(class, field);
            if !self.may_send(doid, field, flags, owned) {
                return Err(e(
                    CLIENT_DISCONNECT_FORBIDDEN_FIELD,
                    format!(
                        "Client tried to send update for non-sendable field: {cname}({doid}).{}",
                        schema.field_name(class, field)
                    ),
                ));
            }
            let o = otp_dc::ValidateOptions {
                ascii_strings_only: ascii_only,
                max_string_bytes: 0,
            };
            match schema.value_len_with(class, field, r.rest_peek(), o) {
                Ok(n) => {
                    r.skip(n)?;
                }
                Err(v) if v.truncated => {
                    return Err(e(
                        CLIENT_DISCONNECT_TRUNCATED_DATAGRAM,
                        "Datagram unexpectedly ended while iterating.".into(),
                    ))
                }
                Err(v) => {
                    return Err(e(
                        CLIENT_DISCONNECT_FIELD_CONSTRAINT,
                        format!(
                            "Client tried to send update that violates the constraints for field {cname}({doid}).{}: {}",
                            schema.field_name(class, field),
                            v.message
                        ),
                    ))
                }
            }
        }
        let consumed = fields_start.len() - r.rest_peek().len();
        let fields = &fields_start[..consumed];
        let msgtype = if many {
            STATESERVER_OBJECT_SET_FIELDS
        } else {
            STATESERVER_OBJECT_SET_FIELD
        };
        let mut w = Writer::internal1(&mut out.datagrams, doid as u64, self.channel, msgtype);
        w.u32(doid);
        if many {
            w.u16(count);
        }
        w.bytes(fields);
        if w.finish().is_err() {
            // Writer::finish leaves nothing behind on error.
            return Err(refuse(
                CLIENT_DISCONNECT_OVERSIZED_DATAGRAM,
                "ClientDatagram too large to be routed on MD.",
            ));
        }
        Ok(())
    }

    fn client_location(&mut self, r: &mut Reader<'_>, out: &mut SessionOut) -> Result<(), Refusal> {
        if !self.ca.relocate {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_RELOCATE,
                "Owned object relocation is disabled by server.",
            ));
        }
        let doid = r.u32()?;
        if !self.owned.contains_key(&doid) {
            if self.historical.contains(&doid) {
                r.rest();
                return Ok(());
            }
            let mut e = if self.visible.contains_key(&doid) {
                refuse(
                    CLIENT_DISCONNECT_FORBIDDEN_RELOCATE,
                    "Can't relocate an object the client doesn't own",
                )
            } else {
                refuse(
                    CLIENT_DISCONNECT_MISSING_OBJECT,
                    format!("Client tried to manipulate unknown object {doid}"),
                )
            };
            e.doid = Some(doid);
            return Err(e);
        }
        let parent = r.u32()?;
        let zone = r.u32()?;
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_SET_LOCATION, out);
        w.u32(parent).u32(zone);
        let _ = w.finish();
        Ok(())
    }

    /// Reads an interest (id, parent, zones) as CLIENT_ADD_INTEREST(_MULTIPLE) and
    /// CLIENTAGENT_ADD_INTEREST(_MULTIPLE) carry it.
    fn read_interest(
        r: &mut Reader<'_>,
        multiple: bool,
        max_zones: usize,
    ) -> Result<(u16, Interest), Refusal> {
        let id = r.u16()?;
        let parent = r.u32()?;
        let count = if multiple { r.u16()? as usize } else { 1 };
        if count > max_zones {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!("Interest of {count} zones is over the limit of {max_zones}."),
            ));
        }
        let mut zones: SmallVec<[u32; 4]> = SmallVec::new();
        for _ in 0..count {
            let z = r.u32()?;
            if !zones.contains(&z) {
                zones.push(z);
            }
        }
        Ok((id, Interest { parent, zones }))
    }

    fn client_add_interest(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        multiple: bool,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if self.ca.interests == InterestPolicy::Disabled {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                "Client is not allowed to add interests.",
            ));
        }
        let context = r.u32()?;
        let (id, i) = Self::read_interest(r, multiple, self.ca.limits.max_zones_per_interest)?;
        if self.ca.interests == InterestPolicy::Visible && self.lookup_object(i.parent).is_none() {
            let mut e = refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!(
                    "Cannot add interest to parent with id {} because parent is not visible to client.",
                    i.parent
                ),
            );
            e.doid = Some(i.parent);
            return Err(e);
        }
        let l = &self.ca.limits;
        if !self.interests.contains_key(&id) && self.interests.len() >= l.max_interests {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!("Client has {} interests, the limit.", l.max_interests),
            ));
        }
        if self.ops.len() >= l.max_pending_interests {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!(
                    "Client has {} interest operations outstanding, the limit.",
                    l.max_pending_interests
                ),
            ));
        }
        self.add_interest(now, id, i, context, 0, out);
        Ok(())
    }

    fn client_remove_interest(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if self.ca.interests == InterestPolicy::Disabled {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                "Client is not allowed to remove interests.",
            ));
        }
        let context = r.u32()?;
        let id = r.u16()?;
        let Some(i) = self.interests.get(&id) else {
            return Err(refuse(
                CLIENT_DISCONNECT_GENERIC,
                "Tried to remove a non-existing interest.",
            ));
        };
        if self.ca.interests == InterestPolicy::Visible && self.lookup_object(i.parent).is_none() {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!(
                    "Cannot remove interest for parent with id {} because parent is not visible to client.",
                    i.parent
                ),
            ));
        }
        self.remove_interest(now, id, context, 0, out);
        Ok(())
    }

    // ---- interests ---------------------------------------------------------------------

    /// How many interests see `parent`'s `zone`.
    pub(super) fn interests_seeing(&self, parent: u32, zone: u32) -> usize {
        self.interests
            .values()
            .filter(|i| i.parent == parent && i.zones.contains(&zone))
            .count()
    }

    pub(super) fn add_interest(
        &mut self,
        now: Instant,
        id: u16,
        i: Interest,
        context: u32,
        caller: u64,
        out: &mut SessionOut,
    ) {
        let new_zones: SmallVec<[u32; 4]> = i
            .zones
            .iter()
            .copied()
            .filter(|&z| self.interests_seeing(i.parent, z) == 0)
            .collect();
        if let Some(prev) = self.interests.get(&id).cloned() {
            let killed: SmallVec<[u32; 4]> = prev
                .zones
                .iter()
                .copied()
                .filter(|&z| {
                    self.interests_seeing(prev.parent, z) <= 1
                        && (i.parent != prev.parent || !i.zones.contains(&z))
                })
                .collect();
            self.close_zones(prev.parent, &killed, out);
            if self.closed {
                return;
            }
        }
        let parent = i.parent;
        self.interests.insert(id, i);
        if new_zones.is_empty() {
            self.notify_done(id, &[caller], out);
            self.client_done(id, context, out);
            return;
        }
        let request = self.next_context;
        self.next_context = self.next_context.wrapping_add(1);
        let mut w = self.send_to(parent as u64, STATESERVER_OBJECT_GET_ZONES_OBJECTS, out);
        w.u32(request).u32(parent).u16(new_zones.len() as u16);
        for &z in &new_zones {
            w.u32(z);
        }
        let _ = w.finish();
        for &z in &new_zones {
            out.subscriptions
                .push(Subscription::Add(location_channel(parent, z)));
        }
        let mut callers = SmallVec::new();
        callers.push(caller);
        self.ops.insert(
            request,
            InterestOp {
                interest_id: id,
                client_context: context,
                parent,
                zones: new_zones,
                callers,
                deadline: now + self.ca.interest_timeout,
                total: None,
                generates: Vec::new(),
                queued: Vec::new(),
            },
        );
    }

    fn remove_interest(
        &mut self,
        _now: Instant,
        id: u16,
        context: u32,
        caller: u64,
        out: &mut SessionOut,
    ) {
        let i = self.interests.get(&id).cloned().unwrap_or_default();
        let killed: SmallVec<[u32; 4]> = i
            .zones
            .iter()
            .copied()
            .filter(|&z| self.interests_seeing(i.parent, z) == 1)
            .collect();
        self.close_zones(i.parent, &killed, out);
        if self.closed {
            return;
        }
        self.notify_done(id, &[caller], out);
        self.client_done(id, context, out);
        self.interests.remove(&id);
    }

    /// Removes the objects seen through `parent`'s `killed` zones and stops listening there.
    fn close_zones(&mut self, parent: u32, killed: &[u32], out: &mut SessionOut) {
        let mut gone: Vec<u32> = self
            .visible
            .iter()
            .filter(|(_, o)| o.parent == parent && killed.contains(&o.zone))
            .map(|(&d, _)| d)
            .collect();
        gone.sort_unstable();
        for doid in gone {
            if self.session_objects.contains(&doid) {
                self.eject_session_object(
                    doid,
                    "A session object has unexpectedly left interest.",
                    out,
                );
                return;
            }
            self.forget_visible(doid, out);
        }
        for &z in killed {
            out.subscriptions
                .push(Subscription::Remove(location_channel(parent, z)));
        }
    }

    fn notify_done(&self, id: u16, callers: &[u64], out: &mut SessionOut) {
        let callers: SmallVec<[u64; 2]> = callers.iter().copied().filter(|&c| c != 0).collect();
        if callers.is_empty() {
            return;
        }
        let mut w = Writer::internal(
            &mut out.datagrams,
            &callers,
            self.channel,
            CLIENTAGENT_DONE_INTEREST_RESP,
        );
        w.u64(self.channel).u16(id);
        let _ = w.finish();
    }

    fn client_done(&mut self, id: u16, context: u32, out: &mut SessionOut) {
        if self.toon.is_some() {
            self.toon_done(id, context, out);
            return;
        }
        let mut w = Writer::client(&mut out.to_client, CLIENT_DONE_INTEREST_RESP);
        w.u32(context).u16(id);
        let _ = w.finish();
    }

    fn client_leaving(&self, doid: u32, out: &mut SessionOut) {
        let msgtype = if self.toon.is_some() {
            super::toontown::CLIENT_OBJECT_DISABLE_RESP
        } else {
            CLIENT_OBJECT_LEAVING
        };
        let mut w = Writer::client(&mut out.to_client, msgtype);
        w.u32(doid);
        let _ = w.finish();
    }

    fn client_leaving_owner(&self, doid: u32, out: &mut SessionOut) {
        if self.toon.is_some() {
            return;
        }
        let mut w = Writer::client(&mut out.to_client, CLIENT_OBJECT_LEAVING_OWNER);
        w.u32(doid);
        let _ = w.finish();
    }

    fn client_location_msg(&self, doid: u32, parent: u32, zone: u32, out: &mut SessionOut) {
        if self.toon.is_some() {
            return;
        }
        let mut w = Writer::client(&mut out.to_client, CLIENT_OBJECT_LOCATION);
        w.u32(doid).u32(parent).u32(zone);
        let _ = w.finish();
    }

    /// Completes an interest operation: its objects, the done messages, then what waited.
    fn finish_op(&mut self, ctx: u32, now: Instant, out: &mut SessionOut) {
        let Some(op) = self.ops.remove(&ctx) else {
            return;
        };
        for g in &op.generates {
            let Ok(dg) = InternalDatagram::parse(g) else {
                continue;
            };
            let other = dg.msgtype == STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER;
            let mut r = dg.payload_reader();
            if r.skip(4).is_ok() {
                self.object_entrance(&mut r, other, out);
            }
        }
        self.notify_done(op.interest_id, &op.callers, out);
        self.client_done(op.interest_id, op.client_context, out);
        for q in op.queued {
            if self.closed {
                break;
            }
            self.on_internal(now, &q, out);
        }
    }

    /// Holds `body` in the interest operation waiting for `doid`'s entrance, if any.
    fn try_queue_pending(&mut self, doid: u32, body: &[u8]) -> bool {
        let Some(&ctx) = self.pending_objects.get(&doid) else {
            return false;
        };
        match self.ops.get_mut(&ctx) {
            Some(op) => {
                op.queued.push(body.to_vec());
                true
            }
            None => {
                self.pending_objects.remove(&doid);
                false
            }
        }
    }

    /// An op holding more than `max_queued_per_interest` datagrams completes early.
    fn check_op_queue(&mut self, ctx: u32, now: Instant, out: &mut SessionOut) {
        let limit = self.ca.limits.max_queued_per_interest;
        let over = self
            .ops
            .get(&ctx)
            .is_some_and(|op| op.generates.len() + op.queued.len() > limit);
        if over {
            log::warn!(
                "{}: interest operation holds over {limit} datagrams; completing it early",
                self.label()
            );
            self.finish_op(ctx, now, out);
        }
    }

    fn object_entrance(&mut self, r: &mut Reader<'_>, other: bool, out: &mut SessionOut) {
        let (Ok(doid), Ok(parent), Ok(zone), Ok(class)) = (r.u32(), r.u32(), r.u32(), r.u16())
        else {
            return;
        };
        self.pending_objects.remove(&doid);
        if self.seen.contains(&doid) {
            return;
        }
        if self.toon.is_some() && zone == self.ca.toontown.quiet_zone && self.is_avatar_class(class)
        {
            // Toons passing through the quiet zone are not shown (as the original server did).
            return;
        }
        if self.owned.contains_key(&doid) && self.session_objects.contains(&doid) {
            return;
        }
        self.visible.entry(doid).or_insert(Obj {
            class,
            parent,
            zone,
        });
        self.seen.insert(doid);
        if self.toon.is_some() {
            // The 2003 form: class first, no location.
            let mut w = Writer::client(
                &mut out.to_client,
                if other {
                    super::toontown::CLIENT_CREATE_OBJECT_REQUIRED_OTHER
                } else {
                    super::toontown::CLIENT_CREATE_OBJECT_REQUIRED
                },
            );
            w.u16(class).u32(doid);
            // The sections as the 2003 client reads them, in its field numbers.
            if !self.toon_write_sections(class, r.rest(), other, true, &mut w) {
                w.abandon();
                log::warn!(
                    "{}: object {doid} of class {class} does not parse; not shown",
                    self.label()
                );
                self.seen.remove(&doid);
                self.visible.remove(&doid);
                return;
            }
            let _ = w.finish();
            return;
        }
        let mut w = Writer::client(
            &mut out.to_client,
            if other {
                CLIENT_ENTER_OBJECT_REQUIRED_OTHER
            } else {
                CLIENT_ENTER_OBJECT_REQUIRED
            },
        );
        w.u32(doid).u32(parent).u32(zone).u16(class).bytes(r.rest());
        let _ = w.finish();
    }

    // ---- from the cluster --------------------------------------------------------------

    /// One internal datagram (body, without its length tag) delivered to the client's
    /// participant.
    pub fn on_internal(&mut self, now: Instant, body: &[u8], out: &mut SessionOut) {
        if self.closed {
            return;
        }
        let Ok(dg) = InternalDatagram::parse(body) else {
            return;
        };
        let Some(sender) = dg.sender else {
            return;
        };
        if sender == self.channel {
            return;
        }
        let mut r = dg.payload_reader();
        if self.toon.is_some() {
            match self.toon_internal(now, dg.msgtype, &mut r, out) {
                Ok(true) => {
                    self.toon_replay(now, out);
                    return;
                }
                Ok(false) => r = dg.payload_reader(),
                Err(e) => {
                    log::warn!(
                        "{}: malformed {}: {e}",
                        self.label(),
                        internal_name(dg.msgtype)
                    );
                    return;
                }
            }
        }
        if let Err(e) = self.internal(now, sender, dg.msgtype, &mut r, body, out) {
            log::warn!(
                "{}: malformed {} from {sender}: {e}",
                self.label(),
                internal_name(dg.msgtype)
            );
        }
        if self.toon.is_some() {
            self.toon_replay(now, out);
        }
    }

    fn internal(
        &mut self,
        now: Instant,
        sender: u64,
        msgtype: u16,
        r: &mut Reader<'_>,
        body: &[u8],
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        match msgtype {
            CLIENTAGENT_EJECT => {
                let code = r.u16()?;
                let reason = String::from_utf8_lossy(r.blob()?).into_owned();
                self.eject(refuse(code, reason), false, out);
            }
            CLIENTAGENT_DROP => {
                self.closed = true;
                self.clean = true;
                out.close = Some(Close::Drop);
            }
            CLIENTAGENT_SET_STATE => {
                let state = r.u16()?;
                if state > STATE_ESTABLISHED {
                    log::warn!(
                        "{}: SET_STATE to unknown state {state}; ignored",
                        self.label()
                    );
                } else {
                    self.set_state(state);
                }
            }
            CLIENTAGENT_ADD_INTEREST | CLIENTAGENT_ADD_INTEREST_MULTIPLE => {
                let multiple = msgtype == CLIENTAGENT_ADD_INTEREST_MULTIPLE;
                let context = self.next_context;
                self.next_context = self.next_context.wrapping_add(1);
                let (id, i) = match Self::read_interest(r, multiple, u16::MAX as usize) {
                    Ok(x) => x,
                    Err(_) => {
                        return Err(WireError::Truncated {
                            at: r.position(),
                            wanted: 4,
                            remaining: r.remaining(),
                        })
                    }
                };
                let many = i.zones.len() > 1;
                if self.toon.is_some() {
                    self.add_interest(now, id, i, context, sender, out);
                    return Ok(());
                }
                let mut w = Writer::client(
                    &mut out.to_client,
                    if many {
                        CLIENT_ADD_INTEREST_MULTIPLE
                    } else {
                        CLIENT_ADD_INTEREST
                    },
                );
                w.u32(context).u16(id).u32(i.parent);
                if many {
                    w.u16(i.zones.len() as u16);
                }
                for &z in &i.zones {
                    w.u32(z);
                }
                let _ = w.finish();
                self.add_interest(now, id, i, context, sender, out);
            }
            CLIENTAGENT_REMOVE_INTEREST => {
                let context = self.next_context;
                self.next_context = self.next_context.wrapping_add(1);
                let id = r.u16()?;
                if self.toon.is_none() {
                    let mut w = Writer::client(&mut out.to_client, CLIENT_REMOVE_INTEREST);
                    w.u32(context).u16(id);
                    let _ = w.finish();
                }
                self.remove_interest(now, id, context, sender, out);
            }
            CLIENTAGENT_SET_CLIENT_ID => {
                let channel = r.u64()?;
                if self.channel != self.allocated {
                    out.subscriptions.push(Subscription::Remove(self.channel));
                }
                self.channel = channel;
                out.subscriptions.push(Subscription::Add(channel));
            }
            CLIENTAGENT_SEND_DATAGRAM => {
                let dg = r.blob()?;
                let mut w = Writer::begin(&mut out.to_client);
                w.bytes(dg);
                let _ = w.finish();
            }
            CLIENTAGENT_OPEN_CHANNEL => {
                let c = r.u64()?;
                out.subscriptions.push(Subscription::Add(c));
            }
            CLIENTAGENT_CLOSE_CHANNEL => {
                let c = r.u64()?;
                out.subscriptions.push(Subscription::Remove(c));
            }
            CLIENTAGENT_ADD_POST_REMOVE => {
                let dg = r.blob()?;
                out.post_removes.push(PostRemove::Add(dg.to_vec()));
            }
            CLIENTAGENT_CLEAR_POST_REMOVES => out.post_removes.push(PostRemove::Clear),
            CLIENTAGENT_DECLARE_OBJECT => {
                let doid = r.u32()?;
                let class = r.u16()?;
                if self.declared.contains_key(&doid) {
                    log::warn!(
                        "{}: declaration of already declared object {doid}",
                        self.label()
                    );
                } else if self.ca.schema.class(class).is_none() {
                    log::warn!(
                        "{}: declaration of object {doid} with unknown class {class}; ignored",
                        self.label()
                    );
                } else {
                    self.declared.insert(doid, class);
                }
            }
            CLIENTAGENT_UNDECLARE_OBJECT => {
                let doid = r.u32()?;
                if self.declared.remove(&doid).is_none() {
                    log::warn!("{}: undeclare of unknown object {doid}", self.label());
                }
            }
            CLIENTAGENT_SET_FIELDS_SENDABLE => {
                let doid = r.u32()?;
                let count = r.u16()?;
                let mut fields = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    fields.push(r.u16()?);
                }
                self.sendable.insert(doid, fields);
            }
            CLIENTAGENT_ADD_SESSION_OBJECT => {
                let doid = r.u32()?;
                if !self.session_objects.insert(doid) {
                    log::warn!(
                        "{}: add session object for existing session object {doid}",
                        self.label()
                    );
                }
            }
            CLIENTAGENT_REMOVE_SESSION_OBJECT => {
                let doid = r.u32()?;
                if !self.session_objects.remove(&doid) {
                    log::warn!(
                        "{}: remove session object for non-session object {doid}",
                        self.label()
                    );
                }
            }
            CLIENTAGENT_GET_TLVS => {
                let ctx = r.u32()?;
                let mut w = self.send_to(sender, CLIENTAGENT_GET_TLVS_RESP, out);
                w.u32(ctx).blob(&self.tlvs);
                let _ = w.finish();
            }
            CLIENTAGENT_GET_NETWORK_ADDRESS => {
                let ctx = r.u32()?;
                let mut w = self.send_to(sender, CLIENTAGENT_GET_NETWORK_ADDRESS_RESP, out);
                w.u32(ctx)
                    .string(&self.remote.ip().to_string())
                    .u16(self.remote.port())
                    .string(&self.local.ip().to_string())
                    .u16(self.local.port());
                let _ = w.finish();
            }
            STATESERVER_OBJECT_SET_FIELD | STATESERVER_OBJECT_SET_FIELDS => {
                let doid = r.u32()?;
                if self.lookup_object(doid).is_none() {
                    if !self.try_queue_pending(doid, body) {
                        log::debug!(
                            "{}: server-side field update for unknown object {doid}",
                            self.label()
                        );
                    }
                    return Ok(());
                }
                if self.toon.is_some() {
                    self.toon_forward_fields(
                        doid,
                        msgtype == STATESERVER_OBJECT_SET_FIELDS,
                        r,
                        out,
                    );
                    return Ok(());
                }
                let mut w = Writer::client(
                    &mut out.to_client,
                    if msgtype == STATESERVER_OBJECT_SET_FIELD {
                        CLIENT_OBJECT_SET_FIELD
                    } else {
                        CLIENT_OBJECT_SET_FIELDS
                    },
                );
                w.u32(doid).bytes(r.rest());
                let _ = w.finish();
            }
            STATESERVER_OBJECT_DELETE_RAM => {
                let doid = r.u32()?;
                if self.lookup_object(doid).is_none() {
                    if !self.try_queue_pending(doid, body) {
                        log::debug!(
                            "{}: server-side delete of unknown object {doid}",
                            self.label()
                        );
                    }
                    return Ok(());
                }
                if self.session_objects.remove(&doid) {
                    self.eject_session_object(
                        doid,
                        format!("The session object with id {doid} has been unexpectedly deleted."),
                        out,
                    );
                    return Ok(());
                }
                if self.seen.remove(&doid) {
                    if self.toon.is_some() {
                        let mut w = Writer::client(
                            &mut out.to_client,
                            super::toontown::CLIENT_OBJECT_DELETE_RESP,
                        );
                        w.u32(doid);
                        let _ = w.finish();
                    } else {
                        self.client_leaving(doid, out);
                    }
                }
                if self.owned.remove(&doid).is_some() {
                    self.client_leaving_owner(doid, out);
                }
                self.historical.insert(doid);
                self.visible.remove(&doid);
            }
            STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED_OTHER => {
                let doid = r.u32()?;
                let parent = r.u32()?;
                let zone = r.u32()?;
                let class = r.u16()?;
                self.owned.entry(doid).or_insert(Obj {
                    class,
                    parent,
                    zone,
                });
                let other = msgtype == STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED_OTHER;
                if self.toon.is_some() {
                    // The 2003 client learns its avatar from GET_AVATAR_DETAILS_RESP.
                    r.rest();
                    return Ok(());
                }
                let mut w = Writer::client(
                    &mut out.to_client,
                    if other {
                        CLIENT_ENTER_OBJECT_REQUIRED_OTHER_OWNER
                    } else {
                        CLIENT_ENTER_OBJECT_REQUIRED_OWNER
                    },
                );
                w.u32(doid).u32(parent).u32(zone).u16(class).bytes(r.rest());
                let _ = w.finish();
            }
            STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER => {
                let mut peek = r.clone();
                let doid = peek.u32()?;
                let parent = peek.u32()?;
                let zone = peek.u32()?;
                let waiting = self
                    .ops
                    .iter()
                    .find(|(_, op)| op.parent == parent && op.zones.contains(&zone))
                    .map(|(&c, _)| c);
                if let Some(ctx) = waiting {
                    if let Some(op) = self.ops.get_mut(&ctx) {
                        op.queued.push(body.to_vec());
                    }
                    self.pending_objects.entry(doid).or_insert(ctx);
                    self.check_op_queue(ctx, now, out);
                    return Ok(());
                }
                let other = msgtype == STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER;
                self.object_entrance(r, other, out);
            }
            STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER => {
                let ctx = r.u32()?;
                let doid = r.u32()?;
                r.rest();
                let Some(op) = self.ops.get_mut(&ctx) else {
                    log::debug!(
                        "{}: object entrance into interest with unknown context {ctx}",
                        self.label()
                    );
                    return Ok(());
                };
                op.generates.push(body.to_vec());
                let ready = op.is_ready();
                self.pending_objects.entry(doid).or_insert(ctx);
                if ready {
                    self.finish_op(ctx, now, out);
                } else {
                    self.check_op_queue(ctx, now, out);
                }
            }
            STATESERVER_OBJECT_GET_ZONES_COUNT_RESP => {
                let ctx = r.u32()?;
                let count = r.u32()?;
                let Some(op) = self.ops.get_mut(&ctx) else {
                    log::debug!(
                        "{}: GET_ZONES_COUNT_RESP for unknown context {ctx}",
                        self.label()
                    );
                    return Ok(());
                };
                if op.total.is_none() {
                    op.total = Some(count);
                }
                if op.is_ready() {
                    self.finish_op(ctx, now, out);
                }
            }
            STATESERVER_OBJECT_CHANGING_LOCATION => {
                let doid = r.u32()?;
                if self.try_queue_pending(doid, body) {
                    r.rest();
                    return Ok(());
                }
                let parent = r.u32()?;
                let zone = r.u32()?;
                r.rest();
                let interested = self.interests_seeing(parent, zone) > 0;
                let visible = self.visible.contains_key(&doid);
                let owned = self.owned.contains_key(&doid);
                if !visible && !owned {
                    return Ok(());
                }
                if let Some(o) = self.visible.get_mut(&doid) {
                    o.parent = parent;
                    o.zone = zone;
                }
                if let Some(o) = self.owned.get_mut(&doid) {
                    o.parent = parent;
                    o.zone = zone;
                }
                if !interested && visible {
                    if self.session_objects.contains(&doid) {
                        if owned {
                            self.client_location_msg(doid, parent, zone, out);
                        } else {
                            self.eject_session_object(doid, format!(
                                    "The session object with id {doid} has unexpectedly left interest."
                                ), out);
                        }
                        return Ok(());
                    }
                    self.forget_visible(doid, out);
                } else {
                    self.client_location_msg(doid, parent, zone, out);
                }
            }
            STATESERVER_OBJECT_CHANGING_OWNER => {
                let doid = r.u32()?;
                let new_owner = r.u64()?;
                r.rest();
                if new_owner == self.channel {
                    return Ok(());
                }
                if !self.owned.contains_key(&doid) {
                    log::debug!("{}: CHANGING_OWNER for unowned object {doid}", self.label());
                    return Ok(());
                }
                if self.session_objects.contains(&doid) {
                    self.eject_session_object(
                        doid,
                        format!(
                            "The session object with id {doid} has unexpectedly left ownership."
                        ),
                        out,
                    );
                    return Ok(());
                }
                self.client_leaving_owner(doid, out);
                self.owned.remove(&doid);
            }
            other => {
                log::debug!(
                    "{}: ignoring server message {} ({other})",
                    self.label(),
                    internal_name(other)
                );
            }
        }
        Ok(())
    }

    /// The connection is gone (or going): delete session objects, answer whoever waits on a
    /// pending interest, and record a lost connection. `lost` names what happened when the
    /// connection ended without an eject, drop or disconnect. Call once.
    /// The answer to a job this session asked for (`SessionOut::jobs`).
    pub fn on_job_done(&mut self, now: Instant, id: u32, result: JobResult, out: &mut SessionOut) {
        if self.closed {
            return;
        }
        if self.toon.is_some() {
            self.toon_job_done(now, id, result, out);
        }
    }

    pub fn on_closed(&mut self, lost: Option<&str>, out: &mut SessionOut) {
        if let (Some(reason), false, false) = (lost, self.clean, self.local_check) {
            let (r, l) = (self.remote.to_string(), self.local.to_string());
            out.events.push(encode(
                "client-lost",
                &[
                    ("role", Ev::Str("clientagent")),
                    ("sender", Ev::Str(&self.sender_name())),
                    ("remote_address", Ev::Str(&r)),
                    ("local_address", Ev::Str(&l)),
                    ("reason", Ev::Str(reason)),
                ],
            ));
        }
        self.closed = true;
        self.clean = true;
        if self.toon.is_some() {
            // The toon's friends hear it went offline (its puppet channel goes with the
            // connection's subscriptions).
            self.toon_friends_offline(out);
        }
        for doid in std::mem::take(&mut self.session_objects) {
            log::debug!(
                "{}: client gone; deleting session object {doid}",
                self.label()
            );
            let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_DELETE_RAM, out);
            w.u32(doid);
            let _ = w.finish();
        }
        for (_, op) in std::mem::take(&mut self.ops) {
            self.notify_done(op.interest_id, &op.callers, out);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ca.state_changed(Some(self.state as usize), None);
        self.ca.free_channel(self.allocated);
        if let Some(ip) = self.admitted {
            self.ca.release_address(ip);
        }
    }
}

impl Session {
    /// Starts an internal datagram to `to`, sent from the client's channel.
    pub(super) fn send_to<'a>(&self, to: u64, msgtype: u16, out: &'a mut SessionOut) -> Writer<'a> {
        Writer::internal1(&mut out.datagrams, to, self.channel, msgtype)
    }

    /// A session object went away from the client: eject it (153).
    fn eject_session_object(&mut self, doid: u32, reason: impl Into<String>, out: &mut SessionOut) {
        let mut e = refuse(CLIENT_DISCONNECT_SESSION_OBJECT_DELETED, reason);
        e.doid = Some(doid);
        self.eject(e, false, out);
    }

    /// The client no longer sees `doid`: tell it, and remember it saw it once.
    fn forget_visible(&mut self, doid: u32, out: &mut SessionOut) {
        self.client_leaving(doid, out);
        self.seen.remove(&doid);
        self.historical.insert(doid);
        self.visible.remove(&doid);
    }

    fn is_avatar_class(&self, class: u16) -> bool {
        self.ca.schema.class_name(class) == self.ca.toontown.avatar_class
    }

    /// SET_FIELD(S) for a 2003 client: one OBJECT_UPDATE_FIELD per field, numbered as the
    /// client numbers the object's class (a field it has no number for is not sent).
    fn toon_forward_fields(&self, doid: u32, many: bool, r: &mut Reader<'_>, out: &mut SessionOut) {
        let Some(class) = self.lookup_object(doid) else {
            r.rest();
            return;
        };
        let count = if many { r.u16().unwrap_or(0) } else { 1 };
        for _ in 0..count {
            let Ok(field) = r.u16() else {
                return;
            };
            let Ok(n) = self.ca.schema.value_len(class, field, r.rest_peek()) else {
                return;
            };
            let Ok(value) = r.take(n) else {
                return;
            };
            let Some(number) = self.ca.field_to_client(class, field) else {
                continue;
            };
            let mut w = Writer::client(
                &mut out.to_client,
                super::toontown::CLIENT_OBJECT_UPDATE_FIELD,
            );
            w.u32(doid).u16(number).bytes(value);
            let _ = w.finish();
        }
        r.rest();
    }

    /// Writes an object's REQUIRED (and with `other`, OTHER) section (`body`, as the cluster
    /// sent it: to a viewer, or with `viewer` false every required field, as GET_ALL does) for
    /// a 2003 client: the required values it reads (a viewer: the broadcast ones) in order,
    /// and the OTHER fields renumbered in the client's numbering (those it cannot name
    /// left out). False if the body does not parse.
    pub(super) fn toon_write_sections(
        &self,
        class: u16,
        body: &[u8],
        other: bool,
        viewer: bool,
        w: &mut Writer<'_>,
    ) -> bool {
        let schema = &self.ca.schema;
        let Some(info) = schema.class(class) else {
            return false;
        };
        let mut r = Reader::new(body);
        // The cluster sent the required fields a viewer sees (broadcast or clrecv); the 2003
        // client reads those that are required and broadcast, in order.
        for &f in &info.required {
            let fl = schema.flags(class, f);
            if viewer && !fl.visible() {
                continue;
            }
            let Ok(n) = schema.value_len(class, f, r.rest_peek()) else {
                return false;
            };
            let Ok(v) = r.take(n) else {
                return false;
            };
            if fl.broadcast || !viewer {
                w.bytes(v);
            }
        }
        if !other {
            return true;
        }
        if r.remaining() == 0 {
            // No OTHER section at all (an answer without one): the client reads none either.
            if viewer {
                w.u16(0);
            }
            return true;
        }
        let Ok(count) = r.u16() else {
            return false;
        };
        let mut pairs: smallvec::SmallVec<[(u16, &[u8]); 8]> = smallvec::SmallVec::new();
        for _ in 0..count {
            let Ok(f) = r.u16() else {
                return false;
            };
            let Ok(n) = schema.value_len(class, f, r.rest_peek()) else {
                return false;
            };
            let Ok(v) = r.take(n) else {
                return false;
            };
            if let Some(number) = self.ca.field_to_client(class, f) {
                pairs.push((number, v));
            }
        }
        w.u16(pairs.len() as u16);
        for (f, v) in pairs {
            w.u16(f).bytes(v);
        }
        true
    }
}

/// At most this many bytes of an eject reason are logged, sent as an event and to the client.
pub const MAX_REASON_BYTES: usize = 256;

/// Cuts `text` to at most `max` bytes (at a character boundary), marking the cut.
pub fn clip_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut at = max.saturating_sub(3);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    text.push_str("...");
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

//! The session core: what one client's session is whatever dialect it speaks. Its lifecycle
//! (state, closing, ejects), its timers and limits, the objects the client sees or owns, its
//! interests, and the one send-permission rule (`may_send`). Dialects reach it through methods;
//! the raw fields stay in `session/`.

use super::{Close, SessionOut, STATE_ESTABLISHED, STATE_NEW};
use crate::clientagent::ClientAgent;
use crate::roles::doid_index::DoidMap;
use crate::roles::event::{encode, Ev};
use otp_wire::msgtypes::eject::*;
use otp_wire::{WireError, Writer};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// otpd's own eject code: a client sent more datagrams or bytes per second than its limits.
pub const CLIENT_DISCONNECT_RATE_LIMITED: u16 = 129;

/// otpd's own eject code: this process's MD lost its upstream MD and regained it, and the
/// upstream may have fired the session's post-removes meanwhile (deleted its avatar). Both
/// dialects send it as is; the 2003 client shows "An unexpected problem has occurred (error
/// code 130) ... you should be able to connect again".
pub const CLIENT_DISCONNECT_CLUSTER_LOST: u16 = 130;

/// otpd's own eject code: a new client while this process's MD has no upstream MD
/// (`refuse_clients_without_upstream`); the 2003 client shows it as code 130 above.
pub const CLIENT_DISCONNECT_CLUSTER_UNAVAILABLE: u16 = 131;

/// At most this many bytes of an eject reason are logged, sent as an event and to the client.
pub const MAX_REASON_BYTES: usize = 256;

/// Where an object the client sees or owns is, and its class.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::clientagent) struct Obj {
    pub(in crate::clientagent) class: u16,
    pub(in crate::clientagent) parent: u32,
    pub(in crate::clientagent) zone: u32,
}

/// One open interest: a parent and some of its zones.
#[derive(Debug, Clone, Default)]
pub(in crate::clientagent) struct Interest {
    pub(in crate::clientagent) parent: u32,
    /// Distinct zones, in the order given.
    pub(in crate::clientagent) zones: SmallVec<[u32; 4]>,
}

/// An interest being opened: waiting for the StateServer's count and objects.
#[derive(Debug)]
pub(super) struct InterestOp {
    pub(super) interest_id: u16,
    pub(super) client_context: u32,
    pub(super) parent: u32,
    pub(super) zones: SmallVec<[u32; 4]>,
    pub(super) callers: SmallVec<[u64; 2]>,
    pub(super) deadline: Instant,
    pub(super) total: Option<u32>,
    /// ENTER_INTEREST datagram bodies, in arrival order.
    pub(super) generates: Vec<Vec<u8>>,
    /// Other datagram bodies held back until the interest is open.
    pub(super) queued: Vec<Vec<u8>>,
}

impl InterestOp {
    pub(super) fn is_ready(&self) -> bool {
        self.total
            .is_some_and(|t| self.generates.len() as u64 >= t as u64)
    }
}

/// Why a client datagram was refused: the eject code and reason, and what it concerned.
pub(in crate::clientagent) struct Refusal {
    pub(in crate::clientagent) code: u16,
    pub(in crate::clientagent) reason: String,
    pub(in crate::clientagent) doid: Option<u32>,
    pub(in crate::clientagent) field: Option<u16>,
}

impl From<WireError> for Refusal {
    fn from(_: WireError) -> Refusal {
        refuse(
            CLIENT_DISCONNECT_TRUNCATED_DATAGRAM,
            "Datagram unexpectedly ended while iterating.",
        )
    }
}

pub(in crate::clientagent) fn refuse(code: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
        doid: None,
        field: None,
    }
}

impl Refusal {
    /// The same refusal, about object `doid`.
    pub(in crate::clientagent) fn about(mut self, doid: u32) -> Refusal {
        self.doid = Some(doid);
        self
    }
}

/// Counts one second's datagrams and bytes.
#[derive(Debug)]
struct RateWindow {
    start: Instant,
    datagrams: u32,
    bytes: u64,
}

/// Counts a client's refused updates (`limits.max_refused_updates` per `refused_window_ms`)
/// and whether this window's one report was made.
#[derive(Debug)]
struct RefusedUpdates {
    start: Instant,
    count: u32,
    reported: bool,
    /// Refused updates not reported since the last report.
    suppressed: u32,
}

/// One client's state apart from its dialect (see the module comment).
pub(in crate::clientagent) struct SessionCore {
    /// When the connection was accepted.
    pub(super) opened: Instant,
    /// What every session of this listener shares (settings, schema, counters).
    pub(in crate::clientagent) ca: Arc<ClientAgent>,
    state: u16,
    pub(super) channel: u64,
    pub(in crate::clientagent) allocated: u64,
    remote: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) tlvs: Vec<u8>,
    /// The address counted against `max_connections_per_address`, released on drop.
    admitted: Option<IpAddr>,
    next_context: u32,
    /// Objects the client was shown (and not told of leaving since).
    pub(super) seen: FxHashSet<u32>,
    pub(super) session_objects: BTreeSet<u32>,
    /// Objects the client saw once: late messages about them are not its fault.
    pub(super) historical: FxHashSet<u32>,
    /// Objects the client sees, with where they are (change them through `show`, `unshow`
    /// and `move_visible`, which keep `visible_by_zone` in step).
    pub(super) visible: DoidMap<Obj>,
    /// `visible` by location: (parent, zone, doid), so that closing a zone visits only the
    /// objects in it.
    pub(super) visible_by_zone: BTreeSet<(u32, u32, u32)>,
    pub(super) declared: FxHashMap<u32, u16>,
    pub(super) owned: FxHashMap<u32, Obj>,
    /// Objects whose entrance is held in a pending interest op, by that op's context.
    pub(super) pending_objects: FxHashMap<u32, u32>,
    /// Open interests (change them through `interests.rs`, which keeps `zone_counts` and
    /// `zones_total` in step).
    pub(super) interests: BTreeMap<u16, Interest>,
    /// How many open interests see each (parent, zone); zones no interest sees are absent.
    pub(super) zone_counts: FxHashMap<(u32, u32), u32>,
    /// Zones of all open interests together (the sum of their sizes), against
    /// `max_zones_total`.
    pub(super) zones_total: usize,
    /// Book-keeping steps taken (zones counted, indexed objects visited), for the tests that
    /// show a change costs what it changes and not what else is open.
    #[cfg(test)]
    pub(super) work: std::cell::Cell<u64>,
    pub(super) ops: BTreeMap<u32, InterestOp>,
    pub(super) sendable: FxHashMap<u32, Vec<u16>>,
    hello_deadline: Option<Instant>,
    /// When a client that is not logged in by then is ejected (`login_timeout_ms`); nothing
    /// the client sends moves it.
    login_deadline: Option<Instant>,
    heartbeat_deadline: Option<Instant>,
    rate: RateWindow,
    refused: RefusedUpdates,
    /// An end was decided (eject, drop, disconnect): input is ignored from then on.
    closed: bool,
    /// The end was the server's or the client's word, not a lost connection.
    pub(super) clean: bool,
    /// A proxy's own health check (PROXY v2 LOCAL): no connection events.
    pub(super) local_check: bool,
}

impl SessionCore {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ca: Arc<ClientAgent>,
        channel: u64,
        remote: SocketAddr,
        local: SocketAddr,
        tlvs: Vec<u8>,
        admitted: Option<IpAddr>,
        local_check: bool,
        now: Instant,
    ) -> SessionCore {
        let hello = ca.limits.hello_timeout_ms;
        SessionCore {
            opened: now,
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
            visible: DoidMap::default(),
            visible_by_zone: BTreeSet::new(),
            declared: FxHashMap::default(),
            owned: FxHashMap::default(),
            pending_objects: FxHashMap::default(),
            interests: BTreeMap::new(),
            zone_counts: FxHashMap::default(),
            zones_total: 0,
            #[cfg(test)]
            work: std::cell::Cell::new(0),
            ops: BTreeMap::new(),
            sendable: FxHashMap::default(),
            rate: RateWindow {
                start: now,
                datagrams: 0,
                bytes: 0,
            },
            refused: RefusedUpdates {
                start: now,
                count: 0,
                reported: false,
                suppressed: 0,
            },
            closed: false,
            clean: false,
            local_check,
        }
    }

    /// The channel the client is known by in the cluster (CLIENTAGENT_SET_CLIENT_ID moves it).
    pub(in crate::clientagent) fn channel(&self) -> u64 {
        self.channel
    }

    pub(in crate::clientagent) fn state(&self) -> u16 {
        self.state
    }

    pub(in crate::clientagent) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(in crate::clientagent) fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// A name for logs.
    pub(in crate::clientagent) fn label(&self) -> String {
        format!("client {} ({})", self.remote, self.allocated)
    }

    /// The sender field of this client's events.
    pub(in crate::clientagent) fn sender_name(&self) -> String {
        format!("Client:{}", self.allocated)
    }

    /// A fresh context for a request the session makes.
    pub(super) fn next_context(&mut self) -> u32 {
        let c = self.next_context;
        self.next_context = self.next_context.wrapping_add(1);
        c
    }

    /// The earliest of the core's own timers.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
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
        at
    }

    /// The hello, login and heartbeat timers: ejects the client (and true) when one is due.
    /// `login_code` is the dialect's eject code for a client not logged in in time.
    pub(super) fn timers_due(
        &mut self,
        now: Instant,
        login_code: u16,
        out: &mut SessionOut,
    ) -> bool {
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
            return true;
        }
        if self.state != STATE_ESTABLISHED && self.login_deadline.is_some_and(|d| d <= now) {
            let ms = self.ca.limits.login_timeout_ms;
            self.eject(
                refuse(
                    login_code,
                    format!("Not logged in within {ms} ms of connecting."),
                ),
                true,
                out,
            );
            return true;
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
            return true;
        }
        false
    }

    /// Ends the session with an eject: counted, logged, an EventLogger event, and the eject
    /// message queued for the client (CLIENT_EJECT; the 2003 client's GO_GET_LOST has the same
    /// number and layout).
    /// The client's own avatar, by the OTP convention (its channel, once the cluster set it,
    /// is account << 32 | avatar), if the client owns that object: (doid, class).
    pub(in crate::clientagent) fn own_avatar(&self) -> Option<(u32, u16)> {
        if self.channel == self.allocated {
            return None;
        }
        let doid = self.channel as u32;
        self.owned.get(&doid).map(|o| (doid, o.class))
    }

    pub(in crate::clientagent) fn eject(
        &mut self,
        mut r: Refusal,
        security: bool,
        out: &mut SessionOut,
    ) {
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
        self.eject_event(&r, security, out);
        let mut w = Writer::client(&mut out.to_client, otp_wire::msgtypes::CLIENT_EJECT);
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

    fn eject_event(&self, r: &Refusal, security: bool, out: &mut SessionOut) {
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
    }

    /// Ends the session without a word to the client (CLIENTAGENT_DROP).
    pub(super) fn drop_client(&mut self, out: &mut SessionOut) {
        self.closed = true;
        self.clean = true;
        out.close = Some(Close::Drop);
    }

    /// The connection ended (or is ending): nothing more is done for it.
    pub(super) fn mark_closed(&mut self) {
        self.closed = true;
        self.clean = true;
    }

    /// The client said goodbye.
    pub(in crate::clientagent) fn client_disconnect(&mut self, out: &mut SessionOut) {
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

    /// The rate limit: a refusal once the client sent more this second than it may.
    pub(super) fn over_rate(&mut self, now: Instant, len: usize) -> Option<Refusal> {
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

    /// A client update dropped, not obeyed (`what` says why; about `doid`): past
    /// `limits.max_refused_updates` in one `refused_window_ms` a refusal with `code`. Else
    /// Some(the count of refused updates not reported since the last report) when this one is
    /// to be reported (the caller sends its event; the warning is logged here), at most once
    /// per window, None when it is counted quietly: a client cannot fill the logs with them.
    pub(in crate::clientagent) fn refused_update(
        &mut self,
        now: Instant,
        code: u16,
        what: &str,
        doid: u32,
    ) -> Result<Option<u32>, Refusal> {
        let l = &self.ca.limits;
        let window = Duration::from_millis(l.refused_window_ms.max(1));
        let r = &mut self.refused;
        if now.duration_since(r.start) >= window {
            r.start = now;
            r.count = 0;
            r.reported = false;
        }
        r.count = r.count.saturating_add(1);
        if l.max_refused_updates != 0 && r.count > l.max_refused_updates {
            return Err(refuse(
                code,
                format!(
                    "More than {} refused updates in {} ms (the last: {what}).",
                    l.max_refused_updates,
                    window.as_millis()
                ),
            )
            .about(doid));
        }
        if r.reported {
            r.suppressed = r.suppressed.saturating_add(1);
            return Ok(None);
        }
        r.reported = true;
        let suppressed = std::mem::take(&mut r.suppressed);
        log::warn!(
            "{}: refused {what} (object {doid}); {suppressed} more refused since the last report",
            self.label()
        );
        Ok(Some(suppressed))
    }

    /// Gives a client that has not logged in another `hello_timeout_ms` (2003 dialect).
    pub(in crate::clientagent) fn extend_hello(&mut self, now: Instant) {
        let ms = self.ca.limits.hello_timeout_ms;
        if ms > 0 {
            self.hello_deadline = Some(now + Duration::from_millis(ms));
        }
    }

    pub(in crate::clientagent) fn heartbeat(&mut self, now: Instant) {
        if let Some(t) = self.ca.heartbeat_timeout {
            self.heartbeat_deadline = Some(now + t);
        }
    }

    pub(in crate::clientagent) fn set_state(&mut self, state: u16) {
        if state != self.state {
            self.ca
                .state_changed(Some(self.state as usize), Some(state as usize));
            self.state = state;
        }
    }

    /// The one send-permission rule of both dialects: the client may update `field` of `doid`
    /// when it is `clsend`, or `ownsend` on an object it owns, or made sendable for it by the
    /// cluster (CLIENTAGENT_SET_FIELDS_SENDABLE). `field` is in the cluster's numbering.
    pub(in crate::clientagent) fn may_send(
        &self,
        doid: u32,
        field: u16,
        flags: crate::roles::FieldFlags,
    ) -> bool {
        flags.clsend
            || (self.owns(doid) && flags.ownsend)
            || self.sendable.get(&doid).is_some_and(|f| f.contains(&field))
    }

    /// Whether the client owns `doid`.
    pub(in crate::clientagent) fn owns(&self, doid: u32) -> bool {
        self.owned.contains_key(&doid)
    }

    /// Whether the client saw `doid` once and no longer does.
    pub(in crate::clientagent) fn saw_once(&self, doid: u32) -> bool {
        self.historical.contains(&doid)
    }

    /// Whether the client sees `doid` now.
    pub(in crate::clientagent) fn sees(&self, doid: u32) -> bool {
        self.visible.contains_key(doid)
    }

    /// The class of an object this client may address, or None.
    /// Visible objects first: the update of another avatar in view is the common case (one
    /// probe); `seen` holds the same doids as `visible` (see `check_invariants`).
    pub(in crate::clientagent) fn lookup_object(&self, doid: u32) -> Option<u16> {
        if let Some(o) = self.visible.get(doid) {
            return Some(o.class);
        }
        if let Some(u) = self.ca.uberdogs.get(&doid) {
            return Some(u.class);
        }
        if let Some(o) = self.owned.get(&doid) {
            return Some(o.class);
        }
        self.declared.get(&doid).copied()
    }

    /// Starts an internal datagram to `to`, sent from the client's channel.
    pub(in crate::clientagent) fn send_to<'a>(
        &self,
        to: u64,
        msgtype: u16,
        out: &'a mut SessionOut,
    ) -> Writer<'a> {
        Writer::internal1(&mut out.datagrams, to, self.channel, msgtype)
    }

    /// Makes `doid` one of the session's objects (deleted when the client goes).
    pub(in crate::clientagent) fn add_session_object(&mut self, doid: u32) {
        self.session_objects.insert(doid);
    }

    /// `doid` is no longer a session object nor owned (the 2003 avatar leaving the world).
    pub(in crate::clientagent) fn disown(&mut self, doid: u32) {
        self.session_objects.remove(&doid);
        self.owned.remove(&doid);
    }

    /// Checks what the session keeps against itself (for tests and fuzzing): every object
    /// the client was shown is one the session knows the class and location of, and the
    /// reverse; the index of visible objects by location matches them; the count of
    /// interests seeing each zone and the total of zones match a recount of the interests.
    /// An error names the broken rule.
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        if self.seen.len() != self.visible.len()
            || !self.seen.iter().all(|&d| self.visible.contains_key(d))
        {
            return Err(format!(
                "seen ({}) and visible ({}) disagree",
                self.seen.len(),
                self.visible.len()
            ));
        }
        if self.visible_by_zone.len() != self.visible.len()
            || !self
                .visible
                .iter()
                .all(|(d, o)| self.visible_by_zone.contains(&(o.parent, o.zone, d)))
        {
            return Err(format!(
                "visible ({}) and its index by zone ({}) disagree",
                self.visible.len(),
                self.visible_by_zone.len()
            ));
        }
        let mut counts: FxHashMap<(u32, u32), u32> = FxHashMap::default();
        let mut total = 0;
        for i in self.interests.values() {
            total += i.zones.len();
            for &z in &i.zones {
                *counts.entry((i.parent, z)).or_insert(0) += 1;
            }
        }
        if counts != self.zone_counts {
            return Err(format!(
                "zone counts ({} zones) disagree with the interests ({} zones)",
                self.zone_counts.len(),
                counts.len()
            ));
        }
        if total != self.zones_total {
            return Err(format!(
                "zones_total {} but the interests hold {total} zones",
                self.zones_total
            ));
        }
        Ok(())
    }

    /// The connection is gone: record a lost connection (when it ended without a word) and
    /// delete the session objects.
    pub(super) fn close(&mut self, lost: Option<&str>, out: &mut SessionOut) {
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
        self.mark_closed();
    }

    /// Deletes the session objects (the client is gone).
    pub(super) fn delete_session_objects(&mut self, out: &mut SessionOut) {
        for doid in std::mem::take(&mut self.session_objects) {
            log::debug!(
                "{}: client gone; deleting session object {doid}",
                self.label()
            );
            let mut w = self.send_to(
                doid as u64,
                otp_wire::msgtypes::STATESERVER_OBJECT_DELETE_RAM,
                out,
            );
            w.u32(doid);
            let _ = w.finish();
        }
    }
}

impl Drop for SessionCore {
    fn drop(&mut self) {
        self.ca.state_changed(Some(self.state as usize), None);
        self.ca.free_channel(self.allocated);
        if let Some(ip) = self.admitted {
            self.ca.release_address(ip);
        }
    }
}

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

pub(super) fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

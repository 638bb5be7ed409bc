//! Astron's client protocol (`AstronClient.cpp`, message for message): HELLO, then field
//! updates, relocation and interests from the client; the ENTER/LEAVING/SET_FIELD family
//! and interest echoes to it. Also otpd's ban check: the account the cluster's
//! CLIENTAGENT_SET_CLIENT_ID names (`#ID`) asked of the Database, the client held meanwhile.

use super::{doid_message, ClientView, Entrance};
use crate::clientagent::session::core::{refuse, Interest, Refusal, SessionCore};
use crate::clientagent::session::{SessionOut, STATE_ANONYMOUS, STATE_ESTABLISHED, STATE_NEW};
use crate::clientagent::InterestPolicy;
use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::*;
use otp_wire::{Reader, Writer};
use std::collections::VecDeque;
use std::time::Instant;

/// Client datagrams held while the account's ban is asked for; past it, the client is
/// ejected (a client that sends this much in one database round trip is misbehaving).
pub(in crate::clientagent) const MAX_HELD_DURING_BAN_CHECK: usize = 256;

/// What an Astron session keeps beyond the core: the account its channel names and the ban
/// check of that account.
#[derive(Debug, Default)]
pub(in crate::clientagent) struct State {
    /// The account the client's channel names (`channel >> 32`, when not 0) and its name as
    /// operators write it (`#ID`).
    account: Option<(u32, String)>,
    /// The ban check under way: its context, and when it is given up.
    ban_check: Option<(u32, Instant)>,
    contexts: u32,
    /// Client datagrams held while `ban_check` is under way.
    held: VecDeque<Vec<u8>>,
}

impl State {
    /// The account name (`#ID`) the client's channel names, if any.
    pub(super) fn account(&self) -> Option<&str> {
        self.account.as_ref().map(|(_, name)| name.as_str())
    }

    /// One client datagram.
    pub(super) fn on_client(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        body: &[u8],
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if self.ban_check.is_some() {
            if self.held.len() >= MAX_HELD_DURING_BAN_CHECK {
                return Err(refuse(
                    CLIENT_DISCONNECT_GENERIC,
                    "Too many messages while the account was checked.",
                ));
            }
            self.held.push_back(body.to_vec());
            r.rest();
            return Ok(());
        }
        match core.state() {
            STATE_NEW => pre_hello(core, now, r, out),
            _ => self.after_hello(core, now, r, out),
        }
    }

    /// A datagram after HELLO: ANONYMOUS clients may only disconnect, beat and call
    /// anonymous UberDOGs; ESTABLISHED ones may also move objects and open interests.
    fn after_hello(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let msgtype = r.u16()?;
        let established = core.state() == STATE_ESTABLISHED;
        match msgtype {
            CLIENT_DISCONNECT => core.client_disconnect(out),
            CLIENT_OBJECT_SET_FIELD => return client_set_field(core, r, false, out),
            CLIENT_OBJECT_SET_FIELDS => return client_set_field(core, r, true, out),
            CLIENT_HEARTBEAT => core.heartbeat(now),
            CLIENT_OBJECT_LOCATION if established => return client_location(core, r, out),
            CLIENT_ADD_INTEREST if established => {
                return self.client_add_interest(core, now, r, false, out)
            }
            CLIENT_ADD_INTEREST_MULTIPLE if established => {
                return self.client_add_interest(core, now, r, true, out)
            }
            CLIENT_REMOVE_INTEREST if established => {
                return self.client_remove_interest(core, r, out)
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

    fn client_add_interest(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        r: &mut Reader<'_>,
        multiple: bool,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if core.ca.interests == InterestPolicy::Disabled {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                "Client is not allowed to add interests.",
            ));
        }
        let context = r.u32()?;
        let max_zones = core.ca.limits.max_zones_per_interest;
        let (id, i) = SessionCore::read_interest(r, multiple, max_zones)?;
        if core.ca.interests == InterestPolicy::Visible && core.lookup_object(i.parent).is_none() {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!(
                    "Cannot add interest to parent with id {} because parent is not visible to client.",
                    i.parent
                ),
            )
            .about(i.parent));
        }
        let l = &core.ca.limits;
        let (interests, ops) = core.interest_counts();
        if core.interest(id).is_none() && interests >= l.max_interests {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!("Client has {} interests, the limit.", l.max_interests),
            ));
        }
        if ops >= l.max_pending_interests {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!(
                    "Client has {} interest operations outstanding, the limit.",
                    l.max_pending_interests
                ),
            ));
        }
        core.add_interest(now, id, i, context, 0, self, out);
        Ok(())
    }

    fn client_remove_interest(
        &mut self,
        core: &mut SessionCore,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if core.ca.interests == InterestPolicy::Disabled {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                "Client is not allowed to remove interests.",
            ));
        }
        let context = r.u32()?;
        let id = r.u16()?;
        let Some(i) = core.interest(id) else {
            return Err(refuse(
                CLIENT_DISCONNECT_GENERIC,
                "Tried to remove a non-existing interest.",
            ));
        };
        if core.ca.interests == InterestPolicy::Visible && core.lookup_object(i.parent).is_none() {
            return Err(refuse(
                CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                format!(
                    "Cannot remove interest for parent with id {} because parent is not visible to client.",
                    i.parent
                ),
            ));
        }
        core.remove_interest(id, context, 0, self, out);
        Ok(())
    }
}

/// The first datagram: CLIENT_HELLO with the version and the DC hash.
fn pre_hello(
    core: &mut SessionCore,
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
    core.heartbeat(now);
    let hash = r.u32()?;
    let version = r.blob()?;
    let ca = &core.ca;
    if version != ca.version.as_bytes() {
        let mut msg = format!(
            "Client version mismatch: client={}",
            String::from_utf8_lossy(version)
        );
        if ca.send_version {
            msg.push_str(&format!(", server={}", ca.version));
        }
        return Err(refuse(CLIENT_DISCONNECT_BAD_VERSION, msg));
    }
    if hash != ca.hash {
        let mut msg = format!("Client DC hash mismatch: client=0x{hash:x}");
        if ca.send_hash {
            msg.push_str(&format!(", server=0x{:x}", ca.hash));
        }
        return Err(refuse(CLIENT_DISCONNECT_BAD_DCHASH, msg));
    }
    let _ = Writer::client(&mut out.to_client, CLIENT_HELLO_RESP).finish();
    core.set_state(STATE_ANONYMOUS);
    Ok(())
}

/// CLIENT_OBJECT_SET_FIELD, or (with `many`) CLIENT_OBJECT_SET_FIELDS, which Astron lacks:
/// every field is checked as a single update would be.
fn client_set_field(
    core: &mut SessionCore,
    r: &mut Reader<'_>,
    many: bool,
    out: &mut SessionOut,
) -> Result<(), Refusal> {
    let doid = r.u32()?;
    let count = if many { r.u16()? } else { 1 };
    let fields_start = r.rest_peek();
    let Some(class) = core.lookup_object(doid) else {
        if core.saw_once(doid) {
            // A late message for an object that was once visible: not the client's fault.
            r.rest();
            return Ok(());
        }
        return Err(refuse(
            CLIENT_DISCONNECT_MISSING_OBJECT,
            format!("Client tried to send update to nonexistent object {doid}"),
        )
        .about(doid));
    };
    let schema = core.ca.schema.clone();
    let cname = schema.class_name(class);
    if core.state() != STATE_ESTABLISHED
        && !core.ca.uberdogs.get(&doid).is_some_and(|u| u.anonymous)
    {
        return Err(refuse(
            CLIENT_DISCONNECT_ANONYMOUS_VIOLATION,
            format!("Client tried to send update to non-anonymous object {cname}({doid})"),
        )
        .about(doid));
    }
    let ascii_only = !core.ca.limits.allow_utf8_strings;
    for _ in 0..count {
        let field = r.u16()?;
        let e = |code, reason: String| {
            let mut e = refuse(code, reason).about(doid);
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
        if !core.may_send(doid, field, flags) {
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
    let mut w = core.send_to(doid as u64, msgtype, out);
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

/// CLIENT_OBJECT_LOCATION: the client moves an object it owns (when `relocate` allows).
fn client_location(
    core: &mut SessionCore,
    r: &mut Reader<'_>,
    out: &mut SessionOut,
) -> Result<(), Refusal> {
    if !core.ca.relocate {
        return Err(refuse(
            CLIENT_DISCONNECT_FORBIDDEN_RELOCATE,
            "Owned object relocation is disabled by server.",
        ));
    }
    let doid = r.u32()?;
    if !core.owns(doid) {
        if core.saw_once(doid) {
            r.rest();
            return Ok(());
        }
        let e = if core.sees(doid) {
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
        return Err(e.about(doid));
    }
    let parent = r.u32()?;
    let zone = r.u32()?;
    let mut w = core.send_to(doid as u64, STATESERVER_OBJECT_SET_LOCATION, out);
    w.u32(parent).u32(zone);
    let _ = w.finish();
    Ok(())
}

/// CLIENT_ENTER_OBJECT_REQUIRED(_OTHER)(_OWNER): doid, location, class, then the values.
fn write_entrance(msgtype: u16, e: &Entrance<'_>, out: &mut SessionOut) {
    let mut w = Writer::client(&mut out.to_client, msgtype);
    w.u32(e.doid)
        .u32(e.parent)
        .u32(e.zone)
        .u16(e.class)
        .bytes(e.body);
    let _ = w.finish();
}

impl ClientView for State {
    fn enter_object(&mut self, _: &SessionCore, e: Entrance<'_>, out: &mut SessionOut) -> bool {
        let msgtype = if e.other {
            CLIENT_ENTER_OBJECT_REQUIRED_OTHER
        } else {
            CLIENT_ENTER_OBJECT_REQUIRED
        };
        write_entrance(msgtype, &e, out);
        true
    }

    fn enter_owned(&mut self, e: Entrance<'_>, out: &mut SessionOut) {
        let msgtype = if e.other {
            CLIENT_ENTER_OBJECT_REQUIRED_OTHER_OWNER
        } else {
            CLIENT_ENTER_OBJECT_REQUIRED_OWNER
        };
        write_entrance(msgtype, &e, out);
    }

    fn leave_object(&mut self, doid: u32, out: &mut SessionOut) {
        doid_message(CLIENT_OBJECT_LEAVING, doid, out);
    }

    fn delete_object(&mut self, doid: u32, out: &mut SessionOut) {
        doid_message(CLIENT_OBJECT_LEAVING, doid, out);
    }

    fn leave_owned(&mut self, doid: u32, out: &mut SessionOut) {
        doid_message(CLIENT_OBJECT_LEAVING_OWNER, doid, out);
    }

    fn object_moved(&mut self, doid: u32, parent: u32, zone: u32, out: &mut SessionOut) {
        let mut w = Writer::client(&mut out.to_client, CLIENT_OBJECT_LOCATION);
        w.u32(doid).u32(parent).u32(zone);
        let _ = w.finish();
    }

    fn field_update(
        &mut self,
        _: &SessionCore,
        doid: u32,
        _: u16,
        many: bool,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) {
        let msgtype = if many {
            CLIENT_OBJECT_SET_FIELDS
        } else {
            CLIENT_OBJECT_SET_FIELD
        };
        let mut w = Writer::client(&mut out.to_client, msgtype);
        w.u32(doid).bytes(r.rest());
        let _ = w.finish();
    }

    fn interest_done(&mut self, id: u16, context: u32, out: &mut SessionOut) {
        let mut w = Writer::client(&mut out.to_client, CLIENT_DONE_INTEREST_RESP);
        w.u32(context).u16(id);
        let _ = w.finish();
    }

    fn interest_added(&mut self, id: u16, context: u32, i: &Interest, out: &mut SessionOut) {
        let many = i.zones.len() > 1;
        let msgtype = if many {
            CLIENT_ADD_INTEREST_MULTIPLE
        } else {
            CLIENT_ADD_INTEREST
        };
        let mut w = Writer::client(&mut out.to_client, msgtype);
        w.u32(context).u16(id).u32(i.parent);
        if many {
            w.u16(i.zones.len() as u16);
        }
        for &z in &i.zones {
            w.u32(z);
        }
        let _ = w.finish();
    }

    fn interest_removed(&mut self, id: u16, context: u32, out: &mut SessionOut) {
        let mut w = Writer::client(&mut out.to_client, CLIENT_REMOVE_INTEREST);
        w.u32(context).u16(id);
        let _ = w.finish();
    }
}

/// An operator's system message for an Astron client: `system_message_field` set on the
/// client's own avatar (one it owns, of a class with that field); false when there is none.
pub(super) fn system_message(core: &SessionCore, text: &str, out: &mut SessionOut) -> bool {
    let Some((doid, class)) = core.own_avatar() else {
        return false;
    };
    let Some((field, value)) = core.ca.system_message_value(text) else {
        return false;
    };
    if !core.ca.schema.class_has_field(class, field) {
        return false;
    }
    let mut w = Writer::client(&mut out.to_client, CLIENT_OBJECT_SET_FIELD);
    w.u32(doid).u16(field).bytes(&value);
    w.finish().is_ok()
}

impl State {
    /// The internal datagrams the Astron dialect serves itself: it notes the account a
    /// CLIENTAGENT_SET_CLIENT_ID names (and asks for its ban; the core still moves the
    /// channel), and takes the Database's answer. True when handled.
    pub(super) fn on_internal(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<bool, otp_wire::WireError> {
        match msgtype {
            CLIENTAGENT_SET_CLIENT_ID => {
                let id = (r.u64()? >> 32) as u32;
                self.client_id_set(core, now, id, out);
                Ok(false)
            }
            DBSERVER_ACCOUNT_GET_BAN_RESP => {
                let context = r.u32()?;
                if self.ban_check.is_some_and(|(c, _)| c == context) {
                    self.ban_check = None;
                    let (status, until) = (r.u8()?, r.u64()?);
                    let reason = String::from_utf8_lossy(r.blob()?).into_owned();
                    let unix = core.ca.clock.unix_at(now).as_secs();
                    if status == 0 && until != 0 && unix < until {
                        self.banned(core, until, &reason, out);
                    }
                }
                r.rest();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The cluster set the client's channel; `id` is the account it names (0 = none). A new
    /// account is asked for its ban (`ban_database`), the client's datagrams held meanwhile.
    fn client_id_set(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        id: u32,
        out: &mut SessionOut,
    ) {
        if id == 0 {
            self.account = None;
            self.ban_check = None;
            return;
        }
        if self.account.as_ref().is_some_and(|(a, _)| *a == id) {
            return;
        }
        let name = crate::roles::account::astron_account_name(id);
        self.ban_check = None;
        if let Some((db, timeout)) = core.ca.ban_check {
            self.contexts = self.contexts.wrapping_add(1);
            let context = self.contexts;
            // From the channel the session always listens on, whatever the client's is.
            let mut w = Writer::internal1(
                &mut out.datagrams,
                db,
                core.allocated,
                DBSERVER_ACCOUNT_GET_BAN,
            );
            w.u32(context).string(&name);
            w.finish_bounded();
            self.ban_check = Some((context, now + timeout));
        }
        self.account = Some((id, name));
    }

    /// The account is banned: the client leaves with 352, as a refused login.
    fn banned(&mut self, core: &mut SessionCore, until: u64, reason: &str, out: &mut SessionOut) {
        use crate::roles::event::{encode, Ev};
        let name = self.account().unwrap_or_default().to_string();
        core.ca
            .count_login_refusal(crate::clientagent::LoginRefusal::Banned);
        let until_text = if until == crate::roles::account::BAN_FOREVER {
            "for good".to_string()
        } else {
            format!("until {until}")
        };
        let why = format!("The account is banned {until_text}: {reason}");
        out.events.push(encode(
            "client-login-refused",
            &[
                ("role", Ev::Str("clientagent")),
                ("sender", Ev::Str(&core.sender_name())),
                ("account", Ev::Str(&name)),
                ("code", Ev::U64(CLIENT_DISCONNECT_ACCOUNT_BANNED as u64)),
                (
                    "cause",
                    Ev::Str(crate::clientagent::LoginRefusal::Banned.label()),
                ),
                ("banned_until", Ev::U64(until)),
                ("reason", Ev::Str(&why)),
            ],
        ));
        self.held.clear();
        core.eject(refuse(CLIENT_DISCONNECT_ACCOUNT_BANNED, why), false, out);
    }

    /// When the ban check is given up.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.ban_check.map(|(_, at)| at)
    }

    /// A ban check unanswered in `ban_check_timeout_ms` lets the client through.
    pub(super) fn on_time(&mut self, core: &SessionCore, now: Instant) {
        if self.ban_check.is_some_and(|(_, at)| at <= now) {
            log::warn!(
                "{}: no answer from the database about account {}'s ban within ban_check_timeout_ms; letting it in",
                core.label(),
                self.account().unwrap_or_default()
            );
            self.ban_check = None;
        }
    }

    /// A client datagram held during the ban check, once it is over.
    pub(super) fn next_held(&mut self) -> Option<Vec<u8>> {
        match self.ban_check {
            Some(_) => None,
            None => self.held.pop_front(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The ban check as the session state machine runs it, on a fake clock: what is asked,
    //! what is held meanwhile, and what an answer, a silence or a flood does.

    use super::*;
    use crate::clientagent::session::{Close, Session};
    use crate::clientagent::{ClientAgent, WallClock};
    use crate::roles::schema::Schema;
    use std::sync::Arc;
    use std::time::Duration;

    const DB: u64 = 4003;
    const CHANNEL: u64 = 1_000_000;
    const UNIX: u64 = 1_764_000_000;

    /// An Astron session past its hello, on a listener with `ban_database: Some(DB)`.
    fn session(now: Instant) -> Session {
        let config: crate::config::ClientAgentConfig = ron::from_str(&format!(
            "(bind: \"127.0.0.1:0\", version: \"v\", manual_dc_hash: Some(7), \
             channels: (min: {CHANNEL}, max: 1000009), ban_database: Some({DB}), \
             ban_check_timeout_ms: 3000)"
        ))
        .expect("config parses");
        let dc =
            otp_dc::DcFile::parse_str("t.dc", "dclass Thing {\n  setX(uint8) broadcast;\n};\n")
                .expect("dc parses");
        let clock = WallClock {
            at: now,
            unix: Duration::from_secs(UNIX),
        };
        let ca = ClientAgent::new(
            0,
            &config,
            Arc::new(Schema::new(dc)),
            &[],
            Default::default(),
            clock,
        )
        .expect("agent builds");
        let addr = "127.0.0.1:1".parse().unwrap();
        let mut out = SessionOut::default();
        let mut s = Session::new(
            Arc::new(ca),
            CHANNEL,
            addr,
            addr,
            Vec::new(),
            None,
            false,
            now,
            &mut out,
        );
        let mut hello = Vec::new();
        let mut w = Writer::client(&mut hello, CLIENT_HELLO);
        w.u32(7).string("v");
        w.finish_bounded();
        s.on_client(now, &hello[2..], &mut out);
        assert!(!s.is_closed());
        s
    }

    /// An internal datagram's body (no length tag) to the session.
    fn internal(sender: u64, msgtype: u16, payload: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
        let mut v = Vec::new();
        let mut w = Writer::internal1(&mut v, CHANNEL, sender, msgtype);
        payload(&mut w);
        w.finish_bounded();
        v.split_off(2)
    }

    /// The cluster sets the client's channel to `account << 32 | 9`; the context of the
    /// DBSERVER_ACCOUNT_GET_BAN asked for `#account`, if one was.
    fn set_client_id(s: &mut Session, now: Instant, account: u32) -> Option<u32> {
        let mut out = SessionOut::default();
        let id = (u64::from(account) << 32) | 9;
        s.on_internal(
            now,
            &internal(77, CLIENTAGENT_SET_CLIENT_ID, |w| {
                w.u64(id);
            }),
            &mut out,
        );
        if out.datagrams.is_empty() {
            return None;
        }
        let dg = otp_wire::InternalDatagram::parse(&out.datagrams[2..]).unwrap();
        assert_eq!(
            (dg.recipients.get(0), dg.sender, dg.msgtype),
            (Some(DB), Some(CHANNEL), DBSERVER_ACCOUNT_GET_BAN)
        );
        let mut r = dg.payload_reader();
        let context = r.u32().unwrap();
        assert_eq!(r.blob().unwrap(), format!("#{account}").as_bytes());
        Some(context)
    }

    fn disconnect(s: &mut Session, now: Instant) -> SessionOut {
        let mut out = SessionOut::default();
        s.on_client(now, &CLIENT_DISCONNECT.to_le_bytes(), &mut out);
        out
    }

    fn answer(s: &mut Session, now: Instant, context: u32, status: u8, until: u64) -> SessionOut {
        let mut out = SessionOut::default();
        let body = internal(DB, DBSERVER_ACCOUNT_GET_BAN_RESP, |w| {
            w.u32(context).u8(status).u64(until).string("griefing");
        });
        s.on_internal(now, &body, &mut out);
        out
    }

    #[test]
    fn a_banned_account_is_ejected_and_its_held_datagrams_dropped() {
        let now = Instant::now();
        let mut s = session(now);
        let context = set_client_id(&mut s, now, 1234).expect("a ban check");
        // Held: the disconnect waits for the answer.
        assert!(disconnect(&mut s, now).close.is_none());
        assert!(!s.is_closed());
        // A stale answer (another context) changes nothing.
        assert!(answer(&mut s, now, context.wrapping_add(1), 0, u64::MAX)
            .close
            .is_none());
        let out = answer(&mut s, now, context, 0, UNIX + 60);
        match out.close {
            Some(Close::Eject { code, reason }) => {
                assert_eq!(code, CLIENT_DISCONNECT_ACCOUNT_BANNED);
                assert!(reason.contains("griefing"), "{reason}");
            }
            other => panic!("not ejected: {other:?}"),
        }
        assert_eq!(out.events.len(), 2, "the refused login and the eject");
    }

    #[test]
    fn an_ended_ban_or_no_record_lets_the_held_datagrams_through() {
        for (status, until) in [(0, UNIX - 1), (0, 0), (1, 0)] {
            let now = Instant::now();
            let mut s = session(now);
            let context = set_client_id(&mut s, now, 1234).expect("a ban check");
            assert!(disconnect(&mut s, now).close.is_none());
            let out = answer(&mut s, now, context, status, until);
            assert_eq!(out.close, Some(Close::Disconnect), "({status}, {until})");
        }
    }

    #[test]
    fn the_same_account_is_asked_once_and_no_account_not_at_all() {
        let now = Instant::now();
        let mut s = session(now);
        assert_eq!(set_client_id(&mut s, now, 0), None);
        let context = set_client_id(&mut s, now, 5).expect("a ban check");
        assert!(answer(&mut s, now, context, 1, 0).close.is_none());
        assert_eq!(set_client_id(&mut s, now, 5), None, "asked already");
        assert!(set_client_id(&mut s, now, 6).is_some(), "another account");
    }

    #[test]
    fn an_unanswered_check_lets_the_client_through_after_its_timeout() {
        let now = Instant::now();
        let mut s = session(now);
        set_client_id(&mut s, now, 1234).expect("a ban check");
        assert!(disconnect(&mut s, now).close.is_none());
        assert_eq!(s.next_deadline(), Some(now + Duration::from_millis(3000)));
        let mut out = SessionOut::default();
        s.on_time(now + Duration::from_millis(2999), &mut out);
        assert!(out.close.is_none());
        s.on_time(now + Duration::from_millis(3000), &mut out);
        assert_eq!(out.close, Some(Close::Disconnect));
    }

    #[test]
    fn a_client_flooding_during_the_check_is_ejected() {
        let now = Instant::now();
        let mut s = session(now);
        set_client_id(&mut s, now, 1234).expect("a ban check");
        let mut out = SessionOut::default();
        for _ in 0..MAX_HELD_DURING_BAN_CHECK {
            s.on_client(now, &CLIENT_HEARTBEAT.to_le_bytes(), &mut out);
        }
        assert!(out.close.is_none());
        s.on_client(now, &CLIENT_HEARTBEAT.to_le_bytes(), &mut out);
        assert!(matches!(
            out.close,
            Some(Close::Eject {
                code: CLIENT_DISCONNECT_GENERIC,
                ..
            })
        ));
    }
}

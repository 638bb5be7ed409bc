//! Astron's client protocol (`AstronClient.cpp`, message for message): HELLO, then field
//! updates, relocation and interests from the client; the ENTER/LEAVING/SET_FIELD family
//! and interest echoes to it.

use super::{doid_message, ClientView, Entrance};
use crate::clientagent::session::core::{refuse, Interest, Refusal, SessionCore};
use crate::clientagent::session::{SessionOut, STATE_ANONYMOUS, STATE_ESTABLISHED, STATE_NEW};
use crate::clientagent::InterestPolicy;
use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::*;
use otp_wire::{Reader, Writer};
use std::time::Instant;

/// An Astron session keeps nothing beyond the core.
#[derive(Debug, Default)]
pub(in crate::clientagent) struct State;

impl State {
    /// One client datagram.
    pub(super) fn on_client(
        &mut self,
        core: &mut SessionCore,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
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

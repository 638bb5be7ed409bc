//! Objects as the 2003 client is told of them: CREATE_OBJECT_REQUIRED(_OTHER) with the class
//! first and no location, DISABLE/DELETE, field updates one by one in the client's own field
//! numbers, avatar details; and DONE_SET_ZONE_RESP for the one interest the client knows of.

use super::*;
use crate::clientagent::dialect::{doid_message, ClientView, Entrance};
use crate::clientagent::ClientAgent;

impl ClientView for State {
    fn enter_object(&mut self, core: &SessionCore, e: Entrance<'_>, out: &mut SessionOut) -> bool {
        let ca = &core.ca;
        if e.zone == ca.toontown.quiet_zone
            && ca.schema.class_name(e.class) == ca.toontown.avatar_class
        {
            // Toons passing through the quiet zone are not shown (as the original server did).
            return false;
        }
        let msgtype = if e.other {
            CLIENT_CREATE_OBJECT_REQUIRED_OTHER
        } else {
            CLIENT_CREATE_OBJECT_REQUIRED
        };
        let mut w = Writer::client(&mut out.to_client, msgtype);
        w.u16(e.class).u32(e.doid);
        // The sections as the 2003 client reads them, in its field numbers.
        if !write_sections(ca, e.class, e.body, e.other, true, &mut w) {
            w.abandon();
            log::warn!(
                "{}: object {} of class {} does not parse; not shown",
                core.label(),
                e.doid,
                e.class
            );
            return false;
        }
        let _ = w.finish();
        true
    }

    fn enter_owned(&mut self, _: Entrance<'_>, _: &mut SessionOut) {
        // The 2003 client learns its avatar from GET_AVATAR_DETAILS_RESP.
    }

    fn leave_object(&mut self, doid: u32, out: &mut SessionOut) {
        doid_message(CLIENT_OBJECT_DISABLE_RESP, doid, out);
    }

    fn delete_object(&mut self, doid: u32, out: &mut SessionOut) {
        doid_message(CLIENT_OBJECT_DELETE_RESP, doid, out);
    }

    fn leave_owned(&mut self, _: u32, _: &mut SessionOut) {}

    fn object_moved(&mut self, _: u32, _: u32, _: u32, _: &mut SessionOut) {}

    /// One OBJECT_UPDATE_FIELD per field, numbered as the client numbers the object's class (a
    /// field it has no number for is not sent).
    fn field_update(
        &mut self,
        core: &SessionCore,
        doid: u32,
        class: u16,
        many: bool,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) {
        let ca = &core.ca;
        let count = if many { r.u16().unwrap_or(0) } else { 1 };
        for _ in 0..count {
            let Ok(field) = r.u16() else {
                return;
            };
            let Ok(n) = ca.schema.value_len(class, field, r.rest_peek()) else {
                return;
            };
            let Ok(value) = r.take(n) else {
                return;
            };
            let Some(number) = ca.field_to_client(class, field) else {
                continue;
            };
            let mut w = Writer::client(&mut out.to_client, CLIENT_OBJECT_UPDATE_FIELD);
            w.u32(doid).u16(number).bytes(value);
            let _ = w.finish();
        }
        r.rest();
    }

    /// For the SET_ZONE interest, DONE_SET_ZONE_RESP (the client knows no other interest).
    fn interest_done(&mut self, id: u16, context: u32, out: &mut SessionOut) {
        if id != ZONE_INTEREST {
            return;
        }
        let mut w = Writer::client(&mut out.to_client, CLIENT_DONE_SET_ZONE_RESP);
        w.u16(context as u16);
        let _ = w.finish();
        self.zone_pending = None;
        self.replay = !self.held.is_empty();
    }

    fn interest_added(&mut self, _: u16, _: u32, _: &Interest, _: &mut SessionOut) {}

    fn interest_removed(&mut self, _: u16, _: u32, _: &mut SessionOut) {}

    /// As for a SET_ZONE of too many zones: GO_GET_LOST 1.
    fn zone_budget_code(&self) -> u16 {
        LOST_GENERIC
    }
}

/// Writes an object's REQUIRED (and with `other`, OTHER) section (`body`, as the cluster sent
/// it: to a viewer, or with `viewer` false every required field, as GET_ALL does) for a 2003
/// client: the required values it reads (a viewer: the broadcast ones) in order, and the OTHER
/// fields renumbered in the client's numbering (those it cannot name left out). False if the
/// body does not parse.
pub(super) fn write_sections(
    ca: &ClientAgent,
    class: u16,
    body: &[u8],
    other: bool,
    viewer: bool,
    w: &mut Writer<'_>,
) -> bool {
    let schema = &ca.schema;
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
        if let Some(number) = ca.field_to_client(class, f) {
            pairs.push((number, v));
        }
    }
    w.u16(pairs.len() as u16);
    for (f, v) in pairs {
        w.u16(f).bytes(v);
    }
    true
}

/// Another toon's details (a GET_ALL answer's body after the class) as a stranger may see
/// them: each required field the client reads, with its value if it is `broadcast` (what
/// anyone near the toon receives) and its DC default otherwise; never the account name.
/// Then an empty OTHER section. False if the body does not parse.
pub(super) fn write_public_details(
    ca: &ClientAgent,
    class: u16,
    body: &[u8],
    w: &mut Writer<'_>,
) -> bool {
    let schema = &ca.schema;
    let Some(info) = schema.class(class) else {
        return false;
    };
    let mut r = Reader::new(body);
    for &f in &info.required {
        let Ok(n) = schema.value_len(class, f, r.rest_peek()) else {
            return false;
        };
        let Ok(v) = r.take(n) else {
            return false;
        };
        let public =
            schema.flags(class, f).broadcast && schema.field_name(class, f) != ACCOUNT_NAME_FIELD;
        if public {
            w.bytes(v);
        } else {
            w.bytes(schema.default_value(class, f));
        }
    }
    w.u16(0);
    true
}

//! The cluster's datagrams to a client's channels, by group: the CLIENTAGENT_* controls
//! (lifecycle, channels, post-removes, queries), interests opened for the client, objects the
//! cluster declares or makes sendable, and the StateServer's object messages (fields, deletes,
//! entrances, moves). What the client is told goes through its dialect's `ClientView`.

use super::core::{refuse, Interest, Obj};
use super::{PostRemove, Session, SessionOut, STATE_ESTABLISHED};
use crate::clientagent::dialect::Entrance;
use crate::roles::Subscription;
use otp_wire::msgtypes::*;
use otp_wire::{InternalDatagram, Reader, WireError, Writer};
use std::time::Instant;

impl Session {
    /// One internal datagram the dialect left to the core.
    pub(super) fn internal(
        &mut self,
        now: Instant,
        sender: u64,
        msgtype: u16,
        r: &mut Reader<'_>,
        body: &[u8],
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        match msgtype {
            CLIENTAGENT_EJECT
            | CLIENTAGENT_DROP
            | CLIENTAGENT_SET_STATE
            | CLIENTAGENT_SET_CLIENT_ID
            | CLIENTAGENT_SEND_DATAGRAM
            | CLIENTAGENT_OPEN_CHANNEL
            | CLIENTAGENT_CLOSE_CHANNEL
            | CLIENTAGENT_ADD_POST_REMOVE
            | CLIENTAGENT_CLEAR_POST_REMOVES
            | CLIENTAGENT_GET_TLVS
            | CLIENTAGENT_GET_NETWORK_ADDRESS => self.control(sender, msgtype, r, out),
            CLIENTAGENT_ADD_INTEREST
            | CLIENTAGENT_ADD_INTEREST_MULTIPLE
            | CLIENTAGENT_REMOVE_INTEREST => self.server_interest(now, sender, msgtype, r, out),
            CLIENTAGENT_DECLARE_OBJECT
            | CLIENTAGENT_UNDECLARE_OBJECT
            | CLIENTAGENT_SET_FIELDS_SENDABLE
            | CLIENTAGENT_ADD_SESSION_OBJECT
            | CLIENTAGENT_REMOVE_SESSION_OBJECT => self.declarations(msgtype, r),
            STATESERVER_OBJECT_SET_FIELD | STATESERVER_OBJECT_SET_FIELDS => {
                self.field_update(msgtype, r, body, out)
            }
            STATESERVER_OBJECT_DELETE_RAM => self.object_deleted(r, body, out),
            STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED_OTHER => {
                self.enter_owner(msgtype, r, out)
            }
            STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER
            | STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER
            | STATESERVER_OBJECT_GET_ZONES_COUNT_RESP => {
                self.interest_answer(now, msgtype, r, body, out)
            }
            STATESERVER_OBJECT_CHANGING_LOCATION => self.changing_location(r, body, out),
            STATESERVER_OBJECT_CHANGING_OWNER => self.changing_owner(r, out),
            CLIENTAGENT_ADMIN_LIST | CLIENTAGENT_ADMIN_EJECT | CLIENTAGENT_ADMIN_MESSAGE => {
                self.admin(sender, msgtype, r, out)
            }
            other => {
                log::debug!(
                    "{}: ignoring server message {} ({other})",
                    self.label(),
                    internal_name(other)
                );
                Ok(())
            }
        }
    }

    /// The CLIENTAGENT_* messages about the session itself: its end, state and channels,
    /// post-removes, and what it tells the cluster about its connection.
    fn control(
        &mut self,
        sender: u64,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let core = &mut self.core;
        match msgtype {
            CLIENTAGENT_EJECT => {
                let code = r.u16()?;
                let reason = String::from_utf8_lossy(r.blob()?).into_owned();
                core.eject(refuse(code, reason), false, out);
            }
            CLIENTAGENT_DROP => core.drop_client(out),
            CLIENTAGENT_SET_STATE => {
                let state = r.u16()?;
                if state > STATE_ESTABLISHED {
                    log::warn!(
                        "{}: SET_STATE to unknown state {state}; ignored",
                        core.label()
                    );
                } else {
                    core.set_state(state);
                }
            }
            CLIENTAGENT_SET_CLIENT_ID => {
                let channel = r.u64()?;
                if core.channel != core.allocated {
                    out.subscriptions.push(Subscription::Remove(core.channel));
                }
                core.channel = channel;
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
            CLIENTAGENT_GET_TLVS => {
                let ctx = r.u32()?;
                let mut w = core.send_to(sender, CLIENTAGENT_GET_TLVS_RESP, out);
                w.u32(ctx).blob(&core.tlvs);
                let _ = w.finish();
            }
            CLIENTAGENT_GET_NETWORK_ADDRESS => {
                let ctx = r.u32()?;
                let (remote, local) = (core.remote(), core.local);
                let mut w = core.send_to(sender, CLIENTAGENT_GET_NETWORK_ADDRESS_RESP, out);
                w.u32(ctx)
                    .string(&remote.ip().to_string())
                    .u16(remote.port())
                    .string(&local.ip().to_string())
                    .u16(local.port());
                let _ = w.finish();
            }
            _ => unreachable!("routed by internal()"),
        }
        Ok(())
    }

    /// CLIENTAGENT_ADD_INTEREST(_MULTIPLE), CLIENTAGENT_REMOVE_INTEREST: the cluster opens
    /// or closes an interest for the client (`sender` hears when it is done).
    fn server_interest(
        &mut self,
        now: Instant,
        sender: u64,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let context = self.core.next_context();
        let view = self.dialect.view();
        if msgtype == CLIENTAGENT_REMOVE_INTEREST {
            let id = r.u16()?;
            view.interest_removed(id, context, out);
            self.core.remove_interest(id, context, sender, view, out);
            return Ok(());
        }
        let multiple = msgtype == CLIENTAGENT_ADD_INTEREST_MULTIPLE;
        let (id, i): (u16, Interest) =
            match super::core::SessionCore::read_interest(r, multiple, u16::MAX as usize) {
                Ok(x) => x,
                Err(_) => {
                    return Err(WireError::Truncated {
                        at: r.position(),
                        wanted: 4,
                        remaining: r.remaining(),
                    })
                }
            };
        view.interest_added(id, context, &i, out);
        self.core
            .add_interest(now, id, i, context, sender, view, out);
        Ok(())
    }

    /// Objects the cluster declares to the client, makes sendable, or makes session objects.
    fn declarations(&mut self, msgtype: u16, r: &mut Reader<'_>) -> Result<(), WireError> {
        let core = &mut self.core;
        let doid = r.u32()?;
        match msgtype {
            CLIENTAGENT_DECLARE_OBJECT => {
                let class = r.u16()?;
                if core.declared.contains_key(&doid) {
                    log::warn!(
                        "{}: declaration of already declared object {doid}",
                        core.label()
                    );
                } else if core.ca.schema.class(class).is_none() {
                    log::warn!(
                        "{}: declaration of object {doid} with unknown class {class}; ignored",
                        core.label()
                    );
                } else {
                    core.declared.insert(doid, class);
                }
            }
            CLIENTAGENT_UNDECLARE_OBJECT => {
                if core.declared.remove(&doid).is_none() {
                    log::warn!("{}: undeclare of unknown object {doid}", core.label());
                }
            }
            CLIENTAGENT_SET_FIELDS_SENDABLE => {
                let count = r.u16()?;
                let mut fields = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    fields.push(r.u16()?);
                }
                core.sendable.insert(doid, fields);
            }
            CLIENTAGENT_ADD_SESSION_OBJECT => {
                if !core.session_objects.insert(doid) {
                    log::warn!(
                        "{}: add session object for existing session object {doid}",
                        core.label()
                    );
                }
            }
            CLIENTAGENT_REMOVE_SESSION_OBJECT => {
                if !core.session_objects.remove(&doid) {
                    log::warn!(
                        "{}: remove session object for non-session object {doid}",
                        core.label()
                    );
                }
            }
            _ => unreachable!("routed by internal()"),
        }
        Ok(())
    }

    /// STATESERVER_OBJECT_SET_FIELD(S) on an object the client sees or owns.
    fn field_update(
        &mut self,
        msgtype: u16,
        r: &mut Reader<'_>,
        body: &[u8],
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let doid = r.u32()?;
        let Some(class) = self.core.lookup_object(doid) else {
            if !self.core.try_queue_pending(doid, body) {
                log::debug!(
                    "{}: server-side field update for unknown object {doid}",
                    self.label()
                );
            }
            return Ok(());
        };
        let many = msgtype == STATESERVER_OBJECT_SET_FIELDS;
        self.dialect
            .view()
            .field_update(&self.core, doid, class, many, r, out);
        Ok(())
    }

    /// STATESERVER_OBJECT_DELETE_RAM of an object the client knows.
    fn object_deleted(
        &mut self,
        r: &mut Reader<'_>,
        body: &[u8],
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let doid = r.u32()?;
        let core = &mut self.core;
        if core.lookup_object(doid).is_none() {
            if !core.try_queue_pending(doid, body) {
                log::debug!(
                    "{}: server-side delete of unknown object {doid}",
                    core.label()
                );
            }
            return Ok(());
        }
        if core.session_objects.remove(&doid) {
            core.eject_session_object(
                doid,
                format!("The session object with id {doid} has been unexpectedly deleted."),
                out,
            );
            return Ok(());
        }
        let view = self.dialect.view();
        if core.seen.remove(&doid) {
            view.delete_object(doid, out);
        }
        if core.owned.remove(&doid).is_some() {
            view.leave_owned(doid, out);
        }
        core.historical.insert(doid);
        core.unshow(doid);
        Ok(())
    }

    /// STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED(_OTHER): the client now owns an object.
    fn enter_owner(
        &mut self,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let doid = r.u32()?;
        let parent = r.u32()?;
        let zone = r.u32()?;
        let class = r.u16()?;
        self.core.owned.entry(doid).or_insert(Obj {
            class,
            parent,
            zone,
        });
        let e = Entrance {
            doid,
            parent,
            zone,
            class,
            other: msgtype == STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED_OTHER,
            body: r.rest(),
        };
        self.dialect.view().enter_owned(e, out);
        Ok(())
    }

    /// The StateServer's answers to an interest being opened (ENTER_INTEREST, the zones'
    /// count) and objects entering a zone the client sees (ENTER_LOCATION), held back while
    /// an interest on that zone opens.
    fn interest_answer(
        &mut self,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        body: &[u8],
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        match msgtype {
            STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER => {
                let mut peek = r.clone();
                let doid = peek.u32()?;
                let parent = peek.u32()?;
                let zone = peek.u32()?;
                let waiting = self
                    .core
                    .ops
                    .iter()
                    .find(|(_, op)| op.parent == parent && op.zones.contains(&zone))
                    .map(|(&c, _)| c);
                if let Some(ctx) = waiting {
                    if let Some(op) = self.core.ops.get_mut(&ctx) {
                        op.queued.push(body.to_vec());
                    }
                    self.core.pending_objects.entry(doid).or_insert(ctx);
                    self.check_op_queue(ctx, now, out);
                    return Ok(());
                }
                let other = msgtype == STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER;
                self.core
                    .object_entrance(r, other, self.dialect.view(), out);
            }
            STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED
            | STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER => {
                let ctx = r.u32()?;
                let doid = r.u32()?;
                r.rest();
                let Some(op) = self.core.ops.get_mut(&ctx) else {
                    log::debug!(
                        "{}: object entrance into interest with unknown context {ctx}",
                        self.label()
                    );
                    return Ok(());
                };
                op.generates.push(body.to_vec());
                let ready = op.is_ready();
                self.core.pending_objects.entry(doid).or_insert(ctx);
                if ready {
                    self.finish_op(ctx, now, out);
                } else {
                    self.check_op_queue(ctx, now, out);
                }
            }
            STATESERVER_OBJECT_GET_ZONES_COUNT_RESP => {
                let ctx = r.u32()?;
                let count = r.u32()?;
                let Some(op) = self.core.ops.get_mut(&ctx) else {
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
            _ => unreachable!("routed by internal()"),
        }
        Ok(())
    }

    /// STATESERVER_OBJECT_CHANGING_LOCATION of an object the client sees or owns: it moves
    /// in view, or leaves it.
    fn changing_location(
        &mut self,
        r: &mut Reader<'_>,
        body: &[u8],
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let doid = r.u32()?;
        let core = &mut self.core;
        if core.try_queue_pending(doid, body) {
            r.rest();
            return Ok(());
        }
        let parent = r.u32()?;
        let zone = r.u32()?;
        r.rest();
        let interested = core.interests_seeing(parent, zone) > 0;
        let visible = core.visible.contains_key(doid);
        let owned = core.owned.contains_key(&doid);
        if !visible && !owned {
            return Ok(());
        }
        core.move_visible(doid, parent, zone);
        if let Some(o) = core.owned.get_mut(&doid) {
            o.parent = parent;
            o.zone = zone;
        }
        let view = self.dialect.view();
        if !interested && visible {
            if core.session_objects.contains(&doid) {
                if owned {
                    view.object_moved(doid, parent, zone, out);
                } else {
                    core.eject_session_object(
                        doid,
                        format!(
                            "The session object with id {doid} has unexpectedly left interest."
                        ),
                        out,
                    );
                }
                return Ok(());
            }
            core.forget_visible(doid, view, out);
        } else {
            view.object_moved(doid, parent, zone, out);
        }
        Ok(())
    }

    /// STATESERVER_OBJECT_CHANGING_OWNER of an object the client owns: it loses it.
    fn changing_owner(
        &mut self,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let doid = r.u32()?;
        let new_owner = r.u64()?;
        r.rest();
        let core = &mut self.core;
        if new_owner == core.channel() {
            return Ok(());
        }
        if !core.owned.contains_key(&doid) {
            log::debug!("{}: CHANGING_OWNER for unowned object {doid}", core.label());
            return Ok(());
        }
        if core.session_objects.contains(&doid) {
            core.eject_session_object(
                doid,
                format!("The session object with id {doid} has unexpectedly left ownership."),
                out,
            );
            return Ok(());
        }
        self.dialect.view().leave_owned(doid, out);
        core.owned.remove(&doid);
        Ok(())
    }

    /// Completes an interest operation: its objects, the done messages, then what waited.
    pub(super) fn finish_op(&mut self, ctx: u32, now: Instant, out: &mut SessionOut) {
        let Some(op) = self.core.ops.remove(&ctx) else {
            return;
        };
        for g in &op.generates {
            let Ok(dg) = InternalDatagram::parse(g) else {
                continue;
            };
            let other = dg.msgtype == STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER;
            let mut r = dg.payload_reader();
            if r.skip(4).is_ok() {
                self.core
                    .object_entrance(&mut r, other, self.dialect.view(), out);
            }
        }
        self.core.notify_done(op.interest_id, &op.callers, out);
        self.dialect
            .view()
            .interest_done(op.interest_id, op.client_context, out);
        for q in op.queued {
            if self.is_closed() {
                break;
            }
            self.on_internal(now, &q, out);
        }
    }

    /// An op holding more than `max_queued_per_interest` datagrams completes early.
    fn check_op_queue(&mut self, ctx: u32, now: Instant, out: &mut SessionOut) {
        let limit = self.core.ca.limits.max_queued_per_interest;
        let over = self
            .core
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
}

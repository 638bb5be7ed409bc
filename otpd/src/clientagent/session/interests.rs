//! Interests and what the client sees through them: opening and closing interests, objects
//! entering and leaving view. The core keeps the books; what the client is told is the
//! dialect's (`ClientView`).

use super::core::{refuse, Interest, InterestOp, Obj, Refusal, SessionCore};
use super::SessionOut;
use crate::clientagent::dialect::{ClientView, Entrance};
use crate::roles::Subscription;
use otp_wire::channels::location_channel;
use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::*;
use otp_wire::{Reader, Writer};
use smallvec::SmallVec;
use std::time::Instant;

impl SessionCore {
    /// Reads an interest (id, parent, zones) as CLIENT_ADD_INTEREST(_MULTIPLE) and
    /// CLIENTAGENT_ADD_INTEREST(_MULTIPLE) carry it.
    pub(in crate::clientagent) fn read_interest(
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

    /// The interest `id`, if open.
    pub(in crate::clientagent) fn interest(&self, id: u16) -> Option<&Interest> {
        self.interests.get(&id)
    }

    /// How many interests are open, and how many operations opening one are outstanding.
    pub(in crate::clientagent) fn interest_counts(&self) -> (usize, usize) {
        (self.interests.len(), self.ops.len())
    }

    /// How many interests see `parent`'s `zone`.
    pub(in crate::clientagent) fn interests_seeing(&self, parent: u32, zone: u32) -> usize {
        self.interests
            .values()
            .filter(|i| i.parent == parent && i.zones.contains(&zone))
            .count()
    }

    /// Opens (or changes) interest `id`: asks the StateServer for the new zones' objects, or
    /// is done at once when there are none. `caller` (0: the client) hears when it is done.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::clientagent) fn add_interest(
        &mut self,
        now: Instant,
        id: u16,
        i: Interest,
        context: u32,
        caller: u64,
        view: &mut dyn ClientView,
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
            self.close_zones(prev.parent, &killed, view, out);
            if self.is_closed() {
                return;
            }
        }
        let parent = i.parent;
        self.interests.insert(id, i);
        if new_zones.is_empty() {
            self.notify_done(id, &[caller], out);
            view.interest_done(id, context, out);
            return;
        }
        let request = self.next_context();
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

    /// Closes interest `id` (an unknown one: just the done messages).
    pub(in crate::clientagent) fn remove_interest(
        &mut self,
        id: u16,
        context: u32,
        caller: u64,
        view: &mut dyn ClientView,
        out: &mut SessionOut,
    ) {
        let i = self.interests.get(&id).cloned().unwrap_or_default();
        let killed: SmallVec<[u32; 4]> = i
            .zones
            .iter()
            .copied()
            .filter(|&z| self.interests_seeing(i.parent, z) == 1)
            .collect();
        self.close_zones(i.parent, &killed, view, out);
        if self.is_closed() {
            return;
        }
        self.notify_done(id, &[caller], out);
        view.interest_done(id, context, out);
        self.interests.remove(&id);
    }

    /// Removes the objects seen through `parent`'s `killed` zones and stops listening there.
    fn close_zones(
        &mut self,
        parent: u32,
        killed: &[u32],
        view: &mut dyn ClientView,
        out: &mut SessionOut,
    ) {
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
            self.forget_visible(doid, view, out);
        }
        for &z in killed {
            out.subscriptions
                .push(Subscription::Remove(location_channel(parent, z)));
        }
    }

    /// Closes interest `id` without telling the client (it already dropped those objects
    /// itself: the 2003 client changing district or leaving the world).
    pub(in crate::clientagent) fn close_interest_quietly(&mut self, id: u16, out: &mut SessionOut) {
        if let Some(i) = self.interests.remove(&id) {
            self.forget_zones_quietly(i.parent, &i.zones, out);
        }
    }

    /// Narrows interest `id` to `zone` (closing it if it did not see `zone`) without telling
    /// the client, as `close_interest_quietly`.
    pub(in crate::clientagent) fn narrow_interest_quietly(
        &mut self,
        id: u16,
        zone: u32,
        out: &mut SessionOut,
    ) {
        if let Some(i) = self.interests.remove(&id) {
            let gone: Vec<u32> = i.zones.iter().copied().filter(|z| *z != zone).collect();
            self.forget_zones_quietly(i.parent, &gone, out);
            let mut keep = i.clone();
            keep.zones.retain(|z| *z == zone);
            if !keep.zones.is_empty() {
                self.interests.insert(id, keep);
            }
        }
    }

    /// Forgets what the client saw through `parent`'s `zones`, without telling it, so that
    /// coming back re-sends them.
    fn forget_zones_quietly(&mut self, parent: u32, zones: &[u32], out: &mut SessionOut) {
        let gone: Vec<u32> = self
            .visible
            .iter()
            .filter(|(_, o)| o.parent == parent && zones.contains(&o.zone))
            .map(|(&d, _)| d)
            .collect();
        for doid in gone {
            if self.session_objects.contains(&doid) {
                continue;
            }
            self.seen.remove(&doid);
            self.historical.insert(doid);
            self.visible.remove(&doid);
        }
        for &z in zones {
            if self.interests_seeing(parent, z) == 0 {
                out.subscriptions
                    .push(Subscription::Remove(location_channel(parent, z)));
            }
        }
    }

    /// Tells the cluster's `callers` (0s skipped) that interest `id` is open or closed.
    pub(super) fn notify_done(&self, id: u16, callers: &[u64], out: &mut SessionOut) {
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

    /// An object comes into view (an ENTER_*_WITH_REQUIRED(_OTHER) body after its context,
    /// if any): the dialect shows it, and the core remembers it.
    pub(super) fn object_entrance(
        &mut self,
        r: &mut Reader<'_>,
        other: bool,
        view: &mut dyn ClientView,
        out: &mut SessionOut,
    ) {
        let (Ok(doid), Ok(parent), Ok(zone), Ok(class)) = (r.u32(), r.u32(), r.u32(), r.u16())
        else {
            return;
        };
        self.pending_objects.remove(&doid);
        if self.seen.contains(&doid) {
            return;
        }
        if self.owned.contains_key(&doid) && self.session_objects.contains(&doid) {
            return;
        }
        let e = Entrance {
            doid,
            parent,
            zone,
            class,
            other,
            body: r.rest(),
        };
        if !view.enter_object(self, e, out) {
            return;
        }
        self.visible.entry(doid).or_insert(Obj {
            class,
            parent,
            zone,
        });
        self.seen.insert(doid);
    }

    /// Holds `body` in the interest operation waiting for `doid`'s entrance, if any.
    pub(super) fn try_queue_pending(&mut self, doid: u32, body: &[u8]) -> bool {
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

    /// A session object went away from the client: eject it (153).
    pub(super) fn eject_session_object(
        &mut self,
        doid: u32,
        reason: impl Into<String>,
        out: &mut SessionOut,
    ) {
        let e = refuse(CLIENT_DISCONNECT_SESSION_OBJECT_DELETED, reason).about(doid);
        self.eject(e, false, out);
    }

    /// The client no longer sees `doid`: tell it, and remember it saw it once.
    pub(super) fn forget_visible(
        &mut self,
        doid: u32,
        view: &mut dyn ClientView,
        out: &mut SessionOut,
    ) {
        view.leave_object(doid, out);
        self.seen.remove(&doid);
        self.historical.insert(doid);
        self.visible.remove(&doid);
    }
}

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
use rustc_hash::FxHashSet;
use smallvec::SmallVec;
use std::collections::hash_map::Entry;
use std::time::Instant;

/// Zones of one interest deduplicated by scanning the list; past it, with a set.
const LINEAR_DEDUP: usize = 16;

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
        let mut zones: SmallVec<[u32; 4]> = SmallVec::with_capacity(count.min(r.remaining() / 4));
        // Duplicates are dropped, keeping the first; past a few zones a set finds them, so
        // that a long list costs its length, not its square.
        let mut distinct: Option<FxHashSet<u32>> = None;
        for _ in 0..count {
            let z = r.u32()?;
            let fresh = match &mut distinct {
                Some(set) => set.insert(z),
                None if zones.len() < LINEAR_DEDUP => !zones.contains(&z),
                None => {
                    let mut set: FxHashSet<u32> = zones.iter().copied().collect();
                    let fresh = set.insert(z);
                    distinct = Some(set);
                    fresh
                }
            };
            if fresh {
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

    /// How many interests see `parent`'s `zone` (kept counted: O(1)).
    pub(in crate::clientagent) fn interests_seeing(&self, parent: u32, zone: u32) -> usize {
        self.zone_counts
            .get(&(parent, zone))
            .map_or(0, |&n| n as usize)
    }

    /// Would opening (or changing) interest `id` to `i` take the client past
    /// `max_zones_total`? The refusal, with the dialect's `code`, if so. `zones_total` is
    /// kept, so this is O(1).
    pub(in crate::clientagent) fn over_zone_budget(
        &self,
        id: u16,
        i: &Interest,
        code: u16,
    ) -> Option<Refusal> {
        let max = self.ca.limits.max_zones_total;
        let replaced = self.interests.get(&id).map_or(0, |p| p.zones.len());
        let after = self.zones_total - replaced + i.zones.len();
        // A change that does not grow what the client holds passes (the cluster's interests
        // may have taken it over the budget).
        (after > max && i.zones.len() > replaced).then(|| {
            refuse(
                code,
                format!(
                    "Interest {id} would make {after} zones open, over the limit of {max} for one client."
                ),
            )
        })
    }

    fn tick(&self, n: usize) {
        #[cfg(test)]
        self.work.set(self.work.get() + n as u64);
        let _ = n;
    }

    /// Stores interest `id` as `i`, counting its zones; returns the interest it replaces,
    /// still counted (`uncount` it).
    fn store_interest(&mut self, id: u16, i: Interest) -> Option<Interest> {
        self.tick(i.zones.len());
        for &z in &i.zones {
            *self.zone_counts.entry((i.parent, z)).or_insert(0) += 1;
        }
        self.zones_total += i.zones.len();
        self.interests.insert(id, i)
    }

    /// Takes interest `id` out, still counted (`uncount` it).
    fn take_interest(&mut self, id: u16) -> Option<Interest> {
        self.interests.remove(&id)
    }

    /// Uncounts the zones of `i`, an interest taken out: returns those no interest sees now,
    /// in `i`'s order.
    fn uncount(&mut self, i: &Interest) -> SmallVec<[u32; 4]> {
        self.tick(i.zones.len());
        let mut closed = SmallVec::new();
        for &z in &i.zones {
            if let Entry::Occupied(mut e) = self.zone_counts.entry((i.parent, z)) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                    closed.push(z);
                }
            }
        }
        self.zones_total -= i.zones.len();
        closed
    }

    /// The objects the client sees in `parent`'s `zone`, appended to `into`.
    fn visible_in(&self, parent: u32, zone: u32, into: &mut Vec<u32>) {
        let before = into.len();
        into.extend(
            self.visible_by_zone
                .range((parent, zone, 0)..=(parent, zone, u32::MAX))
                .map(|&(_, _, d)| d),
        );
        self.tick(1 + into.len() - before);
    }

    /// The client now sees `doid` at `o` (nothing changes if it did already).
    pub(super) fn show(&mut self, doid: u32, o: Obj) {
        if !self.visible.contains_key(doid) {
            self.visible.insert(doid, o);
            self.visible_by_zone.insert((o.parent, o.zone, doid));
        }
    }

    /// The client no longer sees `doid`.
    pub(super) fn unshow(&mut self, doid: u32) {
        if let Some(o) = self.visible.remove(doid) {
            self.visible_by_zone.remove(&(o.parent, o.zone, doid));
        }
    }

    /// `doid`, which the client may see, moved to `parent`'s `zone`.
    pub(super) fn move_visible(&mut self, doid: u32, parent: u32, zone: u32) {
        if let Some(o) = self.visible.get_mut(doid) {
            self.visible_by_zone.remove(&(o.parent, o.zone, doid));
            o.parent = parent;
            o.zone = zone;
            self.visible_by_zone.insert((parent, zone, doid));
        }
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
        // The client's own interests stay within its zone budget (the cluster's are trusted).
        if caller == 0 {
            if let Some(r) = self.over_zone_budget(id, &i, view.zone_budget_code()) {
                self.eject(r, true, out);
                return;
            }
        }
        self.tick(i.zones.len());
        let new_zones: SmallVec<[u32; 4]> = i
            .zones
            .iter()
            .copied()
            .filter(|&z| self.interests_seeing(i.parent, z) == 0)
            .collect();
        let parent = i.parent;
        // Count the new zones before uncounting the old: a zone both see stays open.
        if let Some(prev) = self.store_interest(id, i) {
            let killed = self.uncount(&prev);
            self.close_zones(prev.parent, &killed, view, out);
            if self.is_closed() {
                return;
            }
        }
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
        if let Some(i) = self.take_interest(id) {
            let killed = self.uncount(&i);
            self.close_zones(i.parent, &killed, view, out);
            if self.is_closed() {
                return;
            }
        }
        self.notify_done(id, &[caller], out);
        view.interest_done(id, context, out);
    }

    /// Removes the objects seen through `parent`'s `killed` zones and stops listening there.
    fn close_zones(
        &mut self,
        parent: u32,
        killed: &[u32],
        view: &mut dyn ClientView,
        out: &mut SessionOut,
    ) {
        let mut gone: Vec<u32> = Vec::new();
        for &z in killed {
            self.visible_in(parent, z, &mut gone);
        }
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
        if let Some(i) = self.take_interest(id) {
            let closed = self.uncount(&i);
            self.forget_zones_quietly(i.parent, &i.zones, &closed, out);
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
        if let Some(i) = self.take_interest(id) {
            let mut closed = self.uncount(&i);
            closed.retain(|z| *z != zone);
            let gone: Vec<u32> = i.zones.iter().copied().filter(|z| *z != zone).collect();
            self.forget_zones_quietly(i.parent, &gone, &closed, out);
            let mut keep = i;
            keep.zones.retain(|z| *z == zone);
            if !keep.zones.is_empty() {
                self.store_interest(id, keep);
            }
        }
    }

    /// Forgets what the client saw through `parent`'s `zones`, without telling it, so that
    /// coming back re-sends them, and stops listening to the `closed` ones (no interest sees
    /// them now).
    fn forget_zones_quietly(
        &mut self,
        parent: u32,
        zones: &[u32],
        closed: &[u32],
        out: &mut SessionOut,
    ) {
        let mut gone: Vec<u32> = Vec::new();
        for &z in zones {
            self.visible_in(parent, z, &mut gone);
        }
        for doid in gone {
            if self.session_objects.contains(&doid) {
                continue;
            }
            self.seen.remove(&doid);
            self.historical.insert(doid);
            self.unshow(doid);
        }
        for &z in closed {
            out.subscriptions
                .push(Subscription::Remove(location_channel(parent, z)));
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
        self.show(
            doid,
            Obj {
                class,
                parent,
                zone,
            },
        );
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
        self.unshow(doid);
    }
}

#[cfg(test)]
mod tests {
    //! The interest books cost what a change changes: not the other interests open, nor the
    //! objects in other zones; and they hold one entry per zone actually open.

    use super::*;
    use crate::clientagent::dialect::astron;
    use crate::clientagent::{ClientAgent, WallClock};
    use crate::roles::schema::Schema;
    use std::sync::Arc;
    use std::time::Duration;

    const PARENT: u32 = 10_000;

    fn core(now: Instant) -> SessionCore {
        let config: crate::config::ClientAgentConfig = ron::from_str(
            "(bind: \"127.0.0.1:0\", version: \"v\", channels: (min: 1000000, max: 1000009))",
        )
        .expect("config parses");
        let dc =
            otp_dc::DcFile::parse_str("t.dc", "dclass Thing {\n  setX(uint8) broadcast ram;\n};\n")
                .expect("dc parses");
        let ca = ClientAgent::new(
            0,
            &config,
            Arc::new(Schema::new(dc)),
            &[],
            Default::default(),
            WallClock {
                at: now,
                unix: Duration::from_secs(1_764_000_000),
            },
        )
        .expect("agent builds");
        let addr = "127.0.0.1:1".parse().unwrap();
        SessionCore::new(
            Arc::new(ca),
            1_000_000,
            addr,
            addr,
            Vec::new(),
            None,
            false,
            now,
        )
    }

    fn interest(zones: impl IntoIterator<Item = u32>) -> Interest {
        Interest {
            parent: PARENT,
            zones: zones.into_iter().collect(),
        }
    }

    /// Objects the client sees, one in each of `zones`.
    fn populate(c: &mut SessionCore, zones: std::ops::Range<u32>) {
        for z in zones {
            let doid = 1_000_000 + z;
            c.seen.insert(doid);
            c.show(
                doid,
                Obj {
                    class: 0,
                    parent: PARENT,
                    zone: z,
                },
            );
        }
    }

    /// The work of moving interest 0 from zones 0..5 to 5000..5005 (closing five zones with
    /// an object each) in a session that also holds `others` interests of five zones each.
    fn work_of_a_change(others: u16) -> u64 {
        let now = Instant::now();
        let mut c = core(now);
        let mut view = astron::State::default();
        let mut out = SessionOut::default();
        populate(&mut c, 0..1000);
        c.add_interest(now, 0, interest(0..5), 1, 0, &mut view, &mut out);
        for id in 1..=others {
            let z = id as u32 * 5;
            c.add_interest(now, id, interest(z..z + 5), 1, 0, &mut view, &mut out);
        }
        assert!(!c.is_closed());
        c.check_invariants().unwrap();
        assert_eq!(c.zone_counts.len(), 5 * (others as usize + 1));
        c.work.set(0);
        c.add_interest(now, 0, interest(5000..5005), 2, 0, &mut view, &mut out);
        assert!(!c.is_closed());
        c.check_invariants().unwrap();
        assert_eq!(
            c.visible.len(),
            995,
            "the five objects of the closed zones left"
        );
        c.work.get()
    }

    #[test]
    fn a_change_costs_the_same_whatever_else_is_open() {
        let alone = work_of_a_change(0);
        let crowded = work_of_a_change(190);
        assert_eq!(
            alone, crowded,
            "changing one interest of 5 zones beside 190 others did more work"
        );
        // New zones counted and looked up, old zones uncounted and their objects visited.
        assert!(alone <= 40, "{alone} steps for a change of 5 zones");
    }

    #[test]
    fn the_books_hold_the_zones_open_and_no_more() {
        let now = Instant::now();
        let mut c = core(now);
        let mut view = astron::State::default();
        let mut out = SessionOut::default();
        // 256 interests over the same 4 zones: 4 counts, not 1024 entries.
        for id in 0..256u16 {
            c.add_interest(now, id, interest(0..4), 1, 0, &mut view, &mut out);
        }
        assert_eq!(c.zone_counts.len(), 4);
        assert_eq!(c.interests_seeing(PARENT, 3), 256);
        assert_eq!(c.zones_total, 1024);
        c.check_invariants().unwrap();
        // Every subscription to those zones was asked for once.
        let adds = out
            .subscriptions
            .iter()
            .filter(|s| matches!(s, Subscription::Add(_)))
            .count();
        assert_eq!(adds, 4);
        out.clear();
        for id in 0..255u16 {
            c.remove_interest(id, 1, 0, &mut view, &mut out);
        }
        assert!(out.subscriptions.is_empty(), "zones still seen stay open");
        c.remove_interest(255, 1, 0, &mut view, &mut out);
        assert_eq!(out.subscriptions.len(), 4);
        assert!(c.zone_counts.is_empty());
        assert_eq!(c.zones_total, 0);
        c.check_invariants().unwrap();
    }

    #[test]
    fn the_zone_budget_refuses_the_clients_interests_not_the_clusters() {
        let now = Instant::now();
        let mut c = core(now);
        let mut view = astron::State::default();
        let mut out = SessionOut::default();
        assert_eq!(c.ca.limits.max_zones_total, 1024);
        // The cluster may open more than the budget for the client...
        c.add_interest(now, 1, interest(0..1000), 1, 4242, &mut view, &mut out);
        c.add_interest(now, 2, interest(0..100), 1, 4242, &mut view, &mut out);
        assert!(!c.is_closed());
        // ...and the client may shrink what it holds, but not open more.
        c.add_interest(now, 2, interest(0..10), 1, 0, &mut view, &mut out);
        assert!(!c.is_closed());
        c.remove_interest(1, 1, 0, &mut view, &mut out);
        c.add_interest(now, 1, interest(0..1000), 1, 0, &mut view, &mut out);
        assert!(!c.is_closed(), "1010 zones are within the budget");
        out.clear();
        c.add_interest(now, 3, interest(5000..5015), 1, 0, &mut view, &mut out);
        assert!(c.is_closed());
        assert_eq!(
            out.close,
            Some(super::super::Close::Eject {
                code: CLIENT_DISCONNECT_FORBIDDEN_INTEREST,
                reason:
                    "Interest 3 would make 1025 zones open, over the limit of 1024 for one client."
                        .into()
            })
        );
        assert!(c.interest(3).is_none());
        c.check_invariants().unwrap();
    }
}

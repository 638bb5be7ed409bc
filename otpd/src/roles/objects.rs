//! Live distributed objects, as Astron's StateServer keeps them: each object's fields, location,
//! AI and owner, its known children, and every object-channel message of the 2010-2126 range.
//! One `Objects` table lives on each core and holds the objects whose doid that core owns;
//! the StateServer and the DBSS both keep theirs in one.

use super::doid_index::DoidIndex;
use super::event::{self, Ev};
use super::finish_or_drop;
use super::{Output, Schema};
use crate::md::block_hash::{BlockMap, BlockSet};
use otp_wire::channels::{location_channel, parent_channel};
use otp_wire::msgtypes::*;
use otp_wire::{InternalDatagram, Reader, WireError};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Arc;

pub use otp_wire::{Doid, Zone};

/// An object's stored field values, packed into one buffer as `[u16 id][u16 len][value]`
/// entries in ascending field id, updated in place when the length does not change. Up to
/// `FieldStore::INLINE` bytes live inside the object itself (a small object's fields need no
/// allocation of their own, and reading them costs no extra cache miss); more take one
/// allocation.
#[derive(Default, Debug, Clone)]
pub struct FieldStore(SmallVec<[u8; FieldStore::INLINE]>);

impl FieldStore {
    /// Bytes of entries kept inside the object (the size of the pointer and length a heap
    /// buffer needs anyway): two 4-byte values, or one of up to 12 bytes.
    pub const INLINE: usize = 16;

    pub fn iter(&self) -> impl Iterator<Item = (u16, &[u8])> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            if rest.len() < 4 {
                return None;
            }
            let id = u16::from_le_bytes([rest[0], rest[1]]);
            let len = u16::from_le_bytes([rest[2], rest[3]]) as usize;
            let value = &rest[4..4 + len];
            rest = &rest[4 + len..];
            Some((id, value))
        })
    }

    /// Where the entry for `id` starts, or where it would be inserted; and whether it exists.
    fn find(&self, id: u16) -> (usize, bool) {
        let mut at = 0;
        while at + 4 <= self.0.len() {
            let e = u16::from_le_bytes([self.0[at], self.0[at + 1]]);
            if e >= id {
                return (at, e == id);
            }
            let len = u16::from_le_bytes([self.0[at + 2], self.0[at + 3]]) as usize;
            at += 4 + len;
        }
        (at, false)
    }

    fn entry_len(&self, at: usize) -> usize {
        4 + u16::from_le_bytes([self.0[at + 2], self.0[at + 3]]) as usize
    }

    pub fn get(&self, id: u16) -> Option<&[u8]> {
        let (at, found) = self.find(id);
        found.then(|| &self.0[at + 4..at + self.entry_len(at)])
    }

    pub fn contains(&self, id: u16) -> bool {
        self.find(id).1
    }

    /// Stores a value (callers keep values under 64 KiB: they come from one datagram).
    pub fn set(&mut self, id: u16, value: &[u8]) {
        debug_assert!(value.len() <= u16::MAX as usize);
        let (at, found) = self.find(id);
        let head = [id.to_le_bytes(), (value.len() as u16).to_le_bytes()];
        if found {
            let old = self.entry_len(at);
            if old == 4 + value.len() {
                self.0[at + 4..at + old].copy_from_slice(value);
                return;
            }
            self.0.drain(at..at + old);
        }
        self.0.reserve(4 + value.len());
        self.0
            .insert_from_slice(at, &[head[0][0], head[0][1], head[1][0], head[1][1]]);
        self.0.insert_from_slice(at + 4, value);
    }

    pub fn remove(&mut self, id: u16) -> bool {
        let (at, found) = self.find(id);
        if found {
            let len = self.entry_len(at);
            self.0.drain(at..at + len);
        }
        found
    }
}

/// One live object: one cache line (`ObjectTable` keeps them in one array).
#[derive(Debug)]
#[repr(align(64))]
pub struct Object {
    pub parent: Doid,
    pub zone: Zone,
    pub class: u16,
    pub ai_explicit: bool,
    /// The parent has acknowledged our current location (LOCATION_ACK).
    pub parent_synced: bool,
    next_context: u32,
    pub ai: u64,
    pub owner: u64,
    pub fields: FieldStore,
    /// Children this object knows of, by zone (it is their parent).
    zones: Option<Box<FxHashMap<Zone, BlockSet<Doid>>>>,
}

impl Object {
    fn has_children(&self) -> bool {
        self.zones.as_ref().is_some_and(|z| !z.is_empty())
    }
    fn zone_count(&self, zone: Zone) -> usize {
        self.zones
            .as_ref()
            .and_then(|z| z.get(&zone))
            .map_or(0, |s| s.len())
    }
    fn child_count(&self) -> usize {
        self.zones
            .as_ref()
            .map_or(0, |z| z.values().map(|s| s.len()).sum())
    }
    fn add_child(&mut self, zone: Zone, child: Doid) {
        self.zones
            .get_or_insert_with(Default::default)
            .entry(zone)
            .or_default()
            .insert(child);
    }
    fn remove_child(&mut self, zone: Zone, child: Doid) {
        if let Some(zones) = self.zones.as_mut() {
            if let Some(set) = zones.get_mut(&zone) {
                set.remove(&child);
                if set.is_empty() {
                    zones.remove(&zone);
                }
            }
            if zones.is_empty() {
                self.zones = None;
            }
        }
    }
}

const _: () = assert!(std::mem::size_of::<Object>() == 64);

/// One core's live objects, dense in one array and found by doid through an index of 8-byte
/// entries: a lookup reads one line of the index and one object's cache line, and memory
/// follows the objects alive (a delete moves the last object into the freed slot).
#[derive(Default)]
pub struct ObjectTable {
    index: DoidIndex,
    /// `doids[i]` is the doid of `slots[i]`.
    doids: Vec<Doid>,
    slots: Vec<Object>,
}

impl ObjectTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn contains_key(&self, doid: &Doid) -> bool {
        self.index.get(*doid).is_some()
    }

    pub fn get(&self, doid: &Doid) -> Option<&Object> {
        self.index.get(*doid).map(|i| &self.slots[i as usize])
    }

    pub fn get_mut(&mut self, doid: &Doid) -> Option<&mut Object> {
        self.index.get(*doid).map(|i| &mut self.slots[i as usize])
    }

    /// Adds an object; an object already there with this doid is replaced.
    pub fn insert(&mut self, doid: Doid, obj: Object) {
        if let Some(i) = self.index.get(doid) {
            self.slots[i as usize] = obj;
            return;
        }
        let i = u32::try_from(self.slots.len())
            .ok()
            .filter(|&i| i < u32::MAX)
            .expect("fewer than 2^32 - 1 objects per core");
        self.index.insert(doid, i);
        self.doids.push(doid);
        self.slots.push(obj);
    }

    pub fn remove(&mut self, doid: &Doid) -> Option<Object> {
        let i = self.index.remove(*doid)? as usize;
        self.doids.swap_remove(i);
        let obj = self.slots.swap_remove(i);
        if let Some(&moved) = self.doids.get(i) {
            self.index.insert(moved, i as u32);
        }
        Some(obj)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Doid, &Object)> {
        self.doids.iter().zip(self.slots.iter())
    }
}

impl std::ops::Index<&Doid> for ObjectTable {
    type Output = Object;
    fn index(&self, doid: &Doid) -> &Object {
        self.get(doid).expect("a live object")
    }
}

/// Who an object snapshot is for: which fields it carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Everything kept (AI entry, GET_ALL).
    All,
    /// `broadcast` and `clrecv` fields (location and interest entries).
    Visible,
    /// Those and `ownrecv` fields (owner entry).
    Owner,
}

/// A value that failed its checks: logged, reported to the EventLogger, and dropped.
struct Rejected {
    field: u16,
    reason: String,
}

pub struct Objects {
    pub schema: Arc<Schema>,
    /// Log label: "stateserver" or "dbss".
    pub label: &'static str,
    pub objects: ObjectTable,
    /// For each parent, the objects here that are its children: this table subscribes the
    /// parent's children channel `(1 << 32) | parent` while the set is not empty.
    children_here: BlockMap<Doid, BlockSet<Doid>>,
    targets: Vec<Doid>,
    scratch: Vec<u8>,
    /// Updates refused for a bad value or field (also sent to the EventLogger).
    pub invalid_updates: u64,
}

type Targets = SmallVec<[u64; 6]>;

fn push_target(t: &mut Targets, c: u64) {
    if c != 0 && !t.contains(&c) {
        t.push(c);
    }
}

impl Objects {
    pub fn new(schema: Arc<Schema>, label: &'static str) -> Objects {
        Objects {
            schema,
            label,
            objects: ObjectTable::default(),
            children_here: BlockMap::default(),
            targets: Vec::new(),
            scratch: Vec::new(),
            invalid_updates: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn contains(&self, doid: Doid) -> bool {
        self.objects.contains_key(&doid)
    }

    // ---- creation -----------------------------------------------------------------------

    /// Reads a REQUIRED section (and an OTHER section when `other`) for `class`, validating
    /// every value; every required field must be there.
    pub fn read_snapshot(
        &self,
        class: u16,
        r: &mut Reader<'_>,
        other: bool,
    ) -> Result<FieldStore, String> {
        let schema = &self.schema;
        let info = schema
            .class(class)
            .ok_or_else(|| format!("unknown dclass {class}"))?;
        let mut store = FieldStore::default();
        for &f in &info.required {
            let rest = r.rest_peek();
            let len = schema
                .value_len(class, f, rest)
                .map_err(|e| format!("required field {}: {e}", schema.field_name(class, f)))?;
            store.set(f, &rest[..len]);
            r.skip(len).map_err(|e| e.to_string())?;
        }
        if other {
            let count = r.u16().map_err(|e| format!("OTHER count: {e}"))?;
            for _ in 0..count {
                let f = r.u16().map_err(|e| format!("OTHER field id: {e}"))?;
                if !schema.class_has_field(class, f) {
                    return Err(format!(
                        "OTHER field {f} is not a field of {}",
                        schema.class_name(class)
                    ));
                }
                let rest = r.rest_peek();
                let len = schema
                    .value_len(class, f, rest)
                    .map_err(|e| format!("OTHER field {}: {e}", schema.field_name(class, f)))?;
                let flags = schema.flags(class, f);
                if flags.kept() {
                    store.set(f, &rest[..len]);
                } else {
                    log::warn!(
                        "{}: non-RAM field {} in an OTHER section; ignored",
                        self.label,
                        schema.field_name(class, f)
                    );
                }
                r.skip(len).map_err(|e| e.to_string())?;
            }
        }
        Ok(store)
    }

    /// Brings an object to life: subscribes its channel, announces its location, and asks
    /// its children (if any exist already) where they are.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        doid: Doid,
        parent: Doid,
        zone: Zone,
        class: u16,
        fields: FieldStore,
        sender: u64,
        out: &mut Output,
    ) {
        debug_assert!(!self.objects.contains_key(&doid));
        self.objects.insert(
            doid,
            Object {
                parent: 0,
                zone: 0,
                class,
                ai_explicit: false,
                parent_synced: false,
                next_context: 0,
                ai: 0,
                owner: 0,
                fields,
                zones: None,
            },
        );
        out.subscribe(doid as u64);
        self.location_change(doid, parent, zone, sender, out);
        // Wake the children: those that exist already answer with their location.
        let mut w = out.datagram(
            &[parent_channel(doid)],
            doid as u64,
            STATESERVER_OBJECT_GET_LOCATION,
        );
        w.u32(STATESERVER_CONTEXT_WAKE_CHILDREN);
        w.finish_bounded();
    }

    // ---- dispatch -----------------------------------------------------------------------

    /// Hands a datagram to every object here it is addressed to (by doid, or by a parent's
    /// children channel), each once.
    pub fn dispatch(&mut self, dg: &InternalDatagram<'_>, out: &mut Output) {
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        for ch in dg.recipients.iter() {
            match ch >> 32 {
                0 if self.objects.contains_key(&(ch as u32)) => targets.push(ch as u32),
                1 => {
                    if let Some(set) = self.children_here.get(&(ch as u32)) {
                        targets.extend(set.iter().copied());
                    }
                }
                _ => {}
            }
        }
        if targets.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        for &doid in &targets {
            if !self.objects.contains_key(&doid) {
                continue; // deleted by an earlier target of this datagram
            }
            if let Err(e) = self.handle(doid, dg, out) {
                log::warn!(
                    "{}: {} from {} to object {doid}: {e}; ignored",
                    self.label,
                    internal_name(dg.msgtype),
                    dg.sender.unwrap_or(0)
                );
            }
        }
        self.targets = targets;
    }

    fn handle(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let r = &mut dg.payload_reader();
        match dg.msgtype {
            STATESERVER_DELETE_AI_OBJECTS
            | STATESERVER_OBJECT_DELETE_RAM
            | STATESERVER_OBJECT_DELETE_CHILDREN
            | STATESERVER_OBJECT_DELETE_ZONE
            | STATESERVER_OBJECT_DELETE_ZONES => self.handle_deletes(doid, dg, r, out),
            STATESERVER_OBJECT_SET_FIELD
            | STATESERVER_OBJECT_SET_FIELDS
            | STATESERVER_OBJECT_DELETE_FIELD_RAM
            | STATESERVER_OBJECT_DELETE_FIELDS_RAM => self.handle_field_updates(doid, dg, r, out),
            STATESERVER_OBJECT_SET_LOCATION
            | STATESERVER_OBJECT_CHANGING_LOCATION
            | STATESERVER_OBJECT_LOCATION_ACK
            | STATESERVER_OBJECT_GET_LOCATION
            | STATESERVER_OBJECT_GET_LOCATION_RESP => self.handle_location(doid, dg, r, out),
            STATESERVER_OBJECT_SET_AI
            | STATESERVER_OBJECT_CHANGING_AI
            | STATESERVER_OBJECT_GET_AI
            | STATESERVER_OBJECT_GET_AI_RESP
            | STATESERVER_OBJECT_SET_OWNER
            | STATESERVER_OBJECT_GET_OWNER => self.handle_ai_owner(doid, dg, r, out),
            STATESERVER_OBJECT_GET_ALL
            | STATESERVER_OBJECT_GET_FIELD
            | STATESERVER_OBJECT_GET_FIELDS => self.handle_field_queries(doid, dg, r, out),
            STATESERVER_OBJECT_GET_ZONE_OBJECTS
            | STATESERVER_OBJECT_GET_ZONES_OBJECTS
            | STATESERVER_OBJECT_GET_CHILDREN => self.handle_children_listing(doid, dg, r, out),
            STATESERVER_OBJECT_GET_ZONE_COUNT
            | STATESERVER_OBJECT_GET_ZONES_COUNT
            | STATESERVER_OBJECT_GET_CHILD_COUNT
            | STATESERVER_GET_ACTIVE_ZONES => self.handle_children_counts(doid, dg, r, out),
            other => {
                log::trace!(
                    "{}: object {doid}: message type {other} ignored",
                    self.label
                );
                Ok(())
            }
        }
    }

    /// Deleting objects: by AI, by doid, an object's children, zones of children.
    fn handle_deletes(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        match dg.msgtype {
            STATESERVER_DELETE_AI_OBJECTS => {
                let ai = r.u64()?;
                if self.objects[&doid].ai == ai {
                    self.annihilate(doid, sender, true, out);
                } else {
                    log::debug!(
                        "{}: object {doid}: DELETE_AI_OBJECTS for another AI",
                        self.label
                    );
                }
            }
            STATESERVER_OBJECT_DELETE_RAM if r.u32()? == doid => {
                self.annihilate(doid, sender, true, out);
            }
            STATESERVER_OBJECT_DELETE_CHILDREN => {
                let id = r.u32()?;
                if id == doid {
                    self.delete_children(doid, sender, out);
                } else if id == self.objects[&doid].parent {
                    self.annihilate(doid, sender, false, out);
                }
            }
            STATESERVER_OBJECT_DELETE_ZONE | STATESERVER_OBJECT_DELETE_ZONES => {
                let parent = r.u32()?;
                let zones = read_zones(r, dg.msgtype == STATESERVER_OBJECT_DELETE_ZONES)?;
                let obj = &self.objects[&doid];
                if parent == doid {
                    // Forward to the children; forget those zones' children now (they will
                    // not report back: children deleted this way stay silent to the parent).
                    let known = zones.iter().any(|z| obj.zone_count(*z) > 0);
                    if known {
                        let mut w = out.datagram(&[parent_channel(doid)], sender, dg.msgtype);
                        w.bytes(dg.payload);
                        finish_or_drop(w, "objects: a relay to the children");
                        let obj = self.objects.get_mut(&doid).expect("exists");
                        if let Some(z) = obj.zones.as_mut() {
                            for zone in &zones {
                                z.remove(zone);
                            }
                            if z.is_empty() {
                                obj.zones = None;
                            }
                        }
                    }
                } else if parent == obj.parent && zones.contains(&obj.zone) {
                    self.annihilate(doid, sender, false, out);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Setting and deleting an object's fields.
    fn handle_field_updates(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        match dg.msgtype {
            STATESERVER_OBJECT_SET_FIELD | STATESERVER_OBJECT_SET_FIELDS => {
                if r.u32()? != doid {
                    return Ok(());
                }
                let count = if dg.msgtype == STATESERVER_OBJECT_SET_FIELDS {
                    r.u16()?
                } else {
                    1
                };
                self.set_fields(doid, sender, r, count, out);
            }
            STATESERVER_OBJECT_DELETE_FIELD_RAM | STATESERVER_OBJECT_DELETE_FIELDS_RAM => {
                if r.u32()? != doid {
                    return Ok(());
                }
                let ids = read_field_ids(r, dg.msgtype == STATESERVER_OBJECT_DELETE_FIELDS_RAM)?;
                self.delete_fields(doid, sender, &ids, out);
            }
            _ => {}
        }
        Ok(())
    }

    /// An object's location: moves, the parent's side of them, and queries.
    fn handle_location(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        match dg.msgtype {
            STATESERVER_OBJECT_SET_LOCATION => {
                let parent = r.u32()?;
                let zone = r.u32()?;
                self.location_change(doid, parent, zone, sender, out);
            }
            STATESERVER_OBJECT_CHANGING_LOCATION => {
                let child = r.u32()?;
                let new_parent = r.u32()?;
                let new_zone = r.u32()?;
                let old_parent = r.u32()?;
                let old_zone = r.u32()?;
                let obj = self.objects.get_mut(&doid).expect("exists");
                if new_parent == doid {
                    if old_parent == doid {
                        if new_zone == old_zone {
                            return Ok(());
                        }
                        obj.remove_child(old_zone, child);
                    }
                    obj.add_child(new_zone, child);
                    let mut w = out.datagram(
                        &[child as u64],
                        doid as u64,
                        STATESERVER_OBJECT_LOCATION_ACK,
                    );
                    w.u32(doid).u32(new_zone);
                    w.finish_bounded();
                } else if old_parent == doid {
                    obj.remove_child(old_zone, child);
                } else {
                    log::debug!(
                        "{}: object {doid}: CHANGING_LOCATION of {child} names neither old nor new parent as us",
                        self.label
                    );
                }
            }
            STATESERVER_OBJECT_LOCATION_ACK => {
                let parent = r.u32()?;
                let zone = r.u32()?;
                let obj = self.objects.get_mut(&doid).expect("exists");
                if obj.parent == parent && obj.zone == zone {
                    obj.parent_synced = true;
                }
            }
            STATESERVER_OBJECT_GET_LOCATION => {
                let context = r.u32()?;
                let obj = &self.objects[&doid];
                let mut w =
                    out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_LOCATION_RESP);
                w.u32(context).u32(doid).u32(obj.parent).u32(obj.zone);
                w.finish_bounded();
            }
            STATESERVER_OBJECT_GET_LOCATION_RESP => {
                let context = r.u32()?;
                if context != STATESERVER_CONTEXT_WAKE_CHILDREN {
                    return Ok(());
                }
                let child = r.u32()?;
                let parent = r.u32()?;
                let zone = r.u32()?;
                if parent == doid {
                    self.objects
                        .get_mut(&doid)
                        .expect("exists")
                        .add_child(zone, child);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An object's AI and owner: changes and queries.
    fn handle_ai_owner(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        match dg.msgtype {
            STATESERVER_OBJECT_SET_AI => {
                let ai = r.u64()?;
                self.ai_change(doid, ai, sender, true, out);
            }
            STATESERVER_OBJECT_CHANGING_AI => {
                let parent = r.u32()?;
                let ai = r.u64()?;
                let obj = &self.objects[&doid];
                if parent == obj.parent && !obj.ai_explicit {
                    self.ai_change(doid, ai, sender, false, out);
                }
            }
            STATESERVER_OBJECT_GET_AI => {
                let context = r.u32()?;
                let ai = self.objects[&doid].ai;
                let mut w = out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_AI_RESP);
                w.u32(context).u32(doid).u64(ai);
                w.finish_bounded();
            }
            STATESERVER_OBJECT_GET_AI_RESP => {
                let _context = r.u32()?;
                let parent = r.u32()?;
                let ai = r.u64()?;
                let obj = &self.objects[&doid];
                if parent == obj.parent && !obj.ai_explicit {
                    self.ai_change(doid, ai, sender, false, out);
                }
            }
            STATESERVER_OBJECT_SET_OWNER => {
                let owner = r.u64()?;
                self.owner_change(doid, owner, sender, out);
            }
            STATESERVER_OBJECT_GET_OWNER => {
                let context = r.u32()?;
                let owner = self.objects[&doid].owner;
                let mut w = out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_OWNER_RESP);
                w.u32(context).u32(doid).u64(owner);
                w.finish_bounded();
            }
            _ => {}
        }
        Ok(())
    }

    /// Reading an object's fields.
    fn handle_field_queries(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        match dg.msgtype {
            STATESERVER_OBJECT_GET_ALL => {
                let context = r.u32()?;
                if r.u32()? != doid {
                    return Ok(());
                }
                let mut w = out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_ALL_RESP);
                w.u32(context);
                self.write_snapshot(doid, &mut w, Audience::All, true);
                if w.finish().is_err() {
                    log::warn!("{}: object {doid}: GET_ALL_RESP too large", self.label);
                }
            }
            STATESERVER_OBJECT_GET_FIELD => {
                let context = r.u32()?;
                if r.u32()? != doid {
                    return Ok(());
                }
                let field = r.u16()?;
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                let ok = self.get_one(doid, field, &mut buf, false, false);
                let mut w = out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_FIELD_RESP);
                w.u32(context).u8(ok as u8);
                if ok {
                    w.bytes(&buf);
                }
                finish_or_drop(w, "objects: STATESERVER_OBJECT_GET_FIELD_RESP");
                self.scratch = buf;
            }
            STATESERVER_OBJECT_GET_FIELDS => {
                let context = r.u32()?;
                if r.u32()? != doid {
                    return Ok(());
                }
                let mut ids: SmallVec<[u16; 16]> = SmallVec::new();
                for _ in 0..r.u16()? {
                    ids.push(r.u16()?);
                }
                ids.sort_unstable();
                ids.dedup();
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                let mut ok = true;
                let mut found = 0u16;
                for &f in &ids {
                    let before = buf.len();
                    if !self.get_one(doid, f, &mut buf, true, false) {
                        ok = false;
                        break;
                    }
                    if buf.len() > before {
                        found += 1;
                    }
                }
                let mut w =
                    out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_FIELDS_RESP);
                w.u32(context).u8(ok as u8);
                if ok {
                    w.u16(found).bytes(&buf);
                }
                if w.finish().is_err() {
                    log::warn!("{}: object {doid}: GET_FIELDS_RESP too large", self.label);
                }
                self.scratch = buf;
            }
            _ => {}
        }
        Ok(())
    }

    /// Listing an object's children (or those in some zones): the count, then each child's entry.
    fn handle_children_listing(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        match dg.msgtype {
            STATESERVER_OBJECT_GET_ZONE_OBJECTS
            | STATESERVER_OBJECT_GET_ZONES_OBJECTS
            | STATESERVER_OBJECT_GET_CHILDREN => {
                let context = r.u32()?;
                let queried = r.u32()?;
                let children = dg.msgtype == STATESERVER_OBJECT_GET_CHILDREN;
                let zones = if children {
                    SmallVec::new()
                } else {
                    read_zones(r, dg.msgtype == STATESERVER_OBJECT_GET_ZONES_OBJECTS)?
                };
                let obj = &self.objects[&doid];
                if queried == obj.parent && queried != doid {
                    // Relayed by our parent: answer if we are in one of the zones.
                    if children || zones.contains(&obj.zone) {
                        if obj.parent_synced {
                            self.send_entry(doid, sender, Some(context), out);
                        } else {
                            self.send_entry(doid, sender, None, out);
                        }
                    }
                } else if queried == doid {
                    let count: usize = if children {
                        obj.child_count()
                    } else {
                        zones.iter().map(|z| obj.zone_count(*z)).sum()
                    };
                    let resp = if children {
                        STATESERVER_OBJECT_GET_CHILD_COUNT_RESP
                    } else {
                        STATESERVER_OBJECT_GET_ZONES_COUNT_RESP
                    };
                    let mut w = out.datagram(&[sender], doid as u64, resp);
                    w.u32(context).u32(count as u32);
                    w.finish_bounded();
                    if count > 0 {
                        let relay = if children {
                            STATESERVER_OBJECT_GET_CHILDREN
                        } else {
                            STATESERVER_OBJECT_GET_ZONES_OBJECTS
                        };
                        let mut w = out.datagram(&[parent_channel(doid)], sender, relay);
                        w.u32(context).u32(doid);
                        if !children {
                            w.u16(zones.len() as u16);
                            for z in &zones {
                                w.u32(*z);
                            }
                        }
                        finish_or_drop(w, "objects: a relay to the children");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Counting an object's children, and the zones that have any.
    fn handle_children_counts(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        match dg.msgtype {
            STATESERVER_OBJECT_GET_ZONE_COUNT
            | STATESERVER_OBJECT_GET_ZONES_COUNT
            | STATESERVER_OBJECT_GET_CHILD_COUNT => {
                let context = r.u32()?;
                let queried = r.u32()?;
                if queried != doid {
                    return Ok(());
                }
                let obj = &self.objects[&doid];
                let count = match dg.msgtype {
                    STATESERVER_OBJECT_GET_CHILD_COUNT => obj.child_count(),
                    t => read_zones(r, t == STATESERVER_OBJECT_GET_ZONES_COUNT)?
                        .iter()
                        .map(|z| obj.zone_count(*z))
                        .sum(),
                };
                let mut w = out.datagram(&[sender], doid as u64, dg.msgtype + 1);
                w.u32(context).u32(count as u32);
                w.finish_bounded();
            }
            STATESERVER_GET_ACTIVE_ZONES => {
                let context = r.u32()?;
                let obj = &self.objects[&doid];
                let mut zones: Vec<Zone> = obj
                    .zones
                    .as_ref()
                    .map(|z| z.keys().copied().collect())
                    .unwrap_or_default();
                zones.sort_unstable();
                let mut w = out.datagram(&[sender], doid as u64, STATESERVER_GET_ACTIVE_ZONES_RESP);
                w.u32(context).u16(zones.len() as u16);
                for z in zones {
                    w.u32(z);
                }
                finish_or_drop(w, "objects: STATESERVER_GET_ACTIVE_ZONES_RESP");
            }
            _ => {}
        }
        Ok(())
    }

    // ---- fields -------------------------------------------------------------------------

    fn reject(&mut self, doid: Doid, sender: u64, what: &str, rej: &Rejected, out: &mut Output) {
        self.invalid_updates += 1;
        let obj = &self.objects[&doid];
        let field = self.schema.field_name(obj.class, rej.field);
        log::warn!(
            "{}: {what} of {}({doid}).{field} from {sender} dropped: {}",
            self.label,
            self.schema.class_name(obj.class),
            rej.reason
        );
        out.events.push(event::encode(
            "invalid-field-update",
            &[
                ("role", Ev::Str(self.label)),
                ("doid", Ev::U64(doid as u64)),
                ("dclass", Ev::Str(self.schema.class_name(obj.class))),
                ("field", Ev::Str(field)),
                ("sender", Ev::U64(sender)),
                ("reason", Ev::Str(&rej.reason)),
            ],
        ));
    }

    /// Validates every update of a SET_FIELD(S) first, then applies them all in order (the
    /// last of duplicates wins) and sends each one where its keywords say.
    fn set_fields(
        &mut self,
        doid: Doid,
        sender: u64,
        r: &mut Reader<'_>,
        count: u16,
        out: &mut Output,
    ) {
        let class = self.objects[&doid].class;
        let mut updates: SmallVec<[(u16, usize, usize); 8]> = SmallVec::new();
        let all = r.rest_peek();
        let mut at = 0usize;
        for _ in 0..count {
            let check = || -> Result<(u16, usize, usize), Rejected> {
                if all.len() < at + 2 {
                    return Err(Rejected {
                        field: 0,
                        reason: "truncated before a field id".into(),
                    });
                }
                let f = u16::from_le_bytes([all[at], all[at + 1]]);
                if !self.schema.class_has_field(class, f) {
                    return Err(Rejected {
                        field: f,
                        reason: format!("field {f} is not a field of this class"),
                    });
                }
                let len = self
                    .schema
                    .value_len(class, f, &all[at + 2..])
                    .map_err(|e| Rejected {
                        field: f,
                        reason: e.to_string(),
                    })?;
                Ok((f, at + 2, at + 2 + len))
            };
            match check() {
                Ok(u) => {
                    at = u.2;
                    updates.push(u);
                }
                Err(rej) => {
                    self.reject(doid, sender, "update", &rej, out);
                    return;
                }
            }
        }
        for &(f, start, end) in &updates {
            let value = &all[start..end];
            self.store(doid, f, value);
            self.notify_field(
                doid,
                sender,
                f,
                STATESERVER_OBJECT_SET_FIELD,
                Some(value),
                out,
            );
        }
    }

    /// Keeps a validated value if the field is `required` or `ram` (a molecular field's
    /// parts are kept one by one).
    fn store(&mut self, doid: Doid, field: u16, value: &[u8]) {
        let schema = Arc::clone(&self.schema);
        let obj = self.objects.get_mut(&doid).expect("exists");
        let flags = schema.flags(obj.class, field);
        if flags.molecular {
            let mut at = 0;
            for &c in schema.components(obj.class, field) {
                let Ok(len) = schema.value_len(obj.class, c, &value[at..]) else {
                    return; // validated as a whole already
                };
                if schema.flags(obj.class, c).kept() {
                    obj.fields.set(c, &value[at..at + len]);
                }
                at += len;
            }
        } else if flags.kept() {
            obj.fields.set(field, value);
        }
    }

    /// Sends a field's change to the location (broadcast), the AI (airecv) and the owner
    /// (ownrecv), never back to its sender; `value` None for a delete.
    pub fn notify_field(
        &mut self,
        doid: Doid,
        sender: u64,
        field: u16,
        msgtype: u16,
        value: Option<&[u8]>,
        out: &mut Output,
    ) {
        let obj = &self.objects[&doid];
        let flags = self.schema.flags(obj.class, field);
        let mut t = Targets::new();
        if flags.broadcast && obj.parent != 0 {
            push_target(&mut t, location_channel(obj.parent, obj.zone));
        }
        if flags.airecv && obj.ai != sender {
            push_target(&mut t, obj.ai);
        }
        if flags.ownrecv && obj.owner != sender {
            push_target(&mut t, obj.owner);
        }
        // `p2p` (Toontown 2003's DC files): to the object's player if it has one, else to its AI.
        if flags.p2p {
            let to = if obj.owner != 0 { obj.owner } else { obj.ai };
            if to != 0 && to != sender {
                push_target(&mut t, to);
            }
        }
        if t.is_empty() {
            return;
        }
        let mut w = out.datagram(&t, sender, msgtype);
        w.u32(doid).u16(field);
        if let Some(v) = value {
            w.bytes(v);
        }
        finish_or_drop(w, "objects: a field update");
    }

    /// DELETE_FIELD(S)_RAM: `ram` fields are forgotten, `required` fields go back to their DC
    /// default; a `required` field without one cannot be deleted (the whole message is then
    /// refused). Each change is sent on as the DELETE_FIELD_RAM it was.
    fn delete_fields(&mut self, doid: Doid, sender: u64, ids: &[u16], out: &mut Output) {
        let class = self.objects[&doid].class;
        for &f in ids {
            let flags = self.schema.flags(class, f);
            let reason = if !self.schema.class_has_field(class, f) {
                Some("not a field of this class")
            } else if flags.required && !flags.has_default {
                Some("a required field without a default cannot be deleted")
            } else {
                None
            };
            if let Some(reason) = reason {
                let rej = Rejected {
                    field: f,
                    reason: reason.into(),
                };
                self.reject(doid, sender, "delete", &rej, out);
                return;
            }
        }
        let schema = Arc::clone(&self.schema);
        for &f in ids {
            let parts: SmallVec<[u16; 8]> = if schema.flags(class, f).molecular {
                schema.components(class, f).iter().copied().collect()
            } else {
                SmallVec::from_slice(&[f])
            };
            let mut changed = false;
            let obj = self.objects.get_mut(&doid).expect("exists");
            for p in parts {
                if schema.flags(class, p).required {
                    obj.fields.set(p, schema.default_value(class, p));
                    changed = true;
                } else {
                    changed |= obj.fields.remove(p);
                }
            }
            if changed {
                self.notify_field(
                    doid,
                    sender,
                    f,
                    STATESERVER_OBJECT_DELETE_FIELD_RAM,
                    None,
                    out,
                );
            }
        }
    }

    /// Appends `[field_id] value` for one field (a molecular field: its id, then each part's
    /// value). False when the field is not the class's, or unset and `succeed_if_unset` is off.
    fn get_one(
        &self,
        doid: Doid,
        field: u16,
        buf: &mut Vec<u8>,
        succeed_if_unset: bool,
        is_part: bool,
    ) -> bool {
        let obj = &self.objects[&doid];
        if !is_part && !self.schema.class_has_field(obj.class, field) {
            return false;
        }
        if self.schema.flags(obj.class, field).molecular {
            let mark = buf.len();
            buf.extend_from_slice(&field.to_le_bytes());
            for &c in self.schema.components(obj.class, field) {
                let before = buf.len();
                if !self.get_one(doid, c, buf, succeed_if_unset, true) {
                    buf.truncate(mark);
                    return false;
                }
                if buf.len() == before {
                    // An unset part: the molecular value is incomplete; leave it out.
                    buf.truncate(mark);
                    return succeed_if_unset;
                }
            }
            return true;
        }
        match obj.fields.get(field) {
            Some(v) => {
                if !is_part {
                    buf.extend_from_slice(&field.to_le_bytes());
                }
                buf.extend_from_slice(v);
                true
            }
            None => succeed_if_unset,
        }
    }

    /// Writes `doid parent zone dclass REQUIRED [OTHER]` for an audience. Returns whether an
    /// OTHER section was written (always when `force_other`, else when the object keeps any
    /// non-required field, as Astron decides between the _OTHER and plain forms).
    fn write_snapshot(
        &self,
        doid: Doid,
        w: &mut otp_wire::Writer<'_>,
        who: Audience,
        force_other: bool,
    ) -> bool {
        let obj = &self.objects[&doid];
        let schema = &self.schema;
        let Some(info) = schema.class(obj.class) else {
            return false;
        };
        let shows = |f: u16| {
            let fl = schema.flags(obj.class, f);
            match who {
                Audience::All => true,
                Audience::Visible => fl.visible(),
                Audience::Owner => fl.visible() || fl.ownrecv,
            }
        };
        w.u32(doid).u32(obj.parent).u32(obj.zone).u16(obj.class);
        for &f in &info.required {
            if shows(f) {
                match obj.fields.get(f) {
                    Some(v) => w.bytes(v),
                    None => w.bytes(schema.default_value(obj.class, f)),
                };
            }
        }
        let is_other = |f: u16| !schema.flags(obj.class, f).required;
        let has_other = obj.fields.iter().any(|(f, _)| is_other(f));
        if !(has_other || force_other) {
            return false;
        }
        let count = obj
            .fields
            .iter()
            .filter(|(f, _)| is_other(*f) && shows(*f))
            .count();
        w.u16(count as u16);
        for (f, v) in obj.fields.iter() {
            if is_other(f) && shows(f) {
                w.u16(f).bytes(v);
            }
        }
        true
    }

    /// ENTER_LOCATION (context None) or ENTER_INTEREST (with the query's context) to `to`.
    fn send_entry(&self, doid: Doid, to: u64, context: Option<u32>, out: &mut Output) {
        let plain = match context {
            Some(_) => STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED,
            None => STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED,
        };
        self.send_snapshot(doid, to, plain, context, Audience::Visible, out);
    }

    /// Sends a snapshot as `plain` or `plain + 1` (the _OTHER form).
    fn send_snapshot(
        &self,
        doid: Doid,
        to: u64,
        plain: u16,
        context: Option<u32>,
        who: Audience,
        out: &mut Output,
    ) {
        let mut w = out.datagram(&[to], doid as u64, plain);
        if let Some(c) = context {
            w.u32(c);
        }
        if self.write_snapshot(doid, &mut w, who, false) {
            w.set_msgtype(plain + 1);
        }
        if w.finish().is_err() {
            log::warn!("{}: object {doid}: snapshot too large to send", self.label);
        }
    }

    // ---- location, AI, owner ------------------------------------------------------------

    fn location_change(
        &mut self,
        doid: Doid,
        new_parent: Doid,
        new_zone: Zone,
        sender: u64,
        out: &mut Output,
    ) {
        if new_parent == doid {
            log::warn!(
                "{}: object {doid} cannot be its own parent; ignored",
                self.label
            );
            return;
        }
        let obj = self.objects.get_mut(&doid).expect("exists");
        let (old_parent, old_zone) = (obj.parent, obj.zone);
        let mut t = Targets::new();
        push_target(&mut t, obj.ai);
        push_target(&mut t, obj.owner);
        if new_parent != old_parent {
            obj.parent = new_parent;
            obj.zone = new_zone;
            let ask_ai = new_parent != 0 && !obj.ai_explicit;
            if new_parent == 0 && !obj.ai_explicit {
                obj.ai = 0;
            }
            if old_parent != 0 {
                self.leave_parent(doid, old_parent, out);
                push_target(&mut t, old_parent as u64);
                push_target(&mut t, location_channel(old_parent, old_zone));
            }
            if new_parent != 0 {
                self.join_parent(doid, new_parent, out);
                if ask_ai {
                    let obj = self.objects.get_mut(&doid).expect("exists");
                    let ctx = obj.next_context;
                    obj.next_context = obj.next_context.wrapping_add(1);
                    let mut w =
                        out.datagram(&[new_parent as u64], doid as u64, STATESERVER_OBJECT_GET_AI);
                    w.u32(ctx);
                    w.finish_bounded();
                }
                push_target(&mut t, new_parent as u64);
            }
        } else if new_zone != old_zone {
            obj.zone = new_zone;
            if old_parent != 0 {
                push_target(&mut t, old_parent as u64);
                push_target(&mut t, location_channel(old_parent, old_zone));
            }
        } else {
            return;
        }
        if !t.is_empty() {
            let mut w = out.datagram(&t, sender, STATESERVER_OBJECT_CHANGING_LOCATION);
            w.u32(doid)
                .u32(new_parent)
                .u32(new_zone)
                .u32(old_parent)
                .u32(old_zone);
            w.finish_bounded();
        }
        self.objects.get_mut(&doid).expect("exists").parent_synced = false;
        if new_parent != 0 {
            self.send_entry(doid, location_channel(new_parent, new_zone), None, out);
        }
    }

    fn join_parent(&mut self, doid: Doid, parent: Doid, out: &mut Output) {
        let set = self.children_here.entry(parent).or_default();
        if set.is_empty() {
            out.subscribe(parent_channel(parent));
        }
        set.insert(doid);
    }

    fn leave_parent(&mut self, doid: Doid, parent: Doid, out: &mut Output) {
        if let Some(set) = self.children_here.get_mut(&parent) {
            set.remove(&doid);
            if set.is_empty() {
                self.children_here.remove(&parent);
                out.unsubscribe(parent_channel(parent));
            }
        }
    }

    fn ai_change(
        &mut self,
        doid: Doid,
        new_ai: u64,
        sender: u64,
        explicit: bool,
        out: &mut Output,
    ) {
        let obj = self.objects.get_mut(&doid).expect("exists");
        let old_ai = obj.ai;
        if new_ai == old_ai {
            return;
        }
        let mut t = Targets::new();
        push_target(&mut t, old_ai);
        if obj.has_children() {
            push_target(&mut t, parent_channel(doid));
        }
        obj.ai = new_ai;
        obj.ai_explicit = explicit;
        if !t.is_empty() {
            let mut w = out.datagram(&t, sender, STATESERVER_OBJECT_CHANGING_AI);
            w.u32(doid).u64(new_ai).u64(old_ai);
            w.finish_bounded();
        }
        if new_ai != 0 {
            self.send_snapshot(
                doid,
                new_ai,
                STATESERVER_OBJECT_ENTER_AI_WITH_REQUIRED,
                None,
                Audience::All,
                out,
            );
        }
    }

    fn owner_change(&mut self, doid: Doid, new_owner: u64, sender: u64, out: &mut Output) {
        let obj = self.objects.get_mut(&doid).expect("exists");
        let old = obj.owner;
        if new_owner == old {
            return;
        }
        obj.owner = new_owner;
        if old != 0 {
            let mut w = out.datagram(&[old], sender, STATESERVER_OBJECT_CHANGING_OWNER);
            w.u32(doid).u64(new_owner).u64(old);
            w.finish_bounded();
        }
        if new_owner != 0 {
            self.send_snapshot(
                doid,
                new_owner,
                STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED,
                None,
                Audience::Owner,
                out,
            );
        }
    }

    // ---- deletion -----------------------------------------------------------------------

    /// Who hears of an object's deletion: its location, owner and AI.
    pub fn watchers(&self, doid: Doid) -> SmallVec<[u64; 6]> {
        let mut t = Targets::new();
        if let Some(obj) = self.objects.get(&doid) {
            if obj.parent != 0 {
                push_target(&mut t, location_channel(obj.parent, obj.zone));
            }
            push_target(&mut t, obj.owner);
            push_target(&mut t, obj.ai);
        }
        t
    }

    /// Deletes an object: tells its parent (unless the parent is deleting it), its location,
    /// AI and owner, and deletes its children.
    pub fn annihilate(&mut self, doid: Doid, sender: u64, notify_parent: bool, out: &mut Output) {
        let Some(obj) = self.objects.get(&doid) else {
            return;
        };
        let (parent, zone) = (obj.parent, obj.zone);
        let mut t = Targets::new();
        if parent != 0 {
            push_target(&mut t, location_channel(parent, zone));
            if notify_parent {
                let mut w = out.datagram(
                    &[parent as u64],
                    sender,
                    STATESERVER_OBJECT_CHANGING_LOCATION,
                );
                w.u32(doid).u32(0).u32(0).u32(parent).u32(zone);
                w.finish_bounded();
            }
        }
        push_target(&mut t, obj.owner);
        push_target(&mut t, obj.ai);
        if !t.is_empty() {
            let mut w = out.datagram(&t, sender, STATESERVER_OBJECT_DELETE_RAM);
            w.u32(doid);
            w.finish_bounded();
        }
        self.delete_children(doid, sender, out);
        if parent != 0 {
            self.leave_parent(doid, parent, out);
        }
        self.objects.remove(&doid);
        out.unsubscribe(doid as u64);
        log::debug!("{}: object {doid} deleted", self.label);
    }

    fn delete_children(&mut self, doid: Doid, sender: u64, out: &mut Output) {
        let obj = self.objects.get_mut(&doid).expect("exists");
        if obj.has_children() {
            obj.zones = None;
            let mut w = out.datagram(
                &[parent_channel(doid)],
                sender,
                STATESERVER_OBJECT_DELETE_CHILDREN,
            );
            w.u32(doid);
            w.finish_bounded();
        }
    }

    /// The doids here managed by `ai` with an explicitly set AI (DELETE_AI_OBJECTS).
    pub fn explicitly_managed_by(&self, ai: u64) -> Vec<Doid> {
        let mut v: Vec<Doid> = self
            .objects
            .iter()
            .filter(|(_, o)| o.ai == ai && o.ai_explicit)
            .map(|(d, _)| *d)
            .collect();
        v.sort_unstable();
        v
    }
}

/// A field id, or (`many`) a count and that many field ids.
pub fn read_field_ids(r: &mut Reader<'_>, many: bool) -> Result<SmallVec<[u16; 8]>, WireError> {
    let mut ids = SmallVec::new();
    if many {
        for _ in 0..r.u16()? {
            ids.push(r.u16()?);
        }
    } else {
        ids.push(r.u16()?);
    }
    Ok(ids)
}

fn read_zones(r: &mut Reader<'_>, many: bool) -> Result<SmallVec<[Zone; 8]>, WireError> {
    let mut zones = SmallVec::new();
    if many {
        for _ in 0..r.u16()? {
            zones.push(r.u32()?);
        }
    } else {
        zones.push(r.u32()?);
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(class: u16) -> Object {
        Object {
            parent: 0,
            zone: 0,
            class,
            ai_explicit: false,
            parent_synced: false,
            next_context: 0,
            ai: 0,
            owner: 0,
            fields: FieldStore::default(),
            zones: None,
        }
    }

    #[test]
    fn the_table_finds_every_live_object_after_deletes_move_others() {
        let mut t = ObjectTable::default();
        for doid in 1..=1000u32 {
            t.insert(doid, object(doid as u16));
        }
        // Delete every third object, the last one and the first one: each delete moves the
        // last object into the freed slot.
        for doid in (3..=1000u32).step_by(3).chain([1000, 1]) {
            assert!(t.remove(&doid).is_some(), "{doid}");
            assert!(t.remove(&doid).is_none());
        }
        let live: Vec<u32> = (2..1000u32).filter(|d| d % 3 != 0).collect();
        assert_eq!(t.len(), live.len());
        for &doid in &live {
            assert_eq!(t[&doid].class, doid as u16);
        }
        assert!(!t.contains_key(&3) && !t.contains_key(&1) && t.get(&1000).is_none());
        let mut seen: Vec<u32> = t
            .iter()
            .map(|(d, o)| {
                assert_eq!(o.class, *d as u16);
                *d
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, live);
        // A doid inserted again replaces the object it had.
        t.insert(2, object(7));
        assert_eq!((t.len(), t[&2].class), (live.len(), 7));
        t.get_mut(&2).unwrap().zone = 9;
        assert_eq!(t[&2].zone, 9);
    }

    #[test]
    fn the_field_store_keeps_small_values_inline_and_grows_past_them() {
        let mut f = FieldStore::default();
        f.set(5, &[1, 2, 3, 4]);
        f.set(2, &[9, 9, 9, 9]);
        assert!(!f.0.spilled(), "two uint32 fields fit in the object");
        assert_eq!(f.iter().map(|(id, _)| id).collect::<Vec<_>>(), [2, 5]);
        f.set(5, &[7; 4]); // same length: in place
        assert_eq!(f.get(5), Some(&[7u8; 4][..]));
        f.set(3, &[1; 40]); // a longer value: on the heap now
        assert!(f.0.spilled());
        f.set(2, &[6]); // shorter
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            [(2, &[6u8][..]), (3, &[1u8; 40][..]), (5, &[7u8; 4][..])]
        );
        assert!(f.remove(3) && !f.remove(3) && !f.contains(3));
        assert_eq!(f.get(2), Some(&[6u8][..]));
        assert_eq!(f.get(5), Some(&[7u8; 4][..]));
        assert_eq!(f.get(4), None);
    }
}

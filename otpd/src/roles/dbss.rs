//! The DBSS role: stored objects, live on demand. One instance per core subscribes the
//! configured doid ranges and acts for the doids its core owns: it activates objects from the
//! database (then they behave exactly as StateServer objects), proxies reads of inactive
//! objects to the database, and writes `db` fields back on every update.

use super::event::{self, Ev};
use super::finish_or_drop;
use super::objects::{read_field_ids, Doid, FieldStore, Objects, Zone};
use super::{Output, Placement, Role, Schema, ANY_CLASS};
use otp_wire::msgtypes::*;
use otp_wire::{InternalDatagram, Reader, WireError};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::config::DbssLimits;

/// An object being read from the database for activation; what arrives for it meanwhile
/// waits and is handled once it is live.
struct Loading {
    parent: Doid,
    zone: Zone,
    /// Given by ACTIVATE_WITH_DEFAULTS_OTHER; the stored object must be of this class.
    class: Option<u16>,
    /// Values given by ACTIVATE_WITH_DEFAULTS_OTHER, over the stored ones.
    updates: FieldStore,
    /// Contexts whose GET_ALL_RESP completes this load.
    contexts: SmallVec<[u32; 2]>,
    queue: Vec<Vec<u8>>,
    since: Instant,
}

/// A read of an inactive object waiting for the database.
enum Query {
    Field {
        to: u64,
        context: u32,
        doid: Doid,
    },
    Fields {
        to: u64,
        context: u32,
        doid: Doid,
        /// `(field, default)` pairs of the non-`db` fields asked for.
        defaults: Vec<(u16, Vec<u8>)>,
    },
    All {
        to: u64,
        context: u32,
        doid: Doid,
    },
}

pub struct Dbss {
    database: u64,
    ranges: Vec<(u32, u32)>,
    placement: Placement,
    pub objects: Objects,
    loading: FxHashMap<Doid, Loading>,
    queries: FxHashMap<u32, (Query, Instant)>,
    /// GET_ALL queries in flight per doid: an activation arriving meanwhile uses their answer.
    inactive_loads: FxHashMap<Doid, SmallVec<[u32; 2]>>,
    next_context: u32,
    limits: DbssLimits,
}

impl Dbss {
    pub fn new(
        database: u64,
        ranges: Vec<(u32, u32)>,
        limits: DbssLimits,
        schema: Arc<Schema>,
        placement: Placement,
    ) -> Dbss {
        Dbss {
            database,
            ranges,
            placement,
            objects: Objects::new(schema, "dbss"),
            loading: FxHashMap::default(),
            queries: FxHashMap::default(),
            inactive_loads: FxHashMap::default(),
            next_context: 0,
            limits,
        }
    }

    fn context(&mut self) -> u32 {
        let c = self.next_context;
        self.next_context = self.next_context.wrapping_add(1);
        c
    }

    /// The doid a datagram is for, if it is one of ours: in our ranges and homed here.
    fn our_doid(&self, dg: &InternalDatagram<'_>) -> Option<Doid> {
        dg.recipients.iter().find_map(|c| {
            let d = c as u32;
            (c >> 32 == 0
                && self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&d))
                && self.placement.owns_doid(d))
            .then_some(d)
        })
    }

    fn handle_dg(
        &mut self,
        now: Instant,
        frame: &[u8],
        dg: &InternalDatagram<'_>,
        out: &mut Output,
    ) {
        let doid = self.our_doid(dg);
        if let Some(d) = doid {
            if let Some(l) = self.loading.get_mut(&d) {
                match dg.msgtype {
                    DBSERVER_OBJECT_GET_ALL_RESP => {}
                    DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS
                    | DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS_OTHER => {
                        log::warn!(
                            "dbss: activate for object {d}, which is loading already; ignored"
                        );
                        return;
                    }
                    _ => {
                        let max = self.limits.max_queued_while_loading;
                        if l.queue.len() >= max {
                            log::warn!(
                                "dbss: object {d} is loading and {max} datagrams wait for it already (max_queued_while_loading); dropped"
                            );
                        } else {
                            l.queue.push(frame.to_vec());
                        }
                        return;
                    }
                }
            }
            if let Err(e) = self.handle_for(now, d, dg, out) {
                log::warn!(
                    "dbss: {} from {} for object {d}: {e}; ignored",
                    internal_name(dg.msgtype),
                    dg.sender.unwrap_or(0)
                );
            }
        }
        self.objects.dispatch(dg, out);
    }

    fn handle_for(
        &mut self,
        now: Instant,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let r = &mut dg.payload_reader();
        match dg.msgtype {
            DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS
            | DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS_OTHER
            | DBSS_OBJECT_GET_ACTIVATED => self.handle_activation(now, doid, dg, r, out),
            DBSS_OBJECT_DELETE_DISK
            | STATESERVER_OBJECT_SET_FIELD
            | STATESERVER_OBJECT_SET_FIELDS
            | DBSS_OBJECT_DELETE_FIELD_DISK
            | DBSS_OBJECT_DELETE_FIELDS_DISK => self.handle_disk_writes(doid, dg, r, out),
            STATESERVER_OBJECT_GET_FIELD | STATESERVER_OBJECT_GET_ALL => {
                self.handle_inactive_get_one(now, doid, dg, r, out)
            }
            STATESERVER_OBJECT_GET_FIELDS => self.handle_inactive_get_fields(now, doid, dg, r, out),
            DBSERVER_OBJECT_GET_FIELD_RESP
            | DBSERVER_OBJECT_GET_FIELDS_RESP
            | DBSERVER_OBJECT_GET_ALL_RESP => self.handle_database_answers(now, doid, dg, r, out),
            _ => Ok(()),
        }
    }

    /// Activating an object from the database, and asking whether one is active.
    fn handle_activation(
        &mut self,
        now: Instant,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        let active = self.objects.contains(doid);
        match dg.msgtype {
            DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS | DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS_OTHER => {
                if r.u32()? != doid {
                    return Ok(());
                }
                let parent = r.u32()?;
                let zone = r.u32()?;
                if active {
                    log::warn!("dbss: activate for active object {doid}; ignored");
                    return Ok(());
                }
                let (class, updates) = if dg.msgtype == DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS_OTHER {
                    let class = r.u16()?;
                    let Some(_) = self.objects.schema.class(class) else {
                        log::warn!("dbss: activate of {doid} with unknown dclass {class}; ignored");
                        return Ok(());
                    };
                    match self.read_updates(class, r) {
                        Ok(u) => (Some(class), u),
                        Err(reason) => {
                            self.refuse(doid, sender, "invalid-activate", &reason, out);
                            return Ok(());
                        }
                    }
                } else {
                    (None, FieldStore::default())
                };
                let mut contexts: SmallVec<[u32; 2]> =
                    self.inactive_loads.get(&doid).cloned().unwrap_or_default();
                if contexts.is_empty() {
                    let ctx = self.context();
                    contexts.push(ctx);
                    let mut w =
                        out.datagram(&[self.database], doid as u64, DBSERVER_OBJECT_GET_ALL);
                    w.u32(ctx).u32(doid);
                    w.finish_bounded();
                }
                self.loading.insert(
                    doid,
                    Loading {
                        parent,
                        zone,
                        class,
                        updates,
                        contexts,
                        queue: Vec::new(),
                        since: now,
                    },
                );
            }
            DBSS_OBJECT_GET_ACTIVATED => {
                let context = r.u32()?;
                if r.u32()? != doid {
                    return Ok(());
                }
                let mut w = out.datagram(&[sender], doid as u64, DBSS_OBJECT_GET_ACTIVATED_RESP);
                w.u32(context).u32(doid).u8(active as u8);
                w.finish_bounded();
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes to the stored object: deleting it, setting or deleting its fields.
    fn handle_disk_writes(
        &mut self,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        let active = self.objects.contains(doid);
        match dg.msgtype {
            DBSS_OBJECT_DELETE_DISK => {
                if r.u32()? != doid {
                    return Ok(());
                }
                let t = self.objects.watchers(doid);
                if !t.is_empty() {
                    let mut w = out.datagram(&t, sender, DBSS_OBJECT_DELETE_DISK);
                    w.u32(doid);
                    w.finish_bounded();
                }
                let mut w = out.datagram(&[self.database], doid as u64, DBSERVER_OBJECT_DELETE);
                w.u32(doid);
                w.finish_bounded();
            }
            STATESERVER_OBJECT_SET_FIELD | STATESERVER_OBJECT_SET_FIELDS => {
                if r.u32()? != doid {
                    return Ok(());
                }
                let count = if dg.msgtype == STATESERVER_OBJECT_SET_FIELDS {
                    r.u16()?
                } else {
                    1
                };
                self.write_back(doid, sender, r, count, out);
            }
            DBSS_OBJECT_DELETE_FIELD_DISK | DBSS_OBJECT_DELETE_FIELDS_DISK => {
                if r.u32()? != doid {
                    return Ok(());
                }
                let ids = read_field_ids(r, dg.msgtype == DBSS_OBJECT_DELETE_FIELDS_DISK)?;
                let schema = Arc::clone(&self.objects.schema);
                let class = self
                    .objects
                    .objects
                    .get(&doid)
                    .map_or(ANY_CLASS, |o| o.class);
                if let Some(&bad) = ids.iter().find(|&&f| !schema.flags(class, f).db) {
                    let reason = format!("{} is not a db field", schema.field_name(class, bad));
                    self.refuse(doid, sender, "invalid-delete-disk", &reason, out);
                    return Ok(());
                }
                let msgtype = if ids.len() == 1 {
                    DBSERVER_OBJECT_DELETE_FIELD
                } else {
                    DBSERVER_OBJECT_DELETE_FIELDS
                };
                let mut w = out.datagram(&[self.database], doid as u64, msgtype);
                w.u32(doid);
                if ids.len() > 1 {
                    w.u16(ids.len() as u16);
                }
                for &f in &ids {
                    w.u16(f);
                }
                finish_or_drop(w, "dbss: a request to the database");
                if active {
                    // Tell those who see each field; the live copy keeps its value in RAM.
                    for &f in &ids {
                        self.objects.notify_field(
                            doid,
                            sender,
                            f,
                            DBSS_OBJECT_DELETE_FIELD_DISK,
                            None,
                            out,
                        );
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reading one field, or all, of an object that is not active: from the database.
    fn handle_inactive_get_one(
        &mut self,
        now: Instant,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        let active = self.objects.contains(doid);
        match dg.msgtype {
            STATESERVER_OBJECT_GET_FIELD if !active => {
                let context = r.u32()?;
                if r.u32()? != doid {
                    return Ok(());
                }
                let f = r.u16()?;
                let flags = self.objects.schema.flags(ANY_CLASS, f);
                if !(flags.required || flags.ram) || !self.objects.schema.field_known(ANY_CLASS, f)
                {
                    self.get_field_failed(sender, context, doid, out);
                } else if flags.db {
                    if !self.room_for_query() {
                        self.get_field_failed(sender, context, doid, out);
                        return Ok(());
                    }
                    let ctx = self.context();
                    self.queries.insert(
                        ctx,
                        (
                            Query::Field {
                                to: sender,
                                context,
                                doid,
                            },
                            now,
                        ),
                    );
                    let mut w =
                        out.datagram(&[self.database], doid as u64, DBSERVER_OBJECT_GET_FIELD);
                    w.u32(ctx).u32(doid).u16(f);
                    w.finish_bounded();
                } else if flags.has_default {
                    let v = self.objects.schema.default_value(ANY_CLASS, f);
                    let mut w =
                        out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_FIELD_RESP);
                    w.u32(context).u8(1).u16(f).bytes(v);
                    finish_or_drop(w, "dbss: STATESERVER_OBJECT_GET_FIELD_RESP");
                } else {
                    self.get_field_failed(sender, context, doid, out);
                }
            }
            STATESERVER_OBJECT_GET_ALL if !active => {
                let context = r.u32()?;
                if r.u32()? != doid || !self.room_for_query() {
                    return Ok(());
                }
                let ctx = self.context();
                self.queries.insert(
                    ctx,
                    (
                        Query::All {
                            to: sender,
                            context,
                            doid,
                        },
                        now,
                    ),
                );
                self.inactive_loads.entry(doid).or_default().push(ctx);
                let mut w = out.datagram(&[self.database], doid as u64, DBSERVER_OBJECT_GET_ALL);
                w.u32(ctx).u32(doid);
                w.finish_bounded();
            }
            _ => {}
        }
        Ok(())
    }

    /// Reading some fields of an object that is not active: from the database.
    fn handle_inactive_get_fields(
        &mut self,
        now: Instant,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        let active = self.objects.contains(doid);
        match dg.msgtype {
            STATESERVER_OBJECT_GET_FIELDS if !active => {
                let context = r.u32()?;
                if r.u32()? != doid {
                    return Ok(());
                }
                let schema = Arc::clone(&self.objects.schema);
                let mut db_fields: SmallVec<[u16; 16]> = SmallVec::new();
                let mut defaults = Vec::new();
                for _ in 0..r.u16()? {
                    let f = r.u16()?;
                    let flags = schema.flags(ANY_CLASS, f);
                    if !schema.field_known(ANY_CLASS, f) {
                        let mut w = out.datagram(
                            &[sender],
                            doid as u64,
                            STATESERVER_OBJECT_GET_FIELDS_RESP,
                        );
                        w.u32(context).u8(0);
                        w.finish_bounded();
                        return Ok(());
                    }
                    if flags.required || flags.ram {
                        if flags.db {
                            if !db_fields.contains(&f) {
                                db_fields.push(f);
                            }
                        } else if !defaults.iter().any(|(x, _)| *x == f) {
                            defaults.push((f, schema.default_value(ANY_CLASS, f).to_vec()));
                        }
                    }
                }
                if db_fields.is_empty() || !self.room_for_query() {
                    let ok = db_fields.is_empty();
                    let mut w =
                        out.datagram(&[sender], doid as u64, STATESERVER_OBJECT_GET_FIELDS_RESP);
                    w.u32(context).u8(ok as u8);
                    if ok {
                        w.u16(defaults.len() as u16);
                        for (f, v) in &defaults {
                            w.u16(*f).bytes(v);
                        }
                    }
                    finish_or_drop(w, "dbss: STATESERVER_OBJECT_GET_FIELDS_RESP");
                    return Ok(());
                }
                let ctx = self.context();
                let mut w = out.datagram(&[self.database], doid as u64, DBSERVER_OBJECT_GET_FIELDS);
                w.u32(ctx).u32(doid).u16(db_fields.len() as u16);
                for f in &db_fields {
                    w.u16(*f);
                }
                finish_or_drop(w, "dbss: DBSERVER_OBJECT_GET_FIELDS");
                self.queries.insert(
                    ctx,
                    (
                        Query::Fields {
                            to: sender,
                            context,
                            doid,
                            defaults,
                        },
                        now,
                    ),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The database's answers to loads and reads this DBSS asked for.
    fn handle_database_answers(
        &mut self,
        now: Instant,
        doid: Doid,
        dg: &InternalDatagram<'_>,
        r: &mut Reader<'_>,
        out: &mut Output,
    ) -> Result<(), WireError> {
        match dg.msgtype {
            DBSERVER_OBJECT_GET_FIELD_RESP | DBSERVER_OBJECT_GET_FIELDS_RESP => {
                let ctx = r.u32()?;
                let Some((q, _)) = self.queries.remove(&ctx) else {
                    return Ok(());
                };
                let ok = r.u8()? != 0;
                match q {
                    Query::Field { to, context, doid } => {
                        let mut w =
                            out.datagram(&[to], doid as u64, STATESERVER_OBJECT_GET_FIELD_RESP);
                        w.u32(context).u8(ok as u8);
                        if ok {
                            w.bytes(r.rest());
                        }
                        finish_or_drop(w, "dbss: STATESERVER_OBJECT_GET_FIELD_RESP");
                    }
                    Query::Fields {
                        to,
                        context,
                        doid,
                        defaults,
                    } => {
                        let mut w =
                            out.datagram(&[to], doid as u64, STATESERVER_OBJECT_GET_FIELDS_RESP);
                        w.u32(context).u8(ok as u8);
                        if ok {
                            let n = r.u16()?;
                            w.u16(n + defaults.len() as u16);
                            for (f, v) in &defaults {
                                w.u16(*f).bytes(v);
                            }
                            w.bytes(r.rest());
                        }
                        finish_or_drop(w, "dbss: STATESERVER_OBJECT_GET_FIELDS_RESP");
                    }
                    Query::All { .. } => {
                        log::warn!(
                            "dbss: database answered a GET_ALL with a field response; ignored"
                        );
                    }
                }
            }
            DBSERVER_OBJECT_GET_ALL_RESP => {
                let ctx = r.u32()?;
                let ok = r.u8()? != 0;
                let body = r.rest_peek();
                if let Some((Query::All { to, context, doid }, _)) = self.queries.remove(&ctx) {
                    self.forget_inactive_load(doid, ctx);
                    if ok {
                        self.answer_get_all(to, context, doid, body, out);
                    } else {
                        log::debug!("dbss: GET_ALL of {doid}: not in the database; no answer");
                    }
                }
                let loads = self
                    .loading
                    .get(&doid)
                    .is_some_and(|l| l.contexts.contains(&ctx));
                if loads {
                    self.finish_load(now, doid, ok.then_some(body), out);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn room_for_query(&self) -> bool {
        let max = self.limits.max_pending_queries;
        if self.queries.len() >= max {
            log::warn!(
                "dbss: {max} database queries pending already (max_pending_queries); read refused"
            );
            return false;
        }
        true
    }

    fn forget_inactive_load(&mut self, doid: Doid, ctx: u32) {
        if let Some(v) = self.inactive_loads.get_mut(&doid) {
            v.retain(|c| *c != ctx);
            if v.is_empty() {
                self.inactive_loads.remove(&doid);
            }
        }
    }

    fn get_field_failed(&self, to: u64, context: u32, doid: Doid, out: &mut Output) {
        let mut w = out.datagram(&[to], doid as u64, STATESERVER_OBJECT_GET_FIELD_RESP);
        w.u32(context).u8(0);
        w.finish_bounded();
    }

    fn refuse(&self, doid: Doid, sender: u64, kind: &str, reason: &str, out: &mut Output) {
        log::warn!("dbss: object {doid}: message from {sender} refused: {reason}");
        out.events.push(event::encode(
            kind,
            &[
                ("role", Ev::Str("dbss")),
                ("doid", Ev::U64(doid as u64)),
                ("sender", Ev::U64(sender)),
                ("reason", Ev::Str(reason)),
            ],
        ));
    }

    /// ACTIVATE_WITH_DEFAULTS_OTHER's `(field, value)` list: fields of the class, `ram` or
    /// `required`, each value valid.
    fn read_updates(&self, class: u16, r: &mut Reader<'_>) -> Result<FieldStore, String> {
        let schema = &self.objects.schema;
        let mut store = FieldStore::default();
        let count = r.u16().map_err(|e| e.to_string())?;
        for _ in 0..count {
            let f = r.u16().map_err(|e| e.to_string())?;
            if !schema.class_has_field(class, f) {
                return Err(format!(
                    "field {f} is not a field of {}",
                    schema.class_name(class)
                ));
            }
            let rest = r.rest_peek();
            let len = schema
                .value_len(class, f, rest)
                .map_err(|e| format!("{}: {e}", schema.field_name(class, f)))?;
            if schema.flags(class, f).kept() {
                store.set(f, &rest[..len]);
            } else {
                log::warn!(
                    "dbss: non-RAM field {} in an activate; ignored",
                    schema.field_name(class, f)
                );
            }
            r.skip(len).map_err(|e| e.to_string())?;
        }
        Ok(store)
    }

    /// The stored `db` values of a DBSERVER_OBJECT_GET_ALL_RESP body (after the success
    /// byte): the class, and the kept fields (required ones completed with DC defaults).
    fn read_stored(&self, body: &[u8]) -> Result<(u16, FieldStore), String> {
        let schema = &self.objects.schema;
        let mut r = Reader::new(body);
        let class = r.u16().map_err(|e| e.to_string())?;
        let info = schema
            .class(class)
            .ok_or_else(|| format!("the database holds unknown dclass {class}"))?;
        let mut store = FieldStore::default();
        let count = r.u16().map_err(|e| e.to_string())?;
        for _ in 0..count {
            let f = r.u16().map_err(|e| e.to_string())?;
            if !schema.class_has_field(class, f) {
                return Err(format!("stored field {f} is not a field of {}", info.name));
            }
            let rest = r.rest_peek();
            let len = schema
                .value_len(class, f, rest)
                .map_err(|e| format!("stored {}: {e}", schema.field_name(class, f)))?;
            if schema.flags(class, f).kept() {
                store.set(f, &rest[..len]);
            }
            r.skip(len).map_err(|e| e.to_string())?;
        }
        for &f in &info.required {
            if !store.contains(f) {
                store.set(f, schema.default_value(class, f));
            }
        }
        Ok((class, store))
    }

    fn answer_get_all(&self, to: u64, context: u32, doid: Doid, body: &[u8], out: &mut Output) {
        let (class, store) = match self.read_stored(body) {
            Ok(x) => x,
            Err(e) => {
                log::warn!("dbss: GET_ALL of {doid}: {e}; no answer");
                return;
            }
        };
        let schema = &self.objects.schema;
        let info = schema.class(class).expect("checked");
        let mut w = out.datagram(&[to], doid as u64, STATESERVER_OBJECT_GET_ALL_RESP);
        w.u32(context).u32(doid).u32(0).u32(0).u16(class);
        for &f in &info.required {
            w.bytes(store.get(f).unwrap_or_default());
        }
        let others: Vec<(u16, &[u8])> = store
            .iter()
            .filter(|(f, _)| !schema.flags(class, *f).required)
            .collect();
        w.u16(others.len() as u16);
        for (f, v) in others {
            w.u16(f).bytes(v);
        }
        finish_or_drop(w, "dbss: STATESERVER_OBJECT_GET_ALL_RESP");
    }

    /// The database answered an activation: bring the object to life (or give up), then
    /// handle what waited for it.
    fn finish_load(&mut self, now: Instant, doid: Doid, body: Option<&[u8]>, out: &mut Output) {
        let Some(l) = self.loading.remove(&doid) else {
            return;
        };
        match body.map(|b| self.read_stored(b)) {
            None => log::info!("dbss: activate of {doid}: not in the database"),
            Some(Err(e)) => log::warn!("dbss: activate of {doid}: {e}"),
            Some(Ok((class, _))) if l.class.is_some_and(|c| c != class) => log::warn!(
                "dbss: activate of {doid} asked for dclass {}, the database holds {class}",
                l.class.unwrap_or(0)
            ),
            Some(Ok((class, mut store))) => {
                for (f, v) in l.updates.iter() {
                    store.set(f, v);
                }
                self.objects
                    .create(doid, l.parent, l.zone, class, store, self.database, out);
            }
        }
        for frame in l.queue {
            if let Ok(dg) = InternalDatagram::parse(&frame[2..]) {
                self.handle_dg(now, &frame, &dg, out);
            }
        }
    }

    /// Sends the `db` fields of a valid update to the database.
    fn write_back(
        &mut self,
        doid: Doid,
        sender: u64,
        r: &mut Reader<'_>,
        count: u16,
        out: &mut Output,
    ) {
        let schema = Arc::clone(&self.objects.schema);
        let class = self.objects.objects.get(&doid).map(|o| o.class);
        let all = r.rest_peek();
        let mut at = 0;
        let mut db: SmallVec<[(u16, usize, usize); 8]> = SmallVec::new();
        for _ in 0..count {
            if all.len() < at + 2 {
                return; // truncated: the live object (if any) reports it
            }
            let f = u16::from_le_bytes([all[at], all[at + 1]]);
            if class.is_some_and(|c| !schema.class_has_field(c, f)) {
                return;
            }
            let Ok(len) = schema.value_len(class.unwrap_or(ANY_CLASS), f, &all[at + 2..]) else {
                if class.is_none() {
                    let reason = format!(
                        "invalid value for {}",
                        schema.field_name(class.unwrap_or(ANY_CLASS), f)
                    );
                    self.refuse(doid, sender, "invalid-field-update", &reason, out);
                }
                return;
            };
            if schema.flags(class.unwrap_or(ANY_CLASS), f).db {
                db.retain(|e| e.0 != f);
                db.push((f, at + 2, at + 2 + len));
            }
            at += 2 + len;
        }
        if db.is_empty() {
            return;
        }
        db.sort_unstable_by_key(|e| e.0);
        let msgtype = if db.len() == 1 {
            DBSERVER_OBJECT_SET_FIELD
        } else {
            DBSERVER_OBJECT_SET_FIELDS
        };
        let mut w = out.datagram(&[self.database], doid as u64, msgtype);
        w.u32(doid);
        if db.len() > 1 {
            w.u16(db.len() as u16);
        }
        for (f, s, e) in db {
            w.u16(f).bytes(&all[s..e]);
        }
        finish_or_drop(w, "dbss: a request to the database");
    }
}

impl Role for Dbss {
    fn name(&self) -> &'static str {
        "dbss"
    }

    fn hears_itself(&self) -> bool {
        true
    }

    fn metrics(&self, out: &mut Vec<(&'static str, u64)>) {
        out.push(("objects", self.objects.len() as u64));
        out.push(("loading", self.loading.len() as u64));
        out.push(("pending_queries", self.queries.len() as u64));
        out.push(("invalid_updates", self.objects.invalid_updates));
    }

    fn start(&mut self, _now: Instant, out: &mut Output) {
        for &(lo, hi) in &self.ranges {
            out.subscribe_range(lo as u64, hi as u64);
        }
    }

    fn handle(&mut self, now: Instant, frame: &[u8], dg: &InternalDatagram<'_>, out: &mut Output) {
        self.handle_dg(now, frame, dg, out);
    }

    fn tick(&mut self, now: Instant, out: &mut Output) {
        let timeout = Duration::from_millis(self.limits.query_timeout_ms);
        let expired: Vec<u32> = self
            .queries
            .iter()
            .filter(|(_, (_, t))| now.duration_since(*t) > timeout)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            if let Some((q, _)) = self.queries.remove(&c) {
                log::warn!("dbss: database query {c} unanswered after {timeout:?} (query_timeout_ms); dropped");
                match q {
                    Query::Field { to, context, doid } => {
                        self.get_field_failed(to, context, doid, out)
                    }
                    Query::Fields {
                        to, context, doid, ..
                    } => {
                        let mut w =
                            out.datagram(&[to], doid as u64, STATESERVER_OBJECT_GET_FIELDS_RESP);
                        w.u32(context).u8(0);
                        w.finish_bounded();
                    }
                    Query::All { doid, .. } => self.forget_inactive_load(doid, c),
                }
            }
        }
        let stale: Vec<Doid> = self
            .loading
            .iter()
            .filter(|(_, l)| now.duration_since(l.since) > timeout)
            .map(|(d, _)| *d)
            .collect();
        for d in stale {
            log::warn!(
                "dbss: activation of {d} unanswered after {timeout:?} (query_timeout_ms); given up"
            );
            self.finish_load(now, d, None, out);
        }
    }
}

//! The Database role: the DBSERVER_* messages (3000-3032) of Astron's protocol. The role
//! parses and validates each request (only `db` fields, values checked against the DC file),
//! hands it to its store's worker thread as a job, and answers once the job's transaction is
//! durable; changes are re-broadcast on `(2 << 32) | doid` when `broadcast` is on. Also otpd's
//! own DBSERVER_ACCOUNT_* (3900-3909: the 2003 dialect's account records; 3920-3923: the
//! operator's bans) and the name review queue (3924-3927).

use super::finish_or_drop;
use super::store::{BatchNote, Job, Op, Outcome};
use super::{AnyJob, Output, Role, Schema, Worker, ANY_CLASS};
use otp_wire::channels::{database_channel, BCHAN_DBSERVERS};
use otp_wire::msgtypes::*;
use otp_wire::Doid;
use otp_wire::{InternalDatagram, Reader, WireError};
use std::sync::Arc;
use std::time::Instant;

pub struct Database {
    control: u64,
    broadcast: bool,
    schema: Arc<Schema>,
    worker: Option<Box<dyn Worker>>,
    /// Requests answered, refused or failed, and the time they spent queued and committed.
    requests: u64,
    failures: u64,
    latency_us_sum: u64,
    latency_us_max: u64,
    in_flight: u64,
    /// Batches failed as a whole, storage connections lost and reopened.
    failed_batches: u64,
    connections_lost: u64,
    reconnects: u64,
    /// Episodes of refused writes (a full or read-only disk) on a store that still reads.
    write_outages: u64,
    /// Whether the store's connection is up, and whether it writes, as last told. While
    /// either is false, failed requests are counted but not evented one by one (the episode
    /// has its own events).
    store_up: bool,
    store_writes: bool,
    limits: super::WorkerLimits,
    /// The class fields are read in: `ANY_CLASS` (file-wide numbering), or while a request
    /// held for its object's class is handled, that class.
    scope: u16,
    /// The time the runtime handed in with the message being handled (requests are stamped
    /// with it; the role reads no clock).
    now: Instant,
}

/// Why a request is refused before it reaches the store.
type Refusal = String;
/// `(field, value)` pairs of a request.
type Pairs = Vec<(u16, Vec<u8>)>;

/// A new object's dclass and its fields (id, packed value), as a create request gives them.
type NewObject = (u16, Pairs);

impl Database {
    pub fn new(
        control: u64,
        broadcast: bool,
        schema: Arc<Schema>,
        worker: Box<dyn Worker>,
        now: Instant,
    ) -> Database {
        Database {
            control,
            broadcast,
            schema,
            worker: Some(worker),
            requests: 0,
            failures: 0,
            latency_us_sum: 0,
            latency_us_max: 0,
            in_flight: 0,
            failed_batches: 0,
            connections_lost: 0,
            reconnects: 0,
            write_outages: 0,
            store_up: true,
            store_writes: true,
            limits: super::WorkerLimits::default(),
            scope: ANY_CLASS,
            now,
        }
    }

    /// The group-commit batch and the storage queue's length (see `cluster.ron`).
    pub fn with_limits(mut self, limits: super::WorkerLimits) -> Database {
        self.limits = limits;
        self
    }

    /// `count` field ids, each a `db` field; non-db fields are left out with a log line
    /// (as astrond does). Unknown field ids refuse the request.
    fn read_ids(
        &self,
        r: &mut Reader<'_>,
        class: u16,
        count: u16,
    ) -> Result<Result<Vec<u16>, Refusal>, WireError> {
        let mut ids = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let f = r.u16()?;
            if !self.schema.field_known(class, f) {
                return Ok(Err(format!("unknown field {f}")));
            }
            if self.schema.flags(class, f).db {
                if !ids.contains(&f) {
                    ids.push(f);
                }
            } else {
                log::warn!(
                    "database: request names non-db field {}; left out",
                    self.schema.field_name(class, f)
                );
            }
        }
        Ok(Ok(ids))
    }

    /// One validated `<VALUE>` of field `f`.
    fn read_value(&self, r: &mut Reader<'_>, class: u16, f: u16) -> Result<Vec<u8>, Refusal> {
        if !self.schema.field_known(class, f) {
            return Err(format!("unknown field {f}"));
        }
        let rest = r.rest_peek();
        let len = self
            .schema
            .value_len(class, f, rest)
            .map_err(|e| format!("{}: {e}", self.schema.field_name(class, f)))?;
        r.skip(len).map_err(|e| e.to_string())?;
        Ok(rest[..len].to_vec())
    }

    /// `count` (field, value) pairs; with `only_db`, non-db fields are skipped (astrond does
    /// so on create and set).
    fn read_pairs(
        &self,
        r: &mut Reader<'_>,
        class: u16,
        count: u16,
    ) -> Result<Result<Pairs, Refusal>, WireError> {
        let mut out: Vec<(u16, Vec<u8>)> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let f = r.u16()?;
            let v = match self.read_value(r, class, f) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            if self.schema.flags(class, f).db {
                out.retain(|(x, _)| *x != f);
                out.push((f, v));
            } else {
                log::warn!(
                    "database: request sets non-db field {}; left out",
                    self.schema.field_name(class, f)
                );
            }
        }
        Ok(Ok(out))
    }

    fn job(&mut self, op: Op, sender: u64, context: u32, msgtype: u16, out: &mut Output) {
        self.in_flight += 1;
        out.job(Box::new(Job {
            op,
            sender,
            context,
            msgtype,
            outcome: Outcome::Pending,
            queued: self.now,
            note: None,
        }));
    }

    /// Answers a request refused before the store: failure (or doid 0 for a create); a
    /// fire-and-forget request just gets a log line.
    fn refuse(&mut self, msgtype: u16, sender: u64, context: u32, why: &str, out: &mut Output) {
        self.requests += 1;
        self.failures += 1;
        log::warn!(
            "database: {} from {sender} refused: {why}",
            internal_name(msgtype)
        );
        let resp = match msgtype {
            DBSERVER_CREATE_OBJECT | DBSERVER_ACCOUNT_CREATE_AVATAR => {
                let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                w.u32(context).u32(0);
                w.finish_bounded();
                return;
            }
            DBSERVER_OBJECT_GET_FIELD
            | DBSERVER_OBJECT_GET_FIELDS
            | DBSERVER_OBJECT_GET_ALL
            | DBSERVER_OBJECT_SET_FIELD_IF_EQUALS
            | DBSERVER_OBJECT_SET_FIELDS_IF_EQUALS
            | DBSERVER_OBJECT_SET_FIELD_IF_EMPTY => msgtype + 1,
            DBSERVER_ACCOUNT_SET_BAN | DBSERVER_NAME_REVIEW => {
                let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                w.u32(context).u8(2);
                w.finish_bounded();
                return;
            }
            _ => return,
        };
        let mut w = out.datagram(&[sender], self.control, resp);
        w.u32(context).u8(0);
        w.finish_bounded();
    }

    /// Reads the new object of a create request (class, field count, fields), with the DC
    /// defaults of the db fields left out; None when it was refused (answered already).
    fn read_new_object(
        &mut self,
        r: &mut otp_wire::Reader<'_>,
        t: u16,
        sender: u64,
        context: u32,
        out: &mut Output,
    ) -> Result<Option<NewObject>, WireError> {
        let class = r.u16()?;
        let count = r.u16()?;
        if self.schema.class(class).is_none() {
            self.refuse(t, sender, context, &format!("unknown dclass {class}"), out);
            return Ok(None);
        }
        let scope = if self.schema.per_class_numbering() {
            class
        } else {
            ANY_CLASS
        };
        let mut fields = match self.read_pairs(r, scope, count)? {
            Ok(f) => f,
            Err(why) => {
                self.refuse(t, sender, context, &why, out);
                return Ok(None);
            }
        };
        if let Some((f, _)) = fields
            .iter()
            .find(|(f, _)| !self.schema.class_has_field(class, *f))
        {
            let why = format!(
                "{} is not a field of {}",
                self.schema.field_name(class, *f),
                self.schema.class_name(class)
            );
            self.refuse(t, sender, context, &why, out);
            return Ok(None);
        }
        // Fields left out that have a DC default are stored with it.
        let info = self.schema.class(class).expect("checked");
        for &f in &info.fields {
            let fl = self.schema.flags(class, f);
            if fl.db && fl.has_default && !fl.molecular && !fields.iter().any(|(x, _)| *x == f) {
                fields.push((f, self.schema.default_value(class, f).to_vec()));
            }
        }
        fields.sort_by_key(|(f, _)| *f);
        Ok(Some((class, fields)))
    }

    #[allow(clippy::too_many_lines)] // one short arm per message type or key
    fn request(&mut self, dg: &InternalDatagram<'_>, out: &mut Output) -> Result<(), WireError> {
        let sender = dg.sender.unwrap_or(0);
        let mut r = dg.payload_reader();
        let t = dg.msgtype;
        match t {
            DBSERVER_CREATE_OBJECT => {
                let context = r.u32()?;
                if let Some((class, fields)) =
                    self.read_new_object(&mut r, t, sender, context, out)?
                {
                    self.job(Op::Create { class, fields }, sender, context, t, out);
                }
            }
            DBSERVER_ACCOUNT_CREATE_AVATAR => {
                let context = r.u32()?;
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                let (slot, slots) = (r.u8()?, r.u8()?);
                if let Some((class, fields)) =
                    self.read_new_object(&mut r, t, sender, context, out)?
                {
                    let op = Op::AvatarCreate {
                        name,
                        slot,
                        slots,
                        class,
                        fields,
                    };
                    self.job(op, sender, context, t, out);
                }
            }
            DBSERVER_ACCOUNT_DELETE_AVATAR => {
                let context = r.u32()?;
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                let (slot, slots, doid) = (r.u8()?, r.u8()?, r.u32()?);
                let op = Op::AvatarDelete {
                    name,
                    slot,
                    slots,
                    doid,
                };
                self.job(op, sender, context, t, out);
            }
            DBSERVER_ACCOUNT_GET => {
                let context = r.u32()?;
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                self.job(Op::AccountGet { name }, sender, context, t, out);
            }
            DBSERVER_ACCOUNT_SET => {
                let context = r.u32()?;
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                let data = r.blob()?.to_vec();
                self.job(Op::AccountSet { name, data }, sender, context, t, out);
            }
            DBSERVER_ACCOUNT_CREATE => {
                let context = r.u32()?;
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                let data = r.blob()?.to_vec();
                self.job(Op::AccountCreate { name, data }, sender, context, t, out);
            }
            DBSERVER_ACCOUNT_SET_BAN => {
                let context = r.u32()?;
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                let until = r.u64()?;
                let reason = r.blob()?;
                if reason.len() > crate::roles::account::MAX_BAN_REASON {
                    let why = format!(
                        "a ban reason of {} bytes (at most {})",
                        reason.len(),
                        crate::roles::account::MAX_BAN_REASON
                    );
                    self.refuse(t, sender, context, &why, out);
                    return Ok(());
                }
                let reason = String::from_utf8_lossy(reason).into_owned();
                let op = Op::BanSet {
                    name,
                    until,
                    reason,
                };
                self.job(op, sender, context, t, out);
            }
            DBSERVER_ACCOUNT_GET_BAN => {
                let context = r.u32()?;
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                self.job(Op::BanGet { name }, sender, context, t, out);
            }
            DBSERVER_NAMES_GET_PENDING => {
                let context = r.u32()?;
                let max = r.u16()?.min(MAX_PENDING_NAMES_LISTED);
                self.job(Op::PendingNames { max }, sender, context, t, out);
            }
            DBSERVER_NAME_REVIEW => {
                let context = r.u32()?;
                let doid = r.u32()?;
                let approve = match r.u8()? {
                    0 => false,
                    1 => true,
                    v => {
                        self.refuse(t, sender, context, &format!("verdict {v}"), out);
                        return Ok(());
                    }
                };
                self.job(Op::NameReview { doid, approve }, sender, context, t, out);
            }
            DBSERVER_OBJECT_GET_FIELD | DBSERVER_OBJECT_GET_FIELDS | DBSERVER_OBJECT_GET_ALL => {
                let context = r.u32()?;
                let doid = r.u32()?;
                let fields = match t {
                    DBSERVER_OBJECT_GET_ALL => None,
                    _ => {
                        let count = if t == DBSERVER_OBJECT_GET_FIELDS {
                            r.u16()?
                        } else {
                            1
                        };
                        match self.read_ids(&mut r, self.scope, count)? {
                            Ok(ids) if !ids.is_empty() => Some(ids),
                            Ok(_) => {
                                self.refuse(t, sender, context, "no db field asked for", out);
                                return Ok(());
                            }
                            Err(why) => {
                                self.refuse(t, sender, context, &why, out);
                                return Ok(());
                            }
                        }
                    }
                };
                self.job(Op::Get { doid, fields }, sender, context, t, out);
            }
            DBSERVER_OBJECT_SET_FIELD | DBSERVER_OBJECT_SET_FIELDS => {
                let doid = r.u32()?;
                let count = if t == DBSERVER_OBJECT_SET_FIELDS {
                    r.u16()?
                } else {
                    1
                };
                match self.read_pairs(&mut r, self.scope, count)? {
                    Ok(f) if !f.is_empty() => {
                        let fields = f.into_iter().map(|(f, v)| (f, Some(v))).collect();
                        self.job(Op::Set { doid, fields }, sender, 0, t, out);
                    }
                    Ok(_) => self.refuse(t, sender, 0, "no db field to set", out),
                    Err(why) => self.refuse(t, sender, 0, &why, out),
                }
            }
            DBSERVER_OBJECT_DELETE_FIELD | DBSERVER_OBJECT_DELETE_FIELDS => {
                let doid = r.u32()?;
                let count = if t == DBSERVER_OBJECT_DELETE_FIELDS {
                    r.u16()?
                } else {
                    1
                };
                match self.read_ids(&mut r, self.scope, count)? {
                    Ok(ids) if !ids.is_empty() => {
                        // A field with a DC default goes back to it; others are removed.
                        let fields =
                            ids.into_iter()
                                .map(|f| {
                                    let v =
                                        self.schema.flags(self.scope, f).has_default.then(|| {
                                            self.schema.default_value(self.scope, f).to_vec()
                                        });
                                    (f, v)
                                })
                                .collect();
                        self.job(Op::Set { doid, fields }, sender, 0, t, out);
                    }
                    Ok(_) => self.refuse(t, sender, 0, "no db field to delete", out),
                    Err(why) => self.refuse(t, sender, 0, &why, out),
                }
            }
            DBSERVER_OBJECT_SET_FIELD_IF_EQUALS
            | DBSERVER_OBJECT_SET_FIELDS_IF_EQUALS
            | DBSERVER_OBJECT_SET_FIELD_IF_EMPTY => {
                let context = r.u32()?;
                let doid = r.u32()?;
                let count = if t == DBSERVER_OBJECT_SET_FIELDS_IF_EQUALS {
                    r.u16()?
                } else {
                    1
                };
                let mut criteria = Vec::new();
                let mut fields = Vec::new();
                for _ in 0..count {
                    let f = r.u16()?;
                    let old = if t == DBSERVER_OBJECT_SET_FIELD_IF_EMPTY {
                        None
                    } else {
                        match self.read_value(&mut r, self.scope, f) {
                            Ok(v) => Some(v),
                            Err(why) => {
                                self.refuse(t, sender, context, &why, out);
                                return Ok(());
                            }
                        }
                    };
                    let new = match self.read_value(&mut r, self.scope, f) {
                        Ok(v) => v,
                        Err(why) => {
                            self.refuse(t, sender, context, &why, out);
                            return Ok(());
                        }
                    };
                    if !self.schema.flags(ANY_CLASS, f).db {
                        let why =
                            format!("{} is not a db field", self.schema.field_name(ANY_CLASS, f));
                        self.refuse(t, sender, context, &why, out);
                        return Ok(());
                    }
                    criteria.push((f, old));
                    fields.push((f, new));
                }
                if fields.is_empty() {
                    self.refuse(t, sender, context, "no field", out);
                    return Ok(());
                }
                self.job(
                    Op::Update {
                        doid,
                        criteria,
                        fields,
                    },
                    sender,
                    context,
                    t,
                    out,
                );
            }
            DBSERVER_OBJECT_DELETE => {
                let doid = r.u32()?;
                self.job(Op::Delete { doid }, sender, 0, t, out);
            }
            other => log::debug!("database: message type {other} from {sender} ignored"),
        }
        Ok(())
    }

    /// Counts what befell a batch; a connection lost or reopened, writes refused or working
    /// again, each is an event.
    fn batch_noted(&mut self, note: &BatchNote, out: &mut Output) {
        use super::event::{encode, Ev};
        self.failed_batches += u64::from(note.failed);
        if note.reconnected && self.store_up {
            // Found closed while idle and reopened at once: lost all the same.
            self.store_lost("connection closed while idle", out);
        }
        if note.reconnected {
            self.store_up = true;
            self.store_writes = true;
            self.reconnects += 1;
            out.events.push(encode(
                "database-reconnected",
                &[("role", Ev::Str("database"))],
            ));
        }
        if let Some(why) = &note.unwritable {
            self.store_writes = false;
            self.write_outages += 1;
            out.events.push(encode(
                "database-unwritable",
                &[("role", Ev::Str("database")), ("reason", Ev::Str(why))],
            ));
        }
        if note.writable {
            self.store_writes = true;
            out.events.push(encode(
                "database-writable",
                &[("role", Ev::Str("database"))],
            ));
        }
        if let Some(why) = &note.lost {
            self.store_lost(why, out);
        }
    }

    fn store_lost(&mut self, why: &str, out: &mut Output) {
        use super::event::{encode, Ev};
        self.store_up = false;
        self.connections_lost += 1;
        out.events.push(encode(
            "database-lost",
            &[("role", Ev::Str("database")), ("reason", Ev::Str(why))],
        ));
    }

    #[allow(clippy::too_many_lines)] // one short arm per message type or key
    fn answer(&mut self, job: Job, out: &mut Output) {
        let Job {
            op,
            sender,
            context,
            msgtype,
            outcome,
            queued,
            note,
        } = job;
        if let Some(note) = note {
            self.batch_noted(&note, out);
        }
        let us = self.now.saturating_duration_since(queued).as_micros() as u64;
        self.requests += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.latency_us_sum += us;
        self.latency_us_max = self.latency_us_max.max(us);
        if matches!(outcome, Outcome::Failed | Outcome::StorageError(_)) {
            self.failures += 1;
        }
        if let (Op::ClassOf { frame, .. }, Outcome::Class(class)) = (&op, &outcome) {
            self.requests -= 1;
            // An unknown object reads its fields in no class: they are refused as unknown.
            self.scope = class.unwrap_or(NO_CLASS);
            if let Ok(dg) = InternalDatagram::parse(&frame[2..]) {
                if let Err(e) = self.request(&dg, out) {
                    log::warn!(
                        "database: truncated {}: {e}; ignored",
                        internal_name(dg.msgtype)
                    );
                }
            }
            self.scope = ANY_CLASS;
            return;
        }
        match (&op, outcome) {
            (Op::Create { .. } | Op::AvatarCreate { .. }, o) => {
                // DBSERVER_CREATE_OBJECT_RESP or DBSERVER_ACCOUNT_CREATE_AVATAR_RESP.
                let doid = if let Outcome::Created(d) = o { d } else { 0 };
                let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                w.u32(context).u32(doid);
                w.finish_bounded();
            }
            (Op::Get { .. }, Outcome::Object { class, fields }) => {
                let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                w.u32(context);
                match msgtype {
                    DBSERVER_OBJECT_GET_FIELD => {
                        match fields.first() {
                            Some((f, v)) => w.u8(1).u16(*f).bytes(v),
                            None => w.u8(0),
                        };
                    }
                    DBSERVER_OBJECT_GET_FIELDS => {
                        w.u8(1).u16(fields.len() as u16);
                        for (f, v) in &fields {
                            w.u16(*f).bytes(v);
                        }
                    }
                    _ => {
                        w.u8(1).u16(class).u16(fields.len() as u16);
                        for (f, v) in &fields {
                            w.u16(*f).bytes(v);
                        }
                    }
                }
                if w.finish().is_err() {
                    log::error!("database: answer to {} too large", internal_name(msgtype));
                }
            }
            (Op::Set { doid, fields }, Outcome::Done) => self.announce(
                *doid,
                sender,
                fields.iter().map(|(f, v)| (*f, v.as_deref())),
                out,
            ),
            (Op::Update { doid, fields, .. }, Outcome::Done) => {
                let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                w.u32(context).u8(1);
                w.finish_bounded();
                self.announce(
                    *doid,
                    sender,
                    fields.iter().map(|(f, v)| (*f, Some(v.as_slice()))),
                    out,
                );
            }
            (Op::Update { .. }, Outcome::Mismatch(current)) => {
                let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                w.u32(context).u8(0);
                if msgtype == DBSERVER_OBJECT_SET_FIELDS_IF_EQUALS {
                    w.u16(current.len() as u16);
                }
                for (f, v) in &current {
                    w.u16(*f).bytes(v);
                }
                finish_or_drop(w, "database: the answer to a conditional set");
            }
            (Op::AccountGet { .. }, Outcome::Account(data)) => {
                let mut w = out.datagram(&[sender], self.control, DBSERVER_ACCOUNT_GET_RESP);
                match data {
                    Some(d) => w.u32(context).u8(0).blob(&d),
                    None => w.u32(context).u8(1).blob(&[]),
                };
                finish_or_drop(w, "database: DBSERVER_ACCOUNT_GET_RESP");
            }
            (Op::AccountCreate { .. }, Outcome::AccountCreated(made)) => {
                let mut w = out.datagram(&[sender], self.control, DBSERVER_ACCOUNT_CREATE_RESP);
                w.u32(context).u8(if made { 0 } else { 1 });
                w.finish_bounded();
            }
            (Op::AccountSet { .. }, Outcome::Done) => {
                let mut w = out.datagram(&[sender], self.control, DBSERVER_ACCOUNT_SET_RESP);
                w.u32(context).u8(0);
                w.finish_bounded();
            }
            (Op::BanSet { name, until, .. }, o @ (Outcome::Done | Outcome::Failed)) => {
                let done = o == Outcome::Done;
                let mut w = out.datagram(&[sender], self.control, DBSERVER_ACCOUNT_SET_BAN_RESP);
                w.u32(context).u8(if done { 0 } else { 1 });
                w.finish_bounded();
                if done {
                    use super::event::{encode, Ev};
                    out.events.push(encode(
                        "account-ban-set",
                        &[
                            ("role", Ev::Str("database")),
                            ("sender", Ev::U64(sender)),
                            ("account", Ev::Str(name)),
                            ("until", Ev::U64(*until)),
                        ],
                    ));
                }
            }
            (Op::BanGet { .. }, Outcome::Ban(ban)) => {
                let mut w = out.datagram(&[sender], self.control, DBSERVER_ACCOUNT_GET_BAN_RESP);
                match &ban {
                    Some((until, reason)) => w.u32(context).u8(0).u64(*until).string(reason),
                    None => w.u32(context).u8(1).u64(0).string(""),
                };
                finish_or_drop(w, "database: DBSERVER_ACCOUNT_GET_BAN_RESP");
            }
            (Op::PendingNames { .. }, Outcome::PendingNames(names)) => {
                let mut w = out.datagram(&[sender], self.control, DBSERVER_NAMES_GET_PENDING_RESP);
                w.u32(context).u16(names.len() as u16);
                for n in &names {
                    w.u32(n.doid)
                        .string(&n.wish_name)
                        .string(&n.account)
                        .u64(n.since);
                }
                finish_or_drop(w, "database: DBSERVER_NAMES_GET_PENDING_RESP");
            }
            (Op::NameReview { doid, approve }, o @ (Outcome::Done | Outcome::Failed)) => {
                let done = o == Outcome::Done;
                let mut w = out.datagram(&[sender], self.control, DBSERVER_NAME_REVIEW_RESP);
                w.u32(context).u8(if done { 0 } else { 1 });
                w.finish_bounded();
                if done {
                    use super::event::{encode, Ev};
                    let verdict = if *approve { "approved" } else { "rejected" };
                    out.events.push(encode(
                        "name-reviewed",
                        &[
                            ("role", Ev::Str("database")),
                            ("sender", Ev::U64(sender)),
                            ("doid", Ev::U64(*doid as u64)),
                            ("verdict", Ev::Str(verdict)),
                        ],
                    ));
                }
            }
            (Op::AvatarDelete { doid, .. }, o @ (Outcome::Deleted | Outcome::Failed)) => {
                let done = o == Outcome::Deleted;
                let mut w =
                    out.datagram(&[sender], self.control, DBSERVER_ACCOUNT_DELETE_AVATAR_RESP);
                w.u32(context).u8(if done { 0 } else { 1 });
                let _ = w.finish();
                if done && self.broadcast {
                    let mut w =
                        out.datagram(&[database_channel(*doid)], sender, DBSERVER_OBJECT_DELETE);
                    w.u32(*doid);
                    let _ = w.finish();
                }
            }
            (Op::Delete { doid }, Outcome::Deleted) => {
                if self.broadcast {
                    let mut w =
                        out.datagram(&[database_channel(*doid)], sender, DBSERVER_OBJECT_DELETE);
                    w.u32(*doid);
                    w.finish_bounded();
                }
            }
            (_, outcome) => {
                let episode = !(self.store_up && self.store_writes);
                if let (Outcome::StorageError(why), false) = (&outcome, episode) {
                    out.events.push(super::event::encode(
                        "database-failure",
                        &[
                            ("role", super::event::Ev::Str("database")),
                            ("request", super::event::Ev::Str(internal_name(msgtype))),
                            ("sender", super::event::Ev::U64(sender)),
                            ("doid", super::event::Ev::U64(op_doid(&op) as u64)),
                            ("reason", super::event::Ev::Str(why)),
                        ],
                    ));
                }
                // Failed: requests with a context get a failure answer.
                if let Op::AccountGet { .. }
                | Op::AccountSet { .. }
                | Op::AccountCreate { .. }
                | Op::AvatarDelete { .. }
                | Op::BanSet { .. }
                | Op::BanGet { .. }
                | Op::NameReview { .. } = op
                {
                    let resp = msgtype + 1;
                    let mut w = out.datagram(&[sender], self.control, resp);
                    w.u32(context).u8(2);
                    if resp == DBSERVER_ACCOUNT_GET_RESP {
                        w.blob(&[]);
                    }
                    if resp == DBSERVER_ACCOUNT_GET_BAN_RESP {
                        w.u64(0).string("");
                    }
                    finish_or_drop(w, "database: DBSERVER_ACCOUNT_GET_RESP");
                } else if let Op::PendingNames { .. } = op {
                    let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                    w.u32(context).u16(0);
                    w.finish_bounded();
                } else if matches!(op, Op::Get { .. } | Op::Update { .. }) {
                    let mut w = out.datagram(&[sender], self.control, msgtype + 1);
                    w.u32(context).u8(0);
                    w.finish_bounded();
                } else {
                    log::warn!("database: {} from {sender} failed (unknown object, or a field of another class)", internal_name(msgtype));
                }
            }
        }
    }

    /// Re-broadcasts applied changes on the object's database channel, as astrond does: the
    /// values set as SET_FIELD(S), the fields removed as DELETE_FIELD(S).
    fn announce<'a>(
        &self,
        doid: Doid,
        sender: u64,
        fields: impl Iterator<Item = (u16, Option<&'a [u8]>)>,
        out: &mut Output,
    ) {
        if !self.broadcast {
            return;
        }
        let (mut set, mut deleted): (Vec<(u16, &[u8])>, Vec<u16>) = (Vec::new(), Vec::new());
        for (f, v) in fields {
            match v {
                Some(v) => set.push((f, v)),
                None => deleted.push(f),
            }
        }
        let to = [database_channel(doid)];
        if !deleted.is_empty() {
            let many = deleted.len() > 1;
            let t = if many {
                DBSERVER_OBJECT_DELETE_FIELDS
            } else {
                DBSERVER_OBJECT_DELETE_FIELD
            };
            let mut w = out.datagram(&to, sender, t);
            w.u32(doid);
            if many {
                w.u16(deleted.len() as u16);
            }
            for f in deleted {
                w.u16(f);
            }
            finish_or_drop(w, "database: the broadcast of deleted fields");
        }
        if !set.is_empty() {
            set.sort_by_key(|(f, _)| *f);
            let many = set.len() > 1;
            let t = if many {
                DBSERVER_OBJECT_SET_FIELDS
            } else {
                DBSERVER_OBJECT_SET_FIELD
            };
            let mut w = out.datagram(&to, sender, t);
            w.u32(doid);
            if many {
                w.u16(set.len() as u16);
            }
            for (f, v) in set {
                w.u16(f).bytes(v);
            }
            finish_or_drop(w, "database: the broadcast of set fields");
        }
    }
}

/// The object a request is about (0 for a create).
/// No class at all (an object the database does not hold): every field is unknown in it.
const NO_CLASS: u16 = ANY_CLASS - 1;

/// The doid of a request whose fields can be read only in the object's class (per-class
/// numbering), or None for the others.
fn doid_needing_class(dg: &InternalDatagram<'_>) -> Option<u32> {
    let mut r = dg.payload_reader();
    match dg.msgtype {
        DBSERVER_OBJECT_SET_FIELD
        | DBSERVER_OBJECT_SET_FIELDS
        | DBSERVER_OBJECT_DELETE_FIELD
        | DBSERVER_OBJECT_DELETE_FIELDS => r.u32().ok(),
        DBSERVER_OBJECT_GET_FIELD
        | DBSERVER_OBJECT_GET_FIELDS
        | DBSERVER_OBJECT_SET_FIELD_IF_EQUALS
        | DBSERVER_OBJECT_SET_FIELDS_IF_EQUALS
        | DBSERVER_OBJECT_SET_FIELD_IF_EMPTY => {
            r.u32().ok()?;
            r.u32().ok()
        }
        _ => None,
    }
}

fn op_doid(op: &Op) -> u32 {
    match op {
        Op::Create { .. }
        | Op::AvatarCreate { .. }
        | Op::AccountGet { .. }
        | Op::AccountSet { .. }
        | Op::AccountCreate { .. }
        | Op::BanSet { .. }
        | Op::BanGet { .. }
        | Op::PendingNames { .. } => 0,
        Op::NameReview { doid, .. } => *doid,
        Op::ClassOf { doid, .. }
        | Op::Get { doid, .. }
        | Op::Set { doid, .. }
        | Op::Update { doid, .. }
        | Op::Delete { doid }
        | Op::AvatarDelete { doid, .. } => *doid,
    }
}

impl Role for Database {
    fn name(&self) -> &'static str {
        "database"
    }

    fn start(&mut self, now: Instant, out: &mut Output) {
        self.now = now;
        out.subscribe(self.control);
        out.subscribe(BCHAN_DBSERVERS);
    }

    fn handle(&mut self, now: Instant, frame: &[u8], dg: &InternalDatagram<'_>, out: &mut Output) {
        self.now = now;
        if self.schema.per_class_numbering() {
            if let Some(doid) = doid_needing_class(dg) {
                // Fields are numbered per class: learn the object's class before reading.
                let frame = frame.to_vec();
                self.job(
                    Op::ClassOf { doid, frame },
                    dg.sender.unwrap_or(0),
                    0,
                    dg.msgtype,
                    out,
                );
                return;
            }
        }
        if let Err(e) = self.request(dg, out) {
            log::warn!(
                "database: truncated {} from {}: {e}; ignored",
                internal_name(dg.msgtype),
                dg.sender.unwrap_or(0)
            );
        }
    }

    fn metrics(&self, out: &mut Vec<(&'static str, u64)>) {
        out.push(("requests", self.requests));
        out.push(("failures", self.failures));
        out.push(("in_flight", self.in_flight));
        out.push(("latency_us_sum", self.latency_us_sum));
        out.push(("latency_us_max", self.latency_us_max));
        out.push(("failed_batches", self.failed_batches));
        out.push(("connections_lost", self.connections_lost));
        out.push(("reconnects", self.reconnects));
        out.push(("write_outages", self.write_outages));
    }

    fn take_worker(&mut self) -> Option<Box<dyn Worker>> {
        self.worker.take()
    }

    fn worker_limits(&self) -> super::WorkerLimits {
        self.limits
    }

    fn job_done(&mut self, now: Instant, answer: AnyJob, out: &mut Output) {
        self.now = now;
        match answer.downcast::<Job>() {
            Ok(job) => self.answer(*job, out),
            Err(_) => log::error!("database: the worker answered something that is not a job"),
        }
    }
}

//! The Database role's storage: jobs (one per DBSERVER request) applied in batches, one
//! transaction per batch, each answered only once its transaction is durable. The rules live
//! here once (`Store`); the engines (`sqlite`, `postgres`) only store rows. One schema for
//! both, plain enough to read by hand: `objects(doid, dclass, class_name)` and
//! `fields(doid, field, name, value)`, values in their packed wire form, plus `meta`
//! (`schema_version`, `next_doid`), `accounts(name, data)` (the 2003 dialect's account
//! records, `roles::account`) and `pending_names(doid, account, wish_name, since)`: an index of
//! the wish names waiting for review, kept by every write of an account record (`put_account`),
//! so the operator's queue is read without decoding every account.

pub mod postgres;
pub mod sqlite;

use super::account::{
    astron_account_id, Account, Slot, NAME_APPROVED, NAME_NONE, NAME_PENDING, NAME_REJECTED,
};
use super::{AnyJob, Schema, Worker};
use otp_wire::Doid;
use std::sync::Arc;

/// The schema version this build writes; older ones are migrated, newer ones refused.
/// 2 added `pending_names` (filled from the accounts when a version 1 store is opened).
pub const SCHEMA_VERSION: i64 = 2;

/// A wish name waiting for review, as `pending_names` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingName {
    pub doid: u32,
    pub wish_name: String,
    pub account: String,
    /// When it was typed (Unix seconds), 0 if not known.
    pub since: u64,
}

/// The `pending_names` rows of one account record (none for a record otpd cannot read).
pub fn pending_rows(account: &str, data: &[u8]) -> Vec<PendingName> {
    Account::decode(data, 0)
        .map(|a| {
            a.slots
                .iter()
                .filter(|s| s.doid != 0 && s.name_state == NAME_PENDING)
                .map(|s| PendingName {
                    doid: s.doid,
                    wish_name: s.wish_name.clone(),
                    account: account.to_string(),
                    since: s.wish_unix,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Stores an account record and its rows of `pending_names`, in the caller's transaction:
/// every write of a record goes through here (and `otpd db import`).
pub fn put_account(b: &mut (impl Backend + ?Sized), name: &str, data: &[u8]) -> Result<(), String> {
    b.account_put(name, data)?;
    b.pending_replace(name, &pending_rows(name, data))
}

/// Fills `pending_names` from every account record (a store opened at schema version 1).
pub fn index_pending_names(b: &mut (impl Backend + ?Sized)) -> Result<usize, String> {
    let mut n = 0;
    for name in b.account_names()? {
        if let Some(data) = b.account_get(&name)? {
            let rows = pending_rows(&name, &data);
            n += rows.len();
            b.pending_replace(&name, &rows)?;
        }
    }
    Ok(n)
}

/// What a request asks of the store. Values are validated by the role beforehand.
#[derive(Debug)]
pub enum Op {
    Create {
        class: u16,
        fields: Vec<(u16, Vec<u8>)>,
    },
    /// `fields` None: every stored field (GET_ALL).
    Get {
        doid: Doid,
        fields: Option<Vec<u16>>,
    },
    /// Each field set to `Some(value)` or deleted (`None`).
    Set {
        doid: Doid,
        fields: Vec<(u16, Option<Vec<u8>>)>,
    },
    /// Applies `fields` only if every criterion holds: `Some(v)` = the stored value is `v`,
    /// `None` = the field is empty.
    Update {
        doid: Doid,
        criteria: Vec<(u16, Option<Vec<u8>>)>,
        fields: Vec<(u16, Vec<u8>)>,
    },
    Delete {
        doid: Doid,
    },
    /// The class of an object, for a request held until it is known (per-class numbering);
    /// `frame` is that request.
    ClassOf {
        doid: Doid,
        frame: Vec<u8>,
    },
    /// An account record (otpd's accounts table), by name.
    AccountGet {
        name: String,
    },
    AccountSet {
        name: String,
        data: Vec<u8>,
    },
    /// An account made only if the name is free, in one step (two logins racing to create
    /// one account: one wins, the other learns the name is taken).
    AccountCreate {
        name: String,
        data: Vec<u8>,
    },
    /// A new object put in free slot `slot` of account `name` (read with `slots` slots), in
    /// one transaction: both happen or neither (no avatar without its slot, whatever fails or
    /// whoever disconnects). `Created(doid)`, or `Failed` when the account is unknown or the
    /// slot is not free.
    AvatarCreate {
        name: String,
        slot: u8,
        slots: u8,
        class: u16,
        fields: Vec<(u16, Vec<u8>)>,
    },
    /// Avatar `doid` deleted and slot `slot` of account `name` (read with `slots` slots)
    /// emptied, in one transaction: never a slot naming a deleted object, nor an object left in
    /// no slot. `Deleted`, or `Failed` (nothing changed) when the account is unknown or the
    /// slot does not hold `doid`.
    AvatarDelete {
        name: String,
        slot: u8,
        slots: u8,
        doid: u32,
    },
    /// An account's ban set (`until` 0 lifts it); `Done`, or `Failed` for no such account.
    /// An Astron account's name (`#ID`) without a record gets a bare one holding the ban.
    BanSet {
        name: String,
        until: u64,
        reason: String,
    },
    /// An account's ban: `Ban(Some((until, reason)))`, or `Ban(None)` for no such account.
    BanGet {
        name: String,
    },
    /// At most `max` pending wish names, oldest first.
    PendingNames {
        max: u16,
    },
    /// The verdict on avatar `doid`'s pending wish name: `Done`, or `Failed` when it has none.
    NameReview {
        doid: u32,
        approve: bool,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Created(u32),
    /// Unknown object, a field of another class, or no doid left.
    Failed,
    /// The engine failed (disk full, connection lost): the whole batch was rolled back.
    StorageError(String),
    Object {
        class: u16,
        fields: Vec<(u16, Vec<u8>)>,
    },
    /// A Set or Update applied.
    Done,
    /// An Update whose criteria did not hold: the current values of its criteria fields.
    Mismatch(Vec<(u16, Vec<u8>)>),
    Deleted,
    Account(Option<Vec<u8>>),
    /// AccountCreate: whether the account was made (false: the name was taken).
    AccountCreated(bool),
    Class(Option<u16>),
    Ban(Option<(u64, String)>),
    PendingNames(Vec<PendingName>),
}

/// One request on its way through the worker: what to do, who to answer, and the outcome.
#[derive(Debug)]
pub struct Job {
    pub op: Op,
    pub sender: u64,
    pub context: u32,
    pub msgtype: u16,
    pub outcome: Outcome,
    /// When the role queued it (for the latency figures).
    pub queued: std::time::Instant,
    /// What befell its batch, told on the batch's first job only.
    pub note: Option<BatchNote>,
}

impl Job {
    /// Whether the job changed something in its (committed) transaction.
    fn wrote(&self) -> bool {
        matches!(
            (&self.op, &self.outcome),
            (
                _,
                Outcome::Created(_) | Outcome::Deleted | Outcome::AccountCreated(true)
            ) | (
                Op::Set { .. } | Op::Update { .. } | Op::AccountSet { .. },
                Outcome::Done
            )
        )
    }
}

/// What the store tells the role about a batch beyond each job's outcome (for the metrics
/// and the events).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchNote {
    /// The batch failed as a whole (every job's outcome is `StorageError`).
    pub failed: bool,
    /// The engine's connection was reopened before the batch.
    pub reconnected: bool,
    /// The engine's connection was found lost during the batch: why.
    pub lost: Option<String>,
    /// Writes began to fail on a connection that still reads (a full or read-only disk):
    /// why. Told once, when the first write fails after writes worked.
    pub unwritable: Option<String>,
    /// A write committed again after `unwritable`.
    pub writable: bool,
}

/// Why a store cannot be opened.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a storage engine offers the store: one transaction at a time, rows of objects and
/// fields. Errors are the engine's, as text (they fail the whole batch).
pub trait Backend: Send + 'static {
    fn begin(&mut self) -> Result<(), String>;
    fn commit(&mut self) -> Result<(), String>;
    fn rollback(&mut self);
    fn class_of(&mut self, doid: Doid) -> Result<Option<u16>, String>;
    fn insert_object(&mut self, doid: Doid, class: u16, class_name: &str) -> Result<(), String>;
    /// Removes the object and its fields; false if there was none.
    fn delete_object(&mut self, doid: Doid) -> Result<bool, String>;
    fn value(&mut self, doid: Doid, field: u16) -> Result<Option<Vec<u8>>, String>;
    /// Every stored field, ascending id.
    fn all_fields(&mut self, doid: Doid) -> Result<Vec<(u16, Vec<u8>)>, String>;
    fn write(
        &mut self,
        doid: Doid,
        field: u16,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<(), String>;
    /// The lowest doid in `min..=max` no object has.
    fn free_doid(&mut self, min: u32, max: u32) -> Result<Option<u32>, String>;
    fn set_next_doid(&mut self, next: u32) -> Result<(), String>;
    /// Every stored doid, ascending (for export).
    fn doids(&mut self) -> Result<Vec<Doid>, String>;
    /// An account record by name.
    fn account_get(&mut self, name: &str) -> Result<Option<Vec<u8>>, String>;
    fn account_put(&mut self, name: &str, data: &[u8]) -> Result<(), String>;
    /// Stores an account only if none has the name; false if one had.
    fn account_insert(&mut self, name: &str, data: &[u8]) -> Result<bool, String>;
    /// Every account name, ascending (for export).
    fn account_names(&mut self) -> Result<Vec<String>, String>;
    /// Replaces account `name`'s rows of `pending_names` with `rows` (use `put_account`).
    fn pending_replace(&mut self, name: &str, rows: &[PendingName]) -> Result<(), String>;
    /// At most `max` rows of `pending_names`, oldest (`since`, then doid) first.
    fn pending_list(&mut self, max: u16) -> Result<Vec<PendingName>, String>;
    /// The account whose avatar `doid` has a pending wish name.
    fn pending_account(&mut self, doid: u32) -> Result<Option<String>, String>;
    /// Before each batch: `Ok(None)` the engine is as it was; `Ok(Some(next))` its connection
    /// was reopened and `next` is the stored doid counter (a commit whose answer was lost may
    /// have moved it); `Err` it is unavailable, and the batch fails untried.
    fn ready(&mut self) -> Result<Option<u32>, String> {
        Ok(None)
    }
    /// After a failed batch was rolled back: whether the connection itself is lost (it is
    /// reopened by a later `ready`).
    fn lost(&mut self) -> bool {
        false
    }
}

/// The database's state machine over a backend: the doid counter and the rules of each
/// operation, the same for every engine.
pub struct Store<B: Backend> {
    backend: B,
    schema: Arc<Schema>,
    next_doid: u32,
    min_doid: Doid,
    max_doid: Doid,
    /// Writes fail on a connection that still reads (told once per episode).
    unwritable: bool,
    /// Batches failed since the last one that committed (one log line per episode).
    failing: u64,
}

impl<B: Backend> Store<B> {
    pub fn new(
        backend: B,
        schema: Arc<Schema>,
        stored_next: u32,
        min_doid: Doid,
        max_doid: Doid,
    ) -> Store<B> {
        Store {
            backend,
            schema,
            next_doid: stored_next.max(min_doid),
            min_doid,
            max_doid,
            unwritable: false,
            failing: 0,
        }
    }

    pub fn next_doid(&self) -> u32 {
        self.next_doid
    }

    /// The engine itself, for the operator tools.
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// The engine, for tests that put it in trouble.
    #[cfg(test)]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Applies every job in one transaction. A batch that fails on a connection that still
    /// works (a full or read-only disk, one bad request) is tried again one job per
    /// transaction, so that reads and the writes that fit are still answered; on a lost
    /// connection the whole batch fails. A commit whose answer is lost fails too: it may
    /// have landed, but is never acknowledged.
    pub fn apply(&mut self, jobs: &mut [Job]) {
        let mut note = BatchNote::default();
        match self.backend.ready() {
            Ok(None) => {}
            Ok(Some(stored)) => {
                // Never back: a doid handed out and committed is above both.
                self.next_doid = self.next_doid.max(stored).max(self.min_doid);
                note.reconnected = true;
                // A new connection: whether it writes is learnt afresh.
                self.unwritable = false;
            }
            Err(e) => {
                note.failed = true;
                for job in jobs.iter_mut() {
                    job.outcome = Outcome::StorageError(e.clone());
                }
                if let Some(first) = jobs.first_mut() {
                    first.note = Some(note);
                }
                return;
            }
        }
        match self.transaction(jobs) {
            Ok(()) => self.committed(jobs, &mut note),
            Err(e) => {
                note.failed = true;
                if self.failing == 0 {
                    log::error!("database: a batch of {} requests failed: {e}", jobs.len());
                } else {
                    log::debug!("database: a batch of {} requests failed: {e}", jobs.len());
                }
                self.failing += 1;
                if self.backend.lost() {
                    note.lost = Some(e.clone());
                    for job in jobs.iter_mut() {
                        job.outcome = Outcome::StorageError(e.clone());
                    }
                } else if jobs.len() > 1 {
                    self.one_by_one(jobs, &mut note);
                } else {
                    jobs[0].outcome = Outcome::StorageError(e.clone());
                    self.refused_write(&e, &mut note);
                }
            }
        }
        if note != BatchNote::default() {
            if let Some(first) = jobs.first_mut() {
                first.note = Some(note);
            }
        }
    }

    /// `jobs` in one transaction, rolled back (doid counter included) on any error.
    fn transaction(&mut self, jobs: &mut [Job]) -> Result<(), String> {
        let start_doid = self.next_doid;
        let result = (|| -> Result<(), String> {
            self.backend.begin()?;
            for job in jobs.iter_mut() {
                job.outcome = self.apply_one(&job.op)?;
            }
            if self.next_doid != start_doid {
                self.backend.set_next_doid(self.next_doid)?;
            }
            self.backend.commit()
        })();
        if result.is_err() {
            self.backend.rollback();
            self.next_doid = start_doid;
        }
        result
    }

    /// A failed batch's jobs again, each in its own transaction, until the connection is
    /// found lost (the rest then fail untried).
    fn one_by_one(&mut self, jobs: &mut [Job], note: &mut BatchNote) {
        let mut lost: Option<String> = None;
        for i in 0..jobs.len() {
            if let Some(e) = &lost {
                jobs[i].outcome = Outcome::StorageError(e.clone());
                continue;
            }
            match self.transaction(&mut jobs[i..=i]) {
                Ok(()) => self.committed(&jobs[i..=i], note),
                Err(e) => {
                    jobs[i].outcome = Outcome::StorageError(e.clone());
                    if self.backend.lost() {
                        note.lost = Some(e.clone());
                        lost = Some(e);
                    } else {
                        self.refused_write(&e, note);
                    }
                }
            }
        }
    }

    /// A transaction failed on a connection that still works: writes are refused (an
    /// episode begins, told once).
    fn refused_write(&mut self, why: &str, note: &mut BatchNote) {
        if !self.unwritable {
            self.unwritable = true;
            log::error!(
                "database: the store refuses writes ({why}); reads are served, writes fail \
                 until it accepts them again"
            );
            note.unwritable = Some(why.to_string());
        }
    }

    /// `jobs` committed: an episode of failures or refused writes is over if they wrote.
    fn committed(&mut self, jobs: &[Job], note: &mut BatchNote) {
        let wrote = jobs.iter().any(|j| j.wrote());
        if self.failing > 0 && (wrote || !self.unwritable) {
            log::warn!(
                "database: transactions commit again after {} failed batches",
                self.failing
            );
            self.failing = 0;
        }
        if self.unwritable && wrote {
            self.unwritable = false;
            note.writable = true;
        }
    }

    #[allow(clippy::too_many_lines)] // one short arm per message type or key
    fn apply_one(&mut self, op: &Op) -> Result<Outcome, String> {
        let schema = Arc::clone(&self.schema);
        if let Op::AvatarCreate {
            name,
            slot,
            slots,
            class,
            fields,
        } = op
        {
            return self.create_avatar(name, *slot, *slots, *class, fields);
        }
        if let Op::Create { class, fields } = op {
            return self.create_object(*class, fields);
        }
        if let Op::AvatarDelete {
            name,
            slot,
            slots,
            doid,
        } = op
        {
            return self.delete_avatar(name, *slot, *slots, *doid);
        }
        let b = &mut self.backend;
        Ok(match op {
            Op::Create { .. } | Op::AvatarCreate { .. } | Op::AvatarDelete { .. } => {
                unreachable!("handled above")
            }
            Op::Get { doid, fields } => {
                let Some(class) = b.class_of(*doid)? else {
                    return Ok(Outcome::Failed);
                };
                let out = match fields {
                    None => b.all_fields(*doid)?,
                    Some(ids) => {
                        // Fields of another class are left out (astrond's answer); a lone
                        // GET_FIELD of one then fails for want of a value.
                        let mut out = Vec::new();
                        for &f in ids.iter().filter(|f| schema.class_has_field(class, **f)) {
                            if let Some(v) = b.value(*doid, f)? {
                                out.push((f, v));
                            }
                        }
                        out
                    }
                };
                Outcome::Object { class, fields: out }
            }
            Op::Set { doid, fields } => {
                let Some(class) = b.class_of(*doid)? else {
                    return Ok(Outcome::Failed);
                };
                if fields
                    .iter()
                    .any(|(f, _)| !schema.class_has_field(class, *f))
                {
                    return Ok(Outcome::Failed);
                }
                for (f, v) in fields {
                    b.write(*doid, *f, schema.field_name(class, *f), v.as_deref())?;
                }
                Outcome::Done
            }
            Op::Update {
                doid,
                criteria,
                fields,
            } => {
                let Some(class) = b.class_of(*doid)? else {
                    return Ok(Outcome::Failed);
                };
                if fields
                    .iter()
                    .map(|(f, _)| f)
                    .chain(criteria.iter().map(|(f, _)| f))
                    .any(|f| !schema.class_has_field(class, *f))
                {
                    return Ok(Outcome::Failed);
                }
                let mut holds = true;
                let mut current = Vec::new();
                for (f, want) in criteria {
                    let have = b.value(*doid, *f)?;
                    if have.as_deref() != want.as_deref() {
                        holds = false;
                    }
                    if let Some(v) = have {
                        current.push((*f, v));
                    }
                }
                if !holds {
                    return Ok(Outcome::Mismatch(current));
                }
                for (f, v) in fields {
                    b.write(*doid, *f, schema.field_name(class, *f), Some(v))?;
                }
                Outcome::Done
            }
            Op::ClassOf { doid, .. } => Outcome::Class(b.class_of(*doid)?),
            Op::Delete { doid } => {
                if b.delete_object(*doid)? {
                    Outcome::Deleted
                } else {
                    Outcome::Failed
                }
            }
            Op::AccountGet { name } => Outcome::Account(b.account_get(name)?),
            Op::AccountSet { name, data } => {
                let data = match b.account_get(name)? {
                    Some(stored) => keep_operator_state(&stored, data),
                    None => data.clone(),
                };
                put_account(b, name, &data)?;
                Outcome::Done
            }
            Op::AccountCreate { name, data } => {
                let made = b.account_insert(name, data)?;
                if made {
                    b.pending_replace(name, &pending_rows(name, data))?;
                }
                Outcome::AccountCreated(made)
            }
            Op::BanSet {
                name,
                until,
                reason,
            } => {
                let data = match b.account_get(name)? {
                    Some(data) => data,
                    // An Astron account (`#ID`) has no record until it is banned: a bare
                    // one holds the ban (nothing to lift when there is none).
                    None if astron_account_id(name).is_some() => {
                        if *until == 0 {
                            return Ok(Outcome::Done);
                        }
                        Account::new(0, 0).encode()
                    }
                    None => return Ok(Outcome::Failed),
                };
                let Some(mut a) = Account::decode(&data, 0) else {
                    log::error!("database: the record of account {name:?} is unreadable");
                    return Ok(Outcome::Failed);
                };
                a.banned_until = *until;
                a.ban_reason = if *until == 0 {
                    String::new()
                } else {
                    reason.clone()
                };
                put_account(b, name, &a.encode())?;
                Outcome::Done
            }
            Op::BanGet { name } => Outcome::Ban(
                b.account_get(name)?
                    .and_then(|d| Account::decode(&d, 0))
                    .map(|a| (a.banned_until, a.ban_reason)),
            ),
            Op::PendingNames { max } => Outcome::PendingNames(b.pending_list(*max)?),
            Op::NameReview { doid, approve } => {
                let Some(name) = b.pending_account(*doid)? else {
                    return Ok(Outcome::Failed);
                };
                let Some(mut a) = b.account_get(&name)?.and_then(|d| Account::decode(&d, 0)) else {
                    return Ok(Outcome::Failed);
                };
                let Some(slot) = a
                    .slots
                    .iter_mut()
                    .find(|s| s.doid == *doid && s.name_state == NAME_PENDING)
                else {
                    return Ok(Outcome::Failed);
                };
                slot.name_state = if *approve {
                    NAME_APPROVED
                } else {
                    NAME_REJECTED
                };
                put_account(b, &name, &a.encode())?;
                Outcome::Done
            }
        })
    }

    /// A new object of `class` with `fields`, on the next free doid of the generate range.
    fn create_object(&mut self, class: u16, fields: &[(u16, Vec<u8>)]) -> Result<Outcome, String> {
        let schema = Arc::clone(&self.schema);
        let b = &mut self.backend;
        let doid = if self.next_doid != 0 && self.next_doid <= self.max_doid {
            let d = self.next_doid;
            self.next_doid = self.next_doid.wrapping_add(1);
            if b.class_of(d)?.is_some() {
                // A doid stored by other means (an import): never overwrite it.
                log::error!("database: doid {d} exists already; create refused");
                return Ok(Outcome::Failed);
            }
            d
        } else {
            // The range is used up: reuse the lowest doid of a deleted object (as astrond
            // does), or fail when every doid is live.
            match b.free_doid(self.min_doid, self.max_doid)? {
                Some(d) => {
                    log::warn!("database: generate range used up; reusing deleted doid {d}");
                    d
                }
                None => {
                    log::error!(
                        "database: every doid of the generate range is in use; create refused"
                    );
                    return Ok(Outcome::Failed);
                }
            }
        };
        b.insert_object(doid, class, schema.class_name(class))?;
        for (f, v) in fields {
            b.write(doid, *f, schema.field_name(class, *f), Some(v))?;
        }
        Ok(Outcome::Created(doid))
    }

    /// `Op::AvatarCreate`: the object and the account's slot, in the batch's transaction.
    fn create_avatar(
        &mut self,
        name: &str,
        slot: u8,
        slots: u8,
        class: u16,
        fields: &[(u16, Vec<u8>)],
    ) -> Result<Outcome, String> {
        let Some(data) = self.backend.account_get(name)? else {
            return Ok(Outcome::Failed);
        };
        let Some(mut account) = Account::decode(&data, slots) else {
            log::error!("database: the record of account {name:?} is unreadable");
            return Ok(Outcome::Failed);
        };
        if account.slots.get(slot as usize).is_none_or(|s| s.doid != 0) {
            return Ok(Outcome::Failed);
        }
        let Outcome::Created(doid) = self.create_object(class, fields)? else {
            return Ok(Outcome::Failed);
        };
        account.slots[slot as usize] = Slot {
            doid,
            wish_name: String::new(),
            name_state: NAME_NONE,
            wish_unix: 0,
        };
        put_account(&mut self.backend, name, &account.encode())?;
        Ok(Outcome::Created(doid))
    }

    /// `Op::AvatarDelete`: the object and the account's slot, in the batch's transaction.
    fn delete_avatar(
        &mut self,
        name: &str,
        slot: u8,
        slots: u8,
        doid: u32,
    ) -> Result<Outcome, String> {
        let Some(data) = self.backend.account_get(name)? else {
            return Ok(Outcome::Failed);
        };
        let Some(mut account) = Account::decode(&data, slots) else {
            log::error!("database: the record of account {name:?} is unreadable");
            return Ok(Outcome::Failed);
        };
        if doid == 0
            || account
                .slots
                .get(slot as usize)
                .is_none_or(|s| s.doid != doid)
        {
            return Ok(Outcome::Failed);
        }
        // An object already gone (deleted by hand) still frees its slot.
        self.backend.delete_object(doid)?;
        account.slots[slot as usize] = Slot::default();
        put_account(&mut self.backend, name, &account.encode())?;
        Ok(Outcome::Deleted)
    }
}

/// A record the ClientAgent writes whole (DBSERVER_ACCOUNT_SET) over the `stored` one: what
/// the operator owns survives a session's older copy. The ban is always the stored one (the
/// ClientAgent never sets it), and a verdict on a wish name (approved, rejected) is kept where
/// the written record still has that same name pending. A record either cannot read is
/// written as given.
fn keep_operator_state(stored: &[u8], written: &[u8]) -> Vec<u8> {
    let (Some(old), Some(mut new)) = (Account::decode(stored, 0), Account::decode(written, 0))
    else {
        return written.to_vec();
    };
    if old.banned_until == new.banned_until
        && old.ban_reason == new.ban_reason
        && !old
            .slots
            .iter()
            .zip(&new.slots)
            .any(|(o, n)| verdict_lost(o, n))
    {
        return written.to_vec();
    }
    new.banned_until = old.banned_until;
    new.ban_reason = old.ban_reason;
    for (o, n) in old.slots.iter().zip(new.slots.iter_mut()) {
        if verdict_lost(o, n) {
            n.name_state = o.name_state;
        }
    }
    new.encode()
}

/// Whether writing slot `n` over slot `o` would undo the operator's verdict on its name.
fn verdict_lost(o: &Slot, n: &Slot) -> bool {
    matches!(o.name_state, NAME_APPROVED | NAME_REJECTED)
        && n.name_state == NAME_PENDING
        && o.doid == n.doid
        && o.wish_name == n.wish_name
}

impl<B: Backend> Worker for Store<B> {
    fn run(&mut self, batch: Vec<AnyJob>) -> Vec<AnyJob> {
        let mut jobs: Vec<Job> = batch
            .into_iter()
            .map(|w| *w.downcast::<Job>().expect("the database role sends jobs"))
            .collect();
        self.apply(&mut jobs);
        jobs.into_iter().map(|j| Box::new(j) as AnyJob).collect()
    }
}

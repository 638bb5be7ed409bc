//! The Database role's storage: jobs (one per DBSERVER request) applied in batches, one
//! transaction per batch, each answered only once its transaction is durable. SQLite (WAL,
//! synchronous=FULL) is the embedded default; the schema is plain enough to read with the
//! sqlite3 tool: `objects(doid, dclass, class_name)` and `fields(doid, field, name, value)`,
//! values in their packed wire form.

use super::{Schema, Work, Worker};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

/// The schema version this build writes; older ones are migrated, newer ones refused.
pub const SCHEMA_VERSION: i64 = 1;

/// What a request asks of the store. Values are validated by the role beforehand.
#[derive(Debug)]
pub enum Op {
    Create {
        class: u16,
        fields: Vec<(u16, Vec<u8>)>,
    },
    /// `fields` None: every stored field (GET_ALL).
    Get {
        doid: u32,
        fields: Option<Vec<u16>>,
    },
    /// Each field set to `Some(value)` or deleted (`None`).
    Set {
        doid: u32,
        fields: Vec<(u16, Option<Vec<u8>>)>,
    },
    /// Applies `fields` only if every criterion holds: `Some(v)` = the stored value is `v`,
    /// `None` = the field is empty.
    Update {
        doid: u32,
        criteria: Vec<(u16, Option<Vec<u8>>)>,
        fields: Vec<(u16, Vec<u8>)>,
    },
    Delete {
        doid: u32,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Created(u32),
    /// Unknown object, a field of another class, no doid left, or a storage error.
    Failed,
    Object {
        class: u16,
        fields: Vec<(u16, Vec<u8>)>,
    },
    /// A Set or Update applied.
    Done,
    /// An Update whose criteria did not hold: the current values of its criteria fields.
    Mismatch(Vec<(u16, Vec<u8>)>),
    Deleted,
}

/// One request on its way through the worker: what to do, who to answer, and the outcome.
#[derive(Debug)]
pub struct Job {
    pub op: Op,
    pub sender: u64,
    pub context: u32,
    pub msgtype: u16,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Connection,
    schema: Arc<Schema>,
    next_doid: u32,
    min_doid: u32,
    max_doid: u32,
}

impl SqliteStore {
    /// Opens (creating if needed) `directory/otpd.sqlite3` and holds it exclusively. Fails,
    /// with a message saying why, on a file another process holds, a read-only or unwritable
    /// file, or a schema from a newer otpd.
    pub fn open(
        directory: &Path,
        schema: Arc<Schema>,
        min_doid: u32,
        max_doid: u32,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(directory)
            .map_err(|e| StoreError(format!("{}: {e}", directory.display())))?;
        let path = directory.join("otpd.sqlite3");
        let what = |e: rusqlite::Error| StoreError(format!("{}: {e}", path.display()));
        let conn = Connection::open(&path).map_err(what)?;
        conn.busy_timeout(std::time::Duration::from_millis(0))
            .map_err(what)?;
        // Exclusive: a second otpd on the same file is refused instead of interleaving writes.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(what)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(what)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError(format!(
                "{}: cannot switch to WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(what)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(what)?;
        conn.execute_batch("BEGIN EXCLUSIVE")
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                    StoreError(format!(
                        "{}: locked by another process (is another otpd using this directory?)",
                        path.display()
                    ))
                }
                _ => what(e),
            })?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS objects (
                 doid INTEGER PRIMARY KEY,
                 dclass INTEGER NOT NULL,
                 class_name TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS fields (
                 doid INTEGER NOT NULL REFERENCES objects(doid) ON DELETE CASCADE,
                 field INTEGER NOT NULL,
                 name TEXT NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (doid, field)) WITHOUT ROWID;",
        )
        .map_err(what)?;
        let version: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(what)?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION],
                )
                .map_err(what)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(StoreError(format!(
                    "{}: schema version {v} is newer than this otpd's ({SCHEMA_VERSION}); \
                     run a newer otpd, or export and import",
                    path.display()
                )));
            }
            Some(_) => {} // version 1 is the only one so far: nothing to migrate
        }
        let stored: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'next_doid'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(what)?;
        let next_doid = (stored.unwrap_or(0).clamp(0, u32::MAX as i64) as u32).max(min_doid);
        conn.execute_batch("COMMIT").map_err(what)?;
        log::info!(
            "database: {} (SQLite {}, WAL, synchronous=FULL); next doid {next_doid}",
            path.display(),
            rusqlite::version()
        );
        Ok(SqliteStore {
            conn,
            schema,
            next_doid,
            min_doid,
            max_doid,
        })
    }

    /// Applies every job in one transaction; on a storage error the whole batch fails.
    pub fn apply(&mut self, jobs: &mut [Job]) {
        let start_doid = self.next_doid;
        let result = (|| -> Result<(), rusqlite::Error> {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            for job in jobs.iter_mut() {
                job.outcome = self.apply_one(&job.op)?;
            }
            if self.next_doid != start_doid {
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('next_doid', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![self.next_doid as i64],
                )?;
            }
            self.conn.execute_batch("COMMIT")
        })();
        if let Err(e) = result {
            log::error!("database: a batch of {} requests failed: {e}", jobs.len());
            let _ = self.conn.execute_batch("ROLLBACK");
            self.next_doid = start_doid;
            for job in jobs.iter_mut() {
                job.outcome = Outcome::Failed;
            }
        }
    }

    fn class_of(&self, doid: u32) -> Result<Option<u16>, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT dclass FROM objects WHERE doid = ?1")?
            .query_row(params![doid], |r| r.get::<_, i64>(0))
            .optional()
            .map(|c| c.map(|c| c as u16))
    }

    /// The lowest doid of the generate range no object has.
    fn free_doid(&self) -> Result<Option<u32>, rusqlite::Error> {
        if self.class_of(self.min_doid)?.is_none() {
            return Ok(Some(self.min_doid));
        }
        self.conn
            .prepare_cached(
                "SELECT o.doid + 1 FROM objects o
                 WHERE o.doid >= ?1 AND o.doid < ?2
                   AND NOT EXISTS (SELECT 1 FROM objects p WHERE p.doid = o.doid + 1)
                 ORDER BY o.doid LIMIT 1",
            )?
            .query_row(params![self.min_doid, self.max_doid], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|d| d.map(|d| d as u32))
    }

    fn value(&self, doid: u32, field: u16) -> Result<Option<Vec<u8>>, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT value FROM fields WHERE doid = ?1 AND field = ?2")?
            .query_row(params![doid, field], |r| r.get(0))
            .optional()
    }

    fn write(&self, doid: u32, field: u16, value: Option<&[u8]>) -> Result<(), rusqlite::Error> {
        match value {
            Some(v) => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO fields (doid, field, name, value) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(doid, field) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![doid, field, self.schema.field_name(field), v])?;
            }
            None => {
                self.conn
                    .prepare_cached("DELETE FROM fields WHERE doid = ?1 AND field = ?2")?
                    .execute(params![doid, field])?;
            }
        }
        Ok(())
    }

    fn apply_one(&mut self, op: &Op) -> Result<Outcome, rusqlite::Error> {
        let schema = Arc::clone(&self.schema);
        Ok(match op {
            Op::Create { class, fields } => {
                let doid = if self.next_doid != 0 && self.next_doid <= self.max_doid {
                    let d = self.next_doid;
                    self.next_doid = self.next_doid.wrapping_add(1);
                    if self.class_of(d)?.is_some() {
                        // A doid stored by other means (an import): never overwrite it.
                        log::error!("database: doid {d} exists already; create refused");
                        return Ok(Outcome::Failed);
                    }
                    d
                } else {
                    // The range is used up: reuse the lowest doid of a deleted object (as
                    // astrond does), or fail when every doid is live.
                    match self.free_doid()? {
                        Some(d) => {
                            log::warn!(
                                "database: generate range used up; reusing deleted doid {d}"
                            );
                            d
                        }
                        None => {
                            log::error!("database: every doid of the generate range is in use; create refused");
                            return Ok(Outcome::Failed);
                        }
                    }
                };
                self.conn
                    .prepare_cached(
                        "INSERT INTO objects (doid, dclass, class_name) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![doid, class, schema.class_name(*class)])?;
                for (f, v) in fields {
                    self.write(doid, *f, Some(v))?;
                }
                Outcome::Created(doid)
            }
            Op::Get { doid, fields } => {
                let Some(class) = self.class_of(*doid)? else {
                    return Ok(Outcome::Failed);
                };
                let mut out = Vec::new();
                match fields {
                    None => {
                        let mut st = self.conn.prepare_cached(
                            "SELECT field, value FROM fields WHERE doid = ?1 ORDER BY field",
                        )?;
                        let rows = st.query_map(params![doid], |r| {
                            Ok((r.get::<_, i64>(0)? as u16, r.get::<_, Vec<u8>>(1)?))
                        })?;
                        for row in rows {
                            out.push(row?);
                        }
                    }
                    Some(ids) => {
                        // Fields of another class are left out (astrond's answer); a lone
                        // GET_FIELD of one then fails for want of a value.
                        for &f in ids.iter().filter(|f| schema.class_has_field(class, **f)) {
                            if let Some(v) = self.value(*doid, f)? {
                                out.push((f, v));
                            }
                        }
                    }
                }
                Outcome::Object { class, fields: out }
            }
            Op::Set { doid, fields } => {
                let Some(class) = self.class_of(*doid)? else {
                    return Ok(Outcome::Failed);
                };
                if fields
                    .iter()
                    .any(|(f, _)| !schema.class_has_field(class, *f))
                {
                    return Ok(Outcome::Failed);
                }
                for (f, v) in fields {
                    self.write(*doid, *f, v.as_deref())?;
                }
                Outcome::Done
            }
            Op::Update {
                doid,
                criteria,
                fields,
            } => {
                let Some(class) = self.class_of(*doid)? else {
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
                    let have = self.value(*doid, *f)?;
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
                    self.write(*doid, *f, Some(v))?;
                }
                Outcome::Done
            }
            Op::Delete { doid } => {
                let n = self
                    .conn
                    .prepare_cached("DELETE FROM objects WHERE doid = ?1")?
                    .execute(params![doid])?;
                if n == 0 {
                    Outcome::Failed
                } else {
                    Outcome::Deleted
                }
            }
        })
    }
}

impl Worker for SqliteStore {
    fn run(&mut self, batch: Vec<Work>) -> Vec<Work> {
        let mut jobs: Vec<Job> = batch
            .into_iter()
            .map(|w| *w.downcast::<Job>().expect("the database role sends jobs"))
            .collect();
        self.apply(&mut jobs);
        jobs.into_iter().map(|j| Box::new(j) as Work).collect()
    }
}

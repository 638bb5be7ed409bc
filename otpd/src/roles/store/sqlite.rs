//! The embedded engine: one SQLite file, `otpd.sqlite3` in the configured directory, in WAL
//! mode with synchronous=FULL (a commit is on disk before it is answered), held exclusively;
//! created mode 0600 in a folder created 0700 (`private_fs`). A full or read-only disk fails
//! the writes and keeps the reads; a connection that no longer reads is reopened with backoff.

use super::{Backend, PendingName, Schema, Store, StoreError, SCHEMA_VERSION};
use otp_wire::Doid;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The wait before the second attempt to reopen the file; it doubles after each failed
/// attempt, up to `RETRY_MAX` (the first attempt is made on the first batch after the loss).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The schema of version `SCHEMA_VERSION`, made where missing.
const TABLES: &str =
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
             PRIMARY KEY (doid, field)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS accounts (
             name TEXT PRIMARY KEY,
             data BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS pending_names (
             doid INTEGER PRIMARY KEY,
             account TEXT NOT NULL,
             wish_name TEXT NOT NULL,
             since INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS pending_names_account ON pending_names (account);
         CREATE INDEX IF NOT EXISTS pending_names_since ON pending_names (since, doid);";

pub struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
    /// Set while the file is closed for want of a working connection.
    down: Option<Down>,
}

/// A connection given up: since when, why, and when the next attempt to reopen may be made.
struct Down {
    since: Instant,
    why: String,
    retry_at: Instant,
    delay: Duration,
    attempts: u32,
}

fn e(err: rusqlite::Error) -> String {
    err.to_string()
}

/// Opens (creating if needed) `directory/otpd.sqlite3`. Fails, saying why, on a file another
/// process holds, a file that is not a database or cannot be written, or a newer schema.
pub fn open(
    directory: &Path,
    schema: Arc<Schema>,
    min_doid: Doid,
    max_doid: Doid,
) -> Result<Store<SqliteBackend>, StoreError> {
    // The file holds account names and password hashes: a new folder is 0700 and a new file
    // 0600, made here before SQLite opens it (SQLite gives its -wal and -shm files the mode of
    // the database file).
    crate::private_fs::create_dir_all(directory)
        .map_err(|e| StoreError(format!("{}: {e}", directory.display())))?;
    let path = directory.join("otpd.sqlite3");
    crate::private_fs::create_file_if_missing(&path)
        .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
    if let Some(mode) = crate::private_fs::open_to_others(&path) {
        log::warn!(
            "database: {} may be read by other users (mode {mode:o}); it holds account names and \
             password hashes: chmod 600 it (otpd makes new database files 600)",
            path.display()
        );
    }
    let (conn, next) = connect(&path)?;
    let backend = SqliteBackend {
        conn,
        path: path.clone(),
        down: None,
    };
    let store = Store::new(backend, schema, next, min_doid, max_doid);
    log::info!(
        "database: {} (SQLite {}, WAL, synchronous=FULL); next doid {}",
        path.display(),
        rusqlite::version(),
        store.next_doid()
    );
    Ok(store)
}

/// Opens the file for writing (a file SQLite could only open read-only is refused), takes it
/// exclusively, creates the schema if needed, and reads the stored doid counter.
fn connect(path: &Path) -> Result<(Connection, u32), StoreError> {
    let what = |e: rusqlite::Error| StoreError(format!("{}: {e}", path.display()));
    let conn = Connection::open(path).map_err(what)?;
    if conn
        .is_readonly(rusqlite::DatabaseName::Main)
        .unwrap_or(false)
    {
        return Err(StoreError(format!(
            "{}: opened read-only (a read-only file, folder or file system)",
            path.display()
        )));
    }
    conn.busy_timeout(std::time::Duration::from_millis(0))
        .map_err(what)?;
    // Exclusive: a second otpd on the same file is refused instead of interleaving writes.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(what)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError(format!(
                    "{}: locked by another process (is another otpd using this directory?)",
                    path.display()
                ))
            }
            _ => what(e),
        })?;
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
    conn.execute_batch(TABLES).map_err(what)?;
    let meta = |key: &str| -> Result<Option<i64>, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(what)
    };
    let mut migrate_from = None;
    match meta("schema_version")? {
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
                 run a newer otpd, or export with it and import here",
                path.display()
            )));
        }
        Some(v) => migrate_from = Some(v),
    }
    let next = meta("next_doid")?.unwrap_or(0).clamp(0, u32::MAX as i64) as u32;
    let mut backend = SqliteBackend {
        conn,
        path: path.to_path_buf(),
        down: None,
    };
    if let Some(v) = migrate_from.filter(|v| *v < SCHEMA_VERSION) {
        migrate(&mut backend, v, &path)?;
    }
    let conn = backend.conn;
    conn.execute_batch("COMMIT").map_err(what)?;
    Ok((conn, next))
}

/// Brings a store of schema version `from` to `SCHEMA_VERSION`, in the open's transaction.
/// 1 -> 2: the pending names' index, filled from the accounts once.
fn migrate(backend: &mut SqliteBackend, from: i64, path: &Path) -> Result<(), StoreError> {
    let n = super::index_pending_names(backend)
        .and_then(|n| {
            backend
                .conn
                .execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                    params![SCHEMA_VERSION],
                )
                .map(|_| n)
                .map_err(e)
        })
        .map_err(|err| StoreError(format!("{}: migration: {err}", path.display())))?;
    log::info!(
        "database: {} migrated from schema version {from} to {SCHEMA_VERSION} ({n} pending names indexed)",
        path.display()
    );
    Ok(())
}

impl Backend for SqliteBackend {
    fn begin(&mut self) -> Result<(), String> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(e)
    }
    fn commit(&mut self) -> Result<(), String> {
        self.conn.execute_batch("COMMIT").map_err(e)
    }
    fn rollback(&mut self) {
        // SQLite may have rolled back by itself (a full disk, an I/O error): no transaction
        // is then active, and this fails harmlessly.
        let _ = self.conn.execute_batch("ROLLBACK");
    }
    fn ready(&mut self) -> Result<Option<u32>, String> {
        let Some(down) = &mut self.down else {
            return Ok(None);
        };
        let now = Instant::now();
        if now < down.retry_at {
            return Err(format!(
                "{}: unusable ({}); reopening",
                self.path.display(),
                down.why
            ));
        }
        match connect(&self.path) {
            Ok((conn, next)) => {
                log::warn!(
                    "database: {} reopened after {} ms ({} failed attempts); stored next doid \
                     {next}",
                    self.path.display(),
                    now.saturating_duration_since(down.since).as_millis(),
                    down.attempts
                );
                self.conn = conn;
                self.down = None;
                Ok(Some(next))
            }
            Err(err) => {
                log::debug!("database: reopening failed: {err}");
                down.attempts += 1;
                down.retry_at = now + down.delay;
                down.delay = (down.delay * 2).min(RETRY_MAX);
                Err(format!("{err}; reopening"))
            }
        }
    }
    /// A failed transaction leaves the connection usable if it still reads (a full disk, a
    /// refused write); otherwise it is closed, to be reopened by a later `ready`.
    fn lost(&mut self) -> bool {
        if self.down.is_some() {
            return true;
        }
        let probe = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(e)
            .and_then(|_| {
                if self.conn.is_autocommit() {
                    Ok(())
                } else {
                    Err("a transaction is still open after its rollback".to_string())
                }
            });
        let Err(why) = probe else {
            return false;
        };
        log::error!(
            "database: {} unusable ({why}); closed, requests fail until it is reopened",
            self.path.display()
        );
        // Closed now (the file is held exclusively, and a reopen needs it free); an
        // in-memory stand-in holds the place meanwhile, never used while `down` is set.
        match Connection::open_in_memory() {
            Ok(stand_in) => drop(std::mem::replace(&mut self.conn, stand_in)),
            Err(err) => log::error!("database: cannot close the connection: {err}"),
        }
        let now = Instant::now();
        self.down = Some(Down {
            since: now,
            why,
            retry_at: now,
            delay: RETRY_FIRST,
            attempts: 0,
        });
        true
    }
    fn class_of(&mut self, doid: Doid) -> Result<Option<u16>, String> {
        self.conn
            .prepare_cached("SELECT dclass FROM objects WHERE doid = ?1")
            .map_err(e)?
            .query_row(params![doid], |r| r.get::<_, i64>(0))
            .optional()
            .map(|c| c.map(|c| c as u16))
            .map_err(e)
    }
    fn insert_object(&mut self, doid: Doid, class: u16, class_name: &str) -> Result<(), String> {
        self.conn
            .prepare_cached("INSERT INTO objects (doid, dclass, class_name) VALUES (?1, ?2, ?3)")
            .map_err(e)?
            .execute(params![doid, class, class_name])
            .map(|_| ())
            .map_err(e)
    }
    fn delete_object(&mut self, doid: Doid) -> Result<bool, String> {
        self.conn
            .prepare_cached("DELETE FROM objects WHERE doid = ?1")
            .map_err(e)?
            .execute(params![doid])
            .map(|n| n > 0)
            .map_err(e)
    }
    fn value(&mut self, doid: Doid, field: u16) -> Result<Option<Vec<u8>>, String> {
        self.conn
            .prepare_cached("SELECT value FROM fields WHERE doid = ?1 AND field = ?2")
            .map_err(e)?
            .query_row(params![doid, field], |r| r.get(0))
            .optional()
            .map_err(e)
    }
    fn all_fields(&mut self, doid: Doid) -> Result<Vec<(u16, Vec<u8>)>, String> {
        let mut st = self
            .conn
            .prepare_cached("SELECT field, value FROM fields WHERE doid = ?1 ORDER BY field")
            .map_err(e)?;
        let rows = st
            .query_map(params![doid], |r| {
                Ok((r.get::<_, i64>(0)? as u16, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }
    fn write(
        &mut self,
        doid: Doid,
        field: u16,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        match value {
            Some(v) => self
                .conn
                .prepare_cached(
                    "INSERT INTO fields (doid, field, name, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(doid, field) DO UPDATE SET value = excluded.value",
                )
                .map_err(e)?
                .execute(params![doid, field, name, v]),
            None => self
                .conn
                .prepare_cached("DELETE FROM fields WHERE doid = ?1 AND field = ?2")
                .map_err(e)?
                .execute(params![doid, field]),
        }
        .map(|_| ())
        .map_err(e)
    }
    fn free_doid(&mut self, min: u32, max: u32) -> Result<Option<u32>, String> {
        if self.class_of(min)?.is_none() {
            return Ok(Some(min));
        }
        self.conn
            .prepare_cached(
                "SELECT o.doid + 1 FROM objects o
                 WHERE o.doid >= ?1 AND o.doid < ?2
                   AND NOT EXISTS (SELECT 1 FROM objects p WHERE p.doid = o.doid + 1)
                 ORDER BY o.doid LIMIT 1",
            )
            .map_err(e)?
            .query_row(params![min, max], |r| r.get::<_, i64>(0))
            .optional()
            .map(|d| d.map(|d| d as u32))
            .map_err(e)
    }
    fn set_next_doid(&mut self, next: u32) -> Result<(), String> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('next_doid', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .map_err(e)?
            .execute(params![next as i64])
            .map(|_| ())
            .map_err(e)
    }
    fn doids(&mut self) -> Result<Vec<Doid>, String> {
        let mut st = self
            .conn
            .prepare_cached("SELECT doid FROM objects ORDER BY doid")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| r.get::<_, i64>(0).map(|d| d as u32))
            .map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }
    fn account_names(&mut self) -> Result<Vec<String>, String> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name FROM accounts ORDER BY name")
            .map_err(e)?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }
    fn account_get(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        self.conn
            .prepare_cached("SELECT data FROM accounts WHERE name = ?1")
            .map_err(e)?
            .query_row([name], |r| r.get(0))
            .optional()
            .map_err(e)
    }
    fn account_insert(&mut self, name: &str, data: &[u8]) -> Result<bool, String> {
        self.conn
            .prepare_cached(
                "INSERT INTO accounts (name, data) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            )
            .map_err(e)?
            .execute(params![name, data])
            .map(|n| n == 1)
            .map_err(e)
    }
    fn account_put(&mut self, name: &str, data: &[u8]) -> Result<(), String> {
        self.conn
            .prepare_cached(
                "INSERT INTO accounts (name, data) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET data = excluded.data",
            )
            .map_err(e)?
            .execute(params![name, data])
            .map(|_| ())
            .map_err(e)
    }
    fn pending_replace(&mut self, name: &str, rows: &[PendingName]) -> Result<(), String> {
        self.conn
            .prepare_cached("DELETE FROM pending_names WHERE account = ?1")
            .map_err(e)?
            .execute([name])
            .map_err(e)?;
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO pending_names (doid, account, wish_name, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(doid) DO UPDATE SET account = excluded.account,
                     wish_name = excluded.wish_name, since = excluded.since",
            )
            .map_err(e)?;
        for r in rows {
            st.execute(params![
                r.doid,
                name,
                r.wish_name,
                r.since.min(i64::MAX as u64) as i64
            ])
            .map_err(e)?;
        }
        Ok(())
    }
    fn pending_list(&mut self, max: u16) -> Result<Vec<PendingName>, String> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT doid, wish_name, account, since FROM pending_names
                 ORDER BY since, doid LIMIT ?1",
            )
            .map_err(e)?;
        let rows = st
            .query_map([max], |r| {
                Ok(PendingName {
                    doid: r.get::<_, i64>(0)? as u32,
                    wish_name: r.get(1)?,
                    account: r.get(2)?,
                    since: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }
    fn pending_account(&mut self, doid: u32) -> Result<Option<String>, String> {
        self.conn
            .prepare_cached("SELECT account FROM pending_names WHERE doid = ?1")
            .map_err(e)?
            .query_row(params![doid], |r| r.get(0))
            .optional()
            .map_err(e)
    }
}

#[cfg(test)]
mod tests {
    //! The store driven directly: a connection that no longer reads is closed, the file
    //! reopened on the retry schedule, and nothing acknowledged is lost or handed out twice.
    use super::super::{BatchNote, Job, Op, Outcome};
    use super::*;

    fn schema() -> Arc<Schema> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/dc/objects.dc");
        Arc::new(Schema::new(otp_dc::DcFile::parse_files(&[path]).unwrap()))
    }

    fn job(op: Op) -> Job {
        Job {
            op,
            sender: 1,
            context: 0,
            msgtype: 0,
            outcome: Outcome::Pending,
            queued: Instant::now(),
            note: None,
        }
    }

    /// One batch of `ops`: the outcomes and the batch's note.
    fn run(store: &mut Store<SqliteBackend>, ops: Vec<Op>) -> (Vec<Outcome>, BatchNote) {
        let mut jobs: Vec<Job> = ops.into_iter().map(job).collect();
        store.apply(&mut jobs);
        let note = jobs[0].note.take().unwrap_or_default();
        (jobs.into_iter().map(|j| j.outcome).collect(), note)
    }

    #[test]
    fn a_connection_that_no_longer_reads_is_reopened_with_backoff() {
        let schema = schema();
        let thing = schema.dc().class_by_name("Thing").unwrap().id();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        let mut store = open(&dir, schema, 100, 199).unwrap();
        let create = || Op::Create {
            class: thing,
            fields: Vec::new(),
        };
        let (out, _) = run(&mut store, vec![create()]);
        assert_eq!(out, [Outcome::Created(100)]);
        // The connection stops reading (here: swapped for an empty one, which frees the file),
        // and the file's folder is gone meanwhile.
        store.backend_mut().conn = Connection::open_in_memory().unwrap();
        std::fs::rename(&dir, root.path().join("away")).unwrap();
        let get = || Op::Get {
            doid: 100,
            fields: None,
        };
        let (out, note) = run(&mut store, vec![get(), create()]);
        assert!(matches!(
            out[..],
            [Outcome::StorageError(_), Outcome::StorageError(_)]
        ));
        assert!(note.failed && note.lost.is_some(), "{note:?}");
        // Reopening is tried at once and fails (no such folder: SQLITE_CANTOPEN); the next
        // attempt waits for its turn, and batches fail untried meanwhile.
        let (out, note) = run(&mut store, vec![get()]);
        assert!(matches!(&out[0], Outcome::StorageError(e) if e.contains("reopening")));
        assert!(note.failed && note.lost.is_none() && !note.reconnected);
        assert_eq!(store.backend_mut().down.as_ref().unwrap().attempts, 1);
        let (_, _) = run(&mut store, vec![get()]);
        assert_eq!(store.backend_mut().down.as_ref().unwrap().attempts, 1);
        // The folder is back: the next attempt reopens it, the acknowledged object is there,
        // and the doid counter goes on from the stored one.
        std::fs::rename(root.path().join("away"), &dir).unwrap();
        std::thread::sleep(RETRY_FIRST * 2);
        let (out, note) = run(&mut store, vec![get(), create()]);
        assert!(note.reconnected && !note.failed, "{note:?}");
        assert!(matches!(&out[0], Outcome::Object { class, .. } if *class == thing));
        assert_eq!(out[1], Outcome::Created(101));
    }
}

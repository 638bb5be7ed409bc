//! The embedded engine: one SQLite file, `otpd.sqlite3` in the configured directory, in WAL
//! mode with synchronous=FULL (a commit is on disk before it is answered), held exclusively;
//! created mode 0600 in a folder created 0700 (`private_fs`).

use super::{Backend, PendingName, Schema, Store, StoreError, SCHEMA_VERSION};
use otp_wire::Doid;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

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
    let what = |e: rusqlite::Error| StoreError(format!("{}: {e}", path.display()));
    let conn = Connection::open(&path).map_err(what)?;
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
    let mut backend = SqliteBackend { conn };
    if let Some(v) = migrate_from.filter(|v| *v < SCHEMA_VERSION) {
        migrate(&mut backend, v, &path)?;
    }
    let conn = backend.conn;
    conn.execute_batch("COMMIT").map_err(what)?;
    let store = Store::new(SqliteBackend { conn }, schema, next, min_doid, max_doid);
    log::info!(
        "database: {} (SQLite {}, WAL, synchronous=FULL); next doid {}",
        path.display(),
        rusqlite::version(),
        store.next_doid()
    );
    Ok(store)
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
        let _ = self.conn.execute_batch("ROLLBACK");
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

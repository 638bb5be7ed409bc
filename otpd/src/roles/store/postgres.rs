//! The PostgreSQL engine: the same schema in a PostgreSQL database, one connection held by the
//! database worker thread, an advisory lock so that two otpds never share one database.
//! Commits are durable with the server's default `synchronous_commit = on`. A connection lost
//! (a restart, a failover) is reopened before a later batch, with backoff; batches fail
//! meanwhile.

use super::{Backend, PendingName, Schema, Store, StoreError, SCHEMA_VERSION};
use otp_wire::Doid;
use postgres::{Client, NoTls};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The advisory lock key otpd holds on its database ("otpd" in ASCII).
const LOCK_KEY: i64 = 0x6f747064;
/// The wait before the second attempt to reconnect; it doubles after each failed attempt, up
/// to `RETRY_MAX` (the first attempt is made on the first batch after the loss).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct PgBackend {
    client: Client,
    st: Statements,
    config: postgres::Config,
    /// "address/database", for messages.
    name: String,
    /// Set while the connection is lost.
    down: Option<Down>,
    /// A rollback failed: the connection is unusable even if not yet seen closed.
    broken: bool,
}

/// A lost connection: since when, why, and when the next attempt may be made.
struct Down {
    since: Instant,
    why: String,
    retry_at: Instant,
    delay: Duration,
    attempts: u32,
}

/// Every statement, prepared once (a query string costs a round trip of its own each time).
struct Statements {
    class_of: postgres::Statement,
    insert_object: postgres::Statement,
    delete_object: postgres::Statement,
    value: postgres::Statement,
    all_fields: postgres::Statement,
    upsert: postgres::Statement,
    delete_field: postgres::Statement,
    free_doid: postgres::Statement,
    set_next: postgres::Statement,
}

fn e(err: postgres::Error) -> String {
    err.to_string()
}

/// Connects to `address` ("host:port"), creates the schema if needed, and takes the lock.
pub fn open(
    address: &str,
    database: &str,
    username: &str,
    password: &str,
    schema: Arc<Schema>,
    min_doid: Doid,
    max_doid: Doid,
) -> Result<Store<PgBackend>, StoreError> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "5432"));
    let mut config = postgres::Config::new();
    config
        .host(host.trim_start_matches('[').trim_end_matches(']'))
        .port(
            port.parse()
                .map_err(|_| StoreError(format!("postgres address {address}: bad port")))?,
        )
        .dbname(database)
        .user(username)
        .connect_timeout(std::time::Duration::from_secs(10));
    if !password.is_empty() {
        config.password(password);
    }
    let name = format!("{address}/{database}");
    let (client, st, next) = connect(&config, &name)?;
    let backend = PgBackend {
        client,
        st,
        config,
        name,
        down: None,
        broken: false,
    };
    let store = Store::new(backend, schema, next, min_doid, max_doid);
    log::info!(
        "database: postgres {address}/{database}; next doid {}",
        store.next_doid()
    );
    Ok(store)
}

/// Opens a connection: connects, takes the lock, creates the schema if needed, prepares the
/// statements, and reads the stored doid counter.
fn connect(config: &postgres::Config, name: &str) -> Result<(Client, Statements, u32), StoreError> {
    let what = |err: postgres::Error| StoreError(format!("postgres {name}: {err}"));
    let mut client = config.connect(NoTls).map_err(what)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .map_err(what)?
        .get(0);
    if !locked {
        return Err(StoreError(format!(
            "postgres {name}: locked by another otpd (advisory lock {LOCK_KEY})"
        )));
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS objects (
                 doid BIGINT PRIMARY KEY,
                 dclass INTEGER NOT NULL,
                 class_name TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS fields (
                 doid BIGINT NOT NULL REFERENCES objects(doid) ON DELETE CASCADE,
                 field INTEGER NOT NULL,
                 name TEXT NOT NULL,
                 value BYTEA NOT NULL,
                 PRIMARY KEY (doid, field));
             CREATE TABLE IF NOT EXISTS accounts (
                 name TEXT PRIMARY KEY,
                 data BYTEA NOT NULL);
             CREATE TABLE IF NOT EXISTS pending_names (
                 doid BIGINT PRIMARY KEY,
                 account TEXT NOT NULL,
                 wish_name TEXT NOT NULL,
                 since BIGINT NOT NULL);
             CREATE INDEX IF NOT EXISTS pending_names_account ON pending_names (account);
             CREATE INDEX IF NOT EXISTS pending_names_since ON pending_names (since, doid);",
        )
        .map_err(what)?;
    let meta = |client: &mut Client, key: &str| -> Result<Option<i64>, StoreError> {
        Ok(client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .map_err(what)?
            .map(|r| r.get(0)))
    };
    match meta(&mut client, "schema_version")? {
        None => {
            client
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', $1)",
                    &[&SCHEMA_VERSION],
                )
                .map_err(what)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError(format!(
                "postgres {name}: schema version {v} is newer than this otpd's \
                 ({SCHEMA_VERSION}); run a newer otpd, or export with it and import here"
            )));
        }
        Some(v) if v < SCHEMA_VERSION => {
            // 1 -> 2: the pending names' index, filled from the accounts once.
            let n = index_pending_names(&mut client).map_err(what)?;
            log::info!(
                "database: postgres {name} migrated from schema version {v} to \
                 {SCHEMA_VERSION} ({n} pending names indexed)"
            );
        }
        Some(_) => {}
    }
    let next = meta(&mut client, "next_doid")?
        .unwrap_or(0)
        .clamp(0, u32::MAX as i64) as u32;
    let mut prep = |sql: &str| client.prepare(sql).map_err(what);
    let st = Statements {
        class_of: prep("SELECT dclass FROM objects WHERE doid = $1")?,
        insert_object: prep("INSERT INTO objects (doid, dclass, class_name) VALUES ($1, $2, $3)")?,
        delete_object: prep("DELETE FROM objects WHERE doid = $1")?,
        value: prep("SELECT value FROM fields WHERE doid = $1 AND field = $2")?,
        all_fields: prep("SELECT field, value FROM fields WHERE doid = $1 ORDER BY field")?,
        upsert: prep(
            "INSERT INTO fields (doid, field, name, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (doid, field) DO UPDATE SET value = excluded.value",
        )?,
        delete_field: prep("DELETE FROM fields WHERE doid = $1 AND field = $2")?,
        free_doid: prep(
            "SELECT o.doid + 1 FROM objects o
             WHERE o.doid >= $1 AND o.doid < $2
               AND NOT EXISTS (SELECT 1 FROM objects p WHERE p.doid = o.doid + 1)
             ORDER BY o.doid LIMIT 1",
        )?,
        set_next: prep(
            "INSERT INTO meta (key, value) VALUES ('next_doid', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?,
    };
    Ok((client, st, next))
}

/// Fills `pending_names` from every account record and records schema version 2, in one
/// transaction.
fn index_pending_names(client: &mut Client) -> Result<usize, postgres::Error> {
    let mut tx = client.transaction()?;
    let mut n = 0;
    for row in tx.query("SELECT name, data FROM accounts", &[])? {
        let (account, data): (String, Vec<u8>) = (row.get(0), row.get(1));
        for r in super::pending_rows(&account, &data) {
            tx.execute(
                "INSERT INTO pending_names (doid, account, wish_name, since) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (doid) DO NOTHING",
                &[&(r.doid as i64), &account, &r.wish_name, &(r.since.min(i64::MAX as u64) as i64)],
            )?;
            n += 1;
        }
    }
    tx.execute(
        "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
        &[&SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(n)
}

impl Backend for PgBackend {
    fn begin(&mut self) -> Result<(), String> {
        self.client.batch_execute("BEGIN").map_err(e)
    }
    fn commit(&mut self) -> Result<(), String> {
        self.client.batch_execute("COMMIT").map_err(e)
    }
    fn rollback(&mut self) {
        if self.client.batch_execute("ROLLBACK").is_err() {
            self.broken = true;
        }
    }
    fn ready(&mut self) -> Result<Option<u32>, String> {
        if self.down.is_none() && self.client.is_closed() {
            // Closed while idle: reopen now rather than fail a batch first.
            self.lost();
        }
        let Some(down) = &mut self.down else {
            return Ok(None);
        };
        let now = Instant::now();
        if now < down.retry_at {
            return Err(format!(
                "postgres {}: connection lost ({}); reconnecting",
                self.name, down.why
            ));
        }
        match connect(&self.config, &self.name) {
            Ok((client, st, next)) => {
                log::warn!(
                    "database: postgres {} reconnected after {} ms ({} failed attempts); \
                     stored next doid {next}",
                    self.name,
                    now.saturating_duration_since(down.since).as_millis(),
                    down.attempts
                );
                self.client = client;
                self.st = st;
                self.down = None;
                self.broken = false;
                Ok(Some(next))
            }
            Err(err) => {
                log::debug!("database: reconnect failed: {err}");
                down.attempts += 1;
                down.retry_at = now + down.delay;
                down.delay = (down.delay * 2).min(RETRY_MAX);
                Err(format!("{err}; reconnecting"))
            }
        }
    }
    fn lost(&mut self) -> bool {
        if self.down.is_some() {
            return true;
        }
        if !(self.broken || self.client.is_closed()) {
            return false;
        }
        let why = if self.broken {
            "rollback failed"
        } else {
            "connection closed"
        };
        log::error!(
            "database: postgres {} connection lost ({why}); requests fail until it is reopened",
            self.name
        );
        let now = Instant::now();
        self.down = Some(Down {
            since: now,
            why: why.to_string(),
            retry_at: now,
            delay: RETRY_FIRST,
            attempts: 0,
        });
        true
    }
    fn class_of(&mut self, doid: Doid) -> Result<Option<u16>, String> {
        Ok(self
            .client
            .query_opt(&self.st.class_of, &[&(doid as i64)])
            .map_err(e)?
            .map(|r| r.get::<_, i32>(0) as u16))
    }
    fn insert_object(&mut self, doid: Doid, class: u16, class_name: &str) -> Result<(), String> {
        self.client
            .execute(
                &self.st.insert_object,
                &[&(doid as i64), &(class as i32), &class_name],
            )
            .map(|_| ())
            .map_err(e)
    }
    fn delete_object(&mut self, doid: Doid) -> Result<bool, String> {
        self.client
            .execute(&self.st.delete_object, &[&(doid as i64)])
            .map(|n| n > 0)
            .map_err(e)
    }
    fn value(&mut self, doid: Doid, field: u16) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .client
            .query_opt(&self.st.value, &[&(doid as i64), &(field as i32)])
            .map_err(e)?
            .map(|r| r.get(0)))
    }
    fn all_fields(&mut self, doid: Doid) -> Result<Vec<(u16, Vec<u8>)>, String> {
        Ok(self
            .client
            .query(&self.st.all_fields, &[&(doid as i64)])
            .map_err(e)?
            .into_iter()
            .map(|r| (r.get::<_, i32>(0) as u16, r.get(1)))
            .collect())
    }
    fn write(
        &mut self,
        doid: Doid,
        field: u16,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        match value {
            Some(v) => self.client.execute(
                &self.st.upsert,
                &[&(doid as i64), &(field as i32), &name, &v],
            ),
            None => self
                .client
                .execute(&self.st.delete_field, &[&(doid as i64), &(field as i32)]),
        }
        .map(|_| ())
        .map_err(e)
    }
    fn free_doid(&mut self, min: u32, max: u32) -> Result<Option<u32>, String> {
        if self.class_of(min)?.is_none() {
            return Ok(Some(min));
        }
        Ok(self
            .client
            .query_opt(&self.st.free_doid, &[&(min as i64), &(max as i64)])
            .map_err(e)?
            .map(|r| r.get::<_, i64>(0) as u32))
    }
    fn set_next_doid(&mut self, next: u32) -> Result<(), String> {
        self.client
            .execute(&self.st.set_next, &[&(next as i64)])
            .map(|_| ())
            .map_err(e)
    }
    fn doids(&mut self) -> Result<Vec<Doid>, String> {
        Ok(self
            .client
            .query("SELECT doid FROM objects ORDER BY doid", &[])
            .map_err(e)?
            .into_iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect())
    }
    fn account_names(&mut self) -> Result<Vec<String>, String> {
        Ok(self
            .client
            .query("SELECT name FROM accounts ORDER BY name", &[])
            .map_err(e)?
            .into_iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }
    fn account_get(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .client
            .query_opt("SELECT data FROM accounts WHERE name = $1", &[&name])
            .map_err(e)?
            .map(|r| r.get(0)))
    }
    fn account_insert(&mut self, name: &str, data: &[u8]) -> Result<bool, String> {
        self.client
            .execute(
                "INSERT INTO accounts (name, data) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &data],
            )
            .map(|n| n == 1)
            .map_err(e)
    }
    fn account_put(&mut self, name: &str, data: &[u8]) -> Result<(), String> {
        self.client
            .execute(
                "INSERT INTO accounts (name, data) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                &[&name, &data],
            )
            .map(|_| ())
            .map_err(e)
    }
    fn pending_replace(&mut self, name: &str, rows: &[PendingName]) -> Result<(), String> {
        self.client
            .execute("DELETE FROM pending_names WHERE account = $1", &[&name])
            .map_err(e)?;
        for r in rows {
            self.client
                .execute(
                    "INSERT INTO pending_names (doid, account, wish_name, since)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (doid) DO UPDATE SET account = excluded.account,
                         wish_name = excluded.wish_name, since = excluded.since",
                    &[
                        &(r.doid as i64),
                        &name,
                        &r.wish_name,
                        &(r.since.min(i64::MAX as u64) as i64),
                    ],
                )
                .map_err(e)?;
        }
        Ok(())
    }
    fn pending_list(&mut self, max: u16) -> Result<Vec<PendingName>, String> {
        let rows = self
            .client
            .query(
                "SELECT doid, wish_name, account, since FROM pending_names
                 ORDER BY since, doid LIMIT $1",
                &[&(max as i64)],
            )
            .map_err(e)?;
        Ok(rows
            .iter()
            .map(|r| PendingName {
                doid: r.get::<_, i64>(0) as u32,
                wish_name: r.get(1),
                account: r.get(2),
                since: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }
    fn pending_account(&mut self, doid: u32) -> Result<Option<String>, String> {
        self.client
            .query_opt(
                "SELECT account FROM pending_names WHERE doid = $1",
                &[&(doid as i64)],
            )
            .map(|r| r.map(|r| r.get(0)))
            .map_err(e)
    }
}

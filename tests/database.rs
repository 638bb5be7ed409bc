//! The Database role against the real binary with its embedded SQLite store: the DBSERVER
//! messages, their re-broadcasts, refusals, start-up failures, and durability across kill -9.

mod common;

use common::*;
use otp_wire::msgtypes::*;
use std::path::Path;
use std::time::{Duration, Instant};

const DB: u64 = 4100;
const CLIENT: u64 = 9_000_001;

fn sqlite(dir: &Path) -> String {
    format!("Sqlite(directory: \"{}\")", dir.display())
}

fn db_role(backend: &str) -> String {
    format!("Database(control: {DB}, generate: (min: 1000000, max: 1999999), backend: {backend})")
}

struct Db {
    o: Otpd,
    dc: TestDc,
    probe: Md,
    client: Md,
}

impl Db {
    fn start(backend: &str) -> Db {
        Db::start_with(backend, "")
    }
    /// With `top` added to the cluster's top-level settings.
    fn start_with(backend: &str, top: &str) -> Db {
        let dc = TestDc::load();
        let port = free_port();
        let o = Otpd::start_full(
            port,
            "",
            &format!(
                "{top} dc_files: [\"{}\"], roles: [{}],",
                dc.path.display(),
                db_role(backend)
            ),
        );
        let mut probe = o.connect();
        let client = listener(port, &mut probe, &[CLIENT]);
        Db {
            o,
            dc,
            probe,
            client,
        }
    }
    fn f(&self, name: &str) -> u16 {
        self.dc.field("Thing", name)
    }
    fn send(&mut self, msgtype: u16, p: P) {
        self.probe.send(&dg(&[DB], CLIENT, msgtype, &p.0));
    }
    /// Sends a request and returns the answer's payload, checking its type and sender.
    fn ask(&mut self, msgtype: u16, p: P) -> Vec<u8> {
        self.send(msgtype, p);
        let f = self.client.recv();
        let n = f[2] as usize;
        let at = 3 + 8 * n;
        let sender = u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
        let t = u16::from_le_bytes([f[at + 8], f[at + 9]]);
        assert_eq!((sender, t), (DB, msgtype + 1));
        f[at + 10..].to_vec()
    }
    fn create(&mut self, context: u32, fields: &[(u16, P)]) -> u32 {
        let mut p = P::new()
            .u32(context)
            .u16(self.dc.class("Thing"))
            .u16(fields.len() as u16);
        for (f, v) in fields {
            p = p.u16(*f).bytes(&v.0);
        }
        let got = self.ask(DBSERVER_CREATE_OBJECT, p);
        assert_eq!(&got[..4], &context.to_le_bytes());
        u32::from_le_bytes(got[4..8].try_into().unwrap())
    }
}

#[test]
fn sqlite_objects_are_created_read_updated_and_deleted_with_broadcasts() {
    let dir = tempfile::tempdir().unwrap();
    objects_are_created_read_updated_and_deleted_with_broadcasts(&sqlite(dir.path()));
}

#[test]
fn postgres_objects_are_created_read_updated_and_deleted_with_broadcasts() {
    let pg = PgServer::start();
    objects_are_created_read_updated_and_deleted_with_broadcasts(&pg.backend());
}

#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn objects_are_created_read_updated_and_deleted_with_broadcasts(backend: &str) {
    let mut s = Db::start(backend);
    let (fname, fscore, flevel) = (s.f("setName"), s.f("setScore"), s.f("setLevel"));
    let thing = s.dc.class("Thing");
    // Fields left out that have a DC default are stored with it; non-db fields are left out.
    let doid = s.create(
        1,
        &[
            (fname, P::new().string("bob")),
            (s.f("setBroadcastRam"), P::new().u8(1)),
        ],
    );
    assert!((1_000_000..=1_999_999).contains(&doid), "{doid}");
    let mut watch = {
        let port = s.o.port;
        listener(port, &mut s.probe, &[(2u64 << 32) | doid as u64])
    };
    let got = s.ask(DBSERVER_OBJECT_GET_ALL, P::new().u32(2).u32(doid));
    assert_eq!(
        got,
        P::new()
            .u32(2)
            .u8(1)
            .u16(thing)
            .u16(2)
            .u16(fname)
            .string("bob")
            .u16(flevel)
            .u8(1)
            .0
    );
    // SET_FIELDS, re-broadcast with the sender kept.
    s.send(
        DBSERVER_OBJECT_SET_FIELDS,
        P::new()
            .u32(doid)
            .u16(2)
            .u16(fscore)
            .u32(5)
            .u16(fname)
            .string("al"),
    );
    let b = watch.recv();
    assert_eq!(
        b,
        dg(
            &[(2u64 << 32) | doid as u64],
            CLIENT,
            DBSERVER_OBJECT_SET_FIELDS,
            &P::new()
                .u32(doid)
                .u16(2)
                .u16(fname)
                .string("al")
                .u16(fscore)
                .u32(5)
                .0
        )
    );
    let got = s.ask(
        DBSERVER_OBJECT_GET_FIELDS,
        P::new().u32(3).u32(doid).u16(2).u16(fscore).u16(fname),
    );
    assert_eq!(
        got,
        P::new()
            .u32(3)
            .u8(1)
            .u16(2)
            .u16(fscore)
            .u32(5)
            .u16(fname)
            .string("al")
            .0
    );
    // IF_EQUALS: success, then a mismatch answered with the current value.
    let got = s.ask(
        DBSERVER_OBJECT_SET_FIELD_IF_EQUALS,
        P::new().u32(4).u32(doid).u16(fscore).u32(5).u32(6),
    );
    assert_eq!(got, P::new().u32(4).u8(1).0);
    watch.recv();
    let got = s.ask(
        DBSERVER_OBJECT_SET_FIELD_IF_EQUALS,
        P::new().u32(5).u32(doid).u16(fscore).u32(5).u32(7),
    );
    assert_eq!(got, P::new().u32(5).u8(0).u16(fscore).u32(6).0);
    // IF_EMPTY on a set field fails with its value.
    let got = s.ask(
        DBSERVER_OBJECT_SET_FIELD_IF_EMPTY,
        P::new().u32(6).u32(doid).u16(fname).string("x"),
    );
    assert_eq!(got, P::new().u32(6).u8(0).u16(fname).string("al").0);
    watch.expect_none();
    // DELETE_FIELDS: a field with a default is reset (SET broadcast), others removed (DELETE).
    s.send(
        DBSERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(flevel).u8(9),
    );
    watch.recv();
    s.send(
        DBSERVER_OBJECT_DELETE_FIELDS,
        P::new().u32(doid).u16(2).u16(flevel).u16(fscore),
    );
    let got: Vec<Vec<u8>> = (0..2).map(|_| watch.recv()).collect();
    let chan = (2u64 << 32) | doid as u64;
    assert!(got.contains(&dg(
        &[chan],
        CLIENT,
        DBSERVER_OBJECT_DELETE_FIELD,
        &P::new().u32(doid).u16(fscore).0
    )));
    assert!(got.contains(&dg(
        &[chan],
        CLIENT,
        DBSERVER_OBJECT_SET_FIELD,
        &P::new().u32(doid).u16(flevel).u8(1).0
    )));
    let got = s.ask(
        DBSERVER_OBJECT_GET_FIELD,
        P::new().u32(7).u32(doid).u16(fscore),
    );
    assert_eq!(got, P::new().u32(7).u8(0).0);
    // DELETE: broadcast, then the object is unknown.
    s.send(DBSERVER_OBJECT_DELETE, P::new().u32(doid));
    assert_eq!(
        watch.recv(),
        dg(
            &[chan],
            CLIENT,
            DBSERVER_OBJECT_DELETE,
            &P::new().u32(doid).0
        )
    );
    let got = s.ask(DBSERVER_OBJECT_GET_ALL, P::new().u32(8).u32(doid));
    assert_eq!(got, P::new().u32(8).u8(0).0);
    // Doids are not reused while the range lasts.
    let next = s.create(9, &[]);
    assert!(next > doid);
}

#[test]
fn sqlite_bad_requests_answer_failure_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    bad_requests_answer_failure_and_change_nothing(&sqlite(dir.path()));
}

#[test]
fn postgres_bad_requests_answer_failure_and_change_nothing() {
    let pg = PgServer::start();
    bad_requests_answer_failure_and_change_nothing(&pg.backend());
}

fn bad_requests_answer_failure_and_change_nothing(backend: &str) {
    let mut s = Db::start(backend);
    let (fname, fscore) = (s.f("setName"), s.f("setScore"));
    // Out-of-range class, invalid value, a field of another class: doid 0.
    let got = s.ask(DBSERVER_CREATE_OBJECT, P::new().u32(1).u16(999).u16(0));
    assert_eq!(got, P::new().u32(1).u32(0).0);
    assert_eq!(
        s.create(2, &[(fscore, P::new().u16(1))]),
        0,
        "truncated value"
    );
    let foreign = s.dc.field("Parent", "setParentDb");
    assert_eq!(s.create(3, &[(foreign, P::new().u32(1))]), 0);
    // Unknown objects.
    let got = s.ask(
        DBSERVER_OBJECT_GET_FIELD,
        P::new().u32(4).u32(1_500_000).u16(fname),
    );
    assert_eq!(got, P::new().u32(4).u8(0).0);
    let got = s.ask(
        DBSERVER_OBJECT_SET_FIELD_IF_EMPTY,
        P::new().u32(5).u32(1_500_000).u16(fname).string("x"),
    );
    assert_eq!(got, P::new().u32(5).u8(0).0);
    // A set of a field of another class changes nothing.
    let doid = s.create(6, &[(fscore, P::new().u32(3))]);
    s.send(
        DBSERVER_OBJECT_SET_FIELDS,
        P::new()
            .u32(doid)
            .u16(2)
            .u16(fscore)
            .u32(4)
            .u16(foreign)
            .u32(1),
    );
    let got = s.ask(
        DBSERVER_OBJECT_GET_FIELD,
        P::new().u32(7).u32(doid).u16(fscore),
    );
    assert_eq!(
        got,
        P::new().u32(7).u8(1).u16(fscore).u32(3).0,
        "the whole SET_FIELDS was refused"
    );
    // Truncated garbage: ignored, the role keeps serving.
    s.probe
        .send(&dg(&[DB], CLIENT, DBSERVER_OBJECT_GET_ALL, &[1, 2]));
    let got = s.ask(
        DBSERVER_OBJECT_GET_FIELD,
        P::new().u32(8).u32(doid).u16(fscore),
    );
    assert_eq!(got, P::new().u32(8).u8(1).u16(fscore).u32(3).0);
    assert!(s.o.is_running());
}

#[test]
fn a_database_file_that_cannot_be_used_stops_otpd_with_a_message() {
    let dc = TestDc::load();
    let dir = tempfile::tempdir().unwrap();
    let run = |db_dir: &Path| {
        let conf = dir.path().join("c.ron");
        std::fs::write(
            &conf,
            format!(
                "(pin_cores: false, dc_files: [\"{}\"], messagedirector: (bind: Some(\"127.0.0.1:{}\")), roles: [{}])",
                dc.path.display(),
                free_port(),
                db_role(&sqlite(db_dir))
            ),
        )
        .unwrap();
        std::process::Command::new(otpd_bin())
            .arg("--cluster")
            .arg(&conf)
            .output()
            .unwrap()
    };
    // Locked by a running otpd.
    let held = tempfile::tempdir().unwrap();
    let s = Db::start(&sqlite(held.path()));
    let out = run(held.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(s);
    // From a newer schema.
    let newer = tempfile::tempdir().unwrap();
    drop(Db::start(&sqlite(newer.path())));
    {
        let c = rusqlite::Connection::open(newer.path().join("otpd.sqlite3")).unwrap();
        c.execute(
            "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    }
    let out = run(newer.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a database at all.
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("otpd.sqlite3"), vec![7u8; 4096]).unwrap();
    let out = run(junk.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("otpd.sqlite3"));
}

#[test]
fn sqlite_kill_9_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_during_writes_loses_no_acknowledged_write(&sqlite(dir.path()));
}

#[test]
fn postgres_kill_9_during_writes_loses_no_acknowledged_write() {
    let pg = PgServer::start();
    kill_9_during_writes_loses_no_acknowledged_write(&pg.backend());
}

fn kill_9_during_writes_loses_no_acknowledged_write(backend: &str) {
    let mut s = Db::start(backend);
    let fscore = s.f("setScore");
    let thing = s.dc.class("Thing");
    // Write continuously: creates (acknowledged with their doid) with the context as value,
    // several in flight at once; kill -9 in the middle.
    let mut acked: Vec<(u32, u32)> = Vec::new();
    let mut sent = 0u32;
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut killed = false;
    loop {
        if !killed {
            let mut burst = Vec::new();
            for _ in 0..50 {
                sent += 1;
                let p = P::new().u32(sent).u16(thing).u16(1).u16(fscore).u32(sent);
                burst.extend(dg(&[DB], CLIENT, DBSERVER_CREATE_OBJECT, &p.0));
            }
            s.probe.send(&burst);
            if Instant::now() > deadline {
                s.o.kill(); // SIGKILL
                killed = true;
            }
        }
        match s
            .client
            .recv_within(Duration::from_millis(if killed { 300 } else { 50 }))
        {
            Some(f) => {
                let at = 3 + 8 * f[2] as usize + 10;
                let ctx = u32::from_le_bytes(f[at..at + 4].try_into().unwrap());
                let doid = u32::from_le_bytes(f[at + 4..at + 8].try_into().unwrap());
                assert_ne!(doid, 0);
                acked.push((doid, ctx));
            }
            None if killed => break,
            None => {}
        }
    }
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged before the kill",
        acked.len()
    );
    drop(s);
    let mut s = Db::start(backend);
    for &(doid, ctx) in &acked {
        let got = s.ask(
            DBSERVER_OBJECT_GET_FIELD,
            P::new().u32(ctx).u32(doid).u16(fscore),
        );
        assert_eq!(
            got,
            P::new().u32(ctx).u8(1).u16(fscore).u32(ctx).0,
            "acknowledged create {ctx} (doid {doid}) lost"
        );
    }
    let highest = acked.iter().map(|a| a.0).max().unwrap();
    let next = s.create(u32::MAX, &[]);
    assert!(
        next > highest,
        "the doid counter went back: {next} after {highest}"
    );
}

/// The Database role's figure `metric` on the metrics endpoint at `port`.
fn db_metric(port: u16, metric: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let key = format!("metric=\"{metric}\"");
    r.lines()
        .filter(|l| {
            l.starts_with("otpd_role{") && l.contains("role=\"database\"") && l.contains(&key)
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
        .sum()
}

/// Waits (5 s at most) for the figure to read `want` (figures are published periodically).
fn wait_metric(port: u16, metric: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = db_metric(port, metric);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{metric}: {got}, not {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn postgres_restart_fails_requests_cleanly_then_reconnects() {
    let pg = PgServer::start();
    let metrics = free_port();
    let mut s = Db::start_with(
        &pg.backend(),
        &format!("metrics: Some(\"127.0.0.1:{metrics}\"),"),
    );
    wait_for_port(metrics);
    let fscore = s.f("setScore");
    let doid = s.create(1, &[(fscore, P::new().u32(7))]);
    assert_ne!(doid, 0);
    pg.restart();
    // Every request is answered: a clean failure while the connection is reopened, then
    // success again within seconds, otpd untouched.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ctx = 100;
    let mut failed = 0;
    loop {
        ctx += 1;
        let got = s.ask(
            DBSERVER_OBJECT_GET_FIELD,
            P::new().u32(ctx).u32(doid).u16(fscore),
        );
        if got == P::new().u32(ctx).u8(1).u16(fscore).u32(7).0 {
            break;
        }
        assert_eq!(got, P::new().u32(ctx).u8(0).0, "not a clean failure");
        failed += 1;
        assert!(
            Instant::now() < deadline,
            "still failing {failed} requests after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The acknowledged object is there (read above); a new one gets a fresh doid, and both
    // are readable.
    let next = s.create(2, &[(fscore, P::new().u32(8))]);
    assert!(next > doid, "doid {next} after {doid}");
    let got = s.ask(
        DBSERVER_OBJECT_GET_FIELD,
        P::new().u32(3).u32(next).u16(fscore),
    );
    assert_eq!(got, P::new().u32(3).u8(1).u16(fscore).u32(8).0);
    // One request a batch here: each failed request is a failed batch.
    wait_metric(metrics, "reconnects", 1);
    assert_eq!(db_metric(metrics, "failed_batches"), failed);
    assert_eq!(db_metric(metrics, "connections_lost"), 1);
    // A second restart is survived the same way.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ctx += 1;
        let got = s.ask(
            DBSERVER_OBJECT_GET_FIELD,
            P::new().u32(ctx).u32(next).u16(fscore),
        );
        if got == P::new().u32(ctx).u8(1).u16(fscore).u32(8).0 {
            break;
        }
        assert_eq!(got, P::new().u32(ctx).u8(0).0, "not a clean failure");
        assert!(
            Instant::now() < deadline,
            "still failing after a second restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_metric(metrics, "reconnects", 2);
    assert_eq!(db_metric(metrics, "connections_lost"), 2);
}

#[test]
fn postgres_refuses_a_second_otpd_and_a_newer_schema() {
    let pg = PgServer::start();
    let dc = TestDc::load();
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let conf = dir.path().join("c.ron");
        std::fs::write(
            &conf,
            format!(
                "(pin_cores: false, dc_files: [\"{}\"], messagedirector: (bind: Some(\"127.0.0.1:{}\")), roles: [{}])",
                dc.path.display(),
                free_port(),
                db_role(&pg.backend())
            ),
        )
        .unwrap();
        std::process::Command::new(otpd_bin())
            .arg("--cluster")
            .arg(&conf)
            .output()
            .unwrap()
    };
    let s = Db::start(&pg.backend());
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port
        ),
        postgres::NoTls,
    )
    .unwrap();
    c.execute(
        "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
        &[],
    )
    .unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn export_from_sqlite_import_into_postgres_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    let dc = TestDc::load();
    let mut s = Db::start(&sqlite(dir.path()));
    let (fname, fscore) = (s.f("setName"), s.f("setScore"));
    let a = s.create(
        1,
        &[(fname, P::new().string("ann")), (fscore, P::new().u32(7))],
    );
    let b = s.create(2, &[]);
    // Accounts (the Toontown 2003 dialect's records): one otpd can read, one it cannot.
    let record = P::new()
        .u8(1)
        .u64(1_700_000_000)
        .u8(2)
        .u32(a)
        .string("Flippy")
        .u8(2)
        .u32(0)
        .string("")
        .u8(0)
        .0;
    // A version 2 record: one with a password hash (CLIENT_LOGIN).
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";
    let with_password = P::new()
        .u8(2)
        .u64(1_700_000_001)
        .u8(1)
        .u32(0)
        .string("")
        .u8(0)
        .string(hash)
        .0;
    for (ctx, name, data) in [
        (10, "ann", &record[..]),
        (11, "zed", &[9u8, 9][..]),
        (14, "pat", &with_password[..]),
    ] {
        let got = s.ask(
            DBSERVER_ACCOUNT_SET,
            P::new()
                .u32(ctx)
                .string(name)
                .u16(data.len() as u16)
                .bytes(data),
        );
        assert_eq!(got, P::new().u32(ctx).u8(0).0);
    }
    drop(s); // the store is held while otpd runs
    let conf = |backend: &str| {
        let p = dir.path().join(format!("c{}.ron", backend.len()));
        std::fs::write(
            &p,
            format!(
                "(dc_files: [\"{}\"], roles: [{}])",
                dc.path.display(),
                db_role(backend)
            ),
        )
        .unwrap();
        p
    };
    let (from, to) = (conf(&sqlite(dir.path())), conf(&pg.backend()));
    let tool = |args: &[&str], conf: &Path| {
        let out = std::process::Command::new(otpd_bin())
            .arg("db")
            .args(args)
            .arg("--cluster")
            .arg(conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "otpd db {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dump = dir.path().join("objects.jsonl");
    tool(&["export", dump.to_str().unwrap()], &from);
    let lines = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(lines.lines().count(), 5, "{lines}");
    assert!(
        lines.contains(&format!("\"password\":\"{hash}\""))
            && lines.contains("\"account\":\"ann\"")
            && lines.contains("\"wish_name\":\"Flippy\"")
            && lines.contains("\"data_hex\":\"0909\""),
        "{lines}"
    );
    assert!(
        lines.contains("\"setName\":[\"ann\"]") && lines.contains("\"setScore\":[7]"),
        "{lines}"
    );
    tool(&["import", dump.to_str().unwrap()], &to);
    let one = tool(&["dump", &a.to_string()], &to);
    let j: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(j["dclass"], "Thing");
    assert_eq!(j["fields"]["setName"], serde_json::json!(["ann"]));
    // The imported store goes on serving, and never hands out an imported doid again.
    let mut s = Db::start(&pg.backend());
    let got = s.ask(
        DBSERVER_OBJECT_GET_FIELD,
        P::new().u32(3).u32(a).u16(fscore),
    );
    assert_eq!(got, P::new().u32(3).u8(1).u16(fscore).u32(7).0);
    let c = s.create(4, &[]);
    assert!(c > a.max(b), "{c} after {a}, {b}");
    // The accounts came across byte for byte.
    for (ctx, name, data) in [
        (12, "ann", &record[..]),
        (13, "zed", &[9u8, 9][..]),
        (15, "pat", &with_password[..]),
    ] {
        let got = s.ask(DBSERVER_ACCOUNT_GET, P::new().u32(ctx).string(name));
        let want = P::new().u32(ctx).u8(0).u16(data.len() as u16).bytes(data).0;
        assert_eq!(got, want, "account {name}");
    }
    drop(s);
    // A bad line imports nothing.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"doid\": 1900000, \"dclass\": \"Thing\", \"fields\": {}}\n{\"doid\": 1900001, \"dclass\": \"Nope\"}\n").unwrap();
    let out = std::process::Command::new(otpd_bin())
        .args(["db", "import", bad.to_str().unwrap(), "--cluster"])
        .arg(&to)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let out = std::process::Command::new(otpd_bin())
        .args(["db", "dump", "1900000", "--cluster"])
        .arg(&to)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing of the bad file was imported"
    );
}

/// The checked-in cluster.ron, run as it is (only its port changed), in a scratch folder.
fn default_cluster(dir: &Path) -> (std::process::Child, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = free_port();
    let text = std::fs::read_to_string(root.join("cluster.ron"))
        .unwrap()
        .replace("127.0.0.1:7199", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:7197", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:9199", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:7198", &format!("127.0.0.1:{}", free_port()));
    std::fs::write(dir.join("cluster.ron"), text).unwrap();
    std::fs::create_dir_all(dir.join("dc")).unwrap();
    std::fs::copy(root.join("dc/example.dc"), dir.join("dc/example.dc")).unwrap();
    let child = std::process::Command::new(otpd_bin())
        .arg("--cluster")
        .arg(dir.join("cluster.ron"))
        .args(["--loglevel", "warning"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    (child, port)
}

#[test]
fn the_default_cluster_stores_activates_and_writes_back_objects_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let dc = otp_dc::DcFile::parse_files(&[
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dc/example.dc")
    ])
    .unwrap();
    let avatar = dc.class_by_name("AvatarExample").unwrap();
    let (fname, fcoins) = (
        dc.field_by_name(avatar, "setName").unwrap().id(),
        dc.field_by_name(avatar, "setCoins").unwrap().id(),
    );
    let (mut child, port) = default_cluster(dir.path());
    let mut probe = Md::connect(port);
    let mut client = listener(port, &mut probe, &[CLIENT]);
    // Create in the database (4003), activate through the DBSS, update the live object.
    let p = P::new()
        .u32(1)
        .u16(avatar.id())
        .u16(1)
        .u16(fname)
        .string("Flippy");
    probe.send(&dg(&[4003], CLIENT, DBSERVER_CREATE_OBJECT, &p.0));
    let f = client.recv();
    let at = 3 + 8 * f[2] as usize + 10;
    let doid = u32::from_le_bytes(f[at + 4..at + 8].try_into().unwrap());
    assert!(doid >= 100_000_000, "{doid}");
    probe.send(&dg(
        &[doid as u64],
        CLIENT,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS,
        &P::new().u32(doid).u32(0).u32(0).0,
    ));
    probe.send(&dg(
        &[doid as u64],
        CLIENT,
        STATESERVER_OBJECT_SET_FIELD,
        &P::new().u32(doid).u16(fcoins).u32(250).0,
    ));
    probe.send(&dg(
        &[doid as u64],
        CLIENT,
        STATESERVER_OBJECT_GET_ALL,
        &P::new().u32(2).u32(doid).0,
    ));
    let f = client.recv();
    let at = 3 + 8 * f[2] as usize;
    assert_eq!(
        u16::from_le_bytes([f[at + 8], f[at + 9]]),
        STATESERVER_OBJECT_GET_ALL_RESP
    );
    let want = P::new()
        .u32(2)
        .u32(doid)
        .u32(0)
        .u32(0)
        .u16(avatar.id())
        .string("Flippy")
        .u32(250)
        .u16(0)
        .0;
    assert_eq!(&f[at + 10..], &want[..]);
    // The db field written back survives a restart.
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, port) = default_cluster(dir.path());
    let mut probe = Md::connect(port);
    let mut client = listener(port, &mut probe, &[CLIENT]);
    probe.send(&dg(
        &[4003],
        CLIENT,
        DBSERVER_OBJECT_GET_FIELD,
        &P::new().u32(3).u32(doid).u16(fcoins).0,
    ));
    let f = client.recv();
    let at = 3 + 8 * f[2] as usize + 10;
    assert_eq!(&f[at..], &P::new().u32(3).u8(1).u16(fcoins).u32(250).0[..]);
    assert!(dir.path().join("data/otpd.sqlite3").exists());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sqlite_account_records_are_stored_by_name() {
    let dir = tempfile::tempdir().unwrap();
    account_records_are_stored_by_name(&sqlite(dir.path()));
}

#[test]
fn postgres_account_records_are_stored_by_name() {
    let pg = PgServer::start();
    account_records_are_stored_by_name(&pg.backend());
}

fn account_records_are_stored_by_name(backend: &str) {
    let mut db = Db::start(backend);
    let got = db.ask(DBSERVER_ACCOUNT_GET, P::new().u32(1).string("flippy"));
    assert_eq!(got, P::new().u32(1).u8(1).u16(0).0, "unknown account");
    let got = db.ask(
        DBSERVER_ACCOUNT_SET,
        P::new().u32(2).string("flippy").u16(3).bytes(&[1, 2, 3]),
    );
    assert_eq!(got, P::new().u32(2).u8(0).0);
    let got = db.ask(
        DBSERVER_ACCOUNT_SET,
        P::new().u32(3).string("flippy").u16(2).bytes(&[9, 9]),
    );
    assert_eq!(got, P::new().u32(3).u8(0).0);
    let got = db.ask(DBSERVER_ACCOUNT_GET, P::new().u32(4).string("flippy"));
    assert_eq!(got, P::new().u32(4).u8(0).u16(2).bytes(&[9, 9]).0);
    let got = db.ask(DBSERVER_ACCOUNT_GET, P::new().u32(5).string("other"));
    assert_eq!(got[4], 1);
}

/// Issue 17, item 7: an avatar and its account's slot are made in one step
/// (DBSERVER_ACCOUNT_CREATE_AVATAR): the slot names the new object; a slot that is not free,
/// an unknown account or a slot past the account's end makes nothing (not even a doid).
/// Deleting (DBSERVER_ACCOUNT_DELETE_AVATAR) is one step too: the object and its slot together.
#[test]
fn sqlite_avatars_are_made_in_their_accounts_slot_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    avatars_are_made_in_their_accounts_slot_in_one_step(&sqlite(dir.path()));
}

#[test]
fn postgres_avatars_are_made_in_their_accounts_slot_in_one_step() {
    let pg = PgServer::start();
    avatars_are_made_in_their_accounts_slot_in_one_step(&pg.backend());
}

fn avatars_are_made_in_their_accounts_slot_in_one_step(backend: &str) {
    use otpd::roles::account::Account;
    let mut db = Db::start(backend);
    let record = Account::new(6, 1).encode();
    let got = db.ask(
        DBSERVER_ACCOUNT_SET,
        P::new()
            .u32(1)
            .string("flippy")
            .u16(record.len() as u16)
            .bytes(&record),
    );
    assert_eq!(got, P::new().u32(1).u8(0).0);
    let thing = db.dc.class("Thing");
    let fname = db.f("setName");
    let make = |db: &mut Db, ctx: u32, account: &str, slot: u8| -> u32 {
        let p = P::new()
            .u32(ctx)
            .string(account)
            .u8(slot)
            .u8(6)
            .u16(thing)
            .u16(1)
            .u16(fname)
            .string("Flippy");
        let got = db.ask(DBSERVER_ACCOUNT_CREATE_AVATAR, p);
        assert_eq!(&got[..4], &ctx.to_le_bytes());
        assert_eq!(got.len(), 8);
        u32::from_le_bytes(got[4..8].try_into().unwrap())
    };
    let doid = make(&mut db, 2, "flippy", 2);
    assert!((1_000_000..=1_999_999).contains(&doid), "{doid}");
    let got = db.ask(DBSERVER_ACCOUNT_GET, P::new().u32(3).string("flippy"));
    assert_eq!(got[4], 0);
    let account = Account::decode(&got[7..], 6).unwrap();
    assert_eq!(account.slots[2].doid, doid);
    assert!(account
        .slots
        .iter()
        .enumerate()
        .all(|(i, s)| i == 2 || s.doid == 0));
    let got = db.ask(
        DBSERVER_OBJECT_GET_FIELD,
        P::new().u32(4).u32(doid).u16(fname),
    );
    assert_eq!(got, P::new().u32(4).u8(1).u16(fname).string("Flippy").0);

    // Refused: the slot is taken, the account unknown, the slot past the end.
    assert_eq!(make(&mut db, 5, "flippy", 2), 0);
    assert_eq!(make(&mut db, 6, "nobody", 0), 0);
    assert_eq!(make(&mut db, 7, "flippy", 6), 0);
    // None of them made an object: the next doid is the one after the avatar's.
    assert_eq!(db.create(8, &[(fname, P::new().string("x"))]), doid + 1);
    let got = db.ask(DBSERVER_ACCOUNT_GET, P::new().u32(9).string("flippy"));
    assert_eq!(Account::decode(&got[7..], 6).unwrap(), account);

    // DBSERVER_ACCOUNT_DELETE_AVATAR: refused (1) and nothing changed when the slot does not
    // hold the doid or the account is unknown; else the object and the slot go together.
    let delete = |db: &mut Db, ctx: u32, account: &str, slot: u8, doid: u32| -> Vec<u8> {
        let p = P::new().u32(ctx).string(account).u8(slot).u8(6).u32(doid);
        db.ask(DBSERVER_ACCOUNT_DELETE_AVATAR, p)
    };
    assert_eq!(
        delete(&mut db, 10, "flippy", 1, doid),
        P::new().u32(10).u8(1).0
    );
    assert_eq!(
        delete(&mut db, 11, "flippy", 2, doid + 1),
        P::new().u32(11).u8(1).0
    );
    assert_eq!(
        delete(&mut db, 12, "nobody", 2, doid),
        P::new().u32(12).u8(1).0
    );
    let got = db.ask(DBSERVER_ACCOUNT_GET, P::new().u32(13).string("flippy"));
    assert_eq!(Account::decode(&got[7..], 6).unwrap(), account);
    assert_eq!(
        delete(&mut db, 14, "flippy", 2, doid),
        P::new().u32(14).u8(0).0
    );
    let got = db.ask(DBSERVER_ACCOUNT_GET, P::new().u32(15).string("flippy"));
    assert!(Account::decode(&got[7..], 6)
        .unwrap()
        .slots
        .iter()
        .all(|s| s.doid == 0));
    let got = db.ask(DBSERVER_OBJECT_GET_ALL, P::new().u32(16).u32(doid));
    assert_eq!(got, P::new().u32(16).u8(0).0, "the avatar is gone");
}

/// Runs otpd (`args`) with umask 000, the most permissive one: whatever mode a file ends up
/// with is then otpd's own doing.
fn otpd_with_umask_000(args: &[&std::ffi::OsStr]) -> std::process::Command {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(otpd_bin())
        .args(args);
    c
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Item 17 of issue 17: the SQLite database (with its -wal and -shm files), its folder, the
/// process log and `otpd db export`'s output hold account names and password hashes, and were
/// created readable by every user of the machine (0644 under the usual umask, 0666 under 000).
/// Here otpd runs with umask 000, writes an object and an account, and is exported: every file
/// it made is 0600 and every folder 0700.
#[test]
fn database_files_logs_and_exports_are_private_whatever_the_umask() {
    let dc = TestDc::load();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new/db");
    let port = free_port();
    let conf = dir.path().join("c.ron");
    std::fs::write(
        &conf,
        format!(
            "(cores: 1, pin_cores: false, dc_files: [\"{}\"], messagedirector: (bind: Some(\"127.0.0.1:{port}\")), roles: [{}])",
            dc.path.display(),
            db_role(&sqlite(&db))
        ),
    )
    .unwrap();
    let log = dir.path().join("otpd.log");
    let child = Stopped(
        otpd_with_umask_000(&[
            "--cluster".as_ref(),
            conf.as_os_str(),
            "--log".as_ref(),
            log.as_os_str(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for_port(port);
    let mut probe = Md::connect(port);
    let mut client = listener(port, &mut probe, &[CLIENT]);
    let p = P::new()
        .u32(1)
        .u16(dc.class("Thing"))
        .u16(1)
        .u16(dc.field("Thing", "setName"))
        .string("ann");
    probe.send(&dg(&[DB], CLIENT, DBSERVER_CREATE_OBJECT, &p.0));
    client.recv();
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";
    let record = P::new().u8(2).u64(1).u8(0).string(hash).0;
    probe.send(&dg(
        &[DB],
        CLIENT,
        DBSERVER_ACCOUNT_SET,
        &P::new()
            .u32(2)
            .string("ann")
            .u16(record.len() as u16)
            .bytes(&record)
            .0,
    ));
    client.recv();
    // While otpd runs: the database, whatever SQLite made beside it, the folders, the log.
    let mut files: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("otpd.sqlite3")),
        "{files:?}"
    );
    for f in files.iter().chain([&log]) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    for d in [dir.path().join("new"), db.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    drop(child);
    // An export to a new file, and over an existing one that others could read.
    let fresh = dir.path().join("backup.jsonl");
    let old = dir.path().join("old.jsonl");
    std::fs::write(&old, "stale\n").unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for out in [&fresh, &old] {
        let status = otpd_with_umask_000(&[
            "db".as_ref(),
            "export".as_ref(),
            out.as_os_str(),
            "--cluster".as_ref(),
            conf.as_os_str(),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(out).unwrap();
        assert!(text.contains(hash) && !text.contains("stale"), "{text}");
        assert_eq!(mode(out), 0o600, "{}", out.display());
    }
}

/// A child process stopped when dropped, so that a failing test leaves no otpd behind.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a test takes the space under otpd's SQLite file away and gives it back.
enum Disk {
    /// A small tmpfs mounted on `mount` (root only), filled by `filler`: a real ENOSPC.
    Tmpfs {
        mount: std::path::PathBuf,
        filler: std::path::PathBuf,
    },
    /// otpd's file size limit (RLIMIT_FSIZE, set with prlimit: any user may lower a limit of
    /// their own process and raise it back): a real EFBIG from write(2).
    FileSizeLimit { pid: libc::pid_t },
}

impl Disk {
    /// A 4 MiB tmpfs on `at`, if this process may mount one.
    fn tmpfs(at: &Path) -> Option<Disk> {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        st.success().then(|| Disk::Tmpfs {
            mount: at.to_path_buf(),
            filler: at.join("filler"),
        })
    }

    /// No space left (`db`: the database folder, whose files stop growing).
    fn fill(&self, db: &Path) {
        match self {
            Disk::Tmpfs { filler, .. } => {
                use std::io::Write;
                let mut f = std::fs::File::create(filler).unwrap();
                let chunk = vec![0u8; 4096];
                let err = loop {
                    if let Err(e) = f.write_all(&chunk) {
                        break e;
                    }
                };
                assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            }
            Disk::FileSizeLimit { pid } => {
                // Every file of the database may not grow past its present size.
                let largest = std::fs::read_dir(db)
                    .unwrap()
                    .map(|e| e.unwrap().metadata().unwrap().len())
                    .max()
                    .unwrap();
                Self::limit(*pid, largest);
            }
        }
    }

    fn free(&self) {
        match self {
            Disk::Tmpfs { filler, .. } => std::fs::remove_file(filler).unwrap(),
            Disk::FileSizeLimit { pid } => Self::limit(*pid, libc::RLIM_INFINITY),
        }
    }

    fn limit(pid: libc::pid_t, bytes: u64) {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit reads and writes the two structs given, nothing else.
        let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
        let new = libc::rlimit {
            rlim_cur: bytes.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Disk::Tmpfs { mount, .. } = self {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&*mount)
                .status();
        }
    }
}

/// A full disk under the SQLite file: a real ENOSPC on a tmpfs when this test may mount one
/// (root), else a real EFBIG from a file size limit. Either way otpd stays up.
#[test]
fn sqlite_full_disk_fails_writes_cleanly_keeps_reads_then_recovers() {
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().join("mnt");
    match Disk::tmpfs(&mount) {
        Some(disk) => full_disk_scenario(&mount.join("db"), Some(disk)),
        None => {
            assert!(!unsafe_is_root(), "root and cannot mount a tmpfs");
            eprintln!("not root: the disk is filled with a file size limit");
            full_disk_scenario(&root.path().join("db"), None);
        }
    }
}

/// The same with a file size limit, whoever runs the test.
#[test]
fn sqlite_file_size_limit_fails_writes_cleanly_keeps_reads_then_recovers() {
    let root = tempfile::tempdir().unwrap();
    full_disk_scenario(&root.path().join("db"), None);
}

/// `disk` None: a file size limit on otpd.
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn full_disk_scenario(dbdir: &Path, disk: Option<Disk>) {
    let metrics = free_port();
    let mut s = Db::start_with(
        &sqlite(dbdir),
        &format!("metrics: Some(\"127.0.0.1:{metrics}\"),"),
    );
    wait_for_port(metrics);
    let disk = disk.unwrap_or(Disk::FileSizeLimit {
        pid: s.o.child.id() as libc::pid_t,
    });
    let tmpfs = matches!(disk, Disk::Tmpfs { .. });
    let fscore = s.f("setScore");
    let first = s.create(1, &[(fscore, P::new().u32(7))]);
    assert_ne!(first, 0);
    disk.fill(dbdir);
    // Writes fail with their documented answers (a create: doid 0; a conditional set:
    // failure), again and again; reads are served; otpd stays up.
    let big = "x".repeat(60_000);
    let fname = s.f("setName");
    for round in 0..5u32 {
        let ctx = 10 + round * 4;
        let got = s.create(
            ctx,
            &[(fscore, P::new().u32(8)), (fname, P::new().string(&big))],
        );
        assert_eq!(got, 0, "a create on a full disk");
        let got = s.ask(
            DBSERVER_OBJECT_SET_FIELD_IF_EQUALS,
            P::new()
                .u32(ctx + 1)
                .u32(first)
                .u16(fscore)
                .u32(7)
                .u32(100 + round),
        );
        assert_eq!(
            got,
            P::new().u32(ctx + 1).u8(0).0,
            "an update on a full disk"
        );
        let got = s.ask(
            DBSERVER_OBJECT_GET_FIELD,
            P::new().u32(ctx + 2).u32(first).u16(fscore),
        );
        assert_eq!(
            got,
            P::new().u32(ctx + 2).u8(1).u16(fscore).u32(7).0,
            "a read on a full disk"
        );
    }
    // Reads queued with writes (one transaction, group commit, when the disk has room) are
    // still served: the failed transaction is tried again one request at a time.
    for i in 0..20u32 {
        s.send(
            DBSERVER_OBJECT_SET_FIELD_IF_EQUALS,
            P::new()
                .u32(1000 + i)
                .u32(first)
                .u16(fscore)
                .u32(7)
                .u32(200 + i),
        );
        s.send(
            DBSERVER_OBJECT_GET_FIELD,
            P::new().u32(2000 + i).u32(first).u16(fscore),
        );
    }
    let (mut reads, mut writes) = (0, 0);
    for _ in 0..40 {
        let f = s.client.recv();
        let at = 3 + 8 * f[2] as usize;
        let t = u16::from_le_bytes([f[at + 8], f[at + 9]]);
        let p = &f[at + 10..];
        let ctx = u32::from_le_bytes(p[..4].try_into().unwrap());
        if t == DBSERVER_OBJECT_GET_FIELD_RESP {
            assert_eq!(
                &p[4..],
                &P::new().u8(1).u16(fscore).u32(7).0[..],
                "read {ctx}"
            );
            reads += 1;
        } else {
            assert_eq!(&p[4..], &[0u8][..], "write {ctx}");
            writes += 1;
        }
    }
    assert_eq!((reads, writes), (20, 20));
    assert!(s.o.is_running());
    // Once per episode, however many requests failed.
    wait_metric(metrics, "write_outages", 1);
    // The figures are published with the role's ticks: wait for the last failures to show.
    let deadline = Instant::now() + Duration::from_secs(5);
    while db_metric(metrics, "failed_batches") < 10 {
        assert!(Instant::now() < deadline, "failed_batches stays under 10");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(db_metric(metrics, "connections_lost"), 0);
    if tmpfs {
        // (Under a file size limit the log file cannot grow either.)
        let log = s.o.log_text();
        assert_eq!(log.matches("refuses writes").count(), 1, "{log}");
        eprintln!(
            "{}",
            log.lines().find(|l| l.contains("refuses writes")).unwrap()
        );
    }
    // Space again: writes work at once, the doid counter went on from where it was (nothing
    // of the failed creates was kept), and what was written before is intact.
    disk.free();
    let second = s.create(
        40,
        &[(fscore, P::new().u32(9)), (fname, P::new().string(&big))],
    );
    assert_eq!(second, first + 1, "the failed creates left no trace");
    let got = s.ask(
        DBSERVER_OBJECT_SET_FIELD_IF_EQUALS,
        P::new().u32(41).u32(first).u16(fscore).u32(7).u32(70),
    );
    assert_eq!(got, P::new().u32(41).u8(1).0);
    for (ctx, doid, score) in [(42, first, 70), (43, second, 9)] {
        let got = s.ask(
            DBSERVER_OBJECT_GET_FIELD,
            P::new().u32(ctx).u32(doid).u16(fscore),
        );
        assert_eq!(got, P::new().u32(ctx).u8(1).u16(fscore).u32(score).0);
    }
    assert_eq!(db_metric(metrics, "write_outages"), 1);
    if tmpfs {
        assert!(s.o.log_text().contains("transactions commit again"));
    }
    // Durable: a restart on the same file finds both objects as last acknowledged.
    drop(s);
    let mut s = Db::start(&sqlite(dbdir));
    for (ctx, doid, score) in [(50, first, 70), (51, second, 9)] {
        let got = s.ask(
            DBSERVER_OBJECT_GET_FIELD,
            P::new().u32(ctx).u32(doid).u16(fscore),
        );
        assert_eq!(got, P::new().u32(ctx).u8(1).u16(fscore).u32(score).0);
    }
    assert_eq!(s.create(52, &[]), second + 1);
}

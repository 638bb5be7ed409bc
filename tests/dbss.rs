//! The DBSS role against the real binary, with the test playing the database over a socket
//! (as Astron's own tests do): activation, reads of inactive objects, write-back, deletes.

mod common;

use common::*;
use otp_wire::msgtypes::*;
use std::time::Duration;

const DB: u64 = 4003;
const CLIENT: u64 = 9_000_001;
const OTHER: u64 = 123_456_789;
const AI: u64 = 5_000_000_001;

fn loc(parent: u32, zone: u32) -> u64 {
    ((parent as u64) << 32) | zone as u64
}

struct Db {
    o: Otpd,
    dc: TestDc,
    probe: Md,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// (sender, msgtype, payload) of a framed datagram with one recipient.
fn parts(frame: &[u8]) -> (u64, u16, Vec<u8>) {
    let n = frame[2] as usize;
    let at = 3 + 8 * n;
    (
        u64::from_le_bytes(frame[at..at + 8].try_into().unwrap()),
        u16::from_le_bytes([frame[at + 8], frame[at + 9]]),
        frame[at + 10..].to_vec(),
    )
}

impl Db {
    fn start() -> Db {
        let dc = TestDc::load();
        let port = free_port();
        let o = Otpd::start_full(
            port,
            "",
            &format!(
                "dc_files: [\"{}\"], roles: [Dbss(database: {DB}, ranges: [(min: 100000, max: 199999)])],",
                dc.path.display()
            ),
        );
        // The range subscriptions are in place once the role answers.
        let mut probe = o.connect();
        let mut client = Md::connect(o.port);
        client.subscribe_confirmed(&mut probe, CLIENT);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            probe.send(&dg(
                &[100_000],
                CLIENT,
                DBSS_OBJECT_GET_ACTIVATED,
                &P::new().u32(1).u32(100_000).0,
            ));
            if client.recv_within(Duration::from_millis(100)).is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the DBSS never answered"
            );
        }
        Db { o, dc, probe }
    }
    fn f(&self, name: &str) -> u16 {
        self.dc.field("Thing", name)
    }
    fn send(&mut self, to: u64, sender: u64, msgtype: u16, p: P) {
        self.probe.send(&dg(&[to], sender, msgtype, &p.0));
    }
    fn listen(&mut self, channels: &[u64]) -> Md {
        listener(self.o.port, &mut self.probe, channels)
    }
    /// Plays the database: expects a GET_ALL for `doid` and answers with a stored Thing.
    fn answer_get_all(&mut self, db: &mut Md, doid: u32, fields: P, count: u16) {
        let (sender, msgtype, p) = parts(&db.recv());
        assert_eq!((sender, msgtype), (doid as u64, DBSERVER_OBJECT_GET_ALL));
        assert_eq!(u32_at(&p, 4), doid);
        let ctx = u32_at(&p, 0);
        let thing = self.dc.class("Thing");
        let resp = P::new()
            .u32(ctx)
            .u8(1)
            .u16(thing)
            .u16(count)
            .bytes(&fields.0);
        db.send(&dg(
            &[doid as u64],
            DB,
            DBSERVER_OBJECT_GET_ALL_RESP,
            &resp.0,
        ));
    }
    fn activated(&mut self, client: &mut Md, doid: u32) -> bool {
        self.send(
            doid as u64,
            CLIENT,
            DBSS_OBJECT_GET_ACTIVATED,
            P::new().u32(5).u32(doid),
        );
        let (_, t, p) = parts(&client.recv());
        assert_eq!(t, DBSS_OBJECT_GET_ACTIVATED_RESP);
        assert_eq!(&p[..8], &P::new().u32(5).u32(doid).0[..]);
        p[8] == 1
    }
}

#[test]
fn activation_reads_the_database_fills_defaults_and_goes_live() {
    let mut s = Db::start();
    let doid = 100_001;
    let (fname, fscore, fb) = (s.f("setName"), s.f("setScore"), s.f("setBroadcastRam"));
    let thing = s.dc.class("Thing");
    let mut db = s.listen(&[DB]);
    let mut client = s.listen(&[CLIENT]);
    let mut par = s.listen(&[7000, loc(7000, 3)]);
    assert!(!s.activated(&mut client, doid));
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS,
        P::new().u32(doid).u32(7000).u32(3),
    );
    // Sent while loading: handled once the object is live.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fb).u8(6),
    );
    s.answer_get_all(
        &mut db,
        doid,
        P::new().u16(fname).string("bob").u16(fscore).u32(9),
        2,
    );
    let mut got: Vec<(u64, u16, Vec<u8>)> = (0..4).map(|_| parts(&par.recv())).collect();
    got.sort();
    let enter = P::new()
        .u32(doid)
        .u32(7000)
        .u32(3)
        .u16(thing)
        .u32(0)
        .u16(1)
        .u16(fname)
        .string("bob")
        .0;
    assert!(
        got.contains(&(
            DB,
            STATESERVER_OBJECT_CHANGING_LOCATION,
            P::new().u32(doid).u32(7000).u32(3).u32(0).u32(0).0
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            doid as u64,
            STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER,
            enter
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            OTHER,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(fb).u8(6).0
        )),
        "{got:?}"
    );
    assert!(s.activated(&mut client, doid));
    // Live: GET_ALL answered by the object, required fields from DC defaults.
    s.send(
        doid as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_ALL,
        P::new().u32(2).u32(doid),
    );
    let (_, t, p) = parts(&client.recv());
    assert_eq!(t, STATESERVER_OBJECT_GET_ALL_RESP);
    let want = P::new()
        .u32(2)
        .u32(doid)
        .u32(7000)
        .u32(3)
        .u16(thing)
        .u32(0)
        .u16(7)
        .u8(0)
        .u16(3)
        .u16(fb)
        .u8(6)
        .u16(fname)
        .string("bob")
        .u16(fscore)
        .u32(9)
        .0;
    assert_eq!(p, want);
    client.expect_none();
    // A second activation is refused.
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS,
        P::new().u32(doid).u32(7000).u32(3),
    );
    db.expect_none();
}

#[test]
fn updates_write_db_fields_back() {
    let mut s = Db::start();
    let doid = 100_002;
    let (fname, fb) = (s.f("setName"), s.f("setBroadcastRam"));
    let mut db = s.listen(&[DB]);
    let mut client = s.listen(&[CLIENT]);
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS,
        P::new().u32(doid).u32(7000).u32(3),
    );
    s.answer_get_all(&mut db, doid, P::new(), 0);
    assert!(s.activated(&mut client, doid));
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fname).string("alice"),
    );
    let (sender, t, p) = parts(&db.recv());
    assert_eq!((sender, t), (doid as u64, DBSERVER_OBJECT_SET_FIELD));
    assert_eq!(p, P::new().u32(doid).u16(fname).string("alice").0);
    // Non-db fields stay in RAM; SET_FIELDS writes its db fields in one message.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fb).u8(1),
    );
    db.expect_none();
    let fscore = s.f("setScore");
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELDS,
        P::new()
            .u32(doid)
            .u16(3)
            .u16(fscore)
            .u32(4)
            .u16(fb)
            .u8(2)
            .u16(fname)
            .string("eve"),
    );
    let (_, t, p) = parts(&db.recv());
    assert_eq!(t, DBSERVER_OBJECT_SET_FIELDS);
    let mut want = P::new().u32(doid).u16(2);
    for (f, v) in {
        let mut v = vec![
            (fname, P::new().string("eve").0),
            (fscore, P::new().u32(4).0),
        ];
        v.sort();
        v
    } {
        want = want.u16(f).bytes(&v);
    }
    assert_eq!(p, want.0);
    // An invalid value is written nowhere.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fscore).u16(1),
    );
    db.expect_none();
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn reads_of_inactive_objects_go_to_the_database() {
    let mut s = Db::start();
    let doid = 100_003;
    let (fscore, fdef, fnk) = (
        s.f("setScore"),
        s.f("setRequiredDefault"),
        s.f("setNotKept"),
    );
    let thing = s.dc.class("Thing");
    let mut db = s.listen(&[DB]);
    let mut client = s.listen(&[CLIENT]);
    // A db field: asked of the database, answered with the caller's context.
    s.send(
        doid as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(41).u32(doid).u16(fscore),
    );
    let (sender, t, p) = parts(&db.recv());
    assert_eq!((sender, t), (doid as u64, DBSERVER_OBJECT_GET_FIELD));
    let ctx = u32_at(&p, 0);
    assert_eq!(&p[4..], &P::new().u32(doid).u16(fscore).0[..]);
    db.send(&dg(
        &[doid as u64],
        DB,
        DBSERVER_OBJECT_GET_FIELD_RESP,
        &P::new().u32(ctx).u8(1).u16(fscore).u32(12).0,
    ));
    let (_, t, p) = parts(&client.recv());
    assert_eq!(t, STATESERVER_OBJECT_GET_FIELD_RESP);
    assert_eq!(p, P::new().u32(41).u8(1).u16(fscore).u32(12).0);
    // A required non-db field with a default: answered at once; a non-ram field fails.
    s.send(
        doid as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(42).u32(doid).u16(fdef),
    );
    assert_eq!(
        parts(&client.recv()).2,
        P::new().u32(42).u8(1).u16(fdef).u16(7).0
    );
    s.send(
        doid as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(43).u32(doid).u16(fnk),
    );
    assert_eq!(parts(&client.recv()).2, P::new().u32(43).u8(0).0);
    // GET_FIELDS: defaults and database values together.
    s.send(
        doid as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_FIELDS,
        P::new().u32(44).u32(doid).u16(2).u16(fscore).u16(fdef),
    );
    let (_, t, p) = parts(&db.recv());
    assert_eq!(t, DBSERVER_OBJECT_GET_FIELDS);
    let ctx = u32_at(&p, 0);
    db.send(&dg(
        &[doid as u64],
        DB,
        DBSERVER_OBJECT_GET_FIELDS_RESP,
        &P::new().u32(ctx).u8(1).u16(1).u16(fscore).u32(12).0,
    ));
    assert_eq!(
        parts(&client.recv()).2,
        P::new()
            .u32(44)
            .u8(1)
            .u16(2)
            .u16(fdef)
            .u16(7)
            .u16(fscore)
            .u32(12)
            .0
    );
    // GET_ALL: the stored object with DC defaults for its other required fields.
    s.send(
        doid as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_ALL,
        P::new().u32(45).u32(doid),
    );
    let (_, _, p) = parts(&db.recv());
    let ctx = u32_at(&p, 0);
    db.send(&dg(
        &[doid as u64],
        DB,
        DBSERVER_OBJECT_GET_ALL_RESP,
        &P::new()
            .u32(ctx)
            .u8(1)
            .u16(thing)
            .u16(1)
            .u16(fscore)
            .u32(12)
            .0,
    ));
    assert_eq!(
        parts(&client.recv()).2,
        P::new()
            .u32(45)
            .u32(doid)
            .u32(0)
            .u32(0)
            .u16(thing)
            .u32(0)
            .u16(7)
            .u8(0)
            .u16(1)
            .u16(fscore)
            .u32(12)
            .0
    );
    // An object the database does not have is not activated.
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS,
        P::new().u32(doid).u32(7000).u32(3),
    );
    let (_, _, p) = parts(&db.recv());
    db.send(&dg(
        &[doid as u64],
        DB,
        DBSERVER_OBJECT_GET_ALL_RESP,
        &P::new().u32(u32_at(&p, 0)).u8(0).0,
    ));
    assert!(!s.activated(&mut client, doid));
}

#[test]
fn deletes_on_disk_reach_the_database_and_the_watchers() {
    let mut s = Db::start();
    let doid = 100_004;
    let (fname, fb) = (s.f("setName"), s.f("setBroadcastRam"));
    let mut db = s.listen(&[DB]);
    let mut client = s.listen(&[CLIENT]);
    let mut ai = s.listen(&[AI]);
    let mut locl = s.listen(&[loc(7000, 3)]);
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS,
        P::new().u32(doid).u32(7000).u32(3),
    );
    s.answer_get_all(&mut db, doid, P::new().u16(fname).string("bob"), 1);
    assert!(s.activated(&mut client, doid));
    s.send(doid as u64, AI, STATESERVER_OBJECT_SET_AI, P::new().u64(AI));
    ai.recv();
    locl.flush();
    // DELETE_FIELD_DISK: the database forgets it; those who see the field are told.
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_DELETE_FIELD_DISK,
        P::new().u32(doid).u16(fname),
    );
    let (_, t, p) = parts(&db.recv());
    assert_eq!(
        (t, p),
        (
            DBSERVER_OBJECT_DELETE_FIELD,
            P::new().u32(doid).u16(fname).0
        )
    );
    let (sender, t, p) = parts(&locl.recv());
    assert_eq!(
        (sender, t, p),
        (
            OTHER,
            DBSS_OBJECT_DELETE_FIELD_DISK,
            P::new().u32(doid).u16(fname).0
        )
    );
    // Only db fields can be deleted from disk.
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_DELETE_FIELDS_DISK,
        P::new().u32(doid).u16(2).u16(fname).u16(fb),
    );
    db.expect_none();
    // DELETE_DISK: the location and the AI are told, the object stays in RAM.
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_DELETE_DISK,
        P::new().u32(doid),
    );
    let (_, t, p) = parts(&db.recv());
    assert_eq!((t, p), (DBSERVER_OBJECT_DELETE, P::new().u32(doid).0));
    assert_eq!(
        parts(&locl.recv()),
        (OTHER, DBSS_OBJECT_DELETE_DISK, P::new().u32(doid).0)
    );
    assert_eq!(
        parts(&ai.recv()),
        (OTHER, DBSS_OBJECT_DELETE_DISK, P::new().u32(doid).0)
    );
    assert!(s.activated(&mut client, doid));
}

#[test]
fn activate_other_overrides_stored_values_and_checks_the_class() {
    let mut s = Db::start();
    let (fname, fscore) = (s.f("setName"), s.f("setScore"));
    let thing = s.dc.class("Thing");
    let mut db = s.listen(&[DB]);
    let mut client = s.listen(&[CLIENT]);
    let doid = 100_005;
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS_OTHER,
        P::new()
            .u32(doid)
            .u32(0)
            .u32(0)
            .u16(thing)
            .u16(1)
            .u16(fscore)
            .u32(77),
    );
    s.answer_get_all(
        &mut db,
        doid,
        P::new().u16(fname).string("bob").u16(fscore).u32(1),
        2,
    );
    assert!(s.activated(&mut client, doid));
    s.send(
        doid as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(1).u32(doid).u16(fscore),
    );
    assert_eq!(
        parts(&client.recv()).2,
        P::new().u32(1).u8(1).u16(fscore).u32(77).0
    );
    // The stored object is of another class: not activated.
    let doid = 100_006;
    let small = s.dc.class("Small");
    s.send(
        doid as u64,
        OTHER,
        DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS_OTHER,
        P::new().u32(doid).u32(0).u32(0).u16(small).u16(0),
    );
    s.answer_get_all(&mut db, doid, P::new(), 0);
    assert!(!s.activated(&mut client, doid));
}

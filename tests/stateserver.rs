//! The StateServer role against the real binary: every object message, who hears each change
//! and with which sender, and the races Astron users hit.

mod common;

use common::*;
use otp_wire::msgtypes::*;
use std::time::{Duration, Instant};

const CONTROL: u64 = 100_100;
const AI: u64 = 5_000_000_001;
const OWNER: u64 = 6_000_000_001;
const OWNER2: u64 = 6_000_000_002;
const CLIENT: u64 = 9_000_001;
const OTHER: u64 = 123_456_789;

fn loc(parent: u32, zone: u32) -> u64 {
    ((parent as u64) << 32) | zone as u64
}
fn pc(parent: u32) -> u64 {
    (1u64 << 32) | parent as u64
}

struct Ss {
    o: Otpd,
    dc: TestDc,
    probe: Md,
}

impl Ss {
    fn start() -> Ss {
        let dc = TestDc::load();
        let port = free_port();
        let o = Otpd::start_full(
            port,
            "",
            &format!(
                "dc_files: [\"{}\"], roles: [StateServer(control: {CONTROL})],",
                dc.path.display()
            ),
        );
        let probe = o.connect();
        Ss { o, dc, probe }
    }
    fn listen(&mut self, channels: &[u64]) -> Md {
        listener(self.o.port, &mut self.probe, channels)
    }
    fn thing(&self) -> u16 {
        self.dc.class("Thing")
    }
    fn f(&self, name: &str) -> u16 {
        self.dc.field("Thing", name)
    }
    /// A Thing's REQUIRED section: setRequired, setRequiredDefault, setAiSecret.
    fn create_thing(&mut self, doid: u32, parent: u32, zone: u32, v: u32) {
        let p = P::new()
            .u32(doid)
            .u32(parent)
            .u32(zone)
            .u16(self.thing())
            .u32(v)
            .u16(7)
            .u8(3);
        self.probe.send(&dg(
            &[CONTROL],
            AI,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &p.0,
        ));
    }
    fn create_parent(&mut self, doid: u32) {
        let p = P::new()
            .u32(doid)
            .u32(0)
            .u32(0)
            .u16(self.dc.class("Parent"))
            .u32(1);
        self.probe.send(&dg(
            &[CONTROL],
            AI,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &p.0,
        ));
    }
    fn send(&mut self, to: u64, sender: u64, msgtype: u16, p: P) {
        self.probe.send(&dg(&[to], sender, msgtype, &p.0));
    }
    /// Asks `doid` a question as CLIENT and returns the answer's payload.
    fn ask(&mut self, client: &mut Md, doid: u32, msgtype: u16, p: P) -> Decoded {
        self.send(doid as u64, CLIENT, msgtype, p);
        decode(&client.recv())
    }
    /// Waits until the object answers GET_LOCATION (it exists).
    fn wait_exists(&mut self, client: &mut Md, doid: u32) {
        let d = self.ask(
            client,
            doid,
            STATESERVER_OBJECT_GET_LOCATION,
            P::new().u32(77),
        );
        assert_eq!(d.msgtype, STATESERVER_OBJECT_GET_LOCATION_RESP);
    }
    fn exists(&mut self, client: &mut Md, doid: u32) -> bool {
        self.send(
            doid as u64,
            CLIENT,
            STATESERVER_OBJECT_GET_LOCATION,
            P::new().u32(78),
        );
        client.recv_within(Duration::from_millis(300)).is_some()
    }
    /// Polls a count query until it gives `want`.
    fn wait_count(&mut self, client: &mut Md, doid: u32, msgtype: u16, p: P, want: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let d = self.ask(client, doid, msgtype, p.clone());
            assert_eq!(d.msgtype, msgtype + 1);
            if d.payload[4..8] == want.to_le_bytes() {
                return;
            }
            assert!(Instant::now() < deadline, "count never reached {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Decoded {
    recipients: Vec<u64>,
    sender: u64,
    msgtype: u16,
    payload: Vec<u8>,
}

fn decode(frame: &[u8]) -> Decoded {
    let n = frame[2] as usize;
    let mut recipients: Vec<u64> = (0..n)
        .map(|i| u64::from_le_bytes(frame[3 + 8 * i..11 + 8 * i].try_into().unwrap()))
        .collect();
    recipients.sort_unstable();
    let at = 3 + 8 * n;
    Decoded {
        recipients,
        sender: u64::from_le_bytes(frame[at..at + 8].try_into().unwrap()),
        msgtype: u16::from_le_bytes([frame[at + 8], frame[at + 9]]),
        payload: frame[at + 10..].to_vec(),
    }
}

fn d(recipients: &[u64], sender: u64, msgtype: u16, p: P) -> Decoded {
    let mut recipients = recipients.to_vec();
    recipients.sort_unstable();
    Decoded {
        recipients,
        sender,
        msgtype,
        payload: p.0,
    }
}

/// Receives `n` datagrams and compares them with `want`, in any order.
fn expect_set(m: &mut Md, want: Vec<Decoded>) {
    let mut got: Vec<Decoded> = (0..want.len()).map(|_| decode(&m.recv())).collect();
    let mut want = want;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    m.expect_none();
}

#[test]
fn create_announces_location_asks_ai_and_wakes_children() {
    let mut s = Ss::start();
    let doid = 200_001;
    let mut par = s.listen(&[5000, loc(5000, 100), pc(doid)]);
    s.create_thing(doid, 5000, 100, 42);
    let thing = s.thing();
    expect_set(
        &mut par,
        vec![
            d(
                &[5000],
                doid as u64,
                STATESERVER_OBJECT_GET_AI,
                P::new().u32(0),
            ),
            d(
                &[5000],
                AI,
                STATESERVER_OBJECT_CHANGING_LOCATION,
                P::new().u32(doid).u32(5000).u32(100).u32(0).u32(0),
            ),
            d(
                &[loc(5000, 100)],
                doid as u64,
                STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED,
                P::new().u32(doid).u32(5000).u32(100).u16(thing).u32(42),
            ),
            d(
                &[pc(doid)],
                doid as u64,
                STATESERVER_OBJECT_GET_LOCATION,
                P::new().u32(STATESERVER_CONTEXT_WAKE_CHILDREN),
            ),
        ],
    );
}

/// The runtime subscribes a new object's channel as it routes the create, and the object
/// unsubscribes it when deleted; with a delete and a create of the same doid in one write,
/// the create's early subscription finds the channel still subscribed, and only the new
/// object's own subscription keeps it: updates must still reach it afterwards.
#[test]
fn an_object_deleted_and_created_again_in_one_write_keeps_its_channel() {
    let mut s = Ss::start();
    let doid = 200_101;
    let mut zone = s.listen(&[loc(5000, 100)]);
    let mut client = s.listen(&[CLIENT]);
    s.create_thing(doid, 5000, 100, 1);
    s.wait_exists(&mut client, doid);
    assert_eq!(
        decode(&zone.recv()).msgtype,
        STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED
    );
    let thing = s.thing();
    let create = P::new()
        .u32(doid)
        .u32(5000)
        .u32(100)
        .u16(thing)
        .u32(2)
        .u16(7)
        .u8(3);
    let mut burst = dg(
        &[doid as u64],
        AI,
        STATESERVER_OBJECT_DELETE_RAM,
        &P::new().u32(doid).0,
    );
    burst.extend(dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &create.0,
    ));
    s.probe.send(&burst);
    let got: Vec<u16> = (0..2).map(|_| decode(&zone.recv()).msgtype).collect();
    assert_eq!(
        got,
        [
            STATESERVER_OBJECT_DELETE_RAM,
            STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED
        ]
    );
    // The new object hears its channel: an update is applied and broadcast.
    let set = s.f("setRequired");
    s.send(
        doid as u64,
        AI,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(set).u32(3),
    );
    assert_eq!(
        decode(&zone.recv()),
        d(
            &[loc(5000, 100)],
            AI,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(set).u32(3)
        )
    );
    let all = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(9).u32(doid).u16(set),
    );
    assert_eq!(all.payload, P::new().u32(9).u8(1).u16(set).u32(3).0);
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn fields_go_where_their_keywords_say_with_the_sender_kept() {
    let mut s = Ss::start();
    let doid = 200_002;
    let thing = s.thing();
    let mut client = s.listen(&[CLIENT]);
    let mut ai = s.listen(&[AI]);
    let mut owner = s.listen(&[OWNER]);
    let mut locl = s.listen(&[loc(5000, 100)]);
    s.create_thing(doid, 5000, 100, 42);
    s.wait_exists(&mut client, doid);
    locl.flush();
    // The AI gets everything; the owner the visible and ownrecv fields.
    s.send(doid as u64, AI, STATESERVER_OBJECT_SET_AI, P::new().u64(AI));
    expect_set(
        &mut ai,
        vec![d(
            &[AI],
            doid as u64,
            STATESERVER_OBJECT_ENTER_AI_WITH_REQUIRED,
            P::new()
                .u32(doid)
                .u32(5000)
                .u32(100)
                .u16(thing)
                .u32(42)
                .u16(7)
                .u8(3),
        )],
    );
    s.send(
        doid as u64,
        AI,
        STATESERVER_OBJECT_SET_OWNER,
        P::new().u64(OWNER),
    );
    expect_set(
        &mut owner,
        vec![d(
            &[OWNER],
            doid as u64,
            STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED,
            P::new().u32(doid).u32(5000).u32(100).u16(thing).u32(42),
        )],
    );
    let (fb, fa, fo) = (
        s.f("setBroadcastRam"),
        s.f("setAirecvRam"),
        s.f("setOwnrecvRam"),
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fb).u8(9),
    );
    expect_set(
        &mut locl,
        vec![d(
            &[loc(5000, 100)],
            OTHER,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(fb).u8(9),
        )],
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fa).u16(300),
    );
    expect_set(
        &mut ai,
        vec![d(
            &[AI],
            OTHER,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(fa).u16(300),
        )],
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fo).u32(77),
    );
    expect_set(
        &mut owner,
        vec![d(
            &[OWNER],
            OTHER,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(fo).u32(77),
        )],
    );
    // The AI's own airecv update is not echoed to it.
    s.send(
        doid as u64,
        AI,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fa).u16(301),
    );
    ai.expect_none();
    locl.expect_none();
    // SET_FIELDS: each field on its way.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELDS,
        P::new().u32(doid).u16(2).u16(fb).u8(10).u16(fa).u16(302),
    );
    expect_set(
        &mut locl,
        vec![d(
            &[loc(5000, 100)],
            OTHER,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(fb).u8(10),
        )],
    );
    expect_set(
        &mut ai,
        vec![d(
            &[AI],
            OTHER,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(fa).u16(302),
        )],
    );
    // Everything kept is in GET_ALL, OTHER ascending.
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_ALL,
        P::new().u32(5).u32(doid),
    );
    assert_eq!(
        got,
        d(
            &[CLIENT],
            doid as u64,
            STATESERVER_OBJECT_GET_ALL_RESP,
            P::new()
                .u32(5)
                .u32(doid)
                .u32(5000)
                .u32(100)
                .u16(thing)
                .u32(42)
                .u16(7)
                .u8(3)
                .u16(3)
                .u16(fb)
                .u8(10)
                .u16(fa)
                .u16(302)
                .u16(fo)
                .u32(77)
        )
    );
}

#[test]
fn invalid_updates_are_dropped_and_logged_and_keep_the_old_value() {
    let mut s = Ss::start();
    let doid = 200_003;
    let mut client = s.listen(&[CLIENT]);
    let mut locl = s.listen(&[loc(5000, 100)]);
    s.create_thing(doid, 5000, 100, 42);
    s.wait_exists(&mut client, doid);
    locl.flush();
    let (fr, fb) = (s.f("setRanged"), s.f("setBroadcastRam"));
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fr).u8(5),
    );
    locl.recv();
    // Out of range, not a field of the class, truncated, and an atomic SET_FIELDS with one bad value.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fr).u8(11),
    );
    let foreign = s.dc.field("Parent", "setRequired");
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(foreign).u32(1),
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(s.f("setRequired")).u16(1),
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELDS,
        P::new().u32(doid).u16(2).u16(fb).u8(1).u16(fr).u8(200),
    );
    locl.expect_none();
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(1).u32(doid).u16(fr),
    );
    assert_eq!(got.payload, P::new().u32(1).u8(1).u16(fr).u8(5).0);
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(2).u32(doid).u16(fb),
    );
    assert_eq!(
        got.payload,
        P::new().u32(2).u8(0).0,
        "the atomic SET_FIELDS stored nothing"
    );
    let log = s.o.log_text();
    assert!(
        log.contains("Thing(200003).setRanged from 123456789 dropped"),
        "{log}"
    );
    assert!(log.contains("not a field of this class"), "{log}");
}

#[test]
fn molecular_fields_and_field_queries() {
    let mut s = Ss::start();
    let doid = 200_004;
    let mut client = s.listen(&[CLIENT]);
    let mut locl = s.listen(&[loc(5000, 100)]);
    s.create_thing(doid, 5000, 100, 42);
    s.wait_exists(&mut client, doid);
    locl.flush();
    let (fxy, fx, fy, fnk) = (s.f("setXY"), s.f("setX"), s.f("setY"), s.f("setNotKept"));
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fxy).i16(3).i16(-4),
    );
    expect_set(
        &mut locl,
        vec![d(
            &[loc(5000, 100)],
            OTHER,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(doid).u16(fxy).i16(3).i16(-4),
        )],
    );
    // A broadcast field that is not ram is sent on but not kept.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fnk).u8(1),
    );
    locl.recv();
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(1).u32(doid).u16(fx),
    );
    assert_eq!(got.payload, P::new().u32(1).u8(1).u16(fx).i16(3).0);
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(2).u32(doid).u16(fxy),
    );
    assert_eq!(got.payload, P::new().u32(2).u8(1).u16(fxy).i16(3).i16(-4).0);
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(3).u32(doid).u16(fnk),
    );
    assert_eq!(got.payload, P::new().u32(3).u8(0).0);
    // GET_FIELDS: sorted, duplicates once, unset fields left out.
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELDS,
        P::new()
            .u32(4)
            .u32(doid)
            .u16(4)
            .u16(fy)
            .u16(fx)
            .u16(fnk)
            .u16(fy),
    );
    assert_eq!(
        got.payload,
        P::new()
            .u32(4)
            .u8(1)
            .u16(2)
            .u16(fx)
            .i16(3)
            .u16(fy)
            .i16(-4)
            .0
    );
    // A field of another class fails the whole query.
    let foreign = s.dc.field("Parent", "setRequired");
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELDS,
        P::new().u32(5).u32(doid).u16(2).u16(fx).u16(foreign),
    );
    assert_eq!(got.payload, P::new().u32(5).u8(0).0);
}

#[test]
fn delete_field_ram_forgets_ram_resets_required_and_refuses_required_without_default() {
    let mut s = Ss::start();
    let doid = 200_005;
    let mut client = s.listen(&[CLIENT]);
    let mut locl = s.listen(&[loc(5000, 100)]);
    s.create_thing(doid, 5000, 100, 42);
    s.wait_exists(&mut client, doid);
    locl.flush();
    let (fb, fd, fr) = (
        s.f("setBroadcastRam"),
        s.f("setRequiredDefault"),
        s.f("setRequired"),
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fb).u8(5),
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        P::new().u32(doid).u16(fd).u16(100),
    );
    locl.recv();
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_DELETE_FIELD_RAM,
        P::new().u32(doid).u16(fb),
    );
    expect_set(
        &mut locl,
        vec![d(
            &[loc(5000, 100)],
            OTHER,
            STATESERVER_OBJECT_DELETE_FIELD_RAM,
            P::new().u32(doid).u16(fb),
        )],
    );
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(1).u32(doid).u16(fb),
    );
    assert_eq!(got.payload, P::new().u32(1).u8(0).0);
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_DELETE_FIELDS_RAM,
        P::new().u32(doid).u16(1).u16(fd),
    );
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(2).u32(doid).u16(fd),
    );
    assert_eq!(
        got.payload,
        P::new().u32(2).u8(1).u16(fd).u16(7).0,
        "reset to the DC default"
    );
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_DELETE_FIELD_RAM,
        P::new().u32(doid).u16(fr),
    );
    locl.expect_none();
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(3).u32(doid).u16(fr),
    );
    assert_eq!(got.payload, P::new().u32(3).u8(1).u16(fr).u32(42).0);
    assert!(s
        .o
        .log_text()
        .contains("without a default cannot be deleted"));
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn location_ai_and_owner_changes_notify_everyone_concerned() {
    let mut s = Ss::start();
    let doid = 200_006;
    let thing = s.thing();
    let mut client = s.listen(&[CLIENT]);
    let mut ai = s.listen(&[AI]);
    let mut owner = s.listen(&[OWNER]);
    let mut owner2 = s.listen(&[OWNER2]);
    let mut par = s.listen(&[5000, loc(5000, 100), loc(5000, 200)]);
    s.create_thing(doid, 5000, 100, 42);
    s.wait_exists(&mut client, doid);
    par.flush();
    s.send(doid as u64, AI, STATESERVER_OBJECT_SET_AI, P::new().u64(AI));
    s.send(
        doid as u64,
        AI,
        STATESERVER_OBJECT_SET_OWNER,
        P::new().u64(OWNER),
    );
    ai.recv();
    owner.recv();
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_LOCATION,
        P::new().u32(5000).u32(200),
    );
    let changing = d(
        &[AI, OWNER, 5000, loc(5000, 100)],
        OTHER,
        STATESERVER_OBJECT_CHANGING_LOCATION,
        P::new().u32(doid).u32(5000).u32(200).u32(5000).u32(100),
    );
    expect_set(&mut ai, vec![changing.clone()]);
    expect_set(&mut owner, vec![changing.clone()]);
    expect_set(
        &mut par,
        vec![
            changing,
            d(
                &[loc(5000, 200)],
                doid as u64,
                STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED,
                P::new().u32(doid).u32(5000).u32(200).u16(thing).u32(42),
            ),
        ],
    );
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_LOCATION,
        P::new().u32(9),
    );
    assert_eq!(got.payload, P::new().u32(9).u32(doid).u32(5000).u32(200).0);
    // Owner change: the old owner is told, the new one gets the object.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_OWNER,
        P::new().u64(OWNER2),
    );
    expect_set(
        &mut owner,
        vec![d(
            &[OWNER],
            OTHER,
            STATESERVER_OBJECT_CHANGING_OWNER,
            P::new().u32(doid).u64(OWNER2).u64(OWNER),
        )],
    );
    expect_set(
        &mut owner2,
        vec![d(
            &[OWNER2],
            doid as u64,
            STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED,
            P::new().u32(doid).u32(5000).u32(200).u16(thing).u32(42),
        )],
    );
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_OWNER,
        P::new().u32(3),
    );
    assert_eq!(got.msgtype, STATESERVER_OBJECT_GET_OWNER_RESP);
    assert_eq!(got.payload, P::new().u32(3).u32(doid).u64(OWNER2).0);
    let got = s.ask(
        &mut client,
        doid,
        STATESERVER_OBJECT_GET_AI,
        P::new().u32(4),
    );
    assert_eq!(got.payload, P::new().u32(4).u32(doid).u64(AI).0);
    // DELETE_RAM: the location, the AI and the owner hear it; the parent is told it left.
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_DELETE_RAM,
        P::new().u32(doid),
    );
    let del = d(
        &[loc(5000, 200), AI, OWNER2],
        OTHER,
        STATESERVER_OBJECT_DELETE_RAM,
        P::new().u32(doid),
    );
    expect_set(
        &mut par,
        vec![
            d(
                &[5000],
                OTHER,
                STATESERVER_OBJECT_CHANGING_LOCATION,
                P::new().u32(doid).u32(0).u32(0).u32(5000).u32(200),
            ),
            del.clone(),
        ],
    );
    expect_set(&mut ai, vec![del.clone()]);
    expect_set(&mut owner2, vec![del]);
    assert!(!s.exists(&mut client, doid));
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn parents_know_their_children_by_zone() {
    let mut s = Ss::start();
    let (p, c1, c2) = (300_000u32, 300_001u32, 300_002u32);
    let thing = s.thing();
    let mut client = s.listen(&[CLIENT]);
    s.create_parent(p);
    s.wait_exists(&mut client, p);
    s.create_thing(c1, p, 5, 1);
    s.create_thing(c2, p, 6, 2);
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_CHILD_COUNT,
        P::new().u32(1).u32(p),
        2,
    );
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_ZONE_COUNT,
        P::new().u32(1).u32(p).u32(5),
        1,
    );
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_ZONES_COUNT,
        P::new().u32(1).u32(p).u16(3).u32(5).u32(6).u32(7),
        2,
    );
    let got = s.ask(
        &mut client,
        p,
        STATESERVER_GET_ACTIVE_ZONES,
        P::new().u32(8),
    );
    assert_eq!(got.payload, P::new().u32(8).u16(2).u32(5).u32(6).0);
    // Interest: the count first, then each object with the query's context.
    s.send(
        p as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_ZONE_OBJECTS,
        P::new().u32(11).u32(p).u32(5),
    );
    expect_set(
        &mut client,
        vec![
            d(
                &[CLIENT],
                p as u64,
                STATESERVER_OBJECT_GET_ZONES_COUNT_RESP,
                P::new().u32(11).u32(1),
            ),
            d(
                &[CLIENT],
                c1 as u64,
                STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED,
                P::new().u32(11).u32(c1).u32(p).u32(5).u16(thing).u32(1),
            ),
        ],
    );
    s.send(
        p as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_ZONES_OBJECTS,
        P::new().u32(12).u32(p).u16(2).u32(5).u32(6),
    );
    let got: Vec<Decoded> = (0..3).map(|_| decode(&client.recv())).collect();
    assert!(got
        .iter()
        .any(|g| g.msgtype == STATESERVER_OBJECT_GET_ZONES_COUNT_RESP
            && g.payload == P::new().u32(12).u32(2).0));
    assert_eq!(
        got.iter()
            .filter(|g| g.msgtype == STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED)
            .count(),
        2
    );
    s.send(
        p as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_CHILDREN,
        P::new().u32(13).u32(p),
    );
    let got: Vec<Decoded> = (0..3).map(|_| decode(&client.recv())).collect();
    assert!(got
        .iter()
        .any(|g| g.msgtype == STATESERVER_OBJECT_GET_CHILD_COUNT_RESP
            && g.payload == P::new().u32(13).u32(2).0));
    // An empty zone: a zero count and nothing else.
    s.send(
        p as u64,
        CLIENT,
        STATESERVER_OBJECT_GET_ZONE_OBJECTS,
        P::new().u32(14).u32(p).u32(9),
    );
    expect_set(
        &mut client,
        vec![d(
            &[CLIENT],
            p as u64,
            STATESERVER_OBJECT_GET_ZONES_COUNT_RESP,
            P::new().u32(14).u32(0),
        )],
    );
    // A child moves zone: the parent follows.
    s.send(
        c1 as u64,
        OTHER,
        STATESERVER_OBJECT_SET_LOCATION,
        P::new().u32(p).u32(6),
    );
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_ZONE_COUNT,
        P::new().u32(1).u32(p).u32(6),
        2,
    );
    let got = s.ask(
        &mut client,
        p,
        STATESERVER_GET_ACTIVE_ZONES,
        P::new().u32(8),
    );
    assert_eq!(got.payload, P::new().u32(8).u16(1).u32(6).0);
}

#[test]
fn a_parent_created_after_its_children_wakes_them() {
    let mut s = Ss::start();
    let (p, c) = (400_000u32, 400_001u32);
    let mut client = s.listen(&[CLIENT]);
    s.create_thing(c, p, 3, 1);
    s.wait_exists(&mut client, c);
    s.create_parent(p);
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_ZONE_COUNT,
        P::new().u32(1).u32(p).u32(3),
        1,
    );
}

#[test]
fn deleting_a_parent_or_its_zones_deletes_the_children() {
    let mut s = Ss::start();
    let (p, c1, c2, g) = (500_000u32, 500_001u32, 500_002u32, 500_003u32);
    let mut client = s.listen(&[CLIENT]);
    let mut locs = s.listen(&[loc(p, 5), loc(p, 6), loc(c2, 1)]);
    s.create_parent(p);
    s.wait_exists(&mut client, p);
    s.create_thing(c1, p, 5, 1);
    s.create_thing(c2, p, 6, 2);
    s.create_thing(g, c2, 1, 3);
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_CHILD_COUNT,
        P::new().u32(1).u32(p),
        2,
    );
    s.wait_count(
        &mut client,
        c2,
        STATESERVER_OBJECT_GET_CHILD_COUNT,
        P::new().u32(1).u32(c2),
        1,
    );
    locs.flush();
    // DELETE_ZONE: zone 5's child goes, silently towards the parent.
    s.send(
        p as u64,
        OTHER,
        STATESERVER_OBJECT_DELETE_ZONE,
        P::new().u32(p).u32(5),
    );
    expect_set(
        &mut locs,
        vec![d(
            &[loc(p, 5)],
            OTHER,
            STATESERVER_OBJECT_DELETE_RAM,
            P::new().u32(c1),
        )],
    );
    assert!(!s.exists(&mut client, c1));
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_CHILD_COUNT,
        P::new().u32(1).u32(p),
        1,
    );
    // DELETE_RAM of the parent: its child and grandchild go too.
    s.send(
        p as u64,
        OTHER,
        STATESERVER_OBJECT_DELETE_RAM,
        P::new().u32(p),
    );
    expect_set(
        &mut locs,
        vec![
            d(
                &[loc(p, 6)],
                OTHER,
                STATESERVER_OBJECT_DELETE_RAM,
                P::new().u32(c2),
            ),
            d(
                &[loc(c2, 1)],
                OTHER,
                STATESERVER_OBJECT_DELETE_RAM,
                P::new().u32(g),
            ),
        ],
    );
    for x in [p, c2, g] {
        assert!(!s.exists(&mut client, x), "{x} still exists");
    }
}

#[test]
fn an_ai_set_on_a_parent_flows_to_children_that_have_none_of_their_own() {
    let mut s = Ss::start();
    let (p, c, e) = (600_000u32, 600_001u32, 600_002u32);
    let mut client = s.listen(&[CLIENT]);
    let mut ai = s.listen(&[AI]);
    let mut other_ai = s.listen(&[AI + 1]);
    s.create_parent(p);
    s.wait_exists(&mut client, p);
    s.create_thing(c, p, 1, 1);
    s.create_thing(e, p, 1, 2);
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_CHILD_COUNT,
        P::new().u32(1).u32(p),
        2,
    );
    s.send(
        e as u64,
        OTHER,
        STATESERVER_OBJECT_SET_AI,
        P::new().u64(AI + 1),
    );
    other_ai.recv();
    s.send(p as u64, OTHER, STATESERVER_OBJECT_SET_AI, P::new().u64(AI));
    let got: Vec<Decoded> = (0..2).map(|_| decode(&ai.recv())).collect();
    let mut entered: Vec<u32> = got
        .iter()
        .filter(|g| g.msgtype == STATESERVER_OBJECT_ENTER_AI_WITH_REQUIRED)
        .map(|g| u32::from_le_bytes(g.payload[0..4].try_into().unwrap()))
        .collect();
    entered.sort();
    assert_eq!(entered, vec![p, c]);
    ai.expect_none();
    other_ai.expect_none();
    let got = s.ask(&mut client, c, STATESERVER_OBJECT_GET_AI, P::new().u32(1));
    assert_eq!(got.payload, P::new().u32(1).u32(c).u64(AI).0);
    // A child created under a parent with an AI asks for it and gets it.
    let late = 600_003u32;
    s.create_thing(late, p, 2, 3);
    let g = decode(&ai.recv());
    assert_eq!(g.msgtype, STATESERVER_OBJECT_ENTER_AI_WITH_REQUIRED);
    assert_eq!(&g.payload[0..4], &late.to_le_bytes());
}

#[test]
fn delete_ai_objects_fires_from_a_post_remove_when_the_ai_drops() {
    let mut s = Ss::start();
    let doids = [700_001u32, 700_002, 700_003, 700_004];
    let mut client = s.listen(&[CLIENT]);
    let mut locl = s.listen(&[loc(5000, 1)]);
    let mut aiconn = s.listen(&[AI]);
    let pr = dg(
        &[CONTROL],
        AI,
        STATESERVER_DELETE_AI_OBJECTS,
        &P::new().u64(AI).0,
    );
    aiconn.send(&add_post_remove(AI, &pr));
    for &x in &doids {
        s.create_thing(x, 5000, 1, x);
        s.wait_exists(&mut client, x);
        s.send(x as u64, AI, STATESERVER_OBJECT_SET_AI, P::new().u64(AI));
        aiconn.recv();
    }
    // One object with another AI survives.
    s.create_thing(700_100, 5000, 1, 0);
    s.wait_exists(&mut client, 700_100);
    locl.flush();
    drop(aiconn);
    let mut deleted: Vec<u32> = (0..doids.len())
        .map(|_| {
            let g = decode(&locl.recv());
            assert_eq!(g.msgtype, STATESERVER_OBJECT_DELETE_RAM);
            assert_eq!(g.sender, AI);
            u32::from_le_bytes(g.payload[0..4].try_into().unwrap())
        })
        .collect();
    deleted.sort();
    assert_eq!(deleted, doids);
    locl.expect_none();
    assert!(s.exists(&mut client, 700_100));
}

#[test]
fn race_a_parent_deleted_while_its_child_moves() {
    let mut s = Ss::start();
    let (p, c) = (800_000u32, 800_001u32);
    let mut client = s.listen(&[CLIENT]);
    s.create_parent(p);
    s.wait_exists(&mut client, p);
    s.create_thing(c, p, 5, 1);
    s.wait_count(
        &mut client,
        p,
        STATESERVER_OBJECT_GET_CHILD_COUNT,
        P::new().u32(1).u32(p),
        1,
    );
    let mut burst = dg(
        &[c as u64],
        OTHER,
        STATESERVER_OBJECT_SET_LOCATION,
        &P::new().u32(p).u32(6).0,
    );
    burst.extend(dg(
        &[p as u64],
        OTHER,
        STATESERVER_OBJECT_DELETE_RAM,
        &P::new().u32(p).0,
    ));
    s.probe.send(&burst);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!s.exists(&mut client, p));
    assert!(
        !s.exists(&mut client, c),
        "the child was deleted with its parent"
    );
    assert!(s.o.is_running());
}

#[test]
fn race_an_owner_change_during_a_location_change() {
    let mut s = Ss::start();
    let doid = 800_010u32;
    let mut client = s.listen(&[CLIENT]);
    let mut owner = s.listen(&[OWNER]);
    let mut owner2 = s.listen(&[OWNER2]);
    s.create_thing(doid, 5000, 1, 1);
    s.wait_exists(&mut client, doid);
    s.send(
        doid as u64,
        OTHER,
        STATESERVER_OBJECT_SET_OWNER,
        P::new().u64(OWNER),
    );
    owner.recv();
    let mut burst = dg(
        &[doid as u64],
        OTHER,
        STATESERVER_OBJECT_SET_LOCATION,
        &P::new().u32(5000).u32(2).0,
    );
    burst.extend(dg(
        &[doid as u64],
        OTHER,
        STATESERVER_OBJECT_SET_OWNER,
        &P::new().u64(OWNER2).0,
    ));
    s.probe.send(&burst);
    let a = decode(&owner.recv());
    let b = decode(&owner.recv());
    assert_eq!(a.msgtype, STATESERVER_OBJECT_CHANGING_LOCATION);
    assert_eq!(b.msgtype, STATESERVER_OBJECT_CHANGING_OWNER);
    let e = decode(&owner2.recv());
    assert_eq!(e.msgtype, STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED);
    assert_eq!(
        &e.payload[4..12],
        &P::new().u32(5000).u32(2).0[..],
        "the new owner sees the new location"
    );
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn creates_need_every_required_field_and_refuse_bad_ones() {
    let mut s = Ss::start();
    let mut client = s.listen(&[CLIENT]);
    let thing = s.thing();
    // Only setRequired given: refused, as astrond does.
    let p = P::new().u32(900_009).u32(0).u32(0).u16(thing).u32(5);
    s.probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &p.0,
    ));
    assert!(!s.exists(&mut client, 900_009));
    let p = P::new()
        .u32(900_001)
        .u32(0)
        .u32(0)
        .u16(thing)
        .u32(5)
        .u16(7)
        .u8(0);
    s.probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &p.0,
    ));
    s.wait_exists(&mut client, 900_001);
    let got = s.ask(
        &mut client,
        900_001,
        STATESERVER_OBJECT_GET_ALL,
        P::new().u32(1).u32(900_001),
    );
    assert_eq!(
        got.payload,
        P::new()
            .u32(1)
            .u32(900_001)
            .u32(0)
            .u32(0)
            .u16(thing)
            .u32(5)
            .u16(7)
            .u8(0)
            .u16(0)
            .0
    );
    // With OTHER: ram fields kept; an out-of-range value refuses the create.
    let fb = s.f("setBroadcastRam");
    let p = P::new()
        .u32(900_002)
        .u32(0)
        .u32(0)
        .u16(thing)
        .u32(5)
        .u16(7)
        .u8(1)
        .u16(1)
        .u16(fb)
        .u8(4);
    s.probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED_OTHER,
        &p.0,
    ));
    s.wait_exists(&mut client, 900_002);
    let got = s.ask(
        &mut client,
        900_002,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(1).u32(900_002).u16(fb),
    );
    assert_eq!(got.payload, P::new().u32(1).u8(1).u16(fb).u8(4).0);
    let fr = s.f("setRanged");
    let p = P::new()
        .u32(900_003)
        .u32(0)
        .u32(0)
        .u16(thing)
        .u32(5)
        .u16(7)
        .u8(1)
        .u16(1)
        .u16(fr)
        .u8(99);
    s.probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED_OTHER,
        &p.0,
    ));
    // Unknown class, and a create for an object that exists.
    let p = P::new().u32(900_004).u32(0).u32(0).u16(999).u32(5);
    s.probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &p.0,
    ));
    let p = P::new()
        .u32(900_001)
        .u32(0)
        .u32(0)
        .u16(thing)
        .u32(6)
        .u16(7)
        .u8(0);
    s.probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &p.0,
    ));
    assert!(!s.exists(&mut client, 900_003));
    assert!(!s.exists(&mut client, 900_004));
    let got = s.ask(
        &mut client,
        900_001,
        STATESERVER_OBJECT_GET_FIELD,
        P::new().u32(2).u32(900_001).u16(s.f("setRequired")),
    );
    assert_eq!(
        got.payload,
        P::new().u32(2).u8(1).u16(s.f("setRequired")).u32(5).0
    );
    assert!(s.o.is_running());
}

#[test]
fn an_astrond_yaml_with_a_stateserver_and_a_dbss_serves_objects() {
    let dc = TestDc::load();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("astrond.yml");
    std::fs::write(
        &yml,
        format!(
            "messagedirector:\n  bind: 127.0.0.1:{port}\ngeneral:\n  dc_files:\n    - {}\nroles:\n  - type: stateserver\n    control: {CONTROL}\n  - type: dbss\n    database: 4003\n    ranges:\n      - min: 100000\n        max: 199999\n",
            dc.path.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(otpd_bin())
        .arg(&yml)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let mut probe = Md::connect(port);
    let mut client = listener(port, &mut probe, &[CLIENT]);
    let thing = dc.class("Thing");
    let p = P::new()
        .u32(250_000)
        .u32(0)
        .u32(0)
        .u16(thing)
        .u32(1)
        .u16(7)
        .u8(0);
    probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &p.0,
    ));
    probe.send(&dg(
        &[250_000],
        CLIENT,
        STATESERVER_OBJECT_GET_LOCATION,
        &P::new().u32(3).0,
    ));
    let got = decode(&client.recv());
    assert_eq!(got.payload, P::new().u32(3).u32(250_000).u32(0).u32(0).0);
    probe.send(&dg(
        &[100_000],
        CLIENT,
        DBSS_OBJECT_GET_ACTIVATED,
        &P::new().u32(4).u32(100_000).0,
    ));
    let got = decode(&client.recv());
    assert_eq!(got.msgtype, DBSS_OBJECT_GET_ACTIVATED_RESP);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_stateserver_without_dc_files_or_with_a_reserved_control_channel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (ron, mentions) in [
        ("(roles: [StateServer(control: 100100)])", "dc_files"),
        (
            "(dc_files: [\"x.dc\"], roles: [StateServer(control: 500)])",
            "reserved",
        ),
    ] {
        let path = dir.path().join("c.ron");
        std::fs::write(&path, ron).unwrap();
        let out = std::process::Command::new(otpd_bin())
            .arg("--cluster")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{ron}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(mentions), "{ron}: {err}");
    }
}

#[test]
fn an_invalid_update_is_reported_to_the_eventlogger() {
    let el = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    el.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dc = TestDc::load();
    let port = free_port();
    let o = Otpd::start_full(
        port,
        "",
        &format!(
            "eventlogger: Some(\"{}\"), dc_files: [\"{}\"], roles: [StateServer(control: {CONTROL})],",
            el.local_addr().unwrap(),
            dc.path.display()
        ),
    );
    let mut probe = o.connect();
    let mut client = listener(port, &mut probe, &[CLIENT]);
    let thing = dc.class("Thing");
    let doid = 910_001u32;
    let p = P::new()
        .u32(doid)
        .u32(0)
        .u32(0)
        .u16(thing)
        .u32(1)
        .u16(7)
        .u8(0);
    probe.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &p.0,
    ));
    probe.send(&dg(
        &[doid as u64],
        CLIENT,
        STATESERVER_OBJECT_GET_LOCATION,
        &P::new().u32(1).0,
    ));
    client.recv();
    let fr = dc.field("Thing", "setRanged");
    probe.send(&dg(
        &[doid as u64],
        OTHER,
        STATESERVER_OBJECT_SET_FIELD,
        &P::new().u32(doid).u16(fr).u8(42).0,
    ));
    let mut buf = [0u8; 2048];
    let n = el.recv(&mut buf).expect("an event within 5 s");
    let event = &buf[..n];
    let has = |s: &[u8]| event.windows(s.len()).any(|w| w == s);
    assert!(has(b"invalid-field-update"), "{event:?}");
    assert!(has(b"setRanged") && has(b"Thing"), "{event:?}");
    // doid and sender as MessagePack uint32 (0xce, big-endian).
    let mut d = vec![0xce];
    d.extend_from_slice(&doid.to_be_bytes());
    assert!(has(&d), "{event:?}");
    let mut snd = vec![0xce];
    snd.extend_from_slice(&(OTHER as u32).to_be_bytes());
    assert!(has(&snd), "{event:?}");
}

//! The Toontown 2003 ClientAgent dialect against the real binary, with a StateServer, a DBSS
//! and a SQLite database: a scripted 2003 client follows the real client's message sequence
//! (login, districts, avatar list, make and name a toon, choose it, quiet zone, playground),
//! meets a second toon there, logs out and finds its toon saved; and every refusal.

mod common;

use common::*;
use otp_wire::msgtypes::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const CONTROL: u64 = 100_100;
const DB: u64 = 4003;
const AI: u64 = 5_000;
const SHARD_CHANNEL: u64 = 4662;
const DISTRICT: u32 = 4_000_000;
const TIME_MANAGER: u32 = 4_000_001;
const TROLLEY: u32 = 4_000_002;
const ON_STREET: u32 = 4_000_003;
const FAR_AWAY: u32 = 4_000_004;
const VERSION: &str = "sv1.0.6.9";
const HASH: u32 = 3_005_460_305;
const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "test-secret-test-secret-test-sec"; // 32 bytes, the least accepted

struct Cluster {
    o: Otpd,
    /// The cluster's DC, read with its settings: the AI's side.
    dc: otp_dc::DcFile,
    /// The 2003 client's field numbers, from the test's own reading of the DC text.
    client: std::collections::HashMap<(String, String), u16>,
    /// [open tokens, signed tokens]
    ports: [u16; 2],
    ai: Md,
    el: UdpSocket,
    _data: tempfile::TempDir,
}

fn start() -> Cluster {
    start_numbered(false)
}

/// `start`, with the cluster numbering fields file-wide (false: the default) or per class
/// (true: `dc_settings` as docs/toontown-2003.md configures a 2003 cluster).
fn start_numbered(legacy: bool) -> Cluster {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    start_full(
        &root.join("tests/dc/toon.dc"),
        "DistributedTrolley",
        |p| p.string("waitEmpty").i16(0),
        legacy,
    )
}

/// As `start`, with another DC file and another class for the playground's object (its
/// required fields written by `required`).
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn start_full(
    dc_path: &std::path::Path,
    playground_class: &str,
    required: fn(P) -> P,
    legacy: bool,
) -> Cluster {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dc_path = dc_path.canonicalize().unwrap();
    let names = root.join("tests/dc/names.txt").canonicalize().unwrap();
    let vis = root.join("tests/dc/vis.txt").canonicalize().unwrap();
    let options = otp_dc::HashOptions {
        multiple_inheritance: !legacy,
        virtual_inheritance: !legacy,
        sort_inheritance_by_file: !legacy,
    };
    let dc = otp_dc::DcFile::parse_files_with(&[&dc_path], options).unwrap();
    let client = client_numbers_2003(&std::fs::read_to_string(&dc_path).unwrap());
    let dc_settings = if legacy {
        "dc_settings: (multiple_inheritance: false, virtual_inheritance: false, \
         sort_inheritance_by_file: false), "
    } else {
        ""
    };
    let data = tempfile::tempdir().unwrap();
    let el = UdpSocket::bind("127.0.0.1:0").unwrap();
    el.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let ports = [free_port(), free_port()];
    let ca = |port: u16, min: u64, tokens: &str| {
        format!(
            "ClientAgent((bind: \"127.0.0.1:{port}\", version: \"{VERSION}\", manual_dc_hash: Some({HASH}), \
             channels: (min: {min}, max: {}), dialect: Toontown2003, \
             toontown: (tokens: {tokens}, name_parts: Some(\"{}\"), visibility: Some(\"{}\"), shard_channel: {SHARD_CHANNEL}))),",
            min + 9999,
            names.display(),
            vis.display()
        )
    };
    let top = format!(
        "{dc_settings}dc_files: [\"{}\"], eventlogger: Some(\"127.0.0.1:{}\"), roles: [\
         StateServer(control: {CONTROL}), \
         Dbss(database: {DB}, ranges: [(min: 100000000, max: 399999999)]), \
         Database(control: {DB}, generate: (min: 100000000, max: 399999999), backend: Sqlite(directory: \"{}\")), \
         {} {}],",
        dc_path.display(),
        el.local_addr().unwrap().port(),
        data.path().display(),
        ca(ports[0], 1_000_000, "Open"),
        ca(ports[1], 2_000_000, &format!("Signed(secret: \"{SECRET}\")")),
    );
    let o = Otpd::start_full(free_port(), "", &top);
    let mut probe = o.connect();
    let mut ai = listener(o.port, &mut probe, &[AI]);
    let class = |n: &str| dc.class_by_name(n).unwrap().id();
    // The district, its managers in the quiet zone, the playground's trolley.
    let create = |ai: &mut Md, doid: u32, zone: u32, class: u16, req: P| {
        let parent = if doid == DISTRICT { 0 } else { DISTRICT };
        let p = P::new()
            .u32(doid)
            .u32(parent)
            .u32(zone)
            .u16(class)
            .bytes(&req.0);
        ai.send(&dg(
            &[CONTROL],
            AI,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &p.0,
        ));
    };
    create(&mut ai, DISTRICT, 0, class("DistributedObject"), P::new());
    ai.send(&dg(
        &[DISTRICT as u64],
        AI,
        STATESERVER_OBJECT_SET_AI,
        &P::new().u64(AI).0,
    ));
    create(&mut ai, TIME_MANAGER, 1, class("TimeManager"), P::new());
    create(
        &mut ai,
        TROLLEY,
        2000,
        class(playground_class),
        required(P::new()),
    );
    // A street: one object in a zone its vis group sees, one in a zone it does not.
    for (doid, zone) in [(ON_STREET, 2101), (FAR_AWAY, 2200)] {
        create(
            &mut ai,
            doid,
            zone,
            class(playground_class),
            required(P::new()),
        );
    }
    for doid in [TIME_MANAGER, TROLLEY] {
        ai.send(&dg(
            &[doid as u64],
            AI,
            STATESERVER_OBJECT_SET_AI,
            &P::new().u64(AI).0,
        ));
    }
    // Announce the district; its end goes as a post-remove.
    ai.send(&add_post_remove(
        AI,
        &dg(&[SHARD_CHANNEL], AI, 1901, &P::new().u32(DISTRICT).0),
    ));
    ai.send(&dg(
        &[SHARD_CHANNEL],
        AI,
        1900,
        &P::new().u32(DISTRICT).string("Toon Valley").u32(0).0,
    ));
    Cluster {
        o,
        dc,
        client,
        ports,
        ai,
        el,
        _data: data,
    }
}

/// A 2003 client: raw socket, the client's own message forms.
struct Toon {
    m: Md,
    /// Every CREATE_OBJECT_REQUIRED(_OTHER) body seen, in order.
    creates: Vec<Vec<u8>>,
}

fn msg(t: u16, p: P) -> Vec<u8> {
    let mut body = t.to_le_bytes().to_vec();
    body.extend_from_slice(&p.0);
    frame(&body)
}

impl Toon {
    fn connect(port: u16) -> Toon {
        Toon {
            m: Md::connect(port),
            creates: Vec::new(),
        }
    }
    fn send(&mut self, t: u16, p: P) {
        self.m.send(&msg(t, p));
    }
    fn recv(&mut self) -> (u16, Vec<u8>) {
        let f = self
            .m
            .recv_within(WAIT)
            .expect("a message for the 2003 client");
        (u16::from_le_bytes([f[2], f[3]]), f[4..].to_vec())
    }
    /// The next message of type `t`, skipping others (heartbeats, friends, state).
    fn expect(&mut self, t: u16) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no message {t}");
            let (got, p) = self.recv();
            if got == t {
                return p;
            }
            assert_ne!(got, 4, "kicked while waiting for {t}: {p:?}");
        }
    }
    fn login(&mut self, token: &str) -> Vec<u8> {
        self.send(52, P::new());
        self.send(16, P::new().string(token).string(VERSION).u32(HASH).u32(2));
        self.expect(17)
    }
    /// CLIENT_LOGIN (the client's `account-old-auth #t`) with the right version and hash.
    fn send_password_login(&mut self, name: &str, password: &str, create: bool) {
        self.send(
            1,
            P::new()
                .string(name)
                .u32(0x7f00_0001)
                .u16(5150)
                .string(VERSION)
                .u32(HASH)
                .string(password)
                .u8(create as u8),
        );
    }
    /// A password login; returns LOGIN_RESP's code, after checking its layout.
    fn password_login(&mut self, name: &str, password: &str, create: bool) -> u8 {
        self.send(52, P::new());
        self.send_password_login(name, password, create);
        let p = self.expect(2);
        // uint8 code, uint32 accountCode, string errorString, uint32 sec, uint32 usec.
        let (_, at) = string_at(&p, 5);
        assert_eq!(p.len(), at + 8, "LOGIN_RESP layout: {p:?}");
        p[0]
    }
    /// Expects CLIENT_GO_GET_LOST with `code`, then the connection closing.
    fn expect_lost(&mut self, code: u16) {
        let p = self.expect_including_lost(4);
        assert_eq!(u16::from_le_bytes([p[0], p[1]]), code, "reason {p:?}");
        assert!(self.m.closed_within(WAIT), "closed after GO_GET_LOST");
    }
    fn expect_including_lost(&mut self, t: u16) -> Vec<u8> {
        loop {
            let (got, p) = self.recv();
            if got == t {
                return p;
            }
        }
    }
    fn create(&mut self, slot: u8, dna: &str) -> u32 {
        self.send(6, P::new().u16(0).string(dna).u8(slot));
        let p = self.expect(7);
        assert_eq!(&p[..3], &[0, 0, 0], "CREATE_AVATAR_RESP ok");
        u32::from_le_bytes(p[3..7].try_into().unwrap())
    }
    /// Chooses the toon and walks it to Toontown Central as the client does; returns the
    /// details (the owner view) and the objects created in zone 2000.
    fn play(&mut self, doid: u32) -> (Vec<u8>, Vec<(u16, u32)>) {
        self.send(32, P::new().u32(doid));
        let details = self.expect(15);
        assert_eq!(&details[..5], &P::new().u32(doid).u8(0).0[..]);
        self.send(10, P::new());
        assert_eq!(self.expect(11), vec![0, 0, 0]);
        self.send(31, P::new().u32(200_000_000));
        assert_eq!(self.expect(47).len(), 14);
        self.send(29, P::new().u16(1));
        let (state, creates) = self.zone_answer(1);
        assert_eq!(state, 1);
        assert!(
            creates.iter().any(|&(_, d)| d == TIME_MANAGER),
            "{creates:?}"
        );
        self.send(29, P::new().u16(1));
        self.zone_answer(1);
        self.send(29, P::new().u16(2000));
        let (state, creates) = self.zone_answer(2000);
        assert_eq!(state, 2000);
        (details, creates)
    }
    /// GET_STATE_RESP(zone) first, then creates, then DONE_SET_ZONE_RESP(zone).
    fn zone_answer(&mut self, zone: u16) -> (u16, Vec<(u16, u32)>) {
        let p = self.expect(47);
        assert_eq!(&p[..12], &[0; 12]);
        let state = u16::from_le_bytes([p[12], p[13]]);
        let mut creates = Vec::new();
        loop {
            let (t, p) = self.recv();
            match t {
                34 | 35 => {
                    creates.push((
                        u16::from_le_bytes([p[0], p[1]]),
                        u32::from_le_bytes(p[2..6].try_into().unwrap()),
                    ));
                    self.creates.push(p);
                }
                48 => {
                    assert_eq!(u16::from_le_bytes([p[0], p[1]]), zone);
                    return (state, creates);
                }
                25 | 27 | 24 | 11 | 47 => {}
                4 => panic!("kicked during SET_ZONE {zone}: {p:?}"),
                other => panic!("unexpected message {other} during SET_ZONE {zone}"),
            }
        }
    }
}

fn string_at(p: &[u8], at: usize) -> (String, usize) {
    let n = u16::from_le_bytes([p[at], p[at + 1]]) as usize;
    (
        String::from_utf8_lossy(&p[at + 2..at + 2 + n]).into_owned(),
        at + 2 + n,
    )
}

impl Cluster {
    /// The number the 2003 client sends and reads for `class.name`.
    fn client_field(&self, class: &str, name: &str) -> u16 {
        self.client[&(class.to_string(), name.to_string())]
    }
    /// The cluster's number (what an AI reading the DC with the cluster's settings uses).
    fn field(&self, class: &str, name: &str) -> u16 {
        let c = self.dc.class_by_name(class).unwrap();
        self.dc.field_by_name(c, name).unwrap().id()
    }
    fn class(&self, name: &str) -> u16 {
        self.dc.class_by_name(name).unwrap().id()
    }
    fn event(&self, kind: &str) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = self.el.recv(&mut buf) {
                let text = buf[..n].to_vec();
                if text.windows(kind.len()).any(|w| w == kind.as_bytes()) {
                    return text;
                }
            }
        }
        panic!("no {kind} event");
    }
}

#[test]
fn a_2003_client_logs_in_makes_a_toon_and_walks_into_toontown_central() {
    walk(start_numbered(false));
}

/// The cluster as docs/toontown-2003.md configures it: fields numbered per class, as the 2003
/// client and AIs reading the DC with `dc-multiple-inheritance #f` number them.
#[test]
fn the_2003_walk_on_a_cluster_numbering_fields_per_class() {
    walk(start_numbered(true));
}

/// The walk: every number the client sends or reads comes from the test's own 2003 table
/// (`client_numbers_2003`), every number the AI uses from the cluster's DC settings.
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn walk(mut c: Cluster) {
    let name_field = c.client_field("DistributedToon", "setName");
    let set_x = c.client_field("DistributedToon", "setX");
    let set_chat = c.client_field("DistributedToon", "setChat");
    let whisper = c.client_field("DistributedToon", "setWhisperFrom");
    let board = c.client_field("DistributedTrolley", "requestBoard");
    let movie = c.client_field("DistributedTrolley", "setMovie");
    let board_ai = c.field("DistributedTrolley", "requestBoard");
    let movie_ai = c.field("DistributedTrolley", "setMovie");
    let toon_class = c.class("DistributedToon");
    // The trolley keeps a ram field: it enters with an OTHER section.
    c.ai.send(&dg(
        &[TROLLEY as u64],
        AI,
        STATESERVER_OBJECT_SET_FIELD,
        &P::new().u32(TROLLEY).u16(movie_ai).u8(3).0,
    ));

    let mut alice = Toon::connect(c.ports[0]);
    let resp = alice.login("alice");
    assert_eq!(resp[0], 0, "LOGIN_2_RESP ok");
    let (user, _) = string_at(&resp, 3);
    assert_eq!(user, "alice");
    c.event("client-login");

    // Districts first, then the (empty) avatar list.
    alice.send(8, P::new());
    let p = alice.expect(9);
    assert_eq!(
        p,
        P::new().u16(1).u32(DISTRICT).string("Toon Valley").u32(0).0
    );
    alice.send(3, P::new());
    assert_eq!(alice.expect(5), vec![0, 0, 0]);

    // Make a toon and name it from the name parts.
    let dna = &toon_dna(5);
    let a = alice.create(0, dna);
    alice.send(
        67,
        P::new()
            .u32(a)
            .u16(0)
            .u16(1)
            .u16(1)
            .u16(1)
            .u16(2)
            .u16(1)
            .u16(3)
            .u16(1),
    );
    assert_eq!(alice.expect(68), P::new().u32(a).u8(0).0);

    let (details, creates) = alice.play(a);
    // The owner view: every required field, the name first.
    let (name, _) = string_at(&details, 5);
    assert_eq!(name, "Captain Flippy McDoodle");
    assert_eq!(creates, vec![(c.class("DistributedTrolley"), TROLLEY)]);
    // CREATE_OBJECT_REQUIRED_OTHER: class, doid, setState, then OTHER in the client's numbers.
    let trolley = alice.creates.last().unwrap().clone();
    let required = P::new().string("waitEmpty").i16(0).0;
    let mut want = P::new().u16(c.class("DistributedTrolley")).u32(TROLLEY).0;
    want.extend_from_slice(&required);
    want.extend_from_slice(&P::new().u16(1).u16(movie).u8(3).0);
    assert_eq!(
        trolley, want,
        "the trolley's generate as the 2003 client reads it"
    );
    // An AI's update reaches the client under the client's number.
    c.ai.send(&dg(
        &[TROLLEY as u64],
        AI,
        STATESERVER_OBJECT_SET_FIELD,
        &P::new().u32(TROLLEY).u16(movie_ai).u8(4).0,
    ));
    assert_eq!(alice.expect(24), P::new().u32(TROLLEY).u16(movie).u8(4).0);

    // A second toon arrives; each sees the other.
    let mut bob = Toon::connect(c.ports[0]);
    assert_eq!(bob.login("bob")[0], 0);
    bob.send(8, P::new());
    bob.expect(9);
    bob.send(3, P::new());
    bob.expect(5);
    let b = bob.create(3, dna);
    bob.send(70, P::new().u32(b).string("Bob"));
    assert_eq!(
        bob.expect(71),
        P::new().u32(b).u16(0).string("").string("Bob").string("").0
    );
    let (_, creates) = bob.play(b);
    assert!(
        creates.contains(&(toon_class, a)),
        "bob sees alice: {creates:?}"
    );
    let p = loop {
        let (t, p) = alice.recv();
        if t == 34 || t == 35 {
            break p;
        }
        assert_ne!(t, 4, "alice kicked");
    };
    assert_eq!(&p[..6], &P::new().u16(toon_class).u32(b).0[..]);

    // Moving and chatting reach the zone-mate; a whisper reaches its target's player.
    bob.send(24, P::new().u32(b).u16(set_x).i16(123));
    assert_eq!(alice.expect(24), P::new().u32(b).u16(set_x).i16(123).0);
    bob.send(24, P::new().u32(b).u16(set_chat).string("hi").u8(0));
    assert_eq!(
        alice.expect(24),
        P::new().u32(b).u16(set_chat).string("hi").u8(0).0
    );
    bob.send(24, P::new().u32(a).u16(whisper).u32(b).string("psst"));
    assert_eq!(
        alice.expect(24),
        P::new().u32(a).u16(whisper).u32(b).string("psst").0
    );
    // A clsend field on an AI object reaches the AI.
    alice.send(24, P::new().u32(TROLLEY).u16(board));
    let deadline = Instant::now() + WAIT;
    loop {
        let f = c.ai.recv_within(WAIT).expect("the AI hears requestBoard");
        let n = f[2] as usize;
        let at = 3 + 8 * n;
        let t = u16::from_le_bytes([f[at + 8], f[at + 9]]);
        if t == STATESERVER_OBJECT_SET_FIELD
            && f[at + 10..] == P::new().u32(TROLLEY).u16(board_ai).0[..]
        {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    // An update it may not send (a non-ownsend field of its own toon) is dropped, not obeyed.
    alice.send(24, P::new().u32(a).u16(name_field).string("Hacker"));
    c.event("client-update-dropped");

    // Alice leaves; bob sees her go.
    alice.send(32, P::new().u32(0));
    alice.send(37, P::new());
    assert_eq!(bob.expect(27), P::new().u32(a).0);
    assert!(alice.m.closed_within(WAIT));
    // The district goes down: bob is told.
    c.ai.send(&dg(&[SHARD_CHANNEL], AI, 1901, &P::new().u32(DISTRICT).0));
    assert_eq!(bob.expect(58), P::new().u32(DISTRICT).0);
    bob.send(37, P::new());
    assert!(bob.m.closed_within(WAIT));

    // She comes back and finds her toon saved, named.
    let mut again = Toon::connect(c.ports[0]);
    assert_eq!(again.login("alice")[0], 0);
    again.send(3, P::new());
    let p = again.expect(5);
    assert_eq!(&p[..3], &[0, 1, 0]);
    assert_eq!(&p[3..7], &a.to_le_bytes());
    let (name, at) = string_at(&p, 7);
    assert_eq!(name, "Captain Flippy McDoodle");
    let (_, at) = string_at(&p, at);
    let (_, at) = string_at(&p, at);
    let (_, at) = string_at(&p, at);
    let (got_dna, at) = string_at(&p, at);
    assert_eq!(&got_dna, dna);
    assert_eq!(&p[at..], &[0, 0], "slot 0, named");
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn every_refusal_gets_its_reason_code() {
    let c = start();
    // Wrong version, wrong hash, unknown token type, messages before login.
    let mut t = Toon::connect(c.ports[0]);
    t.send(16, P::new().string("x").string("sv0.0").u32(HASH).u32(2));
    t.expect_lost(124);
    let mut t = Toon::connect(c.ports[0]);
    t.send(16, P::new().string("x").string(VERSION).u32(1234).u32(2));
    t.expect_lost(125);
    let mut t = Toon::connect(c.ports[0]);
    t.send(16, P::new().string("x").string(VERSION).u32(HASH).u32(1));
    t.expect_lost(284);
    let mut t = Toon::connect(c.ports[0]);
    t.send(52, P::new());
    t.send(3, P::new());
    t.expect_lost(113);
    c.event("client-ejected");

    // Signed tokens: a bad one is refused, one made by `otpd account token` is taken.
    let mut t = Toon::connect(c.ports[1]);
    t.send(
        16,
        P::new()
            .string("v1:eve:99999999999:00")
            .string(VERSION)
            .u32(HASH)
            .u32(2),
    );
    let resp = t.expect_including_lost(17);
    assert_ne!(resp[0], 0);
    t.expect_lost(122);
    let out = std::process::Command::new(otpd_bin())
        .args(["account", "token", "dave", "--secret", SECRET])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut t = Toon::connect(c.ports[1]);
    assert_eq!(t.login(&token)[0], 0);
    t.send(8, P::new());
    t.expect(9);

    // A second login of the same account sends the first away (100).
    let mut first = Toon::connect(c.ports[0]);
    assert_eq!(first.login("carol")[0], 0);
    let mut second = Toon::connect(c.ports[0]);
    assert_eq!(second.login("carol")[0], 0);
    first.expect_lost(100);

    // A seventh avatar (slot 6), a taken slot, another account's toon.
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("erin")[0], 0);
    t.send(6, P::new().u16(0).string(&toon_dna(0)).u8(6));
    t.expect_lost(122);
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("frank")[0], 0);
    let mine = t.create(0, &toon_dna(0));
    t.send(6, P::new().u16(0).string(&toon_dna(0)).u8(0));
    t.expect_lost(122);
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("gina")[0], 0);
    t.send(32, P::new().u32(mine));
    t.expect_lost(122);

    // A name pattern that breaks the rules (a first name where a title goes) is refused,
    // and the client may try again.
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("hank")[0], 0);
    let d = t.create(1, &toon_dna(1));
    t.send(
        67,
        P::new()
            .u32(d)
            .u16(1)
            .u16(1)
            .u16(65535)
            .u16(0)
            .u16(65535)
            .u16(0)
            .u16(65535)
            .u16(0),
    );
    assert_eq!(t.expect(68), P::new().u32(d).u8(1).0);
    t.send(
        67,
        P::new()
            .u32(d)
            .u16(65535)
            .u16(0)
            .u16(4)
            .u16(1)
            .u16(65535)
            .u16(0)
            .u16(65535)
            .u16(0),
    );
    assert_eq!(t.expect(68), P::new().u32(d).u8(0).0);
    // A wish name with characters no toon name has comes back rejected.
    t.send(70, P::new().u32(d).string("<script>"));
    assert_eq!(
        t.expect(71),
        P::new()
            .u32(d)
            .u16(0)
            .string("")
            .string("")
            .string("<script>")
            .0
    );

    // A district coming up and going down is pushed to logged-in clients.
    let mut ai = Md::connect(c.o.port);
    ai.send(&dg(
        &[SHARD_CHANNEL],
        AI,
        1900,
        &P::new().u32(4_100_000).string("Second Valley").u32(5).0,
    ));
    assert_eq!(
        t.expect(57),
        P::new().u32(4_100_000).string("Second Valley").0
    );
    ai.send(&dg(&[SHARD_CHANNEL], AI, 1901, &P::new().u32(4_100_000).0));
    assert_eq!(t.expect(58), P::new().u32(4_100_000).0);
    // Details of another toon: from the database when nobody plays it; "no information" for
    // an object that does not exist, and the client stays.
    t.send(14, P::new().u32(mine));
    let p = t.expect(15);
    assert_eq!(&p[..5], &P::new().u32(mine).u8(0).0[..]);
    assert_eq!(string_at(&p, 5).0, "Toon");
    t.send(14, P::new().u32(12_345));
    assert_eq!(t.expect(15), P::new().u32(12_345).u8(1).0);
    // An update to an object the client cannot see is dropped and logged, not routed.
    t.send(
        24,
        P::new()
            .u32(TROLLEY)
            .u16(c.client_field("DistributedTrolley", "requestBoard")),
    );
    c.event("client-update-dropped");
    // A truncated message is a protocol error.
    t.send(24, P::new().u32(TROLLEY));
    t.expect_lost(109);
}

/// The same walk with Toontown's own 2003 DC file (`../shared/dc/toon-2003.dc`, not part of
/// this repository): run by `scripts/dc-conformance` with OTPD_TOON_2003_DC set when the file
/// is there.
#[test]
#[ignore = "needs OTPD_TOON_2003_DC (scripts/dc-conformance sets it when ../shared/dc/toon-2003.dc exists)"]
fn the_2003_walk_with_toontowns_own_dc_file() {
    // A cluster numbering fields file-wide (the listener translates), then one numbering them
    // per class as docs/toontown-2003.md configures it.
    for legacy in [false, true] {
        walk_toon_2003(legacy);
    }
}

fn walk_toon_2003(legacy: bool) {
    let path = std::env::var("OTPD_TOON_2003_DC").expect("OTPD_TOON_2003_DC names toon-2003.dc");
    let mut c = start_full(
        std::path::Path::new(&path),
        "DistributedMickey",
        |p| p.string("a").string("b").i16(0),
        legacy,
    );
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("mickeyfan")[0], 0);
    t.send(8, P::new());
    assert_eq!(
        t.expect(9),
        P::new().u16(1).u32(DISTRICT).string("Toon Valley").u32(0).0
    );
    t.send(3, P::new());
    assert_eq!(t.expect(5), vec![0, 0, 0]);
    // A real 2003 DNA net string: 't', head, torso, legs, gender, arm/glove/leg colors...
    let dna = "t\x00\x01\x00\x01\x00\x01\x00\x01\x03\x03\x00\x03\x03\x03";
    let a = t.create(2, dna);
    t.send(70, P::new().u32(a).string("Flippy"));
    assert_eq!(
        t.expect(71),
        P::new()
            .u32(a)
            .u16(0)
            .string("")
            .string("Flippy")
            .string("")
            .0
    );
    let (details, creates) = t.play(a);
    let (name, _) = string_at(&details, 5);
    assert_eq!(name, "Flippy");
    // Every required DistributedToon field is in the owner view: far more than the name.
    assert!(details.len() > 200, "{} bytes of details", details.len());
    assert_eq!(creates, vec![(c.class("DistributedMickey"), TROLLEY)]);

    // A second player; what each sends reaches the other under the client's own numbers
    // (the cases: clearSmoothing is 30 for the client, setChat 61).
    let mut u = Toon::connect(c.ports[0]);
    assert_eq!(u.login("minniefan")[0], 0);
    u.send(3, P::new());
    u.expect(5);
    let b = u.create(0, dna);
    u.send(70, P::new().u32(b).string("Bonnie"));
    u.expect(71);
    let (_, creates) = u.play(b);
    assert!(
        creates.contains(&(c.class("DistributedToon"), a)),
        "{creates:?}"
    );
    let clear = c.client_field("DistributedToon", "clearSmoothing");
    let chat = c.client_field("DistributedToon", "setChat");
    let set_x = c.client_field("DistributedToon", "setX");
    assert_eq!((clear, chat), (30, 61));
    for p in [
        P::new().u32(b).u16(clear).u8(0),
        P::new().u32(b).u16(set_x).i16(-250),
        P::new().u32(b).u16(chat).string("Hi Flippy!").u8(0),
    ] {
        u.send(24, P::new().bytes(&p.0));
        assert_eq!(t.expect(24), p.0, "legacy {legacy}");
    }

    // An operator's system message (the admin API's CLIENTAGENT_ADMIN_MESSAGE on the
    // all-clients channel): each player sees it as DistributedAvatar.setSystemMessage(aboutId,
    // chatString) on its own toon (the client's displayWhisper, WTSystem), under the client's
    // own number for that field; a message for one avatar reaches that player only.
    let system = c.client_field("DistributedToon", "setSystemMessage");
    let admin_message = |scope: u8, id: u64, text: &str| {
        dg(
            &[10],
            AI,
            CLIENTAGENT_ADMIN_MESSAGE,
            &P::new().u8(scope).u64(id).string("").string(text).0,
        )
    };
    c.ai.send(&admin_message(0, 0, "Restart in 5 minutes."));
    for (player, doid) in [(&mut t, a), (&mut u, b)] {
        assert_eq!(
            player.expect(24),
            P::new()
                .u32(doid)
                .u16(system)
                .u32(0)
                .string("Restart in 5 minutes.")
                .0
        );
    }
    c.ai.send(&admin_message(2, b as u64, "Only for Bonnie."));
    assert_eq!(
        u.expect(24),
        P::new()
            .u32(b)
            .u16(system)
            .u32(0)
            .string("Only for Bonnie.")
            .0
    );
    assert!(t.m.recv_within(Duration::from_millis(300)).is_none());

    // What the operator's console lists (CLIENTAGENT_ADMIN_LIST, the rows behind its clients
    // and districts tables): each player's account, toon, district and zone.
    let mut want = vec![
        ("mickeyfan".to_string(), a, DISTRICT, 2000),
        ("minniefan".to_string(), b, DISTRICT, 2000),
    ];
    want.sort();
    assert_eq!(console_rows(&mut c.ai, 2), want, "legacy {legacy}");

    t.send(37, P::new());
    u.send(37, P::new());
    assert!(t.m.closed_within(WAIT) && u.m.closed_within(WAIT));
}

/// Asks every session for its CLIENTAGENT_ADMIN_LIST_RESP and reads `n` answers: (account,
/// avatar, district, zone), sorted.
fn console_rows(ai: &mut Md, n: usize) -> Vec<(String, u32, u32, u32)> {
    ai.send(&dg(&[10], AI, CLIENTAGENT_ADMIN_LIST, &P::new().u32(77).0));
    let mut listed = Vec::new();
    while listed.len() < n {
        let f = ai.recv_within(WAIT).expect("each session answers");
        let at = 3 + 8 * f[2] as usize;
        if u16::from_le_bytes([f[at + 8], f[at + 9]]) != CLIENTAGENT_ADMIN_LIST_RESP {
            continue;
        }
        let p = &f[at + 10..];
        assert_eq!(&p[..4], &77u32.to_le_bytes()[..]);
        let (_bind, i) = string_at(p, 12);
        assert_eq!(p[i], 1, "the 2003 dialect");
        let (account, i) = string_at(p, i + 3);
        let word = |k: usize| u32::from_le_bytes(p[i + 4 * k..i + 4 * k + 4].try_into().unwrap());
        listed.push((account, word(0), word(1), word(2)));
    }
    listed.sort();
    listed
}

#[test]
fn a_street_shows_what_its_vis_group_sees() {
    let c = start();
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("walker")[0], 0);
    t.send(8, P::new());
    t.expect(9);
    t.send(3, P::new());
    t.expect(5);
    let d = t.create(0, &toon_dna(0));
    t.play(d);
    // Onto the street: the playground's trolley goes, the street's visible zones come.
    t.send(29, P::new().u16(2100));
    let (state, creates) = t.zone_answer(2100);
    assert_eq!(state, 2100);
    let class = c.class("DistributedTrolley");
    assert_eq!(creates, vec![(class, ON_STREET)], "not {FAR_AWAY}");
}

/// The test as an AI's FriendManager: reads a toon's friends list from the database.
fn friends_of(c: &mut Cluster, doid: u32) -> Vec<u8> {
    let field = c.field("DistributedToon", "setFriendsList");
    let ctx = 0x4652_0000 ^ doid;
    c.ai.send(&dg(
        &[DB],
        AI,
        DBSERVER_OBJECT_GET_FIELDS,
        &P::new().u32(ctx).u32(doid).u16(1).u16(field).0,
    ));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no answer for {doid}'s friends");
        let f = c.ai.recv_within(WAIT).expect("the database answers");
        let at = 3 + 8 * f[2] as usize;
        let t = u16::from_le_bytes([f[at + 8], f[at + 9]]);
        let p = &f[at + 10..];
        if t == DBSERVER_OBJECT_GET_FIELDS_RESP && p[..4] == ctx.to_le_bytes() {
            assert_eq!(&p[4..9], &P::new().u8(1).u16(1).u16(field).0[..]);
            return p[9..].to_vec();
        }
    }
}

fn friends_value(list: &[u32]) -> Vec<u8> {
    let mut p = P::new().u16(5 * list.len() as u16);
    for &d in list {
        p = p.u32(d).u8(0);
    }
    p.0
}

/// Waits until the database holds `list` as `doid`'s friends.
fn await_friends(c: &mut Cluster, doid: u32, list: &[u32]) {
    let want = friends_value(list);
    let deadline = Instant::now() + WAIT;
    while friends_of(c, doid) != want {
        assert!(
            Instant::now() < deadline,
            "{doid}'s friends are not {list:?}: {:?}",
            friends_of(c, doid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A toon DNA the 2003 client writes (AvatarDNA.makeNetString: 't', head, torso, legs,
/// gender, top texture and colour, sleeve texture and colour, bottom texture and colour, arm,
/// glove, leg and head colours): a boy, his body in colour `color` (< 26), so that tests can
/// tell toons apart.
fn toon_dna(color: u8) -> String {
    assert!(color < 26);
    let c = color as char;
    format!("t\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00{c}\x00{c}{c}")
}

/// Logs in and makes a named toon; returns the client and the toon.
fn named_toon(c: &Cluster, account: &str, name: &str, dna: &str) -> (Toon, u32) {
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login(account)[0], 0);
    t.send(8, P::new());
    t.expect(9);
    t.send(3, P::new());
    t.expect(5);
    let d = t.create(0, dna);
    t.send(70, P::new().u32(d).string(name));
    t.expect(71);
    (t, d)
}

#[test]
fn friends_get_their_list_see_each_other_come_and_go_and_can_part() {
    let mut c = start();
    let field = c.field("DistributedToon", "setFriendsList");
    let (mut alice, a) = named_toon(&c, "alice", "Alice", &toon_dna(1));
    let (mut bob, b) = named_toon(&c, "bob", "Bob", &toon_dna(5));

    // The FriendManager makes them friends (both offline: stored through the DBSS).
    for (who, friend) in [(a, b), (b, a)] {
        c.ai.send(&dg(
            &[who as u64],
            AI,
            STATESERVER_OBJECT_SET_FIELD,
            &P::new()
                .u32(who)
                .u16(field)
                .bytes(&friends_value(&[friend]))
                .0,
        ));
    }
    await_friends(&mut c, a, &[b]);
    await_friends(&mut c, b, &[a]);

    // Alice plays: her friends list names Bob, with his DNA.
    alice.send(32, P::new().u32(a));
    alice.expect(15);
    alice.send(10, P::new());
    let bobs_entry = P::new()
        .u8(0)
        .u16(1)
        .u32(b)
        .string("Bob")
        .string(&toon_dna(5))
        .0;
    assert_eq!(alice.expect(11), bobs_entry);

    // Bob comes online: each hears the other is.
    bob.send(32, P::new().u32(b));
    bob.expect(15);
    assert_eq!(alice.expect(53), P::new().u32(b).0);
    assert_eq!(bob.expect(53), P::new().u32(a).0);

    // Removing a stranger changes nothing.
    alice.send(56, P::new().u32(123_456_789));
    c.event("friend-remove-dropped");
    alice.send(10, P::new());
    assert_eq!(alice.expect(11), bobs_entry);

    // Bob's connection drops: Alice hears he went offline.
    drop(bob);
    assert_eq!(alice.expect(54), P::new().u32(b).0);

    // Alice removes Bob: both lists are empty, stored.
    alice.send(56, P::new().u32(b));
    alice.send(10, P::new());
    assert_eq!(alice.expect(11), vec![0, 0, 0]);
    // (Bob's list is read and written while Alice's session lives.)
    await_friends(&mut c, b, &[]);
    alice.send(32, P::new().u32(0));
    alice.send(37, P::new());
    assert!(alice.m.closed_within(WAIT));
    await_friends(&mut c, a, &[]);
    await_friends(&mut c, b, &[]);
}

#[test]
fn friends_made_and_parted_while_both_play() {
    let mut c = start();
    let field = c.field("DistributedToon", "setFriendsList");
    let (mut alice, a) = named_toon(&c, "carol", "Carol", &toon_dna(2));
    let (mut bob, b) = named_toon(&c, "dan", "Dan", &toon_dna(3));
    for (t, d) in [(&mut alice, a), (&mut bob, b)] {
        t.send(32, P::new().u32(d));
        t.expect(15);
        t.send(10, P::new());
        assert_eq!(t.expect(11), vec![0, 0, 0]);
    }
    // The FriendManager makes them friends while both play: each client gets its new list,
    // and hears the other is online.
    for (who, friend) in [(a, b), (b, a)] {
        c.ai.send(&dg(
            &[who as u64],
            AI,
            STATESERVER_OBJECT_SET_FIELD,
            &P::new()
                .u32(who)
                .u16(field)
                .bytes(&friends_value(&[friend]))
                .0,
        ));
    }
    // What the clients read: the client's own number for the field.
    let client_field = c.client_field("DistributedToon", "setFriendsList");
    let update = |who: u32, friends: &[u32]| {
        P::new()
            .u32(who)
            .u16(client_field)
            .bytes(&friends_value(friends))
            .0
    };
    assert_eq!(alice.expect(24), update(a, &[b]));
    assert_eq!(bob.expect(24), update(b, &[a]));
    assert_eq!(alice.expect(53), P::new().u32(b).0);
    assert_eq!(bob.expect(53), P::new().u32(a).0);
    alice.send(10, P::new());
    assert_eq!(
        alice.expect(11),
        P::new()
            .u8(0)
            .u16(1)
            .u32(b)
            .string("Dan")
            .string(&toon_dna(3))
            .0
    );

    // Dan parts: Carol's live toon loses him too, and her client is told.
    bob.send(56, P::new().u32(a));
    assert_eq!(alice.expect(24), update(a, &[]));
    alice.send(10, P::new());
    assert_eq!(alice.expect(11), vec![0, 0, 0]);
    await_friends(&mut c, a, &[]);
    await_friends(&mut c, b, &[]);
}

#[test]
fn password_logins_make_check_and_refuse_accounts() {
    let c = start();
    let port = c.ports[0]; // passwords: CreateOnLogin (the default)
                           // A new name with createFlag 1 becomes an account with that password; the avatar list
                           // and toon making work as after a token login.
    let mut t = Toon::connect(port);
    assert_eq!(t.password_login("penny", "s3cret pass", true), 0);
    let ev = c.event("client-login");
    assert!(
        ev.windows(8).any(|w| w == b"password") && !ev.windows(11).any(|w| w == b"s3cret pass"),
        "{}",
        String::from_utf8_lossy(&ev)
    );
    t.send(3, P::new());
    assert_eq!(t.expect(5), vec![0, 0, 0]);
    let toon = t.create(0, &toon_dna(0));
    t.send(37, P::new());
    assert!(t.m.closed_within(WAIT));

    // A wrong password: 12, and the client may try again on the same connection.
    let mut t = Toon::connect(port);
    assert_eq!(t.password_login("penny", "s3cret pasS", false), 12);
    assert_eq!(t.password_login("penny", "s3cret pass", false), 0);
    t.send(3, P::new());
    let list = t.expect(5);
    assert_eq!(&list[..7], &P::new().u8(0).u16(1).u32(toon).0[..]);

    // A second password login of the account sends the first away (100).
    let mut second = Toon::connect(port);
    assert_eq!(second.password_login("penny", "s3cret pass", false), 0);
    t.expect_lost(100);

    // An open play token does not open an account that has a password.
    let mut t = Toon::connect(port);
    t.send(
        16,
        P::new().string("penny").string(VERSION).u32(HASH).u32(2),
    );
    assert_ne!(t.expect_including_lost(17)[0], 0);
    t.expect_lost(122);

    // Unknown name without createFlag: 12, as a wrong password (no enumeration); a name no
    // account may have: 14; an empty password: 12; each with a retry.
    let mut t = Toon::connect(port);
    assert_eq!(t.password_login("nobody", "x", false), 12);
    assert_eq!(t.password_login("bad:name", "x", true), 14);
    assert_eq!(t.password_login("quinn", "", true), 12);
    t.send(3, P::new());
    t.expect_lost(113);

    // An account made by a play token has no password: 12.
    let mut t = Toon::connect(port);
    assert_eq!(t.login("tina")[0], 0);
    t.send(37, P::new());
    assert!(t.m.closed_within(WAIT));
    let mut t = Toon::connect(port);
    assert_eq!(t.password_login("tina", "anything", false), 12);

    // The fifth refused login on one connection ends it (122).
    let mut t = Toon::connect(port);
    for _ in 0..4 {
        assert_eq!(t.password_login("penny", "guess", false), 12);
    }
    t.send_password_login("penny", "guess", false);
    t.expect_lost(122);
    c.event("client-login-refused");

    // Version and DC hash as for LOGIN_2.
    let mut t = Toon::connect(port);
    t.send(
        1,
        P::new()
            .string("penny")
            .u32(0)
            .u16(5150)
            .string("sv0.0")
            .u32(HASH)
            .string("s3cret pass")
            .u8(0),
    );
    t.expect_lost(124);
    let mut t = Toon::connect(port);
    t.send(
        1,
        P::new()
            .string("penny")
            .u32(0)
            .u16(5150)
            .string(VERSION)
            .u32(1234)
            .string("s3cret pass")
            .u8(0),
    );
    t.expect_lost(125);
    drop(second);
}

/// FNV-1a 32 of a name, as the account channel was derived (written here from the algorithm's
/// definition, to find a collision).
fn fnv1a32(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Two different account names with the same FNV-1a 32 hash (a birthday search: well under a
/// second).
fn colliding_names() -> (String, String) {
    let mut seen = std::collections::HashMap::new();
    for i in 0u64.. {
        let name = format!("toon{i:x}");
        if let Some(other) = seen.insert(fnv1a32(&name), name.clone()) {
            return (other, name);
        }
    }
    unreachable!()
}

/// Issue 17, item 1: an account's channel is a hash of its name, and a printable name with the
/// same hash is easy to find; logging in with it must not kick the player of the other
/// account. Logging in again with the same name still does.
#[test]
fn a_colliding_account_name_kicks_nobody() {
    let c = start();
    let (victim, attacker) = colliding_names();
    assert_ne!(victim, attacker);
    let mut v = Toon::connect(c.ports[0]);
    assert_eq!(v.login(&victim)[0], 0);
    let mut a = Toon::connect(c.ports[0]);
    assert_eq!(a.login(&attacker)[0], 0);
    // The victim is still served: its district list comes, no GO_GET_LOST before it.
    v.send(8, P::new());
    v.expect(9);
    assert!(
        !v.m.closed_within(Duration::from_millis(300)),
        "the victim was cut off"
    );
    // The same name from elsewhere still takes the account over.
    let mut again = Toon::connect(c.ports[0]);
    assert_eq!(again.login(&victim)[0], 0);
    v.expect_lost(100);
    // And the attacker's own session is untouched by that.
    a.send(8, P::new());
    a.expect(9);
}

/// Issue 17, item 2: GET_AVATAR_DETAILS of another player's toon answers what any viewer of
/// that toon sees (its broadcast required fields; the others at their DC defaults, in the
/// layout the client parses), never its account name or private `db` fields; an object that is
/// not a toon gets "no information". The toon's own player still gets everything.
#[test]
fn details_of_another_toon_hide_its_account_and_private_fields() {
    let c = start();
    let (mut alice, a) = named_toon(&c, "secretacct", "Alice", &toon_dna(1));
    alice.send(32, P::new().u32(a));
    let own = alice.expect(15);
    let has = |p: &[u8], s: &str| p.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(
        has(&own, "secretacct") && has(&own, "Alice"),
        "the owner sees everything"
    );

    let (mut bob, _) = named_toon(&c, "nosy", "Nosy", &toon_dna(2));
    bob.send(14, P::new().u32(a));
    let p = bob.expect(15);
    assert_eq!(&p[..5], &P::new().u32(a).u8(0).0[..]);
    assert!(has(&p, "Alice"), "the name is public: {p:?}");
    assert!(
        !has(&p, "secretacct"),
        "another player read the account name: {p:?}"
    );
    // The same layout as the owner's view up to the OTHER section: every required field.
    assert_eq!(
        p.len(),
        own.len() - "secretacct".len() + "unknown".len() - own_other_len(&own)
    );
    // Not a toon: no information.
    bob.send(14, P::new().u32(TROLLEY));
    assert_eq!(bob.expect(15), P::new().u32(TROLLEY).u8(1).0);
}

/// The length of the OTHER section's entries (after its count) in an owner's details: none
/// are kept for a toon fresh from the database, so 0.
fn own_other_len(own: &[u8]) -> usize {
    let count = u16::from_le_bytes([own[own.len() - 2], own[own.len() - 1]]);
    assert_eq!(count, 0, "a fresh toon keeps no OTHER field");
    0
}

/// Issue 17, item 4: a p2p update to an object the client never saw (here an AI object on a
/// street it is not on) is dropped by the ClientAgent: nothing reaches the object's channel.
#[test]
fn p2p_to_an_object_out_of_view_reaches_nobody() {
    let c = start();
    let mut probe = c.o.connect();
    let mut spy = listener(c.o.port, &mut probe, &[FAR_AWAY as u64]);
    let (mut t, d) = named_toon(&c, "prowler", "Prowler", &toon_dna(3));
    let (_, creates) = t.play(d);
    assert!(!creates.iter().any(|&(_, o)| o == FAR_AWAY), "{creates:?}");
    let whisper = c.client_field("DistributedToon", "setWhisperFrom");
    t.send(24, P::new().u32(FAR_AWAY).u16(whisper).u32(d).string("boo"));
    c.event("client-update-dropped");
    assert!(
        spy.recv_within(Duration::from_millis(300)).is_none(),
        "the update reached the object's channel"
    );
    // The session lives on.
    t.send(10, P::new());
    t.expect(11);
}

/// Issue 17, item 5: a 60 KB whisper (within the byte rate) and a 60 KB DNA are refused by
/// the 2003 listener (`toontown.max_string_bytes`, 1024 by default): the whisper ejects its
/// sender with 109 and reaches nobody; the DNA makes no toon.
#[test]
fn huge_strings_and_dna_from_a_2003_client_are_refused() {
    let c = start();
    let big = "x".repeat(60_000);
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("hoarder")[0], 0);
    t.send(3, P::new());
    t.expect(5);
    t.send(6, P::new().u16(0).string(&big).u8(0));
    t.expect_lost(109);
    // A whisper between two players in view: the normal one arrives, the huge one does not.
    let (mut a, ad) = named_toon(&c, "ann", "Ann", &toon_dna(1));
    let (mut b, bd) = named_toon(&c, "ben", "Ben", &toon_dna(2));
    a.play(ad);
    b.play(bd);
    let whisper = c.client_field("DistributedToon", "setWhisperFrom");
    b.send(24, P::new().u32(ad).u16(whisper).u32(bd).string("hi"));
    assert_eq!(
        a.expect(24),
        P::new().u32(ad).u16(whisper).u32(bd).string("hi").0
    );
    b.send(24, P::new().u32(ad).u16(whisper).u32(bd).string(&big));
    b.expect_lost(109);
    c.event("client-ejected");
}

/// Issue 17, item 6: two CreateOnLogin logins of one new name with different passwords, at
/// the same moment: one makes the account, the other is refused (the name is taken), and the
/// winner's password is the one that works afterwards. Before, both were told yes and the
/// last write won, locking the first player out.
#[test]
fn racing_account_creations_make_one_account() {
    let c = start();
    let mut a = Toon::connect(c.ports[0]);
    let mut b = Toon::connect(c.ports[0]);
    a.send(52, P::new());
    b.send(52, P::new());
    a.send_password_login("racer", "password-of-a", true);
    b.send_password_login("racer", "password-of-b", true);
    let code = |t: &mut Toon| loop {
        let (got, p) = t.recv();
        if got == 2 {
            return p[0];
        }
        if got == 4 {
            return 255;
        }
    };
    let (ca, cb) = (code(&mut a), code(&mut b));
    assert_eq!(
        [ca, cb].iter().filter(|&&x| x == 0).count(),
        1,
        "exactly one creation wins: {ca} {cb}"
    );
    let winner = if ca == 0 {
        "password-of-a"
    } else {
        "password-of-b"
    };
    let loser = if ca == 0 {
        "password-of-b"
    } else {
        "password-of-a"
    };
    drop((a, b));
    let mut again = Toon::connect(c.ports[0]);
    assert_eq!(again.password_login("racer", loser, false), 12);
    assert_eq!(again.password_login("racer", winner, false), 0);
}

/// The first doid of the Database's generate range: the first object it makes.
const FIRST_DOID: u32 = 100_000_000;

/// Whether the database holds object `doid` (DBSERVER_OBJECT_GET_ALL, asked by the AI peer).
fn stored(c: &mut Cluster, doid: u32) -> bool {
    let ctx = 0x5354_0000 ^ doid;
    c.ai.send(&dg(
        &[DB],
        AI,
        DBSERVER_OBJECT_GET_ALL,
        &P::new().u32(ctx).u32(doid).0,
    ));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no answer for {doid}");
        let f = c.ai.recv_within(WAIT).expect("the database answers");
        let at = 3 + 8 * f[2] as usize;
        let t = u16::from_le_bytes([f[at + 8], f[at + 9]]);
        let p = &f[at + 10..];
        if t == DBSERVER_OBJECT_GET_ALL_RESP && p[..4] == ctx.to_le_bytes() {
            return p[4] == 1;
        }
    }
}

/// The doids GET_AVATARS lists for `account` (a new connection).
fn listed(c: &Cluster, account: &str) -> Vec<u32> {
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login(account)[0], 0);
    t.send(3, P::new());
    let p = t.expect(5);
    assert_eq!(p[0], 0);
    let n = u16::from_le_bytes([p[1], p[2]]) as usize;
    let mut at = 3;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(u32::from_le_bytes(p[at..at + 4].try_into().unwrap()));
        at += 4;
        for _ in 0..5 {
            at = string_at(&p, at).1;
        }
        at += 2;
    }
    out
}

/// Issue 17, item 7: a client sends CREATE_AVATAR and closes its socket at once; another sends
/// it and, in the same write, a message that ends its session at once (an unknown type), then
/// closes. Each toon the database makes is in its account's slot when the account logs in
/// again. Before, the object was made first and the slot saved on its answer, by a session
/// that was gone by then: an orphan toon in the database (GET_ALL finds it) that no avatar
/// list shows, made again and again by a client that repeats it.
#[test]
fn a_toon_made_by_a_client_that_leaves_at_once_is_in_its_slot() {
    let mut c = start();
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("leaver")[0], 0);
    t.send(3, P::new());
    t.expect(5);
    t.send(6, P::new().u16(0).string(&toon_dna(4)).u8(0));
    drop(t);
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("quitter")[0], 0);
    t.send(3, P::new());
    t.expect(5);
    let mut both = msg(6, P::new().u16(0).string(&toon_dna(5)).u8(0));
    both.extend_from_slice(&msg(9999, P::new()));
    t.m.send(&both);
    drop(t);
    let deadline = Instant::now() + WAIT;
    while !(stored(&mut c, FIRST_DOID) && stored(&mut c, FIRST_DOID + 1)) {
        assert!(Instant::now() < deadline, "the toons were never made");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut all = listed(&c, "leaver");
    all.extend(listed(&c, "quitter"));
    all.sort();
    assert_eq!(
        all,
        vec![FIRST_DOID, FIRST_DOID + 1],
        "every toon is in a slot"
    );
    assert!(!stored(&mut c, FIRST_DOID + 2));
}

/// CLIENT_DELETE_AVATAR deletes the toon and frees its slot in one step (never a slot naming a
/// deleted toon, nor a toon in no slot): both are gone together, and the slot takes a new toon.
#[test]
fn deleting_a_toon_frees_its_slot_and_its_object_together() {
    let mut c = start();
    let (mut t, d) = named_toon(&c, "tidy", "Tidy", &toon_dna(6));
    assert!(stored(&mut c, d));
    t.send(49, P::new().u32(d));
    assert_eq!(
        t.expect(5),
        vec![0, 0, 0],
        "the list after the delete is empty"
    );
    c.event("avatar-deleted");
    assert!(!stored(&mut c, d));
    let again = t.create(0, &toon_dna(7));
    assert_ne!(again, d);
    drop(t);
    assert_eq!(listed(&c, "tidy"), vec![again]);
}

/// Issue 17, item 5: a new toon's DNA must be one the 2003 client reads. A 60 KB DNA ejects
/// (109); a 15-byte DNA with a head index past the client's 22 heads is refused with a failed
/// CREATE_AVATAR_RESP (the client stays in its name shop) and a `dna-refused` event; neither
/// stores anything; a DNA the client writes makes the toon, the first object the database
/// makes. Before, the short bad DNA was stored and sent to every client that saw the toon.
#[test]
fn dnas_the_client_cannot_read_are_refused_and_nothing_is_stored() {
    let mut c = start();
    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("geneticist")[0], 0);
    t.send(3, P::new());
    t.expect(5);
    t.send(6, P::new().u16(0).string(&"t".repeat(60_000)).u8(0));
    t.expect_lost(109);

    let mut t = Toon::connect(c.ports[0]);
    assert_eq!(t.login("geneticist")[0], 0);
    t.send(3, P::new());
    t.expect(5);
    let mut bad = toon_dna(1).into_bytes();
    bad[1] = 22; // toonHeadTypes has 22 entries
    let bad = String::from_utf8(bad).unwrap();
    t.send(6, P::new().u16(0).string(&bad).u8(0));
    assert_eq!(t.expect(7), vec![0, 0, 1], "CREATE_AVATAR_RESP failure");
    c.event("dna-refused");
    // A boy's bottom texture past BoyShorts (a girl's would be in range).
    let mut bad = toon_dna(1).into_bytes();
    bad[9] = 8;
    let bad = String::from_utf8(bad).unwrap();
    t.send(6, P::new().u16(0).string(&bad).u8(0));
    assert_eq!(t.expect(7), vec![0, 0, 1], "CREATE_AVATAR_RESP failure");
    assert!(!stored(&mut c, FIRST_DOID), "nothing was stored");

    let d = t.create(0, &toon_dna(1));
    assert_eq!(d, FIRST_DOID, "no object was made before");
    t.send(3, P::new());
    let p = t.expect(5);
    assert_eq!(&p[..7], &P::new().u8(0).u16(1).u32(d).0[..]);
    let mut at = 7;
    for _ in 0..4 {
        at = string_at(&p, at).1;
    }
    assert_eq!(string_at(&p, at).0, toon_dna(1));
}

impl Cluster {
    /// How many events of `kind` the EventLogger gets within `within`.
    fn count_events(&self, kind: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 65536];
        let mut n = 0;
        while Instant::now() < deadline {
            if let Ok(len) = self.el.recv(&mut buf) {
                if buf[..len].windows(kind.len()).any(|w| w == kind.as_bytes()) {
                    n += 1;
                }
            }
        }
        n
    }
}

/// The sender channel and the message type of an internal datagram as a participant reads it.
fn sender_and_type(f: &[u8]) -> (u64, u16, &[u8]) {
    let at = 3 + 8 * f[2] as usize;
    (
        u64::from_le_bytes(f[at..at + 8].try_into().unwrap()),
        u16::from_le_bytes([f[at + 8], f[at + 9]]),
        &f[at + 10..],
    )
}

/// Issue 17, item 3 (the sender): a 2003 client's field update reaches the AI from the
/// avatar's puppet channel, `(1001 << 32) + avatar`, so that an AI reads the avatar as
/// `sender & 0xffffffff` (Disney's `getAvatarIdFromSender`); an answer the AI sends back to
/// that sender reaches the player; and the client is not sent its own updates back.
#[test]
fn a_2003_clients_updates_name_its_avatar_as_sender_and_answers_reach_it() {
    let mut c = start();
    let board = c.client_field("DistributedTrolley", "requestBoard");
    let board_ai = c.field("DistributedTrolley", "requestBoard");
    let movie = c.client_field("DistributedTrolley", "setMovie");
    let set_x = c.client_field("DistributedToon", "setX");
    let (mut t, d) = named_toon(&c, "senderacct", "Sender", &toon_dna(4));
    t.play(d);
    t.send(24, P::new().u32(TROLLEY).u16(board));
    let deadline = Instant::now() + WAIT;
    let sender = loop {
        assert!(Instant::now() < deadline, "the AI never heard requestBoard");
        let f = c.ai.recv_within(WAIT).expect("the AI hears requestBoard");
        let (sender, t, p) = sender_and_type(&f);
        if t == STATESERVER_OBJECT_SET_FIELD && p == &P::new().u32(TROLLEY).u16(board_ai).0[..] {
            break sender;
        }
    };
    assert_eq!(sender, (1001 << 32) + d as u64, "the puppet channel");
    assert_eq!(sender & 0xffff_ffff, d as u64, "getAvatarIdFromSender");
    // The AI answers the sender: the player gets it.
    let answer = P::new().u16(24).u32(TROLLEY).u16(movie).u8(9).0;
    c.ai.send(&dg(
        &[sender],
        AI,
        CLIENTAGENT_SEND_DATAGRAM,
        &P::new().u16(answer.len() as u16).bytes(&answer).0,
    ));
    assert_eq!(t.expect(24), answer[2..].to_vec());
    // Its own broadcast update is not echoed to it (it comes back from the puppet channel).
    t.send(24, P::new().u32(d).u16(set_x).i16(5));
    while let Some(f) = t.m.recv_within(Duration::from_millis(400)) {
        let body = &f[2..];
        assert!(
            !(body[..2] == 24u16.to_le_bytes() && body[2..6] == d.to_le_bytes()),
            "the client was sent its own update: {body:?}"
        );
    }
    t.send(10, P::new());
    t.expect(11);
}

/// Issue 17, item 3 (payloads): a whisper naming another avatar as its sender
/// (`setWhisperFrom.fromId`, one of `toontown.avatar_id_fields`) is an impersonation: the
/// sender is sent away (GO_GET_LOST 151, a security event) and the whisper reaches nobody.
/// A whisper naming its own avatar still arrives.
#[test]
fn a_whisper_naming_another_avatar_as_sender_ejects_the_impersonator() {
    let c = start();
    let whisper = c.client_field("DistributedToon", "setWhisperFrom");
    let (mut a, ad) = named_toon(&c, "victima", "Victim", &toon_dna(1));
    let (mut b, bd) = named_toon(&c, "forger", "Forger", &toon_dna(2));
    let (_, cd) = named_toon(&c, "framed", "Framed", &toon_dna(3));
    a.play(ad);
    b.play(bd);
    b.send(24, P::new().u32(ad).u16(whisper).u32(bd).string("hi"));
    assert_eq!(
        a.expect(24),
        P::new().u32(ad).u16(whisper).u32(bd).string("hi").0
    );
    // Bob writes Carol's avatar as the whisper's sender.
    b.send(
        24,
        P::new().u32(ad).u16(whisper).u32(cd).string("i am carol"),
    );
    b.expect_lost(151);
    let ev = c.event("client-ejected-security");
    assert!(
        ev.windows(b"Impersonation".len())
            .any(|w| w == b"Impersonation"),
        "the event says why: {}",
        String::from_utf8_lossy(&ev)
    );
    while let Some(f) = a.m.recv_within(Duration::from_millis(300)) {
        assert!(
            !f.windows(b"i am carol".len()).any(|w| w == b"i am carol"),
            "the forged whisper arrived"
        );
    }
}

/// Issue 17, item 12: refused updates (here a field the client may not send) are reported
/// once per window, not once each (a flood of them filled the logs and the EventLogger's
/// budget), and a client that keeps sending them is ejected (`limits.max_refused_updates`,
/// 20 per 10 s by default: GO_GET_LOST 151).
#[test]
fn refused_updates_are_reported_once_per_window_and_a_flood_ejects() {
    let c = start();
    let name_field = c.client_field("DistributedToon", "setName");
    let (mut t, d) = named_toon(&c, "flooder", "Flooder", &toon_dna(4));
    t.play(d);
    for _ in 0..15 {
        t.send(24, P::new().u32(d).u16(name_field).string("Hacker"));
    }
    t.send(10, P::new());
    t.expect(11);
    assert_eq!(
        c.count_events("client-update-dropped", Duration::from_millis(700)),
        1,
        "one report for 15 refused updates"
    );
    let warnings =
        c.o.log_text()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("refused a field it may not send"))
            .count();
    assert_eq!(warnings, 1, "one warning line: {}", c.o.log_text());
    // Six more: the 21st in the window ejects.
    for _ in 0..6 {
        t.send(24, P::new().u32(d).u16(name_field).string("Hacker"));
    }
    t.expect_lost(151);
    c.event("client-ejected-security");
}

/// Issue 17, item 5 (p2p rate): one client may send one target at most
/// `toontown.max_p2p_per_target_per_second` (10 by default) p2p updates a second; a burst of
/// 25 whispers delivers 10, and the rest are refused updates (no eject below the limit).
#[test]
fn p2p_updates_to_one_target_are_limited_per_second() {
    let c = start();
    let whisper = c.client_field("DistributedToon", "setWhisperFrom");
    let (mut a, ad) = named_toon(&c, "target", "Target", &toon_dna(1));
    let (mut b, bd) = named_toon(&c, "spammer", "Spammer", &toon_dna(2));
    a.play(ad);
    b.play(bd);
    for i in 0..25 {
        b.send(
            24,
            P::new()
                .u32(ad)
                .u16(whisper)
                .u32(bd)
                .string(&format!("spam {i}")),
        );
    }
    let mut got = 0;
    while let Some(f) = a.m.recv_within(Duration::from_millis(500)) {
        if f[2..4] == 24u16.to_le_bytes() && f.windows(5).any(|w| w == b"spam ") {
            got += 1;
        }
    }
    assert_eq!(got, 10, "whispers delivered from one burst");
    // The spammer still plays (15 refused, under `max_refused_updates`).
    b.send(10, P::new());
    b.expect(11);
    // A second later, whispers go through again.
    std::thread::sleep(Duration::from_millis(1100));
    b.send(24, P::new().u32(ad).u16(whisper).u32(bd).string("later"));
    assert_eq!(
        a.expect(24),
        P::new().u32(ad).u16(whisper).u32(bd).string("later").0
    );
}

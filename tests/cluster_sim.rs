//! The whole cluster in one thread on a fake clock (`otp_testkit::cluster_sim`): the router,
//! the StateServer, the DBSS, the Database (SQLite) and ClientAgent sessions of both dialects,
//! driven without sockets or sleeps. These tests check logic (who hears what, in which order,
//! and what a timer does when it runs out); the black-box tests check the same paths through
//! the real binary's sockets.

mod common;

use common::{client_numbers_2003, P};
use otp_testkit::cluster_sim::{self, ClientId, PeerId, Sim};
use otp_wire::msgtypes::*;
use otp_wire::toontown2003 as tt;
use otpd::clientagent::session::Close;
use otpd::clientagent::ClientAgent;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTROL: u64 = 100_100;
const DB: u64 = 4003;
const AI: u64 = 5_000;
const UD: u32 = 4665;
const SHARD: u32 = 10_000;
const SHARD_CHANNEL: u64 = 4662;
const DISTRICT: u32 = 4_000_000;
const TIME_MANAGER: u32 = 4_000_001;
const TROLLEY: u32 = 4_000_002;
const VERSION: &str = "sim-v1";
/// Any Unix time: sessions read the wall clock only through the cluster's `WallClock`.
const UNIX: Duration = Duration::from_secs(1_764_000_000);

fn dc_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/dc")
        .join(name)
        .canonicalize()
        .unwrap()
}

/// An internal datagram, framed.
fn dg(recipients: &[u64], sender: u64, msgtype: u16, payload: &[u8]) -> Vec<u8> {
    common::dg(recipients, sender, msgtype, payload)
}

/// A control message subscribing `channels`.
fn subscribe(sim: &mut Sim, peer: PeerId, channels: &[u64]) {
    for &c in channels {
        sim.peer_send(peer, &common::control(CONTROL_ADD_CHANNEL, &[c]));
    }
}

/// The (msgtype, payload) of each framed internal datagram.
fn decode(frames: Vec<Vec<u8>>) -> Vec<(u16, u64, Vec<u8>)> {
    frames
        .into_iter()
        .map(|f| {
            let n = f[2] as usize;
            let at = 3 + 8 * n;
            let sender = u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
            let t = u16::from_le_bytes([f[at + 8], f[at + 9]]);
            (t, sender, f[at + 10..].to_vec())
        })
        .collect()
}

fn types(got: &[(u16, u64, Vec<u8>)]) -> Vec<u16> {
    got.iter().map(|g| g.0).collect()
}

/// A client message (type and payload) as the client writes it, without the length tag.
fn body(t: u16, p: P) -> Vec<u8> {
    let mut b = t.to_le_bytes().to_vec();
    b.extend_from_slice(&p.0);
    b
}

fn split(bodies: Vec<Vec<u8>>) -> Vec<(u16, Vec<u8>)> {
    bodies
        .into_iter()
        .map(|b| (u16::from_le_bytes([b[0], b[1]]), b[2..].to_vec()))
        .collect()
}

// ---- the StateServer and the DBSS --------------------------------------------------------

fn objects_cluster(data: &std::path::Path) -> Sim {
    let text = format!(
        "(dc_files: [\"{}\"], roles: [StateServer(control: {CONTROL}), \
         Dbss(database: {DB}, ranges: [(min: 100000000, max: 399999999)]), \
         Database(control: {DB}, generate: (min: 100000000, max: 399999999), \
                  backend: Sqlite(directory: \"{}\"))])",
        dc_path("toon.dc").display(),
        data.display()
    );
    cluster_sim::from_ron(&text, Instant::now(), UNIX).0
}

fn class_of(name: &str) -> u16 {
    let dc = otp_dc::DcFile::parse_files(&[&dc_path("toon.dc")]).unwrap();
    dc.class_by_name(name).unwrap().id()
}

fn field_of(class: &str, name: &str) -> u16 {
    let dc = otp_dc::DcFile::parse_files(&[&dc_path("toon.dc")]).unwrap();
    let c = dc.class_by_name(class).unwrap();
    dc.field_by_name(c, name).unwrap().id()
}

#[test]
fn the_stateserver_tells_the_ai_and_the_zone_in_order() {
    let data = tempfile::tempdir().unwrap();
    let mut sim = objects_cluster(data.path());
    let ai = sim.connect_peer();
    let zone_watcher = sim.connect_peer();
    subscribe(&mut sim, ai, &[AI]);
    subscribe(&mut sim, zone_watcher, &[(DISTRICT as u64) << 32 | 2000]);

    let district = class_of("DistributedObject");
    let trolley = class_of("DistributedTrolley");
    let set_state = P::new().string("waitEmpty").i16(0);
    let create = |doid: u32, parent: u32, zone: u32, class: u16, req: &P| {
        let mut p = P::new().u32(doid).u32(parent).u32(zone).u16(class).0;
        p.extend_from_slice(&req.0);
        dg(&[CONTROL], AI, STATESERVER_CREATE_OBJECT_WITH_REQUIRED, &p)
    };
    sim.peer_send(ai, &create(DISTRICT, 0, 0, district, &P::new()));
    sim.peer_send(
        ai,
        &dg(
            &[DISTRICT as u64],
            AI,
            STATESERVER_OBJECT_SET_AI,
            &P::new().u64(AI).0,
        ),
    );
    let heard = decode(sim.peer_take(ai));
    assert_eq!(types(&heard), [STATESERVER_OBJECT_ENTER_AI_WITH_REQUIRED]);

    // A child in zone 2000: the zone hears it enter; the AI (the parent's) hears it too.
    sim.peer_send(ai, &create(TROLLEY, DISTRICT, 2000, trolley, &set_state));
    let zone = decode(sim.peer_take(zone_watcher));
    assert_eq!(
        types(&zone),
        [STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED]
    );
    let mut want = P::new().u32(TROLLEY).u32(DISTRICT).u32(2000).u16(trolley).0;
    want.extend_from_slice(&set_state.0);
    assert_eq!(zone[0].2, want);

    // A broadcast field reaches the zone, sent by the object; then the object leaves.
    let movie = field_of("DistributedTrolley", "setMovie");
    sim.peer_send(
        ai,
        &dg(
            &[TROLLEY as u64],
            AI,
            STATESERVER_OBJECT_SET_FIELD,
            &P::new().u32(TROLLEY).u16(movie).u8(3).0,
        ),
    );
    sim.peer_send(
        ai,
        &dg(
            &[TROLLEY as u64],
            AI,
            STATESERVER_OBJECT_DELETE_RAM,
            &P::new().u32(TROLLEY).0,
        ),
    );
    let zone = decode(sim.peer_take(zone_watcher));
    assert_eq!(
        types(&zone),
        [STATESERVER_OBJECT_SET_FIELD, STATESERVER_OBJECT_DELETE_RAM]
    );
    assert_eq!(zone[0].1, AI, "the update is sent as the AI sent it");
    assert_eq!(zone[0].2, P::new().u32(TROLLEY).u16(movie).u8(3).0);
}

#[test]
fn the_dbss_activates_a_stored_object_and_writes_its_changes_back() {
    let data = tempfile::tempdir().unwrap();
    let mut sim = objects_cluster(data.path());
    let ai = sim.connect_peer();
    let watcher = sim.connect_peer();
    subscribe(&mut sim, ai, &[AI]);
    subscribe(&mut sim, watcher, &[(DISTRICT as u64) << 32 | 2000]);
    let toon = class_of("DistributedToon");
    let set_name = field_of("DistributedToon", "setName");

    // Create a stored toon with a name.
    let p = P::new()
        .u32(7)
        .u16(toon)
        .u16(1)
        .u16(set_name)
        .string("Flippy");
    sim.peer_send(ai, &dg(&[DB], AI, DBSERVER_CREATE_OBJECT, &p.0));
    let got = decode(sim.peer_take(ai));
    assert_eq!(types(&got), [DBSERVER_CREATE_OBJECT_RESP]);
    assert_eq!(&got[0].2[..4], &7u32.to_le_bytes());
    let doid = u32::from_le_bytes(got[0].2[4..8].try_into().unwrap());
    assert!((100_000_000..=399_999_999).contains(&doid), "{doid}");

    // Activate it into a zone: it enters with its stored name.
    let p = P::new().u32(doid).u32(DISTRICT).u32(2000);
    sim.peer_send(
        ai,
        &dg(&[doid as u64], AI, DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS, &p.0),
    );
    let zone = decode(sim.peer_take(watcher));
    assert_eq!(zone.len(), 1, "{:?}", types(&zone));
    assert!(
        zone[0].0 == STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED
            || zone[0].0 == STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER,
        "{}",
        zone[0].0
    );
    assert!(
        zone[0].2.windows(6).any(|w| w == b"Flippy"),
        "the stored name: {:?}",
        zone[0].2
    );

    // A new name is written back: the database has it.
    let p = P::new().u32(doid).u16(set_name).string("Captain");
    sim.peer_send(
        ai,
        &dg(&[doid as u64], AI, STATESERVER_OBJECT_SET_FIELD, &p.0),
    );
    let p = P::new().u32(8).u32(doid).u16(set_name);
    sim.peer_send(ai, &dg(&[DB], AI, DBSERVER_OBJECT_GET_FIELD, &p.0));
    let got = decode(sim.peer_take(ai));
    let resp: Vec<_> = got
        .iter()
        .filter(|g| g.0 == DBSERVER_OBJECT_GET_FIELD_RESP)
        .collect();
    assert_eq!(resp.len(), 1, "{:?}", types(&got));
    assert_eq!(
        resp[0].2,
        P::new().u32(8).u8(1).u16(set_name).string("Captain").0
    );
}

// ---- the Astron dialect ------------------------------------------------------------------

struct Astron {
    sim: Sim,
    ca: Arc<ClientAgent>,
    ai: PeerId,
    dc: otp_dc::DcFile,
}

fn astron_cluster(extra: &str) -> Astron {
    let path = dc_path("client.dc");
    let text = format!(
        "(dc_files: [\"{}\"], uberdogs: [(id: {UD}, class: \"LoginManager\", anonymous: true)], \
         roles: [StateServer(control: {CONTROL}), \
                 ClientAgent((bind: \"127.0.0.1:0\", version: \"{VERSION}\", \
                              channels: (min: 1000000, max: 1099999), \
                              add_interest: \"enabled\", {extra}))])",
        path.display()
    );
    let (mut sim, agents) = cluster_sim::from_ron(&text, Instant::now(), UNIX);
    let ai = sim.connect_peer();
    subscribe(&mut sim, ai, &[AI, UD as u64]);
    let dc = otp_dc::DcFile::parse_files(&[&path]).unwrap();
    let shard = dc.class_by_name("Shard").unwrap().id();
    let p = P::new()
        .u32(SHARD)
        .u32(1_000)
        .u32(0)
        .u16(shard)
        .string("shard");
    sim.peer_send(
        ai,
        &dg(
            &[CONTROL],
            AI,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &p.0,
        ),
    );
    Astron {
        sim,
        ca: agents.into_iter().next().unwrap(),
        ai,
        dc,
    }
}

impl Astron {
    fn field(&self, class: &str, name: &str) -> u16 {
        let c = self.dc.class_by_name(class).unwrap();
        self.dc.field_by_name(c, name).unwrap().id()
    }
    fn connect(&mut self) -> ClientId {
        self.sim
            .connect_client(&self.ca, "10.0.0.1:5000".parse().unwrap())
            .unwrap()
    }
    fn hello(&mut self, c: ClientId) {
        let hash = self.dc.hash();
        self.sim
            .client_send(c, &body(CLIENT_HELLO, P::new().u32(hash).string(VERSION)));
        assert_eq!(
            split(self.sim.client_take(c)),
            [(CLIENT_HELLO_RESP, vec![])]
        );
    }
}

#[test]
fn an_astron_client_logs_in_through_an_uberdog_and_sees_its_interest() {
    let mut a = astron_cluster("");
    let login = a.field("LoginManager", "login");
    let avatar = a.dc.class_by_name("Avatar").unwrap().id();
    let c = a.connect();
    a.hello(c);

    // The anonymous UberDOG hears the login, sent from the client's channel.
    let p = P::new().u32(UD).u16(login).string("token");
    a.sim.client_send(c, &body(CLIENT_OBJECT_SET_FIELD, p));
    let heard = decode(a.sim.peer_take(a.ai));
    assert_eq!(types(&heard), [STATESERVER_OBJECT_SET_FIELD]);
    let client_channel = heard[0].1;
    assert_eq!(heard[0].2, P::new().u32(UD).u16(login).string("token").0);

    // The UberDOG lets it in; an avatar waits in zone 5.
    let p = P::new().u16(2);
    a.sim.peer_send(
        a.ai,
        &dg(&[client_channel], AI, CLIENTAGENT_SET_STATE, &p.0),
    );
    let p = P::new()
        .u32(20_000)
        .u32(SHARD)
        .u32(5)
        .u16(avatar)
        .string("Pat");
    a.sim.peer_send(
        a.ai,
        &dg(
            &[CONTROL],
            AI,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &p.0,
        ),
    );

    // Interest in (shard, 5): the avatar enters, then the interest is done.
    let p = P::new().u32(9).u16(1).u32(SHARD).u32(5);
    a.sim.client_send(c, &body(CLIENT_ADD_INTEREST, p));
    let got = split(a.sim.client_take(c));
    let want_enter = P::new()
        .u32(20_000)
        .u32(SHARD)
        .u32(5)
        .u16(avatar)
        .string("Pat")
        .0;
    assert_eq!(
        got,
        [
            (CLIENT_ENTER_OBJECT_REQUIRED, want_enter),
            (CLIENT_DONE_INTEREST_RESP, P::new().u32(9).u16(1).0),
        ]
    );
    a.sim.session(c).unwrap().check_invariants().unwrap();

    // The client leaves: nothing of it stays subscribed.
    a.sim.disconnect_client(c);
    assert_eq!(a.sim.subscribed(client_channel), 0);
}

/// Moved from tests/clientagent.rs (issue 17, item 9): a client that says HELLO, then only
/// heartbeats, is ejected with code 1 once `login_timeout_ms` runs out, not before.
#[test]
fn a_client_that_never_logs_in_is_ejected() {
    let mut a = astron_cluster("heartbeat_timeout_ms: 1000, limits: (login_timeout_ms: 1200)");
    let c = a.connect();
    a.hello(c);
    for _ in 0..11 {
        a.sim.advance(Duration::from_millis(100));
        a.sim.client_send(c, &body(CLIENT_HEARTBEAT, P::new()));
    }
    assert!(a.sim.client_closed(c).is_none(), "ejected at 1.1 s");
    a.sim.advance(Duration::from_millis(150));
    let got = split(a.sim.client_take(c));
    assert_eq!(got.last().unwrap().0, CLIENT_EJECT, "{got:?}");
    assert!(
        matches!(a.sim.client_closed(c), Some(Close::Eject { code: 1, reason }) if reason.contains("Not logged in")),
        "{:?}",
        a.sim.client_closed(c)
    );
}

/// Heartbeats keep an established client alive for as long as it sends them; silence ejects
/// it (345) once `heartbeat_timeout_ms` has passed.
#[test]
fn heartbeats_keep_a_client_and_silence_ejects_it() {
    let mut a = astron_cluster("heartbeat_timeout_ms: 1000");
    let c = a.connect();
    a.hello(c);
    for _ in 0..30 {
        a.sim.advance(Duration::from_millis(500));
        a.sim.client_send(c, &body(CLIENT_HEARTBEAT, P::new()));
    }
    assert!(a.sim.client_closed(c).is_none());
    a.sim.advance(Duration::from_millis(1100));
    assert!(
        matches!(a.sim.client_closed(c), Some(Close::Eject { code: 345, .. })),
        "{:?}",
        a.sim.client_closed(c)
    );
}

// ---- the Toontown 2003 dialect -------------------------------------------------------------

struct Toontown {
    sim: Sim,
    /// [open tokens, signed tokens (login within 1.5 s)]
    cas: Vec<Arc<ClientAgent>>,
    dc: otp_dc::DcFile,
    /// The 2003 client's field numbers, from the testkit's own reading of the DC text.
    client: HashMap<(String, String), u16>,
    hash: u32,
}

fn toontown_cluster(data: &std::path::Path) -> Toontown {
    let path = dc_path("toon.dc");
    let names = dc_path("names.txt");
    let vis = dc_path("vis.txt");
    let hash = 3_005_460_305u32;
    let ca = |min: u64, tokens: &str, limits: &str| {
        format!(
            "ClientAgent((bind: \"127.0.0.1:0\", version: \"{VERSION}\", manual_dc_hash: Some({hash}), \
             {limits} channels: (min: {min}, max: {}), dialect: Toontown2003, \
             toontown: (tokens: {tokens}, name_parts: Some(\"{}\"), visibility: Some(\"{}\"), \
                        shard_channel: {SHARD_CHANNEL}))),",
            min + 9999,
            names.display(),
            vis.display()
        )
    };
    let text = format!(
        "(dc_files: [\"{}\"], roles: [StateServer(control: {CONTROL}), \
         Dbss(database: {DB}, ranges: [(min: 100000000, max: 399999999)]), \
         Database(control: {DB}, generate: (min: 100000000, max: 399999999), \
                  backend: Sqlite(directory: \"{}\")), {} {}])",
        path.display(),
        data.display(),
        ca(1_000_000, "Open", ""),
        ca(
            2_000_000,
            "Signed(secret: \"sim-secret-sim-secret-sim-secret\")",
            "limits: (login_timeout_ms: 1500),"
        ),
    );
    let (mut sim, cas) = cluster_sim::from_ron(&text, Instant::now(), UNIX);
    let dc = otp_dc::DcFile::parse_files(&[&path]).unwrap();
    let client = client_numbers_2003(&std::fs::read_to_string(&path).unwrap());
    let ai = sim.connect_peer();
    subscribe(&mut sim, ai, &[AI]);
    let class = |n: &str| dc.class_by_name(n).unwrap().id();
    let create = |doid: u32, zone: u32, class: u16, req: P| {
        let parent = if doid == DISTRICT { 0 } else { DISTRICT };
        let mut p = P::new().u32(doid).u32(parent).u32(zone).u16(class).0;
        p.extend_from_slice(&req.0);
        dg(&[CONTROL], AI, STATESERVER_CREATE_OBJECT_WITH_REQUIRED, &p)
    };
    let set_ai = |doid: u32| {
        dg(
            &[doid as u64],
            AI,
            STATESERVER_OBJECT_SET_AI,
            &P::new().u64(AI).0,
        )
    };
    sim.peer_send(
        ai,
        &create(DISTRICT, 0, class("DistributedObject"), P::new()),
    );
    sim.peer_send(ai, &set_ai(DISTRICT));
    sim.peer_send(ai, &create(TIME_MANAGER, 1, class("TimeManager"), P::new()));
    let trolley = P::new().string("waitEmpty").i16(0);
    sim.peer_send(
        ai,
        &create(TROLLEY, 2000, class("DistributedTrolley"), trolley),
    );
    sim.peer_send(ai, &set_ai(TIME_MANAGER));
    sim.peer_send(ai, &set_ai(TROLLEY));
    let up = P::new().u32(DISTRICT).string("Toon Valley").u32(0);
    sim.peer_send(
        ai,
        &dg(&[SHARD_CHANNEL], AI, tt::CLIENTAGENT_SHARD_UP, &up.0),
    );
    Toontown {
        sim,
        cas,
        dc,
        client,
        hash,
    }
}

impl Toontown {
    fn connect(&mut self, listener: usize) -> ClientId {
        let ca = Arc::clone(&self.cas[listener]);
        self.sim
            .connect_client(&ca, "10.0.0.2:6000".parse().unwrap())
            .unwrap()
    }
    fn send(&mut self, c: ClientId, t: u16, p: P) {
        self.sim.client_send(c, &body(t, p));
    }
    /// The messages of type `t` the client got since last asked (others dropped); checks it
    /// was not told to go.
    fn got(&mut self, c: ClientId, t: u16) -> Vec<Vec<u8>> {
        let all = split(self.sim.client_take(c));
        assert!(
            !all.iter().any(|(m, _)| *m == tt::CLIENT_GO_GET_LOST),
            "kicked: {all:?}"
        );
        all.into_iter()
            .filter(|(m, _)| *m == t)
            .map(|(_, p)| p)
            .collect()
    }
    fn one(&mut self, c: ClientId, t: u16) -> Vec<u8> {
        let mut got = self.got(c, t);
        assert_eq!(got.len(), 1, "one message {t}: {got:?}");
        got.remove(0)
    }
    fn login(&mut self, c: ClientId, token: &str) -> Vec<u8> {
        let p = P::new().string(token).string(VERSION).u32(self.hash).u32(2);
        self.send(c, tt::CLIENT_LOGIN_2, p);
        self.one(c, tt::CLIENT_LOGIN_2_RESP)
    }
}

fn string_at(p: &[u8], at: usize) -> (String, usize) {
    let n = u16::from_le_bytes([p[at], p[at + 1]]) as usize;
    (
        String::from_utf8(p[at + 2..at + 2 + n].to_vec()).unwrap(),
        at + 2 + n,
    )
}

#[test]
fn a_2003_client_logs_in_makes_a_toon_and_walks_into_the_playground() {
    let data = tempfile::tempdir().unwrap();
    let mut t = toontown_cluster(data.path());
    let c = t.connect(0);
    let resp = t.login(c, "alice");
    assert_eq!(resp[0], 0, "LOGIN_2_RESP ok");
    assert_eq!(string_at(&resp, 3).0, "alice");

    t.send(c, tt::CLIENT_GET_SHARD_LIST, P::new());
    assert_eq!(
        t.one(c, tt::CLIENT_GET_SHARD_LIST_RESP),
        P::new().u16(1).u32(DISTRICT).string("Toon Valley").u32(0).0
    );
    t.send(c, tt::CLIENT_GET_AVATARS, P::new());
    assert_eq!(t.one(c, tt::CLIENT_GET_AVATARS_RESP), [0, 0, 0]);

    // A toon, named from the name parts.
    // A DNA the 2003 client writes (AvatarDNA.makeNetString: 't' and 14 table indices).
    let dna = "t\x00\x01\x00\x01\x00\x01\x00\x01\x03\x03\x00\x03\x03\x03";
    t.send(
        c,
        tt::CLIENT_CREATE_AVATAR,
        P::new().u16(0).string(dna).u8(0),
    );
    let p = t.one(c, tt::CLIENT_CREATE_AVATAR_RESP);
    assert_eq!(&p[..3], &[0, 0, 0]);
    let toon = u32::from_le_bytes(p[3..7].try_into().unwrap());
    let pattern = P::new()
        .u32(toon)
        .u16(0)
        .u16(1)
        .u16(1)
        .u16(1)
        .u16(2)
        .u16(1)
        .u16(3)
        .u16(1);
    t.send(c, tt::CLIENT_SET_NAME_PATTERN, pattern);
    assert_eq!(
        t.one(c, tt::CLIENT_SET_NAME_PATTERN_ANSWER),
        P::new().u32(toon).u8(0).0
    );

    // Choose it: the owner's details, name first.
    t.send(c, tt::CLIENT_SET_AVATAR, P::new().u32(toon));
    let details = t.one(c, tt::CLIENT_GET_AVATAR_DETAILS_RESP);
    assert_eq!(&details[..5], &P::new().u32(toon).u8(0).0[..]);
    assert_eq!(string_at(&details, 5).0, "Captain Flippy McDoodle");

    // The quiet zone, then the playground: the trolley is created there, in the client's
    // own numbering of the DC file.
    t.send(c, tt::CLIENT_SET_SHARD, P::new().u32(200_000_000));
    assert_eq!(t.one(c, tt::CLIENT_GET_STATE_RESP).len(), 14);
    t.send(c, tt::CLIENT_SET_ZONE, P::new().u16(1));
    let all = split(t.sim.client_take(c));
    assert!(
        all.iter()
            .any(|(m, p)| (*m == 34 || *m == 35) && p[2..6] == TIME_MANAGER.to_le_bytes()),
        "{all:?}"
    );
    t.send(c, tt::CLIENT_SET_ZONE, P::new().u16(2000));
    let all = split(t.sim.client_take(c));
    let trolley = t.dc.class_by_name("DistributedTrolley").unwrap().id();
    let creates: Vec<_> = all
        .iter()
        .filter(|(m, _)| *m == 34 || *m == 35)
        .map(|(_, p)| p.clone())
        .collect();
    let mut want = P::new()
        .u16(trolley)
        .u32(TROLLEY)
        .string("waitEmpty")
        .i16(0)
        .0;
    assert_eq!(creates.len(), 1, "{all:?}");
    if all.iter().any(|(m, _)| *m == 35) {
        want.extend_from_slice(&P::new().u16(0).0);
    }
    assert_eq!(creates[0], want);
    assert_eq!(
        all.last().unwrap(),
        &(tt::CLIENT_DONE_SET_ZONE_RESP, P::new().u16(2000).0)
    );

    // The client moves its toon: a field by the client's number reaches the zone as the
    // cluster numbers it (checked by the session's own invariants here; the zone-mates'
    // view is in tests/toontown.rs).
    let set_x = t.client[&("DistributedToon".to_string(), "setX".to_string())];
    t.send(
        c,
        tt::CLIENT_OBJECT_UPDATE_FIELD,
        P::new().u32(toon).u16(set_x).i16(42),
    );
    assert!(t.sim.client_closed(c).is_none());
    t.sim.session(c).unwrap().check_invariants().unwrap();

    // Logs out; comes back to find the toon saved under its name.
    t.send(c, tt::CLIENT_DISCONNECT_2003, P::new());
    assert!(t.sim.client_closed(c).is_some());
    let again = t.connect(0);
    assert_eq!(t.login(again, "alice")[0], 0);
    t.send(again, tt::CLIENT_GET_AVATARS, P::new());
    let p = t.one(again, tt::CLIENT_GET_AVATARS_RESP);
    assert_eq!(&p[..3], &[0, 1, 0]);
    assert_eq!(&p[3..7], &toon.to_le_bytes());
    assert_eq!(string_at(&p, 7).0, "Captain Flippy McDoodle");
}

/// Moved from tests/toontown.rs (issue 17, item 9): heartbeats before logging in do not
/// extend the time to log in: the client is told to go (122) at `login_timeout_ms`.
#[test]
fn heartbeats_do_not_keep_an_unauthenticated_2003_client() {
    let data = tempfile::tempdir().unwrap();
    let mut t = toontown_cluster(data.path());
    let c = t.connect(1);
    for _ in 0..14 {
        t.sim.advance(Duration::from_millis(100));
        t.send(c, tt::CLIENT_HEARTBEAT_2003, P::new());
    }
    assert!(t.sim.client_closed(c).is_none(), "gone before 1.5 s");
    t.sim.advance(Duration::from_millis(150));
    let all = split(t.sim.client_take(c));
    let lost = all
        .iter()
        .find(|(m, _)| *m == tt::CLIENT_GO_GET_LOST)
        .unwrap_or_else(|| panic!("told to go: {all:?}"));
    assert_eq!(
        u16::from_le_bytes([lost.1[0], lost.1[1]]),
        tt::LOST_LOGIN_PROBLEM
    );
    assert!(t.sim.client_closed(c).is_some());
}

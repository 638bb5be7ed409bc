//! The ClientAgent session fuzz harness (`otp_testkit::client_fuzz`) on stable Rust: hand-made
//! sequences that walk the login and interest flows (checked step by step by the harness and
//! at the end here), then many pseudo-random scripts from a fixed seed, and mutations of the
//! hand-made ones. `cargo +nightly fuzz run client_session` (in `fuzz/`) runs the same harness
//! under libFuzzer.

use otp_testkit::client_fuzz::{self as fuzz, cfg, Script, Summary, AI, AVATARS, SHARDS, UD_ANON};
use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::*;
use otpd::clientagent::session::Close;
use std::time::Instant;

const SS: u64 = 4_000;

/// A little-endian payload.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn new() -> P {
        P::default()
    }
    fn u8(mut self, v: u8) -> P {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> P {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> P {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> P {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i16(self, v: i16) -> P {
        self.u16(v as u16)
    }
    fn string(mut self, v: &str) -> P {
        self = self.u16(v.len() as u16);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn b(&self) -> &[u8] {
        &self.0
    }
}

fn class(name: &str) -> u16 {
    fuzz::schema().dc().class_by_name(name).unwrap().id()
}

fn field(class_name: &str, name: &str) -> u16 {
    let s = fuzz::schema();
    let dc = s.dc();
    let c = dc.class_by_name(class_name).unwrap();
    dc.field_by_name(c, name).unwrap().id()
}

/// The REQUIRED part of an avatar entrance: setName.
fn avatar(ctx: Option<u32>, doid: u32, parent: u32, zone: u32) -> P {
    let mut p = P::new();
    if let Some(c) = ctx {
        p = p.u32(c);
    }
    p.u32(doid)
        .u32(parent)
        .u32(zone)
        .u16(class("Avatar"))
        .string("av")
}

/// Runs a hand-made script; with `OTPD_FUZZ_SEEDS=<dir>` set, also writes it there as a
/// seed for the cargo-fuzz corpus (e.g. `fuzz/corpus/client_session`).
fn run_seed(name: &str, s: &Script) -> Summary {
    if let Some(dir) = std::env::var_os("OTPD_FUZZ_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), s.bytes()).unwrap();
    }
    fuzz::run_summary(s.bytes())
}

/// Where `sub` occurs in `seq` in order (not necessarily adjacent).
fn in_order(seq: &[u16], sub: &[u16]) -> bool {
    let mut it = seq.iter();
    sub.iter().all(|x| it.any(|y| y == x))
}

fn count(seq: &[u16], t: u16) -> usize {
    seq.iter().filter(|&&x| x == t).count()
}

/// HELLO, established by the server, an interest opened, objects entering, field updates,
/// an owned object moved, an object walking out, the interest closed, then disconnect.
#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn login_interest_and_disconnect() {
    let set_pos = field("Avatar", "setPos");
    let level = field("Avatar", "setLevel");
    let mut s = Script::new(cfg::INTEREST_ENABLED | cfg::RELOCATE | cfg::HEARTBEAT, 0);
    s.hello()
        .client(P::new().u16(CLIENT_HEARTBEAT).b())
        .server(AI, CLIENTAGENT_SET_STATE, P::new().u16(2).b())
        // Interest 1 on shard zone 2 (client context 7); the session's request context is 1.
        .client(
            P::new()
                .u16(CLIENT_ADD_INTEREST)
                .u32(7)
                .u16(1)
                .u32(SHARDS[0])
                .u32(2)
                .b(),
        )
        .server(
            SS,
            STATESERVER_OBJECT_GET_ZONES_COUNT_RESP,
            P::new().u32(1).u32(2).b(),
        )
        .server(
            SS,
            STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED,
            avatar(Some(1), AVATARS[0], SHARDS[0], 2).b(),
        )
        .server(
            SS,
            STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER,
            // OTHER: one field, setLevel(3).
            avatar(Some(1), AVATARS[1], SHARDS[0], 2)
                .u16(1)
                .u16(level)
                .u8(3)
                .b(),
        )
        // The client moves an avatar it sees (setPos is clsend).
        .client(
            P::new()
                .u16(CLIENT_OBJECT_SET_FIELD)
                .u32(AVATARS[0])
                .u16(set_pos)
                .i16(3)
                .i16(-4)
                .b(),
        )
        // A broadcast from the server.
        .server(
            AVATARS[1] as u64,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(AVATARS[1]).u16(set_pos).i16(1).i16(1).b(),
        )
        // It owns a third and relocates it.
        .server(
            SS,
            STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED,
            avatar(None, AVATARS[2], SHARDS[1], 0).b(),
        )
        .client(
            P::new()
                .u16(CLIENT_OBJECT_LOCATION)
                .u32(AVATARS[2])
                .u32(SHARDS[0])
                .u32(2)
                .b(),
        )
        // The first avatar walks into a zone the client does not see.
        .server(
            AVATARS[0] as u64,
            STATESERVER_OBJECT_CHANGING_LOCATION,
            P::new()
                .u32(AVATARS[0])
                .u32(SHARDS[0])
                .u32(9)
                .u32(SHARDS[0])
                .u32(2)
                .b(),
        )
        .advance(500)
        .client(P::new().u16(CLIENT_HEARTBEAT).b())
        .advance(600)
        // A late update for the object that left is ignored, not ejected.
        .client(
            P::new()
                .u16(CLIENT_OBJECT_SET_FIELD)
                .u32(AVATARS[0])
                .u16(set_pos)
                .i16(0)
                .i16(0)
                .b(),
        )
        .client(P::new().u16(CLIENT_REMOVE_INTEREST).u32(8).u16(1).b())
        .client(P::new().u16(CLIENT_DISCONNECT).b());
    let sum = run_seed("login", &s);
    assert_eq!(sum.close, Some(Close::Disconnect), "{sum:#?}");
    assert_eq!(sum.max_state, 2);
    assert!(
        in_order(
            &sum.to_client,
            &[
                CLIENT_HELLO_RESP,
                CLIENT_ENTER_OBJECT_REQUIRED,
                CLIENT_ENTER_OBJECT_REQUIRED_OTHER,
                CLIENT_DONE_INTEREST_RESP,
                CLIENT_OBJECT_SET_FIELD,
                CLIENT_ENTER_OBJECT_REQUIRED_OWNER,
                CLIENT_OBJECT_LEAVING,
                CLIENT_OBJECT_LEAVING,
                CLIENT_DONE_INTEREST_RESP,
            ]
        ),
        "{sum:#?}"
    );
    assert!(!sum.to_client.contains(&CLIENT_EJECT), "{sum:#?}");
    assert_eq!(
        sum.datagrams,
        [
            STATESERVER_OBJECT_GET_ZONES_OBJECTS,
            STATESERVER_OBJECT_SET_FIELD,
            STATESERVER_OBJECT_SET_LOCATION,
        ],
        "{sum:#?}"
    );
}

/// A server-opened interest nobody answers times out (done to the client and the caller);
/// a session object leaving ejects; nothing is said after that.
#[test]
fn interest_timeout_then_session_object_eject() {
    let mut s = Script::new(cfg::INTEREST_VISIBLE | cfg::HEARTBEAT, 0);
    s.hello()
        .server(AI, CLIENTAGENT_SET_STATE, P::new().u16(2).b())
        .server(
            AI,
            CLIENTAGENT_ADD_INTEREST,
            P::new().u16(3).u32(SHARDS[1]).u32(1).b(),
        )
        // An object entering the zone while the interest opens waits for it.
        .server(
            SS,
            STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED,
            avatar(None, AVATARS[3], SHARDS[1], 1).b(),
        )
        .to_deadline()
        .server(
            AI,
            CLIENTAGENT_ADD_SESSION_OBJECT,
            P::new().u32(AVATARS[3]).b(),
        )
        .server(
            AI,
            STATESERVER_OBJECT_DELETE_RAM,
            P::new().u32(AVATARS[3]).b(),
        )
        .client(P::new().u16(CLIENT_HEARTBEAT).b())
        .advance(5_000);
    let sum = run_seed("interest-timeout", &s);
    assert!(
        matches!(sum.close, Some(Close::Eject { code, .. }) if code == CLIENT_DISCONNECT_SESSION_OBJECT_DELETED),
        "{sum:#?}"
    );
    assert!(
        in_order(
            &sum.to_client,
            &[
                CLIENT_HELLO_RESP,
                CLIENT_ADD_INTEREST,
                CLIENT_DONE_INTEREST_RESP,
                // The entrance held back while the interest opened comes after its done.
                CLIENT_ENTER_OBJECT_REQUIRED,
                CLIENT_EJECT,
            ]
        ),
        "{sum:#?}"
    );
    assert_eq!(sum.to_client.last(), Some(&CLIENT_EJECT));
    assert_eq!(
        sum.datagrams,
        [
            STATESERVER_OBJECT_GET_ZONES_OBJECTS,
            CLIENTAGENT_DONE_INTEREST_RESP
        ],
        "{sum:#?}"
    );
    assert!(sum.on_closed.is_empty(), "{sum:#?}");
}

/// The connection is lost with an interest pending and session objects: on_closed answers the
/// caller and deletes them.
#[test]
fn lost_with_pending_interest_and_session_objects() {
    let mut s = Script::new(cfg::INTEREST_ENABLED, cfg::IPV6 | 0x30);
    s.hello()
        .client(
            P::new()
                .u16(CLIENT_OBJECT_SET_FIELD)
                .u32(UD_ANON)
                .u16(field("LoginManager", "login"))
                .string("token")
                .b(),
        )
        .server(AI, CLIENTAGENT_SET_STATE, P::new().u16(2).b())
        .server(
            AI,
            CLIENTAGENT_ADD_SESSION_OBJECT,
            P::new().u32(AVATARS[0]).b(),
        )
        .server(
            AI,
            CLIENTAGENT_ADD_SESSION_OBJECT,
            P::new().u32(AVATARS[1]).b(),
        )
        .server(
            AI,
            CLIENTAGENT_ADD_INTEREST_MULTIPLE,
            P::new().u16(0).u32(SHARDS[0]).u16(2).u32(0).u32(1).b(),
        )
        .server(AI, CLIENTAGENT_GET_TLVS, P::new().u32(9).b())
        .server(AI, CLIENTAGENT_GET_NETWORK_ADDRESS, P::new().u32(10).b())
        .server(
            AI,
            CLIENTAGENT_ADD_POST_REMOVE,
            P::new().u16(3).u16(0xaaaa).u32(0).b(),
        )
        .advance(100);
    let sum = run_seed("lost", &s);
    assert_eq!(sum.close, None, "{sum:#?}");
    assert_eq!(
        sum.datagrams,
        [
            STATESERVER_OBJECT_SET_FIELD,
            STATESERVER_OBJECT_GET_ZONES_OBJECTS,
            CLIENTAGENT_GET_TLVS_RESP,
            CLIENTAGENT_GET_NETWORK_ADDRESS_RESP,
        ],
        "{sum:#?}"
    );
    assert_eq!(count(&sum.on_closed, STATESERVER_OBJECT_DELETE_RAM), 2);
    assert_eq!(count(&sum.on_closed, CLIENTAGENT_DONE_INTEREST_RESP), 1);
    assert_eq!(sum.post_removes, 1);
}

/// Timeouts and refusals end the session with the right code.
#[test]
fn timeouts_and_refusals() {
    let mut n = 0;
    let mut code = |s: &Script| match {
        n += 1;
        run_seed(&format!("refusal-{n}"), s)
    }
    .close
    {
        Some(Close::Eject { code, .. }) => code,
        other => panic!("no eject: {other:?}"),
    };
    // No HELLO in 2 s.
    assert_eq!(
        code(Script::new(0, 0).advance(2_000)),
        CLIENT_DISCONNECT_NO_HELLO
    );
    // No heartbeat in 1 s.
    assert_eq!(
        code(
            Script::new(cfg::HEARTBEAT, 0)
                .hello()
                .advance(999)
                .advance(1)
        ),
        CLIENT_DISCONNECT_NO_HEARTBEAT
    );
    // Not a HELLO first.
    assert_eq!(
        code(Script::new(0, 0).client(P::new().u16(CLIENT_HEARTBEAT).b())),
        CLIENT_DISCONNECT_NO_HELLO
    );
    // A private UberDOG before login.
    assert_eq!(
        code(
            Script::new(0, 0).hello().client(
                P::new()
                    .u16(CLIENT_OBJECT_SET_FIELD)
                    .u32(fuzz::UD_PRIVATE)
                    .u16(field("LoginManager", "login"))
                    .string("x")
                    .b()
            )
        ),
        CLIENT_DISCONNECT_ANONYMOUS_VIOLATION
    );
    // Interests disabled.
    assert_eq!(
        code(
            Script::new(cfg::INTEREST_DISABLED, 0)
                .hello()
                .server(AI, CLIENTAGENT_SET_STATE, P::new().u16(2).b())
                .client(
                    P::new()
                        .u16(CLIENT_ADD_INTEREST)
                        .u32(1)
                        .u16(1)
                        .u32(SHARDS[0])
                        .u32(0)
                        .b()
                )
        ),
        CLIENT_DISCONNECT_FORBIDDEN_INTEREST
    );
    // Over the rate limit (64 datagrams a second).
    let mut s = Script::new(cfg::RATE_LIMITS, 0);
    s.hello();
    for _ in 0..70 {
        s.client(P::new().u16(CLIENT_HEARTBEAT).b());
    }
    assert_eq!(code(&s), 129);
    // A server eject with a reason too long to send whole.
    let mut s = Script::new(0, 0);
    s.hello().server(
        AI,
        CLIENTAGENT_EJECT,
        P::new().u16(122).string(&"é".repeat(32_000)).b(),
    );
    assert_eq!(code(&s), 122);
}

/// xorshift64*: a fixed-seed source of test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    runs: usize,
    steps: usize,
    established: usize,
    done_interest: usize,
    entered: usize,
    closes: std::collections::BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, s: &Summary) {
        self.runs += 1;
        self.steps += s.steps;
        self.established += usize::from(s.max_state == 2);
        self.done_interest += usize::from(s.to_client.contains(&CLIENT_DONE_INTEREST_RESP));
        self.entered += usize::from(s.to_client.contains(&CLIENT_ENTER_OBJECT_REQUIRED));
        let k = match &s.close {
            None => "open".to_string(),
            Some(Close::Eject { code, .. }) if *code < 1000 => format!("eject {code}"),
            Some(Close::Eject { .. }) => "eject (other code)".to_string(),
            Some(c) => format!("{c:?}"),
        };
        *self.closes.entry(k).or_insert(0) += 1;
    }
}

/// Pseudo-random scripts, many short ones and some long ones: a third pure noise, a third after
/// a HELLO, a third after a HELLO and SET_STATE(ESTABLISHED).
#[test]
fn random_scripts() {
    let started = Instant::now();
    let mut rng = Rng(0x0d15_ea5e_c0ff_ee42);
    let mut t = Tally::default();
    let mut buf = Vec::new();
    // Unoptimised builds run a tenth of them.
    let runs = if cfg!(debug_assertions) {
        3_000
    } else {
        30_000
    };
    for i in 0..runs {
        let len = if i % 10 == 0 {
            rng.below(4096)
        } else {
            rng.below(400)
        };
        buf.clear();
        let (a, b) = (rng.next() as u8, rng.next() as u8);
        match i % 3 {
            0 => {}
            1 => buf.extend_from_slice(Script::new(a, b).hello().bytes()),
            _ => buf.extend_from_slice(
                Script::new(a, b)
                    .hello()
                    .server(AI, CLIENTAGENT_SET_STATE, P::new().u16(2).b())
                    .bytes(),
            ),
        }
        buf.extend((0..len).map(|_| rng.next() as u8));
        t.add(&fuzz::run_summary(&buf));
    }
    eprintln!(
        "random: {} runs, {} steps, {} established, {} with an interest done, {} with an entrance, in {:?}; ends: {:?}",
        t.runs,
        t.steps,
        t.established,
        t.done_interest,
        t.entered,
        started.elapsed(),
        t.closes
    );
    // The scripts reach the interesting states, not just the HELLO checks.
    assert!(t.established > t.runs / 4, "too few established sessions");
    assert!(t.done_interest > t.runs / 20, "too few interests completed");
    assert!(t.entered > t.runs / 20, "too few object entrances");
    assert!(
        t.closes.len() > 15,
        "too few kinds of ending: {:?}",
        t.closes
    );
}

/// The hand-made sequences with random bytes changed, inserted and cut.
#[test]
fn mutated_sequences() {
    let set_pos = field("Avatar", "setPos");
    let mut seed = Script::new(cfg::INTEREST_ENABLED | cfg::RELOCATE | cfg::HEARTBEAT, 0);
    seed.hello()
        .server(AI, CLIENTAGENT_SET_STATE, P::new().u16(2).b())
        .client(
            P::new()
                .u16(CLIENT_ADD_INTEREST_MULTIPLE)
                .u32(7)
                .u16(1)
                .u32(SHARDS[0])
                .u16(2)
                .u32(1)
                .u32(2)
                .b(),
        )
        .server(
            SS,
            STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED,
            avatar(Some(1), AVATARS[0], SHARDS[0], 2).b(),
        )
        .server(
            SS,
            STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED,
            avatar(None, AVATARS[1], SHARDS[0], 1).b(),
        )
        .server(
            AVATARS[0] as u64,
            STATESERVER_OBJECT_SET_FIELD,
            P::new().u32(AVATARS[0]).u16(set_pos).i16(1).i16(1).b(),
        )
        // One object in the interest: it opens, then what waited (AVATARS[1]'s entrance,
        // the field update) is delivered.
        .server(
            SS,
            STATESERVER_OBJECT_GET_ZONES_COUNT_RESP,
            P::new().u32(1).u32(1).b(),
        )
        .server(
            SS,
            STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED_OTHER,
            avatar(None, AVATARS[1], SHARDS[0], 1).b(),
        )
        .server(
            AI,
            STATESERVER_OBJECT_CHANGING_OWNER,
            P::new().u32(AVATARS[1]).u64(AI).u64(0).b(),
        )
        .server(
            AI,
            CLIENTAGENT_ADD_SESSION_OBJECT,
            P::new().u32(AVATARS[1]).b(),
        )
        .client(P::new().u16(CLIENT_REMOVE_INTEREST).u32(8).u16(1).b())
        .advance(700);
    let base = seed.bytes().to_vec();
    let sum = run_seed("mutation-base", &seed);
    assert!(
        sum.to_client.contains(&CLIENT_DONE_INTEREST_RESP),
        "{sum:#?}"
    );
    let mut rng = Rng(0x5eed_0000_0000_0001);
    let mut buf = Vec::new();
    let runs = if cfg!(debug_assertions) { 500 } else { 5_000 };
    for _ in 0..runs {
        buf.clear();
        buf.extend_from_slice(&base);
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(buf.len() as u64) as usize;
            match rng.below(4) {
                0 => buf[at] = rng.next() as u8,
                1 => buf.insert(at, rng.next() as u8),
                2 => {
                    buf.remove(at);
                }
                _ => buf[at] ^= 1 << rng.below(8),
            }
        }
        fuzz::run(&buf);
    }
}

// ---- the Toontown 2003 dialect (`otp_testkit::toontown_fuzz`) ----------------------

mod toontown {
    use super::{Rng, P};
    use otp_testkit::toontown_fuzz::{
        self as tt, cfg, run_toontown, run_toontown_summary, Script, Summary, DISTRICTS,
    };
    use otp_wire::msgtypes::*;
    use otpd::clientagent::session::Close;
    use otpd::clientagent::toontown::*;
    use std::time::Instant;

    /// The doid the harness's database gives the first avatar it creates.
    const NEW_AVATAR: u32 = 100_000_101;

    /// Runs a hand-made script; with `OTPD_FUZZ_SEEDS=<dir>` set, also writes it there (e.g.
    /// `fuzz/corpus/toontown_session`).
    fn run_seed(name: &str, s: &Script) -> Summary {
        if let Some(dir) = std::env::var_os("OTPD_FUZZ_SEEDS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("tt-{name}")), s.bytes()).unwrap();
        }
        run_toontown_summary(s.bytes())
    }

    /// A toon DNA the 2003 client writes (AvatarDNA.makeNetString).
    const DNA: &str = "t\x00\x01\x00\x01\x00\x01\x00\x01\x03\x03\x00\x03\x03\x03";

    fn count(seq: &[u16], t: u16) -> usize {
        seq.iter().filter(|&&x| x == t).count()
    }

    /// Login as a new account, make a toon in slot 0, name it by pattern, list it, choose it,
    /// enter district 0 and zone 2000 (a trolley and a TimeManager in the quiet zone arrive).
    fn full_walk(a: u8, b: u8, token: &str) -> Script {
        let mut s = Script::new(a, b);
        s.client(CLIENT_HEARTBEAT_2003, &[])
            .login(token)
            // ACCOUNT_GET: no such account; ACCOUNT_SET of the new record: saved.
            .answer(2, &[2])
            .answer(0, &[2])
            .client(CLIENT_GET_SHARD_LIST, &[])
            .district_up(0)
            .client(CLIENT_GET_AVATARS, &[])
            .client(CLIENT_CREATE_AVATAR, P::new().u16(0).string(DNA).u8(0).b())
            // The database makes it in its slot, in one step: a fresh doid.
            .answer(2, &[2])
            // "Captain Flippy Mcdoodle", saved.
            .client(
                CLIENT_SET_NAME_PATTERN,
                P::new()
                    .u32(NEW_AVATAR)
                    .u16(0)
                    .u16(1)
                    .u16(1)
                    .u16(1)
                    .u16(2)
                    .u16(1)
                    .u16(3)
                    .u16(0)
                    .b(),
            )
            .answer(0, &[2])
            // The list: one toon, its name and DNA from the database.
            .client(CLIENT_GET_AVATARS, &[])
            .answer(0, &[0, 3, b'a', b'b', b'c', 2])
            // Choose it: activated, owned, its details.
            .client(CLIENT_SET_AVATAR, P::new().u32(NEW_AVATAR).b())
            .answer(0, &[0, 2])
            .client(CLIENT_SET_SHARD, P::new().u32(DISTRICTS[0]).b())
            .client(CLIENT_SET_ZONE, P::new().u16(2000).b())
            // Held until the zone is answered, then replayed.
            .client(CLIENT_GET_STATE, &[])
            // The StateServer: count first, the trolley in 2000, the TimeManager in the quiet
            // zone.
            .answer(2, &[0, 1, 0, 0, 0, 1, 0])
            .client(CLIENT_HEARTBEAT_2003, &[]);
        s
    }

    fn assert_walked(sum: &Summary) {
        assert_eq!(sum.max_state, 2, "{sum:#?}");
        assert!(sum.close.is_none(), "{sum:#?}");
        assert_eq!(sum.activated, vec![NEW_AVATAR], "{sum:#?}");
        assert!(
            sum.locations.contains(&(DISTRICTS[0], 2000)),
            "never reached zone 2000: {sum:#?}"
        );
        for t in [
            CLIENT_LOGIN_2_RESP,
            CLIENT_SERVER_UP,
            CLIENT_CREATE_AVATAR_RESP,
            CLIENT_SET_NAME_PATTERN_ANSWER,
            CLIENT_GET_AVATAR_DETAILS_RESP,
            CLIENT_DONE_SET_ZONE_RESP,
        ] {
            assert_eq!(count(&sum.to_client, t), 1, "message {t}: {sum:#?}");
        }
        assert_eq!(count(&sum.to_client, CLIENT_GET_AVATARS_RESP), 2);
        assert_eq!(count(&sum.to_client, CLIENT_CREATE_OBJECT_REQUIRED), 2);
        // SET_SHARD's, SET_ZONE's, then the held GET_STATE's after DONE_SET_ZONE_RESP.
        assert_eq!(count(&sum.to_client, CLIENT_GET_STATE_RESP), 3);
        assert_eq!(
            sum.to_client.last(),
            Some(&CLIENT_GET_STATE_RESP),
            "{sum:#?}"
        );
        // The avatar in play is deleted when the client goes.
        assert_eq!(sum.on_closed, vec![STATESERVER_OBJECT_DELETE_RAM]);
    }

    #[test]
    fn toontown_walk_to_a_zone() {
        let sum = run_seed("walk-open", &full_walk(0, 0, "alice"));
        assert_walked(&sum);
        let sum = run_seed(
            "walk-signed",
            &full_walk(
                cfg::SIGNED | cfg::HEARTBEAT | cfg::RATE_LIMITS | cfg::FEW_ZONES,
                cfg::UTF8,
                &tt::signed_token("bob"),
            ),
        );
        assert_walked(&sum);
        // Then a street (vis group 2100: 2101, 2102), a zone update, leaving, and logging out.
        let mut s = full_walk(0, cfg::DISTRICT_UP, "alice");
        s.client(CLIENT_SET_ZONE, P::new().u16(2100).b())
            .answer(0, &[0])
            .client(CLIENT_SET_AVATAR, P::new().u32(0).b())
            .client(CLIENT_DISCONNECT_2003, &[]);
        let sum = run_seed("walk-street", &s);
        assert_eq!(sum.close, Some(Close::Disconnect), "{sum:#?}");
        assert!(sum.locations.contains(&(DISTRICTS[0], 2100)), "{sum:#?}");
        assert_eq!(count(&sum.to_client, CLIENT_DONE_SET_ZONE_RESP), 2);
        assert!(sum.datagrams.contains(&STATESERVER_OBJECT_DELETE_RAM));
        // A signed listener refuses an open token; the refusal is the last word.
        let mut s = Script::new(cfg::SIGNED, 0);
        s.login("alice");
        let sum = run_seed("signed-refusal", &s);
        assert_eq!(
            sum.close
                .as_ref()
                .map(|c| matches!(c, Close::Eject { code, .. } if *code == LOST_LOGIN_PROBLEM)),
            Some(true),
            "{sum:#?}"
        );
        // Nothing but 2003 messages before login: ejected (113).
        let mut s = Script::new(0, 0);
        s.client(CLIENT_SET_ZONE, P::new().u16(2000).b());
        let sum = run_seed("before-login", &s);
        assert_eq!(
            sum.close,
            Some(Close::Eject {
                code: LOST_NOT_LOGGED_IN,
                reason: "Message type 29 before login.".into()
            })
        );
        // The database never answers: 122 after the request timeout.
        let mut s = Script::new(cfg::NO_HELLO_TIMEOUT, 0);
        s.login("alice").advance(15_001);
        let sum = run_seed("db-timeout", &s);
        assert!(
            matches!(
                sum.close,
                Some(Close::Eject {
                    code: LOST_LOGIN_PROBLEM,
                    ..
                })
            ),
            "{sum:#?}"
        );
    }

    /// Found by the harness: the 2003 dialect sent client-chosen doids' datagrams to channel 0
    /// and to the control channel 1 (GET_AVATAR_DETAILS, p2p updates), which an upstream MD
    /// reads as a control message (the message type being the low bits of the client's
    /// channel). Now: "no information", and the update dropped.
    #[test]
    fn toontown_no_datagrams_to_channels_0_and_1() {
        let s = tt::schema();
        let dc = s.dc();
        let toon = dc.class_by_name("DistributedToon").unwrap();
        let whisper = dc.field_by_name(toon, "setWhisperFrom").unwrap().id();
        for doid in [0u32, 1] {
            let mut s = Script::new(0, 0);
            s.login("alice")
                .answer(2, &[2])
                .answer(0, &[2])
                .client(CLIENT_GET_AVATAR_DETAILS, P::new().u32(doid).b())
                .client(
                    CLIENT_OBJECT_UPDATE_FIELD,
                    P::new().u32(doid).u16(whisper).u32(7).string("hi").b(),
                )
                .client(CLIENT_GET_AVATAR_DETAILS, P::new().u32(2).b());
            // The harness checks the channels; the details answer at once, the update is
            // dropped; a real doid is asked about.
            let sum = run_seed(&format!("channel-{doid}"), &s);
            assert!(sum.close.is_none(), "{sum:#?}");
            assert_eq!(count(&sum.to_client, CLIENT_GET_AVATAR_DETAILS_RESP), 1);
            assert_eq!(count(&sum.datagrams, STATESERVER_OBJECT_GET_ALL), 1);
            assert_eq!(count(&sum.datagrams, STATESERVER_OBJECT_SET_FIELD), 0);
        }
    }

    /// Found by the harness: two CLIENT_CREATE_AVATARs for one slot before the database
    /// answered made two avatars, the first one orphaned in the database when the second's
    /// answer took the slot (a client could fill the database this way). Now the second is
    /// refused (122), as a taken slot is.
    #[test]
    fn toontown_one_creation_per_slot() {
        let create = P::new().u16(0).string(DNA).u8(0);
        let mut s = Script::new(0, 0);
        s.login("alice")
            .answer(2, &[2])
            .answer(0, &[2])
            .client(CLIENT_CREATE_AVATAR, create.b())
            .client(CLIENT_CREATE_AVATAR, create.b());
        let sum = run_seed("create-twice", &s);
        assert_eq!(
            count(&sum.datagrams, DBSERVER_ACCOUNT_CREATE_AVATAR),
            1,
            "{sum:#?}"
        );
        assert!(
            matches!(
                sum.close,
                Some(Close::Eject {
                    code: LOST_LOGIN_PROBLEM,
                    ..
                })
            ),
            "{sum:#?}"
        );
        // Another slot may be created meanwhile.
        let mut s = Script::new(0, 0);
        s.login("alice")
            .answer(2, &[2])
            .answer(0, &[2])
            .client(CLIENT_CREATE_AVATAR, create.b())
            .client(CLIENT_CREATE_AVATAR, P::new().u16(0).string(DNA).u8(1).b());
        let sum = run_seed("create-two-slots", &s);
        assert_eq!(
            count(&sum.datagrams, DBSERVER_ACCOUNT_CREATE_AVATAR),
            2,
            "{sum:#?}"
        );
        assert!(sum.close.is_none(), "{sum:#?}");
    }

    /// Found by cargo-fuzz: with interest_timeout_ms = 0, a SET_ZONE held during another and
    /// replayed by `on_time` opened an interest already due, left due after `on_time(now)`
    /// (the runtime only came back to it a timer scan later). Now `on_time` passes again.
    #[test]
    fn toontown_replayed_set_zone_due_at_once() {
        let mut s = full_walk(0, cfg::INTEREST_TIMEOUT_ZERO, "alice");
        s.client(CLIENT_SET_ZONE, P::new().u16(2100).b())
            .client(CLIENT_SET_ZONE, P::new().u16(2000).b())
            .advance(0);
        let sum = run_seed("replayed-set-zone", &s);
        assert!(sum.close.is_none(), "{sum:#?}");
        assert_eq!(
            count(&sum.to_client, CLIENT_DONE_SET_ZONE_RESP),
            3,
            "{sum:#?}"
        );
        // The input cargo-fuzz found (crash-b00853e3...).
        let found: String = [
        "00a600023400001d10000500616c6963650a0066757a7a2d74742d7631e44067030200000017000202170000",
        "02000208001dff00093d000000020300000b060000000400646e61210017000202170000020016430065e1f5",
        "050000010001000100020001000300000017000002000203001700000003616263020006200065e1f5051700",
        "00000200061f0000093d00002e1d00b1b1b1b170320701000000ffff1d1000050061ffff68213300007e0001",
        "000070726f7879ff1d650a1dff2424242424d224243116430065e1f505000001000100010002736574446566",
        "61756c745a6f6e651d00340817002e2424242424240000000620000000000000022500",
        ]
        .concat();
        let bytes: Vec<u8> = (0..found.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&found[i..i + 2], 16).unwrap())
            .collect();
        run_toontown(&bytes);
    }

    /// The start of a session that logs in (either token policy) to a new account, or to one
    /// with two toons (AVATARS[0] and [1]).
    fn login_prefix(a: u8, b: u8, existing: bool) -> Vec<u8> {
        let mut s = Script::new(a, b);
        // A built LOGIN_2: a valid token for "alice" under either policy, right version and
        // hash, token type 2, as built.
        s.raw(&[1, 0, 0, 0x25, 2]);
        if existing {
            s.answer(0, &[2, 1, 5, 2]);
        } else {
            s.answer(2, &[2]).answer(0, &[2]);
        }
        s.bytes().to_vec()
    }

    #[derive(Default)]
    struct Tally {
        runs: usize,
        steps: usize,
        established: usize,
        chosen: usize,
        zoned: usize,
        entered: usize,
        closes: std::collections::BTreeMap<String, usize>,
    }

    impl Tally {
        fn add(&mut self, s: &Summary) {
            self.runs += 1;
            self.steps += s.steps;
            self.established += usize::from(s.max_state == 2);
            self.chosen += usize::from(!s.activated.is_empty());
            self.zoned += usize::from(s.to_client.contains(&CLIENT_DONE_SET_ZONE_RESP));
            self.entered += usize::from(
                s.to_client.contains(&CLIENT_CREATE_OBJECT_REQUIRED)
                    || s.to_client.contains(&CLIENT_CREATE_OBJECT_REQUIRED_OTHER),
            );
            let k = match &s.close {
                None => "open".to_string(),
                Some(Close::Eject { code, .. }) if *code < 1000 => format!("eject {code}"),
                Some(Close::Eject { .. }) => "eject (other code)".to_string(),
                Some(c) => format!("{c:?}"),
            };
            *self.closes.entry(k).or_insert(0) += 1;
        }
    }

    /// Pseudo-random scripts: a quarter pure noise, a quarter after a login to a new account,
    /// a quarter after a login to an account with toons, a quarter after a part of the
    /// hand-made walk; the op bytes favour built messages and the answers.
    #[test]
    fn toontown_random_scripts() {
        let started = Instant::now();
        // OTPD_TT_FUZZ_SEED / OTPD_TT_FUZZ_RUNS change the seed and the count (longer hunts).
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let mut rng = Rng(env("OTPD_TT_FUZZ_SEED").unwrap_or(0x7007_7a11_2003_0001));
        let mut t = Tally::default();
        let mut buf = Vec::new();
        let walk: Vec<Vec<u8>> = [(0, 0), (cfg::HEARTBEAT | cfg::FEW_ZONES, cfg::UTF8)]
            .iter()
            .map(|&(a, b)| full_walk(a, b, "alice").bytes().to_vec())
            .collect();
        let runs = env("OTPD_TT_FUZZ_RUNS").map_or(
            if cfg!(debug_assertions) {
                4_000
            } else {
                40_000
            },
            |n| n as usize,
        );
        for i in 0..runs {
            let len = if i % 10 == 0 {
                rng.below(3000)
            } else {
                rng.below(400)
            };
            buf.clear();
            let (a, b) = (rng.next() as u8, rng.next() as u8);
            match i % 4 {
                0 => buf.extend_from_slice(&[a, b]),
                1 => buf.extend_from_slice(&login_prefix(a, b, false)),
                2 => buf.extend_from_slice(&login_prefix(a, b, true)),
                _ => {
                    let w = &walk[(i / 4) % walk.len()];
                    let cut = 2 + rng.below(w.len() as u64 - 1) as usize;
                    buf.extend_from_slice(&w[..cut]);
                }
            }
            let end = buf.len() + len as usize;
            while buf.len() < end {
                // An op byte: client built (1..=10), server built (11..=18), time, answers
                // (23..=28), districts, now and then raw datagrams and runtime ejects.
                let op = match rng.below(16) {
                    0..=5 => 1 + rng.below(10),
                    6..=8 => 11 + rng.below(8),
                    9..=11 => 23 + rng.below(6),
                    12 => 20 + rng.below(3),
                    13 => 29,
                    _ => rng.below(32),
                } as u8;
                buf.push(op);
                for _ in 0..rng.below(12) {
                    // Small bytes pick the sensible values; now and then a literal.
                    let v = if rng.below(8) == 0 {
                        rng.next() as u8
                    } else {
                        rng.below(8) as u8
                    };
                    buf.push(v);
                }
            }
            t.add(&run_toontown_summary(&buf));
        }
        eprintln!(
            "toontown random: {} runs, {} steps, {} established, {} chose a toon, {} zoned, {} saw objects, in {:?}; ends: {:?}",
            t.runs,
            t.steps,
            t.established,
            t.chosen,
            t.zoned,
            t.entered,
            started.elapsed(),
            t.closes
        );
        assert!(t.established > t.runs / 3, "too few logins");
        assert!(t.chosen > t.runs / 50, "too few toons chosen");
        assert!(t.zoned > t.runs / 100, "too few zones entered");
        assert!(t.entered > t.runs / 100, "too few object entrances");
        assert!(
            t.closes.len() > 8,
            "too few kinds of ending: {:?}",
            t.closes
        );
    }

    /// The hand-made walk with random bytes changed, inserted and cut.
    #[test]
    fn toontown_mutated_sequences() {
        let mut walk = full_walk(cfg::HEARTBEAT, 0, "alice");
        walk.client(CLIENT_SET_ZONE, P::new().u16(2100).b())
            .answer(1, &[0, 0, 0, 1, 0])
            .client(CLIENT_GET_AVATAR_DETAILS, P::new().u32(NEW_AVATAR).b())
            .advance(2_500)
            .client(CLIENT_DELETE_AVATAR, P::new().u32(NEW_AVATAR).b())
            .client(CLIENT_SET_AVATAR, P::new().u32(0).b())
            .client(CLIENT_DELETE_AVATAR, P::new().u32(NEW_AVATAR).b())
            .answer(0, &[2])
            .advance(20_000);
        let base = walk.bytes().to_vec();
        let sum = run_seed("mutation-base", &walk);
        assert!(
            sum.to_client.contains(&CLIENT_DONE_SET_ZONE_RESP),
            "{sum:#?}"
        );
        let mut rng = Rng(0x5eed_2003_0000_0002);
        let mut buf = Vec::new();
        let runs = if cfg!(debug_assertions) { 500 } else { 5_000 };
        for _ in 0..runs {
            buf.clear();
            buf.extend_from_slice(&base);
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(buf.len() as u64) as usize;
                match rng.below(4) {
                    0 => buf[at] = rng.next() as u8,
                    1 => buf.insert(at, rng.next() as u8),
                    2 => {
                        buf.remove(at);
                    }
                    _ => buf[at] ^= 1 << rng.below(8),
                }
            }
            run_toontown(&buf);
        }
    }
}

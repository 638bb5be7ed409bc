//! The ClientAgent session fuzz harness (`otpd::clientagent::fuzz`) on stable Rust: hand-made
//! sequences that walk the login and interest flows (checked step by step by the harness and
//! at the end here), then many pseudo-random scripts from a fixed seed, and mutations of the
//! hand-made ones. `cargo +nightly fuzz run client_session` (in `fuzz/`) runs the same harness
//! under libFuzzer.

use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::*;
use otpd::clientagent::fuzz::{self, cfg, Script, Summary, AI, AVATARS, SHARDS, UD_ANON};
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

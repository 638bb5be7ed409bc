//! The ClientAgent (Astron client protocol) against the real binary: the login and interest
//! flow, every server-side control message, every eject code with its EventLogger event, and
//! the hostile cases (floods of idle connections, a client that stops reading, PROXY headers,
//! TLS).

mod common;

use common::*;
use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::*;
use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const CONTROL: u64 = 100_100;
const AI: u64 = 5_000;
const UD: u32 = 4665;
const UD_PRIVATE: u32 = 4666;
const VERSION: &str = "otpd-test-1";
const SHARD: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(5);

struct Cluster {
    #[allow(dead_code)]
    o: Otpd,
    dc: otp_dc::DcFile,
    /// Client listener ports, in the order given to `start`.
    ports: Vec<u16>,
    el: UdpSocket,
    probe: Md,
    /// An AI: subscribed to both UberDOGs and its own channel.
    ai: Md,
}

/// Starts otpd with a StateServer and one ClientAgent per entry of `cas` (extra settings of
/// that ClientAgent, RON). Each gets its own channel range unless it names one.
fn start(cas: &[&str]) -> Cluster {
    start_top(cas, "")
}

fn start_top(cas: &[&str], top_extra: &str) -> Cluster {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/dc/client.dc");
    let path = path.canonicalize().unwrap();
    let dc = otp_dc::DcFile::parse_files(&[&path]).unwrap();
    let el = UdpSocket::bind("127.0.0.1:0").unwrap();
    el.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let el_port = el.local_addr().unwrap().port();
    let mut ports = Vec::new();
    let mut roles = format!("StateServer(control: {CONTROL}),");
    for (i, extra) in cas.iter().enumerate() {
        let port = free_port();
        ports.push(port);
        let channels = if extra.contains("channels:") {
            String::new()
        } else {
            let min = 1_000_000 + i as u64 * 100_000;
            format!("channels: (min: {min}, max: {}),", min + 99_999)
        };
        let interest = if extra.contains("add_interest:") {
            ""
        } else {
            "add_interest: \"enabled\","
        };
        roles.push_str(&format!(
            "ClientAgent((bind: \"127.0.0.1:{port}\", version: \"{VERSION}\", {channels} {interest} {extra})),"
        ));
    }
    let top = format!(
        "dc_files: [\"{}\"], eventlogger: Some(\"127.0.0.1:{el_port}\"), \
         uberdogs: [(id: {UD}, class: \"LoginManager\", anonymous: true), \
                    (id: {UD_PRIVATE}, class: \"LoginManager\")], roles: [{roles}], {top_extra}",
        path.display()
    );
    let o = Otpd::start_full(free_port(), "", &top);
    let mut probe = o.connect();
    let mut ai = listener(o.port, &mut probe, &[UD as u64, UD_PRIVATE as u64, AI]);
    // The shard the avatars live under (interests need their parent to exist).
    let shard = dc.class_by_name("Shard").unwrap().id();
    ai.send(&dg(
        &[CONTROL],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &P::new()
            .u32(SHARD)
            .u32(1_000)
            .u32(0)
            .u16(shard)
            .string("shard")
            .0,
    ));
    Cluster {
        o,
        dc,
        ports,
        el,
        probe,
        ai,
    }
}

fn payload(msgtype: u16, p: P) -> Vec<u8> {
    let mut body = msgtype.to_le_bytes().to_vec();
    body.extend_from_slice(&p.0);
    frame(&body)
}

/// A decoded internal datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Internal {
    recipients: Vec<u64>,
    sender: u64,
    msgtype: u16,
    payload: Vec<u8>,
}

fn decode(frame: &[u8]) -> Internal {
    let b = &frame[2..];
    let n = b[0] as usize;
    let recipients = (0..n)
        .map(|i| u64::from_le_bytes(b[1 + 8 * i..9 + 8 * i].try_into().unwrap()))
        .collect();
    let at = 1 + 8 * n;
    Internal {
        recipients,
        sender: u64::from_le_bytes(b[at..at + 8].try_into().unwrap()),
        msgtype: u16::from_le_bytes([b[at + 8], b[at + 9]]),
        payload: b[at + 10..].to_vec(),
    }
}

struct Client {
    m: Md,
    channel: u64,
}

impl Client {
    fn connect(port: u16) -> Client {
        Client {
            m: Md::connect(port),
            channel: 0,
        }
    }

    fn send(&mut self, msgtype: u16, p: P) {
        self.m.send(&payload(msgtype, p));
    }

    /// The next client datagram: (msgtype, payload).
    fn recv(&mut self) -> Option<(u16, Vec<u8>)> {
        let f = self.m.recv_within(WAIT)?;
        Some((u16::from_le_bytes([f[2], f[3]]), f[4..].to_vec()))
    }

    fn expect(&mut self, msgtype: u16, p: P) {
        let got = self.recv().expect("a datagram for the client");
        assert_eq!(got, (msgtype, p.0), "client received something else");
    }

    fn hello(&mut self, c: &Cluster) {
        let hash = c.dc.hash();
        self.send(CLIENT_HELLO, P::new().u32(hash).string(VERSION));
        self.expect(CLIENT_HELLO_RESP, P::new());
    }

    /// Reads until CLIENT_EJECT; checks its code and text, then that the socket closes.
    fn expect_eject(&mut self, code: u16) -> String {
        loop {
            let (t, p) = self
                .recv()
                .expect("CLIENT_EJECT before the connection closed");
            if t != CLIENT_EJECT {
                continue;
            }
            let got = u16::from_le_bytes([p[0], p[1]]);
            let len = u16::from_le_bytes([p[2], p[3]]) as usize;
            let reason = String::from_utf8_lossy(&p[4..4 + len]).into_owned();
            assert_eq!(got, code, "eject code (reason: {reason})");
            assert!(!reason.is_empty());
            assert!(
                self.m.closed_within(WAIT),
                "the connection closes after the eject"
            );
            return reason;
        }
    }
}

impl Cluster {
    /// A client that said HELLO, with its channel learnt through the anonymous UberDOG.
    fn client(&mut self, ca: usize) -> Client {
        let mut cl = Client::connect(self.ports[ca]);
        cl.hello(self);
        cl.channel = self.identify(&mut cl);
        cl
    }

    fn identify(&mut self, cl: &mut Client) -> u64 {
        let login = self.field("LoginManager", "login");
        cl.send(
            CLIENT_OBJECT_SET_FIELD,
            P::new().u32(UD).u16(login).string("who am I"),
        );
        let got = decode(&self.ai.recv_within(WAIT).expect("the login reaches the AI"));
        assert_eq!(got.msgtype, STATESERVER_OBJECT_SET_FIELD);
        assert_eq!(got.recipients, vec![UD as u64]);
        got.sender
    }

    /// A client that sent `header` (a PROXY header) first, then HELLO; its channel known.
    fn proxied_client(&mut self, header: &[u8]) -> Client {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.ports[0])).unwrap();
        std::io::Write::write_all(&mut s, header).unwrap();
        let mut cl = Client {
            m: Md::from_stream(s),
            channel: 0,
        };
        cl.hello(self);
        cl.channel = self.identify(&mut cl);
        cl
    }

    /// CLIENTAGENT_GET_NETWORK_ADDRESS for a client: the answer's payload.
    fn network_address(&mut self, cl: &Client, context: u32) -> Vec<u8> {
        self.ai.send(&dg(
            &[cl.channel],
            AI,
            CLIENTAGENT_GET_NETWORK_ADDRESS,
            &P::new().u32(context).0,
        ));
        self.ai_expect(CLIENTAGENT_GET_NETWORK_ADDRESS_RESP).payload
    }

    fn field(&self, class: &str, name: &str) -> u16 {
        let c = self.dc.class_by_name(class).unwrap();
        self.dc.field_by_name(c, name).unwrap().id()
    }

    fn class(&self, name: &str) -> u16 {
        self.dc.class_by_name(name).unwrap().id()
    }

    /// Sends a control message to a client's channel and waits until the client has handled
    /// it (a marker sent after it by the same connection reaches the client).
    fn control(&mut self, cl: &mut Client, msgtype: u16, p: P) {
        self.ai.send(&dg(&[cl.channel], AI, msgtype, &p.0));
        self.sync(cl);
    }

    fn sync(&mut self, cl: &mut Client) {
        let marker = payload(0xFFF0, P::new().u32(0xC0FFEE));
        self.ai.send(&dg(
            &[cl.channel],
            AI,
            CLIENTAGENT_SEND_DATAGRAM,
            &P::new().u16(marker.len() as u16 - 2).bytes(&marker[2..]).0,
        ));
        loop {
            let (t, p) = cl.recv().expect("the marker reaches the client");
            if t == 0xFFF0 && p == 0xC0FFEEu32.to_le_bytes() {
                return;
            }
        }
    }

    fn establish(&mut self, cl: &mut Client) {
        self.control(cl, CLIENTAGENT_SET_STATE, P::new().u16(2));
    }

    /// Creates an Avatar in (SHARD, zone) managed by the AI.
    fn avatar(&mut self, doid: u32, zone: u32, name: &str) {
        let p = P::new()
            .u32(doid)
            .u32(SHARD)
            .u32(zone)
            .u16(self.class("Avatar"))
            .string(name);
        self.ai.send(&dg(
            &[CONTROL],
            AI,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &p.0,
        ));
        self.ai.send(&dg(
            &[doid as u64],
            AI,
            STATESERVER_OBJECT_SET_AI,
            &P::new().u64(AI).0,
        ));
        // The AI hears the object enter its control; drain that.
        let deadline = Instant::now() + WAIT;
        loop {
            let got = decode(
                &self
                    .ai
                    .recv_within(WAIT)
                    .expect("the AI hears of its object"),
            );
            if got.msgtype == STATESERVER_OBJECT_ENTER_AI_WITH_REQUIRED
                || got.msgtype == STATESERVER_OBJECT_ENTER_AI_WITH_REQUIRED_OTHER
            {
                break;
            }
            assert!(Instant::now() < deadline);
        }
    }

    /// The next AI datagram of this type.
    fn ai_expect(&mut self, msgtype: u16) -> Internal {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(f) = self.ai.recv_within(deadline - Instant::now()) {
                let d = decode(&f);
                if d.msgtype == msgtype {
                    return d;
                }
            }
        }
        panic!("the AI did not receive message type {msgtype}");
    }

    /// Waits for an EventLogger event of `kind` whose fields satisfy `pred`.
    fn event(&self, kind: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.event_of(&[kind], pred)
    }

    fn event_of(&self, kinds: &[&str], pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 65536];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok(n) = self.el.recv(&mut buf) else {
                continue;
            };
            let v = rmpv::decode::read_value(&mut &buf[..n]).unwrap();
            let e = Event::from(v);
            if e.get("type").is_some_and(|t| kinds.contains(&t.as_str())) && pred(&e) {
                return e;
            }
            seen.push(e);
        }
        panic!("no {kinds:?} event; saw {seen:?}");
    }
}

#[derive(Debug)]
struct Event(Vec<(String, String)>);

impl From<rmpv::Value> for Event {
    fn from(v: rmpv::Value) -> Event {
        let map = v.as_map().cloned().unwrap_or_default();
        Event(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        rmpv::Value::String(s) => s.as_str().unwrap_or("").to_string(),
                        other => other.to_string(),
                    };
                    (k.as_str().unwrap_or("").to_string(), v)
                })
                .collect(),
        )
    }
}

impl Event {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

fn eject_event(c: &Cluster, code: u16, channel: Option<u64>) -> Event {
    c.event_of(&["client-ejected-security", "client-ejected"], |e| {
        e.get("reason_code") == Some(code.to_string())
            && channel.is_none_or(|ch| e.get("channel") == Some(ch.to_string()))
    })
}

/// CLIENT_ADD_INTEREST_MULTIPLE of `zones` under SHARD.
fn zones_interest(context: u32, id: u16, zones: std::ops::Range<u32>) -> P {
    let mut p = P::new()
        .u32(context)
        .u16(id)
        .u32(SHARD)
        .u16(zones.len() as u16);
    for z in zones {
        p = p.u32(z);
    }
    p
}

#[test]
fn a_client_cannot_open_more_zones_than_its_budget_with_default_limits() {
    // The attack of issue 17 item 13: many interests of many zones each made every interest
    // change (and everyone's logins on that core) slow. Each interest is within
    // max_zones_per_interest (1024); together they pass max_zones_total (1024).
    let mut c = start(&[""]);
    let mut bystander = c.client(0);
    c.establish(&mut bystander);
    let mut cl = c.client(0);
    c.establish(&mut cl);
    cl.send(CLIENT_ADD_INTEREST_MULTIPLE, zones_interest(1, 1, 0..1000));
    cl.expect(CLIENT_DONE_INTEREST_RESP, P::new().u32(1).u16(1));
    // Changing an interest within the budget is fine...
    cl.send(
        CLIENT_ADD_INTEREST_MULTIPLE,
        zones_interest(2, 2, 1000..1024),
    );
    cl.expect(CLIENT_DONE_INTEREST_RESP, P::new().u32(2).u16(2));
    cl.send(
        CLIENT_ADD_INTEREST_MULTIPLE,
        zones_interest(3, 2, 1000..1020),
    );
    cl.expect(CLIENT_DONE_INTEREST_RESP, P::new().u32(3).u16(2));
    // ...one zone past it is not.
    cl.send(
        CLIENT_ADD_INTEREST_MULTIPLE,
        zones_interest(4, 3, 2000..2005),
    );
    let reason = cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_INTEREST);
    assert!(reason.contains("1025 zones"), "{reason}");
    let e = eject_event(&c, CLIENT_DISCONNECT_FORBIDDEN_INTEREST, Some(cl.channel));
    assert_eq!(e.get("type").as_deref(), Some("client-ejected-security"));
    // Nobody else is hurt.
    bystander.send(CLIENT_ADD_INTEREST_MULTIPLE, zones_interest(5, 1, 0..1024));
    bystander.expect(CLIENT_DONE_INTEREST_RESP, P::new().u32(5).u16(1));
}

#[test]
fn hello_checks_version_then_hash_and_must_come_first() {
    let c = start(&["send_version: false"]);
    let hash = c.dc.hash();

    let mut cl = Client::connect(c.ports[0]);
    cl.send(CLIENT_HEARTBEAT, P::new());
    cl.expect_eject(CLIENT_DISCONNECT_NO_HELLO);

    let mut cl = Client::connect(c.ports[0]);
    cl.send(CLIENT_HELLO, P::new().u32(0x1234_5678).string("wrong"));
    let reason = cl.expect_eject(CLIENT_DISCONNECT_BAD_VERSION);
    assert!(
        !reason.contains(VERSION),
        "send_version: false hides it: {reason}"
    );

    let mut cl = Client::connect(c.ports[0]);
    cl.send(CLIENT_HELLO, P::new().u32(hash ^ 1).string(VERSION));
    let reason = cl.expect_eject(CLIENT_DISCONNECT_BAD_DCHASH);
    assert!(reason.contains(&format!("{:x}", hash)), "{reason}");
    c.event("client-ejected", |e| {
        e.get("reason_code").as_deref() == Some("125")
    });

    let mut cl = Client::connect(c.ports[0]);
    cl.send(CLIENT_HELLO, P::new().u32(hash).string(VERSION));
    cl.expect(CLIENT_HELLO_RESP, P::new());
    c.event("client-connected", |e| e.get("remote_address").is_some());
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn each_hostile_input_gets_its_eject_code_and_event_and_no_one_else_is_hurt() {
    let mut c = start(&[
        "relocate: false, limits: (max_datagram_bytes: 1024, max_zones_per_interest: 4)",
        "add_interest: \"disabled\"",
        "add_interest: \"visible\"",
        "heartbeat_timeout_ms: 300, limits: (hello_timeout_ms: 300, max_datagrams_per_second: 20)",
    ]);
    let mut bystander = c.client(0);
    c.establish(&mut bystander);
    let login = c.field("LoginManager", "login");
    let check = c.field("LoginManager", "check");
    let secret = c.field("LoginManager", "secret");
    let set_pos = c.field("Avatar", "setPos");

    // Framing and message types.
    let mut cl = Client::connect(c.ports[0]);
    cl.m.send(&frame(&[]));
    cl.expect_eject(CLIENT_DISCONNECT_TRUNCATED_DATAGRAM);

    let mut cl = c.client(0);
    cl.m.send(&frame(&[3]));
    cl.expect_eject(CLIENT_DISCONNECT_TRUNCATED_DATAGRAM);
    eject_event(&c, CLIENT_DISCONNECT_TRUNCATED_DATAGRAM, Some(cl.channel));

    let mut cl = c.client(0);
    cl.send(0x1337, P::new().u64(0x3141_5926_5358_9793));
    cl.expect_eject(CLIENT_DISCONNECT_INVALID_MSGTYPE);
    eject_event(&c, CLIENT_DISCONNECT_INVALID_MSGTYPE, Some(cl.channel));

    let mut cl = c.client(0);
    cl.send(CLIENT_HEARTBEAT, P::new().u8(0));
    cl.expect_eject(CLIENT_DISCONNECT_OVERSIZED_DATAGRAM);

    let mut cl = c.client(0);
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(UD).u16(login).string(&"x".repeat(2000)),
    );
    cl.expect_eject(CLIENT_DISCONNECT_OVERSIZED_DATAGRAM);
    eject_event(&c, CLIENT_DISCONNECT_OVERSIZED_DATAGRAM, Some(cl.channel));

    // Too large to route once wrapped in an internal header (default client limit).
    let mut cl = c.client(1);
    let fill = 65535 - 2 - 4 - 2 - 2;
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(UD).u16(login).string(&"F".repeat(fill)),
    );
    cl.expect_eject(CLIENT_DISCONNECT_OVERSIZED_DATAGRAM);

    // Objects and fields.
    let mut cl = c.client(0);
    c.establish(&mut cl);
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(0xDECA_FBAD).u16(login).string("anyone?"),
    );
    cl.expect_eject(CLIENT_DISCONNECT_MISSING_OBJECT);
    let e = eject_event(&c, CLIENT_DISCONNECT_MISSING_OBJECT, Some(cl.channel));
    assert_eq!(e.get("doid"), Some(0xDECA_FBADu32.to_string()));

    let mut cl = c.client(0);
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(UD_PRIVATE).u16(login).string("let me in"),
    );
    cl.expect_eject(CLIENT_DISCONNECT_ANONYMOUS_VIOLATION);
    eject_event(&c, CLIENT_DISCONNECT_ANONYMOUS_VIOLATION, Some(cl.channel));

    let mut cl = c.client(0);
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(UD).u16(set_pos).i16(1).i16(2),
    );
    cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_FIELD);

    let mut cl = c.client(0);
    cl.send(CLIENT_OBJECT_SET_FIELD, P::new().u32(UD).u16(secret).u32(7));
    cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_FIELD);
    let e = eject_event(&c, CLIENT_DISCONNECT_FORBIDDEN_FIELD, Some(cl.channel));
    assert_eq!(e.get("field").as_deref(), Some("secret"));
    assert_eq!(e.get("doid"), Some(UD.to_string()));

    let mut cl = c.client(0);
    cl.send(CLIENT_OBJECT_SET_FIELD, P::new().u32(UD).u16(check).u8(11));
    cl.expect_eject(CLIENT_DISCONNECT_FIELD_CONSTRAINT);
    eject_event(&c, CLIENT_DISCONNECT_FIELD_CONSTRAINT, Some(cl.channel));

    let mut cl = c.client(0);
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(UD).u16(login).string("caf\u{e9}"),
    );
    cl.expect_eject(CLIENT_DISCONNECT_FIELD_CONSTRAINT);

    let mut cl = c.client(0);
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(UD).u16(login).u16(100).u32(0),
    );
    cl.expect_eject(CLIENT_DISCONNECT_TRUNCATED_DATAGRAM);

    // Location and interests.
    let mut cl = c.client(0);
    c.establish(&mut cl);
    cl.send(CLIENT_OBJECT_LOCATION, P::new().u32(UD).u32(1).u32(2));
    cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_RELOCATE);
    eject_event(&c, CLIENT_DISCONNECT_FORBIDDEN_RELOCATE, Some(cl.channel));

    let mut cl = c.client(0);
    c.establish(&mut cl);
    cl.send(CLIENT_REMOVE_INTEREST, P::new().u32(1).u16(9));
    cl.expect_eject(CLIENT_DISCONNECT_GENERIC);

    let mut cl = c.client(0);
    c.establish(&mut cl);
    let mut p = P::new().u32(1).u16(1).u32(SHARD).u16(5);
    for z in 0..5 {
        p = p.u32(z);
    }
    cl.send(CLIENT_ADD_INTEREST_MULTIPLE, p);
    cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_INTEREST);

    let mut cl = c.client(1);
    c.establish(&mut cl);
    cl.send(
        CLIENT_ADD_INTEREST,
        P::new().u32(1).u16(1).u32(SHARD).u32(2),
    );
    cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_INTEREST);
    eject_event(&c, CLIENT_DISCONNECT_FORBIDDEN_INTEREST, Some(cl.channel));

    let mut cl = c.client(2);
    c.establish(&mut cl);
    cl.send(
        CLIENT_ADD_INTEREST,
        P::new().u32(1).u16(1).u32(SHARD).u32(2),
    );
    cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_INTEREST);

    // Time and rate limits.
    let mut cl = Client::connect(c.ports[3]);
    cl.expect_eject(CLIENT_DISCONNECT_NO_HELLO);
    eject_event(&c, CLIENT_DISCONNECT_NO_HELLO, None);

    let mut cl = Client::connect(c.ports[3]);
    cl.hello(&c);
    cl.expect_eject(CLIENT_DISCONNECT_NO_HEARTBEAT);
    c.event("client-ejected", |e| {
        e.get("reason_code").as_deref() == Some("345")
    });

    let mut cl = Client::connect(c.ports[3]);
    cl.hello(&c);
    for _ in 0..40 {
        cl.send(CLIENT_HEARTBEAT, P::new());
    }
    cl.expect_eject(129);
    eject_event(&c, 129, None);

    // The bystander saw none of it and still works.
    c.sync(&mut bystander);
    bystander.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(UD).u16(login).string("still here"),
    );
    let got = c.ai_expect(STATESERVER_OBJECT_SET_FIELD);
    assert_eq!(got.sender, bystander.channel);
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn a_client_logs_in_opens_interest_sees_objects_and_updates_and_owns_an_avatar() {
    let mut c = start(&["relocate: true"]);
    let set_pos = c.field("Avatar", "setPos");
    let set_secret = c.field("Avatar", "setSecret");
    let set_owner_only = c.field("Avatar", "setOwnerOnly");
    let set_name = c.field("Avatar", "setName");
    let avatar = c.class("Avatar");
    c.avatar(20_001, 2, "one");
    c.avatar(20_002, 2, "two");
    c.avatar(20_009, 3, "elsewhere");

    let mut cl = c.client(0);
    c.establish(&mut cl);
    cl.send(
        CLIENT_ADD_INTEREST,
        P::new().u32(7).u16(1).u32(SHARD).u32(2),
    );
    let mut entered = BTreeSet::new();
    loop {
        let (t, p) = cl.recv().expect("interest answers");
        match t {
            CLIENT_ENTER_OBJECT_REQUIRED | CLIENT_ENTER_OBJECT_REQUIRED_OTHER => {
                let doid = u32::from_le_bytes(p[0..4].try_into().unwrap());
                assert_eq!(&p[4..12], &P::new().u32(SHARD).u32(2).0[..]);
                assert_eq!(u16::from_le_bytes([p[12], p[13]]), avatar);
                entered.insert(doid);
            }
            CLIENT_DONE_INTEREST_RESP => {
                assert_eq!(p, P::new().u32(7).u16(1).0);
                break;
            }
            other => panic!("unexpected client message {other}"),
        }
    }
    assert_eq!(entered, BTreeSet::from([20_001, 20_002]));

    // A broadcast update reaches the client; a clsend update reaches the AI.
    c.ai.send(&dg(
        &[20_001],
        AI,
        STATESERVER_OBJECT_SET_FIELD,
        &P::new().u32(20_001).u16(set_pos).i16(5).i16(-6).0,
    ));
    cl.expect(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(20_001).u16(set_pos).i16(5).i16(-6),
    );
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(20_002).u16(set_pos).i16(1).i16(1),
    );
    let got = c.ai_expect(STATESERVER_OBJECT_SET_FIELD);
    assert_eq!(got.sender, cl.channel);
    assert_eq!(
        got.payload,
        P::new().u32(20_002).u16(set_pos).i16(1).i16(1).0
    );

    // An object arriving later enters; one moving out leaves.
    c.avatar(20_003, 2, "three");
    let (t, p) = cl.recv().unwrap();
    assert!(t == CLIENT_ENTER_OBJECT_REQUIRED || t == CLIENT_ENTER_OBJECT_REQUIRED_OTHER);
    assert_eq!(&p[0..4], &20_003u32.to_le_bytes());
    c.ai.send(&dg(
        &[20_003],
        AI,
        STATESERVER_OBJECT_SET_LOCATION,
        &P::new().u32(SHARD).u32(3).0,
    ));
    cl.expect(CLIENT_OBJECT_LEAVING, P::new().u32(20_003));

    // Ownership: the owner view, ownsend fields, relocation of an owned object.
    c.ai.send(&dg(
        &[20_002],
        AI,
        STATESERVER_OBJECT_SET_OWNER,
        &P::new().u64(cl.channel).0,
    ));
    let (t, p) = cl.recv().unwrap();
    assert!(
        t == CLIENT_ENTER_OBJECT_REQUIRED_OWNER || t == CLIENT_ENTER_OBJECT_REQUIRED_OTHER_OWNER,
        "{t}"
    );
    assert_eq!(&p[0..4], &20_002u32.to_le_bytes());
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(20_002).u16(set_owner_only).u16(9),
    );
    let got = c.ai_expect(STATESERVER_OBJECT_SET_FIELD);
    assert_eq!(
        got.payload,
        P::new().u32(20_002).u16(set_owner_only).u16(9).0
    );
    cl.send(
        CLIENT_OBJECT_LOCATION,
        P::new().u32(20_002).u32(SHARD).u32(4),
    );
    // The StateServer moves it (the client, which asked, is not told again, as on astrond).
    let got = c.ai_expect(STATESERVER_OBJECT_CHANGING_LOCATION);
    assert_eq!(got.sender, cl.channel);
    assert_eq!(
        &got.payload[..12],
        &P::new().u32(20_002).u32(SHARD).u32(4).0[..]
    );

    // The server declares an object and makes a field sendable.
    c.control(
        &mut cl,
        CLIENTAGENT_DECLARE_OBJECT,
        P::new().u32(20_009).u16(avatar),
    );
    c.control(
        &mut cl,
        CLIENTAGENT_SET_FIELDS_SENDABLE,
        P::new().u32(20_009).u16(1).u16(set_secret),
    );
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(20_009).u16(set_secret).u32(77),
    );
    let got = c.ai_expect(STATESERVER_OBJECT_SET_FIELD);
    assert_eq!(got.payload, P::new().u32(20_009).u16(set_secret).u32(77).0);

    // Removing the interest: the objects leave, then the answer.
    cl.send(CLIENT_REMOVE_INTEREST, P::new().u32(8).u16(1));
    cl.expect(CLIENT_OBJECT_LEAVING, P::new().u32(20_001));
    cl.expect(CLIENT_OBJECT_LEAVING, P::new().u32(20_002));
    cl.expect(CLIENT_DONE_INTEREST_RESP, P::new().u32(8).u16(1));

    // A non-clsend field is refused, and the AI never hears it.
    cl.send(
        CLIENT_OBJECT_SET_FIELD,
        P::new().u32(20_002).u16(set_name).string("hacked"),
    );
    cl.expect_eject(CLIENT_DISCONNECT_FORBIDDEN_FIELD);
    c.ai.expect_none();
}

#[test]
fn server_side_controls_act_on_the_client() {
    let mut c = start(&[""]);
    let avatar_class = c.class("Avatar");
    c.avatar(20_001, 2, "one");
    let mut cl = c.client(0);
    c.establish(&mut cl);

    // SEND_DATAGRAM passes bytes through untouched.
    let raw = payload(0xABCD, P::new().string("raw bytes"));
    c.ai.send(&dg(
        &[cl.channel],
        AI,
        CLIENTAGENT_SEND_DATAGRAM,
        &P::new().u16(raw.len() as u16 - 2).bytes(&raw[2..]).0,
    ));
    cl.expect(0xABCD, P::new().string("raw bytes"));

    // GET_NETWORK_ADDRESS.
    c.ai.send(&dg(
        &[cl.channel],
        AI,
        CLIENTAGENT_GET_NETWORK_ADDRESS,
        &P::new().u32(42).0,
    ));
    let got = c.ai_expect(CLIENTAGENT_GET_NETWORK_ADDRESS_RESP);
    let local = cl.m.s.local_addr().unwrap();
    let want = P::new()
        .u32(42)
        .string("127.0.0.1")
        .u16(local.port())
        .string("127.0.0.1")
        .u16(c.ports[0]);
    assert_eq!(got.payload, want.0);

    // A server-opened interest: the client is told, the caller hears it is done.
    c.ai.send(&dg(
        &[cl.channel],
        AI,
        CLIENTAGENT_ADD_INTEREST,
        &P::new().u16(5).u32(SHARD).u32(2).0,
    ));
    let (t, p) = cl.recv().unwrap();
    assert_eq!(t, CLIENT_ADD_INTEREST);
    assert_eq!(&p[4..], &P::new().u16(5).u32(SHARD).u32(2).0[..]);
    let (t, p) = cl.recv().unwrap();
    assert!(t == CLIENT_ENTER_OBJECT_REQUIRED || t == CLIENT_ENTER_OBJECT_REQUIRED_OTHER);
    assert_eq!(&p[0..4], &20_001u32.to_le_bytes());
    assert_eq!(u16::from_le_bytes([p[12], p[13]]), avatar_class);
    let (t, _) = cl.recv().unwrap();
    assert_eq!(t, CLIENT_DONE_INTEREST_RESP);
    let got = c.ai_expect(CLIENTAGENT_DONE_INTEREST_RESP);
    assert_eq!(got.payload, P::new().u64(cl.channel).u16(5).0);

    // SET_CLIENT_ID: the new channel is the sender and is listened to; the old one is not.
    let old = cl.channel;
    c.control(
        &mut cl,
        CLIENTAGENT_SET_CLIENT_ID,
        P::new().u64(777_000_111),
    );
    c.control(
        &mut cl,
        CLIENTAGENT_SET_CLIENT_ID,
        P::new().u64(777_000_222),
    );
    cl.channel = c.identify(&mut cl);
    assert_eq!(cl.channel, 777_000_222);
    c.ai.send(&dg(
        &[777_000_111],
        AI,
        CLIENTAGENT_EJECT,
        &P::new().u16(1).string("old").0,
    ));
    c.sync(&mut cl);

    // OPEN_CHANNEL / CLOSE_CHANNEL.
    c.control(&mut cl, CLIENTAGENT_OPEN_CHANNEL, P::new().u64(66_778_899));
    c.control(&mut cl, CLIENTAGENT_CLOSE_CHANNEL, P::new().u64(old));
    c.ai.send(&dg(
        &[old],
        AI,
        CLIENTAGENT_EJECT,
        &P::new().u16(2).string("closed").0,
    ));
    cl.channel = 66_778_899;
    c.sync(&mut cl);
    c.ai.send(&dg(
        &[66_778_899],
        AI,
        CLIENTAGENT_EJECT,
        &P::new().u16(4321).string("by the new channel").0,
    ));
    cl.expect_eject(4321);
    c.event("client-ejected", |e| {
        e.get("reason_code").as_deref() == Some("4321")
    });

    // DROP: closed with no eject.
    let mut cl = c.client(0);
    c.ai.send(&dg(&[cl.channel], AI, CLIENTAGENT_DROP, &[]));
    assert!(cl.m.closed_within(WAIT));
}

#[test]
fn a_departing_client_fires_its_post_removes_and_deletes_its_session_objects() {
    let mut c = start(&[""]);
    c.avatar(20_004, 2, "mine");
    let mut cl = c.client(0);
    c.establish(&mut cl);
    let bye = dg(&[AI], AI, 4242, b"bye");
    c.control(
        &mut cl,
        CLIENTAGENT_ADD_POST_REMOVE,
        P::new().u16(bye.len() as u16 - 2).bytes(&bye[2..]),
    );
    c.control(
        &mut cl,
        CLIENTAGENT_ADD_SESSION_OBJECT,
        P::new().u32(20_004),
    );
    cl.send(CLIENT_DISCONNECT, P::new());
    let (mut deleted, mut post_removed) = (false, false);
    while !(deleted && post_removed) {
        let got = decode(
            &c.ai
                .recv_within(WAIT)
                .expect("the delete and the post-remove"),
        );
        if got.msgtype == STATESERVER_OBJECT_DELETE_RAM {
            assert_eq!(got.payload, P::new().u32(20_004).0);
            deleted = true;
        } else if got.msgtype == 4242 {
            assert_eq!(got.payload, b"bye");
            post_removed = true;
        }
    }
    c.event("client-disconnected", |_| true);

    // A session object deleted under a client ejects it with 153.
    c.avatar(20_005, 2, "session");
    let mut cl = c.client(0);
    c.establish(&mut cl);
    cl.send(
        CLIENT_ADD_INTEREST,
        P::new().u32(1).u16(1).u32(SHARD).u32(2),
    );
    loop {
        let (t, _) = cl.recv().unwrap();
        if t == CLIENT_DONE_INTEREST_RESP {
            break;
        }
    }
    c.control(
        &mut cl,
        CLIENTAGENT_ADD_SESSION_OBJECT,
        P::new().u32(20_005),
    );
    c.ai.send(&dg(
        &[20_005],
        AI,
        STATESERVER_OBJECT_DELETE_RAM,
        &P::new().u32(20_005).0,
    ));
    cl.expect_eject(CLIENT_DISCONNECT_SESSION_OBJECT_DELETED);
    let _ = &mut c.probe;
}

#[test]
fn capacity_and_per_address_limits_refuse_with_code_1() {
    let c = start(&[
        "channels: (min: 2000000, max: 2000001)",
        "limits: (max_connections_per_address: 2)",
    ]);
    let mut a = Client::connect(c.ports[0]);
    a.hello(&c);
    let mut b = Client::connect(c.ports[0]);
    b.hello(&c);
    let mut full = Client::connect(c.ports[0]);
    let reason = full.expect_eject(CLIENT_DISCONNECT_GENERIC);
    assert!(reason.contains("capacity"), "{reason}");
    // A freed channel is handed out again.
    drop(a);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = Client::connect(c.ports[0]);
        again.send(CLIENT_HELLO, P::new().u32(c.dc.hash()).string(VERSION));
        match again.recv() {
            Some((t, _)) if t == CLIENT_HELLO_RESP => break,
            _ => assert!(Instant::now() < deadline, "the freed channel is reused"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut x = Client::connect(c.ports[1]);
    x.hello(&c);
    let mut y = Client::connect(c.ports[1]);
    y.hello(&c);
    let mut z = Client::connect(c.ports[1]);
    z.expect_eject(CLIENT_DISCONNECT_GENERIC);
}

#[test]
fn ten_thousand_idle_or_broken_connections_do_not_stop_a_real_login() {
    let c = start(&[
        "channels: (min: 3000000, max: 3100000), limits: (max_connections_per_address: 0)",
    ]);
    // Two thirds of them stay open here and in otpd: lift this process's limit on open files
    // (otpd lifts its own) and say so if the machine allows fewer.
    let hard = unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_max
    };
    let total = 10_000usize.min((hard as usize).saturating_sub(1_000) * 3 / 2);
    assert!(
        total >= 3_000,
        "the open-file limit ({hard}) is too low for this test"
    );
    if total < 10_000 {
        eprintln!("note: the open-file limit ({hard}) allows {total} connections, not 10,000");
    }
    let mut held = Vec::new();
    for i in 0..total {
        let s = std::net::TcpStream::connect(("127.0.0.1", c.ports[0])).unwrap();
        match i % 3 {
            0 => held.push(s),
            1 => {
                let mut s = s;
                std::io::Write::write_all(&mut s, &[7]).unwrap();
                held.push(s);
            }
            _ => drop(s),
        }
    }
    let started = Instant::now();
    let mut cl = Client::connect(c.ports[0]);
    cl.hello(&c);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "login took {:?} behind 10,000 connections",
        started.elapsed()
    );
    drop(held);
    let mut cl2 = Client::connect(c.ports[0]);
    cl2.hello(&c);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_while_its_zone_mates_keep_receiving() {
    let mut c = start(&["write_buffer_size: 1048576, write_timeout_ms: 60000"]);
    let blob = c.field("Avatar", "setBlob");
    c.avatar(20_001, 2, "loud");
    let open = |c: &mut Cluster| {
        let mut cl = c.client(0);
        c.establish(&mut cl);
        cl.send(
            CLIENT_ADD_INTEREST,
            P::new().u32(1).u16(1).u32(SHARD).u32(2),
        );
        loop {
            let (t, _) = cl.recv().unwrap();
            if t == CLIENT_DONE_INTEREST_RESP {
                break;
            }
        }
        cl
    };
    let slow = open(&mut c);
    let mut reader = open(&mut c);
    let chunk = vec![0x55u8; 60_000];
    // 24 MB in all: well past what the kernel buffers of the stalled client hold. Each update
    // is sent once the reading client has the one before, so only the stalled one falls behind.
    for i in 0..400 {
        c.ai.send(&dg(
            &[20_001],
            AI,
            STATESERVER_OBJECT_SET_FIELD,
            &P::new().u32(20_001).u16(blob).u16(60_000).bytes(&chunk).0,
        ));
        let (t, p) = reader
            .recv()
            .unwrap_or_else(|| panic!("update {i} reaches the reading client"));
        assert_eq!(t, CLIENT_OBJECT_SET_FIELD);
        assert_eq!(p.len(), 4 + 2 + 2 + 60_000);
    }
    c.event("client-lost", |e| {
        e.get("sender") == Some(format!("Client:{}", slow.channel))
            && e.get("reason")
                .is_some_and(|r| r.contains("write_buffer_size"))
    });
    let mut slow = slow;
    assert!(slow.m.closed_within(Duration::from_secs(30)));
}

#[test]
fn proxy_protocol_v1_and_v2_give_the_real_address_and_tlvs() {
    let mut c = start(&["haproxy: true"]);
    // v2, IPv6, with TLVs.
    let tlv = b"\x01\x00\x05hello";
    let mut body = Vec::new();
    body.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    body.extend_from_slice(
        &"2001:db8:dead:beef::feed:1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    body.extend_from_slice(&54321u16.to_be_bytes());
    body.extend_from_slice(&12345u16.to_be_bytes());
    body.extend_from_slice(tlv);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x21".to_vec();
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    let cl = c.proxied_client(&header);
    let want = P::new()
        .u32(1)
        .string("2001:db8::1")
        .u16(54321)
        .string("2001:db8:dead:beef::feed:1")
        .u16(12345);
    assert_eq!(c.network_address(&cl, 1), want.0);
    c.ai.send(&dg(
        &[cl.channel],
        AI,
        CLIENTAGENT_GET_TLVS,
        &P::new().u32(2).0,
    ));
    let got = c.ai_expect(CLIENTAGENT_GET_TLVS_RESP);
    assert_eq!(
        got.payload,
        P::new().u32(2).u16(tlv.len() as u16).bytes(tlv).0
    );

    // v1, IPv4.
    let cl = c.proxied_client(b"PROXY TCP4 203.0.113.5 198.51.100.77 5000 7198\r\n");
    let got = c.network_address(&cl, 3);
    let want = P::new()
        .u32(3)
        .string("203.0.113.5")
        .u16(5000)
        .string("198.51.100.77")
        .u16(7198);
    assert_eq!(got, want.0);

    // Garbage instead of a header: closed.
    let mut bad = Md::connect(c.ports[0]);
    bad.send(b"GET / HTTP/1.1\r\n\r\n");
    assert!(bad.closed_within(WAIT));
    let _ = &mut c.probe;
}

#[test]
fn a_tls_listener_speaks_the_protocol_inside_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let c = start(&[&format!(
        "tls: Some((certificate: \"{}\", key: \"{}\"))",
        cert_path.display(),
        key_path.display()
    )]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", c.ports[0])).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    use std::io::{Read, Write};
    tls.write_all(&payload(
        CLIENT_HELLO,
        P::new().u32(c.dc.hash()).string(VERSION),
    ))
    .unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [2, 0, 2, 0], "HELLO_RESP through TLS");
    tls.write_all(&payload(0x1337, P::new())).unwrap();
    let mut head = [0u8; 6];
    tls.read_exact(&mut head).unwrap();
    assert_eq!(u16::from_le_bytes([head[2], head[3]]), CLIENT_EJECT);
    assert_eq!(
        u16::from_le_bytes([head[4], head[5]]),
        CLIENT_DISCONNECT_INVALID_MSGTYPE
    );

    // A plaintext client on the TLS port gets nowhere and is closed.
    let mut plain = Md::connect(c.ports[0]);
    plain.send(&payload(
        CLIENT_HELLO,
        P::new().u32(c.dc.hash()).string(VERSION),
    ));
    assert!(plain.closed_within(WAIT));
}

#[test]
fn clients_by_state_and_ejects_by_code_show_in_the_metrics_and_otpd_status() {
    let metrics = free_port();
    let mut c = start_top(&[""], &format!("metrics: Some(\"127.0.0.1:{metrics}\"),"));
    wait_for_port(metrics);
    let scrape = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let value = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    let mut anonymous = c.client(0);
    let mut established = c.client(0);
    c.establish(&mut established);
    let mut bad = c.client(0);
    bad.send(0x1337, P::new());
    bad.expect_eject(CLIENT_DISCONNECT_INVALID_MSGTYPE);
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape();
        let anon = value(&text, "otpd_clients{listener=\"127.0.0.1:");
        let ok = value(&text, "otpd_client_ejects_total") == 1.0
            && text.contains("code=\"108\"")
            && text
                .lines()
                .any(|l| l.contains("state=\"established\"") && l.ends_with(" 1"))
            && text
                .lines()
                .any(|l| l.contains("state=\"anonymous\"") && l.ends_with(" 1"))
            && anon == 2.0
            && value(&text, "otpd_client_connections_total") == 3.0;
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the clients: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::process::Command::new(otpd_bin())
        .args(["status", &format!("127.0.0.1:{metrics}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 clients (0 new, 1 anonymous, 1 established), 1 ejected"),
        "{text}"
    );
    c.sync(&mut anonymous);
}

#[test]
fn a_channel_opened_for_a_client_hears_the_very_next_datagram() {
    let mut c = start(&[""]);
    for round in 0..20u64 {
        let mut cl = c.client(0);
        // SET_CLIENT_ID then, at once, a datagram to the new channel: delivered.
        let id = 888_000_000 + round;
        c.ai.send(&dg(
            &[cl.channel],
            AI,
            CLIENTAGENT_SET_CLIENT_ID,
            &P::new().u64(id).0,
        ));
        let raw = payload(0xABCD, P::new().u64(id));
        c.ai.send(&dg(
            &[id],
            AI,
            CLIENTAGENT_SEND_DATAGRAM,
            &P::new().u16(raw.len() as u16 - 2).bytes(&raw[2..]).0,
        ));
        cl.expect(0xABCD, P::new().u64(id));
        // OPEN_CHANNEL then, at once, an eject through it.
        let extra = 999_000_000 + round;
        c.ai.send(&dg(
            &[id],
            AI,
            CLIENTAGENT_OPEN_CHANNEL,
            &P::new().u64(extra).0,
        ));
        c.ai.send(&dg(
            &[extra],
            AI,
            CLIENTAGENT_EJECT,
            &P::new().u16(4000).string("via the new channel").0,
        ));
        cl.expect_eject(4000);
    }
}

#[test]
fn flush_delay_coalesces_a_clients_output_but_not_its_eject() {
    let mut c = start(&["flush_delay_ms: 700"]);
    let mut cl = c.client(0);
    let raw = |t: u16| payload(t, P::new().string("coalesced"));
    let pass = |c: &mut Cluster, cl: &Client, t: u16| {
        let r = raw(t);
        c.ai.send(&dg(
            &[cl.channel],
            AI,
            CLIENTAGENT_SEND_DATAGRAM,
            &P::new().u16(r.len() as u16 - 2).bytes(&r[2..]).0,
        ));
    };
    let t0 = Instant::now();
    pass(&mut c, &cl, 0xAB01);
    std::thread::sleep(Duration::from_millis(100));
    pass(&mut c, &cl, 0xAB02);
    // Nothing is written until the delay has passed, then both datagrams go in one write.
    cl.m.s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    let n = cl.m.s.peek(&mut buf).unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "the first datagram waited {waited:?}, less than flush_delay_ms"
    );
    assert_eq!(n, 2 * raw(0).len(), "both datagrams arrive in one write");
    cl.expect(0xAB01, P::new().string("coalesced"));
    cl.expect(0xAB02, P::new().string("coalesced"));

    // An eject is written at once: the client reads it well before the delay.
    let t1 = Instant::now();
    c.ai.send(&dg(
        &[cl.channel],
        AI,
        CLIENTAGENT_EJECT,
        &P::new().u16(4321).string("bye").0,
    ));
    cl.expect_eject(4321);
    assert!(
        t1.elapsed() < Duration::from_millis(500),
        "the eject waited {:?}",
        t1.elapsed()
    );
}

/// Issue 17, item 12: a 60 KB version string is quoted in the eject reason, the log and the
/// event clipped to a few hundred bytes, not copied whole (1,000 such connections wrote 65 MB).
#[test]
fn a_huge_version_string_is_not_copied_into_logs_and_events() {
    let c = start(&[""]);
    let mut cl = Client::connect(c.ports[0]);
    let version = "v".repeat(60_000);
    cl.send(CLIENT_HELLO, P::new().u32(c.dc.hash()).string(&version));
    let reason = cl.expect_eject(124);
    assert!(reason.len() <= 256, "{} bytes of reason", reason.len());
    let e = c.event_of(&["client-ejected", "client-ejected-security"], |e| {
        e.get("reason_code").is_some_and(|c| c == "124")
    });
    let msg = e.get("reason_msg").unwrap_or_default();
    assert!(msg.len() <= 256, "{} bytes in the event", msg.len());
}

/// A client behind the proxy: `header` (a PROXY v1 line) sent first, then HELLO.
fn proxied_hello(c: &Cluster, port: u16, src: &str) -> Client {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let header = format!("PROXY TCP4 {src} 198.51.100.77 5000 7198\r\n");
    std::io::Write::write_all(&mut s, header.as_bytes()).unwrap();
    let mut cl = Client {
        m: Md::from_stream(s),
        channel: 0,
    };
    cl.hello(c);
    cl
}

/// Issue 17, item 14: behind a proxy, `max_connections_per_address` counts the address each
/// PROXY header gives. Five players behind one proxy, with a limit of 2, all get in; a third
/// connection of one player's address is refused. Before, the proxy's own address was counted,
/// and the third player was refused.
#[test]
fn behind_a_proxy_the_per_address_limit_counts_the_clients_address() {
    let c = start(&["haproxy: true, limits: (max_connections_per_address: 2)"]);
    let port = c.ports[0];
    let players: Vec<Client> = (1..=5)
        .map(|i| proxied_hello(&c, port, &format!("203.0.113.{i}")))
        .collect();
    let second = proxied_hello(&c, port, "203.0.113.1");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"PROXY TCP4 203.0.113.1 198.51.100.77 5000 7198\r\n",
    )
    .unwrap();
    let mut third = Client {
        m: Md::from_stream(s),
        channel: 0,
    };
    let reason = third.expect_eject(CLIENT_DISCONNECT_GENERIC);
    assert!(reason.contains("Too many connections"), "{reason}");
    drop((players, second));
}

/// Issue 17, item 14: PROXY headers are believed only from `proxy_from`. A peer not listed
/// (here: 127.0.0.1, when only 192.0.2.1 is) is refused before its header is read, with an
/// event; it cannot claim another address. Before, any peer's header was believed (and
/// `proxy_from` did not exist).
#[test]
fn a_proxy_header_from_an_unlisted_peer_is_refused() {
    let c = start(&["haproxy: true, proxy_from: [\"192.0.2.1\", \"10.0.0.0/8\"]"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.ports[0])).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"PROXY TCP4 203.0.113.9 198.51.100.77 5000 7198\r\n",
    )
    .unwrap();
    let mut m = Md::from_stream(s);
    let hello = {
        let mut body = CLIENT_HELLO.to_le_bytes().to_vec();
        body.extend_from_slice(&P::new().u32(c.dc.hash()).string(VERSION).0);
        frame(&body)
    };
    let _ = std::io::Write::write_all(&mut m.s, &hello);
    assert!(m.closed_within(WAIT), "refused");
    c.event("client-proxy-refused", |e| {
        e.get("remote_address")
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    });
}

/// Issue 17, item 9: with a low open-file limit (otpd under `prlimit --nofile=160`), 300 idle
/// client connections take what the clients may have (the limit minus `reserved_fds`, 64
/// here) and no more; an MD participant can still connect and have datagrams routed to it.
/// Before, the clients took every descriptor and the MD listener could accept nobody.
#[test]
fn idle_clients_cannot_take_the_descriptors_md_participants_need() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no prlimit");
        return;
    }
    let dc = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/dc/client.dc")
        .canonicalize()
        .unwrap();
    let (md, ca) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.ron");
    std::fs::write(
        &path,
        format!(
            "(cores: 2, pin_cores: false, reserved_fds: 64, dc_files: [\"{}\"], \
             messagedirector: (bind: Some(\"127.0.0.1:{md}\")), roles: [ClientAgent((bind: \
             \"127.0.0.1:{ca}\", version: \"{VERSION}\", channels: (min: 1000000, max: 1099999), \
             limits: (max_connections_per_address: 0)))])",
            dc.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=160:160")
        .arg(otpd_bin())
        .arg("--cluster")
        .arg(&path)
        .arg("--log")
        .arg(dir.path().join("otpd.log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    wait_for_port(md);
    wait_for_port(ca);
    let mut clients = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", ca)) {
            clients.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "otpd still runs");
    let child = Kill(child);
    // Two participants: one listens on a channel, the other sends to it.
    let mut probe = Md::connect(md);
    let mut l = listener(md, &mut probe, &[777]);
    probe.send(&dg(&[777], 1, 1234, b"still routed"));
    let got = l
        .recv_within(WAIT)
        .expect("the MD routes for a new participant");
    assert!(got.ends_with(b"still routed"));
    let log = std::fs::read_to_string(dir.path().join("otpd.log")).unwrap_or_default();
    assert!(log.contains("reserved_fds"), "the refusals are logged");
    drop((clients, child));
}

/// An operator's system message (the admin API's CLIENTAGENT_ADMIN_MESSAGE on the all-clients
/// channel) reaches an Astron client as `system_message_field` set on its own avatar: the
/// object its channel names (account << 32 | avatar) and it owns. A client without such an
/// avatar is sent nothing; a field that cannot carry text is refused at start-up.
#[test]
fn a_system_message_reaches_an_astron_client_as_the_configured_field_on_its_avatar() {
    let mut c = start(&["system_message_field: Some(\"Avatar.setOwnerNote\")"]);
    let note = c.field("Avatar", "setOwnerNote");
    c.avatar(20_002, 2, "mine");
    let mut cl = c.client(0);
    let mut other = c.client(0);
    let channel = (77u64 << 32) | 20_002;
    c.control(&mut cl, CLIENTAGENT_SET_CLIENT_ID, P::new().u64(channel));
    cl.channel = channel;
    c.ai.send(&dg(
        &[20_002],
        AI,
        STATESERVER_OBJECT_SET_OWNER,
        &P::new().u64(channel).0,
    ));
    let (t, _) = cl.recv().unwrap();
    assert!(
        t == CLIENT_ENTER_OBJECT_REQUIRED_OWNER || t == CLIENT_ENTER_OBJECT_REQUIRED_OTHER_OWNER,
        "{t}"
    );
    c.ai.send(&dg(
        &[10],
        AI,
        CLIENTAGENT_ADMIN_MESSAGE,
        &P::new()
            .u8(0)
            .u64(0)
            .string("")
            .string("Maintenance at noon.")
            .0,
    ));
    cl.expect(
        CLIENT_OBJECT_SET_FIELD,
        P::new()
            .u32(20_002)
            .u16(note)
            .string("Maintenance at noon."),
    );
    assert!(
        other.m.recv_within(Duration::from_millis(300)).is_none(),
        "no avatar, nothing"
    );

    let dir = tempfile::tempdir().unwrap();
    let dc = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/dc/client.dc");
    for (field, complaint) in [
        ("Avatar.setLevel", "(string)"),
        ("Avatar.nothing", "no such field"),
        ("setName", "Class.field"),
    ] {
        let path = dir.path().join("cluster.ron");
        std::fs::write(
            &path,
            format!(
                "(cores: 1, pin_cores: false, dc_files: [\"{}\"], messagedirector: (bind: Some(\"127.0.0.1:{}\")), \
                 roles: [ClientAgent((bind: \"127.0.0.1:{}\", version: \"v\", channels: (min: 5000, max: 5999), \
                 system_message_field: Some(\"{field}\")))])",
                dc.display(),
                free_port(),
                free_port()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(otpd_bin())
            .arg("--cluster")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{field}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("system_message_field") && err.contains(complaint),
            "{field}: {err}"
        );
    }
}

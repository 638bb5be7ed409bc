//! Test support (not used by the server): a fuzz harness for the ClientAgent's [`Session`].
//!
//! [`run`] reads arbitrary bytes as a script of operations on one session of a ClientAgent built
//! over `tests/dc/client.dc` with two UberDOGs (an anonymous one and a private one), checks the
//! session's invariants after every step, then closes and drops the session and checks that
//! nothing leaked. It panics only when an invariant is broken (that is the finding); any input
//! is otherwise accepted. `tests/client_fuzz.rs` runs it on pseudo-random inputs and a few
//! hand-made sequences; `fuzz/fuzz_targets/client_session.rs` is the cargo-fuzz target.
//!
//! # Script format
//!
//! Byte 0 and byte 1 choose the configuration (see [`cfg`]); the rest is a sequence of
//! operations, each one op byte (`op % 32`, see [`op`]) followed by its arguments. Reading past
//! the end yields zeros, so every input is a valid script. Most arguments are read through a
//! "picker" that maps one byte to a small set of values that connect (known doids, parents,
//! the contexts of the interest requests the session actually sent, ...); the byte `0xff`
//! always means "a literal follows" (u16/u32/u64 little-endian as the argument needs), which
//! is what [`Script`] uses to write exact sequences.

use otp_wire::channels::{BCHAN_CLIENTS, CONTROL_CHANNEL};
use otp_wire::msgtypes::*;
use otp_wire::InternalDatagram;
use otpd::clientagent::session::{
    Close, PostRemove, Session, SessionOut, STATE_ESTABLISHED, STATE_NEW,
};
use otpd::clientagent::ClientAgent;
use otpd::config::{ClientAgentConfig, UberDog};
use otpd::roles::Schema;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The schema every fuzzed session runs over.
const CLIENT_DC: &str = include_str!("../../tests/dc/client.dc");

/// The version string clients must say in their HELLO.
pub const VERSION: &str = "fuzz-v1";
/// An anonymous UberDOG (LoginManager): clients may update it before they are established.
pub const UD_ANON: u32 = 4665;
/// A private UberDOG (LoginManager).
pub const UD_PRIVATE: u32 = 4666;
/// Shards: parents that interests open zones under.
pub const SHARDS: [u32; 2] = [10_000, 10_001];
/// Avatars: the objects entering interests and owned by the client.
pub const AVATARS: [u32; 4] = [100_001, 100_002, 100_003, 100_004];
/// The AI's channel: the usual sender of server messages.
pub const AI: u64 = 5_000;
/// The ClientAgent's channel range; the session gets the first one.
pub const CHANNEL_MIN: u64 = 1_000_000;
pub const CHANNEL_MAX: u64 = 1_000_003;

/// The configuration bytes.
pub mod cfg {
    // Byte 0.
    /// Bits 0-1: add_interest = enabled (0), visible (1, 3) or disabled (2).
    pub const INTEREST_MASK: u8 = 0b11;
    pub const INTEREST_ENABLED: u8 = 0;
    pub const INTEREST_VISIBLE: u8 = 1;
    pub const INTEREST_DISABLED: u8 = 2;
    /// relocate = true.
    pub const RELOCATE: u8 = 1 << 2;
    /// heartbeat_timeout_ms = 1000 (else no heartbeat timeout).
    pub const HEARTBEAT: u8 = 1 << 3;
    /// interest_timeout_ms = 0 (else 500).
    pub const INTEREST_TIMEOUT_ZERO: u8 = 1 << 4;
    /// 64 datagrams and 4096 bytes per second (else unlimited).
    pub const RATE_LIMITS: u8 = 1 << 5;
    /// hello_timeout_ms = 0 (else 2000).
    pub const NO_HELLO_TIMEOUT: u8 = 1 << 6;
    /// allow_utf8_strings = true.
    pub const UTF8: u8 = 1 << 7;
    // Byte 1.
    /// A proxy's health check (no connection events).
    pub const LOCAL_CHECK: u8 = 1;
    /// An IPv6 client address.
    pub const IPV6: u8 = 1 << 1;
    /// No address counted against max_connections_per_address.
    pub const NOT_ADMITTED: u8 = 1 << 2;
    // Bits 4-7: bytes of TLVs.
}

/// The operations (`op byte % 32`).
pub mod op {
    /// A client datagram of the next N bytes (N: u8, or 0xff then u16).
    pub const CLIENT_RAW: u8 = 0;
    /// A client datagram built from the bytes (1..=8).
    pub const CLIENT: u8 = 1;
    /// An internal datagram from the server built from the bytes (9..=22).
    pub const INTERNAL: u8 = 9;
    /// An internal datagram body of the next N bytes (N as for CLIENT_RAW).
    pub const INTERNAL_RAW: u8 = 23;
    /// Time passes (24..=26), then `on_time`: u8 scaled, 0xfe = to the next deadline exactly,
    /// 0xff then u32 milliseconds.
    pub const TIME: u8 = 24;
    /// The StateServer answers one of the session's interest requests: its count and objects
    /// (27..=30).
    pub const ANSWER: u8 = 27;
    /// The runtime ejects the client (`eject_now`): code (a picker), u8 flags (bit 0:
    /// security).
    pub const RUNTIME_EJECT: u8 = 31;
}

/// What happened in one run, for tests to assert on.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Operations run (not counting `on_closed`).
    pub steps: usize,
    /// The session's state at the end and the highest it reached.
    pub final_state: u16,
    pub max_state: u16,
    /// How the session ended itself, if it did.
    pub close: Option<Close>,
    /// Message types sent to the client, in order.
    pub to_client: Vec<u16>,
    /// Message types of internal datagrams sent into the cluster, in order (before on_closed).
    pub datagrams: Vec<u16>,
    /// Message types of internal datagrams sent by `on_closed`.
    pub on_closed: Vec<u16>,
    /// Post-remove additions and clears.
    pub post_removes: usize,
}

/// Runs the script in `data`; panics only if the session breaks an invariant.
pub fn run(data: &[u8]) {
    let _ = run_summary(data);
}

/// As [`run`], returning what happened.
pub fn run_summary(data: &[u8]) -> Summary {
    Harness::new(data).run()
}

/// The client.dc schema, parsed once.
/// The Unix time the harnesses' sessions start at (2025-11-24), whatever the machine's clock.
pub const FUZZ_UNIX_SECS: u64 = 1_764_000_000;

/// The wall clock a harness hands its ClientAgent: `FUZZ_UNIX_SECS` at `now`.
pub fn clock(now: Instant) -> otpd::clientagent::WallClock {
    otpd::clientagent::WallClock {
        at: now,
        unix: Duration::from_secs(FUZZ_UNIX_SECS),
    }
}

pub fn schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let dc = otp_dc::DcFile::parse_str("client.dc", CLIENT_DC)
                .expect("tests/dc/client.dc parses");
            Arc::new(Schema::new(dc))
        })
        .clone()
}

fn base_config() -> &'static ClientAgentConfig {
    static BASE: OnceLock<ClientAgentConfig> = OnceLock::new();
    BASE.get_or_init(|| {
        ron::from_str(&format!(
            "(bind: \"127.0.0.1:0\", version: \"{VERSION}\", \
             channels: (min: {CHANNEL_MIN}, max: {CHANNEL_MAX}), add_interest: \"enabled\", \
             relocate: true, heartbeat_timeout_ms: 1000, interest_timeout_ms: 500, \
             limits: (max_interests: 4, max_zones_per_interest: 6, max_zones_total: 10, \
                      max_pending_interests: 3, \
                      max_queued_per_interest: 5, max_datagrams_per_second: 64, \
                      max_bytes_per_second: 4096, max_connections_per_address: 2, \
                      hello_timeout_ms: 2000))"
        ))
        .expect("the fuzz ClientAgent configuration parses")
    })
}

fn config(a: u8) -> ClientAgentConfig {
    let mut c = base_config().clone();
    c.add_interest = match a & cfg::INTEREST_MASK {
        cfg::INTEREST_ENABLED => "enabled",
        cfg::INTEREST_DISABLED => "disabled",
        _ => "visible",
    }
    .into();
    c.relocate = a & cfg::RELOCATE != 0;
    if a & cfg::HEARTBEAT == 0 {
        c.heartbeat_timeout_ms = 0;
    }
    if a & cfg::INTEREST_TIMEOUT_ZERO != 0 {
        c.interest_timeout_ms = 0;
    }
    if a & cfg::RATE_LIMITS == 0 {
        c.limits.max_datagrams_per_second = 0;
        c.limits.max_bytes_per_second = 0;
    }
    if a & cfg::NO_HELLO_TIMEOUT != 0 {
        c.limits.hello_timeout_ms = 0;
    }
    c.limits.allow_utf8_strings = a & cfg::UTF8 != 0;
    c
}

fn uberdogs() -> [UberDog; 2] {
    [
        UberDog {
            id: UD_ANON,
            class: "LoginManager".into(),
            anonymous: true,
        },
        UberDog {
            id: UD_PRIVATE,
            class: "LoginManager".into(),
            anonymous: false,
        },
    ]
}

// ---- reading the script ----------------------------------------------------------------

/// The script's bytes; past the end, zeros.
pub struct Input<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

impl<'a> Input<'a> {
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }
    /// A length: u8, or 0xff then u16.
    pub fn len(&mut self) -> usize {
        match self.u8() {
            0xff => self.u16() as usize,
            b => b as usize,
        }
    }
}

/// A little-endian payload being built.
#[derive(Default)]
pub struct P(pub Vec<u8>);

impl P {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    pub fn blob(&mut self, v: &[u8]) -> &mut Self {
        let n = v.len().min(u16::MAX as usize);
        self.u16(n as u16).bytes(&v[..n])
    }
}

/// An interest request the session sent (STATESERVER_OBJECT_GET_ZONES_OBJECTS).
#[derive(Debug, Clone)]
pub struct Request {
    pub context: u32,
    pub parent: u32,
    pub zones: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Hello,
    Heartbeat,
    SetField,
    SetFields,
    Location,
    AddInterest,
    AddInterestMultiple,
    RemoveInterest,
    Disconnect,
    /// A clsend update of the anonymous UberDOG near the size limit: too large to route once
    /// wrapped for the MD (or over the byte rate).
    BigSetField,
    Other,
}

const CLIENT_KINDS: [ClientKind; 14] = [
    ClientKind::Hello,
    ClientKind::Heartbeat,
    ClientKind::Heartbeat,
    ClientKind::SetField,
    ClientKind::SetField,
    ClientKind::SetFields,
    ClientKind::Location,
    ClientKind::AddInterest,
    ClientKind::AddInterest,
    ClientKind::AddInterestMultiple,
    ClientKind::RemoveInterest,
    ClientKind::Disconnect,
    ClientKind::BigSetField,
    ClientKind::Other,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    SetState,
    AddInterest,
    AddInterestMultiple,
    RemoveInterest,
    EnterInterest,
    EnterInterestOther,
    ZonesCount,
    EnterLocation,
    EnterLocationOther,
    EnterOwner,
    EnterOwnerOther,
    ChangingLocation,
    ChangingOwner,
    DeleteRam,
    SetField,
    SetFields,
    Declare,
    Undeclare,
    AddSessionObject,
    RemoveSessionObject,
    SetFieldsSendable,
    GetTlvs,
    GetNetworkAddress,
    SetClientId,
    OpenChannel,
    CloseChannel,
    AddPostRemove,
    ClearPostRemoves,
    SendDatagram,
    Eject,
    Drop,
    Other,
}

const SERVER_KINDS: [ServerKind; 36] = [
    ServerKind::SetState,
    ServerKind::SetState,
    ServerKind::AddInterest,
    ServerKind::AddInterestMultiple,
    ServerKind::RemoveInterest,
    ServerKind::EnterInterest,
    ServerKind::EnterInterest,
    ServerKind::EnterInterestOther,
    ServerKind::ZonesCount,
    ServerKind::ZonesCount,
    ServerKind::EnterLocation,
    ServerKind::EnterLocation,
    ServerKind::EnterLocationOther,
    ServerKind::EnterOwner,
    ServerKind::EnterOwnerOther,
    ServerKind::ChangingLocation,
    ServerKind::ChangingOwner,
    ServerKind::DeleteRam,
    ServerKind::SetField,
    ServerKind::SetFields,
    ServerKind::Declare,
    ServerKind::Undeclare,
    ServerKind::AddSessionObject,
    ServerKind::RemoveSessionObject,
    ServerKind::SetFieldsSendable,
    ServerKind::GetTlvs,
    ServerKind::GetNetworkAddress,
    ServerKind::SetClientId,
    ServerKind::OpenChannel,
    ServerKind::CloseChannel,
    ServerKind::AddPostRemove,
    ServerKind::ClearPostRemoves,
    ServerKind::SendDatagram,
    ServerKind::Eject,
    ServerKind::Drop,
    ServerKind::Other,
];

/// What a step was, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Client,
    /// An internal datagram of this message type (None: unparseable).
    Internal(Option<u16>),
    Time,
    /// The runtime's `eject_now`.
    Runtime,
    /// The answer to a job (`Session::on_job_done`).
    Job,
}

/// Message types the session itself sends the client.
const TO_CLIENT: [u16; 15] = [
    CLIENT_HELLO_RESP,
    CLIENT_EJECT,
    CLIENT_ENTER_OBJECT_REQUIRED,
    CLIENT_ENTER_OBJECT_REQUIRED_OTHER,
    CLIENT_ENTER_OBJECT_REQUIRED_OWNER,
    CLIENT_ENTER_OBJECT_REQUIRED_OTHER_OWNER,
    CLIENT_OBJECT_SET_FIELD,
    CLIENT_OBJECT_SET_FIELDS,
    CLIENT_OBJECT_LEAVING,
    CLIENT_OBJECT_LEAVING_OWNER,
    CLIENT_OBJECT_LOCATION,
    CLIENT_DONE_INTEREST_RESP,
    CLIENT_ADD_INTEREST,
    CLIENT_ADD_INTEREST_MULTIPLE,
    CLIENT_REMOVE_INTEREST,
];

/// Message types the session sends into the cluster.
const TO_CLUSTER: [u16; 8] = [
    STATESERVER_OBJECT_SET_FIELD,
    STATESERVER_OBJECT_SET_FIELDS,
    STATESERVER_OBJECT_SET_LOCATION,
    STATESERVER_OBJECT_GET_ZONES_OBJECTS,
    STATESERVER_OBJECT_DELETE_RAM,
    CLIENTAGENT_DONE_INTEREST_RESP,
    CLIENTAGENT_GET_TLVS_RESP,
    CLIENTAGENT_GET_NETWORK_ADDRESS_RESP,
];

/// At most this many operations per input.
const MAX_STEPS: usize = 20_000;

struct Harness<'a> {
    inp: Input<'a>,
    ca: Arc<ClientAgent>,
    schema: Arc<Schema>,
    session: Option<Session>,
    out: SessionOut,
    now: Instant,
    /// A close was returned: from then on, only on_closed may say anything.
    closed: bool,
    allocated: u64,
    requests: Vec<Request>,
    classes: [u16; 3],
    num_fields: u16,
    /// LoginManager.login (clsend, a string).
    login: u16,
    summary: Summary,
}

impl<'a> Harness<'a> {
    fn new(data: &'a [u8]) -> Harness<'a> {
        // The harness's clock: monotonic steps from here, at a fixed Unix time.
        let now = Instant::now();
        let mut inp = Input { data, pos: 0 };
        let (a, b) = (inp.u8(), inp.u8());
        let schema = schema();
        let ca = Arc::new(
            ClientAgent::new(
                0,
                &config(a),
                schema.clone(),
                &uberdogs(),
                Default::default(),
                clock(now),
            )
            .expect("the fuzz ClientAgent builds"),
        );
        let class = |name: &str| schema.dc().class_by_name(name).map_or(u16::MAX, |c| c.id());
        let classes = [class("LoginManager"), class("Shard"), class("Avatar")];
        let num_fields = schema.dc().num_fields().min(u16::MAX as usize) as u16;
        let login = schema
            .dc()
            .class_by_name("LoginManager")
            .and_then(|c| schema.dc().field_by_name(c, "login"))
            .map_or(u16::MAX, |f| f.id());
        let ip = if b & cfg::IPV6 != 0 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
        } else {
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))
        };
        let admitted = if b & cfg::NOT_ADMITTED == 0 {
            assert!(ca.admit_address(ip), "a fresh agent admits the address");
            Some(ip)
        } else {
            None
        };
        let tlvs = inp.take((b >> 4) as usize).to_vec();
        let channel = ca.alloc_channel().expect("a fresh agent has channels");
        let mut out = SessionOut::default();
        let session = Session::new(
            ca.clone(),
            channel,
            SocketAddr::new(ip, 40_000),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7198),
            tlvs,
            admitted,
            b & cfg::LOCAL_CHECK != 0,
            now,
            &mut out,
        );
        let mut h = Harness {
            inp,
            ca,
            schema,
            session: Some(session),
            out,
            now,
            closed: false,
            allocated: channel,
            requests: Vec::new(),
            classes,
            num_fields,
            login,
            summary: Summary::default(),
        };
        assert!(
            h.out.to_client.is_empty() && h.out.datagrams.is_empty() && h.out.close.is_none(),
            "Session::new said something to the client or the cluster"
        );
        h.check(Step::Client);
        h
    }

    fn s(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("the session lives until the end")
    }

    fn run(mut self) -> Summary {
        while !self.inp.is_empty() && self.summary.steps < MAX_STEPS {
            self.summary.steps += 1;
            let opb = self.inp.u8();
            match opb % 32 {
                op::CLIENT_RAW => {
                    let n = self.inp.len();
                    let body = self.inp.take(n);
                    self.client_step(body);
                }
                1..=8 => self.client_built(),
                op::INTERNAL_RAW => {
                    let n = self.inp.len();
                    let body = self.inp.take(n);
                    self.internal_step(body);
                }
                24..=26 => self.time(),
                27..=30 => self.answer(),
                op::RUNTIME_EJECT => self.runtime_eject(),
                _ => self.server_built(),
            }
        }
        self.finish()
    }

    // ---- steps ---------------------------------------------------------------------------

    fn client_step(&mut self, body: &[u8]) {
        self.out.clear();
        let now = self.now;
        let mut out = std::mem::take(&mut self.out);
        self.s().on_client(now, body, &mut out);
        self.out = out;
        self.check(Step::Client);
    }

    fn internal_step(&mut self, body: &[u8]) {
        self.out.clear();
        let now = self.now;
        let mut out = std::mem::take(&mut self.out);
        self.s().on_internal(now, body, &mut out);
        self.out = out;
        let msgtype = InternalDatagram::parse(body).ok().map(|d| d.msgtype);
        self.check(Step::Internal(msgtype));
    }

    fn time(&mut self) {
        let b = self.inp.u8();
        let advance = match b {
            0xff => Duration::from_millis(self.inp.u32() as u64),
            0xfe => {
                let next = self.session.as_ref().and_then(Session::next_deadline);
                match next {
                    Some(d) if d > self.now => d - self.now,
                    _ => Duration::ZERO,
                }
            }
            _ => {
                let unit = [1, 10, 100, 1000][(b >> 6) as usize];
                Duration::from_millis((b & 63) as u64 * unit)
            }
        };
        if let Some(t) = self.now.checked_add(advance) {
            self.now = t;
        }
        self.out.clear();
        let now = self.now;
        let mut out = std::mem::take(&mut self.out);
        self.s().on_time(now, &mut out);
        self.out = out;
        self.check(Step::Time);
    }

    fn runtime_eject(&mut self) {
        let code = match self.inp.u8() {
            0xff => self.inp.u16(),
            // Oversized datagram, write error, read error (as the runtime ejects), generic.
            b => [106, 347, 348, 1][b as usize % 4],
        };
        let security = self.inp.u8() & 1 == 1;
        self.out.clear();
        let mut out = std::mem::take(&mut self.out);
        self.s()
            .eject_now(code, "fuzz: the runtime ejects", security, &mut out);
        self.out = out;
        self.check(Step::Runtime);
    }

    fn internal_body(&mut self, sender: u64, msgtype: u16, payload: &[u8]) -> Vec<u8> {
        let channel = self.s().channel();
        let mut p = P::default();
        p.u8(1).u64(channel).u64(sender).u16(msgtype).bytes(payload);
        p.0
    }

    /// Cuts or extends a built payload now and then, so malformed variants come up too.
    fn tail(&mut self, payload: &mut Vec<u8>) {
        let t = self.inp.u8();
        match t % 16 {
            0 => {
                let cut = 1 + (t >> 4) as usize % 4;
                payload.truncate(payload.len().saturating_sub(cut));
            }
            1 => payload.push(self.inp.u8()),
            _ => {}
        }
    }

    // ---- pickers -------------------------------------------------------------------------

    fn doid(&mut self) -> u32 {
        const DOIDS: [u32; 9] = [
            AVATARS[0], AVATARS[1], AVATARS[2], AVATARS[3], SHARDS[0], SHARDS[1], UD_ANON,
            UD_PRIVATE, 0,
        ];
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b => DOIDS[b as usize % DOIDS.len()],
        }
    }

    fn parent(&mut self) -> u32 {
        const PARENTS: [u32; 4] = [SHARDS[0], SHARDS[0], SHARDS[1], AVATARS[0]];
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b => PARENTS[b as usize % PARENTS.len()],
        }
    }

    fn zone(&mut self) -> u32 {
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b => (b % 4) as u32,
        }
    }

    /// A location: often one the session asked the StateServer about.
    fn location(&mut self) -> (u32, u32) {
        match self.inp.u8() {
            0xff => (self.inp.u32(), self.inp.u32()),
            b if b & 1 == 1 && !self.requests.is_empty() => {
                let i = (b >> 1) as usize;
                let r = &self.requests[i % self.requests.len()];
                let zone = if r.zones.is_empty() {
                    0
                } else {
                    r.zones[(i / self.requests.len()) % r.zones.len()]
                };
                (r.parent, zone)
            }
            _ => (self.parent(), self.zone()),
        }
    }

    /// A context the StateServer answers with: usually one of the session's requests.
    fn request_context(&mut self) -> u32 {
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b if self.requests.is_empty() => (b % 4) as u32 + 1,
            b => self.requests[b as usize % self.requests.len()].context,
        }
    }

    fn small_u32(&mut self) -> u32 {
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b => (b % 8) as u32,
        }
    }

    fn interest_id(&mut self) -> u16 {
        match self.inp.u8() {
            0xff => self.inp.u16(),
            b => (b % 4) as u16,
        }
    }

    fn class(&mut self) -> u16 {
        match self.inp.u8() {
            0xff => self.inp.u16(),
            b => {
                let c = self.classes;
                [c[0], c[1], c[2], c[2], c[2], c[2]][b as usize % 6]
            }
        }
    }

    fn field(&mut self) -> u16 {
        match self.inp.u8() {
            0xff => self.inp.u16(),
            b => b as u16 % self.num_fields.max(1),
        }
    }

    /// A value for `field`: valid, slightly off, or noise.
    fn value(&mut self, field: u16) -> Vec<u8> {
        match self.inp.u8() {
            0xff => {
                let n = self.inp.len();
                self.inp.take(n).to_vec()
            }
            b => match b % 4 {
                0 => self
                    .schema
                    .default_value(otpd::roles::ANY_CLASS, field)
                    .to_vec(),
                1 => {
                    let mut v = self
                        .schema
                        .default_value(otpd::roles::ANY_CLASS, field)
                        .to_vec();
                    if let Some(first) = v.first_mut() {
                        *first = self.inp.u8();
                    }
                    v
                }
                2 => {
                    let n = self.inp.u8() % 40;
                    let mut p = P::default();
                    p.u16(n as u16);
                    for _ in 0..n {
                        let c = self.inp.u8();
                        p.u8(if c & 0x80 != 0 && c & 0x40 != 0 {
                            c
                        } else {
                            b'a' + c % 26
                        });
                    }
                    p.0
                }
                _ => {
                    let n = (self.inp.u8() % 8) as usize;
                    self.inp.take(n).to_vec()
                }
            },
        }
    }

    /// Bytes of a blob: short, literal (0xff, u16 length), or large and uniform (0xfe).
    fn blob(&mut self) -> Vec<u8> {
        match self.inp.u8() {
            0xff => {
                let n = self.inp.u16() as usize;
                self.inp.take(n).to_vec()
            }
            0xfe => {
                let n = self.inp.u16() as usize % 65_000;
                vec![self.inp.u8(); n]
            }
            b => self.inp.take((b % 64) as usize).to_vec(),
        }
    }

    fn sender(&mut self) -> u64 {
        let own = self.s().channel();
        match self.inp.u8() {
            0xff => self.inp.u64(),
            b => [AI, AI, AI, AI, UD_ANON as u64, own, 0, CONTROL_CHANNEL][b as usize % 8],
        }
    }

    fn channel(&mut self) -> u64 {
        let own = self.s().channel();
        match self.inp.u8() {
            0xff => self.inp.u64(),
            b => [
                self.allocated,
                CHANNEL_MIN + 1,
                77_000_000,
                own,
                BCHAN_CLIENTS,
            ][b as usize % 5],
        }
    }

    /// Zones of a multi-zone interest: up to 8 picked, literal (0xff, u16 count, at most 64
    /// read), or many distinct ones (0xfe, u16 count, below 16,000 so the datagram still fits
    /// in 65,535 bytes).
    fn zones(&mut self, p: &mut P) {
        match self.inp.u8() {
            0xff => {
                let n = self.inp.u16();
                p.u16(n);
                for _ in 0..n.min(64) {
                    let z = self.zone();
                    p.u32(z);
                }
            }
            0xfe => {
                let n = self.inp.u16() % 16_000;
                p.u16(n);
                for z in 0..n as u32 {
                    p.u32(z);
                }
            }
            b => {
                let n = b % 9;
                p.u16(n as u16);
                for _ in 0..n {
                    let z = self.zone();
                    p.u32(z);
                }
            }
        }
    }

    // ---- built datagrams -----------------------------------------------------------------

    #[allow(clippy::too_many_lines)] // one scenario, read top to bottom
    fn client_built(&mut self) {
        let b = self.inp.u8();
        let state = self.s().state();
        let kind = if state == STATE_NEW && b % 4 != 3 {
            ClientKind::Hello
        } else {
            CLIENT_KINDS[(b >> 2) as usize % CLIENT_KINDS.len()]
        };
        let mut p = P::default();
        match kind {
            ClientKind::Hello => {
                let f = self.inp.u8();
                let hash = if f & 7 == 0 {
                    self.inp.u32()
                } else {
                    self.ca.hash
                };
                p.u16(CLIENT_HELLO).u32(hash);
                if f % 8 == 1 {
                    let n = self.inp.u8() as usize % 16;
                    let v = self.inp.take(n);
                    p.blob(v);
                } else {
                    p.blob(VERSION.as_bytes());
                }
            }
            ClientKind::Heartbeat => {
                p.u16(CLIENT_HEARTBEAT);
            }
            ClientKind::Disconnect => {
                p.u16(CLIENT_DISCONNECT);
            }
            ClientKind::SetField => {
                let doid = self.doid();
                let field = self.field();
                let v = self.value(field);
                p.u16(CLIENT_OBJECT_SET_FIELD)
                    .u32(doid)
                    .u16(field)
                    .bytes(&v);
            }
            ClientKind::SetFields => {
                let doid = self.doid();
                let n = self.inp.u8() % 4;
                p.u16(CLIENT_OBJECT_SET_FIELDS).u32(doid).u16(n as u16);
                for _ in 0..n {
                    let field = self.field();
                    let v = self.value(field);
                    p.u16(field).bytes(&v);
                }
            }
            ClientKind::Location => {
                let doid = self.doid();
                let (parent, zone) = self.location();
                p.u16(CLIENT_OBJECT_LOCATION)
                    .u32(doid)
                    .u32(parent)
                    .u32(zone);
            }
            ClientKind::AddInterest => {
                let ctx = self.small_u32();
                let id = self.interest_id();
                let (parent, zone) = self.location();
                p.u16(CLIENT_ADD_INTEREST)
                    .u32(ctx)
                    .u16(id)
                    .u32(parent)
                    .u32(zone);
            }
            ClientKind::AddInterestMultiple => {
                let ctx = self.small_u32();
                let id = self.interest_id();
                let parent = self.parent();
                p.u16(CLIENT_ADD_INTEREST_MULTIPLE)
                    .u32(ctx)
                    .u16(id)
                    .u32(parent);
                self.zones(&mut p);
            }
            ClientKind::RemoveInterest => {
                let ctx = self.small_u32();
                let id = self.interest_id();
                p.u16(CLIENT_REMOVE_INTEREST).u32(ctx).u16(id);
            }
            ClientKind::BigSetField => {
                // The client datagram fits (10 + n <= 65,535); the routed one (27 + n) fits
                // only up to n = 65,508.
                let n = 65_478 + (self.inp.u8() % 48) as u16;
                p.u16(CLIENT_OBJECT_SET_FIELD)
                    .u32(UD_ANON)
                    .u16(self.login)
                    .u16(n)
                    .bytes(&vec![b'a'; n as usize]);
            }
            ClientKind::Other => {
                let t = self.inp.u16();
                let n = (self.inp.u8() % 16) as usize;
                let rest = self.inp.take(n);
                p.u16(t).bytes(rest);
            }
        }
        let mut body = p.0;
        self.tail(&mut body);
        self.client_step(&body);
    }

    /// An object entrance's payload after the doid: location, class, required fields (any
    /// bytes: the session passes them through).
    fn entrance(&mut self, p: &mut P, parent: u32, zone: u32) {
        let class = self.class();
        let n = (self.inp.u8() % 8) as usize;
        let required = self.inp.take(n);
        p.u32(parent).u32(zone).u16(class).bytes(required);
    }

    #[allow(clippy::too_many_lines)] // one scenario, read top to bottom
    fn server_built(&mut self) {
        let kind = SERVER_KINDS[self.inp.u8() as usize % SERVER_KINDS.len()];
        let sender = self.sender();
        let mut p = P::default();
        let msgtype = match kind {
            ServerKind::SetState => {
                let state = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    b => [0, 1, 2, 2, 2, 3][b as usize % 6],
                };
                p.u16(state);
                CLIENTAGENT_SET_STATE
            }
            ServerKind::AddInterest => {
                let id = self.interest_id();
                let (parent, zone) = self.location();
                p.u16(id).u32(parent).u32(zone);
                CLIENTAGENT_ADD_INTEREST
            }
            ServerKind::AddInterestMultiple => {
                let id = self.interest_id();
                let parent = self.parent();
                p.u16(id).u32(parent);
                self.zones(&mut p);
                CLIENTAGENT_ADD_INTEREST_MULTIPLE
            }
            ServerKind::RemoveInterest => {
                let id = self.interest_id();
                p.u16(id);
                CLIENTAGENT_REMOVE_INTEREST
            }
            ServerKind::EnterInterest | ServerKind::EnterInterestOther => {
                let ctx = self.request_context();
                let doid = self.doid();
                let (parent, zone) = self.location();
                p.u32(ctx).u32(doid);
                self.entrance(&mut p, parent, zone);
                if kind == ServerKind::EnterInterest {
                    STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED
                } else {
                    STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER
                }
            }
            ServerKind::ZonesCount => {
                let ctx = self.request_context();
                let count = match self.inp.u8() {
                    0xff => self.inp.u32(),
                    b => (b % 5) as u32,
                };
                p.u32(ctx).u32(count);
                STATESERVER_OBJECT_GET_ZONES_COUNT_RESP
            }
            ServerKind::EnterLocation | ServerKind::EnterLocationOther => {
                let doid = self.doid();
                let (parent, zone) = self.location();
                p.u32(doid);
                self.entrance(&mut p, parent, zone);
                if kind == ServerKind::EnterLocation {
                    STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED
                } else {
                    STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER
                }
            }
            ServerKind::EnterOwner | ServerKind::EnterOwnerOther => {
                let doid = self.doid();
                let (parent, zone) = self.location();
                p.u32(doid);
                self.entrance(&mut p, parent, zone);
                if kind == ServerKind::EnterOwner {
                    STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED
                } else {
                    STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED_OTHER
                }
            }
            ServerKind::ChangingLocation => {
                let doid = self.doid();
                let (parent, zone) = self.location();
                let (old_parent, old_zone) = self.location();
                p.u32(doid)
                    .u32(parent)
                    .u32(zone)
                    .u32(old_parent)
                    .u32(old_zone);
                STATESERVER_OBJECT_CHANGING_LOCATION
            }
            ServerKind::ChangingOwner => {
                let doid = self.doid();
                let new_owner = self.channel();
                let old_owner = self.channel();
                p.u32(doid).u64(new_owner).u64(old_owner);
                STATESERVER_OBJECT_CHANGING_OWNER
            }
            ServerKind::DeleteRam => {
                let doid = self.doid();
                p.u32(doid);
                STATESERVER_OBJECT_DELETE_RAM
            }
            ServerKind::SetField => {
                let doid = self.doid();
                let field = self.field();
                let v = self.value(field);
                p.u32(doid).u16(field).bytes(&v);
                STATESERVER_OBJECT_SET_FIELD
            }
            ServerKind::SetFields => {
                let doid = self.doid();
                let n = self.inp.u8() % 4;
                p.u32(doid).u16(n as u16);
                for _ in 0..n {
                    let field = self.field();
                    let v = self.value(field);
                    p.u16(field).bytes(&v);
                }
                STATESERVER_OBJECT_SET_FIELDS
            }
            ServerKind::Declare => {
                let doid = self.doid();
                let class = self.class();
                p.u32(doid).u16(class);
                CLIENTAGENT_DECLARE_OBJECT
            }
            ServerKind::Undeclare => {
                let doid = self.doid();
                p.u32(doid);
                CLIENTAGENT_UNDECLARE_OBJECT
            }
            ServerKind::AddSessionObject => {
                let doid = self.doid();
                p.u32(doid);
                CLIENTAGENT_ADD_SESSION_OBJECT
            }
            ServerKind::RemoveSessionObject => {
                let doid = self.doid();
                p.u32(doid);
                CLIENTAGENT_REMOVE_SESSION_OBJECT
            }
            ServerKind::SetFieldsSendable => {
                let doid = self.doid();
                let n = self.inp.u8() % 5;
                p.u32(doid).u16(n as u16);
                for _ in 0..n {
                    let f = self.field();
                    p.u16(f);
                }
                CLIENTAGENT_SET_FIELDS_SENDABLE
            }
            ServerKind::GetTlvs => {
                let ctx = self.small_u32();
                p.u32(ctx);
                CLIENTAGENT_GET_TLVS
            }
            ServerKind::GetNetworkAddress => {
                let ctx = self.small_u32();
                p.u32(ctx);
                CLIENTAGENT_GET_NETWORK_ADDRESS
            }
            ServerKind::SetClientId => {
                let c = self.channel();
                p.u64(c);
                CLIENTAGENT_SET_CLIENT_ID
            }
            ServerKind::OpenChannel => {
                let c = self.channel();
                p.u64(c);
                CLIENTAGENT_OPEN_CHANNEL
            }
            ServerKind::CloseChannel => {
                let c = self.channel();
                p.u64(c);
                CLIENTAGENT_CLOSE_CHANNEL
            }
            ServerKind::AddPostRemove => {
                let dg = self.blob();
                p.blob(&dg);
                CLIENTAGENT_ADD_POST_REMOVE
            }
            ServerKind::ClearPostRemoves => CLIENTAGENT_CLEAR_POST_REMOVES,
            ServerKind::SendDatagram => {
                let dg = self.blob();
                p.blob(&dg);
                CLIENTAGENT_SEND_DATAGRAM
            }
            ServerKind::Eject => {
                let code = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    b => [100, 122, 153, 345, 0][b as usize % 5],
                };
                let reason = self.blob();
                p.u16(code).blob(&reason);
                CLIENTAGENT_EJECT
            }
            ServerKind::Drop => CLIENTAGENT_DROP,
            ServerKind::Other => {
                let t = self.inp.u16();
                let n = (self.inp.u8() % 16) as usize;
                let rest = self.inp.take(n);
                p.bytes(rest);
                t
            }
        };
        let mut payload = p.0;
        self.tail(&mut payload);
        let body = self.internal_body(sender, msgtype, &payload);
        self.internal_step(&body);
    }

    /// The StateServer answers a request: its count and its objects, the count at any place.
    fn answer(&mut self) {
        let b = self.inp.u8();
        if self.requests.is_empty() {
            return;
        }
        let r = self.requests[b as usize % self.requests.len()].clone();
        let n = self.inp.u8() % 4;
        let at = self.inp.u8() % (n + 1);
        let other = self.inp.u8() & 1 == 1;
        for i in 0..=n {
            let mut p = P::default();
            let msgtype = if i == at {
                p.u32(r.context).u32(n as u32);
                STATESERVER_OBJECT_GET_ZONES_COUNT_RESP
            } else {
                let doid = self.doid();
                let zone = if r.zones.is_empty() {
                    0
                } else {
                    r.zones[self.inp.u8() as usize % r.zones.len()]
                };
                p.u32(r.context).u32(doid);
                self.entrance(&mut p, r.parent, zone);
                if other {
                    STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED_OTHER
                } else {
                    STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED
                }
            };
            let body = self.internal_body(4_000, msgtype, &p.0);
            self.internal_step(&body);
        }
    }

    // ---- invariants ----------------------------------------------------------------------

    fn check(&mut self, step: Step) {
        let n = self.summary.steps;
        let s = self
            .session
            .as_ref()
            .expect("the session lives until the end");
        let out = &self.out;
        if self.closed {
            assert!(
                out.to_client.is_empty()
                    && out.datagrams.is_empty()
                    && out.subscriptions.is_empty()
                    && out.post_removes.is_empty()
                    && out.events.is_empty()
                    && out.close.is_none(),
                "step {n} ({step:?}): the session said something after it closed: {out:?}"
            );
            assert!(s.is_closed(), "step {n}: a closed session reopened");
            assert_eq!(
                s.next_deadline(),
                None,
                "step {n}: a closed session has a deadline"
            );
            return;
        }
        // What goes to the client: consistent frames, of types the session sends (anything
        // goes in CLIENTAGENT_SEND_DATAGRAM's).
        let raw_ok = step == Step::Internal(Some(CLIENTAGENT_SEND_DATAGRAM));
        let frames = frames(&out.to_client)
            .unwrap_or_else(|e| panic!("step {n} ({step:?}): bad client framing: {e}"));
        let mut last = None;
        for f in &frames {
            let msgtype = (f.len() >= 2).then(|| u16::from_le_bytes([f[0], f[1]]));
            if !raw_ok {
                let t = msgtype.unwrap_or_else(|| {
                    panic!("step {n} ({step:?}): a client datagram without a type: {f:?}")
                });
                assert!(
                    TO_CLIENT.contains(&t),
                    "step {n} ({step:?}): unexpected client message type {t}"
                );
            }
            if let Some(t) = msgtype {
                self.summary.to_client.push(t);
            }
            last = Some(*f);
        }
        // What goes into the cluster.
        for t in internal_frames(&out.datagrams, s.channel(), n, step, &TO_CLUSTER) {
            self.summary.datagrams.push(t);
        }
        check_events(&out.events, n, step);
        self.summary.post_removes += out.post_removes.len();
        if let Err(e) = s.check_invariants() {
            panic!("step {n} ({step:?}): {e}");
        }
        if let Some(c) = check_end(s, out, last, n, step) {
            self.closed = true;
            self.summary.close = Some(c);
        }
        // Exactly this session is counted, in its state.
        let state = s.state();
        assert!(state <= STATE_ESTABLISHED, "step {n}: state {state}");
        for (i, g) in self.ca.stats.by_state.iter().enumerate() {
            let want = u64::from(i == state as usize);
            assert_eq!(
                g.load(Ordering::Relaxed),
                want,
                "step {n} ({step:?}): gauge of state {i} in state {state}"
            );
        }
        self.summary.max_state = self.summary.max_state.max(state);
        self.summary.final_state = state;
        assert_eq!(s.allocated_channel(), self.allocated);
        // on_time(now) leaves nothing due at now.
        if step == Step::Time && !self.closed {
            check_nothing_due(s, self.now, n);
        }
        // Remember the interest requests so the server's answers can connect.
        for f in frames_unchecked(&out.datagrams) {
            if let Some(r) = parse_request(f) {
                if self.requests.len() >= 8 {
                    self.requests.remove(0);
                }
                self.requests.push(r);
            }
        }
    }

    fn finish(mut self) -> Summary {
        let lost = (!self.closed).then_some("fuzz: connection lost");
        let session = self
            .session
            .take()
            .expect("the session lives until the end");
        let sent = close_and_check(
            session,
            lost,
            &mut self.out,
            &self.ca,
            self.allocated,
            &TO_CLUSTER,
            &[
                STATESERVER_OBJECT_DELETE_RAM,
                CLIENTAGENT_DONE_INTEREST_RESP,
            ],
        );
        self.summary.on_closed.extend(sent);
        self.summary
    }
}

/// Post-removes fit in a datagram; the end is announced exactly when it is decided, a closed
/// session has no deadline, and an eject is the last thing the client is sent (`last`: the
/// last client datagram of this step). Returns the end announced at this step.
pub fn check_end(
    s: &Session,
    out: &SessionOut,
    last: Option<&[u8]>,
    n: usize,
    step: Step,
) -> Option<Close> {
    for pr in &out.post_removes {
        if let PostRemove::Add(dg) = pr {
            assert!(
                dg.len() <= u16::MAX as usize,
                "step {n}: post-remove too long"
            );
        }
    }
    let Some(c) = &out.close else {
        assert!(
            !s.is_closed(),
            "step {n} ({step:?}): the session closed without saying so"
        );
        return None;
    };
    assert!(
        s.is_closed(),
        "step {n} ({step:?}): close {c:?} but not closed"
    );
    if let Close::Eject { code, .. } = c {
        let f = last.unwrap_or_else(|| {
            panic!("step {n} ({step:?}): eject {code} without an eject message")
        });
        assert!(
            f.len() >= 6
                && u16::from_le_bytes([f[0], f[1]]) == CLIENT_EJECT
                && u16::from_le_bytes([f[2], f[3]]) == *code,
            "step {n} ({step:?}): eject {code}: the last client datagram is not its eject"
        );
    }
    assert_eq!(
        s.next_deadline(),
        None,
        "step {n}: a closed session has a deadline"
    );
    Some(c.clone())
}

/// `on_time(now)` leaves nothing due at `now`.
pub fn check_nothing_due(s: &Session, now: Instant, n: usize) {
    if let Some(d) = s.next_deadline() {
        assert!(
            d > now,
            "step {n}: after on_time(now), next_deadline is {:?} in the past",
            now - d
        );
    }
}

/// Closes `session` (`lost`: the connection went without a word), checks that `on_closed`
/// says only datagrams of the `allowed` types and events, drops it, and checks that nothing
/// leaked: the address count, the state gauges, the agent, the channel. Returns the message
/// types `on_closed` sent.
pub fn close_and_check(
    mut session: Session,
    lost: Option<&str>,
    out: &mut SessionOut,
    ca: &Arc<ClientAgent>,
    allocated: u64,
    to_cluster: &[u16],
    allowed: &[u16],
) -> Vec<u16> {
    out.clear();
    session.on_closed(lost, out);
    assert!(
        out.to_client.is_empty()
            && out.close.is_none()
            && out.subscriptions.is_empty()
            && out.post_removes.is_empty(),
        "on_closed said something besides datagrams and events: {out:?}"
    );
    let n = usize::MAX;
    let sent = internal_frames(
        &out.datagrams,
        session.channel(),
        n,
        Step::Client,
        to_cluster,
    );
    for &t in &sent {
        assert!(allowed.contains(&t), "on_closed sent message type {t}");
    }
    check_events(&out.events, n, Step::Client);
    assert!(session.is_closed() && session.next_deadline().is_none());
    drop(session);
    assert!(
        ca.counted_addresses() == 0,
        "the session's address is still counted"
    );
    for (i, g) in ca.stats.by_state.iter().enumerate() {
        assert_eq!(
            g.load(Ordering::Relaxed),
            0,
            "gauge of state {i} after drop"
        );
    }
    assert_eq!(
        Arc::strong_count(ca),
        1,
        "the dropped session kept its agent"
    );
    let range = (CHANNEL_MAX - CHANNEL_MIN + 1) as usize;
    let back = (0..=range).any(|_| ca.alloc_channel() == Some(allocated));
    assert!(back, "channel {allocated} was not given back");
    sent
}

/// Splits length-tagged datagrams; every byte must belong to exactly one.
pub fn frames(buf: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        if buf.len() - at < 2 {
            return Err(format!("{} stray bytes at {at}", buf.len() - at));
        }
        let n = u16::from_le_bytes([buf[at], buf[at + 1]]) as usize;
        let end = at + 2 + n;
        if end > buf.len() {
            return Err(format!(
                "length tag {n} at {at} past the end ({})",
                buf.len()
            ));
        }
        v.push(&buf[at + 2..end]);
        at = end;
    }
    Ok(v)
}

pub fn frames_unchecked(buf: &[u8]) -> Vec<&[u8]> {
    frames(buf).unwrap_or_default()
}

/// Checks internal datagrams (framing, parse, recipients, sender, type); returns their types.
pub fn internal_frames(
    buf: &[u8],
    channel: u64,
    n: usize,
    step: Step,
    allowed: &[u16],
) -> Vec<u16> {
    let fs =
        frames(buf).unwrap_or_else(|e| panic!("step {n} ({step:?}): bad internal framing: {e}"));
    let mut types = Vec::with_capacity(fs.len());
    for f in fs {
        let dg = InternalDatagram::parse(f).unwrap_or_else(|e| {
            panic!("step {n} ({step:?}): unparseable internal datagram {f:?}: {e:?}")
        });
        assert!(
            !dg.recipients.is_empty(),
            "step {n} ({step:?}): an internal datagram without recipients"
        );
        // Read the header as routed (a datagram to channel 1, e.g. to an object with doid 1,
        // parses as a control message, but the session always writes a sender).
        let count = f[0] as usize;
        let at = 1 + count * 8;
        let (sender, msgtype) = match f.get(at..at + 10) {
            Some(h) => (
                u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]),
                u16::from_le_bytes([h[8], h[9]]),
            ),
            None => panic!("step {n} ({step:?}): internal datagram without sender and type"),
        };
        assert_eq!(
            sender, channel,
            "step {n} ({step:?}): internal datagram from {sender}, not the client's channel {channel}"
        );
        assert!(
            allowed.contains(&msgtype),
            "step {n} ({step:?}): unexpected internal message type {msgtype}"
        );
        types.push(msgtype);
    }
    types
}

/// Every event is one MessagePack map whose first key is "type".
pub fn check_events(events: &[Vec<u8>], n: usize, step: Step) {
    for e in events {
        let mut rest = e.as_slice();
        let v = rmpv::decode::read_value(&mut rest)
            .unwrap_or_else(|err| panic!("step {n} ({step:?}): event not MessagePack: {err}"));
        assert!(rest.is_empty(), "step {n} ({step:?}): bytes after an event");
        let ok = match &v {
            rmpv::Value::Map(m) => m.first().is_some_and(|(k, _)| k.as_str() == Some("type")),
            _ => false,
        };
        assert!(
            ok,
            "step {n} ({step:?}): event is not a map starting with type: {v}"
        );
    }
}

pub fn parse_request(f: &[u8]) -> Option<Request> {
    let dg = InternalDatagram::parse(f).ok()?;
    if dg.msgtype != STATESERVER_OBJECT_GET_ZONES_OBJECTS {
        return None;
    }
    let mut r = dg.payload_reader();
    let context = r.u32().ok()?;
    let parent = r.u32().ok()?;
    let count = r.u16().ok()?;
    let mut zones = Vec::new();
    for _ in 0..count.min(16) {
        zones.push(r.u32().ok()?);
    }
    Some(Request {
        context,
        parent,
        zones,
    })
}

// ---- writing scripts -------------------------------------------------------------------

/// Writes a script for [`run`] with exact values (for hand-made sequences).
#[derive(Debug, Clone)]
pub struct Script {
    bytes: Vec<u8>,
}

impl Script {
    /// A script over configuration bytes `a` and `b` (see [`cfg`]). TLVs (bits 4-7 of `b`)
    /// are zeros.
    pub fn new(a: u8, b: u8) -> Script {
        let mut bytes = vec![a, b];
        bytes.resize(2 + (b >> 4) as usize, 0);
        Script { bytes }
    }

    fn len(&mut self, n: usize) {
        assert!(n <= u16::MAX as usize, "too long for a script");
        if n < 0xff {
            self.bytes.push(n as u8);
        } else {
            self.bytes.push(0xff);
            self.bytes.extend_from_slice(&(n as u16).to_le_bytes());
        }
    }

    /// A CLIENT_HELLO with the right hash and version.
    pub fn hello(&mut self) -> &mut Self {
        // Op, kind Hello, right hash and version, no tail change.
        self.bytes.extend_from_slice(&[op::CLIENT, 0, 2, 2]);
        self
    }

    /// A client datagram (body without length tag).
    pub fn client(&mut self, body: &[u8]) -> &mut Self {
        self.bytes.push(op::CLIENT_RAW);
        self.len(body.len());
        self.bytes.extend_from_slice(body);
        self
    }

    /// An internal datagram to the client's first channel.
    pub fn server(&mut self, sender: u64, msgtype: u16, payload: &[u8]) -> &mut Self {
        let mut p = P::default();
        p.u8(1)
            .u64(CHANNEL_MIN)
            .u64(sender)
            .u16(msgtype)
            .bytes(payload);
        self.bytes.push(op::INTERNAL_RAW);
        self.len(p.0.len());
        self.bytes.extend_from_slice(&p.0);
        self
    }

    /// `ms` milliseconds pass, then `on_time`.
    pub fn advance(&mut self, ms: u32) -> &mut Self {
        self.bytes.extend_from_slice(&[op::TIME, 0xff]);
        self.bytes.extend_from_slice(&ms.to_le_bytes());
        self
    }

    /// Time passes to the session's next deadline exactly, then `on_time`.
    pub fn to_deadline(&mut self) -> &mut Self {
        self.bytes.extend_from_slice(&[op::TIME, 0xfe]);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

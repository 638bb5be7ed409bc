//! Test support (not used by the server): a fuzz harness for the ClientAgent's [`Session`] in
//! the Toontown 2003 dialect, as [`crate::client_fuzz`] is for the Astron one.
//!
//! [`run_toontown`] reads arbitrary bytes as a script of operations on one session of a
//! ClientAgent with `dialect: Toontown2003` built over `tests/dc/toon.dc` (with the name parts
//! and visibility table of `tests/dc/`, and an Open or Signed token policy), checks the
//! session's invariants after every step, then closes and drops the session and checks that
//! nothing leaked. It panics only when an invariant is broken (that is the finding).
//! `tests/client_fuzz.rs` runs it on pseudo-random inputs and hand-made sequences;
//! `fuzz/fuzz_targets/toontown_session.rs` is the cargo-fuzz target.
//!
//! # Script format
//!
//! Bytes 0 and 1 choose the configuration (see [`cfg`]); the rest is a sequence of
//! operations, each one op byte (`op % 32`, see [`op`]) and its arguments. Reading past the
//! end yields zeros. Arguments go through pickers that map a byte to values that connect (the
//! account's avatars, the districts, the zones, the contexts of the requests the session
//! actually sent); `0xff` means a literal follows. [`Script`] writes exact sequences.

use crate::client_fuzz::{
    check_end, check_events, check_nothing_due, clock, close_and_check, frames, frames_unchecked,
    internal_frames, parse_request, Input, Request, Step, FUZZ_UNIX_SECS, P,
};
use otp_wire::channels::{BCHAN_CLIENTS, CONTROL_CHANNEL};
use otp_wire::msgtypes::*;
use otp_wire::toontown2003::*;
use otp_wire::{InternalDatagram, Reader};
use otpd::clientagent::accounts::{self, Account};
use otpd::clientagent::session::{
    Close, JobResult, Session, SessionJob, SessionOut, STATE_ESTABLISHED,
};
use otpd::clientagent::toontown::*;
use otpd::clientagent::ClientAgent;
use otpd::config::{ClientAgentConfig, Dialect, PasswordPolicy, TokenPolicy};
use otpd::roles::Schema;
use rustc_hash::FxHashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The schema every fuzzed 2003 session runs over.
const TOON_DC: &str = include_str!("../../tests/dc/toon.dc");
/// The name parts and visibility table (read by the ClientAgent from these files).
const NAMES_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/dc/names.txt");
const VIS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/dc/vis.txt");

/// The version string 2003 clients must say in their LOGIN_2.
pub const VERSION: &str = "fuzz-tt-v1";
/// The secret of the Signed token policy (32 bytes: the shortest a listener accepts).
pub const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-sec";
/// Accounts whose tokens the pickers make.
pub const ACCOUNTS: [&str; 2] = ["alice", "bob"];
/// The password of the records the harness's database holds with one, and a wrong one.
pub const PASSWORD: &str = "pw-right";
pub const WRONG_PASSWORD: &str = "pw-wrong";

/// A hash of `PASSWORD` as a stored record holds it, made at the least Argon2 cost (the
/// session verifies with the hash's own costs, so a check takes microseconds here; only an
/// account created by CLIENT_LOGIN pays the full cost).
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::PasswordHasher;
        let params = argon2::Params::new(8, 1, 1, None).expect("small Argon2 costs");
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_with_salt(PASSWORD.as_bytes(), b"fuzz-salt-16byte")
            .expect("hashing")
            .to_string()
    })
}
/// The Database role (toontown.database).
pub const DB: u64 = 4003;
/// Districts.
pub const DISTRICTS: [u32; 2] = [4_000_000, 4_000_100];
/// Objects the AI puts in zones (a TimeManager, a trolley).
pub const OBJECTS: [u32; 2] = [4_000_001, 4_000_002];
/// Avatars (the account's, once the database says so, and other toons).
pub const AVATARS: [u32; 4] = [100_000_001, 100_000_002, 100_000_003, 100_000_004];
/// The AI's channel.
pub const AI: u64 = 5_000;
/// The quiet zone (toontown.quiet_zone's default) and zones with objects.
pub const QUIET: u32 = 1;
pub const ZONES: [u32; 6] = [QUIET, 2000, 2100, 2101, 2200, 0];
pub const CHANNEL_MIN: u64 = 1_000_000;
pub const CHANNEL_MAX: u64 = 1_000_003;

/// The configuration bytes.
pub mod cfg {
    // Byte 0.
    /// Signed play tokens (else Open).
    pub const SIGNED: u8 = 1;
    /// heartbeat_timeout_ms = 1000 (else none).
    pub const HEARTBEAT: u8 = 1 << 1;
    /// 64 datagrams and 4096 bytes per second (else unlimited).
    pub const RATE_LIMITS: u8 = 1 << 2;
    /// hello_timeout_ms = 0 (else 2000).
    pub const NO_HELLO_TIMEOUT: u8 = 1 << 3;
    /// No name parts (name patterns refused).
    pub const NO_NAME_PARTS: u8 = 1 << 4;
    /// No visibility table.
    pub const NO_VISIBILITY: u8 = 1 << 5;
    /// auto_approve_names = false.
    pub const REVIEW_NAMES: u8 = 1 << 6;
    /// max_visible_zones = 3 (else 128).
    pub const FEW_ZONES: u8 = 1 << 7;
    // Byte 1.
    /// Bits 0-1: max_avatars = 6, 1, 2 or 0.
    pub const AVATARS_MASK: u8 = 0b11;
    /// interest_timeout_ms = 0 (else 500).
    pub const INTEREST_TIMEOUT_ZERO: u8 = 1 << 2;
    /// allow_utf8_strings = true.
    pub const UTF8: u8 = 1 << 3;
    /// No address counted against max_connections_per_address.
    pub const NOT_ADMITTED: u8 = 1 << 4;
    /// The first district is known before the session starts.
    pub const DISTRICT_UP: u8 = 1 << 5;
    /// A proxy's health check (no connection events).
    pub const LOCAL_CHECK: u8 = 1 << 6;
    /// passwords: Existing (with FEW_ZONES also set: Disabled; else CreateOnLogin).
    pub const PASSWORDS_EXISTING: u8 = 1 << 7;
}

/// The operations (`op byte % 32`).
pub mod op {
    /// A client datagram of the next N bytes (N: u8, or 0xff then u16).
    pub const CLIENT_RAW: u8 = 0;
    /// A client datagram built from the bytes (1..=10).
    pub const CLIENT: u8 = 1;
    /// An internal datagram from the server built from the bytes (11..=18).
    pub const INTERNAL: u8 = 11;
    /// An internal datagram body of the next N bytes (N as for CLIENT_RAW).
    pub const INTERNAL_RAW: u8 = 19;
    /// Time passes (20..=22): u8 scaled, 0xfe = to the next deadline, 0xff then u32 ms.
    pub const TIME: u8 = 20;
    /// The cluster answers one of the session's requests (23..=28): u8 which (0 = the newest;
    /// 0xff then u32 context and u16 message type), u8 variant, then the variant's bytes.
    pub const ANSWER: u8 = 23;
    /// The district directory hears SHARD_UP / SHARD_DOWN and tells the session (29, 30):
    /// u8 district (picker), u8 flags (bit 0: down).
    pub const DISTRICT: u8 = 29;
    /// The runtime ejects the client: code (a picker), u8 flags (bit 0: security).
    pub const RUNTIME_EJECT: u8 = 31;
}

/// What happened in one run, for tests to assert on.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub steps: usize,
    pub final_state: u16,
    pub max_state: u16,
    pub close: Option<Close>,
    /// Message types sent to the client, in order.
    pub to_client: Vec<u16>,
    /// Message types of internal datagrams sent into the cluster, in order (before on_closed).
    pub datagrams: Vec<u16>,
    /// Message types of internal datagrams sent by `on_closed`.
    pub on_closed: Vec<u16>,
    /// Zones the avatar was put in (STATESERVER_OBJECT_SET_LOCATION: parent, zone).
    pub locations: Vec<(u32, u32)>,
    /// Doids the session activated (DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS).
    pub activated: Vec<u32>,
}

/// Runs the script in `data`; panics only if the session breaks an invariant.
pub fn run_toontown(data: &[u8]) {
    let _ = run_toontown_summary(data);
}

/// As [`run_toontown`], returning what happened.
pub fn run_toontown_summary(data: &[u8]) -> Summary {
    Harness::new(data).run()
}

/// The toon.dc schema, parsed once.
/// The 2003 client's numbers of the fuzzed schema (`TOON_DC`), from `client_numbers_2003`.
fn client_numbers() -> &'static std::collections::HashMap<(String, String), u16> {
    static NUMBERS: OnceLock<std::collections::HashMap<(String, String), u16>> = OnceLock::new();
    NUMBERS.get_or_init(|| crate::dc2003::client_numbers_2003(TOON_DC))
}

pub fn schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let dc =
                otp_dc::DcFile::parse_str("toon.dc", TOON_DC).expect("tests/dc/toon.dc parses");
            Arc::new(Schema::new(dc))
        })
        .clone()
}

/// The DC hash clients must say.
pub fn hash() -> u32 {
    schema().dc().hash()
}

/// A valid signed token for `name`.
pub fn signed_token(name: &str) -> String {
    accounts::sign(SECRET, name, 4_000_000_000)
}

fn base_config() -> &'static ClientAgentConfig {
    static BASE: OnceLock<ClientAgentConfig> = OnceLock::new();
    BASE.get_or_init(|| {
        ron::from_str(&format!(
            "(bind: \"127.0.0.1:0\", version: \"{VERSION}\", dialect: Toontown2003, \
             channels: (min: {CHANNEL_MIN}, max: {CHANNEL_MAX}), \
             heartbeat_timeout_ms: 1000, interest_timeout_ms: 500, \
             toontown: (tokens: Open, database: {DB}, shard_channel: 4662), \
             limits: (max_interests: 4, max_zones_per_interest: 6, max_pending_interests: 3, \
                      max_queued_per_interest: 5, max_datagrams_per_second: 64, \
                      max_bytes_per_second: 4096, max_connections_per_address: 2, \
                      hello_timeout_ms: 2000))"
        ))
        .expect("the fuzz Toontown ClientAgent configuration parses")
    })
}

fn config(a: u8, b: u8) -> ClientAgentConfig {
    let mut c = base_config().clone();
    debug_assert_eq!(c.dialect, Dialect::Toontown2003);
    if a & cfg::SIGNED != 0 {
        c.toontown.tokens = TokenPolicy::Signed {
            secret: SECRET.into(),
            secret_file: None,
        };
    }
    if a & cfg::HEARTBEAT == 0 {
        c.heartbeat_timeout_ms = 0;
    }
    if a & cfg::RATE_LIMITS == 0 {
        c.limits.max_datagrams_per_second = 0;
        c.limits.max_bytes_per_second = 0;
    }
    if a & cfg::NO_HELLO_TIMEOUT != 0 {
        c.limits.hello_timeout_ms = 0;
    }
    if a & cfg::NO_NAME_PARTS == 0 {
        c.toontown.name_parts = Some(NAMES_PATH.into());
    }
    if a & cfg::NO_VISIBILITY == 0 {
        c.toontown.visibility = Some(VIS_PATH.into());
    }
    c.toontown.auto_approve_names = a & cfg::REVIEW_NAMES == 0;
    if a & cfg::FEW_ZONES != 0 {
        c.toontown.max_visible_zones = 3;
    }
    c.toontown.max_avatars = [6, 1, 2, 0][(b & cfg::AVATARS_MASK) as usize];
    if b & cfg::INTEREST_TIMEOUT_ZERO != 0 {
        c.interest_timeout_ms = 0;
    }
    c.limits.allow_utf8_strings = b & cfg::UTF8 != 0;
    c.toontown.passwords = match (b & cfg::PASSWORDS_EXISTING != 0, a & cfg::FEW_ZONES != 0) {
        (false, _) => PasswordPolicy::CreateOnLogin,
        (true, false) => PasswordPolicy::Existing,
        (true, true) => PasswordPolicy::Disabled,
    };
    c
}

/// Message types a 2003 session sends its client.
const TO_CLIENT: [u16; 21] = [
    CLIENT_EJECT,
    CLIENT_LOGIN_RESP,
    CLIENT_LOGIN_2_RESP,
    CLIENT_GET_AVATARS_RESP,
    CLIENT_CREATE_AVATAR_RESP,
    CLIENT_GET_SHARD_LIST_RESP,
    CLIENT_GET_FRIEND_LIST_RESP,
    CLIENT_GET_AVATAR_DETAILS_RESP,
    CLIENT_OBJECT_UPDATE_FIELD,
    CLIENT_OBJECT_DISABLE_RESP,
    CLIENT_OBJECT_DELETE_RESP,
    CLIENT_CREATE_OBJECT_REQUIRED,
    CLIENT_CREATE_OBJECT_REQUIRED_OTHER,
    CLIENT_GET_STATE_RESP,
    CLIENT_DONE_SET_ZONE_RESP,
    CLIENT_SERVER_UP,
    CLIENT_SERVER_DOWN,
    CLIENT_SET_NAME_PATTERN_ANSWER,
    CLIENT_SET_WISHNAME_RESP,
    CLIENT_FRIEND_ONLINE,
    CLIENT_FRIEND_OFFLINE,
];

/// Message types a 2003 session sends into the cluster.
const TO_CLUSTER: [u16; 21] = [
    // "This account logged in elsewhere", with its name, to the account's channel.
    CLIENTAGENT_TOON_ACCOUNT_TAKEN,
    DBSERVER_ACCOUNT_GET,
    DBSERVER_ACCOUNT_SET,
    DBSERVER_ACCOUNT_CREATE,
    // A new toon and its slot, in one step; a toon deleted and its slot emptied, likewise.
    DBSERVER_ACCOUNT_CREATE_AVATAR,
    DBSERVER_OBJECT_GET_FIELDS,
    DBSERVER_OBJECT_SET_FIELD,
    DBSERVER_ACCOUNT_DELETE_AVATAR,
    DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS,
    STATESERVER_OBJECT_SET_OWNER,
    STATESERVER_OBJECT_GET_ALL,
    STATESERVER_OBJECT_SET_LOCATION,
    STATESERVER_OBJECT_SET_FIELD,
    STATESERVER_OBJECT_DELETE_RAM,
    STATESERVER_OBJECT_GET_ZONES_OBJECTS,
    CLIENTAGENT_DONE_INTEREST_RESP,
    CLIENTAGENT_GET_TLVS_RESP,
    CLIENTAGENT_GET_NETWORK_ADDRESS_RESP,
    STATESERVER_OBJECT_SET_FIELDS,
    // Friends: "I am online" to a friend's puppet channel, and FRIEND_ONLINE/OFFLINE notices.
    CLIENTAGENT_TOON_FRIEND_ONLINE,
    CLIENTAGENT_SEND_DATAGRAM,
];

/// The interest SET_ZONE opens (toontown.rs's ZONE_INTEREST).
const ZONE_INTEREST: u16 = 1;

/// At most this many operations per input.
const MAX_STEPS: usize = 20_000;

/// A request the session sent that the cluster answers.
#[derive(Debug, Clone)]
enum Sent {
    AccountGet { ctx: u32 },
    AccountSet { ctx: u32 },
    AccountCreate { ctx: u32 },
    Create { ctx: u32 },
    AvatarDelete { ctx: u32 },
    GetFields { ctx: u32 },
    GetAll { ctx: u32, doid: u32 },
    Zones(Request),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Login,
    PasswordLogin,
    Heartbeat,
    GetAvatars,
    Create,
    NamePattern,
    Wish,
    WishClear,
    Delete,
    SetAvatar,
    Details,
    Friends,
    RemoveFriend,
    ShardList,
    Security,
    SetShard,
    SetZone,
    GetState,
    Update,
    Disconnect,
    Other,
}

const CLIENT_KINDS: [ClientKind; 29] = [
    ClientKind::Login,
    ClientKind::Login,
    ClientKind::Heartbeat,
    ClientKind::Heartbeat,
    ClientKind::GetAvatars,
    ClientKind::Create,
    ClientKind::Create,
    ClientKind::NamePattern,
    ClientKind::Wish,
    ClientKind::WishClear,
    ClientKind::Delete,
    ClientKind::SetAvatar,
    ClientKind::SetAvatar,
    ClientKind::Details,
    ClientKind::Friends,
    ClientKind::RemoveFriend,
    ClientKind::ShardList,
    ClientKind::Security,
    ClientKind::SetShard,
    ClientKind::SetShard,
    ClientKind::SetZone,
    ClientKind::SetZone,
    ClientKind::SetZone,
    ClientKind::GetState,
    ClientKind::Update,
    ClientKind::Update,
    ClientKind::Disconnect,
    ClientKind::Other,
    ClientKind::PasswordLogin,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    EnterLocation,
    EnterOwner,
    EnterInterest,
    ZonesCount,
    SetField,
    DeleteRam,
    ChangingLocation,
    ChangingOwner,
    ShardRaw,
    AddInterest,
    RemoveInterest,
    SetState,
    SessionObject,
    SendDatagram,
    Eject,
    Drop,
    Other,
}

const SERVER_KINDS: [ServerKind; 22] = [
    ServerKind::EnterLocation,
    ServerKind::EnterLocation,
    ServerKind::EnterLocation,
    ServerKind::EnterOwner,
    ServerKind::EnterInterest,
    ServerKind::EnterInterest,
    ServerKind::ZonesCount,
    ServerKind::SetField,
    ServerKind::SetField,
    ServerKind::DeleteRam,
    ServerKind::ChangingLocation,
    ServerKind::ChangingOwner,
    ServerKind::ShardRaw,
    ServerKind::AddInterest,
    ServerKind::RemoveInterest,
    ServerKind::SetState,
    ServerKind::SessionObject,
    ServerKind::SendDatagram,
    ServerKind::Eject,
    ServerKind::Drop,
    ServerKind::Other,
    ServerKind::Other,
];

struct Harness<'a> {
    inp: Input<'a>,
    ca: Arc<ClientAgent>,
    schema: Arc<Schema>,
    session: Option<Session>,
    out: SessionOut,
    now: Instant,
    closed: bool,
    allocated: u64,
    signed: bool,
    /// Requests the session sent, oldest first (at most 16).
    sent: Vec<Sent>,
    /// Doids the cluster said belong to the account (records and created avatars).
    granted: FxHashSet<u32>,
    /// The same, in the order learned (for the picker).
    granted_list: Vec<u32>,
    /// DBSERVER_ACCOUNT_CREATE_AVATARs not answered yet: context and the slot they fill.
    creating: Vec<(u32, Option<u8>)>,
    /// The slot of the CLIENT_CREATE_AVATAR of this step.
    create_slot: Option<u8>,
    /// Interest ids the server opened (CLIENTAGENT_ADD_INTEREST*).
    server_interests: FxHashSet<u16>,
    /// The server set the state (CLIENTAGENT_SET_STATE).
    server_state: bool,
    /// A successful CLIENT_LOGIN_2_RESP was sent.
    logged_in: bool,
    next_doid: u32,
    classes: [u16; 3],
    num_fields: u16,
    summary: Summary,
    /// Jobs the session asked for, not answered yet.
    jobs: Vec<SessionJob>,
}

impl<'a> Harness<'a> {
    fn new(data: &'a [u8]) -> Harness<'a> {
        // The harness's clock: monotonic steps from here, at a fixed Unix time.
        let now = Instant::now();
        let mut inp = Input { data, pos: 0 };
        let (a, b) = (inp.u8(), inp.u8());
        let schema = schema();
        let shards: Shards = Default::default();
        if b & cfg::DISTRICT_UP != 0 {
            shards
                .lock()
                .insert(DISTRICTS[0], ("Toon Valley".into(), 0));
        }
        let ca = Arc::new(
            ClientAgent::new(0, &config(a, b), schema.clone(), &[], shards, clock(now))
                .expect("the fuzz Toontown ClientAgent builds"),
        );
        let class = |name: &str| schema.dc().class_by_name(name).map_or(u16::MAX, |c| c.id());
        let classes = [
            class("DistributedToon"),
            class("TimeManager"),
            class("DistributedTrolley"),
        ];
        let num_fields = schema.dc().num_fields().min(u16::MAX as usize) as u16;
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        let admitted = if b & cfg::NOT_ADMITTED == 0 {
            assert!(ca.admit_address(ip), "a fresh agent admits the address");
            Some(ip)
        } else {
            None
        };
        let channel = ca.alloc_channel().expect("a fresh agent has channels");
        let mut out = SessionOut::default();
        let session = Session::new(
            ca.clone(),
            channel,
            SocketAddr::new(ip, 40_000),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 6667),
            Vec::new(),
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
            signed: a & cfg::SIGNED != 0,
            sent: Vec::new(),
            granted: FxHashSet::default(),
            granted_list: Vec::new(),
            creating: Vec::new(),
            create_slot: None,
            server_interests: FxHashSet::default(),
            server_state: false,
            logged_in: false,
            next_doid: 100_000_100,
            classes,
            num_fields,
            summary: Summary::default(),
            jobs: Vec::new(),
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
                1..=10 => self.client_built(),
                11..=18 => self.server_built(),
                op::INTERNAL_RAW => {
                    let n = self.inp.len();
                    let body = self.inp.take(n);
                    self.internal_step(body);
                }
                20..=22 => self.time(),
                23..=28 => self.answer(),
                29 | 30 => self.district(),
                _ => self.runtime_eject(),
            }
        }
        self.finish()
    }

    // ---- steps ---------------------------------------------------------------------------

    fn client_step(&mut self, body: &[u8]) {
        // CLIENT_CREATE_AVATAR: u16 context, blob DNA, u8 slot.
        let mut r = Reader::new(body);
        self.create_slot = match r.u16() {
            Ok(CLIENT_CREATE_AVATAR) => (|| {
                r.u16().ok()?;
                r.blob().ok()?;
                r.u8().ok()
            })(),
            _ => None,
        };
        self.out.clear();
        let now = self.now;
        let mut out = std::mem::take(&mut self.out);
        self.s().on_client(now, body, &mut out);
        self.out = out;
        self.check(Step::Client);
    }

    fn internal_step(&mut self, body: &[u8]) {
        let dg = InternalDatagram::parse(body).ok();
        let msgtype = dg.as_ref().map(|d| d.msgtype);
        if let Some(dg) = &dg {
            // What the cluster told the session (for the invariants).
            let mut r = dg.payload_reader();
            // Any of the dialect's answers ends the request of its context (even of another
            // kind), as the session sees it.
            if let (
                DBSERVER_ACCOUNT_GET_RESP
                | DBSERVER_ACCOUNT_SET_RESP
                | DBSERVER_ACCOUNT_CREATE_RESP
                | DBSERVER_ACCOUNT_CREATE_AVATAR_RESP
                | DBSERVER_ACCOUNT_DELETE_AVATAR_RESP
                | DBSERVER_OBJECT_GET_FIELDS_RESP
                | STATESERVER_OBJECT_GET_ALL_RESP,
                Ok(ctx),
            ) = (dg.msgtype, r.clone().u32())
            {
                self.creating.retain(|&(c, _)| c != ctx);
            }
            match dg.msgtype {
                DBSERVER_ACCOUNT_GET_RESP => {
                    if let (Ok(_), Ok(_), Ok(data)) = (r.u32(), r.u8(), r.blob()) {
                        if let Some(a) = Account::decode(data, 0) {
                            for s in &a.slots {
                                self.grant(s.doid);
                            }
                        }
                    }
                }
                DBSERVER_ACCOUNT_CREATE_AVATAR_RESP => {
                    if let (Ok(_), Ok(doid)) = (r.u32(), r.u32()) {
                        self.grant(doid);
                    }
                }
                CLIENTAGENT_ADD_INTEREST | CLIENTAGENT_ADD_INTEREST_MULTIPLE => {
                    if let Ok(id) = r.u16() {
                        self.server_interests.insert(id);
                    }
                }
                CLIENTAGENT_SET_STATE => self.server_state = true,
                _ => {}
            }
        }
        self.create_slot = None;
        self.out.clear();
        let now = self.now;
        let mut out = std::mem::take(&mut self.out);
        self.s().on_internal(now, body, &mut out);
        self.out = out;
        self.check(Step::Internal(msgtype));
    }

    fn grant(&mut self, doid: u32) {
        if doid != 0 && self.granted.insert(doid) && self.granted_list.len() < 64 {
            self.granted_list.push(doid);
        }
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
        // The job worker answers what it was asked meanwhile (a hash is the fuzz hash, cheap to
        // check; now and then the queue was full instead).
        for job in std::mem::take(&mut self.jobs) {
            let result = match &job {
                _ if self.inp.u8() & 7 == 7 => JobResult::Unavailable,
                SessionJob::HashPassword { .. } => JobResult::Hashed(Ok(password_hash().into())),
                SessionJob::CheckPassword { .. } => job.run(),
                // The dummy check always says no (its full-cost hash is skipped here).
                SessionJob::CheckDummy { .. } => JobResult::Checked(false),
            };
            self.out.clear();
            let now = self.now;
            let mut out = std::mem::take(&mut self.out);
            self.s().on_job_done(now, job.id(), result, &mut out);
            self.out = out;
            self.check(Step::Job);
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

    /// The district directory learns of a district going up or down (as the ShardDirectory
    /// role does), then the session hears it on BCHAN_CLIENTS.
    fn district(&mut self) {
        let id = self.district_id();
        let down = self.inp.u8() & 1 == 1;
        let mut p = P::default();
        let msgtype = if down {
            self.ca.shards.lock().remove(&id);
            p.u32(id);
            CLIENTAGENT_SHARD_DOWN
        } else {
            let name = format!("District {}", id % 1000);
            self.ca.shards.lock().insert(id, (name.clone(), 7));
            p.u32(id).blob(name.as_bytes()).u32(7);
            CLIENTAGENT_SHARD_UP
        };
        let mut body = P::default();
        body.u8(1)
            .u64(BCHAN_CLIENTS)
            .u64(0)
            .u16(msgtype)
            .bytes(&p.0);
        self.internal_step(&body.0);
    }

    fn internal_body(&mut self, sender: u64, msgtype: u16, payload: &[u8]) -> Vec<u8> {
        let channel = self.s().channel();
        let mut p = P::default();
        p.u8(1).u64(channel).u64(sender).u16(msgtype).bytes(payload);
        p.0
    }

    /// Cuts or extends a built payload now and then.
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

    /// A doid: often one of the account's (as the cluster said), else a picked one.
    fn doid(&mut self) -> u32 {
        const DOIDS: [u32; 10] = [
            AVATARS[0],
            AVATARS[0],
            AVATARS[1],
            AVATARS[2],
            AVATARS[3],
            OBJECTS[0],
            OBJECTS[1],
            DISTRICTS[0],
            100_000_100,
            0,
        ];
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b if b & 0x80 != 0 && !self.granted_list.is_empty() => {
                self.granted_list[b as usize % self.granted_list.len()]
            }
            b => DOIDS[b as usize % DOIDS.len()],
        }
    }

    fn district_id(&mut self) -> u32 {
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b => [DISTRICTS[0], DISTRICTS[0], DISTRICTS[1], 0][b as usize % 4],
        }
    }

    fn zone(&mut self) -> u32 {
        match self.inp.u8() {
            0xff => self.inp.u32(),
            b => ZONES[b as usize % ZONES.len()],
        }
    }

    fn class(&mut self) -> u16 {
        match self.inp.u8() {
            0xff => self.inp.u16(),
            b => self.classes[b as usize % 3],
        }
    }

    /// A value for the field `name` of `class`: its default, or (one time in four) noise.
    fn value_of(&mut self, class: &str, name: &str) -> Vec<u8> {
        let dc = self.schema.dc();
        let field = dc
            .class_by_name(class)
            .and_then(|c| dc.field_by_name(c, name));
        match (self.inp.u8() % 4, field) {
            (0, _) | (_, None) => {
                let n = (self.inp.u8() % 8) as usize;
                self.inp.take(n).to_vec()
            }
            (_, Some(f)) => dc.default_value(f),
        }
    }

    fn field(&mut self) -> u16 {
        match self.inp.u8() {
            0xff => self.inp.u16(),
            b => b as u16 % self.num_fields.max(1),
        }
    }

    /// A value for `field`: its default, slightly off, a string, or noise.
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
                    let mut p = P::default();
                    let s = self.name();
                    p.blob(s.as_bytes());
                    p.0
                }
                _ => {
                    let n = (self.inp.u8() % 8) as usize;
                    self.inp.take(n).to_vec()
                }
            },
        }
    }

    /// A name: good, bad, long, or literal.
    fn name(&mut self) -> String {
        match self.inp.u8() {
            0xff => {
                let n = self.inp.len();
                String::from_utf8_lossy(self.inp.take(n)).into_owned()
            }
            b => match b % 8 {
                0 => "Flippy".into(),
                1 => "Captain Doodle".into(),
                2 => " Spaces ".into(),
                3 => "a".repeat(33),
                4 => String::new(),
                5 => "Bad:Name\u{e9}".into(),
                6 => "Two  Spaces".into(),
                _ => "Daffy-Duck.Jr!'".into(),
            },
        }
    }

    /// A play token: valid for one account, or not.
    fn token(&mut self) -> String {
        let b = self.inp.u8();
        let name = ACCOUNTS[(b & 1) as usize];
        match (b >> 1) % 8 {
            0..=3 if self.signed => signed_token(name),
            0..=3 => name.into(),
            4 => accounts::sign(SECRET, name, 1),
            5 => accounts::sign("wrong", name, 4_000_000_000),
            // Expires 20 s into the harness's clock: valid or not depending on the time steps
            // before the login (the session reads time only from what it is handed).
            6 if b & 0x80 != 0 => accounts::sign(SECRET, name, FUZZ_UNIX_SECS + 20),
            6 => "v1:a:b:c:d".into(),
            _ => {
                let n = self.inp.len();
                String::from_utf8_lossy(self.inp.take(n)).into_owned()
            }
        }
    }

    /// Required fields of an entering object: the class's defaults, or noise.
    fn required(&mut self, class: u16) -> Vec<u8> {
        let b = self.inp.u8();
        if b % 4 == 3 {
            let n = (self.inp.u8() % 16) as usize;
            return self.inp.take(n).to_vec();
        }
        let mut v = Vec::new();
        if let Some(c) = self.schema.dc().class(class) {
            for &f in c.required_fields() {
                v.extend_from_slice(self.schema.default_value(otpd::roles::ANY_CLASS, f));
            }
        }
        v
    }

    // ---- built datagrams -----------------------------------------------------------------

    #[allow(clippy::too_many_lines)] // one scenario, read top to bottom
    fn client_built(&mut self) {
        let b = self.inp.u8();
        let kind = CLIENT_KINDS[b as usize % CLIENT_KINDS.len()];
        let mut p = P::default();
        match kind {
            ClientKind::Login => {
                let token = self.token();
                let f = self.inp.u8();
                let version = if f & 3 == 0 { "sv1.0.6.9" } else { VERSION };
                let hash = if f & 12 == 0 {
                    self.inp.u32()
                } else {
                    self.ca.hash
                };
                let token_type = match (f >> 4) % 4 {
                    0 => 3,
                    1 => self.inp.u32(),
                    _ => 2,
                };
                p.u16(CLIENT_LOGIN_2)
                    .blob(token.as_bytes())
                    .blob(version.as_bytes())
                    .u32(hash)
                    .u32(token_type);
            }
            ClientKind::PasswordLogin => {
                let b = self.inp.u8();
                let name = match b % 4 {
                    0 | 1 => ACCOUNTS[(b >> 2) as usize % 2].as_bytes().to_vec(),
                    2 => self.name().into_bytes(),
                    _ => {
                        let n = (self.inp.u8() % 80) as usize;
                        self.inp.take(n).to_vec()
                    }
                };
                let f = self.inp.u8();
                let version = if f & 3 == 0 { "sv1.0.6.9" } else { VERSION };
                let hash = if f & 12 == 0 {
                    self.inp.u32()
                } else {
                    self.ca.hash
                };
                let password = match (f >> 4) % 4 {
                    0 | 1 => PASSWORD.as_bytes().to_vec(),
                    2 => WRONG_PASSWORD.as_bytes().to_vec(),
                    _ => {
                        let n = self.inp.u8() as usize;
                        self.inp.take(n).to_vec()
                    }
                };
                p.u16(CLIENT_LOGIN)
                    .blob(&name)
                    .u32(0x7f00_0001)
                    .u16(5150)
                    .blob(version.as_bytes())
                    .u32(hash)
                    .blob(&password)
                    .u8(f >> 6);
            }
            ClientKind::Heartbeat => {
                p.u16(CLIENT_HEARTBEAT_2003);
            }
            ClientKind::GetAvatars => {
                p.u16(CLIENT_GET_AVATARS);
            }
            ClientKind::Create => {
                let slot = match self.inp.u8() {
                    0xff => self.inp.u8(),
                    s => s % 8,
                };
                // Half the time a DNA the client writes (each field within its table), else
                // any bytes (refused unless they happen to be one).
                let n = (self.inp.u8() % 32) as usize;
                let dna = if n >= 16 {
                    let sizes = [
                        dna::HEADS,
                        dna::TORSOS,
                        dna::LEGS,
                        2,
                        dna::SHIRTS,
                        dna::CLOTHES_COLORS,
                        dna::SLEEVES,
                        dna::CLOTHES_COLORS,
                        dna::BOY_SHORTS,
                        dna::CLOTHES_COLORS,
                        dna::BODY_COLORS,
                        dna::BODY_COLORS,
                        dna::BODY_COLORS,
                        dna::BODY_COLORS,
                    ];
                    let mut v = vec![b't'];
                    v.extend(sizes.iter().map(|&k| self.inp.u8() % k));
                    v
                } else {
                    self.inp.take(n).to_vec()
                };
                p.u16(CLIENT_CREATE_AVATAR).u16(0).blob(&dna).u8(slot);
            }
            ClientKind::NamePattern => {
                let doid = self.doid();
                p.u16(CLIENT_SET_NAME_PATTERN).u32(doid);
                for i in 0..4u16 {
                    let (index, cap) = match self.inp.u8() {
                        0xff => (self.inp.u16(), self.inp.u16()),
                        // Mostly the part that fits the position (names.txt), or unused.
                        b => match b % 4 {
                            0 | 1 => ([0, 1, 2, 3][i as usize], (b >> 2) as u16 % 2),
                            2 => (u16::MAX, 0),
                            _ => ((b >> 2) as u16 % 6, (b >> 5) as u16 % 3),
                        },
                    };
                    p.u16(index).u16(cap);
                }
            }
            ClientKind::Wish => {
                let doid = match self.inp.u8() {
                    b if b % 3 == 0 => 0,
                    _ => self.doid(),
                };
                let name = self.name();
                p.u16(CLIENT_SET_WISHNAME).u32(doid).blob(name.as_bytes());
            }
            ClientKind::WishClear => {
                let doid = self.doid();
                let action = self.inp.u8() % 3;
                p.u16(CLIENT_SET_WISHNAME_CLEAR).u32(doid).u8(action);
            }
            ClientKind::Delete => {
                let doid = self.doid();
                p.u16(CLIENT_DELETE_AVATAR).u32(doid);
            }
            ClientKind::SetAvatar => {
                let doid = match self.inp.u8() {
                    b if b % 5 == 0 => 0,
                    _ => self.doid(),
                };
                p.u16(CLIENT_SET_AVATAR).u32(doid);
            }
            ClientKind::Details => {
                let doid = self.doid();
                p.u16(CLIENT_GET_AVATAR_DETAILS).u32(doid);
            }
            ClientKind::Friends => {
                p.u16(CLIENT_GET_FRIEND_LIST);
            }
            ClientKind::RemoveFriend => {
                let doid = self.doid();
                p.u16(CLIENT_REMOVE_FRIEND).u32(doid);
            }
            ClientKind::ShardList => {
                p.u16(CLIENT_GET_SHARD_LIST);
            }
            ClientKind::Security => {
                let n = (self.inp.u8() % 16) as usize;
                let v = self.inp.take(n).to_vec();
                let t = self.inp.u8() as u32;
                p.u16(CLIENT_SET_SECURITY).blob(&v).u32(t);
            }
            ClientKind::SetShard => {
                let d = self.district_id();
                p.u16(CLIENT_SET_SHARD).u32(d);
            }
            ClientKind::SetZone => {
                let zone = self.zone() as u16;
                p.u16(CLIENT_SET_ZONE).u16(zone);
                // Later clients' visible zones: none, a few, or many.
                match self.inp.u8() {
                    0xff => {
                        let n = self.inp.u16() % 1000;
                        for z in 0..n {
                            p.u16(3000 + z);
                        }
                    }
                    b if b % 4 == 3 => {
                        for _ in 0..(b >> 2) % 6 {
                            let z = self.zone() as u16;
                            p.u16(z);
                        }
                    }
                    _ => {}
                }
            }
            ClientKind::GetState => {
                p.u16(CLIENT_GET_STATE);
            }
            ClientKind::Update => {
                let doid = self.doid();
                let b = self.inp.u8();
                let (field, v) = if b & 1 == 0 {
                    // A field the client can name: its number from the 2003 rule as this
                    // harness reads the DC text, its value from the field of that name.
                    let cname = ["DistributedToon", "TimeManager", "DistributedTrolley"]
                        [(b >> 1) as usize % 3];
                    let names: Vec<&(String, String)> = client_numbers()
                        .keys()
                        .filter(|(c, _)| c == cname)
                        .collect();
                    let mut names: Vec<&str> = names.iter().map(|(_, f)| f.as_str()).collect();
                    names.sort_unstable();
                    let name = names[self.inp.u8() as usize % names.len().max(1)];
                    let number = client_numbers()[&(cname.to_string(), name.to_string())];
                    let value = self.value_of(cname, name);
                    (number, value)
                } else {
                    let field = self.field();
                    (field, self.value(field))
                };
                p.u16(CLIENT_OBJECT_UPDATE_FIELD)
                    .u32(doid)
                    .u16(field)
                    .bytes(&v);
            }
            ClientKind::Disconnect => {
                p.u16(CLIENT_DISCONNECT_2003);
            }
            ClientKind::Other => {
                let t = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    b => b as u16 % 80,
                };
                let n = (self.inp.u8() % 16) as usize;
                let rest = self.inp.take(n);
                p.u16(t).bytes(rest);
            }
        }
        let mut body = p.0;
        self.tail(&mut body);
        self.client_step(&body);
    }

    #[allow(clippy::too_many_lines)] // one scenario, read top to bottom
    fn server_built(&mut self) {
        let kind = SERVER_KINDS[self.inp.u8() as usize % SERVER_KINDS.len()];
        let sender = match self.inp.u8() {
            0xff => self.inp.u64(),
            b => [AI, AI, AI, DB, 4_000, 0][b as usize % 6],
        };
        let mut p = P::default();
        let msgtype = match kind {
            ServerKind::EnterLocation | ServerKind::EnterOwner => {
                let doid = self.doid();
                let parent = self.district_id();
                let zone = self.zone();
                let class = self.class();
                let req = self.required(class);
                let other = self.inp.u8() & 1 == 1;
                p.u32(doid).u32(parent).u32(zone).u16(class).bytes(&req);
                match (kind == ServerKind::EnterOwner, other) {
                    (true, false) => STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED,
                    (true, true) => STATESERVER_OBJECT_ENTER_OWNER_WITH_REQUIRED_OTHER,
                    (false, false) => STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED,
                    (false, true) => STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED_OTHER,
                }
            }
            ServerKind::EnterInterest => {
                let ctx = self.zones_context();
                let doid = self.doid();
                let parent = self.district_id();
                let zone = self.zone();
                let class = self.class();
                let req = self.required(class);
                p.u32(ctx)
                    .u32(doid)
                    .u32(parent)
                    .u32(zone)
                    .u16(class)
                    .bytes(&req);
                STATESERVER_OBJECT_ENTER_INTEREST_WITH_REQUIRED
            }
            ServerKind::ZonesCount => {
                let ctx = self.zones_context();
                let n = self.inp.u8() as u32 % 5;
                p.u32(ctx).u32(n);
                STATESERVER_OBJECT_GET_ZONES_COUNT_RESP
            }
            ServerKind::SetField => {
                let doid = self.doid();
                let many = self.inp.u8() & 1 == 1;
                p.u32(doid);
                if many {
                    let n = self.inp.u8() % 4;
                    p.u16(n as u16);
                    for _ in 0..n {
                        let f = self.field();
                        let v = self.value(f);
                        p.u16(f).bytes(&v);
                    }
                    STATESERVER_OBJECT_SET_FIELDS
                } else {
                    let f = self.field();
                    let v = self.value(f);
                    p.u16(f).bytes(&v);
                    STATESERVER_OBJECT_SET_FIELD
                }
            }
            ServerKind::DeleteRam => {
                let doid = self.doid();
                p.u32(doid);
                STATESERVER_OBJECT_DELETE_RAM
            }
            ServerKind::ChangingLocation => {
                let doid = self.doid();
                let (parent, zone) = (self.district_id(), self.zone());
                let (op, oz) = (self.district_id(), self.zone());
                p.u32(doid).u32(parent).u32(zone).u32(op).u32(oz);
                STATESERVER_OBJECT_CHANGING_LOCATION
            }
            ServerKind::ChangingOwner => {
                let doid = self.doid();
                let own = self.s().channel();
                let new_owner = [own, 77_000_000, 0][self.inp.u8() as usize % 3];
                p.u32(doid).u64(new_owner).u64(own);
                STATESERVER_OBJECT_CHANGING_OWNER
            }
            ServerKind::ShardRaw => {
                // Straight to the session, without the directory knowing.
                let id = self.district_id();
                let up = self.inp.u8() & 1 == 0;
                p.u32(id);
                if up {
                    let name = self.name();
                    p.blob(name.as_bytes()).u32(1);
                    CLIENTAGENT_SHARD_UP
                } else {
                    CLIENTAGENT_SHARD_DOWN
                }
            }
            ServerKind::AddInterest => {
                let id = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    b => (b % 3) as u16,
                };
                let parent = self.district_id();
                let zone = self.zone();
                p.u16(id).u32(parent).u32(zone);
                CLIENTAGENT_ADD_INTEREST
            }
            ServerKind::RemoveInterest => {
                let id = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    b => (b % 3) as u16,
                };
                p.u16(id);
                CLIENTAGENT_REMOVE_INTEREST
            }
            ServerKind::SetState => {
                let st = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    b => (b % 4) as u16,
                };
                p.u16(st);
                CLIENTAGENT_SET_STATE
            }
            ServerKind::SessionObject => {
                let doid = self.doid();
                p.u32(doid);
                if self.inp.u8() & 1 == 0 {
                    CLIENTAGENT_ADD_SESSION_OBJECT
                } else {
                    CLIENTAGENT_REMOVE_SESSION_OBJECT
                }
            }
            ServerKind::SendDatagram => {
                let n = (self.inp.u8() % 32) as usize;
                let v = self.inp.take(n).to_vec();
                p.blob(&v);
                CLIENTAGENT_SEND_DATAGRAM
            }
            ServerKind::Eject => {
                let code = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    b => [LOST_LOGGED_IN_ELSEWHERE, LOST_LOGIN_PROBLEM, 153, 0][b as usize % 4],
                };
                let name = self.name();
                p.u16(code).blob(name.as_bytes());
                CLIENTAGENT_EJECT
            }
            ServerKind::Drop => CLIENTAGENT_DROP,
            ServerKind::Other => {
                let t = match self.inp.u8() {
                    0xff => self.inp.u16(),
                    // The 2003 dialect's own answers (with any context), or anything.
                    b => [
                        DBSERVER_ACCOUNT_GET_RESP,
                        DBSERVER_ACCOUNT_SET_RESP,
                        DBSERVER_ACCOUNT_CREATE_RESP,
                        DBSERVER_ACCOUNT_CREATE_AVATAR_RESP,
                        DBSERVER_OBJECT_GET_FIELDS_RESP,
                        STATESERVER_OBJECT_GET_ALL_RESP,
                        CLIENTAGENT_GET_TLVS,
                        CLIENTAGENT_GET_NETWORK_ADDRESS,
                        CLIENTAGENT_SET_FIELDS_SENDABLE,
                        CLIENTAGENT_TOON_FRIEND_ONLINE,
                    ][b as usize % 9],
                };
                let ctx = self.inp.u8() as u32 % 12;
                let n = (self.inp.u8() % 24) as usize;
                let rest = self.inp.take(n);
                p.u32(ctx).bytes(rest);
                t
            }
        };
        let mut payload = p.0;
        self.tail(&mut payload);
        let body = self.internal_body(sender, msgtype, &payload);
        self.internal_step(&body);
    }

    /// A context of one of the session's interest requests, or another.
    fn zones_context(&mut self) -> u32 {
        let b = self.inp.u8();
        if b == 0xff {
            return self.inp.u32();
        }
        let reqs: Vec<u32> = self
            .sent
            .iter()
            .filter_map(|s| match s {
                Sent::Zones(r) => Some(r.context),
                _ => None,
            })
            .collect();
        match reqs.len() {
            0 => (b % 4) as u32 + 1,
            n => reqs[n - 1 - b as usize % n],
        }
    }

    /// The cluster answers one of the session's requests (see [`op::ANSWER`]).
    #[allow(clippy::too_many_lines)] // one scenario, read top to bottom
    fn answer(&mut self) {
        let which = self.inp.u8();
        let sent = if which == 0xff {
            let ctx = self.inp.u32();
            match self.inp.u16() % 8 {
                0 => Sent::AccountGet { ctx },
                1 => Sent::AccountSet { ctx },
                6 => Sent::AccountCreate { ctx },
                7 => Sent::AvatarDelete { ctx },
                2 => Sent::Create { ctx },
                3 => Sent::GetFields { ctx },
                4 => Sent::GetAll { ctx, doid: 0 },
                _ => Sent::Zones(Request {
                    context: ctx,
                    parent: DISTRICTS[0],
                    zones: vec![2000],
                }),
            }
        } else if self.sent.is_empty() {
            return;
        } else {
            let n = self.sent.len();
            self.sent.remove(n - 1 - which as usize % n)
        };
        let v = self.inp.u8();
        let mut p = P::default();
        let msgtype = match sent {
            Sent::AccountGet { ctx } => {
                p.u32(ctx);
                match v % 5 {
                    0 | 1 => {
                        let a = self.record();
                        p.u8(0).blob(&a.encode());
                    }
                    2 => {
                        p.u8(1).blob(&[]);
                    }
                    3 => {
                        p.u8(2).blob(&[]);
                    }
                    _ => {
                        let n = self.inp.len();
                        let data = self.inp.take(n).to_vec();
                        p.u8(0).blob(&data);
                    }
                }
                DBSERVER_ACCOUNT_GET_RESP
            }
            Sent::AccountSet { ctx } => {
                p.u32(ctx).u8(u8::from(v % 4 == 3));
                DBSERVER_ACCOUNT_SET_RESP
            }
            Sent::AccountCreate { ctx } => {
                // Made, the name taken by a racing login, or failed.
                p.u32(ctx).u8([0, 0, 1, 2][v as usize % 4]);
                DBSERVER_ACCOUNT_CREATE_RESP
            }
            Sent::Create { ctx } => {
                let doid = match v % 4 {
                    0 => 0,
                    1 => self.doid(),
                    _ => {
                        self.next_doid += 1;
                        self.next_doid
                    }
                };
                p.u32(ctx).u32(doid);
                DBSERVER_ACCOUNT_CREATE_AVATAR_RESP
            }
            Sent::AvatarDelete { ctx } => {
                // Deleted, refused (the stored record differs), or failed.
                p.u32(ctx).u8([0, 0, 1, 2][v as usize % 4]);
                DBSERVER_ACCOUNT_DELETE_AVATAR_RESP
            }
            Sent::GetFields { ctx } => {
                p.u32(ctx);
                let toon = self.classes[0];
                let field = |name: &str| {
                    self.schema
                        .dc()
                        .class(toon)
                        .and_then(|c| self.schema.dc().field_by_name(c, name))
                        .map_or(u16::MAX, |f| f.id())
                };
                let (fname, fdna, fhp) = (field("setName"), field("setDNAString"), field("setHp"));
                match v % 5 {
                    0 | 1 => {
                        let name = self.name();
                        let len = (self.inp.u8() % 16) as usize;
                        let dna = self.inp.take(len).to_vec();
                        p.u8(1)
                            .u16(3)
                            .u16(fhp)
                            .u16(15)
                            .u16(fname)
                            .blob(name.as_bytes())
                            .u16(fdna)
                            .blob(&dna);
                    }
                    2 => {
                        p.u8(0);
                    }
                    3 => {
                        p.u8(1).u16(1).u16(fname).blob(b"Only");
                    }
                    _ => {
                        let f = self.field();
                        let val = self.value(f);
                        p.u8(1).u16(self.inp.u8() as u16 % 3).u16(f).bytes(&val);
                    }
                }
                DBSERVER_OBJECT_GET_FIELDS_RESP
            }
            Sent::GetAll { ctx, doid } => {
                let class = self.classes[0];
                let req = self.required(class);
                p.u32(ctx).u32(doid);
                if v % 4 != 3 {
                    p.u32(0).u32(0).u16(class).bytes(&req);
                }
                STATESERVER_OBJECT_GET_ALL_RESP
            }
            Sent::Zones(r) => {
                self.zones_answer(&r, v);
                return;
            }
        };
        let mut payload = p.0;
        self.tail(&mut payload);
        let sender = if msgtype == STATESERVER_OBJECT_GET_ALL_RESP {
            4_000
        } else {
            DB
        };
        let body = self.internal_body(sender, msgtype, &payload);
        self.internal_step(&body);
    }

    /// An account record: a few slots holding picked avatars, in any name state.
    fn record(&mut self) -> Account {
        let n = self.inp.u8() % 8;
        let mut a = Account::new(n, 1_000);
        if n % 2 == 1 {
            a.password = Some(password_hash().to_string());
        }
        for s in &mut a.slots {
            let b = self.inp.u8();
            s.doid = match b % 3 {
                0 => 0,
                _ => AVATARS[(b >> 2) as usize % 3],
            };
            s.name_state = (b >> 4) % 6;
            if s.name_state != 0 {
                s.wish_name = "Wishy".into();
            }
        }
        a
    }

    /// The StateServer answers an interest request: its count (at any place) and objects.
    fn zones_answer(&mut self, r: &Request, v: u8) {
        let n = v % 4;
        let at = self.inp.u8() % (n + 1);
        let other = v & 0x80 != 0;
        for i in 0..=n {
            let mut p = P::default();
            let msgtype = if i == at {
                p.u32(r.context).u32(n as u32);
                STATESERVER_OBJECT_GET_ZONES_COUNT_RESP
            } else {
                let doid = match self.inp.u8() {
                    0xff => self.inp.u32(),
                    b => [OBJECTS[0], OBJECTS[1], AVATARS[3], AVATARS[0]][b as usize % 4],
                };
                let zone = if r.zones.is_empty() {
                    0
                } else {
                    r.zones[self.inp.u8() as usize % r.zones.len()]
                };
                let class = if doid == OBJECTS[0] {
                    self.classes[1]
                } else if doid == OBJECTS[1] {
                    self.classes[2]
                } else {
                    self.classes[0]
                };
                let req = self.required(class);
                p.u32(r.context)
                    .u32(doid)
                    .u32(r.parent)
                    .u32(zone)
                    .u16(class)
                    .bytes(&req);
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

    #[allow(clippy::too_many_lines)] // one scenario, read top to bottom
    fn check(&mut self, step: Step) {
        let n = self.summary.steps;
        // Jobs are answered at the next time step (see `time`).
        let jobs = std::mem::take(&mut self.out.jobs);
        if self.closed {
            assert!(jobs.is_empty(), "step {n}: a closed session asked for jobs");
        }
        self.jobs.extend(jobs);
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
        // To the client: consistent frames of 2003 message types (anything in SEND_DATAGRAM).
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
                    "step {n} ({step:?}): message type {t} is not one the 2003 client knows"
                );
                if t == CLIENT_LOGIN_RESP {
                    let code = f.get(2).copied();
                    assert!(
                        matches!(code, Some(0 | 12 | 14 | 129)),
                        "step {n} ({step:?}): LOGIN_RESP code {code:?} would make the client quit"
                    );
                }
                if (t == CLIENT_LOGIN_2_RESP || t == CLIENT_LOGIN_RESP) && f.get(2) == Some(&0) {
                    assert!(
                        !self.logged_in,
                        "step {n} ({step:?}): a second successful login"
                    );
                    self.logged_in = true;
                }
            }
            if let Some(t) = msgtype {
                self.summary.to_client.push(t);
            }
            last = Some(*f);
        }
        // Into the cluster: well-formed, from the client's channel, of the dialect's types;
        // the account's avatars only are activated, owned, renamed or deleted.
        let types = internal_frames(&out.datagrams, s.channel(), n, step, &TO_CLUSTER);
        for (f, &t) in frames_unchecked(&out.datagrams).iter().zip(&types) {
            self.summary.datagrams.push(t);
            let count = f[0] as usize;
            let to = |i: usize| {
                f.get(1 + i * 8..9 + i * 8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            };
            // Never, for the client, to the control channel (its datagrams have no sender: an
            // MD upstream would read this one as a control message) nor to channel 0.
            for i in (0..count).filter(|_| step == Step::Client) {
                let c = to(i).unwrap_or(0);
                assert!(
                    c != CONTROL_CHANNEL && c != 0,
                    "step {n} ({step:?}): message {t} to channel {c}"
                );
            }
            let payload = &f[1 + count * 8 + 10..];
            let mut r = Reader::new(payload);
            match t {
                DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS | DBSERVER_OBJECT_SET_FIELD => {
                    let doid = r.u32().expect("a doid");
                    assert!(
                        self.granted.contains(&doid) && doid != 0,
                        "step {n} ({step:?}): message {t} for avatar {doid}, not the account's ({:?})",
                        self.granted
                    );
                    if t == DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS {
                        self.summary.activated.push(doid);
                    }
                }
                STATESERVER_OBJECT_SET_OWNER => {
                    let doid = to(0).unwrap_or(0);
                    assert!(
                        count == 1 && self.granted.contains(&(doid as u32)),
                        "step {n} ({step:?}): SET_OWNER of {doid}, not the account's"
                    );
                    assert_eq!(r.u64().ok(), Some(s.channel()), "step {n}: owner");
                }
                DBSERVER_ACCOUNT_DELETE_AVATAR => {
                    let doid = (|| {
                        r.u32().ok()?;
                        r.blob().ok()?;
                        r.u8().ok()?;
                        r.u8().ok()?;
                        r.u32().ok()
                    })()
                    .expect("context, account, slot, slots, doid");
                    assert!(
                        self.granted.contains(&doid),
                        "step {n} ({step:?}): deleted avatar {doid}, not the account's ({:?})",
                        self.granted
                    );
                }
                DBSERVER_ACCOUNT_CREATE_AVATAR => {
                    // One avatar created per slot at a time (the database would refuse the
                    // second), for the client's own account, in the slot it asked for.
                    let ctx = r.u32().expect("a context");
                    r.blob().expect("an account name");
                    let slot = Some(r.u8().expect("a slot"));
                    assert!(
                        step != Step::Client || slot == self.create_slot,
                        "step {n} ({step:?}): slot {slot:?} created for a CREATE_AVATAR of {:?}",
                        self.create_slot
                    );
                    assert!(
                        !self.creating.iter().any(|&(_, s)| s == slot),
                        "step {n} ({step:?}): a second avatar created in slot {slot:?} before the first is answered"
                    );
                    if self.creating.len() >= 64 {
                        self.creating.remove(0);
                    }
                    self.creating.push((ctx, slot));
                }
                STATESERVER_OBJECT_SET_LOCATION => {
                    let doid = to(0).unwrap_or(0);
                    assert!(
                        self.granted.contains(&(doid as u32)),
                        "step {n} ({step:?}): moved {doid}, not the account's"
                    );
                    let (parent, zone) = (r.u32().expect("parent"), r.u32().expect("zone"));
                    self.summary.locations.push((parent, zone));
                }
                _ => {}
            }
        }
        check_events(&out.events, n, step);
        if let Some(c) = check_end(s, out, last, n, step) {
            self.closed = true;
            self.summary.close = Some(c);
        }
        // Exactly this session is counted, in its state; ESTABLISHED only after a login.
        let state = s.state();
        assert!(state <= STATE_ESTABLISHED, "step {n}: state {state}");
        for (i, g) in self.ca.stats.by_state.iter().enumerate() {
            assert_eq!(
                g.load(Ordering::Relaxed),
                u64::from(i == state as usize),
                "step {n} ({step:?}): gauge of state {i} in state {state}"
            );
        }
        assert!(
            state != STATE_ESTABLISHED || self.logged_in || self.server_state,
            "step {n} ({step:?}): ESTABLISHED without a login"
        );
        self.summary.max_state = self.summary.max_state.max(state);
        self.summary.final_state = state;
        assert_eq!(s.allocated_channel(), self.allocated);
        // What the session keeps: what it shows is what it knows; the client's own interest
        // is SET_ZONE's, within max_visible_zones (and the quiet zone).
        if let Err(e) = s.check_invariants() {
            panic!("step {n} ({step:?}): {e}");
        }
        for (id, zones) in s.interest_zone_counts() {
            let server = self.server_interests.contains(&id);
            assert!(
                id == ZONE_INTEREST || server,
                "step {n} ({step:?}): interest {id} the client could not open"
            );
            if !server {
                let max = self.ca.toontown.max_visible_zones.max(1) + 1;
                assert!(
                    zones <= max,
                    "step {n} ({step:?}): SET_ZONE interest of {zones} zones (max {max})"
                );
            }
        }
        if step == Step::Time && !self.closed {
            check_nothing_due(s, self.now, n);
        }
        // Remember the requests so that the cluster's answers can connect.
        for f in frames_unchecked(&out.datagrams) {
            if let Some(sent) = parse_sent(f) {
                if self.sent.len() >= 16 {
                    self.sent.remove(0);
                }
                self.sent.push(sent);
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
                CLIENTAGENT_SEND_DATAGRAM,
            ],
        );
        self.summary.on_closed.extend(sent);
        self.summary
    }
}

/// A request of the session the cluster answers, from its datagram.
fn parse_sent(f: &[u8]) -> Option<Sent> {
    if let Some(r) = parse_request(f) {
        return Some(Sent::Zones(r));
    }
    let dg = InternalDatagram::parse(f).ok()?;
    let mut r = dg.payload_reader();
    let ctx = r.u32().ok()?;
    Some(match dg.msgtype {
        DBSERVER_ACCOUNT_GET => Sent::AccountGet { ctx },
        DBSERVER_ACCOUNT_SET => Sent::AccountSet { ctx },
        DBSERVER_ACCOUNT_CREATE => Sent::AccountCreate { ctx },
        DBSERVER_ACCOUNT_CREATE_AVATAR => Sent::Create { ctx },
        DBSERVER_ACCOUNT_DELETE_AVATAR => Sent::AvatarDelete { ctx },
        DBSERVER_OBJECT_GET_FIELDS => Sent::GetFields { ctx },
        STATESERVER_OBJECT_GET_ALL => Sent::GetAll {
            ctx,
            doid: r.u32().ok()?,
        },
        _ => return None,
    })
}

// ---- writing scripts -------------------------------------------------------------------

/// Writes a script for [`run_toontown`] with exact values (for hand-made sequences).
#[derive(Debug, Clone)]
pub struct Script {
    bytes: Vec<u8>,
}

impl Script {
    /// A script over configuration bytes `a` and `b` (see [`cfg`]).
    pub fn new(a: u8, b: u8) -> Script {
        Script { bytes: vec![a, b] }
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

    /// A client datagram (message type and payload, without length tag).
    pub fn client(&mut self, msgtype: u16, payload: &[u8]) -> &mut Self {
        self.bytes.push(op::CLIENT_RAW);
        self.len(payload.len() + 2);
        self.bytes.extend_from_slice(&msgtype.to_le_bytes());
        self.bytes.extend_from_slice(payload);
        self
    }

    /// CLIENT_LOGIN_2 with this token, the right version and hash, token type 2.
    pub fn login(&mut self, token: &str) -> &mut Self {
        let mut p = P::default();
        p.blob(token.as_bytes())
            .blob(VERSION.as_bytes())
            .u32(hash())
            .u32(2);
        self.client(CLIENT_LOGIN_2, &p.0)
    }

    /// CLIENT_LOGIN with this name, password and createFlag, the right version and hash.
    pub fn password_login(&mut self, name: &str, password: &str, create: bool) -> &mut Self {
        let mut p = P::default();
        p.blob(name.as_bytes())
            .u32(0x7f00_0001)
            .u16(5150)
            .blob(VERSION.as_bytes())
            .u32(hash())
            .blob(password.as_bytes())
            .u8(create as u8);
        self.client(CLIENT_LOGIN, &p.0)
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

    /// The cluster answers the session's newest outstanding request with `variant` (see
    /// [`op::ANSWER`]); `extra` is what that variant reads next, ending (except for interest
    /// answers) with the byte that may cut or extend the payload (2: leave it as built).
    pub fn answer(&mut self, variant: u8, extra: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(&[op::ANSWER, 0, variant]);
        self.bytes.extend_from_slice(extra);
        self
    }

    /// The district directory hears district `DISTRICTS[i]` go up.
    pub fn district_up(&mut self, i: u8) -> &mut Self {
        self.bytes.extend_from_slice(&[op::DISTRICT, 0xff]);
        self.bytes
            .extend_from_slice(&DISTRICTS[i as usize % 2].to_le_bytes());
        self.bytes.push(0);
        self
    }

    /// `ms` milliseconds pass, then `on_time`.
    pub fn advance(&mut self, ms: u32) -> &mut Self {
        self.bytes.extend_from_slice(&[op::TIME, 0xff]);
        self.bytes.extend_from_slice(&ms.to_le_bytes());
        self
    }

    /// Raw script bytes (ops and arguments).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

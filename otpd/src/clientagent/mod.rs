//! The ClientAgent: the only door for untrusted clients. `ClientAgent` is what every session of
//! one client listener shares (its settings, the schema and hash, the UberDOGs, its channel
//! range, its counters); `session` is one client's sans-IO state machine (its core), `dialect`
//! the seam between it and the two client protocols (`dialect/astron.rs`,
//! `dialect/toontown/`); `proxy` reads the HAProxy PROXY header some listeners expect first;
//! `numbering` the 2003 client's field numbers. The session's fuzz harnesses live outside the
//! product, in `otp-testkit`.

pub mod accounts;
pub mod dialect;
pub mod login_limits;
pub mod numbering;
pub mod proxy;
pub mod session;
pub mod tls;

pub use dialect::toontown;

use crate::config::{ClientAgentConfig, ClientLimits, UberDog};
use crate::roles::Schema;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who may open interests (`client.add_interest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterestPolicy {
    /// Anywhere.
    Enabled,
    /// Only under parents the client can see (Astron's default).
    Visible,
    /// Never: interests are the server's business (CLIENTAGENT_ADD_INTEREST).
    Disabled,
}

#[derive(Debug, Clone, Copy)]
pub struct UberDogInfo {
    pub class: u16,
    pub anonymous: bool,
}

/// The channels handed to clients: `min..=max` in order, then freed ones, oldest first.
#[derive(Debug)]
struct ChannelTracker {
    next: u64,
    max: u64,
    free: VecDeque<u64>,
}

impl ChannelTracker {
    fn alloc(&mut self) -> Option<u64> {
        if self.next <= self.max {
            let c = self.next;
            self.next += 1;
            return Some(c);
        }
        self.free.pop_front()
    }
}

/// Counters for the metrics endpoint.
#[derive(Default)]
pub struct ClientAgentStats {
    /// Sessions now in NEW, ANONYMOUS, ESTABLISHED.
    pub by_state: [AtomicU64; 3],
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    /// Ejects by code (rare: a lock is fine).
    pub ejects: Mutex<BTreeMap<u16, u64>>,
    /// Refused logins by cause: wrong name or password, throttled, busy (password logins),
    /// banned (both logins).
    pub logins_refused: [AtomicU64; 4],
}

/// Why a password login was refused (the index of `ClientAgentStats::logins_refused`, and
/// the `cause` of its `client-login-refused` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// A wrong name or password (and the other checks of what the client typed).
    Credentials = 0,
    /// Too many failures from the address or for the account: refused without a hash.
    Throttled = 1,
    /// The hashing queue was full: nothing counted against the player.
    Busy = 2,
    /// The account is banned (DBSERVER_ACCOUNT_SET_BAN): a token or a password login.
    Banned = 3,
}

impl LoginRefusal {
    pub const ALL: [LoginRefusal; 4] = [
        LoginRefusal::Credentials,
        LoginRefusal::Throttled,
        LoginRefusal::Busy,
        LoginRefusal::Banned,
    ];
    pub fn label(self) -> &'static str {
        match self {
            LoginRefusal::Credentials => "credentials",
            LoginRefusal::Throttled => "throttled",
            LoginRefusal::Busy => "busy",
            LoginRefusal::Banned => "banned",
        }
    }
}

/// One client listener and everything its sessions share.
/// Wall-clock time as the runtime read it once: the Unix time at one monotonic instant.
/// Sessions turn the `now` they are handed into Unix time with it (token expiry, the server
/// time a 2003 client is sent, account dates), so they never read a clock themselves and a
/// test can run them on a fake one.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    pub at: Instant,
    /// Time since the Unix epoch at `at`.
    pub unix: Duration,
}

impl WallClock {
    /// The Unix time at `now`.
    pub fn unix_at(&self, now: Instant) -> Duration {
        self.unix + now.saturating_duration_since(self.at)
    }
}

pub struct ClientAgent {
    /// Position among the cluster's client agents (the runtime's listener index).
    pub index: usize,
    pub bind: String,
    pub version: String,
    pub hash: u32,
    pub schema: Arc<Schema>,
    pub uberdogs: FxHashMap<u32, UberDogInfo>,
    pub relocate: bool,
    pub interests: InterestPolicy,
    pub send_hash: bool,
    pub send_version: bool,
    pub heartbeat_timeout: Option<Duration>,
    pub interest_timeout: Duration,
    /// Unsent bytes a client may have queued; 0 = unlimited.
    pub write_buffer_size: usize,
    pub write_timeout: Option<Duration>,
    /// How long outgoing datagrams may wait to be coalesced into one write; None = no wait.
    pub flush_delay: Option<Duration>,
    /// The longest spacing of writes to one client a busy core may use (zero = none).
    pub busy_flush_delay_max: Duration,
    /// New clients are ejected (131) while this process's MD has lost its upstream MD.
    pub refuse_clients_without_upstream: bool,
    pub haproxy: bool,
    /// Peers whose PROXY headers are believed (with `haproxy`).
    pub proxy_from: proxy::TrustedProxies,
    pub limits: ClientLimits,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub dialect: crate::config::Dialect,
    pub toontown: crate::config::ToontownConfig,
    /// The districts announced to this process (Toontown 2003 listeners).
    pub shards: toontown::Shards,
    pub name_parts: Option<toontown::NameParts>,
    /// Zones visible from each zone (Toontown 2003 streets).
    pub visibility: FxHashMap<u32, Vec<u32>>,
    /// The client's field numbers where they are not the cluster's (Toontown 2003 listeners:
    /// the 2003 client numbers fields per class).
    pub numbering: Option<numbering::ClientNumbering>,
    /// Where fields carry the sender's own avatar id (Toontown 2003 listeners:
    /// `toontown.avatar_id_fields`, resolved against the DC files).
    pub avatar_id_args: toontown::AvatarIdArgs,
    /// Astron listeners: the field operators' system messages are sent as, and whether it
    /// takes an `aboutId` before the text (`system_message_field`).
    pub system_message: Option<(u16, bool)>,
    /// Astron listeners: the Database asked for a client's ban once its channel names an
    /// account, and how long its datagrams wait for the answer (`ban_database`,
    /// `ban_check_timeout_ms`); None = no check.
    pub ban_check: Option<(u64, Duration)>,
    channels: Mutex<ChannelTracker>,
    per_address: Mutex<FxHashMap<IpAddr, usize>>,
    /// Password-login throttling (`toontown.password_limits`).
    pub logins: Mutex<login_limits::LoginLimiter>,
    pub stats: ClientAgentStats,
    /// The wall clock sessions read time from (see `WallClock`).
    pub clock: WallClock,
}

impl ClientAgent {
    /// How many client addresses are counted against `max_connections_per_address` (0 once
    /// every session has ended: the fuzz harnesses check that nothing leaks).
    pub fn counted_addresses(&self) -> usize {
        self.per_address.lock().len()
    }

    /// The cluster's number for the field the client calls `field` in `class`.
    pub fn field_from_client(&self, class: u16, field: u16) -> Option<u16> {
        match &self.numbering {
            Some(n) => n.to_cluster(class, field),
            None => Some(field),
        }
    }

    /// The number the client knows the cluster's `field` of `class` by.
    pub fn field_to_client(&self, class: u16, field: u16) -> Option<u16> {
        match &self.numbering {
            Some(n) => n.to_client(class, field),
            None => Some(field),
        }
    }

    pub fn new(
        index: usize,
        config: &ClientAgentConfig,
        schema: Arc<Schema>,
        uberdogs: &[UberDog],
        shards: toontown::Shards,
        clock: WallClock,
    ) -> Result<ClientAgent, String> {
        let name_parts = match &config.toontown.name_parts {
            Some(p) if config.dialect == crate::config::Dialect::Toontown2003 => Some(
                toontown::NameParts::load(p).map_err(|e| format!("toontown.name_parts: {e}"))?,
            ),
            _ => None,
        };
        let visibility = match &config.toontown.visibility {
            Some(p) if config.dialect == crate::config::Dialect::Toontown2003 => {
                toontown::load_visibility(p).map_err(|e| format!("toontown.visibility: {e}"))?
            }
            _ => FxHashMap::default(),
        };
        if config.dialect == crate::config::Dialect::Toontown2003 {
            check_avatar_class(config, &schema)?;
        }
        let uds = uberdog_classes(uberdogs, &schema)?;
        let interests = match config.add_interest.as_str() {
            "enabled" => InterestPolicy::Enabled,
            "disabled" => InterestPolicy::Disabled,
            _ => InterestPolicy::Visible,
        };
        let tls = match &config.tls {
            Some(t) => Some(tls::server_config(t)?),
            None => None,
        };
        let toontown = config.dialect == crate::config::Dialect::Toontown2003;
        // A 2003 client sends the hash its own DC parser computed.
        let hash = config.manual_dc_hash.unwrap_or_else(|| match toontown {
            true => schema
                .dc()
                .hash_2003()
                .unwrap_or_else(|_| schema.dc().hash()),
            false => schema.dc().hash(),
        });
        let numbering = toontown.then(|| numbering::ClientNumbering::legacy_2003(&schema));
        let avatar_id_args = if toontown {
            toontown::avatar_id_args(schema.dc(), config.toontown.avatar_id_fields.as_deref())?
        } else {
            Default::default()
        };
        let system_message = config
            .system_message_field
            .as_deref()
            .map(|name| system_message_field(&schema, name))
            .transpose()?;
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        let ban_check = match config.dialect {
            crate::config::Dialect::Astron => config
                .ban_database
                .map(|db| (db, Duration::from_millis(config.ban_check_timeout_ms))),
            _ => None,
        };
        Ok(ClientAgent {
            system_message,
            ban_check,
            index,
            bind: config.bind.clone(),
            version: config.version.clone(),
            hash,
            schema,
            uberdogs: uds,
            relocate: config.relocate,
            interests,
            send_hash: config.send_hash,
            send_version: config.send_version,
            heartbeat_timeout: ms(config.heartbeat_timeout_ms),
            interest_timeout: Duration::from_millis(config.interest_timeout_ms),
            write_buffer_size: config.write_buffer_size.min(usize::MAX as u64) as usize,
            write_timeout: ms(config.write_timeout_ms),
            flush_delay: ms(config.flush_delay_ms),
            busy_flush_delay_max: Duration::from_millis(config.busy_flush_delay_max_ms),
            refuse_clients_without_upstream: config.refuse_clients_without_upstream,
            haproxy: config.haproxy,
            proxy_from: proxy::TrustedProxies::parse("proxy_from", &config.proxy_from)?,
            limits: config.limits,
            tls,
            dialect: config.dialect,
            toontown: config.toontown.clone(),
            shards,
            name_parts,
            visibility,
            numbering,
            avatar_id_args,
            channels: Mutex::new(ChannelTracker {
                next: config.channels.min,
                max: config.channels.max,
                free: VecDeque::new(),
            }),
            per_address: Mutex::new(FxHashMap::default()),
            logins: Mutex::new(login_limits::LoginLimiter::new(
                config.toontown.password_limits,
            )),
            stats: ClientAgentStats::default(),
            clock,
        })
    }

    /// An operator's message as the value of `system_message_field`, packed.
    pub fn system_message_value(&self, text: &str) -> Option<(u16, Vec<u8>)> {
        let (field, about) = self.system_message?;
        let dc = self.schema.dc();
        let f = dc.field(field)?;
        let args = if about {
            serde_json::json!([0, text])
        } else {
            serde_json::json!([text])
        };
        Some((field, dc.from_json(f, &args).ok()?))
    }

    /// A channel for a new client, or None when the range is used up.
    pub fn alloc_channel(&self) -> Option<u64> {
        self.channels.lock().alloc()
    }

    /// Gives a client's channel back (after its session ended).
    pub fn free_channel(&self, channel: u64) {
        self.channels.lock().free.push_back(channel);
    }

    /// Counts a connection from `ip`; false (and nothing counted) when that address is at
    /// its limit.
    pub fn admit_address(&self, ip: IpAddr) -> bool {
        let limit = self.limits.max_connections_per_address;
        let mut map = self.per_address.lock();
        let n = map.entry(ip).or_insert(0);
        if limit != 0 && *n >= limit {
            if *n == 0 {
                map.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    pub fn release_address(&self, ip: IpAddr) {
        let mut map = self.per_address.lock();
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }

    pub fn count_login_refusal(&self, why: LoginRefusal) {
        self.stats.logins_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_eject(&self, code: u16) {
        *self.stats.ejects.lock().entry(code).or_insert(0) += 1;
    }

    pub fn state_changed(&self, from: Option<usize>, to: Option<usize>) {
        if let Some(f) = from {
            self.stats.by_state[f].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(t) = to {
            self.stats.by_state[t].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A name for logs.
    pub fn label(&self) -> String {
        format!("clientagent {}", self.bind)
    }
}

/// A 2003 listener's avatar class and its name and DNA fields exist in the DC files.
fn check_avatar_class(config: &ClientAgentConfig, schema: &Schema) -> Result<(), String> {
    let toontown = &config.toontown;
    let class = schema
        .dc()
        .class_by_name(&toontown.avatar_class)
        .ok_or_else(|| {
            format!(
                "toontown.avatar_class '{}' is not in the DC files",
                toontown.avatar_class
            )
        })?;
    for f in [&toontown.name_field, &toontown.dna_field] {
        if schema.dc().field_by_name(class, f).is_none() {
            return Err(format!(
                "toontown: '{}' has no field '{f}'",
                toontown.avatar_class
            ));
        }
    }
    Ok(())
}

/// The UberDOGs by doid, with their classes looked up in the DC files.
fn uberdog_classes(
    uberdogs: &[UberDog],
    schema: &Schema,
) -> Result<FxHashMap<u32, UberDogInfo>, String> {
    let mut uds = FxHashMap::default();
    for u in uberdogs {
        let class = schema
            .dc()
            .class_by_name(&u.class)
            .ok_or_else(|| format!("UberDOG {} has unknown class '{}'", u.id, u.class))?;
        uds.insert(
            u.id,
            UberDogInfo {
                class: class.id(),
                anonymous: u.anonymous,
            },
        );
    }
    Ok(uds)
}

/// Resolves `system_message_field` ("Class.field"): its number, and whether it takes an
/// `aboutId` before the text; an error names the key.
fn system_message_field(schema: &Schema, name: &str) -> Result<(u16, bool), String> {
    let bad = |why: &str| format!("system_message_field = {name:?}: {why}");
    let (class, field) = name
        .split_once('.')
        .ok_or_else(|| bad("write it Class.field"))?;
    let dc = schema.dc();
    let class = dc
        .class_by_name(class)
        .ok_or_else(|| bad("no such class"))?;
    let f = dc
        .field_by_name(class, field)
        .ok_or_else(|| bad("the class has no such field"))?;
    if dc.from_json(f, &serde_json::json!(["x"])).is_ok() {
        return Ok((f.id(), false));
    }
    if dc.from_json(f, &serde_json::json!([0, "x"])).is_ok() {
        return Ok((f.id(), true));
    }
    Err(bad("it must take (string) or (uint32, string)"))
}

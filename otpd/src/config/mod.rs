//! The cluster's configuration: one typed model (`ClusterConfig`) read either from otpd's own
//! `cluster.ron` or from an astrond YAML file, with every limit explicit and defaulted here.

pub mod addr;
pub mod astron;
pub mod eventlogger;
pub mod ron_file;

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Everything one otpd process runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Name of this daemon in logs and in CONTROL_SET_CON_NAME towards an upstream MD.
    pub name: String,
    /// Core threads; 0 means one per available CPU.
    pub cores: usize,
    /// Pin each core thread to one CPU (default true; false when read from an astrond YAML).
    pub pin_cores: bool,
    /// DC files, loaded in order as one set (order changes ids and the hash).
    pub dc_files: Vec<PathBuf>,
    /// How the DC files are read: Panda3D's `dc-*` settings, which fix the field numbering.
    pub dc_settings: DcSettings,
    /// UDP address of the EventLogger roles send events to ("host:port"), if any.
    pub eventlogger: Option<String>,
    /// Address of the Prometheus metrics endpoint (`/metrics`), if any.
    pub metrics: Option<String>,
    /// Limits of the metrics endpoint's HTTP server.
    pub metrics_limits: HttpLimits,
    /// The admin API and operator page (off when None; see [`AdminConfig`]).
    pub admin: Option<AdminConfig>,
    /// A clean stop (SIGTERM, SIGINT, `otpd admin ADDR shutdown`) must be done within this
    /// many milliseconds: clients ejected, their post-removes fired, the database's queue
    /// committed. Past it, otpd exits anyway (code 1) with a log line.
    pub shutdown_timeout_ms: u64,
    /// UberDOGs: well-known objects the AI processes create.
    pub uberdogs: Vec<UberDog>,
    pub messagedirector: MessageDirectorConfig,
    /// Roles run inside this process.
    pub roles: Vec<RoleConfig>,
    /// Threads hashing and checking passwords (Argon2, about 20-40 ms and 19 MiB each); 0 =
    /// one per available CPU.
    pub password_workers: usize,
    /// Password jobs waiting for those threads at most; past it a login is answered "busy"
    /// at once (never counted against the player or the account).
    pub password_queue: usize,
    /// File descriptors kept for everything but client connections (MD participants, the
    /// database, log files): client connections are refused once RLIMIT_NOFILE minus this
    /// many are open.
    pub reserved_fds: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "otpd".into(),
            cores: 0,
            pin_cores: true,
            dc_files: Vec::new(),
            dc_settings: DcSettings::default(),
            eventlogger: None,
            metrics: None,
            metrics_limits: HttpLimits::default(),
            admin: None,
            shutdown_timeout_ms: 10_000,
            uberdogs: Vec::new(),
            messagedirector: MessageDirectorConfig::default(),
            roles: Vec::new(),
            password_workers: 0,
            password_queue: 256,
            reserved_fds: 256,
        }
    }
}

/// An HTTP endpoint's server (metrics, admin API): one thread, one event loop, and these bounds on what
/// its clients may hold. Past `max_connections`, a new connection takes the place of the
/// longest-waiting one that is idle or still sending its request, or is answered 503 and
/// closed; every connection closed early is counted in `otpd_metrics_http_dropped_total`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Largest request head (request line and headers), bytes; a larger one is answered 431
    /// and the connection closed.
    pub max_request_bytes: usize,
    /// A request's head must arrive whole within this many milliseconds of its first byte.
    pub read_timeout_ms: u64,
    /// An answer must be taken by the client within this many milliseconds.
    pub write_timeout_ms: u64,
    /// A connection with no request under way (just opened, or kept alive after an answer) is
    /// closed after this many milliseconds.
    pub idle_timeout_ms: u64,
    /// Largest request body, bytes; a larger one is answered 413 and the connection closed.
    pub max_body_bytes: usize,
    /// An answer the cluster has to give (the admin API asking ClientAgents, the Database)
    /// must be ready within this many milliseconds, or the client gets 504.
    pub answer_timeout_ms: u64,
}

/// The admin API (JSON over HTTP) and the operator page: who may use them and their server's
/// bounds. Every request carries `Authorization: Bearer TOKEN`, the token read from
/// `token_file` at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens ("ip:port"): a loopback address, or any address with `tls`.
    pub bind: String,
    /// TLS (HTTPS) on the admin listener: its certificate chain and key (PEM). Required off
    /// loopback.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// A file holding the bearer token (at least 32 characters; surrounding white space is
    /// ignored). Relative to the configuration file.
    pub token_file: PathBuf,
    /// The admin server's bounds (the same kinds as `metrics_limits`).
    #[serde(default)]
    pub limits: HttpLimits,
    /// The channel the API listens on for the sessions' answers (it links to this process's
    /// MD as a participant); unique in the MD tree.
    #[serde(default = "default_admin_channel")]
    pub channel: u64,
    /// How long a client list gathers the sessions' answers, milliseconds (each ClientAgent
    /// of the tree answers within it, or is left out).
    #[serde(default = "default_gather_ms")]
    pub gather_ms: u64,
    /// The Database role's control channel, for bans and the name review queue; None = the
    /// Database this process runs, if any.
    #[serde(default)]
    pub database: Option<u64>,
}

fn default_admin_channel() -> u64 {
    // Above 32 bits (no doid), below the 2003 puppet channels (1001 << 32).
    999 << 32
}

fn default_gather_ms() -> u64 {
    500
}

/// The shortest admin token accepted.
pub const ADMIN_TOKEN_MIN: usize = 32;

impl AdminConfig {
    /// Checks the section (not the token file, read when the API starts).
    pub fn check(&self) -> Result<(), String> {
        if self.tls.is_none() && !addr::is_loopback_address(&self.bind) {
            return Err(format!(
                "admin.bind = {:?}: off loopback the admin API needs admin.tls (its token must not \
                 cross a network in clear)",
                self.bind
            ));
        }
        if self.gather_ms == 0 || self.gather_ms >= self.limits.answer_timeout_ms {
            return Err(format!(
                "admin.gather_ms = {}: must be at least 1 and below admin.limits.answer_timeout_ms ({})",
                self.gather_ms, self.limits.answer_timeout_ms
            ));
        }
        self.limits.check("admin.limits")
    }
}

impl HttpLimits {
    /// Checks the bounds; `key` names the section in the error.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.max_connections == 0 || self.max_request_bytes < 256 {
            return Err(format!(
                "{key}: max_connections must be at least 1 and max_request_bytes at least 256 (have {} and {})",
                self.max_connections, self.max_request_bytes
            ));
        }
        if self.read_timeout_ms == 0
            || self.write_timeout_ms == 0
            || self.idle_timeout_ms == 0
            || self.answer_timeout_ms == 0
        {
            return Err(format!("{key}: read_timeout_ms, write_timeout_ms, idle_timeout_ms and answer_timeout_ms must be at least 1"));
        }
        Ok(())
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 16,
            max_request_bytes: 8 * 1024,
            read_timeout_ms: 5_000,
            write_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_body_bytes: 64 * 1024,
            answer_timeout_ms: 10_000,
        }
    }
}

/// Panda3D's three `dc-*` settings, as every process of the cluster must read the DC files.
/// The defaults (all true) number fields file-wide, as Astron and Panda3D 1.10 do; with
/// `multiple_inheritance: false` fields are numbered per class, the rule of the 2003 Toontown
/// client's Panda3D, and AIs must then read the DC files with `dc-multiple-inheritance #f`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DcSettings {
    pub multiple_inheritance: bool,
    pub virtual_inheritance: bool,
    pub sort_inheritance_by_file: bool,
}

impl Default for DcSettings {
    fn default() -> Self {
        DcSettings {
            multiple_inheritance: true,
            virtual_inheritance: true,
            sort_inheritance_by_file: true,
        }
    }
}

impl DcSettings {
    /// The 2003 rule (`dc-multiple-inheritance`, `dc-virtual-inheritance` and
    /// `dc-sort-inheritance-by-file` all 0), as toontown-otp runs.
    pub const LEGACY_2003: DcSettings = DcSettings {
        multiple_inheritance: false,
        virtual_inheritance: false,
        sort_inheritance_by_file: false,
    };

    pub fn options(self) -> otp_dc::HashOptions {
        otp_dc::HashOptions {
            multiple_inheritance: self.multiple_inheritance,
            virtual_inheritance: self.virtual_inheritance,
            sort_inheritance_by_file: self.sort_inheritance_by_file,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UberDog {
    pub id: u32,
    pub class: String,
    #[serde(default)]
    pub anonymous: bool,
}

/// The MessageDirector: where participants connect and how much each may queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageDirectorConfig {
    /// Address to accept participants (AIs, UberDOGs, downstream MDs) on; None = do not listen.
    pub bind: Option<String>,
    /// Address of the upstream MD; None = this MD is the root of its tree.
    pub connect: Option<String>,
    /// Addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`) participants (AIs, UberDOGs,
    /// downstream MDs) may connect from; others are closed at accept. Participants are
    /// trusted with the whole cluster. Empty = loopback only (127.0.0.0/8 and ::1).
    pub allow: Vec<String>,
    /// Largest datagram body accepted from a participant (bytes after the length tag).
    pub max_datagram_bytes: usize,
    /// Read buffer per connection, bytes.
    pub read_buffer_bytes: usize,
    /// A participant whose unsent bytes exceed this is disconnected (it stopped reading).
    pub max_queued_bytes_per_participant: usize,
    /// Most connections accepted at once; further connections are closed at accept.
    pub max_participants: usize,
    /// Most subscriptions (channels + ranges) one participant may hold.
    pub max_subscriptions_per_participant: usize,
    /// Most post-remove datagrams one participant may store.
    pub max_post_removes_per_participant: usize,
    /// Capacity, in batches, of each core-to-core queue.
    pub core_queue_batches: usize,
    /// No longer used: a core routes every datagram at once (each core keeps a replica of
    /// which cores subscribe each channel), so nothing waits for lookups. Accepted so that
    /// older configuration files still load; a value other than the default is logged.
    pub max_pending_lookups: usize,
    /// After doing work, a core keeps polling (without sleeping) this many microseconds
    /// before it sleeps: lower latency for bursts, at the cost of CPU. 0 = sleep at once.
    pub idle_spin_us: u64,
    /// First and longest wait between attempts to reach a lost upstream MD, milliseconds.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// What losing the upstream MD does: `Reconnect` (keep running, retry with backoff, eject
    /// the client sessions whose post-removes the upstream may have fired once it is regained)
    /// or `Exit` (astrond's behaviour: log, an `upstream-lost` event, exit with code 1).
    pub on_upstream_lost: OnUpstreamLost,
    /// After a lost upstream link is regained, how long it must stay up before the
    /// post-removes fired meanwhile are sent and the client sessions at risk are ejected; new
    /// clients are refused until then (131), milliseconds. It is the time the upstream's other
    /// children (siblings) need to reconnect to a restarted root: a delete sent before the
    /// sibling that holds its object has re-subscribed is routed to nobody and lost. None =
    /// `reconnect_max_ms` (siblings with the same settings retry at least that often); 0 = no
    /// settling (the first connection never settles).
    pub upstream_settle_ms: Option<u64>,
    /// TCP keepalive on MD links (the upstream link and accepted participants): idle time
    /// before the first probe and between probes, milliseconds. 0 = no keepalive.
    pub keepalive_ms: u64,
    /// An MD link whose sent data, or keepalive probes, go unacknowledged this long is
    /// declared dead (TCP_USER_TIMEOUT), milliseconds. 0 = the kernel's default (minutes).
    pub link_timeout_ms: u64,
    /// A connection attempt to the upstream MD not established within this is given up (and
    /// retried after the backoff), milliseconds.
    pub connect_timeout_ms: u64,
    /// Bytes queued for the upstream MD at most: unsent bytes of a live link (past it, the link
    /// is cut and re-established: subscriptions and post-removes are replayed), and fired
    /// post-removes kept for it while it is down (past it, further ones are dropped, counted).
    pub max_queued_bytes_upstream: usize,
    /// TLS with client certificates on the MD listener (child MDs, and participants that can
    /// speak it); None = plain TCP only, from `allow`.
    pub tls: Option<MdTlsConfig>,
    /// TLS on the link to the upstream MD (`connect`); None = plain TCP.
    pub upstream_tls: Option<UpstreamTlsConfig>,
}

/// What losing the upstream MD does (`messagedirector.on_upstream_lost`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum OnUpstreamLost {
    /// Keep running, retry with backoff; once regained, the sessions whose post-removes were
    /// registered upstream at the loss are ejected (the upstream may have fired them).
    #[default]
    Reconnect,
    /// Exit the process with code 1, as astrond does.
    Exit,
}

/// TLS on the MD listener (docs/security.md). One port serves both: a connection whose first
/// three bytes are a TLS handshake record header (0x16 0x03 0x00-0x04) is taken as TLS, any
/// other as a plain Astron participant. A TLS peer must present a certificate that chains to
/// `client_ca` (mutual TLS); it is then admitted from any address, `allow` not consulted.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MdTlsConfig {
    /// This MD's certificate chain (PEM, leaf first).
    pub certificate: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates (PEM bundle) a participant's certificate must chain to.
    pub client_ca: PathBuf,
    /// Whether plain participants are still taken (see `TlsParticipants`).
    #[serde(default)]
    pub participants: TlsParticipants,
    /// A connection that has not completed its TLS handshake (or sent its first bytes) this
    /// long after it was accepted is closed and counted as refused.
    #[serde(default = "tls_handshake_timeout")]
    pub handshake_timeout_ms: u64,
}

/// Who may connect to a TLS-enabled MD listener.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum TlsParticipants {
    /// Only TLS with a valid client certificate, from any address; plain TCP is refused, from
    /// loopback too.
    #[default]
    Required,
    /// TLS with a valid client certificate from any address, and plain TCP from `allow`
    /// (stock Panda3D AIs, unchanged, on the cluster's own hosts).
    Optional,
}

/// TLS on the link to the upstream MD: the upstream's certificate is verified against `ca`
/// and `server_name`; this MD presents `certificate` (an upstream with `tls` requires one).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// The CA certificates (PEM bundle) the upstream MD's certificate must chain to.
    pub ca: PathBuf,
    /// The name (DNS name or IP address) the upstream's certificate must be valid for; None =
    /// the host part of `messagedirector.connect`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// This MD's client certificate chain and key (PEM); both or neither.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The handshake must complete this long after the TCP connection is made, or the link
    /// is counted as lost and retried.
    #[serde(default = "tls_handshake_timeout")]
    pub handshake_timeout_ms: u64,
}

/// Default for `handshake_timeout_ms` (both TLS sections): 10 s.
pub fn tls_handshake_timeout() -> u64 {
    10_000
}

impl Default for MessageDirectorConfig {
    fn default() -> Self {
        MessageDirectorConfig {
            bind: Some("127.0.0.1:7199".into()),
            connect: None,
            allow: Vec::new(),
            max_datagram_bytes: otp_wire::MAX_DATAGRAM_BODY,
            read_buffer_bytes: 128 * 1024,
            max_queued_bytes_per_participant: 64 * 1024 * 1024,
            max_participants: 10_000,
            max_subscriptions_per_participant: 1_000_000,
            max_post_removes_per_participant: 10_000,
            core_queue_batches: 4096,
            max_pending_lookups: 65_536,
            idle_spin_us: 50,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            on_upstream_lost: OnUpstreamLost::Reconnect,
            upstream_settle_ms: None,
            keepalive_ms: 5_000,
            link_timeout_ms: 15_000,
            connect_timeout_ms: 3_000,
            max_queued_bytes_upstream: 64 * 1024 * 1024,
            tls: None,
            upstream_tls: None,
        }
    }
}

/// A role hosted by this process. Only the MessageDirector is implemented so far; the
/// others are accepted by the parsers and refused at start-up with a clear message.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
// The ClientAgent's settings are the largest; roles are a handful per process, read once.
#[allow(clippy::large_enum_variant)]
pub enum RoleConfig {
    StateServer {
        control: u64,
    },
    Dbss {
        database: u64,
        ranges: Vec<DoidRange>,
        #[serde(default)]
        limits: DbssLimits,
    },
    Database {
        control: u64,
        #[serde(default = "yes")]
        broadcast: bool,
        generate: DoidRange,
        backend: DatabaseBackend,
        /// Requests committed in one transaction at most (group commit).
        #[serde(default = "db_max_batch")]
        max_batch: usize,
        /// Requests waiting for the storage thread at most; past it, the core stops reading
        /// its sockets until the storage catches up.
        #[serde(default = "db_max_queued")]
        max_queued: usize,
    },
    ClientAgent(ClientAgentConfig),
    EventLogger {
        bind: String,
        output: String,
        #[serde(default)]
        rotate_interval: String,
        #[serde(default = "el_max_file_bytes")]
        max_file_bytes: u64,
        #[serde(default = "el_max_events_per_second")]
        max_events_per_second: u32,
        /// Bytes of log lines written per second at most; events past it are dropped and
        /// counted, like those past `max_events_per_second`.
        #[serde(default = "el_max_bytes_per_second")]
        max_bytes_per_second: u64,
        /// Log files kept, the one being written included; older ones (files the `output`
        /// pattern names) are deleted. 0 = keep every file.
        #[serde(default = "el_max_files")]
        max_files: usize,
        /// Log files last written longer ago than this are deleted ("30d"; as
        /// rotate_interval). "0" = never.
        #[serde(default = "el_max_age")]
        max_age: String,
        /// Addresses (`10.0.0.5`) and networks (`10.0.0.0/8`) events are taken from; packets
        /// from anywhere else are dropped and counted. Empty = from anyone.
        #[serde(default)]
        allow_from: Vec<String>,
    },
}

fn yes() -> bool {
    true
}

/// The DBSS's limits (each instance, i.e. per core).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DbssLimits {
    /// A database query (activation, proxied read) unanswered this long is given up, and the
    /// reader gets a failure.
    pub query_timeout_ms: u64,
    /// Queries waiting on the database at once; past it, reads of inactive objects fail.
    pub max_pending_queries: usize,
    /// Datagrams held for one object while it loads; past it, they are dropped (logged).
    pub max_queued_while_loading: usize,
}

impl Default for DbssLimits {
    fn default() -> Self {
        DbssLimits {
            query_timeout_ms: 30_000,
            max_pending_queries: 100_000,
            max_queued_while_loading: 4096,
        }
    }
}

pub fn db_max_batch() -> usize {
    256
}

pub fn db_max_queued() -> usize {
    65_536
}

/// An event log file past this size is closed and a new one started.
pub fn el_max_file_bytes() -> u64 {
    1 << 30
}

/// Events written per second at most; the rest are counted, dropped, and the count logged.
pub fn el_max_events_per_second() -> u32 {
    10_000
}

/// Bytes of log lines written per second at most (4 MiB: some 20,000 ordinary events).
pub fn el_max_bytes_per_second() -> u64 {
    4 << 20
}

/// Log files kept, the current one included (with the default size cap: at most 30 GiB).
pub fn el_max_files() -> usize {
    30
}

/// Log files older than this are deleted; "0" = never (the count alone bounds them).
pub fn el_max_age() -> String {
    "0".into()
}

impl RoleConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            RoleConfig::StateServer { .. } => "stateserver",
            RoleConfig::Dbss { .. } => "dbss",
            RoleConfig::Database { .. } => "database",
            RoleConfig::ClientAgent(_) => "clientagent",
            RoleConfig::EventLogger { .. } => "eventlogger",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DoidRange {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum DatabaseBackend {
    /// Embedded SQLite file under `directory`.
    Sqlite { directory: PathBuf },
    /// A PostgreSQL server.
    Postgres {
        address: String,
        database: String,
        username: String,
        password: String,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAgentConfig {
    pub bind: String,
    pub version: String,
    #[serde(default)]
    pub manual_dc_hash: Option<u32>,
    #[serde(default)]
    pub haproxy: bool,
    /// With `haproxy`: the peers (addresses, `"10.0.0.0/8"` networks) whose PROXY headers
    /// are believed; a connection from any other peer is refused. Empty = loopback only (a
    /// proxy on this host).
    #[serde(default)]
    pub proxy_from: Vec<String>,
    pub channels: ChannelRange,
    /// The client section's settings, as astrond names them; the ClientAgent acts on them.
    #[serde(default)]
    pub relocate: bool,
    #[serde(default = "visible")]
    pub add_interest: String,
    #[serde(default = "yes")]
    pub send_hash: bool,
    #[serde(default = "yes")]
    pub send_version: bool,
    #[serde(default = "write_buffer")]
    pub write_buffer_size: u64,
    #[serde(default = "write_timeout")]
    pub write_timeout_ms: u64,
    /// Longest a client's outgoing datagrams wait to share one write (0 = written at the end
    /// of the event-loop turn that produced them).
    #[serde(default)]
    pub flush_delay_ms: u64,
    /// Without `flush_delay_ms`: while a core has no spare time, it writes to each client at
    /// most once per a spacing it adapts to its load, up to this (0 = never; see
    /// docs/performance.md, "Write pacing under load").
    #[serde(default = "busy_flush_delay_max")]
    pub busy_flush_delay_max_ms: u64,
    /// While this process's MD has an upstream MD configured but not connected, new clients
    /// are ejected at once (code 131, "cluster unavailable") rather than left waiting for
    /// answers that cannot come.
    #[serde(default = "yes")]
    pub refuse_clients_without_upstream: bool,
    /// The field an operator's system message is sent as to an Astron client's own avatar
    /// ("Class.field", taking `(string)` or `(uint32 aboutId, string)`, e.g.
    /// "DistributedAvatar.setSystemMessage"); None = Astron clients are not sent them. The
    /// 2003 dialect always uses the toon's `setSystemMessage`.
    #[serde(default)]
    pub system_message_field: Option<String>,
    /// Astron listeners: the Database role's control channel asked whether a client's account
    /// is banned once the cluster sets its channel (CLIENTAGENT_SET_CLIENT_ID to `account << 32
    /// | avatar`, account not 0: the ban of `#account`); a banned client is ejected (352).
    /// None = no check. The 2003 dialect checks bans at login, in `toontown.database`.
    #[serde(default)]
    pub ban_database: Option<u64>,
    /// With `ban_database`: how long the client's datagrams are held waiting for the answer,
    /// milliseconds; unanswered by then, the client is let through (and it is logged).
    #[serde(default = "ban_check_timeout")]
    pub ban_check_timeout_ms: u64,
    /// A client silent (no CLIENT_HEARTBEAT) this long is ejected (345). 0 = never (astrond's
    /// default); otpd's is `DEFAULT_HEARTBEAT_TIMEOUT_MS`.
    #[serde(default = "heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    #[serde(default = "interest_timeout")]
    pub interest_timeout_ms: u64,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// What one client may do; each past its limit is ejected (see docs/clientagent.md).
    #[serde(default)]
    pub limits: ClientLimits,
    /// The client protocol this listener speaks.
    #[serde(default)]
    pub dialect: Dialect,
    /// What the server does for Toontown 2003 clients (dialect Toontown2003 only).
    #[serde(default)]
    pub toontown: ToontownConfig,
}

/// A client listener's protocol.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Astron's client protocol (Panda3D's AstronClientRepository).
    #[default]
    Astron,
    /// Disney's original client protocol, as the 2003 Toontown Online client speaks it.
    Toontown2003,
}

/// How play tokens are checked.
#[derive(Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub enum TokenPolicy {
    /// Development: any token opens (or creates) the account of that name.
    #[default]
    Open,
    /// A token made by `otpd account token NAME`: the name, an expiry, and an HMAC-SHA256
    /// under the secret. The secret is written here (`secret`) or kept in a file
    /// (`secret_file`, read at start-up, relative to the configuration's folder; line breaks
    /// at its end are not part of it); one of the two, at least `MIN_TOKEN_SECRET_BYTES` long.
    Signed {
        #[serde(default)]
        secret: String,
        #[serde(default, deserialize_with = "plain_path")]
        secret_file: Option<PathBuf>,
    },
}

/// `secret_file: "token.key"`: the key is one of two alternatives, so it is written without
/// `Some(...)`.
fn plain_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    PathBuf::deserialize(d).map(Some)
}

/// The shortest secret a Signed token policy accepts (an HMAC-SHA256 key of full strength).
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

/// Never shows the secret (a configuration printed with `{:?}` must not give it away).
impl fmt::Debug for TokenPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenPolicy::Open => f.write_str("Open"),
            TokenPolicy::Signed {
                secret,
                secret_file,
            } => f
                .debug_struct("Signed")
                .field("secret", &format_args!("<{} bytes>", secret.len()))
                .field("secret_file", secret_file)
                .finish(),
        }
    }
}

/// Who may log in with a name and password (CLIENT_LOGIN, the 2003 client's
/// `account-old-auth #t`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum PasswordPolicy {
    /// No password logins: every CLIENT_LOGIN is answered "username not found" (129).
    Disabled,
    /// Only accounts that have a password already (made earlier, or imported).
    Existing,
    /// Development: also a new name, when the client asks to create it (its createFlag),
    /// becomes an account with that password.
    #[default]
    CreateOnLogin,
}

/// The Toontown 2003 dialect's server-side work: accounts, avatars, districts, zones.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ToontownConfig {
    pub tokens: TokenPolicy,
    /// Name-and-password logins (CLIENT_LOGIN).
    pub passwords: PasswordPolicy,
    /// The Database role's control channel: accounts and avatars are stored there.
    pub database: u64,
    /// The DC class of avatars, and its name and DNA fields.
    pub avatar_class: String,
    pub name_field: String,
    pub dna_field: String,
    /// The name a new avatar has until it is named.
    pub default_name: String,
    /// Avatar slots per account.
    pub max_avatars: u8,
    /// Wish names are approved at once (else they stay pending for an operator).
    pub auto_approve_names: bool,
    /// Name parts for CLIENT_SET_NAME_PATTERN (Toontown's NameMasterEnglish.txt: lines
    /// `index*category*text`). None = name patterns are refused.
    pub name_parts: Option<std::path::PathBuf>,
    /// The zone an avatar waits in between districts and zones (Toontown's quiet zone).
    pub quiet_zone: u32,
    /// Zones one CLIENT_SET_ZONE may make visible, the zone itself included.
    pub max_visible_zones: usize,
    /// Sent in CLIENT_LOGIN_2_RESP.
    pub can_chat: bool,
    /// The channel AIs announce their districts on (CLIENTAGENT_SHARD_UP / _DOWN).
    pub shard_channel: u64,
    /// Which zones are visible from which (street vis groups): lines `ZONE: ZONE ZONE ...`.
    /// The 2003 client names only the zone it stands in. None = only that zone.
    pub visibility: Option<std::path::PathBuf>,
    /// Longest string or blob a 2003 client may send in a field update or as a new toon's
    /// DNA, whatever the DC file allows (its chat, names and DNA are far shorter); over it the
    /// update ejects with 109. 0 = only the DC file's limits.
    pub max_string_bytes: u32,
    /// A new toon's DNA must be one the 2003 client writes and reads ('t' and 14 indices into
    /// its tables, `dialect/toontown/dna.rs`); any other is refused with a failed
    /// CREATE_AVATAR_RESP and a `dna-refused` event. Off for clients with other DNA tables.
    pub check_dna: bool,
    /// Throttling of password logins (CLIENT_LOGIN) per address and per account.
    pub password_limits: PasswordLimits,
    /// p2p updates (whispers, teleport queries) one client may send to one target object per
    /// second; past it they are dropped and count as refused updates (`limits.
    /// max_refused_updates`). 0 = no limit.
    pub max_p2p_per_target_per_second: u32,
    /// Fields whose argument is the sender's own avatar id (`setWhisperFrom`'s `fromId`, ...):
    /// a client naming another avatar there is ejected (GO_GET_LOST 151). None = Toontown's
    /// fields (`DEFAULT_AVATAR_ID_FIELDS`, those the DC files have); `Some([])` = no check. A
    /// listed class or field the DC files lack, or an argument that is not a 32-bit integer,
    /// stops start-up.
    pub avatar_id_fields: Option<Vec<AvatarIdField>>,
}

/// One argument a client must fill with its own avatar's id: `field` of `class` (and of the
/// classes inheriting it), argument `arg` (from 0).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AvatarIdField {
    pub class: String,
    pub field: String,
    pub arg: usize,
}

/// Toontown's fields where the 2003 client names its own avatar (checked in its code: each is
/// sent with `localToon.doId` / `self.doId`): whispers, their "ignored" answer, friendsNotify
/// (REMOVE_FRIEND), battleSOS, the teleport query, its answer and its giving up,
/// suggestResync.
pub const DEFAULT_AVATAR_ID_FIELDS: &[(&str, &str, usize)] = &[
    ("DistributedToon", "setWhisperFrom", 0),
    ("DistributedToon", "setWhisperQTFrom", 0),
    ("DistributedToon", "setWhisperQTQuestFrom", 0),
    ("DistributedToon", "setWhisperQTCustomFrom", 0),
    ("DistributedToon", "setWhisperIgnored", 0),
    ("DistributedToon", "friendsNotify", 0),
    ("DistributedToon", "battleSOS", 0),
    ("DistributedToon", "teleportQuery", 0),
    ("DistributedToon", "teleportResponse", 0),
    ("DistributedToon", "teleportGiveup", 0),
    ("DistributedToon", "suggestResync", 0),
];

/// Password logins refused without a hash once an address or an account has failed too
/// often (docs/security.md). A key reaching its failures within `failure_window_ms` is
/// blocked for `backoff_ms`, doubled at each block in a row up to `max_backoff_ms`; attempts
/// still being checked count as failures until they end, and a "busy" answer (the hashing
/// queue full) counts as nothing.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordLimits {
    /// Failed password logins from one address (IPv6: one /64) per window. 0 = no limit.
    pub max_failures_per_address: u32,
    /// Failed password logins of one account name, from anywhere, per window. 0 = no limit.
    pub max_failures_per_account: u32,
    pub failure_window_ms: u64,
    /// The first block; each further one in a row lasts twice the one before.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Addresses, and account names, remembered at most (each; the oldest unblocked one is
    /// forgotten first).
    pub max_tracked: usize,
    /// Addresses (IPv6: /64s) remembered per tracked account name: the last ones that logged
    /// in to it with its password. An account's block does not apply to them, so that
    /// guessers elsewhere cannot lock its owner out. 0 = none (the block applies to all).
    pub known_addresses_per_account: usize,
}

impl Default for PasswordLimits {
    fn default() -> Self {
        PasswordLimits {
            max_failures_per_address: 20,
            max_failures_per_account: 10,
            failure_window_ms: 300_000,
            backoff_ms: 30_000,
            max_backoff_ms: 900_000,
            max_tracked: 65_536,
            known_addresses_per_account: 4,
        }
    }
}

impl Default for ToontownConfig {
    fn default() -> Self {
        ToontownConfig {
            tokens: TokenPolicy::Open,
            passwords: PasswordPolicy::CreateOnLogin,
            database: 4003,
            avatar_class: "DistributedToon".into(),
            name_field: "setName".into(),
            dna_field: "setDNAString".into(),
            default_name: "Toon".into(),
            max_avatars: 6,
            auto_approve_names: true,
            name_parts: None,
            quiet_zone: 1,
            max_visible_zones: 128,
            can_chat: true,
            shard_channel: 4662,
            visibility: None,
            max_string_bytes: 1024,
            check_dna: true,
            password_limits: PasswordLimits::default(),
            max_p2p_per_target_per_second: 10,
            avatar_id_fields: None,
        }
    }
}

/// The limits on one client connection of a ClientAgent.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimits {
    /// Largest datagram body a client may send (bytes after the length tag); over it: eject 106.
    pub max_datagram_bytes: usize,
    /// Read buffer a client starts with; it grows up to one largest datagram when needed.
    pub read_buffer_bytes: usize,
    /// Datagrams per second a client may send (averaged over one second's burst); over it:
    /// eject 129. 0 = unlimited.
    pub max_datagrams_per_second: u32,
    /// Bytes per second a client may send, likewise; over it: eject 129. 0 = unlimited.
    pub max_bytes_per_second: u32,
    /// Interests one client may hold open; over it: eject 115.
    pub max_interests: usize,
    /// Zones in one interest; over it: eject 115.
    pub max_zones_per_interest: usize,
    /// Zones of all of a client's interests together (each interest's zones counted, a zone
    /// two interests see counted twice); an interest the client opens or changes past it:
    /// eject 115 (2003 clients: GO_GET_LOST 1, as for a SET_ZONE of too many zones).
    /// Interests the cluster opens for the client (CLIENTAGENT_ADD_INTEREST) count toward
    /// it but are never refused.
    pub max_zones_total: usize,
    /// Interest operations a client may have waiting for the StateServer; over it: eject 115.
    pub max_pending_interests: usize,
    /// Datagrams held back for one interest operation while it opens; past it, the operation
    /// completes early (as on its timeout).
    pub max_queued_per_interest: usize,
    /// Client connections from one address at once (the HAProxy address when `haproxy` is
    /// on); more are ejected with code 1 as they arrive. 0 = unlimited.
    pub max_connections_per_address: usize,
    /// A client that has not completed its HELLO this long after connecting is ejected (107).
    /// 0 = no limit.
    pub hello_timeout_ms: u64,
    /// A client not logged in (state ESTABLISHED) this long after connecting is ejected,
    /// whatever it sends meanwhile (heartbeats and failed logins do not extend it): Astron
    /// clients with code 1, 2003 clients with GO_GET_LOST 122. 0 = no limit.
    pub login_timeout_ms: u64,
    /// Accept string bytes >= 0x80 from clients (Astron ejects them with 127; so does otpd
    /// unless this is on).
    pub allow_utf8_strings: bool,
    /// Refused updates (dropped, not obeyed: forbidden fields, p2p to objects out of reach,
    /// p2p over its rate) a client may send per `refused_window_ms`; past it it is ejected
    /// (2003: GO_GET_LOST 151). 0 = never ejected for them. Each window logs at most one
    /// warning and one `client-update-dropped` event per client, with the count of the others.
    pub max_refused_updates: u32,
    pub refused_window_ms: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_datagram_bytes: otp_wire::MAX_DATAGRAM_BODY,
            read_buffer_bytes: 4096,
            max_datagrams_per_second: 1000,
            max_bytes_per_second: 1 << 20,
            max_interests: 256,
            max_zones_per_interest: 1024,
            max_zones_total: 1024,
            max_pending_interests: 64,
            max_queued_per_interest: 4096,
            max_connections_per_address: 100,
            hello_timeout_ms: 10_000,
            login_timeout_ms: 120_000,
            allow_utf8_strings: false,
            max_refused_updates: 20,
            refused_window_ms: 10_000,
        }
    }
}

fn visible() -> String {
    "visible".into()
}
fn write_buffer() -> u64 {
    262_144
}
fn write_timeout() -> u64 {
    5_000
}
pub(crate) fn busy_flush_delay_max() -> u64 {
    100
}
/// The largest `busy_flush_delay_max_ms` accepted (the write pacing's own bound).
pub(crate) const BUSY_FLUSH_DELAY_MAX_MS: u64 = 500;
/// The default `heartbeat_timeout_ms`: 60 s, six heartbeats of Panda3D's and the 2003
/// client's (`heartbeat-interval`, 10 s).
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 60_000;

fn heartbeat_timeout() -> u64 {
    DEFAULT_HEARTBEAT_TIMEOUT_MS
}
fn interest_timeout() -> u64 {
    500
}
pub(crate) fn ban_check_timeout() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChannelRange {
    pub min: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl ClusterConfig {
    /// Makes relative paths relative to the configuration file's folder.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(admin) = &mut self.admin {
            if admin.token_file.is_relative() {
                admin.token_file = base.join(&admin.token_file);
            }
            if let Some(tls) = &mut admin.tls {
                for p in [&mut tls.certificate, &mut tls.key] {
                    if p.is_relative() {
                        *p = base.join(&*p);
                    }
                }
            }
        }
        for f in &mut self.dc_files {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        let md = &mut self.messagedirector;
        let tls_files = md
            .tls
            .iter_mut()
            .flat_map(|t| [&mut t.certificate, &mut t.key, &mut t.client_ca]);
        let upstream_files = md.upstream_tls.iter_mut().flat_map(|t| {
            std::iter::once(&mut t.ca).chain(t.certificate.iter_mut().chain(t.key.iter_mut()))
        });
        for f in tls_files.chain(upstream_files) {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        for role in &mut self.roles {
            if let RoleConfig::Database {
                backend: DatabaseBackend::Sqlite { directory },
                ..
            } = role
            {
                if directory.is_relative() {
                    *directory = base.join(&*directory);
                }
            }
            if let RoleConfig::EventLogger { output, .. } = role {
                if std::path::Path::new(output.as_str()).is_relative() {
                    *output = base.join(output.as_str()).to_string_lossy().into_owned();
                }
            }
            if let RoleConfig::ClientAgent(ClientAgentConfig {
                toontown:
                    ToontownConfig {
                        tokens:
                            TokenPolicy::Signed {
                                secret_file: Some(f),
                                ..
                            },
                        ..
                    },
                ..
            }) = role
            {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
    }

    /// Reads the secrets kept in files (a Signed token policy's `secret_file`), after
    /// `resolve_paths`. A secret file others may read is reported with a warning.
    pub fn read_secret_files(&mut self) -> Result<(), String> {
        for role in &mut self.roles {
            let RoleConfig::ClientAgent(ca) = role else {
                continue;
            };
            let TokenPolicy::Signed {
                secret,
                secret_file: Some(file),
            } = &mut ca.toontown.tokens
            else {
                continue;
            };
            if !secret.is_empty() {
                return Err(format!(
                    "clientagent {}: toontown.tokens: give Signed either `secret` or `secret_file`, not both",
                    ca.bind
                ));
            }
            let text = std::fs::read(&*file).map_err(|e| {
                format!(
                    "clientagent {}: toontown.tokens secret_file {}: {e}",
                    ca.bind,
                    file.display()
                )
            })?;
            let mut text = String::from_utf8(text).map_err(|_| {
                format!(
                    "clientagent {}: toontown.tokens secret_file {}: not text (make one with `openssl rand -hex 32 > FILE`)",
                    ca.bind,
                    file.display()
                )
            })?;
            while text.ends_with(['\n', '\r']) {
                text.pop();
            }
            *secret = text;
            if let Some(mode) = crate::private_fs::open_to_others(file) {
                log::warn!(
                    "clientagent {}: the token secret file {} may be read by other users (mode {mode:o}): chmod 600 it",
                    ca.bind,
                    file.display()
                );
            }
        }
        Ok(())
    }

    /// Settings that are fine on a developer's machine and dangerous where others can reach
    /// the listener: one line each, for a warning at start-up.
    pub fn exposure_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let md = &self.messagedirector;
        if let Some(all) = md
            .allow
            .iter()
            .find(|a| eventlogger::Network::parse(a).is_ok_and(|n| n.is_everyone()))
        {
            out.push(format!(
                "messagedirector.allow lists {all}: anyone who reaches the MD port is a trusted \
                 participant; list the cluster's hosts instead (docs/security.md)"
            ));
        }
        for role in &self.roles {
            match role {
                RoleConfig::ClientAgent(ca) if ca.dialect == Dialect::Toontown2003 => {
                    let exposed = if ca.haproxy {
                        Some("behind a PROXY-protocol proxy")
                    } else if !addr::is_loopback_address(&ca.bind) {
                        Some("not bound to loopback")
                    } else {
                        None
                    };
                    let Some(exposed) = exposed else { continue };
                    if ca.toontown.tokens == TokenPolicy::Open {
                        out.push(format!(
                            "clientagent {} ({exposed}) runs toontown tokens: Open: any client may log in to \
                             any account that has no password, by naming it; use Signed(secret_file: ...) \
                             (docs/security.md)",
                            ca.bind
                        ));
                    }
                    if ca.toontown.passwords == PasswordPolicy::CreateOnLogin {
                        out.push(format!(
                            "clientagent {} ({exposed}) runs toontown passwords: CreateOnLogin: any client may \
                             create accounts; use Existing or Disabled (docs/security.md)",
                            ca.bind
                        ));
                    }
                }
                RoleConfig::EventLogger {
                    bind, allow_from, ..
                } if allow_from.is_empty() && !addr::is_loopback_address(bind) => {
                    out.push(format!(
                        "eventlogger {bind} is not bound to loopback and takes events from anyone \
                         (allow_from is empty): set allow_from to the cluster's addresses (docs/security.md)"
                    ));
                }
                _ => {}
            }
        }
        out
    }

    /// Constraints shared by both file formats (Astron's reserved channels and doids).
    #[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
    pub fn validate(&self) -> Result<(), String> {
        use otp_wire::channels::{is_reserved_channel, is_reserved_doid};
        let channel_ok = |what: &str, c: u64| -> Result<(), String> {
            if c == 0 || is_reserved_channel(c) {
                Err(format!("{what} = {c}: channel 0 and channels 1-999 (and 1<<32 .. 999<<32) are reserved"))
            } else {
                Ok(())
            }
        };
        for u in &self.uberdogs {
            if u.id == 0 || is_reserved_doid(u.id) {
                return Err(format!(
                    "uberdogs: id {} is invalid (0 and 1-999 are reserved)",
                    u.id
                ));
            }
        }
        self.metrics_limits.check("metrics_limits")?;
        if let Some(admin) = &self.admin {
            admin.check()?;
        }
        let md = &self.messagedirector;
        if md.reconnect_min_ms == 0 || md.reconnect_min_ms > md.reconnect_max_ms {
            return Err(format!(
                "messagedirector.reconnect_min_ms = {} must be at least 1 and at most reconnect_max_ms ({})",
                md.reconnect_min_ms, md.reconnect_max_ms
            ));
        }
        if md.max_datagram_bytes == 0 || md.max_datagram_bytes > otp_wire::MAX_DATAGRAM_BODY {
            return Err(format!(
                "messagedirector.max_datagram_bytes = {}: must be 1..=65535",
                md.max_datagram_bytes
            ));
        }
        eventlogger::PeerAllowList::parse("messagedirector.allow", &md.allow)?;
        if md.tls.as_ref().is_some_and(|t| t.handshake_timeout_ms == 0)
            || md
                .upstream_tls
                .as_ref()
                .is_some_and(|t| t.handshake_timeout_ms == 0)
        {
            return Err("messagedirector: tls.handshake_timeout_ms and upstream_tls.handshake_timeout_ms must be at least 1".into());
        }
        if let Some(t) = &md.upstream_tls {
            if md.connect.is_none() {
                return Err(
                    "messagedirector.upstream_tls is set but messagedirector.connect is not".into(),
                );
            }
            if t.certificate.is_some() != t.key.is_some() {
                return Err("messagedirector.upstream_tls: give both certificate and key (this MD's client certificate), or neither".into());
            }
        }
        if md.core_queue_batches == 0 || md.max_participants == 0 {
            return Err(
                "messagedirector: core_queue_batches and max_participants must be at least 1"
                    .into(),
            );
        }
        if md.max_pending_lookups != MessageDirectorConfig::default().max_pending_lookups {
            log::warn!("messagedirector.max_pending_lookups is no longer used (routing waits for no lookups) and is ignored");
        }
        for role in &self.roles {
            match role {
                RoleConfig::StateServer { control } => channel_ok("stateserver control", *control)?,
                RoleConfig::Database { max_batch: 0, .. }
                | RoleConfig::Database { max_queued: 0, .. } => {
                    return Err("database: max_batch and max_queued must be at least 1".into());
                }
                RoleConfig::Database {
                    control, generate, ..
                } => {
                    channel_ok("database control", *control)?;
                    if generate.min == 0
                        || is_reserved_doid(generate.min)
                        || generate.min > generate.max
                    {
                        return Err(format!(
                            "database generate: {}..{} is not a valid doid range",
                            generate.min, generate.max
                        ));
                    }
                }
                RoleConfig::Dbss {
                    database, ranges, ..
                } => {
                    channel_ok("dbss database", *database)?;
                    for r in ranges {
                        if r.min == 0 || is_reserved_doid(r.min) || r.min > r.max {
                            return Err(format!(
                                "dbss ranges: {}..{} is not a valid doid range",
                                r.min, r.max
                            ));
                        }
                    }
                }
                RoleConfig::ClientAgent(ca) => {
                    channel_ok("clientagent channels.min", ca.channels.min)?;
                    channel_ok("clientagent channels.max", ca.channels.max)?;
                    if ca.channels.min > ca.channels.max {
                        return Err("clientagent channels: min is above max".into());
                    }
                    if !matches!(ca.add_interest.as_str(), "visible" | "enabled" | "disabled") {
                        return Err(format!(
                            "clientagent add_interest = {:?}: must be visible, enabled or disabled",
                            ca.add_interest
                        ));
                    }
                    if let TokenPolicy::Signed {
                        secret,
                        secret_file,
                    } = &ca.toontown.tokens
                    {
                        if secret.len() < MIN_TOKEN_SECRET_BYTES {
                            let whose = match secret_file {
                                Some(f) => format!("the secret in {}", f.display()),
                                None => "secret".into(),
                            };
                            return Err(format!(
                                "clientagent {}: toontown.tokens Signed: {whose} is {} bytes; at least {MIN_TOKEN_SECRET_BYTES} \
                                 are required (make one with `openssl rand -hex 32 > token.key` and write \
                                 Signed(secret_file: \"token.key\"))",
                                ca.bind,
                                secret.len()
                            ));
                        }
                    }
                    if ca.busy_flush_delay_max_ms > BUSY_FLUSH_DELAY_MAX_MS {
                        return Err(format!(
                            "clientagent {}: busy_flush_delay_max_ms is {}; at most {BUSY_FLUSH_DELAY_MAX_MS} \
                             (0 = no write pacing)",
                            ca.bind, ca.busy_flush_delay_max_ms
                        ));
                    }
                    if let Some(db) = ca.ban_database {
                        channel_ok("clientagent ban_database", db)?;
                        if ca.ban_check_timeout_ms == 0 {
                            return Err(format!(
                                "clientagent {}: ban_check_timeout_ms must be at least 1",
                                ca.bind
                            ));
                        }
                    }
                    if ca.dialect == Dialect::Toontown2003 {
                        channel_ok("clientagent toontown.database", ca.toontown.database)?;
                        channel_ok(
                            "clientagent toontown.shard_channel",
                            ca.toontown.shard_channel,
                        )?;
                        if ca.toontown.max_avatars == 0 || ca.toontown.max_visible_zones == 0 {
                            return Err("clientagent toontown: max_avatars and max_visible_zones must be at least 1".into());
                        }
                    }
                    let l = &ca.limits;
                    if l.max_datagram_bytes < 16
                        || l.max_datagram_bytes > otp_wire::MAX_DATAGRAM_BODY
                    {
                        return Err(format!(
                            "clientagent limits.max_datagram_bytes = {}: must be 16..=65535",
                            l.max_datagram_bytes
                        ));
                    }
                    if l.max_interests == 0
                        || l.max_zones_per_interest == 0
                        || l.max_zones_total == 0
                        || l.max_pending_interests == 0
                    {
                        return Err("clientagent limits: max_interests, max_zones_per_interest, max_zones_total and max_pending_interests must be at least 1".into());
                    }
                    // A SET_ZONE opens its zone, its visible zones and the quiet zone.
                    if ca.dialect == Dialect::Toontown2003
                        && ca.toontown.max_visible_zones.saturating_add(1) > l.max_zones_total
                    {
                        return Err(format!(
                            "clientagent limits.max_zones_total = {}: a 2003 client's SET_ZONE may open toontown.max_visible_zones + 1 = {} zones; raise it or lower max_visible_zones",
                            l.max_zones_total,
                            ca.toontown.max_visible_zones.saturating_add(1)
                        ));
                    }
                }
                RoleConfig::EventLogger { .. } => {
                    eventlogger::Settings::from_role(role)?;
                }
            }
        }
        Ok(())
    }
}

/// A configuration error, naming where it is when that is known.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

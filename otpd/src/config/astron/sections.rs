//! Per-section conversion: the file's sections (general, messagedirector, uberdogs, roles and
//! each role's keys) into otpd's model, refusing what the model cannot express.

use super::access::*;
use super::yaml::{Kind, Node};
use super::{CA_DEFAULT_PORT, EVENTLOGGER_DEFAULT_PORT, MD_DEFAULT_PORT};
use crate::config::{
    ChannelRange, ClientAgentConfig, ClientLimits, ClusterConfig, DatabaseBackend, DoidRange,
    MdTlsConfig, MessageDirectorConfig, RoleConfig, TlsConfig, TlsParticipants, UberDog,
    UpstreamTlsConfig,
};
use std::path::PathBuf;

pub(super) fn convert(cx: &Cx, root: &Node) -> Res<ClusterConfig> {
    let top = Section::new(cx, root, "")?;
    // `metrics` is otpd's own section (astrond refuses it): see ClusterConfig::metrics.
    top.only(
        cx,
        &[
            "daemon",
            "general",
            "uberdogs",
            "messagedirector",
            "roles",
            "metrics",
        ],
    )?;
    let mut config = ClusterConfig {
        // astrond pins nothing, and its hosts usually run the AI and UberDOG processes too:
        // core threads float unless `general: {pin_cores: true}` says otherwise.
        pin_cores: false,
        ..ClusterConfig::default()
    };

    if let Some(daemon) = top.sub(cx, "daemon")? {
        daemon.only(cx, &["name", "url"])?;
        if let Some(n) = daemon.get("name").filter(|n| !matches!(n.kind, Kind::Null)) {
            config.name = string(cx, n, "daemon.name")?;
        }
        // daemon.url is informational in astrond too.
        if let Some(n) = daemon.get("url").filter(|n| !matches!(n.kind, Kind::Null)) {
            string(cx, n, "daemon.url")?;
        }
    }

    if let Some(general) = top.sub(cx, "general")? {
        general.only(
            cx,
            &[
                "eventlogger",
                "dc_files",
                "dc_multiple_inheritance",
                "dc_virtual_inheritance",
                "dc_sort_inheritance_by_file",
                // otpd's own: see ClusterConfig::cores and pin_cores.
                "cores",
                "pin_cores",
            ],
        )?;
        config.eventlogger = general.address(cx, "eventlogger", EVENTLOGGER_DEFAULT_PORT)?;
        if let Some(v) = general.uint(cx, "cores", 1024)? {
            config.cores = v as usize;
        }
        if let Some(v) = general.loose_bool(cx, "pin_cores")? {
            config.pin_cores = v;
        }
        // otpd's own keys: Panda3D's dc-* settings (the 2003 rule: all three false).
        let d = &mut config.dc_settings;
        if let Some(v) = general.loose_bool(cx, "dc_multiple_inheritance")? {
            d.multiple_inheritance = v;
        }
        if let Some(v) = general.loose_bool(cx, "dc_virtual_inheritance")? {
            d.virtual_inheritance = v;
        }
        if let Some(v) = general.loose_bool(cx, "dc_sort_inheritance_by_file")? {
            d.sort_inheritance_by_file = v;
        }
        if let Some(n) = general.get("dc_files") {
            for f in items(cx, n, "general.dc_files")? {
                let name = string(cx, f, "an entry of general.dc_files")?;
                config.dc_files.push(cx.resolve_path(&name));
            }
        }
    }

    if let Some(n) = top.get("uberdogs") {
        for (i, item) in items(cx, n, "uberdogs")?.iter().enumerate() {
            let ud = Section::new(cx, item, &format!("uberdogs[{i}]"))?;
            ud.only(cx, &["id", "class", "anonymous"])?;
            let id = ud.doid(cx, "id")?;
            let class = ud.string(cx, "class")?;
            let anonymous = ud.strict_bool(cx, "anonymous")?.unwrap_or(false);
            let id = ud.require(cx, "id", id, "the UberDOG's doid")?;
            let class = ud.require(cx, "class", class, "the UberDOG's DC class")?;
            config.uberdogs.push(UberDog {
                id,
                class,
                anonymous,
            });
        }
    }

    config.messagedirector = MessageDirectorConfig {
        bind: None,
        connect: None,
        ..MessageDirectorConfig::default()
    };
    if let Some(md) = top.sub(cx, "messagedirector")? {
        md_section(cx, &md, &mut config.messagedirector)?;
    }

    if let Some(metrics) = top.sub(cx, "metrics")? {
        metrics_section(cx, &metrics, &mut config)?;
    }

    if let Some(n) = top.get("roles") {
        for (i, item) in items(cx, n, "roles")?.iter().enumerate() {
            config.roles.push(role(cx, item, i)?);
        }
    }
    Ok(config)
}

/// The default port of the metrics endpoint when `metrics.bind` leaves it out.
const METRICS_DEFAULT_PORT: u16 = 9199;

/// otpd's `metrics` section: the endpoint's address (`bind`; absent = off) and its bounds, as
/// `metrics` and `metrics_limits` in cluster.ron.
fn metrics_section(cx: &Cx, sec: &Section, config: &mut ClusterConfig) -> Res<()> {
    sec.only(
        cx,
        &[
            "bind",
            "max_connections",
            "max_request_bytes",
            "read_timeout_ms",
            "write_timeout_ms",
            "idle_timeout_ms",
        ],
    )?;
    config.metrics = sec.address(cx, "bind", METRICS_DEFAULT_PORT)?;
    let l = &mut config.metrics_limits;
    if let Some(v) = sec.uint(cx, "max_connections", 1_000_000)? {
        l.max_connections = v as usize;
    }
    if let Some(v) = sec.uint(cx, "max_request_bytes", 1 << 30)? {
        l.max_request_bytes = v as usize;
    }
    if let Some(v) = sec.uint(cx, "read_timeout_ms", 3_600_000)? {
        l.read_timeout_ms = v;
    }
    if let Some(v) = sec.uint(cx, "write_timeout_ms", 3_600_000)? {
        l.write_timeout_ms = v;
    }
    if let Some(v) = sec.uint(cx, "idle_timeout_ms", 3_600_000)? {
        l.idle_timeout_ms = v;
    }
    Ok(())
}

/// The `messagedirector` section: astrond's keys, and otpd's `allow` and reconnect waits.
fn md_section(cx: &Cx, md: &Section, m: &mut MessageDirectorConfig) -> Res<()> {
    // `allow`, the reconnect waits, the upstream link's keys and TLS are otpd's own (astrond refuses them): see
    // MessageDirectorConfig.
    md.only(
        cx,
        &[
            "bind",
            "connect",
            "threaded",
            "allow",
            "reconnect_min_ms",
            "reconnect_max_ms",
            "on_upstream_lost",
            "upstream_settle_ms",
            "keepalive_ms",
            "link_timeout_ms",
            "connect_timeout_ms",
            "max_queued_bytes_upstream",
            "tls",
            "upstream_tls",
        ],
    )?;
    m.bind = md_address(cx, md, "bind")?;
    m.connect = md_address(cx, md, "connect")?;
    m.allow = networks(cx, md, "allow")?;
    upstream_link(cx, md, m)?;
    if let Some(tls) = md.sub(cx, "tls")? {
        m.tls = Some(md_tls_section(cx, &tls)?);
    }
    if let Some(tls) = md.sub(cx, "upstream_tls")? {
        m.upstream_tls = Some(upstream_tls_section(cx, &tls)?);
    }
    if let Some(v) = md.uint(cx, "reconnect_min_ms", 3_600_000)? {
        m.reconnect_min_ms = v;
    }
    if let Some(v) = md.uint(cx, "reconnect_max_ms", 3_600_000)? {
        m.reconnect_max_ms = v;
    }
    if let Some(threaded) = md.loose_bool(cx, "threaded")? {
        log::info!(
            "{}: messagedirector.threaded = {threaded} is accepted and ignored: otpd routes on its own core threads (see `cores`)",
            cx.file
        );
    }
    Ok(())
}

/// otpd's own keys of the upstream link (astrond has none of them).
fn upstream_link(cx: &Cx, md: &Section, out: &mut MessageDirectorConfig) -> Res<()> {
    if let Some(n) = md.get("on_upstream_lost") {
        let what = md.key("on_upstream_lost");
        out.on_upstream_lost = match string(cx, n, &what)?.as_str() {
            "Reconnect" | "reconnect" => crate::config::OnUpstreamLost::Reconnect,
            "Exit" | "exit" => crate::config::OnUpstreamLost::Exit,
            v => return Err(cx.err(n, format!("{what}: '{v}' is not Reconnect or Exit"))),
        };
    }
    let ms = u32::MAX as u64;
    if let Some(v) = md.uint(cx, "upstream_settle_ms", ms)? {
        out.upstream_settle_ms = Some(v);
    }
    if let Some(v) = md.uint(cx, "keepalive_ms", ms)? {
        out.keepalive_ms = v;
    }
    if let Some(v) = md.uint(cx, "link_timeout_ms", ms)? {
        out.link_timeout_ms = v;
    }
    if let Some(v) = md.uint(cx, "connect_timeout_ms", ms)? {
        out.connect_timeout_ms = v;
    }
    if let Some(v) = md.uint(cx, "max_queued_bytes_upstream", usize::MAX as u64)? {
        out.max_queued_bytes_upstream = v as usize;
    }
    Ok(())
}

/// An allow-list key (`allow`, `proxy_from`, `allow_from`): a list of addresses and networks,
/// each checked here so that the error points at the entry; absent = empty.
fn networks(cx: &Cx, sec: &Section, key: &str) -> Res<Vec<String>> {
    let mut out = Vec::new();
    if let Some(n) = sec.get(key) {
        let what = sec.key(key);
        for a in items(cx, n, &what)? {
            let text = string(cx, a, &format!("an entry of {what}"))?;
            crate::config::eventlogger::Network::parse(&text)
                .map_err(|e| cx.err(a, format!("{what}: {e}")))?;
            out.push(text);
        }
    }
    Ok(out)
}

/// `messagedirector.tls`, with the keys of `MdTlsConfig` (files relative to the YAML file).
fn md_tls_section(cx: &Cx, tls: &Section) -> Res<MdTlsConfig> {
    tls.only(
        cx,
        &[
            "certificate",
            "key",
            "client_ca",
            "participants",
            "handshake_timeout_ms",
        ],
    )?;
    let file = |key: &str| -> Res<PathBuf> {
        let s = tls.string(cx, key)?;
        let s = tls.require(cx, key, s, "a PEM file")?;
        Ok(cx.resolve_path(&s))
    };
    let participants = match tls.get("participants") {
        None => TlsParticipants::default(),
        Some(n) => match string(cx, n, &tls.key("participants"))?
            .to_ascii_lowercase()
            .as_str()
        {
            "required" => TlsParticipants::Required,
            "optional" => TlsParticipants::Optional,
            other => {
                return Err(cx.err(
                    n,
                    format!(
                        "{}: {other:?} is not one of required, optional",
                        tls.key("participants")
                    ),
                ))
            }
        },
    };
    Ok(MdTlsConfig {
        certificate: file("certificate")?,
        key: file("key")?,
        client_ca: file("client_ca")?,
        participants,
        handshake_timeout_ms: tls
            .uint(cx, "handshake_timeout_ms", u64::MAX)?
            .unwrap_or_else(crate::config::tls_handshake_timeout),
    })
}

/// `messagedirector.upstream_tls`, with the keys of `UpstreamTlsConfig`.
fn upstream_tls_section(cx: &Cx, tls: &Section) -> Res<UpstreamTlsConfig> {
    tls.only(
        cx,
        &[
            "ca",
            "server_name",
            "certificate",
            "key",
            "handshake_timeout_ms",
        ],
    )?;
    let file = |key: &str| -> Res<Option<PathBuf>> {
        Ok(tls.string(cx, key)?.map(|s| cx.resolve_path(&s)))
    };
    let ca = file("ca")?;
    Ok(UpstreamTlsConfig {
        ca: tls.require(
            cx,
            "ca",
            ca,
            "the CA the upstream MD's certificate chains to",
        )?,
        server_name: tls.string(cx, "server_name")?,
        certificate: file("certificate")?,
        key: file("key")?,
        handshake_timeout_ms: tls
            .uint(cx, "handshake_timeout_ms", u64::MAX)?
            .unwrap_or_else(crate::config::tls_handshake_timeout),
    })
}

/// astrond treats the literal "unspecified" (its default) as "not set".
fn md_address(cx: &Cx, md: &Section, key: &str) -> Res<Option<String>> {
    if md.get(key).and_then(scalar) == Some("unspecified") {
        return Ok(None);
    }
    md.address(cx, key, MD_DEFAULT_PORT)
}

const ROLE_TYPES: [&str; 5] = [
    "clientagent",
    "stateserver",
    "dbss",
    "database",
    "eventlogger",
];

#[allow(clippy::too_many_lines)] // one short arm per message type or key
fn role(cx: &Cx, item: &Node, i: usize) -> Res<RoleConfig> {
    let path = format!("roles[{i}]");
    let sec = Section::new(cx, item, &path)?;
    let Some(type_node) = sec.get("type") else {
        return Err(cx.err(
            item,
            format!("{path} has no 'type' (one of: {})", ROLE_TYPES.join(", ")),
        ));
    };
    let kind = string(cx, type_node, &format!("{path}.type"))?;
    let sec = Section {
        path: format!("{path} ({kind})"),
        ..sec
    };
    match kind.as_str() {
        "stateserver" => {
            sec.only(cx, &["type", "control"])?;
            let control = sec.channel(cx, "control")?;
            // astrond lets a state server run without a control channel (it then subscribes
            // nothing); otpd's model needs one.
            let control = sec.require(
                cx,
                "control",
                control,
                "otpd needs the state server's control channel",
            )?;
            Ok(RoleConfig::StateServer { control })
        }
        "dbss" => {
            sec.only(cx, &["type", "database", "ranges"])?;
            let database = sec.channel(cx, "database")?;
            let mut ranges = Vec::new();
            if let Some(n) = sec.get("ranges") {
                let what = sec.key("ranges");
                for (j, r) in items(cx, n, &what)?.iter().enumerate() {
                    let rs = Section::new(cx, r, &format!("{what}[{j}]"))?;
                    rs.only(cx, &["min", "max"])?;
                    let min = rs.doid(cx, "min")?;
                    let max = rs.doid(cx, "max")?.unwrap_or(u32::MAX);
                    let min = rs.require(cx, "min", min, "the first doid of the range")?;
                    if min > max {
                        return Err(cx.err(r, format!("{what}[{j}]: min {min} is above max {max}")));
                    }
                    ranges.push(DoidRange { min, max });
                }
            }
            let database = sec.require(
                cx,
                "database",
                database,
                "the channel of the database server",
            )?;
            Ok(RoleConfig::Dbss {
                database,
                ranges,
                limits: Default::default(),
            })
        }
        "database" => database(cx, &sec),
        "clientagent" => clientagent(cx, &sec),
        "eventlogger" => {
            sec.only(
                cx,
                &[
                    "type",
                    "bind",
                    "output",
                    "rotate_interval",
                    // otpd's own (astrond refuses them): see RoleConfig::EventLogger.
                    "max_file_bytes",
                    "max_events_per_second",
                    "max_bytes_per_second",
                    "max_files",
                    "max_age",
                    "allow_from",
                ],
            )?;
            let bind = sec
                .address(cx, "bind", EVENTLOGGER_DEFAULT_PORT)?
                .unwrap_or_else(|| format!("0.0.0.0:{EVENTLOGGER_DEFAULT_PORT}"));
            let output = sec
                .string(cx, "output")?
                .unwrap_or_else(|| "events-%Y%m%d-%H%M%S.log".into());
            let output = cx.resolve_path(&output).to_string_lossy().into_owned();
            let rotate_interval = match sec.get("rotate_interval") {
                Some(n) if !matches!(n.kind, Kind::Null) => {
                    string(cx, n, &sec.key("rotate_interval"))?
                }
                _ => "0".into(),
            };
            let max_age = match sec.get("max_age") {
                Some(n) if !matches!(n.kind, Kind::Null) => string(cx, n, &sec.key("max_age"))?,
                _ => crate::config::el_max_age(),
            };
            let allow_from = networks(cx, &sec, "allow_from")?;
            Ok(RoleConfig::EventLogger {
                bind,
                output,
                rotate_interval,
                max_file_bytes: sec
                    .uint(cx, "max_file_bytes", u64::MAX)?
                    .unwrap_or_else(crate::config::el_max_file_bytes),
                max_events_per_second: sec
                    .uint(cx, "max_events_per_second", u32::MAX as u64)?
                    .map_or_else(crate::config::el_max_events_per_second, |v| v as u32),
                max_bytes_per_second: sec
                    .uint(cx, "max_bytes_per_second", u64::MAX)?
                    .unwrap_or_else(crate::config::el_max_bytes_per_second),
                max_files: sec
                    .uint(cx, "max_files", u32::MAX as u64)?
                    .map_or_else(crate::config::el_max_files, |v| v as usize),
                max_age,
                allow_from,
            })
        }
        other => Err(cx.err(
            type_node,
            format!(
                "{path}.type: '{other}' is not a role type (one of: {})",
                ROLE_TYPES.join(", ")
            ),
        )),
    }
}

#[allow(clippy::too_many_lines)] // one short arm per message type or key
fn database(cx: &Cx, sec: &Section) -> Res<RoleConfig> {
    sec.only(cx, &["type", "control", "broadcast", "generate", "backend"])?;
    let control = sec.channel(cx, "control")?;
    let broadcast = sec.strict_bool(cx, "broadcast")?.unwrap_or(true);
    let mut min = None;
    let mut max = u32::MAX;
    if let Some(g) = sec.sub(cx, "generate")? {
        g.only(cx, &["min", "max"])?;
        min = g.doid(cx, "min")?;
        max = g.doid(cx, "max")?.unwrap_or(u32::MAX);
    }
    let control = sec.require(
        cx,
        "control",
        control,
        "the database server's control channel",
    )?;
    let Some(min) = min else {
        let at = sec.get("generate").unwrap_or(sec.node);
        return Err(cx.err(
            at,
            format!(
                "'{}' needs 'generate.min': the first doid it may allocate",
                sec.path
            ),
        ));
    };
    if min > max {
        let at = sec.get("generate").unwrap_or(sec.node);
        return Err(cx.err(
            at,
            format!("{}.generate: min {min} is above max {max}", sec.path),
        ));
    }
    let generate = DoidRange { min, max };

    let backend = match sec.get("backend") {
        None => DatabaseBackend::Sqlite {
            directory: cx.resolve_path("yaml_db"),
        },
        Some(n) => {
            let b = Section::new(cx, n, &sec.key("backend"))?;
            let kind = b.string(cx, "type")?.unwrap_or_else(|| "yaml".into());
            match kind.as_str() {
                "yaml" => {
                    b.only(cx, &["type", "directory"])?;
                    let dir = b
                        .string(cx, "directory")?
                        .unwrap_or_else(|| "yaml_db".into());
                    DatabaseBackend::Sqlite {
                        directory: cx.resolve_path(&dir),
                    }
                }
                "soci" => {
                    // `server` is not a key of astrond's soci backend, but Astron's own
                    // PostgreSQL configuration test writes the address under it: otpd
                    // takes it as another name for `address`.
                    b.only(
                        cx,
                        &[
                            "type", "driver", "database", "address", "server", "username",
                            "password",
                        ],
                    )?;
                    let driver = b.string(cx, "driver")?.unwrap_or_else(|| "mysql".into());
                    let database = b.string(cx, "database")?.unwrap_or_default();
                    let username = b.string(cx, "username")?.unwrap_or_default();
                    let password = b.string(cx, "password")?.unwrap_or_default();
                    let address = match (b.string(cx, "address")?, b.string(cx, "server")?) {
                        (Some(_), Some(_)) => {
                            return Err(cx.err(
                                b.get("server").unwrap_or(n),
                                format!(
                                    "'{}' has both 'address' and 'server' (the same setting)",
                                    b.path
                                ),
                            ))
                        }
                        (a, s) => a.or(s).unwrap_or_default(),
                    };
                    match driver.as_str() {
                        "postgresql" | "postgres" => DatabaseBackend::Postgres {
                            address,
                            database,
                            username,
                            password,
                        },
                        other => {
                            let at = b.get("driver").unwrap_or(n);
                            return Err(cx.err(
                                at,
                                format!(
                                    "{}.driver: '{other}' is not supported by otpd; its SQL backend is PostgreSQL \
                                     (driver: postgresql){}",
                                    b.path,
                                    if b.get("driver").is_none() { " (astrond's default driver is mysql)" } else { "" }
                                ),
                            ));
                        }
                    }
                }
                "mongodb" => {
                    b.only(cx, &["type", "server", "workers"])?;
                    if let Some(s) = b.get("server") {
                        string(cx, s, &b.key("server"))?;
                    }
                    if let Some(w) = b.get("workers") {
                        uint(cx, w, &b.key("workers"), i32::MAX as u64)?;
                    }
                    let at = b.get("type").unwrap_or(n);
                    return Err(cx.err(
                        at,
                        format!(
                            "{}.type: otpd does not support the MongoDB backend; use type: soci with \
                             driver: postgresql, or type: yaml (stored in SQLite)",
                            b.path
                        ),
                    ));
                }
                other => {
                    let at = b.get("type").unwrap_or(n);
                    return Err(cx.err(
                        at,
                        format!("{}.type: '{other}' is not a database backend (one of: yaml, soci, mongodb)", b.path),
                    ));
                }
            }
        }
    };
    if let DatabaseBackend::Sqlite { directory } = &backend {
        log::info!(
            "{}: database backend 'yaml' (astrond's development store) is served by otpd's embedded SQLite store under {}",
            cx.file,
            directory.display()
        );
    }
    Ok(RoleConfig::Database {
        control,
        broadcast,
        generate,
        backend,
        max_batch: crate::config::db_max_batch(),
        max_queued: crate::config::db_max_queued(),
    })
}

#[allow(clippy::too_many_lines)] // one short arm per message type or key
fn clientagent(cx: &Cx, sec: &Section) -> Res<RoleConfig> {
    sec.only(
        cx,
        &[
            "type",
            "bind",
            "version",
            "haproxy",
            "proxy_from",
            "manual_dc_hash",
            "channels",
            "client",
            "tuning",
            "tls",
        ],
    )?;
    let bind = sec
        .address(cx, "bind", CA_DEFAULT_PORT)?
        .unwrap_or_else(|| format!("0.0.0.0:{CA_DEFAULT_PORT}"));
    let version = sec.string(cx, "version")?.unwrap_or_else(|| "dev".into());
    let haproxy = sec.loose_bool(cx, "haproxy")?.unwrap_or(false);
    // otpd's own key (astrond believes any peer's PROXY header).
    let proxy_from = networks(cx, sec, "proxy_from")?;
    let manual_dc_hash = sec
        .uint(cx, "manual_dc_hash", u32::MAX as u64)?
        .map(|h| h as u32)
        .filter(|&h| h != 0);

    let mut min = None;
    let mut max = None;
    if let Some(ch) = sec.sub(cx, "channels")? {
        ch.only(cx, &["min", "max"])?;
        min = ch.channel(cx, "min")?;
        max = ch.channel(cx, "max")?;
    }

    let mut ca = ClientAgentConfig {
        bind,
        version,
        manual_dc_hash,
        haproxy,
        proxy_from,
        channels: ChannelRange { min: 0, max: 0 },
        relocate: false,
        add_interest: "visible".into(),
        send_hash: true,
        send_version: true,
        write_buffer_size: 262_144,
        write_timeout_ms: 5_000,
        flush_delay_ms: 0,
        busy_flush_delay_max_ms: super::super::busy_flush_delay_max(),
        refuse_clients_without_upstream: true,
        system_message_field: None,
        ban_database: None,
        ban_check_timeout_ms: crate::config::ban_check_timeout(),
        // astrond's default is 0 (never); otpd's is a minute.
        heartbeat_timeout_ms: crate::config::DEFAULT_HEARTBEAT_TIMEOUT_MS,
        interest_timeout_ms: 500,
        tls: None,
        limits: ClientLimits::default(),
        dialect: Default::default(),
        toontown: Default::default(),
    };

    if let Some(client) = sec.sub(cx, "client")? {
        if let Some(t) = client.get("type") {
            let t_s = string(cx, t, &client.key("type"))?;
            if t_s != "libastron" {
                return Err(cx.err(
                    t,
                    format!(
                        "{}: '{t_s}' is not a client type (only 'libastron')",
                        client.key("type")
                    ),
                ));
            }
        }
        client.only(
            cx,
            &[
                "type",
                "relocate",
                "add_interest",
                "send_hash",
                "send_version",
                "write_buffer_size",
                "write_timeout_ms",
                "heartbeat_timeout",
                // otpd's own (astrond refuses them): see ClientAgentConfig.
                "flush_delay_ms",
                "busy_flush_delay_max_ms",
                "refuse_clients_without_upstream",
                "system_message_field",
                "ban_database",
                "ban_check_timeout_ms",
            ],
        )?;
        if let Some(v) = client.strict_bool(cx, "relocate")? {
            ca.relocate = v;
        }
        if let Some(n) = client.get("add_interest") {
            let v = string(cx, n, &client.key("add_interest"))?;
            if !matches!(v.as_str(), "visible" | "enabled" | "disabled") {
                return Err(cx.err(
                    n,
                    format!(
                        "{}: '{v}' is not one of visible, enabled, disabled",
                        client.key("add_interest")
                    ),
                ));
            }
            ca.add_interest = v;
        }
        if let Some(v) = client.loose_bool(cx, "send_hash")? {
            ca.send_hash = v;
        }
        if let Some(v) = client.loose_bool(cx, "send_version")? {
            ca.send_version = v;
        }
        if let Some(v) = client.uint(cx, "write_buffer_size", u64::MAX)? {
            ca.write_buffer_size = v;
        }
        if let Some(v) = client.uint(cx, "write_timeout_ms", u32::MAX as u64)? {
            ca.write_timeout_ms = v;
        }
        if let Some(v) = client.uint(cx, "heartbeat_timeout", i64::MAX as u64)? {
            ca.heartbeat_timeout_ms = v;
        }
        if let Some(v) = client.uint(cx, "flush_delay_ms", 60_000)? {
            ca.flush_delay_ms = v;
        }
        if let Some(v) = client.uint(
            cx,
            "busy_flush_delay_max_ms",
            crate::config::BUSY_FLUSH_DELAY_MAX_MS,
        )? {
            ca.busy_flush_delay_max_ms = v;
        }
        if let Some(v) = client.loose_bool(cx, "refuse_clients_without_upstream")? {
            ca.refuse_clients_without_upstream = v;
        }
        if let Some(n) = client.get("system_message_field") {
            ca.system_message_field = Some(string(cx, n, &client.key("system_message_field"))?);
        }
        if let Some(v) = client.uint(cx, "ban_database", u64::MAX)? {
            ca.ban_database = Some(v);
        }
        if let Some(v) = client.uint(cx, "ban_check_timeout_ms", 600_000)? {
            ca.ban_check_timeout_ms = v;
        }
    }

    if let Some(tuning) = sec.sub(cx, "tuning")? {
        tuning.only(cx, &["interest_timeout"])?;
        if let Some(v) = tuning.uint(cx, "interest_timeout", u64::MAX)? {
            ca.interest_timeout_ms = v;
        }
    }

    if let Some(tls) = sec.sub(cx, "tls")? {
        ca.tls = tls_section(cx, &tls)?;
    }

    let min = sec.require(
        cx,
        "channels.min",
        min,
        "the first channel handed to clients",
    )?;
    let max = sec.require(
        cx,
        "channels.max",
        max,
        "the last channel handed to clients",
    )?;
    if min > max {
        let at = sec.get("channels").unwrap_or(sec.node);
        return Err(cx.err(
            at,
            format!("{}.channels: min {min} is above max {max}", sec.path),
        ));
    }
    ca.channels = ChannelRange { min, max };
    Ok(RoleConfig::ClientAgent(ca))
}

/// The `tls` section of Astron's TLS-era client agent (removed from astrond in 2018):
/// certificate + key_file make a TLS listener; options otpd cannot honour are refused rather
/// than silently dropped.
#[allow(clippy::too_many_lines)] // one short arm per message type or key
fn tls_section(cx: &Cx, tls: &Section) -> Res<Option<TlsConfig>> {
    tls.only(
        cx,
        &[
            "certificate",
            "key_file",
            "key",
            "chain_file",
            "cert_authority",
            "max_verify_depth",
            "sslv2",
            "sslv3",
            "tlsv1",
            "handshake_timeout",
        ],
    )?;
    let file = |key: &str| -> Res<Option<(PathBuf, &Node)>> {
        match tls.get(key) {
            None => Ok(None),
            Some(n) => {
                let s = string(cx, n, &tls.key(key))?;
                let p = cx.resolve_path(&s);
                if let Err(e) = std::fs::File::open(&p) {
                    return Err(cx.err(
                        n,
                        format!("{}: cannot open {}: {e}", tls.key(key), p.display()),
                    ));
                }
                if s.is_empty() || !p.is_file() {
                    return Err(cx.err(
                        n,
                        format!("{}: {} is not a file", tls.key(key), p.display()),
                    ));
                }
                Ok(Some((p, n)))
            }
        }
    };
    let certificate = file("certificate")?;
    if tls.get("key").is_some() && tls.get("key_file").is_some() {
        return Err(cx.err(
            tls.get("key").unwrap(),
            format!(
                "'{}' has both 'key' and 'key_file' (the same setting)",
                tls.path
            ),
        ));
    }
    let key = match file("key_file")? {
        Some(k) => Some(k),
        None => file("key")?,
    };
    for refused in ["chain_file", "cert_authority"] {
        if let Some((_, n)) = file(refused)? {
            return Err(cx.err(
                n,
                format!(
                    "{}: otpd's TLS does not support this option",
                    tls.key(refused)
                ),
            ));
        }
    }
    for old in ["sslv2", "sslv3"] {
        if tls.strict_bool(cx, old)? == Some(true) {
            let n = tls.get(old).unwrap();
            return Err(cx.err(
                n,
                format!("{}: otpd never enables SSLv2/SSLv3", tls.key(old)),
            ));
        }
    }
    if let Some(v) = tls.strict_bool(cx, "tlsv1")? {
        log::info!(
            "{}: {} = {v} is accepted and ignored: otpd offers TLS 1.2 and later",
            cx.file,
            tls.key("tlsv1")
        );
    }
    if tls.uint(cx, "max_verify_depth", u32::MAX as u64)?.is_some() {
        log::info!(
            "{}: {} is accepted and ignored (no client certificates are verified)",
            cx.file,
            tls.key("max_verify_depth")
        );
    }
    if tls.get("handshake_timeout").is_some() {
        let n = tls.get("handshake_timeout").unwrap();
        let s = string(cx, n, &tls.key("handshake_timeout"))?;
        if s.trim_end().parse::<i64>().is_err() && parse_yaml_cpp_uint(&s).is_none() {
            return Err(cx.err(
                n,
                format!(
                    "{} must be a whole number of milliseconds",
                    tls.key("handshake_timeout")
                ),
            ));
        }
        log::info!(
            "{}: {} is accepted and ignored",
            cx.file,
            tls.key("handshake_timeout")
        );
    }
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some((certificate, _)), Some((key, _))) => Ok(Some(TlsConfig { certificate, key })),
        (Some(_), None) | (None, Some(_)) => Err(cx.err(
            tls.node,
            format!(
                "'{}' needs both 'certificate' and 'key_file' to enable TLS",
                tls.path
            ),
        )),
    }
}

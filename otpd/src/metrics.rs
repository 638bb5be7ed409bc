//! The metrics endpoint: Prometheus text (OpenMetrics) at `/metrics` on the configured
//! address, read from the runtime's counters at each scrape, and `otpd status`, a one-screen
//! summary of that endpoint.

use crate::config::HttpLimits;
use crate::eventlogger::Counters;
use crate::http;
use crate::runtime::Stats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Labels = Vec<(String, String)>;

struct Families {
    routed: Family<Labels, Counter<u64, AtomicU64>>,
    deliveries: Family<Labels, Counter<u64, AtomicU64>>,
    client_deliveries: Family<Labels, Counter<u64, AtomicU64>>,
    client_socket_writes: Family<Labels, Counter<u64, AtomicU64>>,
    stalled_batches: Family<Labels, Gauge>,
    client_write_spacing_us: Family<Labels, Gauge>,
    channels: Family<Labels, Gauge>,
    participants: Gauge,
    cut_off: Counter<u64, AtomicU64>,
    refused: Family<Labels, Counter<u64, AtomicU64>>,
    upstream_connected: Gauge,
    upstream_settling: Gauge,
    upstream_losses: Counter<u64, AtomicU64>,
    upstream_cut_off: Counter<u64, AtomicU64>,
    upstream_dropped: Counter<u64, AtomicU64>,
    upstream_silent: Gauge<f64, AtomicU64>,
    role: Family<Labels, Gauge>,
    el_written: Counter<u64, AtomicU64>,
    el_dropped: Counter<u64, AtomicU64>,
    clients: Family<Labels, Gauge>,
    client_connections: Family<Labels, Counter<u64, AtomicU64>>,
    client_refused: Family<Labels, Counter<u64, AtomicU64>>,
    client_ejects: Family<Labels, Counter<u64, AtomicU64>>,
    logins_refused: Family<Labels, Counter<u64, AtomicU64>>,
    password_hashes: Counter<u64, AtomicU64>,
    http_connections: Gauge,
    http_dropped: Family<Labels, Counter<u64, AtomicU64>>,
}

fn core_label(core: usize) -> Labels {
    vec![("core".into(), core.to_string())]
}

/// Renders every metric, as of now.
#[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
pub fn render(stats: &Stats, events: &Counters) -> String {
    let mut registry = Registry::with_prefix("otpd");
    let f = Families {
        routed: Family::default(),
        deliveries: Family::default(),
        client_deliveries: Family::default(),
        client_socket_writes: Family::default(),
        stalled_batches: Family::default(),
        client_write_spacing_us: Family::default(),
        channels: Family::default(),
        participants: Gauge::default(),
        cut_off: Counter::default(),
        refused: Family::default(),
        upstream_connected: Gauge::default(),
        upstream_settling: Gauge::default(),
        upstream_losses: Counter::default(),
        upstream_cut_off: Counter::default(),
        upstream_dropped: Counter::default(),
        upstream_silent: Gauge::default(),
        role: Family::default(),
        el_written: Counter::default(),
        el_dropped: Counter::default(),
        clients: Family::default(),
        client_connections: Family::default(),
        client_refused: Family::default(),
        client_ejects: Family::default(),
        logins_refused: Family::default(),
        password_hashes: Counter::default(),
        http_connections: Gauge::default(),
        http_dropped: Family::default(),
    };
    registry.register(
        "datagrams_routed",
        "Datagrams routed, per core",
        f.routed.clone(),
    );
    registry.register(
        "deliveries",
        "Datagram deliveries to participants, per core",
        f.deliveries.clone(),
    );
    registry.register(
        "client_deliveries",
        "Datagrams queued to client connections (what the sessions wrote), per core",
        f.client_deliveries.clone(),
    );
    registry.register(
        "client_socket_writes",
        "Socket writes to client connections that took bytes (TLS: records), per core; a client's deliveries in one event-loop turn share one write",
        f.client_socket_writes.clone(),
    );
    registry.register(
        "client_write_spacing_microseconds",
        "How far apart this core writes to one client while it is busy (0 = at the end of each event-loop turn; docs/performance.md, write pacing under load), per core",
        f.client_write_spacing_us.clone(),
    );
    registry.register(
        "stalled_batches",
        "Batches waiting for another core's full queue (the core's backlog)",
        f.stalled_batches.clone(),
    );
    registry.register(
        "subscribed_channels",
        "Channels subscribed by the participants of each core",
        f.channels.clone(),
    );
    registry.register(
        "participants",
        "Connected MD participants",
        f.participants.clone(),
    );
    registry.register(
        "participants_cut_off",
        "Participants disconnected for not reading",
        f.cut_off.clone(),
    );
    registry.register(
        "participants_refused",
        "Connections to the MD port refused, by reason (not_allowed: not in messagedirector.allow; max_participants; tls: no or a bad client certificate, a failed or late handshake, plain TCP where messagedirector.tls requires TLS)",
        f.refused.clone(),
    );
    registry.register(
        "upstream_connected",
        "1 while the upstream MD link is up",
        f.upstream_connected.clone(),
    );
    registry.register(
        "upstream_settling",
        "1 while a regained upstream link settles (upstream_settle_ms): post-removes fired meanwhile are held and new clients refused",
        f.upstream_settling.clone(),
    );
    registry.register(
        "upstream_losses",
        "Times the upstream MD link was lost (failed connection attempts are not counted)",
        f.upstream_losses.clone(),
    );
    registry.register(
        "upstream_cut_off",
        "Upstream links cut because the upstream MD stopped reading (max_queued_bytes_upstream); counted in upstream_losses too",
        f.upstream_cut_off.clone(),
    );
    registry.register(
        "upstream_dropped_datagrams",
        "Datagrams for the upstream MD dropped: sent while the link was down, or fired post-removes past max_queued_bytes_upstream",
        f.upstream_dropped.clone(),
    );
    let last_byte = stats.upstream_last_byte_unix_ms.load(Ordering::Relaxed);
    if last_byte > 0 {
        registry.register(
            "upstream_seconds_since_last_byte",
            "Seconds since the upstream MD link last delivered a byte (or connected); grows on a quiet link too",
            f.upstream_silent.clone(),
        );
    }
    registry.register(
        "role",
        "Role figures: objects per StateServer/DBSS, database requests, failures and latency sums",
        f.role.clone(),
    );
    registry.register(
        "eventlogger_events_written",
        "Events written by this process's EventLogger",
        f.el_written.clone(),
    );
    registry.register(
        "eventlogger_events_dropped",
        "Events the EventLogger dropped (rate cap, write errors)",
        f.el_dropped.clone(),
    );
    registry.register(
        "clients",
        "Clients connected to each ClientAgent listener, by session state",
        f.clients.clone(),
    );
    registry.register(
        "client_connections",
        "Client connections accepted by each ClientAgent listener",
        f.client_connections.clone(),
    );
    registry.register(
        "client_refused",
        "Client connections refused (channel range used up, too many from one address)",
        f.client_refused.clone(),
    );
    registry.register(
        "client_ejects",
        "Clients ejected, by ClientAgent listener and eject code",
        f.client_ejects.clone(),
    );
    registry.register(
        "client_logins_refused",
        "Password logins refused, by ClientAgent listener and cause (credentials, throttled, busy)",
        f.logins_refused.clone(),
    );
    registry.register(
        "password_hashes",
        "Argon2 password hashes computed (made, checked, and dummy checks of unknown accounts)",
        f.password_hashes.clone(),
    );
    registry.register(
        "metrics_http_connections",
        "Connections open to this metrics endpoint",
        f.http_connections.clone(),
    );
    registry.register(
        "metrics_http_dropped",
        "Connections to this metrics endpoint closed or refused before the client was done, by reason",
        f.http_dropped.clone(),
    );
    f.http_connections
        .set(http::open_connections(http::Endpoint::Metrics) as i64);
    f.password_hashes.inner().store(
        crate::clientagent::accounts::PASSWORD_HASHES.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    for reason in http::Dropped::ALL {
        f.http_dropped
            .get_or_create(&vec![("reason".into(), reason.label().into())])
            .inner()
            .store(
                http::dropped(http::Endpoint::Metrics, reason),
                Ordering::Relaxed,
            );
    }
    for ca in &stats.client_agents {
        let listener = || ("listener".to_string(), ca.bind.clone());
        for (i, state) in ["new", "anonymous", "established"].iter().enumerate() {
            f.clients
                .get_or_create(&vec![listener(), ("state".into(), state.to_string())])
                .set(ca.stats.by_state[i].load(Ordering::Relaxed) as i64);
        }
        f.client_connections
            .get_or_create(&vec![listener()])
            .inner()
            .store(
                ca.stats.connections.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        f.client_refused
            .get_or_create(&vec![listener()])
            .inner()
            .store(ca.stats.refused.load(Ordering::Relaxed), Ordering::Relaxed);
        for why in crate::clientagent::LoginRefusal::ALL {
            f.logins_refused
                .get_or_create(&vec![listener(), ("cause".into(), why.label().into())])
                .inner()
                .store(
                    ca.stats.logins_refused[why as usize].load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
        }
        for (code, n) in ca.stats.ejects.lock().iter() {
            f.client_ejects
                .get_or_create(&vec![listener(), ("code".into(), code.to_string())])
                .inner()
                .store(*n, Ordering::Relaxed);
        }
    }

    for (core, c) in stats.per_core.iter().enumerate() {
        f.routed.get_or_create(&core_label(core)).inner().store(
            c.datagrams_routed.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        f.deliveries
            .get_or_create(&core_label(core))
            .inner()
            .store(c.deliveries.load(Ordering::Relaxed), Ordering::Relaxed);
        for (family, n) in [
            (&f.client_deliveries, &c.client_deliveries),
            (&f.client_socket_writes, &c.client_socket_writes),
        ] {
            family
                .get_or_create(&core_label(core))
                .inner()
                .store(n.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        f.stalled_batches
            .get_or_create(&core_label(core))
            .set(c.stalled_batches.load(Ordering::Relaxed) as i64);
        f.client_write_spacing_us
            .get_or_create(&core_label(core))
            .set(c.client_write_spacing_us.load(Ordering::Relaxed) as i64);
        f.channels
            .get_or_create(&core_label(core))
            .set(c.channels.load(Ordering::Relaxed) as i64);
        for (role, metric, value) in c.roles.lock().iter() {
            f.role
                .get_or_create(&vec![
                    ("role".into(), role.to_string()),
                    ("core".into(), core.to_string()),
                    ("metric".into(), metric.to_string()),
                ])
                .set(*value as i64);
        }
    }
    f.participants
        .set(stats.participants.load(Ordering::Relaxed) as i64);
    f.cut_off.inner().store(
        stats.participants_cut_off.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    for (reason, n) in [
        ("not_allowed", &stats.participants_refused_not_allowed),
        ("max_participants", &stats.participants_refused_limit),
        ("tls", &stats.participants_refused_tls),
    ] {
        f.refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inner()
            .store(n.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    f.upstream_connected
        .set(stats.upstream_connected.load(Ordering::Relaxed) as i64);
    f.upstream_settling
        .set(stats.upstream_settling.load(Ordering::Relaxed) as i64);
    for (counter, n) in [
        (&f.upstream_losses, &stats.upstream_losses),
        (&f.upstream_cut_off, &stats.upstream_cut_off),
        (&f.upstream_dropped, &stats.upstream_dropped_datagrams),
    ] {
        counter
            .inner()
            .store(n.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    if last_byte > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        f.upstream_silent
            .set(now.saturating_sub(last_byte) as f64 / 1000.0);
    }
    f.el_written
        .inner()
        .store(events.written(), Ordering::Relaxed);
    f.el_dropped
        .inner()
        .store(events.dropped(), Ordering::Relaxed);
    register_child_mds(&mut registry, stats);
    let admin_dropped = Family::<Labels, Counter<u64, AtomicU64>>::default();
    for reason in http::Dropped::ALL {
        admin_dropped
            .get_or_create(&vec![("reason".into(), reason.label().into())])
            .inner()
            .store(
                http::dropped(http::Endpoint::Admin, reason),
                Ordering::Relaxed,
            );
    }
    registry.register(
        "admin_http_dropped",
        "Connections to the admin API closed or refused before the client was done, by reason",
        admin_dropped,
    );
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String");
    out
}

/// The child MDs linked to this MD: how many, and per child (labels `child`, `address`) its
/// subscriptions, post-removes, links registered and seconds since it was last heard.
fn register_child_mds(registry: &mut Registry, stats: &Stats) {
    let children = stats.child_mds.list();
    let count = Gauge::<i64>::default();
    count.set(children.len() as i64);
    registry.register("child_mds", "Child MDs (otpd) linked to this MD", count);
    let subscriptions = Family::<Labels, Gauge>::default();
    let post_removes = Family::<Labels, Gauge>::default();
    let links = Family::<Labels, Gauge>::default();
    let quiet = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let now = crate::runtime::unix_ms();
    for c in &children {
        let labels = vec![
            ("child".to_string(), label_value(&c.name)),
            ("address".to_string(), c.address.to_string()),
        ];
        subscriptions
            .get_or_create(&labels)
            .set(c.subscriptions as i64);
        post_removes
            .get_or_create(&labels)
            .set(c.post_removes as i64);
        links.get_or_create(&labels).set(c.links as i64);
        quiet
            .get_or_create(&labels)
            .set(now.saturating_sub(c.last_heard_ms) as f64 / 1000.0);
    }
    registry.register(
        "child_md_subscriptions",
        "Channels and ranges each child MD subscribed",
        subscriptions,
    );
    registry.register(
        "child_md_post_removes",
        "Post-removes each child MD registered (they fire if it is lost)",
        post_removes,
    );
    registry.register(
        "child_md_links",
        "Links each child MD registered since this MD started (over 1: it reconnected)",
        links,
    );
    registry.register(
        "child_md_seconds_since_heard",
        "Seconds since the last bytes from each child MD",
        quiet,
    );
}

/// A name made safe as a label value (and for `otpd status`'s reading of it).
fn label_value(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " _.:-()[]/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Serves `/metrics` on `addr` from a thread of its own, within `limits` (see [`http`]).
pub fn serve(
    addr: &str,
    limits: &HttpLimits,
    stats: Arc<Stats>,
    events: Arc<Counters>,
) -> Result<(), String> {
    let answer = move |request: &http::Request| {
        if request.method != "GET" && request.method != "HEAD" {
            let mut a =
                http::Answer::new(405, "text/plain", "otpd: only GET and HEAD are served\n");
            a.headers.push(("Allow", "GET, HEAD".into()));
            a
        } else if request.path == "/metrics" {
            http::Answer::new(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                render(&stats, &events),
            )
        } else {
            http::Answer::new(404, "text/plain", "otpd: metrics are at /metrics\n")
        }
    };
    http::serve(addr, limits, http::Endpoint::Metrics, None, |_| {
        http::Immediate(answer)
    })?;
    log::info!("metrics: serving http://{addr}/metrics");
    Ok(())
}

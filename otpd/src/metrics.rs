//! The metrics endpoint: Prometheus text (OpenMetrics) at `/metrics` on the configured
//! address, read from the runtime's counters at each scrape, and `otpd status`, a one-screen
//! summary of that endpoint.

pub mod http;

use crate::config::MetricsLimits;
use crate::eventlogger::Counters;
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
    pending: Family<Labels, Gauge>,
    channels: Family<Labels, Gauge>,
    participants: Gauge,
    cut_off: Counter<u64, AtomicU64>,
    upstream_connected: Gauge,
    upstream_dropped: Counter<u64, AtomicU64>,
    role: Family<Labels, Gauge>,
    el_written: Counter<u64, AtomicU64>,
    el_dropped: Counter<u64, AtomicU64>,
    clients: Family<Labels, Gauge>,
    client_connections: Family<Labels, Counter<u64, AtomicU64>>,
    client_refused: Family<Labels, Counter<u64, AtomicU64>>,
    client_ejects: Family<Labels, Counter<u64, AtomicU64>>,
    http_connections: Gauge,
    http_dropped: Family<Labels, Counter<u64, AtomicU64>>,
}

fn core_label(core: usize) -> Labels {
    vec![("core".into(), core.to_string())]
}

/// Renders every metric, as of now.
pub fn render(stats: &Stats, events: &Counters) -> String {
    let mut registry = Registry::with_prefix("otpd");
    let f = Families {
        routed: Family::default(),
        deliveries: Family::default(),
        pending: Family::default(),
        channels: Family::default(),
        participants: Gauge::default(),
        cut_off: Counter::default(),
        upstream_connected: Gauge::default(),
        upstream_dropped: Counter::default(),
        role: Family::default(),
        el_written: Counter::default(),
        el_dropped: Counter::default(),
        clients: Family::default(),
        client_connections: Family::default(),
        client_refused: Family::default(),
        client_ejects: Family::default(),
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
        "pending_lookups",
        "Datagrams waiting for lookups on other cores (queue depth)",
        f.pending.clone(),
    );
    registry.register(
        "subscribed_channels",
        "Channels with subscribers, per home core",
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
        "upstream_connected",
        "1 while the upstream MD link is up",
        f.upstream_connected.clone(),
    );
    registry.register(
        "upstream_dropped",
        "Times the upstream MD link was lost",
        f.upstream_dropped.clone(),
    );
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
        "metrics_http_connections",
        "Connections open to this metrics endpoint",
        f.http_connections.clone(),
    );
    registry.register(
        "metrics_http_dropped",
        "Connections to this metrics endpoint closed or refused before the client was done, by reason",
        f.http_dropped.clone(),
    );
    f.http_connections.set(http::open_connections() as i64);
    for reason in http::Dropped::ALL {
        f.http_dropped
            .get_or_create(&vec![("reason".into(), reason.label().into())])
            .inner()
            .store(http::dropped(reason), Ordering::Relaxed);
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
        f.pending
            .get_or_create(&core_label(core))
            .set(c.pending.load(Ordering::Relaxed) as i64);
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
    f.upstream_connected
        .set(stats.upstream_connected.load(Ordering::Relaxed) as i64);
    f.upstream_dropped.inner().store(
        stats.upstream_dropped.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    f.el_written
        .inner()
        .store(events.written(), Ordering::Relaxed);
    f.el_dropped
        .inner()
        .store(events.dropped(), Ordering::Relaxed);
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String");
    out
}

/// Serves `/metrics` on `addr` from a thread of its own, within `limits` (see [`http`]).
pub fn serve(
    addr: &str,
    limits: &MetricsLimits,
    stats: Arc<Stats>,
    events: Arc<Counters>,
) -> Result<(), String> {
    http::serve(addr, limits, move |path| {
        if path == "/metrics" {
            http::Answer {
                status: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body: render(&stats, &events),
            }
        } else {
            http::Answer {
                status: 404,
                content_type: "text/plain",
                body: "otpd: metrics are at /metrics\n".to_string(),
            }
        }
    })?;
    log::info!("metrics: serving http://{addr}/metrics");
    Ok(())
}

/// `otpd status ADDRESS`: reads the endpoint and prints a summary.
pub fn status_command(args: Vec<String>) -> i32 {
    let Some(addr) = args.first() else {
        eprintln!("usage: otpd status HOST:PORT   (the metrics address of a running otpd)");
        return 2;
    };
    match fetch(addr) {
        Ok(text) => {
            print!("{}", summarize(&text));
            0
        }
        Err(e) => {
            eprintln!("otpd status: {addr}: {e}");
            1
        }
    }
}

fn fetch(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!(
            "unexpected answer: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_string())
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (lhs, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match lhs.split_once('{') {
            Some((n, l)) => {
                let labels = l
                    .trim_end_matches('}')
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                    .collect();
                (n.to_string(), labels)
            }
            None => (lhs.to_string(), Vec::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// The summary `otpd status` prints.
pub fn summarize(text: &str) -> String {
    let s = samples(text);
    let sum = |name: &str| -> f64 { s.iter().filter(|x| x.0 == name).map(|x| x.2).sum() };
    let label = |l: &[(String, String)], k: &str| {
        l.iter()
            .find(|x| x.0 == k)
            .map(|x| x.1.clone())
            .unwrap_or_default()
    };
    let cores = s
        .iter()
        .filter(|x| x.0 == "otpd_datagrams_routed_total")
        .count();
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "otpd: {cores} cores");
    let _ = writeln!(
        out,
        "  messagedirector: {} participants, {} channels subscribed, {} datagrams routed, {} deliveries, {} waiting",
        sum("otpd_participants"),
        sum("otpd_subscribed_channels"),
        sum("otpd_datagrams_routed_total"),
        sum("otpd_deliveries_total"),
        sum("otpd_pending_lookups")
    );
    let _ = writeln!(
        out,
        "  misbehaving: {} participants cut off for not reading; upstream MD {} (lost {} times)",
        sum("otpd_participants_cut_off_total"),
        if s.iter()
            .any(|x| x.0 == "otpd_upstream_connected" && x.2 > 0.0)
        {
            "connected"
        } else {
            "not connected / none"
        },
        sum("otpd_upstream_dropped_total")
    );
    let mut roles: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for (name, labels, v) in &s {
        if name == "otpd_role" {
            *roles
                .entry((label(labels, "role"), label(labels, "metric")))
                .or_default() += v;
        }
    }
    let mut by_role: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for ((role, metric), v) in &roles {
        by_role
            .entry(role.clone())
            .or_default()
            .push(format!("{metric} {v}"));
    }
    for (role, figures) in by_role {
        let _ = writeln!(out, "  {role}: {}", figures.join(", "));
    }
    if let (Some(n), Some(sum_us)) = (
        roles.get(&("database".into(), "requests".into())),
        roles.get(&("database".into(), "latency_us_sum".into())),
    ) {
        if *n > 0.0 {
            let _ = writeln!(
                out,
                "  database: mean latency {:.2} ms",
                sum_us / n / 1000.0
            );
        }
    }
    let mut listeners: std::collections::BTreeMap<String, [f64; 4]> = Default::default();
    for (name, labels, v) in &s {
        let l = label(labels, "listener");
        match name.as_str() {
            "otpd_clients" => {
                let e = listeners.entry(l).or_default();
                match label(labels, "state").as_str() {
                    "new" => e[0] += v,
                    "anonymous" => e[1] += v,
                    _ => e[2] += v,
                }
            }
            "otpd_client_ejects_total" => listeners.entry(l).or_default()[3] += v,
            _ => {}
        }
    }
    for (l, [new, anon, est, ejects]) in listeners {
        let _ = writeln!(
            out,
            "  clientagent {l}: {} clients ({new} new, {anon} anonymous, {est} established), {ejects} ejected",
            new + anon + est
        );
    }
    let _ = writeln!(
        out,
        "  eventlogger: {} events written, {} dropped",
        sum("otpd_eventlogger_events_written_total"),
        sum("otpd_eventlogger_events_dropped_total")
    );
    out
}

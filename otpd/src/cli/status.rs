//! `otpd status HOST:PORT`: reads a running otpd's metrics endpoint and prints a one-screen
//! summary of it.

use super::{FAILED, OK, USAGE};

/// `otpd status ADDRESS`: reads the endpoint and prints a summary; a remote that cannot be
/// read exits [`FAILED`].
pub(super) fn command(args: Vec<String>) -> u8 {
    let Some(addr) = args.first() else {
        eprintln!("usage: otpd status HOST:PORT   (the metrics address of a running otpd)");
        return USAGE;
    };
    match fetch(addr) {
        Ok(text) => {
            print!("{}", summarize(&text));
            OK
        }
        Err(e) => {
            eprintln!("otpd status: {addr}: {e}");
            FAILED
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
fn summarize(text: &str) -> String {
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
    child_mds(&s, &mut out);
    let _ = writeln!(
        out,
        "  eventlogger: {} events written, {} dropped",
        sum("otpd_eventlogger_events_written_total"),
        sum("otpd_eventlogger_events_dropped_total")
    );
    out
}

/// The child MDs linked to this MD, one line each: name, address, subscriptions,
/// post-removes, links, seconds since last heard.
fn child_mds(s: &[Sample], out: &mut String) {
    use std::fmt::Write as _;
    // (child, address) -> [subscriptions, post-removes, links, quiet seconds]
    let mut children: std::collections::BTreeMap<(String, String), [f64; 4]> = Default::default();
    for (name, labels, v) in s {
        let i = match name.as_str() {
            "otpd_child_md_subscriptions" => 0,
            "otpd_child_md_post_removes" => 1,
            "otpd_child_md_links" => 2,
            "otpd_child_md_seconds_since_heard" => 3,
            _ => continue,
        };
        let get = |k: &str| {
            labels
                .iter()
                .find(|x| x.0 == k)
                .map(|x| x.1.clone())
                .unwrap_or_default()
        };
        children.entry((get("child"), get("address"))).or_default()[i] = *v;
    }
    if children.is_empty() {
        return;
    }
    let _ = writeln!(out, "  child MDs: {}", children.len());
    for ((child, address), [subs, prs, links, quiet]) in children {
        let _ = writeln!(
            out,
            "    {child} at {address}: {subs} subscriptions, {prs} post-removes, {links} links, last heard {quiet:.1} s ago"
        );
    }
}

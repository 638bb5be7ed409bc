//! The report shared by the many-client modes (`clients`, `toon2003-clients`): an HDR
//! histogram of delivery latencies in microseconds, counters of clients and messages, errors by
//! kind, a progress line on stderr once a second while running, and the final text or
//! one-line JSON output.
//!
//! JSON keys (stable): `clients_wanted`, `clients_connected`, `clients_held` (ready and still
//! connected at the end of the measurement), `clients_logged_out` (logged out cleanly: the
//! server closed the connection after the client's disconnect message, without an eject),
//! `window_s`, `msgs_in`, `msgs_out` (client datagrams received / sent in the measured
//! window), `msgs_in_per_s`, `msgs_out_per_s`, `latency_count`, `latency_p50_us`,
//! `latency_p90_us`, `latency_p99_us`, `latency_p999_us`, `latency_max_us`, `errors` (total),
//! `errors_connect`, `errors_eject`, `errors_protocol`, `errors_timeout`, and `error_details`
//! (a list of `{"kind","code","reason","count"}`).

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A latency histogram: 1 µs to 1 hour, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// What the client threads publish while they run (for the progress line and the final counts).
pub(crate) struct Live {
    pub connected: AtomicU64,
    /// Clients ready and connected right now.
    pub held: AtomicU64,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub errors: AtomicU64,
    /// Latencies in the measured window, merged in by the threads now and then.
    pub latency: Mutex<Histogram<u64>>,
    pub stop: AtomicBool,
}

impl Live {
    pub(crate) fn new() -> Arc<Live> {
        Arc::new(Live {
            connected: AtomicU64::new(0),
            held: AtomicU64::new(0),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            stop: AtomicBool::new(false),
        })
    }

    /// Adds a thread's latencies and clears them.
    pub(crate) fn merge(&self, h: &mut Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        if let Ok(mut l) = self.latency.lock() {
            let _ = l.add(&*h);
        }
        h.reset();
    }
}

/// A client thread's message counters, published to `Live` in batches.
#[derive(Default)]
pub(crate) struct Counters {
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub in_window: u64,
    pub out_window: u64,
    published_in: u64,
    published_out: u64,
}

impl Counters {
    pub(crate) fn publish(&mut self, live: &Live) {
        live.msgs_in
            .fetch_add(self.msgs_in - self.published_in, Ordering::Relaxed);
        live.msgs_out
            .fetch_add(self.msgs_out - self.published_out, Ordering::Relaxed);
        self.published_in = self.msgs_in;
        self.published_out = self.msgs_out;
    }
}

/// Errors by kind, per thread; merged at the end.
#[derive(Default)]
pub(crate) struct Errors {
    pub connect: BTreeMap<String, u64>,
    pub ejects: BTreeMap<(u16, String), u64>,
    pub protocol: BTreeMap<String, u64>,
    pub timeouts: BTreeMap<String, u64>,
}

impl Errors {
    pub(crate) fn connect(&mut self, live: &Live, what: String) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        *self.connect.entry(what).or_default() += 1;
    }
    pub(crate) fn eject(&mut self, live: &Live, code: u16, reason: String) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        *self.ejects.entry((code, reason)).or_default() += 1;
    }
    pub(crate) fn protocol(&mut self, live: &Live, what: &str) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        *self.protocol.entry(what.to_owned()).or_default() += 1;
    }
    pub(crate) fn timeout(&mut self, live: &Live, what: &str) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        *self.timeouts.entry(what.to_owned()).or_default() += 1;
    }
    pub(crate) fn merge(&mut self, o: Errors) {
        for (k, v) in o.connect {
            *self.connect.entry(k).or_default() += v;
        }
        for (k, v) in o.ejects {
            *self.ejects.entry(k).or_default() += v;
        }
        for (k, v) in o.protocol {
            *self.protocol.entry(k).or_default() += v;
        }
        for (k, v) in o.timeouts {
            *self.timeouts.entry(k).or_default() += v;
        }
    }
    pub(crate) fn total(&self) -> u64 {
        self.connect.values().sum::<u64>()
            + self.ejects.values().sum::<u64>()
            + self.protocol.values().sum::<u64>()
            + self.timeouts.values().sum::<u64>()
    }
}

/// The final numbers.
pub(crate) struct Report {
    pub clients_wanted: u64,
    pub clients_connected: u64,
    pub clients_held: u64,
    pub clients_logged_out: u64,
    pub window_s: f64,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub latency: Histogram<u64>,
    pub errors: Errors,
}

impl Report {
    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// The report's text lines (each starts with two spaces).
    pub(crate) fn text(&self) -> String {
        let l = &self.latency;
        let per_s = |n: u64| n as f64 / self.window_s.max(1e-9);
        let mut s = format!(
            "  clients    {} wanted, {} connected, {} held at the end, {} logged out cleanly\n\
             \x20 messages   in {}/s, out {}/s ({} in, {} out over {} s measured)\n\
             \x20 latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms ({} samples, HDR)\n\
             \x20 errors     {} (connect {}, eject {}, protocol {}, timeout {})\n",
            self.clients_wanted,
            self.clients_connected,
            self.clients_held,
            self.clients_logged_out,
            thousands(per_s(self.msgs_in) as u64),
            thousands(per_s(self.msgs_out) as u64),
            self.msgs_in,
            self.msgs_out,
            self.window_s,
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            l.max() as f64 / 1000.0,
            l.len(),
            self.errors.total(),
            self.errors.connect.values().sum::<u64>(),
            self.errors.ejects.values().sum::<u64>(),
            self.errors.protocol.values().sum::<u64>(),
            self.errors.timeouts.values().sum::<u64>(),
        );
        for (kind, code, reason, n) in self.details() {
            let code = code.map(|c| format!(" code {c}")).unwrap_or_default();
            s.push_str(&format!("  ERROR      {n} x {kind}{code}: {reason}\n"));
        }
        s
    }

    fn details(&self) -> Vec<(&'static str, Option<u16>, &str, u64)> {
        let e = &self.errors;
        let mut v = Vec::new();
        v.extend(
            e.connect
                .iter()
                .map(|(r, n)| ("connect", None, r.as_str(), *n)),
        );
        v.extend(
            e.ejects
                .iter()
                .map(|((c, r), n)| ("eject", Some(*c), r.as_str(), *n)),
        );
        v.extend(
            e.protocol
                .iter()
                .map(|(r, n)| ("protocol", None, r.as_str(), *n)),
        );
        v.extend(
            e.timeouts
                .iter()
                .map(|(r, n)| ("timeout", None, r.as_str(), *n)),
        );
        v
    }

    /// The report's JSON members, without braces: `"clients_wanted":10,...`.
    pub(crate) fn json_fields(&self) -> String {
        let l = &self.latency;
        let per_s = |n: u64| n as f64 / self.window_s.max(1e-9);
        let details: Vec<String> = self
            .details()
            .iter()
            .map(|(kind, code, reason, n)| {
                format!(
                    "{{\"kind\":\"{kind}\",\"code\":{},\"reason\":{},\"count\":{n}}}",
                    code.map_or("null".into(), |c| c.to_string()),
                    json_str(reason)
                )
            })
            .collect();
        format!(
            "\"clients_wanted\":{},\"clients_connected\":{},\"clients_held\":{},\"clients_logged_out\":{},\
\"window_s\":{},\"msgs_in\":{},\"msgs_out\":{},\"msgs_in_per_s\":{:.0},\"msgs_out_per_s\":{:.0},\
\"latency_count\":{},\"latency_p50_us\":{},\"latency_p90_us\":{},\"latency_p99_us\":{},\"latency_p999_us\":{},\"latency_max_us\":{},\
\"errors\":{},\"errors_connect\":{},\"errors_eject\":{},\"errors_protocol\":{},\"errors_timeout\":{},\"error_details\":[{}]",
            self.clients_wanted,
            self.clients_connected,
            self.clients_held,
            self.clients_logged_out,
            self.window_s,
            self.msgs_in,
            self.msgs_out,
            per_s(self.msgs_in),
            per_s(self.msgs_out),
            l.len(),
            l.value_at_quantile(0.5),
            l.value_at_quantile(0.9),
            l.value_at_quantile(0.99),
            l.value_at_quantile(0.999),
            l.max(),
            self.errors.total(),
            self.errors.connect.values().sum::<u64>(),
            self.errors.ejects.values().sum::<u64>(),
            self.errors.protocol.values().sum::<u64>(),
            self.errors.timeouts.values().sum::<u64>(),
            details.join(",")
        )
    }
}

/// Prints `  12s  9,800/10,000 held  in 480,112/s  out 20,004/s  p99 12.3 ms  errors 0` on
/// stderr once a second until `live.stop` is set.
pub(crate) fn progress(live: Arc<Live>, wanted: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let (mut last_in, mut last_out, mut last_t) = (0u64, 0u64, Instant::now());
        let mut next = t0 + Duration::from_secs(1);
        while !live.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(Duration::from_millis(50)));
                continue;
            }
            next += Duration::from_secs(1);
            let (i, o) = (
                live.msgs_in.load(Ordering::Relaxed),
                live.msgs_out.load(Ordering::Relaxed),
            );
            let dt = last_t.elapsed().as_secs_f64().max(1e-6);
            let p99 = live
                .latency
                .lock()
                .map(|h| h.value_at_quantile(0.99))
                .unwrap_or(0);
            eprintln!(
                "  {:>3}s  {}/{} held  in {}/s  out {}/s  p99 {:.1} ms  errors {}",
                t0.elapsed().as_secs(),
                thousands(live.held.load(Ordering::Relaxed)),
                thousands(wanted),
                thousands(((i - last_in) as f64 / dt) as u64),
                thousands(((o - last_out) as f64 / dt) as u64),
                p99 as f64 / 1000.0,
                live.errors.load(Ordering::Relaxed)
            );
            (last_in, last_out, last_t) = (i, o, Instant::now());
        }
    })
}

/// 1234567 -> "1,234,567".
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn json_is_one_line_with_stable_keys() {
        let mut r = Report {
            clients_wanted: 2,
            clients_connected: 2,
            clients_held: 2,
            clients_logged_out: 2,
            window_s: 1.0,
            msgs_in: 10,
            msgs_out: 5,
            latency: histogram(),
            errors: Errors::default(),
        };
        r.latency.record(1500).unwrap();
        *r.errors
            .ejects
            .entry((129, "rate \"limit\"".into()))
            .or_default() += 1;
        let j = r.json_fields();
        assert!(!j.contains('\n'));
        assert!(j.contains("\"latency_p50_us\":1500"));
        assert!(j.contains("\"errors_eject\":1"));
        assert!(j.contains("\"reason\":\"rate \\\"limit\\\"\""));
    }
}

//! The EventLogger role: MessagePack events over UDP (Astron's protocol), written one JSON
//! object per line with `_time` first, to a file named by a strftime pattern. Rotation by
//! interval and by size; a cap on events per second, past which events are counted and
//! dropped, and the count written to the log. The formatting and the file handling are plain
//! functions and a struct driven with explicit times; `spawn` adds the socket and the thread.

use chrono::{DateTime, Local};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Events written and dropped by this process's EventLogger (for the metrics endpoint).
pub static WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the EventLogger is told by the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: String,
    /// strftime pattern of the output file name.
    pub output: String,
    pub rotate_every: Option<Duration>,
    pub max_file_bytes: u64,
    pub max_events_per_second: u32,
}

/// Parses `rotate_interval`: "0" or "" = never; else a number with an optional unit
/// (s, m, h, d; seconds without one).
pub fn parse_interval(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("'{s}' is not an interval (e.g. 3600, 30m, 12h, 1d, or 0 for never)")
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (s, m, h or d)")),
    };
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// Formats `pattern` with strftime at `now`; an invalid pattern is an error, not a panic.
pub fn strftime(pattern: &str, now: DateTime<Local>) -> Result<String, String> {
    let mut s = String::new();
    write!(s, "{}", now.format(pattern))
        .map_err(|_| format!("'{pattern}' is not a valid strftime pattern"))?;
    Ok(s)
}

fn to_json(v: rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match v {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(b),
        M::Integer(i) => i
            .as_u64()
            .map(J::from)
            .or_else(|| i.as_i64().map(J::from))
            .unwrap_or(J::Null),
        M::F32(f) => serde_json::Number::from_f64(f as f64).map_or(J::Null, J::Number),
        M::F64(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        M::String(s) => J::String(s.into_str().unwrap_or_default()),
        M::Binary(b) => J::String(String::from_utf8_lossy(&b).into_owned()),
        M::Array(a) => J::Array(a.into_iter().map(to_json).collect()),
        M::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    M::String(s) => s.into_str().unwrap_or_default(),
                    other => to_json(other).to_string(),
                };
                out.insert(key, to_json(v));
            }
            J::Object(out)
        }
        M::Ext(_, b) => J::String(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// One UDP packet to one log line: exactly one MessagePack map, nothing after it; `_time`
/// (local time, as astrond writes it) comes first, then the event's keys in their order.
pub fn format_event(packet: &[u8], now: DateTime<Local>) -> Result<String, String> {
    let mut rest = packet;
    let value = rmpv::decode::read_value(&mut rest).map_err(|e| format!("not MessagePack: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the event", rest.len()));
    }
    let serde_json::Value::Object(event) = to_json(value) else {
        return Err("the event is not a map".into());
    };
    let mut line = serde_json::Map::new();
    line.insert(
        "_time".into(),
        serde_json::Value::String(now.format("%Y-%m-%d %H:%M:%S%z").to_string()),
    );
    for (k, v) in event {
        if k != "_time" {
            line.insert(k, v);
        }
    }
    Ok(serde_json::Value::Object(line).to_string())
}

/// The log file: where lines go, and when to start a new one.
pub struct EventLog {
    settings: Settings,
    file: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
    opened: Instant,
    /// Events in the current second, and those dropped over the cap since the last report.
    second: Instant,
    in_second: u32,
    dropped: u64,
    pub dropped_total: u64,
    pub written_total: u64,
}

impl EventLog {
    pub fn open(
        settings: Settings,
        now: Instant,
        wall: DateTime<Local>,
    ) -> Result<EventLog, String> {
        let (file, path) = Self::create(&settings.output, wall, None)?;
        let mut log = EventLog {
            settings,
            file,
            path,
            bytes: 0,
            opened: now,
            second: now,
            in_second: 0,
            dropped: 0,
            dropped_total: 0,
            written_total: 0,
        };
        log.note("log-opened", "Log opened upon Event Logger startup.", wall);
        Ok(log)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn create(
        pattern: &str,
        wall: DateTime<Local>,
        avoid: Option<&PathBuf>,
    ) -> Result<(BufWriter<File>, PathBuf), String> {
        let mut path = PathBuf::from(strftime(pattern, wall)?);
        if avoid == Some(&path) {
            // The pattern gives the same name again (no seconds in it): number the next file.
            let mut n = 1;
            loop {
                let mut p = path.clone().into_os_string();
                p.push(format!(".{n}"));
                let p = PathBuf::from(p);
                if !p.exists() {
                    path = p;
                    break;
                }
                n += 1;
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((BufWriter::new(f), path))
    }

    /// An event of the EventLogger's own.
    fn note(&mut self, kind: &str, msg: &str, wall: DateTime<Local>) {
        let packet = super::roles::event::encode(
            kind,
            &[
                ("sender", super::roles::event::Ev::Str("EventLogger")),
                ("msg", super::roles::event::Ev::Str(msg)),
            ],
        );
        if let Ok(line) = format_event(&packet, wall) {
            self.put(&line);
        }
    }

    fn put(&mut self, line: &str) {
        match writeln!(self.file, "{line}") {
            Ok(()) => {
                self.bytes += line.len() as u64 + 1;
                self.written_total += 1;
                WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                self.dropped += 1;
                self.dropped_total += 1;
                DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::error!("eventlogger: cannot write {}: {e}", self.path.display());
            }
        }
    }

    /// One packet from `from`. Returns false when it was dropped (malformed or over the cap).
    pub fn packet(
        &mut self,
        packet: &[u8],
        from: &str,
        now: Instant,
        wall: DateTime<Local>,
    ) -> bool {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.in_second = 0;
            self.report_drops(wall);
        }
        if self.in_second >= self.settings.max_events_per_second {
            self.dropped += 1;
            self.dropped_total += 1;
            DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        self.in_second += 1;
        match format_event(packet, wall) {
            Ok(line) => {
                self.put(&line);
                if self.bytes >= self.settings.max_file_bytes {
                    self.rotate("Log cycled: size cap reached.", now, wall);
                }
                true
            }
            Err(e) => {
                log::warn!("eventlogger: packet from {from} ignored: {e}");
                false
            }
        }
    }

    fn report_drops(&mut self, wall: DateTime<Local>) {
        if self.dropped > 0 {
            let n = self.dropped;
            self.dropped = 0;
            log::warn!(
                "eventlogger: dropped {n} events (over max_events_per_second or unwritable)"
            );
            let packet = super::roles::event::encode(
                "events-dropped",
                &[
                    ("sender", super::roles::event::Ev::Str("EventLogger")),
                    ("count", super::roles::event::Ev::U64(n)),
                ],
            );
            if let Ok(line) = format_event(&packet, wall) {
                self.put(&line);
            }
        }
    }

    /// Time passes: flush, report drops, rotate when the interval is up.
    pub fn tick(&mut self, now: Instant, wall: DateTime<Local>) {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.in_second = 0;
            self.report_drops(wall);
        }
        if let Some(every) = self.settings.rotate_every {
            if now.duration_since(self.opened) >= every {
                self.rotate("Log cycled.", now, wall);
            }
        }
        let _ = self.file.flush();
    }

    fn rotate(&mut self, why: &str, now: Instant, wall: DateTime<Local>) {
        let _ = self.file.flush();
        match Self::create(&self.settings.output, wall, Some(&self.path)) {
            Ok((file, path)) => {
                log::info!("eventlogger: now writing {}", path.display());
                self.file = file;
                self.path = path;
                self.bytes = 0;
                self.opened = now;
                self.note("log-opened", why, wall);
            }
            Err(e) => log::error!(
                "eventlogger: cannot rotate: {e}; still writing {}",
                self.path.display()
            ),
        }
    }
}

/// Binds the socket and opens the first file (errors stop start-up), then runs the logger on
/// a thread of its own.
pub fn spawn(settings: Settings) -> Result<std::thread::JoinHandle<()>, String> {
    let socket = UdpSocket::bind(&settings.bind)
        .map_err(|e| format!("eventlogger bind {}: {e}", settings.bind))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut log = EventLog::open(settings, Instant::now(), Local::now())?;
    log::info!(
        "eventlogger: listening on {}, writing {}",
        socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        log.path().display()
    );
    std::thread::Builder::new()
        .name("otpd-eventlogger".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                // Wait for a packet (or time: rotation, drop reports)...
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        log.packet(&buf[..n], &from.to_string(), Instant::now(), Local::now());
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => log::warn!("eventlogger: receive failed: {e}"),
                }
                // ...then take what else is queued (up to 256) and flush once: a burst costs one
                // write, and a lone event is on disk at once.
                if socket.set_nonblocking(true).is_ok() {
                    for _ in 0..256 {
                        match socket.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                log.packet(
                                    &buf[..n],
                                    &from.to_string(),
                                    Instant::now(),
                                    Local::now(),
                                );
                            }
                            Err(_) => break,
                        }
                    }
                    let _ = socket.set_nonblocking(false);
                }
                log.tick(Instant::now(), Local::now());
            }
        })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path, max_file_bytes: u64, rate: u32) -> Settings {
        Settings {
            bind: "127.0.0.1:0".into(),
            output: dir.join("ev-%Y%m%d.log").to_string_lossy().into_owned(),
            rotate_every: None,
            max_file_bytes,
            max_events_per_second: rate,
        }
    }

    #[test]
    fn events_become_json_lines_with_time_first() {
        // {"type": "foo", "bar": "baz"}
        let packet = b"\x82\xa4type\xa3foo\xa3bar\xa3baz";
        let line = format_event(packet, Local::now()).unwrap();
        assert!(line.starts_with("{\"_time\":"), "{line}");
        let j: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(j["type"], "foo");
        assert_eq!(j["bar"], "baz");
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["_time", "type", "bar"]);
        assert!(format_event(b"{", Local::now()).is_err());
        assert!(
            format_event(b"\x93\x01\x02\x03", Local::now()).is_err(),
            "an array is not an event"
        );
        let mut trailing = packet.to_vec();
        trailing.push(0);
        assert!(format_event(&trailing, Local::now()).is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("0").unwrap(), None);
        assert_eq!(parse_interval("").unwrap(), None);
        assert_eq!(parse_interval("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_interval("30m").unwrap(),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            parse_interval("1d").unwrap(),
            Some(Duration::from_secs(86_400))
        );
        assert!(parse_interval("1w").is_err() && parse_interval("x").is_err());
    }

    #[test]
    fn the_size_cap_starts_a_new_file_and_the_rate_cap_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut log = EventLog::open(settings(dir.path(), 300, 5), t0, Local::now()).unwrap();
        let first = log.path().to_path_buf();
        let packet = b"\x82\xa4type\xa3foo\xa3bar\xa3baz";
        let kept = (0..10)
            .filter(|_| log.packet(packet, "test", t0, Local::now()))
            .count();
        assert_eq!(kept, 5, "five per second");
        assert_ne!(log.path(), first, "300 bytes reached: a new file");
        log.tick(t0 + Duration::from_secs(2), Local::now());
        assert_eq!(log.dropped_total, 5);
        let all: String = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert!(
            all.contains("\"events-dropped\"") && all.contains("\"count\":5"),
            "{all}"
        );
        assert_eq!(all.matches("\"foo\"").count(), 5);
    }
}

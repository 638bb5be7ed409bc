//! The EventLogger role: MessagePack events over UDP (Astron's protocol), written one JSON
//! object per line with `_time` first, to a file named by a strftime pattern. Rotation by
//! interval and by size; caps on events and on bytes per second, past which events are counted
//! and dropped, and the count written to the log; an optional allow-list of senders; retention
//! (old files the pattern names are deleted past a count or an age). Files are created 0600
//! and folders 0700. The formatting and the file handling are plain functions and a struct
//! driven with explicit times; `spawn` adds the socket and the thread.

use crate::config::eventlogger::strftime;
pub use crate::config::eventlogger::{Network, Settings};
use chrono::{DateTime, Local};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Events written and dropped by this process's EventLoggers, published for the metrics
/// endpoint (the cluster wiring hands one `Arc` to each logger and to `metrics::serve`).
/// Dropped counts events over a cap, from senders not allowed, and those that could not be
/// written.
#[derive(Debug, Default)]
pub struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How often retention looks for files past `max_age` while nothing rotates.
const RETENTION_CHECK: Duration = Duration::from_secs(60);

/// A character class of a strftime field, as it appears in a file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit,
    DigitOrSpace,
    /// Digits with an optional sign (%Y beyond 9999, %s before 1970).
    Signed,
    Alpha,
    /// A time zone: %z, %:z, %Z.
    Zone,
    /// An unknown field: anything but '/'.
    Any,
}

impl Class {
    fn has(self, c: char) -> bool {
        match self {
            Class::Digit => c.is_ascii_digit(),
            Class::DigitOrSpace => c.is_ascii_digit() || c == ' ',
            Class::Signed => c.is_ascii_digit() || c == '-' || c == '+',
            Class::Alpha => c.is_ascii_alphabetic(),
            Class::Zone => c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | ':'),
            Class::Any => c != '/',
        }
    }
}

/// One piece of a file-name pattern: a literal character, or a run of `min..=max`
/// characters of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Lit(char),
    Run(Class, usize, usize),
}

/// The names a strftime pattern can produce, path component by path component, so the
/// EventLogger can find its own old files (and only those) to apply retention to. A name
/// matches a component when each field is filled with characters it can print (digits for
/// %Y%m%d%H%M%S, letters for %b, ...); the file names get an optional `.N` (the number added
/// when a pattern gives the same name twice).
#[derive(Debug, Clone)]
pub struct NamePattern {
    /// The folder the pattern starts from ("/" for an absolute pattern).
    root: PathBuf,
    components: Vec<Vec<Piece>>,
}

impl NamePattern {
    pub fn new(pattern: &str) -> NamePattern {
        // Fields that stand for several others.
        let mut expanded = pattern.to_string();
        for (from, to) in [
            ("%F", "%Y-%m-%d"),
            ("%T", "%H:%M:%S"),
            ("%R", "%H:%M"),
            ("%D", "%m/%d/%y"),
            ("%x", "%m/%d/%y"),
            ("%X", "%H:%M:%S"),
            ("%r", "%I:%M:%S %p"),
            ("%c", "%a %b %e %H:%M:%S %Y"),
            ("%v", "%e-%b-%Y"),
            ("%h", "%b"),
            ("%+", "%Y-%m-%dT%H:%M:%S%.f%:z"),
        ] {
            // "%%F" is a literal "%F": leave those alone.
            let mut out = String::new();
            let mut rest = expanded.as_str();
            while let Some(i) = rest.find('%') {
                out.push_str(&rest[..i]);
                let tail = &rest[i..];
                if let Some(after) = tail.strip_prefix("%%") {
                    out.push_str("%%");
                    rest = after;
                } else if let Some(after) = tail.strip_prefix(from) {
                    out.push_str(to);
                    rest = after;
                } else {
                    out.push('%');
                    rest = &tail[1..];
                }
            }
            out.push_str(rest);
            expanded = out;
        }
        let root = if expanded.starts_with('/') {
            PathBuf::from("/")
        } else {
            PathBuf::from(".")
        };
        let components = expanded
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(Self::pieces)
            .collect();
        NamePattern { root, components }
    }

    fn pieces(component: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut chars = component.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(Piece::Lit(c));
                continue;
            }
            // Padding and width modifiers: %-d, %_d, %0e, %.3f, %3f, %:z, %#z.
            let mut unpadded = false;
            let mut spaces = false;
            while let Some(&m) = chars.peek() {
                match m {
                    '-' => unpadded = true,
                    '_' => spaces = true,
                    '0'..='9' | '.' | ':' | '#' => {}
                    _ => break,
                }
                chars.next();
            }
            let Some(f) = chars.next() else {
                out.push(Piece::Lit('%'));
                break;
            };
            let digits = |n: usize| {
                if unpadded {
                    Piece::Run(Class::Digit, 1, n)
                } else if spaces {
                    Piece::Run(Class::DigitOrSpace, n, n)
                } else {
                    Piece::Run(Class::Digit, n, n)
                }
            };
            out.push(match f {
                '%' => Piece::Lit('%'),
                'n' => Piece::Lit('\n'),
                't' => Piece::Lit('\t'),
                'Y' | 'G' | 's' => Piece::Run(Class::Signed, 1, 20),
                'm' | 'd' | 'H' | 'M' | 'S' | 'y' | 'C' | 'I' | 'U' | 'W' | 'V' | 'g' => digits(2),
                'e' | 'k' | 'l' => Piece::Run(Class::DigitOrSpace, 1, 2),
                'j' => digits(3),
                'u' | 'w' => Piece::Run(Class::Digit, 1, 1),
                'f' => Piece::Run(Class::Digit, 1, 9),
                'a' | 'A' | 'b' | 'B' | 'p' | 'P' => Piece::Run(Class::Alpha, 1, 16),
                'z' | 'Z' => Piece::Run(Class::Zone, 1, 16),
                _ => Piece::Run(Class::Any, 1, 255),
            });
        }
        out
    }

    fn matches(pieces: &[Piece], name: &[char]) -> bool {
        match pieces.split_first() {
            None => name.is_empty(),
            Some((Piece::Lit(c), rest)) => {
                name.first() == Some(c) && Self::matches(rest, &name[1..])
            }
            Some((Piece::Run(class, min, max), rest)) => {
                let run = name
                    .iter()
                    .take(*max)
                    .take_while(|&&c| class.has(c))
                    .count();
                (*min..=run).rev().any(|n| Self::matches(rest, &name[n..]))
            }
        }
    }

    /// Whether a file name matches the last component (with an optional `.N`).
    fn matches_file(pieces: &[Piece], name: &str) -> bool {
        let chars: Vec<char> = name.chars().collect();
        if Self::matches(pieces, &chars) {
            return true;
        }
        match name.rsplit_once('.') {
            Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Self::matches(pieces, &stem.chars().collect::<Vec<_>>())
            }
            _ => false,
        }
    }

    /// Every regular file the pattern could have named, with the time it was last written.
    pub fn files(&self) -> Vec<(PathBuf, SystemTime)> {
        let mut out = Vec::new();
        self.collect(self.root.clone(), 0, &mut out);
        out
    }

    fn collect(&self, at: PathBuf, depth: usize, out: &mut Vec<(PathBuf, SystemTime)>) {
        let Some(pieces) = self.components.get(depth) else {
            return;
        };
        let last = depth + 1 == self.components.len();
        // A folder named literally is not listed (its parent may not be readable).
        if !last && pieces.iter().all(|p| matches!(p, Piece::Lit(_))) {
            let name: String = pieces
                .iter()
                .map(|p| match p {
                    Piece::Lit(c) => *c,
                    Piece::Run(..) => unreachable!(),
                })
                .collect();
            self.collect(at.join(name), depth + 1, out);
            return;
        }
        let Ok(entries) = std::fs::read_dir(&at) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if last {
                if meta.is_file() && Self::matches_file(pieces, name) {
                    out.push((
                        entry.path(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    ));
                }
            } else if meta.is_dir() && Self::matches(pieces, &name.chars().collect::<Vec<_>>()) {
                self.collect(entry.path(), depth + 1, out);
            }
        }
    }
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
    /// The files the output pattern names (for retention).
    names: NamePattern,
    file: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
    opened: Instant,
    /// Events and bytes in the current second, and events dropped over the caps (and refused
    /// from senders not allowed) since the last report.
    second: Instant,
    in_second: u32,
    bytes_in_second: u64,
    dropped: u64,
    refused: u64,
    last_refused: Option<SocketAddr>,
    /// When retention last looked for old files.
    retention_at: Instant,
    pub dropped_total: u64,
    pub refused_total: u64,
    pub written_total: u64,
    /// What the metrics endpoint reads.
    counters: Arc<Counters>,
}

impl EventLog {
    pub fn open(
        settings: Settings,
        now: Instant,
        wall: DateTime<Local>,
    ) -> Result<EventLog, String> {
        Self::open_counted(settings, Arc::default(), now, wall)
    }

    /// `open`, publishing what it writes and drops in `counters`.
    pub fn open_counted(
        settings: Settings,
        counters: Arc<Counters>,
        now: Instant,
        wall: DateTime<Local>,
    ) -> Result<EventLog, String> {
        let (file, path) = Self::create(&settings.output, wall, None)?;
        let names = NamePattern::new(&settings.output);
        let mut log = EventLog {
            settings,
            names,
            file,
            path,
            bytes: 0,
            opened: now,
            second: now,
            in_second: 0,
            bytes_in_second: 0,
            dropped: 0,
            refused: 0,
            last_refused: None,
            retention_at: now,
            dropped_total: 0,
            refused_total: 0,
            written_total: 0,
            counters,
        };
        log.note("log-opened", "Log opened upon Event Logger startup.", wall);
        log.retain(wall);
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create(
        pattern: &str,
        wall: DateTime<Local>,
        avoid: Option<&PathBuf>,
    ) -> Result<(BufWriter<File>, PathBuf), String> {
        let mut path = PathBuf::from(strftime(pattern, wall)?);
        // On rotation, a name the pattern gives again (it has no seconds in it) is numbered, so
        // that every rotation starts a file of its own. (At start-up, an existing file of the
        // name is appended to.)
        if avoid == Some(&path) || (avoid.is_some() && path.exists()) {
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
        // Events name accounts and addresses: new folders 0700, new files 0600.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_fs::create_dir_all(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let f = crate::private_fs::open_append(&path)
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
                self.counters.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.drop_one();
                log::error!("eventlogger: cannot write {}: {e}", self.path.display());
            }
        }
    }

    fn drop_one(&mut self) {
        self.dropped += 1;
        self.dropped_total += 1;
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn next_second(&mut self, now: Instant, wall: DateTime<Local>) {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.in_second = 0;
            self.bytes_in_second = 0;
            self.report_drops(wall);
        }
    }

    /// One packet from `from`. Returns false when it was dropped (a sender not allowed,
    /// malformed, or over a cap).
    pub fn packet(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        now: Instant,
        wall: DateTime<Local>,
    ) -> bool {
        self.next_second(now, wall);
        if !self.settings.allow_from.is_empty()
            && !self
                .settings
                .allow_from
                .iter()
                .any(|n| n.contains(from.ip()))
        {
            self.refused += 1;
            self.refused_total += 1;
            self.last_refused = Some(from);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.in_second >= self.settings.max_events_per_second
            || self.bytes_in_second >= self.settings.max_bytes_per_second
        {
            self.drop_one();
            return false;
        }
        self.in_second += 1;
        match format_event(packet, wall) {
            Ok(line) => {
                let size = line.len() as u64 + 1;
                if self.bytes_in_second + size > self.settings.max_bytes_per_second {
                    // Too big for what is left of this second's budget (smaller ones may fit).
                    self.drop_one();
                    return false;
                }
                self.bytes_in_second += size;
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
                "eventlogger: dropped {n} events (over max_events_per_second or max_bytes_per_second, or unwritable)"
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
        if self.refused > 0 {
            let n = self.refused;
            self.refused = 0;
            let last = self.last_refused.take().map(|a| a.to_string());
            log::warn!(
                "eventlogger: refused {n} packets from senders not in allow_from (the last from {})",
                last.as_deref().unwrap_or("?")
            );
            let packet = super::roles::event::encode(
                "events-refused",
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

    /// Time passes: flush, report drops, rotate when the interval is up, apply retention.
    pub fn tick(&mut self, now: Instant, wall: DateTime<Local>) {
        self.next_second(now, wall);
        if let Some(every) = self.settings.rotate_every {
            if now.duration_since(self.opened) >= every {
                self.rotate("Log cycled.", now, wall);
            }
        }
        if self.settings.max_age.is_some()
            && now.duration_since(self.retention_at) >= RETENTION_CHECK
        {
            self.retention_at = now;
            self.retain(wall);
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
                self.retention_at = now;
                self.retain(wall);
            }
            Err(e) => log::error!(
                "eventlogger: cannot rotate: {e}; still writing {}",
                self.path.display()
            ),
        }
    }

    /// Deletes old log files: those past `max_files` (newest kept, the current file counted
    /// first) and those last written more than `max_age` ago. Only regular files the output
    /// pattern names are considered; the current file never is.
    fn retain(&mut self, wall: DateTime<Local>) {
        let (max_files, max_age) = (self.settings.max_files, self.settings.max_age);
        if max_files == 0 && max_age.is_none() {
            return;
        }
        let now = SystemTime::from(wall);
        let current = self
            .path
            .canonicalize()
            .unwrap_or_else(|_| self.path.clone());
        let mut old: Vec<(PathBuf, SystemTime)> = self
            .names
            .files()
            .into_iter()
            .filter(|(p, _)| p.canonicalize().map_or(true, |p| p != current))
            .collect();
        // Newest first; equal times by name, the later name first.
        old.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        for (i, (path, written)) in old.iter().enumerate() {
            let why = if max_files > 0 && i + 1 >= max_files {
                format!("more than max_files = {max_files}")
            } else if max_age.is_some_and(|age| {
                now.duration_since(*written)
                    .is_ok_and(|elapsed| elapsed > age)
            }) {
                "older than max_age".to_string()
            } else {
                continue;
            };
            match std::fs::remove_file(path) {
                Ok(()) => log::info!("eventlogger: deleted {} ({why})", path.display()),
                Err(e) => log::warn!("eventlogger: cannot delete {}: {e}", path.display()),
            }
        }
    }
}

/// Binds the socket and opens the first file (errors stop start-up), then runs the logger on
/// a thread of its own.
/// `counters` is where it publishes what it wrote and dropped.
pub fn spawn(
    settings: Settings,
    counters: Arc<Counters>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let socket = UdpSocket::bind(&settings.bind)
        .map_err(|e| format!("eventlogger bind {}: {e}", settings.bind))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut log = EventLog::open_counted(settings, counters, Instant::now(), Local::now())?;
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
                        log.packet(&buf[..n], from, Instant::now(), Local::now());
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
                                log.packet(&buf[..n], from, Instant::now(), Local::now());
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
            max_bytes_per_second: 1 << 30,
            max_files: 0,
            max_age: None,
            allow_from: Vec::new(),
        }
    }

    fn from() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
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
    fn the_size_cap_starts_a_new_file_and_the_rate_cap_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut log = EventLog::open(settings(dir.path(), 300, 5), t0, Local::now()).unwrap();
        let first = log.path().to_path_buf();
        let packet = b"\x82\xa4type\xa3foo\xa3bar\xa3baz";
        let kept = (0..10)
            .filter(|_| log.packet(packet, from(), t0, Local::now()))
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

    /// An event whose JSON line is about `n` bytes.
    fn big_event(n: usize) -> Vec<u8> {
        let mut p = b"\x82\xa4type\xa3big\xa1s\xda".to_vec();
        p.extend_from_slice(&(n as u16).to_be_bytes());
        p.extend(std::iter::repeat_n(b'x', n));
        p
    }

    #[test]
    fn the_byte_budget_drops_what_does_not_fit_in_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path(), 1 << 30, 10_000);
        s.max_bytes_per_second = 100_000;
        let t0 = Instant::now();
        let mut log = EventLog::open(s, t0, Local::now()).unwrap();
        let kept = (0..20)
            .filter(|_| log.packet(&big_event(30_000), from(), t0, Local::now()))
            .count();
        assert_eq!(kept, 3, "three 30 kB lines fit in 100 kB");
        // A small one still fits in what is left; the next second starts afresh.
        assert!(log.packet(&big_event(100), from(), t0, Local::now()));
        let t1 = t0 + Duration::from_secs(1);
        assert!(log.packet(&big_event(30_000), from(), t1, Local::now()));
        assert_eq!(log.dropped_total, 17);
        log.tick(t1, Local::now());
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text.len() < 200_000, "{}", text.len());
        assert!(text.contains("\"events-dropped\"") && text.contains("\"count\":17"));
    }

    #[test]
    fn only_allowed_senders_are_logged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path(), 1 << 30, 10_000);
        s.allow_from = vec![
            Network::parse("10.1.0.0/16").unwrap(),
            Network::parse("::1").unwrap(),
        ];
        let t0 = Instant::now();
        let mut log = EventLog::open(s, t0, Local::now()).unwrap();
        let packet = b"\x82\xa4type\xa3foo\xa3bar\xa3baz";
        for (addr, ok) in [
            ("10.1.2.3:1", true),
            ("[::ffff:10.1.9.9]:1", true),
            ("[::1]:1", true),
            ("10.2.0.1:1", false),
            ("127.0.0.1:1", false),
            ("[::2]:1", false),
        ] {
            let from: SocketAddr = addr.parse().unwrap();
            assert_eq!(log.packet(packet, from, t0, Local::now()), ok, "{addr}");
        }
        assert_eq!(log.refused_total, 3);
        log.tick(t0 + Duration::from_secs(1), Local::now());
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(
            text.contains("\"events-refused\"") && text.contains("\"count\":3"),
            "{text}"
        );
    }

    #[test]
    fn name_patterns_match_their_own_files_only() {
        let p = NamePattern::new("/logs/events-%Y%m%d-%H%M%S.log");
        let last = p.components.last().unwrap().clone();
        for ok in ["events-20240101-120000.log", "events-20240101-120000.log.3"] {
            assert!(NamePattern::matches_file(&last, ok), "{ok}");
        }
        for bad in [
            "events-2024-01-01.log",
            "events-20240101-120000.log.x",
            "otpd.log",
            "events-20240101-1200001.log",
            "events-.log",
        ] {
            assert!(!NamePattern::matches_file(&last, bad), "{bad}");
        }
        let p = NamePattern::new("ev-%F_%b_%%.log");
        let last = p.components.last().unwrap().clone();
        assert!(NamePattern::matches_file(&last, "ev-2024-01-31_Jan_%.log"));
        assert!(!NamePattern::matches_file(&last, "ev-2024-01-31_Jan_x.log"));
        // Fields in folders: each folder level is matched too.
        let dir = tempfile::tempdir().unwrap();
        let pattern = format!("{}/%Y/%m/ev-%d.log", dir.path().display());
        for f in [
            "2023/12/ev-31.log",
            "2024/01/ev-01.log",
            "2024/01/ev-02.log.1",
        ] {
            let f = dir.path().join(f);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, "x").unwrap();
        }
        for f in ["2024/01/notes.txt", "misc/01/ev-01.log", "2024/ev-01.log"] {
            let f = dir.path().join(f);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, "x").unwrap();
        }
        let mut found: Vec<String> = NamePattern::new(&pattern)
            .files()
            .into_iter()
            .map(|(p, _)| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "2023/12/ev-31.log",
                "2024/01/ev-01.log",
                "2024/01/ev-02.log.1"
            ]
        );
    }

    #[test]
    fn retention_keeps_max_files_and_drops_files_past_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let old = |name: &str, days: u64| {
            let p = dir.path().join(name);
            std::fs::write(&p, "old\n").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
                .unwrap();
        };
        old("ev-20000101.log", 10);
        old("ev-20000102.log", 9);
        old("ev-20000103.log", 8);
        old("ev-20000104.log", 2);
        old("unrelated.log", 30);
        let mut s = settings(dir.path(), 1 << 30, 10_000);
        s.max_files = 3;
        s.max_age = Some(Duration::from_secs(7 * 86_400));
        let t0 = Instant::now();
        let log = EventLog::open(s, t0, Local::now()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let current = log
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut want = vec![
            "ev-20000103.log".to_string(),
            "ev-20000104.log".into(),
            "unrelated.log".into(),
            current,
        ];
        want.sort();
        // max_files 3: the current file and the two newest; 20000103 is 8 days old (max_age 7).
        want.retain(|n| n != "ev-20000103.log");
        assert_eq!(left, want);
    }
}

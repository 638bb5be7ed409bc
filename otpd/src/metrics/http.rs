//! The metrics endpoint's HTTP server: just enough HTTP/1.0 and 1.1 to answer GET and HEAD,
//! on one thread with its own mio event loop. Everything a client can hold is bounded by
//! [`MetricsLimits`]: connections open at once, bytes of a request head, and the time to send
//! a request, to take an answer and to sit idle. A client costs a slot, a buffer of at most
//! `max_request_bytes` and, while it is answered, one answer; never a thread.

use crate::config::MetricsLimits;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a connection was closed before its client was done: the `reason` label of
/// `otpd_metrics_http_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Refused at accept: every slot held by a connection being answered.
    ConnectionLimit,
    /// Closed to make room for a new connection (it was idle, or slowest to send its request).
    Evicted,
    /// Its request head was longer than `max_request_bytes` (answered 431).
    RequestTooLarge,
    /// Its request was not HTTP/1.x (answered 400).
    BadRequest,
    /// Its request head did not arrive whole within `read_timeout_ms`.
    ReadTimeout,
    /// It did not take its answer within `write_timeout_ms`.
    WriteTimeout,
}

impl Dropped {
    pub const ALL: [Dropped; 6] = [
        Dropped::ConnectionLimit,
        Dropped::Evicted,
        Dropped::RequestTooLarge,
        Dropped::BadRequest,
        Dropped::ReadTimeout,
        Dropped::WriteTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Dropped::ConnectionLimit => "connection_limit",
            Dropped::Evicted => "evicted",
            Dropped::RequestTooLarge => "request_too_large",
            Dropped::BadRequest => "bad_request",
            Dropped::ReadTimeout => "read_timeout",
            Dropped::WriteTimeout => "write_timeout",
        }
    }

    fn count(self) {
        DROPPED[self as usize].fetch_add(1, Ordering::Relaxed);
    }
}

static DROPPED: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
static OPEN: AtomicU64 = AtomicU64::new(0);

/// Connections closed early for `reason`, since start.
pub fn dropped(reason: Dropped) -> u64 {
    DROPPED[reason as usize].load(Ordering::Relaxed)
}

/// Connections open now.
pub fn open_connections() -> u64 {
    OPEN.load(Ordering::Relaxed)
}

/// What the handler answers for a path.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const LISTENER: Token = Token(usize::MAX);
/// After accept fails (out of descriptors), the next try waits this long.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Largest single read.
const CHUNK: usize = 4096;
/// Requests one connection is answered in a row before the others get their turn.
const REQUESTS_PER_TURN: usize = 8;

/// Binds `addr` and serves it from a thread of its own; `handler` answers each GET or HEAD
/// with the request's path (query left out).
pub fn serve<F>(addr: &str, limits: &MetricsLimits, handler: F) -> Result<(), String>
where
    F: FnMut(&str) -> Answer + Send + 'static,
{
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("metrics bind {addr}: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("metrics bind {addr}: {e}"))?;
    let mut listener = TcpListener::from_std(std_listener);
    let poll = Poll::new().map_err(|e| format!("metrics: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| format!("metrics: {e}"))?;
    let mut server = Server {
        listener,
        poll,
        conns: Slab::with_capacity(limits.max_connections),
        limits: Limits::new(limits),
        handler,
        accept_retry_at: None,
        expired: Vec::new(),
        again: Vec::new(),
    };
    std::thread::Builder::new()
        .name("otpd-metrics".into())
        .spawn(move || server.run())
        .map_err(|e| format!("metrics: {e}"))?;
    Ok(())
}

struct Limits {
    max_connections: usize,
    max_request_bytes: usize,
    read: Duration,
    write: Duration,
    idle: Duration,
}

impl Limits {
    fn new(l: &MetricsLimits) -> Limits {
        Limits {
            max_connections: l.max_connections.max(1),
            max_request_bytes: l.max_request_bytes.max(64),
            read: Duration::from_millis(l.read_timeout_ms),
            write: Duration::from_millis(l.write_timeout_ms),
            idle: Duration::from_millis(l.idle_timeout_ms),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No request under way: just accepted, or kept alive after an answer.
    Idle,
    /// Part of a request head has arrived.
    Reading,
    /// An answer is being written.
    Writing,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes received and not yet consumed: at most `max_request_bytes + 1`.
    input: Vec<u8>,
    /// The answer being written, and how much of it is written.
    output: Vec<u8>,
    written: usize,
    /// Close once `output` is written.
    close_after: bool,
    /// Already counted in `otpd_metrics_http_dropped_total` (a 400 or 431 on its way out).
    counted: bool,
    phase: Phase,
    /// When the current phase runs out.
    deadline: Instant,
}

struct Server<F> {
    listener: TcpListener,
    poll: Poll,
    conns: Slab<Conn>,
    limits: Limits,
    handler: F,
    accept_retry_at: Option<Instant>,
    expired: Vec<(usize, Phase)>,
    /// Connections that used up their turn with work left (their socket may not signal
    /// again): driven on the next turn of the loop.
    again: Vec<usize>,
}

impl<F: FnMut(&str) -> Answer> Server<F> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut turn = Vec::new();
        loop {
            let timeout = if self.again.is_empty() {
                self.next_timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!("metrics: the endpoint stops: {e}");
                return;
            }
            std::mem::swap(&mut turn, &mut self.again);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    Token(k) => self.drive(k),
                }
            }
            for k in turn.drain(..) {
                self.drive(k);
            }
            let now = Instant::now();
            if self.accept_retry_at.is_some_and(|at| at <= now) {
                self.accept_retry_at = None;
                self.accept_all();
            }
            self.expire(Instant::now());
        }
    }

    /// How long the loop may sleep: until the nearest deadline.
    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.conns
            .iter()
            .map(|(_, c)| c.deadline)
            .chain(self.accept_retry_at)
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn accept_all(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: the connection waits in the backlog.
                    log::debug!("metrics: accept: {e}");
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                match self.evictable() {
                    Some(k) => self.close(k, Some(Dropped::Evicted)),
                    None => {
                        Dropped::ConnectionLimit.count();
                        log::debug!("metrics: refused {peer}: too many connections");
                        let _ = stream.write(&simple_answer(
                            503,
                            "otpd: too many connections to the metrics endpoint\n",
                        ));
                        continue;
                    }
                }
            }
            let entry = self.conns.vacant_entry();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::debug!("metrics: register {peer}: {e}");
                continue;
            }
            entry.insert(Conn {
                stream,
                peer,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                close_after: false,
                counted: false,
                phase: Phase::Idle,
                deadline: Instant::now() + self.limits.idle,
            });
            OPEN.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection a newcomer may replace: the longest idle one, else the one that has
    /// been sending its request head longest; never one being answered.
    fn evictable(&self) -> Option<usize> {
        let oldest = |phase: Phase| {
            self.conns
                .iter()
                .filter(|(_, c)| c.phase == phase)
                .min_by_key(|(_, c)| c.deadline)
                .map(|(k, _)| k)
        };
        oldest(Phase::Idle).or_else(|| oldest(Phase::Reading))
    }

    fn drive(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        match conn.drive(&self.limits, &mut self.handler) {
            Ok(Turn::Blocked) => {}
            Ok(Turn::Yielded) => self.again.push(k),
            Err(reason) => self.close(k, reason),
        }
    }

    fn expire(&mut self, now: Instant) {
        self.expired.clear();
        self.expired.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.deadline <= now)
                .map(|(k, c)| (k, c.phase)),
        );
        for i in 0..self.expired.len() {
            let (k, phase) = self.expired[i];
            let reason = match phase {
                Phase::Idle => None,
                Phase::Reading => Some(Dropped::ReadTimeout),
                Phase::Writing => Some(Dropped::WriteTimeout),
            };
            self.close(k, reason);
        }
    }

    fn close(&mut self, k: usize, reason: Option<Dropped>) {
        let Some(mut conn) = self.conns.try_remove(k) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        OPEN.fetch_sub(1, Ordering::Relaxed);
        if let Some(reason) = reason {
            if !conn.counted {
                reason.count();
            }
            log::debug!("metrics: closed {}: {}", conn.peer, reason.label());
        }
    }
}

/// How a connection's turn ended.
enum Turn {
    /// The socket would block: it signals when it is ready again.
    Blocked,
    /// It had its share of answers; more may be waiting.
    Yielded,
}

impl Conn {
    /// Writes what is due, answers what has arrived, reads what is waiting, until the socket
    /// would block or the turn is used up. `Err` closes the connection (with the reason it
    /// counts under, if any).
    fn drive<F: FnMut(&str) -> Answer>(
        &mut self,
        limits: &Limits,
        handler: &mut F,
    ) -> Result<Turn, Option<Dropped>> {
        let mut answered = 0;
        loop {
            if self.phase == Phase::Writing {
                while self.written < self.output.len() {
                    match self.stream.write(&self.output[self.written..]) {
                        Ok(0) => return Err(None),
                        Ok(n) => self.written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Turn::Blocked),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return Err(None),
                    }
                }
                if self.close_after {
                    return Err(None);
                }
                self.output = Vec::new();
                self.written = 0;
                let now = Instant::now();
                (self.phase, self.deadline) = if self.input.is_empty() {
                    (Phase::Idle, now + limits.idle)
                } else {
                    (Phase::Reading, now + limits.read)
                };
            }
            match parse(&self.input, limits.max_request_bytes) {
                Parsed::Partial => {}
                Parsed::Done(request, used) => {
                    if answered == REQUESTS_PER_TURN {
                        return Ok(Turn::Yielded);
                    }
                    answered += 1;
                    self.input.drain(..used);
                    self.close_after = !request.keep_alive;
                    self.respond(answer(&request, handler), limits);
                    continue;
                }
                Parsed::Bad => {
                    let out =
                        self.refuse(Dropped::BadRequest, 400, "otpd: not an HTTP/1.x request\n");
                    self.respond(out, limits);
                    continue;
                }
                Parsed::TooLarge => {
                    let out = self.refuse(
                        Dropped::RequestTooLarge,
                        431,
                        "otpd: the request head is too large\n",
                    );
                    self.respond(out, limits);
                    continue;
                }
            }
            // `parse` said Partial, so the input is within `max_request_bytes`.
            let room = (limits.max_request_bytes + 1 - self.input.len()).min(CHUNK);
            let mut chunk = [0u8; CHUNK];
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return Err(None),
                Ok(n) => {
                    if self.phase == Phase::Idle {
                        self.phase = Phase::Reading;
                        self.deadline = Instant::now() + limits.read;
                    }
                    self.input.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Turn::Blocked),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(None),
            }
        }
    }

    fn respond(&mut self, output: Vec<u8>, limits: &Limits) {
        self.output = output;
        self.written = 0;
        self.phase = Phase::Writing;
        self.deadline = Instant::now() + limits.write;
    }

    /// The error answer after which the connection closes; counted now.
    fn refuse(&mut self, reason: Dropped, status: u16, text: &'static str) -> Vec<u8> {
        reason.count();
        self.counted = true;
        self.close_after = true;
        self.input = Vec::new();
        log::debug!("metrics: refused {}: {}", self.peer, reason.label());
        simple_answer(status, text)
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    /// The path, without query or fragment.
    path: String,
    /// HTTP/1.x's x.
    minor: u8,
    /// The connection stays open after the answer.
    keep_alive: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// The head has not ended yet (and is within the limit).
    Partial,
    /// A whole head, and how many bytes of input it took.
    Done(Request, usize),
    /// Not HTTP/1.x.
    Bad,
    /// No end of head within `max` bytes.
    TooLarge,
}

/// Reads the request head at the start of `input`, which may not exceed `max` bytes (blank
/// lines before it, which HTTP allows, count).
fn parse(input: &[u8], max: usize) -> Parsed {
    let window = &input[..input.len().min(max)];
    let start = window
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(window.len());
    let Some(end) = head_end(&window[start..]) else {
        return if input.len() > max {
            Parsed::TooLarge
        } else {
            Parsed::Partial
        };
    };
    match parse_head(&window[start..start + end]) {
        Some(request) => Parsed::Done(request, start + end),
        None => Parsed::Bad,
    }
}

/// Where the head ends (just past its blank line: CRLF CRLF, or bare LFs).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = bytes[i..].iter().position(|b| *b == b'\n') {
        let after = i + p + 1;
        match &bytes[after..] {
            [b'\n', ..] => return Some(after + 1),
            [b'\r', b'\n', ..] => return Some(after + 2),
            _ => i = after,
        }
    }
    None
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return None,
    };
    // Origin form ("/metrics?x"), or absolute form ("http://host:9199/metrics").
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None if target.starts_with('/') => target,
        None => return None,
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let (mut close, mut keep, mut body) = (false, false, false);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            // Includes folded lines, which start with a space.
            return None;
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body |= value.parse::<u64>().ok()? > 0;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        }
    }
    Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        minor,
        // A body is not read: the connection closes after the answer instead.
        keep_alive: !body && !close && (minor == 1 || keep),
    })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn head(status: u16, content_type: &str, len: usize, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{extra}\r\n",
        reason_phrase(status)
    )
}

/// A plain-text answer after which the connection closes.
fn simple_answer(status: u16, text: &str) -> Vec<u8> {
    let mut out = head(status, "text/plain", text.len(), "Connection: close\r\n").into_bytes();
    out.extend_from_slice(text.as_bytes());
    out
}

fn answer<F: FnMut(&str) -> Answer>(request: &Request, handler: &mut F) -> Vec<u8> {
    let connection = match (request.keep_alive, request.minor) {
        (false, _) => "Connection: close\r\n",
        (true, 0) => "Connection: keep-alive\r\n",
        (true, _) => "",
    };
    let (a, extra) = match request.method.as_str() {
        "GET" | "HEAD" => (handler(&request.path), String::new()),
        _ => (
            Answer {
                status: 405,
                content_type: "text/plain",
                body: "otpd: only GET and HEAD are served\n".into(),
            },
            "Allow: GET, HEAD\r\n".to_string(),
        ),
    };
    let mut out = head(
        a.status,
        a.content_type,
        a.body.len(),
        &format!("{extra}{connection}"),
    )
    .into_bytes();
    if request.method != "HEAD" {
        out.extend_from_slice(a.body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(input: &str) -> (Request, usize) {
        match parse(input.as_bytes(), 8192) {
            Parsed::Done(r, n) => (r, n),
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn request_heads() {
        let (r, n) = done("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /");
        assert_eq!(n, 34);
        assert_eq!(
            r,
            Request {
                method: "GET".into(),
                path: "/metrics".into(),
                minor: 1,
                keep_alive: true
            }
        );
        let (r, _) = done("\r\nGET /metrics?x=1 HTTP/1.0\n\n");
        assert_eq!(
            (r.path.as_str(), r.minor, r.keep_alive),
            ("/metrics", 0, false)
        );
        let (r, _) = done("GET http://h:1/metrics HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!((r.path.as_str(), r.keep_alive), ("/metrics", true));
        let (r, _) = done("GET / HTTP/1.1\r\nconnection: x, close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = done("GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
        assert!(!r.keep_alive, "a body is not read");
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost", 8192),
            Parsed::Partial
        );
        assert_eq!(parse(b"", 8192), Parsed::Partial);
        for bad in [
            "hello\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert_eq!(parse(bad.as_bytes(), 8192), Parsed::Bad, "{bad:?}");
        }
    }

    #[test]
    fn the_head_must_end_within_the_limit() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(300, b'a');
        assert_eq!(parse(&big, 300), Parsed::Partial);
        big.push(b'a');
        assert_eq!(parse(&big, 300), Parsed::TooLarge);
        big.truncate(296);
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse(&big, 300), Parsed::Done(_, 300)));
        big.truncate(297);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big, 300), Parsed::TooLarge);
        // Blank lines count.
        assert_eq!(parse(&[b'\n'; 301], 300), Parsed::TooLarge);
    }

    #[test]
    fn answers() {
        let mut handler = |path: &str| Answer {
            status: if path == "/metrics" { 200 } else { 404 },
            content_type: "text/plain",
            body: "hi\n".into(),
        };
        let (r, _) = done("GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(
            String::from_utf8(answer(&r, &mut handler)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nhi\n"
        );
        let (r, _) = done("HEAD /x HTTP/1.0\r\n\r\n");
        assert_eq!(
            String::from_utf8(answer(&r, &mut handler)).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
        let (r, _) = done("POST /metrics HTTP/1.1\r\n\r\n");
        let a = String::from_utf8(answer(&r, &mut handler)).unwrap();
        assert!(a.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{a}");
        assert!(a.contains("\r\nAllow: GET, HEAD\r\n"), "{a}");
    }
}

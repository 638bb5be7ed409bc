//! otpd's own bounded HTTP server (the metrics endpoint, the admin API): just enough HTTP/1.0
//! and 1.1, on one thread with its own mio event loop. Everything a client can hold is bounded
//! by [`HttpLimits`]: connections open at once, bytes of a request head and body, and the time
//! to send a request, to be answered, to take an answer and to sit idle. A client costs a slot,
//! a buffer of at most `max_request_bytes + max_body_bytes` and, while it is answered, one
//! answer; never a thread. A handler answers at once, or later (an answer the cluster has to
//! give): the loop is then woken when the answer is ready, and never blocks on it.

use crate::config::HttpLimits;
use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whose counters a server keeps (each endpoint has its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Metrics = 0,
    Admin = 1,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Metrics => "metrics",
            Endpoint::Admin => "admin",
        }
    }
}

/// Why a connection was closed before its client was done: the `reason` label of
/// `otpd_metrics_http_dropped_total` (and `otpd_admin_http_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Refused at accept: every slot held by a connection being answered.
    ConnectionLimit,
    /// Closed to make room for a new connection (it was idle, or slowest to send its request).
    Evicted,
    /// Its request head was longer than `max_request_bytes` (answered 431).
    RequestTooLarge,
    /// Its request was not HTTP/1.x, or had a body without a length (answered 400 or 411).
    BadRequest,
    /// Its request head did not arrive whole within `read_timeout_ms`.
    ReadTimeout,
    /// It did not take its answer within `write_timeout_ms`.
    WriteTimeout,
    /// Its body was longer than `max_body_bytes` (answered 413).
    BodyTooLarge,
    /// Its answer was not ready within `answer_timeout_ms` (answered 504).
    AnswerTimeout,
}

impl Dropped {
    pub const ALL: [Dropped; 8] = [
        Dropped::ConnectionLimit,
        Dropped::Evicted,
        Dropped::RequestTooLarge,
        Dropped::BadRequest,
        Dropped::ReadTimeout,
        Dropped::WriteTimeout,
        Dropped::BodyTooLarge,
        Dropped::AnswerTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Dropped::ConnectionLimit => "connection_limit",
            Dropped::Evicted => "evicted",
            Dropped::RequestTooLarge => "request_too_large",
            Dropped::BadRequest => "bad_request",
            Dropped::ReadTimeout => "read_timeout",
            Dropped::WriteTimeout => "write_timeout",
            Dropped::BodyTooLarge => "body_too_large",
            Dropped::AnswerTimeout => "answer_timeout",
        }
    }
}

static DROPPED: [[AtomicU64; 8]; 2] = [const { [const { AtomicU64::new(0) }; 8] }; 2];
static OPEN: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Connections of `endpoint` closed early for `reason`, since start.
pub fn dropped(endpoint: Endpoint, reason: Dropped) -> u64 {
    DROPPED[endpoint as usize][reason as usize].load(Ordering::Relaxed)
}

/// Connections open now to `endpoint`.
pub fn open_connections(endpoint: Endpoint) -> u64 {
    OPEN[endpoint as usize].load(Ordering::Relaxed)
}

/// A whole request: its head's parts the handlers read, and its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without query or fragment.
    pub path: String,
    /// What followed `?`, without the fragment ("" if none).
    pub query: String,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    pub body: Vec<u8>,
    /// HTTP/1.x's x.
    minor: u8,
    /// The connection stays open after the answer.
    keep_alive: bool,
    /// The body's length (`Content-Length`).
    content_length: usize,
}

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// More header lines, e.g. `("WWW-Authenticate", "Bearer")`.
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// A request waiting for its answer (see [`Handler::handle`]).
pub type Ticket = u64;

/// Answers a server's requests.
pub trait Handler: Send + 'static {
    /// Answers `request` now, or returns None and answers `ticket` later through the
    /// server's [`Completer`] (within `answer_timeout_ms`, or the client gets 504).
    fn handle(&mut self, request: &Request, peer: SocketAddr, ticket: Ticket) -> Option<Answer>;
}

/// A handler that always answers at once.
pub struct Immediate<F>(pub F);

impl<F: FnMut(&Request) -> Answer + Send + 'static> Handler for Immediate<F> {
    fn handle(&mut self, request: &Request, _: SocketAddr, _: Ticket) -> Option<Answer> {
        Some((self.0)(request))
    }
}

/// Hands later answers to a server, from any thread, and wakes its loop.
#[derive(Clone)]
pub struct Completer {
    tx: Sender<(Ticket, Answer)>,
    waker: Arc<mio::Waker>,
}

impl Completer {
    /// Answers `ticket` (a ticket whose client has gone is forgotten).
    pub fn answer(&self, ticket: Ticket, answer: Answer) {
        if self.tx.send((ticket, answer)).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// After accept fails (out of descriptors), the next try waits this long.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Largest single read.
const CHUNK: usize = 4096;
/// Requests one connection is answered in a row before the others get their turn.
const REQUESTS_PER_TURN: usize = 8;

/// Binds `addr` and serves it from a thread of its own with the handler `make` builds (it is
/// given the [`Completer`] for answers it gives later).
pub fn serve<H: Handler>(
    addr: &str,
    limits: &HttpLimits,
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ServerConfig>>,
    make: impl FnOnce(Completer) -> H,
) -> Result<(), String> {
    let what = endpoint.label();
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("{what} bind {addr}: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("{what} bind {addr}: {e}"))?;
    let mut listener = TcpListener::from_std(std_listener);
    let poll = Poll::new().map_err(|e| format!("{what}: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| format!("{what}: {e}"))?;
    let waker =
        Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(|e| format!("{what}: {e}"))?);
    let (tx, answers) = crossbeam_channel::unbounded();
    let handler = make(Completer { tx, waker });
    let mut server = Server {
        tls,
        endpoint,
        listener,
        poll,
        conns: Slab::with_capacity(limits.max_connections),
        limits: Limits::new(limits),
        handler,
        answers,
        next_ticket: 1,
        accept_retry_at: None,
        expired: Vec::new(),
        again: Vec::new(),
    };
    std::thread::Builder::new()
        .name(format!("otpd-{what}"))
        .spawn(move || server.run())
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(())
}

struct Limits {
    max_connections: usize,
    max_request_bytes: usize,
    max_body_bytes: usize,
    read: Duration,
    write: Duration,
    idle: Duration,
    answer: Duration,
}

impl Limits {
    fn new(l: &HttpLimits) -> Limits {
        Limits {
            max_connections: l.max_connections.max(1),
            max_request_bytes: l.max_request_bytes.max(64),
            max_body_bytes: l.max_body_bytes,
            read: Duration::from_millis(l.read_timeout_ms),
            write: Duration::from_millis(l.write_timeout_ms),
            idle: Duration::from_millis(l.idle_timeout_ms),
            answer: Duration::from_millis(l.answer_timeout_ms),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No request under way: just accepted, or kept alive after an answer.
    Idle,
    /// Part of a request has arrived.
    Reading,
    /// A request waits for the handler's later answer.
    Waiting(Ticket),
    /// An answer is being written.
    Writing,
}

struct Conn {
    stream: TcpStream,
    /// TLS over `stream`: plaintext in and out through it.
    tls: Option<Box<rustls::ServerConnection>>,
    peer: SocketAddr,
    /// Bytes received and not yet consumed: at most `max_request_bytes + max_body_bytes + 1`.
    input: Vec<u8>,
    /// The answer being written, and how much of it is written.
    output: Vec<u8>,
    written: usize,
    /// Close once `output` is written.
    close_after: bool,
    /// The request waiting for a later answer: HEAD (no body), and the Connection header to
    /// send.
    waiting_head: bool,
    waiting_connection: &'static str,
    /// Already counted in the dropped counters (an error answer on its way out).
    counted: bool,
    phase: Phase,
    /// When the current phase runs out.
    deadline: Instant,
}

struct Server<H> {
    /// TLS on every connection (the admin API off loopback).
    tls: Option<Arc<rustls::ServerConfig>>,
    endpoint: Endpoint,
    listener: TcpListener,
    poll: Poll,
    conns: Slab<Conn>,
    limits: Limits,
    handler: H,
    answers: Receiver<(Ticket, Answer)>,
    next_ticket: Ticket,
    accept_retry_at: Option<Instant>,
    expired: Vec<(usize, Phase)>,
    /// Connections that used up their turn with work left (their socket may not signal
    /// again): driven on the next turn of the loop.
    again: Vec<usize>,
}

impl<H: Handler> Server<H> {
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
                log::error!("{}: the endpoint stops: {e}", self.endpoint.label());
                return;
            }
            std::mem::swap(&mut turn, &mut self.again);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(k) => self.drive(k),
                }
            }
            self.take_answers();
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

    /// Writes the later answers that are ready to the connections still waiting for them.
    fn take_answers(&mut self) {
        while let Ok((ticket, answer)) = self.answers.try_recv() {
            let found = self
                .conns
                .iter()
                .find(|(_, c)| c.phase == Phase::Waiting(ticket))
                .map(|(k, _)| k);
            let Some(k) = found else {
                continue;
            };
            let conn = &mut self.conns[k];
            let out = encode(&answer, !conn.waiting_head, conn.waiting_connection);
            conn.respond(out, &self.limits);
            self.drive(k);
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

    fn count(&self, reason: Dropped) {
        DROPPED[self.endpoint as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn accept_all(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: the connection waits in the backlog.
                    log::debug!("{}: accept: {e}", self.endpoint.label());
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                match self.evictable() {
                    Some(k) => self.close(k, Some(Dropped::Evicted)),
                    None => {
                        self.count(Dropped::ConnectionLimit);
                        log::debug!(
                            "{}: refused {peer}: too many connections",
                            self.endpoint.label()
                        );
                        let _ = stream.write(&simple_answer(
                            503,
                            "otpd: too many connections to this endpoint\n",
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
                log::debug!("{}: register {peer}: {e}", self.endpoint.label());
                continue;
            }
            let tls = match &self.tls {
                Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(c) => Some(Box::new(c)),
                    Err(e) => {
                        log::warn!("{}: TLS for {peer}: {e}", self.endpoint.label());
                        continue;
                    }
                },
                None => None,
            };
            entry.insert(Conn {
                tls,
                stream,
                peer,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                close_after: false,
                waiting_head: false,
                waiting_connection: "",
                counted: false,
                phase: Phase::Idle,
                deadline: Instant::now() + self.limits.idle,
            });
            OPEN[self.endpoint as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection a newcomer may replace: the longest idle one, else the one that has
    /// been sending its request longest; never one being answered.
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
        let mut ctx = Ctx {
            limits: &self.limits,
            handler: &mut self.handler,
            next_ticket: &mut self.next_ticket,
            endpoint: self.endpoint,
        };
        match conn.drive(&mut ctx) {
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
                Phase::Waiting(_) => {
                    // The client is told, then the connection closes.
                    let conn = &mut self.conns[k];
                    let out = conn.refuse(
                        self.endpoint,
                        Dropped::AnswerTimeout,
                        504,
                        "otpd: no answer in time\n",
                    );
                    conn.respond(out, &self.limits);
                    self.drive(k);
                    continue;
                }
            };
            self.close(k, reason);
        }
    }

    fn close(&mut self, k: usize, reason: Option<Dropped>) {
        let Some(mut conn) = self.conns.try_remove(k) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        OPEN[self.endpoint as usize].fetch_sub(1, Ordering::Relaxed);
        if let Some(reason) = reason {
            if !conn.counted {
                self.count(reason);
            }
            log::debug!(
                "{}: closed {}: {}",
                self.endpoint.label(),
                conn.peer,
                reason.label()
            );
        }
    }
}

/// What a connection's turn needs of its server.
struct Ctx<'a, H> {
    limits: &'a Limits,
    handler: &'a mut H,
    next_ticket: &'a mut Ticket,
    endpoint: Endpoint,
}

/// How a connection's turn ended.
enum Turn {
    /// The socket would block, or the request waits for its answer: an event says when to
    /// go on.
    Blocked,
    /// It had its share of answers; more may be waiting.
    Yielded,
}

impl Conn {
    /// Writes what is due, answers what has arrived, reads what is waiting, until the socket
    /// would block, an answer is awaited or the turn is used up. `Err` closes the connection
    /// (with the reason it counts under, if any).
    fn drive<H: Handler>(&mut self, ctx: &mut Ctx<'_, H>) -> Result<Turn, Option<Dropped>> {
        let limits = ctx.limits;
        let mut answered = 0;
        loop {
            if let Phase::Waiting(_) = self.phase {
                return Ok(Turn::Blocked);
            }
            // TLS records waiting to go (handshake, or an answer's tail).
            match self.flush_tls() {
                Ok(true) => {}
                Ok(false) => return Ok(Turn::Blocked),
                Err(_) => return Err(None),
            }
            if self.phase == Phase::Writing {
                while self.written < self.output.len() {
                    match self.write_bytes(self.written) {
                        Ok(0) => return Err(None),
                        Ok(n) => self.written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Turn::Blocked),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return Err(None),
                    }
                }
                match self.flush_tls() {
                    Ok(true) => {}
                    Ok(false) => return Ok(Turn::Blocked),
                    Err(_) => return Err(None),
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
            match parse(&self.input, limits.max_request_bytes, limits.max_body_bytes) {
                Parsed::Partial => {}
                Parsed::Done(request, used) => {
                    if answered == REQUESTS_PER_TURN {
                        return Ok(Turn::Yielded);
                    }
                    answered += 1;
                    self.input.drain(..used);
                    self.close_after = !request.keep_alive;
                    self.answer(request, ctx);
                    continue;
                }
                Parsed::Bad(status, text) => {
                    let out = self.refuse(ctx.endpoint, Dropped::BadRequest, status, text);
                    self.respond(out, limits);
                    continue;
                }
                Parsed::TooLarge => {
                    let out = self.refuse(
                        ctx.endpoint,
                        Dropped::RequestTooLarge,
                        431,
                        "otpd: the request head is too large\n",
                    );
                    self.respond(out, limits);
                    continue;
                }
                Parsed::BodyTooLarge => {
                    let out = self.refuse(
                        ctx.endpoint,
                        Dropped::BodyTooLarge,
                        413,
                        "otpd: the request body is too large\n",
                    );
                    self.respond(out, limits);
                    continue;
                }
            }
            // `parse` said Partial, so the input is within the head and body limits.
            let cap = limits.max_request_bytes + limits.max_body_bytes + 1;
            let room = cap.saturating_sub(self.input.len()).clamp(1, CHUNK);
            let mut chunk = [0u8; CHUNK];
            match self.read_bytes(&mut chunk[..room]) {
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

    /// Plaintext from the client: read from the socket, or through TLS.
    fn read_bytes(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (Some(tls), stream) = (self.tls.as_mut(), &mut self.stream) else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext yet: records from the socket (Ok(0): it has closed).
            if tls.read_tls(stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
            while tls.wants_write() {
                match tls.write_tls(stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Writes `output[from..]`: to the socket, or (all of it) into the TLS session, which
    /// `flush_tls` sends.
    fn write_bytes(&mut self, from: usize) -> std::io::Result<usize> {
        match self.tls.as_mut() {
            None => self.stream.write(&self.output[from..]),
            Some(tls) => {
                tls.writer().write_all(&self.output[from..])?;
                Ok(self.output.len() - from)
            }
        }
    }

    /// Sends the TLS records waiting; true when none is left (always, without TLS).
    fn flush_tls(&mut self) -> std::io::Result<bool> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(true);
        };
        while tls.wants_write() {
            match tls.write_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Hands a whole request to the handler: its answer is written now, or awaited.
    fn answer<H: Handler>(&mut self, request: Request, ctx: &mut Ctx<'_, H>) {
        let connection = match (request.keep_alive, request.minor) {
            (false, _) => "Connection: close\r\n",
            (true, 0) => "Connection: keep-alive\r\n",
            (true, _) => "",
        };
        let with_body = request.method != "HEAD";
        let ticket = *ctx.next_ticket;
        *ctx.next_ticket += 1;
        match ctx.handler.handle(&request, self.peer, ticket) {
            Some(a) => self.respond(encode(&a, with_body, connection), ctx.limits),
            None => {
                self.phase = Phase::Waiting(ticket);
                self.deadline = Instant::now() + ctx.limits.answer;
                self.waiting_head = !with_body;
                self.waiting_connection = connection;
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
    fn refuse(
        &mut self,
        endpoint: Endpoint,
        reason: Dropped,
        status: u16,
        text: &'static str,
    ) -> Vec<u8> {
        DROPPED[endpoint as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
        self.counted = true;
        self.close_after = true;
        self.input = Vec::new();
        log::debug!(
            "{}: refused {}: {}",
            endpoint.label(),
            self.peer,
            reason.label()
        );
        simple_answer(status, text)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// The request has not all arrived (and is within the limits).
    Partial,
    /// A whole request, and how many bytes of input it took.
    Done(Request, usize),
    /// Not HTTP/1.x (400), or a body without a length (411).
    Bad(u16, &'static str),
    /// No end of head within `max` bytes.
    TooLarge,
    /// A body over `max_body` bytes.
    BodyTooLarge,
}

/// Reads the request at the start of `input`: its head may not exceed `max` bytes (blank lines
/// before it, which HTTP allows, count) nor its body `max_body`.
fn parse(input: &[u8], max: usize, max_body: usize) -> Parsed {
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
    let head_len = start + end;
    let mut request = match parse_head(&window[start..head_len]) {
        Ok(request) => request,
        Err((status, text)) => return Parsed::Bad(status, text),
    };
    if request.content_length > max_body {
        return Parsed::BodyTooLarge;
    }
    let used = head_len + request.content_length;
    if input.len() < used {
        return Parsed::Partial;
    }
    request.body = input[head_len..used].to_vec();
    Parsed::Done(request, used)
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

/// A request refused at parsing: status and text.
type Bad = (u16, &'static str);

const NOT_HTTP: Bad = (400, "otpd: not an HTTP/1.x request\n");

fn parse_head(head: &[u8]) -> Result<Request, Bad> {
    let text = std::str::from_utf8(head).map_err(|_| NOT_HTTP)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next().ok_or(NOT_HTTP)?.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m, t, v),
        _ => return Err(NOT_HTTP),
    };
    if parts.next().is_some()
        || method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(NOT_HTTP);
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(NOT_HTTP),
    };
    // Origin form ("/metrics?x"), or absolute form ("http://host:9199/metrics").
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None if target.starts_with('/') => target,
        None => return Err(NOT_HTTP),
    };
    let target = target.split('#').next().unwrap_or(target);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (mut close, mut keep) = (false, false);
    let mut content_length: Option<usize> = None;
    let mut authorization = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(NOT_HTTP)?;
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            // Includes folded lines, which start with a space.
            return Err(NOT_HTTP);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<u64>().map_err(|_| NOT_HTTP)?;
            // Two lengths that differ: no way to know where the body ends.
            if content_length.is_some_and(|c| c as u64 != n) {
                return Err(NOT_HTTP);
            }
            content_length = Some(usize::try_from(n).unwrap_or(usize::MAX));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((411, "otpd: send the body with a Content-Length\n"));
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_string());
        }
    }
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        authorization,
        body: Vec::new(),
        minor,
        keep_alive: !close && (minor == 1 || keep),
        content_length: content_length.unwrap_or(0),
    })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
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

/// The bytes of answer `a` (its body left out for HEAD), with `connection`'s header line.
fn encode(a: &Answer, with_body: bool, connection: &str) -> Vec<u8> {
    let mut extra = String::new();
    for (name, value) in &a.headers {
        // Header values come from the handler; a line break would split the head.
        let value: String = value.chars().filter(|c| !c.is_control()).collect();
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    extra.push_str(connection);
    let mut out = head(a.status, a.content_type, a.body.len(), &extra).into_bytes();
    if with_body {
        out.extend_from_slice(a.body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(input: &str) -> (Request, usize) {
        match parse(input.as_bytes(), 8192, 64) {
            Parsed::Done(r, n) => (r, n),
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn request_heads() {
        let (r, n) = done("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /");
        assert_eq!(n, 34);
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.minor, r.keep_alive),
            ("GET", "/metrics", 1, true)
        );
        let (r, _) = done("\r\nGET /metrics?x=1 HTTP/1.0\n\n");
        assert_eq!(
            (r.path.as_str(), r.query.as_str(), r.minor, r.keep_alive),
            ("/metrics", "x=1", 0, false)
        );
        let (r, _) = done("GET http://h:1/metrics HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!((r.path.as_str(), r.keep_alive), ("/metrics", true));
        let (r, _) = done("GET / HTTP/1.1\r\nconnection: x, close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = done("GET / HTTP/1.1\r\nAuthorization:  Bearer abc \r\n\r\n");
        assert_eq!(r.authorization.as_deref(), Some("Bearer abc"));
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost", 8192, 64),
            Parsed::Partial
        );
        assert_eq!(parse(b"", 8192, 64), Parsed::Partial);
        for bad in [
            "hello\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes(), 8192, 64), Parsed::Bad(400, _)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                8192,
                64
            ),
            Parsed::Bad(411, _)
        ));
    }

    #[test]
    fn bodies_are_read_whole_and_within_their_limit() {
        let req = b"POST /api/kick HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET";
        assert_eq!(parse(&req[..40], 8192, 64), Parsed::Partial);
        match parse(req, 8192, 64) {
            Parsed::Done(r, n) => {
                assert_eq!((r.body.as_slice(), n), (&b"hello"[..], req.len() - 3));
                assert!(r.keep_alive, "a read body keeps the connection usable");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 8192, 64),
            Parsed::BodyTooLarge
        );
        assert_eq!(
            parse(
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                8192,
                64
            ),
            Parsed::Bad(400, "otpd: not an HTTP/1.x request\n")
        );
    }

    #[test]
    fn the_head_must_end_within_the_limit() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(300, b'a');
        assert_eq!(parse(&big, 300, 0), Parsed::Partial);
        big.push(b'a');
        assert_eq!(parse(&big, 300, 0), Parsed::TooLarge);
        big.truncate(296);
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse(&big, 300, 0), Parsed::Done(_, 300)));
        big.truncate(297);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big, 300, 0), Parsed::TooLarge);
        // Blank lines count.
        assert_eq!(parse(&[b'\n'; 301], 300, 0), Parsed::TooLarge);
    }

    #[test]
    fn answers() {
        let a = Answer::new(200, "text/plain", "hi\n");
        assert_eq!(
            String::from_utf8(encode(&a, true, "")).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nhi\n"
        );
        let mut a = Answer::new(401, "application/json", "{}");
        a.headers
            .push(("WWW-Authenticate", "Bearer\r\nX: y".into()));
        assert_eq!(
            String::from_utf8(encode(&a, false, "Connection: close\r\n")).unwrap(),
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\nWWW-Authenticate: BearerX: y\r\nConnection: close\r\n\r\n"
        );
    }
}

//! `otp-load clients`: the ClientAgent benchmark. One AI connection to the MessageDirector
//! plays the game's AI and login UberDOG; N client connections to the ClientAgent (served by
//! T threads, each a mio poll loop over its share of the sockets) log in, open interest in
//! their zone and then send a position update on their own avatar at R Hz, spread so that the
//! updates of one zone are evenly spaced over the period. Every client
//! measures the delivery latency of the updates of the other M - 1 avatars in its zone.
//!
//! Flow per client i: connect, CLIENT_HELLO, HELLO_RESP, `login(i)` to the UberDOG 4665; the AI
//! answers with CLIENTAGENT_SET_STATE(ESTABLISHED) and a private datagram (0xF001, u32 i) so
//! the client knows it is established; it then adds interest in (shard 10000, zone i / M + 1),
//! counts the ENTER_OBJECT messages until DONE_INTEREST_RESP, and is ready.

use crate::report::{self, Counters, Errors, Live, Report};
use hdrhistogram::Histogram;
use otp_wire::msgtypes::{
    CLIENTAGENT_SEND_DATAGRAM, CLIENTAGENT_SET_STATE, CLIENT_ADD_INTEREST, CLIENT_DISCONNECT,
    CLIENT_DONE_INTEREST_RESP, CLIENT_EJECT, CLIENT_ENTER_OBJECT_REQUIRED,
    CLIENT_ENTER_OBJECT_REQUIRED_OTHER, CLIENT_HELLO, CLIENT_HELLO_RESP, CLIENT_OBJECT_SET_FIELD,
    CONTROL_ADD_CHANNEL, STATESERVER_CREATE_OBJECT_WITH_REQUIRED, STATESERVER_OBJECT_GET_ALL,
    STATESERVER_OBJECT_GET_ALL_RESP, STATESERVER_OBJECT_GET_ZONES_COUNT_RESP,
    STATESERVER_OBJECT_GET_ZONES_OBJECTS, STATESERVER_OBJECT_SET_FIELD,
};
use otp_wire::{Deframer, InternalDatagram, Reader, Writer};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "\
    otp-load clients  --md HOST:PORT --ca HOST:PORT --dc FILE --version STR
                      [--clients N] [--zone-size M] [--rate|--move-rate R] [--chat-rate C]
                      [--duration SECS] [--warmup SECS] [--threads T] [--login-rate L]
                      [--spread zone|index] [--control CHANNEL] [--busy-poll] [--pid PID]
                      [--json]

clients: the ClientAgent benchmark (schema otp-load/load.dc; the server needs a StateServer on
--control (default 100100), a ClientAgent on --ca with version STR and add_interest enabled,
and the UberDOG (id: 4665, class: \"LoadLogin\", anonymous: true)). An AI on --md creates shard
10000 and avatars 100000+i (skipping the control channel) in zone i/M+1; N clients (default 10000, zones of M = 50) log in at
L per second (default 2000), open interest in their zone, then each sends setPos on its avatar
R times a second (default 1), spread evenly over the period: with --spread zone (default) a
zone's updates are evenly spaced and consecutive ones go to different zones; with --spread
index they go in client order, a zone's M updates back to back. After --warmup seconds (default 5) the delivery
latency to the other M-1 clients of the zone is measured for --duration seconds (default 30).
With --busy-poll the client threads never sleep in poll (no wake-ups from the server's sends,
at the cost of a busy CPU per thread). With --pid, the server's resident memory per idle client (after all are ready, against a
baseline taken before the first connects) and its CPU use while measuring.
--move-rate is --rate. --chat-rate C (default 0 = none): each client also sends say(text,
sent_us) on its avatar C times a second, spread like setPos; its deliveries are measured too.
At the end every client still held sends CLIENT_DISCONNECT; those the server then closes
without an eject count as logged out cleanly. A progress line goes to stderr once a second;
the report adds the lines clients/messages/latency/errors (and in --json the keys
clients_wanted, clients_connected, clients_held, clients_logged_out, window_s, msgs_in,
msgs_out, msgs_in_per_s, msgs_out_per_s, latency_count, latency_p50_us, latency_p90_us,
latency_p99_us, latency_p999_us, latency_max_us, errors, errors_connect, errors_eject,
errors_protocol, errors_timeout, error_details[{kind,code,reason,count}]); latencies are
from an HDR histogram in microseconds.
";

const UBERDOG: u32 = 4665;
const SHARD: u32 = 10_000;
const FIRST_AVATAR: u32 = 100_000;
/// The private client message type the AI uses to tell a client it is established.
const MSG_ESTABLISHED: u16 = 0xF001;
const INTEREST_ID: u16 = 1;
/// How long the clients keep collecting deliveries after the last measured update is sent.
const GRACE: Duration = Duration::from_secs(2);

struct Opts {
    md: String,
    ca: String,
    dc: String,
    version: String,
    clients: u32,
    zone_size: u32,
    rate: f64,
    chat_rate: f64,
    duration: f64,
    warmup: f64,
    threads: usize,
    login_rate: f64,
    control: u64,
    /// true: a zone's updates are spread over the period; false: in client order, so one
    /// zone's M updates go out back to back (each client hears its neighbours in a burst).
    spread_zone: bool,
    /// Poll with a zero timeout instead of sleeping.
    busy_poll: bool,
    pid: Option<u32>,
    json: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        md: "127.0.0.1:7199".into(),
        ca: "127.0.0.1:7198".into(),
        dc: String::new(),
        version: "dev".into(),
        clients: 10_000,
        zone_size: 50,
        rate: 1.0,
        chat_rate: 0.0,
        duration: 30.0,
        warmup: 5.0,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        login_rate: 2_000.0,
        control: 100_100,
        spread_zone: true,
        busy_poll: false,
        pid: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        fn num<T: std::str::FromStr>(a: &str, v: String) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{a}: {e}"))
        }
        match a.as_str() {
            "--md" => o.md = val()?,
            "--ca" => o.ca = val()?,
            "--dc" => o.dc = val()?,
            "--version" => o.version = val()?,
            "--clients" => o.clients = num(a, val()?)?,
            "--zone-size" => o.zone_size = num(a, val()?)?,
            "--rate" | "--move-rate" => o.rate = num(a, val()?)?,
            "--chat-rate" => o.chat_rate = num(a, val()?)?,
            "--duration" => o.duration = num(a, val()?)?,
            "--warmup" => o.warmup = num(a, val()?)?,
            "--threads" => o.threads = num(a, val()?)?,
            "--login-rate" => o.login_rate = num(a, val()?)?,
            "--control" => o.control = num(a, val()?)?,
            "--spread" => {
                o.spread_zone = match val()?.as_str() {
                    "zone" => true,
                    "index" => false,
                    v => return Err(format!("--spread {v}: zone or index")),
                }
            }
            "--pid" => o.pid = Some(num(a, val()?)?),
            "--json" => o.json = true,
            "--busy-poll" => o.busy_poll = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.dc.is_empty() {
        return Err("--dc is required (otp-load/load.dc)".into());
    }
    if o.clients == 0 || o.zone_size == 0 || o.threads == 0 {
        return Err("--clients, --zone-size and --threads must be at least 1".into());
    }
    if o.clients.checked_add(FIRST_AVATAR + 1).is_none() {
        return Err("--clients is too large".into());
    }
    if !(o.rate > 0.0
        && o.chat_rate >= 0.0
        && o.duration > 0.0
        && o.warmup >= 0.0
        && o.login_rate > 0.0)
    {
        return Err("--rate, --duration and --login-rate must be positive".into());
    }
    o.threads = o.threads.min(o.clients as usize);
    Ok(o)
}

// ---- a log-bucketed histogram ------------------------------------------------------------

/// Values (microseconds) with about 1.6% resolution: exact below 128, then 64 sub-buckets
/// per power of two.
#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Hist {
    const EXACT: u64 = 128;
    const SUB_BITS: u32 = 6;

    fn new() -> Hist {
        Hist {
            counts: vec![0; Self::EXACT as usize + (64 - 7) * (1 << Self::SUB_BITS)],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < Self::EXACT {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= 7
        let mant = (v >> (e - Self::SUB_BITS)) & ((1 << Self::SUB_BITS) - 1);
        Self::EXACT as usize + ((e - 7) as usize) * (1 << Self::SUB_BITS) + mant as usize
    }

    /// The middle of the bucket at `i`.
    fn value(i: usize) -> f64 {
        if (i as u64) < Self::EXACT {
            return i as f64;
        }
        let j = i - Self::EXACT as usize;
        let e = (j >> Self::SUB_BITS) as u32 + 7;
        let mant = (j & ((1 << Self::SUB_BITS) - 1)) as u64;
        let width = 1u64 << (e - Self::SUB_BITS);
        let low = (1u64 << e) + mant * width;
        low as f64 + width as f64 / 2.0
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1), or 0 when empty.
    fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max as f64);
            }
        }
        self.max as f64
    }
}

// ---- shared state ----------------------------------------------------------------------

struct Shared {
    epoch: Instant,
    /// Clients that reached ready (ever).
    ready: AtomicUsize,
    /// Clients that failed before they were ready (connect error, eject, close).
    failed: AtomicUsize,
    /// Clients whose TCP connection was established.
    connected: AtomicUsize,
    /// When the first update is due, microseconds since `epoch`; u64::MAX = not yet.
    start_us: AtomicU64,
    /// Set when the clients should close and report.
    stop: AtomicBool,
    /// Counters for the progress line and the report.
    live: Arc<Live>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// What one client thread found.
struct ThreadResult {
    /// Window latencies not yet merged into `Shared::live`.
    latency: Histogram<u64>,
    login: Hist,
    counters: Counters,
    /// Clients that sent CLIENT_DISCONNECT at the end and saw the server close.
    logged_out: u64,
    /// Errors other than connect errors and ejects (kept below for the old lines).
    errors: Errors,
    sent_total: u64,
    sent_window: u64,
    expected_window: u64,
    received_window: u64,
    received_total: u64,
    held: u64,
    closed_after_ready: u64,
    connect_errors: Vec<String>,
    ejects: BTreeMap<(u16, String), u64>,
    closed_unexpectedly: u64,
    enter_mismatch: u64,
}

// ---- one client ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Connecting,
    Hello,
    Login,
    Interest,
    Ready,
    LoggingOut,
    Gone,
}

struct Client {
    index: u32,
    sock: Option<mio::net::TcpStream>,
    df: Deframer,
    st: State,
}

struct State {
    phase: Phase,
    out: Vec<u8>,
    enters: u32,
    started_us: u64,
}

/// Everything a datagram handler needs besides the client.
struct Ctx<'a> {
    o: &'a Opts,
    shared: &'a Shared,
    login_field: u16,
    set_pos: u16,
    say: u16,
    window: (u64, u64),
    /// Whether the loop turn being handled is inside the measured window.
    in_window: bool,
    r: &'a mut ThreadResult,
}

/// Client i's avatar: 100000 + i, skipping the StateServer's control channel (100100 by
/// default), which cannot be a doid.
fn avatar_doid(o: &Opts, i: u32) -> u32 {
    let d = FIRST_AVATAR + i;
    if o.control >= FIRST_AVATAR as u64 && d as u64 >= o.control {
        d + 1
    } else {
        d
    }
}

fn zone_of(o: &Opts, i: u32) -> u32 {
    i / o.zone_size + 1
}

/// Avatars (= clients) in client i's zone.
fn zone_population(o: &Opts, i: u32) -> u32 {
    let first = (i / o.zone_size) * o.zone_size;
    o.zone_size.min(o.clients - first)
}

impl Client {
    /// Handles one client datagram body (msgtype + payload). Err = the client is finished.
    fn on_datagram(st: &mut State, index: u32, body: &[u8], cx: &mut Ctx) -> Result<(), ()> {
        let mut r = Reader::new(body);
        let Ok(msgtype) = r.u16() else {
            return Ok(());
        };
        cx.r.counters.msgs_in += 1;
        if cx.in_window {
            cx.r.counters.in_window += 1;
        }
        match msgtype {
            CLIENT_HELLO_RESP if st.phase == Phase::Hello => {
                let mut w = Writer::client(&mut st.out, CLIENT_OBJECT_SET_FIELD);
                w.u32(UBERDOG).u16(cx.login_field).u32(index);
                w.finish_bounded();
                st.phase = Phase::Login;
            }
            MSG_ESTABLISHED if st.phase == Phase::Login => {
                let mut w = Writer::client(&mut st.out, CLIENT_ADD_INTEREST);
                w.u32(index)
                    .u16(INTEREST_ID)
                    .u32(SHARD)
                    .u32(zone_of(cx.o, index));
                w.finish_bounded();
                st.phase = Phase::Interest;
            }
            CLIENT_ENTER_OBJECT_REQUIRED | CLIENT_ENTER_OBJECT_REQUIRED_OTHER => st.enters += 1,
            CLIENT_DONE_INTEREST_RESP if st.phase == Phase::Interest => {
                if st.enters != zone_population(cx.o, index) {
                    cx.r.enter_mismatch += 1;
                }
                st.phase = Phase::Ready;
                cx.r.login.record(cx.shared.now_us() - st.started_us);
                cx.shared.ready.fetch_add(1, Ordering::Relaxed);
                cx.shared.live.held.fetch_add(1, Ordering::Relaxed);
            }
            CLIENT_OBJECT_SET_FIELD => {
                let (Ok(_doid), Ok(field)) = (r.u32(), r.u16()) else {
                    return Ok(());
                };
                let sent = if field == cx.set_pos {
                    let (Ok(_x), Ok(_y), Ok(sent)) = (r.i16(), r.i16(), r.u64()) else {
                        return Ok(());
                    };
                    sent
                } else if field == cx.say && cx.say != u16::MAX {
                    let (Ok(_text), Ok(sent)) = (r.string(), r.u64()) else {
                        return Ok(());
                    };
                    sent
                } else {
                    return Ok(());
                };
                cx.r.received_total += 1;
                if sent >= cx.window.0 && sent < cx.window.1 {
                    cx.r.received_window += 1;
                    cx.r.latency
                        .saturating_record(cx.shared.now_us().saturating_sub(sent).max(1));
                }
            }
            CLIENT_EJECT => {
                let code = r.u16().unwrap_or(0);
                let reason = r
                    .string()
                    .map(str::to_owned)
                    .unwrap_or_else(|_| "(unreadable reason)".into());
                cx.shared.live.errors.fetch_add(1, Ordering::Relaxed);
                *cx.r.ejects.entry((code, reason)).or_default() += 1;
                return Err(());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads what the socket holds and hands each datagram to `on` (None: the stream's framing
/// is broken), until the socket is drained. None = the connection goes on; Some(ejected) =
/// it is over: `on` said so (Err(ejected)), or the socket closed or failed (false).
pub(crate) fn read_datagrams(
    sock: &mut mio::net::TcpStream,
    df: &mut Deframer,
    peer_closed: bool,
    mut on: impl FnMut(Option<&[u8]>) -> Result<(), bool>,
) -> Option<bool> {
    loop {
        match df.read_from(sock) {
            Ok(0) => return Some(false),
            Ok(_) => {
                let drained = df.drained();
                while let Some(d) = df.next_datagram() {
                    if let Err(ejected) = on(d.ok()) {
                        return Some(ejected);
                    }
                }
                // A short read emptied the socket, so the next readiness event says when there
                // is more; but if the event already said the peer closed, no further event will
                // come, so read on to the end of the stream.
                if drained && !peer_closed {
                    return None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(false),
        }
    }
}

/// Writes as much of `out` as the socket takes; keeps the rest. Err = the connection failed.
pub(crate) fn flush(sock: &mut mio::net::TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    let mut at = 0;
    while at < out.len() {
        match sock.write(&out[at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.drain(..at);
    Ok(())
}

struct Worker {
    clients: Vec<Client>,
    poll: mio::Poll,
    addr: SocketAddr,
    hello: Vec<u8>,
}

impl Worker {
    fn finish(&mut self, k: usize, cx: &mut Ctx, ejected: bool) {
        let c = &mut self.clients[k];
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        match c.st.phase {
            Phase::Ready => {
                cx.r.closed_after_ready += 1;
                cx.shared.live.held.fetch_sub(1, Ordering::Relaxed);
            }
            Phase::LoggingOut => {
                if !ejected {
                    cx.r.logged_out += 1;
                }
                c.st.phase = Phase::Gone;
                c.st.out = Vec::new();
                return;
            }
            Phase::Gone => return,
            _ => {
                cx.shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !ejected {
            cx.r.closed_unexpectedly += 1;
            cx.shared.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.st.phase = Phase::Gone;
        c.st.out = Vec::new();
    }

    fn start(&mut self, k: usize, cx: &mut Ctx) {
        let c = &mut self.clients[k];
        c.st.started_us = cx.shared.now_us();
        match mio::net::TcpStream::connect(self.addr) {
            Ok(mut s) => {
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    mio::Token(k),
                    mio::Interest::READABLE | mio::Interest::WRITABLE,
                ) {
                    cx.r.connect_errors.push(format!("register: {e}"));
                    cx.shared.live.errors.fetch_add(1, Ordering::Relaxed);
                    cx.shared.failed.fetch_add(1, Ordering::Relaxed);
                    c.st.phase = Phase::Gone;
                    return;
                }
                c.sock = Some(s);
                c.st.phase = Phase::Connecting;
            }
            Err(e) => {
                cx.r.connect_errors.push(format!("connect: {e}"));
                cx.shared.live.errors.fetch_add(1, Ordering::Relaxed);
                cx.shared.failed.fetch_add(1, Ordering::Relaxed);
                c.st.phase = Phase::Gone;
            }
        }
    }

    fn on_event(&mut self, k: usize, ev: &mio::event::Event, cx: &mut Ctx) {
        let c = &mut self.clients[k];
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        if c.st.phase == Phase::Connecting {
            if let Ok(Some(e)) | Err(e) = sock.take_error() {
                cx.r.connect_errors.push(format!("connect: {e}"));
                cx.shared.live.errors.fetch_add(1, Ordering::Relaxed);
                return self.finish(k, cx, true);
            }
            match sock.peer_addr() {
                Ok(_) => {
                    let _ = sock.set_nodelay(true);
                    cx.shared.connected.fetch_add(1, Ordering::Relaxed);
                    cx.shared.live.connected.fetch_add(1, Ordering::Relaxed);
                    c.st.out.extend_from_slice(&self.hello);
                    c.st.phase = Phase::Hello;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    cx.r.connect_errors.push(format!("connect: {e}"));
                    cx.shared.live.errors.fetch_add(1, Ordering::Relaxed);
                    return self.finish(k, cx, true);
                }
            }
        }
        let mut dead = None;
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            let (st, index) = (&mut c.st, c.index);
            dead = read_datagrams(
                sock,
                &mut c.df,
                ev.is_read_closed() || ev.is_error(),
                |d| match d {
                    Some(body) => Client::on_datagram(st, index, body, cx).map_err(|()| true),
                    None => Err(false),
                },
            );
        }
        if dead.is_none() && !c.st.out.is_empty() && flush(sock, &mut c.st.out).is_err() {
            dead = Some(false);
        }
        if let Some(ejected) = dead {
            self.finish(k, cx, ejected);
        }
    }

    fn send_pos(&mut self, k: usize, round: u64, cx: &mut Ctx) {
        let c = &mut self.clients[k];
        if c.st.phase != Phase::Ready {
            return;
        }
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        let now = cx.shared.now_us();
        let mut w = Writer::client(&mut c.st.out, CLIENT_OBJECT_SET_FIELD);
        w.u32(avatar_doid(cx.o, c.index))
            .u16(cx.set_pos)
            .i16(c.index as i16)
            .i16(round as i16)
            .u64(now);
        w.finish_bounded();
        cx.r.sent_total += 1;
        cx.r.counters.msgs_out += 1;
        if now >= cx.window.0 && now < cx.window.1 {
            cx.r.sent_window += 1;
            cx.r.counters.out_window += 1;
            cx.r.expected_window += (zone_population(cx.o, c.index) - 1) as u64;
        }
        if flush(sock, &mut c.st.out).is_err() {
            self.finish(k, cx, false);
        }
    }

    /// A say(text, sent_us) on the client's avatar: a chat line every zone member hears.
    fn send_chat(&mut self, k: usize, cx: &mut Ctx) {
        let c = &mut self.clients[k];
        if c.st.phase != Phase::Ready {
            return;
        }
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        let now = cx.shared.now_us();
        let mut w = Writer::client(&mut c.st.out, CLIENT_OBJECT_SET_FIELD);
        w.u32(avatar_doid(cx.o, c.index))
            .u16(cx.say)
            .string("hello, zone")
            .u64(now);
        w.finish_bounded();
        cx.r.sent_total += 1;
        cx.r.counters.msgs_out += 1;
        if now >= cx.window.0 && now < cx.window.1 {
            cx.r.sent_window += 1;
            cx.r.counters.out_window += 1;
            cx.r.expected_window += (zone_population(cx.o, c.index) - 1) as u64;
        }
        if flush(sock, &mut c.st.out).is_err() {
            self.finish(k, cx, false);
        }
    }

    /// Sends CLIENT_DISCONNECT from every ready client; returns how many are logging out.
    fn logout(&mut self, cx: &mut Ctx) -> usize {
        let mut n = 0;
        for k in 0..self.clients.len() {
            let c = &mut self.clients[k];
            if c.st.phase != Phase::Ready {
                continue;
            }
            let Some(sock) = c.sock.as_mut() else {
                continue;
            };
            let w = Writer::client(&mut c.st.out, CLIENT_DISCONNECT);
            w.finish_bounded();
            cx.r.counters.msgs_out += 1;
            cx.shared.live.held.fetch_sub(1, Ordering::Relaxed);
            c.st.phase = Phase::LoggingOut;
            if flush(sock, &mut c.st.out).is_err() {
                self.finish(k, cx, true);
                continue;
            }
            n += 1;
        }
        n
    }
}

#[allow(clippy::too_many_arguments)]
#[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
fn client_thread(
    o: &Opts,
    shared: &Shared,
    t: usize,
    addr: SocketAddr,
    hash: u32,
    login_field: u16,
    set_pos: u16,
    say: u16,
    login_start_us: u64,
) -> Result<ThreadResult, String> {
    let mut r = ThreadResult {
        latency: report::histogram(),
        login: Hist::new(),
        counters: Counters::default(),
        logged_out: 0,
        errors: Errors::default(),
        sent_total: 0,
        sent_window: 0,
        expected_window: 0,
        received_window: 0,
        received_total: 0,
        held: 0,
        closed_after_ready: 0,
        connect_errors: Vec::new(),
        ejects: BTreeMap::new(),
        closed_unexpectedly: 0,
        enter_mismatch: 0,
    };
    let mut hello = Vec::new();
    let mut w = Writer::client(&mut hello, CLIENT_HELLO);
    w.u32(hash).string(&o.version);
    w.finish().map_err(|e| e.to_string())?;
    let mut wk = Worker {
        clients: (t as u32..o.clients)
            .step_by(o.threads)
            .map(|index| Client {
                index,
                sock: None,
                df: Deframer::new(2048, otp_wire::MAX_DATAGRAM_BODY),
                st: State {
                    phase: Phase::NotStarted,
                    out: Vec::new(),
                    enters: 0,
                    started_us: 0,
                },
            })
            .collect(),
        poll: mio::Poll::new().map_err(|e| e.to_string())?,
        addr,
        hello,
    };
    let mut events = mio::Events::with_capacity(1024);
    let period_us = (1e6 / o.rate) as u64;
    let n = wk.clients.len();
    // The measurement window, known once the updates start.
    let mut window = (u64::MAX, u64::MAX);
    let mut started = false;
    let (mut next_connect, mut send_k, mut round) = (0usize, 0usize, 0u64);
    let connect_at = |i: u32| login_start_us + (i as f64 / o.login_rate * 1e6) as u64;
    // Each client's place in the period. --spread zone: the zones' first members, then their
    // second members, and so on, so the updates of one zone are spread over the whole period
    // (a client hears from a neighbour every period / M) and consecutive ones go to other
    // zones. --spread index: in client order, so a zone's updates come back to back.
    let zones = o.clients.div_ceil(o.zone_size) as u64;
    let slots = zones * o.zone_size as u64;
    let offset = |i: u32| {
        if !o.spread_zone {
            return i as u64 * period_us / o.clients as u64;
        }
        let slot = (i % o.zone_size) as u64 * zones + (i / o.zone_size) as u64;
        slot * period_us / slots
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&k| offset(wk.clients[k].index));
    let offset_of: Vec<u64> = order.iter().map(|&k| offset(wk.clients[k].index)).collect();
    // `send_k` walks `order`; the k-th send of a round is due at:
    let send_at = |start: u64, round: u64, k: usize| start + round * period_us + offset_of[k];
    // Chat lines: the same spread over the chat period.
    let chat_period_us = if o.chat_rate > 0.0 {
        (1e6 / o.chat_rate) as u64
    } else {
        u64::MAX
    };
    let chat_offset_of: Vec<u64> = offset_of
        .iter()
        .map(|&off| {
            (off as u128 * chat_period_us.min(1 << 40) as u128 / period_us.max(1) as u128) as u64
        })
        .collect();
    let chat_at =
        |start: u64, round: u64, k: usize| start + round * chat_period_us + chat_offset_of[k];
    let (mut chat_k, mut chat_round) = (0usize, 0u64);
    let mut last_publish = 0u64;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = shared.now_us();
        if now >= last_publish + 250_000 {
            r.counters.publish(&shared.live);
            shared.live.merge(&mut r.latency);
            last_publish = now;
        }
        if !started {
            let s = shared.start_us.load(Ordering::Acquire);
            if s != u64::MAX {
                started = true;
                let ws = s + (o.warmup * 1e6) as u64;
                window = (ws, ws + (o.duration * 1e6) as u64);
            }
        }
        let mut cx = Ctx {
            o,
            shared,
            login_field,
            set_pos,
            say,
            window,
            in_window: now >= window.0 && now < window.1,
            r: &mut r,
        };
        // Start the clients whose turn has come.
        while next_connect < n && now >= connect_at(wk.clients[next_connect].index) {
            wk.start(next_connect, &mut cx);
            next_connect += 1;
        }
        // Send the updates that are due (none after the window).
        let s = shared.start_us.load(Ordering::Relaxed);
        if started && n > 0 {
            loop {
                let due = send_at(s, round, send_k);
                if due > now || due >= window.1 {
                    break;
                }
                wk.send_pos(order[send_k], round, &mut cx);
                send_k += 1;
                if send_k == n {
                    send_k = 0;
                    round += 1;
                }
            }
            if o.chat_rate > 0.0 {
                loop {
                    let due = chat_at(s, chat_round, chat_k);
                    if due > now || due >= window.1 {
                        break;
                    }
                    wk.send_chat(order[chat_k], &mut cx);
                    chat_k += 1;
                    if chat_k == n {
                        chat_k = 0;
                        chat_round += 1;
                    }
                }
            }
        }
        // Sleep until the next event, connect or send, at most 10 ms.
        let mut wake = now + 10_000;
        if next_connect < n {
            wake = wake.min(connect_at(wk.clients[next_connect].index));
        }
        if started && n > 0 {
            let due = send_at(s, round, send_k);
            if due < window.1 {
                wake = wake.min(due);
            }
            if o.chat_rate > 0.0 {
                let due = chat_at(s, chat_round, chat_k);
                if due < window.1 {
                    wake = wake.min(due);
                }
            }
        }
        let timeout = if o.busy_poll {
            Duration::ZERO
        } else {
            Duration::from_micros(wake.saturating_sub(shared.now_us()))
        };
        if let Err(e) = wk.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            wk.on_event(ev.token().0, ev, &mut cx);
        }
    }
    // A last look for ejects that arrived without a readiness event seen yet.
    let mut cx = Ctx {
        o,
        shared,
        login_field,
        set_pos,
        say,
        window,
        in_window: false,
        r: &mut r,
    };
    let _ = wk.poll.poll(&mut events, Some(Duration::ZERO));
    for ev in events.iter() {
        wk.on_event(ev.token().0, ev, &mut cx);
    }
    cx.r.held = wk
        .clients
        .iter()
        .filter(|c| c.st.phase == Phase::Ready && c.sock.is_some())
        .count() as u64;
    // Log out: CLIENT_DISCONNECT, then wait (up to 3 s) for the server to close each one.
    let mut left = wk.logout(&mut cx);
    let deadline = Instant::now() + Duration::from_secs(3);
    while left > 0 && Instant::now() < deadline {
        if let Err(e) = wk.poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            wk.on_event(ev.token().0, ev, &mut cx);
        }
        left = wk
            .clients
            .iter()
            .filter(|c| c.st.phase == Phase::LoggingOut)
            .count();
    }
    for _ in 0..left {
        cx.r.errors.timeout(
            &shared.live,
            "the server did not close after CLIENT_DISCONNECT",
        );
    }
    r.counters.publish(&shared.live);
    shared.live.merge(&mut r.latency);
    Ok(r)
}

// ---- the AI ----------------------------------------------------------------------------

struct Ai {
    sock: TcpStream,
    df: Deframer,
    channel: u64,
}

impl Ai {
    /// Reads until `want` returns Some for a datagram, or `timeout` passes.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&InternalDatagram) -> Option<T>,
    ) -> Result<Option<T>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left)).ok();
            match self.df.read_from(&mut self.sock) {
                Ok(0) => return Err("the MessageDirector closed the AI connection".into()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(format!("AI read: {e}")),
            }
            while let Some(d) = self.df.next_datagram() {
                let body = d.map_err(|e| e.to_string())?;
                if let Ok(dg) = InternalDatagram::parse(body) {
                    if let Some(v) = want(&dg) {
                        return Ok(Some(v));
                    }
                }
            }
        }
    }
}

/// (busy, softirq) jiffies of all CPUs, from /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, *v.get(6)?))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

use report::json_str;

#[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let epoch = Instant::now();
    let dc = crate::load_dc(std::path::Path::new(&o.dc))?;
    let hash = dc.hash();
    let class = |name: &str| {
        dc.class_by_name(name)
            .ok_or(format!("{}: no class {name}", o.dc))
    };
    let field = |c: &str, f: &str| -> Result<u16, String> {
        dc.field_by_name(class(c)?, f)
            .map(|f| f.id())
            .ok_or(format!("{}: no field {c}.{f}", o.dc))
    };
    let login_field = field("LoadLogin", "login")?;
    let set_pos = field("LoadAvatar", "setPos")?;
    // say: optional, for schemas written before it (only needed with --chat-rate).
    let say = match field("LoadAvatar", "say") {
        Ok(f) => f,
        Err(_) if o.chat_rate == 0.0 => u16::MAX,
        Err(e) => return Err(e),
    };
    // The classes the clients name must have these fields.
    field("LoadAvatar", "setName")?;
    field("LoadShard", "setName")?;
    let shard_class = class("LoadShard")?.id();
    let avatar_class = class("LoadAvatar")?.id();
    let ca_addr =
        o.ca.to_socket_addrs()
            .map_err(|e| format!("--ca {}: {e}", o.ca))?
            .next()
            .ok_or(format!("--ca {}: no address", o.ca))?;

    // The AI: subscribe, create the shard and the avatars, and wait until the StateServer
    // has them all.
    let sock = TcpStream::connect(&o.md).map_err(|e| format!("connect {}: {e}", o.md))?;
    sock.set_nodelay(true).ok();
    let mut ai = Ai {
        sock,
        df: Deframer::new(1 << 16, otp_wire::MAX_DATAGRAM_BODY),
        channel: 1_900_000_000 + (std::process::id() as u64 % 100_000),
    };
    let mut buf = Vec::new();
    for ch in [UBERDOG as u64, ai.channel] {
        let mut w = Writer::control(&mut buf, CONTROL_ADD_CHANNEL);
        w.u64(ch);
        w.finish_bounded();
    }
    let mut w = Writer::internal1(
        &mut buf,
        o.control,
        ai.channel,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
    );
    w.u32(SHARD)
        .u32(0)
        .u32(0)
        .u16(shard_class)
        .string("load shard");
    w.finish_bounded();
    ai.sock.write_all(&buf).map_err(|e| e.to_string())?;
    buf.clear();
    let mut found = None;
    for attempt in 0..50u32 {
        let mut w = Writer::internal1(
            &mut buf,
            SHARD as u64,
            ai.channel,
            STATESERVER_OBJECT_GET_ALL,
        );
        w.u32(attempt).u32(SHARD);
        w.finish_bounded();
        ai.sock.write_all(&buf).map_err(|e| e.to_string())?;
        buf.clear();
        found = ai.wait_for(Duration::from_millis(200), |dg| {
            (dg.msgtype == STATESERVER_OBJECT_GET_ALL_RESP).then_some(())
        })?;
        if found.is_some() {
            break;
        }
    }
    if found.is_none() {
        return Err(format!(
            "the StateServer on control channel {} never created the shard {SHARD}",
            o.control
        ));
    }
    let t_create = Instant::now();
    for i in 0..o.clients {
        let mut w = Writer::internal1(
            &mut buf,
            o.control,
            ai.channel,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        );
        w.u32(avatar_doid(&o, i))
            .u32(SHARD)
            .u32(zone_of(&o, i))
            .u16(avatar_class)
            .string(&format!("avatar {i}"));
        w.finish_bounded();
        if buf.len() > 32_768 || i + 1 == o.clients {
            ai.sock.write_all(&buf).map_err(|e| e.to_string())?;
            buf.clear();
        }
    }
    // Barrier: the shard counts every avatar in its zones. (GET_ZONES_OBJECTS, because astrond
    // answers GET_ZONES_COUNT only as its first reply; the objects' own answers are ignored.)
    let zones: Vec<u32> = (0..o.clients.div_ceil(o.zone_size))
        .map(|z| z + 1)
        .collect();
    let chunks = zones.chunks(4096).count();
    let mut counted = 0;
    let barrier_deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0u32;
    while Instant::now() < barrier_deadline {
        attempt += 1;
        for chunk in zones.chunks(4096) {
            let mut w = Writer::internal1(
                &mut buf,
                SHARD as u64,
                ai.channel,
                STATESERVER_OBJECT_GET_ZONES_OBJECTS,
            );
            w.u32(attempt).u32(SHARD).u16(chunk.len() as u16);
            for z in chunk {
                w.u32(*z);
            }
            w.finish().map_err(|e| e.to_string())?;
        }
        ai.sock.write_all(&buf).map_err(|e| e.to_string())?;
        buf.clear();
        let (mut sum, mut got) = (0u32, 0);
        while got < chunks {
            let r = ai.wait_for(Duration::from_millis(1000), |dg| {
                if dg.msgtype != STATESERVER_OBJECT_GET_ZONES_COUNT_RESP {
                    return None;
                }
                let mut r = dg.payload_reader();
                let ctx = r.u32().ok()?;
                (ctx == attempt).then(|| r.u32().ok()).flatten()
            })?;
            match r {
                Some(c) => {
                    sum += c;
                    got += 1;
                }
                None => break,
            }
        }
        counted = sum;
        if got == chunks && sum >= o.clients {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if counted < o.clients {
        eprintln!(
            "otp-load clients: the shard counts {counted} of {} avatars after 30 s; going on",
            o.clients
        );
    }
    let create_s = t_create.elapsed().as_secs_f64();

    // The AI answers logins from here on, on its own thread.
    let shared = Arc::new(Shared {
        epoch,
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
        start_us: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
        live: Live::new(),
    });
    let progress = report::progress(shared.live.clone(), o.clients as u64);
    let logins = Arc::new(AtomicU64::new(0));
    let ai_thread = {
        let shared = shared.clone();
        let logins = logins.clone();
        std::thread::spawn(move || -> Result<(), String> {
            let mut out = Vec::new();
            let mut ai = ai;
            ai.sock
                .set_read_timeout(Some(Duration::from_millis(50)))
                .ok();
            while !shared.stop.load(Ordering::Relaxed) {
                match ai.df.read_from(&mut ai.sock) {
                    Ok(0) => return Err("the MessageDirector closed the AI connection".into()),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(format!("AI read: {e}")),
                }
                while let Some(d) = ai.df.next_datagram() {
                    let body = d.map_err(|e| e.to_string())?;
                    let Ok(dg) = InternalDatagram::parse(body) else {
                        continue;
                    };
                    if dg.msgtype != STATESERVER_OBJECT_SET_FIELD {
                        continue;
                    }
                    let Some(client) = dg.sender else { continue };
                    let mut r = dg.payload_reader();
                    let (Ok(UBERDOG), Ok(f), Ok(index)) = (r.u32(), r.u16(), r.u32()) else {
                        continue;
                    };
                    if f != login_field {
                        continue;
                    }
                    let mut w =
                        Writer::internal1(&mut out, client, ai.channel, CLIENTAGENT_SET_STATE);
                    w.u16(2);
                    w.finish_bounded();
                    let mut body = Vec::with_capacity(6);
                    body.extend_from_slice(&MSG_ESTABLISHED.to_le_bytes());
                    body.extend_from_slice(&index.to_le_bytes());
                    let mut w =
                        Writer::internal1(&mut out, client, ai.channel, CLIENTAGENT_SEND_DATAGRAM);
                    w.blob(&body);
                    w.finish_bounded();
                    logins.fetch_add(1, Ordering::Relaxed);
                }
                if !out.is_empty() {
                    ai.sock
                        .write_all(&out)
                        .map_err(|e| format!("AI write: {e}"))?;
                    out.clear();
                }
            }
            Ok(())
        })
    };

    // Baseline memory, then the clients.
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = o.pid.and_then(rss_kib);
    let o = Arc::new(o);
    let login_start_us = shared.now_us() + 10_000;
    let t_login = Instant::now();
    let handles: Vec<_> = (0..o.threads)
        .map(|t| {
            let (o, shared) = (o.clone(), shared.clone());
            std::thread::spawn(move || {
                client_thread(
                    &o,
                    &shared,
                    t,
                    ca_addr,
                    hash,
                    login_field,
                    set_pos,
                    say,
                    login_start_us,
                )
            })
        })
        .collect();
    let n = o.clients as usize;
    let login_deadline = t_login + Duration::from_secs_f64(n as f64 / o.login_rate + 60.0);
    loop {
        let (ready, failed) = (
            shared.ready.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
        );
        if ready + failed >= n || Instant::now() > login_deadline {
            break;
        }
        if handles.iter().any(|h| h.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let login_s = t_login.elapsed().as_secs_f64();
    let ready_at_start = shared.ready.load(Ordering::Relaxed);
    // Idle memory: all clients connected, logged in, one interest open each.
    std::thread::sleep(Duration::from_secs(1));
    let rss1 = o.pid.and_then(rss_kib);

    // The updates.
    let start = shared.now_us() + 100_000;
    shared.start_us.store(start, Ordering::Release);
    let ws = start + (o.warmup * 1e6) as u64;
    let we = ws + (o.duration * 1e6) as u64;
    let wait_until = |t: u64| {
        let now = shared.now_us();
        if t > now {
            std::thread::sleep(Duration::from_micros(t - now));
        }
    };
    wait_until(ws);
    let cpu0 = o.pid.and_then(crate::cpu_seconds);
    let own0 = crate::cpu_seconds(std::process::id());
    let mach0 = machine_jiffies();
    wait_until(we);
    let mach1 = machine_jiffies();
    let cpu1 = o.pid.and_then(crate::cpu_seconds);
    let own1 = crate::cpu_seconds(std::process::id());
    let rss2 = o.pid.and_then(rss_kib);
    wait_until(we + GRACE.as_micros() as u64);
    shared.stop.store(true, Ordering::Relaxed);
    let mut total = ThreadResult {
        latency: report::histogram(),
        login: Hist::new(),
        counters: Counters::default(),
        logged_out: 0,
        errors: Errors::default(),
        sent_total: 0,
        sent_window: 0,
        expected_window: 0,
        received_window: 0,
        received_total: 0,
        held: 0,
        closed_after_ready: 0,
        connect_errors: Vec::new(),
        ejects: BTreeMap::new(),
        closed_unexpectedly: 0,
        enter_mismatch: 0,
    };
    for h in handles {
        let r = h.join().map_err(|_| "a client thread panicked")??;
        total.counters.in_window += r.counters.in_window;
        total.counters.out_window += r.counters.out_window;
        total.logged_out += r.logged_out;
        total.errors.merge(r.errors);
        total.login.merge(&r.login);
        total.sent_total += r.sent_total;
        total.sent_window += r.sent_window;
        total.expected_window += r.expected_window;
        total.received_window += r.received_window;
        total.received_total += r.received_total;
        total.held += r.held;
        total.closed_after_ready += r.closed_after_ready;
        total.connect_errors.extend(r.connect_errors);
        for (k, v) in r.ejects {
            *total.ejects.entry(k).or_default() += v;
        }
        total.closed_unexpectedly += r.closed_unexpectedly;
        total.enter_mismatch += r.enter_mismatch;
    }
    ai_thread.join().map_err(|_| "the AI thread panicked")??;
    shared.live.stop.store(true, Ordering::Relaxed);
    let _ = progress.join();
    total.latency = shared
        .live
        .latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| report::histogram());

    // Report. Ejects are grouped by code: (count, first reason, distinct reasons).
    let mut by_code: BTreeMap<u16, (u64, String, usize)> = BTreeMap::new();
    for ((code, reason), n) in &total.ejects {
        let e = by_code.entry(*code).or_insert((0, reason.clone(), 0));
        e.0 += n;
        e.2 += 1;
    }
    let t = &total;
    let lost = t.expected_window.saturating_sub(t.received_window);
    let loss_pct = if t.expected_window > 0 {
        lost as f64 * 100.0 / t.expected_window as f64
    } else {
        0.0
    };
    let ms = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
    let max_ms = t.latency.max() as f64 / 1000.0;
    // The shared report: errors by kind.
    let mut errors = Errors::default();
    for e in &t.connect_errors {
        *errors.connect.entry(e.clone()).or_default() += 1;
    }
    errors.ejects = t.ejects.clone();
    if t.closed_unexpectedly > 0 {
        errors.protocol.insert(
            "connection closed by the server without an eject".into(),
            t.closed_unexpectedly,
        );
    }
    for (k, v) in &t.errors.timeouts {
        errors.timeouts.insert(k.clone(), *v);
    }
    let rep = Report {
        clients_wanted: o.clients as u64,
        clients_connected: shared.connected.load(Ordering::Relaxed) as u64,
        clients_held: t.held,
        clients_logged_out: t.logged_out,
        window_s: o.duration,
        msgs_in: t.counters.in_window,
        msgs_out: t.counters.out_window,
        latency: t.latency.clone(),
        errors,
    };
    let per_client_kib = match (rss0, rss1) {
        (Some(a), Some(b)) if ready_at_start > 0 => {
            Some(b.saturating_sub(a) as f64 / ready_at_start as f64)
        }
        _ => None,
    };
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a) / o.duration * 100.0),
        _ => None,
    };
    let own_cpu = match (own0, own1) {
        (Some(a), Some(b)) => Some((b - a) / o.duration * 100.0),
        _ => None,
    };
    // Everything busy on the machine, in % of one core (jiffies are 1/100 s per CPU).
    // Softirq time (on loopback, mostly the TCP receive work of this benchmark's own
    // traffic) is counted by the kernel apart from any process.
    let (machine_cpu, softirq_cpu) = match (mach0, mach1) {
        (Some(a), Some(b)) => (
            Some((b.0 - a.0) as f64 / o.duration),
            Some((b.1 - a.1) as f64 / o.duration),
        ),
        _ => (None, None),
    };
    let others_cpu = machine_cpu.map(|m| {
        (m - cpu.unwrap_or(0.0) - own_cpu.unwrap_or(0.0) - softirq_cpu.unwrap_or(0.0)).max(0.0)
    });
    // CPUs of the machine (not of this process's affinity mask), as /proc/stat counts them.
    let cores = std::fs::read_to_string("/proc/stat").map_or(1, |s| {
        s.lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
    });
    let connected = shared.connected.load(Ordering::Relaxed);
    let ejected: u64 = t.ejects.values().sum();
    let opt = |v: Option<f64>, prec: usize| match v {
        Some(v) => format!("{v:.prec$}"),
        None => "null".into(),
    };
    if o.json {
        let ejects: Vec<String> = by_code
            .iter()
            .map(|(code, (n, reason, distinct))| {
                format!(
                    "{{\"code\":{code},\"count\":{n},\"reason\":{},\"distinct_reasons\":{distinct}}}",
                    json_str(reason)
                )
            })
            .collect();
        println!(
            "{{\"workload\":\"clients\",\"ca\":{},\"clients\":{},\"zone_size\":{},\"rate_hz\":{},\"warmup_s\":{},\"duration_s\":{},\"threads\":{},\"login_rate\":{},\"spread\":\"{}\",\
\"connected\":{connected},\"ready\":{ready_at_start},\"held\":{},\"ejected\":{ejected},\"closed\":{},\"connect_errors\":{},\"login_s\":{login_s:.2},\"login_p50_ms\":{:.1},\"login_p99_ms\":{:.1},\
\"updates_per_s\":{:.0},\"deliveries_per_s\":{:.0},\"expected\":{},\"received\":{},\"lost\":{lost},\"loss_pct\":{loss_pct:.4},\
\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{max_ms:.3},\
\"rss_baseline_kib\":{},\"rss_ready_kib\":{},\"rss_end_kib\":{},\"rss_per_idle_client_kib\":{},\"server_cpu_pct\":{},\"load_cpu_pct\":{},\"machine_cpu_pct\":{},\"softirq_cpu_pct\":{},\"other_cpu_pct\":{},\"cores\":{cores},\"ejects\":[{}],\"chat_rate_hz\":{},{}}}",
            json_str(&o.ca),
            o.clients,
            o.zone_size,
            o.rate,
            o.warmup,
            o.duration,
            o.threads,
            o.login_rate,
            if o.spread_zone { "zone" } else { "index" },
            t.held,
            t.closed_unexpectedly,
            t.connect_errors.len(),
            t.login.quantile(0.5) / 1000.0,
            t.login.quantile(0.99) / 1000.0,
            t.sent_window as f64 / o.duration,
            t.received_window as f64 / o.duration,
            t.expected_window,
            t.received_window,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            opt(rss0.map(|v| v as f64), 0),
            opt(rss1.map(|v| v as f64), 0),
            opt(rss2.map(|v| v as f64), 0),
            opt(per_client_kib, 2),
            opt(cpu, 1),
            opt(own_cpu, 1),
            opt(machine_cpu, 1),
            opt(softirq_cpu, 1),
            opt(others_cpu, 1),
            ejects.join(","),
            o.chat_rate,
            rep.json_fields()
        );
        return Ok(());
    }
    println!(
        "clients: {} clients against {} (zones of {}, {} Hz setPos spread by {}, {} client threads, logins at {}/s); avatars created in {create_s:.2} s",
        o.clients,
        o.ca,
        o.zone_size,
        o.rate,
        if o.spread_zone { "zone" } else { "index" },
        o.threads,
        o.login_rate
    );
    println!(
        "  login      {connected} connected, {ready_at_start} ready in {login_s:.1} s (connect to interest done: p50 {:.1} ms, p99 {:.1} ms)",
        t.login.quantile(0.5) / 1000.0,
        t.login.quantile(0.99) / 1000.0
    );
    println!(
        "  logins     {} answered by the AI",
        logins.load(Ordering::Relaxed)
    );
    println!(
        "  held       {} of {} at the end ({} ejected, {} closed without an eject, {} connect errors)",
        t.held,
        o.clients,
        ejected,
        t.closed_unexpectedly,
        t.connect_errors.len()
    );
    if let (Some(a), Some(b), Some(p)) = (rss0, rss1, per_client_kib) {
        println!(
            "  memory     server RSS {a} KiB before the clients, {b} KiB with {ready_at_start} idle clients = {p:.1} KiB per idle client{}",
            rss2.map(|r| format!(" ({r} KiB at the end of the measurement)"))
                .unwrap_or_default()
        );
    }
    println!(
        "  updates    {:.0}/s sent, {:.0} deliveries/s received ({} s measured after {} s warm-up)",
        t.sent_window as f64 / o.duration,
        t.received_window as f64 / o.duration,
        o.duration,
        o.warmup
    );
    println!(
        "  loss       expected {} deliveries (updates x (zone population - 1)), received {}, lost {lost} ({loss_pct:.3}%)",
        t.expected_window, t.received_window
    );
    println!(
        "  latency ms p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        max_ms
    );
    println!(
        "  CPU        server {}, load generator {}, softirq {}, other processes {} (% of one core while measuring; {cores} cores)",
        opt(cpu, 0),
        opt(own_cpu, 0),
        opt(softirq_cpu, 0),
        opt(others_cpu, 0)
    );
    if t.enter_mismatch > 0 {
        println!(
            "  NOTE       {} clients saw a different number of objects than their zone holds",
            t.enter_mismatch
        );
    }
    for (code, (n, reason, distinct)) in &by_code {
        let more = if *distinct > 1 {
            format!(" (and {} other reasons)", distinct - 1)
        } else {
            String::new()
        };
        println!("  EJECT      {n} x code {code}: {reason}{more}");
    }
    let mut errs: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &t.connect_errors {
        *errs.entry(e.as_str()).or_default() += 1;
    }
    for (e, n) in errs {
        println!("  ERROR      {n} x {e}");
    }
    print!("{}", rep.text());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Hist;

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q);
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.max, 100_000);
        assert_eq!(h.quantile(0.0), 1.0);
        let mut e = Hist::new();
        e.record(u64::MAX / 2);
        assert!(e.quantile(1.0) > 0.0);
    }
}

//! `otp-load toon2003-clients`: many 2003 Toontown clients at once against a Toontown2003
//! listener (T threads, each a mio poll loop over its share of the sockets), for load. Each
//! client i logs in with the Open play token `<prefix><i>`, picks the account's first toon or
//! makes and names one, chooses it (CLIENT_SET_AVATAR), enters the first district (CLIENT_SET_SHARD), walks
//! into zone 2000 + i / M (CLIENT_SET_ZONE), then sends setX (a move) and setChat (a chat line whose
//! text carries the send time in microseconds) at the given rates; the other toons of the zone
//! take the chat delivery latency. At the end each client takes its toon out (CLIENT_SET_AVATAR 0)
//! and sends CLIENT_DISCONNECT_2003.

use crate::clients::{flush, read_datagrams};
use crate::report::{self, Counters, Errors, Live, Report};
use hdrhistogram::Histogram;
use otp_wire::toontown2003::*;
use otp_wire::{Deframer, Reader, Writer};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "\
    otp-load toon2003-clients --ca HOST:PORT --dc FILE [--hash H] [--version V]
                             [--clients N] [--zone-size M] [--login-rate L]
                             [--move-rate R] [--chat-rate C] [--duration SECS]
                             [--warmup SECS] [--threads T] [--token-prefix P]
                             [--first-zone Z] [--json]

toon2003-clients: N (default 100) 2003 clients against a Toontown2003 listener with Open
tokens and a district up (scripts/fake-clients starts both). They log in at L per second
(default 200) with tokens P<i> (default `fake-`), pick or make and name a toon, CLIENT_SET_AVATAR,
CLIENT_SET_SHARD into the first district and CLIENT_SET_ZONE into Z + i/M (default 2000, zones of M = 50);
then each sends setX R times a second (default 1) and setChat C times a second (default 0.2;
the text carries the send time, so the zone's other toons take the delivery latency), for
--duration seconds (default 30) measured after --warmup (default 2), and logs out (CLIENT_SET_AVATAR
0, CLIENT_DISCONNECT_2003). Same report, progress line and JSON keys as `clients`; the JSON adds
\"workload\":\"toon2003-clients\". Exit code 1 if any client was not held to the end.
";

// The 2003 client protocol's message types (docs/toontown-2003-protocol-notes.md).
/// A DNA net string, as the scripted client sends.
const DNA: &str = "t\x00\x01\x00\x01\x00\x01\x00\x01\x03\x03\x00\x03\x03\x03";
/// How long the clients keep collecting deliveries after the last measured message is sent.
const GRACE: Duration = Duration::from_secs(1);
/// How long one step of the login may take.
const STEP_TIMEOUT_US: u64 = 30_000_000;

struct Opts {
    ca: String,
    dc: String,
    hash: u32,
    version: String,
    clients: u32,
    zone_size: u32,
    login_rate: f64,
    move_rate: f64,
    chat_rate: f64,
    duration: f64,
    warmup: f64,
    threads: usize,
    prefix: String,
    first_zone: u32,
    json: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        ca: "127.0.0.1:7198".into(),
        dc: String::new(),
        hash: 3_005_460_305,
        version: "sv1.0.6.9".into(),
        clients: 100,
        zone_size: 50,
        login_rate: 200.0,
        move_rate: 1.0,
        chat_rate: 0.2,
        duration: 30.0,
        warmup: 2.0,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        prefix: "fake-".into(),
        first_zone: 2000,
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
            "--ca" => o.ca = val()?,
            "--dc" => o.dc = val()?,
            "--hash" => o.hash = num(a, val()?)?,
            "--version" => o.version = val()?,
            "--clients" => o.clients = num(a, val()?)?,
            "--zone-size" => o.zone_size = num(a, val()?)?,
            "--login-rate" => o.login_rate = num(a, val()?)?,
            "--move-rate" | "--rate" => o.move_rate = num(a, val()?)?,
            "--chat-rate" => o.chat_rate = num(a, val()?)?,
            "--duration" => o.duration = num(a, val()?)?,
            "--warmup" => o.warmup = num(a, val()?)?,
            "--threads" => o.threads = num(a, val()?)?,
            "--token-prefix" => o.prefix = val()?,
            "--first-zone" => o.first_zone = num(a, val()?)?,
            "--json" => o.json = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.dc.is_empty() {
        return Err("--dc is required (tests/dc/toon.dc)".into());
    }
    if o.clients == 0 || o.zone_size == 0 || o.threads == 0 {
        return Err("--clients, --zone-size and --threads must be at least 1".into());
    }
    if o.first_zone + o.clients / o.zone_size > u16::MAX as u32 {
        return Err("zones past 65535: raise --zone-size or lower --first-zone".into());
    }
    if !(o.move_rate >= 0.0
        && o.chat_rate >= 0.0
        && o.duration > 0.0
        && o.warmup >= 0.0
        && o.login_rate > 0.0)
    {
        return Err("--duration and --login-rate must be positive, the rates not negative".into());
    }
    o.threads = o.threads.min(o.clients as usize);
    Ok(o)
}

struct Shared {
    epoch: Instant,
    ready: AtomicUsize,
    failed: AtomicUsize,
    /// When the moves and chat start, microseconds since `epoch`; u64::MAX = not yet.
    start_us: AtomicU64,
    stop: AtomicBool,
    live: Arc<Live>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Connecting,
    Login,
    Shards,
    Avatars,
    Create,
    Name,
    SetAvatar,
    SetShard,
    /// CLIENT_SET_ZONE sent; waiting for its CLIENT_GET_STATE_RESP and CLIENT_DONE_SET_ZONE_RESP.
    SetZone,
    Ready,
    LoggingOut,
    Gone,
}

struct Client {
    sock: Option<mio::net::TcpStream>,
    df: Deframer,
    st: State,
}

/// A client's state apart from its socket and read buffer.
struct State {
    index: u32,
    phase: Phase,
    out: Vec<u8>,
    /// When the current login step began (for its timeout).
    step_us: u64,
    district: u32,
    avatar: u32,
}

/// The DC ids the clients use.
#[derive(Clone, Copy)]
struct Fields {
    set_x: u16,
    set_chat: u16,
}

struct ThreadResult {
    latency: Histogram<u64>,
    counters: Counters,
    errors: Errors,
    connected: u64,
    held: u64,
    logged_out: u64,
    expected_window: u64,
    received_window: u64,
}

struct Ctx<'a> {
    o: &'a Opts,
    shared: &'a Shared,
    f: Fields,
    window: (u64, u64),
    in_window: bool,
    r: &'a mut ThreadResult,
}

fn zone_of(o: &Opts, i: u32) -> u16 {
    (o.first_zone + i / o.zone_size) as u16
}

fn zone_population(o: &Opts, i: u32) -> u32 {
    let first = (i / o.zone_size) * o.zone_size;
    o.zone_size.min(o.clients - first)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The chat text: "t" and the send time in microseconds, written without allocating.
fn chat_text(buf: &mut [u8; 24], us: u64) -> &str {
    let mut digits = [0u8; 20];
    let (mut n, mut v) = (0, us);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf[0] = b't';
    for k in 0..n {
        buf[1 + k] = digits[n - 1 - k];
    }
    std::str::from_utf8(&buf[..1 + n]).unwrap_or("t0")
}

fn parse_chat(text: &[u8]) -> Option<u64> {
    let digits = text.strip_prefix(b"t")?;
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    Some(v)
}

impl State {
    fn send(&mut self, msgtype: u16, f: impl FnOnce(&mut Writer)) {
        let mut w = Writer::client(&mut self.out, msgtype);
        f(&mut w);
        w.finish_bounded();
    }

    fn step(&mut self, phase: Phase, cx: &Ctx) {
        self.phase = phase;
        self.step_us = cx.shared.now_us();
    }

    /// One datagram body (msgtype + payload). Err = the client is finished (true: ejected).
    #[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
    fn on_datagram(&mut self, b: &[u8], cx: &mut Ctx) -> Result<(), bool> {
        let Some(t) = u16_at(b, 0) else {
            return Ok(());
        };
        cx.r.counters.msgs_in += 1;
        if cx.in_window {
            cx.r.counters.in_window += 1;
        }
        let bad = |cx: &mut Ctx, what: &str| {
            cx.r.errors.protocol(&cx.shared.live, what);
            Err(true)
        };
        match (t, self.phase) {
            (CLIENT_GO_GET_LOST, _) => {
                let mut r = Reader::new(&b[2..]);
                let code = r.u16().unwrap_or(0);
                let reason = r.string().unwrap_or("(no reason)").to_owned();
                cx.r.errors.eject(&cx.shared.live, code, reason);
                return Err(true);
            }
            (CLIENT_OBJECT_UPDATE_FIELD, Phase::Ready | Phase::LoggingOut) => {
                if u16_at(b, 6) != Some(cx.f.set_chat) {
                    return Ok(());
                }
                let mut r = Reader::new(&b[8..]);
                let Some(sent) = r.string().ok().and_then(|s| parse_chat(s.as_bytes())) else {
                    return Ok(());
                };
                if sent >= cx.window.0 && sent < cx.window.1 {
                    cx.r.received_window += 1;
                    let now = cx.shared.now_us();
                    cx.r.latency
                        .saturating_record(now.saturating_sub(sent).max(1));
                }
            }
            (CLIENT_LOGIN_2_RESP, Phase::Login) => {
                if b.get(2) != Some(&0) {
                    let reason = Reader::new(&b[3..]).string().unwrap_or("").to_owned();
                    return bad(cx, &format!("login refused: {reason}"));
                }
                self.send(CLIENT_GET_SHARD_LIST, |_| {});
                self.step(Phase::Shards, cx);
            }
            (CLIENT_GET_SHARD_LIST_RESP, Phase::Shards) => {
                if u16_at(b, 2).unwrap_or(0) == 0 {
                    return bad(cx, "no district is up (is the AI running?)");
                }
                self.district = u32_at(b, 4).unwrap_or(0);
                self.send(CLIENT_GET_AVATARS, |_| {});
                self.step(Phase::Avatars, cx);
            }
            (CLIENT_GET_AVATARS_RESP, Phase::Avatars) => {
                if u16_at(b, 3).unwrap_or(0) > 0 {
                    self.avatar = u32_at(b, 5).unwrap_or(0);
                    let d = self.avatar;
                    self.send(CLIENT_SET_AVATAR, |w| {
                        w.u32(d);
                    });
                    self.step(Phase::SetAvatar, cx);
                } else {
                    self.send(CLIENT_CREATE_AVATAR, |w| {
                        w.u16(0).string(DNA).u8(0);
                    });
                    self.step(Phase::Create, cx);
                }
            }
            (CLIENT_CREATE_AVATAR_RESP, Phase::Create) => {
                if b.get(4) != Some(&0) {
                    return bad(cx, "CLIENT_CREATE_AVATAR refused");
                }
                self.avatar = u32_at(b, 5).unwrap_or(0);
                let (d, i) = (self.avatar, self.index);
                // A typed name; letters only ("Fake Toon Bcd"), since the digits of a
                // number would be fine too but read oddly as a toon's name.
                let mut name = *b"Fake Toon aaaa";
                let mut v = i;
                for k in (10..14).rev() {
                    name[k] = b'a' + (v % 26) as u8;
                    v /= 26;
                }
                name[10] = name[10].to_ascii_uppercase();
                let name = std::str::from_utf8(&name).unwrap_or("Fake Toon");
                self.send(CLIENT_SET_WISHNAME, |w| {
                    w.u32(d).string(name);
                });
                self.step(Phase::Name, cx);
            }
            (CLIENT_SET_WISHNAME_RESP, Phase::Name) => {
                let d = self.avatar;
                self.send(CLIENT_SET_AVATAR, |w| {
                    w.u32(d);
                });
                self.step(Phase::SetAvatar, cx);
            }
            (CLIENT_GET_AVATAR_DETAILS_RESP, Phase::SetAvatar) => {
                let d = self.district;
                self.send(CLIENT_SET_SHARD, |w| {
                    w.u32(d);
                });
                self.step(Phase::SetShard, cx);
            }
            (CLIENT_GET_STATE_RESP, Phase::SetShard) => {
                let z = zone_of(cx.o, self.index);
                self.send(CLIENT_SET_ZONE, |w| {
                    w.u16(z);
                });
                self.step(Phase::SetZone, cx);
            }
            (CLIENT_DONE_SET_ZONE_RESP, Phase::SetZone)
                if u16_at(b, 2) == Some(zone_of(cx.o, self.index)) =>
            {
                self.phase = Phase::Ready;
                cx.shared.ready.fetch_add(1, Ordering::Relaxed);
                cx.shared.live.held.fetch_add(1, Ordering::Relaxed);
            }
            (
                CLIENT_GET_STATE_RESP
                | CLIENT_CREATE_OBJECT_REQUIRED
                | CLIENT_CREATE_OBJECT_REQUIRED_OTHER,
                _,
            ) => {}
            _ => {}
        }
        Ok(())
    }
}

struct Worker {
    clients: Vec<Client>,
    poll: mio::Poll,
    addr: SocketAddr,
}

impl Worker {
    fn finish(&mut self, k: usize, cx: &mut Ctx, ejected: bool) {
        let c = &mut self.clients[k];
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        match c.st.phase {
            Phase::Gone => return,
            Phase::Ready => {
                cx.shared.live.held.fetch_sub(1, Ordering::Relaxed);
                if !ejected {
                    cx.r.errors.protocol(
                        &cx.shared.live,
                        "connection closed by the server without CLIENT_GO_GET_LOST",
                    );
                }
            }
            Phase::LoggingOut => {
                if !ejected {
                    cx.r.logged_out += 1;
                }
            }
            _ => {
                cx.shared.failed.fetch_add(1, Ordering::Relaxed);
                if !ejected {
                    cx.r.errors.protocol(
                        &cx.shared.live,
                        "connection closed by the server during login",
                    );
                }
            }
        }
        c.st.phase = Phase::Gone;
        c.st.out = Vec::new();
    }

    fn start(&mut self, k: usize, cx: &mut Ctx) {
        let c = &mut self.clients[k];
        c.st.step_us = cx.shared.now_us();
        let err = match mio::net::TcpStream::connect(self.addr) {
            Ok(mut s) => match self.poll.registry().register(
                &mut s,
                mio::Token(k),
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            ) {
                Ok(()) => {
                    c.sock = Some(s);
                    c.st.phase = Phase::Connecting;
                    return;
                }
                Err(e) => format!("register: {e}"),
            },
            Err(e) => format!("connect: {e}"),
        };
        cx.r.errors.connect(&cx.shared.live, err);
        cx.shared.failed.fetch_add(1, Ordering::Relaxed);
        c.st.phase = Phase::Gone;
    }

    fn on_event(&mut self, k: usize, ev: &mio::event::Event, cx: &mut Ctx) {
        let c = &mut self.clients[k];
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        if c.st.phase == Phase::Connecting {
            if let Ok(Some(e)) | Err(e) = sock.take_error() {
                cx.r.errors
                    .connect(&cx.shared.live, format!("connect: {e}"));
                return self.finish(k, cx, true);
            }
            match sock.peer_addr() {
                Ok(_) => {
                    let _ = sock.set_nodelay(true);
                    cx.r.connected += 1;
                    cx.shared.live.connected.fetch_add(1, Ordering::Relaxed);
                    let token = format!("{}{}", cx.o.prefix, c.st.index);
                    let (version, hash) = (cx.o.version.as_str(), cx.o.hash);
                    c.st.send(CLIENT_LOGIN_2, |w| {
                        w.string(&token).string(version).u32(hash).i32(2);
                    });
                    c.st.step(Phase::Login, cx);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    cx.r.errors
                        .connect(&cx.shared.live, format!("connect: {e}"));
                    return self.finish(k, cx, true);
                }
            }
        }
        let mut dead = None;
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            let st = &mut c.st;
            dead = read_datagrams(
                sock,
                &mut c.df,
                ev.is_read_closed() || ev.is_error(),
                |d| match d {
                    Some(body) => st.on_datagram(body, cx),
                    None => {
                        cx.r.errors.protocol(&cx.shared.live, "bad framing");
                        Err(true)
                    }
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

    /// setX (move) or setChat (chat) on the client's toon.
    fn send_update(&mut self, k: usize, chat: bool, cx: &mut Ctx) {
        let c = &mut self.clients[k];
        if c.st.phase != Phase::Ready {
            return;
        }
        let Some(sock) = c.sock.as_mut() else {
            return;
        };
        let now = cx.shared.now_us();
        let mut w = Writer::client(&mut c.st.out, CLIENT_OBJECT_UPDATE_FIELD);
        if chat {
            let mut buf = [0u8; 24];
            w.u32(c.st.avatar)
                .u16(cx.f.set_chat)
                .string(chat_text(&mut buf, now))
                .u8(0);
        } else {
            w.u32(c.st.avatar)
                .u16(cx.f.set_x)
                .i16(((now / 1000) % 2000) as i16 - 1000);
        }
        w.finish_bounded();
        cx.r.counters.msgs_out += 1;
        if now >= cx.window.0 && now < cx.window.1 {
            cx.r.counters.out_window += 1;
            if chat {
                cx.r.expected_window += (zone_population(cx.o, c.st.index) - 1) as u64;
            }
        }
        if flush(sock, &mut c.st.out).is_err() {
            self.finish(k, cx, false);
        }
    }

    /// Login steps that took too long.
    fn timeouts(&mut self, now: u64, cx: &mut Ctx) {
        for k in 0..self.clients.len() {
            let c = &self.clients[k];
            if matches!(
                c.st.phase,
                Phase::NotStarted | Phase::Ready | Phase::LoggingOut | Phase::Gone
            ) || now < c.st.step_us + STEP_TIMEOUT_US
            {
                continue;
            }
            let what = format!("no answer in {:?}", c.st.phase);
            cx.r.errors.timeout(&cx.shared.live, &what);
            self.finish(k, cx, true);
        }
    }

    /// CLIENT_SET_AVATAR 0 and CLIENT_DISCONNECT_2003 from every ready client.
    fn logout(&mut self, cx: &mut Ctx) {
        for k in 0..self.clients.len() {
            let c = &mut self.clients[k];
            if c.st.phase != Phase::Ready {
                continue;
            }
            let Some(sock) = c.sock.as_mut() else {
                continue;
            };
            c.st.send(CLIENT_SET_AVATAR, |w| {
                w.u32(0);
            });
            c.st.send(CLIENT_DISCONNECT_2003, |_| {});
            cx.r.counters.msgs_out += 2;
            cx.shared.live.held.fetch_sub(1, Ordering::Relaxed);
            c.st.phase = Phase::LoggingOut;
            if flush(sock, &mut c.st.out).is_err() {
                self.finish(k, cx, true);
            }
        }
    }
}

#[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
fn client_thread(
    o: &Opts,
    shared: &Shared,
    t: usize,
    addr: SocketAddr,
    f: Fields,
    login_start_us: u64,
) -> Result<ThreadResult, String> {
    let mut r = ThreadResult {
        latency: report::histogram(),
        counters: Counters::default(),
        errors: Errors::default(),
        connected: 0,
        held: 0,
        logged_out: 0,
        expected_window: 0,
        received_window: 0,
    };
    let mut wk = Worker {
        clients: (t as u32..o.clients)
            .step_by(o.threads)
            .map(|index| Client {
                sock: None,
                df: Deframer::new(4096, otp_wire::MAX_DATAGRAM_BODY),
                st: State {
                    index,
                    phase: Phase::NotStarted,
                    out: Vec::new(),
                    step_us: 0,
                    district: 0,
                    avatar: 0,
                },
            })
            .collect(),
        poll: mio::Poll::new().map_err(|e| e.to_string())?,
        addr,
    };
    let n = wk.clients.len();
    let mut events = mio::Events::with_capacity(1024);
    let connect_at = |i: u32| login_start_us + (i as f64 / o.login_rate * 1e6) as u64;
    // Sends: client k's move (chat) is due at start + round * period + its offset, the
    // clients spread evenly over the period in index order.
    let period = |rate: f64| {
        if rate > 0.0 {
            (1e6 / rate) as u64
        } else {
            u64::MAX / 4
        }
    };
    let (move_p, chat_p) = (period(o.move_rate), period(o.chat_rate));
    let due = |p: u64, start: u64, round: u64, k: usize| {
        start
            .saturating_add(round.saturating_mul(p))
            .saturating_add((wk_index(k, t, o) as u128 * p as u128 / o.clients as u128) as u64)
    };
    let mut scheds = [(move_p, 0usize, 0u64, false), (chat_p, 0usize, 0u64, true)];
    let mut window = (u64::MAX, u64::MAX);
    let mut started = false;
    let mut next_connect = 0usize;
    let (mut last_publish, mut last_timeouts) = (0u64, 0u64);
    while !shared.stop.load(Ordering::Relaxed) {
        let now = shared.now_us();
        if now >= last_publish + 250_000 {
            r.counters.publish(&shared.live);
            shared.live.merge(&mut r.latency);
            last_publish = now;
        }
        let s = shared.start_us.load(Ordering::Acquire);
        if !started && s != u64::MAX {
            started = true;
            let ws = s + (o.warmup * 1e6) as u64;
            window = (ws, ws + (o.duration * 1e6) as u64);
        }
        let mut cx = Ctx {
            o,
            shared,
            f,
            window,
            in_window: now >= window.0 && now < window.1,
            r: &mut r,
        };
        if now >= last_timeouts + 1_000_000 {
            wk.timeouts(now, &mut cx);
            last_timeouts = now;
        }
        while next_connect < n && now >= connect_at(wk.clients[next_connect].st.index) {
            wk.start(next_connect, &mut cx);
            next_connect += 1;
        }
        let mut wake = now + 10_000;
        if next_connect < n {
            wake = wake.min(connect_at(wk.clients[next_connect].st.index));
        }
        if started {
            for (p, k, round, chat) in scheds.iter_mut() {
                if (*chat && o.chat_rate == 0.0) || (!*chat && o.move_rate == 0.0) {
                    continue;
                }
                loop {
                    let d = due(*p, s, *round, *k);
                    if d >= window.1 {
                        break;
                    }
                    if d > now {
                        wake = wake.min(d);
                        break;
                    }
                    wk.send_update(*k, *chat, &mut cx);
                    *k += 1;
                    if *k == n {
                        *k = 0;
                        *round += 1;
                    }
                }
            }
        }
        let timeout = Duration::from_micros(wake.saturating_sub(shared.now_us()));
        if let Err(e) = wk.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            wk.on_event(ev.token().0, ev, &mut cx);
        }
    }
    let mut cx = Ctx {
        o,
        shared,
        f,
        window,
        in_window: false,
        r: &mut r,
    };
    cx.r.held = wk
        .clients
        .iter()
        .filter(|c| c.st.phase == Phase::Ready && c.sock.is_some())
        .count() as u64;
    // Clients that never got ready: a timeout each.
    for k in 0..n {
        let p = wk.clients[k].st.phase;
        if !matches!(p, Phase::Ready | Phase::Gone) {
            let what = format!("not ready by the end ({p:?})");
            cx.r.errors.timeout(&shared.live, &what);
            wk.finish(k, &mut cx, true);
        }
    }
    wk.logout(&mut cx);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = wk
            .clients
            .iter()
            .filter(|c| c.st.phase == Phase::LoggingOut)
            .count();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            for _ in 0..left {
                cx.r.errors.timeout(
                    &shared.live,
                    "the server did not close after CLIENT_DISCONNECT_2003",
                );
            }
            break;
        }
        if let Err(e) = wk.poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            wk.on_event(ev.token().0, ev, &mut cx);
        }
    }
    r.counters.publish(&shared.live);
    shared.live.merge(&mut r.latency);
    Ok(r)
}

/// The client index of thread t's k-th client.
fn wk_index(k: usize, t: usize, o: &Opts) -> u32 {
    (t + k * o.threads) as u32
}

#[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let epoch = Instant::now();
    let dc = crate::load_dc(std::path::Path::new(&o.dc))?;
    dc.class_by_name("DistributedToon")
        .ok_or(format!("{}: no class DistributedToon", o.dc))?;
    // The 2003 client's own numbers, read from the DC text by the test kit's reader (not by
    // otp-dc, which numbers the server's side).
    let text = std::fs::read_to_string(&o.dc).map_err(|e| format!("{}: {e}", o.dc))?;
    let numbers = otp_testkit::dc2003::client_numbers_2003(&text);
    let field = |n: &str| {
        numbers
            .get(&("DistributedToon".to_string(), n.to_string()))
            .copied()
            .ok_or(format!("{}: no field DistributedToon.{n}", o.dc))
    };
    let f = Fields {
        set_x: field("setX")?,
        set_chat: field("setChat")?,
    };
    let addr =
        o.ca.to_socket_addrs()
            .map_err(|e| format!("--ca {}: {e}", o.ca))?
            .next()
            .ok_or(format!("--ca {}: no address", o.ca))?;
    let shared = Arc::new(Shared {
        epoch,
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        start_us: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
        live: Live::new(),
    });
    let progress = report::progress(shared.live.clone(), o.clients as u64);
    let o = Arc::new(o);
    let login_start_us = shared.now_us() + 10_000;
    let t_login = Instant::now();
    let handles: Vec<_> = (0..o.threads)
        .map(|t| {
            let (o, shared) = (o.clone(), shared.clone());
            std::thread::spawn(move || client_thread(&o, &shared, t, addr, f, login_start_us))
        })
        .collect();
    let n = o.clients as usize;
    let login_deadline = t_login
        + Duration::from_secs_f64(n as f64 / o.login_rate)
        + Duration::from_micros(STEP_TIMEOUT_US * 2);
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < n
        && Instant::now() < login_deadline
        && !handles.iter().any(|h| h.is_finished())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let login_s = t_login.elapsed().as_secs_f64();
    let start = shared.now_us() + 100_000;
    shared.start_us.store(start, Ordering::Release);
    let end = start + ((o.warmup + o.duration) * 1e6) as u64 + GRACE.as_micros() as u64;
    while shared.now_us() < end && !handles.iter().any(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut total = ThreadResult {
        latency: report::histogram(),
        counters: Counters::default(),
        errors: Errors::default(),
        connected: 0,
        held: 0,
        logged_out: 0,
        expected_window: 0,
        received_window: 0,
    };
    for h in handles {
        let r = h.join().map_err(|_| "a client thread panicked")??;
        total.counters.in_window += r.counters.in_window;
        total.counters.out_window += r.counters.out_window;
        total.errors.merge(r.errors);
        total.connected += r.connected;
        total.held += r.held;
        total.logged_out += r.logged_out;
        total.expected_window += r.expected_window;
        total.received_window += r.received_window;
    }
    shared.live.stop.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let latency = shared
        .live
        .latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| report::histogram());
    let t = total;
    let lost = t.expected_window.saturating_sub(t.received_window);
    let rep = Report {
        clients_wanted: o.clients as u64,
        clients_connected: t.connected,
        clients_held: t.held,
        clients_logged_out: t.logged_out,
        window_s: o.duration,
        msgs_in: t.counters.in_window,
        msgs_out: t.counters.out_window,
        latency,
        errors: t.errors,
    };
    if o.json {
        println!(
            "{{\"workload\":\"toon2003-clients\",\"ca\":{},\"zone_size\":{},\"login_rate\":{},\"move_rate_hz\":{},\"chat_rate_hz\":{},\"warmup_s\":{},\"login_s\":{login_s:.2},\"chat_expected\":{},\"chat_received\":{},\"chat_lost\":{lost},{}}}",
            report::json_str(&o.ca),
            o.zone_size,
            o.login_rate,
            o.move_rate,
            o.chat_rate,
            o.warmup,
            t.expected_window,
            t.received_window,
            rep.json_fields()
        );
    } else {
        println!(
            "toon2003-clients: {} clients against {} (zones of {} from {}, {} threads, logins at {}/s, setX {} Hz, setChat {} Hz)",
            o.clients, o.ca, o.zone_size, o.first_zone, o.threads, o.login_rate, o.move_rate, o.chat_rate
        );
        println!(
            "  login      {} ready in {login_s:.1} s",
            shared.ready.load(Ordering::Relaxed)
        );
        println!(
            "  chat       expected {} deliveries, received {}, lost {lost} ({} s measured after {} s warm-up)",
            t.expected_window, t.received_window, o.duration, o.warmup
        );
        print!("{}", rep.text());
    }
    if rep.clients_held < rep.clients_wanted {
        return Err(format!(
            "{} of {} clients held",
            rep.clients_held, rep.clients_wanted
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_text_round_trips() {
        let mut b = [0u8; 24];
        for v in [0, 7, 1_234_567, u64::MAX] {
            assert_eq!(parse_chat(chat_text(&mut b, v).as_bytes()), Some(v));
        }
        assert_eq!(parse_chat(b"hello"), None);
    }
}

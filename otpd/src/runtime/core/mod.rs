//! One core thread: its event loop, the connections and roles it owns, and the I/O around its
//! `md::router::Router` (which holds its subscriptions and the datagrams awaiting lookups): the
//! core feeds it what it reads and delivers what it answers. Core 0 also accepts connections and
//! owns the upstream link.

use super::conn::{Conn, ConnKind};
use super::upstream::Upstream;
use super::{Batch, CoreMsg, Shared};
use crate::md::link_name;
use crate::md::participant::{self, Effect, Verdict};
use crate::md::router::{self, Outbox, Router};
use crate::md::{home_core, Pid};
use crate::roles::{Output, Role, Subscription};
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use otp_wire::msgtypes::*;
use otp_wire::{FrameError, InternalDatagram, Recipients, RoutableHeader, Writer};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client connections: accepting, reading, sessions, writing (the same `Core`, by concern).
mod client_io;
/// TLS on MD links: participants on a TLS-enabled listener, and the upstream link.
mod md_tls_io;

pub(super) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Client listeners take tokens 2..FIRST_CONN.
const FIRST_CLIENT_LISTENER: usize = 2;
const FIRST_CONN: usize = 16;
pub(super) const MAX_CLIENT_LISTENERS: usize = FIRST_CONN - FIRST_CLIENT_LISTENER;
/// Reads per connection per loop turn before others get a go.
const READS_PER_TURN: usize = 4;
/// Slots at and above this are in-process roles, not connections.
const ROLE_SLOT_BASE: usize = 0x8000_0000;
/// Rounds of role-to-role delivery handled in one loop turn before sockets get a go.
const ROLE_ROUNDS_PER_TURN: usize = 16;
/// How often roles are given the time.
const ROLE_TICK: Duration = Duration::from_millis(50);
/// The text of eject 130 (`CLIENT_DISCONNECT_CLUSTER_LOST`).
const CLUSTER_LOST_REASON: &str =
    "Lost contact with the cluster; your objects may have been removed. Please reconnect.";

/// A role instance hosted by this core, and the datagrams delivered to it this turn.
struct HostedRole {
    role: Box<dyn Role>,
    pid: Pid,
    inbox: Vec<u8>,
    /// The role's worker thread, if it has one: its bounded queue, and what did not fit yet.
    job_tx: Option<crossbeam_channel::Sender<crate::roles::AnyJob>>,
    jobs_waiting: VecDeque<crate::roles::AnyJob>,
}

pub(crate) struct Core {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    inbox: Receiver<Batch>,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    generations: Vec<u32>,
    /// The routing protocol's state on this core; taken out while it runs with this core as
    /// its host (see `with_router`).
    router: Option<Box<Router>>,
    /// What this core sends the others this turn.
    outbox: Outbox<CoreMsg>,
    ready: Vec<usize>,
    dirty: Vec<usize>,
    /// Datagrams queued to this core's clients, and the socket writes that carried them
    /// (published as `CoreStats::client_deliveries`, `client_socket_writes`).
    client_deliveries: u64,
    client_socket_writes: u64,
    /// Clients whose output waits to be coalesced, by when it is due (`flush_delay_ms`).
    deferred: BinaryHeap<Reverse<(Instant, usize)>>,
    next_accept_core: usize,
    upstream: Option<Upstream>,
    el_socket: Option<UdpSocket>,
    to_close: Vec<usize>,
    roles: Vec<HostedRole>,
    roles_waiting: bool,
    next_tick: Instant,
    accept_retry_at: Option<Instant>,
    /// A descriptor kept to shed a waiting client when accept runs out of them.
    pub(super) spare: super::fds::Spare,
    pub(super) descriptor_warn_at: Instant,
    refused: u64,
    refusal_log_at: Instant,
    /// Participants refused for `messagedirector.allow` since the last warning, and when the
    /// next may be logged.
    not_allowed: u64,
    not_allowed_log_at: Instant,
    /// When the next "fired post-remove dropped" warning may be logged.
    owed_warn_at: Instant,
    /// `"daemon": name`, MessagePack, added to this process's events.
    daemon_field: Vec<u8>,
    /// Core 0: the client listeners, with their ClientAgent's index.
    client_listeners: Vec<(TcpListener, usize)>,
    /// This core has begun the clean stop (see `Runtime::begin_stop`).
    stopped: bool,
    /// Client connections with internal datagrams waiting in their inbox.
    client_waiting: Vec<usize>,
    /// Client connections this core owns, and when their timers are next looked at.
    clients: usize,
    next_client_scan: Instant,
    /// Read buffer for client sockets (their bytes may go through TLS or a PROXY header).
    client_scratch: Vec<u8>,
    /// Client jobs the worker's full queue refused: answered `Unavailable` next turn.
    jobs_refused: Vec<(usize, Pid, u32)>,
    session_out: crate::clientagent::session::SessionOut,
    /// TLS handshakes under way (`md_tls_io`): when each must be done by, oldest first.
    tls_deadlines: VecDeque<(Instant, usize, Pid)>,
    /// TLS refusals since the last warning, and when the next may be logged.
    tls_refused: u64,
    tls_refused_log_at: Instant,
    /// How busy this core is, and the write spacing it asks of its clients under load.
    pub(super) pacing: super::pacing::Pacing,
}

enum Flow {
    Continue,
    Close(String),
}

impl Core {
    #[allow(clippy::too_many_lines)] // TODO: split (one field per line of a large struct)
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        inbox: Receiver<Batch>,
        mut listener: Option<TcpListener>,
        mut client_listeners: Vec<(TcpListener, usize)>,
        roles: Vec<Box<dyn Role>>,
    ) -> io::Result<Core> {
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        for (i, (l, _)) in client_listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(FIRST_CLIENT_LISTENER + i), Interest::READABLE)?;
        }
        let cores = shared.cores;
        let upstream = if id == 0 { upstream_of(&shared) } else { None };
        let el_socket = match shared.eventlogger {
            Some(addr) => {
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                let s = UdpSocket::bind(bind)?;
                s.set_nonblocking(true)?;
                s.connect(addr)?;
                Some(s)
            }
            None => None,
        };
        let mut core = Core {
            id,
            poll,
            inbox,
            listener,
            conns: Slab::new(),
            generations: Vec::new(),
            router: Some(Box::new(Router::new(id, cores, shared.upstream.is_some()))),
            outbox: Outbox::new(id, cores),
            ready: Vec::new(),
            dirty: Vec::new(),
            client_deliveries: 0,
            client_socket_writes: 0,
            deferred: BinaryHeap::new(),
            next_accept_core: 0,
            upstream,
            el_socket,
            to_close: Vec::new(),
            roles: Vec::new(),
            roles_waiting: false,
            next_tick: Instant::now() + ROLE_TICK,
            accept_retry_at: None,
            spare: super::fds::Spare::new(),
            descriptor_warn_at: Instant::now(),
            refused: 0,
            refusal_log_at: Instant::now(),
            not_allowed: 0,
            not_allowed_log_at: Instant::now(),
            owed_warn_at: Instant::now(),
            daemon_field: {
                let mut f = Vec::new();
                let _ = rmp::encode::write_str(&mut f, "daemon");
                let _ = rmp::encode::write_str(&mut f, &shared.config.name);
                f
            },
            client_listeners,
            stopped: false,
            client_waiting: Vec::new(),
            clients: 0,
            next_client_scan: Instant::now(),
            client_scratch: vec![0; 16 * 1024],
            jobs_refused: Vec::new(),
            session_out: Default::default(),
            tls_deadlines: VecDeque::new(),
            tls_refused: 0,
            tls_refused_log_at: Instant::now(),
            pacing: super::pacing::Pacing::new(Instant::now()),
            shared,
        };
        for (i, mut role) in roles.into_iter().enumerate() {
            let pid = Pid::new(id, 0, ROLE_SLOT_BASE + i);
            log::debug!("core {id}: hosting role {} as {pid}", role.name());
            let job_tx = role
                .take_worker()
                .map(|worker| core.spawn_worker(i, role.name(), worker, role.worker_limits()))
                .transpose()?;
            core.roles.push(HostedRole {
                role,
                pid,
                inbox: Vec::new(),
                job_tx,
                jobs_waiting: VecDeque::new(),
            });
        }
        Ok(core)
    }

    #[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
    pub(super) fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let spin = Duration::from_micros(self.shared.config.messagedirector.idle_spin_us);
        let mut last_work = Instant::now();
        if self.upstream.is_some() {
            self.upstream_connect();
        }
        let now = Instant::now();
        for i in 0..self.roles.len() {
            let mut out = Output::default();
            self.roles[i].role.start(now, &mut out);
            self.apply_role_output(i, &mut out);
        }
        loop {
            if !self.stopped && self.shared.stopping.load(Ordering::Relaxed) {
                self.begin_stop();
            }
            self.drain_inbox();
            self.process_ready();
            self.finish_turn();
            if self.stopped {
                self.report_idle();
            }

            let busy = self.roles_waiting
                || !self.client_waiting.is_empty()
                || !self.jobs_refused.is_empty()
                || (!self.ready.is_empty() && !self.held_back())
                || !self.inbox.is_empty()
                || self.outbox.is_stalled();
            if busy || !events.is_empty() {
                last_work = Instant::now();
            }
            let spinning = !busy && !spin.is_zero() && last_work.elapsed() < spin;
            if spinning {
                // Let any other runnable thread on this CPU go first (on a small machine, the
                // peers we wait for may be sharing it).
                std::thread::yield_now();
            }
            let timeout = if busy || spinning {
                Some(Duration::ZERO)
            } else {
                let mut wake_at = self.upstream.as_ref().and_then(|u| u.wake_at());
                if !self.roles.is_empty() {
                    wake_at = Some(wake_at.map_or(self.next_tick, |w| w.min(self.next_tick)));
                }
                if let Some(at) = self.accept_retry_at {
                    wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                }
                if self.clients > 0 {
                    let at = self.next_client_scan;
                    wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                }
                if let Some(Reverse((at, _))) = self.deferred.peek() {
                    wake_at = Some(wake_at.map_or(*at, |w| w.min(*at)));
                }
                if let Some(at) = self.next_tls_deadline() {
                    wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                }
                let t = wake_at.map(|at| at.saturating_duration_since(Instant::now()));
                self.shared.sleeping[self.id].store(true, Ordering::SeqCst);
                if !self.inbox.is_empty() {
                    self.shared.sleeping[self.id].store(false, Ordering::SeqCst);
                    Some(Duration::ZERO)
                } else {
                    t
                }
            };
            let before = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    log::error!("core {}: poll failed: {e}", self.id);
                    return;
                }
            }
            self.shared.sleeping[self.id].store(false, Ordering::SeqCst);
            if timeout != Some(Duration::ZERO) {
                self.pacing.blocked(before, Instant::now());
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(),
                    Token(t) if t < FIRST_CONN => self.accept_clients(t - FIRST_CLIENT_LISTENER),
                    Token(t) => {
                        let slot = t - FIRST_CONN;
                        let Some(c) = self.conns.get_mut(slot) else {
                            continue;
                        };
                        // (Its TLS handshake, once connected, is read and written as usual.)
                        if c.kind == ConnKind::Upstream
                            && c.tls.is_none()
                            && self.upstream.as_ref().is_some_and(|u| u.is_connecting())
                        {
                            if ev.is_writable() || ev.is_error() || ev.is_read_closed() {
                                self.upstream_check_connected(slot);
                            }
                            continue;
                        }
                        if ev.is_read_closed() || ev.is_error() {
                            c.peer_closed = true;
                        }
                        if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && !c.in_ready
                        {
                            c.in_ready = true;
                            self.ready.push(slot);
                        }
                        if ev.is_writable() && !c.in_dirty && c.queued() > 0 {
                            c.in_dirty = true;
                            self.dirty.push(slot);
                        }
                    }
                }
            }
            if let Some(u) = &self.upstream {
                let now = Instant::now();
                if u.retry_due(now) {
                    self.upstream_connect();
                } else if u.connect_overdue(now) {
                    self.upstream_connect_timed_out();
                } else if u.settle_due(now) {
                    self.upstream_settled(false);
                }
            }
            if self.accept_retry_at.is_some_and(|at| at <= Instant::now()) {
                self.accept();
            }
            self.expire_tls_handshakes(Instant::now());
        }
    }

    // ---- connections -------------------------------------------------------------------

    fn accept(&mut self) {
        self.accept_retry_at = None;
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    // With TLS, a peer is admitted by its certificate from anywhere, and a
                    // plain one is held to `allow` once its first bytes say it is plain.
                    if self.shared.md_tls.is_none() && !self.shared.md_allow.allows(addr.ip()) {
                        drop(stream);
                        self.refuse_not_allowed(addr);
                        continue;
                    }
                    let md = &self.shared.config.messagedirector;
                    let n = self.shared.stats.participants.load(Ordering::Relaxed);
                    if n >= md.max_participants {
                        self.shared
                            .stats
                            .participants_refused_limit
                            .fetch_add(1, Ordering::Relaxed);
                        self.refused += 1;
                        let now = Instant::now();
                        if now >= self.refusal_log_at {
                            log::warn!(
                                "messagedirector: refused {} connection(s), latest from {addr}: {n} participants is the limit (max_participants)",
                                self.refused
                            );
                            self.refused = 0;
                            self.refusal_log_at = now + Duration::from_secs(1);
                        }
                        drop(stream);
                        continue;
                    }
                    self.shared
                        .stats
                        .participants
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    super::conn::watch_link(&stream, md.keepalive_ms, md.link_timeout_ms);
                    let core = self.next_accept_core % self.shared.cores;
                    self.next_accept_core = self.next_accept_core.wrapping_add(1);
                    if core == self.id {
                        self.adopt(stream, addr, ConnKind::Participant);
                    } else {
                        self.outbox
                            .push_extra(core, CoreMsg::NewConn { stream, addr });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the listener will not signal again for
                    // connections already waiting, so try again shortly.
                    log::warn!("messagedirector: accept failed: {e}; retrying in 50 ms");
                    self.accept_retry_at = Some(Instant::now() + Duration::from_millis(50));
                    return;
                }
            }
        }
    }

    /// A peer not in `messagedirector.allow` was closed at accept: counted, an event, and a
    /// warning at most once a second (a scan of the port must not flood the log).
    fn refuse_not_allowed(&mut self, addr: SocketAddr) {
        self.shared
            .stats
            .participants_refused_not_allowed
            .fetch_add(1, Ordering::Relaxed);
        self.not_allowed += 1;
        let now = Instant::now();
        if now >= self.not_allowed_log_at {
            log::warn!(
                "messagedirector: refused {} connection(s), latest from {addr}: not in messagedirector.allow",
                self.not_allowed
            );
            self.not_allowed = 0;
            self.not_allowed_log_at = now + Duration::from_secs(1);
        }
        let event = crate::roles::event::encode(
            "participant-refused",
            &[
                ("role", crate::roles::event::Ev::Str("messagedirector")),
                (
                    "remote_address",
                    crate::roles::event::Ev::Str(&addr.to_string()),
                ),
                ("reason", crate::roles::event::Ev::Str("not in allow")),
            ],
        );
        self.send_event(&event);
    }

    fn adopt(&mut self, mut stream: TcpStream, addr: SocketAddr, kind: ConnKind) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if self.generations.len() <= slot {
            self.generations.resize(slot + 1, 0);
        }
        let pid = Pid::new(self.id, self.generations[slot], slot);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot + FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("messagedirector: cannot register {addr}: {e}");
            if kind == ConnKind::Participant {
                self.shared
                    .stats
                    .participants
                    .fetch_sub(1, Ordering::Relaxed);
            }
            return None;
        }
        let md = &self.shared.config.messagedirector;
        let mut c = Conn::new(
            stream,
            addr,
            pid,
            kind,
            md.read_buffer_bytes,
            md.max_datagram_bytes,
        );
        // A connection may have data already; look at it on this turn.
        c.in_ready = true;
        entry.insert(c);
        self.ready.push(slot);
        if kind == ConnKind::Participant {
            self.expect_tls_or_plain(slot);
        }
        log::debug!("messagedirector: participant {addr} connected as {pid}");
        Some(slot)
    }

    /// True while other cores are behind (a full queue): this core then stops reading its
    /// sockets until they catch up.
    fn held_back(&self) -> bool {
        self.outbox.is_stalled() || self.roles.iter().any(|r| !r.jobs_waiting.is_empty())
    }

    fn process_ready(&mut self) {
        if self.held_back() {
            return;
        }
        let ready = std::mem::take(&mut self.ready);
        for slot in ready {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            c.in_ready = false;
            if c.closing.is_some() {
                continue;
            }
            let again = self.read_conn(slot);
            if again {
                if let Some(c) = self.conns.get_mut(slot) {
                    if !c.in_ready {
                        c.in_ready = true;
                        self.ready.push(slot);
                    }
                }
            }
        }
        self.close_marked();
    }

    /// Reads and handles datagrams; returns true if the socket may have more to read.
    fn read_conn(&mut self, slot: usize) -> bool {
        if self.conns[slot].kind == ConnKind::Client {
            return self.read_client(slot);
        }
        if self.conns[slot].sniff && !self.sniff_first_bytes(slot) {
            return false;
        }
        if self.conns[slot].tls.is_some() {
            return self.read_tls(slot);
        }
        let Some(mut deframer) = self.conns[slot].deframer.take() else {
            return false;
        };
        let mut more = true;
        for _ in 0..READS_PER_TURN {
            let res = deframer.read_from(&mut self.conns[slot].stream);
            match res {
                Ok(0) => {
                    self.mark_close(slot, "connection closed by peer");
                    more = false;
                }
                // A short read emptied the socket: the next readiness event says when there
                // is more (one `read` per wakeup instead of two), unless the peer has closed.
                Ok(_) => {
                    more = !deframer.drained() || self.conns[slot].peer_closed;
                    if let Some(live) = &self.conns[slot].child {
                        live.heard_now();
                    } else if self.conns[slot].kind == ConnKind::Upstream {
                        self.shared.stats.upstream_heard();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => more = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.mark_close(slot, format!("read error: {e}"));
                    more = false;
                }
            }
            loop {
                let frame = match deframer.next_framed() {
                    None => break,
                    Some(Ok(f)) => f,
                    Some(Err(FrameError::Oversized { len, max })) => {
                        self.mark_close(
                            slot,
                            format!("datagram of {len} bytes exceeds max_datagram_bytes = {max}"),
                        );
                        break;
                    }
                    Some(Err(FrameError::Empty)) => {
                        self.mark_close(slot, "zero-length datagram");
                        break;
                    }
                };
                if let Flow::Close(reason) = self.handle_datagram(slot, frame) {
                    self.mark_close(slot, reason);
                }
                if self.conns[slot].closing.is_some() {
                    break;
                }
            }
            if !more || self.conns[slot].closing.is_some() {
                break;
            }
        }
        self.conns[slot].deframer = Some(deframer);
        more && self.conns[slot].closing.is_none()
    }

    fn handle_datagram(&mut self, slot: usize, frame: &[u8]) -> Flow {
        let header = match RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..]) {
            Ok(h) => h,
            Err(e) => return Flow::Close(e.to_string()),
        };
        let (kind, pid) = (self.conns[slot].kind, self.conns[slot].pid);
        if header.is_control() {
            if kind == ConnKind::Upstream {
                log::warn!("messagedirector: ignoring a control message from the upstream MD");
                return Flow::Continue;
            }
            let payload = &frame[otp_wire::LENGTH_TAG_BYTES + header.len..];
            return self.handle_control(slot, frame, header.msgtype, payload);
        }
        if kind == ConnKind::Participant {
            self.send_upstream(frame, false);
        }
        if !self.roles.is_empty() {
            self.presubscribe(frame);
        }
        if !self.shared.client_agents.is_empty()
            && header.recipients.len() == 1
            && (header.msgtype == CLIENTAGENT_OPEN_CHANNEL
                || header.msgtype == CLIENTAGENT_SET_CLIENT_ID)
        {
            self.client_presubscribe(frame);
        }
        self.route(frame, header.recipients, Some(pid));
        Flow::Continue
    }

    /// Subscribes, ahead of time, the channels roles will subscribe when they handle this
    /// datagram (a StateServer's new object), so datagrams read after it from the same
    /// connection find them: the subscription reaches the channel's home core before their
    /// lookups do. The role's own subscription later is then a no-op.
    fn presubscribe(&mut self, frame: &[u8]) {
        let Ok(dg) = InternalDatagram::parse(&frame[2..]) else {
            return;
        };
        for i in 0..self.roles.len() {
            if let Some(c) = self.roles[i].role.will_subscribe(&dg) {
                // The object will live on its doid's home core, with that core's instance of
                // the role (whose slot there may differ from this one's).
                let home = home_core(c, self.shared.cores);
                if let Some(slot) = self.shared.peer_role(self.id, i, home) {
                    self.subscribe(Pid::new(home, 0, ROLE_SLOT_BASE + slot), c);
                }
            }
        }
    }

    fn handle_control(&mut self, slot: usize, frame: &[u8], msgtype: u16, payload: &[u8]) -> Flow {
        let md = &self.shared.config.messagedirector;
        let limits = participant::Limits {
            subscriptions: md.max_subscriptions_per_participant,
            post_removes: md.max_post_removes_per_participant,
        };
        let mut effects = participant::Effects::new();
        let verdict = self.conns[slot]
            .md
            .control(msgtype, payload, limits, &mut effects);
        let pid = self.conns[slot].pid;
        for effect in effects {
            match effect {
                Effect::Subscribe(c) => self.subscribe(pid, c),
                Effect::Unsubscribe(c) => self.unsubscribe(pid, c),
                Effect::AddRange(lo, hi) => self.range_op(pid, lo, hi, true),
                Effect::RemoveRange(lo, hi) => self.range_op(pid, lo, hi, false),
                Effect::Upstream => self.send_upstream(frame, false),
                Effect::Log(event) => self.send_event_raw(event),
            }
        }
        if let Some(live) = &self.conns[slot].child {
            let md = &self.conns[slot].md;
            let subscriptions = (md.singles.len() + md.ranges) as u64;
            live.subscriptions.store(subscriptions, Ordering::Relaxed);
            live.post_removes
                .store(md.post_removes.len() as u64, Ordering::Relaxed);
        }
        match verdict {
            Verdict::Done => {
                if msgtype == CONTROL_SET_CON_NAME {
                    let c = &self.conns[slot];
                    log::debug!("messagedirector: {} is named '{}'", c.addr, c.md.name);
                    self.child_md_named(slot);
                }
                Flow::Continue
            }
            Verdict::Ignored(why) => {
                let label = self.conns[slot].label();
                log::warn!("messagedirector: {label} {why}; ignored");
                Flow::Continue
            }
            Verdict::Close(reason) => Flow::Close(reason),
        }
    }

    fn mark_close(&mut self, slot: usize, reason: impl Into<String>) {
        if let Some(c) = self.conns.get_mut(slot) {
            if c.closing.is_none() {
                c.close(reason);
                self.to_close.push(slot);
            }
        }
    }

    fn close_marked(&mut self) {
        while let Some(slot) = self.to_close.pop() {
            if self.conns.get(slot).is_some_and(|c| c.closing.is_some()) {
                self.close_now(slot);
            }
        }
    }

    fn close_now(&mut self, slot: usize) {
        if self.conns[slot].kind == ConnKind::Client {
            let reason = self.conns[slot].closing.clone().unwrap_or_default();
            self.client_end(slot, Some(&reason));
        }
        let mut c = self.conns.remove(slot);
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        let _ = self.poll.registry().deregister(&mut c.stream);
        let reason = c.closing.take().unwrap_or_default();
        if c.kind == ConnKind::Upstream {
            // Unless the link was already declared lost (cut off, timed out) when it was
            // marked.
            if self.upstream.as_ref().is_some_and(|u| u.conn == Some(slot)) {
                self.upstream_lost(&reason);
            }
            return;
        }
        if c.kind == ConnKind::Client {
            self.client_removed(c, &reason);
            return;
        }
        self.shared
            .stats
            .participants
            .fetch_sub(1, Ordering::Relaxed);
        if c.refused {
            return; // logged when refused; it never was a participant
        }
        if reason == "connection closed by peer" {
            log::debug!("messagedirector: participant {} disconnected", c.label());
        } else {
            log::warn!(
                "messagedirector: closing participant {}: {reason}",
                c.label()
            );
            // Abort (RST) rather than close: the peer misbehaved, anything in flight is void.
            let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
        }
        // Unsubscribe everything.
        for channel in c.md.singles.drain() {
            self.unsubscribe(c.pid, channel);
        }
        if c.md.ranges > 0 {
            self.with_router(|r, core| r.drop_ranges(c.pid, core));
        }
        let label = c.label();
        if c.child.is_some() && !self.child_md_gone(&c, &reason) {
            return;
        }
        self.fire_post_removes(c.pid, &label, &c.md.post_removes);
    }

    /// A participant named itself: if the name is an otpd child MD's, registers this link as
    /// that child's newest (a link it replaces will not fire its post-removes when it closes:
    /// the child re-sends them on this one).
    fn child_md_named(&mut self, slot: usize) {
        let c = &self.conns[slot];
        let Some((name, incarnation)) = link_name::parse_child_md_name(&c.md.name) else {
            return;
        };
        if c.child.is_some() {
            log::warn!(
                "messagedirector: child MD {} renamed itself to '{}'; still listed under its first name",
                c.addr,
                c.md.name
            );
            return;
        }
        let (addr, pid) = (c.addr, c.pid);
        let (live, replaced) = self
            .shared
            .stats
            .child_mds
            .register(name, incarnation, addr, pid);
        let name = name.to_string();
        self.conns[slot].child = Some(live);
        let what = if replaced.is_some() {
            log::warn!(
                "messagedirector: child MD '{name}' re-registered from {addr}; its older link's post-removes will not fire"
            );
            "child-md-relinked"
        } else {
            log::info!("messagedirector: child MD '{name}' linked from {addr}");
            "child-md-linked"
        };
        self.child_md_event(what, &name, addr, "");
    }

    /// A child MD's link closed: true when its post-removes are to fire (it was the child's
    /// newest link), false when the child has re-registered on a newer link.
    fn child_md_gone(&mut self, c: &Conn, reason: &str) -> bool {
        let Some((name, incarnation)) = link_name::parse_child_md_name(&c.md.name) else {
            return true;
        };
        let newest = self
            .shared
            .stats
            .child_mds
            .link_closed(name, incarnation, c.pid);
        if newest {
            log::warn!(
                "messagedirector: child MD '{name}' {} lost; firing its {} post-removes",
                c.addr,
                c.md.post_removes.len()
            );
            self.child_md_event("child-md-lost", name, c.addr, reason);
        } else {
            log::warn!(
                "messagedirector: an old link of child MD '{name}' {} closed; its {} post-removes are not fired (the child re-registered them on its newer link)",
                c.addr,
                c.md.post_removes.len()
            );
            self.child_md_event("child-md-old-link-closed", name, c.addr, reason);
        }
        newest
    }

    fn child_md_event(&self, what: &str, name: &str, addr: SocketAddr, reason: &str) {
        use crate::roles::event::{encode, Ev};
        let addr = addr.to_string();
        let mut fields = vec![
            ("role", Ev::Str("messagedirector")),
            ("child", Ev::Str(name)),
            ("address", Ev::Str(&addr)),
        ];
        if !reason.is_empty() {
            fields.push(("reason", Ev::Str(reason)));
        }
        self.send_event(&encode(what, &fields));
    }

    /// Routes a departed participant's post-removes as if it had sent them, then clears them
    /// upstream. The upstream MD is owed the post-removes: kept for it while the link is down.
    fn fire_post_removes(&mut self, pid: Pid, label: &str, post_removes: &[(u64, Vec<u8>)]) {
        if post_removes.is_empty() {
            return;
        }
        let (mut routes, mut clears) = (Vec::new(), Vec::new());
        let dropped = participant::post_remove_frames(post_removes, &mut routes, &mut clears);
        for _ in 0..dropped {
            log::warn!(
                "messagedirector: post-remove of {label} is not a routable datagram; dropped"
            );
        }
        for frame in otp_wire::frames(&routes) {
            let Ok(header) = RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..]) else {
                continue;
            };
            self.send_upstream(frame, true);
            self.route(frame, header.recipients, Some(pid));
        }
        for frame in otp_wire::frames(&clears) {
            self.send_upstream(frame, false);
        }
    }

    // ---- the clean stop --------------------------------------------------------------------

    /// The process stops: no more clients are accepted, and this core's are ejected with their
    /// dialect's shutdown code (their post-removes fire as they go).
    fn begin_stop(&mut self) {
        self.stopped = true;
        for (mut l, _) in self.client_listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let slots: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.kind == ConnKind::Client && c.closing.is_none())
            .map(|(slot, _)| slot)
            .collect();
        if !slots.is_empty() {
            log::info!(
                "shutdown: ejecting {} clients on core {}",
                slots.len(),
                self.id
            );
        }
        for slot in slots {
            self.with_session(slot, |s, out| {
                s.eject_now(
                    s.shutdown_code(),
                    "The server is shutting down. Please come back in a few minutes.",
                    false,
                    out,
                )
            });
        }
        self.close_marked();
    }

    /// While stopping: tells the process whether this core has anything left to do.
    fn report_idle(&self) {
        let idle = self.clients == 0
            && self
                .roles
                .iter()
                .all(|r| !r.role.busy() && r.jobs_waiting.is_empty())
            && !self.roles_waiting
            && self.inbox.is_empty()
            && !self.outbox.is_stalled()
            && self.conns.iter().all(|(_, c)| c.queued() == 0);
        self.shared.stats.per_core[self.id]
            .idle
            .store(idle, Ordering::SeqCst);
    }

    // ---- the router ----------------------------------------------------------------------

    /// Runs `f` on the router with this core as its host; the router is taken out meanwhile
    /// (a host callback never routes, so it is never needed twice at once).
    #[inline(always)]
    fn with_router<R>(&mut self, f: impl FnOnce(&mut Router, &mut Core) -> R) -> R {
        let mut router = self.router.take().expect("the router is not re-entered");
        let r = f(&mut router, self);
        // The slot is empty: nothing to drop (and no drop for the compiler to emit).
        std::mem::forget(self.router.replace(router));
        r
    }

    fn router(&self) -> &Router {
        self.router.as_ref().expect("the router is not re-entered")
    }

    fn subscribe(&mut self, pid: Pid, channel: u64) {
        self.with_router(|r, core| r.subscribe(pid, channel, core));
    }

    fn unsubscribe(&mut self, pid: Pid, channel: u64) {
        self.with_router(|r, core| r.unsubscribe(pid, channel, core));
    }

    fn range_op(&mut self, pid: Pid, lo: u64, hi: u64, add: bool) {
        self.with_router(|r, core| r.range(pid, lo, hi, add, core));
    }

    /// Routes a framed datagram to every subscriber of its recipients, except `exclude`.
    #[inline]
    fn route(&mut self, frame: &[u8], recipients: Recipients<'_>, exclude: Option<Pid>) {
        self.with_router(|r, core| r.route(frame, recipients, exclude, core));
    }

    fn deliver_local(&mut self, pid: Pid, frame: &[u8]) {
        let slot = pid.slot();
        if slot >= ROLE_SLOT_BASE {
            if let Some(r) = self.roles.get_mut(slot - ROLE_SLOT_BASE) {
                r.inbox.extend_from_slice(frame);
                self.roles_waiting = true;
            }
            return;
        }
        if self.generations.get(slot) != Some(&pid.generation()) {
            return; // gone
        }
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        if let Some(cl) = c.client.as_mut() {
            cl.inbox.extend_from_slice(frame);
            if !cl.in_waiting {
                cl.in_waiting = true;
                self.client_waiting.push(slot);
            }
            return;
        }
        c.out.extend_from_slice(frame);
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(slot);
        }
        let limit = self
            .shared
            .config
            .messagedirector
            .max_queued_bytes_per_participant;
        if c.queued() > limit {
            self.shared
                .stats
                .participants_cut_off
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "stopped reading: {} bytes queued, over max_queued_bytes_per_participant = {limit}",
                c.queued()
            );
            let event = crate::roles::event::encode(
                "participant-cut-off",
                &[
                    ("role", crate::roles::event::Ev::Str("messagedirector")),
                    ("participant", crate::roles::event::Ev::Str(&c.label())),
                    ("reason", crate::roles::event::Ev::Str(&reason)),
                ],
            );
            self.send_event(&event);
            self.mark_close(slot, reason);
        }
    }

    // ---- upstream ------------------------------------------------------------------------

    /// Queues a framed datagram for the upstream MD (from any core); `owed`: one it must get
    /// even if the link is down now (fired post-removes).
    #[inline]
    fn send_upstream(&mut self, frame: &[u8], owed: bool) {
        if self.shared.upstream.is_some() {
            self.with_router(|r, core| r.send_upstream(frame, owed, core));
        }
    }

    /// Core 0: a datagram for the upstream MD. On a live link it is queued for the socket
    /// (past `max_queued_bytes_upstream` the link is cut: the upstream stopped reading), except
    /// what is owed while the link settles: kept, with what was owed before, in order.
    /// While the link is down or connecting, subscriptions and post-remove registrations are
    /// only noted (the replay restores them), what is owed is kept, and ordinary datagrams are
    /// dropped and counted: the cluster above does not hear them (best effort, as on astrond).
    fn upstream_write(&mut self, frame: &[u8], owed: bool) {
        let Some(u) = self.upstream.as_mut() else {
            return;
        };
        u.track(frame);
        match u.conn {
            Some(slot) if u.is_connected() && (u.is_settled() || !owed) => {
                let c = &mut self.conns[slot];
                c.out.extend_from_slice(frame);
                if !c.in_dirty {
                    c.in_dirty = true;
                    self.dirty.push(slot);
                }
                let limit = self.shared.config.messagedirector.max_queued_bytes_upstream;
                if c.queued() > limit {
                    let reason = format!(
                        "stopped reading: {} bytes queued, over max_queued_bytes_upstream = {limit}",
                        c.queued()
                    );
                    self.shared
                        .stats
                        .upstream_cut_off
                        .fetch_add(1, Ordering::Relaxed);
                    self.upstream_lost(&reason);
                    self.mark_close(slot, reason);
                }
            }
            _ if owed => {
                if !u.owe(frame) {
                    self.shared
                        .stats
                        .upstream_dropped_datagrams
                        .fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    if now >= self.owed_warn_at {
                        self.owed_warn_at = now + Duration::from_secs(1);
                        log::warn!(
                            "messagedirector: a fired post-remove for the upstream MD is dropped: {} bytes are kept for it already (max_queued_bytes_upstream)",
                            u.owed_bytes()
                        );
                    }
                }
            }
            _ => {
                let control = RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..])
                    .is_ok_and(|h| h.is_control());
                if !control {
                    self.shared
                        .stats
                        .upstream_dropped_datagrams
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn upstream_control(&mut self, msgtype: u16, args: &[u64]) {
        if self.upstream.is_none() {
            return;
        }
        let mut frame = Vec::with_capacity(32);
        let mut w = Writer::control(&mut frame, msgtype);
        for &a in args {
            w.u64(a);
        }
        w.finish_bounded();
        self.upstream_write(&frame, false);
    }

    fn upstream_range_removed(&mut self, lo: u64, hi: u64) {
        if self.upstream.is_none() {
            return;
        }
        self.upstream_control(CONTROL_REMOVE_RANGE, &[lo, hi]);
        // The upstream MD drops our single channels inside the range too: ask for them again.
        let singles: Vec<u64> = self
            .upstream
            .as_ref()
            .map(|u| u.channels.range(lo..=hi).copied().collect())
            .unwrap_or_default();
        for c in singles {
            self.upstream_control(CONTROL_ADD_CHANNEL, &[c]);
        }
    }

    fn upstream_connect(&mut self) {
        let Some(u) = self.upstream.as_mut() else {
            return;
        };
        match TcpStream::connect(u.addr) {
            Ok(stream) => {
                let addr = u.addr;
                u.set_connecting(Instant::now());
                let md = &self.shared.config.messagedirector;
                super::conn::watch_link(&stream, md.keepalive_ms, md.link_timeout_ms);
                match self.adopt(stream, addr, ConnKind::Upstream) {
                    Some(slot) => {
                        self.conns[slot].in_ready = false;
                        self.ready.retain(|&s| s != slot);
                        self.upstream.as_mut().unwrap().conn = Some(slot);
                    }
                    None => self.upstream_lost("cannot register the connection"),
                }
            }
            Err(e) => self.upstream_lost(&format!("connect failed: {e}")),
        }
    }

    /// The connection attempt under way passed `connect_timeout_ms`: given up, retried later.
    fn upstream_connect_timed_out(&mut self) {
        let Some(u) = self.upstream.as_ref() else {
            return;
        };
        let reason = format!(
            "connect timed out after {} ms",
            u.connect_timeout().as_millis()
        );
        let slot = u.conn;
        self.upstream_lost(&reason);
        if let Some(slot) = slot {
            self.mark_close(slot, reason);
            self.close_marked();
        }
    }

    fn upstream_check_connected(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let err = c.stream.take_error().ok().flatten();
        match (err, c.stream.peer_addr()) {
            (None, Ok(_)) => {
                let _ = c.stream.set_nodelay(true);
                if !self.upstream_tls_ready(slot) {
                    return; // md_tls_io calls again once the upstream MD has accepted us
                }
                let u = self.upstream.as_mut().expect("upstream core");
                let first = u.set_connected(Instant::now());
                let settling = !u.is_settled();
                self.shared
                    .stats
                    .upstream_settling
                    .store(settling, Ordering::Relaxed);
                self.shared
                    .stats
                    .upstream_connected
                    .store(true, Ordering::Relaxed);
                self.shared.stats.upstream_heard();
                let addr = u.addr.to_string();
                let mut replay = Vec::new();
                let ranges = self
                    .router
                    .as_ref()
                    .expect("the router is not re-entered")
                    .ranges()
                    .covered_runs();
                let settle_ms = u.settle_period().as_millis() as u64;
                u.replay(&ranges, &mut replay);
                let c = &mut self.conns[slot];
                c.out.extend_from_slice(&replay);
                if !c.in_dirty {
                    c.in_dirty = true;
                    self.dirty.push(slot);
                }
                c.in_ready = true;
                self.ready.push(slot);
                // Ejected now (the shorter the split brain, the better); the post-removes
                // their ends fire are owed, held with the others until the link has settled.
                let at_risk = u.take_at_risk();
                let ejected = self.eject_at_risk(&at_risk);
                if first {
                    log::info!("messagedirector: connected to upstream MD {addr}");
                } else {
                    log::warn!(
                        "messagedirector: upstream MD {addr} regained; re-sent subscriptions and post-removes; ejected {ejected} client session(s) whose post-removes it may have fired; settling {} ms (upstream_settle_ms) before sending the post-removes fired meanwhile; new clients are refused until then",
                        if settling { settle_ms } else { 0 }
                    );
                }
                let event = crate::roles::event::encode(
                    if first {
                        "upstream-connected"
                    } else {
                        "upstream-regained"
                    },
                    &[
                        ("role", crate::roles::event::Ev::Str("messagedirector")),
                        ("address", crate::roles::event::Ev::Str(&addr)),
                        ("sessions_ejected", crate::roles::event::Ev::U64(ejected)),
                        (
                            "settle_ms",
                            crate::roles::event::Ev::U64(if settling { settle_ms } else { 0 }),
                        ),
                    ],
                );
                self.send_event(&event);
                if !settling {
                    self.upstream_settled(first);
                }
            }
            (Some(e), _) => self.mark_close(slot, format!("connect failed: {e}")),
            (None, Err(e)) if e.kind() == ErrorKind::NotConnected => {}
            (None, Err(e)) => self.mark_close(slot, format!("connect failed: {e}")),
        }
        self.close_marked();
    }

    /// The upstream link is connected and settled (at once on the first connection or with
    /// `upstream_settle_ms: 0`): what was owed to it goes out, in order (with the post-removes
    /// of the sessions ejected at the regain last), and new clients are taken again.
    fn upstream_settled(&mut self, first: bool) {
        let Some(u) = self.upstream.as_mut() else {
            return;
        };
        let Some(slot) = u.conn.filter(|_| u.is_connected()) else {
            return;
        };
        self.shared
            .stats
            .upstream_settling
            .store(false, Ordering::Relaxed);
        u.settled();
        let addr = u.addr.to_string();
        let owed = u.owed_bytes();
        let c = &mut self.conns[slot];
        let was = c.out.len();
        u.take_owed(&mut c.out);
        if c.out.len() > was && !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(slot);
        }
        if first && owed == 0 {
            return;
        }
        log::warn!(
            "messagedirector: upstream MD {addr} settled; sent {owed} bytes of post-removes fired while it was away or settling"
        );
        let event = crate::roles::event::encode(
            "upstream-settled",
            &[
                ("role", crate::roles::event::Ev::Str("messagedirector")),
                ("address", crate::roles::event::Ev::Str(&addr)),
                ("owed_bytes_sent", crate::roles::event::Ev::U64(owed as u64)),
            ],
        );
        self.send_event(&event);
    }

    /// The link is back after a loss: the upstream MD may have fired the post-removes of these
    /// senders meanwhile (and deleted their objects), so each of this process's client
    /// sessions among them is ejected (code 130) through its channel. Returns how many.
    fn eject_at_risk(&mut self, at_risk: &std::collections::BTreeSet<u64>) -> u64 {
        if at_risk.is_empty() {
            return 0;
        }
        let sessions: Vec<u64> = {
            let clients = self.shared.client_channels.lock();
            at_risk
                .iter()
                .copied()
                .filter(|c| clients.contains_key(c))
                .collect()
        };
        let mut frame = Vec::with_capacity(128);
        for &channel in &sessions {
            frame.clear();
            let mut w = Writer::internal1(&mut frame, channel, 0, CLIENTAGENT_EJECT);
            w.u16(crate::clientagent::session::CLIENT_DISCONNECT_CLUSTER_LOST)
                .string(CLUSTER_LOST_REASON);
            w.finish_bounded();
            if let Ok(header) = RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..]) {
                self.route(&frame, header.recipients, None);
            }
        }
        sessions.len() as u64
    }

    fn upstream_lost(&mut self, reason: &str) {
        self.shared
            .stats
            .upstream_connected
            .store(false, Ordering::Relaxed);
        self.shared
            .stats
            .upstream_settling
            .store(false, Ordering::Relaxed);
        let Some(u) = self.upstream.as_mut() else {
            return;
        };
        let (wait, was_up) = u.set_down(Instant::now());
        let addr = u.addr.to_string();
        let registered = u.post_removes();
        if !was_up {
            log::warn!(
                "messagedirector: upstream MD {addr} unreachable ({reason}); retrying in {} ms",
                wait.as_millis()
            );
            return;
        }
        self.shared
            .stats
            .upstream_losses
            .fetch_add(1, Ordering::Relaxed);
        let exit = self.shared.config.messagedirector.on_upstream_lost
            == crate::config::OnUpstreamLost::Exit;
        let event = crate::roles::event::encode(
            "upstream-lost",
            &[
                ("role", crate::roles::event::Ev::Str("messagedirector")),
                ("address", crate::roles::event::Ev::Str(&addr)),
                ("reason", crate::roles::event::Ev::Str(reason)),
                (
                    "effect",
                    crate::roles::event::Ev::Str(if exit {
                        "exiting (on_upstream_lost: Exit)"
                    } else {
                        "nothing reaches the cluster above until the link is back; new clients are refused"
                    }),
                ),
                (
                    "post_removes_registered",
                    crate::roles::event::Ev::U64(registered as u64),
                ),
            ],
        );
        self.send_event(&event);
        if exit {
            log::error!(
                "messagedirector: upstream MD {addr} lost ({reason}); exiting (on_upstream_lost: Exit)"
            );
            log::logger().flush();
            // 1: `cli::FAILED`, the process's exit code when what it serves fails.
            std::process::exit(1);
        }
        log::warn!(
            "messagedirector: upstream MD {addr} lost ({reason}); nothing reaches the cluster above meanwhile; retrying in {} ms",
            wait.as_millis()
        );
    }

    // ---- roles -----------------------------------------------------------------------------

    /// Sends one of this process's MessagePack events (a map) to the configured EventLogger
    /// (UDP, fire and forget), with `daemon`: this process's `name` added to the map.
    fn send_event(&self, event: &[u8]) {
        let Some(s) = &self.el_socket else {
            log::debug!("no eventlogger configured; event dropped");
            return;
        };
        let mut head = [0u8; 3];
        let (head_len, skip) = match event.first() {
            Some(&b @ 0x80..=0x8e) => {
                head[0] = b + 1;
                (1, 1)
            }
            Some(0x8f) => {
                head = [0xde, 0, 16];
                (3, 1)
            }
            Some(0xde) if event.len() >= 3 && event[1..3] != [0xff, 0xff] => {
                let n = u16::from_be_bytes([event[1], event[2]]) + 1;
                head = [0xde, (n >> 8) as u8, n as u8];
                (3, 3)
            }
            _ => return self.send_event_raw(event),
        };
        let parts = [
            io::IoSlice::new(&head[..head_len]),
            io::IoSlice::new(&event[skip..]),
            io::IoSlice::new(&self.daemon_field),
        ];
        if let Err(e) = socket2::SockRef::from(s).send_vectored(&parts) {
            log::debug!("event not sent to the EventLogger: {e}");
        }
    }

    /// Sends an event as it is (one a participant asked us to log).
    fn send_event_raw(&self, event: &[u8]) {
        match &self.el_socket {
            Some(s) => {
                if let Err(e) = s.send(event) {
                    log::debug!("event not sent to the EventLogger: {e}");
                }
            }
            None => log::debug!("no eventlogger configured; event dropped"),
        }
    }

    /// Starts the thread that runs role `index`'s blocking work; its answers come back to this
    /// core's inbox as `WorkDone`.
    fn spawn_worker(
        &self,
        index: usize,
        name: &'static str,
        mut worker: Box<dyn crate::roles::Worker>,
        limits: crate::roles::WorkerLimits,
    ) -> io::Result<crossbeam_channel::Sender<crate::roles::AnyJob>> {
        let (tx, rx) = crossbeam_channel::bounded::<crate::roles::AnyJob>(limits.queue.max(1));
        let core = self.id;
        let name = format!("otpd-{name}-{core}");
        super::workers::spawn(name, self.shared.clone(), rx, limits.batch, move |batch| {
            let answers = worker.run(batch);
            vec![(
                core,
                CoreMsg::WorkDone {
                    role: index,
                    answers,
                },
            )]
        })?;
        Ok(tx)
    }

    /// Hands queued work to the role's worker; what does not fit waits (and holds reading back).
    fn push_work(&mut self, i: usize) {
        let r = &mut self.roles[i];
        let Some(tx) = &r.job_tx else {
            if !r.jobs_waiting.is_empty() {
                log::error!(
                    "{}: produced work but has no worker; dropped",
                    r.role.name()
                );
                r.jobs_waiting.clear();
            }
            return;
        };
        while let Some(w) = r.jobs_waiting.pop_front() {
            if let Err(e) = tx.try_send(w) {
                match e {
                    crossbeam_channel::TrySendError::Full(w) => {
                        r.jobs_waiting.push_front(w);
                        break;
                    }
                    crossbeam_channel::TrySendError::Disconnected(_) => {
                        log::error!("{}: worker thread is gone; work dropped", r.role.name());
                        r.jobs_waiting.clear();
                        break;
                    }
                }
            }
        }
    }

    /// Hands each role what was delivered to it, then applies and routes what it answered.
    /// Answers may be delivered to roles on this core again: a few rounds per turn, then the
    /// sockets get a go and the rest waits for the next turn.
    fn run_roles(&mut self) {
        let now = Instant::now();
        let tick = !self.roles.is_empty() && now >= self.next_tick;
        if tick {
            self.next_tick = now + ROLE_TICK;
        }
        let mut out = Output::default();
        for i in 0..self.roles.len() {
            if tick {
                self.roles[i].role.tick(now, &mut out);
                self.apply_role_output(i, &mut out);
            }
        }
        if tick && !self.roles.is_empty() {
            let mut figures = Vec::new();
            for r in &self.roles {
                let name = r.role.name();
                let mut mine = Vec::new();
                r.role.metrics(&mut mine);
                figures.extend(mine.into_iter().map(|(m, v)| (name, m, v)));
            }
            *self.shared.stats.per_core[self.id].roles.lock() = figures;
        }
        for _ in 0..ROLE_ROUNDS_PER_TURN {
            if !self.roles_waiting {
                break;
            }
            self.roles_waiting = false;
            for i in 0..self.roles.len() {
                if self.roles[i].inbox.is_empty() {
                    continue;
                }
                let inbox = std::mem::take(&mut self.roles[i].inbox);
                for frame in otp_wire::frames(&inbox) {
                    match otp_wire::InternalDatagram::parse(&frame[2..]) {
                        Ok(dg) => self.roles[i].role.handle(now, frame, &dg, &mut out),
                        Err(e) => {
                            log::warn!("{}: undecodable datagram: {e}", self.roles[i].role.name())
                        }
                    }
                    self.apply_role_output(i, &mut out);
                }
                // Keep the buffer's capacity for the next turn.
                let mut inbox = inbox;
                inbox.clear();
                if self.roles[i].inbox.is_empty() {
                    self.roles[i].inbox = inbox;
                }
            }
        }
    }

    /// Applies a role's subscription changes, then routes its datagrams as sent by it, then
    /// queues its work.
    fn apply_role_output(&mut self, i: usize, out: &mut Output) {
        let pid = self.roles[i].pid;
        let exclude = (!self.roles[i].role.hears_itself()).then_some(pid);
        for event in out.events.drain(..) {
            self.send_event(&event);
        }
        if !out.jobs.is_empty() {
            self.roles[i].jobs_waiting.extend(out.jobs.drain(..));
            self.push_work(i);
        }
        // Roles keep their own subscriptions free of duplicates (and a duplicate is harmless:
        // subscribing is idempotent), so no set of them is kept here: a StateServer's would
        // hold every object's channel.
        for sub in out.subscriptions.drain(..) {
            match sub {
                Subscription::Add(c) => self.subscribe(pid, c),
                Subscription::Remove(c) => self.unsubscribe(pid, c),
                Subscription::AddRange(lo, hi) if lo <= hi => self.range_op(pid, lo, hi, true),
                Subscription::RemoveRange(lo, hi) if lo <= hi => self.range_op(pid, lo, hi, false),
                Subscription::AddRange(..) | Subscription::RemoveRange(..) => {}
            }
        }
        if out.datagrams.is_empty() {
            return;
        }
        let datagrams = std::mem::take(&mut out.datagrams);
        let dropped = self.route_frames(&datagrams, exclude);
        if dropped > 0 {
            log::error!(
                "{}: produced {dropped} malformed datagram(s); dropped",
                self.roles[i].role.name()
            );
        }
        out.datagrams = datagrams;
        out.datagrams.clear();
    }

    /// Routes framed datagrams an in-process participant (a role, a client session) sent,
    /// upstream too; returns how many were malformed and dropped.
    fn route_frames(&mut self, datagrams: &[u8], exclude: Option<Pid>) -> usize {
        let mut dropped = 0;
        for frame in otp_wire::frames(datagrams) {
            let Ok(header) = RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..]) else {
                dropped += 1;
                continue;
            };
            self.send_upstream(frame, false);
            self.route(frame, header.recipients, exclude);
        }
        dropped
    }

    // ---- cross-core ----------------------------------------------------------------------

    fn drain_inbox(&mut self) {
        // Bound the work per turn so sockets are not starved.
        for _ in 0..64 {
            let Ok(batch) = self.inbox.try_recv() else {
                break;
            };
            let Batch {
                from,
                msgs,
                data,
                extra,
            } = batch;
            if !msgs.is_empty() {
                self.with_router(|r, core| {
                    for msg in &msgs {
                        r.handle(from, msg, &data, core);
                    }
                });
            }
            for msg in extra {
                self.handle_msg(msg);
            }
        }
    }

    /// Handles one of the runtime's own messages from another core or a worker thread.
    fn handle_msg(&mut self, msg: CoreMsg) {
        match msg {
            CoreMsg::NewConn { stream, addr } => {
                self.adopt(stream, addr, ConnKind::Participant);
            }
            CoreMsg::NewClient { stream, addr, ca } => {
                self.adopt_client(stream, addr, ca);
                if self.stopped {
                    // Accepted just before the stop: it goes with the others.
                    self.stopped = false;
                    self.begin_stop();
                }
            }
            CoreMsg::ClientJobDone {
                slot,
                pid,
                id,
                result,
            } => self.client_job_done(slot, pid, id, result),
            CoreMsg::WorkDone { role, answers } => {
                if role >= self.roles.len() {
                    return;
                }
                let now = Instant::now();
                let mut out = Output::default();
                for answer in answers {
                    self.roles[role].role.job_done(now, answer, &mut out);
                    self.apply_role_output(role, &mut out);
                }
                self.push_work(role);
            }
        }
    }

    /// End of a loop turn: dispatch what resolved, ship batches to other cores, write sockets.
    fn finish_turn(&mut self) {
        self.run_roles();
        self.run_clients();
        let shared = &self.shared;
        self.outbox.ship(|core, batch| shared.send(core, batch));
        let now = Instant::now();
        self.pacing.update(now);
        let dirty = std::mem::take(&mut self.dirty);
        for slot in dirty {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            c.in_dirty = false;
            if c.kind == ConnKind::Upstream
                && c.tls.is_none()
                && !self.upstream.as_ref().is_some_and(|u| u.is_connected())
            {
                continue;
            }
            if c.client.is_some() {
                if !self.defer_client_flush(slot, now) {
                    self.flush_client(slot);
                }
                continue;
            }
            if let Err(e) = c.flush() {
                self.mark_close(slot, format!("write error: {e}"));
            }
        }
        self.flush_due_clients(now);
        self.close_marked();
        let router = self.router();
        let mine = &self.shared.stats.per_core[self.id];
        mine.datagrams_routed
            .store(router.routed(), Ordering::Relaxed);
        mine.deliveries.store(router.delivered(), Ordering::Relaxed);
        mine.client_deliveries
            .store(self.client_deliveries, Ordering::Relaxed);
        mine.client_socket_writes
            .store(self.client_socket_writes, Ordering::Relaxed);
        mine.stalled_batches
            .store(self.outbox.stalled_batches() as u64, Ordering::Relaxed);
        mine.client_write_spacing_us
            .store(self.pacing.spacing().as_micros() as u64, Ordering::Relaxed);
        mine.channels
            .store(router.channels() as u64, Ordering::Relaxed);
    }
}

/// Core 0's link to the upstream MD, if one is configured (`messagedirector.connect`).
fn upstream_of(shared: &Shared) -> Option<Upstream> {
    shared.upstream.map(|addr| {
        let md = &shared.config.messagedirector;
        let timing = super::upstream::Timing {
            min_backoff: Duration::from_millis(md.reconnect_min_ms),
            max_backoff: Duration::from_millis(md.reconnect_max_ms),
            connect_timeout: Duration::from_millis(md.connect_timeout_ms.max(1)),
            max_owed: md.max_queued_bytes_upstream,
            settle: Duration::from_millis(md.upstream_settle_ms.unwrap_or(md.reconnect_max_ms)),
        };
        let name = crate::md::link_name::child_md_name(
            &shared.config.name,
            super::upstream::incarnation(),
        );
        shared.stats.upstream_heard();
        Upstream::new(addr, timing, name)
    })
}

/// The router's view of its core: the outbox, deliveries to this core's participants and
/// roles, and (core 0) the upstream link.
impl router::Host for Core {
    type Extra = CoreMsg;

    #[inline]
    fn outbox(&mut self) -> &mut Outbox<CoreMsg> {
        &mut self.outbox
    }

    #[inline]
    fn deliver(&mut self, pid: Pid, frame: &[u8]) {
        self.deliver_local(pid, frame);
    }

    fn upstream(&mut self, event: router::Upstream<'_>) {
        match event {
            router::Upstream::Subscribed(channel) => {
                let newly = self
                    .upstream
                    .as_mut()
                    .is_some_and(|u| u.channels.insert(channel));
                if newly {
                    self.upstream_control(CONTROL_ADD_CHANNEL, &[channel]);
                }
            }
            router::Upstream::Unsubscribed(channel) => {
                let gone = self
                    .upstream
                    .as_mut()
                    .is_some_and(|u| u.channels.remove(&channel));
                if gone {
                    self.upstream_control(CONTROL_REMOVE_CHANNEL, &[channel]);
                }
            }
            router::Upstream::RangeAdded(lo, hi) => {
                self.upstream_control(CONTROL_ADD_RANGE, &[lo, hi]);
            }
            router::Upstream::RangeRemoved(lo, hi) => self.upstream_range_removed(lo, hi),
            router::Upstream::Datagram(frame) => self.upstream_write(frame, false),
            router::Upstream::Owed(frame) => self.upstream_write(frame, true),
        }
    }
}

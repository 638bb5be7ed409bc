//! Test support: a whole otpd cluster in one thread, on a fake clock. The MessageDirector's
//! router (`otpd::md::router`, one core), the roles (StateServer, DBSS, Database, ...),
//! MessageDirector participants standing for AIs and UberDOGs, and ClientAgent sessions of
//! either dialect, all driven from the test thread with no socket, no thread and no sleep.
//!
//! Each step (a participant's datagram, a client's datagram, a disconnection, time passing) is
//! followed by `settle`: deliveries are handed out in the order the router made them until none
//! is left, then the roles' blocking work (storage) and the sessions' jobs (password hashing)
//! run, as the runtime's worker threads would, and their answers are handed back; until the
//! cluster is quiet. The same inputs give the same run, so a test can check the logic of a
//! timeout without waiting for it.
//!
//! What it leaves to the real runtime (and its black-box tests): sockets, framing limits,
//! write buffers, several cores, TLS and PROXY headers.

use otp_wire::msgtypes::{
    CLIENTAGENT_OPEN_CHANNEL, CLIENTAGENT_SET_CLIENT_ID, CONTROL_ADD_POST_REMOVE,
    CONTROL_CLEAR_POST_REMOVES,
};
use otp_wire::{InternalDatagram, RoutableHeader, Writer, LENGTH_TAG_BYTES};
use otpd::clientagent::session::{Close, JobResult, PostRemove, Session, SessionJob, SessionOut};
use otpd::clientagent::ClientAgent;
use otpd::md::participant::{self, Effect, Participant, Verdict};
use otpd::md::router::{Host, Outbox, Router, Upstream};
use otpd::md::Pid;
use otpd::roles::{AnyJob, Output, Role, Subscription, Worker};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often roles tick and sessions' deadlines are looked at, as the runtime does.
pub const TICK: Duration = Duration::from_millis(50);
/// Steps `settle` takes at most before it calls the cluster stuck (a loop of datagrams).
pub const MAX_SETTLE_STEPS: usize = 1_000_000;
/// The limits the simulated MessageDirector holds participants to.
pub const LIMITS: participant::Limits = participant::Limits {
    subscriptions: 1 << 20,
    post_removes: 1 << 16,
};

/// A MessageDirector participant: what an AI or UberDOG is to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerId(usize);

/// A client connected to one of the cluster's ClientAgents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId(usize);

struct HostedRole {
    role: Box<dyn Role>,
    worker: Option<Box<dyn Worker>>,
    jobs: Vec<AnyJob>,
}

struct Peer {
    md: Participant,
    received: VecDeque<Vec<u8>>,
    gone: bool,
}

struct Client {
    session: Option<Session>,
    /// The participant's own subscriptions (the session's, applied).
    md: Participant,
    /// Client datagram bodies the session sent, not yet taken by the test.
    received: VecDeque<Vec<u8>>,
    /// How the session ended, once it has.
    close: Option<Close>,
    jobs: Vec<SessionJob>,
}

enum Endpoint {
    Role(Box<HostedRole>),
    Peer(Peer),
    Client(Box<Client>),
}

/// The single core's view the router works through: its deliveries, kept in order.
#[derive(Default)]
struct Deliveries {
    outbox: Option<Outbox<()>>,
    queue: VecDeque<(Pid, Vec<u8>)>,
}

impl Host for Deliveries {
    type Extra = ();

    fn outbox(&mut self) -> &mut Outbox<()> {
        self.outbox.as_mut().expect("the outbox exists")
    }

    fn deliver(&mut self, pid: Pid, frame: &[u8]) {
        self.queue.push_back((pid, frame.to_vec()));
    }

    fn upstream(&mut self, _event: Upstream<'_>) {
        unreachable!("the simulated MessageDirector has no upstream")
    }
}

/// A cluster in one thread (see the module documentation).
pub struct Sim {
    now: Instant,
    next_tick: Instant,
    router: Router,
    host: Deliveries,
    endpoints: Vec<Endpoint>,
    /// EventLogger events, in the order sent.
    events: Vec<Vec<u8>>,
    out: Output,
    session_out: SessionOut,
}

impl Sim {
    /// An empty cluster whose clock reads `start`.
    pub fn new(start: Instant) -> Sim {
        // Hash order (a zone's children) must repeat too.
        assert!(
            otpd::md::block_hash::fix_seed(0),
            "a block-hashed table was made before the first Sim, under a random seed"
        );
        Sim {
            now: start,
            next_tick: start + TICK,
            router: Router::new(0, 1, false),
            host: Deliveries {
                outbox: Some(Outbox::new(0, 1)),
                queue: VecDeque::new(),
            },
            endpoints: Vec::new(),
            events: Vec::new(),
            out: Output::default(),
            session_out: SessionOut::default(),
        }
    }

    /// The fake clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Hosts a role: starts it, takes its worker, applies what it asked for.
    pub fn add_role(&mut self, mut role: Box<dyn Role>) {
        let worker = role.take_worker();
        let i = self.endpoints.len();
        self.endpoints.push(Endpoint::Role(Box::new(HostedRole {
            role,
            worker,
            jobs: Vec::new(),
        })));
        let mut out = std::mem::take(&mut self.out);
        if let Endpoint::Role(r) = &mut self.endpoints[i] {
            r.role.start(self.now, &mut out);
        }
        self.apply_role_output(i, &mut out);
        self.out = out;
        self.settle();
    }

    /// A new MessageDirector participant (an AI, an UberDOG), subscribed to nothing.
    pub fn connect_peer(&mut self) -> PeerId {
        self.endpoints.push(Endpoint::Peer(Peer {
            md: Participant::default(),
            received: VecDeque::new(),
            gone: false,
        }));
        PeerId(self.endpoints.len() - 1)
    }

    /// A participant sends one framed datagram (length tag included): a control message
    /// (subscriptions, post-removes) or a datagram to route. Then the cluster settles.
    ///
    /// # Panics
    /// On a datagram the MessageDirector would close the participant for: a test sends
    /// well-formed datagrams.
    pub fn peer_send(&mut self, peer: PeerId, frame: &[u8]) {
        let pid = pid_of(peer.0);
        let header = RoutableHeader::parse(&frame[LENGTH_TAG_BYTES..])
            .unwrap_or_else(|e| panic!("peer {}: not a routable datagram: {e}", peer.0));
        if header.is_control() {
            let payload = &frame[LENGTH_TAG_BYTES + header.len..];
            let mut effects = participant::Effects::new();
            let Endpoint::Peer(p) = &mut self.endpoints[peer.0] else {
                panic!("not a peer");
            };
            assert!(!p.gone, "peer {} has disconnected", peer.0);
            match p.md.control(header.msgtype, payload, LIMITS, &mut effects) {
                Verdict::Done | Verdict::Ignored(_) => {}
                Verdict::Close(why) => panic!("the MD would close peer {}: {why}", peer.0),
            }
            for effect in effects {
                match effect {
                    Effect::Subscribe(c) => self.router.subscribe(pid, c, &mut self.host),
                    Effect::Unsubscribe(c) => self.router.unsubscribe(pid, c, &mut self.host),
                    Effect::AddRange(lo, hi) => {
                        self.router.range(pid, lo, hi, true, &mut self.host)
                    }
                    Effect::RemoveRange(lo, hi) => {
                        self.router.range(pid, lo, hi, false, &mut self.host)
                    }
                    Effect::Upstream => {}
                    Effect::Log(event) => self.events.push(event.to_vec()),
                }
            }
        } else {
            self.presubscribe(frame);
            self.router
                .route(frame, header.recipients, Some(pid), &mut self.host);
        }
        self.settle();
    }

    /// The framed datagrams delivered to a participant since last asked, in order.
    pub fn peer_take(&mut self, peer: PeerId) -> Vec<Vec<u8>> {
        match &mut self.endpoints[peer.0] {
            Endpoint::Peer(p) => p.received.drain(..).collect(),
            _ => panic!("not a peer"),
        }
    }

    /// A participant's connection drops: its subscriptions go, its post-removes fire.
    pub fn disconnect_peer(&mut self, peer: PeerId) {
        let pid = pid_of(peer.0);
        let Endpoint::Peer(p) = &mut self.endpoints[peer.0] else {
            panic!("not a peer");
        };
        if p.gone {
            return;
        }
        p.gone = true;
        let singles: Vec<u64> = p.md.singles.drain().collect();
        let ranges = p.md.ranges > 0;
        let post_removes = std::mem::take(&mut p.md.post_removes);
        for c in singles {
            self.router.unsubscribe(pid, c, &mut self.host);
        }
        if ranges {
            self.router.drop_ranges(pid, &mut self.host);
        }
        self.fire_post_removes(pid, &post_removes);
        self.settle();
    }

    /// A client connects to `ca` from `remote`: its session starts (as the runtime starts it
    /// on accepting), on a channel of the agent's range. None when the range is used up.
    pub fn connect_client(
        &mut self,
        ca: &Arc<ClientAgent>,
        remote: SocketAddr,
    ) -> Option<ClientId> {
        let channel = ca.alloc_channel()?;
        let admitted = ca.admit_address(remote.ip()).then_some(remote.ip());
        let local: SocketAddr = "127.0.0.1:7198".parse().expect("an address");
        let i = self.endpoints.len();
        let mut out = std::mem::take(&mut self.session_out);
        out.clear();
        let session = Session::new(
            Arc::clone(ca),
            channel,
            remote,
            local,
            Vec::new(),
            admitted,
            false,
            self.now,
            &mut out,
        );
        self.endpoints.push(Endpoint::Client(Box::new(Client {
            session: Some(session),
            md: Participant::default(),
            received: VecDeque::new(),
            close: None,
            jobs: Vec::new(),
        })));
        self.apply_session_output(i, &mut out);
        self.session_out = out;
        self.settle();
        Some(ClientId(i))
    }

    /// The client sends one datagram (its body: no length tag). Then the cluster settles.
    pub fn client_send(&mut self, client: ClientId, body: &[u8]) {
        let now = self.now;
        self.with_session(client.0, |s, out| s.on_client(now, body, out));
        self.settle();
    }

    /// The client datagram bodies the client received since last asked, in order.
    pub fn client_take(&mut self, client: ClientId) -> Vec<Vec<u8>> {
        match &mut self.endpoints[client.0] {
            Endpoint::Client(c) => c.received.drain(..).collect(),
            _ => panic!("not a client"),
        }
    }

    /// How the client's session ended (None while it lives).
    pub fn client_closed(&self, client: ClientId) -> Option<&Close> {
        match &self.endpoints[client.0] {
            Endpoint::Client(c) => c.close.as_ref(),
            _ => panic!("not a client"),
        }
    }

    /// The client's session, for invariant checks.
    pub fn session(&self, client: ClientId) -> Option<&Session> {
        match &self.endpoints[client.0] {
            Endpoint::Client(c) => c.session.as_ref(),
            _ => panic!("not a client"),
        }
    }

    /// The client's connection drops (or, after an eject, is closed by the runtime).
    pub fn disconnect_client(&mut self, client: ClientId) {
        self.end_client(client.0, Some("connection closed by peer"));
        self.settle();
    }

    /// Lets `d` pass, in ticks: roles tick and sessions' deadlines come due on the way.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while self.next_tick <= until {
            self.now = self.next_tick;
            self.next_tick += TICK;
            self.tick();
        }
        self.now = until;
    }

    /// The EventLogger events sent since last asked (MessagePack maps).
    pub fn take_events(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.events)
    }

    /// Subscribers of a channel (for checks).
    pub fn subscribed(&self, channel: u64) -> usize {
        self.router.subscribers(channel).len()
    }

    // ---- the host ------------------------------------------------------------------------

    fn tick(&mut self) {
        let now = self.now;
        for i in 0..self.endpoints.len() {
            match &mut self.endpoints[i] {
                Endpoint::Role(r) => {
                    let mut out = std::mem::take(&mut self.out);
                    r.role.tick(now, &mut out);
                    self.apply_role_output(i, &mut out);
                    self.out = out;
                }
                Endpoint::Client(c) => {
                    let due = c
                        .session
                        .as_ref()
                        .and_then(Session::next_deadline)
                        .is_some_and(|d| d <= now);
                    if due {
                        self.with_session(i, |s, out| s.on_time(now, out));
                    }
                }
                Endpoint::Peer(_) => {}
            }
        }
        self.settle();
    }

    /// Hands out deliveries until none is left, then runs the waiting work; until quiet.
    pub fn settle(&mut self) {
        let mut steps = 0;
        loop {
            while let Some((pid, frame)) = self.host.queue.pop_front() {
                steps += 1;
                assert!(steps < MAX_SETTLE_STEPS, "the cluster does not settle");
                self.deliver(pid, &frame);
            }
            if !self.run_work() {
                break;
            }
        }
        let outbox = self.host.outbox.as_mut().expect("the outbox exists");
        outbox.ship(|_, _| panic!("a one-core router sends nothing to other cores"));
    }

    fn deliver(&mut self, pid: Pid, frame: &[u8]) {
        let i = pid.slot();
        let now = self.now;
        match &mut self.endpoints[i] {
            Endpoint::Role(r) => {
                let Ok(dg) = InternalDatagram::parse(&frame[LENGTH_TAG_BYTES..]) else {
                    return;
                };
                let mut out = std::mem::take(&mut self.out);
                r.role.handle(now, frame, &dg, &mut out);
                self.apply_role_output(i, &mut out);
                self.out = out;
            }
            Endpoint::Peer(p) => {
                if !p.gone {
                    p.received.push_back(frame.to_vec());
                }
            }
            Endpoint::Client(c) => {
                if c.session.is_none() || c.close.is_some() {
                    return;
                }
                if !still_subscribed(&c.md, frame) {
                    return;
                }
                self.with_session(i, |s, out| {
                    s.on_internal(now, &frame[LENGTH_TAG_BYTES..], out)
                });
            }
        }
    }

    /// Runs every role's queued work and every session's jobs; false when there was none.
    fn run_work(&mut self) -> bool {
        let now = self.now;
        let mut ran = false;
        for i in 0..self.endpoints.len() {
            match &mut self.endpoints[i] {
                Endpoint::Role(r) if !r.jobs.is_empty() => {
                    ran = true;
                    let batch = std::mem::take(&mut r.jobs);
                    let worker = r.worker.as_mut().expect("a role with work has a worker");
                    let answers = worker.run(batch);
                    for answer in answers {
                        let mut out = std::mem::take(&mut self.out);
                        if let Endpoint::Role(r) = &mut self.endpoints[i] {
                            r.role.job_done(now, answer, &mut out);
                        }
                        self.apply_role_output(i, &mut out);
                        self.out = out;
                    }
                }
                Endpoint::Client(c) if !c.jobs.is_empty() => {
                    ran = true;
                    let jobs = std::mem::take(&mut c.jobs);
                    for job in jobs {
                        let result: JobResult = job.run();
                        let id = job.id();
                        self.with_session(i, |s, out| s.on_job_done(now, id, result, out));
                    }
                }
                _ => {}
            }
        }
        ran
    }

    fn route_frames(&mut self, datagrams: &[u8], exclude: Option<Pid>) {
        for frame in otp_wire::frames(datagrams) {
            let header = RoutableHeader::parse(&frame[LENGTH_TAG_BYTES..])
                .expect("roles and sessions send routable datagrams");
            self.router
                .route(frame, header.recipients, exclude, &mut self.host);
        }
    }

    /// Subscribes ahead what roles and client sessions will subscribe when they handle this
    /// participant's datagram (as the runtime does; see `Role::will_subscribe`).
    fn presubscribe(&mut self, frame: &[u8]) {
        let Ok(dg) = InternalDatagram::parse(&frame[LENGTH_TAG_BYTES..]) else {
            return;
        };
        for i in 0..self.endpoints.len() {
            if let Endpoint::Role(r) = &self.endpoints[i] {
                if let Some(c) = r.role.will_subscribe(&dg) {
                    self.router.subscribe(pid_of(i), c, &mut self.host);
                }
            }
        }
        let client_message =
            dg.msgtype == CLIENTAGENT_OPEN_CHANNEL || dg.msgtype == CLIENTAGENT_SET_CLIENT_ID;
        if client_message && dg.recipients.len() == 1 {
            let (Some(target), Ok(new)) = (dg.recipients.get(0), dg.payload_reader().u64()) else {
                return;
            };
            let owner = self.endpoints.iter().position(|e| {
                matches!(e, Endpoint::Client(c) if c.md.singles.contains(&target) && c.close.is_none())
            });
            if let Some(i) = owner {
                self.router.subscribe(pid_of(i), new, &mut self.host);
            }
        }
    }

    fn apply_role_output(&mut self, i: usize, out: &mut Output) {
        let pid = pid_of(i);
        let Endpoint::Role(r) = &mut self.endpoints[i] else {
            unreachable!("a role's output");
        };
        let exclude = (!r.role.hears_itself()).then_some(pid);
        self.events.append(&mut out.events);
        r.jobs.append(&mut out.jobs);
        for sub in out.subscriptions.drain(..) {
            match sub {
                Subscription::Add(c) => self.router.subscribe(pid, c, &mut self.host),
                Subscription::Remove(c) => self.router.unsubscribe(pid, c, &mut self.host),
                Subscription::AddRange(lo, hi) if lo <= hi => {
                    self.router.range(pid, lo, hi, true, &mut self.host)
                }
                Subscription::RemoveRange(lo, hi) if lo <= hi => {
                    self.router.range(pid, lo, hi, false, &mut self.host)
                }
                Subscription::AddRange(..) | Subscription::RemoveRange(..) => {}
            }
        }
        let datagrams = std::mem::take(&mut out.datagrams);
        self.route_frames(&datagrams, exclude);
        out.datagrams = datagrams;
        out.clear();
    }

    /// Runs `f` on client `i`'s session, if it lives, and applies what it answers.
    fn with_session(&mut self, i: usize, f: impl FnOnce(&mut Session, &mut SessionOut)) {
        let Endpoint::Client(c) = &mut self.endpoints[i] else {
            panic!("not a client");
        };
        if c.close.is_some() {
            return;
        }
        let Some(session) = c.session.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.session_out);
        out.clear();
        f(session, &mut out);
        self.apply_session_output(i, &mut out);
        self.session_out = out;
    }

    fn apply_session_output(&mut self, i: usize, out: &mut SessionOut) {
        let pid = pid_of(i);
        let Endpoint::Client(c) = &mut self.endpoints[i] else {
            unreachable!("a session's output");
        };
        self.events.append(&mut out.events);
        c.jobs.append(&mut out.jobs);
        for sub in out.subscriptions.drain(..) {
            match sub {
                Subscription::Add(ch) => {
                    if c.md.singles.insert(ch) {
                        self.router.subscribe(pid, ch, &mut self.host);
                    }
                }
                Subscription::Remove(ch) => {
                    if c.md.singles.remove(&ch) {
                        self.router.unsubscribe(pid, ch, &mut self.host);
                    }
                }
                Subscription::AddRange(..) | Subscription::RemoveRange(..) => {}
            }
        }
        let sender = c.session.as_ref().map_or(0, Session::allocated_channel);
        for pr in out.post_removes.drain(..) {
            match pr {
                PostRemove::Add(dg) => {
                    let mut frame = Vec::new();
                    let mut w = Writer::control(&mut frame, CONTROL_ADD_POST_REMOVE);
                    w.u64(sender).blob(&dg);
                    w.finish().expect("a post-remove a client session made");
                    self.control_as(i, &frame);
                }
                PostRemove::Clear => {
                    let mut frame = Vec::new();
                    let mut w = Writer::control(&mut frame, CONTROL_CLEAR_POST_REMOVES);
                    w.u64(sender);
                    w.finish().expect("a small control datagram");
                    self.control_as(i, &frame);
                }
            }
        }
        let Endpoint::Client(c) = &mut self.endpoints[i] else {
            unreachable!("a session's output");
        };
        for body in otp_wire::frames(&out.to_client) {
            c.received.push_back(body[LENGTH_TAG_BYTES..].to_vec());
        }
        out.to_client.clear();
        let datagrams = std::mem::take(&mut out.datagrams);
        self.route_frames(&datagrams, Some(pid));
        out.datagrams = datagrams;
        out.datagrams.clear();
        if let Some(close) = out.close.take() {
            if let Endpoint::Client(c) = &mut self.endpoints[i] {
                c.close = Some(close);
            }
            self.end_client(i, None);
        }
    }

    /// A post-remove registration of a client's participant, kept as the MD keeps them.
    fn control_as(&mut self, i: usize, frame: &[u8]) {
        let header = RoutableHeader::parse(&frame[LENGTH_TAG_BYTES..]).expect("a control message");
        let payload = &frame[LENGTH_TAG_BYTES + header.len..];
        let Endpoint::Client(c) = &mut self.endpoints[i] else {
            unreachable!("a client");
        };
        let mut effects = participant::Effects::new();
        let verdict = c.md.control(header.msgtype, payload, LIMITS, &mut effects);
        assert_eq!(verdict, Verdict::Done, "a session's post-remove");
    }

    /// The session's end in the cluster: its last datagrams, unsubscriptions, post-removes.
    fn end_client(&mut self, i: usize, lost: Option<&str>) {
        let pid = pid_of(i);
        let Endpoint::Client(c) = &mut self.endpoints[i] else {
            panic!("not a client");
        };
        let Some(mut session) = c.session.take() else {
            return;
        };
        let mut out = std::mem::take(&mut self.session_out);
        out.clear();
        session.on_closed(lost, &mut out);
        drop(session); // frees its channel and its address count
        self.events.append(&mut out.events);
        for body in otp_wire::frames(&out.to_client) {
            c.received.push_back(body[LENGTH_TAG_BYTES..].to_vec());
        }
        let singles: Vec<u64> = c.md.singles.drain().collect();
        let post_removes = std::mem::take(&mut c.md.post_removes);
        if c.close.is_none() {
            c.close = Some(Close::Drop);
        }
        for ch in singles {
            self.router.unsubscribe(pid, ch, &mut self.host);
        }
        let datagrams = std::mem::take(&mut out.datagrams);
        self.route_frames(&datagrams, Some(pid));
        self.session_out = out;
        self.fire_post_removes(pid, &post_removes);
    }

    fn fire_post_removes(&mut self, pid: Pid, post_removes: &[(u64, Vec<u8>)]) {
        let (mut routes, mut clears) = (Vec::new(), Vec::new());
        participant::post_remove_frames(post_removes, &mut routes, &mut clears);
        self.route_frames(&routes, Some(pid));
    }
}

fn pid_of(i: usize) -> Pid {
    Pid::new(0, 0, i)
}

/// False for a datagram that reached a client only through channels it has left since (a
/// session subscribes single channels only, so a delivery came through one of them).
fn still_subscribed(md: &Participant, frame: &[u8]) -> bool {
    let Ok(header) = RoutableHeader::parse(&frame[LENGTH_TAG_BYTES..]) else {
        return false;
    };
    let subscribed = header.recipients.iter().any(|ch| md.singles.contains(&ch));
    subscribed
}

/// A cluster read from a `cluster.ron` text, wired by `otpd::cluster` as `otpd` wires it, on
/// one core, with the ClientAgents its listeners would serve (in the order configured).
/// Client sessions read the wall clock as `unix` at `start`.
///
/// # Panics
/// On a configuration otpd would refuse (the message names the key).
pub fn from_ron(text: &str, start: Instant, unix: Duration) -> (Sim, Vec<Arc<ClientAgent>>) {
    // Before the roles are made (`Sim::new` checks it).
    otpd::md::block_hash::fix_seed(0);
    let config = otpd::config::ron_file::parse("sim.ron", text).unwrap_or_else(|e| panic!("{e}"));
    let clock = otpd::clientagent::WallClock { at: start, unix };
    let cluster = otpd::cluster::check_config(config, clock).unwrap_or_else(|e| panic!("{e}"));
    let mut sim = Sim::new(start);
    for role in (cluster.roles)(otpd::roles::Placement { core: 0, cores: 1 }, start) {
        sim.add_role(role);
    }
    (sim, cluster.client_agents)
}

//! The runtime: pinned core threads, each with its own mio `Poll`, connections and their
//! subscriptions, exchanging batches through bounded crossbeam queues. Only this module touches
//! sockets, threads and clocks; the routing state it drives lives in `crate::md`.
//!
//! The routing protocol between the cores (each core's replica of which cores subscribe each
//! channel, one crossing per delivery, the range authority) is `crate::md::router`, free of I/O; a
//! core hands it what it reads and ships the `Batch`es it fills, and its guarantees (the
//! per-connection order rule across channels and cores first) are stated and tested there.

mod child_mds;
mod client;
mod conn;
mod core;
mod fds;
mod md_tls;
mod pacing;
pub mod signals;
mod upstream;
mod workers;

pub use child_mds::{unix_ms, ChildFigures, ChildMds};

use crate::config::ClusterConfig;
use crate::md::Pid;
use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A message between core threads besides the routing protocol's (`crate::md::router::Msg`);
/// both travel in a `Batch`.
pub(crate) enum CoreMsg {
    /// A freshly accepted participant for this core to own.
    NewConn { stream: TcpStream, addr: SocketAddr },
    /// A freshly accepted client of ClientAgent `ca` (its address already counted).
    NewClient {
        stream: TcpStream,
        addr: SocketAddr,
        ca: usize,
    },
    /// A client session's job, done by the job worker (see `workers`): for the client in `slot`
    /// if it is still participant `pid`.
    ClientJobDone {
        slot: usize,
        pid: Pid,
        id: u32,
        result: crate::clientagent::session::JobResult,
    },
    /// Answers from a role's worker thread, in the order the work was queued.
    WorkDone {
        role: usize,
        answers: Vec<crate::roles::AnyJob>,
    },
}

pub(crate) type Batch = crate::md::router::Batch<CoreMsg>;

/// One core's counters, on a cache line of their own: written only by that core, once per
/// loop turn, so counting costs the routing path no shared writes.
#[derive(Default)]
#[repr(align(128))]
pub struct CoreStats {
    pub datagrams_routed: AtomicU64,
    pub deliveries: AtomicU64,
    /// Datagrams queued to this core's client connections (what their sessions wrote), and
    /// the socket writes that carried them (writes that took bytes): deliveries in one
    /// event-loop turn share one write (or wait longer with `flush_delay_ms`).
    pub client_deliveries: AtomicU64,
    pub client_socket_writes: AtomicU64,
    /// Batches waiting for another core's full queue (the core's backlog).
    pub stalled_batches: AtomicU64,
    /// The core's write pacing: how far apart it writes to one client, in µs (0 = idle).
    pub client_write_spacing_us: AtomicU64,
    /// Channels this core's participants subscribe.
    pub channels: AtomicU64,
    /// The roles' own figures, `(role, metric, value)`, refreshed with their ticks.
    pub roles: parking_lot::Mutex<Vec<(&'static str, &'static str, u64)>>,
    /// While the process stops: this core has nothing left to do (no client, no role work,
    /// nothing queued for another core or a socket).
    pub idle: AtomicBool,
}

/// Counters anyone may read.
#[derive(Default)]
pub struct Stats {
    pub per_core: Vec<CoreStats>,
    pub participants: AtomicUsize,
    pub participants_cut_off: AtomicU64,
    /// Connections to the MD listener closed at accept: from an address not in
    /// `messagedirector.allow`, and over `max_participants`.
    pub participants_refused_not_allowed: AtomicU64,
    pub participants_refused_limit: AtomicU64,
    /// Connections refused by the MD listener's TLS (`messagedirector.tls`): no or a bad
    /// client certificate, a failed or late handshake, plain TCP where TLS is required.
    pub participants_refused_tls: AtomicU64,
    pub upstream_connected: AtomicBool,
    /// The upstream link was regained and has not yet stayed up for `upstream_settle_ms`:
    /// what is owed to it is held and new clients are refused meanwhile.
    pub upstream_settling: AtomicBool,
    /// Times a live upstream link was lost (failed connection attempts are not counted).
    pub upstream_losses: AtomicU64,
    /// ...of which cut by us: the upstream stopped reading (`max_queued_bytes_upstream`).
    pub upstream_cut_off: AtomicU64,
    /// Datagrams for the upstream MD dropped: ordinary ones while the link was down, fired
    /// post-removes past `max_queued_bytes_upstream`.
    pub upstream_dropped_datagrams: AtomicU64,
    /// When the upstream link last delivered a byte (or connected), milliseconds since the
    /// Unix epoch; 0 = no upstream MD configured.
    pub upstream_last_byte_unix_ms: AtomicU64,
    /// The child MDs linked to this MD, with their figures.
    pub child_mds: ChildMds,
    /// The ClientAgents' own counters (clients by state, ejects by code).
    pub client_agents: Vec<Arc<crate::clientagent::ClientAgent>>,
}

/// What every core thread shares.
pub(crate) struct Shared {
    /// Set when the process stops cleanly: the cores stop accepting clients and eject theirs.
    pub stopping: AtomicBool,
    pub cores: usize,
    pub inboxes: Vec<Sender<Batch>>,
    pub wakers: Vec<Arc<mio::Waker>>,
    pub sleeping: Vec<AtomicBool>,
    pub config: ClusterConfig,
    pub eventlogger: Option<SocketAddr>,
    pub upstream: Option<SocketAddr>,
    /// Who may connect to the MD listener as a participant (`messagedirector.allow`).
    pub md_allow: crate::config::eventlogger::PeerAllowList,
    /// TLS on the MD listener (`messagedirector.tls`) and on the upstream link
    /// (`messagedirector.upstream_tls`).
    pub md_tls: Option<md_tls::ListenerTls>,
    pub upstream_tls: Option<md_tls::UpstreamTls>,
    pub stats: Arc<Stats>,
    /// The client listeners' agents, by index.
    pub client_agents: Vec<Arc<crate::clientagent::ClientAgent>>,
    /// Which participant each client channel (allocated, or set by SET_CLIENT_ID) belongs to:
    /// read when a CLIENTAGENT_OPEN_CHANNEL or SET_CLIENT_ID is routed, to subscribe the new
    /// channel at once (see `Core::client_presubscribe`).
    pub client_channels: parking_lot::Mutex<rustc_hash::FxHashMap<u64, Pid>>,
    /// The job worker's queue (client sessions' slow work, such as password hashing; see
    /// `workers`).
    pub jobs: Sender<workers::JobRequest>,
    /// Client connections open, capped below the open-file limit (`reserved_fds`).
    pub client_budget: fds::ClientBudget,
    /// The roles each core hosts, by name, in the order of their slots.
    pub role_names: Vec<Vec<&'static str>>,
}

impl Shared {
    /// The slot on core `to` of the role at slot `slot` on core `from` (see `peer_role`).
    pub(crate) fn peer_role(&self, from: usize, slot: usize, to: usize) -> Option<usize> {
        peer_role(&self.role_names, from, slot, to)
    }
}

/// The slot on core `to` of the role that is at slot `slot` on core `from`: the same role (by
/// name, the same occurrence of that name) hosted by another core, if it is hosted there.
/// Cores need not host the same roles, nor in the same order (core 0 hosts the singletons).
fn peer_role(names: &[Vec<&'static str>], from: usize, slot: usize, to: usize) -> Option<usize> {
    let here = names.get(from)?;
    let name = *here.get(slot)?;
    let nth = here[..slot].iter().filter(|&&n| n == name).count();
    names
        .get(to)?
        .iter()
        .enumerate()
        .filter(|(_, &n)| n == name)
        .nth(nth)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod peer_role_tests {
    use super::peer_role;

    #[test]
    fn the_same_role_is_found_at_its_own_slot_on_another_core() {
        let names = vec![
            vec!["shards", "stateserver", "dbss", "database", "stateserver"],
            vec!["stateserver", "dbss", "stateserver"],
        ];
        assert_eq!(peer_role(&names, 0, 1, 1), Some(0));
        assert_eq!(peer_role(&names, 0, 2, 1), Some(1));
        assert_eq!(
            peer_role(&names, 0, 4, 1),
            Some(2),
            "the second stateserver"
        );
        assert_eq!(peer_role(&names, 1, 2, 0), Some(4));
        assert_eq!(peer_role(&names, 0, 0, 1), None, "not hosted there");
        assert_eq!(peer_role(&names, 0, 9, 1), None);
        assert_eq!(peer_role(&names, 0, 1, 0), Some(1));
    }
}

impl Stats {
    /// Notes that the upstream link delivered something now.
    pub(crate) fn upstream_heard(&self) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        self.upstream_last_byte_unix_ms.store(ms, Ordering::Relaxed);
    }

    pub fn datagrams_routed(&self) -> u64 {
        self.per_core
            .iter()
            .map(|c| c.datagrams_routed.load(Ordering::Relaxed))
            .sum()
    }
    pub fn deliveries(&self) -> u64 {
        self.per_core
            .iter()
            .map(|c| c.deliveries.load(Ordering::Relaxed))
            .sum()
    }
    /// (datagrams queued to clients, socket writes to clients), every core's.
    pub fn client_writes(&self) -> (u64, u64) {
        self.per_core.iter().fold((0, 0), |(d, w), c| {
            (
                d + c.client_deliveries.load(Ordering::Relaxed),
                w + c.client_socket_writes.load(Ordering::Relaxed),
            )
        })
    }
}

impl Shared {
    /// Sends a batch to `core`, waking it if it sleeps. Gives the batch back if the queue is full.
    pub(crate) fn send(&self, core: usize, batch: Batch) -> Result<(), Batch> {
        match self.inboxes[core].try_send(batch) {
            Ok(()) => {
                if self.sleeping[core].swap(false, Ordering::SeqCst) {
                    let _ = self.wakers[core].wake();
                }
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }
}

/// A running cluster process.
pub struct Runtime {
    threads: Vec<std::thread::JoinHandle<()>>,
    pub stats: Arc<Stats>,
    pub bound: Option<SocketAddr>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves an address as astrond does (see `config::addr`), taking the first result.
pub fn resolve(addr: &str, default_port: u16) -> Result<SocketAddr, String> {
    crate::config::addr::parse_address(addr, default_port)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

impl Runtime {
    /// Binds, spawns the core threads and returns once the cluster is serving (no roles).
    pub fn start(config: ClusterConfig) -> Result<Runtime, StartError> {
        Self::start_with_roles(config, |_, _| Vec::new())
    }

    /// As `start`, hosting on each core the roles `roles(placement, now)` returns for it.
    pub fn start_with_roles<F>(config: ClusterConfig, roles: F) -> Result<Runtime, StartError>
    where
        F: Fn(crate::roles::Placement, Instant) -> Vec<Box<dyn crate::roles::Role>>,
    {
        Self::start_full(config, roles, Vec::new())
    }

    /// As `start_with_roles`, also serving the given ClientAgents' client listeners.
    #[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
    pub fn start_full<F>(
        config: ClusterConfig,
        roles: F,
        client_agents: Vec<Arc<crate::clientagent::ClientAgent>>,
    ) -> Result<Runtime, StartError>
    where
        F: Fn(crate::roles::Placement, Instant) -> Vec<Box<dyn crate::roles::Role>>,
    {
        if client_agents.len() > core::MAX_CLIENT_LISTENERS {
            return Err(StartError(format!(
                "{} clientagent roles: at most {} are supported in one process",
                client_agents.len(),
                core::MAX_CLIENT_LISTENERS
            )));
        }
        let mut client_listeners = Vec::with_capacity(client_agents.len());
        for (i, ca) in client_agents.iter().enumerate() {
            let sa = resolve(&ca.bind, 7198)
                .map_err(|e| StartError(format!("clientagent bind: {e}")))?;
            let l = TcpListener::bind(sa)
                .map_err(|e| StartError(format!("clientagent bind: cannot listen on {sa}: {e}")))?;
            log::info!(
                "clientagent: listening on {sa}{}",
                if ca.tls.is_some() { " (TLS)" } else { "" }
            );
            client_listeners.push((l, i));
        }
        let cores = match config.cores {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        if cores > 64 {
            return Err(StartError(format!(
                "cores = {cores}: at most 64 core threads are supported"
            )));
        }
        let md = &config.messagedirector;
        let md_allow =
            crate::config::eventlogger::PeerAllowList::parse("messagedirector.allow", &md.allow)
                .map_err(StartError)?;
        let md_tls = md
            .tls
            .as_ref()
            .map(md_tls::listener)
            .transpose()
            .map_err(StartError)?;
        let upstream_tls = match (&md.upstream_tls, &md.connect) {
            (Some(t), Some(connect)) => Some(md_tls::upstream(t, connect).map_err(StartError)?),
            _ => None,
        };
        let listener = match &md.bind {
            Some(addr) => {
                let sa = resolve(addr, 7199)
                    .map_err(|e| StartError(format!("messagedirector.bind: {e}")))?;
                let l = TcpListener::bind(sa).map_err(|e| {
                    StartError(format!("messagedirector.bind: cannot listen on {sa}: {e}"))
                })?;
                Some(l)
            }
            None => None,
        };
        let bound = listener.as_ref().and_then(|l| l.local_addr().ok());
        let upstream = match &md.connect {
            Some(addr) => Some(
                resolve(addr, 7199)
                    .map_err(|e| StartError(format!("messagedirector.connect: {e}")))?,
            ),
            None => None,
        };
        let eventlogger = match &config.eventlogger {
            Some(addr) if !addr.is_empty() => {
                Some(resolve(addr, 7197).map_err(|e| StartError(format!("eventlogger: {e}")))?)
            }
            _ => None,
        };

        let mut polls = Vec::with_capacity(cores);
        let mut wakers = Vec::with_capacity(cores);
        let mut inboxes = Vec::with_capacity(cores);
        let mut receivers: Vec<Receiver<Batch>> = Vec::with_capacity(cores);
        for _ in 0..cores {
            let poll =
                mio::Poll::new().map_err(|e| StartError(format!("cannot create poll: {e}")))?;
            let waker = mio::Waker::new(poll.registry(), core::WAKER)
                .map_err(|e| StartError(format!("cannot create waker: {e}")))?;
            let (tx, rx) = crossbeam_channel::bounded(md.core_queue_batches.max(1));
            polls.push(poll);
            wakers.push(Arc::new(waker));
            inboxes.push(tx);
            receivers.push(rx);
        }
        let stats = Arc::new(Stats {
            per_core: (0..cores).map(|_| CoreStats::default()).collect(),
            client_agents: client_agents.clone(),
            ..Stats::default()
        });
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(config.password_queue.max(1));
        fds::ignore_file_size_signal();
        let mut all_roles: Vec<Vec<Box<dyn crate::roles::Role>>> = (0..cores)
            .map(|i| roles(crate::roles::Placement { core: i, cores }, Instant::now()))
            .collect();
        let role_names = all_roles
            .iter()
            .map(|rs| rs.iter().map(|r| r.name()).collect())
            .collect();
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            jobs: jobs_tx,
            cores,
            inboxes,
            wakers,
            sleeping: (0..cores).map(|_| AtomicBool::new(false)).collect(),
            config: config.clone(),
            eventlogger,
            upstream,
            md_allow,
            md_tls,
            upstream_tls,
            stats: stats.clone(),
            client_agents,
            client_channels: Default::default(),
            client_budget: fds::ClientBudget::from_rlimit(config.reserved_fds),
            role_names,
        });
        let job_workers = match config.password_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        for i in 0..job_workers {
            workers::spawn_job_worker(i, shared.clone(), jobs_rx.clone())
                .map_err(|e| StartError(format!("cannot spawn job worker {i}: {e}")))?;
        }
        log::info!(
            "password hashing: {job_workers} worker threads, up to {} jobs queued",
            config.password_queue.max(1)
        );
        let core_ids = if config.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut listener = listener;
        let mut client_listeners = Some(client_listeners);
        let mut threads = Vec::with_capacity(cores);
        for (i, (poll, rx)) in polls.into_iter().zip(receivers).enumerate() {
            let shared = shared.clone();
            let listener = if i == 0 { listener.take() } else { None };
            let client_listeners = if i == 0 {
                client_listeners.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let pin = (!core_ids.is_empty()).then(|| core_ids[i % core_ids.len()]);
            let core_roles = std::mem::take(&mut all_roles[i]);
            let t = std::thread::Builder::new()
                .name(format!("otpd-core-{i}"))
                .spawn(move || {
                    if let Some(id) = pin {
                        core_affinity::set_for_current(id);
                    }
                    match core::Core::new(
                        i,
                        shared,
                        poll,
                        rx,
                        listener,
                        client_listeners,
                        core_roles,
                    ) {
                        Ok(mut c) => c.run(),
                        Err(e) => log::error!("core {i} failed to start: {e}"),
                    }
                })
                .map_err(|e| StartError(format!("cannot spawn core thread: {e}")))?;
            threads.push(t);
        }
        if let Some(a) = bound {
            let tls = match config.messagedirector.tls.as_ref().map(|t| t.participants) {
                None => "",
                Some(crate::config::TlsParticipants::Required) => {
                    " (TLS with client certificates only)"
                }
                Some(crate::config::TlsParticipants::Optional) => {
                    " (TLS with client certificates, or plain from messagedirector.allow)"
                }
            };
            log::info!("messagedirector: listening on {a} with {cores} core threads{tls}");
        }
        Ok(Runtime {
            shared,
            threads,
            stats,
            bound,
        })
    }

    /// Blocks until every core thread has ended (they run until the process exits).
    /// Starts a clean stop: every core stops accepting clients and ejects its own with its
    /// dialect's shutdown code (their post-removes fire); roles finish their work.
    pub fn begin_stop(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for c in &self.stats.per_core {
            c.idle.store(false, Ordering::SeqCst);
        }
        for w in &self.shared.wakers {
            let _ = w.wake();
        }
    }

    /// True once a stop is under way and every core is idle (see `CoreStats::idle`).
    pub fn all_idle(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
            && self
                .stats
                .per_core
                .iter()
                .all(|c| c.idle.load(Ordering::SeqCst))
    }

    /// True when every core thread has ended (a core that failed to start, or a panic).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

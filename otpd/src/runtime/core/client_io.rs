//! The core's client connections: accepting them on ClientAgent listeners, reading their
//! bytes (through a PROXY header and TLS when configured) into their sessions, handing the
//! sessions the datagrams routed to them, applying what the sessions answer, and closing them
//! (an ejected client reads its CLIENT_EJECT before the socket closes).

use super::super::client::{eject_frame, ClientConn, LINGER, MAX_LEFT};
use super::{Core, ROLE_TICK};
use crate::clientagent::proxy;
use crate::clientagent::session::{JobResult, Session, SessionOut};
use crate::md::Pid;
use crate::roles::Subscription;
use crate::runtime::conn::{Conn, ConnKind};
use crate::runtime::workers::JobRequest;
use crate::runtime::CoreMsg;
use mio::net::TcpStream;
use mio::{Interest, Token};
use otp_wire::msgtypes::eject::*;
use otp_wire::msgtypes::{CONTROL_ADD_POST_REMOVE, CONTROL_CLEAR_POST_REMOVES};
use otp_wire::{Deframer, FrameError, Writer};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Longest PROXY v2 header (addresses and TLVs) a listener accepts.
const MAX_PROXY_V2: usize = 1024;
/// Rounds of session-to-session delivery handled in one loop turn.
const CLIENT_ROUNDS_PER_TURN: usize = 16;
/// Queued bytes that are written at once even when `flush_delay_ms` would let them wait.
const FLUSH_AT_ONCE: usize = 16 * 1024;

impl Core {
    /// Core 0: accepts what waits on client listener `i`, handing each client to a core.
    pub(super) fn accept_clients(&mut self, i: usize) {
        let Some(ca_index) = self.client_listeners.get(i).map(|l| l.1) else {
            return;
        };
        loop {
            let res = self.client_listeners[i].0.accept();
            match res {
                Ok((mut stream, addr)) => {
                    let ca = &self.shared.client_agents[ca_index];
                    ca.stats.connections.fetch_add(1, Ordering::Relaxed);
                    if ca.haproxy && !ca.proxy_from.allows(addr.ip()) {
                        // Its PROXY header would name any address it likes.
                        ca.stats.refused.fetch_add(1, Ordering::Relaxed);
                        log::debug!("{}: refused {addr}: not in proxy_from", ca.label());
                        let event = crate::roles::event::encode(
                            "client-proxy-refused",
                            &[
                                ("role", crate::roles::event::Ev::Str("clientagent")),
                                ("listener", crate::roles::event::Ev::Str(&ca.bind)),
                                (
                                    "remote_address",
                                    crate::roles::event::Ev::Str(&addr.to_string()),
                                ),
                            ],
                        );
                        self.send_event(&event);
                        continue;
                    }
                    // Behind a proxy, the client's own address is counted once its header
                    // names it (`client_bytes`).
                    if !ca.haproxy && !ca.admit_address(addr.ip()) {
                        ca.stats.refused.fetch_add(1, Ordering::Relaxed);
                        log::debug!(
                            "{}: refused {addr}: over max_connections_per_address",
                            ca.label()
                        );
                        if ca.tls.is_none() {
                            let _ = stream.write(&eject_frame(
                                CLIENT_DISCONNECT_GENERIC,
                                "Too many connections from this address.",
                            ));
                        }
                        continue;
                    }
                    if !self.shared.client_budget.take() {
                        // Descriptors past the cap are kept for MD participants.
                        ca.stats.refused.fetch_add(1, Ordering::Relaxed);
                        if !ca.haproxy {
                            ca.release_address(addr.ip());
                        }
                        self.refused_for_descriptors(ca_index, addr);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let core = self.next_accept_core % self.shared.cores;
                    self.next_accept_core = self.next_accept_core.wrapping_add(1);
                    if core == self.id {
                        self.adopt_client(stream, addr, ca_index);
                    } else {
                        self.outbox.push_extra(
                            core,
                            CoreMsg::NewClient {
                                stream,
                                addr,
                                ca: ca_index,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if crate::runtime::fds::out_of_descriptors(&e) => {
                    // Take the waiting client off the backlog with the spare descriptor and
                    // close it, rather than leave it there to wake us again.
                    let listener = &self.client_listeners[i].0;
                    let shed = self.spare.shed(|| listener.accept().is_ok());
                    self.refused_for_descriptors(ca_index, "0.0.0.0:0".parse().unwrap());
                    if !shed {
                        self.accept_retry_at = Some(Instant::now() + Duration::from_millis(50));
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("clientagent: accept failed: {e}; retrying in 50 ms");
                    self.accept_retry_at = Some(Instant::now() + Duration::from_millis(50));
                    return;
                }
            }
        }
    }

    /// A client connection closed at once for want of descriptors (the cap, or EMFILE): at most
    /// one warning a second.
    fn refused_for_descriptors(&mut self, ca_index: usize, addr: SocketAddr) {
        let ca = &self.shared.client_agents[ca_index];
        let now = Instant::now();
        if now >= self.descriptor_warn_at {
            self.descriptor_warn_at = now + Duration::from_secs(1);
            log::warn!(
                "{}: refused {addr} and maybe others: {} client connections open, the cap is {} (open-file limit minus reserved_fds)",
                ca.label(),
                self.shared.client_budget.open(),
                self.shared.client_budget.max
            );
        }
    }

    /// Takes ownership of an accepted client: a channel, a registration, a session.
    pub(super) fn adopt_client(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        ca_index: usize,
    ) {
        let ca = self.shared.client_agents[ca_index].clone();
        let Some(channel) = ca.alloc_channel() else {
            ca.stats.refused.fetch_add(1, Ordering::Relaxed);
            ca.count_eject(CLIENT_DISCONNECT_GENERIC);
            log::warn!(
                "{}: refused {addr}: the channel range is used up",
                ca.label()
            );
            let event = crate::roles::event::encode(
                "client-ejected",
                &[
                    ("role", crate::roles::event::Ev::Str("clientagent")),
                    ("reason_code", crate::roles::event::Ev::Str("1")),
                    (
                        "reason_msg",
                        crate::roles::event::Ev::Str("Client capacity reached"),
                    ),
                    (
                        "remote_address",
                        crate::roles::event::Ev::Str(&addr.to_string()),
                    ),
                ],
            );
            self.send_event(&event);
            if ca.tls.is_none() {
                let _ = stream.write(&eject_frame(
                    CLIENT_DISCONNECT_GENERIC,
                    "Client capacity reached",
                ));
            }
            if !ca.haproxy {
                ca.release_address(addr.ip());
            }
            self.shared.client_budget.give_back();
            return;
        };
        let now = Instant::now();
        let local = stream.local_addr().unwrap_or(addr);
        let admitted = (!ca.haproxy).then(|| addr.ip());
        let mut client = Box::new(ClientConn::new(ca.clone(), channel, admitted, local, now));
        let tls = match &ca.tls {
            Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                Ok(mut t) => {
                    t.set_buffer_limit(Some(64 * 1024));
                    Some(Box::new(rustls::Connection::Server(t)))
                }
                Err(e) => {
                    log::warn!("{}: cannot start TLS for {addr}: {e}", ca.label());
                    client.release_unstarted();
                    self.shared.client_budget.give_back();
                    return;
                }
            },
            None => None,
        };
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if self.generations.len() <= slot {
            self.generations.resize(slot + 1, 0);
        }
        let pid = crate::md::Pid::new(self.id, self.generations[slot], slot);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot + super::FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("{}: cannot register {addr}: {e}", ca.label());
            client.release_unstarted();
            self.shared.client_budget.give_back();
            return;
        }
        let l = &ca.limits;
        let mut c = Conn::new(
            stream,
            addr,
            pid,
            ConnKind::Client,
            l.read_buffer_bytes,
            l.max_datagram_bytes,
        );
        c.md.name = format!("Client ({addr}, {channel})");
        c.tls = tls;
        c.client = Some(client);
        c.in_ready = true;
        entry.insert(c);
        self.ready.push(slot);
        self.clients += 1;
        if !ca.haproxy {
            self.start_session(slot, addr, local, Vec::new(), false, now);
        }
    }

    fn start_session(
        &mut self,
        slot: usize,
        remote: SocketAddr,
        local: SocketAddr,
        tlvs: Vec<u8>,
        local_check: bool,
        now: Instant,
    ) {
        let Some(cl) = self.conns[slot].client.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.session_out);
        out.clear();
        let session = Session::new(
            cl.ca.clone(),
            cl.channel,
            remote,
            local,
            tlvs,
            cl.admitted.take(),
            local_check,
            now,
            &mut out,
        );
        let channel = cl.channel;
        cl.session = Some(session);
        let pid = self.conns[slot].pid;
        self.shared.client_channels.lock().insert(channel, pid);
        // Refused while the upstream is down, and while a regained link settles: a delete owed
        // from before the loss may still be on its way (`upstream_settle_ms`).
        if self.shared.upstream.is_some()
            && (!self.shared.stats.upstream_connected.load(Ordering::Relaxed)
                || self.shared.stats.upstream_settling.load(Ordering::Relaxed))
        {
            let cl = self.conns[slot].client.as_mut().expect("a client");
            if cl.ca.refuse_clients_without_upstream {
                // Its logins and objects would wait for a cluster that cannot answer.
                if let Some(session) = cl.session.as_mut() {
                    session.eject_now(
                        crate::clientagent::session::CLIENT_DISCONNECT_CLUSTER_UNAVAILABLE,
                        "The server cannot reach the rest of the cluster right now; please try again in a few minutes.",
                        false,
                        &mut out,
                    );
                }
            }
        }
        self.apply_session_output(slot, &mut out);
        self.session_out = out;
    }

    /// Reads a client socket; returns true if it may have more to read.
    pub(super) fn read_client(&mut self, slot: usize) -> bool {
        let now = Instant::now();
        let mut scratch = std::mem::take(&mut self.client_scratch);
        let mut more = true;
        for _ in 0..super::READS_PER_TURN {
            let res = self.conns[slot].stream.read(&mut scratch);
            match res {
                Ok(0) => {
                    self.mark_close(slot, "connection closed by peer");
                    more = false;
                }
                Ok(n) => {
                    self.client_bytes(slot, &scratch[..n], now);
                    // A short read emptied the socket (see `Deframer::drained`), unless the
                    // peer has closed (see `Conn::peer_closed`).
                    more = n == scratch.len() || self.conns[slot].peer_closed;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => more = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.mark_close(slot, format!("read error: {e}"));
                    more = false;
                }
            }
            if !more || self.client_done_reading(slot) {
                break;
            }
        }
        self.client_scratch = scratch;
        more && !self.client_done_reading(slot)
    }

    fn client_done_reading(&self, slot: usize) -> bool {
        let c = &self.conns[slot];
        c.closing.is_some()
            || c.client
                .as_ref()
                .is_some_and(|cl| cl.linger_until.is_some())
    }

    /// Bytes of a client that must begin with a PROXY header: buffers them until the header is
    /// whole, then admits the client by the address it names and starts its session. Returns
    /// the bytes after the header, or None (incomplete, or the connection is being closed).
    fn client_proxy_header(&mut self, slot: usize, bytes: &[u8], now: Instant) -> Option<Vec<u8>> {
        let c = &mut self.conns[slot];
        let cl = c.client.as_mut()?;
        let buf = cl.proxy.as_mut()?;
        buf.extend_from_slice(bytes);
        let h = match proxy::parse(buf, MAX_PROXY_V2) {
            proxy::Parse::Incomplete => return None,
            proxy::Parse::Invalid(e) => {
                let reason = format!("bad PROXY header: {e}");
                self.mark_close(slot, reason);
                return None;
            }
            proxy::Parse::Done(h) => h,
        };
        let rest = buf[h.consumed..].to_vec();
        cl.proxy = None;
        cl.proxy_deadline = None;
        let remote = h.source.unwrap_or(c.addr);
        // `max_connections_per_address` counts the client the header names.
        if !cl.ca.admit_address(remote.ip()) {
            cl.ca.stats.refused.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "{}: refused {remote} (through {}): over max_connections_per_address",
                cl.ca.label(),
                c.addr
            );
            if cl.ca.tls.is_none() {
                let _ = c.stream.write(&eject_frame(
                    CLIENT_DISCONNECT_GENERIC,
                    "Too many connections from this address.",
                ));
            }
            self.mark_close(slot, "over max_connections_per_address");
            return None;
        }
        cl.admitted = Some(remote.ip());
        let local = h.destination.unwrap_or(cl.local);
        if h.source.is_some() {
            c.md.name = format!("Client ({remote}, {})", cl.channel);
        }
        self.start_session(slot, remote, local, h.tlvs, h.local, now);
        Some(rest)
    }

    /// Bytes read from a client's socket.
    fn client_bytes(&mut self, slot: usize, bytes: &[u8], now: Instant) {
        let c = &mut self.conns[slot];
        let Some(cl) = c.client.as_mut() else {
            return;
        };
        if cl.linger_until.is_some() {
            return; // ejected: its input no longer matters
        }
        let rest_owned: Vec<u8>;
        let mut bytes = bytes;
        if cl.proxy.is_some() {
            match self.client_proxy_header(slot, bytes, now) {
                Some(rest) => rest_owned = rest,
                None => return,
            }
            bytes = &rest_owned;
            if self.client_done_reading(slot) {
                return;
            }
        }
        let Some(mut deframer) = self.conns[slot].deframer.take() else {
            return;
        };
        if let Some(mut tls) = self.conns[slot].tls.take() {
            let mut rd = bytes;
            while !rd.is_empty() {
                if let Err(e) = tls.read_tls(&mut rd) {
                    self.mark_close(slot, format!("TLS read error: {e}"));
                    break;
                }
                if let Err(e) = tls.process_new_packets() {
                    // Tell the peer why, if the socket takes it.
                    let _ = tls.write_tls(&mut self.conns[slot].stream);
                    self.mark_close(slot, format!("TLS error: {e}"));
                    break;
                }
                loop {
                    let spare = deframer.spare();
                    match tls.reader().read(spare) {
                        Ok(0) => {
                            self.mark_close(slot, "connection closed by peer");
                            break;
                        }
                        Ok(n) => {
                            deframer.commit(n);
                            self.client_frames(slot, &mut deframer, now);
                            if self.client_done_reading(slot) {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            self.mark_close(slot, format!("TLS read error: {e}"));
                            break;
                        }
                    }
                }
                if self.client_done_reading(slot) {
                    break;
                }
            }
            let wants_write = tls.wants_write();
            self.conns[slot].tls = Some(tls);
            if wants_write {
                self.mark_dirty(slot);
            }
        } else {
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = deframer.push(rest);
                rest = &rest[n..];
                self.client_frames(slot, &mut deframer, now);
                if self.client_done_reading(slot) {
                    break;
                }
            }
        }
        self.conns[slot].deframer = Some(deframer);
    }

    /// Hands every complete client datagram to the session.
    fn client_frames(&mut self, slot: usize, deframer: &mut Deframer, now: Instant) {
        loop {
            if self.client_done_reading(slot) {
                return;
            }
            match deframer.next_datagram() {
                None => return,
                Some(Ok(body)) => self.with_session(slot, |s, out| s.on_client(now, body, out)),
                Some(Err(FrameError::Oversized { len, max })) => {
                    let reason = format!("Datagram of {len} bytes is over the limit of {max}.");
                    self.with_session(slot, |s, out| {
                        s.eject_now(CLIENT_DISCONNECT_OVERSIZED_DATAGRAM, &reason, true, out)
                    });
                    return;
                }
                Some(Err(FrameError::Empty)) => {
                    self.with_session(slot, |s, out| {
                        s.eject_now(
                            CLIENT_DISCONNECT_TRUNCATED_DATAGRAM,
                            "Zero-length datagram.",
                            true,
                            out,
                        )
                    });
                    return;
                }
            }
        }
    }

    /// Runs `f` on the client's session and applies what it answers.
    pub(super) fn with_session<F>(&mut self, slot: usize, f: F)
    where
        F: FnOnce(&mut Session, &mut SessionOut),
    {
        let Some(session) = self.conns[slot]
            .client
            .as_mut()
            .and_then(|cl| cl.session.as_mut())
        else {
            return;
        };
        let mut out = std::mem::take(&mut self.session_out);
        out.clear();
        f(session, &mut out);
        self.apply_session_output(slot, &mut out);
        self.session_out = out;
    }

    pub(super) fn mark_dirty(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Applies a session's answer: subscriptions, post-removes, datagrams into the cluster,
    /// bytes to the client, and its end.
    fn apply_session_output(&mut self, slot: usize, out: &mut SessionOut) {
        let pid = self.conns[slot].pid;
        for event in out.events.drain(..) {
            self.send_event(&event);
        }
        for job in out.jobs.drain(..) {
            let req = JobRequest {
                core: self.id,
                slot,
                pid,
                job,
            };
            if let Err(e) = self.shared.jobs.try_send(req) {
                let req = e.into_inner();
                log::warn!("client jobs: the worker's queue is full; a login is told to retry");
                self.jobs_refused.push((slot, pid, req.job.id()));
            }
        }
        for sub in out.subscriptions.drain(..) {
            match sub {
                Subscription::Add(ch) => {
                    if let Some(cl) = self.conns[slot].client.as_mut() {
                        cl.left.remove(&ch);
                    }
                    if self.conns[slot].md.singles.insert(ch) {
                        self.subscribe(pid, ch);
                    }
                }
                Subscription::Remove(ch) => {
                    if self.conns[slot].md.singles.remove(&ch) {
                        self.unsubscribe(pid, ch);
                    }
                    if let Some(cl) = self.conns[slot].client.as_mut() {
                        if cl.left.len() >= MAX_LEFT {
                            cl.left.clear();
                        }
                        cl.left.insert(ch);
                    }
                }
                Subscription::AddRange(..) | Subscription::RemoveRange(..) => {}
            }
        }
        let md = &self.shared.config.messagedirector;
        let limits = crate::md::participant::Limits {
            subscriptions: md.max_subscriptions_per_participant,
            post_removes: md.max_post_removes_per_participant,
        };
        for pr in out.post_removes.drain(..) {
            let channel = self.conns[slot]
                .client
                .as_ref()
                .and_then(|cl| cl.session.as_ref())
                .map_or(0, |s| s.allocated_channel());
            let mut frame = Vec::new();
            match pr {
                crate::clientagent::session::PostRemove::Add(dg) => {
                    let mut w = Writer::control(&mut frame, CONTROL_ADD_POST_REMOVE);
                    w.u64(channel).blob(&dg);
                    let framed = w.finish().is_ok();
                    if !self.conns[slot].md.add_post_remove(channel, dg, limits) {
                        log::warn!(
                            "{}: over max_post_removes_per_participant = {}; post-remove dropped",
                            self.conns[slot].label(),
                            limits.post_removes
                        );
                        continue;
                    }
                    if framed {
                        self.send_upstream(&frame, false);
                    }
                }
                crate::clientagent::session::PostRemove::Clear => {
                    self.conns[slot].md.clear_post_removes(channel);
                    let mut w = Writer::control(&mut frame, CONTROL_CLEAR_POST_REMOVES);
                    w.u64(channel);
                    if w.finish().is_ok() {
                        self.send_upstream(&frame, false);
                    }
                }
            }
        }
        if !out.datagrams.is_empty() {
            let datagrams = std::mem::take(&mut out.datagrams);
            self.route_own(pid, &datagrams);
            out.datagrams = datagrams;
            out.datagrams.clear();
        }
        if !out.to_client.is_empty() {
            self.client_write(slot, &out.to_client);
            out.to_client.clear();
        }
        if out.close.take().is_some() {
            self.client_linger(slot);
        }
    }

    /// Routes framed datagrams a client's session sent, as sent by its participant.
    fn route_own(&mut self, pid: crate::md::Pid, datagrams: &[u8]) {
        self.route_frames(datagrams, Some(pid));
    }

    /// Queues bytes for the client, cutting it off past its write buffer.
    fn client_write(&mut self, slot: usize, bytes: &[u8]) {
        let c = &mut self.conns[slot];
        let Some(cl) = c.client.as_ref() else {
            return;
        };
        if c.closing.is_some() || cl.shut {
            return;
        }
        let limit = cl.ca.write_buffer_size;
        c.out.extend_from_slice(bytes);
        self.client_deliveries += otp_wire::frames(bytes).count() as u64;
        let queued = c.queued();
        self.mark_dirty(slot);
        if limit != 0 && queued > limit {
            self.shared
                .stats
                .participants_cut_off
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "write buffer full: {queued} bytes unsent, over write_buffer_size = {limit}"
            );
            self.mark_close(slot, reason);
        }
    }

    /// The session ended by its own word (an eject, a drop, a disconnect): leave the cluster
    /// now, then flush what the client is owed and close the socket.
    fn client_linger(&mut self, slot: usize) {
        self.client_end(slot, None);
        let c = &mut self.conns[slot];
        if let Some(tls) = c.tls.as_mut() {
            tls.send_close_notify();
        }
        if let Some(cl) = c.client.as_mut() {
            cl.linger_until = Some(Instant::now() + LINGER);
        }
        self.mark_dirty(slot);
    }

    /// The session's end in the cluster: its last datagrams, unsubscriptions, post-removes.
    /// `lost` names why the connection went when it went without an eject or drop.
    pub(super) fn client_end(&mut self, slot: usize, lost: Option<&str>) {
        let c = &mut self.conns[slot];
        let Some(cl) = c.client.as_mut() else {
            return;
        };
        if cl.ended {
            return;
        }
        cl.ended = true;
        cl.inbox = Vec::new();
        let pid = c.pid;
        let mut out = std::mem::take(&mut self.session_out);
        out.clear();
        let session = cl.session.take();
        if session.is_none() {
            cl.release_unstarted();
        }
        if let Some(s) = &session {
            let mut map = self.shared.client_channels.lock();
            for ch in [s.allocated_channel(), s.channel()] {
                if map.get(&ch) == Some(&pid) {
                    map.remove(&ch);
                }
            }
        }
        if let Some(mut s) = session {
            s.on_closed(lost, &mut out);
            // Dropping the session frees its channel and its address count.
        }
        let singles: Vec<u64> = self.conns[slot].md.singles.drain().collect();
        for ch in singles {
            self.unsubscribe(pid, ch);
        }
        // Deliveries still on their way to this participant are dropped from here on.
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        for event in out.events.drain(..) {
            self.send_event(&event);
        }
        let datagrams = std::mem::take(&mut out.datagrams);
        self.route_own(pid, &datagrams);
        self.session_out = out;
        let post_removes = std::mem::take(&mut self.conns[slot].md.post_removes);
        let label = self.conns[slot].label();
        self.fire_post_removes(pid, &label, &post_removes);
    }

    /// A client connection left the slab (after `client_end`).
    pub(super) fn client_removed(&mut self, c: Conn, reason: &str) {
        self.clients -= 1;
        self.shared.client_budget.give_back();
        if reason.starts_with("write") {
            // It stopped reading: do not leave its unread bytes to the kernel.
            let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
        }
        log::debug!("clientagent: {} closed: {reason}", c.label());
    }

    /// Keeps a client's new output back to share a write with what follows; true = it waits
    /// (until `flush_due_clients` writes it). With `flush_delay_ms`, each output waits that
    /// long; else, while this core is busy (`Pacing`), a client is written at most once per
    /// the core's spacing (capped by `busy_flush_delay_max_ms`), so a client written long
    /// enough ago is written at once. Output that must not wait: an ejected client's last
    /// words, a socket that took only part of the last write, and a backlog of
    /// `FLUSH_AT_ONCE` bytes or more.
    pub(super) fn defer_client_flush(&mut self, slot: usize, now: Instant) -> bool {
        let spacing = self.pacing.spacing();
        let c = &mut self.conns[slot];
        let queued = c.queued();
        let Some(cl) = c.client.as_mut() else {
            return false;
        };
        let due = match cl.ca.flush_delay {
            Some(delay) => now + delay,
            None => {
                let spacing = spacing.min(cl.ca.busy_flush_delay_max);
                match cl.last_write {
                    Some(last) if !spacing.is_zero() && last + spacing > now => last + spacing,
                    _ => return false,
                }
            }
        };
        if cl.linger_until.is_some() || cl.write_since.is_some() || queued >= FLUSH_AT_ONCE {
            cl.flush_at = None;
            return false;
        }
        if cl.flush_at.is_none() {
            cl.flush_at = Some(due);
            self.deferred.push(std::cmp::Reverse((due, slot)));
        }
        true
    }

    /// Writes the coalesced output that is due. An entry whose client has since been
    /// written (or whose slot was reused) no longer matches its `flush_at` and is skipped.
    pub(super) fn flush_due_clients(&mut self, now: Instant) {
        while let Some(&std::cmp::Reverse((at, slot))) = self.deferred.peek() {
            if at > now {
                break;
            }
            self.deferred.pop();
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            match c.client.as_mut() {
                Some(cl) if cl.flush_at == Some(at) => cl.flush_at = None,
                _ => continue,
            }
            if c.closing.is_none() {
                self.flush_client(slot);
            }
        }
    }

    /// Writes a client's queued bytes; shuts the socket for writing once an ended session's
    /// last bytes are out.
    pub(super) fn flush_client(&mut self, slot: usize) {
        let now = Instant::now();
        let c = &mut self.conns[slot];
        let before = c.queued();
        let writes = c.writes;
        let flushed = c.flush();
        self.client_socket_writes += c.writes - writes;
        if let Err(e) = flushed {
            self.mark_close(slot, format!("write error: {e}"));
            return;
        }
        let after = c.queued();
        let Some(cl) = c.client.as_mut() else {
            return;
        };
        if after < before {
            cl.last_write = Some(now);
        }
        if after == 0 {
            cl.write_since = None;
            cl.flush_at = None;
            if c.out.capacity() > 64 * 1024 {
                c.out = Vec::new();
            }
            if cl.linger_until.is_some() && !cl.shut {
                cl.shut = true;
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
        } else if after < before || cl.write_since.is_none() {
            cl.write_since = Some(now);
        }
    }

    /// The job worker's answer for the client in `slot`, if it is still that participant.
    pub(super) fn client_job_done(&mut self, slot: usize, pid: Pid, id: u32, result: JobResult) {
        if self.conns.get(slot).is_none_or(|c| c.pid != pid) {
            return;
        }
        let now = Instant::now();
        self.with_session(slot, |s, out| s.on_job_done(now, id, result, out));
    }

    /// Hands queued internal datagrams to their sessions, and looks at client timers.
    pub(super) fn run_clients(&mut self) {
        let now = Instant::now();
        for (slot, pid, id) in std::mem::take(&mut self.jobs_refused) {
            self.client_job_done(slot, pid, id, JobResult::Unavailable);
        }
        for _ in 0..CLIENT_ROUNDS_PER_TURN {
            if self.client_waiting.is_empty() {
                break;
            }
            let waiting = std::mem::take(&mut self.client_waiting);
            for slot in waiting {
                let Some(cl) = self.conns.get_mut(slot).and_then(|c| c.client.as_mut()) else {
                    continue;
                };
                cl.in_waiting = false;
                let inbox = std::mem::take(&mut cl.inbox);
                for frame in otp_wire::frames(&inbox) {
                    if self.conns[slot].closing.is_some() {
                        break;
                    }
                    // Delivered for a channel the session has left since it was routed (a
                    // CLOSE_CHANNEL or SET_CLIENT_ID from the same sender came first): as on
                    // astrond, where the change takes effect at once, it is not for us.
                    if !self.still_subscribed(slot, frame) {
                        continue;
                    }
                    self.with_session(slot, |s, out| s.on_internal(now, &frame[2..], out));
                }
                // Keep the buffer for next time unless it grew large.
                if let Some(cl) = self.conns.get_mut(slot).and_then(|c| c.client.as_mut()) {
                    if cl.inbox.is_empty() && !cl.ended && inbox.capacity() <= 64 * 1024 {
                        let mut inbox = inbox;
                        inbox.clear();
                        cl.inbox = inbox;
                    }
                }
            }
        }
        if self.clients > 0 && now >= self.next_client_scan {
            self.next_client_scan = now + ROLE_TICK;
            self.scan_clients(now);
        }
        self.close_marked();
    }

    /// A CLIENTAGENT_OPEN_CHANNEL or SET_CLIENT_ID read from a participant: subscribes the
    /// client to its new channel now, before datagrams read after it are routed (the session
    /// records the subscription when it handles the message; a second subscribe is a no-op).
    /// On astrond, where the client handles the message as it is routed, the channel is
    /// likewise listened to by the next datagram.
    pub(super) fn client_presubscribe(&mut self, frame: &[u8]) {
        let Ok(dg) = otp_wire::InternalDatagram::parse(&frame[2..]) else {
            return;
        };
        let (Some(target), Ok(new)) = (dg.recipients.get(0), dg.payload_reader().u64()) else {
            return;
        };
        let pid = {
            let mut map = self.shared.client_channels.lock();
            let Some(&pid) = map.get(&target) else {
                return;
            };
            if dg.msgtype == otp_wire::msgtypes::CLIENTAGENT_SET_CLIENT_ID {
                map.insert(new, pid);
            }
            pid
        };
        self.subscribe(pid, new);
    }

    /// False for a datagram routed to the client only through channels it has since left.
    fn still_subscribed(&self, slot: usize, frame: &[u8]) -> bool {
        let c = &self.conns[slot];
        let Some(cl) = c.client.as_ref() else {
            return false;
        };
        if cl.left.is_empty() {
            return true;
        }
        let Ok(header) = otp_wire::RoutableHeader::parse(&frame[otp_wire::LENGTH_TAG_BYTES..])
        else {
            return false;
        };
        let mut left = false;
        for ch in header.recipients.iter() {
            if c.md.singles.contains(&ch) {
                return true;
            }
            left |= cl.left.contains(&ch);
        }
        !left
    }

    /// Timers: sessions' deadlines, PROXY headers, write timeouts, lingering sockets; and
    /// read buffers of idle clients are given back.
    fn scan_clients(&mut self, now: Instant) {
        let mut due = Vec::new();
        let mut close = Vec::new();
        for (slot, c) in self.conns.iter_mut() {
            let Some(cl) = c.client.as_ref() else {
                continue;
            };
            if c.closing.is_some() {
                continue;
            }
            if let Some(until) = cl.linger_until {
                if until <= now {
                    close.push((slot, "closed after the session ended".to_string()));
                }
                continue;
            }
            if cl.proxy_deadline.is_some_and(|d| d <= now) {
                close.push((slot, "no PROXY header in time".to_string()));
                continue;
            }
            if let (Some(since), Some(limit)) = (cl.write_since, cl.ca.write_timeout) {
                if now.duration_since(since) >= limit {
                    close.push((
                        slot,
                        format!(
                            "write timeout: nothing written for {} ms",
                            limit.as_millis()
                        ),
                    ));
                    continue;
                }
            }
            if cl
                .session
                .as_ref()
                .and_then(|s| s.next_deadline())
                .is_some_and(|d| d <= now)
            {
                due.push(slot);
            }
            if let Some(d) = c.deframer.as_mut() {
                if d.buffered() == 0 {
                    d.release();
                }
            }
        }
        for (slot, reason) in close {
            self.mark_close(slot, reason);
        }
        for slot in due {
            self.with_session(slot, |s, out| s.on_time(now, out));
        }
    }
}

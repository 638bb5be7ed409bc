//! The core's side of TLS on MD links: a participant on a TLS-enabled listener is looked at
//! before anything is read (its first bytes say TLS or plain), its handshake runs in the event
//! loop under a deadline, and a refusal (plain where TLS is required, no or a bad certificate,
//! a late handshake) is logged, counted and sent as an event; the upstream link starts TLS once
//! its TCP connection is made. Datagrams read through TLS are handled as any participant's.

use super::{Core, Flow, READS_PER_TURN};
use crate::config::TlsParticipants;
use crate::runtime::conn::ConnKind;
use crate::runtime::md_tls::{first_bytes, FirstBytes, SNIFF_BYTES, TLS_BUFFER};
use otp_wire::{Deframer, FrameError};
use std::io::{ErrorKind, Read};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Core {
    /// A participant just adopted: on a TLS-enabled listener, its first bytes are looked at
    /// (`sniff_first_bytes`) before anything is read, within the handshake deadline.
    pub(super) fn expect_tls_or_plain(&mut self, slot: usize) {
        let Some(tls) = &self.shared.md_tls else {
            return;
        };
        let at = Instant::now() + tls.handshake_timeout;
        let c = &mut self.conns[slot];
        c.sniff = true;
        self.tls_deadlines.push_back((at, slot, c.pid));
    }

    /// The upstream link's TCP connection is made: true if it is up now (no
    /// `upstream_tls`, or the upstream MD has accepted our certificate). Otherwise TLS starts
    /// here, and `tls_bytes` calls `upstream_check_connected` again once we are accepted: the
    /// link is up (events, replay, backoff reset) only then.
    pub(super) fn upstream_tls_ready(&mut self, slot: usize) -> bool {
        let Some(tls) = &self.shared.upstream_tls else {
            return true;
        };
        let c = &mut self.conns[slot];
        if c.tls.is_some() {
            return c.tls_accepted;
        }
        match rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone()) {
            Ok(mut t) => {
                t.set_buffer_limit(Some(TLS_BUFFER));
                let at = Instant::now() + tls.handshake_timeout;
                c.tls = Some(Box::new(rustls::Connection::Client(t)));
                self.tls_deadlines.push_back((at, slot, c.pid));
                self.mark_dirty(slot); // the ClientHello
            }
            Err(e) => {
                self.mark_close(slot, format!("cannot start TLS: {e}"));
                self.close_marked();
            }
        }
        false
    }

    /// Looks at a participant's first bytes without reading them: TLS starts a server
    /// session; plain goes on as a plain participant if the mode and `allow` admit it. Returns
    /// true once decided and still open; false while too few bytes have arrived (the next
    /// readiness event brings more) or when refused.
    pub(super) fn sniff_first_bytes(&mut self, slot: usize) -> bool {
        let mut b = [0u8; SNIFF_BYTES];
        let c = &mut self.conns[slot];
        let n = loop {
            match c.stream.peek(&mut b) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) => {
                    self.mark_close(slot, format!("read error: {e}"));
                    return false;
                }
            }
        };
        if n == 0 || (n < SNIFF_BYTES && c.peer_closed) {
            self.mark_close(slot, "connection closed by peer");
            return false;
        }
        if n < SNIFF_BYTES {
            return false;
        }
        match first_bytes(&b) {
            FirstBytes::Tls => self.start_listener_tls(slot),
            FirstBytes::Plain => self.admit_plain(slot),
        }
    }

    fn start_listener_tls(&mut self, slot: usize) -> bool {
        let Some(tls) = &self.shared.md_tls else {
            return false;
        };
        match rustls::ServerConnection::new(tls.config.clone()) {
            Ok(mut t) => {
                t.set_buffer_limit(Some(TLS_BUFFER));
                let c = &mut self.conns[slot];
                c.tls = Some(Box::new(rustls::Connection::Server(t)));
                c.sniff = false;
                true
            }
            Err(e) => {
                self.refuse_tls(slot, &format!("cannot start TLS: {e}"));
                false
            }
        }
    }

    /// A participant that speaks plain TCP on a TLS-enabled listener: admitted only when the
    /// mode is Optional and its address is in `allow`.
    fn admit_plain(&mut self, slot: usize) -> bool {
        let Some(tls) = &self.shared.md_tls else {
            return false;
        };
        let addr = self.conns[slot].addr;
        if tls.participants == TlsParticipants::Required {
            self.refuse_tls(
                slot,
                "plain TCP, and messagedirector.tls.participants is Required",
            );
            return false;
        }
        if !self.shared.md_allow.allows(addr.ip()) {
            self.conns[slot].refused = true;
            self.mark_close(slot, "not in messagedirector.allow");
            self.refuse_not_allowed(addr);
            return false;
        }
        self.conns[slot].sniff = false;
        log::debug!("messagedirector: participant {addr} speaks plain TCP (allowed)");
        true
    }

    /// Reads a TLS connection (a participant's or the upstream link); returns true if the
    /// socket may have more to read.
    pub(super) fn read_tls(&mut self, slot: usize) -> bool {
        let mut scratch = std::mem::take(&mut self.client_scratch);
        let mut more = true;
        let mut accepted = false;
        for _ in 0..READS_PER_TURN {
            let res = self.conns[slot].stream.read(&mut scratch);
            match res {
                Ok(0) => {
                    self.mark_close(slot, "connection closed by peer");
                    more = false;
                }
                Ok(n) => {
                    if let Some(live) = &self.conns[slot].child {
                        live.heard_now();
                    } else if self.conns[slot].kind == ConnKind::Upstream {
                        self.shared.stats.upstream_heard();
                    }
                    accepted = self.tls_bytes(slot, &scratch[..n]);
                    more = n == scratch.len() || self.conns[slot].peer_closed;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => more = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.mark_close(slot, format!("read error: {e}"));
                    more = false;
                }
            }
            if !more || accepted || self.conns[slot].closing.is_some() {
                break;
            }
        }
        self.client_scratch = scratch;
        if accepted && self.conns[slot].closing.is_none() {
            // The link is up now; this may close it (and free the slot) if the socket failed.
            self.upstream_check_connected(slot);
        }
        self.conns
            .get(slot)
            .is_some_and(|c| more && c.closing.is_none())
    }

    /// Bytes read from a TLS connection: into the TLS session, and the plaintext that comes
    /// out into the connection's datagrams. True when they tell the upstream link that the
    /// upstream MD has just accepted this MD's certificate.
    fn tls_bytes(&mut self, slot: usize, bytes: &[u8]) -> bool {
        let c = &mut self.conns[slot];
        let (Some(mut tls), Some(mut deframer)) = (c.tls.take(), c.deframer.take()) else {
            return false;
        };
        let upstream = c.kind == ConnKind::Upstream;
        let mut accepted_now = false;
        let mut rd = bytes;
        while !rd.is_empty() && self.conns[slot].closing.is_none() {
            if let Err(e) = tls.read_tls(&mut rd) {
                self.mark_close(slot, format!("TLS read error: {e}"));
                break;
            }
            let handshaking = tls.is_handshaking();
            if let Err(e) = tls.process_new_packets() {
                // Tell the peer why, if the socket takes it.
                let _ = tls.write_tls(&mut self.conns[slot].stream);
                if handshaking {
                    self.tls_handshake_failed(slot, &format!("TLS handshake failed: {e}"));
                } else {
                    self.mark_close(slot, format!("TLS error: {e}"));
                }
                break;
            }
            if handshaking && !tls.is_handshaking() {
                self.tls_established(slot, &tls);
            }
            // Our certificate was accepted: with TLS 1.2 the server's Finished says so; with
            // TLS 1.3 it is judged after our Finished, and the first record after the
            // handshake (the root's session tickets) says so.
            if upstream && !self.conns[slot].tls_accepted && !tls.is_handshaking() {
                let tls12 = tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2);
                if tls12 || !handshaking {
                    self.conns[slot].tls_accepted = true;
                    accepted_now = true;
                }
            }
            loop {
                match tls.reader().read(deframer.spare()) {
                    Ok(0) => {
                        self.mark_close(slot, "connection closed by peer");
                        break;
                    }
                    Ok(n) => {
                        deframer.commit(n);
                        self.tls_frames(slot, &mut deframer);
                        if self.conns[slot].closing.is_some() {
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
        }
        let c = &mut self.conns[slot];
        c.tls = Some(tls);
        c.deframer = Some(deframer);
        // Handshake records to send, or plaintext the finished handshake lets out.
        if c.queued() > 0 {
            self.mark_dirty(slot);
        }
        accepted_now
    }

    /// Handles every complete datagram, as `read_conn` does for a plain connection.
    fn tls_frames(&mut self, slot: usize, deframer: &mut Deframer) {
        loop {
            let frame = match deframer.next_framed() {
                None => return,
                Some(Ok(f)) => f,
                Some(Err(FrameError::Oversized { len, max })) => {
                    self.mark_close(
                        slot,
                        format!("datagram of {len} bytes exceeds max_datagram_bytes = {max}"),
                    );
                    return;
                }
                Some(Err(FrameError::Empty)) => {
                    self.mark_close(slot, "zero-length datagram");
                    return;
                }
            };
            if let Flow::Close(reason) = self.handle_datagram(slot, frame) {
                self.mark_close(slot, reason);
            }
            if self.conns[slot].closing.is_some() {
                return;
            }
        }
    }

    fn tls_established(&mut self, slot: usize, tls: &rustls::Connection) {
        let c = &self.conns[slot];
        let version = tls
            .protocol_version()
            .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}"));
        match c.kind {
            ConnKind::Upstream => log::debug!(
                "messagedirector: TLS handshake with upstream MD {} done ({version}): its certificate is valid",
                c.addr
            ),
            _ => log::info!(
                "messagedirector: participant {} verified: a client certificate from messagedirector.tls.client_ca ({version})",
                c.addr
            ),
        }
    }

    /// A handshake that failed: on the listener a refusal; on the upstream link, the link
    /// is lost (and retried with backoff; `upstream_lost` logs and reports it).
    fn tls_handshake_failed(&mut self, slot: usize, reason: &str) {
        if self.conns[slot].kind == ConnKind::Upstream {
            self.mark_close(slot, reason.to_string());
        } else {
            self.refuse_tls(slot, reason);
        }
    }

    /// A connection the listener's TLS refused: counted, an event, a warning at most once a
    /// second (a scan of the port must not flood the log), and closed.
    fn refuse_tls(&mut self, slot: usize, reason: &str) {
        let addr = self.conns[slot].addr;
        self.conns[slot].refused = true;
        self.mark_close(slot, reason.to_string());
        self.shared
            .stats
            .participants_refused_tls
            .fetch_add(1, Ordering::Relaxed);
        self.tls_refused += 1;
        let now = Instant::now();
        if now >= self.tls_refused_log_at {
            log::warn!(
                "messagedirector: refused {} connection(s), latest from {addr}: {reason}",
                self.tls_refused
            );
            self.tls_refused = 0;
            self.tls_refused_log_at = now + Duration::from_secs(1);
        }
        let event = crate::roles::event::encode(
            "participant-refused",
            &[
                ("role", crate::roles::event::Ev::Str("messagedirector")),
                (
                    "remote_address",
                    crate::roles::event::Ev::Str(&addr.to_string()),
                ),
                ("reason", crate::roles::event::Ev::Str(reason)),
            ],
        );
        self.send_event(&event);
    }

    /// When the oldest handshake under way is due.
    pub(super) fn next_tls_deadline(&self) -> Option<Instant> {
        self.tls_deadlines.front().map(|d| d.0)
    }

    /// Closes connections whose handshake is late. A participant that has sent nothing (or
    /// too little to tell) by then is taken as plain when plain participants from its address
    /// are welcome (Optional, in `allow`): a plain participant may be slow to speak first.
    pub(super) fn expire_tls_handshakes(&mut self, now: Instant) {
        while let Some(&(at, slot, pid)) = self.tls_deadlines.front() {
            if at > now {
                break;
            }
            self.tls_deadlines.pop_front();
            let Some(c) = self.conns.get(slot) else {
                continue;
            };
            if c.pid != pid || c.closing.is_some() {
                continue;
            }
            let handshaking = c.tls.as_ref().is_some_and(|t| t.is_handshaking())
                || (c.kind == ConnKind::Upstream && !c.tls_accepted);
            if !c.sniff && !handshaking {
                continue;
            }
            let kind = c.kind;
            let plain_welcome = self.shared.md_tls.as_ref().is_some_and(|t| {
                t.participants == TlsParticipants::Optional
                    && self.shared.md_allow.allows(c.addr.ip())
            });
            if c.sniff && plain_welcome {
                self.conns[slot].sniff = false;
                if !self.conns[slot].in_ready {
                    self.conns[slot].in_ready = true;
                    self.ready.push(slot);
                }
                continue;
            }
            let ms = match kind {
                ConnKind::Upstream => self.shared.upstream_tls.as_ref(),
                _ => None,
            }
            .map_or_else(
                || self.shared.md_tls.as_ref().map(|t| t.handshake_timeout),
                |t| Some(t.handshake_timeout),
            )
            .unwrap_or_default()
            .as_millis();
            let reason = format!("no TLS handshake within {ms} ms (handshake_timeout_ms)");
            self.tls_handshake_failed(slot, &reason);
        }
        self.close_marked();
    }
}

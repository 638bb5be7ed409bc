//! One TCP connection owned by a core: its read de-framer, its queue of unsent bytes, and the
//! MD state that belongs to the participant (`md::participant`: its channels, post-removes,
//! name).

use crate::md::participant::Participant;
use crate::md::Pid;
use mio::net::TcpStream;
use otp_wire::Deframer;
use std::io::{self, Write};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnKind {
    /// An AI, UberDOG, role process or downstream MD.
    Participant,
    /// Our own link to the upstream MD (core 0 only).
    Upstream,
    /// An untrusted client of a ClientAgent listener (see `client.rs`).
    Client,
}

pub(super) struct Conn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub pid: Pid,
    pub kind: ConnKind,
    /// `None` while its datagrams are being handled (taken out to free the borrow).
    pub deframer: Option<Deframer>,
    pub out: Vec<u8>,
    pub sent: usize,
    /// Socket writes that took bytes (for TLS: records written), since the connection opened.
    pub writes: u64,
    pub md: Participant,
    /// Set when the connection must be closed at the end of this loop turn.
    pub closing: Option<String>,
    pub in_ready: bool,
    /// The peer has shut its side (a readiness event said so): read until the end of the
    /// stream, even after a short read, or data and FIN that came together would leave the
    /// connection open with no further event to notice the close.
    pub peer_closed: bool,
    pub in_dirty: bool,
    /// TLS (a client's, a participant's on a TLS-enabled MD listener, or the upstream link's):
    /// `out` then holds plaintext, encrypted as it is flushed.
    pub tls: Option<Box<rustls::Connection>>,
    /// A participant on a TLS-enabled MD listener whose first bytes have not been looked at
    /// yet (TLS or plain: `core/md_tls_io.rs`); nothing is read until they are.
    pub sniff: bool,
    /// Refused before it was a participant (TLS, `allow`): logged and counted already; closed
    /// without an abort, so that a TLS alert reaches the peer.
    pub refused: bool,
    /// The upstream link only: the upstream MD has accepted this MD's certificate (see
    /// `core/md_tls_io.rs`); until then the link is not up.
    pub tls_accepted: bool,
    /// The ClientAgent side of a client connection.
    pub client: Option<Box<super::client::ClientConn>>,
    /// Set when the participant named itself as an otpd child MD (`md::link_name`).
    pub child: Option<std::sync::Arc<super::child_mds::ChildLive>>,
}

impl Conn {
    pub(super) fn new(
        stream: TcpStream,
        addr: SocketAddr,
        pid: Pid,
        kind: ConnKind,
        read_buf: usize,
        max_dg: usize,
    ) -> Conn {
        Conn {
            stream,
            addr,
            pid,
            kind,
            deframer: Some(Deframer::new(read_buf, max_dg)),
            out: Vec::new(),
            sent: 0,
            writes: 0,
            md: Participant::default(),
            closing: None,
            in_ready: false,
            peer_closed: false,
            in_dirty: false,
            tls: None,
            sniff: false,
            refused: false,
            tls_accepted: false,
            client: None,
            child: None,
        }
    }

    /// A name for logs: the CONTROL_SET_CON_NAME label if given, else the peer address.
    pub(super) fn label(&self) -> String {
        if self.md.name.is_empty() {
            format!("{} ({})", self.addr, self.pid)
        } else {
            format!("'{}' {} ({})", self.md.name, self.addr, self.pid)
        }
    }

    pub(super) fn queued(&self) -> usize {
        let tls = self.tls.as_ref().is_some_and(|t| t.wants_write());
        self.out.len() - self.sent + tls as usize
    }

    pub(super) fn close(&mut self, reason: impl Into<String>) {
        if self.closing.is_none() {
            self.closing = Some(reason.into());
        }
    }

    /// Writes as much as the socket takes. Compaction moves only the unsent tail and only once
    /// half the buffer is sent, so its cost stays linear in the bytes written.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if self.tls.is_some() {
            return self.flush_tls();
        }
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
                Ok(n) => {
                    self.sent += n;
                    self.writes += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            // Give back memory after a burst, keeping a working buffer.
            if self.out.capacity() > 4 << 20 {
                self.out.shrink_to(1 << 20);
            }
        } else if self.sent > self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
            // A backlog that never empties gives memory back too once it has shrunk well
            // below its high-water mark (each shrink halves the capacity at least: linear).
            if self.out.capacity() > 4 << 20 && self.out.capacity() > 4 * self.out.len() {
                self.out.shrink_to((2 * self.out.len()).max(1 << 20));
            }
        }
        Ok(())
    }

    /// As `flush`, through TLS: plaintext goes into the TLS session (bounded by its buffer
    /// limit), records go to the socket.
    fn flush_tls(&mut self) -> io::Result<()> {
        let tls = self.tls.as_mut().expect("a TLS connection");
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
                    Ok(_) => self.writes += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.sent >= self.out.len() {
                self.out.clear();
                self.sent = 0;
                return Ok(());
            }
            let n = tls.writer().write(&self.out[self.sent..])?;
            if n == 0 {
                return Ok(());
            }
            self.sent += n;
        }
    }
}

/// TCP keepalive (probes after `keepalive_ms` idle, then every `keepalive_ms`) and
/// TCP_USER_TIMEOUT (`link_timeout_ms`: sent data or probes unacknowledged that long end the
/// connection with an error) on an MD link, so that a dead peer or path is noticed without
/// any message of our own (the peer may be astrond). 0 = leave that one to the kernel.
pub(super) fn watch_link(stream: &TcpStream, keepalive_ms: u64, link_timeout_ms: u64) {
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    let sock = socket2::SockRef::from(stream);
    if keepalive_ms > 0 {
        let every = Duration::from_millis(keepalive_ms.max(1000));
        let ka = socket2::TcpKeepalive::new()
            .with_time(every)
            .with_interval(every);
        if let Err(e) = sock.set_tcp_keepalive(&ka) {
            log::debug!("messagedirector: cannot set TCP keepalive: {e}");
        }
    }
    if link_timeout_ms > 0 {
        let ms = link_timeout_ms.min(u32::MAX as u64) as libc::c_uint;
        // SAFETY: a valid descriptor and a c_uint option value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&ms as *const libc::c_uint).cast(),
                std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!(
                "messagedirector: cannot set TCP_USER_TIMEOUT: {}",
                io::Error::last_os_error()
            );
        }
    }
}

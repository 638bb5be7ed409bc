//! The runtime's side of one client connection: the ClientAgent it came through, its
//! session (once the PROXY header, if any, is read), the internal datagrams waiting for the
//! session, and the timers of a connection on its way out.

use crate::clientagent::session::Session;
use crate::clientagent::ClientAgent;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// How long an ejected client's connection is kept open, discarding input, so that it can
/// read its CLIENT_EJECT before the socket closes.
pub(super) const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) struct ClientConn {
    pub ca: Arc<ClientAgent>,
    /// The channel allocated to this client; the session owns it once it exists.
    pub channel: u64,
    pub admitted: Option<IpAddr>,
    pub local: SocketAddr,
    pub session: Option<Session>,
    /// Bytes of the PROXY header read so far, while it is awaited.
    pub proxy: Option<Vec<u8>>,
    /// When the PROXY header must have arrived.
    pub proxy_deadline: Option<Instant>,
    /// Framed internal datagrams delivered to the client's channels, not yet handled.
    pub inbox: Vec<u8>,
    pub in_waiting: bool,
    /// Since when unsent bytes have waited without the socket taking any.
    pub write_since: Option<Instant>,
    /// When the bytes waiting to be coalesced (`flush_delay_ms`) are due to be written.
    pub flush_at: Option<Instant>,
    /// When bytes were last written to the socket (write pacing under load).
    pub last_write: Option<Instant>,
    /// Set once the session ended: the socket is flushed, shut for writing and closed by then.
    pub linger_until: Option<Instant>,
    pub shut: bool,
    /// The session's end was handled (unsubscribed, post-removes fired).
    pub ended: bool,
    /// Channels the session stopped listening to: datagrams still on their way for them are
    /// dropped (bounded: forgotten past `MAX_LEFT`).
    pub left: rustc_hash::FxHashSet<u64>,
}

/// Channels remembered in `ClientConn::left`.
pub(super) const MAX_LEFT: usize = 1024;

impl ClientConn {
    pub(super) fn new(
        ca: Arc<ClientAgent>,
        channel: u64,
        admitted: Option<IpAddr>,
        local: SocketAddr,
        now: Instant,
    ) -> ClientConn {
        let haproxy = ca.haproxy;
        let hello = ca.limits.hello_timeout_ms;
        ClientConn {
            proxy: haproxy.then(Vec::new),
            proxy_deadline: (haproxy && hello > 0)
                .then(|| now + std::time::Duration::from_millis(hello)),
            ca,
            channel,
            admitted,
            local,
            session: None,
            inbox: Vec::new(),
            in_waiting: false,
            write_since: None,
            flush_at: None,
            last_write: None,
            linger_until: None,
            shut: false,
            ended: false,
            left: Default::default(),
        }
    }

    /// Frees the channel and the address count when no session took them over.
    pub(super) fn release_unstarted(&mut self) {
        if self.session.is_none() && self.channel != 0 {
            self.ca.free_channel(self.channel);
            if let Some(ip) = self.admitted.take() {
                self.ca.release_address(ip);
            }
            self.channel = 0;
        }
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.release_unstarted();
    }
}

/// A CLIENT_EJECT datagram, framed, for connections refused before they have a session.
pub(super) fn eject_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + reason.len());
    let mut w = otp_wire::Writer::client(&mut v, otp_wire::msgtypes::CLIENT_EJECT);
    w.u16(code).string(reason);
    w.finish_bounded();
    v
}

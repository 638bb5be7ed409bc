//! The admin API's link to the cluster: one connection to this process's MD as a participant
//! (so what it asks reaches every ClientAgent of the MD tree), a reply channel of its own, and
//! the gathering of the sessions' answers for `gather_ms` before the HTTP answer is given. One
//! thread reads the link; requests are written by the HTTP thread.

use crate::http::{Answer, Completer, Ticket};
use otp_wire::msgtypes::*;
use otp_wire::{Deframer, InternalDatagram, Writer};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows one client list holds at most (what is past it is counted, not kept).
pub(super) const MAX_LISTED: usize = 100_000;
/// Client lists being gathered at once, at most.
const MAX_GATHERS: usize = 8;

/// A client list being gathered.
struct Gather {
    ticket: Ticket,
    until: Instant,
    rows: Vec<Value>,
    more: usize,
}

/// Reads one answer's payload after its context into the API's JSON answer.
pub(super) type Decode =
    Box<dyn FnOnce(&mut otp_wire::Reader<'_>) -> Result<Answer, otp_wire::WireError> + Send>;

/// A request waiting for its one answer (from the Database).
struct Reply {
    ticket: Ticket,
    msgtype: u16,
    decode: Decode,
    /// Forgotten after this (the HTTP server has answered 504 by then).
    until: Instant,
}

/// Requests waiting for answers at most (a Database that never answers cannot fill memory).
const MAX_REPLIES: usize = 256;
/// How long an answer is waited for before the request is forgotten.
const REPLY_WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Pending {
    next_context: u32,
    gathers: BTreeMap<u32, Gather>,
    replies: BTreeMap<u32, Reply>,
}

/// The link: written by the HTTP thread, read by its own thread.
pub(super) struct Link {
    md: SocketAddr,
    channel: u64,
    gather: Duration,
    stream: Arc<Mutex<Option<TcpStream>>>,
    pending: Arc<Mutex<Pending>>,
    completer: Completer,
}

impl Link {
    pub(super) fn new(
        md: SocketAddr,
        channel: u64,
        gather: Duration,
        completer: Completer,
    ) -> Link {
        Link {
            md,
            channel,
            gather,
            stream: Arc::new(Mutex::new(None)),
            pending: Arc::new(Mutex::new(Pending::default())),
            completer,
        }
    }

    /// Writes `datagram` (framed) on the link, connecting first if it is down.
    fn send(&self, datagram: &[u8]) -> Result<(), String> {
        let mut guard = self.stream.lock();
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let s = guard.as_mut().expect("connected");
        if let Err(e) = s.write_all(datagram) {
            *guard = None;
            return Err(format!("the MD link failed: {e}"));
        }
        Ok(())
    }

    /// Connects, names itself, subscribes its reply channel, and starts the reading thread.
    fn connect(&self) -> Result<TcpStream, String> {
        let s = TcpStream::connect_timeout(&self.md, Duration::from_secs(2))
            .map_err(|e| format!("cannot reach the MD at {}: {e}", self.md))?;
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let mut hello = Vec::new();
        let mut w = Writer::control(&mut hello, CONTROL_SET_CON_NAME);
        w.string("otpd admin API");
        let _ = w.finish();
        let mut w = Writer::control(&mut hello, CONTROL_ADD_CHANNEL);
        w.u64(self.channel);
        let _ = w.finish();
        (&s).write_all(&hello)
            .map_err(|e| format!("the MD link failed: {e}"))?;
        let reader = s.try_clone().map_err(|e| e.to_string())?;
        let _ = reader.set_read_timeout(Some(Duration::from_millis(50)));
        let pending = Arc::clone(&self.pending);
        let completer = self.completer.clone();
        std::thread::Builder::new()
            .name("otpd-admin-link".into())
            .spawn(move || read_link(reader, &pending, &completer))
            .map_err(|e| e.to_string())?;
        log::info!(
            "admin: linked to the MD at {} on channel {}",
            self.md,
            self.channel
        );
        Ok(s)
    }

    /// Asks every session of the tree to describe itself; `ticket` is answered with the list
    /// after `gather_ms`. Err: the answer to give now.
    pub(super) fn list_clients(&self, ticket: Ticket) -> Result<(), Answer> {
        let context = {
            let mut p = self.pending.lock();
            if p.gathers.len() >= MAX_GATHERS {
                return Err(super::error(
                    503,
                    "too many client lists under way; try again",
                ));
            }
            p.next_context = p.next_context.wrapping_add(1);
            let context = p.next_context;
            p.gathers.insert(
                context,
                Gather {
                    ticket,
                    until: Instant::now() + self.gather,
                    rows: Vec::new(),
                    more: 0,
                },
            );
            context
        };
        let mut dg = Vec::new();
        let mut w = Writer::internal1(
            &mut dg,
            otp_wire::channels::BCHAN_CLIENTS,
            self.channel,
            CLIENTAGENT_ADMIN_LIST,
        );
        w.u32(context);
        let _ = w.finish();
        self.send(&dg).map_err(|e| {
            self.pending.lock().gathers.remove(&context);
            super::error(502, &e)
        })
    }

    /// Sends a request to `channel` (`write` writes its payload after the context) and
    /// answers `ticket` when the answer `msgtype` with that context comes back. Err: the
    /// answer to give now.
    pub(super) fn request(
        &self,
        ticket: Ticket,
        channel: u64,
        msgtype: u16,
        write: impl FnOnce(&mut Writer<'_>),
        answer: u16,
        decode: Decode,
    ) -> Result<(), Answer> {
        let context = {
            let mut p = self.pending.lock();
            if p.replies.len() >= MAX_REPLIES {
                return Err(super::error(503, "too many requests under way; try again"));
            }
            p.next_context = p.next_context.wrapping_add(1);
            let context = p.next_context;
            p.replies.insert(
                context,
                Reply {
                    ticket,
                    msgtype: answer,
                    decode,
                    until: Instant::now() + REPLY_WAIT,
                },
            );
            context
        };
        let mut dg = Vec::new();
        let mut w = Writer::internal1(&mut dg, channel, self.channel, msgtype);
        w.u32(context);
        write(&mut w);
        if let Err(e) = w.finish() {
            self.pending.lock().replies.remove(&context);
            return Err(super::error(400, &e.to_string()));
        }
        self.send(&dg).map_err(|e| {
            self.pending.lock().replies.remove(&context);
            super::error(502, &e)
        })
    }

    /// A handle that sends to the sessions from another thread (the shutdown countdown), while
    /// the link is up.
    pub(super) fn sender(&self) -> Sender {
        Sender {
            stream: Arc::clone(&self.stream),
            channel: self.channel,
        }
    }

    /// Sends CLIENTAGENT_ADMIN_EJECT or _MESSAGE to the sessions `target` selects.
    pub(super) fn to_sessions(
        &self,
        msgtype: u16,
        target: &super::Target,
        tail: &[u8],
    ) -> Result<(), String> {
        self.send(&to_sessions(self.channel, msgtype, target, tail)?)
    }
}

/// CLIENTAGENT_ADMIN_EJECT or _MESSAGE from `channel` to the sessions `target` selects (on the
/// all-clients channel), framed.
fn to_sessions(
    channel: u64,
    msgtype: u16,
    target: &super::Target,
    tail: &[u8],
) -> Result<Vec<u8>, String> {
    let mut dg = Vec::new();
    let mut w = Writer::internal1(&mut dg, otp_wire::channels::BCHAN_CLIENTS, channel, msgtype);
    w.u8(target.scope)
        .u64(target.id)
        .string(&target.account)
        .bytes(tail);
    w.finish().map_err(|e| e.to_string())?;
    Ok(dg)
}

/// Reads the link until it closes: list answers into their gathers, and each gather answered
/// when its time is up.
fn read_link(mut s: TcpStream, pending: &Mutex<Pending>, completer: &Completer) {
    let mut deframer = Deframer::new(64 * 1024, otp_wire::MAX_DATAGRAM_BODY);
    loop {
        let alive = match deframer.read_from(&mut s) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                true
            }
            Err(_) => false,
        };
        while let Some(Ok(frame)) = deframer.next_framed() {
            if let Ok(dg) = InternalDatagram::parse(&frame[otp_wire::LENGTH_TAG_BYTES..]) {
                if dg.msgtype == CLIENTAGENT_ADMIN_LIST_RESP {
                    take_row(&dg, pending);
                } else {
                    take_reply(&dg, pending, completer);
                }
            }
        }
        let now = Instant::now();
        let done: Vec<Gather> = {
            let mut p = pending.lock();
            let due: Vec<u32> = p
                .gathers
                .iter()
                .filter(|(_, g)| g.until <= now || !alive)
                .map(|(c, _)| *c)
                .collect();
            p.replies.retain(|_, r| r.until > now);
            due.into_iter()
                .filter_map(|c| p.gathers.remove(&c))
                .collect()
        };
        for g in done {
            completer.answer(
                g.ticket,
                super::json_answer(200, &client_list(g.rows, g.more)),
            );
        }
        if !alive {
            log::warn!("admin: the MD link closed; it reconnects on the next request");
            return;
        }
    }
}

/// An answer to a request: decoded and given to its waiting HTTP request.
fn take_reply(dg: &InternalDatagram<'_>, pending: &Mutex<Pending>, completer: &Completer) {
    let mut r = dg.payload_reader();
    let Ok(context) = r.u32() else {
        return;
    };
    let reply = {
        let mut p = pending.lock();
        match p.replies.get(&context) {
            Some(w) if w.msgtype == dg.msgtype => p.replies.remove(&context),
            _ => None,
        }
    };
    let Some(reply) = reply else {
        return;
    };
    let answer = (reply.decode)(&mut r)
        .unwrap_or_else(|e| super::error(502, &format!("an answer that does not read: {e}")));
    completer.answer(reply.ticket, answer);
}

fn take_row(dg: &InternalDatagram<'_>, pending: &Mutex<Pending>) {
    let mut r = dg.payload_reader();
    let row = (|| -> Result<(u32, Value), otp_wire::WireError> {
        let context = r.u32()?;
        let channel = r.u64()?;
        let listener = String::from_utf8_lossy(r.blob()?).into_owned();
        let dialect = if r.u8()? == 1 {
            "toontown2003"
        } else {
            "astron"
        };
        let state = match r.u16()? {
            0 => "new",
            1 => "anonymous",
            _ => "established",
        };
        let account = String::from_utf8_lossy(r.blob()?).into_owned();
        let (avatar, district, zone) = (r.u32()?, r.u32()?, r.u32()?);
        let address = String::from_utf8_lossy(r.blob()?).into_owned();
        let since = r.u64()?;
        Ok((
            context,
            json!({
                "channel": channel, "listener": listener, "dialect": dialect, "state": state,
                "account": account, "avatar": avatar, "district": district, "zone": zone,
                "address": address, "connected_since_unix": since,
            }),
        ))
    })();
    let Ok((context, row)) = row else {
        return;
    };
    let mut p = pending.lock();
    if let Some(g) = p.gathers.get_mut(&context) {
        if g.rows.len() < MAX_LISTED {
            g.rows.push(row);
        } else {
            g.more += 1;
        }
    }
}

/// The answer to GET /api/clients: the clients, and the population of each district by zone.
fn client_list(mut rows: Vec<Value>, more: usize) -> Value {
    rows.sort_by_key(|r| r["channel"].as_u64());
    let mut districts: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    for r in &rows {
        let d = r["district"].as_u64().unwrap_or(0);
        if d != 0 {
            *districts
                .entry(d)
                .or_default()
                .entry(r["zone"].as_u64().unwrap_or(0))
                .or_default() += 1;
        }
    }
    let districts: Vec<Value> = districts
        .into_iter()
        .map(|(d, zones)| {
            let population: u64 = zones.values().sum();
            let zones: Vec<Value> = zones
                .into_iter()
                .map(|(z, n)| json!({ "zone": z, "players": n }))
                .collect();
            json!({ "district": d, "population": population, "zones": zones })
        })
        .collect();
    json!({ "clients": rows, "not_listed": more, "districts": districts })
}

/// Sends to the sessions over an established link, from another thread.
pub(super) struct Sender {
    stream: Arc<Mutex<Option<TcpStream>>>,
    channel: u64,
}

impl Sender {
    /// As `Link::to_sessions`, if the link is up.
    pub(super) fn to_sessions(
        &self,
        msgtype: u16,
        target: &super::Target,
        tail: &[u8],
    ) -> Result<(), String> {
        let dg = to_sessions(self.channel, msgtype, target, tail)?;
        let mut guard = self.stream.lock();
        let Some(s) = guard.as_mut() else {
            return Err("the MD link is down".into());
        };
        s.write_all(&dg).map_err(|e| e.to_string())
    }
}

//! The cost of one interest change in a ClientAgent session, measured in-process (the
//! session's state machine driven directly, the cluster's answers made here): a session opens
//! `interests` interests of `zones` zones each under one parent, then moves interest 0 back
//! and forth between two sets of `zones` zones, each change answered at once (no object in
//! the zones). What it shows: a change costs the zones it names, whatever else is open.
//! `otp-load interests` prints it; docs/performance.md has the figures.

use otp_wire::msgtypes::*;
use otp_wire::{InternalDatagram, Writer};
use otpd::clientagent::session::{Session, SessionOut, STATE_ESTABLISHED};
use otpd::clientagent::ClientAgent;
use otpd::config::ClientAgentConfig;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VERSION: &str = "interest-bench";
const PARENT: u32 = 10_000;
const SENDER: u64 = 5_000;

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub interests: u16,
    pub zones: u16,
    pub changes: u32,
    /// Time to open every interest, and per change (mean), on this thread.
    pub open_all: Duration,
    pub per_change: Duration,
}

/// A session with its agent and the output buffer it writes into.
struct Bench {
    session: Session,
    out: SessionOut,
    now: Instant,
    channel: u64,
    context: u32,
}

impl Bench {
    fn new(interests: u16, zones: u16) -> Result<Bench, String> {
        let total = (interests as u32 + 1) * zones as u32;
        let config: ClientAgentConfig = ron::from_str(&format!(
            "(bind: \"127.0.0.1:0\", version: \"{VERSION}\", \
             channels: (min: 1000000, max: 1000009), add_interest: \"enabled\", \
             heartbeat_timeout_ms: 0, interest_timeout_ms: 60000, \
             limits: (max_interests: {interests}, max_zones_per_interest: {zones}, \
                      max_zones_total: {total}, max_pending_interests: 64, \
                      max_datagrams_per_second: 0, max_bytes_per_second: 0, \
                      max_connections_per_address: 0, hello_timeout_ms: 0))"
        ))
        .map_err(|e| format!("interest bench configuration: {e}"))?;
        let now = Instant::now();
        let schema = crate::client_fuzz::schema();
        let ca = Arc::new(
            ClientAgent::new(
                0,
                &config,
                schema,
                &[],
                Default::default(),
                crate::client_fuzz::clock(now),
            )
            .map_err(|e| format!("interest bench ClientAgent: {e}"))?,
        );
        let channel = ca.alloc_channel().ok_or("no client channel")?;
        let mut out = SessionOut::default();
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        let session = Session::new(
            ca.clone(),
            channel,
            SocketAddr::new(ip, 40_000),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7198),
            Vec::new(),
            None,
            false,
            now,
            &mut out,
        );
        let mut b = Bench {
            session,
            out,
            now,
            channel,
            context: 0,
        };
        let mut hello = Vec::new();
        hello.extend_from_slice(&CLIENT_HELLO.to_le_bytes());
        hello.extend_from_slice(&ca.hash.to_le_bytes());
        hello.extend_from_slice(&(VERSION.len() as u16).to_le_bytes());
        hello.extend_from_slice(VERSION.as_bytes());
        b.client(&hello);
        b.internal(CLIENTAGENT_SET_STATE, &STATE_ESTABLISHED.to_le_bytes());
        if b.session.state() != STATE_ESTABLISHED || b.session.is_closed() {
            return Err("the session was not established".into());
        }
        Ok(b)
    }

    fn client(&mut self, body: &[u8]) {
        self.out.clear();
        self.session.on_client(self.now, body, &mut self.out);
    }

    fn internal(&mut self, msgtype: u16, payload: &[u8]) {
        let mut frame = Vec::new();
        let mut w = Writer::internal(&mut frame, &[self.channel], SENDER, msgtype);
        w.bytes(payload);
        w.finish().expect("a small datagram");
        self.out.clear();
        self.session
            .on_internal(self.now, &frame[2..], &mut self.out);
    }

    /// Opens (or moves) interest `id` to `zones`, answers the session's query with no
    /// objects, and checks the client was told the interest is done.
    fn set_interest(&mut self, id: u16, zones: std::ops::Range<u32>) -> Result<(), String> {
        self.context = self.context.wrapping_add(1);
        let mut body = Vec::with_capacity(16 + 4 * zones.len());
        body.extend_from_slice(&CLIENT_ADD_INTEREST_MULTIPLE.to_le_bytes());
        body.extend_from_slice(&self.context.to_le_bytes());
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&PARENT.to_le_bytes());
        body.extend_from_slice(&(zones.len() as u16).to_le_bytes());
        for z in zones {
            body.extend_from_slice(&z.to_le_bytes());
        }
        self.client(&body);
        let query = crate::client_fuzz::frames(&self.out.datagrams)?
            .into_iter()
            .find_map(|f| {
                let dg = InternalDatagram::parse(f).ok()?;
                (dg.msgtype == STATESERVER_OBJECT_GET_ZONES_OBJECTS)
                    .then(|| u32::from_le_bytes(dg.payload[..4].try_into().unwrap()))
            });
        if let Some(context) = query {
            let mut answer = context.to_le_bytes().to_vec();
            answer.extend_from_slice(&0u32.to_le_bytes());
            self.internal(STATESERVER_OBJECT_GET_ZONES_COUNT_RESP, &answer);
        }
        let done = crate::client_fuzz::frames(&self.out.to_client)?
            .iter()
            .any(|f| f.get(..2) == Some(&CLIENT_DONE_INTEREST_RESP.to_le_bytes()[..]));
        if !done || self.session.is_closed() {
            return Err(format!("interest {id}: no DONE_INTEREST_RESP"));
        }
        Ok(())
    }
}

/// Opens `interests` interests of `zones` zones, then times `changes` moves of interest 0.
pub fn run(interests: u16, zones: u16, changes: u32) -> Result<Figures, String> {
    if interests == 0 || zones == 0 || changes == 0 {
        return Err("interests, zones and changes must be at least 1".into());
    }
    let mut b = Bench::new(interests, zones)?;
    let z = zones as u32;
    let start = Instant::now();
    for id in 0..interests {
        let first = 1 + id as u32 * z;
        b.set_interest(id, first..first + z)?;
    }
    let open_all = start.elapsed();
    let held = b.session.interest_zone_counts();
    if held.len() != interests as usize || held.iter().any(|&(_, n)| n != zones as usize) {
        return Err(format!(
            "the session holds {held:?}, not {interests} x {zones} zones"
        ));
    }
    // Interest 0 moves between its own zones and a set no other interest holds.
    let away = 1 + interests as u32 * z;
    let start = Instant::now();
    for n in 0..changes {
        let first = if n % 2 == 0 { away } else { 1 };
        b.set_interest(0, first..first + z)?;
    }
    b.session.check_invariants()?;
    Ok(Figures {
        interests,
        zones,
        changes,
        open_all,
        per_change: start.elapsed() / changes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bench_opens_and_moves_interests() {
        let f = super::run(8, 16, 6).expect("the bench runs");
        assert_eq!((f.interests, f.zones, f.changes), (8, 16, 6));
        assert!(super::run(0, 16, 6).is_err());
    }
}

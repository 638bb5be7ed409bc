//! `otp-load db`: the Database benchmark. One connection keeps `--window` requests in flight
//! against a Database role and measures, for each phase, answered requests per second and
//! the latency of each answer (every answer comes after its transaction is durable):
//! creates, durable field writes (SET_FIELD_IF_EQUALS, acknowledged), and GET_ALLs.

use otp_wire::msgtypes::*;
use otp_wire::{RoutableHeader, Writer};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "\
    otp-load db       --dc FILE [--class NAME] [--field NAME] [--control CHANNEL]
                      [--requests N] [--window W] [--addr HOST:PORT]

db: the class needs a `db` uint32 field (default: Thing.setScore of tests/dc/objects.dc);
the server runs a Database role on --control (default 4003).
";

struct Opts {
    addr: String,
    dc: String,
    class: String,
    field: String,
    control: u64,
    requests: u32,
    window: usize,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:7199".into(),
        dc: String::new(),
        class: "Thing".into(),
        field: "setScore".into(),
        control: 4003,
        requests: 20_000,
        window: 256,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => o.addr = val()?,
            "--dc" => o.dc = val()?,
            "--class" => o.class = val()?,
            "--field" => o.field = val()?,
            "--control" => o.control = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--requests" => o.requests = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--window" => o.window = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.dc.is_empty() || o.requests == 0 || o.window == 0 {
        return Err("--dc is required; --requests and --window must be at least 1".into());
    }
    Ok(o)
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    have: usize,
}

impl Conn {
    /// The next datagram's payload (after msgtype), blocking.
    fn next(&mut self) -> Result<(u16, Vec<u8>), String> {
        loop {
            if self.have >= 2 {
                let len = u16::from_le_bytes([self.buf[0], self.buf[1]]) as usize;
                if self.have >= 2 + len {
                    let body = &self.buf[2..2 + len];
                    let header =
                        RoutableHeader::parse(body).map_err(|e| format!("from the server: {e}"))?;
                    let t = header.msgtype;
                    let payload = body[header.len..].to_vec();
                    self.buf.copy_within(2 + len..self.have, 0);
                    self.have -= 2 + len;
                    return Ok((t, payload));
                }
            }
            if self.buf.len() - self.have < 65_600 {
                self.buf.resize(self.have + (1 << 20), 0);
            }
            let n = self
                .s
                .read(&mut self.buf[self.have..])
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.have += n;
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs one phase: `make(i, out)` writes request i (context i); answers are matched by context.
fn phase(
    name: &str,
    c: &mut Conn,
    n: u32,
    window: usize,
    mut make: impl FnMut(u32, &mut Vec<u8>) -> bool,
    mut done: impl FnMut(u32, &[u8]),
) -> Result<(), String> {
    let mut sent_at: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut lat: Vec<u32> = Vec::with_capacity(n as usize);
    let mut out = Vec::new();
    let (mut next, mut answered) = (0u32, 0u32);
    let start = Instant::now();
    while answered < n {
        out.clear();
        while next < n && sent_at.len() < window {
            if !make(next, &mut out) {
                break;
            }
            sent_at.push_back((next, Instant::now()));
            next += 1;
        }
        if !out.is_empty() {
            c.s.write_all(&out).map_err(|e| e.to_string())?;
        }
        let (_, p) = c.next()?;
        let ctx = u32::from_le_bytes(p[0..4].try_into().unwrap());
        if let Some(pos) = sent_at.iter().position(|(x, _)| *x == ctx) {
            let (_, t) = sent_at.remove(pos).expect("found");
            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            done(ctx, &p);
            answered += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "{name}: {n} in {secs:.3} s = {:.0}/s; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        n as f64 / secs,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    Ok(())
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let dc = crate::load_dc(std::path::Path::new(&o.dc))?;
    let class = dc
        .class_by_name(&o.class)
        .ok_or(format!("no class {}", o.class))?;
    let field = dc
        .field_by_name(class, &o.field)
        .ok_or(format!("no field {}", o.field))?
        .id();
    let class = class.id();
    let me = 9_100_000_000u64 + std::process::id() as u64;
    let s = TcpStream::connect(&o.addr).map_err(|e| format!("connect {}: {e}", o.addr))?;
    s.set_nodelay(true).ok();
    let mut c = Conn {
        s,
        buf: vec![0; 1 << 20],
        have: 0,
    };
    let mut sub = Vec::new();
    let mut w = Writer::control(&mut sub, CONTROL_ADD_CHANNEL);
    w.u64(me);
    w.finish_bounded();
    c.s.write_all(&sub).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(200));
    let n = o.requests;
    let mut doids = vec![0u32; n as usize];
    phase(
        "creates",
        &mut c,
        n,
        o.window,
        |i, out| {
            let mut w = Writer::internal1(out, o.control, me, DBSERVER_CREATE_OBJECT);
            w.u32(i).u16(class).u16(1).u16(field).u32(0);
            w.finish_bounded();
            true
        },
        |i, p| doids[i as usize] = u32::from_le_bytes(p[4..8].try_into().unwrap()),
    )?;
    if doids.contains(&0) {
        return Err("some creates failed (doid 0)".into());
    }
    // Writes: each object's value goes 0, 1, 2...; at most one write per object in flight.
    let mut value = vec![0u32; n as usize];
    let busy: Vec<std::cell::Cell<bool>> = (0..n).map(|_| std::cell::Cell::new(false)).collect();
    phase(
        "durable field writes",
        &mut c,
        n,
        o.window,
        |i, out| {
            let k = (i % n) as usize;
            if busy[k].replace(true) {
                return false;
            }
            let mut w = Writer::internal1(out, o.control, me, DBSERVER_OBJECT_SET_FIELD_IF_EQUALS);
            w.u32(i)
                .u32(doids[k])
                .u16(field)
                .u32(value[k])
                .u32(value[k] + 1);
            w.finish_bounded();
            value[k] += 1;
            true
        },
        |i, p| {
            busy[(i % n) as usize].set(false);
            if p.get(4) != Some(&1) {
                eprintln!("write {i} failed");
            }
        },
    )?;
    phase(
        "GET_ALL",
        &mut c,
        n,
        o.window,
        |i, out| {
            let mut w = Writer::internal1(out, o.control, me, DBSERVER_OBJECT_GET_ALL);
            w.u32(i).u32(doids[(i % n) as usize]);
            w.finish_bounded();
            true
        },
        |_, _| {},
    )?;
    Ok(())
}

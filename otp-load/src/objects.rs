//! `otp-load objects`: the StateServer benchmark. One AI connection creates N objects of a
//! small class in one zone, then sends M updates of a broadcast field round-robin over them;
//! a watcher subscribed to the zone counts what the StateServer announces. Reports creates/s
//! (until the last ENTER_LOCATION), updates/s (until the last broadcast) and, with --pid, the
//! server's resident memory per object and its CPU time per create and per update (beside the
//! load tool's own, as both share the machine).

use otp_wire::msgtypes::{
    CONTROL_ADD_CHANNEL, STATESERVER_CREATE_OBJECT_WITH_REQUIRED, STATESERVER_OBJECT_SET_FIELD,
};
use otp_wire::Writer;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "\
    otp-load objects  --dc FILE [--class NAME] [--field NAME] [--control CHANNEL]
                      [--objects N] [--updates M] [--first-doid D] [--batch B]
                      [--addr HOST:PORT] [--pid PID]

objects: the class needs exactly one required field, a broadcast uint32 (the default class
`Small` and field `setValue` of tests/dc/objects.dc); the server runs a StateServer on
--control (default 100100).
";

struct Opts {
    addr: String,
    dc: String,
    class: String,
    field: String,
    control: u64,
    objects: u32,
    updates: u32,
    first: u32,
    batch: usize,
    pid: Option<u32>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:7199".into(),
        dc: String::new(),
        class: "Small".into(),
        field: "setValue".into(),
        control: 100_100,
        objects: 100_000,
        updates: 1_000_000,
        first: 10_000_000,
        batch: 200,
        pid: None,
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
            "--objects" => o.objects = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--updates" => o.updates = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--first-doid" => o.first = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--batch" => o.batch = val()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--pid" => o.pid = Some(val()?.parse().map_err(|e| format!("{a}: {e}"))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.dc.is_empty() || o.objects == 0 || o.batch == 0 {
        return Err("--dc is required; --objects and --batch must be at least 1".into());
    }
    Ok(o)
}

/// CPU seconds used by the server (with --pid) and by this process since a phase started.
struct CpuClock {
    pid: Option<u32>,
    server: Option<f64>,
    own: Option<f64>,
}

impl CpuClock {
    fn start(pid: Option<u32>) -> CpuClock {
        CpuClock {
            pid,
            server: pid.and_then(crate::cpu_seconds),
            own: crate::cpu_seconds(std::process::id()),
        }
    }

    /// Prints the CPU per operation over `ops` operations, when it could be read.
    fn report(&self, ops: u32, what: &str) {
        let per = |before: Option<f64>, pid: Option<u32>| {
            let spent = pid.and_then(crate::cpu_seconds)? - before?;
            Some((spent, spent * 1e6 / f64::from(ops.max(1))))
        };
        let server = per(self.server, self.pid);
        let own = per(self.own, Some(std::process::id()));
        if let (Some((s, s_per)), Some((l, l_per))) = (server, own) {
            println!(
                "cpu: server {s:.2} s = {s_per:.2} µs per {what}; load tool {l:.2} s = {l_per:.2} µs per {what}"
            );
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Counts datagrams arriving on `s` until `want`, and returns when the last one came.
fn count_until(s: &mut TcpStream, want: u64) -> Result<Instant, String> {
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut buf = vec![0u8; 1 << 20];
    let (mut have, mut got) = (0usize, 0u64);
    while got < want {
        let n = s
            .read(&mut buf[have..])
            .map_err(|e| format!("watcher: {e} after {got} of {want} datagrams"))?;
        if n == 0 {
            return Err("watcher: the server closed the connection".into());
        }
        have += n;
        let mut at = 0;
        while have - at >= 2 {
            let len = u16::from_le_bytes([buf[at], buf[at + 1]]) as usize;
            if have - at < 2 + len {
                break;
            }
            at += 2 + len;
            got += 1;
        }
        buf.copy_within(at..have, 0);
        have -= at;
    }
    Ok(Instant::now())
}

#[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
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
    let (parent, zone) = (4_000_000u32 + std::process::id() % 1000, 77u32);
    let location = ((parent as u64) << 32) | zone as u64;
    let connect = || -> Result<TcpStream, String> {
        let s = TcpStream::connect(&o.addr).map_err(|e| format!("connect {}: {e}", o.addr))?;
        s.set_nodelay(true).ok();
        Ok(s)
    };
    let mut watcher = connect()?;
    let mut ai = connect()?;
    let mut buf = Vec::new();
    let mut w = Writer::control(&mut buf, CONTROL_ADD_CHANNEL);
    w.u64(location);
    w.finish_bounded();
    watcher.write_all(&buf).map_err(|e| e.to_string())?;
    // Barrier: the watcher sees a probe on the zone before the clock starts.
    let mut probe = Vec::new();
    Writer::internal1(&mut probe, location, 1, 4242)
        .finish()
        .ok();
    watcher
        .set_read_timeout(Some(Duration::from_millis(50)))
        .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut scratch = [0u8; 256];
    loop {
        ai.write_all(&probe).map_err(|e| e.to_string())?;
        if watcher.read(&mut scratch).is_ok_and(|n| n > 0) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the watcher's subscription never took effect".into());
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    while watcher.read(&mut scratch).is_ok_and(|n| n > 0) {}

    let rss0 = o.pid.and_then(rss_kib);
    let ai_channel = 5_000_000_000u64 + std::process::id() as u64;
    let mut creates = Vec::with_capacity(o.batch * 40);
    let n = o.objects;
    let mut w_thread = watcher.try_clone().map_err(|e| e.to_string())?;
    let watch = std::thread::spawn(move || count_until(&mut w_thread, n as u64));
    let cpu = CpuClock::start(o.pid);
    let start = Instant::now();
    for i in 0..n {
        let mut w = Writer::internal1(
            &mut creates,
            o.control,
            ai_channel,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        );
        w.u32(o.first + i).u32(parent).u32(zone).u16(class).u32(i);
        w.finish_bounded();
        if (i as usize + 1).is_multiple_of(o.batch) || i + 1 == n {
            ai.write_all(&creates).map_err(|e| e.to_string())?;
            creates.clear();
        }
    }
    let end = watch.join().map_err(|_| "watcher panicked")??;
    let secs = (end - start).as_secs_f64();
    println!(
        "objects: {n} created in {secs:.3} s = {:.0} creates/s (until the last ENTER_LOCATION)",
        n as f64 / secs
    );
    cpu.report(n, "create");
    if let (Some(pid), Some(r0)) = (o.pid, rss0) {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(r1) = rss_kib(pid) {
            println!(
                "memory: RSS {} -> {} KiB = {:.0} bytes per live object",
                r0,
                r1,
                (r1.saturating_sub(r0) * 1024) as f64 / n as f64
            );
        }
    }
    if o.updates > 0 {
        let m = o.updates;
        let mut w_thread = watcher.try_clone().map_err(|e| e.to_string())?;
        let watch = std::thread::spawn(move || count_until(&mut w_thread, m as u64));
        let mut updates = Vec::with_capacity(o.batch * 40);
        let cpu = CpuClock::start(o.pid);
        let start = Instant::now();
        for i in 0..m {
            let doid = o.first + i % n;
            let mut w = Writer::internal1(
                &mut updates,
                doid as u64,
                ai_channel,
                STATESERVER_OBJECT_SET_FIELD,
            );
            w.u32(doid).u16(field).u32(i);
            w.finish_bounded();
            if (i as usize + 1).is_multiple_of(o.batch) || i + 1 == m {
                ai.write_all(&updates).map_err(|e| e.to_string())?;
                updates.clear();
            }
        }
        let end = watch.join().map_err(|_| "watcher panicked")??;
        let secs = (end - start).as_secs_f64();
        println!(
            "updates: {m} in {secs:.3} s = {:.0} field updates/s broadcast to the zone",
            m as f64 / secs
        );
        cpu.report(m, "update");
    }
    Ok(())
}

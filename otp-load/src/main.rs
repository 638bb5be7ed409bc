//! otp-load: load generator and benchmark client for any Astron-protocol MessageDirector
//! (otpd's or astrond). `flood` measures routed messages per second from one sender to many
//! subscribers; `pingpong` measures unloaded round-trip latency; `objects` the StateServer,
//! `db` the Database role, `clients` the ClientAgent (many clients in zones, delivery latency);
//! `write-cost` the CPU floor of a write to a client over loopback.

mod clients;
mod db;
mod interests;
mod objects;
mod report;
mod toon2003;
mod toon2003_clients;
mod writecost;

use otp_wire::msgtypes::CONTROL_ADD_CHANNEL;
use otp_wire::Writer;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const USAGE: &str = "\
otp-load: benchmark client for Astron-protocol MessageDirectors

USAGE (every mode that reads a DC file also takes --dc-legacy: read it with the 2003 rule,
fields numbered per class, for a cluster whose dc_settings are all false):
    otp-load flood    [--addr HOST:PORT] [--receivers N] [--fanout F] [--messages M]
                      [--size BYTES] [--batch B] [--runs R] [--pid PID] [--json]
    otp-load pingpong [--addr HOST:PORT] [--count N] [--warmup N] [--runs R] [--json]

flood: R receivers each subscribe one channel (F receivers share each target channel); one
sender writes M datagrams of BYTES bytes on the wire (length tag included; minimum 21), B
per write, round-robin over the target channels. Reports routed messages/s (datagrams the
MD accepted and delivered) and deliveries/s, from the first write to the last delivery.
With --pid, also the MD process's CPU time per message.
pingpong: two connections, one datagram in flight; round-trip percentiles in microseconds.
";

struct Opts {
    addr: String,
    receivers: usize,
    fanout: usize,
    messages: usize,
    size: usize,
    batch: usize,
    runs: usize,
    count: usize,
    warmup: usize,
    pid: Option<u32>,
    json: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:7199".into(),
        receivers: 10,
        fanout: 1,
        messages: 1_000_000,
        size: 37,
        batch: 100,
        runs: 1,
        count: 20_000,
        warmup: 1_000,
        pid: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match a.as_str() {
            "--addr" => o.addr = it.next().ok_or("--addr needs a value")?.clone(),
            "--receivers" => o.receivers = num(a)?,
            "--fanout" => o.fanout = num(a)?,
            "--messages" => o.messages = num(a)?,
            "--size" => o.size = num(a)?,
            "--batch" => o.batch = num(a)?,
            "--runs" => o.runs = num(a)?,
            "--count" => o.count = num(a)?,
            "--warmup" => o.warmup = num(a)?,
            "--pid" => o.pid = Some(num(a)? as u32),
            "--json" => o.json = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.size < 21 || o.size > 65_537 {
        return Err("--size must be 21..=65537 (2 length + 19 header bytes at least)".into());
    }
    if o.receivers == 0 || o.fanout == 0 || o.fanout > o.receivers || o.batch == 0 || o.runs == 0 {
        return Err(
            "--receivers, --fanout (<= receivers), --batch and --runs must be at least 1".into(),
        );
    }
    Ok(o)
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn subscribe(s: &mut TcpStream, channel: u64) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut w = Writer::control(&mut buf, CONTROL_ADD_CHANNEL);
    w.u64(channel);
    w.finish_bounded();
    s.write_all(&buf)
}

fn datagram(out: &mut Vec<u8>, channel: u64, size: usize, tag: u8) {
    let mut w = Writer::internal1(out, channel, 0xB00, 20000 + tag as u16);
    w.bytes(&vec![tag; size - 21]);
    w.finish_bounded();
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

struct FloodResult {
    seconds: f64,
    deliveries: u64,
    expected: u64,
    cpu: Option<f64>,
}

fn flood_once(o: &Opts) -> Result<FloodResult, String> {
    let targets = o.receivers / o.fanout;
    let base = 0x7000_0000u64 + (std::process::id() as u64) * 1000;
    let mut receivers = Vec::new();
    for i in 0..targets * o.fanout {
        let mut s = connect(&o.addr).map_err(|e| format!("connect {}: {e}", o.addr))?;
        subscribe(&mut s, base + (i % targets) as u64).map_err(|e| e.to_string())?;
        receivers.push(s);
    }
    let mut tx = connect(&o.addr).map_err(|e| format!("connect {}: {e}", o.addr))?;
    // Barrier: every receiver must see a probe on its channel before the clock starts.
    let mut probe = Vec::new();
    for t in 0..targets {
        datagram(&mut probe, base + t as u64, o.size, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ready = vec![false; receivers.len()];
    let mut buf = vec![0u8; 1 << 20];
    while ready.iter().any(|r| !r) {
        if Instant::now() > deadline {
            return Err("subscriptions never took effect".into());
        }
        tx.write_all(&probe).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(20));
        for (i, r) in receivers.iter_mut().enumerate() {
            r.set_nonblocking(true).ok();
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    return Err("the MD closed a receiver".into());
                }
                ready[i] = true;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    for r in receivers.iter_mut() {
        while r.read(&mut buf).is_ok_and(|n| n > 0) {}
        r.set_nonblocking(false).ok();
    }
    // Writes: `batch` datagrams per write, round-robin over the target channels.
    let mut writes: Vec<Vec<u8>> = Vec::new();
    for k in 0..targets.max(1) {
        let mut w = Vec::with_capacity(o.batch * o.size);
        for j in 0..o.batch {
            datagram(
                &mut w,
                base + ((k * o.batch + j) % targets) as u64,
                o.size,
                1,
            );
        }
        writes.push(w);
    }
    let per_receiver = (o.messages / targets) as u64;
    let expected = per_receiver * receivers.len() as u64;
    let size = o.size as u64;
    let handles: Vec<_> = receivers
        .into_iter()
        .map(|mut r| {
            std::thread::spawn(move || {
                r.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = vec![0u8; 1 << 20];
                let mut bytes = 0u64;
                while bytes < per_receiver * size {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => bytes += n as u64,
                    }
                }
                (bytes / size, Instant::now())
            })
        })
        .collect();
    let cpu0 = o.pid.and_then(cpu_seconds);
    let t0 = Instant::now();
    let writes_needed = o.messages / o.batch;
    for i in 0..writes_needed {
        tx.write_all(&writes[i % writes.len()])
            .map_err(|e| e.to_string())?;
    }
    let mut deliveries = 0;
    let mut last = t0;
    for h in handles {
        let (n, t) = h.join().map_err(|_| "receiver thread failed")?;
        deliveries += n;
        last = last.max(t);
    }
    let cpu = match (cpu0, o.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(FloodResult {
        seconds: (last - t0).as_secs_f64(),
        deliveries,
        expected,
        cpu,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn flood(o: &Opts) -> Result<(), String> {
    let mut rates = Vec::new();
    let mut delivery_rates = Vec::new();
    let mut cpu_per_msg = Vec::new();
    let mut lost = 0u64;
    for _ in 0..o.runs {
        let r = flood_once(o)?;
        let routed = r.deliveries as f64 / o.fanout as f64;
        rates.push(routed / r.seconds);
        delivery_rates.push(r.deliveries as f64 / r.seconds);
        lost += r.expected - r.deliveries.min(r.expected);
        if let Some(c) = r.cpu {
            cpu_per_msg.push(c / routed * 1e6);
        }
    }
    let (min, max) = (
        rates.iter().cloned().fold(f64::MAX, f64::min),
        rates.iter().cloned().fold(0.0, f64::max),
    );
    let med = median(&mut rates);
    let med_d = median(&mut delivery_rates);
    let cpu = (!cpu_per_msg.is_empty()).then(|| median(&mut cpu_per_msg));
    if o.json {
        println!(
            "{{\"workload\":\"flood\",\"addr\":\"{}\",\"receivers\":{},\"fanout\":{},\"messages\":{},\"size\":{},\"batch\":{},\"runs\":{},\"routed_per_s_median\":{:.0},\"routed_per_s_min\":{:.0},\"routed_per_s_max\":{:.0},\"deliveries_per_s_median\":{:.0},\"lost\":{},\"md_cpu_us_per_msg\":{}}}",
            o.addr, o.receivers, o.fanout, o.messages, o.size, o.batch, o.runs, med, min, max, med_d, lost,
            cpu.map(|c| format!("{c:.3}")).unwrap_or("null".into())
        );
    } else {
        println!("flood: {} receivers, fanout {}, {} messages of {} bytes, {} per write, {} run(s) against {}", o.receivers, o.fanout, o.messages, o.size, o.batch, o.runs, o.addr);
        println!(
            "  routed     {:.2} M msg/s median (min {:.2}, max {:.2})",
            med / 1e6,
            min / 1e6,
            max / 1e6
        );
        println!("  deliveries {:.2} M/s median", med_d / 1e6);
        if let Some(c) = cpu {
            println!("  MD CPU     {c:.3} us per routed message");
        }
        if lost > 0 {
            println!("  LOST       {lost} deliveries");
        }
    }
    if lost > 0 {
        return Err(format!("{lost} deliveries lost"));
    }
    Ok(())
}

fn pingpong(o: &Opts) -> Result<(), String> {
    let mut all: Vec<u64> = Vec::new();
    for run in 0..o.runs {
        let base = 0x6000_0000u64 + (std::process::id() as u64) * 10 + run as u64 * 2;
        let (ca, cb) = (base, base + 1);
        let mut a = connect(&o.addr).map_err(|e| e.to_string())?;
        let mut b = connect(&o.addr).map_err(|e| e.to_string())?;
        subscribe(&mut a, ca).map_err(|e| e.to_string())?;
        subscribe(&mut b, cb).map_err(|e| e.to_string())?;
        let mut ping = Vec::new();
        datagram(&mut ping, cb, 37, 2);
        let mut pong = Vec::new();
        datagram(&mut pong, ca, 37, 3);
        // Wait until b's subscription routes.
        b.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let mut buf = [0u8; 37];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            a.write_all(&ping).map_err(|e| e.to_string())?;
            if b.read_exact(&mut buf).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err("subscriptions never took effect".into());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        b.set_nonblocking(true).ok();
        while b.read(&mut [0u8; 4096]).is_ok_and(|n| n > 0) {}
        b.set_nonblocking(false).ok();
        b.set_read_timeout(Some(Duration::from_secs(5))).ok();
        a.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let total = o.warmup + o.count;
        let echo = std::thread::spawn(move || -> Result<(), String> {
            let mut buf = [0u8; 37];
            for _ in 0..total {
                b.read_exact(&mut buf).map_err(|e| e.to_string())?;
                b.write_all(&pong).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        for i in 0..total {
            let t = Instant::now();
            a.write_all(&ping).map_err(|e| e.to_string())?;
            a.read_exact(&mut buf)
                .map_err(|e| format!("no answer: {e}"))?;
            if i >= o.warmup {
                all.push(t.elapsed().as_nanos() as u64);
            }
        }
        echo.join().map_err(|_| "echo thread failed")??;
    }
    all.sort_unstable();
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let max = *all.last().unwrap() as f64 / 1000.0;
    if o.json {
        println!(
            "{{\"workload\":\"pingpong\",\"addr\":\"{}\",\"count\":{},\"runs\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}}}",
            o.addr, o.count, o.runs, p(0.5), p(0.9), p(0.99), p(0.999), max
        );
    } else {
        println!(
            "pingpong: {} round trips x {} run(s) against {} (37-byte datagrams, one in flight)",
            o.count, o.runs, o.addr
        );
        println!(
            "  round trip us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            max
        );
    }
    Ok(())
}

/// How the DC file is read, for every mode (`--dc-legacy`: the 2003 rule, fields numbered per
/// class, as a cluster with `dc_settings` all false numbers them).
static DC_OPTIONS: std::sync::OnceLock<otp_dc::HashOptions> = std::sync::OnceLock::new();

/// Reads the DC file as the cluster under load reads it (see `--dc-legacy`).
pub(crate) fn load_dc(path: &std::path::Path) -> Result<otp_dc::DcFile, String> {
    let o = DC_OPTIONS.get().copied().unwrap_or_default();
    otp_dc::DcFile::parse_files_with(&[path], o).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let legacy = args.iter().any(|a| a == "--dc-legacy");
    args.retain(|a| a != "--dc-legacy");
    let _ = DC_OPTIONS.set(if legacy {
        otp_dc::HashOptions {
            multiple_inheritance: false,
            virtual_inheritance: false,
            sort_inheritance_by_file: false,
        }
    } else {
        otp_dc::HashOptions::default()
    });
    let result = match args.first().map(String::as_str) {
        Some("flood") => parse(&args[1..]).and_then(|o| flood(&o)),
        Some("pingpong") => parse(&args[1..]).and_then(|o| pingpong(&o)),
        Some("objects") => objects::run(&args[1..]),
        Some("db") => db::run(&args[1..]),
        Some("clients") => clients::run(&args[1..]),
        Some("interests") => interests::run(&args[1..]),
        Some("toon2003-ai") => toon2003::run_ai(&args[1..]),
        Some("toon2003-client") => toon2003::run_client(&args[1..]),
        Some("toon2003-clients") => toon2003_clients::run(&args[1..]),
        Some("write-cost") => writecost::run(&args[1..]),
        Some("-h") | Some("--help") => {
            print!(
                "{USAGE}{}{}{}{}{}{}{}",
                objects::USAGE,
                db::USAGE,
                clients::USAGE,
                interests::USAGE,
                toon2003::USAGE,
                toon2003_clients::USAGE,
                writecost::USAGE
            );
            return;
        }
        _ => Err(format!(
            "expected a subcommand\n\n{USAGE}{}{}{}{}{}{}{}",
            objects::USAGE,
            db::USAGE,
            clients::USAGE,
            interests::USAGE,
            toon2003::USAGE,
            toon2003_clients::USAGE,
            writecost::USAGE
        )),
    };
    if let Err(e) = result {
        eprintln!("otp-load: {e}");
        std::process::exit(1);
    }
}

//! `otp-load write-cost`: the floor under a server's writes to its clients. One thread writes
//! datagrams of a client's typical size to a loopback TCP connection (TCP_NODELAY, as otpd's
//! client sockets), N per write() call; another reads and discards them. Reports the writing
//! thread's CPU time per write and per datagram (its on-CPU nanoseconds from
//! /proc/thread-self/schedstat: loopback delivery into the reader's socket runs in it too).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

pub(crate) const USAGE: &str = "\
    otp-load write-cost [--size BYTES] [--per-write N,N,...] [--writes W] [--runs R] [--json]

write-cost: CPU time of one write() of N datagrams of BYTES bytes each (default 32, a field
update to a client; N default 1,16) over loopback TCP, W writes (default 200000) per run,
median of R runs (default 5). The floor for otpd's client writes on this machine
(docs/performance.md, \"Writes per delivery\").
";

/// The calling thread's on-CPU time, nanoseconds.
fn thread_cpu_ns() -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("/proc/thread-self/schedstat: {e}"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "/proc/thread-self/schedstat: unreadable".to_string())
}

/// One run: (CPU ns per write, wall seconds).
fn run_once(size: usize, per_write: usize, writes: usize) -> Result<(f64, f64), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let total = (size * per_write * writes) as u64;
    let reader = std::thread::spawn(move || -> Result<u64, String> {
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < total {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(got)
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    // Datagrams as a client gets them: a length tag, then the body.
    let mut one = Vec::with_capacity(size);
    one.extend_from_slice(&((size.max(2) - 2) as u16).to_le_bytes());
    one.resize(size.max(2), 0xA5);
    let chunk: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * per_write)
        .collect();
    let start = Instant::now();
    let cpu0 = thread_cpu_ns()?;
    for _ in 0..writes {
        s.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    let cpu1 = thread_cpu_ns()?;
    let wall = start.elapsed().as_secs_f64();
    drop(s);
    let got = reader.join().map_err(|_| "reader panicked")??;
    if got != (chunk.len() * writes) as u64 {
        return Err(format!(
            "the reader got {got} bytes of {}",
            chunk.len() * writes
        ));
    }
    Ok(((cpu1 - cpu0) as f64 / writes as f64, wall))
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let (mut size, mut per_write, mut writes, mut runs, mut json) =
        (32usize, vec![1usize, 16], 200_000usize, 5usize, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size" => size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--writes" => writes = value()?.parse().map_err(|e| format!("--writes: {e}"))?,
            "--runs" => runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--per-write" => {
                per_write = value()?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("--per-write: {e}")))
                    .collect::<Result<_, String>>()?
            }
            "--json" => json = true,
            other => return Err(format!("write-cost: unknown option {other}\n\n{USAGE}")),
        }
    }
    if !(4..=65_537).contains(&size) || writes == 0 || runs == 0 || per_write.contains(&0) {
        return Err(format!(
            "write-cost: --size 4..65537, --writes, --runs and --per-write at least 1\n\n{USAGE}"
        ));
    }
    for &n in &per_write {
        let mut cpu = Vec::with_capacity(runs);
        for _ in 0..runs {
            cpu.push(run_once(size, n, writes)?.0);
        }
        cpu.sort_by(f64::total_cmp);
        let median_us = cpu[runs / 2] / 1000.0;
        let per_datagram = median_us / n as f64;
        if json {
            println!(
                "{{\"mode\":\"write-cost\",\"size\":{size},\"per_write\":{n},\"writes\":{writes},\"runs\":{runs},\"cpu_us_per_write\":{median_us:.3},\"cpu_us_per_datagram\":{per_datagram:.3}}}"
            );
        } else {
            println!(
                "write-cost: {n} x {size} B per write: {median_us:.2} us CPU per write, {per_datagram:.3} us per datagram (median of {runs} runs of {writes} writes)"
            );
        }
    }
    Ok(())
}

//! A clean stop against the real binary: on SIGTERM otpd stops accepting clients, ejects the
//! ones it has with the dialect's shutdown code, answers and commits every database write
//! already sent, and exits 0; a second SIGTERM stops it at once; `otpd admin ADDR shutdown`
//! warns, then does the same.

mod common;

use common::*;
use otp_wire::msgtypes::*;
use std::path::Path;
use std::time::{Duration, Instant};

const DB: u64 = 4100;
const AI: u64 = 9_000_001;
const TOKEN: &str = "5d4c3b2a19080f1e2d3c4b5a69788796a5b4c3d2";

struct Cluster {
    o: Otpd,
    dc: TestDc,
    ca: u16,
    admin: u16,
    probe: Md,
    ai: Md,
}

fn start(dir: &Path) -> Cluster {
    let dc = TestDc::load();
    let (ca, admin) = (free_port(), free_port());
    let token = dir.join("admin.token");
    std::fs::write(&token, TOKEN).unwrap();
    let o = Otpd::start_full(
        free_port(),
        "",
        &format!(
            "dc_files: [\"{}\"], shutdown_timeout_ms: 15000,
             admin: Some((bind: \"127.0.0.1:{admin}\", token_file: \"{}\")),
             roles: [Database(control: {DB}, generate: (min: 1000000, max: 1999999),
                              backend: Sqlite(directory: \"{}\")),
                     ClientAgent((bind: \"127.0.0.1:{ca}\", version: \"v1\",
                                  channels: (min: 3000000, max: 3000999)))],",
            dc.path.display(),
            token.display(),
            dir.display()
        ),
    );
    wait_for_port(ca);
    wait_for_port(admin);
    let mut probe = o.connect();
    let ai = listener(o.port, &mut probe, &[AI]);
    Cluster {
        o,
        dc,
        ca,
        admin,
        probe,
        ai,
    }
}

/// An Astron client past its hello.
fn client(c: &Cluster) -> Md {
    let mut m = Md::connect(c.ca);
    let mut body = CLIENT_HELLO.to_le_bytes().to_vec();
    body.extend_from_slice(&c.dc.dc.hash().to_le_bytes());
    body.extend_from_slice(&2u16.to_le_bytes());
    body.extend_from_slice(b"v1");
    m.send(&frame(&body));
    let f = m.recv_within(Duration::from_secs(5)).expect("HELLO_RESP");
    assert_eq!(u16::from_le_bytes([f[2], f[3]]), CLIENT_HELLO_RESP);
    m
}

/// The eject code the client receives.
fn ejected(m: &mut Md, within: Duration) -> u16 {
    let f = m.recv_within(within).expect("CLIENT_EJECT");
    assert_eq!(u16::from_le_bytes([f[2], f[3]]), CLIENT_EJECT);
    u16::from_le_bytes([f[4], f[5]])
}

fn sigterm(o: &Otpd) {
    // SAFETY: sends a signal to our own child process.
    unsafe {
        libc::kill(o.child.id() as i32, libc::SIGTERM);
    }
}

/// The exit status within `within`.
fn exit_code(o: &mut Otpd, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = o.child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `n` creates (context i, setScore = i) in one burst.
fn creates(c: &mut Cluster, n: u32) {
    let thing = c.dc.class("Thing");
    let score = c.dc.field("Thing", "setScore");
    let mut burst = Vec::new();
    for i in 1..=n {
        let p = P::new().u32(i).u16(thing).u16(1).u16(score).u32(i);
        burst.extend(dg(&[DB], AI, DBSERVER_CREATE_OBJECT, &p.0));
    }
    c.probe.send(&burst);
}

/// Reads create answers until the connection closes: (context, doid) of each.
fn acks(ai: &mut Md) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while let Some(f) = ai.recv_within(Duration::from_secs(10)) {
        let at = 3 + 8 * f[2] as usize;
        if u16::from_le_bytes([f[at + 8], f[at + 9]]) != DBSERVER_CREATE_OBJECT_RESP {
            continue;
        }
        let p = &f[at + 10..];
        out.push((
            u32::from_le_bytes(p[..4].try_into().unwrap()),
            u32::from_le_bytes(p[4..8].try_into().unwrap()),
        ));
    }
    out
}

#[test]
fn sigterm_ejects_clients_commits_pending_writes_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(dir.path());
    let (mut a, mut b) = (client(&c), client(&c));
    const N: u32 = 400;
    creates(&mut c, N);
    sigterm(&c.o);
    assert_eq!(
        ejected(&mut a, Duration::from_secs(5)),
        eject::CLIENT_DISCONNECT_SHUTDOWN
    );
    assert_eq!(
        ejected(&mut b, Duration::from_secs(5)),
        eject::CLIENT_DISCONNECT_SHUTDOWN
    );
    let acked = acks(&mut c.ai);
    assert_eq!(
        exit_code(&mut c.o, Duration::from_secs(15)),
        Some(0),
        "{}",
        c.o.log_text()
    );
    assert!(
        c.o.log_text().contains("stopped cleanly"),
        "{}",
        c.o.log_text()
    );
    // Every write sent before the signal was answered, and each answer names a new object.
    assert_eq!(acked.len(), N as usize, "answered before the exit");
    assert!(acked.iter().all(|(_, doid)| *doid != 0), "none refused");

    // They are on disk: a fresh otpd on the same store reads each back with its value.
    let mut again = start(dir.path());
    let score = again.dc.field("Thing", "setScore");
    for &(ctx, doid) in acked.iter().step_by(37).chain(acked.last()) {
        again.probe.send(&dg(
            &[DB],
            AI,
            DBSERVER_OBJECT_GET_ALL,
            &P::new().u32(ctx).u32(doid).0,
        ));
        let f = again.ai.recv();
        let at = 3 + 8 * f[2] as usize + 10;
        let p = &f[at..];
        assert_eq!(
            &p[..5],
            &P::new().u32(ctx).u8(1).0[..],
            "object {doid} is stored"
        );
        let want = P::new().u16(score).u32(ctx).0;
        assert!(
            p.windows(want.len()).any(|w| w == want),
            "object {doid} has setScore {ctx}"
        );
    }
    drop(again);
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(dir.path());
    let _client = client(&c);
    sigterm(&c.o);
    std::thread::sleep(Duration::from_millis(60));
    sigterm(&c.o);
    assert_eq!(exit_code(&mut c.o, Duration::from_secs(5)), Some(1));
    assert!(c.o.log_text().contains("asked again"), "{}", c.o.log_text());
}

#[test]
fn otpd_admin_shutdown_warns_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(dir.path());
    let mut a = client(&c);
    let started = Instant::now();
    let out = std::process::Command::new(otpd_bin())
        .args([
            "admin",
            &format!("127.0.0.1:{}", c.admin),
            "shutdown",
            "--in",
            "1",
            "--message",
            "Restarting for an update.",
        ])
        .env("OTPD_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An Astron client has no system message to show: it sees the eject, after the delay.
    assert_eq!(
        ejected(&mut a, Duration::from_secs(10)),
        eject::CLIENT_DISCONNECT_SHUTDOWN
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        exit_code(&mut c.o, Duration::from_secs(15)),
        Some(0),
        "{}",
        c.o.log_text()
    );
    let log = c.o.log_text();
    assert!(
        log.contains("admin-action") && log.contains("shutdown"),
        "{log}"
    );
}

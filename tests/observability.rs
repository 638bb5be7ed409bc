//! The EventLogger role, the events the roles send it, and the metrics endpoint, against the
//! real binary: events over UDP and through CONTROL_LOG_MESSAGE read back as JSON lines,
//! rotation, role events, and counters that move on /metrics and in `otpd status`.

mod common;

use common::*;
use otp_wire::msgtypes::*;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

const CONTROL: u64 = 100_100;
const CLIENT: u64 = 9_000_001;

/// Every JSON line of every file in `dir`.
fn events(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        for line in text.lines() {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")));
        }
    }
    out
}

/// Waits until an event of `kind` is in the log, and returns it.
fn wait_event(dir: &Path, kind: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = events(dir).into_iter().find(|e| e["type"] == kind) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no '{kind}' event; have {:?}",
            events(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    o: Otpd,
    logs: tempfile::TempDir,
    el: u16,
    metrics: u16,
}

fn start(extra_roles: &str, top: &str, rotate: &str) -> Cluster {
    let logs = tempfile::tempdir().unwrap();
    let el = udp_port();
    let metrics = free_port();
    let dc = TestDc::load();
    let o = Otpd::start_full(
        free_port(),
        "",
        &format!(
            "eventlogger: Some(\"127.0.0.1:{el}\"), metrics: Some(\"127.0.0.1:{metrics}\"), dc_files: [\"{}\"], {top}
             roles: [EventLogger(bind: \"127.0.0.1:{el}\", output: \"{}/events-%H%M%S.log\", rotate_interval: \"{rotate}\"), {extra_roles}],",
            dc.path.display(),
            logs.path().display()
        ),
    );
    Cluster {
        o,
        logs,
        el,
        metrics,
    }
}

#[test]
fn events_over_udp_and_through_the_md_become_json_lines() {
    let c = start("", "", "0");
    let opened = wait_event(c.logs.path(), "log-opened");
    assert!(opened["_time"].is_string());
    // {"type": "foo", "sender": "test", "n": 7} over UDP.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"\x83\xa4type\xa3foo\xa6sender\xa4test\xa1n\x07",
        ("127.0.0.1", c.el),
    )
    .unwrap();
    let e = wait_event(c.logs.path(), "foo");
    assert_eq!(
        (e["sender"].as_str(), e["n"].as_u64()),
        (Some("test"), Some(7))
    );
    let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["_time", "type", "sender", "n"],
        "_time first, then the event's order"
    );
    // Not MessagePack, not a map, trailing bytes: nothing written.
    udp.send_to(b"{", ("127.0.0.1", c.el)).unwrap();
    udp.send_to(b"\x92\x01\x02", ("127.0.0.1", c.el)).unwrap();
    udp.send_to(b"\x81\xa4type\xa3bad\x00", ("127.0.0.1", c.el))
        .unwrap();
    // CONTROL_LOG_MESSAGE from a participant.
    let mut md = c.o.connect();
    let event = b"\x82\xa4type\xa3bar\xa6sender\xa2md";
    let mut f = control(common::CONTROL_LOG_MESSAGE, &[]);
    f.extend_from_slice(&(event.len() as u16).to_le_bytes());
    f.extend_from_slice(event);
    let len = (f.len() - 2) as u16;
    f[..2].copy_from_slice(&len.to_le_bytes());
    md.send(&f);
    wait_event(c.logs.path(), "bar");
    let all = events(c.logs.path());
    assert!(!all.iter().any(|e| e["type"] == "bad"));
    assert_eq!(all.len(), 3, "{all:?}");
}

#[test]
fn the_log_rotates_on_its_interval() {
    let c = start("", "", "1s");
    wait_event(c.logs.path(), "log-opened");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(c.logs.path()).unwrap().count() < 2 {
        assert!(Instant::now() < deadline, "no second file");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cycled = events(c.logs.path())
        .into_iter()
        .any(|e| e["type"] == "log-opened" && e["msg"] == "Log cycled.");
    assert!(cycled);
}

#[test]
fn the_stateserver_reports_invalid_updates() {
    let c = start(&format!("StateServer(control: {CONTROL})"), "", "0");
    // An invalid update on a live object.
    let dc = TestDc::load();
    let mut probe = c.o.connect();
    let mut client = listener(c.o.port, &mut probe, &[CLIENT]);
    let thing = dc.class("Thing");
    let p = P::new()
        .u32(777_001)
        .u32(0)
        .u32(0)
        .u16(thing)
        .u32(1)
        .u16(7)
        .u8(0);
    probe.send(&dg(
        &[CONTROL],
        CLIENT,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &p.0,
    ));
    probe.send(&dg(
        &[777_001],
        CLIENT,
        STATESERVER_OBJECT_GET_LOCATION,
        &P::new().u32(1).0,
    ));
    client.recv();
    let fr = dc.field("Thing", "setRanged");
    probe.send(&dg(
        &[777_001],
        CLIENT,
        STATESERVER_OBJECT_SET_FIELD,
        &P::new().u32(777_001).u16(fr).u8(99).0,
    ));
    let e = wait_event(c.logs.path(), "invalid-field-update");
    assert_eq!(e["doid"], 777_001);
    assert_eq!(e["field"], "setRanged");
    assert_eq!(e["sender"], CLIENT);
    assert_eq!(e["role"], "stateserver");
}

#[test]
fn the_md_reports_the_upstream_lost_and_regained_and_a_participant_cut_off() {
    let up = FakeUpstream::new();
    let logs = tempfile::tempdir().unwrap();
    let el = udp_port();
    let o = Otpd::start_full(
        free_port(),
        &format!(
            "connect: Some(\"127.0.0.1:{}\"), reconnect_min_ms: 50, reconnect_max_ms: 100, max_queued_bytes_per_participant: 100000,",
            up.port
        ),
        &format!(
            "eventlogger: Some(\"127.0.0.1:{el}\"), roles: [EventLogger(bind: \"127.0.0.1:{el}\", output: \"{}/ev.log\")],",
            logs.path().display()
        ),
    );
    let first = up.accept();
    drop(first);
    let e = wait_event(logs.path(), "upstream-lost");
    assert_eq!(e["daemon"], "otpd", "events name the daemon they come from");
    let _second = up.accept();
    wait_event(logs.path(), "upstream-regained");
    // A participant that never reads, flooded on its channel.
    let mut slow = o.connect();
    let mut tx = o.connect();
    slow.subscribe_confirmed(&mut tx, 4242);
    let m = dg(&[4242], 1, 1, &[0u8; 1000]);
    let burst: Vec<u8> = m.iter().copied().cycle().take(m.len() * 100).collect();
    for _ in 0..50 {
        tx.send(&burst);
    }
    let e = wait_event(logs.path(), "participant-cut-off");
    assert!(e["reason"].as_str().unwrap().contains("stopped reading"));
    assert_eq!(e["role"], "messagedirector");
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.") && r.contains(" 200 "), "{r}");
    r
}

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn metrics_move_and_otpd_status_summarizes_them() {
    let c = start(&format!("StateServer(control: {CONTROL})"), "", "0");
    wait_for_port(c.metrics);
    let before = scrape(c.metrics);
    let routed0 = value(&before, "otpd_datagrams_routed_total");
    let mut probe = c.o.connect();
    let mut client = listener(c.o.port, &mut probe, &[CLIENT]);
    let dc = TestDc::load();
    for doid in 800_000u32..800_010 {
        let p = P::new()
            .u32(doid)
            .u32(0)
            .u32(0)
            .u16(dc.class("Thing"))
            .u32(1)
            .u16(7)
            .u8(0);
        probe.send(&dg(
            &[CONTROL],
            CLIENT,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &p.0,
        ));
    }
    probe.send(&dg(
        &[800_009],
        CLIENT,
        STATESERVER_OBJECT_GET_LOCATION,
        &P::new().u32(1).0,
    ));
    client.recv();
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let t = scrape(c.metrics);
        if value(&t, "otpd_role{") >= 10.0 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(60));
    };
    assert!(
        value(&after, "otpd_datagrams_routed_total") > routed0 + 10.0,
        "{after}"
    );
    assert!(value(&after, "otpd_participants ") >= 2.0, "{after}");
    let objects: f64 = after
        .lines()
        .filter(|l| l.starts_with("otpd_role{") && l.contains("metric=\"objects\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(objects, 10.0, "{after}");
    assert!(
        value(&after, "otpd_eventlogger_events_written_total") >= 1.0,
        "{after}"
    );
    let out = std::process::Command::new(otpd_bin())
        .args(["status", &format!("127.0.0.1:{}", c.metrics)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("otpd: 2 cores"), "{text}");
    assert!(
        text.contains("stateserver: ") && text.contains("objects 10"),
        "{text}"
    );
    assert!(text.contains("eventlogger: "), "{text}");
}

#[test]
fn client_agent_events_are_written_by_the_eventlogger() {
    let port = free_port();
    let c = start(
        &format!(
            "ClientAgent((bind: \"127.0.0.1:{port}\", version: \"v\", channels: (min: 1000000, max: 1000999)))"
        ),
        "",
        "0",
    );
    let mut first = Md::connect(port);
    let e = wait_event(c.logs.path(), "client-connected");
    assert!(e["remote_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(e["sender"], "Client:1000000");
    assert_eq!(e["role"], "clientagent");
    // A message before HELLO: ejected (107), with the code, the reason and the address.
    first.send(&frame(&[0x37, 0x13]));
    let e = wait_event(c.logs.path(), "client-ejected");
    assert_eq!(e["reason_code"], "107");
    assert_eq!(e["channel"], 1000000);
    assert!(e["reason_msg"].as_str().unwrap().contains("HELLO"));
    // A client that just goes away is lost.
    let second = Md::connect(port);
    drop(second);
    let e = wait_event(c.logs.path(), "client-lost");
    assert_eq!(e["reason"], "connection closed by peer");
}

/// An otpd whose only role is an EventLogger on a free UDP port, with `keys` added to the
/// role and its files under `logs` as `events-%H%M%S.log`. Returns it and the UDP port.
fn start_eventlogger(logs: &Path, keys: &str) -> (Otpd, u16) {
    let el = udp_port();
    let o = Otpd::start_full(
        free_port(),
        "",
        &format!(
            "roles: [EventLogger(bind: \"127.0.0.1:{el}\", output: \"{}/events-%H%M%S.log\", {keys})],",
            logs.display()
        ),
    );
    (o, el)
}

/// A MessagePack event {"type": kind, "n": n, "pad": "AAA..."} with `pad` bytes of padding.
fn event(kind: &str, n: u16, pad: usize) -> Vec<u8> {
    let mut p = vec![0x83, 0xa4];
    p.extend_from_slice(b"type");
    p.push(0xa0 | kind.len() as u8);
    p.extend_from_slice(kind.as_bytes());
    p.extend_from_slice(b"\xa1n\xcd");
    p.extend_from_slice(&n.to_be_bytes());
    p.extend_from_slice(b"\xa3pad\xda");
    p.extend_from_slice(&(pad as u16).to_be_bytes());
    p.extend(std::iter::repeat_n(b'A', pad));
    p
}

/// Bytes in every file of `dir`.
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Item 16 of issue 17: 60 kB events within the event cap wrote hundreds of MB per second.
/// A flood of them is held to `max_bytes_per_second`, and the drops are counted in the log.
#[test]
fn a_flood_of_large_events_is_held_to_the_byte_budget() {
    let logs = tempfile::tempdir().unwrap();
    let (_o, el) = start_eventlogger(logs.path(), "max_bytes_per_second: 65536");
    wait_event(logs.path(), "log-opened");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let big = event("flood", 0, 60_000);
    let t0 = Instant::now();
    for _ in 0..200 {
        udp.send_to(&big, ("127.0.0.1", el)).unwrap();
        // Paced so that the socket's buffer never overflows: every packet reaches otpd.
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = t0.elapsed().as_secs() + 1;
    let dropped = wait_event(logs.path(), "events-dropped");
    assert!(dropped["count"].as_u64().unwrap() >= 100, "{dropped}");
    std::thread::sleep(Duration::from_millis(500));
    let written = bytes_in(logs.path());
    let budget = 65_536 * (seconds + 1) + 4096;
    assert!(
        written <= budget,
        "{written} bytes written in about {seconds} s (budget 64 KiB/s)"
    );
    let floods = events(logs.path())
        .iter()
        .filter(|e| e["type"] == "flood")
        .count();
    assert!(floods >= 1, "an event that fits is written");
}

/// Item 16 of issue 17: the EventLogger never deleted anything, so a flood (or time) filled the
/// disk. Files its pattern names are deleted past `max_files` and `max_age`; other files in
/// the folder are left alone.
#[test]
fn old_event_logs_are_deleted_past_max_files_and_max_age() {
    let logs = tempfile::tempdir().unwrap();
    let aged = |name: &str, age: Duration| {
        let p = logs.path().join(name);
        std::fs::write(&p, "{}\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    };
    let day = Duration::from_secs(86_400);
    aged("events-000001.log", 3 * day);
    aged("events-000002.log", Duration::from_secs(3600));
    aged("notes.txt", 3 * day);
    aged("events-backup.log", 3 * day);
    let (_o, el) = start_eventlogger(
        logs.path(),
        "max_file_bytes: 4096, max_files: 3, max_age: \"2d\"",
    );
    wait_event(logs.path(), "log-opened");
    let exists = |n: &str| logs.path().join(n).exists();
    assert!(!exists("events-000001.log"), "older than max_age");
    assert!(exists("events-000002.log"), "within max_files and max_age");
    // Some 20 kB of events: several new files, of which only the newest are kept.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..100 {
        udp.send_to(&event("tick", n, 150), ("127.0.0.1", el))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events(logs.path())
        .iter()
        .any(|e| e["type"] == "tick" && e["n"] == 99)
    {
        assert!(Instant::now() < deadline, "the last event is never written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut names: Vec<String> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let ours: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("events-") && *n != "events-backup.log")
        .collect();
    assert_eq!(ours.len(), 3, "{names:?}");
    assert!(!exists("events-000002.log"), "{names:?}");
    assert!(
        exists("notes.txt") && exists("events-backup.log"),
        "{names:?}"
    );
}

/// Item 16 of issue 17: anyone who could reach the EventLogger's port could write to the log.
/// With `allow_from`, packets from other addresses are dropped unread, and counted.
#[test]
fn events_from_senders_not_in_allow_from_are_dropped() {
    let logs = tempfile::tempdir().unwrap();
    let (_o, el) = start_eventlogger(logs.path(), "allow_from: [\"127.0.0.2\", \"10.0.0.0/8\"]");
    wait_event(logs.path(), "log-opened");
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let friend = UdpSocket::bind("127.0.0.2:0").unwrap();
    for n in 0..5 {
        stranger
            .send_to(&event("forged", n, 10), ("127.0.0.1", el))
            .unwrap();
    }
    friend
        .send_to(&event("genuine", 1, 10), ("127.0.0.1", el))
        .unwrap();
    wait_event(logs.path(), "genuine");
    let refused = wait_event(logs.path(), "events-refused");
    assert_eq!(refused["count"], 5);
    assert!(!events(logs.path()).iter().any(|e| e["type"] == "forged"));
}

/// Item 17 of issue 17: event logs (client addresses, account names) were created readable by
/// every user. Under umask 000, the log and the folders otpd makes for it are 0600 and 0700.
#[test]
fn event_logs_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let el = udp_port();
    let port = free_port();
    let conf = dir.path().join("c.ron");
    std::fs::write(
        &conf,
        format!(
            "(cores: 1, pin_cores: false, messagedirector: (bind: Some(\"127.0.0.1:{port}\")), \
             roles: [EventLogger(bind: \"127.0.0.1:{el}\", output: \"{}/new/logs/ev-%H%M%S.log\")])",
            dir.path().display()
        ),
    )
    .unwrap();
    let _child = Stopped(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(otpd_bin())
            .arg("--cluster")
            .arg(&conf)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let logs = dir.path().join("new/logs");
    wait_event(&logs, "log-opened");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for d in [dir.path().join("new"), logs.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    for f in std::fs::read_dir(&logs).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

/// A child process stopped when dropped, so that a failing test leaves no otpd behind.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

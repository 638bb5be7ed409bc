//! The metrics endpoint under abuse, against the real binary (issue 17, item 15): slow
//! connections cost no threads and do not keep the scraper out, a huge request head is cut off
//! without being buffered, idle and slow connections are closed, and every refusal is counted.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// otpd with a metrics endpoint; `limits` is the `metrics_limits` section ("" = defaults).
fn start(limits: &str) -> (Otpd, u16) {
    let metrics = free_port();
    let limits = if limits.is_empty() {
        String::new()
    } else {
        format!("metrics_limits: ({limits}),")
    };
    let o = Otpd::start_full(
        free_port(),
        "",
        &format!("metrics: Some(\"127.0.0.1:{metrics}\"), {limits}"),
    );
    wait_for_port(metrics);
    (o, metrics)
}

fn pid(o: &Otpd) -> u32 {
    o.child.id()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// One request on a new connection; the whole answer (the server closes after HTTP/1.0).
fn get(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    String::from_utf8_lossy(&r).into_owned()
}

fn scrape(port: u16) -> String {
    let r = get(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.") && r.contains(" 200 "), "{r}");
    r
}

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// True when the server closes `s` (end of stream or reset) within `within`, whatever it
/// answers first; false when the connection is still open then.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_connections_cost_no_threads_and_do_not_keep_the_scraper_out() {
    let (o, port) = start("");
    let pid = pid(&o);
    scrape(port);
    let before = threads(pid);
    // 300 clients that start a request and never finish it.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: otpd\r\n");
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = threads(pid);
    assert!(
        during <= before + 2,
        "{before} threads before, {during} with 300 slow connections"
    );
    // The scraper still gets its answer, promptly, while they are all open.
    let t = Instant::now();
    let text = scrape(port);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(text.contains("otpd_participants"), "{text}");
    let refused = value(
        &text,
        "otpd_metrics_http_dropped_total{reason=\"connection_limit\"}",
    ) + value(&text, "otpd_metrics_http_dropped_total{reason=\"evicted\"}");
    assert!(refused >= 250.0, "{text}");
    let open = value(&text, "otpd_metrics_http_connections ");
    assert!((1.0..=16.0).contains(&open), "{text}");
    drop(slow);
}

#[test]
fn a_huge_request_head_is_cut_off_not_buffered() {
    let (o, port) = start("");
    let pid = pid(&o);
    scrape(port);
    let rss0 = rss_kib(pid);
    // Four clients, each sending 16 MB of headers that never end.
    let senders: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut sent = 0usize;
                let mut ok = s.write_all(b"GET /metrics HTTP/1.1\r\n").is_ok();
                let line = format!("X-Filler-{i}: {}\r\n", "a".repeat(1000));
                while ok && sent < 16 << 20 {
                    ok = s.write_all(line.as_bytes()).is_ok();
                    sent += line.len();
                }
                // Refused before the end: the write failed, or the answer is a 431 and a close.
                let closed = !ok || closed_within(&mut s, Duration::from_secs(5));
                (closed, sent)
            })
        })
        .collect();
    for t in senders {
        let (closed, sent) = t.join().unwrap();
        assert!(
            closed,
            "the connection is still open after {sent} bytes of headers"
        );
        assert!(sent < 16 << 20, "all {sent} bytes were taken");
    }
    let grown = rss_kib(pid).saturating_sub(rss0);
    assert!(grown < 8 * 1024, "otpd grew by {grown} KiB");
    // One 1 MB head: a 431 answer, then the connection closes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut head = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    head.resize(1 << 20, b'b');
    let _ = s.write_all(&head);
    let mut answer = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    let text = scrape(port);
    assert!(
        value(
            &text,
            "otpd_metrics_http_dropped_total{reason=\"request_too_large\"}"
        ) >= 5.0,
        "{text}"
    );
}

#[test]
fn idle_and_slow_connections_are_closed_and_counted() {
    let (_o, port) = start(
        "max_connections: 3, max_request_bytes: 1024, read_timeout_ms: 300, write_timeout_ms: 300, idle_timeout_ms: 400",
    );
    // Says nothing: closed after the idle timeout.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // Starts a request and stalls: closed after the read timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)));
    // Asks for answers and never reads them: closed after the write timeout.
    let mut deaf = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let pipelined = "GET /metrics HTTP/1.1\r\n\r\n".repeat(40);
    deaf.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut n = 0;
    while n < 20_000 && deaf.write_all(pipelined.as_bytes()).is_ok() {
        n += 1;
    }
    std::thread::sleep(Duration::from_millis(1000));
    let text = scrape(port);
    assert!(
        value(
            &text,
            "otpd_metrics_http_dropped_total{reason=\"read_timeout\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            "otpd_metrics_http_dropped_total{reason=\"write_timeout\"}"
        ) >= 1.0,
        "{text}"
    );
    // A full house of stalled requests: the newest connection takes the oldest one's place.
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s
        })
        .collect();
    let text = scrape(port);
    assert!(
        value(&text, "otpd_metrics_http_dropped_total{reason=\"evicted\"}") >= 1.0,
        "{text}"
    );
    let mut first = stalled.into_iter().next().unwrap();
    assert!(closed_within(&mut first, Duration::from_millis(200)));
}

#[test]
fn keep_alive_head_and_other_paths() {
    let (_o, port) = start("");
    // Two requests on one HTTP/1.1 connection, then one that asks to close.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: otpd\r\n\r\nGET /nothing HTTP/1.1\r\nHost: otpd\r\n\r\nHEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    let r = String::from_utf8_lossy(&r);
    let first_len: usize = r
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let (head, rest) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let (body, rest) = rest.split_at(first_len);
    assert!(body.contains("# TYPE otpd_participants gauge"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let (head, rest) = rest.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    let (body, rest) = rest.split_at("otpd: metrics are at /metrics\n".len());
    assert_eq!(body, "otpd: metrics are at /metrics\n");
    let (head, rest) = rest.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(rest, "", "HEAD has no body");
    // Not HTTP: 400, closed.
    let r = get(port, "hello\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // `otpd status` still reads it.
    let out = std::process::Command::new(otpd_bin())
        .args(["status", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("otpd: 2 cores"));
}

#[test]
fn limits_are_checked_and_cluster_ron_shows_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster.ron");
    let config = otpd::config::ron_file::load(std::path::Path::new(path)).unwrap();
    assert_eq!(config.metrics_limits, otpd::config::HttpLimits::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.ron");
    for (limits, complaint) in [
        ("max_connections: 0", "max_connections"),
        ("max_request_bytes: 100", "max_request_bytes"),
        ("idle_timeout_ms: 0", "idle_timeout_ms"),
        ("max_conections: 3", "max_conections"),
    ] {
        std::fs::write(&file, format!("(metrics_limits: ({limits}))")).unwrap();
        let err = otpd::config::ron_file::load(&file).unwrap_err().to_string();
        assert!(err.contains(complaint), "{limits}: {err}");
    }
}

/// Issue 18, "writes per delivery": a client's deliveries in one event-loop turn share one
/// socket write, and the metrics count both (`otpd_client_deliveries_total`,
/// `otpd_client_socket_writes_total`, per core). A participant sends an Astron client 200
/// datagrams (CLIENTAGENT_SEND_DATAGRAM) in one TCP write: the client gets them all, in far
/// fewer writes.
#[test]
fn a_burst_to_a_client_is_counted_as_deliveries_in_fewer_writes() {
    use otp_wire::msgtypes::*;
    const BURST: usize = 200;
    let dc = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/dc/client.dc")
        .canonicalize()
        .unwrap();
    let metrics = free_port();
    let ca = free_port();
    let o = Otpd::start_full(
        free_port(),
        "",
        &format!(
            "metrics: Some(\"127.0.0.1:{metrics}\"), dc_files: [\"{}\"], \
             roles: [ClientAgent((bind: \"127.0.0.1:{ca}\", version: \"v1\", manual_dc_hash: Some(77), \
             channels: (min: 5000000, max: 5000099)))],",
            dc.display()
        ),
    );
    wait_for_port(metrics);
    // (Not the client listener: a probe connection would use up its first channel.)
    let figures = || {
        let text = scrape(metrics);
        assert!(
            text.contains("otpd_client_socket_writes_total{core=\"0\"}")
                && text.contains("otpd_client_deliveries_total{core=\"1\"}"),
            "{text}"
        );
        (
            value(&text, "otpd_client_deliveries_total{"),
            value(&text, "otpd_client_socket_writes_total{"),
        )
    };
    let mut client = Md::connect(ca);
    let mut hello = CLIENT_HELLO.to_le_bytes().to_vec();
    hello.extend_from_slice(&77u32.to_le_bytes());
    hello.extend_from_slice(&2u16.to_le_bytes());
    hello.extend_from_slice(b"v1");
    client.send(&frame(&hello));
    let f = client
        .recv_within(Duration::from_secs(5))
        .expect("HELLO_RESP");
    assert_eq!(u16::from_le_bytes([f[2], f[3]]), CLIENT_HELLO_RESP);
    // The figures are published at the end of each loop turn: wait until the HELLO_RESP's are.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (d0, w0) = loop {
        let (d, w) = figures();
        if d >= 1.0 && w >= 1.0 {
            break (d, w);
        }
        assert!(
            Instant::now() < deadline,
            "HELLO_RESP never counted: {d} {w}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut burst = Vec::new();
    for i in 0..BURST {
        let body = format!("\u{1}\u{2}datagram {i:04}");
        burst.extend(dg(
            &[5_000_000],
            0xBEEF,
            CLIENTAGENT_SEND_DATAGRAM,
            &P::new().string(&body).0,
        ));
    }
    let mut md = o.connect();
    md.send(&burst);
    for i in 0..BURST {
        let f = client
            .recv_within(Duration::from_secs(5))
            .expect("the burst");
        assert_eq!(&f[2..], format!("\u{1}\u{2}datagram {i:04}").as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let (d1, w1) = loop {
        let (d, w) = figures();
        if d - d0 >= BURST as f64 {
            break (d, w);
        }
        assert!(
            Instant::now() < deadline,
            "the burst never counted: {d} {w}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (deliveries, writes) = (d1 - d0, w1 - w0);
    eprintln!("burst: {deliveries} deliveries, {writes} socket writes");
    assert_eq!(deliveries, BURST as f64);
    assert!(
        (1.0..=(BURST / 10) as f64).contains(&writes),
        "{BURST} deliveries took {writes} writes"
    );
    // Write pacing: a core with spare time writes at each turn's end (spacing 0), and says so.
    let text = scrape(metrics);
    assert!(
        text.contains("otpd_client_write_spacing_microseconds{core=\"1\"}"),
        "{text}"
    );
    assert_eq!(
        value(&text, "otpd_client_write_spacing_microseconds{"),
        0.0,
        "{text}"
    );
}

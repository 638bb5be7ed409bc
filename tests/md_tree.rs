//! The child side of an MD-to-MD link against a stand-in upstream MD (a listener in the test):
//! what is owed to the upstream while it is down, the name a child gives itself, the bounded
//! outgoing queue, dead links and connect deadlines, clients while the cluster is unreachable,
//! `on_upstream_lost: Exit`, and the link's metrics.

mod common;

use common::*;
use socket2::{Domain, Socket, Type};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const CLIENTAGENT_ADD_POST_REMOVE: u16 = 1110;
const CLIENT_EJECT: u16 = 4;

/// Waits until otpd's log contains `needle`; returns how long that took.
fn wait_log(o: &Otpd, needle: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if o.log_text().contains(needle) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "'{needle}' not logged within {within:?}; the log:\n{}",
            o.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn child_of(port: u16, extra: &str) -> Otpd {
    Otpd::start(
        free_port(),
        &format!(
            "connect: Some(\"127.0.0.1:{port}\"), reconnect_min_ms: 50, reconnect_max_ms: 200, {extra}"
        ),
    )
}

/// A listener whose accepted connections have a tiny receive buffer (so a peer that is not
/// read fills it quickly).
fn tiny_listener() -> (TcpListener, u16) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(8).unwrap();
    let l: TcpListener = s.into();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn scrape(port: u16) -> String {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn post_removes_fired_while_the_upstream_is_down_arrive_after_the_replay_in_order() {
    let up = FakeUpstream::new();
    let port = up.port;
    let child = child_of(port, "");
    let (mut l1, name1) = up.accept_child();
    let (text, incarnation) = name1
        .strip_suffix(']')
        .and_then(|s| s.split_once(" [otpd-md "))
        .expect("name [otpd-md INCARNATION]");
    assert_eq!(text, "otpd");
    assert_eq!(incarnation.len(), 16);
    assert!(u64::from_str_radix(incarnation, 16).is_ok());

    // One participant stays (its state is replayed), one leaves while the upstream is away.
    let mut stays = child.connect();
    stays.send(&add_channel(4001));
    let keep = add_post_remove(303030, &dg(&[4001], 0, 2009, b"stays"));
    stays.send(&keep);
    l1.expect(&add_channel(4001));
    l1.expect(&keep);
    let mut leaves = child.connect();
    let prs = [
        dg(&[555], 0, 2009, b"first"),
        dg(&[556], 0, 2009, b"second"),
        dg(&[557], 0, 2009, b"third"),
    ];
    let adds = [
        add_post_remove(191919, &prs[0]),
        add_post_remove(202020, &prs[1]),
        add_post_remove(191919, &prs[2]),
    ];
    for a in &adds {
        leaves.send(a);
    }
    for a in &adds {
        l1.expect(a);
    }

    // The upstream goes away (nothing listens any more), then the participant leaves.
    drop(up);
    drop(l1);
    wait_log(&child, "lost (", Duration::from_secs(5));
    drop(leaves);
    std::thread::sleep(Duration::from_millis(300));

    // It comes back on the same port: our name, the replay, then the fired post-removes.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let up = FakeUpstream { listener, port };
    let (mut l2, name2) = up.accept_child();
    assert_eq!(
        name2, name1,
        "the same name and incarnation on every connection"
    );
    let got = drain(&mut l2, Duration::from_millis(400));
    let want = vec![
        add_channel(4001),
        keep.clone(),
        prs[0].clone(),
        prs[1].clone(),
        prs[2].clone(),
    ];
    assert_eq!(
        got, want,
        "replay, then what was owed, in order; nothing else"
    );
}

#[test]
fn an_upstream_that_stops_reading_is_cut_at_max_queued_bytes_upstream_then_rejoined() {
    let (listener, port) = tiny_listener();
    let up = FakeUpstream { listener, port };
    let metrics = free_port();
    let child = Otpd::start_full(
        free_port(),
        &format!(
            "connect: Some(\"127.0.0.1:{port}\"), reconnect_min_ms: 50, reconnect_max_ms: 200, max_queued_bytes_upstream: 1000000,"
        ),
        &format!("metrics: Some(\"127.0.0.1:{metrics}\"),"),
    );
    let (_stuck, _) = up.accept_child(); // never read again
    let mut ai = child.connect();
    ai.send(&add_channel(4242));
    let m = dg(&[777], 1, 1, &[0u8; 1000]);
    let burst: Vec<u8> = m.iter().copied().cycle().take(m.len() * 1000).collect();
    for _ in 0..12 {
        ai.send(&burst); // 12 MB: more than every kernel buffer on the way
    }
    wait_log(
        &child,
        "over max_queued_bytes_upstream",
        Duration::from_secs(10),
    );
    // It reconnects and replays.
    let (mut l2, _) = up.accept_child();
    l2.expect(&add_channel(4242));
    let text = scrape(metrics);
    assert_eq!(
        metric(&text, "otpd_upstream_losses_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "otpd_upstream_cut_off_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "otpd_upstream_connected"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "otpd_upstream_dropped_datagrams_total").is_some(),
        "{text}"
    );
    let silent = metric(&text, "otpd_upstream_seconds_since_last_byte").expect("the gauge");
    assert!((0.0..5.0).contains(&silent), "{text}");
    // Memory stayed bounded: nothing like the 12 MB sent is held.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.child.id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rss_kb < 60_000, "RSS {rss_kb} kB");
}

#[test]
fn an_upstream_that_stops_acknowledging_is_declared_lost_within_link_timeout() {
    // A peer that never reads: its window closes and stays closed, so our data is never
    // acknowledged (as on a black-holed path), and TCP_USER_TIMEOUT ends the link.
    let (listener, port) = tiny_listener();
    let up = FakeUpstream { listener, port };
    let child = child_of(port, "link_timeout_ms: 1000, keepalive_ms: 1000,");
    let (_stuck, _) = up.accept_child();
    let mut ai = child.connect();
    let m = dg(&[777], 1, 1, &[0u8; 1000]);
    let burst: Vec<u8> = m.iter().copied().cycle().take(m.len() * 1000).collect();
    for _ in 0..6 {
        ai.send(&burst);
    }
    let took = wait_log(&child, "lost (", Duration::from_secs(8));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        child.log_text().contains("timed out"),
        "{}",
        child.log_text()
    );
    // And it is back as soon as the upstream answers again.
    let (mut l2, _) = up.accept_child();
    l2.expect_none();
}

#[test]
fn a_connect_that_is_never_answered_is_given_up_after_connect_timeout_and_retried() {
    // A listener whose accept queue is full drops further SYNs: a connect to it hangs.
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(0).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let f = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        f.set_nonblocking(true).unwrap();
        let _ = f.connect(&target.into());
        fillers.push(f);
    }
    std::thread::sleep(Duration::from_millis(100));
    let child = child_of(port, "connect_timeout_ms: 300,");
    let took = wait_log(
        &child,
        "connect timed out after 300 ms",
        Duration::from_secs(3),
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Retried: a second attempt times out as well, within the backoff.
    std::thread::sleep(Duration::from_millis(1000));
    let n = child.log_text().matches("connect timed out").count();
    assert!(n >= 2, "{n} attempts given up");
    drop(s);
}

#[test]
fn on_upstream_lost_exit_makes_otpd_exit_non_zero() {
    let up = FakeUpstream::new();
    let mut child = child_of(up.port, "on_upstream_lost: Exit,");
    let (l1, _) = up.accept_child();
    drop(l1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    assert!(child
        .log_text()
        .contains("exiting (on_upstream_lost: Exit)"));
}

// ---- clients of a child's ClientAgent ----------------------------------------------------

const CA_MIN: u64 = 1_000_000;

fn child_with_ca(up_port: u16) -> (Otpd, u16) {
    child_with_ca_and(up_port, "")
}

fn child_with_ca_and(up_port: u16, md_extra: &str) -> (Otpd, u16) {
    let dc = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/dc/client.dc")
        .canonicalize()
        .unwrap();
    let ca = free_port();
    let o = Otpd::start_full(
        free_port(),
        &format!(
            "connect: Some(\"127.0.0.1:{up_port}\"), reconnect_min_ms: 50, reconnect_max_ms: 200, {md_extra}"
        ),
        &format!(
            "dc_files: [\"{}\"], roles: [ClientAgent((bind: \"127.0.0.1:{ca}\", version: \"v\", channels: (min: {CA_MIN}, max: {})))],",
            dc.display(),
            CA_MIN + 999
        ),
    );
    wait_for_port(ca);
    (o, ca)
}

/// The next client datagram: (msgtype, eject code if it is CLIENT_EJECT).
fn client_eject(s: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u16::from_le_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    assert_eq!(u16::from_le_bytes([body[0], body[1]]), CLIENT_EJECT);
    let code = u16::from_le_bytes([body[2], body[3]]);
    let n = u16::from_le_bytes([body[4], body[5]]) as usize;
    Some((code, String::from_utf8_lossy(&body[6..6 + n]).into_owned()))
}

#[test]
fn a_new_client_is_refused_with_131_while_the_upstream_is_down() {
    let up = FakeUpstream::new();
    let port = up.port;
    drop(up); // nothing listens: the upstream is down from the start
    let (child, ca) = child_with_ca(port);
    let mut c = TcpStream::connect(("127.0.0.1", ca)).unwrap();
    let (code, reason) = client_eject(&mut c, Duration::from_secs(3)).expect("an eject");
    assert_eq!(code, 131, "{reason}");
    assert!(reason.contains("cluster"), "{reason}");
    // Once the upstream is there, clients are taken again.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let up = FakeUpstream { listener, port };
    let (_l, _) = up.accept_child();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(("127.0.0.1", ca)).unwrap();
    assert_eq!(client_eject(&mut c, Duration::from_millis(500)), None);
    drop(child);
}

#[test]
fn a_session_with_post_removes_is_ejected_with_130_when_the_upstream_is_regained() {
    let up = FakeUpstream::new();
    let (child, ca) = child_with_ca(up.port);
    let (mut l1, _) = up.accept_child();
    let mut with_pr = TcpStream::connect(("127.0.0.1", ca)).unwrap();
    let mut without = TcpStream::connect(("127.0.0.1", ca)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // An AI gives the first client (the range's first channel) a post-remove; it is
    // registered upstream under that channel.
    let mut ai = child.connect();
    let pr = dg(&[4242], CA_MIN, 2009, b"delete the avatar");
    let mut body = Vec::new();
    body.extend_from_slice(&(pr.len() as u16 - 2).to_le_bytes());
    body.extend_from_slice(&pr[2..]);
    ai.send(&dg(&[CA_MIN], 1, CLIENTAGENT_ADD_POST_REMOVE, &body));
    let want = add_post_remove(CA_MIN, &pr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while l1.recv() != want {
        assert!(
            Instant::now() < deadline,
            "the post-remove never went upstream"
        );
    }
    // The link is lost and regained: the upstream may have fired that post-remove.
    drop(l1);
    let (_l2, _) = up.accept_child();
    let (code, reason) = client_eject(&mut with_pr, Duration::from_secs(3)).expect("an eject");
    assert_eq!(code, 130, "{reason}");
    // A session without post-removes stays.
    assert_eq!(client_eject(&mut without, Duration::from_millis(300)), None);
    assert!(child.log_text().contains("ejected 1 client session(s)"));
}

/// After a regain, what was owed is held until the link has stayed up for upstream_settle_ms
/// (a restarted root's other children need that long to re-subscribe; a delete sent before
/// reaches nobody), and new clients are refused meanwhile (a re-login must not meet a late
/// delete of its own avatar); then the owed post-removes go out and clients are taken again.
#[test]
fn owed_post_removes_wait_for_the_regained_link_to_settle_and_clients_are_refused_meanwhile() {
    const SETTLE_MS: u64 = 1200;
    let up = FakeUpstream::new();
    let port = up.port;
    let (child, ca) = child_with_ca_and(port, &format!("upstream_settle_ms: Some({SETTLE_MS}),"));
    let (mut l1, _) = up.accept_child();
    let mut leaves = child.connect();
    let pr = dg(&[555], 0, 2009, b"owed");
    let add = add_post_remove(191919, &pr);
    leaves.send(&add);
    let deadline = Instant::now() + Duration::from_secs(5);
    while l1.recv() != add {
        assert!(
            Instant::now() < deadline,
            "the post-remove never went upstream"
        );
    }
    drop(up);
    drop(l1);
    wait_log(&child, "lost (", Duration::from_secs(5));
    drop(leaves);
    std::thread::sleep(Duration::from_millis(300));

    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let up = FakeUpstream { listener, port };
    let (mut l2, _) = up.accept_child();
    let regained = Instant::now();
    let early = drain(&mut l2, Duration::from_millis(300));
    assert!(
        !early.contains(&pr),
        "the owed post-remove waits for the settle"
    );
    let mut c = TcpStream::connect(("127.0.0.1", ca)).unwrap();
    let (code, reason) =
        client_eject(&mut c, Duration::from_millis(500)).expect("refused while settling");
    assert_eq!(code, 131, "{reason}");
    assert!(
        regained.elapsed() < Duration::from_millis(SETTLE_MS),
        "checked within the settle period ({:?})",
        regained.elapsed()
    );
    let deadline = regained + Duration::from_millis(SETTLE_MS + 3000);
    loop {
        let f = l2.recv();
        if f == pr {
            break;
        }
        assert!(Instant::now() < deadline, "the owed post-remove never came");
    }
    let took = regained.elapsed();
    assert!(
        took >= Duration::from_millis(SETTLE_MS - 100),
        "sent once settled, not before ({took:?})"
    );
    wait_log(&child, "settled; sent", Duration::from_secs(2));
    let mut c = TcpStream::connect(("127.0.0.1", ca)).unwrap();
    assert_eq!(client_eject(&mut c, Duration::from_millis(500)), None);
}

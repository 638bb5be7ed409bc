//! The root's side of a tree of otpd MDs: a child MD that re-registers on a new link does not
//! have its old link's post-removes fired (they would delete objects under live players), a
//! child that is really gone does, and the root lists its child MDs on /metrics and in
//! `otpd status`.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// CONTROL_SET_CON_NAME as an otpd child MD sends it (`md::link_name`).
fn set_child_name(name: &str, incarnation: u64) -> Vec<u8> {
    let text = format!("{name} [otpd-md {incarnation:016x}]");
    let mut f = control(CONTROL_SET_CON_NAME, &[]);
    f.extend_from_slice(&(text.len() as u16).to_le_bytes());
    f.extend_from_slice(text.as_bytes());
    let len = (f.len() - 2) as u16;
    f[..2].copy_from_slice(&len.to_le_bytes());
    f
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

/// Waits until the root's metrics satisfy `ok`.
fn metrics_until(port: u16, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(port);
        if ok(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn root_with_metrics() -> (Otpd, u16) {
    let metrics = free_port();
    let root = Otpd::start_full(
        free_port(),
        "",
        &format!("metrics: Some(\"127.0.0.1:{metrics}\"),"),
    );
    wait_for_port(metrics);
    (root, metrics)
}

/// Split brain, root side: the child lost its link and re-registered on a new one (replaying
/// its post-removes there) before the root noticed the old link die. When the old link
/// closes, its post-removes must not fire: the child's players are still connected.
#[test]
fn an_old_link_of_a_child_that_re_registered_does_not_fire_its_post_removes() {
    let (root, metrics) = root_with_metrics();
    let (mut ss, mut tx) = (root.connect(), root.connect());
    ss.subscribe_confirmed(&mut tx, 4_100_000_001);
    let delete = dg(&[4_100_000_001], 77, 2007, b"avatar 1 of ca-host");

    let mut old = root.connect();
    old.send(&set_child_name("ca-host", 0xfeed));
    old.send(&add_post_remove(77, &delete));
    let mut new = root.connect();
    new.send(&set_child_name("ca-host", 0xfeed));
    new.send(&add_post_remove(77, &delete));
    let text = metrics_until(metrics, |t| {
        t.contains("otpd_child_md_links{") && t.contains("} 2")
    });
    assert!(text.contains("otpd_child_mds 1"), "{text}");
    // Everything the new link sent has been read before the old one goes.
    new.subscribe_confirmed(&mut tx, 4_100_000_002);
    drop(old);
    ss.expect_none();
    std::thread::sleep(Duration::from_millis(300));
    ss.expect_none();
    assert!(
        root.log_text().contains("are not fired"),
        "the root says why: {}",
        root.log_text()
    );

    // The child really goes: its post-removes fire, once.
    drop(new);
    ss.expect(&delete);
    ss.expect_none();
    let text = metrics_until(metrics, |t| t.contains("otpd_child_mds 0"));
    assert!(text.contains("otpd_child_mds 0"), "{text}");
}

/// Another process with the same daemon name (a different incarnation) is another child: its
/// links do not hide each other's post-removes.
#[test]
fn a_different_incarnation_is_a_different_child() {
    let root = Otpd::start(free_port(), "");
    let (mut ss, mut tx) = (root.connect(), root.connect());
    ss.subscribe_confirmed(&mut tx, 4_100_000_011);
    let first = dg(&[4_100_000_011], 1, 2007, b"first process");
    let second = dg(&[4_100_000_011], 2, 2007, b"second process");
    let mut a = root.connect();
    a.send(&set_child_name("ca-host", 1));
    a.send(&add_post_remove(1, &first));
    let mut b = root.connect();
    b.send(&set_child_name("ca-host", 2));
    b.send(&add_post_remove(2, &second));
    b.subscribe_confirmed(&mut tx, 4_100_000_012);
    a.subscribe_confirmed(&mut tx, 4_100_000_013);
    drop(a);
    ss.expect(&first);
    drop(b);
    ss.expect(&second);
    ss.expect_none();
}

/// The root lists its child MDs (name, address, subscriptions, post-removes, last heard) on
/// /metrics and in `otpd status`; a participant that is not an otpd MD is not listed.
#[test]
fn the_root_lists_its_child_mds() {
    let (root, metrics) = root_with_metrics();
    let mut tx = root.connect();
    let mut ai = root.connect();
    ai.send(&control(CONTROL_SET_CON_NAME, &[]));
    let mut child = root.connect();
    child.send(&set_child_name("east-ca", 9));
    child.send(&add_post_remove(5, &dg(&[4_100_000_021], 5, 2007, b"x")));
    child.subscribe_confirmed(&mut tx, 4_100_000_021);
    child.subscribe_confirmed(&mut tx, 4_100_000_022);
    let text = metrics_until(metrics, |t| {
        t.lines()
            .any(|l| l.starts_with("otpd_child_md_subscriptions{") && l.ends_with(" 2"))
    });
    assert!(text.contains("otpd_child_mds 1"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    let subs = line("otpd_child_md_subscriptions{");
    assert!(
        subs.contains("child=\"east-ca\"") && subs.contains("address=\"127.0.0.1:"),
        "{subs}"
    );
    assert!(subs.ends_with(" 2"), "{subs}");
    assert!(line("otpd_child_md_post_removes{").ends_with(" 1"));
    let quiet: f64 = line("otpd_child_md_seconds_since_heard{")
        .rsplit_once(' ')
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!((0.0..5.0).contains(&quiet), "{quiet}");

    let out = std::process::Command::new(otpd_bin())
        .args(["status", &format!("127.0.0.1:{metrics}")])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("child MDs: 1"), "{status}");
    assert!(
        status.contains("east-ca at 127.0.0.1:")
            && status.contains("2 subscriptions, 1 post-removes, 1 links"),
        "{status}"
    );
}

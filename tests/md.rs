//! MessageDirector integration tests: the real `otpd` binary, real sockets, each routing rule,
//! post-removes, ranges, the upstream tree, upstream loss, slow participants and bad input.

mod common;

use common::*;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[test]
fn routes_unchanged_bytes_to_subscribers_but_never_back_to_the_sender() {
    let d = Otpd::start(free_port(), "");
    let (mut c1, mut c2, mut c3) = (d.connect(), d.connect(), d.connect());
    c1.subscribe_confirmed(&mut c3, 12345654321);
    c2.subscribe_confirmed(&mut c3, 12345654321);
    c1.flush();

    let m = dg(&[12345654321], 777, 1234, &0xDEADBEEFu32.to_le_bytes());
    c1.send(&m);
    c2.expect(&m);
    c1.expect_none();

    // Unsubscribe c1: c2 alone still gets it.
    c1.send(&remove_channel(12345654321));
    std::thread::sleep(QUIET);
    c3.send(&m);
    c2.expect(&m);
    c1.expect_none();
}

#[test]
fn one_delivery_per_participant_whatever_the_number_of_matching_channels() {
    let d = Otpd::start(free_port(), "");
    let (mut c1, mut c2, mut tx) = (d.connect(), d.connect(), d.connect());
    for ch in [1111, 2222] {
        c1.subscribe_confirmed(&mut tx, ch);
    }
    for ch in [2222, 3333] {
        c2.subscribe_confirmed(&mut tx, ch);
    }
    c1.send(&add_range(5000, 6000));
    c1.send(&add_range(5500, 7000));
    c1.send(&add_channel(5501));
    std::thread::sleep(QUIET);
    c1.flush();
    c2.flush();

    let m = dg(&[2222], 0, 1234, b"x");
    tx.send(&m);
    c1.expect(&m);
    c2.expect(&m);

    let m = dg(&[1111, 3333], 0, 1234, b"y");
    tx.send(&m);
    c1.expect(&m);
    c2.expect(&m);

    let m = dg(
        &[
            1111, 2222, 3333, 1111, 1111, 2222, 3333, 3333, 2222, 5500, 5501, 6000,
        ],
        0,
        1234,
        b"z",
    );
    tx.send(&m);
    c1.expect(&m);
    c1.expect_none();
    c2.expect(&m);
    c2.expect_none();
}

#[test]
fn ranges_are_inclusive_and_removing_a_range_drops_single_channels_inside_it() {
    let d = Otpd::start(free_port(), "");
    let (mut c1, mut tx) = (d.connect(), d.connect());
    c1.subscribe_confirmed(&mut tx, 1500);
    c1.send(&add_range(1000, 1999));
    std::thread::sleep(QUIET);
    for (ch, yes) in [
        (999, false),
        (1000, true),
        (1500, true),
        (1999, true),
        (2000, false),
    ] {
        let m = dg(&[ch], 5, 1, &(ch as u16).to_le_bytes());
        tx.send(&m);
        if yes {
            c1.expect(&m);
        } else {
            c1.expect_none();
        }
    }
    // Slice the range, then drop the whole of it: the single channel 1500 goes too.
    c1.send(&remove_range(1300, 1700));
    std::thread::sleep(QUIET);
    for (ch, yes) in [
        (1299, true),
        (1300, false),
        (1500, false),
        (1700, false),
        (1701, true),
    ] {
        let m = dg(&[ch], 5, 1, &(ch as u16).to_le_bytes());
        tx.send(&m);
        if yes {
            c1.expect(&m);
        } else {
            c1.expect_none();
        }
    }
    c1.send(&remove_range(1000, 1999));
    std::thread::sleep(QUIET);
    for ch in [1000, 1299, 1500, 1999] {
        tx.send(&dg(&[ch], 5, 1, b""));
    }
    c1.expect_none();
}

#[test]
fn post_removes_fire_on_disconnect_and_clear_by_sender() {
    let d = Otpd::start(free_port(), "");
    let (mut watcher, mut tx) = (d.connect(), d.connect());
    watcher.subscribe_confirmed(&mut tx, 555444333);
    watcher.subscribe_confirmed(&mut tx, 987987987);

    let pr1 = dg(&[555444333], 0, 4321, b"first");
    let pr2 = dg(&[987987987], 0, 6959, b"second");
    let pr3 = dg(&[555444333], 0, 1252, b"cleared");
    let mut c1 = d.connect();
    c1.send(&add_post_remove(171717, &pr1));
    c1.send(&add_post_remove(181818, &pr3));
    c1.send(&add_post_remove(191919, &pr2));
    c1.send(&clear_post_removes(181818));
    watcher.expect_none();
    drop(c1);
    watcher.expect(&pr1);
    watcher.expect(&pr2);
    watcher.expect_none();

    // Fired once only.
    let c1 = d.connect();
    drop(c1);
    watcher.expect_none();
}

/// A participant whose last datagrams and the end of its stream come together (one write,
/// then close: a crashing AI, a script) is seen to go at once: its datagram is routed and its
/// post-remove fires. When the data and the close are read in one readiness event, a short
/// read must not end the reading (`Conn::peer_closed`): no further event would come. (That
/// timing is not forced here; the test guards the outcome.)
#[test]
fn a_participant_that_writes_and_closes_at_once_is_seen_to_go() {
    use std::io::Write;
    let d = Otpd::start(free_port(), "");
    let (mut watcher, mut tx) = (d.connect(), d.connect());
    watcher.subscribe_confirmed(&mut tx, 4000000002);
    let last = dg(&[4000000002], 9, 2010, b"last words");
    let pr = dg(&[4000000002], 9, 2009, b"gone");
    let mut bytes = add_post_remove(9, &pr);
    bytes.extend_from_slice(&last);
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        s.write_all(&bytes).unwrap();
        drop(s);
        watcher.expect(&last);
        watcher.expect(&pr);
    }
}

#[test]
fn post_removes_fire_when_the_participant_process_is_killed() {
    let d = Otpd::start(free_port(), "");
    let (mut watcher, mut tx) = (d.connect(), d.connect());
    watcher.subscribe_confirmed(&mut tx, 4000000001);
    let pr = dg(&[4000000001], 9, 2009, b"ai died");
    let add = add_post_remove(9, &pr);
    let script = format!(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',{}))\ns.sendall(bytes.fromhex('{}'))\nprint('ready',flush=True)\ntime.sleep(60)\n",
        d.port,
        add.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    std::thread::sleep(QUIET);
    watcher.expect_none();
    child.kill().unwrap(); // SIGKILL: no clean shutdown
    child.wait().unwrap();
    watcher.expect(&pr);
}

#[test]
fn control_messages_are_consumed_and_log_messages_reach_the_eventlogger() {
    let el = UdpSocket::bind("127.0.0.1:0").unwrap();
    el.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let el_port = el.local_addr().unwrap().port();
    let d = Otpd::start_full(
        free_port(),
        "",
        &format!("eventlogger: Some(\"127.0.0.1:{el_port}\"),"),
    );
    let (mut c1, mut c2) = (d.connect(), d.connect());
    // Even a participant subscribed to channel 1 never sees control messages.
    c2.send(&add_channel(1));
    std::thread::sleep(QUIET);
    let mut name = control(CONTROL_SET_CON_NAME, &[]);
    name.extend_from_slice(&[4, 0, b'A', b'I', b'-', b'1']);
    let len = (name.len() - 2) as u16;
    name[..2].copy_from_slice(&len.to_le_bytes());
    c1.send(&name);
    let event = b"\x82\xa4type\xa4test\xa3msg\xa5hello";
    let mut log = control(CONTROL_LOG_MESSAGE, &[]);
    log.extend_from_slice(&(event.len() as u16).to_le_bytes());
    log.extend_from_slice(event);
    let len = (log.len() - 2) as u16;
    log[..2].copy_from_slice(&len.to_le_bytes());
    c1.send(&log);
    let mut got = [0u8; 1024];
    let n = el.recv(&mut got).expect("event arrives over UDP");
    assert_eq!(&got[..n], event);
    // Unknown control types are ignored, the connection lives on.
    c1.send(&control(9999, &[1, 2, 3]));
    c1.subscribe_confirmed(&mut c2, 42);
    c2.expect_none();
}

#[test]
fn datagrams_from_one_connection_arrive_in_order_across_channels_and_cores() {
    let d = Otpd::start(free_port(), "");
    let (mut rx, mut tx) = (d.connect(), d.connect());
    let channels: Vec<u64> = (0..16).map(|i| 100_000 + i * 7919).collect();
    for &c in &channels {
        rx.subscribe_confirmed(&mut tx, c);
    }
    let mut all = Vec::new();
    for i in 0..5000u32 {
        let c = channels[(i as usize * 7) % channels.len()];
        all.extend_from_slice(&dg(&[c], 1, 7, &i.to_le_bytes()));
    }
    tx.send(&all);
    for i in 0..5000u32 {
        let got = rx.recv();
        let seq = u32::from_le_bytes(got[got.len() - 4..].try_into().unwrap());
        assert_eq!(seq, i, "datagram {i} arrived out of order");
    }
}

#[test]
fn a_participant_that_stops_reading_is_cut_off_while_others_keep_flowing() {
    let d = Otpd::start(free_port(), "max_queued_bytes_per_participant: 1000000,");
    let (mut slow, mut fast, mut tx) = (d.connect(), d.connect(), d.connect());
    slow.subscribe_confirmed(&mut tx, 77);
    fast.subscribe_confirmed(&mut tx, 77);
    slow.s
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    // Shrink the slow reader's kernel buffer so the MD's queue fills quickly.
    let total = 40_000usize;
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        while n < total {
            fast.recv();
            n += 1;
        }
        n
    });
    let payload = vec![0xAB; 1000];
    let m = dg(&[77], 1, 1, &payload);
    let mut burst = Vec::new();
    for _ in 0..100 {
        burst.extend_from_slice(&m);
    }
    // Paced like a busy AI rather than a flood, so that a reader that does read keeps up.
    for _ in 0..total / 100 {
        tx.send(&burst);
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = reader.join();
    assert!(
        matches!(got, Ok(n) if n == total),
        "the reading participant got every datagram; log: {}",
        d.log_text()
    );
    assert!(
        slow.closed_within(Duration::from_secs(10)),
        "the non-reading participant was disconnected"
    );
    let log = d.log_text();
    assert!(log.contains("stopped reading"), "log names the cut: {log}");
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let d = Otpd::start(free_port(), "max_datagram_bytes: 200,");
    let (mut good, mut tx) = (d.connect(), d.connect());
    good.subscribe_confirmed(&mut tx, 9);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "zero recipients",
            frame(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        ),
        (
            "recipients past the end",
            frame(&[5, 1, 0, 0, 0, 0, 0, 0, 0]),
        ),
        ("no sender", frame(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0])),
        ("oversized", dg(&[9], 1, 1, &[0u8; 300])),
        ("zero length tag", {
            let mut v = vec![0u8, 0u8];
            v.extend_from_slice(&control(CONTROL_ADD_CHANNEL, &[0x1CEDC0FF])[2..]);
            v
        }),
        (
            "truncated control",
            frame(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0x28, 0x23, 1, 2]),
        ),
        ("truncated post-remove", {
            let mut v = control(CONTROL_ADD_POST_REMOVE, &[5]);
            v.extend_from_slice(&[50, 0, 1]);
            let len = (v.len() - 2) as u16;
            v[..2].copy_from_slice(&len.to_le_bytes());
            v
        }),
    ];
    for (what, bytes) in cases {
        let mut bad = d.connect();
        bad.send(&bytes);
        assert!(
            bad.closed_within(Duration::from_secs(5)),
            "{what}: connection closed"
        );
        let m = dg(&[9], 1, 1, what.as_bytes());
        tx.send(&m);
        good.expect(&m);
    }
    // Connect-and-vanish, many times, and a burst of simultaneous connections.
    for _ in 0..50 {
        drop(TcpStream::connect(("127.0.0.1", d.port)).unwrap());
    }
    let many: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", d.port)).unwrap())
        .collect();
    let m = dg(&[9], 1, 1, b"still here");
    tx.send(&m);
    good.expect(&m);
    drop(many);
    let m = dg(&[9], 1, 1, b"and after");
    tx.send(&m);
    good.expect(&m);
}

#[test]
fn connection_limit_refuses_extra_participants_and_serves_the_rest() {
    let d = Otpd::start(free_port(), "max_participants: 3,");
    let (mut a, mut b) = (d.connect(), d.connect());
    a.subscribe_confirmed(&mut b, 31);
    let _c = d.connect();
    let mut extra = d.connect();
    assert!(
        extra.closed_within(Duration::from_secs(5)),
        "fourth participant refused"
    );
    let m = dg(&[31], 1, 1, b"ok");
    b.send(&m);
    a.expect(&m);
}

// ---- upstream (a downstream otpd below a stand-in upstream MD) ---------------------------

fn with_upstream() -> (Otpd, Md) {
    let up = FakeUpstream::new();
    let d = Otpd::start(
        free_port(),
        &format!("connect: Some(\"127.0.0.1:{}\"),", up.port),
    );
    let (l1, _name) = up.accept_child();
    (d, l1)
}

#[test]
fn upstream_gets_local_datagrams_and_aggregate_subscriptions() {
    let (d, mut l1) = with_upstream();
    let (mut c1, mut c2) = (d.connect(), d.connect());

    let m = dg(&[1234], 4321, 1337, b"\x05\x00HELLO");
    c1.send(&m);
    l1.expect(&m);

    c1.send(&add_channel(12345654321));
    l1.expect(&add_channel(12345654321));
    let m = dg(&[12345654321], 0, 1234, &0xDEADBEEFu32.to_le_bytes());
    c2.send(&m);
    c1.expect(&m);
    l1.expect(&m);

    c2.send(&add_channel(12345654321));
    l1.expect_none(); // not asked twice
    c1.send(&remove_channel(12345654321));
    l1.expect_none(); // c2 still wants it

    // Datagrams from upstream go down, never back up.
    let m = dg(&[12345654321], 0, 1234, b"from above");
    l1.send(&m);
    c2.expect(&m);
    l1.expect_none();

    drop(c2);
    l1.expect(&remove_channel(12345654321));
}

#[test]
fn upstream_post_removes_are_registered_then_fired_and_cleared() {
    let (d, mut l1) = with_upstream();
    let mut c1 = d.connect();
    let pr = dg(&[555444333], 0, 4321, b"\x0a\x00Testing...");
    let pr2 = dg(&[987987987], 0, 6959, b"");
    let pr3 = dg(&[986666687], 0, 1252, b"");
    let (a1, a2, a3) = (
        add_post_remove(191919, &pr),
        add_post_remove(191919, &pr2),
        add_post_remove(202020, &pr3),
    );
    c1.send(&a1);
    c1.send(&a2);
    c1.send(&a3);
    l1.expect(&a1);
    l1.expect(&a2);
    l1.expect(&a3);
    l1.expect_none();
    drop(c1);
    l1.expect_many(&[
        pr,
        pr2,
        pr3,
        clear_post_removes(191919),
        clear_post_removes(202020),
    ]);
    l1.expect_none();

    let mut c2 = d.connect();
    let a = add_post_remove(181818, &dg(&[1], 0, 1, b""));
    c2.send(&a);
    l1.expect(&a);
    c2.send(&clear_post_removes(181818));
    l1.expect(&clear_post_removes(181818));
    drop(c2);
    l1.expect_none();
}

#[test]
fn upstream_range_messages_match_astron() {
    let (d, mut l1) = with_upstream();
    let (mut c1, mut c2) = (d.connect(), d.connect());
    c1.send(&add_range(1000, 1999));
    l1.expect(&add_range(1000, 1999));
    c1.send(&remove_range(1300, 1700));
    l1.expect(&remove_range(1300, 1700));
    c1.send(&add_range(1900, 2100));
    l1.expect(&add_range(1900, 2100));
    c1.send(&remove_range(1000, 1999));
    l1.expect(&remove_range(1000, 1999));
    drop(c1);
    l1.expect(&remove_range(2000, 2100));
    l1.expect_none();

    let mut c1 = d.connect();
    c1.send(&add_range(3000, 5000));
    l1.expect(&add_range(3000, 5000));
    for ((lo, hi), (elo, ehi)) in [
        ((2950, 3043), (3000, 3043)),
        ((4763, 6000), (4763, 5000)),
        ((3951, 4049), (3951, 4049)),
        ((4030, 4070), (4030, 4070)),
        ((3891, 4040), (3891, 4040)),
        ((3700, 4200), (3700, 4200)),
    ] {
        c1.send(&remove_range(lo, hi));
        l1.expect(&remove_range(elo, ehi));
    }
    c2.send(&add_range(3500, 4500));
    l1.expect(&add_range(3500, 4500));
    c1.send(&remove_range(3650, 3800));
    l1.expect_none();
    c1.send(&remove_range(3475, 3525));
    l1.expect(&remove_range(3475, 3499));
    c2.send(&remove_range(3620, 4300));
    l1.expect(&remove_range(3650, 4200));
    drop(c2);
    l1.expect(&remove_range(3500, 3525));
    l1.expect_none();
    let mut c2 = d.connect();
    c2.send(&add_range(1000, 5000));
    l1.expect(&add_range(1000, 5000));
    c2.send(&remove_range(1000, 5000));
    l1.expect_many(&[
        remove_range(1000, 3043),
        remove_range(3475, 3525),
        remove_range(3650, 4200),
        remove_range(4763, 5000),
    ]);
    l1.expect_none();
}

#[test]
fn two_otpd_processes_form_a_tree_and_the_child_survives_losing_its_parent() {
    let parent_port = free_port();
    let mut parent = Otpd::start(parent_port, "");
    let child = Otpd::start(free_port(), &format!("connect: Some(\"127.0.0.1:{parent_port}\"), reconnect_min_ms: 50, reconnect_max_ms: 200,"));
    let (mut down, mut up) = (child.connect(), parent.connect());

    // A subscription on the child reaches datagrams sent on the parent, and back.
    down.send(&add_channel(600_001));
    up.send(&add_channel(600_002));
    let m = dg(&[600_001], 5, 77, b"down the tree");
    deliver_eventually(&mut up, &mut down, &m);
    let m = dg(&[600_002], 6, 77, b"up the tree");
    deliver_eventually(&mut down, &mut up, &m);

    // A post-remove registered on the child fires from the parent if the child dies.
    // Lose the parent: the child keeps serving locally, and re-subscribes when it is back.
    parent.kill();
    drop(up);
    let mut local = child.connect();
    let m = dg(&[600_001], 7, 77, b"local while orphaned");
    deliver_eventually(&mut local, &mut down, &m);
    let parent = Otpd::start(parent_port, "");
    let mut up = parent.connect();
    let m = dg(&[600_001], 8, 77, b"after reconnection");
    deliver_eventually(&mut up, &mut down, &m);
    let log = child.log_text();
    assert!(
        log.contains("lost (") && log.contains("regained"),
        "child logs the loss and the return: {log}"
    );
}

#[test]
fn a_post_remove_on_a_child_md_fires_when_the_whole_child_dies() {
    let parent = Otpd::start(free_port(), "");
    let mut child = Otpd::start(
        free_port(),
        &format!("connect: Some(\"127.0.0.1:{}\"),", parent.port),
    );
    let (mut watcher, mut tx) = (parent.connect(), parent.connect());
    watcher.subscribe_confirmed(&mut tx, 700_001);
    let mut ai = child.connect();
    let pr = dg(&[700_001], 0, 2009, b"child gone");
    ai.send(&add_post_remove(1, &pr));
    std::thread::sleep(Duration::from_millis(300));
    child.kill();
    watcher.expect(&pr);
}

/// Sends `m` from `from` until `to` receives it (subscriptions propagate asynchronously).
fn deliver_eventually(from: &mut Md, to: &mut Md, m: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        from.send(m);
        if let Some(got) = to.recv_within(Duration::from_millis(100)) {
            assert_eq!(got, m);
            to.flush();
            return;
        }
        assert!(Instant::now() < deadline, "datagram never delivered");
    }
}

#[test]
fn a_write_to_a_closed_peer_does_not_disturb_others() {
    let d = Otpd::start(free_port(), "");
    let (mut a, mut tx) = (d.connect(), d.connect());
    a.subscribe_confirmed(&mut tx, 55);
    let mut b = d.connect();
    b.subscribe_confirmed(&mut tx, 55);
    a.flush();
    b.s.shutdown(std::net::Shutdown::Both).unwrap();
    for i in 0..100u32 {
        let m = dg(&[55], 1, 1, &i.to_le_bytes());
        tx.s.write_all(&m).unwrap();
        a.expect(&m);
    }
}

#[test]
fn order_and_exactly_once_hold_for_mixed_recipients_and_many_receivers() {
    let d = Otpd::start(free_port(), "");
    let mut tx = d.connect();
    let channels: Vec<u64> = (0..12).map(|i| 900_000 + i * 104_729).collect();
    // Receiver r subscribes channels where (i + r) % 3 != 0, plus a range over the last two.
    let mut rxs: Vec<Md> = (0..4).map(|_| d.connect()).collect();
    for (r, rx) in rxs.iter_mut().enumerate() {
        for (i, &c) in channels.iter().enumerate() {
            if (i + r) % 3 != 0 {
                rx.subscribe_confirmed(&mut tx, c);
            }
        }
    }
    rxs[3].send(&add_range(channels[10], channels[11]));
    std::thread::sleep(QUIET);
    for rx in rxs.iter_mut() {
        rx.flush();
    }
    let wants = |r: usize, recips: &[usize]| {
        recips
            .iter()
            .any(|&i| !(i + r).is_multiple_of(3) || (r == 3 && i >= 10))
    };
    let mut all = Vec::new();
    let mut expected: Vec<Vec<u32>> = vec![Vec::new(); 4];
    let mut seed = 12345u64;
    for seq in 0..4000u32 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = 1 + (seed >> 60) as usize % 3;
        let recips: Vec<usize> = (0..n).map(|k| ((seed >> (8 * k)) % 12) as usize).collect();
        let chans: Vec<u64> = recips.iter().map(|&i| channels[i]).collect();
        all.extend_from_slice(&dg(&chans, 3, 9, &seq.to_le_bytes()));
        for (r, e) in expected.iter_mut().enumerate() {
            if wants(r, &recips) {
                e.push(seq);
            }
        }
    }
    tx.send(&all);
    for (r, rx) in rxs.iter_mut().enumerate() {
        let got: Vec<u32> = (0..expected[r].len())
            .map(|_| {
                let m = rx.recv();
                u32::from_le_bytes(m[m.len() - 4..].try_into().unwrap())
            })
            .collect();
        assert_eq!(
            got, expected[r],
            "receiver {r}: every datagram once, in order"
        );
        rx.expect_none();
    }
}

#[test]
fn running_out_of_file_descriptors_does_not_stop_the_md() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("cluster.ron");
    std::fs::write(
        &conf,
        format!(
            "(cores: 2, pin_cores: false, messagedirector: (bind: Some(\"127.0.0.1:{port}\")))"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {} --cluster {} --loglevel error",
            otpd_bin(),
            conf.display()
        ))
        .spawn()
        .unwrap();
    wait_for_port(port);
    let (mut a, mut b) = (Md::connect(port), Md::connect(port));
    a.subscribe_confirmed(&mut b, 81);
    // Far more connections than descriptors: the excess waits in the backlog or is refused.
    let flood: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let m = dg(&[81], 1, 1, b"during");
    b.send(&m);
    a.expect(&m);
    drop(flood);
    std::thread::sleep(Duration::from_millis(300));
    // Once descriptors are free again, new participants get in.
    let (mut c, mut e) = (Md::connect(port), Md::connect(port));
    c.subscribe_confirmed(&mut e, 82);
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 20, item 8: `messagedirector.allow` is empty by default, which means loopback only;
/// any loopback address is a participant as before.
#[test]
fn participants_connect_from_loopback_by_default() {
    let d = Otpd::start(free_port(), "");
    let (mut a, mut b) = (d.connect(), Md::connect_from(d.port, "127.0.0.2"));
    a.subscribe_confirmed(&mut b, 4101);
    b.subscribe_confirmed(&mut a, 4102);
}

/// The next event on `el` whose bytes contain `kind` and `what`, within 5 s.
fn event_containing(el: &UdpSocket, kind: &[u8], what: &[u8]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok(n) = el.recv(&mut buf) {
            let e = &buf[..n];
            let has = |s: &[u8]| e.windows(s.len()).any(|w| w == s);
            if has(kind) && has(what) {
                return Some(e.to_vec());
            }
        }
    }
    None
}

/// Issue 20, item 8: a peer whose address `allow` does not list is closed at accept, before it
/// is a participant: its subscriptions and datagrams never take effect; the refusal is logged
/// and sent to the EventLogger, and otpd keeps serving the allowed. (Before `allow`, anyone
/// reaching the port was a trusted participant: the datagram below was delivered.)
#[test]
fn a_peer_not_in_allow_is_closed_at_accept_and_never_routes() {
    let el = UdpSocket::bind("127.0.0.1:0").unwrap();
    el.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let el_port = el.local_addr().unwrap().port();
    let metrics = free_port();
    let mut d = Otpd::start_full(
        free_port(),
        "allow: [\"10.0.0.0/8\", \"127.0.0.2\"],",
        &format!(
            "eventlogger: Some(\"127.0.0.1:{el_port}\"), metrics: Some(\"127.0.0.1:{metrics}\"),"
        ),
    );
    // Allowed participants, from 127.0.0.2.
    let mut rx = Md::connect_from(d.port, "127.0.0.2");
    let mut tx = Md::connect_from(d.port, "127.0.0.2");
    rx.subscribe_confirmed(&mut tx, 4201);

    // From 127.0.0.1, not listed: it subscribes and writes at once, as an attacker would.
    let mut intruder = d.connect();
    let mut attack = add_channel(4202);
    attack.extend_from_slice(&dg(&[4201], 1, 2001, b"forged"));
    let _ = intruder.s.write_all(&attack);
    assert!(
        intruder.closed_within(Duration::from_secs(5)),
        "a peer not in allow must be closed"
    );
    rx.expect_none();
    // Its subscription never took effect (it would get this if it had).
    tx.send(&dg(&[4202], 1, 2001, b"secret"));
    assert!(intruder.recv_within(QUIET).is_none());

    let ev = event_containing(&el, b"participant-refused", b"127.0.0.1:");
    assert!(ev.is_some(), "no participant-refused event");
    assert!(
        d.log_text().contains("not in messagedirector.allow"),
        "no log line for the refusal"
    );
    // Counted (wait_for_port's probe from 127.0.0.1 was refused too).
    wait_for_port(metrics);
    let mut http = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut http, &mut text).unwrap();
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("otpd_participants_refused_total{reason=\"not_allowed\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("otpd_participants_refused_total{reason=\"not_allowed\"}");
    assert!(refused >= 2, "{refused} refusals counted");
    // otpd lives on and serves the allowed.
    assert!(d.is_running(), "otpd exited");
    let m = dg(&[4201], 1, 2002, b"still");
    tx.send(&m);
    rx.expect(&m);
    let mut late = Md::connect_from(d.port, "127.0.0.2");
    late.subscribe_confirmed(&mut tx, 4203);
}

/// An address entry lets exactly that address in: 127.0.0.1 listed, 127.0.0.2 refused.
#[test]
fn an_allow_entry_for_127_0_0_1_lets_a_local_participant_in() {
    let d = Otpd::start(free_port(), "allow: [\"10.0.0.0/8\", \"127.0.0.1\"],");
    let (mut a, mut b) = (d.connect(), d.connect());
    a.subscribe_confirmed(&mut b, 4301);
    let mut other = Md::connect_from(d.port, "127.0.0.2");
    other.send(&add_channel(4302));
    assert!(other.closed_within(Duration::from_secs(5)));
    b.send(&dg(&[4301], 1, 1, b"ok"));
    a.expect(&dg(&[4301], 1, 1, b"ok"));
}

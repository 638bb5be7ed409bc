//! Password logins of the 2003 dialect under attack, against the real binary (issue 17,
//! items 8 and 11): guessing is throttled per account and per address without hashing, a
//! flood that fills the hashing queue costs the real player no strike, and an unknown account
//! is answered exactly as a wrong password, after as much hashing; and guessers cannot lock an
//! account's owner out from where it logged in before.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DB: u64 = 4003;
const VERSION: &str = "sv1.0.6.9";
const HASH: u32 = 3_005_460_305;
const WAIT: Duration = Duration::from_secs(10);

struct Cluster {
    _o: Otpd,
    port: u16,
    metrics: u16,
    el: UdpSocket,
    _data: tempfile::TempDir,
}

/// A Database and one Toontown 2003 listener (open tokens, CreateOnLogin passwords) with
/// `toontown` added to its `toontown` section and `top` to the cluster's.
fn start(toontown: &str, top: &str) -> Cluster {
    start_with("", toontown, top)
}

/// As `start`, with `ca` added to the ClientAgent's keys.
fn start_with(ca: &str, toontown: &str, top: &str) -> Cluster {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dc = root.join("tests/dc/toon.dc").canonicalize().unwrap();
    let data = tempfile::tempdir().unwrap();
    let el = UdpSocket::bind("127.0.0.1:0").unwrap();
    el.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (port, metrics) = (free_port(), free_port());
    let top = format!(
        "{top} dc_files: [\"{}\"], eventlogger: Some(\"127.0.0.1:{}\"), metrics: Some(\"127.0.0.1:{metrics}\"), roles: [\
         Database(control: {DB}, generate: (min: 100000000, max: 399999999), backend: Sqlite(directory: \"{}\")), \
         ClientAgent((bind: \"127.0.0.1:{port}\", version: \"{VERSION}\", manual_dc_hash: Some({HASH}), \
         channels: (min: 1000000, max: 1009999), dialect: Toontown2003, {ca} toontown: ({toontown}))), ],",
        dc.display(),
        el.local_addr().unwrap().port(),
        data.path().display(),
    );
    let o = Otpd::start_full(free_port(), "", &top);
    wait_for_port(port);
    wait_for_port(metrics);
    Cluster {
        _o: o,
        port,
        metrics,
        el,
        _data: data,
    }
}

impl Cluster {
    /// The sum of the metric lines starting with `prefix` and containing `label`.
    fn metric_with(&self, prefix: &str, label: &str) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
            .sum()
    }

    fn metric(&self, prefix: &str) -> u64 {
        self.metric_with(prefix, "")
    }

    /// The next event naming `kind` and containing `also`.
    fn event(&self, kind: &str, also: &str) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 65536];
        let has = |t: &[u8], s: &str| t.windows(s.len()).any(|w| w == s.as_bytes());
        while Instant::now() < deadline {
            if let Ok(n) = self.el.recv(&mut buf) {
                if has(&buf[..n], kind) && has(&buf[..n], also) {
                    return buf[..n].to_vec();
                }
            }
        }
        panic!("no {kind} event with {also}");
    }
}

fn msg(t: u16, p: P) -> Vec<u8> {
    let mut body = t.to_le_bytes().to_vec();
    body.extend_from_slice(&p.0);
    frame(&body)
}

/// A 2003 client logging in with a name and password (`account-old-auth #t`).
struct Client {
    m: Md,
}

/// LOGIN_RESP: code, accountCode, errorString, then the server's time (8 bytes).
struct LoginResp {
    code: u8,
    /// Everything before the server's time.
    head: Vec<u8>,
    text: String,
}

impl Client {
    fn connect(port: u16) -> Client {
        let mut m = Md::connect(port);
        m.send(&msg(52, P::new()));
        Client { m }
    }

    /// Through a proxy on loopback (`haproxy: true`) that says the client is at `ip`.
    fn connect_from(port: u16, ip: &str) -> Client {
        let mut m = Md::connect(port);
        m.send(format!("PROXY TCP4 {ip} 127.0.0.1 5000 {port}\r\n").as_bytes());
        m.send(&msg(52, P::new()));
        Client { m }
    }

    fn send_login(&mut self, name: &str, password: &str, create: bool) {
        self.m.send(&msg(
            1,
            P::new()
                .string(name)
                .u32(0x7f00_0001)
                .u16(5150)
                .string(VERSION)
                .u32(HASH)
                .string(password)
                .u8(create as u8),
        ));
    }

    /// The answer to a login; panics on GO_GET_LOST.
    fn answer(&mut self) -> LoginResp {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no LOGIN_RESP");
            let f = self.m.recv_within(WAIT).expect("a LOGIN_RESP");
            let t = u16::from_le_bytes([f[2], f[3]]);
            let p = &f[4..];
            assert_ne!(t, 4, "kicked (GO_GET_LOST {:?})", &p[..2.min(p.len())]);
            if t == 2 {
                let len = u16::from_le_bytes([p[5], p[6]]) as usize;
                assert_eq!(p.len(), 7 + len + 8, "LOGIN_RESP layout");
                return LoginResp {
                    code: p[0],
                    head: p[..7 + len].to_vec(),
                    text: String::from_utf8_lossy(&p[7..7 + len]).into_owned(),
                };
            }
        }
    }

    fn login(&mut self, name: &str, password: &str, create: bool) -> LoginResp {
        self.send_login(name, password, create);
        self.answer()
    }
}

/// Issue 17, item 8: a guesser is stopped per account (from any address) and per address
/// (whatever names it tries), refused without a password hash while blocked, and the right
/// password works again once the block is over. Before, every guess was hashed and answered,
/// and the right password after three wrong ones logged in at once.
#[test]
fn password_guessing_is_throttled_per_account_and_per_address() {
    let c = start(
        "password_limits: (max_failures_per_account: 3, max_failures_per_address: 6, \
         backoff_ms: 1500)",
        "",
    );
    let mut t = Client::connect(c.port);
    assert_eq!(t.login("victim", "right one", true).code, 0);
    drop(t);
    let mut guesser = Client::connect(c.port);
    for _ in 0..3 {
        assert_eq!(guesser.login("victim", "guess", false).code, 12);
    }
    // Blocked: even the right password is refused, and no hash is computed.
    let hashes = c.metric("otpd_password_hashes_total");
    let mut owner = Client::connect(c.port);
    let r = owner.login("victim", "right one", false);
    assert_eq!(r.code, 12, "{}", r.text);
    assert_eq!(c.metric("otpd_password_hashes_total"), hashes);
    c.event("client-login-refused", "throttled");
    assert_eq!(
        c.metric_with("otpd_client_logins_refused_total", "cause=\"throttled\""),
        1
    );
    // The block ends.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(owner.login("victim", "right one", false).code, 0);

    // Per address: three more failures (whatever the names) make six from 127.0.0.1; then
    // this address is refused even for an account that is not blocked.
    let mut guesser = Client::connect(c.port);
    for i in 0..3 {
        assert_ne!(guesser.login(&format!("other{i}"), "guess", false).code, 0);
    }
    let hashes = c.metric("otpd_password_hashes_total");
    let mut again = Client::connect(c.port);
    let r = again.login("victim", "right one", false);
    assert_eq!(r.code, 12, "{}", r.text);
    assert!(r.text.contains("address"), "{}", r.text);
    assert_eq!(c.metric("otpd_password_hashes_total"), hashes);
}

/// Issue 17 (its title: no player can lock out another): an attacker who knows an account's
/// name blocks it with failures from a few addresses, and the block keeps other addresses out
/// even with the right password, but not the address its owner logged in from before. Before,
/// the owner was locked out with everyone else for as long as the attacker kept guessing.
#[test]
fn guessers_cannot_lock_the_owner_out_of_an_account_at_home() {
    let c = start_with(
        "haproxy: true,",
        "password_limits: (max_failures_per_account: 3, max_failures_per_address: 20)",
        "",
    );
    let home = "198.51.100.7";
    // Made elsewhere (making an account is no login), then played from home.
    let mut maker = Client::connect_from(c.port, "192.0.2.1");
    assert_eq!(maker.login("owner", "right one", true).code, 0);
    drop(maker);
    let mut owner = Client::connect_from(c.port, home);
    assert_eq!(owner.login("owner", "right one", false).code, 0);
    drop(owner);
    // The attacker fails from three addresses: the account is blocked.
    for i in 1..=3 {
        let mut g = Client::connect_from(c.port, &format!("203.0.113.{i}"));
        assert_eq!(g.login("owner", "guess", false).code, 12);
    }
    let hashes = c.metric("otpd_password_hashes_total");
    let mut elsewhere = Client::connect_from(c.port, "203.0.113.50");
    let r = elsewhere.login("owner", "right one", false);
    assert_eq!(r.code, 12, "{}", r.text);
    assert!(r.text.contains("account"), "{}", r.text);
    assert_eq!(c.metric("otpd_password_hashes_total"), hashes);
    // The owner, at home, logs in.
    let mut owner = Client::connect_from(c.port, home);
    let r = owner.login("owner", "right one", false);
    assert_eq!(r.code, 0, "the owner was locked out: {}", r.text);
    // The attacker's addresses stay blocked, the right password or not.
    let mut g = Client::connect_from(c.port, "203.0.113.1");
    let r = g.login("owner", "right one", false);
    assert_eq!(r.code, 12, "{}", r.text);
    assert!(r.text.contains("account"), "{}", r.text);
}

/// Issue 17, item 8: a flood of logins fills the hashing queue (one worker, one queued job);
/// the real player's login is answered "busy" again and again, and that never counts against
/// it: its connection survives more busy answers than `MAX_BAD_LOGINS` (5) and logs in once
/// the flood stops. Before, each busy answer was a strike and the fifth ended the connection.
#[test]
fn a_busy_hashing_queue_is_no_strike_against_the_player() {
    let c = start(
        "password_limits: (max_failures_per_account: 0, max_failures_per_address: 0)",
        "password_workers: 1, password_queue: 1,",
    );
    let port = c.port;
    assert_eq!(Client::connect(port).login("player", "right", true).code, 0);
    assert_eq!(Client::connect(port).login("flood", "x", true).code, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut m = Md::connect(port);
                    for _ in 0..4 {
                        let mut cl = Client { m };
                        cl.send_login("flood", "wrong", false);
                        m = cl.m;
                        if m.recv_within(WAIT).is_none() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut busy_here = 0;
    let mut t = Client::connect(port);
    while busy_here < 7 {
        assert!(
            Instant::now() < deadline,
            "the flood never made the queue full"
        );
        let r = t.login("player", "right", false);
        if r.code == 0 {
            // Got through before enough busy answers: start over on a new connection.
            busy_here = 0;
            t = Client::connect(port);
        } else {
            assert!(r.text.contains("busy"), "{}", r.text);
            busy_here += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().unwrap();
    }
    assert_eq!(t.login("player", "right", false).code, 0);
    assert!(c.metric_with("otpd_client_logins_refused_total", "cause=\"busy\"") >= 7);
}

/// Issue 17, item 11: a wrong password, an account that does not exist and an account that has
/// no password (made by a play token) get byte-identical answers (but for the server time the
/// answer ends with), and each costs exactly one password hash (the unknown ones a dummy
/// check), so their timing is the same too. Before, an unknown name was answered 129 "User
/// name not found" at once, without hashing.
#[test]
fn an_unknown_account_is_answered_as_a_wrong_password_after_as_much_hashing() {
    let c = start("", "");
    assert_eq!(
        Client::connect(c.port).login("known", "right", true).code,
        0
    );
    let mut token = Client::connect(c.port);
    token.m.send(&msg(
        16,
        P::new().string("tokened").string(VERSION).u32(HASH).u32(2),
    ));
    let f = token.m.recv_within(WAIT).expect("LOGIN_2_RESP");
    assert_eq!((u16::from_le_bytes([f[2], f[3]]), f[4]), (17, 0));
    drop(token);

    let mut t = Client::connect(c.port);
    let mut answers = Vec::new();
    for name in ["known", "unknown", "tokened"] {
        let before = c.metric("otpd_password_hashes_total");
        let r = t.login(name, "guess", false);
        let hashes = c.metric("otpd_password_hashes_total") - before;
        assert_eq!((r.code, hashes), (12, 1), "{name}: {}", r.text);
        answers.push(r.head);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
}

//! Issue 20, item 8 (second half): TLS with mutual certificates on MD-to-MD links and for
//! participants (`messagedirector.tls`, `messagedirector.upstream_tls`). Real otpd processes;
//! the certificates are made here with rcgen: a cluster CA, the root's certificate, the
//! child's, and a second CA nobody trusts.

mod common;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA and the certificates it signed, written as PEM files into one folder.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), ca.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        }
    }

    /// The CA's PEM file.
    fn ca_file(&self) -> String {
        let cn = self
            .ca
            .params()
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .map(|v| match v {
                rcgen::DnValue::Utf8String(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap();
        self.dir.join(format!("{cn}.crt")).display().to_string()
    }

    /// A certificate for `name` (valid for localhost and 127.0.0.1, server and client use):
    /// its certificate and key files.
    fn issue(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    /// The root MD's `tls` setting.
    fn listener(&self, cert: &(String, String), participants: &str) -> String {
        format!(
            "tls: Some((certificate: \"{}\", key: \"{}\", client_ca: \"{}\", participants: {participants})),",
            cert.0,
            cert.1,
            self.ca_file()
        )
    }
}

/// A child MD's settings: `connect` to the root over TLS verified with `ca`, presenting
/// `cert` if given.
fn child_settings(root: u16, ca: &str, cert: Option<&(String, String)>, extra: &str) -> String {
    let client = match cert {
        Some((c, k)) => format!("certificate: Some(\"{c}\"), key: Some(\"{k}\"),"),
        None => String::new(),
    };
    format!(
        "connect: Some(\"127.0.0.1:{root}\"), reconnect_min_ms: 50, reconnect_max_ms: 200, \
         upstream_tls: Some((ca: \"{ca}\", {client} {extra})),"
    )
}

/// A participant speaking the internal protocol inside TLS, with a client certificate.
struct TlsMd {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsMd {
    fn connect(port: u16, ca: &Pki, cert: &(String, String)) -> TlsMd {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca.der().clone()).unwrap();
        let read = |p: &str| std::fs::read(p).unwrap();
        let certs: Vec<_> = rustls_pemfile::certs(&mut &read(&cert.0)[..])
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut &read(&cert.1)[..])
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_nodelay(true).unwrap();
        TlsMd {
            s: rustls::StreamOwned::new(conn, sock),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
        self.s.flush().unwrap();
    }

    fn recv_within(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                let len = u16::from_le_bytes([self.buf[0], self.buf[1]]) as usize;
                if self.buf.len() >= 2 + len {
                    return Some(self.buf.drain(..2 + len).collect());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.s.sock.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 16384];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) => panic!("TLS participant: {e}"),
            }
        }
    }
}

/// Either kind of participant, for `deliver_eventually`.
trait Participant {
    fn send_dg(&mut self, m: &[u8]);
    fn recv_dg(&mut self, t: Duration) -> Option<Vec<u8>>;
}
impl Participant for Md {
    fn send_dg(&mut self, m: &[u8]) {
        self.send(m)
    }
    fn recv_dg(&mut self, t: Duration) -> Option<Vec<u8>> {
        self.recv_within(t)
    }
}
impl Participant for TlsMd {
    fn send_dg(&mut self, m: &[u8]) {
        self.send(m)
    }
    fn recv_dg(&mut self, t: Duration) -> Option<Vec<u8>> {
        self.recv_within(t)
    }
}

/// Sends `m` from `from` until `to` receives it (subscriptions cross the link asynchronously).
fn deliver_eventually(from: &mut dyn Participant, to: &mut dyn Participant, m: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        from.send_dg(m);
        if let Some(got) = to.recv_dg(Duration::from_millis(100)) {
            assert_eq!(got, m);
            while to.recv_dg(Duration::from_millis(50)).is_some() {}
            return;
        }
        assert!(Instant::now() < deadline, "datagram never delivered");
    }
}

/// Sends `m` from `from` for a while: `to` must get nothing.
fn never_delivered(from: &mut dyn Participant, to: &mut dyn Participant, m: &[u8]) {
    for _ in 0..8 {
        from.send_dg(m);
        if let Some(got) = to.recv_dg(Duration::from_millis(100)) {
            panic!("delivered across a refused link: {got:?}");
        }
    }
}

/// An EventLogger stand-in: a UDP socket the root sends its events to.
fn eventlogger() -> (UdpSocket, String) {
    let el = UdpSocket::bind("127.0.0.1:0").unwrap();
    el.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let top = format!(
        "eventlogger: Some(\"127.0.0.1:{}\"),",
        el.local_addr().unwrap().port()
    );
    (el, top)
}

/// The next event holding every one of `parts`, within 5 s.
fn event_with(el: &UdpSocket, parts: &[&str]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = el.recv(&mut buf) {
            let e = &buf[..n];
            let has = |s: &str| e.windows(s.len()).any(|w| w == s.as_bytes());
            if parts.iter().all(|p| has(p)) {
                return Some(e.to_vec());
            }
        }
    }
    None
}

/// Root and child over mutual TLS (the root takes nothing else: Required): a participant on
/// the child hears one on the root, and back; a plain participant on the root's port, from
/// loopback, is refused with a log line and an event, and never routes.
#[test]
fn a_child_md_over_mutual_tls_routes_both_ways_and_required_refuses_plain() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster-ca");
    let root_cert = pki.issue("root");
    let child_cert = pki.issue("child");
    let ai_cert = pki.issue("ai");
    let (el, top) = eventlogger();
    let root = Otpd::start_full(free_port(), &pki.listener(&root_cert, "Required"), &top);
    // server_name left out: the root's certificate is checked for 127.0.0.1, the host of
    // `connect`.
    let child = Otpd::start(
        free_port(),
        &child_settings(root.port, &pki.ca_file(), Some(&child_cert), ""),
    );

    let mut down = child.connect();
    let mut up = TlsMd::connect(root.port, &pki, &ai_cert);
    down.send(&add_channel(810_001));
    up.send(&add_channel(810_002));
    let m = dg(&[810_001], 5, 77, b"down the tree, through TLS");
    deliver_eventually(&mut up, &mut down, &m);
    let m = dg(&[810_002], 6, 77, b"up the tree, through TLS");
    deliver_eventually(&mut down, &mut up, &m);
    assert!(
        child
            .log_text()
            .contains("connected to upstream MD 127.0.0.1"),
        "the child logs its upstream, once it has accepted the child"
    );

    // A plain participant, from loopback: refused (it subscribes and writes at once).
    let mut plain = root.connect();
    let mut attack = add_channel(810_002);
    attack.extend_from_slice(&dg(&[810_001], 1, 2001, b"forged"));
    let _ = plain.s.write_all(&attack);
    assert!(
        plain.closed_within(Duration::from_secs(5)),
        "plain TCP must be closed"
    );
    assert!(
        down.recv_within(QUIET).is_none(),
        "the forged datagram was routed"
    );
    assert!(
        event_with(&el, &["participant-refused", "Required"]).is_some(),
        "no participant-refused event"
    );
    assert!(root
        .log_text()
        .contains("plain TCP, and messagedirector.tls.participants is Required"));
    // The link lives on.
    let m = dg(&[810_001], 7, 77, b"still");
    deliver_eventually(&mut up, &mut down, &m);
}

/// A child with no client certificate, and one whose certificate another CA signed, are
/// refused by the root (logged, an event each, counted) and route nothing either way; the
/// root keeps serving a good child and, with participants Optional, plain participants from
/// `allow` (a plain one from elsewhere is refused).
#[test]
fn children_without_a_good_certificate_are_refused_and_optional_takes_plain_from_allow() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster-ca");
    let rogue = Pki::new(dir.path(), "rogue-ca");
    let root_cert = pki.issue("root");
    let (el, top) = eventlogger();
    let metrics = free_port();
    let root = Otpd::start_full(
        free_port(),
        &format!(
            "{} allow: [\"127.0.0.1\"],",
            pki.listener(&root_cert, "Optional")
        ),
        &format!("{top} metrics: Some(\"127.0.0.1:{metrics}\"),"),
    );
    // A plain participant from loopback (in allow) is a participant as before.
    let mut watcher = root.connect();
    let mut sender = root.connect();
    watcher.subscribe_confirmed(&mut sender, 820_001);

    let name = "server_name: Some(\"localhost\"),";
    let no_cert = Otpd::start(
        free_port(),
        &child_settings(root.port, &pki.ca_file(), None, name),
    );
    let rogue_cert = rogue.issue("rogue-child");
    let bad_ca = Otpd::start(
        free_port(),
        &child_settings(root.port, &pki.ca_file(), Some(&rogue_cert), name),
    );
    assert!(
        event_with(&el, &["participant-refused", "no certificates"]).is_some(),
        "no event for the child without a certificate"
    );
    assert!(
        event_with(&el, &["participant-refused", "invalid peer certificate"]).is_some(),
        "no event for the child with another CA's certificate"
    );
    for child in [&no_cert, &bad_ca] {
        let mut local = child.connect();
        local.send(&add_channel(820_002));
        never_delivered(
            &mut sender,
            &mut local,
            &dg(&[820_002], 1, 2001, b"to a rogue"),
        );
        never_delivered(
            &mut local,
            &mut watcher,
            &dg(&[820_001], 1, 2001, b"from a rogue"),
        );
    }
    let log = root.log_text();
    assert!(
        log.contains("refused") && log.contains("TLS handshake failed"),
        "{log}"
    );
    for (child, alert) in [(&no_cert, "CertificateRequired"), (&bad_ca, "UnknownCA")] {
        let log = child.log_text();
        assert!(log.contains("unreachable") && log.contains(alert), "{log}");
        if std::env::var_os("SHOW_LOGS").is_some() {
            eprintln!("---- child\n{log}");
        }
    }
    if std::env::var_os("SHOW_LOGS").is_some() {
        eprintln!("---- root\n{log}");
    }

    // The root serves on: a good child routes both ways, plain participants still route.
    let child_cert = pki.issue("child");
    let good = Otpd::start(
        free_port(),
        &child_settings(root.port, &pki.ca_file(), Some(&child_cert), name),
    );
    let mut down = good.connect();
    down.send(&add_channel(820_003));
    deliver_eventually(
        &mut sender,
        &mut down,
        &dg(&[820_003], 2, 77, b"to the good child"),
    );
    deliver_eventually(
        &mut down,
        &mut watcher,
        &dg(&[820_001], 3, 77, b"from the good child"),
    );

    // A plain participant from an address not in allow: refused, as without TLS.
    let mut outsider = Md::connect_from(root.port, "127.0.0.2");
    outsider.send(&add_channel(820_001));
    assert!(outsider.closed_within(Duration::from_secs(5)));
    assert!(event_with(&el, &["participant-refused", "not in allow", "127.0.0.2"]).is_some());

    // Counted in /metrics.
    let mut http = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("otpd_participants_refused_total{reason=\"tls\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("otpd_participants_refused_total{reason=\"tls\"}");
    assert!(refused >= 2, "{refused} TLS refusals counted");
    let m = dg(&[820_001], 4, 77, b"plain still routes");
    sender.send(&m);
    watcher.expect(&m);
}

/// A participant that opens a TCP connection and never completes a handshake is closed after
/// `handshake_timeout_ms` (it would hold a connection for ever); with Optional, a silent one
/// from `allow` is taken as plain instead.
#[test]
fn a_stalled_handshake_is_closed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster-ca");
    let root_cert = pki.issue("root");
    let (el, top) = eventlogger();
    let tls = pki.listener(&root_cert, "Required").replace(
        "participants: Required",
        "participants: Required, handshake_timeout_ms: 300",
    );
    let root = Otpd::start_full(free_port(), &tls, &top);
    let mut silent = root.connect();
    silent.send(&[0x16, 0x03]); // two bytes of a record header, then nothing
    let started = Instant::now();
    assert!(silent.closed_within(Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(event_with(
        &el,
        &["participant-refused", "no TLS handshake within 300 ms"]
    )
    .is_some());

    let tls = pki.listener(&root_cert, "Optional").replace(
        "participants: Optional",
        "participants: Optional, handshake_timeout_ms: 200",
    );
    let root = Otpd::start(free_port(), &tls);
    let mut slow = root.connect();
    let mut other = root.connect();
    std::thread::sleep(Duration::from_millis(400));
    slow.subscribe_confirmed(&mut other, 830_001);
}

/// Bad TLS settings stop start-up with a message naming the setting.
#[test]
fn bad_tls_settings_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster-ca");
    let cert = pki.issue("root");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = dir.path().join("missing.pem").display().to_string();
    let cases = [
        (
            pki.listener(&cert, "Required")
                .replace(&pki.ca_file(), &missing),
            "messagedirector.tls.client_ca",
        ),
        (
            pki.listener(&cert, "Required")
                .replace(&cert.1, &not_pem.display().to_string()),
            "messagedirector.tls.key",
        ),
        (
            child_settings(free_port(), &missing, None, ""),
            "messagedirector.upstream_tls.ca",
        ),
        (
            child_settings(
                free_port(),
                &pki.ca_file(),
                Some(&(cert.0.clone(), missing.clone())),
                "",
            ),
            "messagedirector.upstream_tls.key",
        ),
    ];
    for (md, want) in cases {
        let path = dir.path().join("cluster.ron");
        std::fs::write(
            &path,
            format!(
                "(cores: 1, pin_cores: false, messagedirector: (bind: Some(\"127.0.0.1:{}\"), {md}))",
                free_port()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(otpd_bin())
            .arg("--cluster")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{md}: otpd started");
        assert!(err.contains(want), "{md}: {err}");
    }
}

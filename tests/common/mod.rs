//! Test harness: starts the real `otpd` binary on free ports and talks to it over TCP with the
//! internal protocol, as an AI or a downstream MD would.
#![allow(dead_code)]

pub(crate) mod cluster;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const CONTROL_ADD_CHANNEL: u16 = 9000;
pub(crate) const CONTROL_REMOVE_CHANNEL: u16 = 9001;
pub(crate) const CONTROL_ADD_RANGE: u16 = 9002;
pub(crate) const CONTROL_REMOVE_RANGE: u16 = 9003;
pub(crate) const CONTROL_ADD_POST_REMOVE: u16 = 9010;
pub(crate) const CONTROL_CLEAR_POST_REMOVES: u16 = 9011;
pub(crate) const CONTROL_SET_CON_NAME: u16 = 9012;
pub(crate) const CONTROL_SET_CON_URL: u16 = 9013;
pub(crate) const CONTROL_LOG_MESSAGE: u16 = 9014;

/// How long "nothing arrives" is watched for.
pub(crate) const QUIET: Duration = Duration::from_millis(150);

pub(crate) fn otpd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_otpd")
}

/// A port to give otpd, free when asked. Taken below Linux's ephemeral range (32768-60999):
/// a port the kernel hands out for `:0` is also a source port it may give a test's outgoing
/// connection before otpd binds it (tests that open hundreds of client connections made otpd
/// fail to start now and then). Each test process walks its own sequence; a port in use is
/// skipped.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left below the ephemeral range");
        let port = (FIRST + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub(crate) struct Otpd {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Otpd {
    /// Starts otpd with a cluster.ron whose messagedirector section gets `md_extra` appended.
    pub(crate) fn start(port: u16, md_extra: &str) -> Otpd {
        Self::start_full(port, md_extra, "")
    }

    pub(crate) fn start_full(port: u16, md_extra: &str, top_extra: &str) -> Otpd {
        let mut dir = tempfile::tempdir().unwrap();
        // Debugging aid: OTPD_TEST_LOG=FILE keeps the otpd folder (config, debug log) after
        // the test and writes the log's path into FILE.
        if std::env::var("OTPD_TEST_LOG").is_ok() {
            dir.disable_cleanup(true);
        }
        let ron = format!(
            "(cores: 2, pin_cores: false, {top_extra}\n messagedirector: (bind: Some(\"127.0.0.1:{port}\"), {md_extra}))"
        );
        let path = dir.path().join("cluster.ron");
        std::fs::write(&path, ron).unwrap();
        let log = dir.path().join("otpd.log");
        if let Ok(keep) = std::env::var("OTPD_TEST_LOG") {
            let _ = std::fs::write(&keep, format!("{}\n", log.display()));
        }
        let child = Command::new(otpd_bin())
            .arg("--cluster")
            .arg(&path)
            .arg("--log")
            .arg(&log)
            .arg("--loglevel")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("otpd starts");
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                panic!(
                    "otpd does not listen on port {port} ({exited:?}); its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Otpd {
            child,
            port,
            dir,
            log,
        }
    }

    pub(crate) fn connect(&self) -> Md {
        Md::connect(self.port)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Otpd {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port}");
}

/// A datagram, framed (length tag included).
pub(crate) fn dg(recipients: &[u64], sender: u64, msgtype: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![recipients.len() as u8];
    for r in recipients {
        body.extend_from_slice(&r.to_le_bytes());
    }
    body.extend_from_slice(&sender.to_le_bytes());
    body.extend_from_slice(&msgtype.to_le_bytes());
    body.extend_from_slice(payload);
    frame(&body)
}

pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

pub(crate) fn control(msgtype: u16, args: &[u64]) -> Vec<u8> {
    let mut body = vec![1u8];
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&msgtype.to_le_bytes());
    for a in args {
        body.extend_from_slice(&a.to_le_bytes());
    }
    frame(&body)
}

pub(crate) fn add_channel(c: u64) -> Vec<u8> {
    control(CONTROL_ADD_CHANNEL, &[c])
}
pub(crate) fn remove_channel(c: u64) -> Vec<u8> {
    control(CONTROL_REMOVE_CHANNEL, &[c])
}
pub(crate) fn add_range(lo: u64, hi: u64) -> Vec<u8> {
    control(CONTROL_ADD_RANGE, &[lo, hi])
}
pub(crate) fn remove_range(lo: u64, hi: u64) -> Vec<u8> {
    control(CONTROL_REMOVE_RANGE, &[lo, hi])
}
pub(crate) fn clear_post_removes(sender: u64) -> Vec<u8> {
    control(CONTROL_CLEAR_POST_REMOVES, &[sender])
}
pub(crate) fn add_post_remove(sender: u64, datagram: &[u8]) -> Vec<u8> {
    let body = &datagram[2..];
    let mut f = control(CONTROL_ADD_POST_REMOVE, &[sender]);
    let mut payload = (body.len() as u16).to_le_bytes().to_vec();
    payload.extend_from_slice(body);
    f.extend_from_slice(&payload);
    let len = (f.len() - 2) as u16;
    f[..2].copy_from_slice(&len.to_le_bytes());
    f
}

/// One connection speaking the internal protocol.
pub(crate) struct Md {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Md {
    pub(crate) fn connect(port: u16) -> Md {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Md { s, buf: Vec::new() }
    }

    /// Connects from source address `ip` (any 127.x works on Linux loopback), for tests of
    /// `messagedirector.allow`.
    pub(crate) fn connect_from(port: u16, ip: &str) -> Md {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let src: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
        s.bind(&src.into()).unwrap();
        let dst: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        s.connect(&dst.into()).unwrap();
        Md::from_stream(s.into())
    }

    pub(crate) fn from_stream(s: TcpStream) -> Md {
        s.set_nodelay(true).unwrap();
        Md { s, buf: Vec::new() }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// The next framed datagram, or None if none arrives within `timeout`.
    pub(crate) fn recv_within(&mut self, timeout: Duration) -> Option<Vec<u8>> {
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
            self.s.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    pub(crate) fn recv(&mut self) -> Vec<u8> {
        self.recv_within(Duration::from_secs(5))
            .expect("a datagram within 5 s")
    }

    pub(crate) fn expect(&mut self, want: &[u8]) {
        let got = self.recv();
        assert_eq!(got, want, "datagram differs");
    }

    /// Expects exactly these datagrams, in any order.
    pub(crate) fn expect_many(&mut self, want: &[Vec<u8>]) {
        let mut got: Vec<Vec<u8>> = (0..want.len()).map(|_| self.recv()).collect();
        let mut want = want.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    pub(crate) fn expect_none(&mut self) {
        if let Some(d) = self.recv_within(QUIET) {
            panic!("expected nothing, got {d:?}");
        }
    }

    pub(crate) fn flush(&mut self) {
        while self.recv_within(Duration::from_millis(50)).is_some() {}
    }

    /// True if the peer closed the connection within `timeout`.
    pub(crate) fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 65536];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.s.set_read_timeout(Some(deadline - now)).unwrap();
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }

    /// Subscribes and waits until the subscription is surely in place (a control message
    /// has no reply, so a probe through the MD from another connection confirms it). Traffic
    /// the channel carried before the probe (a fixture's objects still settling: the parent's
    /// GET_AI_RESP to a new child) is skipped: it predates the confirmation.
    pub(crate) fn subscribe_confirmed(&mut self, via: &mut Md, channel: u64) {
        self.send(&add_channel(channel));
        let probe = dg(&[channel], 0xBEEF, 4242, b"probe");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            via.send(&probe);
            while let Some(d) = self.recv_within(Duration::from_millis(50)) {
                if d == probe {
                    self.flush();
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "subscription to {channel} never took effect"
            );
        }
    }
}

/// A stand-in upstream MD: a listener that otpd connects to.
pub(crate) struct FakeUpstream {
    pub listener: TcpListener,
    pub port: u16,
}

impl FakeUpstream {
    pub(crate) fn new() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        FakeUpstream { listener, port }
    }

    pub(crate) fn accept(&self) -> Md {
        self.listener.set_nonblocking(false).unwrap();
        let (s, _) = self.listener.accept().unwrap();
        Md::from_stream(s)
    }

    /// Accepts a child otpd and reads what it sends first, CONTROL_SET_CON_NAME: returns the
    /// link and the name.
    pub(crate) fn accept_child(&self) -> (Md, String) {
        let mut md = self.accept();
        let first = md.recv();
        let body = &first[2..];
        assert_eq!(body[0], 1, "one recipient");
        assert_eq!(
            u64::from_le_bytes(body[1..9].try_into().unwrap()),
            1,
            "control"
        );
        let msgtype = u16::from_le_bytes([body[9], body[10]]);
        assert_eq!(msgtype, CONTROL_SET_CON_NAME, "SET_CON_NAME comes first");
        let len = u16::from_le_bytes([body[11], body[12]]) as usize;
        let name = String::from_utf8(body[13..13 + len].to_vec()).unwrap();
        (md, name)
    }
}

/// Datagrams as they arrive, until `quiet` passes with nothing (for a stream of unknown size).
pub(crate) fn drain(md: &mut Md, quiet: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(d) = md.recv_within(quiet) {
        got.push(d);
    }
    got
}

/// A payload builder for the tests' datagrams (little-endian, as on the wire).
#[derive(Default, Clone)]
pub(crate) struct P(pub Vec<u8>);

impl P {
    pub(crate) fn new() -> P {
        P(Vec::new())
    }
    pub(crate) fn u8(mut self, v: u8) -> P {
        self.0.push(v);
        self
    }
    pub(crate) fn u16(mut self, v: u16) -> P {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u32(mut self, v: u32) -> P {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> P {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn i16(mut self, v: i16) -> P {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn string(mut self, s: &str) -> P {
        self.0.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub(crate) fn bytes(mut self, b: &[u8]) -> P {
        self.0.extend_from_slice(b);
        self
    }
}

/// The project's test schema, for class and field ids by name.
pub(crate) struct TestDc {
    pub path: PathBuf,
    pub dc: otp_dc::DcFile,
}

impl TestDc {
    pub(crate) fn load() -> TestDc {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/dc/objects.dc");
        let path = path.canonicalize().unwrap();
        let dc = otp_dc::DcFile::parse_files(&[&path]).unwrap();
        TestDc { path, dc }
    }
    pub(crate) fn class(&self, name: &str) -> u16 {
        self.dc.class_by_name(name).unwrap().id()
    }
    pub(crate) fn field(&self, class: &str, name: &str) -> u16 {
        let c = self.dc.class_by_name(class).unwrap();
        self.dc.field_by_name(c, name).unwrap().id()
    }
}

/// Connects a participant subscribed to `channels`, each confirmed through `probe`.
pub(crate) fn listener(port: u16, probe: &mut Md, channels: &[u64]) -> Md {
    let mut m = Md::connect(port);
    for &c in channels {
        m.subscribe_confirmed(probe, c);
    }
    m
}

/// A private PostgreSQL server for one test: initdb into a temporary folder, started on a free
/// loopback port with trust authentication; stopped (and removed) on drop. Run as root, the
/// server runs as the `postgres` user, as PostgreSQL requires.
pub(crate) struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl PgServer {
    pub(crate) fn start() -> PgServer {
        let bin = pg_bindir().expect(
            "PostgreSQL is not installed (initdb not found): install the distribution's \
             postgresql package (scripts/test does)",
        );
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = unsafe_is_root();
        let data = dir.path().join("data");
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let run = |prog: &str, args: &[&str]| {
            let mut c = if as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
                c
            } else {
                Command::new(bin.join(prog))
            };
            let out = c.args(args).output().expect("PostgreSQL tools run");
            assert!(
                out.status.success(),
                "{prog} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let data_s = data.to_str().unwrap();
        run(
            "initdb",
            &["-D", data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on",
            dir.path().display()
        );
        let log = dir.path().join("pg.log");
        run(
            "pg_ctl",
            &[
                "-D",
                data_s,
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        PgServer {
            port,
            dir,
            bin,
            as_postgres,
        }
    }

    /// Restarts the server on the same data directory and port (a fast shutdown: every
    /// connection is closed), waiting until it accepts connections again.
    pub(crate) fn restart(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("pg.log");
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let st = c
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-m", "fast", "-w", "-t", "30", "restart"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "pg_ctl restart failed");
    }

    /// The cluster.ron backend for this server's `postgres` database.
    pub(crate) fn backend(&self) -> String {
        format!(
            "Postgres(address: \"127.0.0.1:{}\", database: \"postgres\", username: \"postgres\", password: \"\")",
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub(crate) fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Where initdb and pg_ctl are: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
fn pg_bindir() -> Option<PathBuf> {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return Some(p);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The 2003 client's field numbers from the DC text (the fuzz harness's own reader).
#[allow(unused_imports)]
pub(crate) use otp_testkit::dc2003::client_numbers_2003;

/// Whether PostgreSQL's tools are installed (tests that can use either store prefer it).
pub(crate) fn pg_available() -> bool {
    pg_bindir().is_some()
}

//! A cluster over several "hosts" for fault tests: real otpd processes on distinct loopback
//! addresses (127.0.0.11 the root, .12 the StateServer host, .13 the ClientAgent host), a TCP
//! relay on each child's link to the root that can black-hole or cut it, an AI and Astron
//! clients, and readers of each host's /metrics. Run as root, a scenario may instead put the
//! ClientAgent host in its own network namespace (`Options::ca_in_netns`), linked to the root
//! by a veth pair that `ip link set down` partitions for real.

use super::*;
use otp_wire::msgtypes::*;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

// ---- the link settings of issue 20 items 4-6 ------------------------------------------------

/// The MD link settings issue 20 adds (keepalive, link timeout, connect deadline, a bounded
/// upstream queue, what a child does when its upstream is lost). otpd rejects unknown keys, so
/// they are written into the children's configs only when this is true (or the environment
/// sets OTPD_FAULTS_LINK_SETTINGS=1). The scenarios hold otpd to the figures below either way.
pub(crate) const LINK_SETTINGS_KNOWN: bool = true;

pub(crate) fn link_settings_on() -> bool {
    LINK_SETTINGS_KNOWN || std::env::var_os("OTPD_FAULTS_LINK_SETTINGS").is_some_and(|v| v == "1")
}

/// The figures every scenario is checked against.
pub(crate) mod timing {
    pub(crate) const RECONNECT_MIN_MS: u64 = 100;
    pub(crate) const RECONNECT_MAX_MS: u64 = 1000;
    pub(crate) const KEEPALIVE_MS: u64 = 250;
    pub(crate) const LINK_TIMEOUT_MS: u64 = 1500;
    pub(crate) const CONNECT_TIMEOUT_MS: u64 = 1000;
    /// upstream_settle_ms: a regained link holds what is owed (and the ejects) this long. The
    /// siblings retry at least every RECONNECT_MAX_MS; the rest is scheduling slack.
    pub(crate) const UPSTREAM_SETTLE_MS: u64 = 1500;
    pub(crate) const MAX_QUEUED_BYTES_UPSTREAM: u64 = 8 << 20;
    /// max_queued_bytes_per_participant on every host (a child that stops reading is cut off
    /// by its upstream past this).
    pub(crate) const MAX_QUEUED_BYTES_PER_PARTICIPANT: u64 = 8 << 20;
    /// Slack on top of a configured time: scheduling on a loaded 2-core machine.
    pub(crate) const SLACK_MS: u64 = 1500;
}

/// The messagedirector keys of a child's link to its upstream.
fn link_keys(on_upstream_lost: &str) -> String {
    use timing::*;
    let mut s = format!(
        "reconnect_min_ms: {RECONNECT_MIN_MS}, reconnect_max_ms: {RECONNECT_MAX_MS}, \
         max_queued_bytes_per_participant: {MAX_QUEUED_BYTES_PER_PARTICIPANT},"
    );
    if link_settings_on() {
        s.push_str(&format!(
            " keepalive_ms: {KEEPALIVE_MS}, link_timeout_ms: {LINK_TIMEOUT_MS}, \
             upstream_settle_ms: Some({UPSTREAM_SETTLE_MS}), \
             connect_timeout_ms: {CONNECT_TIMEOUT_MS}, \
             max_queued_bytes_upstream: {MAX_QUEUED_BYTES_UPSTREAM}, \
             on_upstream_lost: {on_upstream_lost},"
        ));
    }
    s
}

/// The ClientAgent keys issue 20 item 6 adds.
fn ca_keys() -> &'static str {
    if link_settings_on() {
        "refuse_clients_without_upstream: true,"
    } else {
        ""
    }
}

// ---- the schema ---------------------------------------------------------------------------

pub(crate) const SS_CONTROL: u64 = 100_100;
pub(crate) const DB_CONTROL: u64 = 4003;
pub(crate) const AI_CHANNEL: u64 = 5_000;
pub(crate) const UD: u32 = 4665;
pub(crate) const SHARD: u32 = 10_000;
pub(crate) const VERSION: &str = "otpd-faults";
pub(crate) const CA_CHANNELS: (u64, u64) = (1_000_000, 1_099_999);

/// tests/dc/client.dc (login UberDOG, shard, avatars) then tests/dc/objects.dc (`Thing`, with
/// `db` fields), read as one set.
pub(crate) struct Schema {
    pub paths: Vec<PathBuf>,
    pub dc: otp_dc::DcFile,
}

impl Schema {
    pub(crate) fn load() -> Schema {
        let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/dc");
        let paths: Vec<PathBuf> = ["client.dc", "objects.dc"]
            .iter()
            .map(|f| base.join(f).canonicalize().unwrap())
            .collect();
        let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
        let dc = otp_dc::DcFile::parse_files(&refs).unwrap();
        Schema { paths, dc }
    }
    pub(crate) fn class(&self, name: &str) -> u16 {
        self.dc.class_by_name(name).unwrap().id()
    }
    pub(crate) fn field(&self, class: &str, name: &str) -> u16 {
        let c = self.dc.class_by_name(class).unwrap();
        self.dc.field_by_name(c, name).unwrap().id()
    }
    fn ron_list(&self) -> String {
        let v: Vec<String> = self
            .paths
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        v.join(", ")
    }
}

// ---- hosts --------------------------------------------------------------------------------

/// One otpd process standing for one machine: its address, ports and config; restartable on
/// the same folder (so a SQLite database survives it).
pub(crate) struct Host {
    pub name: &'static str,
    pub ip: &'static str,
    /// The network namespace it runs in (`ip netns exec`), None = the test's own.
    netns: Option<String>,
    pub md_port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Host {
    /// Writes `ron` (the whole cluster.ron) and starts otpd on it.
    fn new(
        name: &'static str,
        ip: &'static str,
        md_port: u16,
        metrics_port: u16,
        ron: &str,
    ) -> Host {
        Host::new_in(name, ip, None, md_port, metrics_port, ron)
    }

    fn new_in(
        name: &'static str,
        ip: &'static str,
        netns: Option<String>,
        md_port: u16,
        metrics_port: u16,
        ron: &str,
    ) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cluster.ron");
        std::fs::write(&config, ron).unwrap();
        let log = dir.path().join("otpd.log");
        let mut h = Host {
            name,
            ip,
            netns,
            md_port,
            metrics_port,
            dir,
            config,
            log,
            child: None,
        };
        h.start();
        h
    }

    pub(crate) fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), otpd_bin()]);
                c
            }
            None => Command::new(otpd_bin()),
        };
        let child = cmd
            .arg("--cluster")
            .arg(&self.config)
            .arg("--log")
            .arg(&self.log)
            .arg("--loglevel")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("otpd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((self.ip, self.md_port)).is_err()
            || TcpStream::connect((self.ip, self.metrics_port)).is_err()
        {
            let exited = self.child.as_mut().unwrap().try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "{} does not listen on {}:{} ({exited:?}); its log ends:\n{}",
                    self.name,
                    self.ip,
                    self.md_port,
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Resident memory, in bytes (from /proc).
    pub(crate) fn rss(&self) -> u64 {
        let pid = self.pid().expect("running");
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The text of /metrics (empty if the endpoint does not answer).
    pub(crate) fn metrics(&self) -> String {
        let Ok(mut s) = TcpStream::connect((self.ip, self.metrics_port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /metrics HTTP/1.0\r\n\r\n").is_err() {
            return String::new();
        }
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r
    }

    /// The sum of the samples of `name` whose labels contain every `labels` text
    /// (`role="stateserver"`), or None if there is none.
    pub(crate) fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        metric_in(&self.metrics(), name, labels)
    }

    /// Live objects on this host's StateServers.
    pub(crate) fn ss_objects(&self) -> u64 {
        self.metric("otpd_role", &["role=\"stateserver\"", "metric=\"objects\""])
            .unwrap_or(0.0) as u64
    }

    pub(crate) fn upstream_connected(&self) -> Option<bool> {
        self.metric("otpd_upstream_connected", &[])
            .map(|v| v >= 1.0)
    }

    /// Connected and past the settle period (`otpd_upstream_settling` 0): what was owed is
    /// sent, the sessions at risk are ejected, new clients are taken.
    pub(crate) fn upstream_settled(&self) -> bool {
        let text = self.metrics();
        metric_in(&text, "otpd_upstream_connected", &[]) == Some(1.0)
            && metric_in(&text, "otpd_upstream_settling", &[]).unwrap_or(0.0) == 0.0
    }

    /// Waits until `pred` holds of this host's metrics; returns how long it took, or None.
    pub(crate) fn wait_until(
        &self,
        within: Duration,
        pred: impl Fn(&Host) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if pred(self) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        // OTPD_FAULTS_KEEP_LOGS=DIR keeps each host's log (DIR/<test>.<host>.log) for reading.
        if let Some(dir) = std::env::var_os("OTPD_FAULTS_KEEP_LOGS") {
            let test = std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", ".");
            let to = PathBuf::from(dir).join(format!("{test}.{}.log", self.name));
            let _ = std::fs::copy(&self.log, to);
        }
    }
}

/// The sum of the samples of `name` in Prometheus text `text` whose labels contain `labels`.
pub(crate) fn metric_in(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if !labels.iter().all(|l| rest.contains(l)) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---- the relay ----------------------------------------------------------------------------

const FORWARD: u8 = 0;
const BLACKHOLE: u8 = 1;
const REFUSE: u8 = 2;

/// Which directions of one relayed connection are held (bytes not read, so not forwarded).
struct Flow {
    /// child -> upstream held.
    up_held: AtomicBool,
    /// upstream -> child held.
    down_held: AtomicBool,
    socks: Mutex<Vec<TcpStream>>,
}

/// A TCP relay on a child's link to its upstream: forwards both ways; can hold a link (a dead
/// link: sockets stay open, nothing flows, as when a cable is pulled), hold one direction of
/// the existing connections (a side that stops reading), or cut every connection.
pub(crate) struct Relay {
    pub addr: SocketAddr,
    target: SocketAddr,
    mode: Arc<AtomicU8>,
    flows: Arc<Mutex<Vec<Arc<Flow>>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    pub(crate) fn new(ip: &str, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind((ip, free_port())).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let flows: Arc<Mutex<Vec<Arc<Flow>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (mode, flows, stop) = (mode.clone(), flows.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let flow = Arc::new(Flow {
                                up_held: AtomicBool::new(false),
                                down_held: AtomicBool::new(false),
                                socks: Mutex::new(vec![s.try_clone().unwrap()]),
                            });
                            flows.lock().unwrap().push(flow.clone());
                            let (mode, stop) = (mode.clone(), stop.clone());
                            std::thread::spawn(move || relay_one(s, target, flow, mode, stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Relay {
            addr,
            target,
            mode,
            flows,
            stop,
            accept: Some(accept),
        }
    }

    /// Nothing flows any more, on the connections there are and on new ones (accepted, held).
    pub(crate) fn blackhole(&self) {
        self.mode.store(BLACKHOLE, Ordering::SeqCst);
        for f in self.flows.lock().unwrap().iter() {
            f.up_held.store(true, Ordering::SeqCst);
            f.down_held.store(true, Ordering::SeqCst);
        }
    }

    /// New connections are closed at once (the upstream's port is unreachable); those there
    /// are go on as they are.
    pub(crate) fn refuse(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
    }

    /// Everything flows again; what was held is delivered.
    pub(crate) fn heal(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
        for f in self.flows.lock().unwrap().iter() {
            f.up_held.store(false, Ordering::SeqCst);
            f.down_held.store(false, Ordering::SeqCst);
        }
    }

    /// The connections there are stop carrying upstream -> child (the child "stops reading");
    /// new connections flow.
    pub(crate) fn hold_down_existing(&self) {
        for f in self.flows.lock().unwrap().iter() {
            f.down_held.store(true, Ordering::SeqCst);
        }
    }

    /// The connections there are stop carrying child -> upstream (the upstream "stops
    /// reading"); new connections flow.
    pub(crate) fn hold_up_existing(&self) {
        for f in self.flows.lock().unwrap().iter() {
            f.up_held.store(true, Ordering::SeqCst);
        }
    }

    /// Closes every connection there is, both sides at once (each side sees its link go).
    pub(crate) fn cut(&self) {
        let flows = std::mem::take(&mut *self.flows.lock().unwrap());
        for f in flows {
            for s in f.socks.lock().unwrap().drain(..) {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Connections relayed and still open.
    pub(crate) fn open_connections(&self) -> usize {
        self.flows
            .lock()
            .unwrap()
            .iter()
            .filter(|f| !f.socks.lock().unwrap().is_empty())
            .count()
    }

    pub(crate) fn target(&self) -> SocketAddr {
        self.target
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn relay_one(
    child: TcpStream,
    target: SocketAddr,
    flow: Arc<Flow>,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) {
    if mode.load(Ordering::SeqCst) == REFUSE {
        let _ = socket2::SockRef::from(&child).set_linger(Some(Duration::ZERO));
        let _ = child.shutdown(std::net::Shutdown::Both);
        flow.socks.lock().unwrap().clear();
        return;
    }
    // A link accepted while black-holed is held: the upstream is reached once it heals.
    while mode.load(Ordering::SeqCst) == BLACKHOLE {
        if stop.load(Ordering::Relaxed) || flow.socks.lock().unwrap().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Ok(up) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        let _ = socket2::SockRef::from(&child).set_linger(Some(Duration::ZERO));
        let _ = child.shutdown(std::net::Shutdown::Both);
        flow.socks.lock().unwrap().clear();
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = child.set_nodelay(true);
    {
        let mut socks = flow.socks.lock().unwrap();
        if socks.is_empty() {
            return; // cut meanwhile
        }
        socks.push(up.try_clone().unwrap());
    }
    let f2 = flow.clone();
    let s2 = stop.clone();
    let (c2, u2) = (child.try_clone().unwrap(), up.try_clone().unwrap());
    let t = std::thread::spawn(move || pump(u2, c2, &f2, false, &s2));
    pump(child, up, &flow, true, &stop);
    let _ = t.join();
}

/// Copies `from` to `to` while this direction is not held; closes both at the end.
fn pump(mut from: TcpStream, mut to: TcpStream, flow: &Flow, upward: bool, stop: &AtomicBool) {
    let held = || {
        if upward {
            flow.up_held.load(Ordering::SeqCst)
        } else {
            flow.down_held.load(Ordering::SeqCst)
        }
    };
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 65536];
    loop {
        if stop.load(Ordering::Relaxed) || flow.socks.lock().unwrap().is_empty() {
            break;
        }
        if held() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    // One side went (or the link was cut): the other side sees its link go too.
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
    flow.socks.lock().unwrap().clear();
}

// ---- network namespaces ---------------------------------------------------------------------

/// Runs `ip ARGS`; true if it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            Some(l.split_whitespace().nth(2)? == "0") // the effective uid
        })
        .unwrap_or(false)
}

/// A network namespace standing for one machine, joined to the test's namespace by two veth
/// pairs: `link` (its network to the root: `cut` sets the test side down, a real partition:
/// packets are dropped, nothing is closed or acknowledged) and `public` (clients and /metrics;
/// stays up). Deleted on drop (a panicking test too); names carry the test process's id, and
/// namespaces left by a test process that is gone are deleted when the next one is made.
pub(crate) struct Netns {
    pub name: String,
    link_out: String,
    /// Addresses on the link veth: the test's side (the root is reached there) and the host's.
    pub link_ip_out: &'static str,
    pub link_ip_in: &'static str,
    /// Addresses on the public veth: the test's side and the host's (its ports are bound here).
    pub public_ip_out: &'static str,
    pub public_ip_in: &'static str,
}

impl Netns {
    /// A namespace with its two links up, or None (not root, `ip netns` refused, or
    /// OTPD_FAULTS_NO_NETNS=1: to run the scenarios' variants without one).
    pub(crate) fn create() -> Option<Netns> {
        use std::sync::atomic::AtomicU32;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !running_as_root() || std::env::var_os("OTPD_FAULTS_NO_NETNS").is_some_and(|v| v == "1")
        {
            return None;
        }
        Netns::sweep();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let name = format!("otpf{pid}n{k}");
        let (link_out, link_in) = (format!("ofl{pid}{k}o"), format!("ofl{pid}{k}i"));
        let (pub_out, pub_in) = (format!("ofp{pid}{k}o"), format!("ofp{pid}{k}i"));
        let net = format!("10.{}.{}", 64 + (pid >> 8) % 64, pid % 256);
        let at =
            |n: u32| -> &'static str { Box::leak(format!("{net}.{}", k * 8 + n).into_boxed_str()) };
        let ns = Netns {
            name: name.clone(),
            link_out: link_out.clone(),
            link_ip_out: at(1),
            link_ip_in: at(2),
            public_ip_out: at(5),
            public_ip_in: at(6),
        };
        let _ = ip(&["netns", "del", &name]);
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        // From here on, `ns` deletes what was made if a step fails.
        let inside = |args: &[&str]| {
            let mut a = vec!["netns", "exec", name.as_str(), "ip"];
            a.extend_from_slice(args);
            ip(&a)
        };
        let ok = inside(&["link", "set", "lo", "up"])
            && [
                (&link_out, &link_in, ns.link_ip_out, ns.link_ip_in),
                (&pub_out, &pub_in, ns.public_ip_out, ns.public_ip_in),
            ]
            .iter()
            .all(|(out, inn, a_out, a_in)| {
                ip(&["link", "add", out, "type", "veth", "peer", "name", inn])
                    && ip(&["link", "set", inn, "netns", &name])
                    && ip(&["addr", "add", &format!("{a_out}/30"), "dev", out])
                    && ip(&["link", "set", out, "up"])
                    && inside(&["addr", "add", &format!("{a_in}/30"), "dev", inn])
                    && inside(&["link", "set", inn, "up"])
            });
        if !ok {
            return None;
        }
        Some(ns)
    }

    /// Deletes the namespaces of test processes that are gone (killed before their drop).
    fn sweep() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(pid) = name
                .strip_prefix("otpf")
                .and_then(|r| r.split('n').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }

    /// The host's link to the root goes dead: the test side of its veth is set down.
    pub(crate) fn cut(&self) {
        assert!(
            ip(&["link", "set", &self.link_out, "down"]),
            "ip link set down"
        );
    }

    /// The link is back (addresses and routes come back with it).
    pub(crate) fn heal(&self) {
        assert!(ip(&["link", "set", &self.link_out, "up"]), "ip link set up");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth ends inside, and with them their peers.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.link_out]);
    }
}

// ---- the cluster --------------------------------------------------------------------------

/// What the root's Database stores in.
pub(crate) enum Backend<'a> {
    Sqlite,
    Postgres(&'a PgServer),
}

/// Root (MD, Database, DBSS) on 127.0.0.11; StateServer host on 127.0.0.12; ClientAgent host on
/// 127.0.0.13; each child reaches the root through its own relay. Events from every host go to
/// `events`.
pub(crate) struct Cluster {
    pub schema: Schema,
    pub root: Host,
    pub ss: Host,
    pub ca: Host,
    pub ss_link: Relay,
    pub ca_link: Relay,
    pub ca_port: u16,
    pub events: UdpSocket,
    /// The ClientAgent host's namespace (`Options::ca_in_netns`, when it could be made); its
    /// link to the root is then the namespace's veth, not `ca_link`. Dropped last.
    pub ca_net: Option<Netns>,
}

pub(crate) struct Options<'a> {
    pub backend: Backend<'a>,
    /// `on_upstream_lost` of the children (when the link settings are on).
    pub on_upstream_lost: &'static str,
    /// Run the ClientAgent host in its own network namespace when the test runs as root
    /// (`Cluster::ca_net` says whether it does).
    pub ca_in_netns: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            backend: Backend::Sqlite,
            on_upstream_lost: "Reconnect",
            ca_in_netns: false,
        }
    }
}

impl Cluster {
    #[allow(clippy::too_many_lines)] // the three hosts' configurations, read top to bottom
    pub(crate) fn start(opts: Options<'_>) -> Cluster {
        let schema = Schema::load();
        let ca_net = if opts.ca_in_netns {
            Netns::create()
        } else {
            None
        };
        let events = UdpSocket::bind(if ca_net.is_some() {
            "0.0.0.0:0"
        } else {
            "127.0.0.1:0"
        })
        .unwrap();
        events
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let el_port = events.local_addr().unwrap().port();
        let dcs = schema.ron_list();
        let top = |name: &str, ip: &str, metrics: u16| {
            // A host in a namespace reaches the test's events over its public veth.
            let el = match &ca_net {
                Some(ns) if ip == ns.public_ip_in => format!("{}:{el_port}", ns.public_ip_out),
                _ => format!("127.0.0.1:{el_port}"),
            };
            format!(
                "name: \"{name}\", cores: 2, pin_cores: false, dc_files: [{dcs}], \
                 eventlogger: Some(\"{el}\"), metrics: Some(\"{ip}:{metrics}\"), \
                 uberdogs: [(id: {UD}, class: \"LoginManager\", anonymous: true)],"
            )
        };
        // The root watches its links to the children as they watch theirs to it (an operator
        // sets the link keys alike on every MD).
        let md_common = {
            use timing::*;
            let mut s = format!(
                "reconnect_min_ms: {RECONNECT_MIN_MS}, reconnect_max_ms: {RECONNECT_MAX_MS}, \
                 max_queued_bytes_per_participant: {MAX_QUEUED_BYTES_PER_PARTICIPANT},"
            );
            if link_settings_on() {
                s.push_str(&format!(
                    " keepalive_ms: {KEEPALIVE_MS}, link_timeout_ms: {LINK_TIMEOUT_MS},"
                ));
            }
            s
        };

        // The root.
        let backend = match opts.backend {
            Backend::Sqlite => "Sqlite(directory: \"data\")".to_string(),
            Backend::Postgres(pg) => pg.backend(),
        };
        let (rp, rm) = (free_port(), free_port());
        // With the ClientAgent host in a namespace, the root also listens on the test side of
        // its link veth (and allows that network).
        let (root_bind, allow) = match &ca_net {
            Some(ns) => (
                format!("0.0.0.0:{rp}"),
                format!("allow: [\"127.0.0.0/8\", \"{}/30\"],", ns.link_ip_out),
            ),
            None => (format!("127.0.0.11:{rp}"), String::new()),
        };
        let root = Host::new(
            "root",
            "127.0.0.11",
            rp,
            rm,
            &format!(
                "({} messagedirector: (bind: Some(\"{root_bind}\"), {allow} {md_common}), roles: [\
                 Database(control: {DB_CONTROL}, generate: (min: 100000000, max: 199999999), \
                          backend: {backend}), \
                 Dbss(database: {DB_CONTROL}, ranges: [(min: 100000000, max: 199999999)])])",
                top("root", "127.0.0.11", rm)
            ),
        );
        let root_addr: SocketAddr = format!("127.0.0.11:{rp}").parse().unwrap();
        let ss_link = Relay::new("127.0.0.11", root_addr);
        let ca_link = Relay::new("127.0.0.11", root_addr);
        let link = link_keys(opts.on_upstream_lost);

        // The StateServer host.
        let (sp, sm) = (free_port(), free_port());
        let ss = Host::new(
            "ss-host",
            "127.0.0.12",
            sp,
            sm,
            &format!(
                "({} messagedirector: (bind: Some(\"127.0.0.12:{sp}\"), \
                  connect: Some(\"{}\"), {link}), \
                  roles: [StateServer(control: {SS_CONTROL})])",
                top("ss-host", "127.0.0.12", sm),
                ss_link.addr
            ),
        );

        // The ClientAgent host.
        let (cp, cm, cport) = (free_port(), free_port(), free_port());
        let (ca_ip, ca_upstream, ca_ns) = match &ca_net {
            Some(ns) => (
                ns.public_ip_in,
                format!("{}:{rp}", ns.link_ip_out),
                Some(ns.name.clone()),
            ),
            None => ("127.0.0.13", ca_link.addr.to_string(), None),
        };
        let ca = Host::new_in(
            "ca-host",
            ca_ip,
            ca_ns,
            cp,
            cm,
            &format!(
                "({} messagedirector: (bind: Some(\"{ca_ip}:{cp}\"), \
                  connect: Some(\"{ca_upstream}\"), {link}), \
                  roles: [ClientAgent((bind: \"{ca_ip}:{cport}\", version: \"{VERSION}\", \
                    channels: (min: {}, max: {}), add_interest: \"enabled\", {}))])",
                top("ca-host", ca_ip, cm),
                CA_CHANNELS.0,
                CA_CHANNELS.1,
                ca_keys()
            ),
        );
        let c = Cluster {
            schema,
            root,
            ss,
            ca,
            ss_link,
            ca_link,
            ca_port: cport,
            events,
            ca_net,
        };
        for h in [&c.ss, &c.ca] {
            assert!(
                h.wait_until(Duration::from_secs(5), |h| h.upstream_connected()
                    == Some(true))
                    .is_some(),
                "{} never reached the root; log:\n{}",
                h.name,
                h.log_tail(20)
            );
        }
        c
    }

    /// An AI on the StateServer host, with the shard made.
    pub(crate) fn ai(&self) -> Ai {
        Ai::connect(self, true)
    }

    /// A client that sent HELLO, whatever the answer.
    pub(crate) fn client_hello_sent(&self) -> Client {
        let mut cl = Client::connect(self.ca.ip, self.ca_port);
        cl.send(
            CLIENT_HELLO,
            P::new().u32(self.schema.dc.hash()).string(VERSION),
        );
        cl
    }

    /// A client that said HELLO (not logged in).
    pub(crate) fn client(&self) -> Client {
        let mut cl = self.client_hello_sent();
        let (t, _) = cl.recv(Duration::from_secs(5)).expect("HELLO answered");
        assert_eq!(t, CLIENT_HELLO_RESP, "HELLO answered");
        cl
    }

    /// A client logged in through the AI with its avatar `avatar` in (SHARD, zone).
    pub(crate) fn login(&self, ai: &mut Ai, avatar: u32, zone: u32) -> Client {
        let mut cl = self.client();
        ai.login(self, &mut cl, avatar, zone)
            .unwrap_or_else(|e| panic!("login of avatar {avatar}: {e}"));
        cl
    }

    /// Event types received so far (drained from the socket).
    pub(crate) fn drain_events(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        let _ = self.events.set_nonblocking(true);
        while let Ok(n) = self.events.recv(&mut buf) {
            if let Ok(v) = rmpv::decode::read_value(&mut &buf[..n]) {
                let kind = v
                    .as_map()
                    .and_then(|m| {
                        m.iter()
                            .find(|(k, _)| k.as_str() == Some("type"))
                            .and_then(|(_, v)| v.as_str().map(str::to_string))
                    })
                    .unwrap_or_default();
                out.push(kind);
            }
        }
        let _ = self.events.set_nonblocking(false);
        out
    }
}

// ---- the AI -------------------------------------------------------------------------------

/// A decoded internal datagram, with when the AI read it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub at: Instant,
    pub sender: u64,
    pub msgtype: u16,
    pub payload: Vec<u8>,
}

impl Seen {
    pub(crate) fn u32_at(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.payload[i..i + 4].try_into().unwrap())
    }
}

#[derive(Default)]
struct Inbox {
    seen: Vec<Seen>,
    closed: bool,
}

/// A test-side AI on the StateServer host: makes the shard, logs clients in (their avatars
/// are session objects with a post-remove that deletes them, owned by the client), writes to
/// the database; a thread reads everything it is sent.
pub(crate) struct Ai {
    w: TcpStream,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    reader: Option<JoinHandle<()>>,
    pub channel: u64,
}

impl Ai {
    fn connect(c: &Cluster, make_shard: bool) -> Ai {
        let s = TcpStream::connect(("127.0.0.12", c.ss.md_port)).unwrap();
        s.set_nodelay(true).unwrap();
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        let reader = {
            let mut r = s.try_clone().unwrap();
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let mut buf: Vec<u8> = Vec::new();
                let mut chunk = vec![0u8; 65536];
                loop {
                    let n = match r.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut got = Vec::new();
                    while buf.len() >= 2 {
                        let len = u16::from_le_bytes([buf[0], buf[1]]) as usize;
                        if buf.len() < 2 + len {
                            break;
                        }
                        let f: Vec<u8> = buf.drain(..2 + len).collect();
                        let b = &f[2..];
                        let at = 1 + 8 * b[0] as usize;
                        got.push(Seen {
                            at: Instant::now(),
                            sender: u64::from_le_bytes(b[at..at + 8].try_into().unwrap()),
                            msgtype: u16::from_le_bytes([b[at + 8], b[at + 9]]),
                            payload: b[at + 10..].to_vec(),
                        });
                    }
                    let (m, cv) = &*inbox;
                    m.lock().unwrap().seen.extend(got);
                    cv.notify_all();
                }
                let (m, cv) = &*inbox;
                m.lock().unwrap().closed = true;
                cv.notify_all();
            })
        };
        let mut ai = Ai {
            w: s,
            inbox,
            reader: Some(reader),
            channel: AI_CHANNEL,
        };
        let mut probe = Md::connect_to("127.0.0.12", c.ss.md_port);
        for ch in [AI_CHANNEL, UD as u64] {
            ai.subscribe_confirmed(&mut probe, ch);
        }
        for zone in 1..=4 {
            ai.subscribe_confirmed(&mut probe, location(SHARD, zone));
        }
        if make_shard {
            ai.send(&dg(
                &[SS_CONTROL],
                AI_CHANNEL,
                STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
                &P::new()
                    .u32(SHARD)
                    .u32(0)
                    .u32(0)
                    .u16(c.schema.class("Shard"))
                    .string("shard")
                    .0,
            ));
        }
        ai
    }

    /// Subscribes and waits until a probe through the MD reaches the AI.
    fn subscribe_confirmed(&mut self, probe: &mut Md, channel: u64) {
        self.send(&add_channel(channel));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let marker = 0xF00D_0000u32 + (channel as u32 & 0xFFFF);
            probe.send(&dg(&[channel], 0xBEEF, 4242, &marker.to_le_bytes()));
            if self
                .take(Duration::from_millis(50), |s| {
                    s.msgtype == 4242 && s.payload == marker.to_le_bytes()
                })
                .is_some()
            {
                // Later probes may still arrive; they are never looked for again.
                return;
            }
            assert!(
                Instant::now() < deadline,
                "subscription to {channel} never took effect"
            );
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("the AI's MD is up");
    }

    /// Removes and returns the first datagram matching `pred`, waiting up to `within`.
    pub(crate) fn take(&self, within: Duration, pred: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = Instant::now() + within;
        let (m, cv) = &*self.inbox;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(i) = g.seen.iter().position(&pred) {
                return Some(g.seen.remove(i));
            }
            let now = Instant::now();
            if now >= deadline || g.closed {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Whether a datagram matching `pred` was seen (kept), waiting up to `within`.
    pub(crate) fn saw(&self, within: Duration, pred: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = Instant::now() + within;
        let (m, cv) = &*self.inbox;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(s) = g.seen.iter().find(|s| pred(s)) {
                return Some(s.clone());
            }
            let now = Instant::now();
            if now >= deadline || g.closed {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// When the AI heard that `doid` was deleted (its location's STATESERVER_OBJECT_DELETE_RAM).
    pub(crate) fn deleted_at(&self, doid: u32) -> Option<Instant> {
        self.saw(Duration::ZERO, |s| {
            s.msgtype == STATESERVER_OBJECT_DELETE_RAM && s.u32_at(0) == doid
        })
        .map(|s| s.at)
    }

    /// Logs a client in: it calls the login UberDOG; the AI makes it ESTABLISHED, makes its
    /// avatar a session object with a post-remove deleting it, creates it and gives it to the
    /// client as owner; the client sees its avatar arrive.
    pub(crate) fn login(
        &mut self,
        c: &Cluster,
        cl: &mut Client,
        avatar: u32,
        zone: u32,
    ) -> Result<(), String> {
        let login = c.schema.field("LoginManager", "login");
        let token = format!("avatar {avatar}");
        cl.send(
            CLIENT_OBJECT_SET_FIELD,
            P::new().u32(UD).u16(login).string(&token),
        );
        let call = self
            .take(Duration::from_secs(5), |s| {
                s.msgtype == STATESERVER_OBJECT_SET_FIELD
                    && s.payload.len() > 8
                    && s.payload[8..].ends_with(token.as_bytes())
            })
            .ok_or("the login call did not reach the AI")?;
        cl.channel = call.sender;
        cl.avatar = avatar;
        let ch = cl.channel;
        let mut burst = Vec::new();
        burst.extend(dg(
            &[ch],
            AI_CHANNEL,
            CLIENTAGENT_SET_STATE,
            &P::new().u16(2).0,
        ));
        burst.extend(dg(
            &[ch],
            AI_CHANNEL,
            CLIENTAGENT_ADD_SESSION_OBJECT,
            &P::new().u32(avatar).0,
        ));
        let delete = dg(
            &[avatar as u64],
            ch,
            STATESERVER_OBJECT_DELETE_RAM,
            &P::new().u32(avatar).0,
        );
        burst.extend(dg(
            &[ch],
            AI_CHANNEL,
            CLIENTAGENT_ADD_POST_REMOVE,
            &P::new().u16(delete.len() as u16 - 2).bytes(&delete[2..]).0,
        ));
        burst.extend(dg(
            &[SS_CONTROL],
            AI_CHANNEL,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
            &P::new()
                .u32(avatar)
                .u32(SHARD)
                .u32(zone)
                .u16(c.schema.class("Avatar"))
                .string(&format!("toon {avatar}"))
                .0,
        ));
        burst.extend(dg(
            &[avatar as u64],
            AI_CHANNEL,
            STATESERVER_OBJECT_SET_OWNER,
            &P::new().u64(ch).0,
        ));
        self.send(&burst);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Some((t, p)) = cl.recv(deadline.saturating_duration_since(Instant::now())) else {
                return Err("the client never saw its avatar".into());
            };
            if (t == CLIENT_ENTER_OBJECT_REQUIRED_OWNER
                || t == CLIENT_ENTER_OBJECT_REQUIRED_OTHER_OWNER)
                && p[..4] == avatar.to_le_bytes()
            {
                return Ok(());
            }
        }
    }

    /// A request to the database (through the root), answered within `within`: its answer's
    /// payload, or None.
    pub(crate) fn db_ask(
        &mut self,
        msgtype: u16,
        context: u32,
        p: P,
        within: Duration,
    ) -> Option<Vec<u8>> {
        let mut body = context.to_le_bytes().to_vec();
        body.extend_from_slice(&p.0);
        self.send(&dg(&[DB_CONTROL], AI_CHANNEL, msgtype, &body));
        self.take(within, |s| {
            s.msgtype == msgtype + 1
                && s.payload.len() >= 4
                && s.payload[..4] == context.to_le_bytes()
        })
        .map(|s| s.payload)
    }

    /// Whether the StateServer host still knows `doid` (STATESERVER_OBJECT_GET_ALL answered).
    pub(crate) fn object_exists(&mut self, doid: u32, context: u32) -> bool {
        self.send(&dg(
            &[doid as u64],
            AI_CHANNEL,
            STATESERVER_OBJECT_GET_ALL,
            &P::new().u32(context).u32(doid).0,
        ));
        self.take(Duration::from_millis(500), |s| {
            s.msgtype == STATESERVER_OBJECT_GET_ALL_RESP && s.u32_at(0) == context
        })
        .is_some()
    }

    /// Sends a marker to the client through the cluster (AI -> root -> CA host): true if the
    /// client reads it within `within`.
    pub(crate) fn reaches(&mut self, cl: &mut Client, within: Duration) -> bool {
        let marker = payload(0xFFF0, P::new().u32(cl.avatar));
        self.send(&dg(
            &[cl.channel],
            AI_CHANNEL,
            CLIENTAGENT_SEND_DATAGRAM,
            &P::new().u16(marker.len() as u16 - 2).bytes(&marker[2..]).0,
        ));
        let deadline = Instant::now() + within;
        loop {
            let Some((t, p)) = cl.recv(deadline.saturating_duration_since(Instant::now())) else {
                return false;
            };
            if t == 0xFFF0 && p == cl.avatar.to_le_bytes() {
                return true;
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inbox.0.lock().unwrap().closed
    }
}

impl Drop for Ai {
    fn drop(&mut self) {
        let _ = self.w.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

pub(crate) fn location(parent: u32, zone: u32) -> u64 {
    ((parent as u64) << 32) | zone as u64
}

// ---- clients ------------------------------------------------------------------------------

/// A client datagram: msgtype then payload, framed.
pub(crate) fn payload(msgtype: u16, p: P) -> Vec<u8> {
    let mut body = msgtype.to_le_bytes().to_vec();
    body.extend_from_slice(&p.0);
    frame(&body)
}

/// An Astron-protocol client on the ClientAgent host.
pub(crate) struct Client {
    pub s: TcpStream,
    buf: Vec<u8>,
    pub channel: u64,
    pub avatar: u32,
    /// The eject it received, if any: (code, reason).
    pub ejected: Option<(u16, String)>,
    /// The ClientAgent closed the connection.
    pub closed: bool,
}

impl Client {
    pub(crate) fn connect(ip: &str, port: u16) -> Client {
        let s = TcpStream::connect((ip, port)).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            channel: 0,
            avatar: 0,
            ejected: None,
            closed: false,
        }
    }

    pub(crate) fn send(&mut self, msgtype: u16, p: P) {
        let _ = self.s.write_all(&payload(msgtype, p));
    }

    /// The next datagram (msgtype, payload) within `within`; notes an eject and the close.
    pub(crate) fn recv(&mut self, within: Duration) -> Option<(u16, Vec<u8>)> {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.len() >= 2 {
                let len = u16::from_le_bytes([self.buf[0], self.buf[1]]) as usize;
                if self.buf.len() >= 2 + len {
                    let f: Vec<u8> = self.buf.drain(..2 + len).collect();
                    if f.len() < 4 {
                        continue;
                    }
                    let t = u16::from_le_bytes([f[2], f[3]]);
                    let p = f[4..].to_vec();
                    if t == CLIENT_EJECT && p.len() >= 4 {
                        let code = u16::from_le_bytes([p[0], p[1]]);
                        let len = u16::from_le_bytes([p[2], p[3]]) as usize;
                        let reason =
                            String::from_utf8_lossy(&p[4..(4 + len).min(p.len())]).into_owned();
                        self.ejected = Some((code, reason));
                    }
                    return Some((t, p));
                }
            }
            if self.closed {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.s
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => self.closed = true,
            }
        }
    }

    /// Reads what arrives for `within`, noting an eject and the close; true while the
    /// connection is open.
    pub(crate) fn still_connected(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.closed && Instant::now() < deadline {
            let _ = self.recv(deadline.saturating_duration_since(Instant::now()));
        }
        // Drain what is buffered, for an eject read before the close.
        while self.recv(Duration::ZERO).is_some() {}
        !self.closed
    }

    /// Leaves as a client does (CLIENT_DISCONNECT, then the socket closes).
    pub(crate) fn leave(mut self) {
        self.send(CLIENT_DISCONNECT, P::new());
        let _ = self.still_connected(Duration::from_millis(300));
    }

    /// Heartbeat (keeps a client alive through long scenarios).
    pub(crate) fn heartbeat(&mut self) {
        self.send(CLIENT_HEARTBEAT, P::new());
    }
}

impl Md {
    /// Connects to an MD listening on `ip:port`.
    pub(crate) fn connect_to(ip: &str, port: u16) -> Md {
        Md::from_stream(TcpStream::connect((ip, port)).unwrap())
    }
}

/// Scenario checks gathered, so that one run reports every broken guarantee, not only the
/// first; `finish` fails the test listing them.
#[derive(Default)]
pub(crate) struct Checks {
    failed: Vec<String>,
    passed: Vec<String>,
}

impl Checks {
    pub(crate) fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if ok {
            eprintln!("  ok: {what}");
            self.passed.push(what);
        } else {
            eprintln!("  FAILED: {what}");
            self.failed.push(what);
        }
        ok
    }

    pub(crate) fn finish(self, c: &Cluster) {
        if self.failed.is_empty() {
            return;
        }
        panic!(
            "{} of {} checks failed:\n  - {}\n(events seen: {:?})\nroot log:\n{}\nss-host log:\n{}\nca-host log:\n{}",
            self.failed.len(),
            self.failed.len() + self.passed.len(),
            self.failed.join("\n  - "),
            c.drain_events(),
            c.root.log_tail(8),
            c.ss.log_tail(8),
            c.ca.log_tail(8),
        );
    }
}

/// Scenarios run one at a time: their timings are part of what they check, and a 2-core
/// machine running three clusters at once would make them lie.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

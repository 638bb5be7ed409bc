//! `otp-load toon2003-client` and `toon2003-ai`: a scripted 2003 Toontown client that follows
//! the real client's message sequence (login, districts, avatars, make and name a toon, choose
//! it, quiet zone, Toontown Central, move and chat, log out, log back in and find the toon),
//! and the small AI it needs (a district, a TimeManager in the quiet zone).

use otp_wire::msgtypes::{
    CONTROL_ADD_CHANNEL, CONTROL_ADD_POST_REMOVE, STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
    STATESERVER_OBJECT_SET_AI,
};
use otp_wire::toontown2003::*;
use otp_wire::Writer;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "\
    otp-load toon2003-ai     --md HOST:PORT --dc FILE [--district DOID] [--name NAME]
                             [--shard-channel CHANNEL] [--control CHANNEL] [--ai CHANNEL]
    otp-load toon2003-client --ca HOST:PORT --dc FILE --token TOKEN [--version V]
                             [--hash H] [--toon-name NAME] [--stay SECS]

toon2003-ai: creates a district (class DistributedObject) and a TimeManager in the quiet zone
(1), announces the district on the shard channel (default 4662), and runs until killed.
toon2003-client: plays the 2003 client's login-to-playground sequence against a Toontown2003
listener, prints each step, stays --stay seconds (default 2) in zone 2000 printing what it
sees, logs out, logs back in and checks its toon was saved. Exit code 0 when every step worked.
";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn frame_client(msgtype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut w = Writer::client(&mut v, msgtype);
    w.bytes(payload);
    w.finish_bounded();
    v
}

fn string(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u16).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).ok();
        Ok(Conn { s, buf: Vec::new() })
    }
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.s.write_all(bytes).map_err(|e| format!("send: {e}"))
    }
    /// The next datagram body, or None on timeout.
    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                let n = u16::from_le_bytes([self.buf[0], self.buf[1]]) as usize;
                if self.buf.len() >= 2 + n {
                    let body = self.buf[2..2 + n].to_vec();
                    self.buf.drain(..2 + n);
                    return Ok(Some(body));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.s.set_read_timeout(Some(deadline - now)).ok();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// Reads a u16-length string at `at`; returns it and the next position.
fn read_string(p: &[u8], at: usize) -> Option<(String, usize)> {
    let n = u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]) as usize;
    let s = p.get(at + 2..at + 2 + n)?;
    Some((String::from_utf8_lossy(s).into_owned(), at + 2 + n))
}

fn dc_file(args: &[String]) -> Result<otp_dc::DcFile, String> {
    let path = arg(args, "--dc").ok_or("--dc FILE is needed")?;
    crate::load_dc(std::path::Path::new(&path))
}

pub(crate) fn run_ai(args: &[String]) -> Result<(), String> {
    let md = arg(args, "--md").unwrap_or_else(|| "127.0.0.1:7199".into());
    let dc = dc_file(args)?;
    let num = |name: &str, default: u64| -> Result<u64, String> {
        arg(args, name).map_or(Ok(default), |v| {
            v.parse().map_err(|e| format!("{name}: {e}"))
        })
    };
    let district = num("--district", 200_000_000)? as u32;
    let shard_channel = num("--shard-channel", 4662)?;
    let control = num("--control", 100_100)?;
    let ai = num("--ai", 5_000)?;
    let name = arg(args, "--name").unwrap_or_else(|| "Toon Valley".into());
    let class = |n: &str| {
        dc.class_by_name(n)
            .map(|c| c.id())
            .ok_or(format!("the DC file has no class {n}"))
    };
    let mut c = Conn::connect(&md)?;
    let mut out = Vec::new();
    let mut w = Writer::control(&mut out, CONTROL_ADD_CHANNEL);
    w.u64(ai);
    w.finish().map_err(|e| e.to_string())?;
    let create = |out: &mut Vec<u8>, doid: u32, parent: u32, zone: u32, class: u16| {
        let mut w = Writer::internal1(out, control, ai, STATESERVER_CREATE_OBJECT_WITH_REQUIRED);
        w.u32(doid).u32(parent).u32(zone).u16(class);
        w.finish_bounded();
        let mut w = Writer::internal1(out, doid as u64, ai, STATESERVER_OBJECT_SET_AI);
        w.u64(ai);
        w.finish_bounded();
    };
    create(&mut out, district, 0, 0, class("DistributedObject")?);
    create(&mut out, district + 1, district, 1, class("TimeManager")?);
    // The district's end, when this AI goes.
    let mut down = Vec::new();
    let mut w = Writer::internal1(&mut down, shard_channel, ai, CLIENTAGENT_SHARD_DOWN);
    w.u32(district);
    w.finish_bounded();
    let mut w = Writer::control(&mut out, CONTROL_ADD_POST_REMOVE);
    w.u64(ai).blob(&down[2..]);
    w.finish().map_err(|e| e.to_string())?;
    c.send(&out)?;
    println!("toon2003-ai: district {district} '{name}' with a TimeManager in zone 1; announcing on {shard_channel}");
    loop {
        let mut up = Vec::new();
        let mut w = Writer::internal1(&mut up, shard_channel, ai, CLIENTAGENT_SHARD_UP);
        w.u32(district).string(&name).u32(0);
        w.finish_bounded();
        c.send(&up)?;
        // Drain what the cluster sends the AI, re-announcing every 10 s.
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            c.recv(Duration::from_millis(500))?;
        }
    }
}

#[allow(clippy::too_many_lines)] // TODO: split by what it does (ARCHITECTURE.md, Lints)
pub(crate) fn run_client(args: &[String]) -> Result<(), String> {
    let ca = arg(args, "--ca").unwrap_or_else(|| "127.0.0.1:7198".into());
    let dc = dc_file(args)?;
    let token = arg(args, "--token").ok_or("--token TOKEN is needed")?;
    let version = arg(args, "--version").unwrap_or_else(|| "sv1.0.6.9".into());
    let hash: u32 = arg(args, "--hash").map_or(Ok(3_005_460_305), |v| {
        v.parse().map_err(|e| format!("--hash: {e}"))
    })?;
    let toon_name = arg(args, "--toon-name").unwrap_or_else(|| "Flippy".into());
    let stay: u64 =
        arg(args, "--stay").map_or(Ok(2), |v| v.parse().map_err(|e| format!("--stay: {e}")))?;
    dc.class_by_name("DistributedToon")
        .ok_or("the DC file has no DistributedToon")?;
    // The 2003 client's own numbers, read from the DC text by the test kit's reader (not by
    // otp-dc, which numbers the server's side).
    let path = arg(args, "--dc").ok_or("--dc FILE is needed")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let numbers = otp_testkit::dc2003::client_numbers_2003(&text);
    let field = |n: &str| {
        numbers
            .get(&("DistributedToon".to_string(), n.to_string()))
            .copied()
    };
    let wait = Duration::from_secs(20);

    let (mut c, avatars) = login(&ca, &token, &version, hash, wait)?;
    let doid = match avatars.first() {
        Some((d, name)) => {
            println!("  choosing {name} ({d})");
            *d
        }
        None => {
            // Make a toon: DNA net string, slot 0, then a typed name.
            let dna = "t\x00\x01\x00\x01\x00\x01\x00\x01\x03\x03\x00\x03\x03\x03";
            let mut p = 0u16.to_le_bytes().to_vec();
            string(&mut p, dna);
            p.push(0);
            c.send(&frame_client(CLIENT_CREATE_AVATAR, &p))?;
            let r = expect(&mut c, CLIENT_CREATE_AVATAR_RESP, wait)?;
            if r.get(4) != Some(&0) {
                return Err(format!("CREATE_AVATAR refused: {r:?}"));
            }
            let d = u32::from_le_bytes(r[5..9].try_into().unwrap());
            println!("  created toon {d}");
            let mut p = d.to_le_bytes().to_vec();
            string(&mut p, &toon_name);
            c.send(&frame_client(CLIENT_SET_WISHNAME, &p))?;
            let r = expect(&mut c, CLIENT_SET_WISHNAME_RESP, wait)?;
            let approved = read_string(&r, 8)
                .and_then(|(_, at)| read_string(&r, at))
                .map(|x| x.0);
            println!("  named it: approved {approved:?}");
            d
        }
    };
    c.send(&frame_client(CLIENT_SET_AVATAR, &doid.to_le_bytes()))?;
    let details = expect(&mut c, CLIENT_GET_AVATAR_DETAILS_RESP, wait)?;
    println!(
        "  SET_AVATAR: details of {} bytes, name {:?}",
        details.len(),
        read_string(&details, 7).map(|x| x.0)
    );
    c.send(&frame_client(CLIENT_GET_FRIEND_LIST, &[]))?;
    c.send(&frame_client(
        CLIENT_SET_SHARD,
        &200_000_000u32.to_le_bytes(),
    ))?;
    expect(&mut c, CLIENT_GET_STATE_RESP, wait)?;
    for zone in [1u16, 1, 2000] {
        c.send(&frame_client(CLIENT_SET_ZONE, &zone.to_le_bytes()))?;
        let objects = zone_answer(&mut c, zone, wait)?;
        println!("  SET_ZONE {zone}: {} objects: {objects:?}", objects.len());
    }
    println!("  standing in Toontown Central");
    // Move and chat, as the client streams its own ownsend updates.
    if let Some(x) = field("setX") {
        let mut p = doid.to_le_bytes().to_vec();
        p.extend_from_slice(&x.to_le_bytes());
        p.extend_from_slice(&100i16.to_le_bytes());
        c.send(&frame_client(CLIENT_OBJECT_UPDATE_FIELD, &p))?;
    }
    let until = Instant::now() + Duration::from_secs(stay);
    while Instant::now() < until {
        if let Some(b) = c.recv(Duration::from_millis(200))? {
            let t = u16::from_le_bytes([b[0], b[1]]);
            match t {
                CLIENT_OBJECT_UPDATE_FIELD => println!(
                    "  update: object {} field {}",
                    u32::from_le_bytes(b[2..6].try_into().unwrap()),
                    u16::from_le_bytes([b[6], b[7]])
                ),
                CLIENT_CREATE_OBJECT_REQUIRED | CLIENT_CREATE_OBJECT_REQUIRED_OTHER => println!(
                    "  appeared: class {} object {}",
                    u16::from_le_bytes([b[2], b[3]]),
                    u32::from_le_bytes(b[4..8].try_into().unwrap())
                ),
                CLIENT_OBJECT_DISABLE_RESP | CLIENT_OBJECT_DELETE_RESP => println!(
                    "  left: object {}",
                    u32::from_le_bytes(b[2..6].try_into().unwrap())
                ),
                CLIENT_GO_GET_LOST => return Err(format!("kicked: {b:?}")),
                _ => {}
            }
        }
    }
    c.send(&frame_client(CLIENT_SET_AVATAR, &0u32.to_le_bytes()))?;
    c.send(&frame_client(CLIENT_DISCONNECT_2003, &[]))?;
    drop(c);
    println!("  logged out; logging back in");
    let (_c, avatars) = login(&ca, &token, &version, hash, wait)?;
    if !avatars.iter().any(|(d, _)| *d == doid) {
        return Err(format!("toon {doid} was not saved: {avatars:?}"));
    }
    println!("toon2003-client: every step worked; toon {doid} is saved");
    Ok(())
}

/// LOGIN_2, the district list, the avatar list: returns the connection and (doid, name) pairs.
fn login(
    ca: &str,
    token: &str,
    version: &str,
    hash: u32,
    wait: Duration,
) -> Result<(Conn, Vec<(u32, String)>), String> {
    let mut c = Conn::connect(ca)?;
    c.send(&frame_client(CLIENT_HEARTBEAT_2003, &[]))?;
    let mut p = Vec::new();
    string(&mut p, token);
    string(&mut p, version);
    p.extend_from_slice(&hash.to_le_bytes());
    p.extend_from_slice(&2i32.to_le_bytes());
    c.send(&frame_client(CLIENT_LOGIN_2, &p))?;
    let r = expect(&mut c, CLIENT_LOGIN_2_RESP, wait)?;
    if r.get(2) != Some(&0) {
        return Err(format!("login refused: {:?}", read_string(&r, 3)));
    }
    let user = read_string(&r, 3)
        .and_then(|(_, at)| read_string(&r, at))
        .map(|x| x.0);
    println!("  logged in as {user:?}");
    c.send(&frame_client(CLIENT_GET_SHARD_LIST, &[]))?;
    let r = expect(&mut c, CLIENT_GET_SHARD_LIST_RESP, wait)?;
    let n = u16::from_le_bytes([r[2], r[3]]);
    if n == 0 {
        return Err("no district is up (is the AI running?)".into());
    }
    println!(
        "  {n} district(s), first {:?}",
        read_string(&r, 8).map(|x| x.0)
    );
    c.send(&frame_client(CLIENT_GET_AVATARS, &[]))?;
    let r = expect(&mut c, CLIENT_GET_AVATARS_RESP, wait)?;
    let count = u16::from_le_bytes([r[3], r[4]]);
    let mut at = 5;
    let mut avatars = Vec::new();
    for _ in 0..count {
        let doid = u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
        let (name, mut next) = read_string(&r, at + 4).ok_or("bad avatar list")?;
        for _ in 0..4 {
            next = read_string(&r, next).ok_or("bad avatar list")?.1;
        }
        at = next + 2;
        avatars.push((doid, name));
    }
    println!("  avatars: {avatars:?}");
    Ok((c, avatars))
}

/// The next message of type `t` (its whole body, msgtype included); a GO_GET_LOST is an error.
fn expect(c: &mut Conn, t: u16, wait: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let Some(b) = c.recv(deadline - Instant::now())? else {
            break;
        };
        let got = u16::from_le_bytes([b[0], b[1]]);
        if got == t {
            return Ok(b);
        }
        if got == CLIENT_GO_GET_LOST {
            return Err(format!(
                "GO_GET_LOST {:?} while waiting for {t}",
                b.get(2..4).map(|c| u16::from_le_bytes([c[0], c[1]]))
            ));
        }
    }
    Err(format!("no message {t} within {wait:?}"))
}

/// GET_STATE_RESP(zone), creates, DONE_SET_ZONE_RESP(zone): the objects created.
fn zone_answer(c: &mut Conn, zone: u16, wait: Duration) -> Result<Vec<(u16, u32)>, String> {
    expect(c, CLIENT_GET_STATE_RESP, wait)?;
    let mut objects = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let Some(b) = c.recv(deadline - Instant::now())? else {
            break;
        };
        match u16::from_le_bytes([b[0], b[1]]) {
            CLIENT_CREATE_OBJECT_REQUIRED | CLIENT_CREATE_OBJECT_REQUIRED_OTHER => objects.push((
                u16::from_le_bytes([b[2], b[3]]),
                u32::from_le_bytes(b[4..8].try_into().unwrap()),
            )),
            CLIENT_DONE_SET_ZONE_RESP if u16::from_le_bytes([b[2], b[3]]) == zone => {
                return Ok(objects)
            }
            CLIENT_GO_GET_LOST => return Err(format!("kicked during SET_ZONE {zone}")),
            _ => {}
        }
    }
    Err(format!("SET_ZONE {zone} was not answered within {wait:?}"))
}

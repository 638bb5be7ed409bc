//! The operator's moderation through the internal protocol (issue 19), against the real
//! binary: bans (DBSERVER_ACCOUNT_SET_BAN / GET_BAN) kept by both stores, across a restart and
//! `otpd db export`/`import` into PostgreSQL, and refused at a 2003 client's login; the name
//! review queue (DBSERVER_NAMES_GET_PENDING / NAME_REVIEW) as a scripted 2003 client sees it.
//! The 2003 client's expectations come from its decompiled code (each cites the function).

mod common;

use common::*;
use otp_wire::msgtypes::*;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DB: u64 = 4003;
const OPERATOR: u64 = 9_000_001;
const VERSION: &str = "sv1.0.6.9";
const HASH: u32 = 3_005_460_305;
const WAIT: Duration = Duration::from_secs(10);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sqlite(dir: &Path) -> String {
    format!("Sqlite(directory: \"{}\")", dir.display())
}

/// A cluster: StateServer, DBSS, Database on `backend`, one 2003 listener (open tokens,
/// passwords made on login, names reviewed by hand), one Astron listener that checks bans
/// (`ban_database`), and an operator participant (also the Astron game's UberDOG).
struct Cluster {
    _o: Otpd,
    port: u16,
    probe: Md,
    operator: Md,
    astron_port: u16,
    /// The channel the Astron listener gives its next client (its range, in order).
    next_astron: u64,
}

const ASTRON_CHANNELS: u64 = 2_000_000;
const ASTRON_HASH: u32 = 0x0BAD_CAFE;

fn start(dir: &Path, backend: &str) -> Cluster {
    start_with(dir, backend, "")
}

fn start_with(dir: &Path, backend: &str, top_extra: &str) -> Cluster {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dc = root.join("tests/dc/toon.dc").canonicalize().unwrap();
    let port = free_port();
    let astron_port = free_port();
    let top = format!(
        "dc_files: [\"{}\"], roles: [\
         StateServer(control: 100100), \
         Dbss(database: {DB}, ranges: [(min: 100000000, max: 399999999)]), \
         Database(control: {DB}, generate: (min: 100000000, max: 399999999), backend: {backend}), \
         ClientAgent((bind: \"127.0.0.1:{port}\", version: \"{VERSION}\", manual_dc_hash: Some({HASH}), \
         channels: (min: 1000000, max: 1009999), dialect: Toontown2003, \
         toontown: (tokens: Open, passwords: CreateOnLogin, auto_approve_names: false))),          ClientAgent((bind: \"127.0.0.1:{astron_port}\", version: \"v1\", manual_dc_hash: Some({ASTRON_HASH}),          channels: (min: {ASTRON_CHANNELS}, max: {}), ban_database: Some({DB}))), ], {top_extra}",
        dc.display(),
        ASTRON_CHANNELS + 9999,
    );
    let _ = dir;
    let o = Otpd::start_full(free_port(), "", &top);
    // (Not the Astron listener's: a connection would use up its first channel. Both
    // listeners are open once one is.)
    wait_for_port(port);
    let mut probe = o.connect();
    let operator = listener(o.port, &mut probe, &[OPERATOR]);
    Cluster {
        _o: o,
        port,
        probe,
        operator,
        astron_port,
        next_astron: ASTRON_CHANNELS,
    }
}

impl Cluster {
    /// An Astron client connects and says hello; the game's UberDOG (the operator participant)
    /// logs it in as OTP does, setting its channel to `account << 32 | avatar`
    /// (CLIENTAGENT_SET_CLIENT_ID) and its state to ESTABLISHED, then sends it a datagram
    /// (CLIENTAGENT_SEND_DATAGRAM). The client answers that with CLIENT_DISCONNECT: Ok when
    /// the connection then closes without a word (the client's datagram was served), the
    /// CLIENT_EJECT's (code, reason) when it is ejected instead (the datagram held while the
    /// ban was asked for, then dropped).
    fn astron_login(&mut self, account: u32, avatar: u32) -> Result<(), (u16, String)> {
        let (mut m, f) = self.astron_connect(account, avatar);
        // The Database's answer may come before the UberDOG's datagram: the eject then
        // comes first.
        let f = if u16::from_le_bytes([f[2], f[3]]) == CLIENT_EJECT {
            Some(f)
        } else {
            assert_eq!(&f[2..], b"\x01\x02hi");
            m.send(&msg(CLIENT_DISCONNECT, P::new()));
            m.recv_within(WAIT)
        };
        match f {
            None => Ok(()),
            Some(f) => Err(astron_eject(&mut m, &f)),
        }
    }

    /// The start of `astron_login`: the client's connection and the first datagram it gets
    /// after the UberDOG's messages.
    fn astron_connect(&mut self, account: u32, avatar: u32) -> (Md, Vec<u8>) {
        let channel = self.next_astron;
        self.next_astron += 1;
        let mut m = Md::connect(self.astron_port);
        m.send(&msg(CLIENT_HELLO, P::new().u32(ASTRON_HASH).string("v1")));
        let f = m.recv_within(WAIT).expect("HELLO_RESP");
        assert_eq!(u16::from_le_bytes([f[2], f[3]]), CLIENT_HELLO_RESP);
        let id = (u64::from(account) << 32) | u64::from(avatar);
        for (t, p) in [
            (CLIENTAGENT_SET_CLIENT_ID, P::new().u64(id)),
            (CLIENTAGENT_SET_STATE, P::new().u16(2)),
            (CLIENTAGENT_SEND_DATAGRAM, P::new().string("\u{1}\u{2}hi")),
        ] {
            self.probe.send(&dg(&[channel], OPERATOR, t, &p.0));
        }
        let f = m
            .recv_within(WAIT)
            .expect("the UberDOG's datagram or an eject");
        (m, f)
    }

    /// Sends a request to the Database and returns the answer's payload, checking its type.
    fn ask(&mut self, msgtype: u16, p: P) -> Vec<u8> {
        self.probe.send(&dg(&[DB], OPERATOR, msgtype, &p.0));
        let f = self.operator.recv();
        let n = f[2] as usize;
        let at = 3 + 8 * n;
        let t = u16::from_le_bytes([f[at + 8], f[at + 9]]);
        assert_eq!(t, msgtype + 1, "{f:?}");
        f[at + 10..].to_vec()
    }
    fn set_ban(&mut self, ctx: u32, account: &str, until: u64, reason: &str) -> u8 {
        let got = self.ask(
            DBSERVER_ACCOUNT_SET_BAN,
            P::new().u32(ctx).string(account).u64(until).string(reason),
        );
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(&got[..4], &ctx.to_le_bytes());
        got[4]
    }
    /// (status, until, reason)
    fn get_ban(&mut self, ctx: u32, account: &str) -> (u8, u64, String) {
        let got = self.ask(DBSERVER_ACCOUNT_GET_BAN, P::new().u32(ctx).string(account));
        assert_eq!(&got[..4], &ctx.to_le_bytes());
        let until = u64::from_le_bytes(got[5..13].try_into().unwrap());
        let (reason, end) = string_at(&got, 13);
        assert_eq!(end, got.len());
        (got[4], until, reason)
    }
    /// (doid, wish name, account, since)
    fn pending(&mut self, ctx: u32, max: u16) -> Vec<(u32, String, String, u64)> {
        let got = self.ask(DBSERVER_NAMES_GET_PENDING, P::new().u32(ctx).u16(max));
        assert_eq!(&got[..4], &ctx.to_le_bytes());
        let n = u16::from_le_bytes([got[4], got[5]]) as usize;
        let mut at = 6;
        let mut out = Vec::new();
        for _ in 0..n {
            let doid = u32::from_le_bytes(got[at..at + 4].try_into().unwrap());
            let (wish, a) = string_at(&got, at + 4);
            let (account, a) = string_at(&got, a);
            let since = u64::from_le_bytes(got[a..a + 8].try_into().unwrap());
            at = a + 8;
            out.push((doid, wish, account, since));
        }
        assert_eq!(at, got.len());
        out
    }
    fn review(&mut self, ctx: u32, doid: u32, verdict: u8) -> u8 {
        let got = self.ask(
            DBSERVER_NAME_REVIEW,
            P::new().u32(ctx).u32(doid).u8(verdict),
        );
        assert_eq!(got.len(), 5);
        got[4]
    }
}

/// A CLIENT_EJECT frame's (code, reason), after which the connection closes.
fn astron_eject(m: &mut Md, f: &[u8]) -> (u16, String) {
    assert_eq!(u16::from_le_bytes([f[2], f[3]]), CLIENT_EJECT, "{f:?}");
    assert!(m.closed_within(WAIT), "closed after CLIENT_EJECT");
    (u16::from_le_bytes([f[4], f[5]]), string_at(f, 6).0)
}

fn string_at(p: &[u8], at: usize) -> (String, usize) {
    let n = u16::from_le_bytes([p[at], p[at + 1]]) as usize;
    (
        String::from_utf8_lossy(&p[at + 2..at + 2 + n]).into_owned(),
        at + 2 + n,
    )
}

/// A scripted 2003 client.
struct Toon(Md);

fn msg(t: u16, p: P) -> Vec<u8> {
    let mut body = t.to_le_bytes().to_vec();
    body.extend_from_slice(&p.0);
    frame(&body)
}

/// One entry of GET_AVATARS_RESP as ToontownClientRepository.handleGetAvatarsRespMsg reads it:
/// uint32 avNum, four strings (PotentialAvatar: name, wantName, approvedName, rejectedName),
/// string dna, uint8 position, uint8 aname.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    id: u32,
    name: String,
    want: String,
    approved: String,
    rejected: String,
    position: u8,
    aname: u8,
}

impl Toon {
    fn connect(port: u16) -> Toon {
        Toon(Md::connect(port))
    }
    fn send(&mut self, t: u16, p: P) {
        self.0.send(&msg(t, p));
    }
    fn recv(&mut self) -> Option<(u16, Vec<u8>)> {
        let f = self.0.recv_within(WAIT)?;
        Some((u16::from_le_bytes([f[2], f[3]]), f[4..].to_vec()))
    }
    /// The next message of type `t`, skipping heartbeats and the like; never an eject.
    fn expect(&mut self, t: u16) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no message {t}");
            let (got, p) = self.recv().expect("a message for the 2003 client");
            if got == t {
                return p;
            }
            assert_ne!(got, 4, "kicked while waiting for {t}: {p:?}");
        }
    }
    /// LOGIN_2 as LoginWebPlayTokenAccount sends it; LOGIN_2_RESP's return code
    /// (LoginScreen.handleLoginResponseMsg2: 0 = success).
    fn token_login(&mut self, token: &str) -> Result<u8, (u16, String)> {
        self.send(52, P::new());
        self.send(16, P::new().string(token).string(VERSION).u32(HASH).u32(2));
        self.login_answer(17)
    }
    /// CLIENT_LOGIN (`account-old-auth #t`); LOGIN_RESP's return code
    /// (LoginScreen.handleLoginResponseMsg: 0 = success).
    fn password_login(&mut self, name: &str, password: &str) -> Result<u8, (u16, String)> {
        self.send(52, P::new());
        self.send(
            1,
            P::new()
                .string(name)
                .u32(0x7f00_0001)
                .u16(5150)
                .string(VERSION)
                .u32(HASH)
                .string(password)
                .u8(1),
        );
        self.login_answer(2)
    }
    /// The login's answer `t`, or a GO_GET_LOST (code, text) followed by the connection's
    /// close: ClientRepository.handleGoGetLost records the code (it is reached from the
    /// login screen's handler through handleUnexpectedMsgType), and when the connection drops
    /// (readerPollOnce -> loginFSM 'noConnection') ToontownClientRepository.enterNoConnection
    /// shows Localizer.TCRBootedReasons[code].
    fn login_answer(&mut self, t: u16) -> Result<u8, (u16, String)> {
        loop {
            let (got, p) = self.recv().expect("an answer to the login");
            if got == t {
                return Ok(p[0]);
            }
            if got == 4 {
                let code = u16::from_le_bytes([p[0], p[1]]);
                let (text, _) = string_at(&p, 2);
                assert!(self.0.closed_within(WAIT), "closed after GO_GET_LOST");
                return Err((code, text));
            }
        }
    }
    /// GET_AVATARS -> GET_AVATARS_RESP, read as handleGetAvatarsRespMsg reads it.
    fn avatars(&mut self) -> Vec<Listed> {
        self.send(3, P::new());
        let p = self.expect(5);
        assert_eq!(p[0], 0, "returnCode 0, else the client calls notify.error");
        let n = u16::from_le_bytes([p[1], p[2]]);
        let mut at = 3;
        let mut out = Vec::new();
        for _ in 0..n {
            let id = u32::from_le_bytes(p[at..at + 4].try_into().unwrap());
            let (name, a) = string_at(&p, at + 4);
            let (want, a) = string_at(&p, a);
            let (approved, a) = string_at(&p, a);
            let (rejected, a) = string_at(&p, a);
            let (_dna, a) = string_at(&p, a);
            out.push(Listed {
                id,
                name,
                want,
                approved,
                rejected,
                position: p[a],
                aname: p[a + 1],
            });
            at = a + 2;
        }
        assert_eq!(at, p.len());
        out
    }
    /// CREATE_AVATAR (AvatarChooser -> MakeAToon) in `slot`; the new avatar's id.
    fn create(&mut self, slot: u8, color: u8) -> u32 {
        let c = color as char;
        let dna = format!("t\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00{c}\x00{c}{c}");
        self.send(6, P::new().u16(0).string(&dna).u8(slot));
        let p = self.expect(7);
        assert_eq!(&p[..3], &[0, 0, 0], "CREATE_AVATAR_RESP ok");
        u32::from_le_bytes(p[3..7].try_into().unwrap())
    }
}

#[test]
fn sqlite_bans_refuse_logins_of_both_dialects_until_they_end_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    bans_refuse_logins(dir.path(), &sqlite(dir.path()));
    // The bans survive a restart of otpd on the same store.
    let mut c = start(dir.path(), &sqlite(dir.path()));
    let (status, until, reason) = c.get_ban(50, "forever");
    assert_eq!((status, until, reason.as_str()), (0, u64::MAX, "for good"));
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("forever").unwrap_err().0, 151);
    assert_eq!(c.astron_login(99, 1).map_err(|e| e.0), Err(352));
    assert_eq!(c.astron_login(98, 1), Ok(()));
}

#[test]
fn postgres_bans_refuse_logins_of_both_dialects_until_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    bans_refuse_logins(dir.path(), &pg.backend());
}

/// The Astron half: an account is `#ID` (its client channel's high 32 bits, set by the
/// game's UberDOG); a ban of one without a record makes a record holding the ban; a banned
/// client is ejected with 352 once its channel is set, until the ban ends or is lifted.
fn astron_bans(c: &mut Cluster) {
    assert_eq!(c.astron_login(77, 1), Ok(()));
    assert_eq!(c.get_ban(20, "#77"), (1, 0, String::new()), "no record yet");
    // Not Astron account names (and no such accounts): refused as any unknown name.
    for (ctx, name) in [(21, "#0"), (22, "#077"), (23, "#77x"), (24, "#4294967296")] {
        assert_eq!(c.set_ban(ctx, name, u64::MAX, "x"), 1, "{name}");
    }
    // Lifting the ban of an account that has none changes nothing.
    assert_eq!(c.set_ban(25, "#77", 0, ""), 0);
    assert_eq!(c.get_ban(26, "#77"), (1, 0, String::new()));
    let until = unix_now() + 2;
    assert_eq!(c.set_ban(27, "#77", until, "botting"), 0);
    assert_eq!(c.get_ban(28, "#77"), (0, until, "botting".to_string()));
    let (code, text) = c.astron_login(77, 5).unwrap_err();
    assert_eq!(code, 352);
    assert!(text.contains("botting"), "{text}");
    // Another account of the same listener, and the same account's avatar without an
    // account in its channel (0 << 32 | avatar), are not concerned.
    assert_eq!(c.astron_login(78, 5), Ok(()));
    assert_eq!(c.astron_login(0, 5), Ok(()));
    // `#ID` is not a name a 2003 client may take (it would share the Astron account's ban).
    assert_ne!(Toon::connect(c.port).token_login("#77"), Ok(0));
    // The ban's end passes: let in.
    while unix_now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.astron_login(77, 5), Ok(()));
    // Banned for good, then lifted: let in.
    assert_eq!(c.set_ban(29, "#77", u64::MAX, "again"), 0);
    assert_eq!(c.astron_login(77, 6).map_err(|e| e.0), Err(352));
    assert_eq!(c.set_ban(30, "#77", 0, ""), 0);
    assert_eq!(c.get_ban(31, "#77"), (0, 0, String::new()));
    assert_eq!(c.astron_login(77, 6), Ok(()));
    // For the restart.
    assert_eq!(c.set_ban(32, "#99", u64::MAX, "for good"), 0);
}

#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn bans_refuse_logins(dir: &Path, backend: &str) {
    let mut c = start(dir, backend);
    // Accounts: one by play token, one by password.
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("flippy"), Ok(0));
    drop(t);
    let mut t = Toon::connect(c.port);
    assert_eq!(t.password_login("pat", "secret-words"), Ok(0));
    drop(t);
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("forever"), Ok(0));
    drop(t);
    // No such account; a reason over the limit; a bad verdict is no ban.
    assert_eq!(c.set_ban(1, "nobody", unix_now() + 60, "x"), 1);
    assert_eq!(c.get_ban(2, "nobody"), (1, 0, String::new()));
    assert_eq!(c.set_ban(3, "flippy", unix_now() + 60, &"x".repeat(513)), 2);
    assert_eq!(c.get_ban(4, "flippy"), (0, 0, String::new()));
    // A ban ending in 2 seconds: both logins refused with GO_GET_LOST 151 (otpd's code for a
    // closed account: the client's TCRBootedReasons[151], "logged out by an administrator"),
    // no LOGIN_RESP first (a nonzero one makes the client quit silently:
    // LoginScreen.handleLoginResponseMsg(2) -> 'reject' -> ToontownClientRepository.enterReject
    // -> sys.exit()).
    let until = unix_now() + 2;
    assert_eq!(c.set_ban(5, "flippy", until, "spamming"), 0);
    assert_eq!(c.set_ban(6, "pat", until, "spamming"), 0);
    assert_eq!(c.set_ban(7, "forever", u64::MAX, "for good"), 0);
    assert_eq!(c.get_ban(8, "flippy"), (0, until, "spamming".to_string()));
    let mut t = Toon::connect(c.port);
    let (code, text) = t.token_login("flippy").unwrap_err();
    assert_eq!(code, 151);
    assert!(text.contains("spamming"), "{text}");
    let mut t = Toon::connect(c.port);
    assert_eq!(t.password_login("pat", "secret-words").unwrap_err().0, 151);
    // A wrong password is answered as one: the ban is not told to a guesser.
    let mut t = Toon::connect(c.port);
    assert_eq!(t.password_login("pat", "wrong-words"), Ok(12));
    drop(t);
    // The time passes: both log in again.
    while unix_now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("flippy"), Ok(0));
    // A session's own copy of the record, written back, does not lift a ban set meanwhile.
    let d = t.create(0, 3);
    assert_eq!(c.set_ban(9, "flippy", u64::MAX, "again"), 0);
    t.send(70, P::new().u32(d).string("Flappy"));
    t.expect(71);
    assert_eq!(c.get_ban(10, "flippy"), (0, u64::MAX, "again".to_string()));
    drop(t);
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("flippy").unwrap_err().0, 151);
    // Lifted (until 0): logs in again.
    assert_eq!(c.set_ban(11, "flippy", 0, "ignored"), 0);
    assert_eq!(c.get_ban(12, "flippy"), (0, 0, String::new()));
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("flippy"), Ok(0));
    let mut t = Toon::connect(c.port);
    assert_eq!(t.password_login("pat", "secret-words"), Ok(0));
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("forever").unwrap_err().0, 151);
    drop(t);
    astron_bans(&mut c);
}

/// A ban and a pending name go across `otpd db export` and `import` into PostgreSQL: the ban
/// still refuses the login there (a 2003 account's, and an Astron account's), and the queue
/// is rebuilt from the imported accounts.
#[test]
fn bans_and_pending_names_survive_export_and_import_into_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    let from = sqlite(dir.path());
    let wish_doid;
    {
        let mut c = start(dir.path(), &from);
        let mut t = Toon::connect(c.port);
        assert_eq!(t.token_login("ann"), Ok(0));
        t.avatars();
        wish_doid = t.create(1, 4);
        t.send(70, P::new().u32(wish_doid).string("Sunny Day"));
        t.expect(71);
        drop(t);
        assert_eq!(c.set_ban(1, "ann", u64::MAX, "cheating"), 0);
        // An Astron account's ban (a record holding only the ban).
        assert_eq!(c.set_ban(2, "#4242", u64::MAX, "duping"), 0);
        assert_eq!(c.astron_login(4242, 1).map_err(|e| e.0), Err(352));
    }
    let conf = |backend: &str, file: &str| {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let dc = root.join("tests/dc/toon.dc").canonicalize().unwrap();
        let p = dir.path().join(file);
        std::fs::write(
            &p,
            format!(
                "(dc_files: [\"{}\"], roles: [Database(control: {DB}, generate: (min: 100000000, \
                 max: 399999999), backend: {backend})])",
                dc.display(),
            ),
        )
        .unwrap();
        p
    };
    let tool = |args: &[&str], conf: &Path| {
        let out = std::process::Command::new(otpd_bin())
            .arg("db")
            .args(args)
            .arg("--cluster")
            .arg(conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "otpd db {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dump = dir.path().join("dump.jsonl");
    tool(
        &["export", dump.to_str().unwrap()],
        &conf(&from, "from.ron"),
    );
    let lines = std::fs::read_to_string(&dump).unwrap();
    assert!(
        lines.contains("\"banned_until\":18446744073709551615")
            && lines.contains("\"ban_reason\":\"cheating\"")
            && lines.contains("\"wish_name\":\"Sunny Day\"")
            && lines.contains("\"account\":\"#4242\""),
        "{lines}"
    );
    tool(
        &["import", dump.to_str().unwrap()],
        &conf(&pg.backend(), "to.ron"),
    );
    // PostgreSQL frees the import's advisory lock when its backend notices the client gone,
    // a moment after `otpd db import` exits.
    std::thread::sleep(Duration::from_millis(500));
    let mut c = start(dir.path(), &pg.backend());
    assert_eq!(c.get_ban(2, "ann"), (0, u64::MAX, "cheating".to_string()));
    let queue = c.pending(3, 10);
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(
        (queue[0].0, queue[0].1.as_str(), queue[0].2.as_str()),
        (wish_doid, "Sunny Day", "ann")
    );
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("ann").unwrap_err().0, 151);
    assert_eq!(c.get_ban(4, "#4242"), (0, u64::MAX, "duping".to_string()));
    let (code, text) = c.astron_login(4242, 1).unwrap_err();
    assert_eq!(code, 352);
    assert!(text.contains("duping"), "{text}");
    assert_eq!(c.astron_login(4243, 1), Ok(()));
}

#[test]
fn sqlite_names_are_reviewed_as_the_2003_client_expects() {
    let dir = tempfile::tempdir().unwrap();
    names_are_reviewed(dir.path(), &sqlite(dir.path()));
}

#[test]
fn postgres_names_are_reviewed_as_the_2003_client_expects() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    names_are_reviewed(dir.path(), &pg.backend());
}

#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn names_are_reviewed(dir: &Path, backend: &str) {
    let mut c = start(dir, backend);
    assert!(c.pending(1, 100).is_empty());
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("flippy"), Ok(0));
    assert!(t.avatars().is_empty());
    let a = t.create(0, 3);
    let b = t.create(1, 5);
    let default_name = t.avatars().iter().find(|l| l.id == b).unwrap().name.clone();
    // NameShop types a wish name (SET_WISHNAME, avId, name); with review by hand it is pending:
    // SET_WISHNAME_RESP (NameShop.handleSetWishnameResp... the layout of the notes: uint32
    // avId, uint16 returnCode, string pending, string approved, string rejected).
    let before = unix_now();
    for (d, name) in [(a, "Sunny Day"), (b, "Bad Word")] {
        t.send(70, P::new().u32(d).string(name));
        let p = t.expect(71);
        assert_eq!(&p[..6], &P::new().u32(d).u16(0).0[..]);
        assert_eq!(string_at(&p, 6).0, name, "pending");
    }
    // The list shows both as wanted (AvatarChoice: wantName set -> "name pending" status).
    let list = t.avatars();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (
            list[0].want.as_str(),
            list[0].approved.as_str(),
            list[0].aname
        ),
        ("Sunny Day", "", 0)
    );
    // The operator's queue: both, with their account and when they were typed.
    let queue = c.pending(2, 100);
    assert_eq!(queue.len(), 2, "{queue:?}");
    for (doid, wish) in [(a, "Sunny Day"), (b, "Bad Word")] {
        let q = queue.iter().find(|q| q.0 == doid).expect("listed");
        assert_eq!((q.1.as_str(), q.2.as_str()), (wish, "flippy"));
        assert!(q.3 >= before && q.3 <= unix_now(), "{q:?}");
    }
    assert_eq!(c.pending(3, 1).len(), 1, "max honoured");
    // Verdicts: unknown avatar, bad verdict byte, then approve one and reject the other.
    assert_eq!(c.review(4, 123, 1), 1);
    assert_eq!(c.review(5, a, 7), 2);
    assert_eq!(c.review(6, a, 1), 0);
    assert_eq!(c.review(7, b, 0), 0);
    assert_eq!(c.review(8, a, 1), 1, "no longer pending");
    assert!(c.pending(9, 100).is_empty());
    // The client's next list: approvedName / rejectedName set, wantName empty
    // (AvatarChoice: approvedName -> "name approved" and shown as the name; rejectedName ->
    // "name rejected"; the chooser's 'chose' then runs congratulations / betterlucknexttime in
    // ToontownClientRepository.__handleAvatarChooserDone).
    let list = t.avatars();
    let la = list.iter().find(|l| l.id == a).unwrap().clone();
    let lb = list.iter().find(|l| l.id == b).unwrap().clone();
    assert_eq!(
        (la.want.as_str(), la.approved.as_str(), la.rejected.as_str()),
        ("", "Sunny Day", "")
    );
    assert_eq!(
        (lb.want.as_str(), lb.approved.as_str(), lb.rejected.as_str()),
        ("", "", "Bad Word")
    );
    assert_eq!((la.position, lb.position), (0, 1));
    // __handleCongrats: SET_WISHNAME_CLEAR(avId, 1), then the toon is chosen; the approved
    // name is the toon's from now on.
    t.send(72, P::new().u32(a).u8(1));
    // __handleReject: SET_WISHNAME_CLEAR(avId, 0), then back to the avatar list.
    t.send(72, P::new().u32(b).u8(0));
    let list = t.avatars();
    let la = list.iter().find(|l| l.id == a).unwrap();
    let lb = list.iter().find(|l| l.id == b).unwrap();
    assert_eq!(la.name, "Sunny Day");
    assert_eq!(
        (
            la.want.as_str(),
            la.approved.as_str(),
            la.rejected.as_str(),
            la.aname
        ),
        ("", "", "", 0),
        "named for good"
    );
    // The rejected toon keeps its old name, its wish fields clear, and it may be named again
    // (aname 1: AvatarChoice shows "Name your toon").
    assert_eq!(lb.name, default_name);
    assert_eq!(
        (
            lb.want.as_str(),
            lb.approved.as_str(),
            lb.rejected.as_str(),
            lb.aname
        ),
        ("", "", "", 1)
    );
    assert!(c.pending(10, 100).is_empty());
}

/// A store an older otpd made (schema version 1: no `pending_names`) is migrated at start-up:
/// the names its accounts have pending are in the queue, with no time typed (0), and can be
/// reviewed; its accounts read as not banned.
#[test]
fn a_version_1_sqlite_store_is_migrated_with_its_pending_names() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("otpd.sqlite3")).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE objects (doid INTEGER PRIMARY KEY, dclass INTEGER NOT NULL,
                 class_name TEXT NOT NULL);
             CREATE TABLE fields (doid INTEGER NOT NULL REFERENCES objects(doid) ON DELETE CASCADE,
                 field INTEGER NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (doid, field)) WITHOUT ROWID;
             CREATE TABLE accounts (name TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
             INSERT INTO meta VALUES ('schema_version', 1);",
        )
        .unwrap();
        // A version 1 record: u8 1, u64 created, u8 slots, (u32 doid, string wish, u8 state).
        let record = P::new()
            .u8(1)
            .u64(1_600_000_000)
            .u8(2)
            .u32(100_000_005)
            .string("Old Name")
            .u8(1)
            .u32(0)
            .string("")
            .u8(0)
            .0;
        conn.execute(
            "INSERT INTO accounts (name, data) VALUES ('old', ?1)",
            [&record],
        )
        .unwrap();
    }
    let mut c = start(dir.path(), &sqlite(dir.path()));
    assert_eq!(
        c.pending(1, 100),
        vec![(100_000_005, "Old Name".to_string(), "old".to_string(), 0)]
    );
    assert_eq!(c.get_ban(2, "old"), (0, 0, String::new()));
    assert_eq!(c.review(3, 100_000_005, 1), 0);
    assert!(c.pending(4, 100).is_empty());
}

const ADMIN_TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";

/// An HTTP/1.0 request to the admin API with the token: (status, JSON body).
fn admin(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The operator's side through the admin API: the name queue shows a name a scripted 2003
/// client typed, approving it from the API shows it approved in the client's next avatar
/// list; a ban from the API kicks the account's connected client (GO_GET_LOST 151, the 2003
/// client's "logged out by an administrator") and refuses its logins until lifted; the same
/// for an Astron account (`#ID`).
#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn the_admin_api_reviews_names_and_bans_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, ADMIN_TOKEN).unwrap();
    let port = free_port();
    let mut c = start_with(
        dir.path(),
        &sqlite(dir.path()),
        &format!(
            "admin: Some((bind: \"127.0.0.1:{port}\", token_file: \"{}\")),",
            token.display()
        ),
    );
    wait_for_port(port);
    let mut t = Toon::connect(c.port);
    assert_eq!(t.token_login("pinky"), Ok(0));
    let a = t.create(0, 2);
    t.send(70, P::new().u32(a).string("Captain Pinky"));
    let p = t.expect(71);
    assert_eq!(string_at(&p, 6).0, "Captain Pinky", "pending");

    let (status, v) = admin(port, "GET", "/api/names", "");
    assert_eq!(status, 200, "{v}");
    let pending = v["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{v}");
    assert_eq!(pending[0]["avatar"], a);
    assert_eq!(pending[0]["wish_name"], "Captain Pinky");
    assert_eq!(pending[0]["account"], "pinky");
    let (status, v) = admin(
        port,
        "POST",
        "/api/names/review",
        &format!("{{\"avatar\": {a}, \"approve\": true}}"),
    );
    assert_eq!(status, 200, "{v}");
    let (status, _) = admin(
        port,
        "POST",
        "/api/names/review",
        &format!("{{\"avatar\": {a}, \"approve\": true}}"),
    );
    assert_eq!(status, 404, "no longer pending");
    // AvatarChoice: approvedName set -> "name approved" (handleGetAvatarsRespMsg's fields).
    let listed = t.avatars().into_iter().find(|l| l.id == a).unwrap();
    assert_eq!(
        (listed.want.as_str(), listed.approved.as_str()),
        ("", "Captain Pinky")
    );

    // A ban: the connected client is kicked, new logins refused, until it is lifted.
    let (status, v) = admin(
        port,
        "POST",
        "/api/ban",
        "{\"account\": \"pinky\", \"hours\": 1, \"reason\": \"Testing.\"}",
    );
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the banned account's client was not kicked"
        );
        let (got, p) = t.recv().expect("GO_GET_LOST");
        if got == 4 {
            assert_eq!(u16::from_le_bytes([p[0], p[1]]), 151);
            break;
        }
    }
    let (status, v) = admin(port, "GET", "/api/ban?account=pinky", "");
    assert_eq!(status, 200, "{v}");
    assert!(v["banned_until_unix"].as_u64().unwrap() > unix_now(), "{v}");
    assert_eq!(v["reason"], "Testing.");
    assert_eq!(
        Toon::connect(c.port).token_login("pinky").map_err(|e| e.0),
        Err(151)
    );
    let (status, _) = admin(
        port,
        "POST",
        "/api/ban",
        "{\"account\": \"pinky\", \"lift\": true}",
    );
    assert_eq!(status, 200);
    assert_eq!(Toon::connect(c.port).token_login("pinky"), Ok(0));
    let (status, _) = admin(port, "GET", "/api/ban?account=nobody", "");
    assert_eq!(status, 404);

    // An Astron client is listed with its account as `#ID` (its channel's high 32 bits);
    // a ban of `#ID` from the API kicks it (350) and ejects its next login (352) until lifted.
    let (mut m, f) = c.astron_connect(55, 7);
    assert_eq!(&f[2..], b"\x01\x02hi");
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = admin(port, "GET", "/api/clients", "");
        assert_eq!(status, 200, "{v}");
        let rows = v["clients"].as_array().unwrap();
        if let Some(row) = rows.iter().find(|r| r["account"] == "#55") {
            assert_eq!(row["avatar"], 7, "{row}");
            break;
        }
        assert!(Instant::now() < deadline, "no client of account #55: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, v) = admin(
        port,
        "POST",
        "/api/ban",
        "{\"account\": \"#55\", \"hours\": 1, \"reason\": \"Botting.\"}",
    );
    assert_eq!(status, 200, "{v}");
    let f = m.recv_within(WAIT).expect("CLIENT_EJECT");
    assert_eq!(astron_eject(&mut m, &f).0, 350);
    let (code, text) = c.astron_login(55, 7).unwrap_err();
    assert_eq!(code, 352);
    assert!(text.contains("Botting."), "{text}");
    let (status, _) = admin(
        port,
        "POST",
        "/api/ban",
        "{\"account\": \"#55\", \"lift\": true}",
    );
    assert_eq!(status, 200);
    assert_eq!(c.astron_login(55, 7), Ok(()));
}

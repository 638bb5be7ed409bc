//! The admin API against the real binary: the bearer token (401 and an audit event without
//! it), the status figures, `otpd admin` from the command line, the server's bounds, and the
//! configuration checks.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "7f3a9c1e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a";

struct Admin {
    _o: Otpd,
    logs: tempfile::TempDir,
    port: u16,
    token_file: std::path::PathBuf,
}

fn start() -> Admin {
    let logs = tempfile::tempdir().unwrap();
    let el = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port = free_port();
    let token_file = logs.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let o = Otpd::start_full(
        free_port(),
        "",
        &format!(
            "name: \"admin-test\", eventlogger: Some(\"127.0.0.1:{el}\"),
             admin: Some((bind: \"127.0.0.1:{port}\", token_file: \"{}\")),
             roles: [EventLogger(bind: \"127.0.0.1:{el}\", output: \"{}/events-%H%M%S.log\")],",
            token_file.display(),
            logs.path().display()
        ),
    );
    wait_for_port(port);
    Admin {
        _o: o,
        logs,
        port,
        token_file,
    }
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    out
}

fn wait_event(dir: &Path, kind: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = events(dir).into_iter().find(|e| e["type"] == kind) {
            return e;
        }
        assert!(Instant::now() < deadline, "no '{kind}' event");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request (HTTP/1.0: the server closes after its answer): status line and body.
fn call(port: u16, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    let text = String::from_utf8_lossy(&r).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

#[test]
fn without_the_token_the_api_answers_401_and_the_attempt_is_audited() {
    let a = start();
    for auth in [
        String::new(),
        "Authorization: Bearer wrong-token\r\n".to_string(),
        format!("Authorization: Basic {TOKEN}\r\n"),
        format!("Authorization: Bearer {TOKEN}x\r\n"),
    ] {
        let (head, body) = call(a.port, &format!("GET /api/status HTTP/1.0\r\n{auth}\r\n"));
        assert!(head.starts_with("HTTP/1.1 401 "), "{auth}: {head}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
        assert!(!body.contains("participants"), "nothing leaks: {body}");
    }
    let e = wait_event(a.logs.path(), "admin-unauthorized");
    assert_eq!(e["path"], "/api/status");
    assert_eq!(e["daemon"], "admin-test");
    assert!(e["remote_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // A POST is refused the same way, before anything is done.
    let (head, _) = call(
        a.port,
        "POST /api/status HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
}

#[test]
fn with_the_token_the_status_is_served_and_otpd_admin_prints_it() {
    let a = start();
    let (head, body) = call(
        a.port,
        &format!("GET /api/status HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["daemon"], "admin-test");
    assert_eq!(v["cores"], 2);
    assert!(v["messagedirector"]["participants"].is_u64(), "{v}");

    let addr = format!("127.0.0.1:{}", a.port);
    let out = std::process::Command::new(otpd_bin())
        .args(["admin", &addr, "status", "--token-file"])
        .arg(&a.token_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("admin-test: 2 cores"), "{text}");

    let out = std::process::Command::new(otpd_bin())
        .args(["admin", &addr, "status", "--json"])
        .env("OTPD_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemon"], "admin-test");

    let out = std::process::Command::new(otpd_bin())
        .args(["admin", &addr, "status"])
        .env("OTPD_ADMIN_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = std::process::Command::new(otpd_bin())
        .args(["admin", &addr, "no-such-command"])
        .env("OTPD_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The admin server is the metrics endpoint's bounded server: an oversized head or body is
/// refused without being buffered, and otpd keeps serving.
#[test]
fn oversized_heads_and_bodies_are_refused() {
    let a = start();
    let big = format!(
        "GET /api/status HTTP/1.0\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(big.as_bytes());
    let mut r = Vec::new();
    let _ = s.read_to_end(&mut r);
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&r)
    );
    let (head, _) = call(
        a.port,
        &format!(
            "POST /api/kick HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 999999\r\n\r\n"
        ),
    );
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    let (head, _) = call(
        a.port,
        &format!("GET /api/status HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}

/// The API is refused on anything but loopback, and a weak or missing token stops otpd at
/// start-up with the key named.
#[test]
fn bad_admin_settings_stop_otpd_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "short\n").unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, TOKEN).unwrap();
    for (admin, complaint) in [
        (
            format!(
                "(bind: \"0.0.0.0:{}\", token_file: \"{}\")",
                free_port(),
                good.display()
            ),
            "admin.bind",
        ),
        (
            format!(
                "(bind: \"127.0.0.1:{}\", token_file: \"{}\")",
                free_port(),
                token.display()
            ),
            "admin.token_file",
        ),
        (
            format!(
                "(bind: \"127.0.0.1:{}\", token_file: \"{}/missing\")",
                free_port(),
                dir.path().display()
            ),
            "admin.token_file",
        ),
    ] {
        let path = dir.path().join("cluster.ron");
        std::fs::write(
            &path,
            format!(
                "(cores: 1, pin_cores: false, admin: Some({admin}), messagedirector: (bind: Some(\"127.0.0.1:{}\")))",
                free_port()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(otpd_bin())
            .arg("--cluster")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{admin}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(complaint), "{admin}: {err}");
    }
}

/// Starts an admin API on a root MD and a child MD with a ClientAgent (Astron protocol) under
/// it: (root, child, admin port, client listener port, DC file).
fn tree() -> (Admin, Otpd, u16, otp_dc::DcFile) {
    let root = start();
    let dc_path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/dc/client.dc")
        .canonicalize()
        .unwrap();
    let dc = otp_dc::DcFile::parse_files(&[&dc_path]).unwrap();
    let ca = free_port();
    let child = Otpd::start_full(
        free_port(),
        &format!(
            "connect: Some(\"127.0.0.1:{}\"), reconnect_min_ms: 50, reconnect_max_ms: 200,",
            root._o.port
        ),
        &format!(
            "name: \"ca-host\", dc_files: [\"{}\"], roles: [ClientAgent((bind: \"127.0.0.1:{ca}\", version: \"v1\", channels: (min: 3000000, max: 3000999)))],",
            dc_path.display()
        ),
    );
    wait_for_port(ca);
    (root, child, ca, dc)
}

/// An Astron client past its hello (anonymous): its connection. A child MD refuses clients
/// (eject 131) until its link to the root has settled: try again meanwhile.
fn astron_client(port: u16, dc: &otp_dc::DcFile) -> Md {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut m = Md::connect(port);
        let mut body = otp_wire::msgtypes::CLIENT_HELLO.to_le_bytes().to_vec();
        body.extend_from_slice(&dc.hash().to_le_bytes());
        body.extend_from_slice(&2u16.to_le_bytes());
        body.extend_from_slice(b"v1");
        m.send(&frame(&body));
        let f = m.recv_within(Duration::from_secs(5)).expect("HELLO_RESP");
        let t = u16::from_le_bytes([f[2], f[3]]);
        if t == otp_wire::msgtypes::CLIENT_EJECT
            && u16::from_le_bytes([f[4], f[5]]) == 131
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        assert_eq!(
            t,
            otp_wire::msgtypes::CLIENT_HELLO_RESP,
            "{:?}",
            String::from_utf8_lossy(&f)
        );
        return m;
    }
}

fn post(port: u16, path: &str, body: &str) -> (String, String) {
    call(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn clients(port: u16, want: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, body) = call(
            port,
            &format!("GET /api/clients HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
        );
        assert!(head.starts_with("HTTP/1.1 200 "), "{head} {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["clients"].as_array().unwrap().len() == want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A system message posted to the root's admin API reaches an Astron client of a ClientAgent
/// on a child MD, as the child's `system_message_field` set on the client's own avatar (the
/// object its channel names and it owns); a client without an avatar gets nothing.
#[test]
fn a_system_message_from_the_root_reaches_an_astron_client_of_a_child_ca() {
    use otp_wire::msgtypes::*;
    let root = start();
    let dc_path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/dc/client.dc")
        .canonicalize()
        .unwrap();
    let dc = otp_dc::DcFile::parse_files(&[&dc_path]).unwrap();
    let ca = free_port();
    let child = Otpd::start_full(
        free_port(),
        &format!(
            "connect: Some(\"127.0.0.1:{}\"), reconnect_min_ms: 50, reconnect_max_ms: 200,",
            root._o.port
        ),
        &format!(
            "name: \"ca-host\", dc_files: [\"{}\"], roles: [StateServer(control: 100100), \
             ClientAgent((bind: \"127.0.0.1:{ca}\", version: \"v1\", channels: (min: 3000000, max: 3000999), \
             system_message_field: Some(\"Avatar.setOwnerNote\")))],",
            dc_path.display()
        ),
    );
    wait_for_port(ca);
    let avatar_class = dc.class_by_name("Avatar").unwrap();
    let note = dc.field_by_name(avatar_class, "setOwnerNote").unwrap().id();
    let mut cl = astron_client(ca, &dc);
    let mut other = astron_client(ca, &dc);
    let listed = clients(root.port, 2);
    // The game's AI, on the child MD: an avatar, the client's channel set to name it, owned.
    const AI: u64 = 5_000;
    const AVATAR: u32 = 20_002;
    let mut ai = child.connect();
    ai.send(&add_channel(AI));
    ai.send(&dg(
        &[100_100],
        AI,
        STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
        &P::new()
            .u32(AVATAR)
            .u32(0)
            .u32(0)
            .u16(avatar_class.id())
            .string("mine")
            .0,
    ));
    let channel = (77u64 << 32) | AVATAR as u64;
    // Which of the two is `cl`: the first listed, told apart by the owner view it gets.
    let first = listed["clients"][0]["channel"].as_u64().unwrap();
    ai.send(&dg(
        &[first],
        AI,
        CLIENTAGENT_SET_CLIENT_ID,
        &P::new().u64(channel).0,
    ));
    ai.send(&dg(
        &[AVATAR as u64],
        AI,
        STATESERVER_OBJECT_SET_OWNER,
        &P::new().u64(channel).0,
    ));
    let owner_view = |m: &mut Md| -> bool {
        m.recv_within(Duration::from_millis(1500)).is_some_and(|f| {
            let t = u16::from_le_bytes([f[2], f[3]]);
            t == CLIENT_ENTER_OBJECT_REQUIRED_OWNER || t == CLIENT_ENTER_OBJECT_REQUIRED_OTHER_OWNER
        })
    };
    if !owner_view(&mut cl) {
        std::mem::swap(&mut cl, &mut other);
        assert!(owner_view(&mut cl), "the owner enters its avatar");
    }
    let (head, body) = post(
        root.port,
        "/api/message",
        "{\"everyone\": true, \"text\": \"Maintenance at noon.\"}",
    );
    assert!(head.starts_with("HTTP/1.1 202 "), "{head} {body}");
    let f = cl
        .recv_within(Duration::from_secs(5))
        .expect("the system message");
    let want = P::new()
        .u32(AVATAR)
        .u16(note)
        .string("Maintenance at noon.")
        .0;
    assert_eq!(u16::from_le_bytes([f[2], f[3]]), CLIENT_OBJECT_SET_FIELD);
    assert_eq!(&f[4..], &want[..]);
    assert!(
        other.recv_within(Duration::from_millis(300)).is_none(),
        "no avatar, nothing"
    );
    let audit = wait_event(root.logs.path(), "admin-action");
    assert_eq!(audit["action"].as_str(), Some("message"), "{audit}");
}

/// The admin API on the root sees the clients of a ClientAgent on a child MD, and kicks one
/// of them (CLIENT_EJECT with otpd's admin-kick code); the other stays; the kick is audited.
#[test]
fn the_root_lists_and_kicks_the_clients_of_a_child_ca() {
    let (root, _child, ca, dc) = tree();
    let (mut a, mut b) = (astron_client(ca, &dc), astron_client(ca, &dc));
    let v = clients(root.port, 2);
    let rows = v["clients"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for r in rows {
        assert_eq!(r["listener"], format!("127.0.0.1:{ca}"));
        assert_eq!(
            (r["dialect"].as_str(), r["state"].as_str()),
            (Some("astron"), Some("anonymous"))
        );
        assert!(r["address"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(r["connected_since_unix"].as_u64().unwrap() > 1_700_000_000);
    }
    let kicked = rows[0]["channel"].as_u64().unwrap();
    let (head, body) = post(
        root.port,
        "/api/kick",
        &format!("{{\"channel\": {kicked}, \"reason\": \"Testing the kick.\"}}"),
    );
    assert!(head.starts_with("HTTP/1.1 202 "), "{head} {body}");
    // Which client is which: the one ejected is the kicked channel's.
    let eject = |m: &mut Md| -> Option<(u16, String)> {
        let f = m.recv_within(Duration::from_millis(1500))?;
        assert_eq!(
            u16::from_le_bytes([f[2], f[3]]),
            otp_wire::msgtypes::CLIENT_EJECT
        );
        let code = u16::from_le_bytes([f[4], f[5]]);
        let len = u16::from_le_bytes([f[6], f[7]]) as usize;
        Some((code, String::from_utf8_lossy(&f[8..8 + len]).into_owned()))
    };
    let (ea, eb) = (eject(&mut a), eject(&mut b));
    let a_was_kicked = ea.is_some();
    let got: Vec<_> = [ea, eb].into_iter().flatten().collect();
    assert_eq!(got.len(), 1, "exactly one client is kicked: {got:?}");
    assert_eq!(
        got[0].0,
        otp_wire::msgtypes::eject::CLIENT_DISCONNECT_ADMIN_KICK
    );
    assert_eq!(got[0].1, "Testing the kick.");
    let v = clients(root.port, 1);
    assert_eq!(v["clients"].as_array().unwrap().len(), 1, "{v}");
    assert_ne!(v["clients"][0]["channel"].as_u64(), Some(kicked));
    let e = wait_event(root.logs.path(), "admin-action");
    assert_eq!(
        (
            e["action"].as_str(),
            e["target"].as_str(),
            e["result"].as_str()
        ),
        (
            Some("kick"),
            Some(format!("channel {kicked}").as_str()),
            Some("sent")
        )
    );

    // The same from the command line: the list, then everyone kicked.
    let addr = format!("127.0.0.1:{}", root.port);
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(otpd_bin())
            .arg("admin")
            .arg(&addr)
            .args(args)
            .env("OTPD_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = admin(&["clients"]);
    assert!(table.starts_with("1 clients\n"), "{table}");
    assert!(
        table.contains("astron") && table.contains("anonymous"),
        "{table}"
    );
    assert_eq!(
        admin(&["kick", "--everyone", "--reason", "Closing."]).trim(),
        "kick: sent"
    );
    let rest = if a_was_kicked { &mut b } else { &mut a };
    let (code, reason) = eject(rest).expect("the last client is kicked too");
    assert_eq!(
        (code, reason.as_str()),
        (
            otp_wire::msgtypes::eject::CLIENT_DISCONNECT_ADMIN_KICK,
            "Closing."
        )
    );
    assert_eq!(
        clients(root.port, 0)["clients"].as_array().unwrap().len(),
        0
    );
}

/// Bad action bodies are refused with the reason, and nothing is sent.
#[test]
fn action_bodies_are_checked() {
    let a = start();
    for (path, body, want) in [
        ("/api/kick", "not json", "JSON object"),
        ("/api/kick", "{}", "name whom"),
        ("/api/kick", "{\"everyone\": true, \"avatar\": 5}", "one of"),
        ("/api/kick", "{\"avatar\": \"five\"}", "must be a number"),
        ("/api/message", "{\"everyone\": true}", "'text'"),
        (
            "/api/kick",
            &format!(
                "{{\"everyone\": true, \"reason\": \"{}\"}}",
                "x".repeat(2000)
            ),
            "'reason' is over 1024",
        ),
        (
            "/api/message",
            &format!("{{\"everyone\": true, \"text\": \"{}\"}}", "x".repeat(2000)),
            "over 1024",
        ),
    ] {
        let (head, answer) = post(a.port, path, body);
        assert!(head.starts_with("HTTP/1.1 400 "), "{body}: {head}");
        assert!(answer.contains(want), "{body}: {answer}");
    }
    let (head, _) = call(
        a.port,
        &format!("GET /api/kick HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
}

/// GET /api/object/DOID: the StateServer's object, its fields decoded through the DC file.
#[test]
fn an_object_is_shown_with_its_fields_decoded() {
    let logs = tempfile::tempdir().unwrap();
    let dc = TestDc::load();
    let port = free_port();
    let token_file = logs.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let o = Otpd::start_full(
        free_port(),
        "",
        &format!(
            "dc_files: [\"{}\"], admin: Some((bind: \"127.0.0.1:{port}\", token_file: \"{}\")),
             roles: [StateServer(control: 100100)],",
            dc.path.display(),
            token_file.display()
        ),
    );
    wait_for_port(port);
    let mut ai = o.connect();
    let thing = dc.class("Thing");
    let name = dc.field("Thing", "setName");
    // doid 700001 under 5000/12: required setRequired 41, setRequiredDefault 9, setAiSecret 3;
    // OTHER: setName "Flippy".
    let p = P::new()
        .u32(700_001)
        .u32(5000)
        .u32(12)
        .u16(thing)
        .u32(41)
        .u16(9)
        .u8(3)
        .u16(1)
        .u16(name)
        .string("Flippy");
    ai.send(&dg(
        &[100_100],
        5,
        otp_wire::msgtypes::STATESERVER_CREATE_OBJECT_WITH_REQUIRED_OTHER,
        &p.0,
    ));
    let mut probe = o.connect();
    let mut watcher = listener(o.port, &mut probe, &[77]);
    // The object exists (the StateServer answers for it) before the API is asked.
    probe.send(&dg(
        &[700_001],
        77,
        otp_wire::msgtypes::STATESERVER_OBJECT_GET_ALL,
        &P::new().u32(1).u32(700_001).0,
    ));
    assert!(watcher.recv_within(Duration::from_secs(5)).is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    let v = loop {
        let (head, body) = call(
            port,
            &format!("GET /api/object/700001 HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
        );
        if head.starts_with("HTTP/1.1 200 ") {
            break serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
        assert!(Instant::now() < deadline, "{head} {body} {}", o.log_text());
    };
    assert_eq!(
        (v["doid"].as_u64(), v["parent"].as_u64(), v["zone"].as_u64()),
        (Some(700_001), Some(5000), Some(12))
    );
    assert_eq!(v["dclass"], "Thing");
    // Each field's parameters, as `otpd db dump` writes them.
    assert_eq!(v["fields"]["setRequired"], serde_json::json!([41]), "{v}");
    assert_eq!(
        v["fields"]["setRequiredDefault"],
        serde_json::json!([9]),
        "{v}"
    );
    assert_eq!(v["fields"]["setName"], serde_json::json!(["Flippy"]), "{v}");
    let (head, _) = call(
        port,
        &format!("GET /api/object/12 HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 400 "), "a reserved doid: {head}");
}

/// Off loopback the admin API needs TLS; with `admin.tls` it speaks HTTPS, and a plain
/// request gets nothing.
#[test]
fn with_tls_the_admin_api_speaks_https_only() {
    use std::io::{Read, Write};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let port = free_port();
    let _o = Otpd::start_full(
        free_port(),
        "",
        &format!(
            "name: \"tls-test\", admin: Some((bind: \"127.0.0.1:{port}\", token_file: \"{}\",
             tls: Some((certificate: \"{}\", key: \"{}\")))),",
            token_file.display(),
            cert_path.display(),
            key_path.display()
        ),
    );
    wait_for_port(port);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET /api/status HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("\"daemon\":\"tls-test\""), "{answer}");
    // Plain HTTP on the TLS port: no answer, closed.
    let (head, _) = call(
        port,
        &format!("GET /api/status HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert!(!head.contains("200"), "{head}");

    // 0.0.0.0 with TLS is accepted; without, refused at start naming admin.tls.
    let path = dir.path().join("cluster.ron");
    std::fs::write(
        &path,
        format!(
            "(cores: 1, pin_cores: false, admin: Some((bind: \"0.0.0.0:{}\", token_file: \"{}\")), messagedirector: (bind: Some(\"127.0.0.1:{}\")))",
            free_port(),
            token_file.display(),
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(otpd_bin())
        .arg("--cluster")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.tls"));
}

/// The operator's page (GET / and /index.html) is served without the token (it holds no
/// data), as HTML with headers that keep it from being framed, cached or made to run code it
/// does not carry; it names no other site (nothing is fetched from elsewhere).
#[test]
fn the_page_is_served_without_the_token_with_its_security_headers() {
    let a = start();
    for path in ["/", "/index.html"] {
        let (head, body) = call(a.port, &format!("GET {path} HTTP/1.0\r\n\r\n"));
        assert!(head.starts_with("HTTP/1.1 200 "), "{path}: {head}");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                })
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} header: {head}"))
        };
        assert_eq!(header("Content-Type"), "text/html; charset=utf-8");
        let csp = header("Content-Security-Policy");
        assert!(csp.starts_with("default-src 'self'; "), "{csp}");
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            !csp.contains("unsafe"),
            "inline code admitted by hash only: {csp}"
        );
        assert_eq!(header("X-Frame-Options"), "DENY");
        assert_eq!(header("Cache-Control"), "no-store");
        assert_eq!(header("X-Content-Type-Options"), "nosniff");
        assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
        assert!(
            body.contains("Authorization: \"Bearer \""),
            "it calls the API with the token"
        );
        // No external URL: no scheme, no protocol-relative link.
        for scheme in ["http://", "https://", "src=\"//", "href=\"//", "url("] {
            assert!(!body.contains(scheme), "the page names {scheme}");
        }
        assert!(
            !body.contains("innerHTML"),
            "data is put in the page as text only"
        );
    }
    // HEAD: the headers alone; other methods are refused; the API still wants the token.
    let (head, body) = call(a.port, "HEAD / HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(body.is_empty(), "{body}");
    let (head, _) = call(a.port, "POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    let (head, _) = call(a.port, "GET /api/status HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    let (head, _) = call(a.port, "GET /elsewhere HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
}

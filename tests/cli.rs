//! The command line, as astrond users and operators use it: exit codes, timing, messages.

mod common;

use common::*;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(otpd_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Starts otpd on a config and reports whether it exited (with its code) within `limit`.
fn exits_within(args: &[&str], limit: Duration) -> Option<i32> {
    let mut child = Command::new(otpd_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("otpd "), "{out}");
    let (code, out, _) = run(&["-h"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--cluster") && out.contains("--loglevel"),
        "{out}"
    );
}

#[test]
fn unknown_option_prints_help_and_exits_1() {
    let (code, _, err) = run(&["--frobnicate"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown option --frobnicate") && err.contains("USAGE"),
        "{err}"
    );
}

#[test]
fn invalid_yaml_exits_1_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("astrond.yml");
    std::fs::write(
        &path,
        "messagedirector:\n    bind: 127.0.0.1:7199\n    bogus: 1\n",
    )
    .unwrap();
    assert_eq!(
        exits_within(&[path.to_str().unwrap()], Duration::from_secs(1)),
        Some(1)
    );
    let (_, _, err) = run(&[path.to_str().unwrap()]);
    assert!(
        err.contains("bogus") && err.contains(":3:"),
        "names key and line: {err}"
    );
}

#[test]
fn bind_failure_exits_1_within_a_second() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("astrond.yml");
    std::fs::write(
        &path,
        format!("messagedirector:\n    bind: 127.0.0.1:{port}\n"),
    )
    .unwrap();
    assert_eq!(
        exits_within(&[path.to_str().unwrap()], Duration::from_secs(1)),
        Some(1)
    );
}

#[test]
fn valid_yaml_serves_within_a_second_with_astrond_options() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("astrond.yml");
    std::fs::write(
        &path,
        format!("messagedirector:\n    bind: 127.0.0.1:{port}\n    threaded: true\n"),
    )
    .unwrap();
    let mut child = Command::new(otpd_bin())
        .args(["--loglevel", "warning", "-p", path.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut serving = false;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            serving = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "listening within a second");
}

#[test]
fn bad_cluster_ron_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.ron");
    std::fs::write(&path, "(\n    name: \"x\",\n    messagedirector: (\n        bnd: Some(\"127.0.0.1:1\"),\n    ),\n)\n").unwrap();
    let (code, _, err) = run(&["--cluster", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cluster.ron:4:") && err.contains("bnd"),
        "{err}"
    );

    std::fs::write(&path, "(uberdogs: [(id: 500, class: \"X\")])").unwrap();
    let (code, _, err) = run(&["--cluster", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("500") && err.contains("reserved"), "{err}");
}

#[test]
fn the_checked_in_cluster_ron_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster.ron");
    let config =
        otpd::config::ron_file::load(std::path::Path::new(path)).expect("cluster.ron loads");
    assert_eq!(
        config.messagedirector.bind.as_deref(),
        Some("127.0.0.1:7199")
    );
}

/// Runs otpd for at most `limit`: its exit code (None: still running, then killed) and its
/// standard error.
fn run_for(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(otpd_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut code = None;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            code = Some(status.code().unwrap_or(-1));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still running: stopped here (an exited child is only reaped).
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

/// A cluster.ron in `dir` that runs (with Toontown's DC) an MD on `md_port` and `roles`.
fn toon_cluster(dir: &Path, md_port: u16, roles: &str) -> PathBuf {
    let dc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/dc/toon.dc")
        .canonicalize()
        .unwrap();
    let path = dir.join("cluster.ron");
    std::fs::write(
        &path,
        format!(
            "(cores: 1, pin_cores: false, dc_files: [\"{}\"],\n messagedirector: (bind: Some(\"127.0.0.1:{md_port}\")),\n roles: [{roles}])",
            dc.display()
        ),
    )
    .unwrap();
    path
}

/// A Toontown 2003 listener on `bind` with these `toontown` keys (and other keys of its own).
fn toon_listener(bind: &str, n: u64, toontown: &str, extra: &str) -> String {
    let min = 1_000_000_000 + n * 10_000;
    format!(
        "ClientAgent((bind: \"{bind}\", version: \"sv1.0.6.9\", channels: (min: {min}, max: {}), \
         dialect: Toontown2003, toontown: ({toontown}), {extra})),\n",
        min + 9_999
    )
}

/// 64 hexadecimal digits and a line break, as `openssl rand -hex 32` writes a secret.
const GOOD_KEY: &str = "5f0c3a9e1d7b2468ace013579bdf02468ace13579bdf0246813579bdf02468ac\n";

/// Item 10 of issue 17: a Signed token policy with an empty or short secret let anyone sign
/// tokens for any account (HMAC under a known or guessable key); a key otpd does not know in
/// `Signed(...)` was ignored. Each such cluster must refuse to start, saying why.
#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn signed_tokens_refuse_short_secrets_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.key"), GOOD_KEY).unwrap();
    std::fs::write(dir.path().join("short.key"), "hunter2\n").unwrap();
    let long = "x".repeat(32);
    let cases = [
        (
            "Signed(secret: \"\")".to_string(),
            vec!["secret is 0 bytes", "32"],
        ),
        (
            "Signed(secret: \"test-secret\")".into(),
            vec!["11 bytes", "32"],
        ),
        (
            format!("Signed(secret: \"{}\")", "y".repeat(31)),
            vec!["31 bytes"],
        ),
        (
            "Signed(secret_file: \"short.key\")".into(),
            vec!["short.key", "7 bytes"],
        ),
        (
            "Signed(secret_file: \"missing.key\")".into(),
            vec!["missing.key"],
        ),
        (
            format!("Signed(secret: \"{long}\", expiry_check: false)"),
            vec!["expiry_check"],
        ),
        (
            format!("Signed(secret: \"{long}\", secret_file: \"token.key\")"),
            vec!["not both"],
        ),
        ("Signed()".into(), vec!["0 bytes"]),
    ];
    for (tokens, want) in cases {
        let path = toon_cluster(
            dir.path(),
            free_port(),
            &toon_listener(
                &format!("127.0.0.1:{}", free_port()),
                0,
                &format!("tokens: {tokens}"),
                "",
            ),
        );
        let (code, err) = run_for(
            &["--cluster", path.to_str().unwrap()],
            Duration::from_secs(5),
        );
        assert_eq!(
            code,
            Some(1),
            "{tokens}: otpd must refuse to start; stderr: {err}"
        );
        for w in want {
            assert!(err.contains(w), "{tokens}: the message names {w:?}: {err}");
        }
        assert!(!err.contains(&long), "the secret is never printed: {err}");
    }

    // 32 bytes or more in a file: otpd starts, and `otpd account token --cluster` signs with
    // the file's secret (its line break left out).
    let md = free_port();
    let path = toon_cluster(
        dir.path(),
        md,
        &toon_listener(
            &format!("127.0.0.1:{}", free_port()),
            0,
            "tokens: Signed(secret_file: \"token.key\"), passwords: Existing",
            "",
        ),
    );
    let child = Stopped(
        Command::new(otpd_bin())
            .args(["--cluster", path.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(md);
    drop(child);
    let (code, out, err) = run(&[
        "account",
        "token",
        "dave",
        "--cluster",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let policy = otpd::config::TokenPolicy::Signed {
        secret: GOOD_KEY.trim_end().into(),
        secret_file: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        otpd::clientagent::accounts::verify(&policy, out.trim(), now),
        Ok("dave".to_string())
    );
    let key = dir.path().join("token.key");
    let (code, out2, _) = run(&[
        "account",
        "token",
        "dave",
        "--secret-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(otpd::clientagent::accounts::verify(&policy, out2.trim(), now).is_ok());
    // The command refuses to sign with a short secret, as a listener refuses to check with one.
    let (code, out, err) = run(&["account", "token", "dave", "--secret", "test-secret"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("32"), "{err}");
}

/// Item 10 of issue 17: settings meant for development (Open tokens, accounts created on
/// login, an EventLogger taking events from anyone) on listeners other hosts can reach are
/// reported at start-up; the same settings on loopback are not.
#[test]
fn exposed_development_settings_are_warned_about_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let md = free_port();
    let (open, local, proxied, safe) = (free_port(), free_port(), free_port(), free_port());
    let el = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let roles = [
        toon_listener(&format!("0.0.0.0:{open}"), 0, "", ""),
        toon_listener(&format!("127.0.0.1:{local}"), 1, "", ""),
        toon_listener(
            &format!("127.0.0.1:{proxied}"),
            2,
            "tokens: Open, passwords: Existing",
            "haproxy: true",
        ),
        toon_listener(
            &format!("0.0.0.0:{safe}"),
            3,
            &format!("tokens: Signed(secret: \"{}\"), passwords: Disabled", GOOD_KEY.trim_end()),
            "",
        ),
        // An Astron listener has no play tokens: nothing to say about it.
        format!(
            "ClientAgent((bind: \"0.0.0.0:{}\", version: \"v\", channels: (min: 1000900000, max: 1000909999))),",
            free_port()
        ),
        format!("EventLogger(bind: \"0.0.0.0:{el}\", output: \"{}/ev-%H%M%S.log\"),", dir.path().display()),
    ]
    .concat();
    let path = toon_cluster(dir.path(), md, &roles);
    let log = dir.path().join("otpd.log");
    let child = Stopped(
        Command::new(otpd_bin())
            .args([
                "--cluster",
                path.to_str().unwrap(),
                "--log",
                log.to_str().unwrap(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(md);
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    let about = |what: &str| warnings.iter().filter(|l| l.contains(what)).count();
    assert_eq!(
        about(&format!(
            "0.0.0.0:{open} (not bound to loopback) runs toontown tokens: Open"
        )),
        1,
        "{text}"
    );
    assert_eq!(
        about(&format!(
            "0.0.0.0:{open} (not bound to loopback) runs toontown passwords: CreateOnLogin"
        )),
        1,
        "{text}"
    );
    assert_eq!(
        about(&format!(
            "127.0.0.1:{proxied} (behind a PROXY-protocol proxy) runs toontown tokens: Open"
        )),
        1,
        "{text}"
    );
    assert_eq!(about(&format!("eventlogger 0.0.0.0:{el}")), 1, "{text}");
    assert_eq!(
        about(&format!(":{local}")),
        0,
        "loopback is not exposed: {text}"
    );
    assert_eq!(
        about(&format!(":{safe}")),
        0,
        "signed tokens, no creation: {text}"
    );
    assert_eq!(about("passwords"), 1, "{text}");
}

/// A child process stopped when dropped, so that a failing test leaves no otpd behind.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 17, item 3: `toontown.avatar_id_fields` entries that name a class or field the DC
/// files lack, or an argument that is not a 32-bit integer, stop start-up with a message
/// naming the entry (a misspelt entry would otherwise leave impersonation unchecked).
#[test]
fn avatar_id_fields_that_do_not_resolve_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for (entry, want) in [
        (
            "(class: \"DistributedToon\", field: \"setWhisperFromm\", arg: 0)",
            "setWhisperFromm",
        ),
        (
            "(class: \"DistributedToonn\", field: \"setWhisperFrom\", arg: 0)",
            "DistributedToonn",
        ),
        (
            "(class: \"DistributedToon\", field: \"setWhisperFrom\", arg: 1)",
            "not a uint32",
        ),
    ] {
        let path = toon_cluster(
            dir.path(),
            free_port(),
            &toon_listener(
                &format!("127.0.0.1:{}", free_port()),
                0,
                &format!("avatar_id_fields: Some([{entry}])"),
                "",
            ),
        );
        let (code, err) = run_for(
            &["--cluster", path.to_str().unwrap()],
            Duration::from_secs(5),
        );
        assert_eq!(code, Some(1), "{entry}: otpd must refuse to start: {err}");
        assert!(
            err.contains("toontown.avatar_id_fields") && err.contains(want),
            "{entry}: the message names it: {err}"
        );
    }
}

//! The command line, as astrond users and operators use it: exit codes, timing, messages.

mod common;

use common::*;
use std::net::TcpListener;
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

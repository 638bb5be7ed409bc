//! `otpd dc hash` and `otpd dc check`, as operators run them.

mod common;

use common::otpd_bin;
use std::process::Command;

fn dc_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../otp-dc/tests/dc")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(otpd_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn hash_prints_exactly_one_line() {
    let f = dc_dir().join("constructs.dc");
    let (code, out, err) = run(&["dc", "hash", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0x05a49d0f\n");
    // Settings as options.
    let (code, out, _) = run(&[
        "dc",
        "hash",
        "--sort-inheritance-by-file=0",
        f.to_str().unwrap(),
    ]);
    assert_eq!((code, out.as_str()), (0, "0x059d844c\n"));
}

#[test]
fn files_are_read_in_order_as_one_set() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.dc"), dir.path().join("b.dc"));
    std::fs::write(&a, "dclass A { setX(uint8 x) broadcast; };\n").unwrap();
    std::fs::write(&b, "dclass B : A { setY(uint8 y) broadcast; };\n").unwrap();
    let (code, ab, err) = run(&["dc", "hash", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // B needs A: the other order fails, as in Panda3D (B's mention made A a forward
    // reference, which a.dc may not define afterwards).
    let (code, _, err) = run(&["dc", "hash", b.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("a.dc:1:") && err.contains("base class defined after its first reference: A"),
        "{err}"
    );
    assert!(ab.starts_with("0x") && ab.len() == 11);
    // b.dc alone reads as Panda3D reads it (A a forward reference never defined);
    // `check` warns about it, and refuses it with --strict.
    let (code, out, err) = run(&["dc", "check", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("classes:   2"), "{out}");
    assert!(
        err.contains("undefined forward reference: class A"),
        "{err}"
    );
    let (code, _, err) = run(&["dc", "check", "--strict", b.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}

/// `otpd dc fields` under the 2003 rule and `otpd dc hash --era 2003`.
#[test]
fn fields_and_the_2003_hash() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.dc");
    std::fs::write(
        &f,
        "dclass A {\n  a(uint8) required;\n};\ndclass B : A {\n  b(uint8);\n};\n\
         dclass C : A {\n  c(uint8);\n};\n",
    )
    .unwrap();
    let (code, out, err) = run(&["dc", "fields", "--era", "2003", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dclass 2 C\n  0 a required\n  1 c \n"),
        "{out}"
    );
    let (code, out, _) = run(&["dc", "fields", f.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("dclass 2 C\n  0 a required\n  2 c \n"),
        "{out}"
    );
    let (code, out, _) = run(&["dc", "hash", "--era", "2003", f.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.starts_with("0x") && out.len() == 11, "{out}");
}

#[test]
fn check_summarises() {
    let f = dc_dir().join("constructs.dc");
    let (code, out, _) = run(&["dc", "check", f.to_str().unwrap()]);
    assert_eq!(code, 0);
    for want in [
        "classes:",
        "structs:",
        "fields:",
        "keywords:",
        "hash:      0x05a49d0f",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
}

#[test]
fn a_broken_file_exits_2_with_position_line_and_caret() {
    let f = dc_dir().join("errors/unknown-keyword.dc");
    let (code, out, err) = run(&["dc", "hash", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].ends_with("unknown-keyword.dc:2:17: unknown keyword: brodcast"),
        "{err}"
    );
    assert_eq!(lines[1], "  setX(uint8 x) brodcast;");
    assert_eq!(lines[2], "                ^");
    let (code, _, err) = run(&["dc", "check", "/nonexistent/x.dc"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/x.dc: cannot read"), "{err}");
}

//! Reads the project's DC files and the public ones in ../shared/dc, and compares hashes with
//! what the Panda3D wheel computed (scripts/dc-reference-hashes.py), under every dc-* setting.

use otp_dc::{DcFile, HashOptions};
use std::path::{Path, PathBuf};

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dc")
}

#[test]
fn hashes_match_panda3d_under_every_setting() {
    let table = std::fs::read_to_string(here().join("expected.tsv")).unwrap();
    let mut checked = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let o = HashOptions {
            multiple_inheritance: f[1] == "1",
            virtual_inheritance: f[2] == "1",
            sort_inheritance_by_file: f[3] == "1",
        };
        let result = DcFile::parse_files_with(&[here().join(f[0])], o);
        match (f[4], result) {
            ("ERROR", Err(_)) => {}
            ("ERROR", Ok(dc)) => panic!(
                "{line}: Panda3D refuses this file, otp-dc read it (hash 0x{:08x})",
                dc.hash()
            ),
            (want, Ok(dc)) => assert_eq!(format!("0x{:08x}", dc.hash()), want, "{line}"),
            (want, Err(e)) => panic!("{line}: expected {want}, got error {e}"),
        }
        // hash_with on a file read under the defaults gives the same answer.
        if f[4] != "ERROR" {
            let dc = DcFile::parse_files(&[here().join(f[0])]).unwrap();
            assert_eq!(
                format!("0x{:08x}", dc.hash_with(o)),
                f[4],
                "hash_with {line}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 16, "expected.tsv has the combinations");
}

#[test]
fn shared_files_match_the_wheel() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/dc");
    let Ok(table) = std::fs::read_to_string(dir.join("expected-hashes.tsv")) else {
        // The conformance data lives beside the project, not in it; scripts/test runs this
        // check again through the binary.
        eprintln!("../shared/dc is not present; skipped");
        return;
    };
    for line in table.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let dc = DcFile::parse_files(&[dir.join(f[0])]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("0x{:08x}", dc.hash()), f[1], "{}", f[0]);
        assert_eq!(format!("classes={}", dc.num_classes()), f[3], "{}", f[0]);
        assert_eq!(
            format!("inherited_fields={}", dc.total_inherited_fields()),
            f[4],
            "{}",
            f[0]
        );
    }
}

#[test]
fn broken_files_report_file_line_column_and_never_panic() {
    let dir = here().join("errors");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let path = dir.join(f[0]);
        let e = DcFile::parse_files(&[&path]).expect_err(f[0]);
        let text = e.to_string();
        let head = format!("{}:{}: ", path.display(), f[1]);
        assert!(text.starts_with(&head), "{}: got {text}", f[0]);
        assert!(text.contains(f[2]), "{}: got {text}", f[0]);
        // The offending line and a caret under the column follow.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let col: usize = f[1].split(':').nth(1).unwrap().parse().unwrap();
        assert_eq!(lines[2].len(), col, "caret under column {col}: {text}");
    }
}

#[test]
fn model_of_the_constructs_file() {
    let dc = DcFile::parse_files(&[here().join("constructs.dc")]).unwrap();
    let dna = dc.class_by_name("Dna").unwrap();
    assert!(dna.is_struct());
    let child = dc.class_by_name("Child").unwrap();
    assert_eq!(child.parents().len(), 2);
    // Inherited fields keep their parents' ids; the redefined setName replaces Base's.
    let mover = dc.class_by_name("Mover").unwrap();
    let base = dc.class_by_name("Base").unwrap();
    let set_x = dc.field_by_name(mover, "setX").unwrap();
    assert_eq!(dc.field_by_name(child, "setX").unwrap().id(), set_x.id());
    let base_name = dc.field_by_name(base, "setName").unwrap();
    let child_name = dc.field_by_name(child, "setName").unwrap();
    assert_ne!(base_name.id(), child_name.id());
    assert!(
        child_name.is_required()
            && child_name.is_broadcast()
            && child_name.is_db()
            && child_name.is_ram()
    );
    // Required fields ascend by id.
    let req = child.required_fields();
    assert!(req.windows(2).all(|w| w[0] < w[1]) && !req.is_empty());
    // Custom keywords are kept.
    let other = dc.class_by_name("Other").unwrap();
    let blob = dc.field_by_name(other, "setBlob").unwrap();
    assert!(blob.has_keyword("custom") && blob.has_keyword("another") && blob.is_ownsend());
    assert_eq!(dc.declared_keywords(), ["custom", "another"]);
    assert_eq!(dc.imports().len(), 2);
    assert_eq!(dc.imports()[0].symbols, ["Avatar/AI/UD/OV", "Player"]);
    let set_pos = dc.field_by_name(mover, "setPos").unwrap();
    assert!(set_pos.is_molecular() && set_pos.is_broadcast());
    assert_eq!(
        dc.components(set_pos).map(|f| f.name()).collect::<Vec<_>>(),
        ["setX", "setY"]
    );
}

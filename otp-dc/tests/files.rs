//! Reads the project's DC files (and, run by scripts/dc-conformance, the public ones in
//! ../shared/dc), and compares hashes with what the Panda3D wheel computed
//! (scripts/dc-reference-hashes.py), under every dc-* setting.

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

/// The public DC files of ../shared/dc against the wheel's figures in its expected-hashes.tsv.
/// They live beside the clone, not in the repository: `scripts/dc-conformance` runs this with
/// OTPD_SHARED_DC naming that folder when it is there (and checks the binary the same way).
#[test]
#[ignore = "needs OTPD_SHARED_DC (scripts/dc-conformance sets it when ../shared/dc exists)"]
fn shared_files_match_the_wheel() {
    let dir = PathBuf::from(
        std::env::var_os("OTPD_SHARED_DC").expect("OTPD_SHARED_DC names the shared/dc folder"),
    );
    let table = std::fs::read_to_string(dir.join("expected-hashes.tsv"))
        .unwrap_or_else(|e| panic!("{}/expected-hashes.tsv: {e}", dir.display()));
    assert!(table.lines().count() > 0, "expected-hashes.tsv is empty");
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

/// The 2003 DC parser's hash, against sums worked out by hand: every added integer is the
/// next prime (2, 3, 5, ...) times the value (counts, name lengths and bytes, parent numbers,
/// the 2003 type numbers and divisors, the flag word).
#[test]
fn hash_2003_matches_hand_computed_values() {
    // 2*1 + 3*1 + 5*'A' + 7*0 + 11*1 + 13*1 + 17*'f' + 19*1 + 23*4(uint8) + 29*1 + 31*1(required)
    let one =
        otp_dc::DcFile::parse_str("one.dc", "dclass A {\n  f(uint8) required;\n};\n").unwrap();
    assert_eq!(one.hash_2003().unwrap(), 2259);
    // Two classes, a parent, a divisor, two elements, a molecular field hashing its atomics in
    // full, and p2p (bit 4) with clsend (bit 32); worked out term by term to 88185.
    let two = otp_dc::DcFile::parse_str(
        "two.dc",
        "keyword p2p;\ndclass A {\n  f(int16 / 10) broadcast ram;\n};\n\
         dclass B : A {\n  g(uint32, string) broadcast ram;\n  m : f, g;\n  h(int8) clsend p2p;\n};\n",
    )
    .unwrap();
    assert_eq!(two.hash_2003().unwrap(), 88185);
    // airecv and declared keywords did not exist in 2003: they add nothing.
    let airecv =
        otp_dc::DcFile::parse_str("airecv.dc", "dclass A {\n  f(uint8) required airecv;\n};\n")
            .unwrap();
    assert_eq!(airecv.hash_2003().unwrap(), 2259);
    // Constructs that era's grammar lacked are named, not hashed.
    let st = otp_dc::DcFile::parse_str("s.dc", "struct S { uint8 a; };\n").unwrap();
    assert!(st.hash_2003().unwrap_err().contains("struct S"));
    let arr = otp_dc::DcFile::parse_str("a.dc", "dclass A { f(uint8[]); };\n").unwrap();
    assert!(arr.hash_2003().unwrap_err().contains("A.f"));
}

/// The 2003 numbering: a field's number is its position along the first-parent chain, so
/// sibling classes reuse numbers and a class's own fields follow its parent's.
#[test]
fn legacy_numbering_is_per_class() {
    let text = "dclass A { a(uint8); b(uint8); };\n\
                dclass B : A { c(uint8); };\n\
                dclass C : A { d(uint8); e(uint8); };\n";
    for o in [
        otp_dc::HashOptions::default(),
        otp_dc::HashOptions {
            multiple_inheritance: false,
            virtual_inheritance: false,
            sort_inheritance_by_file: false,
        },
    ] {
        let dc = otp_dc::DcFile::parse_strs_with(&[("l.dc", text)], o).unwrap();
        let names = |c: &str| -> Vec<String> {
            let class = dc.class_by_name(c).unwrap();
            dc.legacy_fields(class)
                .iter()
                .map(|f| f.name().to_string())
                .collect()
        };
        assert_eq!(names("B"), ["a", "b", "c"]);
        assert_eq!(names("C"), ["a", "b", "d", "e"]);
        let c = dc.class_by_name("C").unwrap();
        if o.multiple_inheritance {
            // File-wide: d is the fourth field declared.
            assert_eq!(dc.class_field(c, 3).unwrap().name(), "d");
            assert!(dc.class_field(c, 2).is_none(), "c belongs to B only");
        } else {
            assert_eq!(dc.class_field(c, 2).unwrap().name(), "d");
            assert_eq!(
                dc.class_field(dc.class_by_name("B").unwrap(), 2)
                    .unwrap()
                    .name(),
                "c"
            );
        }
    }
}

/// Forward references as Panda3D 1.10 reads them: a parent class never defined is a bogus
/// class numbered at first mention; an unknown type name is a bogus typedef hashed as type 20.
/// The hashes are what the Panda3D 1.10.16 wheel reports for the same text, under
/// `dc-multiple-inheritance` 1 and 0.
#[test]
fn forward_references_read_and_hash_as_panda3d() {
    let legacy = otp_dc::HashOptions {
        multiple_inheritance: false,
        ..otp_dc::HashOptions::default()
    };
    let cases: [(&str, u32, u32); 6] = [
        (
            "dclass B : Missing {\n  f(uint8);\n};\ndclass C : B {\n  h(uint8);\n};\n",
            0xadf3,
            0xa64c,
        ),
        (
            "dclass A {\n  f(Foo x);\n  g(Foo, uint8);\n  Foo p;\n};\n",
            0x2d49,
            0x2982,
        ),
        (
            "dclass A {\n  f(S x);\n};\nstruct S {\n  uint8 a;\n};\n",
            0x1d5f,
            0x1bb9,
        ),
        (
            "dclass A {\n  f(Foo x[2]);\n  g(Foo[] y);\n};\n",
            0x2c6c,
            0x2a87,
        ),
        (
            "typedef uint8 T0;\ndclass A {\n  f(Foo x, Bar y, T0 z);\n};\ntypedef uint16 T1;\n",
            0x10b9,
            0x1011,
        ),
        (
            "dclass B : Missing {\n};\ndclass C {\n  f(Missing m);\n};\n",
            0x1c5b8,
            0x1b6c4,
        ),
    ];
    for (text, h1, h0) in cases {
        let dc = otp_dc::DcFile::parse_str("f.dc", text).unwrap();
        assert_eq!(dc.hash(), h1, "{text}");
        assert!(!dc.undefined_references().is_empty() || text.contains("f(Missing"));
        let dc0 = otp_dc::DcFile::parse_strs_with(&[("f.dc", text)], legacy).unwrap();
        assert_eq!(dc0.hash(), h0, "{text}");
    }
    // The bogus class takes its number before the class naming it; C inherits B's field.
    let dc = otp_dc::DcFile::parse_str("f.dc", cases[0].0).unwrap();
    assert_eq!(dc.class_by_name("Missing").unwrap().id(), 0);
    assert_eq!(dc.class_by_name("B").unwrap().id(), 1);
    let c = dc.class_by_name("C").unwrap();
    let names: Vec<&str> = dc.inherited(c).map(|f| f.name()).collect();
    assert_eq!(names, ["f", "h"]);
    assert_eq!(dc.undefined_references().len(), 1);
    // A field of a never-defined type takes no value at all.
    let dc = otp_dc::DcFile::parse_str("f.dc", cases[1].0).unwrap();
    let a = dc.class_by_name("A").unwrap();
    let f = dc.field_by_name(a, "f").unwrap();
    assert!(dc.validate(f, &[1, 2, 3], Default::default()).is_err());
    assert!(dc.validate(f, &[], Default::default()).is_err());
    // Defining the parent afterwards is refused, as Panda3D refuses it.
    let e = otp_dc::DcFile::parse_str("f.dc", "dclass B : A {\n  f(uint8);\n};\ndclass A {\n};\n")
        .unwrap_err();
    assert!(e.message.contains("after its first reference"), "{e}");
}

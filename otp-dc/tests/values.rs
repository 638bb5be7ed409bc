//! Field values: defaults pack and validate, every truncation is refused without a panic,
//! ranges, lengths, array sizes and switch cases are enforced, random bytes never panic.

use otp_dc::{DcFile, ValidateOptions};
use std::path::Path;

fn dc() -> DcFile {
    DcFile::parse_files(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dc/constructs.dc")])
        .unwrap()
}

#[test]
fn every_default_validates_and_every_truncation_is_refused() {
    let dc = dc();
    let o = ValidateOptions::default();
    let mut checked = 0;
    for c in dc.classes() {
        for f in dc.inherited(c) {
            let v = dc.default_value(f);
            dc.validate_exact(f, &v, o)
                .unwrap_or_else(|e| panic!("{}.{}: default {:?}: {e}", c.name(), f.name(), v));
            for cut in 0..v.len() {
                assert!(
                    dc.validate_exact(f, &v[..cut], o).is_err(),
                    "{}.{} truncated to {cut}",
                    c.name(),
                    f.name()
                );
            }
            let mut longer = v.clone();
            longer.push(0);
            assert!(
                dc.validate_exact(f, &longer, o).is_err(),
                "trailing byte accepted"
            );
            checked += 1;
        }
    }
    assert!(checked > 30);
}

fn field<'a>(dc: &'a DcFile, class: &str, name: &str) -> &'a otp_dc::Field {
    dc.field_by_name(dc.class_by_name(class).unwrap(), name)
        .unwrap()
}

#[test]
fn constraints_are_enforced() {
    let dc = dc();
    let o = ValidateOptions::default();
    // string(1-32): length 0 refused, 3 accepted.
    let name = field(&dc, "Base", "setName");
    assert!(dc.validate_exact(name, &[0, 0], o).is_err());
    assert!(dc
        .validate_exact(name, &[3, 0, b'a', b'b', b'c'], o)
        .is_ok());
    // uint8(0-9, 20-29, 40) spread
    let chars = field(&dc, "Other", "setChars");
    for (v, ok) in [
        (0u8, true),
        (9, true),
        (10, false),
        (25, true),
        (40, true),
        (41, false),
    ] {
        assert_eq!(
            dc.validate_exact(chars, &[b'z', v], o).is_ok(),
            ok,
            "spread {v}"
        );
    }
    // char('a','q','x') in the Dna struct, and the switch: unknown gender falls to default.
    let dna = field(&dc, "Other", "setDna");
    // kind, torso, switch (gender 1: shirt, shirtColor), arm, setCode(code, owner)
    let good = [b'a', 1, 1, 2, 3, 4, 5, 1, 0, 0, 0];
    assert!(dc.validate_exact(dna, &good, o).is_ok());
    let mut bad_kind = good;
    bad_kind[0] = b'b';
    assert!(dc.validate_exact(dna, &bad_kind, o).is_err());
    let default_case = [b'q', 1, 7, 0x34, 0x12, 4, 5, 1, 0, 0, 0];
    assert!(
        dc.validate_exact(dna, &default_case, o).is_ok(),
        "gender 7 takes the default case (uint16)"
    );
    // Array sizes: Pair pairs[0, 3-5]: 1 element refused, 3 accepted.
    let nested = field(&dc, "Other", "setNested");
    let grid = [0u8; 12];
    let t = [0u8; 6];
    let pairs = |n: usize| {
        let mut v = grid.to_vec();
        v.extend_from_slice(&((n * 9) as u16).to_le_bytes());
        for _ in 0..n {
            v.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        v.extend_from_slice(&t);
        v
    };
    assert!(dc.validate_exact(nested, &pairs(0), o).is_ok());
    assert!(dc.validate_exact(nested, &pairs(1), o).is_err());
    assert!(dc.validate_exact(nested, &pairs(3), o).is_ok());
    assert!(dc.validate_exact(nested, &pairs(6), o).is_err());
    // Astron's 7-bit rule, as a switch.
    let hi = [2, 0, b'a', 0xC3];
    let label = field(&dc, "Base", "setName");
    assert!(dc.validate_exact(label, &hi, o).is_ok());
    assert!(dc
        .validate_exact(
            label,
            &hi,
            ValidateOptions {
                ascii_strings_only: true,
                ..Default::default()
            }
        )
        .is_err());
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let dc = dc();
    let fields: Vec<&otp_dc::Field> = dc.classes().iter().flat_map(|c| dc.inherited(c)).collect();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..200_000 {
        let f = fields[(rnd() as usize) % fields.len()];
        let mut v = if i % 2 == 0 {
            dc.default_value(f)
        } else {
            Vec::new()
        };
        let extra = (rnd() % 40) as usize;
        for _ in 0..extra {
            v.push(rnd() as u8);
        }
        if !v.is_empty() {
            let k = (rnd() as usize) % v.len();
            v[k] = rnd() as u8;
        }
        let _ = dc.validate(f, &v, ValidateOptions::default());
    }
}

#[test]
fn random_and_mutated_sources_never_panic() {
    let base = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dc/constructs.dc"))
        .unwrap();
    let mut seed = 42u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3_000 {
        let mut v = base.clone();
        for _ in 0..(1 + rnd() % 6) {
            if v.is_empty() {
                break;
            }
            let k = (rnd() as usize) % v.len();
            match rnd() % 3 {
                0 => {
                    let alphabet = b"{}()[];:,=/%*-<>'\"0aZ \n";
                    v[k] = alphabet[(rnd() as usize) % alphabet.len()];
                }
                1 => {
                    v.remove(k);
                }
                _ => v.truncate(k),
            }
        }
        let text = String::from_utf8_lossy(&v);
        let _ = DcFile::parse_str("mutated.dc", &text);
    }
}

#[test]
fn unpack_pack_format_and_json_round_trip() {
    let dc = dc();
    let mut checked = 0;
    for c in dc.classes() {
        for f in dc.inherited(c) {
            let bytes = dc.default_value(f);
            let (v, n) = dc
                .unpack(f, &bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", f.name()));
            assert_eq!(n, bytes.len());
            let again = dc
                .pack(f, &v)
                .unwrap_or_else(|e| panic!("{}: pack {v:?}: {e}", f.name()));
            assert_eq!(again, bytes, "{}", f.name());
            let json = dc.to_json(f, &bytes).unwrap();
            assert_eq!(
                dc.from_json(f, &json).unwrap(),
                bytes,
                "{} via {json}",
                f.name()
            );
            assert!(!dc.format(f, &bytes).unwrap().is_empty());
            checked += 1;
        }
    }
    assert!(checked > 30);
    let other = dc.class_by_name("Other").unwrap();
    let chars = dc.field_by_name(other, "setChars").unwrap();
    assert_eq!(
        dc.format(chars, &[b'z', 25]).unwrap(),
        "setChars(\"z\", 25)"
    );
    let mover = dc.class_by_name("Mover").unwrap();
    let h = dc.field_by_name(mover, "setH").unwrap();
    assert_eq!(
        dc.to_json(h, &1234i16.to_le_bytes()).unwrap(),
        serde_json::json!([123.4])
    );
    assert_eq!(
        dc.from_json(h, &serde_json::json!([123.4])).unwrap(),
        1234i16.to_le_bytes()
    );
}

#[test]
fn required_and_other_encodings() {
    let dc = dc();
    let child = dc.class_by_name("Child").unwrap();
    let o = ValidateOptions::default();
    let mut required = Vec::new();
    for &id in child.required_fields() {
        required.extend(dc.default_value(dc.field(id).unwrap()));
    }
    let parts = dc.split_required(child, &required, o).unwrap();
    assert_eq!(parts.len(), child.required_fields().len());
    assert!(dc
        .split_required(child, &required[..required.len() - 1], o)
        .is_err());
    let x = dc.field_by_name(child, "setX").unwrap();
    let mut other = vec![1, 0];
    other.extend_from_slice(&x.id().to_le_bytes());
    other.extend_from_slice(&5i16.to_le_bytes());
    assert_eq!(
        dc.split_other(child, &other, o).unwrap(),
        vec![(x.id(), 4..6)]
    );
    // A field of another class is refused.
    let base = dc.class_by_name("Base").unwrap();
    assert!(dc.split_other(base, &other, o).is_err());
}

//! Any bytes as a value of every field of a fixed schema: validation, unpacking and formatting
//! must never panic, and what validates must unpack and pack back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use otp_dc::{DcFile, ValidateOptions};

const SCHEMA: &str = include_str!("../../tests/dc/constructs.dc");

static DC: std::sync::OnceLock<DcFile> = std::sync::OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dc = DC.get_or_init(|| DcFile::parse_str("constructs.dc", SCHEMA).unwrap());
    let Some((&pick, bytes)) = data.split_first() else { return };
    let fields: Vec<_> = dc.classes().iter().flat_map(|c| dc.inherited(c)).collect();
    let f = fields[pick as usize % fields.len()];
    if let Ok(n) = dc.validate(f, bytes, ValidateOptions::default()) {
        let (v, m) = dc.unpack(f, bytes).expect("what validates unpacks");
        assert_eq!(n, m);
        let _ = dc.format(f, bytes);
        let _ = dc.pack(f, &v);
    }
});

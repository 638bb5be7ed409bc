//! Any bytes as a DC file: parsing and hashing must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(dc) = otp_dc::DcFile::parse_str("fuzz.dc", &text) {
        let _ = dc.hash();
    }
});

//! `cargo bench -p otp-dc`: parse time of the largest shared DC file (Toontown's 2003 schema)
//! and validation throughput of a typical field update.

use otp_dc::{DcFile, ValidateOptions};
use std::path::Path;
use std::time::Instant;

fn main() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/dc/toon-2003.dc");
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dc/constructs.dc");
    let path = if shared.exists() { shared } else { own };
    let text = std::fs::read_to_string(&path).unwrap();
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let dc = DcFile::parse_str("bench.dc", &text).unwrap();
        std::hint::black_box(dc.hash());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "parse+hash {} ({} lines): median {:.3} ms, min {:.3} ms (200 runs)",
        path.file_name().unwrap().to_string_lossy(),
        text.lines().count(),
        times[100] * 1e3,
        times[0] * 1e3
    );

    // A typical update: setPosHpr-like (six int16 with divisors/moduli) and a chat string.
    let dc = DcFile::parse_str(
        "bench.dc",
        "dclass A { setPosHpr(int16 / 10, int16 / 10, int16 / 10, int16 % 360 / 10, int16 % 360 / 10, int16 % 360 / 10) broadcast; setChat(string(0-256) text, uint32 sender) broadcast; };",
    )
    .unwrap();
    let a = dc.class_by_name("A").unwrap();
    let pos = dc.field_by_name(a, "setPosHpr").unwrap();
    let chat = dc.field_by_name(a, "setChat").unwrap();
    let pos_bytes = [1u8, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0];
    let mut chat_bytes = vec![40u8, 0];
    chat_bytes.extend_from_slice(b"Hello, Toontown! How are you today, Flippy?"[..40].as_ref());
    chat_bytes.extend_from_slice(&[1, 2, 3, 4]);
    let o = ValidateOptions {
        ascii_strings_only: true,
        ..Default::default()
    };
    let n = 5_000_000u64;
    for (name, field, bytes) in [
        ("setPosHpr (12 B)", pos, &pos_bytes[..]),
        ("setChat (46 B)", chat, &chat_bytes[..]),
    ] {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(dc.validate_exact(field, std::hint::black_box(bytes), o)).unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "validate {name}: {:.1} M fields/s, {:.0} MB/s",
            n as f64 / s / 1e6,
            (n as f64 * bytes.len() as f64) / s / 1e6
        );
    }
}

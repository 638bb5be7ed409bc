//! Validation, which the ClientAgent runs on every field a client sends, allocates nothing.

use otp_dc::{DcFile, ValidateOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn validating_every_field_allocates_nothing() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dc/constructs.dc");
    let dc = DcFile::parse_files(&[path]).unwrap();
    let cases: Vec<(&otp_dc::Field, Vec<u8>)> = dc
        .classes()
        .iter()
        .flat_map(|c| dc.inherited(c))
        .map(|f| (f, dc.default_value(f)))
        .collect();
    let o = ValidateOptions {
        ascii_strings_only: true,
        ..Default::default()
    };
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..100 {
        for (f, bytes) in &cases {
            assert!(dc.validate_exact(f, bytes, o).is_ok());
        }
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        before,
        "validation allocated"
    );
}

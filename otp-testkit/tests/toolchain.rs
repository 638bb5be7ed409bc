//! Canaries for compiler bugs this project has met: each test runs, in the project's own build,
//! the smallest program a known-bad rustc miscompiles, and fails with the upstream issue's
//! number instead of corrupting the heap. They only mean something in an optimised build
//! (`cargo test --release`, as `scripts/test` runs them); docs/notes/heap-corruption-2026-11.md
//! tells the story.

use std::cell::Cell;

/// The test payload shape of tests/common/mod.rs: a builder that owns a Vec.
struct P(Vec<u8>);

impl P {
    fn new() -> P {
        P(Vec::new())
    }
}

/// Calls `f` twice, each time with a fresh `P::new()`. At opt-level 2 and 3, rustc 1.95 (and
/// releases back to 1.77, by the upstream bisection) gives the second call the first call's
/// argument instead. MIR GVN finds the two `(P::new(),)` tuples equal and passes one local
/// twice. Codegen passes it by reference, without the copy that the closure-call ABI needs,
/// so what the first call wrote there (a buffer it grew, later freed) reaches the second call
/// (rust-lang/rust#155241).
fn twice(f: &dyn Fn(P) -> P) -> [Vec<u8>; 2] {
    [f(P::new()).0, f(P::new()).0]
}

#[test]
fn a_closure_called_twice_gets_a_fresh_argument_each_time() {
    let stale = Cell::new(0);
    let out = twice(&|mut p: P| {
        if p.0.capacity() != 0 {
            // Not the empty Vec the caller built: the previous call's buffer. Leak it rather
            // than free it twice, and count it.
            stale.set(stale.get() + 1);
            std::mem::forget(p);
            p = P::new();
        }
        p.0.extend_from_slice(b"waitEmpty");
        p
    });
    assert_eq!(
        stale.get(),
        0,
        "this rustc miscompiles a `dyn Fn` called twice with equal by-value arguments \
         (rust-lang/rust#155241, heap corruption): build otpd with a toolchain that has the fix"
    );
    assert_eq!(out, [b"waitEmpty", b"waitEmpty"]);
}

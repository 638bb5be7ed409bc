//! Stop requests: SIGTERM and SIGINT (counted by a signal handler that only increments an
//! atomic), and the admin API's `shutdown`, which counts as one. The first asks for a clean
//! stop, a second for an immediate one (`cli::run` acts on them).

use std::sync::atomic::{AtomicUsize, Ordering};

static REQUESTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic increment.
    REQUESTS.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT.
pub fn install() {
    // SAFETY: `on_signal` only increments an atomic; the sigaction is fully initialised.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Stop requests so far.
pub fn requests() -> usize {
    REQUESTS.load(Ordering::SeqCst)
}

/// Asks for a stop, as a signal does.
pub fn request() {
    REQUESTS.fetch_add(1, Ordering::SeqCst);
}

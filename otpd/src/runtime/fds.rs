//! File descriptors kept for the cluster's own connections: client connections are capped at
//! RLIMIT_NOFILE minus `reserved_fds`, so MD participants, the database and log files always
//! find a descriptor; and a spare descriptor lets a listener that hit EMFILE take the
//! waiting connection off its backlog and close it, rather than spin on it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Client connections open in the whole process, and their cap.
pub(crate) struct ClientBudget {
    open: AtomicUsize,
    pub max: usize,
}

impl ClientBudget {
    /// The cap from the process's soft RLIMIT_NOFILE and the reserve (`usize::MAX` when the
    /// limit is unknown or infinite).
    pub(crate) fn from_rlimit(reserved: usize) -> ClientBudget {
        let limit = nofile_limit();
        let max = match limit {
            Some(n) => n.saturating_sub(reserved),
            None => usize::MAX,
        };
        if let Some(n) = limit {
            if max == 0 {
                log::warn!(
                    "the open-file limit ({n}) is not above reserved_fds ({reserved}): no client can connect; raise `ulimit -n`"
                );
            } else {
                log::info!(
                    "client connections: at most {max} (open-file limit {n} minus reserved_fds {reserved})"
                );
            }
        }
        ClientBudget {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// Counts a new client connection; false (nothing counted) at the cap.
    pub(crate) fn take(&self) -> bool {
        self.open
            .try_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn give_back(&self) {
        let _ = self
            .open
            .try_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

fn nofile_limit() -> Option<usize> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then(|| r.rlim_cur.min(usize::MAX as u64) as usize)
}

/// One descriptor held in reserve (`/dev/null`), given up for a moment when accept fails with
/// EMFILE/ENFILE.
pub(super) struct Spare(Option<std::fs::File>);

impl Spare {
    pub(super) fn new() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }

    /// Frees the spare descriptor, runs `accept_and_drop` (which takes one waiting connection
    /// and closes it), and takes the spare back. Whether a connection was dropped.
    pub(super) fn shed<F: FnOnce() -> bool>(&mut self, accept_and_drop: F) -> bool {
        self.0 = None;
        let shed = accept_and_drop();
        self.0 = std::fs::File::open("/dev/null").ok();
        shed
    }
}

impl Default for Spare {
    fn default() -> Self {
        Spare::new()
    }
}

/// Whether an accept error means the process (or the system) is out of descriptors.
pub(super) fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A file size limit (`ulimit -f`) fails the write that passes it (EFBIG: the database refuses
/// writes and keeps reading, a log line is lost) instead of killing the whole process with
/// SIGXFSZ.
pub(super) fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_stops_at_its_cap() {
        let b = ClientBudget {
            open: AtomicUsize::new(0),
            max: 2,
        };
        assert!(b.take() && b.take());
        assert!(!b.take());
        b.give_back();
        assert!(b.take());
        assert_eq!(b.open(), 2);
    }
}

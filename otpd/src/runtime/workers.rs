//! Worker threads, one mechanism for all blocking work (roles' database queries, sessions'
//! password hashing): a thread takes requests from a bounded queue a batch at a time, runs them
//! and posts each answer to its core's inbox, waiting for room rather than dropping it.

use super::{Batch, CoreMsg, Shared};
use crate::clientagent::session::SessionJob;
use crate::md::Pid;
use crossbeam_channel::Receiver;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker waits before offering an answer again to a core whose queue is full (a
/// full queue drains within a loop turn).
const RETRY: Duration = Duration::from_micros(200);

/// One client session's job, and where its answer goes.
pub(crate) struct JobRequest {
    pub core: usize,
    pub slot: usize,
    pub pid: Pid,
    pub job: SessionJob,
}

/// Starts worker thread `name`. It waits for a request, takes up to `batch` of those queued,
/// hands them to `run`, and posts the `(core, message)` answers `run` returns, in order. It
/// ends when every sender of `requests` has gone.
pub(crate) fn spawn<T, F>(
    name: String,
    shared: Arc<Shared>,
    requests: Receiver<T>,
    batch: usize,
    mut run: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Vec<(usize, CoreMsg)> + Send + 'static,
{
    let batch = batch.max(1);
    std::thread::Builder::new().name(name).spawn(move || {
        while let Ok(first) = requests.recv() {
            let mut taken = Vec::with_capacity(batch);
            taken.push(first);
            while taken.len() < batch {
                match requests.try_recv() {
                    Ok(r) => taken.push(r),
                    Err(_) => break,
                }
            }
            for (core, msg) in run(taken) {
                post(&shared, core, msg);
            }
        }
    })
}

/// Hands `msg` to `core`, waiting for room in its queue.
fn post(shared: &Shared, core: usize, msg: CoreMsg) {
    let mut batch = Batch::new(core);
    batch.extra.push(msg);
    while let Err(back) = shared.send(core, batch) {
        batch = back;
        std::thread::sleep(RETRY);
    }
}

/// Starts job worker `i` of the pool (`password_workers` threads sharing one queue of
/// `password_queue` jobs; past it a job is answered `JobResult::Unavailable` at once, and the
/// login gets "busy, try again"): client sessions' slow work, one job at a time, each answered
/// as a `CoreMsg::ClientJobDone` to the core of its client. It runs for the life of the
/// process (the shared state keeps its queue open).
pub(super) fn spawn_job_worker(
    i: usize,
    shared: Arc<Shared>,
    jobs: Receiver<JobRequest>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    spawn(format!("otpd-jobs-{i}"), shared, jobs, 1, |requests| {
        requests
            .into_iter()
            .map(|req| {
                let result = req.job.run();
                let msg = CoreMsg::ClientJobDone {
                    slot: req.slot,
                    pid: req.pid,
                    id: req.job.id(),
                    result,
                };
                (req.core, msg)
            })
            .collect()
    })
}

//! The job worker: one thread that does client sessions' slow work (password hashing, tens of
//! milliseconds by design) so that no core's event loop waits on it. A core hands it a
//! `JobRequest`; the answer goes back to that core as a `CoreMsg::ClientJobDone`.

use super::{Batch, CoreMsg, Shared};
use crate::clientagent::session::SessionJob;
use crate::md::Pid;
use crossbeam_channel::Receiver;
use std::sync::Arc;
use std::time::Duration;

/// Jobs waiting for the worker at most; past it a job is answered `JobResult::Unavailable`
/// at once (a login then gets "busy, try again").
pub const MAX_QUEUED_JOBS: usize = 256;

/// One job, and where its answer goes.
pub struct JobRequest {
    pub core: usize,
    pub slot: usize,
    pub pid: Pid,
    pub job: SessionJob,
}

pub fn spawn_worker(
    shared: Arc<Shared>,
    jobs: Receiver<JobRequest>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("otpd-jobs".into())
        .spawn(move || {
            // Runs for the life of the process (the shared state keeps its queue open).
            for req in jobs.iter() {
                let result = req.job.run();
                let mut batch = Batch::new(req.core);
                batch.extra.push(CoreMsg::ClientJobDone {
                    slot: req.slot,
                    pid: req.pid,
                    id: req.job.id(),
                    result,
                });
                // A full inbox drains within a loop turn: wait for room, never drop an answer.
                while let Err(back) = shared.send(req.core, batch) {
                    batch = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
}

//! A pool of work loops in this process, with the ways it stops: the job is gathered (a
//! local run), a stop signal (finish the tasks in hand; a second signal, or a grace period
//! later, give them back), or a time without work.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::batch::job::RunOptions;
use crate::batch::worker::{self, Jobs};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Work loops sharing one set of jobs.
pub struct Pool {
    jobs: Arc<Jobs>,
    handles: Vec<JoinHandle<Result<()>>>,
    watchers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Start `workers` loops taking tasks for `jobs`, named after `opts.worker_name`.
    pub fn start(jobs: Arc<Jobs>, opts: &RunOptions, workers: usize) -> Pool {
        let handles = (0..workers)
            .map(|w| {
                let (jobs, opts) = (jobs.clone(), opts.clone());
                let name = format!("{}-{w}", opts.worker_name);
                tokio::spawn(async move { worker::work_loop(jobs, name, &opts).await })
            })
            .collect();
        Pool { jobs, handles, watchers: Vec::new() }
    }

    /// A pool serving any job of `engine` until stopped (with no loops when `workers` is 0:
    /// `sluicebox watch` that only starts jobs).
    pub fn serve(engine: &Engine, opts: &RunOptions, workers: usize) -> Pool {
        let jobs = Jobs::serve(engine.clone(), opts.allow.clone(), Default::default(), Default::default());
        Pool::start(Arc::new(jobs), opts, workers)
    }

    /// The jobs the pool works.
    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    /// Stop taking tasks; the loops finish the ones in hand.
    pub fn stop(&self) {
        self.jobs.stop_token().cancel();
    }

    /// Whether the pool was told to stop.
    pub fn is_stopping(&self) -> bool {
        self.jobs.stop_token().is_cancelled()
    }

    /// On SIGTERM or Ctrl-C, stop taking tasks and finish the ones in hand; on a second
    /// signal, or `grace` later, give them back to the queue.
    pub fn stop_on_signals(&mut self, grace: Duration) {
        let (stop, abort) = (self.jobs.stop_token().clone(), self.jobs.abort_token().clone());
        self.watchers.push(tokio::spawn(async move {
            if stop_signal().await.is_err() {
                return;
            }
            tracing::warn!("stopping: finishing the tasks in hand (signal again to give them back now)");
            stop.cancel();
            tokio::select! {
                _ = stop_signal() => {}
                _ = tokio::time::sleep(grace) => {}
            }
            abort.cancel();
        }));
    }

    /// Stop once no task has been in hand for `idle`.
    pub fn stop_when_idle(&mut self, idle: Duration) {
        let jobs = self.jobs.clone();
        self.watchers.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500).min(idle)).await;
                if jobs.idle_for() >= idle {
                    jobs.stop_token().cancel();
                    return;
                }
            }
        }));
    }

    /// Wait for every loop to end; the first error, if any.
    pub async fn join(self) -> Result<()> {
        let mut result = Ok(());
        for h in self.handles {
            let r = h.await.map_err(|e| Error::internal("worker", "worker task panicked", e)).and_then(|r| r);
            if let Err(e) = r {
                // The other loops stop too: a run ends with its first error.
                self.jobs.stop_token().cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        for w in self.watchers {
            w.abort();
        }
        result
    }
}

/// The first SIGTERM or Ctrl-C.
pub async fn stop_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

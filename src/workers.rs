//! The worker arbiters: one actix arbiter (an OS thread with its own
//! single-threaded runtime) per core.
//!
//! Each worker serves the gRPC connections it is handed and hosts one
//! instance of each store actor, with that instance's own connection pool.
//! A request is therefore handled start to finish on one thread: the
//! connection's task, the message to the local store instance, the Redis or
//! Postgres I/O, and the reply. Nothing crosses threads on the hot path, so
//! no wakeup costs a context switch, and the cores scale out by connection
//! (the acceptor deals connections to workers in turn).
//!
//! Work that must not share a core with I/O (argon2) stays on its own
//! `SyncArbiter` threads; ops HTTP and the metrics sampler run on the System
//! arbiter.

use std::cell::Cell;

use actix::{Arbiter, ArbiterHandle};

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the calling thread, if it is one.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// The running worker arbiters.
pub struct Workers {
    arbiters: Vec<Arbiter>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> Self {
        let arbiters = (0..count.max(1))
            .map(|index| {
                // The factory runs on the new thread, before anything else
                // does, so every task there sees its index.
                Arbiter::with_tokio_rt(move || {
                    CURRENT.with(|c| c.set(Some(index)));
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("cannot start a worker runtime")
                })
            })
            .collect();
        Self { arbiters }
    }

    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    pub fn handles(&self) -> impl Iterator<Item = ArbiterHandle> + '_ {
        self.arbiters.iter().map(Arbiter::handle)
    }

    /// Stops every worker once it has run what is already queued.
    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_knows_its_index() {
        actix_rt::System::new().block_on(async {
            let workers = Workers::start(3);
            let mut seen = Vec::new();
            for handle in workers.handles() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                handle.spawn_fn(move || {
                    let _ = tx.send(current());
                });
                seen.push(rx.await.expect("worker answers"));
            }
            assert_eq!(seen, vec![Some(0), Some(1), Some(2)]);
            assert_eq!(current(), None, "the System thread is no worker");
        });
    }
}

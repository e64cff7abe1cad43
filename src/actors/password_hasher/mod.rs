//! The `PasswordHasher` actor: argon2 work on a `SyncArbiter` of dedicated OS
//! threads, so a login storm saturates those threads (and is then refused with
//! RESOURCE_EXHAUSTED by the bounded mailbox) while the async I/O path that
//! serves GetMe keeps its core.

mod hasher;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Instant,
};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};

pub use hasher::{Argon2Hasher, HashError, Scheme, Verification, Workspace};

use super::{ActorClient, ActorState, ActorStats, Traced};
use crate::{
    domain::{Password, PasswordHash},
    telemetry::metrics::Metrics,
};

pub const NAME: &str = "PasswordHasher";

/// Hash a new password with argon2id.
pub struct HashPassword(pub Password);

impl Message for HashPassword {
    type Result = Result<PasswordHash, HashError>;
}

/// Verify a password; `stored: None` (unknown account) still costs one verify.
pub struct VerifyPassword {
    pub password: Password,
    pub stored: Option<PasswordHash>,
}

impl Message for VerifyPassword {
    type Result = Result<Verification, HashError>;
}

pub struct PasswordHasher {
    hasher: Arc<Argon2Hasher>,
    /// This thread's argon2 memory, reused by every hash.
    workspace: Workspace,
    stats: Arc<ActorStats>,
    metrics: Metrics,
}

impl PasswordHasher {
    /// Starts `threads` workers sharing one mailbox. A worker whose handler
    /// panics is replaced by a fresh one (`SyncContext` restarts on stop).
    pub fn start(
        hasher: Argon2Hasher,
        threads: usize,
        stats: Arc<ActorStats>,
        metrics: Metrics,
    ) -> ActorClient<Self> {
        let hasher = Arc::new(hasher);
        let factory_stats = Arc::clone(&stats);
        let addr: Addr<Self> = SyncArbiter::start(threads.max(1), move || Self {
            hasher: Arc::clone(&hasher),
            workspace: Workspace::default(),
            stats: Arc::clone(&factory_stats),
            metrics: metrics.clone(),
        });
        ActorClient::new(addr, stats)
    }

    /// Runs argon2 work, turning a panic into an error and a worker restart
    /// instead of a silently lost thread.
    fn guarded<T>(
        &mut self,
        ctx: &mut SyncContext<Self>,
        work: impl FnOnce(&Argon2Hasher, &mut Workspace) -> Result<T, HashError>,
    ) -> Result<T, HashError> {
        let (hasher, workspace) = (&self.hasher, &mut self.workspace);
        match catch_unwind(AssertUnwindSafe(|| work(hasher, workspace))) {
            Ok(result) => result,
            Err(_) => {
                use actix::ActorContext as _;
                self.stats.record_error("hasher worker panicked; restarting it");
                self.stats.record_restart();
                ctx.stop();
                Err(HashError::WorkerPanicked)
            }
        }
    }

    fn observe(&self, operation: &str, scheme: Scheme, started: Instant) {
        self.metrics
            .password_hash_seconds
            .with_label_values(&[operation, scheme.label()])
            .observe(started.elapsed().as_secs_f64());
    }
}

impl Actor for PasswordHasher {
    type Context = SyncContext<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.stats.set_state(ActorState::Running);
    }
}

impl Handler<Traced<HashPassword>> for PasswordHasher {
    type Result = Result<PasswordHash, HashError>;

    fn handle(&mut self, msg: Traced<HashPassword>, ctx: &mut Self::Context) -> Self::Result {
        let (HashPassword(password), span, _ticket) = msg.open();
        let _entered = span.enter();
        let started = Instant::now();
        let result = self.guarded(ctx, |h, memory| h.hash(&password, memory));
        self.observe("hash", Scheme::Argon2id, started);
        result
    }
}

impl Handler<Traced<VerifyPassword>> for PasswordHasher {
    type Result = Result<Verification, HashError>;

    fn handle(&mut self, msg: Traced<VerifyPassword>, ctx: &mut Self::Context) -> Self::Result {
        let (VerifyPassword { password, stored }, span, _ticket) = msg.open();
        let _entered = span.enter();
        let started = Instant::now();
        let result = self.guarded(ctx, |h, memory| h.verify(&password, stored.as_ref(), memory));
        if let Ok(v) = &result {
            self.observe("verify", v.scheme, started);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a bug inside argon2: its handling panics.
    struct Explode;

    impl Message for Explode {
        type Result = Result<(), HashError>;
    }

    impl Handler<Traced<Explode>> for PasswordHasher {
        type Result = Result<(), HashError>;

        fn handle(&mut self, msg: Traced<Explode>, ctx: &mut Self::Context) -> Self::Result {
            let (Explode, _span, _ticket) = msg.open();
            self.guarded(ctx, |_, _| panic!("simulated hasher bug"))
        }
    }

    #[test]
    fn a_panicking_worker_is_replaced_and_the_hasher_recovers() {
        actix_rt::System::new().block_on(async {
            let metrics = Metrics::new().expect("metrics");
            let stats = ActorStats::new(NAME, 4, metrics.clone());
            let hasher = Argon2Hasher::new(1024, 1, 1).expect("params");
            // One thread: if the panic killed it, nothing would answer after.
            let client = PasswordHasher::start(hasher, 1, Arc::clone(&stats), metrics);

            let outcome = client.call(Explode).await.expect("delivered");
            assert!(matches!(outcome, Err(HashError::WorkerPanicked)), "{outcome:?}");
            assert_eq!(stats.snapshot().restarts, 1);
            assert!(stats.snapshot().last_error.is_some());

            let password = Password::parse_new("still works after".into()).expect("valid");
            let hash = client.call(HashPassword(password.clone())).await.expect("delivered");
            let hash = hash.expect("a fresh worker hashes");
            let verified = client
                .call(VerifyPassword { password, stored: Some(hash) })
                .await
                .expect("delivered")
                .expect("verifies");
            assert!(verified.matches);
        });
    }
}

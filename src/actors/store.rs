//! What the two store actors (`UserStore`, `SessionStore`) share: running a
//! repository call as a concurrent actor future, and turning the outcomes into
//! health state and, after repeated outages, a supervised restart.

use std::{fmt, sync::Arc, time::Instant};

use actix::{
    Actor, ActorContext as _, ActorFutureExt as _, Context, Message, ResponseActFuture,
    WrapFuture as _,
};
use tracing::{Instrument as _, Span};

use super::{ActorState, ActorStats, RestartPolicy, Ticket};
use crate::error::{Dependency, DependencyError};

/// Readiness probe of a store's dependency, plus a pool sample for metrics.
pub struct CheckHealth;

impl Message for CheckHealth {
    type Result = (Result<(), DependencyError>, PoolSample);
}

/// A point-in-time view of a connection pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSample {
    pub max_size: u32,
    pub connections: u32,
    pub idle: u32,
    pub pending_gets: u64,
    pub timeouts: u64,
}

impl PoolSample {
    pub fn of<M: bb8::ManageConnection>(pool: &bb8::Pool<M>) -> Self {
        let state = pool.state();
        Self {
            max_size: pool.config().max_size,
            connections: state.connections,
            idle: state.idle_connections,
            pending_gets: state.statistics.pending_gets(),
            timeouts: state.statistics.get_timed_out,
        }
    }
}

/// Errors that may mean the dependency is down.
pub trait Outage {
    fn is_outage(&self) -> bool;
}

impl Outage for DependencyError {
    fn is_outage(&self) -> bool {
        self.outage
    }
}

/// A store's view of its dependency's health.
pub struct StoreHealth {
    stats: Arc<ActorStats>,
    restarts: RestartPolicy,
    /// The repository may be used (for the user store: schema migrated).
    ready: bool,
    /// Repository calls running now.
    in_flight: usize,
    /// A restart was decided; it happens once `in_flight` drains, so work
    /// that already reached the dependency (a committed INSERT) still gets
    /// its true answer.
    restart_pending: bool,
}

impl StoreHealth {
    pub fn new(stats: Arc<ActorStats>, restarts: RestartPolicy) -> Self {
        Self { stats, restarts, ready: false, in_flight: 0, restart_pending: false }
    }

    /// Forgets per-incarnation state; called when the supervisor restarts.
    pub fn reset(&mut self) {
        self.in_flight = 0;
        self.restart_pending = false;
        self.set_ready(false);
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        &self.stats
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
        self.stats.set_state(if ready { ActorState::Running } else { ActorState::Starting });
    }

    /// Records the outcome of a repository call; `true` means the actor
    /// should restart now (the decision is deferred until in-flight calls
    /// finish).
    fn observe<E: Outage + fmt::Display>(&mut self, error: Option<&E>) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        match error {
            Some(e) if e.is_outage() => {
                self.stats.record_error(e.to_string());
                self.stats.set_state(ActorState::Degraded);
                if self.restarts.record_outage(Instant::now()) {
                    self.restart_pending = true;
                }
            }
            _ => {
                self.restarts.record_success();
                if self.ready {
                    self.stats.set_state(ActorState::Running);
                }
            }
        }
        self.restart_pending && self.in_flight == 0
    }
}

pub trait Store: Actor<Context = Context<Self>> {
    const NAME: &'static str;
    const DEPENDENCY: Dependency;
    type Repo: 'static;

    fn health(&mut self) -> &mut StoreHealth;

    /// The repository, or why it cannot be used yet.
    fn repo(&self, operation: &'static str) -> Result<Self::Repo, DependencyError>;

    /// Runs a repository call as a future the context polls alongside others
    /// (so the actor takes the next message at once). The ticket is released
    /// with the reply; the outcome feeds the restart policy. Calls refused
    /// before reaching the dependency (not ready yet, restart pending) do not:
    /// a slow migration is not an outage.
    fn run<T, E, Fut>(
        &mut self,
        span: Span,
        ticket: Ticket,
        operation: &'static str,
        call: impl FnOnce(Self::Repo) -> Fut,
    ) -> ResponseActFuture<Self, Result<T, E>>
    where
        T: 'static,
        E: From<DependencyError> + Outage + fmt::Display + 'static,
        Fut: Future<Output = Result<T, E>> + 'static,
    {
        let repo = if self.health().restart_pending {
            Err(DependencyError::outage(Self::DEPENDENCY, operation, "restarting its pool"))
        } else {
            self.repo(operation)
        };
        let repo = match repo {
            Ok(repo) => repo,
            Err(e) => {
                drop(ticket);
                return Box::pin(actix::fut::ready(Err(E::from(e))));
            }
        };
        self.health().in_flight += 1;
        let work = call(repo);
        Box::pin(work.instrument(span).into_actor(self).map(move |result, act, ctx| {
            drop(ticket);
            if act.health().observe(result.as_ref().err()) {
                tracing::warn!(
                    actor = Self::NAME,
                    "repeated dependency outages; restarting with a fresh pool"
                );
                ctx.stop();
            }
            result
        }))
    }
}

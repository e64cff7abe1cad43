//! What the two store actors (`UserStore`, `SessionStore`) share: running a
//! repository call as a concurrent actor future, and turning the outcomes into
//! health state and, after repeated outages, a supervised restart.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

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
    /// Consecutive outages, across restarts.
    outage_streak: u32,
    /// Circuit breaker: until then, calls fail at once instead of each
    /// waiting out the pool's connect timeout (bb8 holds a caller for the
    /// whole `connect_timeout_ms` while the dependency is down, longer than
    /// many clients' deadlines). Health probes still go through and close
    /// it on the first success.
    open_until: Option<Instant>,
    /// How long the breaker stays open after each outage once the streak
    /// reaches the failure threshold: the pool's connect timeout, which is
    /// what a caller would wait anyway and how long a probe takes to fail,
    /// so back-to-back probes keep it open until one succeeds.
    breaker_cooldown: Duration,
}

/// The operation name of health probes, which the breaker lets through.
pub const PROBE_OPERATION: &str = "ping";

impl StoreHealth {
    pub fn new(
        stats: Arc<ActorStats>,
        restarts: RestartPolicy,
        breaker_cooldown: Duration,
    ) -> Self {
        Self {
            stats,
            restarts,
            breaker_cooldown,
            ready: false,
            in_flight: 0,
            restart_pending: false,
            outage_streak: 0,
            open_until: None,
        }
    }

    fn breaker_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
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
                let now = Instant::now();
                self.stats.record_error(e.to_string());
                self.stats.set_state(ActorState::Degraded);
                self.outage_streak = self.outage_streak.saturating_add(1);
                if self.outage_streak >= self.restarts.threshold() {
                    self.open_until = Some(now + self.breaker_cooldown);
                }
                if self.restarts.record_outage(now) {
                    self.restart_pending = true;
                }
            }
            _ => {
                self.outage_streak = 0;
                self.open_until = None;
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
    /// with the reply; the outcome feeds the restart policy and the breaker.
    /// Calls refused before reaching the dependency (not ready yet, restart
    /// pending, circuit open) do not: a slow migration is not an outage.
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
        let health = self.health();
        let repo = if health.restart_pending {
            Err(DependencyError::outage(Self::DEPENDENCY, operation, "restarting its pool"))
        } else if operation != PROBE_OPERATION && health.breaker_open(Instant::now()) {
            Err(DependencyError::outage(Self::DEPENDENCY, operation, "down (circuit open)"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::Dependency, telemetry::metrics::Metrics};

    fn health(threshold: u32) -> StoreHealth {
        let stats = ActorStats::new("Test", 8, Metrics::new().expect("metrics"));
        let policy = RestartPolicy::new(threshold, Duration::from_secs(30));
        let mut health = StoreHealth::new(stats, policy, Duration::from_secs(2));
        health.set_ready(true);
        health
    }

    fn outage() -> DependencyError {
        DependencyError::outage(Dependency::Postgres, "q", "refused")
    }

    #[test]
    fn the_breaker_opens_at_the_threshold_and_a_success_closes_it() {
        let mut h = health(3);
        let now = Instant::now();
        for _ in 0..2 {
            h.in_flight += 1;
            h.observe(Some(&outage()));
            assert!(!h.breaker_open(now), "below the threshold");
        }
        h.in_flight += 1;
        h.observe(Some(&outage()));
        assert!(h.breaker_open(Instant::now()));
        assert!(!h.breaker_open(Instant::now() + Duration::from_secs(3)), "cools down");
        h.in_flight += 1;
        h.observe::<DependencyError>(None);
        assert!(!h.breaker_open(Instant::now()), "a success closes it");
    }

    #[test]
    fn a_restart_waits_for_in_flight_calls() {
        let mut h = health(1);
        h.in_flight = 2;
        assert!(!h.observe(Some(&outage())), "one call still running");
        assert!(h.restart_pending);
        assert!(h.observe::<DependencyError>(None), "restart once the last call is back");
    }

    #[test]
    fn rejected_queries_are_not_outages() {
        let mut h = health(1);
        h.in_flight = 1;
        let bug = DependencyError::rejected(Dependency::Postgres, "q", "check violation");
        assert!(!h.observe(Some(&bug)));
        assert!(!h.restart_pending && !h.breaker_open(Instant::now()));
    }
}

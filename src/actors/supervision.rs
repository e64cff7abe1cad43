//! Supervision of the store actors: when repeated outages restart an
//! instance ([`RestartPolicy`], [`Restart`]), and one instance's view of its
//! dependency's health ([`StoreHealth`]): the circuit breaker, a restart
//! deferred until calls in flight are back, and whether a recent success
//! answers a health probe.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::Message;

use super::stats::{ActorState, ActorStats};
use crate::error::Outage;

/// When a store actor should restart itself: after `threshold` consecutive
/// outages, no sooner than `backoff` after its previous restart, the backoff
/// doubling up to `max_backoff` while outages persist.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    threshold: u32,
    max_backoff: Duration,
    consecutive_outages: u32,
    backoff: Duration,
    last_restart: Option<Instant>,
}

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);

impl RestartPolicy {
    pub fn new(threshold: u32, max_backoff: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            max_backoff: max_backoff.max(INITIAL_BACKOFF),
            consecutive_outages: 0,
            backoff: INITIAL_BACKOFF,
            last_restart: None,
        }
    }

    pub fn from_settings(actors: &crate::config::ActorSettings) -> Self {
        Self::new(actors.failure_threshold, Duration::from_secs(actors.restart_backoff_max_secs))
    }

    /// Consecutive outages that trigger a restart.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn record_success(&mut self) {
        self.consecutive_outages = 0;
        // Once the last restart is a full maximum backoff in the past, the
        // next outage spell starts again from the initial backoff.
        if self.last_restart.is_some_and(|t| t.elapsed() >= self.max_backoff) {
            self.backoff = INITIAL_BACKOFF;
        }
    }

    /// Records an outage; `true` means "restart now".
    pub fn record_outage(&mut self, now: Instant) -> bool {
        self.consecutive_outages = self.consecutive_outages.saturating_add(1);
        if self.consecutive_outages < self.threshold {
            return false;
        }
        if self.last_restart.is_some_and(|t| now.duration_since(t) < self.backoff) {
            return false;
        }
        if self.last_restart.is_some() {
            self.backoff = (self.backoff * 2).min(self.max_backoff);
        }
        self.last_restart = Some(now);
        self.consecutive_outages = 0;
        true
    }
}

/// Asks a store instance to stop so its supervisor restarts it with a fresh
/// pool; sent by its own calls once the restart policy says so.
pub struct Restart;

impl Message for Restart {
    type Result = ();
}

/// How recently a call must have succeeded for a health probe to take it as
/// the answer instead of sending one of its own: under load the dependency
/// proves itself many times a second, and a probe queued behind that load
/// (or refused a pooled connection) would say nothing about it.
const RECENT_SUCCESS: Duration = Duration::from_secs(1);

/// One store instance's view of its dependency's health. Shared (`Rc`)
/// between the actor and the calls it started, which all run on the
/// instance's thread.
pub struct StoreHealth {
    stats: Arc<ActorStats>,
    /// Which instance of the store this is.
    instance: usize,
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
    /// When a call last succeeded, cleared by an outage.
    last_success: Option<Instant>,
}

impl StoreHealth {
    pub fn new(
        stats: Arc<ActorStats>,
        instance: usize,
        restarts: RestartPolicy,
        breaker_cooldown: Duration,
    ) -> Self {
        Self {
            stats,
            instance,
            restarts,
            breaker_cooldown,
            ready: false,
            in_flight: 0,
            restart_pending: false,
            outage_streak: 0,
            open_until: None,
            last_success: None,
        }
    }

    fn breaker_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    /// Why a call must not reach the dependency now, if it must not: a
    /// restart is pending, or (but for health probes) the circuit is open.
    pub fn refusal(&self, probe: bool, now: Instant) -> Option<&'static str> {
        if self.restart_pending {
            Some("restarting its pool")
        } else if !probe && self.breaker_open(now) {
            Some("down (circuit open)")
        } else {
            None
        }
    }

    /// A repository call starts.
    pub fn call_started(&mut self) {
        self.in_flight += 1;
    }

    /// Forgets per-incarnation state; called when the supervisor restarts.
    pub fn reset(&mut self) {
        self.in_flight = 0;
        self.restart_pending = false;
        self.last_success = None;
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
        self.set_state(if ready { ActorState::Running } else { ActorState::Starting });
    }

    pub fn set_state(&self, state: ActorState) {
        self.stats.set_instance_state(self.instance, state);
    }

    /// The dependency answered a call within [`RECENT_SUCCESS`].
    pub fn answered_recently(&self, now: Instant) -> bool {
        self.ready && self.last_success.is_some_and(|t| now.duration_since(t) < RECENT_SUCCESS)
    }

    /// A repository call panicked: restart as soon as the calls in flight
    /// are back (`true`: now).
    pub fn panicked(&mut self) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stats.record_error("a call panicked; restarting".to_owned());
        self.restart_pending = true;
        self.in_flight == 0
    }

    /// Records the outcome of a repository call; `true` means the actor
    /// should restart now (the decision is deferred until in-flight calls
    /// finish).
    pub fn observe<E: Outage + fmt::Display>(&mut self, error: Option<&E>) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        match error {
            Some(e) if e.is_outage() => {
                let now = Instant::now();
                self.stats.record_error(e.to_string());
                self.set_state(ActorState::Degraded);
                self.last_success = None;
                self.outage_streak = self.outage_streak.saturating_add(1);
                if self.outage_streak >= self.restarts.threshold() {
                    self.open_until = Some(now + self.breaker_cooldown);
                }
                if self.restarts.record_outage(now) {
                    self.restart_pending = true;
                }
            }
            // Busy (our own overload) and rejected statements say nothing
            // about the dependency's health.
            Some(_) => {}
            None => {
                self.outage_streak = 0;
                self.open_until = None;
                self.last_success = Some(Instant::now());
                self.restarts.record_success();
                if self.ready {
                    self.set_state(ActorState::Running);
                }
            }
        }
        self.restart_pending && self.in_flight == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        error::{Dependency, DependencyError},
        telemetry::metrics::Metrics,
    };

    #[test]
    fn restarts_after_threshold_then_backs_off() {
        let mut policy = RestartPolicy::new(3, Duration::from_secs(8));
        let t0 = Instant::now();
        assert!(!policy.record_outage(t0));
        assert!(!policy.record_outage(t0));
        assert!(policy.record_outage(t0), "third consecutive outage restarts");
        // Within the 1 s backoff: no restart however many outages.
        for _ in 0..10 {
            assert!(!policy.record_outage(t0 + Duration::from_millis(500)));
        }
        assert!(policy.record_outage(t0 + Duration::from_millis(1100)));
        // Backoff doubled to 2 s.
        let t1 = t0 + Duration::from_millis(1100);
        for _ in 0..3 {
            assert!(!policy.record_outage(t1 + Duration::from_millis(1500)));
        }
        assert!(policy.record_outage(t1 + Duration::from_millis(2100)));
    }

    #[test]
    fn success_resets_the_count() {
        let mut policy = RestartPolicy::new(2, Duration::from_secs(4));
        let t0 = Instant::now();
        assert!(!policy.record_outage(t0));
        policy.record_success();
        assert!(!policy.record_outage(t0));
        assert!(policy.record_outage(t0));
    }

    fn health(threshold: u32) -> StoreHealth {
        let stats = ActorStats::new("Test", 8, Metrics::new().expect("metrics"));
        let policy = RestartPolicy::new(threshold, Duration::from_secs(30));
        let mut health = StoreHealth::new(stats, 0, policy, Duration::from_secs(2));
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
    fn a_recent_success_answers_probes_and_an_outage_clears_it() {
        let mut h = health(3);
        assert!(!h.answered_recently(Instant::now()), "nothing answered yet");
        h.in_flight = 1;
        h.observe::<DependencyError>(None);
        assert!(h.answered_recently(Instant::now()));
        assert!(!h.answered_recently(Instant::now() + RECENT_SUCCESS), "only for a second");
        h.in_flight = 1;
        h.observe(Some(&outage()));
        assert!(!h.answered_recently(Instant::now()));
    }

    #[test]
    fn busy_pools_are_not_outages() {
        let mut h = health(1);
        h.in_flight = 1;
        let busy = DependencyError::busy(Dependency::Postgres, "q", "pool checkout timed out");
        assert!(!h.observe(Some(&busy)));
        assert!(!h.restart_pending && !h.breaker_open(Instant::now()));
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

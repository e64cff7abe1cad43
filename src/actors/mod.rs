//! The actor system: one actor per concern, each owning its resources.
//!
//! - [`user_store::UserStore`] owns the Postgres pool.
//! - [`session_store::SessionStore`] owns the Redis pool.
//! - [`password_hasher::PasswordHasher`] owns the argon2 worker threads.
//! - [`metrics::MetricsSampler`] samples the others into gauges and health.
//!
//! Callers reach an actor only through an [`ActorClient`], which bounds its
//! mailbox (a full one answers at once instead of queueing without limit) and
//! wraps each message in a [`Traced`] envelope carrying the caller's span, so
//! the trace hierarchy survives the hop onto the actor's thread.

pub mod metrics;
pub mod password_hasher;
pub mod session_store;
mod store;
pub mod user_store;

pub use store::{CheckHealth, Outage, PoolSample};

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix::{Actor, Addr, Handler, MailboxError, Message, dev::ToEnvelope};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Span;

use crate::{error::CallError, telemetry::metrics::Metrics};

/// Life-cycle state of an actor, as `/health/actors` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorState {
    /// Started; its dependency has not answered yet.
    Starting,
    Running,
    /// Running, but its last dependency call failed.
    Degraded,
    Stopped,
}

impl ActorState {
    const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Degraded,
            _ => Self::Stopped,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// Live counters of one actor, shared by its clients, the actor itself and
/// the metrics sampler. Updating them is a few atomics: no actor round-trip.
pub struct ActorStats {
    name: &'static str,
    capacity: usize,
    /// Sent and not yet answered (queued + in flight).
    pending: AtomicUsize,
    in_flight: AtomicUsize,
    restarts: AtomicU64,
    state: AtomicU8,
    last_error: Mutex<Option<LastError>>,
    metrics: Metrics,
}

/// What `/health/actors` shows for one actor.
#[derive(Debug, Clone, Serialize)]
pub struct ActorSnapshot {
    pub name: &'static str,
    pub state: ActorState,
    pub restarts: u64,
    pub mailbox_capacity: usize,
    pub queued: usize,
    pub in_flight: usize,
    pub last_error: Option<LastError>,
}

impl ActorStats {
    pub fn new(name: &'static str, capacity: usize, metrics: Metrics) -> Arc<Self> {
        metrics.actor_mailbox_capacity.with_label_values(&[name]).set(capacity as i64);
        metrics.actor_restarts.with_label_values(&[name]);
        metrics.actor_rejected.with_label_values(&[name]);
        Arc::new(Self {
            name,
            capacity,
            pending: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            state: AtomicU8::new(ActorState::Starting as u8),
            last_error: Mutex::new(None),
            metrics,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Messages admitted at once; actors size their actix mailbox to match,
    /// so admission, not actix's default of 16, is the bound callers meet.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn set_state(&self, state: ActorState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ActorState {
        ActorState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn record_error(&self, message: impl Into<String>) {
        let last = LastError { at: Utc::now(), message: message.into() };
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(last);
        }
    }

    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.metrics.actor_restarts.with_label_values(&[self.name]).inc();
    }

    pub fn snapshot(&self) -> ActorSnapshot {
        let pending = self.pending.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        ActorSnapshot {
            name: self.name,
            state: self.state(),
            restarts: self.restarts.load(Ordering::Relaxed),
            mailbox_capacity: self.capacity,
            queued: pending.saturating_sub(in_flight),
            in_flight,
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    fn try_admit(self: &Arc<Self>, message: &'static str) -> Option<Ticket> {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.actor_rejected.with_label_values(&[self.name]).inc();
            return None;
        }
        Some(Ticket {
            stats: Arc::clone(self),
            message,
            enqueued_at: Instant::now(),
            started_at: None,
        })
    }
}

/// A message's place in an actor's accounting, from send to reply. Dropping
/// it (reply sent, or the caller gave up) releases the place.
pub struct Ticket {
    stats: Arc<ActorStats>,
    message: &'static str,
    enqueued_at: Instant,
    started_at: Option<Instant>,
}

impl Ticket {
    fn start(&mut self) -> Duration {
        let now = Instant::now();
        self.started_at = Some(now);
        self.stats.in_flight.fetch_add(1, Ordering::AcqRel);
        let waited = now.duration_since(self.enqueued_at);
        self.stats
            .metrics
            .actor_queue_wait_seconds
            .with_label_values(&[self.stats.name])
            .observe(waited.as_secs_f64());
        waited
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(started) = self.started_at {
            self.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
            let labels = [self.stats.name, self.message];
            let m = &self.stats.metrics;
            m.actor_messages_handled.with_label_values(&labels).inc();
            m.actor_handling_seconds
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
        }
        self.stats.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A message on its way to an actor, with the caller's span as parent.
pub struct Traced<M> {
    msg: M,
    parent: Span,
    ticket: Ticket,
}

impl<M: Message> Message for Traced<M> {
    type Result = M::Result;
}

impl<M> Traced<M> {
    /// Takes the message out on the actor's side: returns it with a child span
    /// (`<Actor>.<Message>`, queue wait recorded) and the ticket, which the
    /// handler keeps alive until its reply is ready.
    pub fn open(self) -> (M, Span, Ticket) {
        let Self { msg, parent, mut ticket } = self;
        let waited = ticket.start();
        let span = tracing::info_span!(
            parent: &parent,
            "actor.message",
            otel.name = %format_args!("{}.{}", ticket.stats.name, ticket.message),
            actor = ticket.stats.name,
            message = ticket.message,
            queue_wait_us = waited.as_micros() as u64,
        );
        (msg, span, ticket)
    }
}

/// The only way to message an actor: bounded, traced, and fails fast.
pub struct ActorClient<A: Actor> {
    addr: Addr<A>,
    stats: Arc<ActorStats>,
}

impl<A: Actor> Clone for ActorClient<A> {
    fn clone(&self) -> Self {
        Self { addr: self.addr.clone(), stats: Arc::clone(&self.stats) }
    }
}

impl<A: Actor> ActorClient<A> {
    pub fn new(addr: Addr<A>, stats: Arc<ActorStats>) -> Self {
        Self { addr, stats }
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        &self.stats
    }

    /// Sends `msg` within the current span. A full mailbox is refused at
    /// once (`Overloaded`); a stopped actor is `Stopped`.
    pub async fn call<M>(&self, msg: M) -> Result<M::Result, CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        let name = self.stats.name;
        let ticket =
            self.stats.try_admit(short_type_name::<M>()).ok_or(CallError::Overloaded(name))?;
        let envelope = Traced { msg, parent: Span::current(), ticket };
        self.addr.send(envelope).await.map_err(|err| match err {
            MailboxError::Closed => CallError::Stopped(name),
            // Only `send(..).timeout(..)` yields this; admission above already
            // bounds the wait, so it would mean the same: too busy.
            MailboxError::Timeout => CallError::Overloaded(name),
        })
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn type_names_are_short() {
        struct CreateUser;
        assert_eq!(short_type_name::<CreateUser>(), "CreateUser");
    }

    #[test]
    fn admission_is_bounded_and_released() {
        let metrics = Metrics::new().expect("metrics");
        let stats = ActorStats::new("Test", 2, metrics);
        let a = stats.try_admit("M").expect("first");
        let mut b = stats.try_admit("M").expect("second");
        assert!(stats.try_admit("M").is_none(), "capacity 2");
        b.start();
        let snap = stats.snapshot();
        assert_eq!((snap.queued, snap.in_flight), (1, 1));
        drop(a);
        drop(b);
        let snap = stats.snapshot();
        assert_eq!((snap.queued, snap.in_flight), (0, 0));
        assert!(stats.try_admit("M").is_some());
    }
}

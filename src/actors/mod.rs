//! The actor system: one actor per concern, each owning its resources.
//!
//! - [`user_store::UserStore`] owns a Postgres pool, or the embedded SQLite
//!   database.
//! - [`session_store::SessionStore`] owns a Redis pool, or holds the
//!   sessions itself (embedded).
//! - [`password_hasher::PasswordHasher`] owns the argon2 worker threads.
//! - [`metrics::MetricsSampler`] samples the others into gauges and health.
//!
//! The store actors run one instance per worker arbiter (see
//! [`crate::workers`]), each with its own pool, behind one [`ActorClient`]
//! that sends each message to the instance on the caller's own thread. (The
//! embedded session store runs one instance, since it is the state.)
//!
//! Callers reach an actor only through an [`ActorClient`], which bounds the
//! messages a concern accepts (past that, callers are refused at once instead
//! of queueing without limit) and wraps each message in a [`Traced`] envelope
//! carrying the caller's span, so the trace hierarchy survives the hop.

pub mod metrics;
pub mod password_hasher;
pub mod session_store;
mod store;
pub mod user_store;

pub use store::{CheckHealth, ConnectFailures, Outage, PoolSample, Watched, uptime_ms};

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
    /// How bad a state is, for summarising several instances by the worst.
    const fn severity(self) -> u8 {
        match self {
            Self::Running => 0,
            Self::Starting => 1,
            Self::Degraded => 2,
            Self::Stopped => 3,
        }
    }

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

/// Live counters of one actor (all its instances), shared by its clients,
/// the actor itself and the metrics sampler. Updating them is a few atomics:
/// no actor round-trip.
pub struct ActorStats {
    name: &'static str,
    capacity: usize,
    /// Sent and not yet answered (queued + in flight).
    pending: AtomicUsize,
    in_flight: AtomicUsize,
    restarts: AtomicU64,
    /// One state per instance.
    states: Box<[AtomicU8]>,
    last_error: Mutex<Option<LastError>>,
    metrics: Metrics,
}

/// What `/health/actors` shows for one actor.
#[derive(Debug, Clone, Serialize)]
pub struct ActorSnapshot {
    pub name: &'static str,
    /// The worst state of any instance.
    pub state: ActorState,
    pub instances: usize,
    pub restarts: u64,
    pub mailbox_capacity: usize,
    pub queued: usize,
    pub in_flight: usize,
    pub last_error: Option<LastError>,
}

impl ActorStats {
    /// Stats of a single-instance actor.
    pub fn new(name: &'static str, capacity: usize, metrics: Metrics) -> Arc<Self> {
        Self::with_instances(name, capacity, 1, metrics)
    }

    /// Stats of an actor run as `instances` instances; `capacity` bounds the
    /// messages admitted across all of them.
    pub fn with_instances(
        name: &'static str,
        capacity: usize,
        instances: usize,
        metrics: Metrics,
    ) -> Arc<Self> {
        metrics.actor_mailbox_capacity.with_label_values(&[name]).set(capacity as i64);
        metrics.actor_restarts.with_label_values(&[name]);
        metrics.actor_rejected.with_label_values(&[name]);
        Arc::new(Self {
            name,
            capacity,
            pending: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            states: (0..instances.max(1))
                .map(|_| AtomicU8::new(ActorState::Starting as u8))
                .collect(),
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

    /// Sets the state of every instance (single-instance actors).
    pub fn set_state(&self, state: ActorState) {
        for slot in &self.states {
            slot.store(state as u8, Ordering::Relaxed);
        }
    }

    pub fn set_instance_state(&self, instance: usize, state: ActorState) {
        if let Some(slot) = self.states.get(instance) {
            slot.store(state as u8, Ordering::Relaxed);
        }
    }

    /// The worst state of any instance.
    pub fn state(&self) -> ActorState {
        self.states
            .iter()
            .map(|s| ActorState::from_u8(s.load(Ordering::Relaxed)))
            .max_by_key(|s| s.severity())
            .unwrap_or(ActorState::Stopped)
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
            instances: self.states.len(),
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
        Some(self.ticket(message))
    }

    /// A ticket outside the capacity bound, for health probes: a replica
    /// that is busy is not thereby unready.
    fn admit_always(self: &Arc<Self>, message: &'static str) -> Ticket {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.ticket(message)
    }

    fn ticket(self: &Arc<Self>, message: &'static str) -> Ticket {
        Ticket { stats: Arc::clone(self), message, enqueued_at: Instant::now(), started_at: None }
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
        let span = crate::child_span!(
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
///
/// An actor may run as several instances (one per worker); a message goes to
/// the instance on the caller's worker, so it never leaves the thread, or,
/// from any other thread, to the instances in turn.
pub struct ActorClient<A: Actor> {
    instances: Arc<[Addr<A>]>,
    next: Arc<AtomicUsize>,
    stats: Arc<ActorStats>,
}

impl<A: Actor> Clone for ActorClient<A> {
    fn clone(&self) -> Self {
        Self {
            instances: Arc::clone(&self.instances),
            next: Arc::clone(&self.next),
            stats: Arc::clone(&self.stats),
        }
    }
}

/// Whether a message counts against the actor's capacity.
#[derive(Clone, Copy)]
enum Admission {
    Bounded,
    /// Health probes: a saturated store must still answer "ready".
    Always,
}

impl<A: Actor> ActorClient<A> {
    pub fn new(addr: Addr<A>, stats: Arc<ActorStats>) -> Self {
        Self::sharded(vec![addr], stats)
    }

    /// A client for instances `addrs[i]` running on worker `i`.
    pub fn sharded(addrs: Vec<Addr<A>>, stats: Arc<ActorStats>) -> Self {
        Self { instances: addrs.into(), next: Arc::new(AtomicUsize::new(0)), stats }
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        &self.stats
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    fn pick(&self) -> &Addr<A> {
        let n = self.instances.len();
        let index = match crate::workers::current() {
            Some(worker) if worker < n => worker,
            _ if n == 1 => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.instances[index]
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
        self.send(self.pick(), msg, Admission::Bounded).await
    }

    /// Sends a copy of `msg` to every instance, outside the capacity bound
    /// (health probes), and returns their answers in instance order.
    pub async fn call_each<M>(&self, msg: M) -> Vec<Result<M::Result, CallError>>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        let calls =
            self.instances.iter().map(|addr| self.send(addr, msg.clone(), Admission::Always));
        futures_util::future::join_all(calls).await
    }

    async fn send<M>(
        &self,
        addr: &Addr<A>,
        msg: M,
        admission: Admission,
    ) -> Result<M::Result, CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        let name = self.stats.name;
        let message = short_type_name::<M>();
        let ticket = match admission {
            Admission::Bounded => {
                self.stats.try_admit(message).ok_or(CallError::Overloaded(name))?
            }
            Admission::Always => self.stats.admit_always(message),
        };
        let envelope = Traced { msg, parent: Span::current(), ticket };
        addr.send(envelope).await.map_err(|err| match err {
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

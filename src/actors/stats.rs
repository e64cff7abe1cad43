//! What every actor reports about itself: its life-cycle state and live
//! counters (admitted, in flight, restarts, last error), shared by its
//! clients, the actor and the metrics sampler. Updating them is a few
//! atomics: no actor round trip.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::telemetry::metrics::Metrics;

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

/// Live counters of one actor (all its instances).
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
    pub fn new(name: &'static str, capacity: usize, metrics: Metrics) -> std::sync::Arc<Self> {
        Self::with_instances(name, capacity, 1, metrics)
    }

    /// Stats of an actor run as `instances` instances; `capacity` bounds the
    /// messages admitted across all of them.
    pub fn with_instances(
        name: &'static str,
        capacity: usize,
        instances: usize,
        metrics: Metrics,
    ) -> std::sync::Arc<Self> {
        metrics.actor_mailbox_capacity.with_label_values(&[name]).set(capacity as i64);
        metrics.actor_restarts.with_label_values(&[name]);
        metrics.actor_rejected.with_label_values(&[name]);
        std::sync::Arc::new(Self {
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

    pub fn name(&self) -> &'static str {
        self.name
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

    /// Takes a place among the `capacity` admitted messages; `false` (and
    /// counted as refused) when they are all taken.
    pub fn reserve(&self) -> bool {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.actor_rejected.with_label_values(&[self.name]).inc();
            return false;
        }
        true
    }

    /// Takes a place past the bound (health probes).
    pub fn reserve_always(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives a place back.
    pub fn release(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// A message reached its handler after `waited` in the mailbox.
    pub fn handling_started(&self, waited: Duration) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.metrics
            .actor_queue_wait_seconds
            .with_label_values(&[self.name])
            .observe(waited.as_secs_f64());
    }

    /// A handled `message` was answered after `took`.
    pub fn handling_finished(&self, message: &'static str, took: Duration) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let labels = [self.name, message];
        self.metrics.actor_messages_handled.with_label_values(&labels).inc();
        self.metrics.actor_handling_seconds.with_label_values(&labels).observe(took.as_secs_f64());
    }
}

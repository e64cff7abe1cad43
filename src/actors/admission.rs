//! A message's place in its actor's bounded admission, from send to reply.
//! Past `capacity` a caller is refused at once instead of queueing without
//! limit; health probes are admitted regardless, so a busy replica is not
//! thereby unready.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::stats::ActorStats;

/// Whether a message counts against the actor's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Bounded,
    /// Health probes: a saturated store must still answer "ready".
    Always,
}

/// Held from send to reply; dropping it (reply sent, or the caller gave
/// up) releases the place and records the handling time.
pub struct Ticket {
    stats: Arc<ActorStats>,
    message: &'static str,
    enqueued_at: Instant,
    started_at: Option<Instant>,
}

impl Ticket {
    /// A place for `message`, or `None` when the actor is full.
    pub fn admit(
        stats: &Arc<ActorStats>,
        message: &'static str,
        admission: Admission,
    ) -> Option<Self> {
        match admission {
            Admission::Bounded if !stats.reserve() => return None,
            Admission::Bounded => {}
            Admission::Always => stats.reserve_always(),
        }
        Some(Self {
            stats: Arc::clone(stats),
            message,
            enqueued_at: Instant::now(),
            started_at: None,
        })
    }

    pub fn actor(&self) -> &'static str {
        self.stats.name()
    }

    pub fn message(&self) -> &'static str {
        self.message
    }

    /// The handler took the message; how long it waited in the mailbox.
    pub fn start(&mut self) -> Duration {
        let now = Instant::now();
        self.started_at = Some(now);
        let waited = now.duration_since(self.enqueued_at);
        self.stats.handling_started(waited);
        waited
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(started) = self.started_at {
            self.stats.handling_finished(self.message, started.elapsed());
        }
        self.stats.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;

    #[test]
    fn admission_is_bounded_and_released() {
        let stats = ActorStats::new("Test", 2, Metrics::new().expect("metrics"));
        let a = Ticket::admit(&stats, "M", Admission::Bounded).expect("first");
        let mut b = Ticket::admit(&stats, "M", Admission::Bounded).expect("second");
        assert!(Ticket::admit(&stats, "M", Admission::Bounded).is_none(), "capacity 2");
        let probe = Ticket::admit(&stats, "M", Admission::Always).expect("probes pass");
        drop(probe);
        b.start();
        let snap = stats.snapshot();
        assert_eq!((snap.queued, snap.in_flight), (1, 1));
        drop(a);
        drop(b);
        let snap = stats.snapshot();
        assert_eq!((snap.queued, snap.in_flight), (0, 0));
        assert!(Ticket::admit(&stats, "M", Admission::Bounded).is_some());
    }
}

//! Dependency health as the adapters see it. The metrics sampler publishes
//! what its probes found and shutdown publishes that it drains; the gRPC
//! health service and `/health/ready` subscribe. A `tokio::sync::watch`: a
//! subscriber always reads the latest state and nothing queues.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::Dependency;

/// The latest published state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthStatus {
    /// Each dependency and whether it answered its last probe; empty
    /// before the first probe.
    pub dependencies: Vec<(Dependency, bool)>,
    /// Shutdown has begun: nothing should route here any more.
    pub draining: bool,
}

impl HealthStatus {
    /// Every dependency answered, and the service is not draining.
    pub fn serving(&self) -> bool {
        !self.draining
            && !self.dependencies.is_empty()
            && self.dependencies.iter().all(|(_, up)| *up)
    }
}

/// The publishing side, shared by whoever publishes and subscribed to by
/// the adapters.
#[derive(Clone)]
pub struct ServiceHealth(Arc<watch::Sender<HealthStatus>>);

impl Default for ServiceHealth {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(HealthStatus::default())))
    }
}

impl ServiceHealth {
    /// Publishes the dependencies' state; ignored once draining.
    pub fn publish(&self, dependencies: Vec<(Dependency, bool)>) {
        self.0.send_if_modified(|status| {
            if status.draining || status.dependencies == dependencies {
                return false;
            }
            status.dependencies = dependencies;
            true
        });
    }

    /// Shutdown begins: from now on the service reports not serving.
    pub fn begin_drain(&self) {
        self.0.send_if_modified(|status| !std::mem::replace(&mut status.draining, true));
    }

    pub fn is_draining(&self) -> bool {
        self.0.borrow().draining
    }

    pub fn subscribe(&self) -> watch::Receiver<HealthStatus> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_needs_every_dependency_up_and_no_drain() {
        let health = ServiceHealth::default();
        let watcher = health.subscribe();
        assert!(!watcher.borrow().serving(), "nothing probed yet");
        health.publish(vec![(Dependency::Postgres, true), (Dependency::Redis, false)]);
        assert!(!watcher.borrow().serving());
        health.publish(vec![(Dependency::Postgres, true), (Dependency::Redis, true)]);
        assert!(watcher.borrow().serving());
        health.begin_drain();
        assert!(health.is_draining() && !watcher.borrow().serving());
        health.publish(vec![(Dependency::Postgres, true), (Dependency::Redis, true)]);
        assert!(watcher.borrow().draining, "a drain is final");
    }
}

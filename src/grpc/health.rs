//! What `grpc.health.v1.Health` reports, and the draining switch shared with
//! `/health/ready`.
//!
//! Entries: one per dependency (`postgres`, `redis`; embedded: `sqlite`,
//! `memory`), and the API
//! (`userService.UserService`, plus `""` for the whole server) serving only
//! when every dependency is up and the server is not draining.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::error::Dependency;

/// The gRPC health service name covering the whole API.
pub const API_SERVICE: &str = "userService.UserService";

#[derive(Clone)]
pub struct ServingState {
    reporter: HealthReporter,
    draining: Arc<AtomicBool>,
}

impl ServingState {
    /// Starts NOT_SERVING everywhere (tonic-health would report `""` as
    /// SERVING before the first dependency probe).
    pub async fn new(reporter: HealthReporter) -> Self {
        for name in ["", API_SERVICE] {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        Self { reporter, draining: Arc::new(AtomicBool::new(false)) }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Publishes dependency status; ignored once draining.
    pub async fn publish(&self, dependencies: &[(String, bool)]) {
        let status = |up: bool| if up { ServingStatus::Serving } else { ServingStatus::NotServing };
        let all_up = dependencies.iter().all(|(_, up)| *up);
        for (name, up) in dependencies {
            if self.is_draining() {
                return;
            }
            self.reporter.set_service_status(name, status(*up)).await;
        }
        for name in [API_SERVICE, ""] {
            if self.is_draining() {
                return;
            }
            self.reporter.set_service_status(name, status(all_up)).await;
        }
    }

    /// Shutdown begins: everything reports NOT_SERVING (watchers see it),
    /// then every entry is removed, which ends open `Watch` streams so they
    /// do not hold the graceful drain open.
    pub async fn begin_drain(&self, dependencies: [Dependency; 2]) {
        self.draining.store(true, Ordering::SeqCst);
        let mut reporter = self.reporter.clone();
        let names: Vec<String> = dependencies
            .iter()
            .map(ToString::to_string)
            .chain([API_SERVICE.to_owned(), String::new()])
            .collect();
        for name in &names {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        for name in &names {
            reporter.clear_service_status(name).await;
        }
    }
}

//! `grpc.health.v1.Health`, mirroring the core's [`ServiceHealth`].
//!
//! Entries: one per dependency (`postgres`, `redis`; embedded: `sqlite`,
//! `memory`), and the API (`userService.UserService`, plus `""` for the
//! whole server) serving only when every dependency is up and the server is
//! not draining. When the drain begins every entry reports NOT_SERVING and
//! is then removed, which ends open `Watch` streams so they do not hold the
//! graceful drain open.

use tokio::task::JoinHandle;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::actors::health::{HealthStatus, ServiceHealth};

/// The gRPC health service name covering the whole API.
pub const API_SERVICE: &str = "userService.UserService";

/// Starts NOT_SERVING everywhere (tonic-health would report `""` as
/// SERVING before the first dependency probe), then follows `health` in a
/// task of its own, which ends once the drain is reported.
pub async fn mirror(health: &ServiceHealth, reporter: HealthReporter) -> JoinHandle<()> {
    for name in ["", API_SERVICE] {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
    let mut updates = health.subscribe();
    tokio::spawn(async move {
        let mut published: Vec<String> = vec![API_SERVICE.to_owned(), String::new()];
        loop {
            let status = updates.borrow_and_update().clone();
            if status.draining {
                drain(reporter, &published).await;
                return;
            }
            publish(&reporter, &status, &mut published).await;
            if updates.changed().await.is_err() {
                return;
            }
        }
    })
}

async fn publish(reporter: &HealthReporter, status: &HealthStatus, published: &mut Vec<String>) {
    let serving = |up: bool| if up { ServingStatus::Serving } else { ServingStatus::NotServing };
    for (dependency, up) in &status.dependencies {
        let name = dependency.to_string();
        reporter.set_service_status(&name, serving(*up)).await;
        if !published.contains(&name) {
            published.push(name);
        }
    }
    for name in [API_SERVICE, ""] {
        reporter.set_service_status(name, serving(status.serving())).await;
    }
}

async fn drain(mut reporter: HealthReporter, published: &[String]) {
    for name in published {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
    for name in published {
        reporter.clear_service_status(name).await;
    }
}

//! The ops HTTP server (actix-web): health probes and Prometheus metrics.
//! Translates only; readiness asks the store actors, never a pool.

mod health;

use std::net::TcpListener;

use actix_web::{App, HttpServer, dev::Server, web};
use actix_web_prom::PrometheusMetricsBuilder;

pub use health::OpsState;

use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("metrics middleware: {0}")]
    Metrics(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Builds the server on an already-bound listener (so the caller knows the
/// port, even when it asked for port 0).
pub fn build_server(
    listener: TcpListener,
    state: OpsState,
    metrics: &Metrics,
) -> Result<Server, OpsError> {
    let prometheus = PrometheusMetricsBuilder::new("auth")
        .registry(metrics.registry.clone())
        .endpoint("/metrics")
        // Unknown paths share one label value, so scanners cannot blow up
        // the label cardinality.
        .mask_unmatched_patterns("UNKNOWN")
        .build()
        .map_err(|e| OpsError::Metrics(e.to_string()))?;
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(prometheus.clone())
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(state.clone())
            .configure(health::routes)
    })
    // Probes and scrapes are light; one worker keeps the cores for gRPC
    // and argon2.
    .workers(1)
    // Shutdown is driven by the application, not by actix's own handlers.
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(server)
}

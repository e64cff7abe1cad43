//! Logs, traces and metrics setup.
//!
//! - Logs: `tracing-subscriber`, pretty or JSON (config), filtered by
//!   `log.filter` or `RUST_LOG`.
//! - Traces: `tracing-opentelemetry` → OTLP/gRPC (Jaeger ingests OTLP
//!   natively; the `opentelemetry-jaeger` exporter is deprecated upstream).
//!   Off when no endpoint is configured. The OTel layer has its own filter so
//!   a quiet log level never silences traces (DEPENDENCIES.md, P2).
//! - Metrics: [`metrics::Metrics`], one typed registry.

pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::config::{LogFormat, LogSettings, TracingSettings};

/// Flushes and stops span export when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The batch processor exports on its own thread; shutting down
            // from a plain thread avoids blocking an async runtime (P3).
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("cannot build the OTLP exporter for {endpoint:?}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Targets whose own spans and events would feed back into the exporter.
const EXPORT_NOISE: &str = "h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Installs the global subscriber. Must run inside a Tokio runtime when an
/// OTLP endpoint is set (the exporter's channel lives on it). Returns an
/// error if a subscriber is already installed only through `Ok` with no
/// effect: tests install one per process.
pub fn init(
    log: &LogSettings,
    tracing_settings: &TracingSettings,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| log.filter.clone());
    let log_filter = EnvFilter::try_new(format!(
        "{filter_text},opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn"
    ))
    .map_err(|e| TelemetryError::Filter { filter: filter_text.clone(), reason: e.to_string() })?;

    let fmt_layer = match log.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
    .with_filter(log_filter);

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let provider = if tracing_settings.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(tracing_settings.otlp_endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: tracing_settings.otlp_endpoint.clone(),
                reason: e.to_string(),
            })?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name(tracing_settings.service_name.clone())
                        .build(),
                )
                .build(),
        )
    };

    let otel_layer = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("auth-service");
        let otel_filter = EnvFilter::new(format!("info,{EXPORT_NOISE}"));
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(otel_filter)
    });

    // A second init (several apps in one test process) keeps the first.
    let _ = tracing_subscriber::registry().with(fmt_layer).with(otel_layer).try_init();
    Ok(TelemetryGuard { provider })
}

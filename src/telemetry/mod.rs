//! Logs, traces and metrics setup.
//!
//! - Logs: `tracing-subscriber`, pretty or JSON (config), filtered by
//!   `log.filter` or `RUST_LOG`.
//! - Traces: `tracing-opentelemetry` → OTLP/gRPC (Jaeger ingests OTLP
//!   natively; the `opentelemetry-jaeger` exporter is deprecated upstream).
//!   Off when no endpoint is configured. The OTel layer has its own filter so
//!   a quiet log level never silences traces (a global filter
//!   would: with `RUST_LOG=warn` no span would be exported).
//! - Metrics: [`metrics::Metrics`], one typed registry.

mod export;
mod json_log;
pub mod metrics;

use opentelemetry::propagation::TextMapCompositePropagator;
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

/// OpenTelemetry's own diagnostics repeat per failed batch; the exporter
/// wrapper reports failures once instead.
const LOG_NOISE: &str = "opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Installs the global subscriber: the log layer, and the OpenTelemetry layer
/// (always, so every log line and every RPC has a trace id and incoming
/// trace context is continued; spans leave the process only when an
/// endpoint is configured). Must run inside a Tokio runtime when an endpoint
/// is set (the exporter's channel lives on it). A second call in one process
/// keeps the first subscriber.
pub fn init(
    log: &LogSettings,
    tracing_settings: &TracingSettings,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| log.filter.clone());
    let log_filter = EnvFilter::try_new(format!("{filter_text},{LOG_NOISE}")).map_err(|e| {
        TelemetryError::Filter { filter: filter_text.clone(), reason: e.to_string() }
    })?;

    let fmt_layer = match log.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().event_format(json_log::JsonWithTraceIds).boxed()
        }
    }
    .with_filter(log_filter);

    // W3C `traceparent` first; `uber-trace-id` for callers still on Jaeger
    // client libraries (the format is deprecated upstream, hence the allow).
    #[allow(deprecated)]
    let jaeger = opentelemetry_jaeger_propagator::Propagator::new();
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(jaeger),
    ]));

    let resource =
        Resource::builder().with_service_name(tracing_settings.service_name.clone()).build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let endpoint = &tracing_settings.otlp_endpoint;
    if !endpoint.is_empty() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        // Batched on the SDK's own thread, bounded queue (2048 spans by
        // default): a slow collector drops spans, never slows RPCs.
        provider =
            provider.with_batch_exporter(export::QuietExporter::new(exporter, endpoint.clone()));
    }
    let provider = provider.build();

    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("auth-service"))
        .with_filter(EnvFilter::new(format!("info,{EXPORT_NOISE}")));

    let _ = tracing_subscriber::registry().with(fmt_layer).with(otel_layer).try_init();
    Ok(TelemetryGuard { provider: Some(provider) })
}

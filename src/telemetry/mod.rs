//! Logs, traces and metrics setup.
//!
//! - Logs: `tracing-subscriber`, pretty or JSON (config), filtered by
//!   `log.filter` (which `RUST_LOG` overrides: see `config::layers`).
//! - Traces: `tracing-opentelemetry` → OTLP/gRPC (Jaeger ingests OTLP
//!   natively; the `opentelemetry-jaeger` exporter is deprecated upstream).
//!   Off when no endpoint is configured; sampled per request ([`spans`]).
//!   The OTel layer has its own filter so a quiet log level never silences
//!   traces (a global filter would: with `RUST_LOG=warn` no span would be
//!   exported).
//! - Metrics: [`metrics::Metrics`], one typed registry.

mod export;
mod json_log;
pub mod metrics;
pub mod spans;

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

/// Crates whose own spans and events would feed back into the exporter.
const EXPORT_NOISE: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
];

/// OpenTelemetry's own diagnostics repeat per failed batch; the exporter
/// wrapper reports failures once instead.
const LOG_NOISE: &str = "opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// What the OpenTelemetry layer receives: INFO and above, except the spans
/// of unsampled requests and the exporter's own machinery.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let krate = target.split("::").next().unwrap_or(target);
    *meta.level() <= tracing::Level::INFO
        && target != spans::UNSAMPLED
        && !EXPORT_NOISE.contains(&krate)
}

/// Installs the global subscriber: the log layer and, when an OTLP endpoint
/// is configured, the OpenTelemetry layer, which receives the spans of
/// sampled requests (see [`spans`]). Must run inside a Tokio runtime when
/// an endpoint is set (the exporter's channel lives on it). A second call in
/// one process keeps the first subscriber.
pub fn init(
    log: &LogSettings,
    tracing_settings: &TracingSettings,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter_text = log.filter.clone();
    let log_filter = EnvFilter::try_new(format!("{filter_text},{LOG_NOISE}")).map_err(|e| {
        TelemetryError::Filter { filter: filter_text.clone(), reason: e.to_string() }
    })?;

    let fmt_layer = match log.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json_log::JsonWithTraceIds)
            .and_then(json_log::TraceIdFields)
            .boxed(),
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

    let endpoint = &tracing_settings.otlp_endpoint;
    let mut provider = None;
    if !endpoint.is_empty() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let resource =
            Resource::builder().with_service_name(tracing_settings.service_name.clone()).build();
        // Batched on the SDK's own thread, bounded queue (2048 spans by
        // default): a slow collector drops spans, never slows RPCs.
        provider = Some(
            SdkTracerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(export::QuietExporter::new(exporter, endpoint.clone()))
                .build(),
        );
    }

    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("auth-service"))
            // Busy/idle time needs two clock reads on every poll of every
            // instrumented future, activating the OTel context on every
            // enter serves only OTel-instrumented libraries (we have none;
            // log lines read ids from the tracing span), and source
            // locations and thread names are four attributes per span:
            // together a fifth of a loaded replica's CPU, and of no use in
            // a trace of this service.
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::filter_fn(exported))
    });

    let _ = tracing_subscriber::registry().with(fmt_layer).with(otel_layer).try_init();
    Ok(TelemetryGuard { provider })
}

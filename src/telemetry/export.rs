//! The OTLP exporter, wrapped so an unreachable collector costs one warning
//! (and one note when it comes back), not a log line per failed batch.

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};

pub struct QuietExporter<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E> QuietExporter<E> {
    pub fn new(inner: E, endpoint: String) -> Self {
        Self { inner, endpoint, failing: AtomicBool::new(false) }
    }
}

impl<E> fmt::Debug for QuietExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuietExporter").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl<E: SpanExporter> SpanExporter for QuietExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let dropped = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint,
                error = %e,
                dropped,
                "trace export failing; spans are dropped until the collector answers (logged once)"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "trace export recovered");
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

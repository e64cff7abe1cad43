//! Which requests are traced, and how their spans reach the exporter.
//!
//! Building an OpenTelemetry span costs microseconds (attributes, ids, a
//! record per enter and exit); three of them per RPC were a third of the CPU
//! of a replica serving GetMe. So the decision is made once, at the root,
//! and every span of the request follows it:
//!
//! - spans of a sampled request have the target [`SAMPLED`] and go to the
//!   OpenTelemetry layer;
//! - the others have the target [`UNSAMPLED`], which the OpenTelemetry layer
//!   filters out: they exist only for the log layer, and only when logging
//!   asks for them (at the default `info` filter they carry the fields of
//!   log lines; at `warn` they are not even created).
//!
//! The decision is the usual parent-based one: a caller's sampled (or
//! unsampled) trace is continued as such, and a request without a trace
//! context is sampled with probability `tracing.sample_ratio`. Without an
//! OTLP endpoint nothing is sampled: there is nowhere to send it.

use tracing::Span;

/// Target of the spans of sampled requests.
pub const SAMPLED: &str = "auth_service::trace";
/// Target of the spans of requests that are not traced.
pub const UNSAMPLED: &str = "auth_service::span";

/// Whether `span` belongs to a sampled request (children follow it).
pub fn is_sampled(span: &Span) -> bool {
    span.metadata().is_some_and(|meta| meta.target() == SAMPLED)
}

/// Opens an INFO span under `parent` that follows the parent's sampling
/// decision: `child_span!(parent: &span, "name", field = value, ...)`.
#[macro_export]
macro_rules! child_span {
    (parent: $parent:expr, $name:literal, $($fields:tt)*) => {{
        let parent: &::tracing::Span = $parent;
        if $crate::telemetry::spans::is_sampled(parent) {
            ::tracing::info_span!(
                target: $crate::telemetry::spans::SAMPLED, parent: parent, $name, $($fields)*
            )
        } else {
            ::tracing::info_span!(
                target: $crate::telemetry::spans::UNSAMPLED, parent: parent, $name, $($fields)*
            )
        }
    }};
}

/// The root sampling decision.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Spans leave the process (an OTLP endpoint is configured).
    exporting: bool,
    /// Probability of tracing a request that arrives without a trace.
    ratio: f64,
}

impl Sampler {
    pub fn new(exporting: bool, ratio: f64) -> Self {
        Self { exporting, ratio: ratio.clamp(0.0, 1.0) }
    }

    pub fn from_settings(settings: &crate::config::TracingSettings) -> Self {
        Self::new(!settings.otlp_endpoint.is_empty(), settings.sample_ratio)
    }

    /// `parent`: the sampled flag of the caller's trace, if it sent one.
    /// `coin`: a uniformly random `u64`.
    pub fn sample(&self, parent: Option<bool>, coin: u64) -> bool {
        if !self.exporting {
            return false;
        }
        match parent {
            Some(sampled) => sampled,
            // Compared in 2^-53 steps, the precision of an f64 ratio.
            None => ((coin >> 11) as f64) < self.ratio * (1u64 << 53) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_sampled_without_an_exporter() {
        let off = Sampler::new(false, 1.0);
        assert!(!off.sample(Some(true), 0));
        assert!(!off.sample(None, 0));
    }

    #[test]
    fn a_callers_decision_is_followed() {
        let never = Sampler::new(true, 0.0);
        assert!(never.sample(Some(true), u64::MAX));
        let always = Sampler::new(true, 1.0);
        assert!(!always.sample(Some(false), 0));
    }

    #[test]
    fn the_ratio_applies_to_requests_without_a_trace() {
        let always = Sampler::new(true, 1.0);
        assert!(always.sample(None, u64::MAX));
        let never = Sampler::new(true, 0.0);
        assert!(!never.sample(None, 0));
        let tenth = Sampler::new(true, 0.1);
        let sampled = (0..10_000u64)
            .filter(|i| tenth.sample(None, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .count();
        assert!((800..1200).contains(&sampled), "{sampled} of 10000 at 0.1");
    }
}

//! The tower layer every gRPC request passes through. For each RPC it:
//!
//! - opens the server span (`rpc.system`, `rpc.service`, `rpc.method`,
//!   `rpc.grpc.status_code`), continuing the caller's trace from
//!   `traceparent` / `uber-trace-id` metadata;
//! - records the go-grpc-prometheus metrics (plain atomics, no actor);
//! - enforces the caller's `grpc-timeout` as DEADLINE_EXCEEDED;
//! - writes one INFO line with method, code and duration.

use std::{
    cell::RefCell,
    collections::VecDeque,
    pin::Pin,
    str::FromStr as _,
    sync::{Arc, Weak},
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use opentelemetry::propagation::Extractor;
use rustls::pki_types::CertificateDer;
use tonic::{
    Code, Status,
    body::Body,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::rpcs::RpcName;
use crate::{
    domain::PeerIdentity,
    telemetry::{
        metrics::Metrics,
        spans::{SAMPLED, Sampler, UNSAMPLED},
    },
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Our DEADLINE_EXCEEDED must be written before tonic's own `grpc-timeout`
/// timer fires (tonic answers that one with CANCELLED); a millisecond is one
/// tick of tokio's timer wheel.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

#[derive(Clone)]
pub struct RpcLayer {
    metrics: Metrics,
    sampler: Sampler,
}

impl RpcLayer {
    pub fn new(metrics: Metrics, sampler: Sampler) -> Self {
        Self { metrics, sampler }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, metrics: self.metrics.clone(), sampler: self.sampler }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: Metrics,
    sampler: Sampler,
}

impl<S, B> Service<http::Request<Body>> for RpcService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let rpc = RpcName::parse(request.uri().path());
        let span = root_span(rpc, self.sampler, request.headers());
        // The caller's identity, for the span, the log line and the use
        // cases (the adapter reads it from the request's extensions).
        let peer = peer_identity(&request).map(|peer| {
            let name = peer.to_string();
            span.record("peer", name.as_str());
            request.extensions_mut().insert(peer);
            name
        });

        let recorder = Recorder::start(self.metrics.clone(), rpc, span.clone(), peer);
        let deadline = grpc_timeout(request.headers());

        Box::pin(tracing::Instrument::instrument(
            async move {
                let call = inner.call(request);
                let outcome = match deadline {
                    Some(limit) => {
                        match tokio::time::timeout(limit.saturating_sub(DEADLINE_MARGIN), call)
                            .await
                        {
                            Ok(outcome) => outcome,
                            Err(_) => {
                                let status = Status::deadline_exceeded("deadline exceeded");
                                return Ok(recorder.finish_now(status.into_http()));
                            }
                        }
                    }
                    None => call.await,
                };
                match outcome {
                    Ok(response) => Ok(recorder.watch(response)),
                    Err(err) => {
                        let err: BoxError = err.into();
                        let status = Status::from_error(err);
                        Ok(recorder.finish_now(status.into_http()))
                    }
                }
            },
            span,
        ))
    }
}

/// The request's span, sampled or not as the caller's trace context (W3C
/// `traceparent` or Jaeger's `uber-trace-id`) and the sampler decide; see
/// [`crate::telemetry::spans`].
fn root_span(rpc: RpcName, sampler: Sampler, headers: &http::HeaderMap) -> Span {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let remote = {
        use opentelemetry::trace::TraceContextExt as _;
        parent.span().span_context().clone()
    };
    let parent_sampled = remote.is_valid().then(|| remote.is_sampled());
    if sampler.sample(parent_sampled, coin()) {
        let span = tracing::info_span!(
            target: SAMPLED,
            "grpc.server",
            otel.name = rpc.full_name,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = rpc.service,
            rpc.method = rpc.method,
            rpc.grpc.status_code = Empty,
            peer = Empty,
        );
        let _ = span.set_parent(parent);
        span
    } else {
        let span = tracing::info_span!(
            target: UNSAMPLED,
            "grpc.server",
            rpc.service = rpc.service,
            rpc.method = rpc.method,
            rpc.grpc.status_code = Empty,
            trace_id = Empty,
            peer = Empty,
        );
        // Log lines still name the caller's trace.
        if remote.is_valid() && !span.is_disabled() {
            span.record("trace_id", tracing::field::display(remote.trace_id()));
        }
        span
    }
}

/// The identity a connection's verified client certificate names: parsed
/// once per connection (the worker's recent connections are remembered;
/// the held `Weak` keeps a certificate list's address from being reused by
/// another connection while it is remembered).
fn peer_identity(request: &http::Request<Body>) -> Option<PeerIdentity> {
    type Chain = Vec<CertificateDer<'static>>;
    const REMEMBERED: usize = 64;
    thread_local! {
        static RECENT: RefCell<VecDeque<(Weak<Chain>, Option<PeerIdentity>)>> =
            const { RefCell::new(VecDeque::new()) };
    }
    let certs = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some((_, peer)) =
            recent.iter().find(|(chain, _)| std::ptr::eq(chain.as_ptr(), Arc::as_ptr(&certs)))
        {
            return peer.clone();
        }
        let peer = crate::tls::peer_identity(&certs);
        if recent.len() == REMEMBERED {
            recent.pop_front();
        }
        recent.push_back((Arc::downgrade(&certs), peer.clone()));
        peer
    })
}

/// A cheap uniformly random `u64` for sampling decisions (xorshift, one
/// state per thread, seeded from the OS).
fn coin() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(getrandom::u64().unwrap_or(0x9E37_79B9_7F4A_7C15) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// Accounts for one RPC from its start to its status.
struct Recorder {
    metrics: Metrics,
    rpc: RpcName,
    span: Span,
    /// The calling peer's identity, for the request's log line.
    peer: Option<String>,
    started: Instant,
    finished: bool,
}

impl Recorder {
    fn start(metrics: Metrics, rpc: RpcName, span: Span, peer: Option<String>) -> Self {
        let labels = [rpc.kind, rpc.service, rpc.method];
        metrics.grpc_started.with_label_values(&labels).inc();
        if rpc.kind == "unary" || rpc.kind == "server_stream" {
            metrics.grpc_msg_received.with_label_values(&labels).inc();
        }
        Self { metrics, rpc, span, peer, started: Instant::now(), finished: false }
    }

    /// For responses whose status is already in the headers (errors).
    fn finish_now(mut self, response: http::Response<Body>) -> http::Response<Body> {
        let code = status_from_headers(response.headers()).unwrap_or(Code::Unknown);
        self.finish(code);
        response
    }

    /// For responses whose status comes in the trailers (success).
    fn watch<B>(mut self, response: http::Response<B>) -> http::Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(code) = status_from_headers(response.headers()) {
            self.finish(code);
            return response.map(Body::new);
        }
        response.map(|inner| Body::new(RecordingBody { inner, recorder: Some(self) }))
    }

    fn finish(&mut self, code: Code) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed = self.started.elapsed();
        let labels = [self.rpc.kind, self.rpc.service, self.rpc.method];
        let m = &self.metrics;
        m.grpc_handled
            .with_label_values(&[labels[0], labels[1], labels[2], go_code_name(code)])
            .inc();
        m.grpc_handling_seconds.with_label_values(&labels).observe(elapsed.as_secs_f64());
        if code == Code::Ok && self.rpc.kind == "unary" {
            m.grpc_msg_sent.with_label_values(&labels).inc();
        }
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_fault(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.span.in_scope(|| {
            tracing::info!(
                method = self.rpc.full_name,
                code = go_code_name(code),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                peer = self.peer.as_deref(),
                "rpc"
            );
        });
    }
}

impl Drop for Recorder {
    // The client went away (or the connection broke) before the status.
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    struct RecordingBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B> HttpBody for RecordingBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_from_headers(trailers).unwrap_or(Code::Unknown);
                    if let Some(mut recorder) = this.recorder.take() {
                        recorder.finish(code);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(mut recorder) = this.recorder.take() {
                    recorder.finish(Code::Internal);
                }
            }
            None => {
                if let Some(mut recorder) = this.recorder.take() {
                    recorder.finish(Code::Unknown);
                }
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn status_from_headers(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from(i32::from_str(value).ok()?))
}

/// The caller's deadline from `grpc-timeout` (`<digits><unit>`, gRPC over
/// HTTP/2 spec), if any.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Codes that mean the server (not the caller) failed, for span status.
fn is_server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown | Code::Internal | Code::Unavailable | Code::DataLoss | Code::Unimplemented
    )
}

/// Code names as Go's `codes.Code.String()` spells them, which is what
/// go-grpc-prometheus puts in the `grpc_code` label.
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        let mut headers = http::HeaderMap::new();
        for (raw, expected) in [
            ("100m", Some(Duration::from_millis(100))),
            ("5S", Some(Duration::from_secs(5))),
            ("2M", Some(Duration::from_secs(120))),
            ("250000u", Some(Duration::from_millis(250))),
            ("5000000n", Some(Duration::from_millis(5))),
            ("10x", None),
            ("m", None),
            ("123456789S", None),
        ] {
            headers.insert("grpc-timeout", http::HeaderValue::from_static(raw));
            assert_eq!(grpc_timeout(&headers), expected, "{raw}");
        }
    }

    #[test]
    fn go_spells_cancelled_with_one_l() {
        assert_eq!(go_code_name(Code::Cancelled), "Canceled");
        assert_eq!(go_code_name(Code::Ok), "OK");
    }
}

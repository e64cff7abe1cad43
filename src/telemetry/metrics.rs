//! Every Prometheus metric the service exports, as one typed struct over one
//! registry. `/metrics` (actix-web-prom) serves the same registry, so HTTP,
//! gRPC, actor, pool and auth metrics come out of a single scrape.
//!
//! The gRPC names and labels are go-grpc-prometheus's, so dashboards built
//! for the Go service keep working.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    core::Collector,
};

/// Latency buckets (seconds) shared by gRPC and actor histograms: 0.5 ms to
/// 10 s, dense around the 5–250 ms range where a login (one argon2 verify,
/// ~50 ms with OWASP parameters) and a cached GetMe (< 5 ms) sit.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The `result` label values of `auth_tls_handshakes_total`.
pub const TLS_HANDSHAKE_RESULTS: &[&str] = &[
    "ok",
    "no_certificate",
    "expired",
    "unknown_ca",
    "wrong_purpose",
    "bad_certificate",
    "incompatible",
    "protocol",
    "timeout",
    "io",
];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,

    /// RPCs started, by type, service and method (go-grpc-prometheus).
    pub grpc_started: IntCounterVec,
    /// RPCs completed, by type, service, method and gRPC code spelled as Go
    /// spells it (`OK`, `Unauthenticated`, ...).
    pub grpc_handled: IntCounterVec,
    /// Request messages received.
    pub grpc_msg_received: IntCounterVec,
    /// Response messages sent.
    pub grpc_msg_sent: IntCounterVec,
    /// Time from request headers to response, by type, service and method.
    pub grpc_handling_seconds: HistogramVec,

    /// Messages waiting in an actor's mailbox (sampled).
    pub actor_mailbox_queued: IntGaugeVec,
    /// Messages an actor accepts before callers are turned away.
    pub actor_mailbox_capacity: IntGaugeVec,
    /// Messages an actor is working on right now (sampled).
    pub actor_in_flight: IntGaugeVec,
    /// Times the supervisor restarted an actor.
    pub actor_restarts: IntCounterVec,
    /// Messages an actor finished, by actor and message type.
    pub actor_messages_handled: IntCounterVec,
    /// Time from a message being opened to its reply, by actor and message.
    pub actor_handling_seconds: HistogramVec,
    /// Time a message waited in the mailbox, by actor.
    pub actor_queue_wait_seconds: HistogramVec,
    /// Callers turned away because an actor's mailbox was full.
    pub actor_rejected: IntCounterVec,

    /// Connections a pool holds, by pool and state (`idle`, `in_use`).
    pub pool_connections: IntGaugeVec,
    /// Configured maximum connections, by pool.
    pub pool_max_connections: IntGaugeVec,
    /// Callers waiting for a pooled connection (sampled).
    pub pool_pending_gets: IntGaugeVec,
    /// Connection checkouts that timed out, by pool (sampled from bb8).
    pub pool_timeouts: IntGaugeVec,

    /// Time of one SQL statement or Redis command (pool checkout included),
    /// by dependency, low-cardinality operation name and outcome.
    pub dependency_seconds: HistogramVec,
    /// 1 when the dependency answered its last health probe, else 0.
    pub dependency_up: IntGaugeVec,

    /// Time to hash or verify one password, by operation and algorithm.
    pub password_hash_seconds: HistogramVec,
    /// Login attempts by outcome: `ok`, `bad_credentials`, `throttled`.
    pub logins: IntCounterVec,
    /// Registration attempts by outcome: `ok`, `email_taken`, `denied`.
    pub registrations: IntCounterVec,

    /// TLS handshakes on the gRPC port by result: `ok`, or why one failed
    /// (`no_certificate`, `expired`, `unknown_ca`, `wrong_purpose`,
    /// `bad_certificate`, `incompatible`, `protocol`, `timeout`, `io`).
    pub tls_handshakes: IntCounterVec,
    /// Certificate reloads refused (the previous certificate kept serving).
    pub tls_reload_failures: IntCounter,
    /// When the served certificate expires (unix seconds; 0 without TLS).
    pub tls_certificate_expiry: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let grpc_labels = &["grpc_type", "grpc_service", "grpc_method"];
        let metrics = Self {
            grpc_started: IntCounterVec::new(
                Opts::new("grpc_server_started_total", "Total number of RPCs started on the server."),
                grpc_labels,
            )?,
            grpc_handled: IntCounterVec::new(
                Opts::new(
                    "grpc_server_handled_total",
                    "Total number of RPCs completed on the server, regardless of success or failure.",
                ),
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            )?,
            grpc_msg_received: IntCounterVec::new(
                Opts::new(
                    "grpc_server_msg_received_total",
                    "Total number of RPC stream messages received on the server.",
                ),
                grpc_labels,
            )?,
            grpc_msg_sent: IntCounterVec::new(
                Opts::new(
                    "grpc_server_msg_sent_total",
                    "Total number of gRPC stream messages sent by the server.",
                ),
                grpc_labels,
            )?,
            grpc_handling_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                grpc_labels,
            )?,
            actor_mailbox_queued: IntGaugeVec::new(
                Opts::new("auth_actor_mailbox_queued", "Messages waiting in the actor's mailbox."),
                &["actor"],
            )?,
            actor_mailbox_capacity: IntGaugeVec::new(
                Opts::new(
                    "auth_actor_mailbox_capacity",
                    "Messages the actor accepts (queued plus in flight) before refusing callers.",
                ),
                &["actor"],
            )?,
            actor_in_flight: IntGaugeVec::new(
                Opts::new("auth_actor_in_flight", "Messages the actor is processing now."),
                &["actor"],
            )?,
            actor_restarts: IntCounterVec::new(
                Opts::new("auth_actor_restarts_total", "Times the actor was restarted by its supervisor."),
                &["actor"],
            )?,
            actor_messages_handled: IntCounterVec::new(
                Opts::new("auth_actor_messages_handled_total", "Messages the actor finished handling."),
                &["actor", "message"],
            )?,
            actor_handling_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "auth_actor_message_handling_seconds",
                    "Time from the actor taking a message to its reply.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["actor", "message"],
            )?,
            actor_queue_wait_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "auth_actor_queue_wait_seconds",
                    "Time a message waited in the actor's mailbox.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["actor"],
            )?,
            actor_rejected: IntCounterVec::new(
                Opts::new(
                    "auth_actor_rejected_total",
                    "Messages refused because the actor's mailbox was full.",
                ),
                &["actor"],
            )?,
            pool_connections: IntGaugeVec::new(
                Opts::new("auth_pool_connections", "Connections held by the pool, by state."),
                &["pool", "state"],
            )?,
            pool_max_connections: IntGaugeVec::new(
                Opts::new("auth_pool_max_connections", "Configured pool size."),
                &["pool"],
            )?,
            pool_pending_gets: IntGaugeVec::new(
                Opts::new("auth_pool_pending_gets", "Callers waiting for a connection."),
                &["pool"],
            )?,
            pool_timeouts: IntGaugeVec::new(
                Opts::new(
                    "auth_pool_checkout_timeouts",
                    "Connection checkouts that timed out since the pool was created.",
                ),
                &["pool"],
            )?,
            dependency_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "auth_dependency_operation_seconds",
                    "Time of one SQL statement or Redis command, pool checkout included.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["dependency", "operation", "outcome"],
            )?,
            dependency_up: IntGaugeVec::new(
                Opts::new(
                    "auth_dependency_up",
                    "1 when the dependency answered its last health probe, else 0.",
                ),
                &["dependency"],
            )?,
            password_hash_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "auth_password_hash_seconds",
                    "Time to hash or verify one password.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["operation", "algorithm"],
            )?,
            logins: IntCounterVec::new(
                Opts::new("auth_logins_total", "Login attempts by outcome."),
                &["outcome"],
            )?,
            registrations: IntCounterVec::new(
                Opts::new("auth_registrations_total", "Registration attempts by outcome."),
                &["outcome"],
            )?,
            tls_handshakes: IntCounterVec::new(
                Opts::new("auth_tls_handshakes_total", "TLS handshakes on the gRPC port by result."),
                &["result"],
            )?,
            tls_reload_failures: IntCounter::new(
                "auth_tls_reload_failures_total",
                "Certificate reloads refused; the previous certificate kept serving.",
            )?,
            tls_certificate_expiry: IntGauge::new(
                "auth_tls_certificate_expiry_timestamp_seconds",
                "When the served gRPC certificate expires (unix seconds; 0 without TLS).",
            )?,
            registry,
        };
        metrics.register_all()?;
        // Every result from the start, so dashboards and alerts see zeros
        // rather than no series.
        for result in TLS_HANDSHAKE_RESULTS {
            metrics.tls_handshakes.with_label_values(&[result]);
        }
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let collectors: [Box<dyn Collector>; 25] = [
            Box::new(self.grpc_started.clone()),
            Box::new(self.grpc_handled.clone()),
            Box::new(self.grpc_msg_received.clone()),
            Box::new(self.grpc_msg_sent.clone()),
            Box::new(self.grpc_handling_seconds.clone()),
            Box::new(self.actor_mailbox_queued.clone()),
            Box::new(self.actor_mailbox_capacity.clone()),
            Box::new(self.actor_in_flight.clone()),
            Box::new(self.actor_restarts.clone()),
            Box::new(self.actor_messages_handled.clone()),
            Box::new(self.actor_handling_seconds.clone()),
            Box::new(self.actor_queue_wait_seconds.clone()),
            Box::new(self.actor_rejected.clone()),
            Box::new(self.pool_connections.clone()),
            Box::new(self.pool_max_connections.clone()),
            Box::new(self.pool_pending_gets.clone()),
            Box::new(self.pool_timeouts.clone()),
            Box::new(self.dependency_seconds.clone()),
            Box::new(self.dependency_up.clone()),
            Box::new(self.password_hash_seconds.clone()),
            Box::new(self.logins.clone()),
            Box::new(self.registrations.clone()),
            Box::new(self.tls_handshakes.clone()),
            Box::new(self.tls_reload_failures.clone()),
            Box::new(self.tls_certificate_expiry.clone()),
        ];
        for collector in collectors {
            self.registry.register(collector)?;
        }
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(())
    }
}

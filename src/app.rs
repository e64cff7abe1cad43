//! Wiring: settings in, a running service out. Starts the actors, binds both
//! servers (port 0 allowed; the bound addresses are reported back), and runs
//! until told to stop, then drains.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::dev::ServerHandle;
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;

use crate::{
    actors::{
        ActorStats,
        metrics::{self as sampler, MetricsSampler},
        password_hasher::{self, Argon2Hasher, PasswordHasher},
        session_store::{self, SessionPolicy, SessionStore},
        user_store::{self, UserStore},
    },
    config::Settings,
    grpc::{
        self, UserServiceImpl, health::ServingState, layers::RpcLayer,
        proto::user_service_server::UserServiceServer,
    },
    ops::{self, OpsState},
    service::AuthService,
    telemetry::metrics::Metrics,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("argon2 parameters: {0}")]
    Hasher(#[from] password_hasher::HashError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("ops server: {0}")]
    Ops(#[from] ops::OpsError),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("gRPC server task panicked")]
    GrpcPanicked,
}

/// A started service. Dropping it without [`Application::run_until_stopped`]
/// leaves the servers running until the actix System stops.
pub struct Application {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    grpc_shutdown: oneshot::Sender<()>,
    http: ServerHandle,
    serving: ServingState,
    drain_timeout: Duration,
}

impl Application {
    /// Must be called inside an actix System running on a multi-thread Tokio
    /// runtime (`System::with_tokio_rt`): actors live on the System and its
    /// arbiters, the gRPC server on the Tokio workers.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let metrics = Metrics::new()?;
        let capacity = settings.actors.mailbox_capacity;

        let user_stats = ActorStats::new(user_store::NAME, capacity, metrics.clone());
        let users =
            UserStore::start(settings.postgres.clone(), &settings.actors, Arc::clone(&user_stats));

        let session_stats = ActorStats::new(session_store::NAME, capacity, metrics.clone());
        let sessions = SessionStore::start(
            settings.redis.clone(),
            SessionPolicy::from_settings(&settings),
            &settings.actors,
            Arc::clone(&session_stats),
        );

        let hasher_stats =
            ActorStats::new(password_hasher::NAME, settings.argon2.queue_capacity, metrics.clone());
        let argon2 = Argon2Hasher::new(
            settings.argon2.memory_kib,
            settings.argon2.iterations,
            settings.argon2.parallelism,
        )?;
        let hasher = PasswordHasher::start(
            argon2,
            settings.hasher_threads(),
            Arc::clone(&hasher_stats),
            metrics.clone(),
        );

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let serving = ServingState::new(reporter).await;

        let sampler_stats = ActorStats::new(sampler::NAME, capacity, metrics.clone());
        let sampler = MetricsSampler::start(
            Duration::from_secs(settings.metrics.sample_interval_secs),
            vec![user_stats, session_stats, hasher_stats],
            users.clone(),
            sessions.clone(),
            serving.clone(),
            metrics.clone(),
            sampler_stats,
        );

        let auth = AuthService::new(
            users.clone(),
            sessions.clone(),
            hasher,
            metrics.clone(),
            settings.lookup.public,
        );

        // Both ports are bound before either server starts, so a failed
        // bind leaves nothing running.
        let grpc_listener = bind(settings.grpc.addr, "gRPC")?;
        let http_listener = bind(settings.http.addr, "HTTP")?;
        let grpc_addr = local_addr(&grpc_listener, "gRPC")?;
        let http_addr = local_addr(&http_listener, "HTTP")?;
        grpc_listener.set_nonblocking(true).map_err(|source| StartError::Bind {
            what: "gRPC",
            addr: grpc_addr,
            source,
        })?;
        let grpc_listener = tokio::net::TcpListener::from_std(grpc_listener)
            .map_err(|source| StartError::Bind { what: "gRPC", addr: grpc_addr, source })?;

        // gRPC
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let (grpc_shutdown, shutdown_signal) = oneshot::channel::<()>();
        let grpc_server = tonic::transport::Server::builder()
            .layer(RpcLayer::new(metrics.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(UserServiceServer::new(UserServiceImpl::new(auth)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), async {
                let _ = shutdown_signal.await;
            });

        // Ops HTTP
        let ops_state = OpsState { users, sessions, sampler, serving: serving.clone() };
        let http_server = ops::build_server(http_listener, ops_state, &metrics)?;
        let http = http_server.handle();

        let grpc_task = tokio::spawn(grpc_server);
        actix_rt::spawn(http_server);

        tracing::info!(%grpc_addr, %http_addr, "auth-service listening");
        Ok(Self {
            grpc_addr,
            http_addr,
            grpc_task,
            grpc_shutdown,
            http,
            serving,
            drain_timeout: settings.grpc.drain_timeout(),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` resolves (or the gRPC server fails), then stops
    /// accepting, lets in-flight RPCs finish within the drain timeout, stops
    /// the ops server and finally the actors.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        let early_exit = tokio::select! {
            () = shutdown => None,
            result = &mut self.grpc_task => Some(result),
        };
        if let Some(result) = early_exit {
            self.http.stop(false).await;
            actix::System::current().stop();
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(RunError::Grpc(e)),
                Err(_) => Err(RunError::GrpcPanicked),
            };
        }

        tracing::info!(drain_timeout = ?self.drain_timeout, "shutting down: draining in-flight RPCs");
        // Readiness and gRPC health flip first, so load balancers stop
        // routing here while in-flight RPCs finish.
        self.serving.begin_drain(&["postgres", "redis"]).await;
        let _ = self.grpc_shutdown.send(());
        let drained = tokio::time::timeout(self.drain_timeout, &mut self.grpc_task).await;
        let result = match drained {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(RunError::Grpc(e)),
            Ok(Err(_)) => Err(RunError::GrpcPanicked),
            Err(_) => {
                tracing::warn!("drain timeout reached; abandoning remaining RPCs");
                self.grpc_task.abort();
                Ok(())
            }
        };
        self.http.stop(true).await;
        actix::System::current().stop();
        tracing::info!("stopped");
        result
    }
}

fn bind(addr: SocketAddr, what: &'static str) -> Result<std::net::TcpListener, StartError> {
    std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(
    listener: &std::net::TcpListener,
    what: &'static str,
) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        what,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

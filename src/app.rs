//! The server: settings in, a running service out. Starts the actor system
//! (`system`), binds both ports (port 0 allowed; the bound addresses are
//! reported back), serves gRPC (`grpc::server`) and the ops HTTP server
//! (`ops`), and runs until told to stop, then drains.

use std::{net::SocketAddr, time::Duration};

use actix_web::dev::ServerHandle;

use crate::{
    actors::health::ServiceHealth,
    config::Settings,
    grpc::{GrpcServer, ServeError},
    ops::{self, OpsState},
    system::{ActorSystem, SystemError},
    telemetry::metrics::Metrics,
    workers::Workers,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Grpc(#[from] ServeError),
    #[error("ops server: {0}")]
    Ops(#[from] ops::OpsError),
}

/// A started service. Dropping it without [`Application::run_until_stopped`]
/// stops its workers.
pub struct Application {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    workers: Workers,
    grpc: GrpcServer,
    http: ServerHandle,
    health: ServiceHealth,
    drain_timeout: Duration,
}

impl Application {
    /// Must be called inside an actix System running on a multi-thread Tokio
    /// runtime (`System::with_tokio_rt`): the acceptor, the ops server and
    /// the metrics sampler run there; gRPC and the stores on the workers.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let metrics = Metrics::new()?;
        let system = ActorSystem::start(&settings, settings.worker_count(), metrics.clone())?;
        let health = ServiceHealth::default();
        let sampler = system.start_sampler(&settings, health.clone());

        // Both ports are bound before either server starts, so a failed
        // bind leaves nothing running.
        let grpc_listener = bind(settings.grpc.addr, "gRPC")?;
        let http_listener = bind(settings.http.addr, "HTTP")?;
        let grpc_addr = local_addr(&grpc_listener, "gRPC")?;
        let http_addr = local_addr(&http_listener, "HTTP")?;

        let ActorSystem { workers, storage, stores, auth, .. } = system;
        let grpc =
            GrpcServer::start(grpc_listener, &settings, auth, &health, &metrics, &workers).await?;
        let ops_state = OpsState {
            users: stores.users,
            sessions: stores.sessions,
            sampler,
            health: health.clone(),
            storage,
        };
        let http_server = ops::build_server(http_listener, ops_state, &metrics)?;
        let http = http_server.handle();
        actix_rt::spawn(http_server);

        tracing::info!(
            %grpc_addr,
            %http_addr,
            workers = workers.len(),
            %storage,
            "auth-service listening"
        );
        Ok(Self {
            grpc_addr,
            http_addr,
            workers,
            grpc,
            http,
            health,
            drain_timeout: settings.grpc.drain_timeout(),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` resolves (or a gRPC server fails), then stops
    /// accepting, lets in-flight RPCs finish within the drain timeout, stops
    /// the ops server, the workers and finally the actors.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let failed = tokio::select! {
            () = shutdown => None,
            failed = self.grpc.failed() => Some(failed),
        };
        if let Some(failed) = failed {
            self.grpc.abort();
            self.http.stop(false).await;
            self.workers.stop();
            actix::System::current().stop();
            return Err(failed);
        }

        tracing::info!(drain_timeout = ?self.drain_timeout, "shutting down: draining in-flight RPCs");
        // Readiness and gRPC health flip first, so load balancers stop
        // routing here while in-flight RPCs finish.
        self.health.begin_drain();
        let result = self.grpc.drain(self.drain_timeout).await;
        self.http.stop(true).await;
        self.workers.stop();
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

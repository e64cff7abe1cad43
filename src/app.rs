//! Wiring: settings in, a running service out. Starts the worker arbiters
//! and the actors, binds both servers (port 0 allowed; the bound addresses
//! are reported back), and runs until told to stop, then drains.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::dev::ServerHandle;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::{StreamExt as _, wrappers::UnboundedReceiverStream};

use crate::{
    actors::{
        ActorStats,
        metrics::{self as sampler, MetricsSampler},
        password_hasher::{self, Argon2Hasher, PasswordHasher},
        session_store::{self, SessionBackendSettings, SessionPolicy, SessionStore},
        user_store::{self, SqliteUserRepository, UserDatabase, UserStore, sqlite},
    },
    config::{GrpcSettings, Settings, StorageBackend},
    grpc::{
        self, UserServiceImpl, health::ServingState, layers::RpcLayer,
        proto::user_service_server::UserServiceServer,
    },
    ops::{self, OpsState},
    service::AuthService,
    telemetry::{metrics::Metrics, spans::Sampler},
    workers::Workers,
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
    #[error(transparent)]
    EmbeddedStorage(#[from] sqlite::OpenError),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("a gRPC worker stopped unexpectedly")]
    WorkerLost,
}

/// A started service. Dropping it without [`Application::run_until_stopped`]
/// stops its workers.
pub struct Application {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    workers: Workers,
    acceptor: JoinHandle<()>,
    /// Flips to `true` to stop accepting and drain every worker's server.
    shutdown: watch::Sender<bool>,
    /// One message per worker whose gRPC server ended.
    servers_done: mpsc::UnboundedReceiver<Result<(), tonic::transport::Error>>,
    http: ServerHandle,
    serving: ServingState,
    storage: StorageBackend,
    drain_timeout: Duration,
}

impl Application {
    /// Must be called inside an actix System running on a multi-thread Tokio
    /// runtime (`System::with_tokio_rt`): the acceptor, the ops server and
    /// the metrics sampler run there; gRPC and the stores on the workers.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let metrics = Metrics::new()?;
        let capacity = settings.actors.mailbox_capacity;
        let workers = Workers::start(settings.worker_count());

        let storage = settings.storage.backend;
        let (user_database, session_backend) = match storage {
            StorageBackend::External => (
                UserDatabase::Postgres(settings.postgres.clone()),
                SessionBackendSettings::Redis(settings.redis.clone()),
            ),
            StorageBackend::Embedded => {
                let users = SqliteUserRepository::open(
                    &settings.storage,
                    metrics.dependency_seconds.clone(),
                )?;
                tracing::warn!(
                    database = users.location(),
                    "EMBEDDED STORAGE: users in SQLite, sessions in this process's memory \
                     (lost on restart). For development and single-node use only; set \
                     AUTH__STORAGE__BACKEND=external (or APP_ENV=local/docker/production) for \
                     PostgreSQL + Redis"
                );
                (
                    UserDatabase::Sqlite(users),
                    SessionBackendSettings::Memory { max_entries: settings.storage.max_entries },
                )
            }
        };

        let user_stats =
            ActorStats::with_instances(user_store::NAME, capacity, workers.len(), metrics.clone());
        let users =
            UserStore::start(user_database, &settings.actors, Arc::clone(&user_stats), &workers);

        let session_stats = ActorStats::with_instances(
            session_store::NAME,
            capacity,
            SessionStore::instances(&session_backend, &workers),
            metrics.clone(),
        );
        let sessions = SessionStore::start(
            session_backend,
            SessionPolicy::from_settings(&settings),
            &settings.actors,
            Arc::clone(&session_stats),
            &workers,
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
            storage,
            metrics.clone(),
            sampler_stats,
        );

        let auth = AuthService::new(
            users.clone(),
            sessions.clone(),
            hasher,
            metrics.clone(),
            settings.lookup.public,
            settings.login.failure_floor(),
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

        // gRPC: one server per worker, each fed the connections the
        // acceptor deals it.
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        // Every service decodes at most grpc.max_request_bytes per message
        // (tonic's default is 4 MiB).
        let max_request = settings.grpc.max_request_bytes;
        let health_service = health_service.max_decoding_message_size(max_request);
        let reflection_v1 = reflection_v1.max_decoding_message_size(max_request);
        let reflection_v1alpha = reflection_v1alpha.max_decoding_message_size(max_request);
        let user_service =
            UserServiceServer::new(UserServiceImpl::new(auth, settings.net.trusted()))
                .max_decoding_message_size(max_request);
        let trace_sampler = Sampler::from_settings(&settings.tracing);
        let (shutdown, shutdown_signal) = watch::channel(false);
        let (done, servers_done) = mpsc::unbounded_channel();
        let mut connections = Vec::with_capacity(workers.len());
        for worker in workers.handles() {
            let (to_worker, incoming) = mpsc::unbounded_channel::<std::net::TcpStream>();
            connections.push(to_worker);
            let router = connection_limits(&settings.grpc)
                .layer(RpcLayer::new(metrics.clone(), trace_sampler))
                .add_service(health_service.clone())
                .add_service(reflection_v1.clone())
                .add_service(reflection_v1alpha.clone())
                .add_service(user_service.clone());
            let mut stop = shutdown_signal.clone();
            let done = done.clone();
            worker.spawn(async move {
                // Registered with this worker's reactor, so its I/O stays here.
                let incoming =
                    UnboundedReceiverStream::new(incoming).map(tokio::net::TcpStream::from_std);
                let result = router
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|stopping| *stopping).await;
                    })
                    .await;
                let _ = done.send(result);
            });
        }
        let acceptor = tokio::spawn(accept(grpc_listener, connections, shutdown_signal));

        // Ops HTTP
        let ops_state = OpsState { users, sessions, sampler, serving: serving.clone(), storage };
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
            acceptor,
            shutdown,
            servers_done,
            http,
            serving,
            storage,
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
    ) -> Result<(), RunError> {
        let early_exit = tokio::select! {
            () = shutdown => None,
            ended = self.servers_done.recv() => Some(ended),
        };
        if let Some(ended) = early_exit {
            let _ = self.shutdown.send(true);
            self.acceptor.abort();
            self.http.stop(false).await;
            self.workers.stop();
            actix::System::current().stop();
            return match ended {
                Some(Err(e)) => Err(RunError::Grpc(e)),
                Some(Ok(())) | None => Err(RunError::WorkerLost),
            };
        }

        tracing::info!(drain_timeout = ?self.drain_timeout, "shutting down: draining in-flight RPCs");
        // Readiness and gRPC health flip first, so load balancers stop
        // routing here while in-flight RPCs finish.
        self.serving.begin_drain(self.storage.dependencies()).await;
        let _ = self.shutdown.send(true);
        let workers = self.workers.len();
        let servers_done = &mut self.servers_done;
        let drained = tokio::time::timeout(self.drain_timeout, async {
            let mut result = Ok(());
            for _ in 0..workers {
                match servers_done.recv().await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => result = Err(RunError::Grpc(e)),
                    None => return Err(RunError::WorkerLost),
                }
            }
            result
        })
        .await;
        let result = drained.unwrap_or_else(|_| {
            tracing::warn!("drain timeout reached; abandoning remaining RPCs");
            Ok(())
        });
        let _ = (&mut self.acceptor).await;
        self.http.stop(true).await;
        self.workers.stop();
        actix::System::current().stop();
        tracing::info!("stopped");
        result
    }
}

/// Accepts gRPC connections and deals them to the workers in turn, until
/// `shutdown` flips.
async fn accept(
    listener: tokio::net::TcpListener,
    workers: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // rather than spin on the error.
                tracing::warn!(error = %e, "cannot accept a gRPC connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // gRPC answers are small writes; Nagle would hold them for an ACK.
        let _ = stream.set_nodelay(true);
        match stream.into_std() {
            Ok(stream) => {
                let _ = workers[next % workers.len()].send(stream);
                next = next.wrapping_add(1);
            }
            Err(e) => tracing::warn!(error = %e, "cannot hand a connection to a worker"),
        }
    }
}

/// A gRPC server with the per-connection limits of `grpc.*`.
fn connection_limits(grpc: &GrpcSettings) -> tonic::transport::Server {
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(grpc.max_concurrent_streams)
        .http2_max_header_list_size(grpc.max_header_list_bytes)
        .http2_keepalive_interval(grpc.keepalive_interval())
        .http2_keepalive_timeout(Some(grpc.keepalive_timeout()));
    match grpc.max_connection_age() {
        Some((age, grace)) => server.max_connection_age(age).max_connection_age_grace(grace),
        None => server,
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

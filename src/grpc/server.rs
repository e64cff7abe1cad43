//! The gRPC server: one tonic server per worker (each with the RPC layer,
//! `grpc.health.v1`, reflection v1 and v1alpha, `UserService` and
//! `AdminService`, within the `grpc.*` limits), fed the connections an
//! acceptor deals them in turn (over TLS when configured: see [`super::tls`]),
//! and drained on shutdown.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::{StreamExt as _, wrappers::UnboundedReceiverStream};

use super::{
    UserServiceImpl,
    admin::AdminServiceImpl,
    health,
    layers::RpcLayer,
    proto,
    proto::{admin_service_server::AdminServiceServer, user_service_server::UserServiceServer},
    tls::{TlsReloader, TlsTerminator},
};
use crate::{
    actors::health::ServiceHealth,
    config::{GrpcSettings, Settings},
    service::AuthService,
    telemetry::{metrics::Metrics, spans::Sampler},
    workers::Workers,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC listener on {addr}: {source}")]
    Listener { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("a gRPC worker stopped unexpectedly")]
    WorkerLost,
    #[error("TLS on the gRPC port: {0}")]
    Tls(#[from] crate::tls::MaterialError),
}

/// The running servers.
pub struct GrpcServer {
    acceptor: JoinHandle<()>,
    /// Flips to `true` to stop accepting and drain every worker's server.
    shutdown: watch::Sender<bool>,
    /// One message per worker whose server ended.
    servers_done: mpsc::UnboundedReceiver<Result<(), tonic::transport::Error>>,
    workers: usize,
    /// Mirrors [`ServiceHealth`] into grpc.health.v1; ends once it has
    /// shown the drain.
    health: JoinHandle<()>,
}

impl GrpcServer {
    /// Starts serving `listener` on every worker.
    pub async fn start(
        listener: std::net::TcpListener,
        settings: &Settings,
        auth: AuthService,
        service_health: &ServiceHealth,
        metrics: &Metrics,
        workers: &Workers,
    ) -> Result<Self, ServeError> {
        let addr = listener.local_addr().map_err(|source| ServeError::Listener {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|source| ServeError::Listener { addr, source })?;

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = health::mirror(service_health, reporter).await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        // Every service decodes at most grpc.max_request_bytes per message
        // (tonic's default is 4 MiB).
        let max_request = settings.grpc.max_request_bytes;
        let health_service = health_service.max_decoding_message_size(max_request);
        let reflection_v1 = reflection_v1.max_decoding_message_size(max_request);
        let reflection_v1alpha = reflection_v1alpha.max_decoding_message_size(max_request);
        let admin_service = AdminServiceServer::new(AdminServiceImpl::new(auth.clone()))
            .max_decoding_message_size(max_request);
        let user_service =
            UserServiceServer::new(UserServiceImpl::new(auth, settings.net.trusted()))
                .max_decoding_message_size(max_request);
        let tls = if settings.grpc.tls.enabled() {
            let (reloader, terminator) = TlsReloader::load(&settings.grpc.tls, metrics)?;
            tokio::spawn(reloader.run());
            Some(terminator)
        } else {
            None
        };
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
                .add_service(user_service.clone())
                .add_service(admin_service.clone());
            let mut stop = shutdown_signal.clone();
            let stopped = async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            let done = done.clone();
            let tls = tls.clone();
            worker.spawn(async move {
                // Registered with this worker's reactor, so its I/O (and its
                // TLS handshakes) stay here.
                let result = match tls {
                    None => {
                        let incoming = UnboundedReceiverStream::new(incoming)
                            .map(tokio::net::TcpStream::from_std);
                        router.serve_with_incoming_shutdown(incoming, stopped).await
                    }
                    Some(terminator) => {
                        let secured = handshakes(incoming, terminator);
                        router.serve_with_incoming_shutdown(secured, stopped).await
                    }
                };
                let _ = done.send(result);
            });
        }
        let acceptor = tokio::spawn(accept(listener, connections, shutdown_signal));
        Ok(Self { acceptor, shutdown, servers_done, workers: workers.len(), health })
    }

    /// Resolves when a worker's server ends on its own (an error, or a lost
    /// worker): the service cannot go on.
    pub async fn failed(&mut self) -> ServeError {
        match self.servers_done.recv().await {
            Some(Err(e)) => ServeError::Grpc(e),
            Some(Ok(())) | None => ServeError::WorkerLost,
        }
    }

    /// Stops at once, without draining.
    pub fn abort(&self) {
        let _ = self.shutdown.send(true);
        self.acceptor.abort();
    }

    /// Drains: waits until grpc.health.v1 shows the drain that `health`
    /// began (so load balancers stop routing here and `Watch` streams end),
    /// stops accepting, and lets in-flight RPCs finish within `limit`.
    pub async fn drain(&mut self, limit: Duration) -> Result<(), ServeError> {
        if tokio::time::timeout(Duration::from_secs(2), &mut self.health).await.is_err() {
            tracing::warn!("gRPC health did not report the drain in time");
        }
        let _ = self.shutdown.send(true);
        let (workers, servers_done) = (self.workers, &mut self.servers_done);
        let drained = tokio::time::timeout(limit, async {
            let mut result = Ok(());
            for _ in 0..workers {
                match servers_done.recv().await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => result = Err(ServeError::Grpc(e)),
                    None => return Err(ServeError::WorkerLost),
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
        result
    }
}

/// The connections of `incoming` once their TLS handshakes complete, each
/// handshake a task of its own on this worker (a slow or failed one holds
/// up no other connection).
fn handshakes(
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    terminator: TlsTerminator,
) -> UnboundedReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>
{
    let (secured, stream) = mpsc::unbounded_channel();
    tokio::task::spawn_local(async move {
        while let Some(tcp) = incoming.recv().await {
            let (terminator, secured) = (terminator.clone(), secured.clone());
            tokio::task::spawn_local(async move {
                let Ok(tcp) = tokio::net::TcpStream::from_std(tcp) else { return };
                if let Some(tls) = terminator.accept(tcp).await {
                    let _ = secured.send(Ok(tls));
                }
            });
        }
    });
    UnboundedReceiverStream::new(stream)
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

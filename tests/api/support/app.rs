//! [`TestApp`]: the real service, in process, on ephemeral ports, on either
//! storage backend (its own database and key prefix, or data directory).

use std::{net::SocketAddr, thread::JoinHandle, time::Duration};

use auth_service::grpc::proto::user_service_client::UserServiceClient;
use auth_service::{
    app::Application,
    config::{SecretUrl, Settings},
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::{
    Backend, Client, delete_redis_keys, drop_database, http_get, postgres_server, redis_url,
    require_dependencies, unique_database,
};

pub fn data_dir(database: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(database)
}

/// Settings for a test service: ephemeral ports, its own database and key
/// prefix (external) or data directory (embedded), cheap argon2 (the cost
/// is tested on its own), fast sampling.
pub fn backend_settings(backend: Backend, database: &str) -> Settings {
    let mut s = test_settings(database);
    s.storage.backend = backend;
    s
}

/// [`backend_settings`] on the external backend.
pub fn test_settings(database: &str) -> Settings {
    let mut s = Settings::defaults().expect("embedded defaults");
    s.storage.backend = Backend::External;
    s.storage.data_dir = data_dir(database).to_string_lossy().into_owned();
    s.grpc.addr = "127.0.0.1:0".parse().expect("addr");
    s.http.addr = "127.0.0.1:0".parse().expect("addr");
    s.grpc.drain_timeout_secs = 5;
    s.postgres.url = SecretUrl::new(format!("{}/{database}", postgres_server()));
    s.postgres.pool_max_size = 5;
    s.redis.url = SecretUrl::new(redis_url());
    s.redis.pool_max_size = 4;
    s.redis.key_prefix = format!("test:{database}:");
    s.argon2.memory_kib = 1024;
    s.argon2.iterations = 1;
    s.argon2.threads = 2;
    s.metrics.sample_interval_secs = 1;
    // Failed logins are many here; the floor has a test of its own.
    s.login.failure_floor_ms = 0;
    s
}

/// Makes hashing slow and single-threaded, so hashing work is observable
/// (queues, deadlines, drains) instead of finishing at once.
pub fn slow_hashing(s: &mut Settings, memory_kib: u32, iterations: u32) {
    s.argon2.memory_kib = memory_kib;
    s.argon2.iterations = iterations;
    s.argon2.threads = 1;
}

pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub client: Client,
    pub settings: Settings,
    pub database: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a service with adjusted settings and waits until it is ready.
    pub async fn spawn_with(backend: Backend, customize: impl FnOnce(&mut Settings)) -> Self {
        let app = Self::start_with(backend, customize).await;
        app.wait_ready(Duration::from_secs(20)).await;
        app
    }

    /// Starts a service without waiting for readiness (fault tests).
    pub async fn start_with(backend: Backend, customize: impl FnOnce(&mut Settings)) -> Self {
        if backend == Backend::External {
            require_dependencies();
        }
        let database = unique_database();
        let mut settings = backend_settings(backend, &database);
        customize(&mut settings);
        Self::start(settings, database).await
    }

    pub async fn start(settings: Settings, database: String) -> Self {
        let (addrs_tx, addrs_rx) = oneshot::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let app_settings = settings.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime")
            });
            system.block_on(async move {
                let app = Application::build(app_settings).await.expect("service starts");
                let _ = addrs_tx.send((app.grpc_addr(), app.http_addr()));
                app.run_until_stopped(async {
                    let _ = shutdown_rx.await;
                })
                .await
                .expect("service stops cleanly");
            });
        });
        let (grpc_addr, http_addr) = addrs_rx.await.expect("service reports its addresses");
        let channel =
            Channel::from_shared(format!("http://{grpc_addr}")).expect("uri").connect_lazy();
        Self {
            grpc_addr,
            http_addr,
            client: UserServiceClient::new(channel),
            settings,
            database,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, body) = self.get("/health/ready").await;
            if status == 200 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "not ready after {limit:?}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until grpc.health.v1 reports `service` as `wanted`.
    pub async fn wait_grpc_health(
        &self,
        service: &str,
        wanted: tonic_health::pb::health_check_response::ServingStatus,
        limit: Duration,
    ) {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let channel =
            Channel::from_shared(format!("http://{}", self.grpc_addr)).expect("uri").connect_lazy();
        let mut health = HealthClient::new(channel);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .map(|r| r.into_inner().status());
            if status.as_ref().is_ok_and(|s| *s == wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?}: {status:?}, wanted {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A plain HTTP/1.1 GET on the ops port: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http_addr, path).await
    }

    /// Stops the service gracefully and waits for it. The graceful drain
    /// needs the client side of each connection to keep running (HTTP/2
    /// GOAWAY/PING exchange), so the wait must not block the test's runtime:
    /// tests use the multi-thread flavour and this steps out of it.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let join = move || thread.join().expect("service thread");
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(join),
                _ => join(),
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
        match self.settings.storage.backend {
            Backend::External => {
                drop_database(&self.database);
                delete_redis_keys(&self.settings.redis.key_prefix);
            }
            Backend::Embedded => {
                let _ = std::fs::remove_dir_all(&self.settings.storage.data_dir);
            }
        }
    }
}

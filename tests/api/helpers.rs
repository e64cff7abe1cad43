//! The test harness: a real service per test, on ephemeral ports, on either
//! storage backend: external (its own Postgres database and Redis key
//! prefix) or embedded (its own data directory), so tests run in parallel;
//! typed client helpers; a TCP proxy that can cut a dependency.

use std::{net::SocketAddr, sync::OnceLock, thread::JoinHandle, time::Duration};

use auth_service::{
    app::Application,
    config::{SecretUrl, Settings},
    grpc::proto::{
        GetMeRequest, LoginRequest, RegisterRequest, User, user_service_client::UserServiceClient,
    },
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

pub type Client = UserServiceClient<Channel>;

pub use auth_service::config::StorageBackend as Backend;

/// Runs each named `async fn(Backend)` as two tests, `name::external` and
/// `name::embedded`: one body, so every behaviour is held to both backends.
/// (A function left out of the list is never called, which the dead-code
/// lint reports.)
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread")]
                async fn external() {
                    super::$name(crate::helpers::Backend::External).await
                }

                #[tokio::test(flavor = "multi_thread")]
                async fn embedded() {
                    super::$name(crate::helpers::Backend::Embedded).await
                }
            }
        )+
    };
}
pub(crate) use backend_tests;

/// Postgres server URL without a database, from `TEST_POSTGRES_URL`.
pub fn postgres_server() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Redis URL, from `TEST_REDIS_URL`.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Fails the run at once, saying what to start, when Postgres or Redis is
/// not reachable.
fn require_dependencies() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        for (name, url, default_port) in
            [("PostgreSQL", postgres_server(), 5432), ("Redis", redis_url(), 6379)]
        {
            let addr = host_port(&url, default_port);
            if std::net::TcpStream::connect_timeout(
                &addr.parse().unwrap_or_else(|_| panic!("bad address {addr}")),
                Duration::from_secs(2),
            )
            .is_err()
            {
                panic!(
                    "{name} is not reachable at {addr} ({url}). Start it (PostgreSQL with trust \
                     auth for user postgres, Redis with default settings) or point \
                     TEST_POSTGRES_URL / TEST_REDIS_URL at running instances."
                );
            }
        }
    });
}

fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if host.contains(':') { host.to_owned() } else { format!("{host}:{default_port}") }
}

/// Runs `f` on a plain thread (no async runtime: diesel's sync wrapper and
/// the CLI functions need that) and waits for it.
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("blocking helper panicked")
}

/// A fresh, unique database name.
pub fn unique_database() -> String {
    format!("auth_test_{}", uuid::Uuid::new_v4().simple())
}

/// The data directory of an embedded test service named `database`.
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

/// Best effort: the keys would expire anyway, but a suite run should not
/// leave an hour of sessions behind in a shared Redis.
pub fn delete_redis_keys(prefix: &str) {
    use bb8_redis::redis::{self, Commands as _};
    let pattern = format!("{prefix}*");
    let Ok(client) = redis::Client::open(redis_url()) else { return };
    let Ok(mut conn) = client.get_connection() else { return };
    let keys: Vec<String> = match conn.scan_match::<_, String>(&pattern) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = conn.del(keys);
    }
}

pub fn drop_database(database: &str) {
    let statement = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
    let url = format!("{}/postgres", postgres_server());
    blocking(move || {
        use diesel::{Connection as _, RunQueryDsl as _};
        use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
        if let Ok(mut conn) = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url) {
            let _ = diesel::sql_query(statement).execute(&mut conn);
        }
    });
}

/// Runs SQL statements against a database, outside any runtime.
pub fn execute_sql(database: &str, statements: Vec<String>) {
    let url = format!("{}/{database}", postgres_server());
    blocking(move || {
        use diesel::{Connection as _, connection::SimpleConnection as _};
        use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).expect("connect for SQL");
        for statement in statements {
            conn.batch_execute(&statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    });
}

/// Runs a query returning one text column named `value`, outside any runtime.
pub fn query_sql(database: &str, sql: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    let url = format!("{}/{database}", postgres_server());
    let sql = sql.to_owned();
    blocking(move || {
        use diesel::{Connection as _, RunQueryDsl as _};
        use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).expect("connect");
        diesel::sql_query(&sql)
            .load::<Row>(&mut conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|row| row.value)
            .collect()
    })
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[]).await
}

/// A plain HTTP/1.1 GET with extra headers: (status, body).
pub async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to ops port");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

// ---- typed client helpers ----

pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

pub fn registration(email: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.to_owned(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        password: password.to_owned(),
        role: String::new(),
        avatar: String::new(),
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// Registers a fresh user; returns it.
pub async fn register(client: &mut Client, email: &str, password: &str) -> User {
    client
        .register(registration(email, password))
        .await
        .unwrap_or_else(|s| panic!("register {email}: {s:?}"))
        .into_inner()
        .user
        .expect("user in response")
}

/// A LoginRequest.
pub fn credentials(email: &str, password: &str) -> LoginRequest {
    LoginRequest { email: email.to_owned(), password: password.to_owned() }
}

/// Logs in; returns (user, session id).
pub async fn login(client: &mut Client, email: &str, password: &str) -> (User, String) {
    let response = client
        .login(LoginRequest { email: email.to_owned(), password: password.to_owned() })
        .await
        .unwrap_or_else(|s| panic!("login {email}: {s:?}"))
        .into_inner();
    (response.user.expect("user"), response.session_id)
}

/// Registers and logs in a fresh user; returns (user, session id).
pub async fn signed_in(client: &mut Client) -> (User, String) {
    let email = unique_email();
    register(client, &email, PASSWORD).await;
    login(client, &email, PASSWORD).await
}

/// GetMe with `session`; returns the user.
pub async fn get_me(client: &mut Client, session: &str) -> User {
    client
        .get_me(with_session(GetMeRequest {}, session))
        .await
        .unwrap_or_else(|s| panic!("get me: {s:?}"))
        .into_inner()
        .user
        .expect("user in response")
}

/// A request carrying `session_id` metadata.
pub fn with_session<T>(message: T, session: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("session_id", MetadataValue::try_from(session).expect("ascii session id"));
    request
}

// ---- fault injection ----

/// A TCP proxy in front of a dependency. `cut()` closes every connection and
/// refuses new ones (accepts and closes them at once), as a crashed server
/// would; `stall()` keeps every connection open but forwards nothing, as a
/// partitioned network that drops packets silently would; `restore()` lets
/// traffic through again (connections held by a stall are closed then).
/// Bound to 127.0.0.1 only.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Forward,
    Stall,
    Cut,
}

impl ChaosProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, _) = tokio::sync::watch::channel(ProxyMode::Forward);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut changes = modes.subscribe();
                let current = *changes.borrow_and_update();
                match current {
                    ProxyMode::Cut => drop(inbound),
                    ProxyMode::Stall => {
                        tokio::spawn(async move {
                            let _ = changes.changed().await;
                            drop(inbound);
                        });
                    }
                    ProxyMode::Forward => {
                        tokio::spawn(forward(inbound, target, changes));
                    }
                }
            }
        });
        Self { addr, mode, task }
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.set(ProxyMode::Cut).await;
    }

    /// Keeps connections open but forwards nothing, on old and new ones.
    pub async fn stall(&self) {
        self.set(ProxyMode::Stall).await;
    }

    pub fn restore(&self) {
        self.mode.send_replace(ProxyMode::Forward);
    }

    async fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
        // Let the connection tasks observe it before the test goes on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies both ways until the mode changes; a stall then holds both sockets
/// open, silent, until the next change.
async fn forward(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut changes: tokio::sync::watch::Receiver<ProxyMode>,
) {
    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
        _ = changes.changed() => {}
    }
    if *changes.borrow_and_update() == ProxyMode::Stall {
        let _ = changes.changed().await;
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn postgres_addr() -> SocketAddr {
    host_port(&postgres_server(), 5432).parse().expect("postgres address")
}

pub fn redis_addr() -> SocketAddr {
    host_port(&redis_url(), 6379).parse().expect("redis address")
}

/// `url` with its host and port replaced by `addr` (to go through a proxy).
pub fn reroute(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    format!("{scheme}://{userinfo}{addr}{path}")
}

/// The call as a gRPC client with a retry policy makes it: retried on
/// UNAVAILABLE after a short pause (the service's UNAVAILABLE carries a
/// retry-after), and retried transparently when it never left the client.
pub async fn retrying<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Err(status)
                if (status.code() == tonic::Code::Unavailable || never_sent(&status))
                    && attempts < 60 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
}

/// A call the server never processed, which gRPC's transparent retry
/// (grpc-go, grpc-java) sends again: hyper never wrote it because its
/// connection closed first (tonic answers CANCELLED), or it was opened past
/// the last stream a gracefully stopping server's GOAWAY (NO_ERROR) said it
/// would process (tonic answers INTERNAL).
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = error.source();
    }
    false
}

// ---- the binary as a child process ----

/// The built `auth-service` binary, started on loopback ephemeral ports with
/// JSON logs, its own database and key prefix, plus `env`.
pub struct BinaryService {
    child: std::process::Child,
    /// Every line logged so far, read by a thread of its own as it comes:
    /// a pipe nobody reads fills up and stalls the service's logging.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    backend: Backend,
    database: String,
    /// Drop the database and keys on drop (not when replicas share them).
    owns_storage: bool,
}

impl BinaryService {
    /// Starts it and waits until it is ready (so migrated: the database
    /// exists before anything drops it).
    pub async fn start(backend: Backend, env: &[(&str, String)]) -> Self {
        Self::launch(backend, None, unique_database(), true, env).await
    }

    /// Started with `APP_ENV=app_env` (external storage by that layer alone,
    /// no storage setting of ours).
    pub async fn with_app_env(app_env: &str, env: &[(&str, String)]) -> Self {
        Self::launch(Backend::External, Some(app_env), unique_database(), true, env).await
    }

    /// One of several replicas on external storage sharing `database` (and
    /// the key prefix named after it), which the caller cleans up.
    pub async fn replica(database: &str, env: &[(&str, String)]) -> Self {
        Self::launch(Backend::External, None, database.to_owned(), false, env).await
    }

    async fn launch(
        backend: Backend,
        app_env: Option<&str>,
        database: String,
        owns_storage: bool,
        env: &[(&str, String)],
    ) -> Self {
        use std::io::BufRead as _;
        if backend == Backend::External {
            require_dependencies();
        }
        let mut command = binary_command(&database);
        match app_env {
            Some(app_env) => {
                command.env("APP_ENV", app_env);
            }
            None if backend == Backend::External => {
                command.env("AUTH__STORAGE__BACKEND", "external");
            }
            None => {}
        }
        command
            .env("AUTH__STORAGE__DATA_DIR", data_dir(&database))
            .env("AUTH__GRPC__ADDR", "127.0.0.1:0")
            .env("AUTH__HTTP__ADDR", "127.0.0.1:0")
            .env("AUTH__POSTGRES__URL", format!("{}/{database}", postgres_server()))
            .env("AUTH__REDIS__URL", redis_url())
            .env("AUTH__REDIS__KEY_PREFIX", format!("test:{database}:"))
            .env("AUTH__LOG__FORMAT", "json")
            .env("AUTH__ARGON2__MEMORY_KIB", "1024")
            .env("AUTH__ARGON2__ITERATIONS", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start binary");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn({
            let logs = std::sync::Arc::clone(&logs);
            move || {
                for line in stdout.lines().map_while(Result::ok) {
                    if line.contains("auth-service listening") {
                        let _ = listening_tx.send(line.clone());
                    }
                    logs.lock().expect("logs").push(line);
                }
            }
        });
        // Blocks this thread until it listens, a few milliseconds.
        let listening: serde_json::Value = listening_rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .and_then(|l| serde_json::from_str(&l).ok())
            .expect("a JSON 'listening' log line");
        let addr = |field: &str| -> SocketAddr {
            listening["fields"][field].as_str().and_then(|a| a.parse().ok()).expect(field)
        };
        let service = Self {
            grpc_addr: addr("grpc_addr"),
            http_addr: addr("http_addr"),
            child,
            logs,
            reader: Some(reader),
            backend,
            database,
            owns_storage,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while http_get(service.http_addr, "/health/ready").await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "binary never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        service
    }

    /// The database (external) or data directory name (embedded) it uses.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// What `/health/ready` answers now.
    pub async fn readiness(&self) -> (u16, String) {
        http_get(self.http_addr, "/health/ready").await
    }

    pub async fn client(&self) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        UserServiceClient::new(channel)
    }

    /// Sends SIGTERM; returns the exit status and every log line.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let killed =
            std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(killed.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(tokio::time::Instant::now() < deadline, "did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let logs = std::mem::take(&mut *self.logs.lock().expect("logs"));
        (status, logs)
    }
}

/// The binary as operators run it: from a directory of its own (no
/// `config/` beside it), without the caller's `APP_ENV` or settings.
pub fn binary_command(name: &str) -> std::process::Command {
    let cwd = binary_cwd(name);
    std::fs::create_dir_all(&cwd).expect("working directory");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_auth-service"));
    command.current_dir(cwd).env_remove("APP_ENV").env_remove("RUST_LOG");
    for (variable, _) in std::env::vars_os() {
        if variable.to_string_lossy().to_ascii_uppercase().starts_with("AUTH") {
            command.env_remove(variable);
        }
    }
    command
}

/// Runs `command` to its end, killed (and the test failed) if it takes
/// longer than `limit`: (exit success, stdout, stderr).
pub fn run_to_exit(command: &mut std::process::Command, limit: Duration) -> (bool, String, String) {
    use std::io::Read as _;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start binary");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), out.join().expect("stdout"), err.join().expect("stderr"))
}

/// The empty working directory of the binary run named `name`.
pub fn binary_cwd(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{name}-cwd"))
}

impl Drop for BinaryService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(binary_cwd(&self.database));
        match self.backend {
            _ if !self.owns_storage => {}
            Backend::External => {
                drop_database(&self.database);
                delete_redis_keys(&format!("test:{}:", self.database));
            }
            Backend::Embedded => {
                let _ = std::fs::remove_dir_all(data_dir(&self.database));
            }
        }
    }
}

// ---- private database servers, for tests that crash them ----

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs a server tool; as the `postgres` user when we are root (initdb and
/// postgres refuse to run as root).
fn run_as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut command = if is_root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        std::process::Command::new(program)
    };
    command.args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// A PostgreSQL server of the test's own (Debian's binaries), on a free
/// loopback port, in a temporary directory: it may be crashed and started.
pub struct PrivatePostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql package (/usr/lib/postgresql)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = std::env::temp_dir().join(format!("auth-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let _ = std::process::Command::new("chown").args(["postgres:", &path(&dir)]).status();
        let data = path(&dir.join("data"));
        let out = run_as_postgres(
            &path(&bin.join("initdb")),
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let server = Self { dir, bin, port: free_port() };
        server.resume();
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let options =
            format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, path(&self.dir));
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &[
                "-D",
                &path(&self.dir.join("data")),
                "-o",
                &options,
                "-l",
                &path(&self.dir.join("log")),
                "-w",
                "start",
            ],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A streaming replica of this server (pg_basebackup), running on a
    /// port of its own.
    pub fn replica(&self) -> Self {
        let dir = std::env::temp_dir().join(format!("auth-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let _ = std::process::Command::new("chown").args(["postgres:", &path(&dir)]).status();
        let out = run_as_postgres(
            &path(&self.bin.join("pg_basebackup")),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &path(&dir.join("data")),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        let replica = Self { dir, bin: self.bin.clone(), port: free_port() };
        replica.resume();
        replica
    }

    /// Runs SQL through psql on the `postgres` database; its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = run_as_postgres(
            &path(&self.bin.join("psql")),
            &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-Atc", sql],
        );
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Promotes a replica to primary and waits until it accepts writes.
    pub fn promote(&self) {
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-w", "promote"],
        );
        assert!(out.status.success(), "pg_ctl promote: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops it cleanly and starts it again on `port`.
    pub fn move_to(&mut self, port: u16) {
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-m", "fast", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        self.port = port;
        self.resume();
    }

    /// Stops it as a crash would: no checkpoint, clients cut off.
    pub fn crash(&self) {
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-m", "immediate", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PgBouncer of the test's own (Debian's `pgbouncer`) in transaction
/// pooling mode in front of `server` (host, port), with few server
/// connections, so consecutive transactions of one client land on
/// different server connections.
pub struct PgBouncer {
    dir: std::path::PathBuf,
    pub port: u16,
}

impl PgBouncer {
    pub fn start(server: (&str, u16), server_connections: u32) -> Self {
        install_pgbouncer();
        let dir =
            std::env::temp_dir().join(format!("auth-pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let port = free_port();
        let (host, server_port) = server;
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
        let config = format!(
            "[databases]\n* = host={host} port={server_port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
             default_pool_size = {server_connections}\nmax_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            dir = path(&dir),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).expect("pgbouncer.ini");
        let _ = std::process::Command::new("chown").args(["-R", "postgres:", &path(&dir)]).status();
        // -d: it daemonises once listening; stopped through its pidfile.
        let out = run_as_postgres("pgbouncer", &["-d", &path(&dir.join("pgbouncer.ini"))]);
        assert!(
            out.status.success(),
            "pgbouncer (Debian's pgbouncer package): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { dir, port }
    }
}

/// Installs Debian's pgbouncer when it is missing and we may (root, apt):
/// `cargo test` needs nothing else set up. Package scripts do not start its
/// service where policy-rc.d forbids it, as on our machines.
fn install_pgbouncer() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let found = |name: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if found("pgbouncer") || !found("apt-get") {
            return;
        }
        let install = "apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends pgbouncer; }";
        let _ = std::process::Command::new("sh")
            .args(["-c", install])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    });
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

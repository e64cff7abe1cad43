//! The built `auth-service` binary as operators run it: from a directory
//! of its own, with its own environment, to a deadline.

use std::{net::SocketAddr, time::Duration};

use auth_service::grpc::proto::user_service_client::UserServiceClient;
use tonic::transport::Channel;

use super::{
    Backend, Client, data_dir, delete_redis_keys, drop_database, http_get, postgres_server,
    redis_url, require_dependencies, unique_database,
};

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

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
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

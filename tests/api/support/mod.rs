//! The test harness, by concern: [`app`] (a real service per test, on
//! either backend), [`client`] (typed gRPC and HTTP helpers), [`database`]
//! (SQL and Redis keys), [`chaos`] (a proxy that cuts or stalls a
//! dependency), [`binary`] (the built binary as operators run it),
//! [`certs`] (a CA and certificates of the test's own), and servers of a
//! test's own: [`postgres`], [`pgbouncer`], [`redis`].

pub mod app;
pub mod binary;
pub mod certs;
pub mod chaos;
pub mod client;
pub mod database;
pub mod pgbouncer;
pub mod postgres;
pub mod redis;

use std::{sync::OnceLock, time::Duration};

pub use app::*;
pub use binary::*;
pub use chaos::*;
pub use client::*;
pub use database::*;
pub use pgbouncer::PgBouncer;
pub use postgres::PrivatePostgres;

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
                    super::$name(crate::support::Backend::External).await
                }

                #[tokio::test(flavor = "multi_thread")]
                async fn embedded() {
                    super::$name(crate::support::Backend::Embedded).await
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

/// A port nothing listens on now. A server started on it later may find it
/// taken by then: servers of the tests' own retry on another (see
/// [`with_free_port`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs `start` on free ports until one is not lost to a race with another
/// process between [`free_port`] and the server's bind (`start` answers
/// `Err` for "address in use", panics on anything else).
pub fn with_free_port<T>(mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..5 {
        match start(free_port()) {
            Ok(started) => return started,
            Err(clash) => last = clash,
        }
    }
    panic!("no free port after 5 tries: {last}");
}

/// Whether process `pid` listens on 127.0.0.1:`port` (Linux' /proc): a
/// server of the test's own, not another that took the port.
pub fn listens(pid: u32, port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // local_address, state 0A (LISTEN), inode
        .filter(|f| f.len() > 9 && f[1] == wanted && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|link| inodes.iter().any(|inode| link.to_string_lossy() == inode.as_str()))
}

/// A path as a command-line argument.
pub fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

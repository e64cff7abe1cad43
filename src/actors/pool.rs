//! Connection pools as the stores use them: a manager wrapper that tells
//! waiting callers of a failed connection attempt at once, and a
//! point-in-time sample of a pool for metrics.

use std::{fmt, sync::Arc, time::Instant};

/// A point-in-time view of a connection pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSample {
    pub max_size: u32,
    pub connections: u32,
    pub idle: u32,
    pub pending_gets: u64,
    pub timeouts: u64,
}

impl PoolSample {
    pub fn of<M: bb8::ManageConnection>(pool: &bb8::Pool<M>) -> Self {
        let state = pool.state();
        Self {
            max_size: pool.config().max_size,
            connections: state.connections,
            idle: state.idle_connections,
            pending_gets: state.statistics.pending_gets(),
            timeouts: state.statistics.get_timed_out,
        }
    }
}

/// Failed connection attempts of one pool, told to the callers waiting on
/// it. bb8 makes one attempt for a waiting caller and, when it fails, keeps
/// the caller waiting out the whole connection timeout anyway; a caller that
/// watches this answers UNAVAILABLE as soon as the attempt fails (a refused
/// connection: within milliseconds, from the very first call).
#[derive(Clone)]
pub struct ConnectFailures(Arc<tokio::sync::watch::Sender<String>>);

impl Default for ConnectFailures {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(String::new())))
    }
}

impl ConnectFailures {
    pub fn record(&self, error: &dyn fmt::Display) {
        self.0.send_replace(error.to_string());
    }

    /// Resolves with the error of the next attempt to fail after this call
    /// (never, while none does).
    pub fn next(&self) -> impl Future<Output = String> + 'static {
        let mut failures = self.0.subscribe();
        async move {
            match failures.changed().await {
                Ok(()) => failures.borrow_and_update().clone(),
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// A bb8 connection manager that reports its failed connection attempts.
pub struct Watched<M> {
    pub inner: M,
    pub failures: ConnectFailures,
}

impl<M: bb8::ManageConnection> bb8::ManageConnection for Watched<M> {
    type Connection = M::Connection;
    type Error = M::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let connected = self.inner.connect().await;
        if let Err(e) = &connected {
            self.failures.record(&DisplayDebug(e));
        }
        connected
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        self.inner.is_valid(conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        self.inner.has_broken(conn)
    }
}

/// bb8 asks only `Debug` of connection errors.
struct DisplayDebug<'a, E>(&'a E);

impl<E: fmt::Debug> fmt::Display for DisplayDebug<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// Milliseconds since the first call (never 0 after it): a cheap clock to
/// share between tasks through an atomic.
pub fn uptime_ms() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64 + 1
}

//! `RedisSessionRepository`: sessions, the user cache and login-failure
//! counters in Redis, usable without an actor. Keys (all under the configured
//! prefix):
//!
//! - `session:<digest of id>` → user id, expires with the session
//! - `user:<uuid>` → cached user (JSON, no password material)
//! - `login_attempts:<digest of email>` → attempts since the window began
//!   (cleared by a successful login)

use std::time::Duration;

use bb8_redis::{
    RedisConnectionManager,
    bb8::{self, Pool, PooledConnection},
    redis::{self, AsyncCommands as _, ErrorKind, RedisError},
};
use prometheus::HistogramVec;
use tracing::Instrument as _;

use crate::{
    config::{RedisSettings, Settings},
    domain::{Email, SessionId, User, UserId},
    error::{Dependency, DependencyError},
};

pub type RedisPool = Pool<RedisConnectionManager>;

const REDIS: Dependency = Dependency::Redis;

/// Lifetimes and limits the repository applies.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub session_ttl: Duration,
    pub user_cache_ttl: Duration,
    pub max_login_failures: u32,
    pub failure_window: Duration,
}

impl SessionPolicy {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            session_ttl: Duration::from_secs(settings.session.ttl_secs),
            user_cache_ttl: Duration::from_secs(settings.user_cache.ttl_secs),
            max_login_failures: settings.login.max_failures,
            failure_window: Duration::from_secs(settings.login.window_secs),
        }
    }
}

/// Builds the pool without connecting (the service starts while Redis is
/// down). Invalid URLs were rejected when the settings loaded.
pub fn build_pool(settings: &RedisSettings) -> Result<RedisPool, DependencyError> {
    let manager = RedisConnectionManager::new(settings.url.expose())
        .map_err(|e| DependencyError::rejected(REDIS, "configure", e))?;
    Ok(Pool::builder()
        .max_size(settings.pool_max_size)
        .connection_timeout(settings.connect_timeout())
        // One connect attempt per checkout, as for Postgres.
        .retry_connection(false)
        // bb8-redis never reports a broken connection, so each checkout is
        // validated with a PING; a dead multiplexed connection is replaced
        // instead of failing every command routed to it.
        .test_on_check_out(true)
        .build_unchecked(manager))
}

/// A session looked up by id, with the cached user when there is one.
#[derive(Debug, Clone)]
pub struct ResolvedSession {
    pub user_id: UserId,
    pub cached_user: Option<User>,
}

#[derive(Clone)]
pub struct RedisSessionRepository {
    pool: RedisPool,
    prefix: String,
    policy: SessionPolicy,
    /// `auth_dependency_operation_seconds`.
    timings: HistogramVec,
}

impl RedisSessionRepository {
    pub fn new(
        pool: RedisPool,
        prefix: String,
        policy: SessionPolicy,
        timings: HistogramVec,
    ) -> Self {
        Self { pool, prefix, policy, timings }
    }

    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}session:{}", self.prefix, id.storage_key())
    }

    fn user_key(&self, id: UserId) -> String {
        format!("{}user:{id}", self.prefix)
    }

    fn failures_key(&self, email: &Email) -> String {
        format!("{}login_attempts:{}", self.prefix, email.storage_key())
    }

    pub async fn create_session(&self, user: UserId) -> Result<SessionId, DependencyError> {
        let id = SessionId::generate()
            .map_err(|e| DependencyError::rejected(REDIS, "create_session", format!("rng: {e}")))?;
        let key = self.session_key(&id);
        let ttl = self.policy.session_ttl.as_secs();
        let stored: bool = self
            .run("create_session", async |conn| {
                // NX: never overwrite, however unlikely a 256-bit collision is.
                let reply: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(user.to_string())
                    .arg("EX")
                    .arg(ttl)
                    .arg("NX")
                    .query_async(conn)
                    .await?;
                Ok(reply.is_some())
            })
            .await?;
        if stored {
            Ok(id)
        } else {
            Err(DependencyError::rejected(REDIS, "create_session", "session id collision"))
        }
    }

    /// The session's user, with the cached copy of that user if present:
    /// GetMe's whole Redis work, on one pooled connection.
    pub async fn resolve_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<ResolvedSession>, DependencyError> {
        let key = self.session_key(id);
        let found = self
            .run("get_session", async |conn| {
                let user_id: Option<String> = conn.get(&key).await?;
                let Some(user_id) = user_id.and_then(|u| UserId::parse(&u).ok()) else {
                    return Ok(None);
                };
                let cached: Option<String> = conn.get(self.user_key(user_id)).await?;
                Ok(Some((user_id, cached)))
            })
            .await?;
        Ok(found.map(|(user_id, cached)| ResolvedSession {
            user_id,
            // An undecodable entry (older format) is a miss, not an error.
            cached_user: cached.and_then(|json| serde_json::from_str(&json).ok()),
        }))
    }

    /// Ends a session; `false` if there was none.
    pub async fn delete_session(&self, id: &SessionId) -> Result<bool, DependencyError> {
        let key = self.session_key(id);
        let deleted: u32 = self.run("delete_session", async |conn| conn.del(&key).await).await?;
        Ok(deleted > 0)
    }

    pub async fn cached_user(&self, id: UserId) -> Result<Option<User>, DependencyError> {
        let key = self.user_key(id);
        let json: Option<String> =
            self.run("get_cached_user", async |conn| conn.get(&key).await).await?;
        // An undecodable entry (older format) is a miss, not an error.
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    pub async fn cache_user(&self, user: &User) -> Result<(), DependencyError> {
        let key = self.user_key(user.id);
        let json = serde_json::to_string(user)
            .map_err(|e| DependencyError::rejected(REDIS, "cache_user", e))?;
        let ttl = self.policy.user_cache_ttl.as_secs();
        self.run("cache_user", async |conn| conn.set_ex::<_, _, ()>(&key, json, ttl).await).await
    }

    pub async fn invalidate_user(&self, id: UserId) -> Result<(), DependencyError> {
        let key = self.user_key(id);
        self.run("invalidate_user", async |conn| conn.del::<_, ()>(&key).await).await
    }

    /// Takes one login attempt from the account's budget before the password
    /// is checked, atomically, so concurrent guesses cannot all slip past the
    /// limit. `Some(retry_after)` when the budget for this window is spent.
    /// The window starts at the first attempt; a successful login clears it.
    pub async fn reserve_login_attempt(
        &self,
        email: &Email,
    ) -> Result<Option<Duration>, DependencyError> {
        let key = self.failures_key(email);
        let window = self.policy.failure_window.as_secs();
        let (attempts, ttl): (u32, i64) = self
            .run("reserve_login_attempt", async |conn| {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(0)
                    .arg("EX")
                    .arg(window)
                    .arg("NX")
                    .ignore()
                    .incr(&key, 1)
                    .ttl(&key)
                    .query_async(conn)
                    .await
            })
            .await?;
        let allowed = attempts <= self.policy.max_login_failures;
        // TTL is -1 without expiry and -2 when gone: retry in a second.
        Ok((!allowed).then(|| Duration::from_secs(u64::try_from(ttl).unwrap_or(1).max(1))))
    }

    pub async fn clear_login_attempts(&self, email: &Email) -> Result<(), DependencyError> {
        let key = self.failures_key(email);
        self.run("clear_login_attempts", async |conn| conn.del::<_, ()>(&key).await).await
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        self.run("ping", async |conn| redis::cmd("PING").query_async::<String>(conn).await)
            .await
            .map(drop)
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        command: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection) -> Result<T, RedisError>,
    ) -> Result<T, DependencyError> {
        let span = tracing::info_span!(
            "db.query",
            otel.name = %format_args!("redis {operation}"),
            otel.kind = "client",
            db.system = "redis",
            db.operation = operation,
        );
        let started = std::time::Instant::now();
        let result = async {
            let mut conn: PooledConnection<'_, RedisConnectionManager> =
                self.pool.get().await.map_err(|e| match e {
                    bb8::RunError::TimedOut => DependencyError::outage(
                        REDIS,
                        operation,
                        "timed out waiting for a pooled connection",
                    ),
                    bb8::RunError::User(e) => {
                        DependencyError::outage(REDIS, operation, format!("cannot connect: {e}"))
                    }
                })?;
            // The redis client bounds each command (500 ms response timeout).
            command(&mut conn).await.map_err(|e| classify(operation, e))
        }
        .instrument(span)
        .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.timings
            .with_label_values(&["redis", operation, outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

fn classify(operation: &'static str, err: RedisError) -> DependencyError {
    match err.kind() {
        // Our commands and replies are fixed; a mismatch is a bug.
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
            DependencyError::rejected(REDIS, operation, err)
        }
        // I/O, timeouts, LOADING, READONLY, auth changes...: Redis trouble.
        _ => DependencyError::outage(REDIS, operation, err),
    }
}

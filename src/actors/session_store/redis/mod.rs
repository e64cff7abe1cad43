//! `RedisSessionRepository`: sessions, the user cache and login-failure
//! counters in Redis, usable without an actor ([`connection`] reaches
//! Redis in each mode, [`scripts`] holds its Lua; the operations are in
//! [`sessions`], [`cache`] and [`throttle`]).
//!
//! Keys, all under the configured prefix. Every command or script touches
//! one key, and a pipeline only commands on one key (or one hash tag):
//! commands on different keys that belong together are sent side by side on
//! the multiplexed connection instead, which is still one round trip on a
//! single server and one per node, in parallel, on a Cluster (where a
//! pipeline across slots would fail with CROSSSLOT). So the layout works
//! unchanged in every `redis.mode` (see [`connection`]):
//!
//! - `session:<digest of id>` — hash, expires with the session:
//!   `uid` (user id), `created` (unix seconds), and a copy of the user
//!   (`user`, JSON without password material) valid until `cu` (unix
//!   seconds, at most `user_cache.ttl_secs` after it was read); `addr` and
//!   `ua`, where the login came from; `seen`, its last use (rewritten at
//!   most once a minute, off the request's path). GetMe is one `HMGET` of
//!   this key: one round trip. The digest is the session's handle in
//!   ListSessions and RevokeSession.
//! - `user_sessions:<uuid>` — sorted set of the user's session digests,
//!   scored by expiry, so a change to the user reaches every session's copy.
//! - `user:<uuid>` and `user_email:<digest of canonical email>` — the cached
//!   user for lookups by id and by email (JSON, expire after
//!   `user_cache.ttl_secs`, dropped together when the user changes).
//! - `login_pair:{<digest of email>}:<address>` — hash of the pair's failures
//!   (`f`) and attempts being checked (`r`); `login_account:{<digest>}` and
//!   `login_address:<address>` — failure counters. All expire with the
//!   throttle window (see `throttle`).

mod cache;
mod connection;
mod scripts;
mod sessions;
mod throttle;

use std::sync::{Arc, atomic::Ordering};

use bb8_redis::{
    bb8,
    redis::{self, ErrorKind, RedisError},
};
use futures_util::future::try_join_all;
use prometheus::HistogramVec;
use tracing::Instrument as _;

use connection::{ConnectionHealth, build_pool};
pub use connection::{RESPONSE_TIMEOUT, RedisConn, RedisConnector, RedisPool};

use super::types::{SessionPolicy, UserKey};
use crate::{
    actors::pool::{ConnectFailures, uptime_ms},
    config::RedisSettings,
    domain::{Email, User, UserId},
    error::{Dependency, DependencyError},
};

const REDIS: Dependency = Dependency::Redis;

#[derive(Clone)]
pub struct RedisSessionRepository {
    pool: RedisPool,
    failures: ConnectFailures,
    prefix: String,
    policy: SessionPolicy,
    /// `auth_dependency_operation_seconds`.
    timings: HistogramVec,
}

impl RedisSessionRepository {
    /// A repository over a new pool of at most `max_size` multiplexed
    /// connections.
    pub fn new(
        settings: &RedisSettings,
        max_size: u32,
        policy: SessionPolicy,
        timings: HistogramVec,
    ) -> Result<Self, DependencyError> {
        let failures = ConnectFailures::default();
        Ok(Self {
            pool: build_pool(settings, max_size, failures.clone())?,
            failures,
            prefix: settings.key_prefix.clone(),
            policy,
            timings,
        })
    }

    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    fn session_key(&self, digest: &str) -> String {
        format!("{}session:{digest}", self.prefix)
    }

    fn user_sessions_key(&self, id: UserId) -> String {
        format!("{}user_sessions:{id}", self.prefix)
    }

    fn user_key(&self, id: UserId) -> String {
        format!("{}user:{id}", self.prefix)
    }

    fn user_email_key(&self, email: &Email) -> String {
        format!("{}user_email:{}", self.prefix, email.storage_key())
    }

    fn lookup_key(&self, key: &UserKey) -> String {
        match key {
            UserKey::Id(id) => self.user_key(*id),
            UserKey::Email(email) => self.user_email_key(email),
        }
    }

    /// The lookup keys a user is cached under (by email only when the stored
    /// address is one the service accepts, which is the only kind it can be
    /// looked up by).
    fn cache_keys(&self, user: &User) -> (String, Option<String>) {
        let by_email = Email::parse(&user.email, "email").ok().map(|e| self.user_email_key(&e));
        (self.user_key(user.id), by_email)
    }

    fn user_json(user: &User, operation: &'static str) -> Result<String, DependencyError> {
        serde_json::to_string(user).map_err(|e| DependencyError::rejected(REDIS, operation, e))
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        self.run("ping", async |conn| redis::cmd("PING").query_async::<String>(conn).await)
            .await
            .map(drop)
    }

    /// A connection for one command: a clone of a pooled multiplexed
    /// connection (the slot goes straight back), skipping any flagged broken.
    async fn connection(
        &self,
        operation: &'static str,
    ) -> Result<(RedisConn, Arc<ConnectionHealth>), DependencyError> {
        // A broken connection is replaced when its slot comes back, so the
        // second checkout gets another.
        for _ in 0..2 {
            let connect_failed = self.failures.next();
            let checkout = tokio::select! {
                biased;
                checkout = self.pool.get() => checkout,
                error = connect_failed => {
                    return Err(DependencyError::outage(
                        REDIS,
                        operation,
                        format!("cannot connect: {error}"),
                    ));
                }
            };
            let pooled = checkout.map_err(|e| match e {
                bb8::RunError::TimedOut => DependencyError::outage(
                    REDIS,
                    operation,
                    "no connection within the connect timeout",
                ),
                bb8::RunError::User(e) => {
                    DependencyError::outage(REDIS, operation, format!("cannot connect: {e}"))
                }
            })?;
            if !pooled.health.broken.load(Ordering::Relaxed) {
                return Ok((pooled.conn.clone(), Arc::clone(&pooled.health)));
            }
        }
        Err(DependencyError::outage(REDIS, operation, "connection broken"))
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        command: impl AsyncFnOnce(&mut RedisConn) -> Result<T, RedisError>,
    ) -> Result<T, DependencyError> {
        let span = crate::child_span!(
            parent: &tracing::Span::current(),
            "db.query",
            otel.name = %format_args!("redis {operation}"),
            otel.kind = "client",
            db.system = "redis",
            db.operation = operation,
        );
        let started = std::time::Instant::now();
        let called = uptime_ms();
        let result = async {
            let (mut conn, health) = self.connection(operation).await?;
            // The redis client bounds each command (500 ms response timeout).
            match command(&mut conn).await {
                Ok(reply) => {
                    health.replied();
                    Ok(reply)
                }
                Err(e) if e.is_timeout() && health.replied_since(called) => {
                    Err(DependencyError::busy(REDIS, operation, "reply queued past the timeout"))
                }
                Err(e) => {
                    // READONLY: this server was demoted by a failover; a
                    // new connection asks the sentinels for the master.
                    if e.is_connection_dropped()
                        || e.is_io_error()
                        || e.is_unrecoverable_error()
                        || e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                    {
                        health.broken.store(true, Ordering::Relaxed);
                    }
                    Err(classify(operation, e))
                }
            }
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

/// Sends `command` once per key, side by side on the multiplexed
/// connection: one round trip on a single node, one per node in parallel on
/// a Cluster, and never a multi-key command that would cross slots.
async fn each_key<K, T, Reply>(
    conn: &RedisConn,
    keys: impl IntoIterator<Item = K>,
    command: impl Fn(RedisConn, K) -> Reply,
) -> Result<Vec<T>, RedisError>
where
    Reply: Future<Output = Result<T, RedisError>>,
{
    try_join_all(keys.into_iter().map(|key| command(conn.clone(), key))).await
}

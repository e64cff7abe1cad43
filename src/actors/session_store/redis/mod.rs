//! `RedisSessionRepository`: sessions, the user cache and login-failure
//! counters in Redis, usable without an actor ([`connection`] reaches
//! Redis in each mode, [`scripts`] holds its Lua).
//!
//! Keys, all under the configured prefix. Every command or script touches
//! one key, and a pipeline only commands on one key (or one hash tag):
//! commands on different keys that belong together are sent side by side on
//! the multiplexed connection instead, which is still one round trip on a
//! single server and one per node, in parallel, on a Cluster (where a
//! pipeline across slots would fail with CROSSSLOT). So the layout works
//! unchanged in every `redis.mode` (see `redis_connection`):
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

mod connection;
mod scripts;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bb8_redis::{
    bb8,
    redis::{self, AsyncCommands as _, ErrorKind, RedisError},
};
use futures_util::future::try_join_all;
use prometheus::HistogramVec;
use tracing::Instrument as _;

use connection::{ConnectionHealth, build_pool};
pub use connection::{RESPONSE_TIMEOUT, RedisConn, RedisConnector, RedisPool};
use scripts::{
    CREATE_SESSION, END_SESSION, FINISH_LOGIN, REFRESH_SESSION_USER, RESERVE_LOGIN, TOUCH_SESSION,
};

use super::{
    throttle::{Counters, Gate, LoginKey, Outcome},
    types::{
        CachedLookup, ResolvedSession, SEEN_RESOLUTION, SessionInfo, SessionOrigin, SessionPolicy,
        UserKey, unix_now,
    },
};
use crate::{
    actors::pool::{ConnectFailures, uptime_ms},
    config::RedisSettings,
    domain::{Email, SessionId, User, UserId},
    error::{Dependency, DependencyError},
};

const REDIS: Dependency = Dependency::Redis;

/// `uid`, `user` and `cu` of a session hash.
type SessionFields = (Option<String>, Option<String>, Option<u64>, Option<u64>);

async fn session_fields(conn: &mut RedisConn, key: &str) -> Result<SessionFields, RedisError> {
    redis::cmd("HMGET")
        .arg(key)
        .arg("uid")
        .arg("user")
        .arg("cu")
        .arg("seen")
        .query_async(conn)
        .await
}

/// A session from its fields: none without a user id; the copy of the user
/// only while fresh.
fn resolve((uid, user, cached_until, _seen): SessionFields) -> Option<ResolvedSession> {
    let user_id = uid.and_then(|u| UserId::parse(&u).ok())?;
    let fresh = cached_until.is_some_and(|until| until > unix_now());
    Some(ResolvedSession {
        user_id,
        // An undecodable copy (older format) is a miss, not an error.
        cached_user: user
            .filter(|_| fresh)
            .and_then(|json| serde_json::from_str::<User>(&json).ok())
            .filter(|u| u.id == user_id),
    })
}

/// A PTTL reply as a duration (-1 no expiry, -2 gone: none left).
fn millis(pttl: i64) -> Duration {
    Duration::from_millis(u64::try_from(pttl).unwrap_or(0))
}

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

    /// Opens a session for `user`, with a copy of the user so the session's
    /// first GetMe needs nothing else.
    pub async fn create_session(
        &self,
        user: &User,
        origin: &SessionOrigin,
    ) -> Result<SessionId, DependencyError> {
        const OP: &str = "create_session";
        let id = SessionId::generate()
            .map_err(|e| DependencyError::rejected(REDIS, OP, format!("rng: {e}")))?;
        let digest = id.storage_key();
        let key = self.session_key(&digest);
        let index = self.user_sessions_key(user.id);
        let json = Self::user_json(user, OP)?;
        let now = unix_now();
        let ttl = self.policy.session_ttl.as_secs();
        let cached_until = now + self.policy.user_cache_ttl.as_secs();
        let stored: bool = self
            .run(OP, async |conn| {
                // The index first: an entry whose session never came to be
                // is pruned later, a session missing from the index would
                // escape invalidation.
                redis::pipe()
                    .zadd(&index, &digest, now + ttl)
                    .ignore()
                    .zrembyscore(&index, "-inf", now)
                    .ignore()
                    .expire(&index, i64::try_from(ttl).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async::<()>(conn)
                    .await?;
                CREATE_SESSION
                    .key(&key)
                    .arg(user.id.to_string())
                    .arg(&json)
                    .arg(cached_until)
                    .arg(now)
                    .arg(ttl)
                    .arg(&origin.client_address)
                    .arg(&origin.user_agent)
                    .invoke_async(conn)
                    .await
            })
            .await?;
        if stored {
            Ok(id)
        } else {
            Err(DependencyError::rejected(REDIS, OP, "session id collision"))
        }
    }

    /// The session's user id, with the session's copy of the user while it
    /// is fresh: GetMe's whole Redis work, one command.
    pub async fn resolve_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<ResolvedSession>, DependencyError> {
        let key = self.session_key(&id.storage_key());
        let fields =
            self.run("resolve_session", async |conn| session_fields(conn, &key).await).await?;
        self.touch_if_stale(key, fields.3);
        Ok(resolve(fields))
    }

    /// Rewrites a session's last-seen time when it is older than
    /// [`SEEN_RESOLUTION`], in a task of its own: the caller's answer does
    /// not wait for it, and a failure only leaves the time stale.
    fn touch_if_stale(&self, key: String, seen: Option<u64>) {
        let now = unix_now();
        if seen.is_none_or(|seen| now.saturating_sub(seen) < SEEN_RESOLUTION.as_secs()) {
            return;
        }
        let repo = self.clone();
        tokio::task::spawn_local(async move {
            let touched = repo
                .run("touch_session", async |conn| {
                    TOUCH_SESSION.key(&key).arg(now).invoke_async::<()>(conn).await
                })
                .await;
            if let Err(e) = touched {
                tracing::debug!(error = %e, "could not record a session's last use");
            }
        });
    }

    /// The user's live sessions, oldest first.
    pub async fn list_user_sessions(
        &self,
        user: UserId,
    ) -> Result<Vec<SessionInfo>, DependencyError> {
        let index = self.user_sessions_key(user);
        let now = unix_now();
        let digests: Vec<String> = self
            .run("list_user_sessions", async |conn| conn.zrangebyscore(&index, now, "+inf").await)
            .await?;
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        type Fields = (Option<String>, Option<u64>, Option<u64>, Option<String>, Option<String>);
        let keys: Vec<String> = digests.iter().map(|d| self.session_key(d)).collect();
        let rows: Vec<Fields> = self
            .run("read_sessions", async |conn| {
                each_key(conn, &keys, |mut conn, key| async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg("uid")
                        .arg("created")
                        .arg("seen")
                        .arg("addr")
                        .arg("ua")
                        .query_async::<Fields>(&mut conn)
                        .await
                })
                .await
            })
            .await?;
        let uid = user.to_string();
        let mut sessions: Vec<SessionInfo> = digests
            .into_iter()
            .zip(rows)
            // Ended sessions whose index entry is not pruned yet.
            .filter(|(_, (owner, ..))| owner.as_deref() == Some(uid.as_str()))
            .map(|(handle, (_, created, seen, addr, ua))| SessionInfo {
                handle,
                created: created.unwrap_or(0),
                last_seen: seen.or(created).unwrap_or(0),
                origin: SessionOrigin {
                    client_address: addr.unwrap_or_default(),
                    user_agent: ua.unwrap_or_default(),
                },
            })
            .collect();
        sessions.sort_by_key(|s| s.created);
        Ok(sessions)
    }

    /// Ends the user's session named `handle`; `false` if the user has no
    /// such session (another user's handle included).
    pub async fn end_user_session(
        &self,
        user: UserId,
        handle: &str,
    ) -> Result<bool, DependencyError> {
        let index = self.user_sessions_key(user);
        let listed: Option<f64> =
            self.run("find_user_session", async |conn| conn.zscore(&index, handle).await).await?;
        if listed.is_none() {
            return Ok(false);
        }
        let key = self.session_key(handle);
        let ended: Option<String> = self
            .run("delete_session", async |conn| END_SESSION.key(&key).invoke_async(conn).await)
            .await?;
        self.run("unindex_session", async |conn| conn.zrem::<_, _, ()>(&index, handle).await)
            .await?;
        Ok(ended.as_deref() == Some(user.to_string().as_str()))
    }

    /// Ends every session of the user but `keep`; how many it ended.
    pub async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<&SessionId>,
    ) -> Result<u32, DependencyError> {
        let index = self.user_sessions_key(user);
        let kept = keep.map(SessionId::storage_key);
        let digests: Vec<String> =
            self.run("list_sessions", async |conn| conn.zrange(&index, 0, -1).await).await?;
        let doomed: Vec<&String> =
            digests.iter().filter(|d| Some(d.as_str()) != kept.as_deref()).collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        // One key per command (Cluster-safe), all sent together.
        let keys: Vec<String> = doomed.iter().map(|d| self.session_key(d)).collect();
        let deleted: Vec<u32> = self
            .run("end_user_sessions", async |conn| {
                let mut unindex = conn.clone();
                let (deleted, ()) = tokio::try_join!(
                    each_key(conn, &keys, |mut conn, key| async move { conn.del(key).await }),
                    unindex.zrem(&index, &doomed),
                )?;
                Ok(deleted)
            })
            .await?;
        Ok(deleted.iter().sum())
    }

    /// Stores a fresh copy of the user in the session, if it still exists.
    pub async fn refresh_session_user(
        &self,
        id: &SessionId,
        user: &User,
    ) -> Result<(), DependencyError> {
        const OP: &str = "refresh_session_user";
        let key = self.session_key(&id.storage_key());
        let json = Self::user_json(user, OP)?;
        let cached_until = unix_now() + self.policy.user_cache_ttl.as_secs();
        self.run(OP, async |conn| {
            REFRESH_SESSION_USER
                .key(&key)
                .arg(&json)
                .arg(cached_until)
                .invoke_async::<()>(conn)
                .await
        })
        .await
    }

    /// Ends a session; `false` if there was none.
    pub async fn delete_session(&self, id: &SessionId) -> Result<bool, DependencyError> {
        let digest = id.storage_key();
        let key = self.session_key(&digest);
        let ended: Option<String> = self
            .run("delete_session", async |conn| END_SESSION.key(&key).invoke_async(conn).await)
            .await?;
        let Some(user_id) = ended.and_then(|u| UserId::parse(&u).ok()) else {
            return Ok(false);
        };
        let index = self.user_sessions_key(user_id);
        // The session is gone already; a stale index entry is only pruned
        // later, so a failure here is not the caller's.
        if let Err(e) = self
            .run("unindex_session", async |conn| conn.zrem::<_, _, ()>(&index, &digest).await)
            .await
        {
            tracing::debug!(error = %e, "could not unindex an ended session");
        }
        Ok(true)
    }

    /// A lookup's Redis work in one round trip: the caller's session (when
    /// one must be checked) and the cached user, read side by side.
    pub async fn look_up_cached_user(
        &self,
        session: Option<&SessionId>,
        user: &UserKey,
    ) -> Result<CachedLookup, DependencyError> {
        let user_key = self.lookup_key(user);
        let session_key = session.map(|id| self.session_key(&id.storage_key()));
        let (session, cached): (Option<SessionFields>, Option<String>) = self
            .run("look_up_cached_user", async |conn| {
                let mut second = conn.clone();
                let cached = second.get::<_, Option<String>>(&user_key);
                match &session_key {
                    // Two commands written together: one round trip, and
                    // each touches one key (Cluster-safe).
                    Some(key) => {
                        let (session, cached) = tokio::join!(session_fields(conn, key), cached);
                        Ok((Some(session?), cached?))
                    }
                    None => Ok((None, cached.await?)),
                }
            })
            .await?;
        Ok(CachedLookup {
            session: session.and_then(resolve),
            // An undecodable entry (older format) is a miss, not an error.
            user: cached.and_then(|json| serde_json::from_str(&json).ok()),
        })
    }

    /// Caches a user for lookups by id and by email.
    pub async fn cache_user(&self, user: &User) -> Result<(), DependencyError> {
        const OP: &str = "cache_user";
        let (by_id, by_email) = self.cache_keys(user);
        let json = Self::user_json(user, OP)?;
        let ttl = self.policy.user_cache_ttl.as_secs();
        self.run(OP, async |conn| {
            // Two keys, two slots on a Cluster: sent side by side.
            let keys = std::iter::once(&by_id).chain(by_email.as_ref());
            let json = &json;
            each_key(conn, keys, |mut conn, key| async move {
                conn.set_ex::<_, _, ()>(key, json, ttl).await
            })
            .await
            .map(drop)
        })
        .await
    }

    /// Drops every cached copy of the user: the lookup cache and the copy in
    /// each of the user's sessions, which then re-read the user once.
    pub async fn invalidate_user(&self, user: &User) -> Result<(), DependencyError> {
        let (by_id, by_email) = self.cache_keys(user);
        let index = self.user_sessions_key(user.id);
        let now = unix_now();
        let digests: Vec<String> = self
            .run("invalidate_user", async |conn| {
                conn.del::<_, ()>(&by_id).await?;
                if let Some(by_email) = &by_email {
                    conn.del::<_, ()>(by_email).await?;
                }
                conn.zrangebyscore(&index, now, "+inf").await
            })
            .await?;
        if digests.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = digests.iter().map(|d| self.session_key(d)).collect();
        self.run("invalidate_session_users", async |conn| {
            each_key(conn, &keys, |mut conn, key| async move {
                conn.hdel::<_, _, ()>(key, &["user", "cu"]).await
            })
            .await
            .map(drop)
        })
        .await
    }

    /// Asks the throttle whether this attempt may check a password now, and
    /// reserves it if so (see `throttle`). Two round trips: the address's
    /// and the account's counters, then the pair's atomic reservation.
    pub async fn reserve_login_attempt(&self, key: &LoginKey) -> Result<Gate, DependencyError> {
        let policy = self.policy.throttle;
        let (address_key, account_key, pair_key) = self.throttle_keys(key);
        let ((address_failures, address_ttl), account_failures): ((Option<u32>, i64), Option<u32>) =
            self.run("read_login_counters", async |conn| {
                // The address's and the account's keys hash to different
                // slots: a pipeline each, sent side by side.
                let mut account = conn.clone();
                let mut address = redis::pipe();
                address.get(&address_key).pttl(&address_key);
                tokio::try_join!(address.query_async(conn), account.get(&account_key))
            })
            .await?;
        let mut counters = Counters {
            address_failures: address_failures.unwrap_or(0),
            account_failures: account_failures.unwrap_or(0),
            ..Counters::default()
        };
        let address_ttl = millis(address_ttl);
        if let gate @ Gate::Refuse { .. } = policy.decide(counters, Duration::ZERO, address_ttl) {
            return Ok(gate);
        }
        let (reserved, failures, in_flight, pair_ttl): (u8, u32, u32, i64) = self
            .run("reserve_login_attempt", async |conn| {
                RESERVE_LOGIN
                    .key(&pair_key)
                    .arg(policy.pair_max)
                    .arg(policy.window.as_secs())
                    .invoke_async(conn)
                    .await
            })
            .await?;
        counters.pair_failures = failures;
        counters.pair_in_flight = in_flight;
        Ok(match policy.decide(counters, millis(pair_ttl), address_ttl) {
            gate @ Gate::Pass { .. } if reserved == 1 => gate,
            // Raced by another attempt between the two reads.
            Gate::Pass { .. } => Gate::Wait,
            gate => gate,
        })
    }

    /// Settles a reserved attempt: a failure counts on the pair, the
    /// address and the account; a success clears the pair and the account.
    pub async fn finish_login_attempt(
        &self,
        key: &LoginKey,
        outcome: Outcome,
    ) -> Result<(), DependencyError> {
        let window = self.policy.throttle.window.as_secs();
        let (address_key, account_key, pair_key) = self.throttle_keys(key);
        let verdict = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        };
        self.run("finish_login_attempt", async |conn| {
            FINISH_LOGIN.key(&pair_key).arg(verdict).arg(window).invoke_async::<()>(conn).await
        })
        .await?;
        match outcome {
            Outcome::Failed => {
                self.run("count_login_attempt", async |conn| {
                    // A pipeline per counter (one slot each), side by side.
                    each_key(conn, [&address_key, &account_key], |mut conn, counter| async move {
                        redis::pipe()
                            .incr(counter, 1)
                            .ignore()
                            .cmd("EXPIRE")
                            .arg(counter)
                            .arg(window)
                            .arg("NX")
                            .ignore()
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await
                    .map(drop)
                })
                .await
            }
            Outcome::Succeeded => {
                self.run("count_login_attempt", async |conn| conn.del::<_, ()>(&account_key).await)
                    .await
            }
            Outcome::Abandoned => Ok(()),
        }
    }

    /// The address's, the account's and the pair's keys. The account and
    /// the pair share a hash tag (the email's digest), so a Cluster keeps
    /// them together.
    fn throttle_keys(&self, key: &LoginKey) -> (String, String, String) {
        let digest = key.email.storage_key();
        let address = key.address_part();
        (
            format!("{}login_address:{address}", self.prefix),
            format!("{}login_account:{{{digest}}}", self.prefix),
            format!("{}login_pair:{{{digest}}}:{address}", self.prefix),
        )
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

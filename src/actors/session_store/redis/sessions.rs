//! Sessions in Redis: create, resolve (GetMe's one command), list, end.

use bb8_redis::redis::{self, AsyncCommands as _, RedisError};

use super::{
    REDIS, RedisConn, RedisSessionRepository, each_key,
    scripts::{CREATE_SESSION, END_SESSION, REFRESH_SESSION_USER, TOUCH_SESSION},
};
use crate::{
    actors::session_store::types::{
        ResolvedSession, SEEN_RESOLUTION, SessionInfo, SessionOrigin, unix_now,
    },
    domain::{SessionId, User, UserId},
    error::DependencyError,
};

/// `uid`, `user` and `cu` of a session hash.
pub(super) type SessionFields = (Option<String>, Option<String>, Option<u64>, Option<u64>);

pub(super) async fn session_fields(
    conn: &mut RedisConn,
    key: &str,
) -> Result<SessionFields, RedisError> {
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
pub(super) fn resolve((uid, user, cached_until, _seen): SessionFields) -> Option<ResolvedSession> {
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

impl RedisSessionRepository {
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
}

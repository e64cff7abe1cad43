//! The user cache in Redis: lookups by id and by email, and the
//! invalidation of every cached copy of a user.

use bb8_redis::redis::AsyncCommands as _;

use super::{
    RedisSessionRepository, each_key,
    sessions::{SessionFields, resolve, session_fields},
};
use crate::{
    actors::session_store::types::{CachedLookup, UserKey, unix_now},
    domain::{SessionId, User},
    error::DependencyError,
};

impl RedisSessionRepository {
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
}

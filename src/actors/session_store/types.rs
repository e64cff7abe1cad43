//! The session store's backend-neutral types: what its messages carry and
//! answer, whichever backend (Redis or memory) holds the sessions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::throttle::ThrottlePolicy;
use crate::{
    config::Settings,
    domain::{Email, User, UserId},
};

/// Lifetimes and limits the repository applies.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub session_ttl: Duration,
    pub user_cache_ttl: Duration,
    pub throttle: ThrottlePolicy,
}

impl SessionPolicy {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            session_ttl: Duration::from_secs(settings.session.ttl_secs),
            user_cache_ttl: Duration::from_secs(settings.user_cache.ttl_secs),
            throttle: ThrottlePolicy::from_settings(&settings.login),
        }
    }
}

/// A session looked up by id, with the copy of its user when that is fresh.
#[derive(Debug, Clone)]
pub struct ResolvedSession {
    pub user_id: UserId,
    pub cached_user: Option<User>,
}

/// A user as lookups name it.
#[derive(Debug, Clone)]
pub enum UserKey {
    Id(UserId),
    Email(Email),
}

/// Where a session was opened from, recorded at login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOrigin {
    pub client_address: String,
    pub user_agent: String,
}

/// One of a user's sessions, as ListSessions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The digest the session is stored under: names it without being it.
    pub handle: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds, to [`SEEN_RESOLUTION`].
    pub last_seen: u64,
    pub origin: SessionOrigin,
}

/// How stale a session's last-seen time may get before a use rewrites it:
/// at most one write a minute per session, off the request's path.
pub const SEEN_RESOLUTION: Duration = Duration::from_secs(60);

/// What a lookup found in Redis.
#[derive(Debug, Clone)]
pub struct CachedLookup {
    /// The caller's session, when one was given and it exists.
    pub session: Option<ResolvedSession>,
    pub user: Option<User>,
}

/// Seconds since the Unix epoch, as sessions record their times.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

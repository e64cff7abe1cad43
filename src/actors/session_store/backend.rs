//! `SessionBackend`: the one API the `SessionStore` actor calls, over Redis
//! or the in-actor memory state. The messages, the use cases and the
//! metrics cannot tell which one runs.

use super::{
    memory::MemorySessionRepository,
    redis::RedisSessionRepository,
    throttle::{Gate, LoginKey, Outcome},
    types::{CachedLookup, ResolvedSession, SessionInfo, SessionOrigin, UserKey},
};
use crate::{
    actors::PoolSample,
    domain::{SessionId, User, UserId},
    error::DependencyError,
};

#[derive(Clone)]
pub enum SessionBackend {
    Redis(RedisSessionRepository),
    Memory(MemorySessionRepository),
}

/// Calls the same method on whichever backend runs.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Self::Redis(repo) => repo.$method($($arg),*).await,
            Self::Memory(repo) => repo.$method($($arg),*).await,
        }
    };
}

impl SessionBackend {
    pub fn pool_sample(&self) -> PoolSample {
        match self {
            Self::Redis(redis) => PoolSample::of(redis.pool()),
            Self::Memory(_) => PoolSample::default(),
        }
    }

    /// Frees expired entries (memory only: Redis expires its own keys).
    pub fn sweep(&self) {
        if let Self::Memory(memory) = self {
            memory.sweep();
        }
    }

    pub async fn create_session(
        &self,
        user: &User,
        origin: &SessionOrigin,
    ) -> Result<SessionId, DependencyError> {
        dispatch!(self.create_session(user, origin))
    }

    pub async fn resolve_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<ResolvedSession>, DependencyError> {
        dispatch!(self.resolve_session(id))
    }

    pub async fn refresh_session_user(
        &self,
        id: &SessionId,
        user: &User,
    ) -> Result<(), DependencyError> {
        dispatch!(self.refresh_session_user(id, user))
    }

    pub async fn delete_session(&self, id: &SessionId) -> Result<bool, DependencyError> {
        dispatch!(self.delete_session(id))
    }

    pub async fn look_up_cached_user(
        &self,
        session: Option<&SessionId>,
        user: &UserKey,
    ) -> Result<CachedLookup, DependencyError> {
        dispatch!(self.look_up_cached_user(session, user))
    }

    pub async fn list_user_sessions(
        &self,
        user: UserId,
    ) -> Result<Vec<SessionInfo>, DependencyError> {
        dispatch!(self.list_user_sessions(user))
    }

    pub async fn end_user_session(
        &self,
        user: UserId,
        handle: &str,
    ) -> Result<bool, DependencyError> {
        dispatch!(self.end_user_session(user, handle))
    }

    pub async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<&SessionId>,
    ) -> Result<u32, DependencyError> {
        dispatch!(self.end_user_sessions(user, keep))
    }

    pub async fn cache_user(&self, user: &User) -> Result<(), DependencyError> {
        dispatch!(self.cache_user(user))
    }

    pub async fn invalidate_user(&self, user: &User) -> Result<(), DependencyError> {
        dispatch!(self.invalidate_user(user))
    }

    pub async fn reserve_login_attempt(&self, key: &LoginKey) -> Result<Gate, DependencyError> {
        dispatch!(self.reserve_login_attempt(key))
    }

    pub async fn finish_login_attempt(
        &self,
        key: &LoginKey,
        outcome: Outcome,
    ) -> Result<(), DependencyError> {
        dispatch!(self.finish_login_attempt(key, outcome))
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        dispatch!(self.ping())
    }
}

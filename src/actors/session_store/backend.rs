//! `SessionBackend`: the one API the `SessionStore` actor calls, over Redis
//! or the in-actor memory state. The messages, the use cases and the
//! metrics cannot tell which one runs.

use std::{cell::RefCell, rc::Rc, time::Instant};

use super::{
    memory::MemorySessions,
    redis::{
        CachedLookup, RedisSessionRepository, ResolvedSession, SessionInfo, SessionOrigin,
        SessionPolicy, UserKey,
    },
    throttle::{Gate, LoginKey, Outcome},
};
use crate::{
    actors::PoolSample,
    domain::{SessionId, User, UserId},
    error::{Dependency, DependencyError},
};

#[derive(Clone)]
pub enum SessionBackend {
    Redis(RedisSessionRepository),
    /// Shared only with the calls the owning actor started, all on its
    /// thread.
    Memory(Rc<RefCell<MemorySessions>>),
}

impl SessionBackend {
    pub fn memory(policy: SessionPolicy, max_entries: usize) -> Self {
        Self::Memory(Rc::new(RefCell::new(MemorySessions::new(policy, max_entries))))
    }

    pub fn pool_sample(&self) -> PoolSample {
        match self {
            Self::Redis(redis) => PoolSample::of(redis.pool()),
            Self::Memory(_) => PoolSample::default(),
        }
    }

    /// Frees expired entries (memory only: Redis expires its own keys).
    pub fn sweep(&self) {
        if let Self::Memory(memory) = self {
            memory.borrow_mut().sweep(Instant::now());
        }
    }

    pub async fn create_session(
        &self,
        user: &User,
        origin: &SessionOrigin,
    ) -> Result<SessionId, DependencyError> {
        match self {
            Self::Redis(redis) => redis.create_session(user, origin).await,
            Self::Memory(memory) => memory
                .borrow_mut()
                .create_session(user, origin, Instant::now())
                .map_err(|e| DependencyError::rejected(Dependency::Memory, "create_session", e)),
        }
    }

    pub async fn resolve_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<ResolvedSession>, DependencyError> {
        match self {
            Self::Redis(redis) => redis.resolve_session(id).await,
            Self::Memory(memory) => Ok(memory.borrow_mut().resolve_session(id, Instant::now())),
        }
    }

    pub async fn refresh_session_user(
        &self,
        id: &SessionId,
        user: &User,
    ) -> Result<(), DependencyError> {
        match self {
            Self::Redis(redis) => redis.refresh_session_user(id, user).await,
            Self::Memory(memory) => {
                memory.borrow_mut().refresh_session_user(id, user, Instant::now());
                Ok(())
            }
        }
    }

    pub async fn delete_session(&self, id: &SessionId) -> Result<bool, DependencyError> {
        match self {
            Self::Redis(redis) => redis.delete_session(id).await,
            Self::Memory(memory) => Ok(memory.borrow_mut().delete_session(id, Instant::now())),
        }
    }

    pub async fn look_up(
        &self,
        session: Option<&SessionId>,
        user: &UserKey,
    ) -> Result<CachedLookup, DependencyError> {
        match self {
            Self::Redis(redis) => redis.look_up(session, user).await,
            Self::Memory(memory) => Ok(memory.borrow_mut().look_up(session, user, Instant::now())),
        }
    }

    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<SessionInfo>, DependencyError> {
        match self {
            Self::Redis(redis) => redis.list_sessions(user).await,
            Self::Memory(memory) => Ok(memory.borrow().list_sessions(user, Instant::now())),
        }
    }

    pub async fn end_user_session(
        &self,
        user: UserId,
        handle: &str,
    ) -> Result<bool, DependencyError> {
        match self {
            Self::Redis(redis) => redis.end_user_session(user, handle).await,
            Self::Memory(memory) => {
                Ok(memory.borrow_mut().end_user_session(user, handle, Instant::now()))
            }
        }
    }

    pub async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<&SessionId>,
    ) -> Result<u32, DependencyError> {
        match self {
            Self::Redis(redis) => redis.end_user_sessions(user, keep).await,
            Self::Memory(memory) => {
                Ok(memory.borrow_mut().end_user_sessions(user, keep, Instant::now()))
            }
        }
    }

    pub async fn cache_user(&self, user: &User) -> Result<(), DependencyError> {
        match self {
            Self::Redis(redis) => redis.cache_user(user).await,
            Self::Memory(memory) => {
                memory.borrow_mut().cache_user(user, Instant::now());
                Ok(())
            }
        }
    }

    pub async fn invalidate_user(&self, user: &User) -> Result<(), DependencyError> {
        match self {
            Self::Redis(redis) => redis.invalidate_user(user).await,
            Self::Memory(memory) => {
                memory.borrow_mut().invalidate_user(user, Instant::now());
                Ok(())
            }
        }
    }

    pub async fn reserve_login_attempt(&self, key: &LoginKey) -> Result<Gate, DependencyError> {
        match self {
            Self::Redis(redis) => redis.reserve_login_attempt(key).await,
            Self::Memory(memory) => {
                Ok(memory.borrow_mut().reserve_login_attempt(key, Instant::now()))
            }
        }
    }

    pub async fn finish_login_attempt(
        &self,
        key: &LoginKey,
        outcome: Outcome,
    ) -> Result<(), DependencyError> {
        match self {
            Self::Redis(redis) => redis.finish_login_attempt(key, outcome).await,
            Self::Memory(memory) => {
                memory.borrow_mut().finish_login_attempt(key, outcome, Instant::now());
                Ok(())
            }
        }
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        match self {
            Self::Redis(redis) => redis.ping().await,
            Self::Memory(_) => Ok(()),
        }
    }
}

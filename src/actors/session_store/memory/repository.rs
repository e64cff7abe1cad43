//! [`MemorySessionRepository`]: the memory backend behind the same async
//! API as the Redis repository.

use std::{cell::RefCell, rc::Rc, time::Instant};

use super::MemorySessions;
use crate::{
    actors::session_store::{
        throttle::{Gate, LoginKey, Outcome},
        types::{
            CachedLookup, ResolvedSession, SessionInfo, SessionOrigin, SessionPolicy, UserKey,
        },
    },
    domain::{SessionId, User, UserId},
    error::{Dependency, DependencyError},
};

/// [`MemorySessions`] behind the Redis repository's async API, so the
/// store's messages dispatch to either alike. Shared only with the calls
/// the owning actor started, all on its thread.
#[derive(Clone)]
pub struct MemorySessionRepository(Rc<RefCell<MemorySessions>>);

impl MemorySessionRepository {
    pub fn new(policy: SessionPolicy, max_entries: usize) -> Self {
        Self(Rc::new(RefCell::new(MemorySessions::new(policy, max_entries))))
    }

    /// Frees expired entries (the actor runs it on a timer).
    pub fn sweep(&self) {
        self.0.borrow_mut().sweep(Instant::now());
    }

    pub async fn create_session(
        &self,
        user: &User,
        origin: &SessionOrigin,
    ) -> Result<SessionId, DependencyError> {
        self.0
            .borrow_mut()
            .create_session(user, origin, Instant::now())
            .map_err(|e| DependencyError::rejected(Dependency::Memory, "create_session", e))
    }

    pub async fn resolve_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<ResolvedSession>, DependencyError> {
        Ok(self.0.borrow_mut().resolve_session(id, Instant::now()))
    }

    pub async fn refresh_session_user(
        &self,
        id: &SessionId,
        user: &User,
    ) -> Result<(), DependencyError> {
        self.0.borrow_mut().refresh_session_user(id, user, Instant::now());
        Ok(())
    }

    pub async fn delete_session(&self, id: &SessionId) -> Result<bool, DependencyError> {
        Ok(self.0.borrow_mut().delete_session(id, Instant::now()))
    }

    pub async fn look_up_cached_user(
        &self,
        session: Option<&SessionId>,
        user: &UserKey,
    ) -> Result<CachedLookup, DependencyError> {
        Ok(self.0.borrow_mut().look_up(session, user, Instant::now()))
    }

    pub async fn list_user_sessions(
        &self,
        user: UserId,
    ) -> Result<Vec<SessionInfo>, DependencyError> {
        Ok(self.0.borrow().list_sessions(user, Instant::now()))
    }

    pub async fn end_user_session(
        &self,
        user: UserId,
        handle: &str,
    ) -> Result<bool, DependencyError> {
        Ok(self.0.borrow_mut().end_user_session(user, handle, Instant::now()))
    }

    pub async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<&SessionId>,
    ) -> Result<u32, DependencyError> {
        Ok(self.0.borrow_mut().end_user_sessions(user, keep, Instant::now()))
    }

    pub async fn cache_user(&self, user: &User) -> Result<(), DependencyError> {
        self.0.borrow_mut().cache_user(user, Instant::now());
        Ok(())
    }

    pub async fn invalidate_user(&self, user: &User) -> Result<(), DependencyError> {
        self.0.borrow_mut().invalidate_user(user, Instant::now());
        Ok(())
    }

    pub async fn reserve_login_attempt(&self, key: &LoginKey) -> Result<Gate, DependencyError> {
        Ok(self.0.borrow_mut().reserve_login_attempt(key, Instant::now()))
    }

    pub async fn finish_login_attempt(
        &self,
        key: &LoginKey,
        outcome: Outcome,
    ) -> Result<(), DependencyError> {
        self.0.borrow_mut().finish_login_attempt(key, outcome, Instant::now());
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        Ok(())
    }
}

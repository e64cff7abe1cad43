//! A caller's own sessions: GetMe, Logout, and listing and ending them.

use super::AuthService;
use crate::{
    actors::session_store::{
        DeleteSession, EndUserSession, EndUserSessions, ListUserSessions, SessionInfo,
    },
    domain::{SessionId, User},
    error::AuthError,
};

impl AuthService {
    pub async fn get_me(&self, session: &SessionId) -> Result<User, AuthError> {
        self.session_user(session).await
    }

    pub async fn logout(&self, session: SessionId) -> Result<(), AuthError> {
        if self.stores.sessions.call(DeleteSession(session)).await?? {
            Ok(())
        } else {
            Err(AuthError::Unauthenticated)
        }
    }

    /// The caller's sessions, and the handle of the current one.
    pub async fn list_sessions(
        &self,
        session: &SessionId,
    ) -> Result<(Vec<SessionInfo>, String), AuthError> {
        let user = self.session_user(session).await?;
        let sessions = self.stores.sessions.call(ListUserSessions(user.id)).await??;
        Ok((sessions, session.storage_key()))
    }

    /// Ends one of the caller's sessions; `SessionNotFound` unless it is
    /// theirs.
    pub async fn revoke_session(&self, session: &SessionId, handle: &str) -> Result<(), AuthError> {
        let user = self.session_user(session).await?;
        let message = EndUserSession { user: user.id, handle: handle.trim().to_owned() };
        if self.stores.sessions.call(message).await?? {
            Ok(())
        } else {
            Err(AuthError::SessionNotFound)
        }
    }

    /// Ends every session of the caller (but the current one, if asked);
    /// how many.
    pub async fn logout_all(
        &self,
        session: SessionId,
        keep_current: bool,
    ) -> Result<u32, AuthError> {
        let user = self.session_user(&session).await?;
        let keep = keep_current.then_some(session);
        Ok(self.stores.sessions.call(EndUserSessions { user: user.id, keep }).await??)
    }
}

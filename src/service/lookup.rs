//! FindByID and FindByEmail. Lookups reveal whether an account exists, so
//! they need a live session unless the deployment opted into the Go
//! service's open lookups (`lookup.public`).

use super::{AuthService, Caller};
use crate::{
    actors::{
        session_store::{CacheUser, LookUpCachedUser, ResolveSession, UserKey},
        user_store::{FindUserByEmail, FindUserById},
    },
    domain::{Email, InvalidInput, SessionId, User, UserId},
    error::AuthError,
};

impl AuthService {
    /// `id` is the adapter's parse of the request: a caller not allowed to
    /// look up learns nothing about it, not even that it was malformed.
    pub async fn find_by_id(
        &self,
        caller: &Caller,
        id: Result<UserId, InvalidInput>,
    ) -> Result<User, AuthError> {
        let session = self.lookup_session(caller)?;
        match id {
            Ok(id) => self.look_up(session, UserKey::Id(id)).await,
            Err(invalid) => {
                self.authorize(session).await?;
                Err(invalid.into())
            }
        }
    }

    /// As [`Self::find_by_id`], by email (matched case-insensitively).
    pub async fn find_by_email(
        &self,
        caller: &Caller,
        email: Result<Email, InvalidInput>,
    ) -> Result<User, AuthError> {
        let session = self.lookup_session(caller)?;
        match email {
            Ok(email) => self.look_up(session, UserKey::Email(email)).await,
            Err(invalid) => {
                self.authorize(session).await?;
                Err(invalid.into())
            }
        }
    }

    /// A lookup: the session check and the cache read in one round trip;
    /// the user store only on a miss, and only for a caller allowed to look
    /// up.
    async fn look_up(&self, session: Option<SessionId>, key: UserKey) -> Result<User, AuthError> {
        let message = LookUpCachedUser { session: session.clone(), user: key.clone() };
        let cached = match (self.stores.sessions.call(message).await?, &session) {
            (Ok(found), Some(id)) => {
                match found.session {
                    None => return Err(AuthError::Unauthenticated),
                    // A stale copy of the session's user: check the account
                    // is still there, as GetMe would.
                    Some(resolved) if resolved.cached_user.is_none() => {
                        self.session_user(id).await?;
                    }
                    Some(_) => {}
                }
                found.user
            }
            (Ok(found), None) => found.user,
            // Open lookups do without the cache when it is down.
            (Err(e), None) => {
                tracing::debug!(error = %e, "user cache unavailable");
                None
            }
            (Err(e), Some(_)) => return Err(e.into()),
        };
        if let Some(user) = cached {
            return Ok(user);
        }
        let user = match key {
            UserKey::Id(id) => self.stores.users.call(FindUserById(id)).await??,
            UserKey::Email(email) => self.stores.users.call(FindUserByEmail(email)).await??,
        }
        .ok_or(AuthError::UserNotFound)?;
        self.in_background(CacheUser(user.clone()));
        Ok(user)
    }

    /// `Ok(None)` when no session needs checking (open lookups, or an
    /// allowed peer), the session to check otherwise; no session at all is
    /// unauthenticated.
    fn lookup_session(&self, caller: &Caller) -> Result<Option<SessionId>, AuthError> {
        if self.policy.lookup_public || caller.peer_in(&self.policy.lookup_peers) {
            return Ok(None);
        }
        caller.session().cloned().map(Some).ok_or(AuthError::Unauthenticated)
    }

    /// Passes when there is no session to check, or the session is live.
    async fn authorize(&self, session: Option<SessionId>) -> Result<(), AuthError> {
        let Some(id) = session else {
            return Ok(());
        };
        match self.stores.sessions.call(ResolveSession(id)).await?? {
            Some(_) => Ok(()),
            None => Err(AuthError::Unauthenticated),
        }
    }
}

//! Registration and password change.

use super::{AuthService, Caller, login::LoginAttempt};
use crate::{
    actors::{
        password_hasher::HashPassword,
        session_store::{EndUserSessions, InvalidateUser},
        user_store::{CreateUser, ReplacePasswordHash},
    },
    domain::{Email, NewUser, Password, Registration, Role, SessionId, User, UserId},
    error::{AuthError, CreateUserError},
};

impl AuthService {
    /// Creates an account. An admin account needs an admin's session, or an
    /// operator.
    pub async fn register(
        &self,
        registration: Registration,
        caller: &Caller,
    ) -> Result<User, AuthError> {
        if registration.role == Role::Admin && !self.is_admin(caller).await? {
            self.count_registration("denied");
            return Err(AuthError::PermissionDenied("only an admin may create an admin account"));
        }
        let Registration { email, first_name, last_name, password, role, avatar } = registration;
        let password_hash = self.stores.hasher.call(HashPassword(password)).await??;
        let new = NewUser {
            id: UserId::new_random(),
            email,
            first_name,
            last_name,
            role,
            avatar,
            password_hash,
        };
        match self.stores.users.call(CreateUser(new)).await? {
            Ok(user) => {
                self.count_registration("ok");
                Ok(user)
            }
            Err(CreateUserError::EmailTaken) => {
                self.count_registration("email_taken");
                Err(AuthError::EmailTaken)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Whether the caller may act as an admin: an operator, an allowed
    /// admin peer, or an admin's live session.
    pub(super) async fn is_admin(&self, caller: &Caller) -> Result<bool, AuthError> {
        if caller.operator || caller.peer_in(&self.policy.admin_peers) {
            return Ok(true);
        }
        let Some(id) = &caller.session else { return Ok(false) };
        match self.session_user(id).await {
            Ok(user) => Ok(user.role == Role::Admin),
            Err(AuthError::Unauthenticated) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Verifies the old password (against the login budget, like a login),
    /// stores a hash of the new one, and ends every other session; how many.
    pub async fn change_password(
        &self,
        session: SessionId,
        address: &str,
        old: Password,
        new: Password,
    ) -> Result<u32, AuthError> {
        let user = self.session_user(&session).await?;
        let email = Email::parse(&user.email, "email")
            .map_err(|e| AuthError::internal("stored email", e))?;
        // The old password is guessed like a login's: the same budget.
        let attempt = LoginAttempt::new(email, address.to_owned());
        let Some((credentials, _)) = self.check_throttled(&attempt, old).await? else {
            return Err(AuthError::WrongPassword);
        };
        let hash = self.stores.hasher.call(HashPassword(new)).await??;
        let message =
            ReplacePasswordHash { id: user.id, old: credentials.password_hash, new: hash };
        // Changed by someone else since our read: their change stands.
        if !self.stores.users.call(message).await?? {
            return Err(AuthError::WrongPassword);
        }
        let keep = Some(session);
        let ended = self.stores.sessions.call(EndUserSessions { user: user.id, keep }).await??;
        self.stores.sessions.call(InvalidateUser(user)).await??;
        Ok(ended)
    }
}

//! What operators do to accounts: promote one to admin, end its sessions,
//! disable it, enable it again.

use super::{AuthService, Caller};
use crate::{
    actors::{
        session_store::{EndUserSessions, InvalidateUser},
        user_store::{FindAccountByEmail, PromoteToAdmin, SetDisabled},
    },
    domain::{Email, User},
    error::AuthError,
};

/// What an admin action does to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// End every session and drop every cached copy at once.
    RevokeSessions,
    /// Revoke, and refuse its logins and lookups until enabled.
    Disable,
    Enable,
}

impl AuthService {
    /// Lets an admin through: an operator, an allowed admin peer, or an
    /// admin's session. PERMISSION_DENIED for another caller it can name,
    /// UNAUTHENTICATED for one with neither a session nor a certificate.
    pub async fn authorize_admin(&self, caller: &Caller) -> Result<(), AuthError> {
        if self.is_admin(caller).await? {
            return Ok(());
        }
        if caller.session.is_none() && caller.peer.is_none() {
            return Err(AuthError::Unauthenticated);
        }
        if let Some(id) = &caller.session {
            // An unknown or expired session is no caller at all.
            self.session_user(id).await?;
        }
        Err(AuthError::PermissionDenied("only an admin or an allowed peer may administer accounts"))
    }

    /// AdminService: `action` on the account with this email, for an
    /// admin (see [`Self::authorize_admin`]).
    pub async fn administer(
        &self,
        caller: &Caller,
        email: Email,
        action: AccountAction,
    ) -> Result<(User, u32), AuthError> {
        self.authorize_admin(caller).await?;
        let outcome = self.act_on_account(email, action).await?;
        tracing::info!(action = ?action, user_id = %outcome.0.id, admin = %caller_name(caller), "admin action");
        Ok(outcome)
    }

    /// AdminService's ResetSecondFactor: there are no second factors yet.
    pub async fn reset_second_factor(
        &self,
        caller: &Caller,
        email: Email,
    ) -> Result<User, AuthError> {
        self.authorize_admin(caller).await?;
        let _ = email;
        Err(AuthError::FailedPrecondition("accounts have no second factor to reset"))
    }

    /// Makes the account with this email an admin (its cached copies
    /// dropped, so the role shows at once); `None` if there is none.
    pub async fn promote_to_admin(&self, email: Email) -> Result<Option<User>, AuthError> {
        let promoted = self.stores.users.call(PromoteToAdmin(email)).await??;
        if let Some(user) = &promoted {
            self.stores.sessions.call(InvalidateUser(user.clone())).await??;
        }
        Ok(promoted)
    }

    /// Applies `action` to the account with this email, disabled or not:
    /// the account and how many sessions ended.
    pub async fn act_on_account(
        &self,
        email: Email,
        action: AccountAction,
    ) -> Result<(User, u32), AuthError> {
        let user = self
            .stores
            .users
            .call(FindAccountByEmail(email))
            .await??
            .ok_or(AuthError::UserNotFound)?;
        match action {
            AccountAction::Enable => {
                self.stores.users.call(SetDisabled { id: user.id, disabled: false }).await??;
                return Ok((user, 0));
            }
            AccountAction::Disable => {
                self.stores.users.call(SetDisabled { id: user.id, disabled: true }).await??;
            }
            AccountAction::RevokeSessions => {}
        }
        let ended =
            self.stores.sessions.call(EndUserSessions { user: user.id, keep: None }).await??;
        self.stores.sessions.call(InvalidateUser(user.clone())).await??;
        Ok((user, ended))
    }
}

/// Who acted, for the log: the peer, or that it was a session or the CLI.
fn caller_name(caller: &Caller) -> String {
    match (&caller.peer, &caller.session, caller.operator) {
        (_, _, true) => "operator".to_owned(),
        (Some(peer), _, _) => peer.to_string(),
        (None, Some(_), _) => "an admin session".to_owned(),
        (None, None, false) => "nobody".to_owned(),
    }
}

//! What operators do to accounts: promote one to admin, end its sessions,
//! disable it, enable it again.

use super::AuthService;
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

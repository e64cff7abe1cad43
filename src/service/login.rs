//! Login: the throttle's budgets, one password check whatever the account,
//! the session, and the upgrade of an outdated hash.

use std::time::Duration;

use super::AuthService;
use crate::{
    actors::{
        password_hasher::{self, HashError, HashPassword, Scheme, Verification, VerifyPassword},
        session_store::{
            CreateSession, FinishLoginAttempt, Gate, InvalidateUser, LoginKey, Outcome,
            ReserveLoginAttempt, SessionOrigin,
        },
        user_store::{FindCredentials, ReplacePasswordHash},
    },
    domain::{Email, Password, PasswordHash, SessionId, User, UserCredentials},
    error::{AuthError, CallError},
};

/// How long a login waits for attempts in flight on its (account, address)
/// pair before it is refused, and how often it looks again.
const THROTTLE_WAIT: Duration = Duration::from_secs(5);
const THROTTLE_POLL: Duration = Duration::from_millis(20);

impl From<HashError> for AuthError {
    fn from(err: HashError) -> Self {
        match err {
            // The worker is being replaced: a retry will be served.
            HashError::WorkerPanicked => Self::Actor(CallError::Stopped(password_hasher::NAME)),
            other => Self::internal("password hasher", other),
        }
    }
}

/// A password check against an account, from an address: what the login
/// throttle budgets.
pub(super) struct LoginAttempt(LoginKey);

impl LoginAttempt {
    pub(super) fn new(email: Email, address: String) -> Self {
        Self(LoginKey { email, address })
    }
}

impl AuthService {
    /// Verifies credentials and opens a session. Unknown email and wrong
    /// password take the same path (one argon2 verify each) and return the
    /// same error; attempts count towards the throttle either way (a
    /// successful login resets the pair's count).
    pub async fn login(
        &self,
        email: Email,
        password: Password,
        origin: SessionOrigin,
    ) -> Result<(User, SessionId), AuthError> {
        let started = tokio::time::Instant::now();
        let attempt = LoginAttempt::new(email, origin.client_address.clone());
        let Some((credentials, verification)) =
            self.check_throttled(&attempt, password.clone()).await?
        else {
            self.count_login("bad_credentials");
            // Every failure takes at least the floor, so an unknown email,
            // a wrong password and an account whose hash verifies at another
            // cost (bcrypt from the Go service, an older argon2 cost) cannot
            // be told apart by timing.
            tokio::time::sleep_until(started + self.policy.failure_floor).await;
            return Err(AuthError::InvalidCredentials);
        };

        let user = credentials.user;
        // The session keeps a copy of the user: the client's next call is
        // usually GetMe.
        let created = CreateSession { user: user.clone(), origin };
        let session = self.stores.sessions.call(created).await??;
        self.count_login("ok");
        if verification.needs_rehash {
            self.upgrade_hash(&user, credentials.password_hash, password).await;
        }
        Ok((user, session))
    }

    /// A password check within the login throttle's budgets: the account's
    /// credentials and how they verified, or `None` for an unknown email or
    /// a wrong password.
    pub(super) async fn check_throttled(
        &self,
        attempt: &LoginAttempt,
        password: Password,
    ) -> Result<Option<(UserCredentials, Verification)>, AuthError> {
        self.pass_throttle(&attempt.0).await?;
        let checked = self.check_password(&attempt.0.email, password).await;
        self.settle_throttle(attempt.0.clone(), &checked).await;
        checked
    }

    /// Waits until the login throttle lets this attempt check a password
    /// (its progressive delay included), or refuses it.
    async fn pass_throttle(&self, key: &LoginKey) -> Result<(), AuthError> {
        let deadline = tokio::time::Instant::now() + THROTTLE_WAIT;
        loop {
            match self.stores.sessions.call(ReserveLoginAttempt(key.clone())).await?? {
                Gate::Pass { delay } => {
                    tokio::time::sleep(delay).await;
                    return Ok(());
                }
                Gate::Refuse { retry_after } => {
                    self.count_login("throttled");
                    return Err(AuthError::LoginThrottled { retry_after });
                }
                // Attempts being checked hold the pair's budget; theirs
                // decides ours.
                Gate::Wait if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(THROTTLE_POLL).await;
                }
                Gate::Wait => {
                    self.count_login("throttled");
                    return Err(AuthError::LoginThrottled { retry_after: Duration::from_secs(1) });
                }
            }
        }
    }

    /// Settles a reserved attempt with how its password check went. Best
    /// effort: a lost update only leaves the reservation to expire with the
    /// window.
    async fn settle_throttle<T>(&self, key: LoginKey, checked: &Result<Option<T>, AuthError>) {
        let outcome = match checked {
            Ok(Some(_)) => Outcome::Succeeded,
            Ok(None) => Outcome::Failed,
            Err(_) => Outcome::Abandoned,
        };
        let settled = self.stores.sessions.call(FinishLoginAttempt { key, outcome }).await;
        if let Err(e) = settled.map_err(AuthError::from).and_then(|r| r.map_err(AuthError::from)) {
            tracing::warn!(error = %e, "could not settle a login attempt with the throttle");
        }
    }

    /// The account's credentials and how they verified, if `password` is
    /// its password; `None` for an unknown email or a wrong password (one
    /// verify either way).
    async fn check_password(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<Option<(UserCredentials, Verification)>, AuthError> {
        let credentials = self.stores.users.call(FindCredentials(email.clone())).await??;
        let stored = credentials.as_ref().map(|c| c.password_hash.clone());
        let verify = VerifyPassword { password, stored };
        let verification = match self.stores.hasher.call(verify).await? {
            Ok(verification) => verification,
            // A stored hash nothing can verify is an operator's problem,
            // not the caller's: log it, answer like a wrong password.
            Err(e @ (HashError::UnknownFormat | HashError::Malformed(_))) => {
                let user_id = credentials.as_ref().map(|c| c.user.id.to_string());
                tracing::error!(error = %e, user_id, "unusable stored password hash");
                Verification { matches: false, needs_rehash: false, scheme: Scheme::Argon2id }
            }
            Err(other) => return Err(other.into()),
        };
        Ok(credentials.filter(|_| verification.matches).map(|c| (c, verification)))
    }

    /// Re-hashes a legacy (bcrypt) or outdated-cost hash with the current
    /// argon2id parameters. Best effort: the login has already succeeded.
    async fn upgrade_hash(&self, user: &User, old: PasswordHash, password: Password) {
        let result: Result<bool, AuthError> = async {
            let new = self.stores.hasher.call(HashPassword(password)).await??;
            let replace = ReplacePasswordHash { id: user.id, old, new };
            let replaced = self.stores.users.call(replace).await??;
            if replaced {
                self.stores.sessions.call(InvalidateUser(user.clone())).await??;
            }
            Ok(replaced)
        }
        .await;
        match result {
            Ok(replaced) => tracing::info!(user_id = %user.id, replaced, "password hash upgraded"),
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "password hash upgrade failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hasher_worker_lost_to_a_panic_is_an_outage_not_a_bug() {
        let lost = AuthError::from(HashError::WorkerPanicked);
        assert!(matches!(lost, AuthError::Actor(CallError::Stopped(_))), "{lost:?}");
        let bug = AuthError::from(HashError::UnknownFormat);
        assert!(matches!(bug, AuthError::Internal(_)), "{bug:?}");
    }
}

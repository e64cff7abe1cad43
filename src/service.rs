//! The use cases: what each RPC does, in terms of domain types and actor
//! messages. Protocol-free: the gRPC layer translates to and from protobuf
//! and maps [`AuthError`] to a status.

use std::time::Duration;

/// How long a login waits for attempts in flight on its (account, address)
/// pair before it is refused, and how often it looks again.
const THROTTLE_WAIT: Duration = Duration::from_secs(5);
const THROTTLE_POLL: Duration = Duration::from_millis(20);

use crate::{
    actors::{
        ActorClient,
        password_hasher::{
            self, HashError, HashPassword, PasswordHasher, Scheme, Verification, VerifyPassword,
        },
        session_store::{
            CacheUser, CreateSession, DeleteSession, EndUserSession, EndUserSessions,
            FinishLoginAttempt, Gate, InvalidateUser, ListUserSessions, LoginKey, LookUpCachedUser,
            Outcome, RefreshSessionUser, ReserveLoginAttempt, ResolveSession, SessionInfo,
            SessionOrigin, SessionStore, UserKey,
        },
        user_store::{
            CreateUser, CreateUserError, FindCredentials, FindUserByEmail, FindUserById,
            ReplacePasswordHash, UserStore,
        },
    },
    domain::{
        Avatar, Email, NewUser, Password, PersonName, Role, SessionId, User, UserCredentials,
        UserId,
    },
    error::{AuthError, CallError},
    telemetry::metrics::Metrics,
};

/// A registration as received, before validation.
#[derive(Debug, Default)]
pub struct RegisterInput {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password: RawSecret,
    pub role: String,
    pub avatar: String,
}

/// A password straight off the wire; redacted in `Debug`.
#[derive(Default)]
pub struct RawSecret(pub String);

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone)]
pub struct AuthService {
    users: ActorClient<UserStore>,
    sessions: ActorClient<SessionStore>,
    hasher: ActorClient<PasswordHasher>,
    metrics: Metrics,
    lookup_public: bool,
    /// Least time a failed login takes (`login.failure_floor_ms`).
    failure_floor: Duration,
}

impl From<CreateUserError> for AuthError {
    fn from(err: CreateUserError) -> Self {
        match err {
            CreateUserError::EmailTaken => Self::EmailTaken,
            CreateUserError::Dependency(e) => Self::Dependency(e),
        }
    }
}

impl From<HashError> for AuthError {
    fn from(err: HashError) -> Self {
        match err {
            // The worker is being replaced: a retry will be served.
            HashError::WorkerPanicked => Self::Actor(CallError::Stopped(password_hasher::NAME)),
            other => Self::internal("password hasher", other),
        }
    }
}

impl AuthService {
    pub fn new(
        users: ActorClient<UserStore>,
        sessions: ActorClient<SessionStore>,
        hasher: ActorClient<PasswordHasher>,
        metrics: Metrics,
        lookup_public: bool,
        failure_floor: Duration,
    ) -> Self {
        Self { users, sessions, hasher, metrics, lookup_public, failure_floor }
    }

    /// Creates an account. An admin account needs an admin caller.
    pub async fn register(
        &self,
        input: RegisterInput,
        caller: Option<&str>,
    ) -> Result<User, AuthError> {
        let email = Email::parse(&input.email, "email")?;
        let first_name = PersonName::parse(&input.first_name, "first_name")?;
        let last_name = PersonName::parse(&input.last_name, "last_name")?;
        let password = Password::parse_new(input.password.0)?;
        let role = Role::parse(&input.role)?;
        let avatar = Avatar::parse(&input.avatar)?;

        if role == Role::Admin {
            let is_admin = match self.session_user(caller).await {
                Ok(caller) => caller.role == Role::Admin,
                Err(AuthError::Unauthenticated) => false,
                Err(other) => return Err(other),
            };
            if !is_admin {
                self.count_registration("denied");
                return Err(AuthError::PermissionDenied(
                    "only an admin may create an admin account",
                ));
            }
        }

        let password_hash = self.hasher.call(HashPassword(password)).await??;
        let new = NewUser {
            id: UserId::new_random(),
            email,
            first_name,
            last_name,
            role,
            avatar,
            password_hash,
        };
        match self.users.call(CreateUser(new)).await? {
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

    /// Verifies credentials and opens a session. Unknown email and wrong
    /// password take the same path (one argon2 verify each) and return the
    /// same error; attempts count towards the account's throttle either way
    /// (a successful login resets it).
    pub async fn login(
        &self,
        email: &str,
        password: String,
        origin: SessionOrigin,
    ) -> Result<(User, SessionId), AuthError> {
        let started = tokio::time::Instant::now();
        let email = Email::parse(email, "email")?;
        let password = Password::parse_existing(password)?;

        let key = LoginKey { email: email.clone(), address: origin.client_address.clone() };
        self.pass_throttle(&key).await?;
        let checked = self.check_password(&email, password.clone()).await;
        self.settle_throttle(key, &checked).await;
        let Some((credentials, verification)) = checked? else {
            self.count_login("bad_credentials");
            // Every failure takes at least the floor, so an unknown email,
            // a wrong password and an account whose hash verifies at another
            // cost (bcrypt from the Go service, an older argon2 cost) cannot
            // be told apart by timing.
            tokio::time::sleep_until(started + self.failure_floor).await;
            return Err(AuthError::InvalidCredentials);
        };

        let user = credentials.user;
        // The session keeps a copy of the user: the client's next call is
        // usually GetMe.
        let session = self.sessions.call(CreateSession { user: user.clone(), origin }).await??;
        self.count_login("ok");
        if verification.needs_rehash {
            self.upgrade_hash(&user, credentials.password_hash, password).await;
        }
        Ok((user, session))
    }

    /// Waits until the login throttle lets this attempt check a password
    /// (its progressive delay included), or refuses it.
    async fn pass_throttle(&self, key: &LoginKey) -> Result<(), AuthError> {
        let deadline = tokio::time::Instant::now() + THROTTLE_WAIT;
        loop {
            match self.sessions.call(ReserveLoginAttempt(key.clone())).await?? {
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
        if let Err(e) = flatten(self.sessions.call(FinishLoginAttempt { key, outcome }).await) {
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
        let credentials = self.users.call(FindCredentials(email.clone())).await??;
        let stored = credentials.as_ref().map(|c| c.password_hash.clone());
        let verification = match self.hasher.call(VerifyPassword { password, stored }).await? {
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
    async fn upgrade_hash(
        &self,
        user: &User,
        old: crate::domain::PasswordHash,
        password: Password,
    ) {
        let result: Result<bool, AuthError> = async {
            let new = self.hasher.call(HashPassword(password)).await??;
            let replaced = self.users.call(ReplacePasswordHash { id: user.id, old, new }).await??;
            if replaced {
                self.sessions.call(InvalidateUser(user.clone())).await??;
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

    /// The caller's sessions, and the handle of the current one.
    pub async fn list_sessions(
        &self,
        session: Option<&str>,
    ) -> Result<(Vec<SessionInfo>, String), AuthError> {
        let (user, current) = self.caller(session).await?;
        let sessions = self.sessions.call(ListUserSessions(user.id)).await??;
        Ok((sessions, current.storage_key()))
    }

    /// Ends one of the caller's sessions; `NotFound` unless it is theirs.
    pub async fn revoke_session(
        &self,
        session: Option<&str>,
        handle: &str,
    ) -> Result<(), AuthError> {
        let (user, _) = self.caller(session).await?;
        let message = EndUserSession { user: user.id, handle: handle.trim().to_owned() };
        if self.sessions.call(message).await?? { Ok(()) } else { Err(AuthError::SessionNotFound) }
    }

    /// Ends every session of the caller (but the current one, if asked);
    /// how many.
    pub async fn logout_all(
        &self,
        session: Option<&str>,
        keep_current: bool,
    ) -> Result<u32, AuthError> {
        let (user, current) = self.caller(session).await?;
        let keep = keep_current.then_some(current);
        Ok(self.sessions.call(EndUserSessions { user: user.id, keep }).await??)
    }

    /// Verifies the old password (against the login budget, like a login),
    /// stores a hash of the new one, and ends every other session; how many.
    pub async fn change_password(
        &self,
        session: Option<&str>,
        address: &str,
        old: String,
        new: String,
    ) -> Result<u32, AuthError> {
        let (user, current) = self.caller(session).await?;
        let old = Password::parse_existing(old)?;
        let new = Password::parse_new(new)?;
        let email = Email::parse(&user.email, "email")
            .map_err(|e| AuthError::internal("stored email", e))?;
        // The old password is guessed like a login's: the same budget.
        let key = LoginKey { email: email.clone(), address: address.to_owned() };
        self.pass_throttle(&key).await?;
        let checked = self.check_password(&email, old).await;
        self.settle_throttle(key, &checked).await;
        let Some((credentials, _)) = checked? else {
            return Err(AuthError::WrongPassword);
        };
        let hash = self.hasher.call(HashPassword(new)).await??;
        let message =
            ReplacePasswordHash { id: user.id, old: credentials.password_hash, new: hash };
        // Changed by someone else since our read: their change stands.
        if !self.users.call(message).await?? {
            return Err(AuthError::WrongPassword);
        }
        let ended =
            self.sessions.call(EndUserSessions { user: user.id, keep: Some(current) }).await??;
        self.sessions.call(InvalidateUser(user)).await??;
        Ok(ended)
    }

    /// The caller's user and session id, from a live session.
    async fn caller(&self, session: Option<&str>) -> Result<(User, SessionId), AuthError> {
        let id = session.and_then(SessionId::parse).ok_or(AuthError::Unauthenticated)?;
        let user = self.session_user(Some(id.expose())).await?;
        Ok((user, id))
    }

    pub async fn get_me(&self, session: Option<&str>) -> Result<User, AuthError> {
        self.session_user(session).await
    }

    pub async fn logout(&self, session: Option<&str>) -> Result<(), AuthError> {
        let id = session.and_then(SessionId::parse).ok_or(AuthError::Unauthenticated)?;
        if self.sessions.call(DeleteSession(id)).await?? {
            Ok(())
        } else {
            Err(AuthError::Unauthenticated)
        }
    }

    pub async fn find_by_id(&self, uuid: &str, session: Option<&str>) -> Result<User, AuthError> {
        let session = self.lookup_session(session)?;
        let id = match UserId::parse(uuid) {
            Ok(id) => id,
            // Only a caller allowed to look up learns what was wrong.
            Err(invalid) => {
                self.authorize(session).await?;
                return Err(invalid.into());
            }
        };
        self.look_up(session, UserKey::Id(id)).await
    }

    pub async fn find_by_email(
        &self,
        email: &str,
        session: Option<&str>,
    ) -> Result<User, AuthError> {
        let session = self.lookup_session(session)?;
        let email = match Email::parse(email, "email") {
            Ok(email) => email,
            Err(invalid) => {
                self.authorize(session).await?;
                return Err(invalid.into());
            }
        };
        self.look_up(session, UserKey::Email(email)).await
    }

    /// A lookup: the session check and the cache read in one round trip;
    /// Postgres only on a miss, and only for a caller allowed to look up.
    async fn look_up(&self, session: Option<SessionId>, key: UserKey) -> Result<User, AuthError> {
        let must_check = session.is_some();
        let message = LookUpCachedUser { session: session.clone(), user: key.clone() };
        let cached = match self.sessions.call(message).await? {
            Ok(found) => {
                if must_check {
                    match found.session {
                        None => return Err(AuthError::Unauthenticated),
                        // A stale copy of the session's user: check the
                        // account is still there, as GetMe would.
                        Some(resolved) if resolved.cached_user.is_none() => {
                            self.session_user(session.as_ref().map(SessionId::expose)).await?;
                        }
                        Some(_) => {}
                    }
                }
                found.user
            }
            // Open lookups do without the cache when Redis is down.
            Err(e) if !must_check => {
                tracing::debug!(error = %e, "user cache unavailable");
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(user) = cached {
            return Ok(user);
        }
        let user = match key {
            UserKey::Id(id) => self.users.call(FindUserById(id)).await??,
            UserKey::Email(email) => self.users.call(FindUserByEmail(email)).await??,
        }
        .ok_or(AuthError::UserNotFound)?;
        self.cache_in_background(user.clone());
        Ok(user)
    }

    /// Lookups reveal whether an account exists, so they need a session
    /// unless the deployment opted into the Go service's open lookups:
    /// `Ok(None)` when no check is needed, the session to check otherwise.
    fn lookup_session(&self, session: Option<&str>) -> Result<Option<SessionId>, AuthError> {
        if self.lookup_public {
            return Ok(None);
        }
        session.and_then(SessionId::parse).map(Some).ok_or(AuthError::Unauthenticated)
    }

    /// Passes when there is no session to check, or the session is live.
    async fn authorize(&self, session: Option<SessionId>) -> Result<(), AuthError> {
        let Some(id) = session else {
            return Ok(());
        };
        match self.sessions.call(ResolveSession(id)).await?? {
            Some(_) => Ok(()),
            None => Err(AuthError::Unauthenticated),
        }
    }

    /// The user behind a session id: the session's copy while it is fresh
    /// (one Redis command), else read again and the copy refreshed.
    async fn session_user(&self, session: Option<&str>) -> Result<User, AuthError> {
        let id = session.and_then(SessionId::parse).ok_or(AuthError::Unauthenticated)?;
        let resolved = self
            .sessions
            .call(ResolveSession(id.clone()))
            .await??
            .ok_or(AuthError::Unauthenticated)?;
        if let Some(user) = resolved.cached_user {
            return Ok(user);
        }
        // The account may have been deleted since the session began.
        let user = self
            .users
            .call(FindUserById(resolved.user_id))
            .await??
            .ok_or(AuthError::Unauthenticated)?;
        self.in_background(RefreshSessionUser { session: id, user: user.clone() });
        Ok(user)
    }

    fn cache_in_background(&self, user: User) {
        self.in_background(CacheUser(user));
    }

    /// Sends a cache write without waiting for it: the answer does not
    /// depend on it, and a failed write only costs a later miss.
    fn in_background<M>(&self, msg: M)
    where
        M: actix::Message<Result = Result<(), crate::error::DependencyError>> + Send + 'static,
        SessionStore: actix::Handler<crate::actors::Traced<M>>,
    {
        let sessions = self.sessions.clone();
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Ok(Err(e)) = sessions.call(msg).await {
                    tracing::debug!(error = %e, "could not write the cache");
                }
            },
            span,
        ));
    }

    fn count_login(&self, outcome: &str) {
        self.metrics.logins.with_label_values(&[outcome]).inc();
    }

    fn count_registration(&self, outcome: &str) {
        self.metrics.registrations.with_label_values(&[outcome]).inc();
    }
}

/// Collapses "could not deliver" and "delivered, but failed".
fn flatten<T, E: Into<AuthError>>(reply: Result<Result<T, E>, CallError>) -> Result<T, AuthError> {
    reply?.map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::grpc::status::to_status;

    #[test]
    fn a_hasher_worker_lost_to_a_panic_is_unavailable_not_internal() {
        let status = to_status(AuthError::from(HashError::WorkerPanicked));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let status = to_status(AuthError::from(HashError::UnknownFormat));
        assert_eq!(status.code(), Code::Internal, "{status:?}");
    }
}

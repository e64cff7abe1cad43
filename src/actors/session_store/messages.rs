//! What the `SessionStore` actor answers: each message is one call of the
//! [`SessionBackend`] method named after it.

use super::{
    backend::SessionBackend,
    throttle::{Gate, LoginKey, Outcome},
    types::{CachedLookup, ResolvedSession, SessionInfo, SessionOrigin, UserKey},
};
use crate::{
    actors::store::store_messages,
    domain::{SessionId, User, UserId},
    error::DependencyError,
};

store_messages! { SessionBackend;
    /// Opens a session for the user (keeping a copy of the user with it).
    CreateSession { user: User, origin: SessionOrigin } -> Result<SessionId, DependencyError>
        => create_session(&user, &origin);

    /// The session's user id and, if fresh, its copy of the user.
    ResolveSession(id: SessionId) -> Result<Option<ResolvedSession>, DependencyError>
        => resolve_session(&id);

    /// Stores a fresh copy of the user with the session (after a miss).
    RefreshSessionUser { session: SessionId, user: User } -> Result<(), DependencyError>
        => refresh_session_user(&session, &user);

    /// Ends a session; `true` if there was one.
    DeleteSession(id: SessionId) -> Result<bool, DependencyError> => delete_session(&id);

    /// A lookup's work: the caller's session (if given) and the cached
    /// user, in one round trip.
    LookUpCachedUser { session: Option<SessionId>, user: UserKey }
        -> Result<CachedLookup, DependencyError> => look_up_cached_user(session.as_ref(), &user);

    /// The user's live sessions.
    ListUserSessions(user: UserId) -> Result<Vec<SessionInfo>, DependencyError>
        => list_user_sessions(user);

    /// Ends one of the user's sessions by its handle; `false` if the user
    /// has no such session.
    EndUserSession { user: UserId, handle: String } -> Result<bool, DependencyError>
        => end_user_session(user, &handle);

    /// Ends every session of the user but `keep`; how many.
    EndUserSessions { user: UserId, keep: Option<SessionId> } -> Result<u32, DependencyError>
        => end_user_sessions(user, keep.as_ref());

    /// Caches a user for lookups by id and by email.
    CacheUser(user: User) -> Result<(), DependencyError> => cache_user(&user);

    /// Drops every cached copy of the user (lookup cache, session copies).
    InvalidateUser(user: User) -> Result<(), DependencyError> => invalidate_user(&user);

    /// Asks the login throttle whether an attempt may check its password
    /// now, reserving it if so.
    ReserveLoginAttempt(key: LoginKey) -> Result<Gate, DependencyError>
        => reserve_login_attempt(&key);

    /// Settles a reserved login attempt.
    FinishLoginAttempt { key: LoginKey, outcome: Outcome } -> Result<(), DependencyError>
        => finish_login_attempt(&key, outcome);
}

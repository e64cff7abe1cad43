//! The use cases: what each RPC (and each admin command) does, in terms of
//! domain types and actor messages. Protocol-free: the adapters parse their
//! input into domain types, call a use case, and translate its answer; an
//! [`AuthError`] becomes a status in `grpc::status`.
//!
//! - [`account`]: registration, password change;
//! - [`login`]: login, the login throttle, hash upgrades;
//! - [`sessions`]: GetMe, logout, a user's sessions;
//! - [`lookup`]: FindByID and FindByEmail;
//! - [`admin`]: what operators do to accounts.

mod account;
mod admin;
mod login;
mod lookup;
mod sessions;

use std::{sync::Arc, time::Duration};

pub use admin::AccountAction;

use crate::{
    actors::{
        ActorClient, Traced,
        password_hasher::PasswordHasher,
        session_store::{RefreshSessionUser, ResolveSession, SessionStore},
        user_store::{FindUserById, UserStore},
    },
    config::Settings,
    domain::{PeerIdentity, SessionId, User},
    error::{AuthError, DependencyError},
    telemetry::metrics::Metrics,
};

/// Who is asking, as the adapter established it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The session named (not yet checked); none when absent or when what
    /// was given cannot be a session id.
    pub session: Option<SessionId>,
    /// The identity of a verified client certificate.
    pub peer: Option<PeerIdentity>,
    /// An operator acting on the service's own storage (the CLI).
    pub operator: bool,
}

impl Caller {
    pub fn operator() -> Self {
        Self { operator: true, ..Self::default() }
    }

    /// The session, if the caller named one.
    pub fn session(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }

    /// Whether its verified certificate names one of `allowed`.
    fn peer_in(&self, allowed: &[String]) -> bool {
        self.peer.as_ref().is_some_and(|peer| peer.is_in(allowed))
    }
}

/// The actors the use cases talk to.
#[derive(Clone)]
pub struct Stores {
    pub users: ActorClient<UserStore>,
    pub sessions: ActorClient<SessionStore>,
    pub hasher: ActorClient<PasswordHasher>,
}

/// The settings the use cases apply.
#[derive(Debug, Clone)]
pub struct Policy {
    /// FindByID/FindByEmail without a session (`lookup.public`).
    pub lookup_public: bool,
    /// Peers that may look users up without a session.
    pub lookup_peers: Arc<[String]>,
    /// Peers that may act as admins.
    pub admin_peers: Arc<[String]>,
    /// Least time a failed login takes (`login.failure_floor_ms`).
    pub failure_floor: Duration,
}

impl Policy {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            lookup_public: settings.lookup.public,
            lookup_peers: settings.lookup.allowed_peers.clone().into(),
            admin_peers: settings.admin.allowed_peers.clone().into(),
            failure_floor: settings.login.failure_floor(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService {
    stores: Stores,
    policy: Policy,
    metrics: Metrics,
}

impl AuthService {
    pub fn new(stores: Stores, policy: Policy, metrics: Metrics) -> Self {
        Self { stores, policy, metrics }
    }

    /// The user behind a live session: the session's copy while it is fresh
    /// (one Redis command), else read again and the copy refreshed.
    async fn session_user(&self, id: &SessionId) -> Result<User, AuthError> {
        let resolved = self
            .stores
            .sessions
            .call(ResolveSession(id.clone()))
            .await??
            .ok_or(AuthError::Unauthenticated)?;
        if let Some(user) = resolved.cached_user {
            return Ok(user);
        }
        // The account may have been deleted or disabled since the session
        // began.
        let user = self
            .stores
            .users
            .call(FindUserById(resolved.user_id))
            .await??
            .ok_or(AuthError::Unauthenticated)?;
        self.in_background(RefreshSessionUser { session: id.clone(), user: user.clone() });
        Ok(user)
    }

    /// Sends a cache write without waiting for it: the answer does not
    /// depend on it, and a failed write only costs a later miss.
    fn in_background<M>(&self, msg: M)
    where
        M: actix::Message<Result = Result<(), DependencyError>> + Send + 'static,
        SessionStore: actix::Handler<Traced<M>>,
    {
        let sessions = self.stores.sessions.clone();
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

//! The `SessionStore` actor: owns the Redis pool (sessions, user cache,
//! login-failure counters). Like `UserStore`, it answers with concurrent
//! futures and restarts itself with a fresh pool after repeated outages.

pub mod repository;

use std::{sync::Arc, time::Duration};

use actix::{Actor, Context, Handler, Message, ResponseActFuture, Supervised, Supervisor};

pub use repository::{RedisSessionRepository, ResolvedSession, SessionPolicy};

use super::{
    ActorClient, ActorState, ActorStats, RestartPolicy, Traced,
    store::{CheckHealth, PROBE_OPERATION, PoolSample, Store, StoreHealth},
};
use crate::{
    config::{ActorSettings, RedisSettings},
    domain::{Email, SessionId, User, UserId},
    error::{Dependency, DependencyError},
};

pub const NAME: &str = "SessionStore";

pub struct CreateSession(pub UserId);
impl Message for CreateSession {
    type Result = Result<SessionId, DependencyError>;
}

/// The session's user id and, if cached, the user itself.
pub struct ResolveSession(pub SessionId);
impl Message for ResolveSession {
    type Result = Result<Option<ResolvedSession>, DependencyError>;
}

/// `true` if a session was deleted.
pub struct DeleteSession(pub SessionId);
impl Message for DeleteSession {
    type Result = Result<bool, DependencyError>;
}

pub struct GetCachedUser(pub UserId);
impl Message for GetCachedUser {
    type Result = Result<Option<User>, DependencyError>;
}

pub struct CacheUser(pub User);
impl Message for CacheUser {
    type Result = Result<(), DependencyError>;
}

pub struct InvalidateUser(pub UserId);
impl Message for InvalidateUser {
    type Result = Result<(), DependencyError>;
}

/// Counts a login attempt against the account's budget; `Some(retry_after)`
/// if the budget is spent and the attempt must be refused.
pub struct ReserveLoginAttempt(pub Email);
impl Message for ReserveLoginAttempt {
    type Result = Result<Option<Duration>, DependencyError>;
}

pub struct ClearLoginAttempts(pub Email);
impl Message for ClearLoginAttempts {
    type Result = Result<(), DependencyError>;
}

pub struct SessionStore {
    settings: RedisSettings,
    policy: SessionPolicy,
    repo: Option<RedisSessionRepository>,
    health: StoreHealth,
}

impl SessionStore {
    /// Starts the actor under a supervisor on its own arbiter thread.
    pub fn start(
        settings: RedisSettings,
        policy: SessionPolicy,
        actors: &ActorSettings,
        stats: Arc<ActorStats>,
    ) -> ActorClient<Self> {
        let arbiter = actix::Arbiter::new();
        let breaker_cooldown = settings.connect_timeout();
        let actor = Self {
            settings,
            policy,
            repo: None,
            health: StoreHealth::new(
                Arc::clone(&stats),
                RestartPolicy::from_settings(actors),
                breaker_cooldown,
            ),
        };
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        ActorClient::new(addr, stats)
    }
}

impl Store for SessionStore {
    const NAME: &'static str = NAME;
    const DEPENDENCY: Dependency = Dependency::Redis;
    type Repo = RedisSessionRepository;

    fn health(&mut self) -> &mut StoreHealth {
        &mut self.health
    }

    fn repo(&self, operation: &'static str) -> Result<RedisSessionRepository, DependencyError> {
        self.repo.clone().ok_or_else(|| {
            DependencyError::outage(Dependency::Redis, operation, "redis pool not configured")
        })
    }
}

impl Actor for SessionStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.health.stats().capacity());
        match repository::build_pool(&self.settings) {
            Ok(pool) => {
                let prefix = self.settings.key_prefix.clone();
                let timings = self.health.stats().metrics().dependency_seconds.clone();
                self.repo = Some(RedisSessionRepository::new(pool, prefix, self.policy, timings));
                // Nothing to bootstrap: usable at once, Degraded on failure.
                self.health.set_ready(true);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot configure the redis pool");
                self.health.stats().record_error(e.to_string());
                self.health.stats().set_state(ActorState::Degraded);
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.health.stats().set_state(ActorState::Stopped);
    }
}

impl Supervised for SessionStore {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.health.stats().record_restart();
        self.health.reset();
        self.repo = None;
    }
}

/// Each message maps to one repository call; the macro spares eight copies
/// of the same handler shape.
macro_rules! handle_with_repo {
    ($msg:ty => $result:ty, $operation:literal, |$repo:ident, $inner:pat_param| $call:expr) => {
        impl Handler<Traced<$msg>> for SessionStore {
            type Result = ResponseActFuture<Self, Result<$result, DependencyError>>;

            fn handle(&mut self, msg: Traced<$msg>, _ctx: &mut Self::Context) -> Self::Result {
                let ($inner, span, ticket) = msg.open();
                self.run(span, ticket, $operation, async move |$repo| $call.await)
            }
        }
    };
}

handle_with_repo!(CreateSession => SessionId, "create_session",
    |repo, CreateSession(user)| repo.create_session(user));
handle_with_repo!(ResolveSession => Option<ResolvedSession>, "get_session",
    |repo, ResolveSession(id)| repo.resolve_session(&id));
handle_with_repo!(DeleteSession => bool, "delete_session",
    |repo, DeleteSession(id)| repo.delete_session(&id));
handle_with_repo!(GetCachedUser => Option<User>, "get_cached_user",
    |repo, GetCachedUser(id)| repo.cached_user(id));
handle_with_repo!(CacheUser => (), "cache_user",
    |repo, CacheUser(user)| repo.cache_user(&user));
handle_with_repo!(InvalidateUser => (), "invalidate_user",
    |repo, InvalidateUser(id)| repo.invalidate_user(id));
handle_with_repo!(ReserveLoginAttempt => Option<Duration>, "reserve_login_attempt",
    |repo, ReserveLoginAttempt(email)| repo.reserve_login_attempt(&email));
handle_with_repo!(ClearLoginAttempts => (), "clear_login_attempts",
    |repo, ClearLoginAttempts(email)| repo.clear_login_attempts(&email));

impl Handler<Traced<CheckHealth>> for SessionStore {
    type Result = ResponseActFuture<Self, (Result<(), DependencyError>, PoolSample)>;

    fn handle(&mut self, msg: Traced<CheckHealth>, _ctx: &mut Self::Context) -> Self::Result {
        use actix::ActorFutureExt as _;
        let (CheckHealth, span, ticket) = msg.open();
        let sample = self.repo.as_ref().map(|r| PoolSample::of(r.pool())).unwrap_or_default();
        let probe = self.run(span, ticket, PROBE_OPERATION, async move |repo| repo.ping().await);
        Box::pin(probe.map(move |result, _, _| (result, sample)))
    }
}

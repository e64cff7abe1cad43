//! The `SessionStore` actor: sessions, the user cache and login-failure
//! counters, over one of two backends behind one message API:
//!
//! - Redis (`storage.backend = "external"`): one instance per worker, each
//!   with its own pool; like `UserStore`, each runs its repository calls as
//!   tasks of their own and restarts itself with a fresh pool after repeated
//!   outages.
//! - Memory (`"embedded"`): one instance holds the state itself, so every
//!   worker sees the same sessions; expired entries are swept on a timer.

mod backend;
pub mod memory;
pub mod redis;
pub mod redis_connection;
pub mod throttle;

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Duration};

use actix::{
    Actor, ActorContext as _, AsyncContext as _, Context, Handler, Message, ResponseFuture,
    Supervised, Supervisor,
};

pub use backend::SessionBackend;
pub use redis::{
    CachedLookup, RedisSessionRepository, ResolvedSession, SessionInfo, SessionOrigin,
    SessionPolicy, UserKey,
};
pub use throttle::{Gate, LoginKey, Outcome};

use super::{
    ActorClient, ActorState, ActorStats, RestartPolicy, Traced,
    store::{CheckHealth, PoolSample, Restart, Store, StoreHealth},
};
use crate::{
    config::{ActorSettings, RedisSettings},
    domain::{SessionId, User, UserId},
    error::{Dependency, DependencyError},
    workers::Workers,
};

pub const NAME: &str = "SessionStore";

/// Opens a session for the user (keeping a copy of the user with it).
pub struct CreateSession {
    pub user: User,
    pub origin: SessionOrigin,
}
impl Message for CreateSession {
    type Result = Result<SessionId, DependencyError>;
}

/// The user's live sessions.
pub struct ListUserSessions(pub UserId);
impl Message for ListUserSessions {
    type Result = Result<Vec<SessionInfo>, DependencyError>;
}

/// Ends one of the user's sessions by its handle; `false` if the user has
/// no such session.
pub struct EndUserSession {
    pub user: UserId,
    pub handle: String,
}
impl Message for EndUserSession {
    type Result = Result<bool, DependencyError>;
}

/// Ends every session of the user but `keep`; how many.
pub struct EndUserSessions {
    pub user: UserId,
    pub keep: Option<SessionId>,
}
impl Message for EndUserSessions {
    type Result = Result<u32, DependencyError>;
}

/// The session's user id and, if fresh, its copy of the user.
pub struct ResolveSession(pub SessionId);
impl Message for ResolveSession {
    type Result = Result<Option<ResolvedSession>, DependencyError>;
}

/// Stores a fresh copy of the user with the session (after a miss).
pub struct RefreshSessionUser {
    pub session: SessionId,
    pub user: User,
}
impl Message for RefreshSessionUser {
    type Result = Result<(), DependencyError>;
}

/// `true` if a session was deleted.
pub struct DeleteSession(pub SessionId);
impl Message for DeleteSession {
    type Result = Result<bool, DependencyError>;
}

/// A lookup's Redis work: the caller's session (if given) and the cached
/// user, in one round trip.
pub struct LookUpCachedUser {
    pub session: Option<SessionId>,
    pub user: UserKey,
}
impl Message for LookUpCachedUser {
    type Result = Result<CachedLookup, DependencyError>;
}

/// Caches a user for lookups by id and by email.
pub struct CacheUser(pub User);
impl Message for CacheUser {
    type Result = Result<(), DependencyError>;
}

/// Drops every cached copy of the user (lookup cache, session copies).
pub struct InvalidateUser(pub User);
impl Message for InvalidateUser {
    type Result = Result<(), DependencyError>;
}

/// Asks the login throttle whether an attempt may check its password now,
/// reserving it if so.
pub struct ReserveLoginAttempt(pub LoginKey);
impl Message for ReserveLoginAttempt {
    type Result = Result<Gate, DependencyError>;
}

/// Settles a reserved login attempt.
pub struct FinishLoginAttempt {
    pub key: LoginKey,
    pub outcome: Outcome,
}
impl Message for FinishLoginAttempt {
    type Result = Result<(), DependencyError>;
}

/// Where sessions live.
#[derive(Debug, Clone)]
pub enum SessionBackendSettings {
    Redis(RedisSettings),
    /// In the actor, at most `max_entries` of each kind.
    Memory {
        max_entries: usize,
    },
}

/// How often the memory backend frees expired entries.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct SessionStore {
    backend: SessionBackendSettings,
    pool_size: u32,
    policy: SessionPolicy,
    repo: Option<SessionBackend>,
    health: Rc<RefCell<StoreHealth>>,
}

impl SessionStore {
    /// How many instances the backend runs: one per worker for Redis (each
    /// with its share of `redis.pool_max_size` connections), a single one
    /// holding the state for memory.
    pub fn instances(backend: &SessionBackendSettings, workers: &Workers) -> usize {
        match backend {
            SessionBackendSettings::Redis(_) => workers.len(),
            SessionBackendSettings::Memory { .. } => 1,
        }
    }

    pub fn start(
        backend: SessionBackendSettings,
        policy: SessionPolicy,
        actors: &ActorSettings,
        stats: Arc<ActorStats>,
        workers: &Workers,
    ) -> ActorClient<Self> {
        let instances = Self::instances(&backend, workers);
        let pool_size = match &backend {
            SessionBackendSettings::Redis(redis) => redis.pool_max_size.div_ceil(instances as u32),
            SessionBackendSettings::Memory { .. } => 0,
        };
        let addrs = workers
            .handles()
            .take(instances)
            .enumerate()
            .map(|(instance, arbiter)| {
                let backend = backend.clone();
                let stats = Arc::clone(&stats);
                let restarts = RestartPolicy::from_settings(actors);
                Supervisor::start_in_arbiter(&arbiter, move |_| {
                    let breaker_cooldown = match &backend {
                        SessionBackendSettings::Redis(redis) => redis.connect_timeout(),
                        SessionBackendSettings::Memory { .. } => Duration::ZERO,
                    };
                    Self {
                        backend,
                        pool_size,
                        policy,
                        repo: None,
                        health: Rc::new(RefCell::new(StoreHealth::new(
                            stats,
                            instance,
                            restarts,
                            breaker_cooldown,
                        ))),
                    }
                })
            })
            .collect();
        ActorClient::sharded(addrs, stats)
    }
}

impl Store for SessionStore {
    const NAME: &'static str = NAME;
    type Repo = SessionBackend;

    fn dependency(&self) -> Dependency {
        match self.backend {
            SessionBackendSettings::Redis(_) => Dependency::Redis,
            SessionBackendSettings::Memory { .. } => Dependency::Memory,
        }
    }

    fn health(&self) -> &Rc<RefCell<StoreHealth>> {
        &self.health
    }

    fn repo(&self, operation: &'static str) -> Result<SessionBackend, DependencyError> {
        self.repo.clone().ok_or_else(|| {
            DependencyError::outage(self.dependency(), operation, "session backend not configured")
        })
    }
}

impl Actor for SessionStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let mut health = self.health.borrow_mut();
        // Health probes come on top of the admitted messages.
        ctx.set_mailbox_capacity(health.stats().capacity() + 16);
        match &self.backend {
            SessionBackendSettings::Redis(settings) => {
                let timings = health.stats().metrics().dependency_seconds.clone();
                match RedisSessionRepository::new(settings, self.pool_size, self.policy, timings) {
                    Ok(repo) => self.repo = Some(SessionBackend::Redis(repo)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot configure the redis pool");
                        health.stats().record_error(e.to_string());
                        health.set_state(ActorState::Degraded);
                        return;
                    }
                }
            }
            SessionBackendSettings::Memory { max_entries } => {
                // Kept across supervised restarts: the state is the sessions.
                if self.repo.is_none() {
                    self.repo = Some(SessionBackend::memory(self.policy, *max_entries));
                }
                ctx.run_interval(SWEEP_INTERVAL, |act, _| {
                    if let Some(repo) = &act.repo {
                        repo.sweep();
                    }
                });
            }
        }
        // Nothing to bootstrap: usable at once, Degraded on failure.
        health.set_ready(true);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.health.borrow().set_state(ActorState::Stopped);
    }
}

impl Supervised for SessionStore {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        let mut health = self.health.borrow_mut();
        health.stats().record_restart();
        health.reset();
        // A fresh Redis pool; the memory state stays.
        if let Some(SessionBackend::Redis(_)) = self.repo {
            self.repo = None;
        }
    }
}

impl Handler<Restart> for SessionStore {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Each message maps to one repository call; the macro spares a dozen copies
/// of the same handler shape.
macro_rules! handle_with_repo {
    ($msg:ty => $result:ty, $operation:literal, |$repo:ident, $inner:pat_param| $call:expr) => {
        impl Handler<Traced<$msg>> for SessionStore {
            type Result = ResponseFuture<Result<$result, DependencyError>>;

            fn handle(&mut self, msg: Traced<$msg>, ctx: &mut Self::Context) -> Self::Result {
                let ($inner, span, ticket) = msg.open();
                self.run(ctx, span, ticket, $operation, async move |$repo| $call.await)
            }
        }
    };
}

handle_with_repo!(CreateSession => SessionId, "create_session",
    |repo, CreateSession { user, origin }| repo.create_session(&user, &origin));
handle_with_repo!(ListUserSessions => Vec<SessionInfo>, "list_sessions",
    |repo, ListUserSessions(user)| repo.list_sessions(user));
handle_with_repo!(EndUserSession => bool, "end_user_session",
    |repo, EndUserSession { user, handle }| repo.end_user_session(user, &handle));
handle_with_repo!(EndUserSessions => u32, "end_user_sessions",
    |repo, EndUserSessions { user, keep }| repo.end_user_sessions(user, keep.as_ref()));
handle_with_repo!(ResolveSession => Option<ResolvedSession>, "get_session",
    |repo, ResolveSession(id)| repo.resolve_session(&id));
handle_with_repo!(RefreshSessionUser => (), "refresh_session_user",
    |repo, RefreshSessionUser { session, user }| repo.refresh_session_user(&session, &user));
handle_with_repo!(DeleteSession => bool, "delete_session",
    |repo, DeleteSession(id)| repo.delete_session(&id));
handle_with_repo!(LookUpCachedUser => CachedLookup, "look_up_user",
    |repo, LookUpCachedUser { session, user }| repo.look_up(session.as_ref(), &user));
handle_with_repo!(CacheUser => (), "cache_user",
    |repo, CacheUser(user)| repo.cache_user(&user));
handle_with_repo!(InvalidateUser => (), "invalidate_user",
    |repo, InvalidateUser(user)| repo.invalidate_user(&user));
handle_with_repo!(ReserveLoginAttempt => Gate, "reserve_login_attempt",
    |repo, ReserveLoginAttempt(key)| repo.reserve_login_attempt(&key));
handle_with_repo!(FinishLoginAttempt => (), "finish_login_attempt",
    |repo, FinishLoginAttempt { key, outcome }| repo.finish_login_attempt(&key, outcome));

impl Handler<Traced<CheckHealth>> for SessionStore {
    type Result = ResponseFuture<(Result<(), DependencyError>, PoolSample)>;

    fn handle(&mut self, msg: Traced<CheckHealth>, ctx: &mut Self::Context) -> Self::Result {
        let (CheckHealth, span, ticket) = msg.open();
        let sample = self.repo.as_ref().map(SessionBackend::pool_sample).unwrap_or_default();
        self.probe(ctx, span, ticket, sample, async move |repo| repo.ping().await)
    }
}

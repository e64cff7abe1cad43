//! The `SessionStore` actor: sessions, the user cache and login-failure
//! counters, over one of two backends behind one message API:
//!
//! - Redis (`storage.backend = "external"`): one instance per worker, each
//!   with its own pool; like `UserStore`, each runs its repository calls as
//!   tasks of their own and restarts itself with a fresh pool after repeated
//!   outages.
//! - Memory (`"embedded"`): one instance holds the state itself, so every
//!   worker sees the same sessions; expired entries are swept on a timer.
//!
//! Its messages ([`messages`]) carry the backend-neutral types of [`types`].

mod backend;
pub mod memory;
pub mod messages;
pub mod redis;
pub mod throttle;
pub mod types;

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Duration};

use actix::{Actor, AsyncContext as _, Context, Supervised};

pub use backend::SessionBackend;
pub use memory::MemorySessionRepository;
pub use messages::*;
pub use redis::RedisSessionRepository;
pub use throttle::{Gate, LoginKey, Outcome};
pub use types::{
    CachedLookup, ResolvedSession, SessionInfo, SessionOrigin, SessionPolicy, UserKey,
};

use super::{
    ActorClient, ActorState, ActorStats,
    store::{Instances, Store, store_handlers},
    supervision::StoreHealth,
};
use crate::{
    config::{ActorSettings, RedisSettings},
    error::{Dependency, DependencyError},
    workers::Workers,
};

pub const NAME: &str = "SessionStore";

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
        let breaker_cooldown = match &backend {
            SessionBackendSettings::Redis(redis) => redis.connect_timeout(),
            SessionBackendSettings::Memory { .. } => Duration::ZERO,
        };
        Instances { workers, instances, stats, actors, breaker_cooldown }.start(move |health| {
            Self { backend: backend.clone(), pool_size, policy, repo: None, health }
        })
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

    fn pool_sample(&self) -> crate::actors::PoolSample {
        self.repo.as_ref().map(SessionBackend::pool_sample).unwrap_or_default()
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
        self.size_mailbox(ctx);
        let mut health = self.health.borrow_mut();
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
                    let memory = MemorySessionRepository::new(self.policy, *max_entries);
                    self.repo = Some(SessionBackend::Memory(memory));
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
        self.report_stopped();
    }
}

impl Supervised for SessionStore {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.report_restarting();
        // A fresh Redis pool; the memory state stays.
        if let Some(SessionBackend::Redis(_)) = self.repo {
            self.repo = None;
        }
    }
}

store_handlers!(SessionStore, SessionBackend);

//! The `UserStore` actor: users in PostgreSQL (`storage.backend =
//! "external"`) or in the embedded SQLite database (`"embedded"`), behind
//! one message API ([`messages`]), and the schema bootstrap of either.
//!
//! One instance per worker. Each repository call runs as a task of its own,
//! so a slow query never holds the actor; the pool size bounds work in
//! flight. After repeated outages an instance stops itself and its
//! supervisor restarts it with a fresh pool and a re-checked schema (with
//! backoff).

mod backend;
pub mod connect;
pub mod messages;
pub mod migrate;
pub mod postgres;
pub mod schema;
pub mod sqlite;
mod statements;

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Duration};

use actix::{Actor, ActorFutureExt as _, AsyncContext as _, Context, Supervised, WrapFuture as _};

pub use backend::UserRepository;
pub use messages::*;
pub use postgres::{PgPool, PgUserRepository};
pub use sqlite::SqliteUserRepository;

use super::{
    ActorClient, ActorState, ActorStats,
    store::{Instances, Store, store_handlers},
    supervision::StoreHealth,
};
use crate::{
    config::{ActorSettings, PostgresSettings},
    error::{Dependency, DependencyError},
    workers::Workers,
};

pub const NAME: &str = "UserStore";

/// Where users live.
#[derive(Clone)]
pub enum UserDatabase {
    Postgres(PostgresSettings),
    /// Opened once, shared by every instance (one file, one write gate).
    Sqlite(SqliteUserRepository),
}

pub struct UserStore {
    database: UserDatabase,
    pool_size: u32,
    repo: Option<UserRepository>,
    bootstrap_attempts: u32,
    max_backoff: Duration,
    health: Rc<RefCell<StoreHealth>>,
}

impl UserStore {
    /// Starts one supervised instance on each worker; with Postgres each
    /// has its share of `postgres.pool_max_size` connections.
    pub fn start(
        database: UserDatabase,
        actors: &ActorSettings,
        stats: Arc<ActorStats>,
        workers: &Workers,
    ) -> ActorClient<Self> {
        let (pool_size, breaker_cooldown) = match &database {
            UserDatabase::Postgres(settings) => {
                (settings.pool_max_size.div_ceil(workers.len() as u32), settings.connect_timeout())
            }
            UserDatabase::Sqlite(repo) => (0, repo.busy_timeout()),
        };
        let max_backoff = Duration::from_secs(actors.restart_backoff_max_secs);
        let instances = workers.len();
        Instances { workers, instances, stats, actors, breaker_cooldown }.start(move |health| {
            Self {
                database: database.clone(),
                pool_size,
                repo: None,
                bootstrap_attempts: 0,
                max_backoff,
                health,
            }
        })
    }

    /// Applies migrations on a plain thread (the harness blocks), retrying
    /// with exponential backoff until the database lets it.
    fn bootstrap(&mut self, ctx: &mut Context<Self>) {
        let database = self.database.clone();
        let dependency = self.dependency();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("migrate".into())
            .spawn(move || {
                let _ = tx.send(match database {
                    UserDatabase::Postgres(settings) => migrate::prepare(&settings),
                    UserDatabase::Sqlite(repo) => repo.migrate(),
                });
            })
            .map_err(|e| tracing::error!(error = %e, "cannot spawn migration thread"))
            .ok();
        ctx.spawn(rx.into_actor(self).map(move |result, act, ctx| {
            let result = result.unwrap_or_else(|_| {
                Err(migrate::BootstrapError::Migration("migration thread died".into()))
            });
            match result {
                Ok(applied) => {
                    if !applied.is_empty() {
                        tracing::info!(?applied, "applied {dependency} migrations");
                    }
                    act.bootstrap_attempts = 0;
                    act.health.borrow_mut().set_ready(true);
                }
                Err(err) => {
                    // Logged once per outage, not once per retry.
                    if act.bootstrap_attempts == 0 {
                        tracing::warn!(error = %err, "{dependency} not ready; retrying in the background");
                    }
                    let health = act.health.borrow();
                    health.stats().record_error(err.to_string());
                    health.set_state(ActorState::Degraded);
                    drop(health);
                    let delay = Duration::from_millis(250 << act.bootstrap_attempts.min(7))
                        .min(act.max_backoff);
                    act.bootstrap_attempts += 1;
                    ctx.run_later(delay, |act, ctx| act.bootstrap(ctx));
                }
            }
        }));
    }
}

impl Store for UserStore {
    const NAME: &'static str = NAME;
    type Repo = UserRepository;

    fn dependency(&self) -> Dependency {
        match self.database {
            UserDatabase::Postgres(_) => Dependency::Postgres,
            UserDatabase::Sqlite(_) => Dependency::Sqlite,
        }
    }

    fn health(&self) -> &Rc<RefCell<StoreHealth>> {
        &self.health
    }

    fn pool_sample(&self) -> crate::actors::PoolSample {
        self.repo.as_ref().map(UserRepository::pool_sample).unwrap_or_default()
    }

    /// The repository, once the schema is in place.
    fn repo(&self, operation: &'static str) -> Result<UserRepository, DependencyError> {
        match &self.repo {
            Some(repo) if self.health.borrow().is_ready() => Ok(repo.clone()),
            _ => Err(DependencyError::outage(
                self.dependency(),
                operation,
                "schema not ready (database unreachable or migrating)",
            )),
        }
    }
}

impl Actor for UserStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.size_mailbox(ctx);
        let mut health = self.health.borrow_mut();
        self.repo = match &self.database {
            UserDatabase::Postgres(settings) => {
                let timings = health.stats().metrics().dependency_seconds.clone();
                match PgUserRepository::new(settings, self.pool_size, timings) {
                    Ok(repo) => Some(UserRepository::Postgres(repo)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot configure the postgres pool");
                        health.stats().record_error(e.to_string());
                        health.set_state(ActorState::Degraded);
                        return;
                    }
                }
            }
            UserDatabase::Sqlite(repo) => Some(UserRepository::Sqlite(repo.clone())),
        };
        health.set_ready(false);
        drop(health);
        self.bootstrap(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.report_stopped();
    }
}

impl Supervised for UserStore {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.report_restarting();
        // Dropping the pool closes every connection, stale ones included.
        self.repo = None;
        self.bootstrap_attempts = 0;
    }
}

store_handlers!(UserStore, UserRepository);

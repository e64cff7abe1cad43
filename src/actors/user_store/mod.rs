//! The `UserStore` actor: users in PostgreSQL (`storage.backend =
//! "external"`) or in the embedded SQLite database (`"embedded"`), behind
//! one message API, and the schema bootstrap of either.
//!
//! One instance per worker. Each repository call runs as a task of its own,
//! so a slow query never holds the actor; the pool size bounds work in
//! flight. After repeated outages an instance stops itself and its
//! supervisor restarts it with a fresh pool and a re-checked schema (with
//! backoff).

mod backend;
pub mod migrate;
pub mod postgres;
pub mod schema;
pub mod sqlite;

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Duration};

use actix::{
    Actor, ActorContext as _, ActorFutureExt as _, AsyncContext as _, Context, Handler, Message,
    ResponseFuture, Supervised, Supervisor, WrapFuture as _,
};

pub use backend::UserRepository;
pub use postgres::{PgPool, PgUserRepository};
pub use sqlite::SqliteUserRepository;

use super::{
    ActorClient, ActorState, ActorStats, RestartPolicy, Traced,
    store::{CheckHealth, Outage, PoolSample, Restart, Store, StoreHealth},
};
use crate::{
    config::{ActorSettings, PostgresSettings},
    domain::{Email, NewUser, PasswordHash, User, UserCredentials, UserId},
    error::{Dependency, DependencyError},
    workers::Workers,
};

pub const NAME: &str = "UserStore";

/// Insert a new account; `EmailTaken` if the address is registered.
pub struct CreateUser(pub NewUser);
impl Message for CreateUser {
    type Result = Result<User, CreateUserError>;
}

pub struct FindUserById(pub UserId);
impl Message for FindUserById {
    type Result = Result<Option<User>, DependencyError>;
}

pub struct FindUserByEmail(pub Email);
impl Message for FindUserByEmail {
    type Result = Result<Option<User>, DependencyError>;
}

/// The account and its password hash, for login only.
pub struct FindCredentials(pub Email);
impl Message for FindCredentials {
    type Result = Result<Option<UserCredentials>, DependencyError>;
}

/// Compare-and-set of a password hash (upgrade to current argon2id cost).
pub struct ReplacePasswordHash {
    pub id: UserId,
    pub old: PasswordHash,
    pub new: PasswordHash,
}
impl Message for ReplacePasswordHash {
    type Result = Result<bool, DependencyError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("email is already registered")]
    EmailTaken,
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

impl Outage for CreateUserError {
    fn is_outage(&self) -> bool {
        matches!(self, Self::Dependency(e) if e.is_outage())
    }
}

/// A statement failure that is a bug, not an outage: the statements are
/// static and their inputs validated, so a constraint or decoding failure
/// will not clear up by retrying.
fn is_rejection(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    matches!(
        e,
        Error::DatabaseError(
            Kind::CheckViolation
                | Kind::NotNullViolation
                | Kind::ForeignKeyViolation
                | Kind::UniqueViolation,
            _,
        ) | Error::DeserializationError(_)
            | Error::SerializationError(_)
    )
}

/// Runs one statement's `work` in a `db.query` span named after it, within
/// `limit`, timed into `auth_dependency_operation_seconds`; `None` when the
/// limit passed first.
async fn timed_statement<T, E>(
    timings: &prometheus::HistogramVec,
    (dependency, db_system): (Dependency, &'static str),
    statement: &'static str,
    limit: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Option<Result<T, E>> {
    use tracing::Instrument as _;
    let span = crate::child_span!(
        parent: &tracing::Span::current(),
        "db.query",
        otel.name = %format_args!("{dependency} {statement}"),
        otel.kind = "client",
        db.system = db_system,
        db.operation = statement,
    );
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(limit, work).instrument(span).await.ok();
    let outcome = if matches!(result, Some(Ok(_))) { "ok" } else { "error" };
    timings
        .with_label_values(&[dependency.to_string().as_str(), statement, outcome])
        .observe(started.elapsed().as_secs_f64());
    result
}

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
        let addrs = workers
            .handles()
            .enumerate()
            .map(|(instance, arbiter)| {
                let database = database.clone();
                let stats = Arc::clone(&stats);
                let restarts = RestartPolicy::from_settings(actors);
                Supervisor::start_in_arbiter(&arbiter, move |_| Self {
                    database,
                    pool_size,
                    repo: None,
                    bootstrap_attempts: 0,
                    max_backoff,
                    health: Rc::new(RefCell::new(StoreHealth::new(
                        stats,
                        instance,
                        restarts,
                        breaker_cooldown,
                    ))),
                })
            })
            .collect();
        ActorClient::sharded(addrs, stats)
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
                    UserDatabase::Postgres(settings) => migrate::prepare_database(
                        &settings.migration_url_with_connect_timeout(),
                        settings.create_database,
                    ),
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
        let mut health = self.health.borrow_mut();
        // Health probes come on top of the admitted messages.
        ctx.set_mailbox_capacity(health.stats().capacity() + 16);
        self.repo = Some(match &self.database {
            UserDatabase::Postgres(settings) => UserRepository::Postgres(PgUserRepository::new(
                settings,
                self.pool_size,
                health.stats().metrics().dependency_seconds.clone(),
            )),
            UserDatabase::Sqlite(repo) => UserRepository::Sqlite(repo.clone()),
        });
        health.set_ready(false);
        drop(health);
        self.bootstrap(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.health.borrow().set_state(ActorState::Stopped);
    }
}

impl Supervised for UserStore {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        let mut health = self.health.borrow_mut();
        health.stats().record_restart();
        health.reset();
        drop(health);
        // Dropping the pool closes every connection, stale ones included.
        self.repo = None;
        self.bootstrap_attempts = 0;
    }
}

impl Handler<Traced<CreateUser>> for UserStore {
    type Result = ResponseFuture<Result<User, CreateUserError>>;

    fn handle(&mut self, msg: Traced<CreateUser>, ctx: &mut Self::Context) -> Self::Result {
        let (CreateUser(new), span, ticket) = msg.open();
        self.run(ctx, span, ticket, "insert_user", async move |repo| repo.create(&new).await)
    }
}

impl Handler<Traced<FindUserById>> for UserStore {
    type Result = ResponseFuture<Result<Option<User>, DependencyError>>;

    fn handle(&mut self, msg: Traced<FindUserById>, ctx: &mut Self::Context) -> Self::Result {
        let (FindUserById(id), span, ticket) = msg.open();
        self.run(ctx, span, ticket, "select_user_by_id", async move |repo| {
            repo.find_by_id(id).await
        })
    }
}

impl Handler<Traced<FindUserByEmail>> for UserStore {
    type Result = ResponseFuture<Result<Option<User>, DependencyError>>;

    fn handle(&mut self, msg: Traced<FindUserByEmail>, ctx: &mut Self::Context) -> Self::Result {
        let (FindUserByEmail(email), span, ticket) = msg.open();
        self.run(ctx, span, ticket, "select_user_by_email", async move |repo| {
            Ok(repo.find_credentials_by_email(&email).await?.map(|c| c.user))
        })
    }
}

impl Handler<Traced<FindCredentials>> for UserStore {
    type Result = ResponseFuture<Result<Option<UserCredentials>, DependencyError>>;

    fn handle(&mut self, msg: Traced<FindCredentials>, ctx: &mut Self::Context) -> Self::Result {
        let (FindCredentials(email), span, ticket) = msg.open();
        self.run(ctx, span, ticket, "select_user_by_email", async move |repo| {
            repo.find_credentials_by_email(&email).await
        })
    }
}

impl Handler<Traced<ReplacePasswordHash>> for UserStore {
    type Result = ResponseFuture<Result<bool, DependencyError>>;

    fn handle(
        &mut self,
        msg: Traced<ReplacePasswordHash>,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        let (ReplacePasswordHash { id, old, new }, span, ticket) = msg.open();
        self.run(ctx, span, ticket, "update_password_hash", async move |repo| {
            repo.replace_password_hash(id, &old, &new).await
        })
    }
}

impl Handler<Traced<CheckHealth>> for UserStore {
    type Result = ResponseFuture<(Result<(), DependencyError>, PoolSample)>;

    fn handle(&mut self, msg: Traced<CheckHealth>, ctx: &mut Self::Context) -> Self::Result {
        let (CheckHealth, span, ticket) = msg.open();
        let sample = self.repo.as_ref().map(UserRepository::pool_sample).unwrap_or_default();
        self.probe(ctx, span, ticket, sample, async move |repo| repo.ping().await)
    }
}

impl Handler<Restart> for UserStore {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

//! `PgUserRepository`: the user store's PostgreSQL backend, usable without an actor
//! (the admin CLI uses it directly). Every statement has its own span and a
//! client-side timeout, and every failure is classified as an outage (retry
//! later: UNAVAILABLE) or a rejection (a bug: INTERNAL).

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use diesel::{
    deserialize::{self, FromSql, FromSqlRow},
    dsl::{exists, not},
    expression::AsExpression,
    pg::{Pg, PgValue},
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
    serialize::{self, IsNull, Output, ToSql},
};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager as _,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod},
};
use prometheus::HistogramVec;
use uuid::Uuid;

use super::{
    connect::PgConnector,
    schema::{RoleType, user_blocks, users},
    statements::{is_rejection, timed_statement, user_statements},
};
use crate::{
    actors::{ConnectFailures, Watched, uptime_ms},
    config::PostgresSettings,
    domain::{Email, NewUser, PasswordHash, Role, User, UserCredentials, UserId},
    error::{CreateUserError, Dependency, DependencyError},
};

diesel::define_sql_function! {
    /// SQL `lower(text)`, matching the `users_email_lower_key` index.
    #[sql_name = "lower"]
    fn lower_text(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

pub type PgPool = bb8::Pool<Watched<AsyncDieselConnectionManager<AsyncPgConnection>>>;

#[derive(Debug, Clone, Copy, AsExpression, FromSqlRow)]
#[diesel(sql_type = RoleType)]
enum DbRole {
    User,
    Admin,
}

impl ToSql<RoleType, Pg> for DbRole {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(match self {
            Self::User => b"user",
            Self::Admin => b"admin",
        })?;
        Ok(IsNull::No)
    }
}

impl FromSql<RoleType, Pg> for DbRole {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        match bytes.as_bytes() {
            b"user" => Ok(Self::User),
            b"admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {:?}", String::from_utf8_lossy(other)).into()),
        }
    }
}

impl From<Role> for DbRole {
    fn from(role: Role) -> Self {
        match role {
            Role::User => Self::User,
            Role::Admin => Self::Admin,
        }
    }
}

impl From<DbRole> for Role {
    fn from(role: DbRole) -> Self {
        match role {
            DbRole::User => Self::User,
            DbRole::Admin => Self::Admin,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(Pg))]
struct UserRow {
    user_id: Uuid,
    first_name: String,
    last_name: String,
    email: String,
    password: String,
    role: DbRole,
    avatar: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl UserRow {
    /// Always converts: the row's types are the columns'. (Fallible for the
    /// shared statements' sake: SQLite's rows can be corrupt.)
    #[allow(clippy::unnecessary_wraps)]
    fn into_credentials(
        self,
        _operation: &'static str,
    ) -> Result<UserCredentials, DependencyError> {
        Ok(UserCredentials {
            password_hash: PasswordHash::new(self.password),
            user: User {
                id: UserId::from_uuid(self.user_id),
                first_name: self.first_name,
                last_name: self.last_name,
                email: self.email,
                role: self.role.into(),
                // The Go service stored "" for "no avatar".
                avatar: self.avatar.filter(|a| !a.is_empty()),
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    user_id: Uuid,
    first_name: &'a str,
    last_name: &'a str,
    email: &'a str,
    password: &'a str,
    role: DbRole,
    avatar: Option<&'a str>,
}

impl<'a> From<&'a NewUser> for NewUserRow<'a> {
    fn from(new: &'a NewUser) -> Self {
        Self {
            user_id: new.id.as_uuid(),
            first_name: new.first_name.as_str(),
            last_name: new.last_name.as_str(),
            email: new.email.as_str(),
            password: new.password_hash.expose(),
            role: new.role.into(),
            avatar: new.avatar.as_ref().map(|a| a.as_str()),
        }
    }
}

/// The key as the schema stores it.
type DbId = Uuid;

fn db_id(id: UserId) -> DbId {
    id.as_uuid()
}

/// The role column's admin value.
const ADMIN: DbRole = DbRole::Admin;

/// Builds the pool without connecting, so the service starts (not ready)
/// while Postgres is down and connects once it is up.
fn build_pool(
    settings: &PostgresSettings,
    max_size: u32,
    failures: ConnectFailures,
) -> Result<PgPool, DependencyError> {
    let url = settings.url_with_connect_timeout();
    let connector = PgConnector::new(settings, &url)
        .map_err(|e| DependencyError::rejected(PG, "configure", e))?;
    let mut config = ManagerConfig::default();
    // `Fast` only drops connections diesel saw break; a `SELECT 1` on every
    // checkout would double the round-trips of every query.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let (connector, url) = (connector.clone(), url.to_owned());
        Box::pin(async move { connector.connect(&url).await })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Ok(bb8::Pool::builder()
        .max_size(max_size.max(1))
        .connection_timeout(settings.connect_timeout())
        // One connect attempt per checkout, not a retry loop hammering a
        // server that is down; callers learn of its failure through
        // `failures` at once.
        .retry_connection(false)
        // Let a replica shed idle connections after a burst.
        .idle_timeout(Some(Duration::from_secs(300)))
        .build_unchecked(Watched { inner: manager, failures }))
}

#[derive(Clone)]
pub struct PgUserRepository {
    pool: PgPool,
    failures: ConnectFailures,
    query_timeout: Duration,
    /// When a statement last succeeded ([`uptime_ms`]): a call that waited
    /// or timed out while others succeeded met our own load, not an outage.
    last_success: Arc<AtomicU64>,
    /// `auth_dependency_operation_seconds`.
    timings: HistogramVec,
    /// Behind a transaction pooler: every statement in a transaction.
    transaction_pooler: bool,
}

const PG: Dependency = Dependency::Postgres;

impl PgUserRepository {
    /// A repository over a new pool of at most `max_size` connections.
    pub fn new(
        settings: &PostgresSettings,
        max_size: u32,
        timings: HistogramVec,
    ) -> Result<Self, DependencyError> {
        let failures = ConnectFailures::default();
        Ok(Self {
            pool: build_pool(settings, max_size, failures.clone())?,
            failures,
            query_timeout: settings.query_timeout(),
            last_success: Arc::new(AtomicU64::new(0)),
            timings,
            transaction_pooler: settings.transaction_pooler,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A statement succeeded after `since` ([`uptime_ms`]).
    fn answered_since(&self, since: u64) -> bool {
        AtomicU64::load(&self.last_success, Ordering::Relaxed) >= since
    }

    user_statements!();

    /// A statement that only reads (see [`Self::run_in`]); in a transaction
    /// of its own only behind a transaction pooler.
    async fn read<T>(
        &self,
        statement: &'static str,
        query: impl AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
    ) -> Result<T, Failure> {
        self.run_in(statement, self.transaction_pooler, query).await
    }

    /// [`Self::read`] for a statement that writes: acknowledged only once its
    /// COMMIT is. tokio-postgres completes a statement at its
    /// CommandComplete, which PostgreSQL sends before the statement's
    /// implicit transaction commits (at the following Sync, where it also
    /// waits for a synchronous replica). A server killed in between flushes
    /// that CommandComplete on its way out, so the write would be reported
    /// done and then be missing after recovery, or on the promoted replica
    /// (both seen in the crash and failover tests). An explicit COMMIT
    /// answers only after the commit, replication included: two round trips
    /// more, on write paths that each follow an argon2 hash or an admin
    /// action.
    async fn write<T>(
        &self,
        statement: &'static str,
        query: impl AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
    ) -> Result<T, Failure> {
        self.run_in(statement, true, query).await
    }

    /// Checks out a connection and runs `query` on it, inside a transaction
    /// when `in_transaction`, within the configured timeout, in a span,
    /// timed.
    async fn run_in<T>(
        &self,
        statement: &'static str,
        in_transaction: bool,
        query: impl AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
    ) -> Result<T, Failure> {
        let called = uptime_ms();
        let work = async {
            let connect_failed = self.failures.next();
            let checkout = tokio::select! {
                biased;
                checkout = self.pool.get() => checkout,
                error = connect_failed => return Err(Failure::Connect(error)),
            };
            let mut conn = checkout.map_err(|e| match e {
                // Every connection is in use and none came free in time:
                // with connections established, that is our own load, not
                // Postgres failing (while Postgres is down its connections
                // break and are dropped, and a silent one is found out by
                // the statements holding them, which time out).
                bb8::RunError::TimedOut if self.pool.state().connections > 0 => Failure::Busy,
                e => Failure::Pool(e),
            })?;
            if !in_transaction {
                return query(&mut conn).await.map_err(Failure::Query);
            }
            // A write is acknowledged when its COMMIT is (see `write`).
            // Behind a transaction pooler the server connection is ours
            // only until the transaction ends; the statement's Parse, Bind
            // and Close all happen before COMMIT. (A statement that opens a
            // transaction of its own nests as a savepoint.)
            AnsiTransactionManager::begin_transaction(&mut *conn).await.map_err(Failure::Query)?;
            match query(&mut conn).await {
                Ok(value) => {
                    AnsiTransactionManager::commit_transaction(&mut *conn)
                        .await
                        .map_err(Failure::Query)?;
                    Ok(value)
                }
                Err(error) => {
                    // A failed rollback breaks the connection; the pool
                    // drops it.
                    let _ = AnsiTransactionManager::rollback_transaction(&mut *conn).await;
                    Err(Failure::Query(error))
                }
            }
        };
        let system = (PG, "postgresql");
        let result = timed_statement(&self.timings, system, statement, self.query_timeout, work)
            .await
            .unwrap_or_else(|| {
                Err(if self.answered_since(called) {
                    Failure::Busy
                } else {
                    Failure::Timeout(self.query_timeout)
                })
            });
        if result.is_ok() {
            self.last_success.store(uptime_ms(), Ordering::Relaxed);
        }
        result
    }
}

enum Failure {
    /// A connection attempt failed while this call waited for one.
    Connect(String),
    Pool(bb8::RunError<PoolError>),
    Busy,
    Query(DieselError),
    Timeout(Duration),
}

impl Failure {
    fn classify(self, operation: &'static str) -> DependencyError {
        match self {
            Self::Busy => DependencyError::busy(PG, operation, "every pooled connection busy"),
            Self::Connect(e) => {
                DependencyError::outage(PG, operation, format!("cannot connect: {e}"))
            }
            Self::Pool(bb8::RunError::TimedOut) => {
                DependencyError::outage(PG, operation, "timed out waiting for a pooled connection")
            }
            Self::Pool(bb8::RunError::User(e)) => {
                DependencyError::outage(PG, operation, format!("cannot connect: {e}"))
            }
            Self::Timeout(after) => {
                DependencyError::outage(PG, operation, format!("no answer within {after:?}"))
            }
            Self::Query(e) if is_rejection(&e) => DependencyError::rejected(PG, operation, e),
            // Anything else (connection closed, server shutting down, schema
            // missing after a restore) clears up when Postgres does.
            Self::Query(e) => DependencyError::outage(PG, operation, e),
        }
    }
}

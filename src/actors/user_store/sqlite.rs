//! `SqliteUserRepository`: the embedded backend of the user store. SQLite
//! (bundled into the binary) through diesel-async's `SyncConnectionWrapper`
//! in a bb8 pool, with the PostgreSQL schema's semantics: uuid ids,
//! case-insensitive unique email, timestamps maintained by the database.
//!
//! WAL lets readers run beside the writer; writes take turns on a gate in
//! the process (shared by every `UserStore` instance) instead of spinning
//! in SQLite's busy handler, so a registration race is settled by the
//! unique index and nothing else.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use diesel::{
    Connection as _, ConnectionError,
    dsl::{exists, not},
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
    sqlite::{Sqlite, SqliteConnection},
};
use diesel_async::{
    AsyncConnection as _, RunQueryDsl, SimpleAsyncConnection as _,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, bb8::Pool},
    sync_connection_wrapper::SyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _, embed_migrations};
use futures_util::FutureExt as _;
use prometheus::HistogramVec;
use uuid::Uuid;

use super::{
    migrate::BootstrapError,
    postgres::lower_text,
    statements::{is_rejection, timed_statement, user_statements},
};
use crate::{
    config::StorageSettings,
    domain::{Email, NewUser, PasswordHash, Role, User, UserCredentials, UserId},
    error::{CreateUserError, Dependency, DependencyError},
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The value of `storage.data_dir` that keeps the database in memory.
pub const IN_MEMORY: &str = ":memory:";
/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "auth.db";

const SQLITE: Dependency = Dependency::Sqlite;

type AsyncSqlite = SyncConnectionWrapper<SqliteConnection>;
pub type SqlitePool = Pool<AsyncSqlite>;

mod schema {
    diesel::table! {
        use diesel::sql_types::*;

        users (user_id) {
            user_id -> Text,
            first_name -> Text,
            last_name -> Text,
            email -> Text,
            password -> Text,
            role -> Text,
            avatar -> Nullable<Text>,
            created_at -> TimestamptzSqlite,
            updated_at -> TimestamptzSqlite,
        }
    }

    diesel::table! {
        user_blocks (user_id) {
            user_id -> Text,
            disabled_at -> Text,
        }
    }

    diesel::joinable!(user_blocks -> users (user_id));
    diesel::allow_tables_to_appear_in_same_query!(users, user_blocks);
}

use schema::{user_blocks, users};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the embedded database {url}: {source}")]
    Open { url: String, source: ConnectionError },
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(Sqlite))]
struct UserRow {
    user_id: String,
    first_name: String,
    last_name: String,
    email: String,
    password: String,
    role: String,
    avatar: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl UserRow {
    /// A row the CHECK constraints let in always converts; anything else is
    /// a corrupt file, reported as a rejection (a bug), never a panic.
    fn into_credentials(self, operation: &'static str) -> Result<UserCredentials, DependencyError> {
        let corrupt = |what: &str| DependencyError::rejected(SQLITE, operation, what);
        let id = Uuid::parse_str(&self.user_id).map_err(|_| corrupt("user_id is not a uuid"))?;
        let role = Role::parse(&self.role).map_err(|_| corrupt("unknown role"))?;
        Ok(UserCredentials {
            password_hash: PasswordHash::new(self.password),
            user: User {
                id: UserId::from_uuid(id),
                first_name: self.first_name,
                last_name: self.last_name,
                email: self.email,
                role,
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
    user_id: String,
    first_name: &'a str,
    last_name: &'a str,
    email: &'a str,
    password: &'a str,
    role: &'static str,
    avatar: Option<&'a str>,
}

impl<'a> From<&'a NewUser> for NewUserRow<'a> {
    fn from(new: &'a NewUser) -> Self {
        Self {
            user_id: db_id(new.id),
            first_name: new.first_name.as_str(),
            last_name: new.last_name.as_str(),
            email: new.email.as_str(),
            password: new.password_hash.expose(),
            role: new.role.as_str(),
            avatar: new.avatar.as_ref().map(|a| a.as_str()),
        }
    }
}

/// The key as the schema stores it: the uuid's text.
type DbId = String;

fn db_id(id: UserId) -> DbId {
    id.as_uuid().hyphenated().to_string()
}

/// The role column's admin value.
const ADMIN: &str = "admin";

#[derive(Clone)]
pub struct SqliteUserRepository {
    pool: SqlitePool,
    /// The connection URL (a path, or a shared in-memory database).
    url: String,
    /// Holds a shared in-memory database open for the life of the process
    /// (it vanishes with its last connection).
    keeper: Option<Arc<Mutex<SqliteConnection>>>,
    /// One writer at a time, across every store instance.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// One migration at a time, across every store instance.
    migrating: Arc<Mutex<()>>,
    busy_timeout: Duration,
    timings: HistogramVec,
}

impl SqliteUserRepository {
    /// Opens (creating if needed) the database under `storage.data_dir`, or
    /// an in-memory one. Connects lazily; migrations run in [`Self::migrate`].
    pub fn open(storage: &StorageSettings, timings: HistogramVec) -> Result<Self, OpenError> {
        let busy_timeout = storage.busy_timeout();
        let (url, keeper, pool_size) = if storage.data_dir == IN_MEMORY {
            // A named shared-cache database, so the pool's connection and
            // the migration connection see the same one. One pooled
            // connection: shared-cache locks are table-level and not
            // covered by the busy timeout.
            let url = format!("file:auth-{}?mode=memory&cache=shared", Uuid::new_v4().simple());
            let keeper = SqliteConnection::establish(&url)
                .map_err(|source| OpenError::Open { url: url.clone(), source })?;
            (url, Some(Arc::new(Mutex::new(keeper))), 1)
        } else {
            let dir = Path::new(&storage.data_dir);
            std::fs::create_dir_all(dir)
                .map_err(|source| OpenError::DataDir { path: dir.to_owned(), source })?;
            (dir.join(DATABASE_FILE).to_string_lossy().into_owned(), None, storage.pool_max_size)
        };
        let pragmas = connection_pragmas(busy_timeout);
        let mut config = ManagerConfig::<AsyncSqlite>::default();
        config.custom_setup = Box::new(move |url| {
            let pragmas = pragmas.clone();
            let url = url.to_owned();
            async move {
                let mut conn = AsyncSqlite::establish(&url).await?;
                conn.batch_execute(&pragmas)
                    .await
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::<AsyncSqlite>::new_with_config(&url, config);
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(busy_timeout)
            .retry_connection(false)
            // Local connections never go stale; and with no reaper to
            // spawn, the pool can be built outside a runtime (the CLI).
            .idle_timeout(None)
            .max_lifetime(None)
            .build_unchecked(manager);
        Ok(Self {
            pool,
            url,
            keeper,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            migrating: Arc::new(Mutex::new(())),
            busy_timeout,
            timings,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Where the data lives, for the start-up log.
    pub fn location(&self) -> &str {
        &self.url
    }

    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Switches a file database to WAL and applies the embedded migrations;
    /// returns the versions applied. Blocking: call it from a plain thread.
    pub fn migrate(&self) -> Result<Vec<String>, BootstrapError> {
        // Every store instance migrates at start: in this process they take
        // turns here; against another process (`auth-service migrate`) the
        // write lock below settles it, as Postgres' advisory lock does.
        let _turn = self.migrating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let failed = |e: &dyn std::fmt::Display| BootstrapError::Embedded(e.to_string());
        let mut conn = SqliteConnection::establish(&self.url).map_err(|e| failed(&e))?;
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            &connection_pragmas(self.busy_timeout),
        )
        .map_err(|e| failed(&e))?;
        if self.keeper.is_none() {
            self.use_wal(&mut conn).map_err(|e| failed(&e))?;
        }
        // Under SQLite's write lock, taken up front, so a second migrator
        // waits (busy timeout) and then finds nothing pending.
        conn.immediate_transaction(|conn| {
            conn.run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
        })
        .map_err(|e: Box<dyn std::error::Error + Send + Sync>| {
            BootstrapError::Migration(e.to_string())
        })
    }

    /// Switches the file to WAL (persistent; readers then never wait for
    /// the writer). The switch needs the file to itself, and SQLite answers
    /// "locked" at once rather than through the busy handler, so retry
    /// within the busy timeout.
    fn use_wal(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        let deadline = Instant::now() + self.busy_timeout;
        loop {
            match diesel::connection::SimpleConnection::batch_execute(
                conn,
                "PRAGMA journal_mode = WAL;",
            ) {
                Err(e) if Instant::now() < deadline && e.to_string().contains("locked") => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                result => return result,
            }
        }
    }

    user_statements!();

    async fn read<T>(
        &self,
        statement: &'static str,
        query: impl AsyncFnOnce(&mut AsyncSqlite) -> QueryResult<T>,
    ) -> Result<T, Failure> {
        self.run(statement, Access::Read, query).await
    }

    async fn write<T>(
        &self,
        statement: &'static str,
        query: impl AsyncFnOnce(&mut AsyncSqlite) -> QueryResult<T>,
    ) -> Result<T, Failure> {
        self.run(statement, Access::Write, query).await
    }

    /// Runs `query` on a pooled connection, behind the write gate for
    /// writes, within `storage.busy_timeout_ms`, in a span, timed.
    async fn run<T>(
        &self,
        statement: &'static str,
        access: Access,
        query: impl AsyncFnOnce(&mut AsyncSqlite) -> QueryResult<T>,
    ) -> Result<T, Failure> {
        let work = async {
            let _turn = match access {
                Access::Write => Some(self.writer.lock().await),
                Access::Read => None,
            };
            let mut conn = self.pool.get().await.map_err(|e| match e {
                bb8::RunError::TimedOut => Failure::Busy,
                bb8::RunError::User(e) => Failure::Open(e.to_string()),
            })?;
            query(&mut conn).await.map_err(Failure::Query)
        };
        timed_statement(&self.timings, (SQLITE, "sqlite"), statement, self.busy_timeout, work)
            .await
            .unwrap_or(Err(Failure::Busy))
    }
}

/// Per-connection settings: wait for locks rather than fail at once, and
/// with WAL a commit needs no fsync of the database itself (`NORMAL` keeps
/// the database consistent across a crash; the last commits may be lost on
/// power failure, as the README says).
fn connection_pragmas(busy_timeout: Duration) -> String {
    format!(
        "PRAGMA busy_timeout = {}; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        busy_timeout.as_millis()
    )
}

#[derive(Clone, Copy)]
enum Access {
    Read,
    Write,
}

enum Failure {
    Open(String),
    /// The gate, a connection or a lock not had within the busy timeout:
    /// our own load.
    Busy,
    Query(DieselError),
}

impl Failure {
    fn classify(self, operation: &'static str) -> DependencyError {
        match self {
            Self::Busy => DependencyError::busy(SQLITE, operation, "database busy"),
            Self::Open(e) => {
                DependencyError::outage(SQLITE, operation, format!("cannot open: {e}"))
            }
            Self::Query(e @ DieselError::DatabaseError(_, _))
                if e.to_string().contains("database is locked") =>
            {
                DependencyError::busy(SQLITE, operation, e)
            }
            Self::Query(e) if is_rejection(&e) => DependencyError::rejected(SQLITE, operation, e),
            // A full disk, an unreadable file, a schema gone: fixable
            // outside the service, so an outage.
            Self::Query(e) => DependencyError::outage(SQLITE, operation, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn repository(data_dir: &Path) -> SqliteUserRepository {
        let mut storage = Settings::defaults().expect("defaults").storage;
        storage.data_dir = data_dir.to_string_lossy().into_owned();
        let timings = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("t", "t"),
            &["dependency", "operation", "outcome"],
        )
        .expect("histogram");
        SqliteUserRepository::open(&storage, timings).expect("open")
    }

    /// Separate repositories, as separate processes would have (in one
    /// process the instances also share a lock of their own).
    #[test]
    fn migrators_at_once_take_turns() {
        let dir = std::env::temp_dir().join(format!("auth-migrate-{}", Uuid::new_v4().simple()));
        let start = Arc::new(std::sync::Barrier::new(4));
        let results: Vec<_> = (0..4)
            .map(|_| {
                let (repo, start) = (repository(&dir), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    repo.migrate()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("migration thread"))
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        let applied: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("every instance succeeds: {e}")))
            .collect();
        assert_eq!(
            applied.iter().filter(|a| !a.is_empty()).count(),
            1,
            "applied once: {applied:?}"
        );
    }
}

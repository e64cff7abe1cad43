//! Schema bootstrap: create the database if asked to, then apply the embedded
//! migrations under a Postgres advisory lock so replicas starting together
//! take turns instead of racing.
//!
//! Blocking by design (diesel's migration harness is synchronous): call it
//! from a thread that is not running an async runtime (inside one it panics:
//! "Cannot start a runtime from within a runtime"). It drives the async
//! connection through `AsyncConnectionWrapper` on a runtime of its own.

use std::time::{Duration, Instant};

use diesel::{RunQueryDsl as _, sql_types::BigInt};
use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _, embed_migrations};

use super::connect::PgConnector;
use crate::config::PostgresSettings;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Advisory lock key for migrations: the bytes of "authmigr".
const MIGRATION_LOCK: i64 = 0x6175_7468_6d69_6772;

type SyncPg = AsyncConnectionWrapper<AsyncPgConnection>;

/// Prepares the database the settings name: at `migration_url` (or `url`),
/// over TLS as its sslmode says, never through a transaction pooler.
pub fn prepare(settings: &PostgresSettings) -> Result<Vec<String>, BootstrapError> {
    let url = settings.migration_url_with_connect_timeout();
    let connector = PgConnector::new(settings, &url)
        .map_err(|e| BootstrapError::Connect(e.to_string()))?
        .direct();
    prepare_with(&url, settings.create_database, &connector)
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot connect to postgres: {0}")]
    Connect(String),
    #[error(
        "database {database:?} does not exist; create it (createdb {database}) or set AUTH__POSTGRES__CREATE_DATABASE=true"
    )]
    MissingDatabase { database: String },
    #[error("cannot create database {database:?}: {reason}")]
    CreateDatabase { database: String, reason: String },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("embedded database: {0}")]
    Embedded(String),
}

/// Ensures the database at `url` (plaintext) exists and its schema is
/// current. Returns the versions of the migrations it applied (empty when
/// already current).
pub fn prepare_database(url: &str, create_database: bool) -> Result<Vec<String>, BootstrapError> {
    prepare_with(url, create_database, &PgConnector::plaintext())
}

fn prepare_with(
    url: &str,
    create_database: bool,
    connector: &PgConnector,
) -> Result<Vec<String>, BootstrapError> {
    // The wrapper would build an IO-only runtime of its own; the connect
    // timeout needs timers, so give it a complete one to run on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pg-migrate-io")
        .enable_all()
        .build()
        .map_err(|e| BootstrapError::Connect(format!("cannot start a runtime: {e}")))?;
    let _entered = runtime.enter();
    let establish = |url: &str| runtime.block_on(connector.connect(url)).map(SyncPg::from);
    let mut conn = match establish(url) {
        Ok(conn) => conn,
        Err(err) if is_missing_database(&err.to_string()) => {
            let (maintenance_url, database) = split_database(url);
            if !create_database {
                return Err(BootstrapError::MissingDatabase { database });
            }
            let maintenance =
                establish(&maintenance_url).map_err(|e| BootstrapError::Connect(e.to_string()))?;
            create(maintenance, &database)?;
            establish(url).map_err(|e| BootstrapError::Connect(e.to_string()))?
        }
        Err(err) => return Err(BootstrapError::Connect(err.to_string())),
    };

    take_migration_lock(&mut conn)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| BootstrapError::Migration(e.to_string()));
    // Closing the connection would release the lock too; unlock explicitly
    // so a pooled or long-lived caller never holds it.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK)
        .execute(&mut conn);
    applied
}

/// How long to wait for a replica that is migrating (a case-insensitive index
/// over a large imported table can take a while) before giving up this
/// attempt; the caller retries with backoff.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Polls `pg_try_advisory_lock` rather than blocking in `pg_advisory_lock`,
/// so a wedged holder costs this attempt, not the thread forever.
fn take_migration_lock(conn: &mut SyncPg) -> Result<(), BootstrapError> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let started = Instant::now();
    loop {
        let attempt: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<BigInt, _>(MIGRATION_LOCK)
            .get_result(conn)
            .map_err(|e| BootstrapError::Migration(format!("taking the migration lock: {e}")))?;
        if attempt.locked {
            return Ok(());
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(BootstrapError::Migration(format!(
                "another instance has held the migration lock for over {LOCK_WAIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn create(mut conn: SyncPg, database: &str) -> Result<(), BootstrapError> {
    let failed =
        |reason: String| BootstrapError::CreateDatabase { database: database.to_owned(), reason };
    let statement = format!("CREATE DATABASE {}", quote_identifier(database));
    match diesel::sql_query(statement).execute(&mut conn) {
        Ok(_) => {
            tracing::info!(database, "created database");
            Ok(())
        }
        // Another replica created it between our connect and our CREATE
        // (42P04, or a unique violation on pg_database when truly concurrent).
        Err(e)
            if ["already exists", "pg_database_datname_index"]
                .iter()
                .any(|m| e.to_string().contains(m)) =>
        {
            Ok(())
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

fn is_missing_database(message: &str) -> bool {
    message.contains("database") && message.contains("does not exist")
}

/// Splits `postgres://h/db?x` into (`postgres://h/postgres?x`, `db`).
pub fn split_database(url: &str) -> (String, String) {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let (server, database) = match base[after_scheme..].find('/').map(|i| after_scheme + i) {
        Some(slash) if slash + 1 < base.len() => (&base[..slash], &base[slash + 1..]),
        Some(slash) => (&base[..slash], "postgres"),
        None => (base, "postgres"),
    };
    let maintenance = match query {
        Some(q) => format!("{server}/postgres?{q}"),
        None => format!("{server}/postgres"),
    };
    (maintenance, database.to_owned())
}

pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_database_off_the_url() {
        assert_eq!(
            split_database("postgres://u:p@h:5432/auth_db"),
            ("postgres://u:p@h:5432/postgres".into(), "auth_db".into())
        );
        assert_eq!(
            split_database("postgres://h/auth_db?sslmode=require"),
            ("postgres://h/postgres?sslmode=require".into(), "auth_db".into())
        );
        assert_eq!(
            split_database("postgres://h"),
            ("postgres://h/postgres".into(), "postgres".into())
        );
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}

//! Direct access to the test's storage: SQL on its database, its Redis
//! keys.

use super::{blocking, postgres_server, redis_url};

/// Best effort: the keys would expire anyway, but a suite run should not
/// leave an hour of sessions behind in a shared Redis.
pub fn delete_redis_keys(prefix: &str) {
    use bb8_redis::redis::{self, Commands as _};
    let pattern = format!("{prefix}*");
    let Ok(client) = redis::Client::open(redis_url()) else { return };
    let Ok(mut conn) = client.get_connection() else { return };
    let keys: Vec<String> = match conn.scan_match::<_, String>(&pattern) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = conn.del(keys);
    }
}

pub fn drop_database(database: &str) {
    let statement = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
    let url = format!("{}/postgres", postgres_server());
    blocking(move || {
        use diesel::{Connection as _, RunQueryDsl as _};
        use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
        if let Ok(mut conn) = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url) {
            let _ = diesel::sql_query(statement).execute(&mut conn);
        }
    });
}

/// Runs SQL statements against a database, outside any runtime.
pub fn execute_sql(database: &str, statements: Vec<String>) {
    let url = format!("{}/{database}", postgres_server());
    blocking(move || {
        use diesel::{Connection as _, connection::SimpleConnection as _};
        use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).expect("connect for SQL");
        for statement in statements {
            conn.batch_execute(&statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    });
}

/// Runs a query returning one text column named `value`, outside any runtime.
pub fn query_sql(database: &str, sql: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    let url = format!("{}/{database}", postgres_server());
    let sql = sql.to_owned();
    blocking(move || {
        use diesel::{Connection as _, RunQueryDsl as _};
        use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).expect("connect");
        diesel::sql_query(&sql)
            .load::<Row>(&mut conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|row| row.value)
            .collect()
    })
}

/// A database of the test's own, dropped when the test ends, pass or fail.
pub struct ScratchDatabase(String);

impl ScratchDatabase {
    /// A fresh name; created by the test (or by what it starts).
    pub fn named() -> Self {
        Self(super::unique_database())
    }

    /// A fresh, empty database.
    pub fn create() -> Self {
        let database = Self::named();
        execute_sql("postgres", vec![format!("CREATE DATABASE \"{}\"", database.0)]);
        database
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        drop_database(&self.0);
    }
}

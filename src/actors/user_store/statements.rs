//! What the PostgreSQL and SQLite repositories share about running a
//! statement: its span, its time limit and timing, and which failures are
//! bugs rather than outages.

use std::time::Duration;

use crate::error::Dependency;

/// A statement failure that is a bug, not an outage: the statements are
/// static and their inputs validated, so a constraint or decoding failure
/// will not clear up by retrying.
pub fn is_rejection(e: &diesel::result::Error) -> bool {
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
pub async fn timed_statement<T, E>(
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

/// The user store's statements, written once for both backends: diesel-async
/// has no connection type generic over them. Expanded inside each
/// repository's `impl`, where these names are the backend's own: the
/// `users` and `user_blocks` tables and `lower_text`; `UserRow` (with
/// `into_credentials(operation)`) and `NewUserRow` (`From<&NewUser>`);
/// `DbId` and `db_id(UserId)`, the key as the schema stores it; `ADMIN`, the
/// role column's admin value; and the runners `read` and `write`, whose
/// `Failure` classifies itself for an operation.
macro_rules! user_statements {
    () => {
        pub async fn create_user(&self, new: &NewUser) -> Result<User, CreateUserError> {
            const OP: &str = "create_user";
            let row = NewUserRow::from(new);
            let result = self
                .write(OP, async |conn| {
                    diesel::insert_into(users::table)
                        .values(&row)
                        .returning(UserRow::as_returning())
                        .get_result(conn)
                        .await
                })
                .await;
            match result {
                Ok(row) => Ok(row.into_credentials(OP)?.user),
                // The unique index settles concurrent registrations of one
                // email: exactly one insert wins, the others land here.
                Err(Failure::Query(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    _,
                ))) => Err(CreateUserError::EmailTaken),
                Err(other) => Err(other.classify(OP).into()),
            }
        }

        /// An active (not disabled) account by id.
        pub async fn find_user_by_id(&self, id: UserId) -> Result<Option<User>, DependencyError> {
            const OP: &str = "find_user_by_id";
            let id = db_id(id);
            let row = self
                .read(OP, async |conn| {
                    users::table
                        .find(&id)
                        .filter(not(exists(
                            user_blocks::table.filter(user_blocks::user_id.eq(users::user_id)),
                        )))
                        .select(UserRow::as_select())
                        .first(conn)
                        .await
                        .optional()
                })
                .await
                .map_err(|f| f.classify(OP))?;
            row.map(|r| r.into_credentials(OP).map(|c| c.user)).transpose()
        }

        /// An account by email, case-insensitively (served by the
        /// `lower(email)` unique index); only if not disabled when
        /// `active_only`.
        pub async fn select_by_email(
            &self,
            operation: &'static str,
            email: &Email,
            active_only: bool,
        ) -> Result<Option<UserCredentials>, DependencyError> {
            let row = self
                .read(operation, async |conn| {
                    let mut query = users::table
                        .filter(lower_text(users::email).eq(email.as_str()))
                        .select(UserRow::as_select())
                        .into_boxed();
                    if active_only {
                        query = query.filter(not(exists(
                            user_blocks::table.filter(user_blocks::user_id.eq(users::user_id)),
                        )));
                    }
                    query.first(conn).await.optional()
                })
                .await
                .map_err(|f| f.classify(operation))?;
            row.map(|r| r.into_credentials(operation)).transpose()
        }

        /// Disables (or enables again) an account: a disabled one cannot
        /// log in and is not found by lookups.
        pub async fn set_disabled(
            &self,
            id: UserId,
            disabled: bool,
        ) -> Result<(), DependencyError> {
            const OP: &str = "set_disabled";
            let id = db_id(id);
            self.write(OP, async |conn| {
                if disabled {
                    diesel::insert_into(user_blocks::table)
                        .values(user_blocks::user_id.eq(&id))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await
                } else {
                    diesel::delete(user_blocks::table.find(&id)).execute(conn).await
                }
            })
            .await
            .map(drop)
            .map_err(|f| f.classify(OP))
        }

        /// Replaces a password hash only if it is still `old`, so a rehash
        /// racing a password change never undoes the change. Returns
        /// whether it replaced.
        pub async fn replace_password_hash(
            &self,
            id: UserId,
            old: &PasswordHash,
            new: &PasswordHash,
        ) -> Result<bool, DependencyError> {
            const OP: &str = "replace_password_hash";
            let id = db_id(id);
            self.write(OP, async |conn| {
                diesel::update(
                    users::table
                        .filter(users::user_id.eq(&id))
                        .filter(users::password.eq(old.expose())),
                )
                .set(users::password.eq(new.expose()))
                .execute(conn)
                .await
            })
            .await
            .map(|n| n == 1)
            .map_err(|f| f.classify(OP))
        }

        /// Makes the account with this email an admin; `None` if there is
        /// none.
        pub async fn promote_to_admin(
            &self,
            email: &Email,
        ) -> Result<Option<User>, DependencyError> {
            const OP: &str = "promote_to_admin";
            let row = self
                .write(OP, async |conn| {
                    diesel::update(users::table.filter(lower_text(users::email).eq(email.as_str())))
                        .set(users::role.eq(ADMIN))
                        .returning(UserRow::as_returning())
                        .get_result(conn)
                        .await
                        .optional()
                })
                .await
                .map_err(|f| f.classify(OP))?;
            row.map(|r| r.into_credentials(OP).map(|c| c.user)).transpose()
        }

        /// A round trip proving the database answers and the schema is in
        /// place.
        pub async fn ping(&self) -> Result<(), DependencyError> {
            self.read("ping", async |conn| {
                users::table.select(users::user_id).limit(0).load::<DbId>(conn).await
            })
            .await
            .map(drop)
            .map_err(|f| f.classify("ping"))
        }
    };
}
pub(super) use user_statements;

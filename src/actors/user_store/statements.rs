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

//! The service's error type.
//!
//! Policy:
//! - Every fallible use case returns [`AuthError`]; lower layers wrap their
//!   failures with context (which dependency, which operation) on the way up.
//! - Errors are *classified* here: the caller's fault (invalid input, bad
//!   credentials, missing session), load (throttled, overloaded), outage
//!   (a dependency or actor unavailable), or a bug (internal).
//! - They become a `tonic::Status` in exactly one place,
//!   `grpc::status::to_status`, which is also the only place they are logged.
//! - The caller's deadline is not an error of a use case: the RPC layer
//!   (`grpc::layers`) abandons the work and answers DEADLINE_EXCEEDED.

use std::{fmt, time::Duration};

use crate::domain::InvalidInput;

/// A backing service (or embedded store) the user store or the session
/// store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    Postgres,
    Redis,
    /// The embedded user database.
    Sqlite,
    /// The embedded session store's in-actor state.
    Memory,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Sqlite => "sqlite",
            Self::Memory => "memory",
        })
    }
}

/// What a dependency failure says about the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Unreachable or failing (connection refused, schema not migrated yet):
    /// retrying later can help. UNAVAILABLE, and it counts towards the
    /// store's circuit breaker and restart.
    Outage,
    /// The dependency answers, but this replica has no capacity to wait for
    /// it now (every pooled connection busy past the checkout timeout): our
    /// own overload, not the dependency's. RESOURCE_EXHAUSTED, and never
    /// counted as an outage.
    Busy,
    /// The dependency refused the statement: a bug. INTERNAL.
    Rejected,
}

/// A dependency failed during one operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{dependency} {operation}: {detail}")]
pub struct DependencyError {
    pub dependency: Dependency,
    /// Low-cardinality name of what was attempted (`find_user_by_email`).
    pub operation: &'static str,
    pub kind: FailureKind,
    pub detail: String,
}

impl DependencyError {
    fn new(
        kind: FailureKind,
        dependency: Dependency,
        operation: &'static str,
        detail: impl fmt::Display,
    ) -> Self {
        Self { dependency, operation, kind, detail: detail.to_string() }
    }

    pub fn outage(
        dependency: Dependency,
        operation: &'static str,
        detail: impl fmt::Display,
    ) -> Self {
        Self::new(FailureKind::Outage, dependency, operation, detail)
    }

    pub fn busy(
        dependency: Dependency,
        operation: &'static str,
        detail: impl fmt::Display,
    ) -> Self {
        Self::new(FailureKind::Busy, dependency, operation, detail)
    }

    pub fn rejected(
        dependency: Dependency,
        operation: &'static str,
        detail: impl fmt::Display,
    ) -> Self {
        Self::new(FailureKind::Rejected, dependency, operation, detail)
    }

    pub fn is_outage(&self) -> bool {
        self.kind == FailureKind::Outage
    }
}

/// Errors that may mean the dependency is down: they count towards a
/// store's circuit breaker and restart.
pub trait Outage {
    fn is_outage(&self) -> bool;
}

impl Outage for DependencyError {
    fn is_outage(&self) -> bool {
        self.kind == FailureKind::Outage
    }
}

/// Inserting a new account failed.
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

impl From<CreateUserError> for AuthError {
    fn from(err: CreateUserError) -> Self {
        match err {
            CreateUserError::EmailTaken => Self::EmailTaken,
            CreateUserError::Dependency(e) => Self::Dependency(e),
        }
    }
}

/// Why a message could not be delivered to an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{0} mailbox is full")]
    Overloaded(&'static str),
    #[error("{0} is not running")]
    Stopped(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid {0}")]
    InvalidInput(#[from] InvalidInput),
    #[error("email is already registered")]
    EmailTaken,
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("missing, unknown or expired session")]
    Unauthenticated,
    /// Unknown email and wrong password alike: one message, one code.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("user not found")]
    UserNotFound,
    /// No session of the caller has this handle.
    #[error("no such session")]
    SessionNotFound,
    /// The current password given to change it does not match.
    #[error("the old password does not match")]
    WrongPassword,
    /// The request cannot apply to the account as it is.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    #[error("too many failed logins for this account; retry in {}s", retry_after.as_secs())]
    LoginThrottled { retry_after: Duration },
    #[error(transparent)]
    Actor(#[from] CallError),
    #[error(transparent)]
    Dependency(#[from] DependencyError),
    /// A bug or corrupt data: nothing the caller or a retry can fix.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn internal(context: &str, err: impl fmt::Display) -> Self {
        Self::Internal(format!("{context}: {err}"))
    }
}

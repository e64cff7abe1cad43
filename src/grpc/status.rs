//! The one place an [`AuthError`] becomes a `tonic::Status`, and the one
//! place it is logged. The match has no catch-all arm: a new error variant
//! does not compile until someone decides its code.

use tonic::{Code, Status, metadata::MetadataValue};

use crate::error::{AuthError, CallError, FailureKind};

pub fn to_status(err: AuthError) -> Status {
    let (code, message) = match &err {
        AuthError::InvalidInput(invalid) => (Code::InvalidArgument, invalid.to_string()),
        AuthError::EmailTaken => (Code::AlreadyExists, err.to_string()),
        AuthError::PermissionDenied(why) => (Code::PermissionDenied, (*why).to_owned()),
        AuthError::Unauthenticated | AuthError::InvalidCredentials => {
            (Code::Unauthenticated, err.to_string())
        }
        AuthError::UserNotFound => (Code::NotFound, err.to_string()),
        AuthError::LoginThrottled { .. } => (Code::ResourceExhausted, err.to_string()),
        AuthError::Actor(CallError::Overloaded(_)) => {
            (Code::ResourceExhausted, "server busy; retry shortly".to_owned())
        }
        AuthError::Actor(CallError::Stopped(_)) => {
            (Code::Unavailable, "service restarting; retry shortly".to_owned())
        }
        AuthError::Dependency(e) => match e.kind {
            FailureKind::Outage => {
                (Code::Unavailable, format!("{} unavailable; retry shortly", e.dependency))
            }
            FailureKind::Busy => (Code::ResourceExhausted, "server busy; retry shortly".to_owned()),
            FailureKind::Rejected => (Code::Internal, "internal error".to_owned()),
        },
        AuthError::Internal(_) => (Code::Internal, "internal error".to_owned()),
    };

    // Client mistakes are routine: debug. Load and outages: warn. Bugs: error.
    // Details (dependency errors) stay in the log, not in the response.
    match code {
        Code::Internal => tracing::error!(error = %err, "request failed"),
        Code::Unavailable | Code::ResourceExhausted => {
            tracing::warn!(error = %err, code = ?code, "request refused")
        }
        _ => tracing::debug!(error = %err, code = ?code, "request rejected"),
    }

    let mut status = Status::new(code, message);
    let retry_after = match &err {
        AuthError::LoginThrottled { retry_after } => Some(retry_after.as_secs().max(1)),
        AuthError::Actor(CallError::Overloaded(_)) => Some(1),
        AuthError::Dependency(e) if e.kind == FailureKind::Busy => Some(1),
        _ => None,
    };
    if let Some(secs) = retry_after {
        status.metadata_mut().insert("retry-after", MetadataValue::from(secs));
    }
    status
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        domain::InvalidInput,
        error::{Dependency, DependencyError},
    };

    #[test]
    fn maps_every_class_to_its_code() {
        let cases = [
            (AuthError::InvalidInput(InvalidInput::new("email", "bad")), Code::InvalidArgument),
            (AuthError::EmailTaken, Code::AlreadyExists),
            (AuthError::PermissionDenied("no"), Code::PermissionDenied),
            (AuthError::Unauthenticated, Code::Unauthenticated),
            (AuthError::InvalidCredentials, Code::Unauthenticated),
            (AuthError::UserNotFound, Code::NotFound),
            (
                AuthError::LoginThrottled { retry_after: Duration::from_secs(9) },
                Code::ResourceExhausted,
            ),
            (AuthError::Actor(CallError::Overloaded("PasswordHasher")), Code::ResourceExhausted),
            (AuthError::Actor(CallError::Stopped("UserStore")), Code::Unavailable),
            (
                AuthError::Dependency(DependencyError::outage(Dependency::Redis, "get", "refused")),
                Code::Unavailable,
            ),
            (
                AuthError::Dependency(DependencyError::busy(Dependency::Postgres, "q", "pool")),
                Code::ResourceExhausted,
            ),
            (
                AuthError::Dependency(DependencyError::rejected(Dependency::Postgres, "q", "bad")),
                Code::Internal,
            ),
            (AuthError::Internal("x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let shown = format!("{err:?}");
            assert_eq!(to_status(err).code(), code, "{shown}");
        }
    }

    #[test]
    fn invalid_input_names_the_field() {
        let status =
            to_status(AuthError::InvalidInput(InvalidInput::new("first_name", "is required")));
        assert!(status.message().contains("first_name"), "{}", status.message());
    }

    #[test]
    fn throttling_carries_retry_after() {
        let status = to_status(AuthError::LoginThrottled { retry_after: Duration::from_secs(42) });
        assert_eq!(status.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("42"));
    }

    #[test]
    fn outages_do_not_leak_details() {
        let err = DependencyError::outage(
            Dependency::Postgres,
            "q",
            "password authentication failed for user x",
        );
        let status = to_status(AuthError::Dependency(err));
        assert!(!status.message().contains("password"), "{}", status.message());
    }
}

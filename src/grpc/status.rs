//! The one place an [`AuthError`] becomes a `tonic::Status`, and the one
//! place it is logged. The match has no catch-all arm: a new error variant
//! does not compile until someone decides its code.

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use tonic::{Code, Status, metadata::MetadataValue};

use crate::error::{AuthError, CallError, FailureKind};

/// Lets one log line a second through and counts the rest.
struct LogThrottle {
    /// Seconds since [`EPOCH`] of the last line let through, plus one.
    last: AtomicU64,
    suppressed: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static UNAVAILABLE_LOG: LogThrottle = LogThrottle::new();
static EXHAUSTED_LOG: LogThrottle = LogThrottle::new();

impl LogThrottle {
    const fn new() -> Self {
        Self { last: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(lines suppressed since the last one)` when this one may go.
    fn admit(&self) -> Option<u64> {
        let now = EPOCH.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != now
            && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

pub fn to_status(err: AuthError) -> Status {
    let (code, message) = match &err {
        AuthError::InvalidInput(invalid) => (Code::InvalidArgument, invalid.to_string()),
        AuthError::EmailTaken => (Code::AlreadyExists, err.to_string()),
        AuthError::PermissionDenied(why) => (Code::PermissionDenied, (*why).to_owned()),
        AuthError::Unauthenticated | AuthError::InvalidCredentials => {
            (Code::Unauthenticated, err.to_string())
        }
        AuthError::UserNotFound | AuthError::SessionNotFound => (Code::NotFound, err.to_string()),
        AuthError::WrongPassword => (Code::PermissionDenied, err.to_string()),
        AuthError::FailedPrecondition(why) => (Code::FailedPrecondition, (*why).to_owned()),
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

    // Client mistakes are routine: debug. Load and outages: warn, at most
    // once a second per code (a flood or an outage refuses thousands of
    // requests a second; a line each would cost more than the refusals and
    // bury everything else; metrics count them all). Bugs: error, always.
    // Details (dependency errors) stay in the log, not in the response.
    match code {
        Code::Internal => tracing::error!(error = %err, "request failed"),
        Code::Unavailable => {
            if let Some(suppressed) = UNAVAILABLE_LOG.admit() {
                tracing::warn!(error = %err, code = ?code, suppressed, "request refused");
            }
        }
        Code::ResourceExhausted => {
            if let Some(suppressed) = EXHAUSTED_LOG.admit() {
                tracing::warn!(error = %err, code = ?code, suppressed, "request refused");
            }
        }
        _ => tracing::debug!(error = %err, code = ?code, "request rejected"),
    }

    let mut status = Status::new(code, message);
    let retry_after = match &err {
        AuthError::LoginThrottled { retry_after } => Some(retry_after.as_secs().max(1)),
        AuthError::Actor(_) => Some(1),
        AuthError::Dependency(e) if e.kind != FailureKind::Rejected => Some(1),
        _ => None,
    };
    if let Some(secs) = retry_after {
        // `retry-after` for people and proxies; gRPC clients with a retry
        // policy wait `grpc-retry-pushback-ms` (gRFC A6) before retrying.
        status.metadata_mut().insert("retry-after", MetadataValue::from(secs));
        status.metadata_mut().insert("grpc-retry-pushback-ms", MetadataValue::from(secs * 1000));
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
    fn refusal_logs_are_throttled_to_one_a_second() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.admit(), None);
        }
        // A second later the next line goes, counting what was held back.
        throttle.last.store(0, Ordering::Relaxed);
        assert_eq!(throttle.admit(), Some(5));
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
    fn unavailable_answers_tell_clients_when_to_retry() {
        let outage = DependencyError::outage(Dependency::Redis, "get_session", "refused");
        for status in [
            to_status(AuthError::Dependency(outage)),
            to_status(AuthError::Actor(CallError::Stopped("SessionStore"))),
        ] {
            assert_eq!(status.code(), Code::Unavailable);
            let header = |name| status.metadata().get(name).and_then(|v| v.to_str().ok());
            assert_eq!(header("retry-after"), Some("1"));
            assert_eq!(header("grpc-retry-pushback-ms"), Some("1000"));
        }
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

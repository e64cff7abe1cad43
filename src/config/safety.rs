//! What the production layer refuses: settings that are right on a laptop
//! and lose data or leak in production. Each refusal names its key; an
//! operator who really means one lists the key in `unsafe.allow`
//! (`AUTH__UNSAFE__ALLOW=postgres.url,log.filter`), and the start logs it.

use super::{RedisMode, Settings, StorageBackend};

/// The built-in default URLs: samples for a laptop, never a deployment's.
pub const SAMPLE_POSTGRES_URL: &str = "postgres://postgres:postgres@localhost:5432/auth_db";
pub const SAMPLE_REDIS_URL: &str = "redis://localhost:6379/0";
/// The sample credentials (docker-compose's, the default URL's).
const SAMPLE_CREDENTIALS: &str = "postgres:postgres";
/// The crate's own log target: debug logs of it carry request detail.
const OWN_TARGET: &str = "auth_service";

/// Keys the production layer may refuse, so the ones `unsafe.allow` may name.
pub const REFUSABLE: &[&str] = &[
    "storage.backend",
    "postgres.url",
    "postgres.migration_url",
    "redis.url",
    "lookup.public",
    "log.filter",
];

/// One unsafe setting: its key and why it is unsafe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: &'static str,
    pub reason: String,
}

/// The production layer's verdict on a set of settings.
#[derive(Debug, Default)]
pub struct Review {
    /// Unsafe and not allowed: the start stops.
    pub refused: Vec<Refusal>,
    /// Unsafe, allowed by `unsafe.allow`: the start logs each.
    pub allowed: Vec<Refusal>,
    /// Allowed without naming, but worth a warning.
    pub warnings: Vec<String>,
}

/// Reviews `settings` for production; outside it nothing is refused.
pub fn review(settings: &Settings, production: bool) -> Review {
    let mut review = Review::default();
    if !production {
        return review;
    }
    for refusal in unsafe_settings(settings) {
        if settings.r#unsafe.allow.iter().any(|k| k == refusal.key) {
            review.allowed.push(refusal);
        } else {
            review.refused.push(refusal);
        }
    }
    if !settings.grpc.tls.enabled() {
        review.warnings.push(
            "gRPC is served in plaintext (no grpc.tls.cert_file): passwords and session ids \
             cross the network in the clear unless a mesh or a TLS-terminating proxy wraps the \
             port"
                .into(),
        );
    }
    review
}

fn unsafe_settings(s: &Settings) -> Vec<Refusal> {
    let mut found = Vec::new();
    let mut refuse = |key, reason: &str| found.push(Refusal { key, reason: reason.to_owned() });
    if s.storage.backend == StorageBackend::Embedded {
        refuse(
            "storage.backend",
            "embedded storage keeps users in a local SQLite file and sessions in this process: \
             each replica has its own, and sessions end with it",
        );
    }
    if s.storage.backend == StorageBackend::External {
        for (key, url) in [
            ("postgres.url", s.postgres.url.expose()),
            ("postgres.migration_url", s.postgres.migration_url.expose()),
        ] {
            if url == SAMPLE_POSTGRES_URL {
                refuse(key, "the built-in sample URL");
            } else if credentials(url) == Some(SAMPLE_CREDENTIALS) {
                refuse(key, "the sample credentials postgres:postgres");
            }
        }
        if s.redis.mode == RedisMode::Standalone && s.redis.url.expose() == SAMPLE_REDIS_URL {
            refuse("redis.url", "the built-in sample URL");
        }
    }
    if s.lookup.public && s.lookup.allowed_peers.is_empty() {
        refuse(
            "lookup.public",
            "lookups without a session let anyone who reaches the port test whether an email is \
             registered, and no peer allowlist (lookup.allowed_peers) restricts them",
        );
    }
    if verbose_for_own_modules(&s.log.filter) {
        refuse(
            "log.filter",
            "debug or trace logging of the service's own modules writes request detail to the logs",
        );
    }
    found
}

/// The `user:password` of a URL, if it has both.
fn credentials(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.contains(':').then_some(userinfo)
}

/// Whether an `EnvFilter` directive list enables debug or trace for any of
/// the crate's modules: a directive for one of them, or the most specific
/// directive that covers the whole crate (the global level included).
/// Targets match by prefix, as `EnvFilter`'s do.
pub(super) fn verbose_for_own_modules(filter: &str) -> bool {
    let mut covering: Option<(usize, bool)> = None;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (target, level),
            None if is_level(directive) => ("", directive),
            // A bare target enables every level of it.
            None => (directive, "trace"),
        };
        // `target[span{field=value}]`: the span part narrows, it does not widen.
        let target = target.split('[').next().unwrap_or_default().trim();
        let verbose =
            matches!(level.trim().to_ascii_lowercase().as_str(), "debug" | "trace" | "4" | "5");
        if target.len() > OWN_TARGET.len() && target.starts_with(OWN_TARGET) && verbose {
            return true;
        }
        if OWN_TARGET.starts_with(target) && covering.is_none_or(|(len, _)| target.len() >= len) {
            covering = Some((target.len(), verbose));
        }
    }
    covering.is_some_and(|(_, verbose)| verbose)
}

fn is_level(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "trace" | "debug" | "info" | "warn" | "error" | "off" | "0" | "1" | "2" | "3" | "4" | "5"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_filters_are_those_that_reach_our_modules() {
        for verbose in [
            "debug",
            "TRACE",
            "info,auth_service=debug",
            "auth_service::grpc=trace",
            "warn,auth_service",
            "auth=debug",
            "info,[grpc.get_me]=debug",
            "auth_service=info,auth_service::actors=debug",
        ] {
            assert!(verbose_for_own_modules(verbose), "{verbose}");
        }
        for quiet in [
            "info",
            "warn,h2=debug,tower=trace",
            "debug,auth_service=info",
            "auth_service=warn",
            "",
            "error,authz=debug",
        ] {
            assert!(!verbose_for_own_modules(quiet), "{quiet}");
        }
    }

    #[test]
    fn credentials_are_read_from_the_authority_only() {
        assert_eq!(credentials("postgres://postgres:postgres@db/x"), Some("postgres:postgres"));
        assert_eq!(credentials("postgres://auth@db/x"), None);
        assert_eq!(credentials("postgres://db/x?user=a@b:c"), None);
        assert_eq!(credentials("redis://:pw@r:6379/0"), Some(":pw"));
    }
}

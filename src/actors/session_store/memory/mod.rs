//! `MemorySessions`: the embedded backend of the session store (behind
//! [`MemorySessionRepository`], the Redis repository's API). Sessions,
//! the user cache and the login-attempt counters as plain state, owned by
//! the one `SessionStore` instance that runs in embedded mode (so every
//! worker sees the same sessions), with the Redis backend's TTL semantics.
//!
//! Each kind of entry is bounded (`storage.max_entries`): past the bound the
//! entry closest to expiry goes first. Expired entries are invisible at once
//! and freed by [`MemorySessions::sweep`], which the actor runs on a timer.
//! Nothing survives a restart of the process.

mod expiring;
mod repository;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use expiring::Expiring;
pub use repository::MemorySessionRepository;

use super::{
    throttle::{Counters, Gate, LoginKey, Outcome},
    types::{
        CachedLookup, ResolvedSession, SEEN_RESOLUTION, SessionInfo, SessionOrigin, SessionPolicy,
        UserKey, unix_now,
    },
};
use crate::domain::{Email, SessionId, User, UserId};

#[derive(Debug, Clone)]
struct Session {
    user_id: UserId,
    /// The session's copy of its user, and until when it may be served.
    user: Option<(User, Instant)>,
    /// Unix seconds.
    created: u64,
    /// Unix seconds, to [`SEEN_RESOLUTION`].
    seen: u64,
    origin: SessionOrigin,
}

/// A cached user's lookup key: by id, or by the email's storage key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Id(UserId),
    Email(String),
}

impl From<&UserKey> for CacheKey {
    fn from(key: &UserKey) -> Self {
        match key {
            UserKey::Id(id) => Self::Id(*id),
            UserKey::Email(email) => Self::Email(email.storage_key()),
        }
    }
}

/// Entry counts, for tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub sessions: usize,
    pub cached_users: usize,
    pub login_counters: usize,
}

#[derive(Debug)]
pub struct MemorySessions {
    policy: SessionPolicy,
    /// By digest of the session id, as in Redis: the id itself is never kept.
    sessions: Expiring<String, Session>,
    /// Digests of each user's sessions, so a change to the user reaches
    /// every session's copy.
    by_user: HashMap<UserId, HashSet<String>>,
    users: Expiring<CacheKey, User>,
    /// The login throttle's counters (see `throttle`): per (account digest,
    /// address) failures and attempts in flight; per address and per
    /// account failures.
    login_pairs: Expiring<(String, String), Pair>,
    login_addresses: Expiring<String, u32>,
    login_accounts: Expiring<String, u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    failures: u32,
    in_flight: u32,
}

impl MemorySessions {
    pub fn new(policy: SessionPolicy, max_entries: usize) -> Self {
        Self {
            policy,
            sessions: Expiring::new(max_entries),
            by_user: HashMap::new(),
            users: Expiring::new(max_entries),
            login_pairs: Expiring::new(max_entries),
            login_addresses: Expiring::new(max_entries),
            login_accounts: Expiring::new(max_entries),
        }
    }

    #[cfg(test)]
    pub fn usage(&self) -> MemoryUsage {
        MemoryUsage {
            sessions: self.sessions.len(),
            cached_users: self.users.len(),
            login_counters: self.login_pairs.len()
                + self.login_addresses.len()
                + self.login_accounts.len(),
        }
    }

    pub fn create_session(
        &mut self,
        user: &User,
        origin: &SessionOrigin,
        now: Instant,
    ) -> Result<SessionId, String> {
        let id = SessionId::generate().map_err(|e| format!("rng: {e}"))?;
        let digest = id.storage_key();
        let session = Session {
            user_id: user.id,
            user: Some((user.clone(), now + self.policy.user_cache_ttl)),
            created: unix_now(),
            seen: unix_now(),
            origin: origin.clone(),
        };
        self.by_user.entry(user.id).or_default().insert(digest.clone());
        let evicted = self.sessions.insert(digest, session, now + self.policy.session_ttl);
        self.unindex(evicted);
        Ok(id)
    }

    /// The session, if live; records its use.
    pub fn resolve_session(&mut self, id: &SessionId, now: Instant) -> Option<ResolvedSession> {
        let session = self.sessions.get_mut(&id.storage_key(), now)?;
        let unix = unix_now();
        if unix.saturating_sub(session.seen) >= SEEN_RESOLUTION.as_secs() {
            session.seen = unix;
        }
        Some(ResolvedSession {
            user_id: session.user_id,
            cached_user: session
                .user
                .as_ref()
                .filter(|(_, until)| *until > now)
                .map(|(user, _)| user.clone()),
        })
    }

    pub fn refresh_session_user(&mut self, id: &SessionId, user: &User, now: Instant) {
        let until = now + self.policy.user_cache_ttl;
        if let Some(session) = self.sessions.get_mut(&id.storage_key(), now)
            && session.user_id == user.id
        {
            session.user = Some((user.clone(), until));
        }
    }

    /// `true` if a live session was ended.
    pub fn delete_session(&mut self, id: &SessionId, now: Instant) -> bool {
        let digest = id.storage_key();
        let live = self.sessions.get(&digest, now).is_some();
        if let Some(session) = self.sessions.remove(&digest) {
            self.unindex([(digest, session)]);
        }
        live
    }

    pub fn look_up(
        &mut self,
        session: Option<&SessionId>,
        user: &UserKey,
        now: Instant,
    ) -> CachedLookup {
        CachedLookup {
            session: session.and_then(|id| self.resolve_session(id, now)),
            user: self.users.get(&CacheKey::from(user), now).cloned(),
        }
    }

    pub fn cache_user(&mut self, user: &User, now: Instant) {
        let expires = now + self.policy.user_cache_ttl;
        self.users.insert(CacheKey::Id(user.id), user.clone(), expires);
        // Only an address the service accepts can be looked up.
        if let Ok(email) = Email::parse(&user.email, "email") {
            self.users.insert(CacheKey::Email(email.storage_key()), user.clone(), expires);
        }
    }

    /// Drops every cached copy of the user: the lookup cache and the copy in
    /// each of its sessions.
    pub fn invalidate_user(&mut self, user: &User, now: Instant) {
        self.users.remove(&CacheKey::Id(user.id));
        if let Ok(email) = Email::parse(&user.email, "email") {
            self.users.remove(&CacheKey::Email(email.storage_key()));
        }
        for digest in self.by_user.get(&user.id).into_iter().flatten() {
            if let Some(session) = self.sessions.get_mut(digest, now) {
                session.user = None;
            }
        }
    }

    /// The user's live sessions, oldest first.
    pub fn list_sessions(&self, user: UserId, now: Instant) -> Vec<SessionInfo> {
        let mut sessions: Vec<SessionInfo> = self
            .by_user
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|digest| {
                let session = self.sessions.get(digest, now)?;
                Some(SessionInfo {
                    handle: digest.clone(),
                    created: session.created,
                    last_seen: session.seen,
                    origin: session.origin.clone(),
                })
            })
            .collect();
        sessions.sort_by_key(|s| s.created);
        sessions
    }

    /// Ends the user's session named `handle`; `false` if the user has no
    /// such live session.
    pub fn end_user_session(&mut self, user: UserId, handle: &str, now: Instant) -> bool {
        let handle = handle.to_owned();
        let owned = self.sessions.get(&handle, now).is_some_and(|s| s.user_id == user);
        if owned && let Some(session) = self.sessions.remove(&handle) {
            self.unindex([(handle, session)]);
        }
        owned
    }

    /// Ends every session of the user but `keep`; how many live ones ended.
    pub fn end_user_sessions(
        &mut self,
        user: UserId,
        keep: Option<&SessionId>,
        now: Instant,
    ) -> u32 {
        let kept = keep.map(SessionId::storage_key);
        let doomed: Vec<String> = self
            .by_user
            .get(&user)
            .into_iter()
            .flatten()
            .filter(|digest| Some(digest.as_str()) != kept.as_deref())
            .cloned()
            .collect();
        let mut ended = 0;
        for digest in doomed {
            if self.sessions.get(&digest, now).is_some() {
                ended += 1;
            }
            if let Some(session) = self.sessions.remove(&digest) {
                self.unindex([(digest, session)]);
            }
        }
        ended
    }

    /// Whether this attempt may check a password now; reserves it if so.
    pub fn reserve_login_attempt(&mut self, key: &LoginKey, now: Instant) -> Gate {
        let policy = self.policy.throttle;
        let pair_key = (key.email.storage_key(), key.address_part().to_owned());
        let address = key.address_part().to_owned();
        let account = key.email.storage_key();
        let pair = self.login_pairs.get(&pair_key, now).copied().unwrap_or_default();
        let counters = Counters {
            pair_failures: pair.failures,
            pair_in_flight: pair.in_flight,
            address_failures: self.login_addresses.get(&address, now).copied().unwrap_or(0),
            account_failures: self.login_accounts.get(&account, now).copied().unwrap_or(0),
        };
        let left = |expires: Option<Instant>| expires.map_or(Duration::ZERO, |e| e - now);
        let pair_ttl = left(self.login_pairs.expires(&pair_key, now));
        let address_ttl = left(self.login_addresses.expires(&address, now));
        let gate = policy.decide(counters, pair_ttl, address_ttl);
        if let Gate::Pass { .. } = gate {
            match self.login_pairs.get_mut(&pair_key, now) {
                Some(pair) => pair.in_flight += 1,
                None => {
                    let reserved = Pair { failures: 0, in_flight: 1 };
                    self.login_pairs.insert(pair_key, reserved, now + policy.window);
                }
            }
        }
        gate
    }

    /// Settles a reserved attempt, as the Redis backend does.
    pub fn finish_login_attempt(&mut self, key: &LoginKey, outcome: Outcome, now: Instant) {
        let window = self.policy.throttle.window;
        let pair_key = (key.email.storage_key(), key.address_part().to_owned());
        if let Some(pair) = self.login_pairs.get_mut(&pair_key, now) {
            pair.in_flight = pair.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Failed => pair.failures += 1,
                Outcome::Succeeded => pair.failures = 0,
                Outcome::Abandoned => {}
            }
        } else if outcome == Outcome::Failed {
            let failed = Pair { failures: 1, in_flight: 0 };
            self.login_pairs.insert(pair_key, failed, now + window);
        }
        let account = key.email.storage_key();
        match outcome {
            Outcome::Failed => {
                for (counters, counter) in [
                    (&mut self.login_addresses, key.address_part().to_owned()),
                    (&mut self.login_accounts, account),
                ] {
                    match counters.get_mut(&counter, now) {
                        Some(failures) => *failures += 1,
                        None => drop(counters.insert(counter, 1, now + window)),
                    }
                }
            }
            Outcome::Succeeded => drop(self.login_accounts.remove(&account)),
            Outcome::Abandoned => {}
        }
    }

    /// Frees everything expired at `now`.
    pub fn sweep(&mut self, now: Instant) {
        let expired = self.sessions.sweep(now);
        self.unindex(expired);
        self.users.sweep(now);
        self.login_pairs.sweep(now);
        self.login_addresses.sweep(now);
        self.login_accounts.sweep(now);
    }

    fn unindex(&mut self, ended: impl IntoIterator<Item = (String, Session)>) {
        for (digest, session) in ended {
            if let Some(digests) = self.by_user.get_mut(&session.user_id) {
                digests.remove(&digest);
                if digests.is_empty() {
                    self.by_user.remove(&session.user_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::Role;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            session_ttl: Duration::from_secs(3600),
            user_cache_ttl: Duration::from_secs(300),
            throttle: super::super::throttle::ThrottlePolicy {
                pair_max: 3,
                address_max: 50,
                account_delay_after: 20,
                account_delay_step: Duration::from_millis(250),
                account_delay_max: Duration::from_secs(5),
                window: Duration::from_secs(900),
            },
        }
    }

    fn user(email: &str) -> User {
        User {
            id: UserId::new_random(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: email.into(),
            role: Role::User,
            avatar: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn email(s: &str) -> Email {
        Email::parse(s, "email").expect("valid email")
    }

    #[test]
    fn a_session_resolves_until_its_ttl_and_its_user_copy_until_the_cache_ttl() {
        let mut m = MemorySessions::new(policy(), 100);
        let now = Instant::now();
        let ada = user("ada@example.com");
        let id = m.create_session(&ada, &SessionOrigin::default(), now).expect("session");
        let fresh = m.resolve_session(&id, now).expect("live");
        assert_eq!(fresh.user_id, ada.id);
        assert_eq!(fresh.cached_user.map(|u| u.id), Some(ada.id));
        let later = m.resolve_session(&id, now + Duration::from_secs(301)).expect("still live");
        assert!(later.cached_user.is_none(), "the copy is stale after the cache TTL");
        assert!(m.resolve_session(&id, now + Duration::from_secs(3600)).is_none(), "expired");
    }

    #[test]
    fn deleting_ends_a_session_once() {
        let mut m = MemorySessions::new(policy(), 100);
        let now = Instant::now();
        let id = m
            .create_session(&user("a@example.com"), &SessionOrigin::default(), now)
            .expect("session");
        assert!(m.delete_session(&id, now));
        assert!(!m.delete_session(&id, now));
        assert!(m.resolve_session(&id, now).is_none());
        assert!(m.by_user.is_empty(), "the index forgets ended sessions");
    }

    #[test]
    fn invalidating_a_user_drops_the_cache_and_every_session_copy() {
        let mut m = MemorySessions::new(policy(), 100);
        let now = Instant::now();
        let ada = user("ada@example.com");
        let sessions: Vec<_> = (0..3)
            .map(|_| m.create_session(&ada, &SessionOrigin::default(), now).expect("s"))
            .collect();
        m.cache_user(&ada, now);
        let by_email = UserKey::Email(email("ADA@example.com"));
        assert!(m.look_up(None, &by_email, now).user.is_some(), "cached by canonical email");
        m.invalidate_user(&ada, now);
        assert!(m.look_up(None, &UserKey::Id(ada.id), now).user.is_none());
        assert!(m.look_up(None, &by_email, now).user.is_none());
        for id in &sessions {
            let s = m.resolve_session(id, now).expect("the session itself stays");
            assert!(s.cached_user.is_none());
        }
    }

    #[test]
    fn past_the_bound_the_entry_closest_to_expiry_goes_first() {
        let mut m = MemorySessions::new(policy(), 2);
        let now = Instant::now();
        let first =
            m.create_session(&user("a@example.com"), &SessionOrigin::default(), now).expect("s");
        let second = m.create_session(
            &user("b@example.com"),
            &SessionOrigin::default(),
            now + Duration::from_secs(1),
        );
        let third = m.create_session(
            &user("c@example.com"),
            &SessionOrigin::default(),
            now + Duration::from_secs(2),
        );
        assert_eq!(m.usage().sessions, 2);
        assert!(m.resolve_session(&first, now).is_none(), "the oldest was evicted");
        for id in [second, third] {
            assert!(m.resolve_session(&id.expect("s"), now).is_some());
        }
        assert_eq!(m.by_user.len(), 2, "the index follows evictions");
    }

    #[test]
    fn a_users_sessions_are_listed_and_ended_by_handle() {
        let mut m = MemorySessions::new(policy(), 100);
        let now = Instant::now();
        let (ada, bob) = (user("ada@example.com"), user("bob@example.com"));
        let origin = SessionOrigin { client_address: "10.0.0.1".into(), user_agent: "x".into() };
        let ids: Vec<_> =
            (0..3).map(|_| m.create_session(&ada, &origin, now).expect("session")).collect();
        let bobs = m.create_session(&bob, &origin, now).expect("session");
        let listed = m.list_sessions(ada.id, now);
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|s| s.origin == origin));
        let kept = ids[2].storage_key();
        let handle = &listed.iter().find(|s| s.handle != kept).expect("another").handle;
        assert!(!m.end_user_session(bob.id, handle, now), "not bob's");
        assert!(m.end_user_session(ada.id, handle, now));
        assert_eq!(m.end_user_sessions(ada.id, Some(&ids[2]), now), 1, "all but the kept one");
        assert!(m.resolve_session(&ids[2], now).is_some());
        assert!(m.resolve_session(&bobs, now).is_some(), "other users untouched");
        assert_eq!(m.end_user_sessions(ada.id, None, now), 1);
        assert!(m.list_sessions(ada.id, now).is_empty());
    }

    #[test]
    fn the_sweep_frees_expired_entries() {
        let mut m = MemorySessions::new(policy(), 100);
        let now = Instant::now();
        let ada = user("ada@example.com");
        m.create_session(&ada, &SessionOrigin::default(), now).expect("s");
        m.cache_user(&ada, now);
        let key = from("ada@example.com", "192.0.2.1");
        m.reserve_login_attempt(&key, now);
        m.finish_login_attempt(&key, Outcome::Failed, now);
        m.sweep(now + Duration::from_secs(3600));
        assert_eq!(m.usage(), MemoryUsage { sessions: 0, cached_users: 0, login_counters: 0 });
        assert!(m.by_user.is_empty());
    }

    fn from(email: &str, address: &str) -> LoginKey {
        LoginKey { email: self::email(email), address: address.into() }
    }

    #[test]
    fn failures_from_one_address_throttle_that_address_only() {
        let mut m = MemorySessions::new(policy(), 100);
        let now = Instant::now();
        let attacker = from("ada@example.com", "6.6.6.6");
        for _ in 0..3 {
            assert!(matches!(m.reserve_login_attempt(&attacker, now), Gate::Pass { .. }));
            m.finish_login_attempt(&attacker, Outcome::Failed, now);
        }
        let later = now + Duration::from_secs(100);
        assert_eq!(
            m.reserve_login_attempt(&attacker, later),
            Gate::Refuse { retry_after: Duration::from_secs(800) }
        );
        let victim = from("ada@example.com", "192.0.2.1");
        assert!(matches!(m.reserve_login_attempt(&victim, later), Gate::Pass { .. }));
        m.finish_login_attempt(&victim, Outcome::Succeeded, later);
        let next_window = now + Duration::from_secs(900);
        assert!(matches!(m.reserve_login_attempt(&attacker, next_window), Gate::Pass { .. }));
    }

    #[test]
    fn attempts_being_checked_hold_the_budget_until_they_end() {
        let mut m = MemorySessions::new(policy(), 100);
        let now = Instant::now();
        let key = from("ada@example.com", "192.0.2.1");
        for _ in 0..3 {
            assert!(matches!(m.reserve_login_attempt(&key, now), Gate::Pass { .. }));
        }
        assert_eq!(m.reserve_login_attempt(&key, now), Gate::Wait);
        m.finish_login_attempt(&key, Outcome::Succeeded, now);
        assert!(matches!(m.reserve_login_attempt(&key, now), Gate::Pass { .. }), "released");
    }
}

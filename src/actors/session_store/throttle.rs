//! The login throttle's policy, the same on both backends: budgets that
//! throttle an attacker without locking the victim out.
//!
//! - Per (account, client address): `login.max_failures` failures in
//!   `login.window_secs`, then that address is refused for that account
//!   (RESOURCE_EXHAUSTED with `retry-after`). Attempts whose password is
//!   being checked are reserved against it, so parallel guesses share the
//!   budget; a success releases its reservation and clears the pair, so
//!   concurrent correct logins wait their turn instead of being refused.
//! - Per client address across accounts (credential stuffing):
//!   `login.max_failures_per_address`, then the address is refused for
//!   every account.
//! - Per account across addresses: never a hard lock. Past
//!   `login.account_delay_after` failures each attempt waits
//!   `login.account_delay_step_ms` more, up to `login.account_delay_max_ms`.
//!
//! Failures are counted after the password check.

use std::time::Duration;

use crate::{config::LoginSettings, domain::Email};

/// Who is trying to log in to which account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKey {
    pub email: Email,
    /// The client address (`SessionOrigin::client_address`); empty if
    /// unknown, which then counts as one address.
    pub address: String,
}

impl LoginKey {
    /// The address as a key part (never empty).
    pub fn address_part(&self) -> &str {
        if self.address.is_empty() { "unknown" } else { &self.address }
    }
}

/// What a login attempt may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Reserved: check the password after waiting `delay`.
    Pass { delay: Duration },
    /// A budget is spent.
    Refuse { retry_after: Duration },
    /// The pair's remaining budget is held by attempts being checked: ask
    /// again when they are done.
    Wait,
}

/// How a reserved attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Not decided (a dependency failed before the check): release only.
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub pair_max: u32,
    pub address_max: u32,
    pub account_delay_after: u32,
    pub account_delay_step: Duration,
    pub account_delay_max: Duration,
    pub window: Duration,
}

/// The counters a decision reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub pair_failures: u32,
    pub pair_in_flight: u32,
    pub address_failures: u32,
    pub account_failures: u32,
}

impl ThrottlePolicy {
    pub fn from_settings(login: &LoginSettings) -> Self {
        Self {
            pair_max: login.max_failures,
            address_max: login.max_failures_per_address,
            account_delay_after: login.account_delay_after,
            account_delay_step: Duration::from_millis(login.account_delay_step_ms),
            account_delay_max: Duration::from_millis(login.account_delay_max_ms),
            window: Duration::from_secs(login.window_secs),
        }
    }

    /// The decision for `counters`, given how long the spent budget (pair
    /// or address) still runs. `Pass` means the caller reserves one
    /// in-flight attempt on the pair.
    pub fn decide(&self, c: Counters, pair_ttl: Duration, address_ttl: Duration) -> Gate {
        if c.pair_failures >= self.pair_max {
            return Gate::Refuse { retry_after: whole_seconds(pair_ttl) };
        }
        if c.address_failures >= self.address_max {
            return Gate::Refuse { retry_after: whole_seconds(address_ttl) };
        }
        if c.pair_failures + c.pair_in_flight >= self.pair_max {
            return Gate::Wait;
        }
        Gate::Pass { delay: self.account_delay(c.account_failures) }
    }

    /// The progressive delay for an account with `failures` in the window.
    pub fn account_delay(&self, failures: u32) -> Duration {
        let over = failures.saturating_sub(self.account_delay_after);
        self.account_delay_step.saturating_mul(over).min(self.account_delay_max)
    }
}

/// A retry hint in whole seconds, at least one.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            pair_max: 5,
            address_max: 50,
            account_delay_after: 20,
            account_delay_step: Duration::from_millis(250),
            account_delay_max: Duration::from_secs(5),
            window: Duration::from_secs(900),
        }
    }

    const TTL: Duration = Duration::from_millis(1500);

    #[test]
    fn a_spent_pair_or_address_is_refused_with_its_remaining_time() {
        let p = policy();
        let pair_spent = Counters { pair_failures: 5, ..Counters::default() };
        assert_eq!(
            p.decide(pair_spent, TTL, TTL * 9),
            Gate::Refuse { retry_after: Duration::from_secs(2) }
        );
        let address_spent = Counters { address_failures: 50, ..Counters::default() };
        assert_eq!(
            p.decide(address_spent, TTL, TTL * 9),
            Gate::Refuse { retry_after: Duration::from_secs(14) }
        );
    }

    #[test]
    fn attempts_in_flight_hold_the_rest_of_the_budget() {
        let p = policy();
        let held = Counters { pair_failures: 2, pair_in_flight: 3, ..Counters::default() };
        assert_eq!(p.decide(held, TTL, TTL), Gate::Wait);
        let room = Counters { pair_failures: 2, pair_in_flight: 2, ..Counters::default() };
        assert_eq!(p.decide(room, TTL, TTL), Gate::Pass { delay: Duration::ZERO });
    }

    #[test]
    fn an_account_attacked_from_many_addresses_slows_down_but_never_locks() {
        let p = policy();
        assert_eq!(p.account_delay(20), Duration::ZERO);
        assert_eq!(p.account_delay(22), Duration::from_millis(500));
        assert_eq!(p.account_delay(10_000), Duration::from_secs(5));
        let besieged = Counters { account_failures: 10_000, ..Counters::default() };
        assert_eq!(p.decide(besieged, TTL, TTL), Gate::Pass { delay: Duration::from_secs(5) });
    }
}

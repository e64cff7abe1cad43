//! The login throttle's counters in Redis (the policy is
//! `session_store::throttle`'s).

use std::time::Duration;

use bb8_redis::redis::{self, AsyncCommands as _};

use super::{
    RedisSessionRepository, each_key,
    scripts::{FINISH_LOGIN, RESERVE_LOGIN},
};
use crate::{
    actors::session_store::throttle::{Counters, Gate, LoginKey, Outcome},
    error::DependencyError,
};

/// A PTTL reply as a duration (-1 no expiry, -2 gone: none left).
fn millis(pttl: i64) -> Duration {
    Duration::from_millis(u64::try_from(pttl).unwrap_or(0))
}

impl RedisSessionRepository {
    /// Asks the throttle whether this attempt may check a password now, and
    /// reserves it if so (see `throttle`). Two round trips: the address's
    /// and the account's counters, then the pair's atomic reservation.
    pub async fn reserve_login_attempt(&self, key: &LoginKey) -> Result<Gate, DependencyError> {
        let policy = self.policy.throttle;
        let (address_key, account_key, pair_key) = self.throttle_keys(key);
        let ((address_failures, address_ttl), account_failures): ((Option<u32>, i64), Option<u32>) =
            self.run("read_login_counters", async |conn| {
                // The address's and the account's keys hash to different
                // slots: a pipeline each, sent side by side.
                let mut account = conn.clone();
                let mut address = redis::pipe();
                address.get(&address_key).pttl(&address_key);
                tokio::try_join!(address.query_async(conn), account.get(&account_key))
            })
            .await?;
        let mut counters = Counters {
            address_failures: address_failures.unwrap_or(0),
            account_failures: account_failures.unwrap_or(0),
            ..Counters::default()
        };
        let address_ttl = millis(address_ttl);
        if let gate @ Gate::Refuse { .. } = policy.decide(counters, Duration::ZERO, address_ttl) {
            return Ok(gate);
        }
        let (reserved, failures, in_flight, pair_ttl): (u8, u32, u32, i64) = self
            .run("reserve_login_attempt", async |conn| {
                RESERVE_LOGIN
                    .key(&pair_key)
                    .arg(policy.pair_max)
                    .arg(policy.window.as_secs())
                    .invoke_async(conn)
                    .await
            })
            .await?;
        counters.pair_failures = failures;
        counters.pair_in_flight = in_flight;
        Ok(match policy.decide(counters, millis(pair_ttl), address_ttl) {
            gate @ Gate::Pass { .. } if reserved == 1 => gate,
            // Raced by another attempt between the two reads.
            Gate::Pass { .. } => Gate::Wait,
            gate => gate,
        })
    }

    /// Settles a reserved attempt: a failure counts on the pair, the
    /// address and the account; a success clears the pair and the account.
    pub async fn finish_login_attempt(
        &self,
        key: &LoginKey,
        outcome: Outcome,
    ) -> Result<(), DependencyError> {
        let window = self.policy.throttle.window.as_secs();
        let (address_key, account_key, pair_key) = self.throttle_keys(key);
        let verdict = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        };
        self.run("finish_login_attempt", async |conn| {
            FINISH_LOGIN.key(&pair_key).arg(verdict).arg(window).invoke_async::<()>(conn).await
        })
        .await?;
        match outcome {
            Outcome::Failed => {
                self.run("count_login_attempt", async |conn| {
                    // A pipeline per counter (one slot each), side by side.
                    each_key(conn, [&address_key, &account_key], |mut conn, counter| async move {
                        redis::pipe()
                            .incr(counter, 1)
                            .ignore()
                            .cmd("EXPIRE")
                            .arg(counter)
                            .arg(window)
                            .arg("NX")
                            .ignore()
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await
                    .map(drop)
                })
                .await
            }
            Outcome::Succeeded => {
                self.run("count_login_attempt", async |conn| conn.del::<_, ()>(&account_key).await)
                    .await
            }
            Outcome::Abandoned => Ok(()),
        }
    }

    /// The address's, the account's and the pair's keys. The account and
    /// the pair share a hash tag (the email's digest), so a Cluster keeps
    /// them together.
    fn throttle_keys(&self, key: &LoginKey) -> (String, String, String) {
        let digest = key.email.storage_key();
        let address = key.address_part();
        (
            format!("{}login_address:{address}", self.prefix),
            format!("{}login_account:{{{digest}}}", self.prefix),
            format!("{}login_pair:{{{digest}}}:{address}", self.prefix),
        )
    }
}

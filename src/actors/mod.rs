//! The actor system: one actor per concern, each owning its resources.
//!
//! - [`user_store::UserStore`] owns a Postgres pool, or the embedded SQLite
//!   database.
//! - [`session_store::SessionStore`] owns a Redis pool, or holds the
//!   sessions itself (embedded).
//! - [`password_hasher::PasswordHasher`] owns the argon2 worker threads.
//! - [`metrics::MetricsSampler`] samples the others into gauges and health.
//!
//! The store actors run one instance per worker arbiter (see
//! [`crate::workers`]), each with its own pool, behind one [`ActorClient`]
//! that sends each message to the instance on the caller's own thread. (The
//! embedded session store runs one instance, since it is the state.)
//!
//! Callers reach an actor only through an [`ActorClient`], which bounds the
//! messages a concern accepts (past that, callers are refused at once instead
//! of queueing without limit) and wraps each message in a [`Traced`] envelope
//! carrying the caller's span, so the trace hierarchy survives the hop.
//!
//! The plumbing, by role (no two of these modules import each other):
//! [`stats`] (state and counters), [`admission`] (a message's bounded
//! place), [`traced`] (the envelope), [`client`] (sending), [`pool`]
//! (connection pools: failed connects, samples), [`supervision`] (restart
//! policy, breaker, store health), [`store`] (what both stores share), and
//! [`health`] (dependency health as the adapters see it).

pub mod admission;
pub mod client;
pub mod health;
pub mod metrics;
pub mod password_hasher;
pub mod pool;
pub mod session_store;
pub mod stats;
pub mod store;
pub mod supervision;
pub mod traced;
pub mod user_store;

pub use client::ActorClient;
pub use pool::{ConnectFailures, PoolSample, Watched, uptime_ms};
pub use stats::{ActorSnapshot, ActorState, ActorStats, LastError};
pub use store::CheckHealth;
pub use supervision::RestartPolicy;
pub use traced::Traced;

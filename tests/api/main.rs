//! Integration suite: every test starts the real service (in process, on
//! ephemeral ports) and talks to it through a real gRPC client. Tests of
//! behaviour run on both storage backends (`backend_tests!`): external, with
//! real PostgreSQL and Redis, each test its own database and Redis key
//! prefix; and embedded, each test its own data directory. Tests that need a
//! real server to fail (faults, overload, the Go database) are external only.

mod support;

mod admin;
mod configuration;
mod durability;
mod embedded;
mod faults;
mod legacy;
mod lifecycle;
mod limits;
mod login;
mod lookup;
mod observability;
mod ops;
mod overload;
mod postgres_topologies;
mod redis_modes;
mod register;
mod replicas;
mod session;
mod sessions;
mod throttle;
mod tls;

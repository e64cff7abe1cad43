//! Integration suite: every test starts the real service (in process, on
//! ephemeral ports) against real PostgreSQL and Redis and talks to it through
//! a real gRPC client. Each test has its own database and Redis key prefix.

mod helpers;

mod admin;
mod faults;
mod legacy;
mod lifecycle;
mod login;
mod lookup;
mod observability;
mod ops;
mod overload;
mod register;
mod session;

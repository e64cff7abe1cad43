//! auth-service: a gRPC authentication service built as an actix actor
//! system. See `README.md` for the architecture; `main.rs` for the entry
//! points.
//!
//! The core (`actors`, `domain`, `service`) knows nothing of gRPC or HTTP;
//! the adapters (`grpc`, `ops`) translate at the edge; `system` composes the
//! core from `config`, and `app` (the server) and `cli` run it.

pub mod actors;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod net;
pub mod ops;
pub mod service;
pub mod system;
pub mod telemetry;
pub mod tls;
pub mod workers;

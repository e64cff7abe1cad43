//! auth-service: a gRPC authentication service built as an actix actor
//! system. See `README.md` for the architecture; `main.rs` for the entry
//! points.

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
pub mod telemetry;
pub mod workers;

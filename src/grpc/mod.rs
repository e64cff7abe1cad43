//! The gRPC adapter: `UserService` and `AdminService` over
//! [`crate::service::AuthService`] ([`service`], `admin`), plus reflection
//! and `grpc.health.v1` ([`health`]), served by [`server`] through the RPC
//! layer ([`layers`], which labels only the RPCs `rpcs` names), over TLS
//! when configured ([`tls`]). Translates only: protobuf in, use case,
//! protobuf or a status ([`status`]) out.

mod admin;
pub mod health;
pub mod layers;
mod rpcs;
pub mod server;
mod service;
pub mod status;
pub mod tls;

pub use server::{GrpcServer, ServeError};
pub use service::UserServiceImpl;

/// Code generated from `proto/user.proto` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    tonic::include_proto!("user_service");

    /// Encoded descriptors of `user.proto` and its imports, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/user_descriptor.bin"));
}

/// The metadata key carrying the session id, as in the Go service.
pub const SESSION_METADATA_KEY: &str = "session_id";

//! Domain types: parsed, valid-by-construction values the rest of the service
//! passes around. Depends on nothing else in the crate.
//!
//! Every `parse` applies the input rules of the wire contract (via the
//! `validator` crate's checks) and names the offending request field in its
//! error, so the gRPC layer can answer INVALID_ARGUMENT without knowing the
//! rules.

mod email;
mod password;
mod peer;
mod profile;
mod registration;
mod role;
mod session_id;
mod user;

pub use email::Email;
pub use password::{Password, PasswordHash};
pub use peer::PeerIdentity;
pub use profile::{Avatar, PersonName};
pub use registration::Registration;
pub use role::Role;
pub use session_id::SessionId;
pub use user::{NewUser, User, UserCredentials, UserId};

/// A request field that broke an input rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    /// The request field, as named in `proto/user.proto`.
    pub field: &'static str,
    /// Why it was refused; never echoes the value (it may be a password).
    pub reason: &'static str,
}

impl InvalidInput {
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }
}

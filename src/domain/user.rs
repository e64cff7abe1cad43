//! Accounts: a user's id, the user as the service shows it, its
//! credentials, and a new account ready to insert.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Avatar, Email, InvalidInput, PasswordHash, PersonName, Role};

/// A user's id (the `users.user_id` primary key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

impl UserId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Uuid::parse_str(raw.trim())
            .map(Self)
            .map_err(|_| InvalidInput::new("uuid", "is not a valid UUID"))
    }

    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored account as the service shows it. Holds no password material, so
/// it can be cached and returned freely.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: UserId,
    pub first_name: String,
    pub last_name: String,
    /// As stored: canonical (lower-case) for accounts created here; rows
    /// imported from the Go service keep their original spelling.
    pub email: String,
    pub role: Role,
    pub avatar: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An account together with its password hash: only the login path sees it.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: PasswordHash,
}

/// A validated registration, password already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub role: Role,
    pub avatar: Option<Avatar>,
    pub password_hash: PasswordHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_parse_uuids_only() {
        let id = UserId::new_random();
        assert_eq!(UserId::parse(&id.to_string()), Ok(id));
        assert_eq!(UserId::parse("not-a-uuid").expect_err("bad").field, "uuid");
        assert_eq!(UserId::parse("").expect_err("empty").field, "uuid");
    }
}

//! An account's role: `user` or `admin` (an empty role means `user`).

use std::fmt;

use super::InvalidInput;

/// What an account may do. Stored as the Postgres enum `role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    /// `""` means the default, `user`.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw.trim() {
            "" | "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            _ => Err(InvalidInput::new("role", "must be \"user\" or \"admin\"")),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_accepted_values() {
        assert_eq!(Role::parse(""), Ok(Role::User));
        assert_eq!(Role::parse("user"), Ok(Role::User));
        assert_eq!(Role::parse("admin"), Ok(Role::Admin));
        for bad in ["root", "Admin", "ADMIN", "superuser"] {
            assert_eq!(Role::parse(bad).expect_err(bad).field, "role");
        }
    }
}

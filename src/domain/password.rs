//! Passwords as typed (never logged) and their stored hashes.

use std::fmt;

use super::InvalidInput;

/// Shortest password accepted at registration (NIST SP 800-63B §5.1.1.2).
const MIN_BYTES: usize = 8;
/// Upper bound so a request cannot make the hasher chew megabytes.
const MAX_BYTES: usize = 1024;

/// A plaintext password exactly as the user typed it (never trimmed).
/// `Debug` is redacted and there is no `Display`, so it cannot reach a log.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// A password for a new account: 8 to 1024 bytes.
    pub fn parse_new(raw: String) -> Result<Self, InvalidInput> {
        if raw.len() < MIN_BYTES {
            return Err(InvalidInput::new("password", "must be at least 8 bytes"));
        }
        Self::parse_existing(raw)
    }

    /// A password offered at login. Accounts imported from the Go service may
    /// have shorter passwords, so only the upper bound applies; an empty one
    /// cannot match any account.
    pub fn parse_existing(raw: String) -> Result<Self, InvalidInput> {
        if raw.len() > MAX_BYTES {
            return Err(InvalidInput::new("password", "must be at most 1024 bytes"));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A stored password hash in PHC (argon2id) or modular-crypt (legacy bcrypt)
/// form. Redacted in `Debug`: a hash is an offline-cracking target.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(encoded: String) -> Self {
        Self(encoded)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_whitespace_exactly() {
        let pw = Password::parse_new("  spaced out  ".to_owned()).expect("valid");
        assert_eq!(pw.expose(), "  spaced out  ");
    }

    #[test]
    fn length_is_counted_in_bytes() {
        // Four 2-byte characters are 8 bytes.
        assert!(Password::parse_new("éééé".to_owned()).is_ok());
        assert!(Password::parse_new("ééé".to_owned()).is_err());
        assert!(Password::parse_new("x".repeat(1024)).is_ok());
        assert!(Password::parse_new("x".repeat(1025)).is_err());
        assert!(Password::parse_existing("short".to_owned()).is_ok());
        assert!(Password::parse_existing("x".repeat(1025)).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let pw = Password::parse_new("hunter22hunter22".to_owned()).expect("valid");
        assert!(!format!("{pw:?}").contains("hunter"));
        let hash = PasswordHash::new("$argon2id$v=19$secret".to_owned());
        assert!(!format!("{hash:?}").contains("secret"));
    }

    proptest! {
        #[test]
        fn new_passwords_are_8_to_1024_bytes_and_unchanged(raw in "\\PC{0,300}|.{1000,1100}") {
            match Password::parse_new(raw.clone()) {
                Ok(pw) => {
                    prop_assert!((8..=1024).contains(&raw.len()));
                    prop_assert_eq!(pw.expose(), raw.as_str());
                }
                Err(err) => {
                    prop_assert_eq!(err.field, "password");
                    prop_assert!(raw.len() < 8 || raw.len() > 1024);
                }
            }
        }
    }
}

//! Email addresses: RFC-valid, at most 64 characters, kept in canonical
//! (lower-case) form so a login matches whatever case was registered.

use std::fmt;

use validator::{ValidateEmail, ValidateLength};

use super::InvalidInput;

/// The longest address the `users.email` column holds.
const MAX_LEN: u64 = 64;

/// An email address in canonical form: trimmed and lower-cased, so `A@X.io`
/// and `a@x.io` are the same account.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InvalidInput> {
        let canonical = raw.trim().to_lowercase();
        if canonical.is_empty() {
            return Err(InvalidInput::new(field, "is required"));
        }
        if !canonical.validate_length(None, Some(MAX_LEN), None) {
            return Err(InvalidInput::new(field, "must be at most 64 characters"));
        }
        if !canonical.validate_email() {
            return Err(InvalidInput::new(field, "is not a valid email address"));
        }
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A digest of the address, for keys (login-failure counters) that must
    /// not spell out who they belong to.
    pub fn storage_key(&self) -> String {
        super::session_id::digest_hex(self.0.as_bytes())
    }
}

impl fmt::Debug for Email {
    // Addresses are personal data: logs get the domain only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = self.0.rsplit_once('@').map_or("", |(_, d)| d);
        write!(f, "Email(***@{domain})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonicalises_case_and_whitespace() {
        let email = Email::parse("  Alice@Example.IO ", "email").expect("valid");
        assert_eq!(email.as_str(), "alice@example.io");
    }

    #[test]
    fn rejects_malformed_and_names_the_field() {
        for bad in ["", "   ", "alice", "@example.io", "alice@", "a b@example.io", "alice@@x.io"] {
            let err = Email::parse(bad, "email").expect_err(bad);
            assert_eq!(err.field, "email", "{bad}");
        }
    }

    #[test]
    fn enforces_the_column_length() {
        let local = "a".repeat(64 - "@x.io".len());
        assert!(Email::parse(&format!("{local}@x.io"), "email").is_ok());
        assert!(Email::parse(&format!("{local}a@x.io"), "email").is_err());
    }

    #[test]
    fn debug_hides_the_local_part() {
        let email = Email::parse("secret.person@x.io", "email").expect("valid");
        assert_eq!(format!("{email:?}"), "Email(***@x.io)");
    }

    proptest! {
        #[test]
        fn parsed_emails_are_canonical_and_bounded(raw in "\\PC{0,80}") {
            if let Ok(email) = Email::parse(&raw, "email") {
                let s = email.as_str();
                prop_assert_eq!(s, s.trim());
                prop_assert_eq!(s.to_lowercase(), s);
                prop_assert!(s.chars().count() <= 64);
                prop_assert!(s.contains('@'));
                // Parsing is idempotent: the canonical form parses to itself.
                prop_assert_eq!(Email::parse(s, "email").expect("reparse"), email.clone());
            }
        }

        #[test]
        fn letter_case_never_distinguishes_accounts(
            local in "[a-zA-Z0-9._%+-]{1,20}",
            domain in "[a-zA-Z0-9]{1,10}\\.[a-zA-Z]{2,6}",
        ) {
            let raw = format!("{local}@{domain}");
            let upper = Email::parse(&raw.to_uppercase(), "email");
            let lower = Email::parse(&raw.to_lowercase(), "email");
            prop_assert_eq!(upper, lower);
        }
    }
}

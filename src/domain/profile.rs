//! Profile fields: a person's name and an optional avatar URL, trimmed and
//! bounded as their columns are.

use std::fmt;

use validator::ValidateLength;

use super::InvalidInput;

/// A first or last name: 1 to 32 characters once trimmed (the column is
/// `VARCHAR(32)`).
#[derive(Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InvalidInput> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidInput::new(field, "is required"));
        }
        if !trimmed.validate_length(Some(1), Some(32), None) {
            return Err(InvalidInput::new(field, "must be at most 32 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidInput::new(field, "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonName(<redacted>)")
    }
}

/// An optional avatar reference (usually a URL), at most 250 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar(String);

impl Avatar {
    /// An empty or blank value means "no avatar".
    pub fn parse(raw: &str) -> Result<Option<Self>, InvalidInput> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if !trimmed.validate_length(None, Some(250), None) {
            return Err(InvalidInput::new("avatar", "must be at most 250 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidInput::new("avatar", "must not contain control characters"));
        }
        Ok(Some(Self(trimmed.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(PersonName::parse("  Ada ", "first_name").expect("ok").as_str(), "Ada");
        assert_eq!(PersonName::parse("   ", "first_name").expect_err("blank").field, "first_name");
        assert!(PersonName::parse(&"é".repeat(32), "last_name").is_ok());
        assert_eq!(
            PersonName::parse(&"é".repeat(33), "last_name").expect_err("long").field,
            "last_name"
        );
    }

    #[test]
    fn blank_avatar_is_none() {
        assert_eq!(Avatar::parse("  ").expect("ok"), None);
        assert!(Avatar::parse(&"a".repeat(250)).expect("ok").is_some());
        assert!(Avatar::parse(&"a".repeat(251)).is_err());
    }

    proptest! {
        #[test]
        fn parsed_names_are_trimmed_1_to_32_chars(raw in "\\PC{0,40}") {
            match PersonName::parse(&raw, "first_name") {
                Ok(name) => {
                    let n = name.as_str().chars().count();
                    prop_assert!((1..=32).contains(&n));
                    prop_assert_eq!(name.as_str(), raw.trim());
                }
                Err(err) => prop_assert_eq!(err.field, "first_name"),
            }
        }

        #[test]
        fn parsed_avatars_fit_the_column(raw in "\\PC{0,300}") {
            if let Ok(Some(avatar)) = Avatar::parse(&raw) {
                prop_assert!(avatar.as_str().chars().count() <= 250);
            }
        }
    }
}

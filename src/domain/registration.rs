//! A registration as the wire delivers it, parsed: every input rule checked,
//! in the order the contract names the fields.

use super::{Avatar, Email, InvalidInput, Password, PersonName, Role};

/// A valid registration, its password not yet hashed.
#[derive(Debug, Clone)]
pub struct Registration {
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub password: Password,
    pub role: Role,
    pub avatar: Option<Avatar>,
}

impl Registration {
    /// The first rule broken, naming its field: email, first_name,
    /// last_name, password, role, then avatar.
    pub fn parse(
        email: &str,
        first_name: &str,
        last_name: &str,
        password: String,
        role: &str,
        avatar: &str,
    ) -> Result<Self, InvalidInput> {
        Ok(Self {
            email: Email::parse(email, "email")?,
            first_name: PersonName::parse(first_name, "first_name")?,
            last_name: PersonName::parse(last_name, "last_name")?,
            password: Password::parse_new(password)?,
            role: Role::parse(role)?,
            avatar: Avatar::parse(avatar)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_broken_rule_names_its_field() {
        let parse = |email, first, password: &str, role| {
            Registration::parse(email, first, "Lovelace", password.to_owned(), role, "")
        };
        let ok = parse("Ada@Example.com", " Ada ", "a good password", "").expect("valid");
        assert_eq!(
            (ok.email.as_str(), ok.first_name.as_str(), ok.role),
            ("ada@example.com", "Ada", Role::User)
        );
        assert_eq!(parse("nope", "", "short", "root").expect_err("email").field, "email");
        assert_eq!(parse("a@b.co", "", "short", "root").expect_err("name").field, "first_name");
        assert_eq!(parse("a@b.co", "Ada", "short", "root").expect_err("pw").field, "password");
        assert_eq!(parse("a@b.co", "Ada", "long enough", "root").expect_err("role").field, "role");
    }
}

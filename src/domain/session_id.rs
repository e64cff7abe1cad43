//! Session ids: 256 random bits, handed out once and stored only as a
//! digest.

use std::fmt;

use blake2::{Blake2b256, Digest};

/// Random bytes in a session id: 256 bits from the OS CSPRNG, well above the
/// 128 the contract asks for (OWASP session management cheat sheet: ≥ 64).
const BYTES: usize = 32;
const HEX_LEN: usize = BYTES * 2;

/// A bearer session id as handed to the client. Only its digest is stored
/// (see [`SessionId::storage_key`]), so a dump of Redis yields no usable
/// sessions. `Debug` is redacted; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(hex(&bytes)))
    }

    /// Accepts only what [`SessionId::generate`] produces; anything else can
    /// never name a session, so it is refused without a Redis round-trip.
    pub fn parse(raw: &str) -> Option<Self> {
        let well_formed = raw.len() == HEX_LEN
            && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self(raw.to_owned()))
    }

    /// The value the client sends back in `session_id` metadata.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest under which the session is stored.
    pub fn storage_key(&self) -> String {
        digest_hex(self.0.as_bytes())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// BLAKE2b-256 of `bytes`, hex-encoded: keys that reveal nothing of what
/// they index.
pub(super) fn digest_hex(bytes: &[u8]) -> String {
    hex(&Blake2b256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = SessionId::generate().expect("rng");
        let b = SessionId::generate().expect("rng");
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.expose()), Some(a.clone()));
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a.storage_key(), a.expose());
        assert_eq!(a.storage_key(), SessionId::parse(a.expose()).expect("ok").storage_key());
    }

    #[test]
    fn debug_is_redacted() {
        let id = SessionId::generate().expect("rng");
        assert!(!format!("{id:?}").contains(id.expose()));
    }

    proptest! {
        #[test]
        fn only_64_lowercase_hex_digits_parse(raw in "\\PC{0,70}|[0-9a-fA-F]{62,66}") {
            let ok = raw.len() == 64 && raw.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
            prop_assert_eq!(SessionId::parse(&raw).is_some(), ok);
        }
    }
}

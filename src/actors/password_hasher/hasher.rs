//! Password hashing and verification, independent of any actor: argon2id for
//! every new hash, bcrypt accepted for hashes written by the Go service.

use argon2::{
    Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::{self, phc},
};

use crate::domain::{Password, PasswordHash};

/// Which scheme produced a stored hash (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Argon2id,
    /// Any other argon2 variant or version: verified, then upgraded.
    Argon2Other,
    /// `$2a$`/`$2b$`/`$2y$`, as the Go service wrote them.
    Bcrypt,
}

impl Scheme {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Argon2id => "argon2id",
            Self::Argon2Other => "argon2",
            Self::Bcrypt => "bcrypt",
        }
    }

    fn of(stored: &str) -> Option<Self> {
        if stored.starts_with("$argon2id$") {
            Some(Self::Argon2id)
        } else if stored.starts_with("$argon2") {
            Some(Self::Argon2Other)
        } else if ["$2a$", "$2b$", "$2y$", "$2x$"].iter().any(|p| stored.starts_with(p)) {
            Some(Self::Bcrypt)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The hash should be replaced by one with the current scheme and cost.
    pub needs_rehash: bool,
    pub scheme: Scheme,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(#[from] password_hash::Error),
    #[error("stored argon2 hash is malformed: {0}")]
    Malformed(#[from] phc::Error),
    #[error("bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("stored password hash has an unknown format")]
    UnknownFormat,
    #[error("hasher worker panicked")]
    WorkerPanicked,
}

/// argon2id with the configured cost, plus a dummy hash of that same cost so
/// a login for an unknown email spends as long as one for a known email.
pub struct Argon2Hasher {
    argon2: Argon2<'static>,
    params: Params,
    dummy: PasswordHash,
}

impl Argon2Hasher {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| HashError::Argon2(e.into()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy = argon2.hash_password(b"timing-equaliser: matches no account")?.to_string();
        Ok(Self { argon2, params, dummy: PasswordHash::new(dummy) })
    }

    pub fn hash(&self, password: &Password) -> Result<PasswordHash, HashError> {
        let hash = self.argon2.hash_password(password.expose().as_bytes())?;
        Ok(PasswordHash::new(hash.to_string()))
    }

    /// Verifies `password` against `stored`; with no stored hash (unknown
    /// account) it verifies against the dummy and reports no match.
    pub fn verify(
        &self,
        password: &Password,
        stored: Option<&PasswordHash>,
    ) -> Result<Verification, HashError> {
        let Some(stored) = stored else {
            let _ = self.verify_argon2(password, &self.dummy);
            return Ok(Verification {
                matches: false,
                needs_rehash: false,
                scheme: Scheme::Argon2id,
            });
        };
        let scheme = Scheme::of(stored.expose()).ok_or(HashError::UnknownFormat)?;
        match scheme {
            Scheme::Argon2id | Scheme::Argon2Other => {
                let (matches, current) = self.verify_argon2(password, stored)?;
                Ok(Verification { matches, needs_rehash: matches && !current, scheme })
            }
            Scheme::Bcrypt => {
                let matches = bcrypt::verify(password.expose(), stored.expose())?;
                Ok(Verification { matches, needs_rehash: matches, scheme })
            }
        }
    }

    /// Returns (matches, hash uses the current algorithm, version and cost).
    fn verify_argon2(
        &self,
        password: &Password,
        stored: &PasswordHash,
    ) -> Result<(bool, bool), HashError> {
        let parsed = phc::PasswordHash::new(stored.expose())?;
        let current = parsed.algorithm.as_str() == "argon2id"
            && parsed.version == Some(Version::V0x13.into())
            && Params::try_from(&parsed).is_ok_and(|p| {
                (p.m_cost(), p.t_cost(), p.p_cost())
                    == (self.params.m_cost(), self.params.t_cost(), self.params.p_cost())
            });
        match self.argon2.verify_password(password.expose().as_bytes(), &parsed) {
            Ok(()) => Ok((true, current)),
            Err(password_hash::Error::PasswordInvalid) => Ok((false, current)),
            Err(other) => Err(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Hasher {
        Argon2Hasher::new(1024, 1, 1).expect("params")
    }

    fn pw(s: &str) -> Password {
        Password::parse_existing(s.to_owned()).expect("valid")
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let hasher = cheap();
        let a = hasher.hash(&pw("correct horse")).expect("hash");
        let b = hasher.hash(&pw("correct horse")).expect("hash");
        assert!(a.expose().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_ne!(a, b, "salted");
        let ok = hasher.verify(&pw("correct horse"), Some(&a)).expect("verify");
        assert_eq!(
            ok,
            Verification { matches: true, needs_rehash: false, scheme: Scheme::Argon2id }
        );
        let bad = hasher.verify(&pw("correct horsE"), Some(&a)).expect("verify");
        assert!(!bad.matches);
    }

    #[test]
    fn unknown_account_never_matches() {
        let hasher = cheap();
        let v = hasher.verify(&pw("timing-equaliser: matches no account"), None).expect("verify");
        assert!(!v.matches);
    }

    #[test]
    fn changed_cost_asks_for_rehash() {
        let old = cheap().hash(&pw("secret-secret")).expect("hash");
        let stronger = Argon2Hasher::new(2048, 1, 1).expect("params");
        let v = stronger.verify(&pw("secret-secret"), Some(&old)).expect("verify");
        assert!(v.matches && v.needs_rehash);
    }

    #[test]
    fn bcrypt_hashes_from_the_go_service_verify_and_need_rehash() {
        let legacy = bcrypt::hash("go-password", 4).expect("bcrypt");
        let hasher = cheap();
        let v = hasher
            .verify(&pw("go-password"), Some(&PasswordHash::new(legacy.clone())))
            .expect("verify");
        assert_eq!(v, Verification { matches: true, needs_rehash: true, scheme: Scheme::Bcrypt });
        let wrong =
            hasher.verify(&pw("go-passworD"), Some(&PasswordHash::new(legacy))).expect("verify");
        assert!(!wrong.matches && !wrong.needs_rehash);
    }

    #[test]
    fn garbage_hashes_are_errors_not_matches() {
        let hasher = cheap();
        let err = hasher.verify(&pw("x"), Some(&PasswordHash::new("plaintext".into())));
        assert!(matches!(err, Err(HashError::UnknownFormat)));
    }
}

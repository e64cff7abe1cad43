//! Password hashing and verification, independent of any actor: argon2id for
//! every new hash, bcrypt accepted for hashes written by the Go service.
//!
//! argon2's memory (`argon2.memory_kib`, 19 MiB by default) is the bulk of a
//! hash's cost besides the CPU; allocating and zeroing it per call is
//! wasted work, so each hasher thread keeps one [`Workspace`] and reuses it.

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
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

/// Scratch memory of one hasher thread, reused by every hash it computes.
/// Grows to the largest cost it has met (a stored hash of an older, higher
/// cost) and stays there.
#[derive(Default)]
pub struct Workspace {
    blocks: Vec<Block>,
}

impl Workspace {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::new());
        }
        &mut self.blocks[..count]
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.blocks.len() * Block::SIZE
    }
}

/// Length of new hashes and salts (argon2's and OWASP's recommendation).
const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

/// argon2id with the configured cost, plus a dummy hash of that same cost so
/// a login for an unknown email spends as long as one for a known email.
pub struct Argon2Hasher {
    params: Params,
    dummy: PasswordHash,
}

impl Argon2Hasher {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, Some(OUTPUT_LEN))
            .map_err(|e| HashError::Argon2(e.into()))?;
        // Verifying against it costs exactly a real verify; that it matches
        // no password is all that matters, so its "hash" is zeros and
        // nothing is computed (or allocated) at start.
        let dummy = phc_string(&params, &random_salt()?, &[0; OUTPUT_LEN])?;
        Ok(Self { params, dummy: PasswordHash::new(dummy) })
    }

    pub fn hash(
        &self,
        password: &Password,
        workspace: &mut Workspace,
    ) -> Result<PasswordHash, HashError> {
        let salt = random_salt()?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let mut output = [0u8; OUTPUT_LEN];
        argon2
            .hash_password_into_with_memory(
                password.expose().as_bytes(),
                &salt,
                &mut output,
                workspace.blocks(self.params.block_count()),
            )
            .map_err(|e| HashError::Argon2(e.into()))?;
        Ok(PasswordHash::new(phc_string(&self.params, &salt, &output)?))
    }

    /// Verifies `password` against `stored`; with no stored hash (unknown
    /// account) it verifies against the dummy and reports no match.
    pub fn verify(
        &self,
        password: &Password,
        stored: Option<&PasswordHash>,
        workspace: &mut Workspace,
    ) -> Result<Verification, HashError> {
        let Some(stored) = stored else {
            let _ = self.verify_argon2(password, &self.dummy, workspace);
            return Ok(Verification {
                matches: false,
                needs_rehash: false,
                scheme: Scheme::Argon2id,
            });
        };
        let scheme = Scheme::of(stored.expose()).ok_or(HashError::UnknownFormat)?;
        match scheme {
            Scheme::Argon2id | Scheme::Argon2Other => {
                let (matches, current) = self.verify_argon2(password, stored, workspace)?;
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
        workspace: &mut Workspace,
    ) -> Result<(bool, bool), HashError> {
        let parsed = phc::PasswordHash::new(stored.expose())?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str())?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| HashError::Argon2(e.into()))?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return Err(HashError::Argon2(password_hash::Error::EncodingInvalid));
        };
        let current = algorithm == Algorithm::Argon2id
            && version == Version::V0x13
            && (params.m_cost(), params.t_cost(), params.p_cost())
                == (self.params.m_cost(), self.params.t_cost(), self.params.p_cost());
        let mut output = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params.clone())
            .hash_password_into_with_memory(
                password.expose().as_bytes(),
                salt,
                &mut output,
                workspace.blocks(params.block_count()),
            )
            .map_err(|e| HashError::Argon2(e.into()))?;
        // `Output` compares in constant time.
        let matches = phc::Output::new(&output)? == *expected;
        Ok((matches, current))
    }
}

fn random_salt() -> Result<[u8; SALT_LEN], HashError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| HashError::Argon2(password_hash::Error::RngFailure))?;
    Ok(salt)
}

/// `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`.
fn phc_string(params: &Params, salt: &[u8], output: &[u8]) -> Result<String, HashError> {
    let hash = phc::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: phc::ParamsString::try_from(params)?,
        salt: Some(phc::Salt::new(salt)?),
        hash: Some(phc::Output::new(output)?),
    };
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Hasher {
        Argon2Hasher::new(1024, 1, 1).expect("params")
    }

    fn ws() -> Workspace {
        Workspace::default()
    }

    fn pw(s: &str) -> Password {
        Password::parse_existing(s.to_owned()).expect("valid")
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let hasher = cheap();
        let a = hasher.hash(&pw("correct horse"), &mut ws()).expect("hash");
        let b = hasher.hash(&pw("correct horse"), &mut ws()).expect("hash");
        assert!(a.expose().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_ne!(a, b, "salted");
        let ok = hasher.verify(&pw("correct horse"), Some(&a), &mut ws()).expect("verify");
        assert_eq!(
            ok,
            Verification { matches: true, needs_rehash: false, scheme: Scheme::Argon2id }
        );
        let bad = hasher.verify(&pw("correct horsE"), Some(&a), &mut ws()).expect("verify");
        assert!(!bad.matches);
    }

    #[test]
    fn unknown_account_never_matches() {
        let hasher = cheap();
        let v = hasher.verify(&pw("any password at all"), None, &mut ws()).expect("verify");
        assert!(!v.matches);
    }

    #[test]
    fn changed_cost_asks_for_rehash() {
        let old = cheap().hash(&pw("secret-secret"), &mut ws()).expect("hash");
        let stronger = Argon2Hasher::new(2048, 1, 1).expect("params");
        let v = stronger.verify(&pw("secret-secret"), Some(&old), &mut ws()).expect("verify");
        assert!(v.matches && v.needs_rehash);
    }

    #[test]
    fn bcrypt_hashes_from_the_go_service_verify_and_need_rehash() {
        let legacy = bcrypt::hash("go-password", 4).expect("bcrypt");
        let hasher = cheap();
        let v = hasher
            .verify(&pw("go-password"), Some(&PasswordHash::new(legacy.clone())), &mut ws())
            .expect("verify");
        assert_eq!(v, Verification { matches: true, needs_rehash: true, scheme: Scheme::Bcrypt });
        let wrong = hasher
            .verify(&pw("go-passworD"), Some(&PasswordHash::new(legacy)), &mut ws())
            .expect("verify");
        assert!(!wrong.matches && !wrong.needs_rehash);
    }

    #[test]
    fn garbage_hashes_are_errors_not_matches() {
        let hasher = cheap();
        let err = hasher.verify(&pw("x"), Some(&PasswordHash::new("plaintext".into())), &mut ws());
        assert!(matches!(err, Err(HashError::UnknownFormat)));
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_itself_verify() {
        use argon2::PasswordHasher as _;
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"interoperable")
        .expect("hash")
        .to_string();
        let v = cheap()
            .verify(&pw("interoperable"), Some(&PasswordHash::new(reference)), &mut ws())
            .expect("verify");
        assert_eq!(
            v,
            Verification { matches: true, needs_rehash: false, scheme: Scheme::Argon2id }
        );
    }

    #[test]
    fn older_argon2_variants_verify_and_need_rehash() {
        use argon2::PasswordHasher as _;
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(1024, 2, 1, None).expect("params"),
        )
        .hash_password(b"from long ago")
        .expect("hash")
        .to_string();
        let v = cheap()
            .verify(&pw("from long ago"), Some(&PasswordHash::new(argon2i)), &mut ws())
            .expect("verify");
        assert_eq!(
            v,
            Verification { matches: true, needs_rehash: true, scheme: Scheme::Argon2Other }
        );
    }

    #[test]
    fn the_workspace_is_reused_not_reallocated() {
        let hasher = cheap();
        let mut workspace = ws();
        let hash = hasher.hash(&pw("reuse the memory"), &mut workspace).expect("hash");
        let (address, size) = (workspace.blocks.as_ptr(), workspace.size());
        assert_eq!(size, 1024 * 1024, "m = 1024 KiB");
        for _ in 0..3 {
            hasher.verify(&pw("reuse the memory"), Some(&hash), &mut workspace).expect("verify");
            hasher.hash(&pw("reuse the memory"), &mut workspace).expect("hash");
        }
        assert_eq!((workspace.blocks.as_ptr(), workspace.size()), (address, size));
    }

    #[test]
    fn the_dummy_costs_a_verify_at_the_configured_cost() {
        let hasher = cheap();
        let dummy = hasher.dummy.expose();
        assert!(dummy.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{dummy}");
        let mut workspace = ws();
        let v = hasher.verify(&pw("whatever"), None, &mut workspace).expect("verify");
        assert!(!v.matches);
        assert_eq!(workspace.size(), 1024 * 1024, "the dummy verify did the full work");
    }
}

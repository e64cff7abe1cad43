//! TLS material as the service reads it: PEM certificate chains, private
//! keys and CA bundles from files, checked on the way in (a key that does
//! not match its certificate, a CA file with no certificate), and the roots
//! a client trusts (a CA file, or the system's). rustls with the ring
//! provider throughout: TLS 1.2 and 1.3 only, no OpenSSL.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    sign::CertifiedKey,
};

/// Why TLS material was refused: the file and the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct MaterialError {
    pub path: PathBuf,
    pub reason: String,
}

impl MaterialError {
    fn new(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self { path: path.to_owned(), reason: reason.to_string() }
    }
}

/// The crypto of every TLS connection the service makes or accepts: ring,
/// which builds with a C compiler alone (aws-lc-rs needs cmake). rustls
/// 0.23.48 deprecated it for lacking post-quantum key exchange; that is the
/// trade.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2, nothing older.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The certificates of a PEM file, in order (a chain: leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let pem = std::fs::read(path).map_err(|e| MaterialError::new(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MaterialError::new(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(MaterialError::new(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, MaterialError> {
    let pem = std::fs::read(path).map_err(|e| MaterialError::new(path, e))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| MaterialError::new(path, format!("holds no usable private key: {e}")))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, MaterialError> {
    let chain = certificates(cert_file)?;
    let key = private_key(key_file)?;
    let mismatch = || {
        MaterialError::new(
            key_file,
            format!("does not match the certificate of {}", cert_file.display()),
        )
    };
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => mismatch(),
        other => MaterialError::new(key_file, format!("unusable key: {other}")),
    })?;
    certified.keys_match().map_err(|_| mismatch())?;
    Ok(certified)
}

/// The certificates of a CA bundle as trust roots.
pub fn ca_roots(path: &Path) -> Result<RootCertStore, MaterialError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| MaterialError::new(path, format!("not a CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// What a client trusts: the CA file when one is named, else the system's
/// roots.
pub fn client_roots(ca_file: &str) -> Result<RootCertStore, MaterialError> {
    if !ca_file.is_empty() {
        return ca_roots(Path::new(ca_file));
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(MaterialError::new(
            Path::new("(system roots)"),
            "no trusted root certificate found on this system; name a CA file",
        ));
    }
    Ok(roots)
}

/// The unix time at which the leaf of `chain` expires.
pub fn not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The identity a verified client certificate (the leaf of `chain`) names.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<crate::domain::PeerIdentity> {
    use x509_parser::extensions::GeneralName;
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    let (mut uris, mut dns_names) = (Vec::new(), Vec::new());
    for name in &sans.value.general_names {
        match name {
            GeneralName::URI(uri) => uris.push((*uri).to_owned()),
            GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
            _ => {}
        }
    }
    crate::domain::PeerIdentity::from_sans(uris, dns_names)
}

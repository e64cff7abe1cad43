//! Certificates made in the test (rcgen): a CA of the test's own, server
//! certificates it signs, and client certificates — valid, expired, for the
//! wrong purpose — each written as PEM files in a directory of its own.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).expect("cert")
    }

    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).expect("key")
    }
}

/// What a client certificate says.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec<'a> {
    pub uri: Option<&'a str>,
    pub dns: &'a [&'a str],
    /// Valid until the past.
    pub expired: bool,
    /// For servers only (no clientAuth purpose).
    pub server_purpose: bool,
}

/// A CA and the directory its files go to (removed on drop).
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_file: PathBuf,
    next: std::cell::Cell<u32>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("auth-pki-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("ca.pem");
        Self { dir, ca, ca_file, next: std::cell::Cell::new(0) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Pair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("server"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate as `spec` says.
    pub fn client(&self, spec: &ClientSpec<'_>) -> Pair {
        let mut params =
            CertificateParams::new(spec.dns.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        if let Some(uri) = spec.uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into().expect("ia5 uri")));
        }
        params.distinguished_name.push(DnType::CommonName, "client");
        params.extended_key_usages = vec![if spec.server_purpose {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("signed");
        let n = self.next.get();
        self.next.set(n + 1);
        let pair = Pair {
            cert: self.dir.join(format!("{n}.crt")),
            key: self.dir.join(format!("{n}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("cert");
        std::fs::write(&pair.key, key.serialize_pem()).expect("key");
        pair
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! The TLS settings: the gRPC port's certificate and client certificates
//! (`grpc.tls.*`), and a PostgreSQL URL's `sslmode`.

use serde::Deserialize;

use super::SettingsError;

/// TLS on the gRPC port (`grpc.tls.*`); plaintext when no certificate is
/// named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsSettings {
    /// PEM: the server certificate, then its chain.
    pub cert_file: String,
    pub key_file: String,
    /// PEM bundle of the CAs whose client certificates are verified.
    pub client_ca_file: String,
    pub client_auth: ClientAuth,
    /// How often the files are checked for a change (SIGHUP: at once).
    pub reload_interval_secs: u64,
}

impl GrpcTlsSettings {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: &str| SettingsError::Invalid { key, reason: reason.into() };
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (false, true) => return Err(invalid("grpc.tls.key_file", "cert_file needs its key")),
            (true, false) => {
                return Err(invalid("grpc.tls.cert_file", "key_file needs its certificate"));
            }
            _ => {}
        }
        if !self.enabled()
            && (self.client_auth != ClientAuth::None || !self.client_ca_file.is_empty())
        {
            return Err(invalid(
                "grpc.tls.client_auth",
                "client certificates need TLS: set cert_file and key_file",
            ));
        }
        if self.client_auth != ClientAuth::None && self.client_ca_file.is_empty() {
            return Err(invalid(
                "grpc.tls.client_ca_file",
                "client_auth optional or required needs the CAs to verify against",
            ));
        }
        if self.client_auth == ClientAuth::None && !self.client_ca_file.is_empty() {
            return Err(invalid(
                "grpc.tls.client_auth",
                "client_ca_file is set: say optional or required",
            ));
        }
        if !(1..=10).contains(&self.reload_interval_secs) {
            return Err(invalid(
                "grpc.tls.reload_interval_secs",
                "must be 1 to 10 (a change is seen within it)",
            ));
        }
        Ok(())
    }
}

/// A PostgreSQL URL's `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext (also when the URL names no sslmode).
    Disable,
    /// TLS when the server offers it, its certificate not checked.
    Prefer,
    /// TLS, the certificate not checked.
    Require,
    /// TLS, the certificate checked against the CA.
    VerifyCa,
    /// TLS, the certificate checked against the CA and the host name.
    VerifyFull,
}

impl SslMode {
    /// The `sslmode` of `url`; an unknown or unsupported one is refused.
    pub fn of(url: &str) -> Result<Self, String> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let mode = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| *name == "sslmode")
            .map(|(_, value)| value);
        match mode {
            None | Some("disable") => Ok(Self::Disable),
            Some("prefer") => Ok(Self::Prefer),
            Some("require") => Ok(Self::Require),
            Some("verify-ca") => Ok(Self::VerifyCa),
            Some("verify-full") => Ok(Self::VerifyFull),
            Some(other) => Err(format!(
                "sslmode={other} is not supported: use disable, prefer, require, verify-ca or \
                 verify-full"
            )),
        }
    }

    /// The URL as the PostgreSQL driver takes it: it knows disable, prefer
    /// and require; the certificate checks of verify-* are the TLS
    /// configuration's.
    pub fn driver_url(self, url: &str) -> String {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
            .map(str::to_owned)
            .collect();
        params.push(
            match self {
                Self::Disable => "sslmode=disable",
                Self::Prefer => "sslmode=prefer",
                Self::Require | Self::VerifyCa | Self::VerifyFull => "sslmode=require",
            }
            .to_owned(),
        );
        format!("{base}?{}", params.join("&"))
    }
}

/// Whether the gRPC port asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Never asked for.
    None,
    /// Asked for, verified when presented, not required.
    Optional,
    /// Required: a handshake without a valid one fails.
    Required,
}

//! Configuration: typed settings ([`settings`]), layered with the `config`
//! crate ([`layers`] for the order and each value's origin), what the
//! production layer refuses ([`safety`]), and `auth-service config`
//! ([`report`]); the TLS settings and `sslmode` in `tls`.
//!
//! Unknown keys are rejected and every error names the offending key, so a
//! typo fails the start instead of silently keeping a default.

mod layers;
mod report;
mod safety;
mod settings;
mod tls;

use std::path::PathBuf;

use config::Config;

pub use self::{
    layers::{CONFIG_DIR_VARIABLE, ConfigDir, Inputs, NON_SETTING_VARIABLES, Origin, Resolved},
    report::{redact_urls, render},
    safety::{REFUSABLE, Refusal},
    settings::*,
    tls::{ClientAuth, GrpcTlsSettings, SslMode},
};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(
        "APP_ENV={value:?} is not one of local, docker, production, and there is no file for it \
         (looked for {looked_in})"
    )]
    UnknownEnvironment { value: String, looked_in: String },
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{origin}: {reason}")]
    Malformed { origin: Origin, reason: String },
    #[error("{origin}: `{key}` is not a setting")]
    UnknownKey { key: String, origin: Origin },
    #[error(
        "environment variable {0} looks like a setting but is not one: settings are \
         AUTH__<SECTION>__<KEY>, with two underscores after AUTH"
    )]
    LookalikeVariable(String),
    #[error(
        "APP_ENV=production refuses unsafe settings: {}. Fix them, or allow one you really \
         mean with AUTH__UNSAFE__ALLOW=<key>[,<key>]",
        .0.iter().map(|r| format!("`{}` ({}): {}", r.key, r.origin, r.reason)).collect::<Vec<_>>().join("; ")
    )]
    Refused(Vec<RefusedSetting>),
    #[error("`{key}`: {error}")]
    Tls { key: &'static str, error: crate::tls::MaterialError },
}

/// A refused setting and the layer its value came from.
#[derive(Debug, Clone)]
pub struct RefusedSetting {
    pub key: &'static str,
    pub origin: String,
    pub reason: String,
}

/// Settings as the service starts with them, and how they were arrived at.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub resolved: Resolved,
    /// Unsafe settings the production layer let through by `unsafe.allow`.
    pub allowed: Vec<Refusal>,
    /// Worth a warning at start.
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Logs what was loaded, from where, and every unsafe setting allowed.
    pub fn log(&self) {
        tracing::info!(
            app_env = self.resolved.app_env.as_deref().unwrap_or(""),
            backend = %self.settings.storage.backend,
            layers = %self.resolved.layers.join(" → "),
            "configuration loaded"
        );
        for allowed in &self.allowed {
            tracing::warn!(
                key = allowed.key,
                reason = %allowed.reason,
                "UNSAFE SETTING allowed by unsafe.allow"
            );
        }
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
    }
}

impl Settings {
    /// Loads every layer, validates, and applies the production layer's
    /// refusals: what the service starts with, or why it must not start.
    pub fn load(inputs: &Inputs) -> Result<Loaded, SettingsError> {
        let resolved = Resolved::read(inputs)?;
        let settings = Self::from_config(resolved.config()?)?;
        settings.check_tls_files()?;
        let review = safety::review(&settings, inputs.app_env.as_deref() == Some("production"));
        if !review.refused.is_empty() {
            let origin =
                |key: &str| resolved.origin(key).map_or_else(String::new, ToString::to_string);
            return Err(SettingsError::Refused(
                review
                    .refused
                    .into_iter()
                    .map(|r| RefusedSetting { key: r.key, origin: origin(r.key), reason: r.reason })
                    .collect(),
            ));
        }
        Ok(Loaded { settings, resolved, allowed: review.allowed, warnings: review.warnings })
    }

    /// The TLS files the settings name load: what the start would refuse
    /// (a missing or unreadable file, a key that does not match its
    /// certificate, a CA file with no certificate) stops it here, naming
    /// the setting and the file.
    fn check_tls_files(&self) -> Result<(), SettingsError> {
        use crate::tls;
        let tls_error = |key| move |error| SettingsError::Tls { key, error };
        let grpc = &self.grpc.tls;
        if grpc.enabled() {
            let (cert, key) =
                (std::path::Path::new(&grpc.cert_file), std::path::Path::new(&grpc.key_file));
            tls::certified_key(cert, key).map_err(tls_error("grpc.tls.cert_file"))?;
            if !grpc.client_ca_file.is_empty() {
                tls::ca_roots(std::path::Path::new(&grpc.client_ca_file))
                    .map_err(tls_error("grpc.tls.client_ca_file"))?;
            }
        }
        let verified = [self.postgres.url.expose(), self.postgres.migration_url.expose()]
            .into_iter()
            .filter_map(|url| SslMode::of(url).ok())
            .any(|mode| matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull));
        if verified || !self.postgres.ca_file.is_empty() {
            tls::client_roots(&self.postgres.ca_file).map_err(tls_error("postgres.ca_file"))?;
        }
        let rediss = std::iter::once(self.redis.url.expose())
            .chain(self.redis.seed_urls())
            .any(|url| url.starts_with("rediss://"));
        if rediss || !self.redis.ca_file.is_empty() {
            tls::client_roots(&self.redis.ca_file).map_err(tls_error("redis.ca_file"))?;
        }
        Ok(())
    }

    /// The built-in defaults alone: no files, no environment (tests).
    pub fn defaults() -> Result<Self, SettingsError> {
        Self::load(&Inputs::default()).map(|loaded| loaded.settings)
    }

    fn from_config(config: Config) -> Result<Self, SettingsError> {
        let settings: Self = config.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;

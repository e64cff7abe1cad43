//! Typed settings, layered with the `config` crate (see [`layers`] for the
//! order, [`safety`] for what the production layer refuses, [`report`] for
//! `auth-service config`).
//!
//! Unknown keys are rejected and every error names the offending key, so a
//! typo fails the start instead of silently keeping a default.

mod layers;
mod report;
mod safety;

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use config::Config;
use serde::Deserialize;

pub use self::{
    layers::{CONFIG_DIR_VARIABLE, ConfigDir, Inputs, NON_SETTING_VARIABLES, Origin, Resolved},
    report::{redact_urls, render},
    safety::{REFUSABLE, Refusal},
};
use crate::error::Dependency;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub storage: StorageSettings,
    pub net: NetSettings,
    pub grpc: GrpcSettings,
    pub http: HttpSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub tracing: TracingSettings,
    pub log: LogSettings,
    pub session: SessionSettings,
    pub user_cache: UserCacheSettings,
    pub argon2: Argon2Settings,
    pub login: LoginSettings,
    pub lookup: LookupSettings,
    pub actors: ActorSettings,
    pub metrics: MetricsSettings,
    /// `unsafe` in files and variables (`AUTH__UNSAFE__ALLOW`).
    pub r#unsafe: UnsafeSettings,
}

/// Unsafe settings the production layer is told to accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsafeSettings {
    /// Keys of [`REFUSABLE`] to accept in production anyway.
    pub allow: Vec<String>,
}

/// Which storage the stores use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// SQLite file + sessions in the process: development, single node.
    Embedded,
    /// PostgreSQL + Redis: production, any number of replicas.
    External,
}

impl StorageBackend {
    /// What the user store and the session store run on.
    pub fn dependencies(self) -> [Dependency; 2] {
        match self {
            Self::Embedded => [Dependency::Sqlite, Dependency::Memory],
            Self::External => [Dependency::Postgres, Dependency::Redis],
        }
    }
}

impl fmt::Display for StorageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Embedded => "embedded",
            Self::External => "external",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// Embedded: the directory of the SQLite file, or `:memory:`.
    pub data_dir: String,
    /// Embedded: pooled SQLite connections (readers; writes take turns).
    pub pool_max_size: u32,
    /// Embedded: how long a statement waits for a lock or a connection.
    pub busy_timeout_ms: u64,
    /// Embedded: most sessions, cached users and login counters kept (each).
    pub max_entries: usize,
}

impl StorageSettings {
    pub fn busy_timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    pub addr: SocketAddr,
    pub drain_timeout_secs: u64,
    /// Worker threads serving gRPC, each with its own store actors; 0 = one
    /// per core.
    pub workers: usize,
    pub max_request_bytes: usize,
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
    /// 0 = no keepalive PINGs.
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    /// 0 = connections live until the client closes them.
    pub max_connection_age_secs: u64,
    pub max_connection_age_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSettings {
    /// Proxies (CIDRs) whose `x-forwarded-for` names the client.
    pub trusted_proxies: Vec<String>,
}

impl NetSettings {
    /// The trusted proxies, parsed (validated at load).
    pub fn trusted(&self) -> Vec<crate::net::Cidr> {
        self.trusted_proxies.iter().filter_map(|c| c.parse().ok()).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: SecretUrl,
    pub pool_max_size: u32,
    pub connect_timeout_ms: u64,
    pub query_timeout_ms: u64,
    pub create_database: bool,
    /// `url` leads to a pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`): nothing may outlive a transaction.
    pub transaction_pooler: bool,
    /// Where migrations (and database creation) connect, when not `url`:
    /// they hold a session-level advisory lock, so behind a transaction
    /// pooler they need the database itself. Empty: `url`.
    pub migration_url: SecretUrl,
}

/// How Redis is deployed (`redis.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `redis.url`.
    Standalone,
    /// A master found through the sentinels of `redis.urls`.
    Sentinel,
    /// A Redis Cluster seeded from the nodes of `redis.urls`.
    Cluster,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub mode: RedisMode,
    /// The server, in standalone mode.
    pub url: SecretUrl,
    /// Comma-separated `redis://host:port` URLs: the sentinels (sentinel
    /// mode) or some of the cluster's nodes (cluster mode).
    pub urls: SecretUrl,
    /// The master set the sentinels watch (sentinel mode).
    pub sentinel_master: String,
    pub pool_max_size: u32,
    pub connect_timeout_ms: u64,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    pub otlp_endpoint: String,
    pub service_name: String,
    /// Share of requests without a caller's trace that are traced.
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCacheSettings {
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub threads: usize,
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// Failures per (account, client address) in the window.
    pub max_failures: u32,
    pub window_secs: u64,
    /// Failures per client address across accounts in the window.
    pub max_failures_per_address: u32,
    /// Failures per account across addresses before attempts are delayed.
    pub account_delay_after: u32,
    pub account_delay_step_ms: u64,
    pub account_delay_max_ms: u64,
    /// Least time a failed login takes; 0 = no floor.
    pub failure_floor_ms: u64,
}

impl LoginSettings {
    pub fn failure_floor(&self) -> Duration {
        Duration::from_millis(self.failure_floor_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSettings {
    pub public: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    pub mailbox_capacity: usize,
    pub failure_threshold: u32,
    pub restart_backoff_max_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub sample_interval_secs: u64,
}

/// A connection URL that may embed a password: `Debug` shows only its scheme.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl SecretUrl {
    /// Only the scheme, as `Debug` shows it.
    fn redacted(&self) -> String {
        let scheme = self.0.split_once("://").map_or("?", |(s, _)| s);
        format!("{scheme}://<redacted>")
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Settings {
    /// Loads every layer, validates, and applies the production layer's
    /// refusals: what the service starts with, or why it must not start.
    pub fn load(inputs: &Inputs) -> Result<Loaded, SettingsError> {
        let resolved = Resolved::read(inputs)?;
        let settings = Self::from_config(resolved.config()?)?;
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

    /// The built-in defaults alone: no files, no environment (tests).
    pub fn defaults() -> Result<Self, SettingsError> {
        Self::load(&Inputs::default()).map(|loaded| loaded.settings)
    }

    fn from_config(config: Config) -> Result<Self, SettingsError> {
        let settings: Self = config.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Range checks serde cannot express; each error names its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        fn positive(key: &'static str, value: u64) -> Result<(), SettingsError> {
            if value == 0 {
                return Err(SettingsError::Invalid {
                    key,
                    reason: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        positive("grpc.max_request_bytes", self.grpc.max_request_bytes as u64)?;
        positive("grpc.max_concurrent_streams", self.grpc.max_concurrent_streams.into())?;
        positive("grpc.max_header_list_bytes", self.grpc.max_header_list_bytes.into())?;
        positive("grpc.keepalive_timeout_secs", self.grpc.keepalive_timeout_secs)?;
        positive("storage.pool_max_size", self.storage.pool_max_size.into())?;
        positive("storage.busy_timeout_ms", self.storage.busy_timeout_ms)?;
        positive("storage.max_entries", self.storage.max_entries as u64)?;
        if self.storage.data_dir.trim().is_empty() {
            return Err(SettingsError::Invalid {
                key: "storage.data_dir",
                reason: "must be a directory or \":memory:\"".into(),
            });
        }
        positive("postgres.pool_max_size", self.postgres.pool_max_size.into())?;
        positive("postgres.connect_timeout_ms", self.postgres.connect_timeout_ms)?;
        positive("postgres.query_timeout_ms", self.postgres.query_timeout_ms)?;
        positive("redis.pool_max_size", self.redis.pool_max_size.into())?;
        positive("redis.connect_timeout_ms", self.redis.connect_timeout_ms)?;
        positive("session.ttl_secs", self.session.ttl_secs)?;
        positive("user_cache.ttl_secs", self.user_cache.ttl_secs)?;
        positive("login.max_failures", self.login.max_failures.into())?;
        positive("login.window_secs", self.login.window_secs)?;
        positive("login.max_failures_per_address", self.login.max_failures_per_address.into())?;
        for proxy in &self.net.trusted_proxies {
            proxy.parse::<crate::net::Cidr>().map_err(|e| SettingsError::Invalid {
                key: "net.trusted_proxies",
                reason: format!("{proxy:?}: {e}"),
            })?;
        }
        positive("argon2.queue_capacity", self.argon2.queue_capacity as u64)?;
        positive("actors.mailbox_capacity", self.actors.mailbox_capacity as u64)?;
        positive("actors.failure_threshold", self.actors.failure_threshold.into())?;
        positive("actors.restart_backoff_max_secs", self.actors.restart_backoff_max_secs)?;
        positive("metrics.sample_interval_secs", self.metrics.sample_interval_secs)?;
        argon2::Params::new(
            self.argon2.memory_kib,
            self.argon2.iterations,
            self.argon2.parallelism,
            None,
        )
        .map_err(|e| SettingsError::Invalid {
            key: "argon2.memory_kib/iterations/parallelism",
            reason: e.to_string(),
        })?;
        for (key, url, schemes) in [
            ("postgres.url", self.postgres.url.expose(), &["postgres", "postgresql"][..]),
            (
                "postgres.migration_url",
                match self.postgres.migration_url.expose() {
                    "" => self.postgres.url.expose(),
                    url => url,
                },
                &["postgres", "postgresql"][..],
            ),
            ("redis.url", self.redis.url.expose(), &["redis", "rediss", "redis+unix", "unix"][..]),
        ] {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !scheme.is_some_and(|s| schemes.contains(&s)) {
                return Err(SettingsError::Invalid {
                    key,
                    reason: format!("expected a URL starting with {}://", schemes[0]),
                });
            }
        }
        // Parsed here (not only when the session store starts) so a bad URL
        // stops the start instead of failing every Redis call.
        bb8_redis::redis::Client::open(self.redis.url.expose())
            .map_err(|e| SettingsError::Invalid { key: "redis.url", reason: e.to_string() })?;
        self.redis.validate_mode()?;
        for key in &self.r#unsafe.allow {
            if !REFUSABLE.contains(&key.as_str()) {
                return Err(SettingsError::Invalid {
                    key: "unsafe.allow",
                    reason: format!("{key:?} is none of {}", REFUSABLE.join(", ")),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err(SettingsError::Invalid {
                key: "tracing.sample_ratio",
                reason: "must be between 0 and 1".into(),
            });
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| SettingsError::Invalid { key: "log.filter", reason: e.to_string() })?;
        let endpoint = &self.tracing.otlp_endpoint;
        if !endpoint.is_empty()
            && !endpoint.starts_with("http://")
            && !endpoint.starts_with("https://")
        {
            return Err(SettingsError::Invalid {
                key: "tracing.otlp_endpoint",
                reason: "expected empty or an http(s):// URL".into(),
            });
        }
        Ok(())
    }

    /// Worker arbiters: explicit, or one per core.
    pub fn worker_count(&self) -> usize {
        if self.grpc.workers > 0 {
            return self.grpc.workers;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }

    /// Hasher threads: explicit, or all cores but one (at least one).
    pub fn hasher_threads(&self) -> usize {
        if self.argon2.threads > 0 {
            return self.argon2.threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    }
}

impl GrpcSettings {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.keepalive_interval_secs > 0)
            .then(|| Duration::from_secs(self.keepalive_interval_secs))
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_secs)
    }

    /// The age at which a connection is closed, and the grace its calls get.
    pub fn max_connection_age(&self) -> Option<(Duration, Duration)> {
        (self.max_connection_age_secs > 0).then(|| {
            (
                Duration::from_secs(self.max_connection_age_secs),
                Duration::from_secs(self.max_connection_age_grace_secs),
            )
        })
    }
}

impl RedisSettings {
    /// Sentinel and cluster modes need seed URLs (and sentinel mode a
    /// master name); each URL must parse.
    fn validate_mode(&self) -> Result<(), SettingsError> {
        if self.mode == RedisMode::Standalone {
            return Ok(());
        }
        let seeds = self.seed_urls();
        if seeds.is_empty() {
            return Err(SettingsError::Invalid {
                key: "redis.urls",
                reason: "sentinel and cluster modes need at least one redis:// URL".into(),
            });
        }
        for url in seeds {
            bb8_redis::redis::Client::open(url).map_err(|e| SettingsError::Invalid {
                key: "redis.urls",
                reason: format!("{}: {e}", SecretUrl::new(url).redacted()),
            })?;
        }
        if self.mode == RedisMode::Sentinel && self.sentinel_master.trim().is_empty() {
            return Err(SettingsError::Invalid {
                key: "redis.sentinel_master",
                reason: "sentinel mode needs the name of the master set".into(),
            });
        }
        Ok(())
    }
}

impl PostgresSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The URL with a TCP connect timeout (libpq's `connect_timeout`, whole
    /// seconds) unless it sets one: an unreachable host then fails a connect
    /// attempt in seconds instead of the OS's minutes.
    pub fn url_with_connect_timeout(&self) -> String {
        self.with_connect_timeout(self.url.expose())
    }

    /// [`Self::url_with_connect_timeout`] for migrations: `migration_url`,
    /// or `url` when that is empty.
    pub fn migration_url_with_connect_timeout(&self) -> String {
        match self.migration_url.expose() {
            "" => self.url_with_connect_timeout(),
            url => self.with_connect_timeout(url),
        }
    }

    fn with_connect_timeout(&self, url: &str) -> String {
        if url.contains("connect_timeout=") {
            return url.to_owned();
        }
        let secs = self.connect_timeout_ms.div_ceil(1000).max(1);
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}connect_timeout={secs}")
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }
}

impl RedisSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The sentinels' or the cluster nodes' URLs from `redis.urls`.
    pub fn seed_urls(&self) -> Vec<&str> {
        self.urls.expose().split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use super::*;

    /// The built-in layers under `app_env`, with `variables` set.
    fn inputs(app_env: Option<&str>, variables: &[(&str, &str)]) -> Inputs {
        Inputs {
            app_env: app_env.map(str::to_owned),
            config_dir: ConfigDir::None,
            variables: variables.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn load(variables: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load(&inputs(None, variables)).map(|l| l.settings)
    }

    /// A directory of its own under the target dir, emptied.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("auth-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).expect("scratch dir");
        dir
    }

    #[test]
    fn embedded_defaults_match_the_contract() {
        let s = Settings::defaults().expect("defaults load");
        assert_eq!(s.storage.backend, StorageBackend::Embedded, "no configuration: embedded");
        assert_eq!(s.storage.data_dir, "./data");
        assert_eq!(s.grpc.addr.to_string(), "0.0.0.0:5000");
        assert_eq!(s.grpc.max_request_bytes, 64 * 1024);
        assert_eq!(s.http.addr.to_string(), "0.0.0.0:7070");
        assert_eq!(s.postgres.url.expose(), safety::SAMPLE_POSTGRES_URL);
        assert_eq!(s.redis.url.expose(), safety::SAMPLE_REDIS_URL);
        assert_eq!(s.tracing.otlp_endpoint, "");
        assert_eq!(s.session.ttl_secs, 3600);
        assert_eq!((s.argon2.memory_kib, s.argon2.iterations, s.argon2.parallelism), (19456, 2, 1));
        assert_eq!((s.login.max_failures, s.login.window_secs), (5, 900));
        assert!(!s.lookup.public);
        assert!(s.r#unsafe.allow.is_empty());
    }

    #[test]
    fn every_built_in_layer_selects_external_storage_and_matches_its_file() {
        for (env, text) in layers::BUILT_IN_LAYERS {
            let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/{env}.toml"));
            assert_eq!(std::fs::read_to_string(on_disk).expect(env), *text, "{env}");
            let mut variables = vec![];
            if *env == "production" {
                variables = vec![
                    ("AUTH__POSTGRES__URL", "postgres://auth:s3cret@db.internal/auth_db"),
                    ("AUTH__REDIS__URL", "redis://:s3cret@cache.internal:6379/0"),
                ];
            }
            let loaded = Settings::load(&inputs(Some(env), &variables)).expect(env);
            assert_eq!(loaded.settings.storage.backend, StorageBackend::External, "{env}");
            assert_eq!(loaded.resolved.origin("storage.backend"), Some(&Origin::BuiltInLayer(env)));
        }
    }

    #[test]
    fn the_app_env_layer_does_not_depend_on_the_working_directory() {
        let empty = scratch("empty");
        std::fs::remove_dir(empty.join("config")).expect("no config dir");
        let inputs = Inputs {
            app_env: Some("local".into()),
            config_dir: ConfigDir::Beside(empty),
            variables: BTreeMap::new(),
        };
        let loaded = Settings::load(&inputs).expect("local");
        assert_eq!(loaded.settings.storage.backend, StorageBackend::External);
        assert_eq!(loaded.resolved.layers, ["built-in default", "built-in local layer"]);
    }

    #[test]
    fn files_override_the_built_in_layers_and_say_where_they_are() {
        let dir = scratch("override");
        std::fs::write(dir.join("config/local.toml"), "[session]\nttl_secs = 60\n").expect("write");
        std::fs::write(dir.join("config/default.toml"), "[grpc]\nworkers = 3\n").expect("write");
        let inputs = Inputs {
            app_env: Some("local".into()),
            config_dir: ConfigDir::Beside(dir.clone()),
            variables: BTreeMap::from([("AUTH__LOGIN__MAX_FAILURES".into(), "7".into())]),
        };
        let loaded = Settings::load(&inputs).expect("loads");
        let s = &loaded.settings;
        assert_eq!((s.session.ttl_secs, s.grpc.workers, s.login.max_failures), (60, 3, 7));
        let local = dir.join("config/local.toml");
        assert_eq!(loaded.resolved.origin("session.ttl_secs"), Some(&Origin::File(local.clone())));
        assert_eq!(
            loaded.resolved.origin("login.max_failures"),
            Some(&Origin::Variable("AUTH__LOGIN__MAX_FAILURES".into()))
        );
        assert_eq!(loaded.resolved.origin("grpc.addr"), Some(&Origin::BuiltInDefault));
        let layers = loaded.resolved.layers.join(" | ");
        assert!(layers.contains(&local.display().to_string()), "{layers}");

        // A file for an environment of the operator's own is a layer too.
        std::fs::write(dir.join("config/staging.toml"), "[storage]\nbackend = \"external\"\n")
            .expect("write");
        let staging = Inputs { app_env: Some("staging".into()), ..inputs.clone() };
        assert_eq!(
            Settings::load(&staging).expect("staging").settings.storage.backend,
            StorageBackend::External
        );

        // A named directory must exist.
        let missing = Inputs { config_dir: ConfigDir::Named(dir.join("nope")), ..inputs };
        let err = Settings::load(&missing).expect_err("missing dir").to_string();
        assert!(err.contains("nope") && err.contains("--config-dir"), "{err}");
    }

    #[test]
    fn an_unknown_app_env_names_the_value_and_where_it_looked() {
        let dir = scratch("unknown-env");
        let inputs = Inputs {
            app_env: Some("prod".into()),
            config_dir: ConfigDir::Beside(dir.clone()),
            variables: BTreeMap::new(),
        };
        let err = Settings::load(&inputs).expect_err("unknown").to_string();
        assert!(err.contains("\"prod\""), "{err}");
        assert!(err.contains(&dir.join("config/prod.toml").display().to_string()), "{err}");
    }

    #[test]
    fn lookalike_variables_stop_the_start_and_documented_ones_do_not() {
        let err = load(&[("AUTH_SESSION__TTL_SECS", "60")]).expect_err("lookalike").to_string();
        assert!(err.contains("AUTH_SESSION__TTL_SECS"), "{err}");
        let err = load(&[("AUTH__SESSION__TTL", "60")]).expect_err("no such key").to_string();
        assert!(err.contains("AUTH__SESSION__TTL") && err.contains("session.ttl"), "{err}");
        load(&[("AUTH_ADMIN_PASSWORD", "x"), ("AUTH_OFFLINE_RUST", "debian"), ("AUTHOR", "me")])
            .expect("not settings, and allowed");
        load(&[(CONFIG_DIR_VARIABLE, "/etc/auth")]).expect("read by the loader, not a setting");
    }

    #[test]
    fn production_refuses_unsafe_settings_naming_each_key() {
        let production = |variables: &[(&str, &str)]| {
            Settings::load(&inputs(Some("production"), variables))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let good_pg = ("AUTH__POSTGRES__URL", "postgres://auth:s3cret@10.0.0.5:5432/auth_db");
        let good_redis = ("AUTH__REDIS__URL", "redis://:s3cret@127.0.0.1:6379/0");
        production(&[good_pg, good_redis]).expect("a loopback URL alone is fine");

        let err = production(&[good_redis]).expect_err("sample postgres url");
        assert!(err.contains("`postgres.url` (built-in default)"), "{err}");
        assert!(!err.contains("redis.url"), "{err}");
        let err = production(&[good_pg]).expect_err("sample redis url");
        assert!(err.contains("`redis.url`"), "{err}");
        let err = production(&[
            ("AUTH__POSTGRES__URL", "postgres://postgres:postgres@db.internal/auth_db"),
            good_redis,
        ])
        .expect_err("sample credentials");
        assert!(err.contains("postgres.url") && err.contains("postgres:postgres"), "{err}");
        let err = production(&[good_pg, good_redis, ("AUTH__STORAGE__BACKEND", "embedded")])
            .expect_err("embedded");
        assert!(err.contains("storage.backend"), "{err}");
        let err = production(&[good_pg, good_redis, ("AUTH__LOOKUP__PUBLIC", "true")])
            .expect_err("public lookups");
        assert!(err.contains("lookup.public"), "{err}");
        let err =
            production(&[good_pg, good_redis, ("AUTH__LOG__FILTER", "info,auth_service=debug")])
                .expect_err("debug logs");
        assert!(err.contains("log.filter"), "{err}");
        let err = production(&[good_pg, good_redis, ("RUST_LOG", "debug")])
            .expect_err("debug via RUST_LOG");
        assert!(err.contains("`log.filter` (env RUST_LOG)"), "{err}");

        // unsafe.allow admits exactly the keys it names.
        let allowed = [good_redis, ("AUTH__UNSAFE__ALLOW", "postgres.url")];
        let loaded = Settings::load(&inputs(Some("production"), &allowed)).expect("allowed");
        assert_eq!(loaded.allowed.iter().map(|r| r.key).collect::<Vec<_>>(), ["postgres.url"]);
        let err = production(&[
            good_redis,
            ("AUTH__UNSAFE__ALLOW", "postgres.url"),
            ("AUTH__LOOKUP__PUBLIC", "true"),
        ])
        .expect_err("only the named key");
        assert!(err.contains("lookup.public") && !err.contains("`postgres.url`"), "{err}");
        let err = production(&[good_pg, good_redis, ("AUTH__UNSAFE__ALLOW", "everything")])
            .expect_err("unknown key");
        assert!(err.contains("unsafe.allow") && err.contains("everything"), "{err}");

        // Outside production nothing is refused.
        load(&[("AUTH__LOOKUP__PUBLIC", "true"), ("AUTH__LOG__FILTER", "debug")]).expect("dev");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |key: &str, variable: &str, value: &str| {
            let e = load(&[(variable, value)]).expect_err(variable).to_string();
            assert!(e.contains(key), "{key} in {e}");
        };
        err("argon2.memory_kib", "AUTH__ARGON2__MEMORY_KIB", "lots");
        err("session.ttl_secs", "AUTH__SESSION__TTL_SECS", "0");
        err("postgres.url", "AUTH__POSTGRES__URL", "mysql://x");
        err("redis.url", "AUTH__REDIS__URL", "redis://host:notaport");
        err("grpc.addr", "AUTH__GRPC__ADDR", "not an address");
        err("argon2", "AUTH__ARGON2__ITERATIONS", "0");
        err("tracing.sample_ratio", "AUTH__TRACING__SAMPLE_RATIO", "1.5");
        err("storage.backend", "AUTH__STORAGE__BACKEND", "etcd");
        err("net.trusted_proxies", "AUTH__NET__TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/33");
        err("storage.data_dir", "AUTH__STORAGE__DATA_DIR", " ");
    }

    #[test]
    fn redis_modes_need_their_seeds() {
        let defaults = load(&[]).expect("defaults");
        assert_eq!(defaults.redis.mode, RedisMode::Standalone);

        let err = load(&[("AUTH__REDIS__MODE", "cluster")]).expect_err("no seeds").to_string();
        assert!(err.contains("redis.urls"), "{err}");
        let err =
            load(&[("AUTH__REDIS__MODE", "sentinel"), ("AUTH__REDIS__URLS", "redis://s1:26379")])
                .expect_err("no master name")
                .to_string();
        assert!(err.contains("redis.sentinel_master"), "{err}");
        let err = load(&[
            ("AUTH__REDIS__MODE", "cluster"),
            ("AUTH__REDIS__URLS", "redis://a:1,redis://:pw@b:x"),
        ])
        .expect_err("bad seed")
        .to_string();
        assert!(err.contains("redis.urls") && !err.contains("pw"), "named, not shown: {err}");
        assert!(load(&[("AUTH__REDIS__MODE", "raft")]).is_err());

        let cluster = load(&[
            ("AUTH__REDIS__MODE", "cluster"),
            ("AUTH__REDIS__URLS", " redis://10.0.0.1:7000, redis://10.0.0.2:7000 ,"),
        ])
        .expect("cluster");
        assert_eq!(cluster.redis.seed_urls(), ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
        let sentinel = load(&[
            ("AUTH__REDIS__MODE", "sentinel"),
            ("AUTH__REDIS__URLS", "redis://s1:26379,redis://s2:26379,redis://s3:26379"),
            ("AUTH__REDIS__SENTINEL_MASTER", "auth"),
        ])
        .expect("sentinel");
        assert_eq!(sentinel.redis.seed_urls().len(), 3);
    }

    #[test]
    fn unknown_keys_in_files_name_the_file() {
        let dir = scratch("unknown-key");
        std::fs::write(dir.join("config/default.toml"), "[session]\nttl = 5\n").expect("write");
        let inputs = Inputs {
            app_env: None,
            config_dir: ConfigDir::Named(dir.join("config")),
            variables: BTreeMap::new(),
        };
        let err = Settings::load(&inputs).expect_err("unknown key").to_string();
        assert!(err.contains("session.ttl") && err.contains("default.toml"), "{err}");
    }

    #[test]
    fn the_report_shows_every_key_with_its_origin_and_no_password() {
        let loaded = Settings::load(&inputs(
            Some("local"),
            &[("AUTH__POSTGRES__URL", "postgres://auth:hunter2@db/auth_db")],
        ))
        .expect("loads");
        let text = render(&loaded.resolved);
        assert!(!text.contains("hunter2"), "{text}");
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("{key}: {text}"))
        };
        assert!(line("postgres.url").contains("auth:<redacted>@db"), "{text}");
        assert!(line("postgres.url").ends_with("# env AUTH__POSTGRES__URL"), "{text}");
        assert!(line("storage.backend").ends_with("# built-in local layer"), "{text}");
        assert!(line("grpc.addr").ends_with("# built-in default"), "{text}");
        let keys = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(keys, loaded.resolved.values.len());
    }

    #[test]
    fn postgres_urls_get_a_connect_timeout() {
        let mut s = Settings::defaults().expect("defaults");
        s.postgres.url = SecretUrl::new("postgres://h/db");
        s.postgres.connect_timeout_ms = 1500;
        assert_eq!(s.postgres.url_with_connect_timeout(), "postgres://h/db?connect_timeout=2");
        s.postgres.url = SecretUrl::new("postgres://h/db?sslmode=require");
        assert_eq!(
            s.postgres.url_with_connect_timeout(),
            "postgres://h/db?sslmode=require&connect_timeout=2"
        );
        s.postgres.url = SecretUrl::new("postgres://h/db?connect_timeout=9");
        assert_eq!(s.postgres.url_with_connect_timeout(), "postgres://h/db?connect_timeout=9");
    }

    #[test]
    fn secret_urls_are_redacted() {
        let url = SecretUrl::new("postgres://u:hunter2@db/x");
        assert_eq!(format!("{url:?}"), "postgres://<redacted>");
    }
}

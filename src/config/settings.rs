//! The typed settings, section by section, and the range checks serde
//! cannot express (each error names its key).

use std::{fmt, net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::{
    SettingsError,
    safety::REFUSABLE,
    tls::{GrpcTlsSettings, SslMode},
};
use crate::error::Dependency;

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
    pub admin: AdminSettings,
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
    pub tls: GrpcTlsSettings,
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
    /// PEM bundle of the CAs that sign the server's certificate, for
    /// `sslmode=verify-ca|verify-full`; empty: the system's roots.
    pub ca_file: String,
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
    /// PEM bundle of the CAs that sign the servers' certificates, for
    /// `rediss://` URLs; empty: the system's roots.
    pub ca_file: String,
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
    /// Peer identities (client certificates' URI or DNS SANs) that may look
    /// users up without a session.
    pub allowed_peers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Peer identities that may call AdminService.
    pub allowed_peers: Vec<String>,
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
        self.grpc.tls.validate()?;
        for (key, url) in [
            ("postgres.url", self.postgres.url.expose()),
            ("postgres.migration_url", self.postgres.migration_url.expose()),
        ] {
            SslMode::of(url).map_err(|reason| SettingsError::Invalid { key, reason })?;
        }
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

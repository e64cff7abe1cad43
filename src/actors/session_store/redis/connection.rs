//! How the session store reaches Redis in each deployment mode
//! (`redis.mode`), behind one connection type the repository's commands run
//! on:
//!
//! - `standalone`: one server at `redis.url` (bb8-redis' own connector).
//! - `sentinel`: the master of `redis.sentinel_master`, found by asking the
//!   sentinels of `redis.urls` on every new connection, so after a failover
//!   the pool's replacement connections go to the promoted replica. The
//!   master's password and database are those of `redis.url` (whose host
//!   the sentinels' answer replaces).
//! - `cluster`: a cluster connection seeded from `redis.urls`; it learns the
//!   slot map and sends each command to the node holding its key's slot.
//!
//! Every mode multiplexes: one connection carries many callers' commands,
//! so the bb8 pool stays small and its slot is handed straight back. The
//! pool's manager marks a connection broken when a command finds it so.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bb8_redis::{
    bb8::{self, Pool},
    redis::{
        self, AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo as _, Pipeline, RedisError,
        RedisFuture, TlsCertificates, TlsMode, Value,
        aio::{ConnectionLike, MultiplexedConnection},
        cluster::{ClusterClient, ClusterClientBuilder},
        cluster_async::ClusterConnection,
        sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
    },
};
use tokio::sync::Mutex;

use crate::{
    actors::pool::{ConnectFailures, Watched, uptime_ms},
    config::{RedisMode, RedisSettings},
    error::{Dependency, DependencyError},
};

pub type RedisPool = Pool<Watched<RedisManager>>;

/// How long a command waits for its reply, in every mode (redis' own default
/// for multiplexed connections, made explicit so the modes agree).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// A connection commands run on, whatever the mode.
#[derive(Clone)]
pub enum RedisConn {
    /// A standalone server, or the master the sentinels named.
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Opens connections for the pool in the configured mode; over TLS for
/// `rediss://` URLs, against `redis.ca_file` or the system's roots.
pub enum RedisConnector {
    Standalone(Client),
    /// Discovery asks the sentinels one at a time, hence the lock; it runs
    /// only when the pool opens a connection.
    Sentinel(Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

impl RedisConnector {
    /// Builds the connector without connecting (the service starts while
    /// Redis is down). URLs were checked when the settings loaded.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        // The CA bundle, when one is named (else the system's roots).
        let ca = match settings.ca_file.as_str() {
            "" => None,
            file => Some(std::fs::read(file)?),
        };
        let certificates = || TlsCertificates { client_tls: None, root_cert: ca.clone() };
        let tls = |url: &str| url.starts_with("rediss://");
        Ok(match settings.mode {
            RedisMode::Standalone => Self::Standalone(if tls(settings.url.expose()) {
                Client::build_with_tls(settings.url.expose(), certificates())?
            } else {
                Client::open(settings.url.expose())?
            }),
            RedisMode::Sentinel => {
                let master = settings.url.expose().into_connection_info()?;
                let master = master.redis_settings();
                let sentinels = settings
                    .seed_urls()
                    .into_iter()
                    .map(|url| Ok(url.into_connection_info()?.addr().clone()))
                    .collect::<Result<Vec<_>, RedisError>>()?;
                let mut builder = SentinelClientBuilder::new(
                    sentinels,
                    &settings.sentinel_master,
                    SentinelServerType::Master,
                )?
                .set_client_to_redis_db(master.db());
                if ca.is_some() && settings.seed_urls().into_iter().all(tls) {
                    builder = builder.set_client_to_sentinel_certificates(certificates());
                }
                if let Some(username) = master.username() {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = master.password() {
                    builder = builder.set_client_to_redis_password(password);
                }
                if tls(settings.url.expose()) {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_certificates(certificates());
                }
                Self::Sentinel(Mutex::new(builder.build()?))
            }
            RedisMode::Cluster => Self::Cluster({
                let builder = ClusterClientBuilder::new(settings.seed_urls());
                let builder = if ca.is_some() { builder.certs(certificates()) } else { builder };
                builder
                    .connection_timeout(settings.connect_timeout())
                    .response_timeout(RESPONSE_TIMEOUT)
                    // A command whose node is gone fails within about the
                    // response timeout instead of retrying for seconds: the
                    // caller answers UNAVAILABLE and its client retries.
                    // MOVED/ASK redirections during a resharding are
                    // followed within these retries.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?
            }),
        })
    }

    pub async fn connect(&self) -> Result<RedisConn, RedisError> {
        match self {
            Self::Standalone(client) => {
                let config =
                    AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(RedisConn::Single)
            }
            Self::Sentinel(client) => {
                let config =
                    AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
                client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await
                    .map(RedisConn::Single)
            }
            Self::Cluster(client) => client.get_async_connection().await.map(RedisConn::Cluster),
        }
    }

    pub async fn is_valid(conn: &mut RedisConn) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await
    }
}

/// The mode's connector, plus a flag that marks a connection broken.
///
/// A multiplexed connection serves many callers at once, so a caller takes
/// a clone of it and hands the pooled slot straight back (holding the slot
/// for the command would serialise the pipeline). bb8-redis never reports a
/// broken connection; rather than PING on every checkout (a second round
/// trip per command), a command that fails on the connection flags it, and
/// the pool replaces it when the slot comes back.
pub struct RedisManager(RedisConnector);

pub struct RedisConnection {
    pub conn: RedisConn,
    pub health: Arc<ConnectionHealth>,
}

/// What the commands on one multiplexed connection have seen of it.
#[derive(Default)]
pub struct ConnectionHealth {
    /// A command failed in a way that leaves the connection unusable.
    pub broken: AtomicBool,
    /// When a reply last arrived, in ms of [`uptime_ms`].
    last_reply_ms: AtomicU64,
}

impl ConnectionHealth {
    pub fn replied(&self) {
        self.last_reply_ms.store(uptime_ms(), Ordering::Relaxed);
    }

    /// A reply arrived on this connection after `since` ([`uptime_ms`]).
    /// When a command times out, that tells congestion from a silent Redis:
    /// Redis answered while ours waited, so it is up and ours queued behind
    /// our own load (the client's 500 ms response timeout counts from when
    /// the command was handed to the connection, and a saturated replica
    /// reads replies late). Nothing since: Redis went quiet.
    pub fn replied_since(&self, since: u64) -> bool {
        self.last_reply_ms.load(Ordering::Relaxed) >= since
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let conn = self.0.connect().await?;
        Ok(RedisConnection { conn, health: Arc::default() })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        RedisConnector::is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.health.broken.load(Ordering::Relaxed)
    }
}

/// Builds the pool without connecting (the service starts while Redis is
/// down). Invalid URLs were rejected when the settings loaded.
pub fn build_pool(
    settings: &RedisSettings,
    max_size: u32,
    failures: ConnectFailures,
) -> Result<RedisPool, DependencyError> {
    let manager = RedisConnector::new(settings)
        .map_err(|e| DependencyError::rejected(Dependency::Redis, "configure", e))?;
    Ok(Pool::builder()
        .max_size(max_size.max(1))
        .connection_timeout(settings.connect_timeout())
        // One connect attempt per checkout, as for Postgres; callers learn
        // of its failure through `failures` at once.
        .retry_connection(false)
        // Broken connections are flagged by the commands that hit them.
        .test_on_check_out(false)
        .build_unchecked(Watched { inner: RedisManager(manager), failures }))
}

//! The composition root: the actor system built from settings. The server
//! (`app`) and the CLI (`cli`) both start it, so both run the same stores
//! and the same use cases ([`AuthService`]).

use std::{sync::Arc, time::Duration};

use crate::{
    actors::{
        ActorClient, ActorStats, CheckHealth,
        health::ServiceHealth,
        metrics::{self as sampler, MetricsSampler, Sampled},
        password_hasher::{self, Argon2Hasher, PasswordHasher},
        session_store::{self, SessionBackendSettings, SessionPolicy, SessionStore},
        store::first_failure,
        user_store::{self, SqliteUserRepository, UserDatabase, UserStore, sqlite},
    },
    config::{Settings, StorageBackend},
    service::{AuthService, Policy, Stores},
    telemetry::metrics::Metrics,
    workers::Workers,
};

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("argon2 parameters: {0}")]
    Hasher(#[from] password_hasher::HashError),
    #[error(transparent)]
    EmbeddedStorage(#[from] sqlite::OpenError),
    #[error("{0} not ready after {1:?}: {2}")]
    NotReady(&'static str, Duration, String),
}

/// The running actors and the use cases over them.
pub struct ActorSystem {
    pub workers: Workers,
    pub storage: StorageBackend,
    pub stores: Stores,
    pub auth: AuthService,
    pub metrics: Metrics,
    /// Every actor's counters so far, for the sampler.
    stats: Vec<Arc<ActorStats>>,
}

impl ActorSystem {
    /// Starts `worker_count` worker arbiters and every store and hasher
    /// actor. Must be called inside an actix System.
    pub fn start(
        settings: &Settings,
        worker_count: usize,
        metrics: Metrics,
    ) -> Result<Self, SystemError> {
        let capacity = settings.actors.mailbox_capacity;
        let workers = Workers::start(worker_count);
        let storage = settings.storage.backend;
        let (user_database, session_backend) = match storage {
            StorageBackend::External => (
                UserDatabase::Postgres(settings.postgres.clone()),
                SessionBackendSettings::Redis(settings.redis.clone()),
            ),
            StorageBackend::Embedded => {
                let users = SqliteUserRepository::open(
                    &settings.storage,
                    metrics.dependency_seconds.clone(),
                )?;
                tracing::warn!(
                    database = users.location(),
                    "EMBEDDED STORAGE: users in SQLite, sessions in this process's memory \
                     (lost on restart). For development and single-node use only; set \
                     AUTH__STORAGE__BACKEND=external (or APP_ENV=local/docker/production) for \
                     PostgreSQL + Redis"
                );
                (
                    UserDatabase::Sqlite(users),
                    SessionBackendSettings::Memory { max_entries: settings.storage.max_entries },
                )
            }
        };

        let user_stats =
            ActorStats::with_instances(user_store::NAME, capacity, workers.len(), metrics.clone());
        let users =
            UserStore::start(user_database, &settings.actors, Arc::clone(&user_stats), &workers);

        let session_stats = ActorStats::with_instances(
            session_store::NAME,
            capacity,
            SessionStore::instances(&session_backend, &workers),
            metrics.clone(),
        );
        let sessions = SessionStore::start(
            session_backend,
            SessionPolicy::from_settings(settings),
            &settings.actors,
            Arc::clone(&session_stats),
            &workers,
        );

        let hasher_stats =
            ActorStats::new(password_hasher::NAME, settings.argon2.queue_capacity, metrics.clone());
        let argon2 = Argon2Hasher::new(
            settings.argon2.memory_kib,
            settings.argon2.iterations,
            settings.argon2.parallelism,
        )?;
        let hasher = PasswordHasher::start(
            argon2,
            settings.hasher_threads(),
            Arc::clone(&hasher_stats),
            metrics.clone(),
        );

        let stores = Stores { users, sessions, hasher };
        let auth =
            AuthService::new(stores.clone(), Policy::from_settings(settings), metrics.clone());
        Ok(Self {
            workers,
            storage,
            stores,
            auth,
            metrics,
            stats: vec![user_stats, session_stats, hasher_stats],
        })
    }

    /// Starts the metrics sampler, which publishes dependency health to
    /// `health` (the server's adapters follow it).
    pub fn start_sampler(
        &self,
        settings: &Settings,
        health: ServiceHealth,
    ) -> ActorClient<MetricsSampler> {
        let stats =
            ActorStats::new(sampler::NAME, settings.actors.mailbox_capacity, self.metrics.clone());
        let sampled = Sampled {
            interval: Duration::from_secs(settings.metrics.sample_interval_secs),
            actors: self.stats.clone(),
            users: self.stores.users.clone(),
            sessions: self.stores.sessions.clone(),
            storage: self.storage,
            health,
            metrics: self.metrics.clone(),
        };
        MetricsSampler::start(sampled, stats)
    }

    /// Waits until both stores' dependencies answer (the user store has
    /// migrated its schema), for callers that act at once (the CLI).
    pub async fn until_ready(&self, limit: Duration) -> Result<(), SystemError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (users, sessions) = tokio::join!(
                self.stores.users.call_each(CheckHealth),
                self.stores.sessions.call_each(CheckHealth)
            );
            let failure = [("user store", users), ("session store", sessions)]
                .into_iter()
                .find_map(|(store, answers)| first_failure(answers).map(|e| (store, e)));
            match failure {
                None => return Ok(()),
                Some((store, error)) if tokio::time::Instant::now() >= deadline => {
                    return Err(SystemError::NotReady(store, limit, error));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

//! The `MetricsSampler` actor: on a tick, samples every actor's mailbox and
//! state, asks each store for a health probe and a pool sample, and publishes
//! the result as gauges, as gRPC health statuses, and as the report behind
//! `/health/actors`.
//!
//! Per-request counters never pass through here: they are atomics updated on
//! the request path. This actor only does what needs sampling.

use std::{
    collections::BTreeMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Duration,
};

use actix::{
    Actor, ActorContext as _, ActorFutureExt as _, AsyncContext as _, Context, Handler, Message,
    Supervised, Supervisor, WrapFuture as _,
};
use serde::Serialize;

use super::{
    client::ActorClient,
    health::ServiceHealth,
    pool::PoolSample,
    session_store::SessionStore,
    stats::{ActorSnapshot, ActorState, ActorStats},
    store::{CheckHealth, Probe},
    traced::Traced,
    user_store::UserStore,
};
use crate::{
    config::StorageBackend,
    error::{CallError, Dependency},
    telemetry::metrics::Metrics,
};

pub const NAME: &str = "Metrics";

/// What `/health/actors` returns.
#[derive(Debug, Clone, Serialize, actix::MessageResponse)]
pub struct ActorReport {
    /// `embedded` or `external`.
    pub backend: StorageBackend,
    pub actors: Vec<ActorSnapshot>,
    /// Dependency status as of the last sample (`true` = answered).
    pub dependencies: BTreeMap<Dependency, DependencyStatus>,
    pub sampled_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyStatus {
    pub up: bool,
    pub error: Option<String>,
}

/// Returns the latest report (actor states are read live).
pub struct GetActorReport;
impl Message for GetActorReport {
    type Result = ActorReport;
}

/// What the sampler samples and where it publishes.
pub struct Sampled {
    pub interval: Duration,
    /// The actors whose mailboxes and states it samples (itself besides).
    pub actors: Vec<Arc<ActorStats>>,
    pub users: ActorClient<UserStore>,
    pub sessions: ActorClient<SessionStore>,
    pub storage: StorageBackend,
    /// Where dependency health goes, for the adapters.
    pub health: ServiceHealth,
    pub metrics: Metrics,
}

pub struct MetricsSampler {
    sampled: Sampled,
    stats: Arc<ActorStats>,
    dependencies: BTreeMap<Dependency, DependencyStatus>,
    sampled_at: Option<chrono::DateTime<chrono::Utc>>,
    resample_scheduled: bool,
    /// A probe is out; the next tick skips rather than racing it.
    probe_pending: bool,
}

/// Re-sample delay while a dependency is down.
const FAST_RESAMPLE: Duration = Duration::from_millis(500);

impl MetricsSampler {
    pub fn start(sampled: Sampled, stats: Arc<ActorStats>) -> ActorClient<Self> {
        let sampler = Self {
            sampled,
            stats: Arc::clone(&stats),
            dependencies: BTreeMap::new(),
            sampled_at: None,
            resample_scheduled: false,
            probe_pending: false,
        };
        let addr = Supervisor::start(move |_| sampler);
        ActorClient::new(addr, stats)
    }

    /// Runs `work`; a panic in it stops the sampler, which its supervisor
    /// restarts (counted), instead of silently ending the actor's task.
    fn guarded(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl FnOnce(&mut Self, &mut Context<Self>),
    ) {
        if catch_unwind(AssertUnwindSafe(|| work(self, ctx))).is_err() {
            tracing::error!(actor = NAME, "the metrics sampler panicked; restarting it");
            self.stats.record_error("panicked; restarting");
            ctx.stop();
        }
    }

    /// The sampled actors and the sampler itself.
    fn all_stats(&self) -> impl Iterator<Item = &Arc<ActorStats>> {
        self.sampled.actors.iter().chain(std::iter::once(&self.stats))
    }

    fn sample(&mut self, ctx: &mut Context<Self>) {
        for stats in self.all_stats() {
            let snap = stats.snapshot();
            let label = [snap.name];
            let metrics = &self.sampled.metrics;
            metrics.actor_mailbox_queued.with_label_values(&label).set(snap.queued as i64);
            metrics.actor_in_flight.with_label_values(&label).set(snap.in_flight as i64);
        }
        if self.probe_pending {
            return;
        }
        self.probe_pending = true;
        let users = self.sampled.users.clone();
        let sessions = self.sampled.sessions.clone();
        let [user_dependency, session_dependency] = self.sampled.storage.dependencies();
        let probes = async move {
            let (users, sessions) =
                tokio::join!(users.call_each(CheckHealth), sessions.call_each(CheckHealth));
            [(user_dependency, summarise(users)), (session_dependency, summarise(sessions))]
        };
        ctx.spawn(probes.into_actor(self).map(|results, act, ctx| {
            act.probe_pending = false;
            for (dependency, result) in results {
                let (status, sample) = match result {
                    Ok((Ok(()), sample)) => (DependencyStatus { up: true, error: None }, sample),
                    Ok((Err(e), sample)) => {
                        (DependencyStatus { up: false, error: Some(e.to_string()) }, sample)
                    }
                    Err(e) => (
                        DependencyStatus { up: false, error: Some(e.to_string()) },
                        PoolSample::default(),
                    ),
                };
                act.record_pool(dependency, sample);
                act.sampled
                    .metrics
                    .dependency_up
                    .with_label_values(&[dependency.to_string().as_str()])
                    .set(i64::from(status.up));
                act.dependencies.insert(dependency, status);
            }
            act.sampled_at = Some(chrono::Utc::now());
            act.publish_health();
            // While something is down, look again soon rather than a whole
            // interval later, so readiness flips promptly on recovery.
            let all_up = act.dependencies.values().all(|s| s.up);
            if !all_up && !act.resample_scheduled {
                act.resample_scheduled = true;
                ctx.run_later(FAST_RESAMPLE, |act, ctx| {
                    act.resample_scheduled = false;
                    act.sample(ctx);
                });
            }
        }));
    }

    fn record_pool(&self, dependency: Dependency, sample: PoolSample) {
        let pool = dependency.to_string();
        let m = &self.sampled.metrics;
        let in_use = sample.connections.saturating_sub(sample.idle);
        m.pool_connections.with_label_values(&[pool.as_str(), "idle"]).set(sample.idle.into());
        m.pool_connections.with_label_values(&[pool.as_str(), "in_use"]).set(in_use.into());
        m.pool_max_connections.with_label_values(&[pool.as_str()]).set(sample.max_size.into());
        m.pool_pending_gets
            .with_label_values(&[pool.as_str()])
            .set(i64::try_from(sample.pending_gets).unwrap_or(i64::MAX));
        m.pool_timeouts
            .with_label_values(&[pool.as_str()])
            .set(i64::try_from(sample.timeouts).unwrap_or(i64::MAX));
    }

    /// Publishes dependency status for the adapters.
    fn publish_health(&self) {
        self.sampled.health.publish(self.dependencies.iter().map(|(d, s)| (*d, s.up)).collect());
    }
}

/// One answer for a store run as several instances: up only if every
/// instance's dependency answered (a request may land on any of them), and
/// the pools summed.
fn summarise(answers: Vec<Result<Probe, CallError>>) -> Result<Probe, CallError> {
    let mut total = PoolSample::default();
    let mut failure = None;
    for answer in answers {
        let (result, sample) = answer?;
        total.max_size += sample.max_size;
        total.connections += sample.connections;
        total.idle += sample.idle;
        total.pending_gets += sample.pending_gets;
        total.timeouts += sample.timeouts;
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
    }
    Ok((failure.map_or(Ok(()), Err), total))
}

impl Actor for MetricsSampler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.stats.capacity());
        self.stats.set_state(ActorState::Running);
        self.guarded(ctx, Self::sample);
        ctx.run_interval(self.sampled.interval, |act, ctx| act.guarded(ctx, Self::sample));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.stats.set_state(ActorState::Stopped);
    }
}

impl Supervised for MetricsSampler {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.stats.record_restart();
        // The context dropped the pending probe and timer with the old run.
        self.probe_pending = false;
        self.resample_scheduled = false;
    }
}

impl Handler<Traced<GetActorReport>> for MetricsSampler {
    type Result = ActorReport;

    fn handle(&mut self, msg: Traced<GetActorReport>, _ctx: &mut Self::Context) -> Self::Result {
        let (GetActorReport, _span, _ticket) = msg.open();
        let actors = self.all_stats().map(|s| s.snapshot()).collect();
        ActorReport {
            backend: self.sampled.storage,
            actors,
            dependencies: self.dependencies.clone(),
            sampled_at: self.sampled_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        actors::{
            session_store::{SessionBackendSettings, SessionPolicy},
            user_store::{UserDatabase, UserStore},
        },
        config::{SecretUrl, Settings},
    };

    /// Stands in for a bug in the sampler's work: it panics.
    struct Crash;

    impl Message for Crash {
        type Result = ();
    }

    impl Handler<Traced<Crash>> for MetricsSampler {
        type Result = ();

        fn handle(&mut self, msg: Traced<Crash>, ctx: &mut Self::Context) {
            let (Crash, _span, _ticket) = msg.open();
            self.guarded(ctx, |_, _| panic!("simulated bug in the sampler"));
        }
    }

    #[test]
    fn the_supervisor_restarts_a_panicking_sampler() {
        actix_rt::System::new().block_on(async {
            let mut settings = Settings::defaults().expect("defaults");
            // Nothing listens there: the stores run degraded, which is fine.
            settings.postgres.url = SecretUrl::new("postgres://postgres@127.0.0.1:1/x");
            settings.redis.url = SecretUrl::new("redis://127.0.0.1:1");
            let metrics = Metrics::new().expect("metrics");
            let stats = |name| ActorStats::new(name, 8, metrics.clone());
            let workers = crate::workers::Workers::start(1);
            let users = UserStore::start(
                UserDatabase::Postgres(settings.postgres.clone()),
                &settings.actors,
                stats("U"),
                &workers,
            );
            let sessions = SessionStore::start(
                SessionBackendSettings::Redis(settings.redis.clone()),
                SessionPolicy::from_settings(&settings),
                &settings.actors,
                stats("S"),
                &workers,
            );
            let sampler_stats = stats(NAME);
            let sampled = Sampled {
                interval: Duration::from_millis(50),
                actors: vec![],
                users,
                sessions,
                storage: StorageBackend::External,
                health: ServiceHealth::default(),
                metrics: metrics.clone(),
            };
            let sampler = MetricsSampler::start(sampled, Arc::clone(&sampler_stats));

            sampler.call(Crash).await.expect("delivered");
            let report = sampler.call(GetActorReport).await.expect("answers after the restart");
            assert_eq!(sampler_stats.snapshot().restarts, 1);
            assert_eq!(report.actors.last().map(|a| a.state), Some(ActorState::Running));
            actix::System::current().stop();
        });
    }
}

//! What the two store actors (`UserStore`, `SessionStore`) share: running a
//! repository call as a task of its own, answering health probes, and
//! turning the outcomes into health state and, after repeated outages, a
//! supervised restart.

use std::{
    cell::RefCell,
    fmt,
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{Actor, AsyncContext as _, Context, Handler, Message, ResponseFuture};
use futures_util::FutureExt as _;
use tracing::{Instrument as _, Span};

use super::{ActorState, ActorStats, RestartPolicy, Ticket};
use crate::error::{Dependency, DependencyError};

/// Readiness probe of a store's dependency, plus a pool sample for metrics.
#[derive(Clone, Copy)]
pub struct CheckHealth;

impl Message for CheckHealth {
    type Result = (Result<(), DependencyError>, PoolSample);
}

/// A point-in-time view of a connection pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSample {
    pub max_size: u32,
    pub connections: u32,
    pub idle: u32,
    pub pending_gets: u64,
    pub timeouts: u64,
}

impl PoolSample {
    pub fn of<M: bb8::ManageConnection>(pool: &bb8::Pool<M>) -> Self {
        let state = pool.state();
        Self {
            max_size: pool.config().max_size,
            connections: state.connections,
            idle: state.idle_connections,
            pending_gets: state.statistics.pending_gets(),
            timeouts: state.statistics.get_timed_out,
        }
    }
}

/// Failed connection attempts of one pool, told to the callers waiting on
/// it. bb8 makes one attempt for a waiting caller and, when it fails, keeps
/// the caller waiting out the whole connection timeout anyway; a caller that
/// watches this answers UNAVAILABLE as soon as the attempt fails (a refused
/// connection: within milliseconds, from the very first call).
#[derive(Clone)]
pub struct ConnectFailures(Arc<tokio::sync::watch::Sender<String>>);

impl Default for ConnectFailures {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(String::new())))
    }
}

impl ConnectFailures {
    pub fn record(&self, error: &dyn fmt::Display) {
        self.0.send_replace(error.to_string());
    }

    /// Resolves with the error of the next attempt to fail after this call
    /// (never, while none does).
    pub fn next(&self) -> impl Future<Output = String> + 'static {
        let mut failures = self.0.subscribe();
        async move {
            match failures.changed().await {
                Ok(()) => failures.borrow_and_update().clone(),
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// A bb8 connection manager that reports its failed connection attempts.
pub struct Watched<M> {
    pub inner: M,
    pub failures: ConnectFailures,
}

impl<M: bb8::ManageConnection> bb8::ManageConnection for Watched<M> {
    type Connection = M::Connection;
    type Error = M::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let connected = self.inner.connect().await;
        if let Err(e) = &connected {
            self.failures.record(&DisplayDebug(e));
        }
        connected
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        self.inner.is_valid(conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        self.inner.has_broken(conn)
    }
}

/// bb8 asks only `Debug` of connection errors.
struct DisplayDebug<'a, E>(&'a E);

impl<E: fmt::Debug> fmt::Display for DisplayDebug<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// Milliseconds since the first call (never 0 after it): a cheap clock to
/// share between tasks through an atomic.
pub fn uptime_ms() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64 + 1
}

/// Errors that may mean the dependency is down.
pub trait Outage {
    fn is_outage(&self) -> bool;
}

impl Outage for DependencyError {
    fn is_outage(&self) -> bool {
        DependencyError::is_outage(self)
    }
}

/// Asks a store instance to stop so its supervisor restarts it with a fresh
/// pool; sent by its own calls once the restart policy says so.
pub struct Restart;

impl Message for Restart {
    type Result = ();
}

/// How recently a call must have succeeded for a health probe to take it as
/// the answer instead of sending one of its own: under load the dependency
/// proves itself many times a second, and a probe queued behind that load
/// (or refused a pooled connection) would say nothing about it.
const RECENT_SUCCESS: Duration = Duration::from_secs(1);

/// One store instance's view of its dependency's health. Shared (`Rc`)
/// between the actor and the calls it started, which all run on the
/// instance's thread.
pub struct StoreHealth {
    stats: Arc<ActorStats>,
    /// Which instance of the store this is.
    instance: usize,
    restarts: RestartPolicy,
    /// The repository may be used (for the user store: schema migrated).
    ready: bool,
    /// Repository calls running now.
    in_flight: usize,
    /// A restart was decided; it happens once `in_flight` drains, so work
    /// that already reached the dependency (a committed INSERT) still gets
    /// its true answer.
    restart_pending: bool,
    /// Consecutive outages, across restarts.
    outage_streak: u32,
    /// Circuit breaker: until then, calls fail at once instead of each
    /// waiting out the pool's connect timeout (bb8 holds a caller for the
    /// whole `connect_timeout_ms` while the dependency is down, longer than
    /// many clients' deadlines). Health probes still go through and close
    /// it on the first success.
    open_until: Option<Instant>,
    /// How long the breaker stays open after each outage once the streak
    /// reaches the failure threshold: the pool's connect timeout, which is
    /// what a caller would wait anyway and how long a probe takes to fail,
    /// so back-to-back probes keep it open until one succeeds.
    breaker_cooldown: Duration,
    /// When a call last succeeded, cleared by an outage.
    last_success: Option<Instant>,
}

/// The operation name of health probes, which the breaker lets through.
pub const PROBE_OPERATION: &str = "ping";

impl StoreHealth {
    pub fn new(
        stats: Arc<ActorStats>,
        instance: usize,
        restarts: RestartPolicy,
        breaker_cooldown: Duration,
    ) -> Self {
        Self {
            stats,
            instance,
            restarts,
            breaker_cooldown,
            ready: false,
            in_flight: 0,
            restart_pending: false,
            outage_streak: 0,
            open_until: None,
            last_success: None,
        }
    }

    fn breaker_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    /// Forgets per-incarnation state; called when the supervisor restarts.
    pub fn reset(&mut self) {
        self.in_flight = 0;
        self.restart_pending = false;
        self.last_success = None;
        self.set_ready(false);
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        &self.stats
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
        self.set_state(if ready { ActorState::Running } else { ActorState::Starting });
    }

    pub fn set_state(&self, state: ActorState) {
        self.stats.set_instance_state(self.instance, state);
    }

    /// The dependency answered a call within [`RECENT_SUCCESS`].
    fn answered_recently(&self, now: Instant) -> bool {
        self.ready && self.last_success.is_some_and(|t| now.duration_since(t) < RECENT_SUCCESS)
    }

    /// A repository call panicked: restart as soon as the calls in flight
    /// are back (`true`: now).
    fn panicked(&mut self) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stats.record_error("a call panicked; restarting".to_owned());
        self.restart_pending = true;
        self.in_flight == 0
    }

    /// Records the outcome of a repository call; `true` means the actor
    /// should restart now (the decision is deferred until in-flight calls
    /// finish).
    fn observe<E: Outage + fmt::Display>(&mut self, error: Option<&E>) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        match error {
            Some(e) if e.is_outage() => {
                let now = Instant::now();
                self.stats.record_error(e.to_string());
                self.set_state(ActorState::Degraded);
                self.last_success = None;
                self.outage_streak = self.outage_streak.saturating_add(1);
                if self.outage_streak >= self.restarts.threshold() {
                    self.open_until = Some(now + self.breaker_cooldown);
                }
                if self.restarts.record_outage(now) {
                    self.restart_pending = true;
                }
            }
            // Busy (our own overload) and rejected statements say nothing
            // about the dependency's health.
            Some(_) => {}
            None => {
                self.outage_streak = 0;
                self.open_until = None;
                self.last_success = Some(Instant::now());
                self.restarts.record_success();
                if self.ready {
                    self.set_state(ActorState::Running);
                }
            }
        }
        self.restart_pending && self.in_flight == 0
    }
}

pub trait Store: Actor<Context = Context<Self>> + Handler<Restart> {
    const NAME: &'static str;
    type Repo: 'static;

    /// What this instance's backend is, for errors and health.
    fn dependency(&self) -> Dependency;

    fn health(&self) -> &Rc<RefCell<StoreHealth>>;

    /// The repository, or why it cannot be used yet.
    fn repo(&self, operation: &'static str) -> Result<Self::Repo, DependencyError>;

    /// Starts a repository call as a task of its own on this thread and
    /// answers with its result. Its own task, not a future of the actor's
    /// context: a context polls every future it holds on each wakeup, so
    /// the cost per call would grow with the calls in flight. The actor is
    /// free for the next message at once; the pool bounds work in flight.
    /// The ticket is released with the reply; the outcome feeds the restart
    /// policy and the breaker. Calls refused before reaching the dependency
    /// (not ready yet, restart pending, circuit open) do not: a slow
    /// migration is not an outage.
    fn run<T, E, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        span: Span,
        ticket: Ticket,
        operation: &'static str,
        call: impl FnOnce(Self::Repo) -> Fut,
    ) -> ResponseFuture<Result<T, E>>
    where
        T: 'static,
        E: From<DependencyError> + Outage + fmt::Display + 'static,
        Fut: Future<Output = Result<T, E>> + 'static,
    {
        let refusal = {
            let health = self.health().borrow();
            if health.restart_pending {
                Some(DependencyError::outage(self.dependency(), operation, "restarting its pool"))
            } else if operation != PROBE_OPERATION && health.breaker_open(Instant::now()) {
                Some(DependencyError::outage(self.dependency(), operation, "down (circuit open)"))
            } else {
                None
            }
        };
        let repo = match refusal.map_or_else(|| self.repo(operation), Err) {
            Ok(repo) => repo,
            Err(e) => {
                drop(ticket);
                return Box::pin(std::future::ready(Err(E::from(e))));
            }
        };
        let health = Rc::clone(self.health());
        health.borrow_mut().in_flight += 1;
        let me = ctx.address();
        let dependency = self.dependency();
        let work = AssertUnwindSafe(call(repo).instrument(span)).catch_unwind();
        Box::pin(async move {
            let Ok(result) = work.await else {
                // A bug in a repository call: this caller learns at once
                // (UNAVAILABLE), calls in flight finish, and the supervisor
                // restarts the instance with fresh state, as after outages.
                drop(ticket);
                tracing::error!(actor = Self::NAME, operation, "a store call panicked; restarting");
                let restart = health.borrow_mut().panicked();
                if restart {
                    me.do_send(Restart);
                }
                return Err(E::from(DependencyError::outage(
                    dependency,
                    operation,
                    "the store failed; restarting it",
                )));
            };
            drop(ticket);
            let restart = health.borrow_mut().observe(result.as_ref().err());
            if restart {
                tracing::warn!(
                    actor = Self::NAME,
                    "repeated dependency outages; restarting with a fresh pool"
                );
                me.do_send(Restart);
            }
            result
        })
    }

    /// Answers a health probe: from a call that succeeded within the last
    /// second if there is one (no extra load, and no false alarm when the
    /// pool is saturated), else with a probe of its own.
    fn probe<Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        span: Span,
        ticket: Ticket,
        sample: PoolSample,
        ping: impl FnOnce(Self::Repo) -> Fut,
    ) -> ResponseFuture<(Result<(), DependencyError>, PoolSample)>
    where
        Fut: Future<Output = Result<(), DependencyError>> + 'static,
    {
        if self.health().borrow().answered_recently(Instant::now()) {
            return Box::pin(std::future::ready((Ok(()), sample)));
        }
        let probe = self.run(ctx, span, ticket, PROBE_OPERATION, ping);
        Box::pin(async move { (probe.await, sample) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        actors::{
            ActorClient, Traced,
            session_store::{
                CreateSession, SessionBackendSettings, SessionOrigin, SessionPolicy, SessionStore,
            },
            user_store::{FindUserById, SqliteUserRepository, UserDatabase, UserStore},
        },
        config::Settings,
        domain::{Role, User, UserId},
        error::Dependency,
        telemetry::metrics::Metrics,
        workers::Workers,
    };

    /// Stands in for a bug in a repository call: it panics.
    struct Panic;

    impl Message for Panic {
        type Result = Result<(), DependencyError>;
    }

    macro_rules! panics_on_request {
        ($store:ty) => {
            impl Handler<Traced<Panic>> for $store {
                type Result = ResponseFuture<Result<(), DependencyError>>;

                fn handle(&mut self, msg: Traced<Panic>, ctx: &mut Self::Context) -> Self::Result {
                    let (Panic, span, ticket) = msg.open();
                    self.run(ctx, span, ticket, "panic", async move |_| {
                        panic!("simulated bug in a store call")
                    })
                }
            }
        };
    }
    panics_on_request!(UserStore);
    panics_on_request!(SessionStore);

    async fn until_running(stats: &ActorStats) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.state() != ActorState::Running {
            assert!(Instant::now() < deadline, "not running: {:?}", stats.snapshot());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The panicking call answers an outage at once, and the store restarts
    /// (counted) and runs again.
    async fn survives_a_panic<S>(client: &ActorClient<S>, stats: &ActorStats)
    where
        S: Actor<Context = Context<S>> + Handler<Traced<Panic>>,
    {
        until_running(stats).await;
        let answer = client.call(Panic).await.expect("delivered");
        let error = answer.expect_err("the panicking call fails");
        assert!(error.is_outage(), "{error}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.snapshot().restarts < 1 {
            assert!(Instant::now() < deadline, "never restarted: {:?}", stats.snapshot());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        until_running(stats).await;
        assert!(stats.snapshot().last_error.is_some_and(|e| e.message.contains("panicked")));
    }

    fn settings() -> Settings {
        let mut settings = Settings::defaults().expect("defaults");
        settings.storage.data_dir = ":memory:".into();
        settings
    }

    #[test]
    fn a_user_store_survives_a_panicking_call() {
        actix_rt::System::new().block_on(async {
            let settings = settings();
            let metrics = Metrics::new().expect("metrics");
            let stats = ActorStats::new("UserStore", 8, metrics.clone());
            let repo = SqliteUserRepository::open(&settings.storage, metrics.dependency_seconds)
                .expect("open");
            let workers = Workers::start(1);
            let users = UserStore::start(
                UserDatabase::Sqlite(repo),
                &settings.actors,
                Arc::clone(&stats),
                &workers,
            );
            survives_a_panic(&users, &stats).await;
            let found = users.call(FindUserById(UserId::new_random())).await.expect("delivered");
            assert!(found.expect("served after the restart").is_none());
            workers.stop();
            actix::System::current().stop();
        });
    }

    #[test]
    fn a_session_store_survives_a_panicking_call() {
        actix_rt::System::new().block_on(async {
            let settings = settings();
            let metrics = Metrics::new().expect("metrics");
            let stats = ActorStats::new("SessionStore", 8, metrics);
            let workers = Workers::start(1);
            let sessions = SessionStore::start(
                SessionBackendSettings::Memory { max_entries: 10 },
                SessionPolicy::from_settings(&settings),
                &settings.actors,
                Arc::clone(&stats),
                &workers,
            );
            survives_a_panic(&sessions, &stats).await;
            let user = User {
                id: UserId::new_random(),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                email: "ada@example.com".into(),
                role: Role::User,
                avatar: None,
                created_at: chrono::Utc::now(),
                updated_at: chrono::Utc::now(),
            };
            let origin = SessionOrigin::default();
            let created = sessions.call(CreateSession { user, origin }).await.expect("delivered");
            created.expect("served after the restart");
            workers.stop();
            actix::System::current().stop();
        });
    }

    fn health(threshold: u32) -> StoreHealth {
        let stats = ActorStats::new("Test", 8, Metrics::new().expect("metrics"));
        let policy = RestartPolicy::new(threshold, Duration::from_secs(30));
        let mut health = StoreHealth::new(stats, 0, policy, Duration::from_secs(2));
        health.set_ready(true);
        health
    }

    fn outage() -> DependencyError {
        DependencyError::outage(Dependency::Postgres, "q", "refused")
    }

    #[test]
    fn the_breaker_opens_at_the_threshold_and_a_success_closes_it() {
        let mut h = health(3);
        let now = Instant::now();
        for _ in 0..2 {
            h.in_flight += 1;
            h.observe(Some(&outage()));
            assert!(!h.breaker_open(now), "below the threshold");
        }
        h.in_flight += 1;
        h.observe(Some(&outage()));
        assert!(h.breaker_open(Instant::now()));
        assert!(!h.breaker_open(Instant::now() + Duration::from_secs(3)), "cools down");
        h.in_flight += 1;
        h.observe::<DependencyError>(None);
        assert!(!h.breaker_open(Instant::now()), "a success closes it");
    }

    #[test]
    fn a_restart_waits_for_in_flight_calls() {
        let mut h = health(1);
        h.in_flight = 2;
        assert!(!h.observe(Some(&outage())), "one call still running");
        assert!(h.restart_pending);
        assert!(h.observe::<DependencyError>(None), "restart once the last call is back");
    }

    #[test]
    fn a_recent_success_answers_probes_and_an_outage_clears_it() {
        let mut h = health(3);
        assert!(!h.answered_recently(Instant::now()), "nothing answered yet");
        h.in_flight = 1;
        h.observe::<DependencyError>(None);
        assert!(h.answered_recently(Instant::now()));
        assert!(!h.answered_recently(Instant::now() + RECENT_SUCCESS), "only for a second");
        h.in_flight = 1;
        h.observe(Some(&outage()));
        assert!(!h.answered_recently(Instant::now()));
    }

    #[test]
    fn busy_pools_are_not_outages() {
        let mut h = health(1);
        h.in_flight = 1;
        let busy = DependencyError::busy(Dependency::Postgres, "q", "pool checkout timed out");
        assert!(!h.observe(Some(&busy)));
        assert!(!h.restart_pending && !h.breaker_open(Instant::now()));
    }

    #[test]
    fn rejected_queries_are_not_outages() {
        let mut h = health(1);
        h.in_flight = 1;
        let bug = DependencyError::rejected(Dependency::Postgres, "q", "check violation");
        assert!(!h.observe(Some(&bug)));
        assert!(!h.restart_pending && !h.breaker_open(Instant::now()));
    }
}

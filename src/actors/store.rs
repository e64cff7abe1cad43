//! What the two store actors (`UserStore`, `SessionStore`) share: running a
//! repository call as a task of its own, answering health probes, and
//! feeding the outcomes to their [`StoreHealth`]; and [`store_messages!`],
//! the one way a store's messages become repository calls.

use std::{
    cell::RefCell,
    fmt,
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{Actor, AsyncContext as _, Context, Handler, Message, ResponseFuture, Supervisor};
use futures_util::FutureExt as _;
use tracing::{Instrument as _, Span};

use super::{
    admission::Ticket,
    client::ActorClient,
    pool::PoolSample,
    stats::{ActorState, ActorStats},
    supervision::{Restart, RestartPolicy, StoreHealth},
};
use crate::{
    config::ActorSettings,
    error::{CallError, Dependency, DependencyError, Outage},
    workers::Workers,
};

/// Readiness probe of a store's dependency, plus a pool sample for metrics.
#[derive(Clone, Copy)]
pub struct CheckHealth;

impl Message for CheckHealth {
    type Result = Probe;
}

/// A store instance's answer to [`CheckHealth`].
pub type Probe = (Result<(), DependencyError>, PoolSample);

/// Why the first of a store's instances that did not answer its probe
/// failed (`None`: every one answered; a request may land on any).
pub fn first_failure(answers: Vec<Result<Probe, CallError>>) -> Option<String> {
    answers.into_iter().find_map(|answer| match answer {
        Ok((Ok(()), _)) => None,
        Ok((Err(e), _)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    })
}

/// The operation name of health probes, which the breaker lets through.
pub const PROBE_OPERATION: &str = "ping";

/// How a store's instances start: one on each of the first `instances`
/// workers, supervised, each with its own [`StoreHealth`] (a restart
/// policy from `actors.*`, the breaker's cooldown).
pub struct Instances<'a> {
    pub workers: &'a Workers,
    pub instances: usize,
    pub stats: Arc<ActorStats>,
    pub actors: &'a ActorSettings,
    pub breaker_cooldown: Duration,
}

impl Instances<'_> {
    /// Starts them; `make` builds an instance around its health.
    pub fn start<S>(
        self,
        make: impl Fn(Rc<RefCell<StoreHealth>>) -> S + Clone + Send + 'static,
    ) -> ActorClient<S>
    where
        S: Store + actix::Supervised,
    {
        let addrs = self
            .workers
            .handles()
            .take(self.instances)
            .enumerate()
            .map(|(instance, arbiter)| {
                let stats = Arc::clone(&self.stats);
                let restarts = RestartPolicy::from_settings(self.actors);
                let cooldown = self.breaker_cooldown;
                let make = make.clone();
                Supervisor::start_in_arbiter(&arbiter, move |_| {
                    make(Rc::new(RefCell::new(StoreHealth::new(
                        stats, instance, restarts, cooldown,
                    ))))
                })
            })
            .collect();
        ActorClient::sharded(addrs, self.stats)
    }
}

/// A store message answered by one call of the store's repository, as a
/// task of its own ([`Store::run`]). Declared with [`store_messages!`], so
/// the message `FindUserById` is answered by the repository method
/// `find_user_by_id`, and `"find_user_by_id"` names the operation in
/// errors, spans and metrics: one name from message to metric label.
pub trait StoreCall<Repo>: Sized + 'static {
    type Output: 'static;
    type Error: From<DependencyError> + Outage + fmt::Display + 'static;
    /// The repository method's name.
    const OPERATION: &'static str;

    fn call(self, repo: Repo) -> impl Future<Output = Result<Self::Output, Self::Error>> + 'static;
}

/// Declares messages of a store whose repository type is `$repo`: for each,
/// the message struct (tuple or named fields), its `actix::Message` impl,
/// and its [`StoreCall`] on the repository method named after it.
///
/// ```text
/// store_messages! { UserRepository;
///     /// A user by id.
///     FindUserById(id: UserId) -> Result<Option<User>, DependencyError>
///         => find_user_by_id(id);
/// }
/// ```
macro_rules! store_messages {
    ($repo:ty; $(
        $(#[$attr:meta])*
        $name:ident $fields:tt -> Result<$ok:ty, $err:ty> => $method:ident($($arg:expr),* $(,)?);
    )+) => {
        $(
            $crate::actors::store::store_message!(
                $repo; $(#[$attr])* $name $fields -> $ok, $err => $method($($arg),*)
            );
        )+
    };
}
pub(crate) use store_messages;

/// One message of [`store_messages!`].
macro_rules! store_message {
    ($repo:ty; $(#[$attr:meta])* $name:ident ($($field:ident: $ty:ty),* $(,)?)
        -> $ok:ty, $err:ty => $method:ident($($arg:expr),*)) => {
        $(#[$attr])*
        pub struct $name($(pub $ty),*);
        $crate::actors::store::store_message!(@call $repo; $name -> $ok, $err;
            |$name($($field),*)| $method($($arg),*));
    };
    ($repo:ty; $(#[$attr:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? }
        -> $ok:ty, $err:ty => $method:ident($($arg:expr),*)) => {
        $(#[$attr])*
        pub struct $name { $(pub $field: $ty),* }
        $crate::actors::store::store_message!(@call $repo; $name -> $ok, $err;
            |$name { $($field),* }| $method($($arg),*));
    };
    (@call $repo:ty; $name:ident -> $ok:ty, $err:ty; |$pattern:pat_param| $method:ident($($arg:expr),*)) => {
        impl actix::Message for $name {
            type Result = Result<$ok, $err>;
        }

        impl $crate::actors::store::StoreCall<$repo> for $name {
            type Output = $ok;
            type Error = $err;
            const OPERATION: &'static str = stringify!($method);

            #[allow(clippy::manual_async_fn)]
            fn call(self, repo: $repo) -> impl Future<Output = Result<$ok, $err>> + 'static {
                async move {
                    let $pattern = self;
                    repo.$method($($arg),*).await
                }
            }
        }
    };
}
pub(crate) use store_message;

/// The handlers every store has alike: each [`StoreCall`] message runs its
/// repository call through [`Store::run`], [`CheckHealth`] pings the
/// repository through [`Store::probe`], and [`Restart`] stops the instance
/// for its supervisor to restart.
macro_rules! store_handlers {
    ($store:ty, $repo:ty) => {
        impl<M> actix::Handler<$crate::actors::Traced<M>> for $store
        where
            M: $crate::actors::store::StoreCall<$repo>
                + actix::Message<
                    Result = Result<
                        <M as $crate::actors::store::StoreCall<$repo>>::Output,
                        <M as $crate::actors::store::StoreCall<$repo>>::Error,
                    >,
                >,
        {
            type Result = actix::ResponseFuture<
                Result<
                    <M as $crate::actors::store::StoreCall<$repo>>::Output,
                    <M as $crate::actors::store::StoreCall<$repo>>::Error,
                >,
            >;

            fn handle(
                &mut self,
                msg: $crate::actors::Traced<M>,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                let (msg, span, ticket) = msg.open();
                $crate::actors::store::Store::run(self, ctx, span, ticket, M::OPERATION, |repo| {
                    msg.call(repo)
                })
            }
        }

        impl actix::Handler<$crate::actors::Traced<$crate::actors::store::CheckHealth>> for $store {
            type Result = actix::ResponseFuture<$crate::actors::store::Probe>;

            fn handle(
                &mut self,
                msg: $crate::actors::Traced<$crate::actors::store::CheckHealth>,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                use $crate::actors::store::Store as _;
                let (_, span, ticket) = msg.open();
                let sample = self.pool_sample();
                self.probe(ctx, span, ticket, sample, async move |repo: $repo| repo.ping().await)
            }
        }

        impl actix::Handler<$crate::actors::supervision::Restart> for $store {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::supervision::Restart, ctx: &mut Self::Context) {
                actix::ActorContext::stop(ctx);
            }
        }
    };
}
pub(crate) use store_handlers;

pub trait Store: Actor<Context = Context<Self>> + Handler<Restart> {
    const NAME: &'static str;
    type Repo: 'static;

    /// What this instance's backend is, for errors and health.
    fn dependency(&self) -> Dependency;

    fn health(&self) -> &Rc<RefCell<StoreHealth>>;

    /// The current pool's sample (an empty one before it exists).
    fn pool_sample(&self) -> PoolSample;

    /// The repository, or why it cannot be used yet.
    fn repo(&self, operation: &'static str) -> Result<Self::Repo, DependencyError>;

    /// For `Actor::started`: the actix mailbox holds what admission lets in,
    /// plus room for health probes (admitted past the bound).
    fn size_mailbox(&self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.health().borrow().stats().capacity() + 16);
    }

    /// For `Actor::stopped`: every instance reports it.
    fn report_stopped(&self) {
        self.health().borrow().set_state(ActorState::Stopped);
    }

    /// For `Supervised::restarting`: counted, and the per-incarnation
    /// health state forgotten.
    fn report_restarting(&self) {
        let mut health = self.health().borrow_mut();
        health.stats().record_restart();
        health.reset();
    }

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
        let refusal = self
            .health()
            .borrow()
            .refusal(operation == PROBE_OPERATION, Instant::now())
            .map(|reason| DependencyError::outage(self.dependency(), operation, reason));
        let repo = match refusal.map_or_else(|| self.repo(operation), Err) {
            Ok(repo) => repo,
            Err(e) => {
                drop(ticket);
                return Box::pin(std::future::ready(Err(E::from(e))));
            }
        };
        let health = Rc::clone(self.health());
        health.borrow_mut().call_started();
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
    ) -> ResponseFuture<Probe>
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
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        actors::{
            ActorClient, ActorStats, Traced,
            session_store::{
                CreateSession, SessionBackendSettings, SessionOrigin, SessionPolicy, SessionStore,
            },
            user_store::{FindUserById, SqliteUserRepository, UserDatabase, UserStore},
        },
        config::Settings,
        domain::{Role, User, UserId},
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
}

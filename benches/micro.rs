//! Micro-benchmarks: the costs the load figures are made of (`cargo bench`).
//!
//! - `actor`: one message to an actor, on the caller's own thread (how the
//!   gRPC handlers reach their worker's store instance) and on another
//!   thread, against the same work as a plain async call.
//! - `argon2`: hash and verify at the configured cost (`config/default.toml`)
//!   with the thread's reused workspace, as the hasher threads do, and with
//!   memory allocated per call, as the argon2 crate's own API would.
//! - `proto`: a Register request decoded and parsed into domain types, and a
//!   user turned back into its protobuf answer and encoded.

use std::{hint::black_box, time::Instant};

use actix::{Actor, Arbiter, Context, Handler, Message, ResponseFuture};
use auth_service::{
    actors::{
        ActorClient, ActorStats, Traced,
        password_hasher::{Argon2Hasher, Workspace},
    },
    config::Settings,
    domain::{Avatar, Email, Password, PersonName, Role, User, UserId},
    grpc::proto::{RegisterRequest, RegisterResponse},
    telemetry::metrics::Metrics,
};
use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message as _;

struct Ping(u64);

impl Message for Ping {
    type Result = u64;
}

/// Answers like a store actor: a future of its own per message.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Traced<Ping>> for Echo {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, msg: Traced<Ping>, _ctx: &mut Self::Context) -> Self::Result {
        let (Ping(n), _span, ticket) = msg.open();
        Box::pin(async move {
            let answer = work(n).await;
            drop(ticket);
            answer
        })
    }
}

/// The work itself, as small as a call can be.
async fn work(n: u64) -> u64 {
    black_box(n.wrapping_add(1))
}

fn actor(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let metrics = Metrics::new().expect("metrics");
    let stats = || ActorStats::new("Echo", 1024, metrics.clone());
    let local = system.block_on(async { ActorClient::new(Echo.start(), stats()) });
    let arbiter = Arbiter::new();
    let remote = ActorClient::new(Echo::start_in_arbiter(&arbiter.handle(), |_| Echo), stats());

    let mut group = c.benchmark_group("actor");
    group.bench_function("direct async call", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    black_box(work(i).await);
                }
                started.elapsed()
            })
        });
    });
    for (name, client) in
        [("round trip, same thread", &local), ("round trip, other thread", &remote)]
    {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let started = Instant::now();
                    for i in 0..iters {
                        black_box(client.call(Ping(i)).await.expect("delivered"));
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
    arbiter.stop();
}

fn argon2(c: &mut Criterion) {
    let settings = Settings::defaults().expect("embedded defaults");
    let cost = &settings.argon2;
    let hasher =
        Argon2Hasher::new(cost.memory_kib, cost.iterations, cost.parallelism).expect("params");
    let password = Password::parse_new("correct horse battery staple".into()).expect("valid");
    let mut workspace = Workspace::default();
    let stored = hasher.hash(&password, &mut workspace).expect("hash");

    let mut group = c.benchmark_group(format!(
        "argon2id m={} KiB t={} p={}",
        cost.memory_kib, cost.iterations, cost.parallelism
    ));
    group.sample_size(20);
    group.bench_function("hash, reused memory", |b| {
        b.iter(|| hasher.hash(&password, &mut workspace).expect("hash"));
    });
    group.bench_function("verify, reused memory", |b| {
        b.iter(|| hasher.verify(&password, Some(&stored), &mut workspace).expect("verify"));
    });
    group.bench_function("verify, unknown account", |b| {
        b.iter(|| hasher.verify(&password, None, &mut workspace).expect("verify"));
    });
    group.bench_function("hash, memory allocated per call", |b| {
        b.iter(|| hasher.hash(&password, &mut Workspace::default()).expect("hash"));
    });
    group.finish();
}

fn proto(c: &mut Criterion) {
    let request = RegisterRequest {
        email: "Ada.Lovelace@Example.com".into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        password: "correct horse battery staple".into(),
        role: String::new(),
        avatar: "https://example.com/ada.png".into(),
    }
    .encode_to_vec();
    let now = chrono::Utc::now();

    c.bench_function("proto → domain → proto (Register)", |b| {
        b.iter(|| {
            let r = RegisterRequest::decode(black_box(&request[..])).expect("decodes");
            let email = Email::parse(&r.email, "email").expect("valid");
            let first_name = PersonName::parse(&r.first_name, "first_name").expect("valid");
            let last_name = PersonName::parse(&r.last_name, "last_name").expect("valid");
            let password = Password::parse_new(r.password).expect("valid");
            let role = Role::parse(&r.role).expect("valid");
            let avatar = Avatar::parse(&r.avatar).expect("valid");
            black_box(&password);
            let user = User {
                id: UserId::new_random(),
                first_name: first_name.as_str().to_owned(),
                last_name: last_name.as_str().to_owned(),
                email: email.as_str().to_owned(),
                role,
                avatar: avatar.map(|a| a.as_str().to_owned()),
                created_at: now,
                updated_at: now,
            };
            RegisterResponse { user: Some(user.into()) }.encode_to_vec()
        });
    });
}

criterion_group!(benches, actor, argon2, proto);
criterion_main!(benches);

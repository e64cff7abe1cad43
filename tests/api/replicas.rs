//! Three replicas of the binary, one system: sharing one PostgreSQL
//! database and one Redis (key prefix), behind a client that balances over
//! them (tonic's balanced channel), as a platform runs them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use auth_service::grpc::proto::{
    GetMeRequest, LoginRequest, LogoutRequest, user_service_client::UserServiceClient,
};
use futures_util::future::join_all;
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

use crate::{
    support::redis::RedisCluster,
    support::{
        BinaryService, Client, PASSWORD, blocking, delete_redis_keys, drop_database, free_port,
        register, registration, retrying, unique_database, unique_email, with_session,
    },
};

/// A set of replicas on fixed loopback ports (a restarted replica comes
/// back where its clients expect it), sharing a database and key prefix.
struct Replicas {
    database: String,
    env: Vec<(&'static str, String)>,
    ports: Vec<(u16, u16)>,
    running: Vec<Option<BinaryService>>,
}

impl Replicas {
    /// Starts `n` replicas at once on a database that does not exist yet:
    /// each from a thread of its own (starting one reads its output until
    /// it listens), so none waits for another.
    async fn start(n: usize, env: Vec<(&'static str, String)>) -> Self {
        let database = unique_database();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut replicas = Self { database, env, ports, running: Vec::new() };
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (database, env) = (replicas.database.clone(), replicas.env_of(i));
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(BinaryService::replica(&database, &env))
                })
            })
            .collect();
        let started = join_all(threads.into_iter().map(|thread| {
            tokio::task::spawn_blocking(move || thread.join().expect("replica starts"))
        }))
        .await;
        replicas.running = started.into_iter().map(|s| Some(s.expect("join"))).collect();
        replicas
    }

    fn env_of(&self, i: usize) -> Vec<(&'static str, String)> {
        let (grpc, http) = self.ports[i];
        let mut env = self.env.clone();
        env.push(("AUTH__GRPC__ADDR", format!("127.0.0.1:{grpc}")));
        env.push(("AUTH__HTTP__ADDR", format!("127.0.0.1:{http}")));
        env
    }

    async fn launch(&self, i: usize) -> BinaryService {
        BinaryService::replica(&self.database, &self.env_of(i)).await
    }

    /// A client of replica `i` alone.
    async fn client(&self, i: usize) -> Client {
        self.running[i].as_ref().expect("running").client().await
    }

    /// A client balancing over every replica, connecting lazily (a replica
    /// that is down is skipped until it is back).
    fn balanced(&self) -> Client {
        let endpoints = self.ports.iter().map(|(grpc, _)| {
            Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
                .expect("uri")
                .connect_timeout(Duration::from_millis(500))
        });
        UserServiceClient::new(Channel::balance_list(endpoints))
    }

    /// SIGTERM replica `i`, wait for its exit, start it again: its logs.
    async fn restart(&mut self, i: usize) -> Vec<String> {
        let service = self.running[i].take().expect("running");
        let (status, logs) = service.terminate().await;
        assert!(status.success(), "replica {i} exit status {status:?}");
        self.running[i] = Some(self.launch(i).await);
        logs
    }

    /// Stops every replica; all their log lines.
    async fn stop(mut self) -> Vec<String> {
        let mut logs = Vec::new();
        for service in self.running.iter_mut().filter_map(Option::take) {
            logs.extend(service.terminate().await.1);
        }
        logs
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.running.clear();
        drop_database(&self.database);
        delete_redis_keys(&format!("test:{}:", self.database));
    }
}

fn small_argon2() -> Vec<(&'static str, String)> {
    vec![("AUTH__ARGON2__MEMORY_KIB", "1024".into()), ("AUTH__ARGON2__ITERATIONS", "1".into())]
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_started_together_migrate_once_and_share_sessions_and_throttle() {
    let replicas = Replicas::start(3, small_argon2()).await;

    // A session from one replica is valid on the others.
    let mut first = replicas.client(0).await;
    let email = unique_email();
    register(&mut first, &email, PASSWORD).await;
    let login = LoginRequest { email: email.clone(), password: PASSWORD.into() };
    let session = first.login(login).await.expect("login").into_inner().session_id;
    for i in 1..3 {
        let mut client = replicas.client(i).await;
        let me = client.get_me(with_session(GetMeRequest {}, &session)).await;
        assert_eq!(me.expect("get me").into_inner().user.expect("user").email, email, "on {i}");
    }
    // Logout on one is seen by all.
    let mut second = replicas.client(1).await;
    second.logout(with_session(LogoutRequest {}, &session)).await.expect("logout");
    for i in 0..3 {
        let mut client = replicas.client(i).await;
        let status =
            client.get_me(with_session(GetMeRequest {}, &session)).await.expect_err("logged out");
        assert_eq!(status.code(), Code::Unauthenticated, "on {i}");
    }
    // The throttle is shared: five wrong guesses spread over the replicas
    // exhaust the (account, address) budget on every one of them.
    let victim = unique_email();
    register(&mut first, &victim, PASSWORD).await;
    for attempt in 0..5 {
        let mut client = replicas.client(attempt % 3).await;
        let guess = LoginRequest { email: victim.clone(), password: "wrong guess".into() };
        assert_eq!(client.login(guess).await.expect_err("wrong").code(), Code::Unauthenticated);
    }
    for i in 0..3 {
        let mut client = replicas.client(i).await;
        let right = LoginRequest { email: victim.clone(), password: PASSWORD.into() };
        let status = client.login(right).await.expect_err("throttled");
        assert_eq!(status.code(), Code::ResourceExhausted, "on {i}");
    }

    // Migrations ran exactly once, on one replica.
    let logs = replicas.stop().await;
    let migrated: Vec<&String> =
        logs.iter().filter(|l| l.contains("applied postgres migrations")).collect();
    assert_eq!(migrated.len(), 1, "one replica migrated: {migrated:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_on_a_redis_cluster_loses_nothing_a_retrying_client_sent() {
    let cluster = blocking(RedisCluster::start);
    let mut env = small_argon2();
    env.push(("AUTH__REDIS__MODE", "cluster".into()));
    env.push(("AUTH__REDIS__URLS", cluster.seed_urls()));
    let mut replicas = Replicas::start(3, env).await;
    let client = replicas.balanced();

    let mut setup = client.clone();
    let email = unique_email();
    register(&mut setup, &email, PASSWORD).await;
    let login = LoginRequest { email: email.clone(), password: PASSWORD.into() };
    let session = retrying(|| {
        let mut client = client.clone();
        let login = login.clone();
        async move { client.login(login).await }
    })
    .await
    .expect("login")
    .session_id;

    // Continuous load: GetMe from 8 callers, registrations from 2; each
    // answer counted as it comes.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads_answered, writes_answered) =
        (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let session = session.clone();
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&reads_answered);
            tokio::spawn(async move {
                let (mut ok, mut lost) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let answer = retrying(|| {
                        let mut client = client.clone();
                        let request = with_session(GetMeRequest {}, &session);
                        async move { client.get_me(request).await }
                    })
                    .await;
                    match answer {
                        Ok(_) => {
                            ok += 1;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => lost.push(status),
                    }
                }
                (ok, lost)
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&writes_answered);
            tokio::spawn(async move {
                let (mut acknowledged, mut lost) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let email = unique_email();
                    let answer = retrying(|| {
                        let mut client = client.clone();
                        let request = registration(&email, PASSWORD);
                        async move { client.register(request).await }
                    })
                    .await;
                    if answer.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    match answer {
                        Ok(_) => acknowledged.push(email),
                        // A retry of a registration whose first attempt
                        // committed before its replica went away.
                        Err(status) if status.code() == Code::AlreadyExists => {
                            acknowledged.push(email);
                        }
                        Err(status) => lost.push(status),
                    }
                }
                (acknowledged, lost)
            })
        })
        .collect();

    // Rolling restart: one replica at a time, as a Deployment does.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let answered =
        || (reads_answered.load(Ordering::Relaxed), writes_answered.load(Ordering::Relaxed));
    for i in 0..3 {
        let before = answered();
        replicas.restart(i).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = answered();
        assert!(
            after.0 > before.0 && after.1 > before.1,
            "GetMe and registrations answered while replica {i} restarted: {before:?} -> {after:?}"
        );
    }
    let rolled = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut reads, mut lost_reads) = (0, Vec::new());
    for reader in readers {
        let (ok, lost) = reader.await.expect("reader");
        reads += ok;
        lost_reads.extend(lost);
    }
    let (mut acknowledged, mut lost_writes) = (Vec::new(), Vec::new());
    for writer in writers {
        let (ok, lost) = writer.await.expect("writer");
        acknowledged.extend(ok);
        lost_writes.extend(lost);
    }
    eprintln!(
        "rolling restart of 3 replicas in {rolled:?}: {reads} GetMe and {} registrations \
         answered, {} and {} lost",
        acknowledged.len(),
        lost_reads.len(),
        lost_writes.len()
    );
    assert!(lost_reads.is_empty(), "GetMe lost: {lost_reads:?}");
    assert!(lost_writes.is_empty(), "registrations lost: {lost_writes:?}");

    // Every acknowledged registration is stored: it logs in.
    for email in &acknowledged {
        let login = LoginRequest { email: email.clone(), password: PASSWORD.into() };
        retrying(|| {
            let mut client = client.clone();
            let login = login.clone();
            async move { client.login(login).await }
        })
        .await
        .unwrap_or_else(|s| panic!("{email} was acknowledged but cannot log in: {s:?}"));
    }
    replicas.stop().await;
    blocking(move || drop(cluster));
}

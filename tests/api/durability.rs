//! Nothing acknowledged is lost when a dependency crashes: PostgreSQL
//! stopped immediately in the middle of a run of registrations, Redis
//! killed after logins. Each test starts servers of its own (Debian's
//! binaries) on free loopback ports.

use std::time::Duration;

use auth_service::{
    config::SecretUrl,
    grpc::proto::{GetMeRequest, LoginRequest},
};
use tonic::Code;

use crate::support::redis::RedisProcess;
use crate::support::{
    Backend, Client, PASSWORD, PrivatePostgres, TestApp, blocking, registration, retrying,
    unique_email, with_session,
};

/// Logs in (retrying UNAVAILABLE); the user's uuid.
async fn login_uuid(client: &Client, email: &str) -> String {
    let answer = retrying(|| {
        let mut client = client.clone();
        let request = LoginRequest { email: email.to_owned(), password: PASSWORD.into() };
        async move { client.login(request).await }
    })
    .await
    .unwrap_or_else(|s| panic!("{email} logs in: {s:?}"));
    answer.user.expect("user").uuid
}

#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_registration_is_lost_when_postgres_crashes_mid_run() {
    let pg = blocking(PrivatePostgres::start);
    let url = pg.url("auth");
    let app = TestApp::spawn_with(Backend::External, |s| {
        s.postgres.url = SecretUrl::new(url);
        s.actors.restart_backoff_max_secs = 1;
    })
    .await;

    // 240 registrations over ~2.4 s; Postgres crashes at 0.8 s and is back
    // at 1.6 s, so they land before, during and after the outage.
    let calls: Vec<_> = (0..240)
        .map(|i| {
            let mut client = app.client();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                let email = unique_email();
                let answer = client.register(registration(&email, PASSWORD)).await;
                (email, answer.map(|r| r.into_inner().user.expect("user").uuid))
            })
        })
        .collect();
    let pg = std::sync::Arc::new(pg);
    let chaos = {
        let pg = std::sync::Arc::clone(&pg);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let crashed = std::sync::Arc::clone(&pg);
            tokio::task::spawn_blocking(move || crashed.crash()).await.expect("crash");
            tokio::time::sleep(Duration::from_millis(800)).await;
            tokio::task::spawn_blocking(move || pg.resume()).await.expect("resume");
        })
    };
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.expect("caller"));
    }
    chaos.await.expect("chaos");
    app.wait_ready(Duration::from_secs(20)).await;

    let client = app.client();
    let (mut acknowledged, mut refused, mut refused_but_stored) = (0, 0, 0);
    for (email, answer) in outcomes {
        match answer {
            Ok(uuid) => {
                acknowledged += 1;
                assert_eq!(login_uuid(&client, &email).await, uuid, "{email}: as acknowledged");
            }
            Err(status) => {
                refused += 1;
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted),
                    "{email}: {status:?}"
                );
                // The retry a client would make: created now, or found
                // complete (its password logs in) if the insert committed
                // before the connection died.
                let retry = retrying(|| {
                    let mut client = client.clone();
                    let request = registration(&email, PASSWORD);
                    async move { client.register(request).await }
                })
                .await;
                match retry {
                    Ok(_) => {}
                    Err(status) if status.code() == Code::AlreadyExists => {
                        refused_but_stored += 1;
                    }
                    Err(status) => panic!("{email}: retry answered {status:?}"),
                }
                login_uuid(&client, &email).await;
            }
        }
    }
    eprintln!(
        "registrations: {acknowledged} acknowledged, all stored; {refused} refused, \
         {refused_but_stored} of them stored anyway (ALREADY_EXISTS on retry)"
    );
    assert!(acknowledged > 0 && refused > 0, "the crash fell inside the run");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_a_redis_crash_with_aof_persistence() {
    let mut redis = blocking(RedisProcess::durable);
    let url = redis.url();
    let app = TestApp::spawn_with(Backend::External, |s| {
        s.redis.url = SecretUrl::new(url);
        s.actors.restart_backoff_max_secs = 1;
    })
    .await;
    let mut client = app.client();
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let email = unique_email();
        client.register(registration(&email, PASSWORD)).await.expect("register");
        let answer = client
            .login(LoginRequest { email: email.clone(), password: PASSWORD.into() })
            .await
            .expect("login")
            .into_inner();
        sessions.push((answer.user.expect("user").uuid, answer.session_id));
    }

    redis = blocking(move || {
        redis.kill();
        redis.resume();
        redis
    });
    app.wait_ready(Duration::from_secs(20)).await;
    for (uuid, session) in &sessions {
        let me = retrying(|| {
            let mut client = client.clone();
            let request = with_session(GetMeRequest {}, session);
            async move { client.get_me(request).await }
        })
        .await
        .unwrap_or_else(|s| panic!("the session survived: {s:?}"));
        assert_eq!(&me.user.expect("user").uuid, uuid);
    }
    drop(redis);
}

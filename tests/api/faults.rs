//! Dependencies going down and coming back, with the service running.

use std::time::Duration;

use auth_service::{
    config::SecretUrl,
    grpc::proto::{GetMeRequest, LoginRequest},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{
    Backend, ChaosProxy, PASSWORD, TestApp, backend_tests, login, postgres_addr, redis_addr,
    register, registration, reroute, signed_in, slow_hashing, unique_email, with_session,
};

fn actor<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["actors"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

/// Polls `/health/actors` until `actor` reports at least one restart (a
/// restart waits for the actor's in-flight calls to finish).
async fn wait_for_restart(app: &TestApp, name: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let report = actor_report(app).await;
        let entry = actor(&report, name).clone();
        if entry["restarts"].as_u64().unwrap_or(0) >= 1 {
            return entry;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} never restarted: {entry}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn actor_report(app: &TestApp) -> serde_json::Value {
    let (status, body) = app.get("/health/actors").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_without_postgres_and_recovers_when_it_comes_up() {
    let proxy = ChaosProxy::start(postgres_addr()).await;
    proxy.cut().await;
    let proxied = proxy.addr;
    let app = TestApp::start_with(Backend::External, |s| {
        s.postgres.url = SecretUrl::new(reroute(s.postgres.url.expose(), proxied));
    })
    .await;
    let mut client = app.client();

    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("postgres") && !body.contains("redis"), "names only postgres: {body}");
    let (status, _) = app.get("/health/live").await;
    assert_eq!(status, 200, "alive while not ready");

    let status = client.register(registration(&unique_email(), PASSWORD)).await.expect_err("down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    proxy.restore();
    app.wait_ready(Duration::from_secs(20)).await;
    signed_in(&mut client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_restarts_the_user_store_which_then_recovers() {
    let proxy = ChaosProxy::start(postgres_addr()).await;
    let proxied = proxy.addr;
    let app = TestApp::spawn_with(Backend::External, |s| {
        s.postgres.url = SecretUrl::new(reroute(s.postgres.url.expose(), proxied));
        s.actors.failure_threshold = 2;
        s.actors.restart_backoff_max_secs = 1;
    })
    .await;
    let mut client = app.client();
    let (_, session) = signed_in(&mut client).await;
    client.get_me(with_session(GetMeRequest {}, &session)).await.expect("get me");

    proxy.cut().await;
    for _ in 0..4 {
        let status =
            client.register(registration(&unique_email(), PASSWORD)).await.expect_err("down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    // Redis-only paths keep working: GetMe is served from the cache.
    client.get_me(with_session(GetMeRequest {}, &session)).await.expect("get me from cache");

    let store = wait_for_restart(&app, "UserStore").await;
    assert!(store["last_error"]["message"].as_str().unwrap_or("").contains("postgres"), "{store}");
    // Once the outage is established the store answers at once (its circuit
    // is open), so a caller whose deadline is shorter than the pool's
    // connect timeout still learns UNAVAILABLE rather than timing out.
    for _ in 0..3 {
        let mut request = tonic::Request::new(registration(&unique_email(), PASSWORD));
        request.set_timeout(Duration::from_millis(1500));
        let status = client.register(request).await.expect_err("down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // The Metrics actor notices too: gRPC health and its report flip.
    app.wait_grpc_health("postgres", ServingStatus::NotServing, Duration::from_secs(10)).await;
    app.wait_grpc_health("", ServingStatus::NotServing, Duration::from_secs(10)).await;
    app.wait_grpc_health("redis", ServingStatus::Serving, Duration::from_secs(10)).await;
    assert_eq!(actor_report(&app).await["dependencies"]["postgres"]["up"], false);

    proxy.restore();
    app.wait_ready(Duration::from_secs(20)).await;
    app.wait_grpc_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    assert_eq!(actor_report(&app).await["dependencies"]["postgres"]["up"], true);
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    login(&mut client, &email, PASSWORD).await;
    let report = actor_report(&app).await;
    assert_eq!(actor(&report, "UserStore")["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_is_unavailable_then_recovers() {
    let proxy = ChaosProxy::start(redis_addr()).await;
    let proxied = proxy.addr;
    let app = TestApp::spawn_with(Backend::External, |s| {
        s.redis.url = SecretUrl::new(format!("redis://{proxied}"));
        s.actors.failure_threshold = 2;
        s.actors.restart_backoff_max_secs = 1;
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let (_, session) = login(&mut client, &email, PASSWORD).await;

    proxy.cut().await;
    let status = client
        .login(LoginRequest { email: email.clone(), password: PASSWORD.into() })
        .await
        .expect_err("sessions down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for _ in 0..3 {
        let status =
            client.get_me(with_session(GetMeRequest {}, &session)).await.expect_err("down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // Registration needs only Postgres.
    register(&mut client, &unique_email(), PASSWORD).await;
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("redis") && !body.contains("postgres"), "{body}");
    wait_for_restart(&app, "SessionStore").await;

    proxy.restore();
    app.wait_ready(Duration::from_secs(20)).await;
    client.get_me(with_session(GetMeRequest {}, &session)).await.expect("session survived");
    login(&mut client, &email, PASSWORD).await;
}

async fn a_login_flood_is_shed_by_the_hasher_while_get_me_keeps_working(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        // Costly enough that a flood queues up behind one worker.
        slow_hashing(s, 16 * 1024, 2);
        s.argon2.queue_capacity = 4;
        // Out of the way: every refusal below must come from the hasher.
        s.login.max_failures = 1000;
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let (_, session) = login(&mut client, &email, PASSWORD).await;

    let flood: Vec<_> = (0..40)
        .map(|_| {
            let mut client = app.client();
            let email = email.clone();
            tokio::spawn(async move {
                client.login(LoginRequest { email, password: "wrong password!".into() }).await
            })
        })
        .collect();
    // While the hasher is saturated, GetMe (no hashing) is answered.
    for _ in 0..5 {
        client.get_me(with_session(GetMeRequest {}, &session)).await.expect("get me during flood");
    }
    let mut shed = 0;
    for attempt in futures_util::future::join_all(flood).await {
        match attempt.expect("task") {
            Err(status) if status.code() == Code::ResourceExhausted => {
                shed += 1;
                assert_eq!(status.message(), "server busy; retry shortly");
                assert!(status.metadata().get("retry-after").is_some());
            }
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
            Ok(_) => panic!("wrong password accepted"),
        }
    }
    assert!(shed > 0, "a full hasher mailbox refuses callers");
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains(&format!("auth_actor_rejected_total{{actor=\"PasswordHasher\"}} {shed}")),
        "every refusal counted"
    );

    // Once the flood drains the hasher serves again.
    login(&mut client, &email, PASSWORD).await;
    let report = actor_report(&app).await;
    assert_eq!(actor(&report, "PasswordHasher")["queued"], 0);
}

backend_tests!(a_login_flood_is_shed_by_the_hasher_while_get_me_keeps_working,);

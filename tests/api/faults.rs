//! Dependencies going down and coming back, with the service running.

use std::time::Duration;

use auth_service::{
    config::SecretUrl,
    grpc::proto::{FindByEmailRequest, FindByIdRequest, GetMeRequest, LoginRequest},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
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
        // Costly enough that a flood queues up behind one worker for
        // longer than the GetMe calls below take.
        slow_hashing(s, 16 * 1024, 8);
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
    // Once the hasher is saturated (its admission full: calls refused),
    // GetMe (no hashing) is still answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = actor_report(&app).await;
        let hasher = actor(&report, "PasswordHasher");
        let held =
            hasher["queued"].as_u64().unwrap_or(0) + hasher["in_flight"].as_u64().unwrap_or(0);
        if held >= 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood never filled the hasher: {hasher}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..5 {
        client.get_me(with_session(GetMeRequest {}, &session)).await.expect("get me during flood");
    }
    let report = actor_report(&app).await;
    let hasher = actor(&report, "PasswordHasher");
    assert!(
        hasher["queued"].as_u64().unwrap_or(0) + hasher["in_flight"].as_u64().unwrap_or(0) > 0,
        "still flooded after the GetMe calls: {hasher}"
    );
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

/// Runs `call`, which must fail UNAVAILABLE with retry metadata; how long it
/// took. The caller's deadline (3 s) is longer than any timeout involved,
/// so a slow answer shows as slow, not as DEADLINE_EXCEEDED.
async fn time_unavailable<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Duration {
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(8), call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 8 s"))
        .expect_err(what);
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert_eq!(status.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some(), "{what}: {status:?}");
    eprintln!("{what}: UNAVAILABLE in {took:?}");
    took
}

/// A service whose Postgres and Redis connections go through `pg` and
/// `redis`, with a breaker that stays closed, so every call below takes the
/// path of a first call after the dependency went away.
async fn behind_proxies(
    pg: &ChaosProxy,
    redis: &ChaosProxy,
    customize: impl FnOnce(&mut auth_service::config::Settings),
) -> TestApp {
    let (pg, redis) = (pg.addr, redis.addr);
    TestApp::spawn_with(Backend::External, move |s| {
        s.postgres.url = SecretUrl::new(reroute(s.postgres.url.expose(), pg));
        s.redis.url = SecretUrl::new(format!("redis://{redis}"));
        s.actors.failure_threshold = 1000;
        customize(s);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_dependency_is_unavailable_at_once_from_the_first_call() {
    let (pg, redis) =
        (ChaosProxy::start(postgres_addr()).await, ChaosProxy::start(redis_addr()).await);
    // Connect timeouts far above the bound below: an answer within it came
    // from the refused connection, not from waiting one out.
    let app = behind_proxies(&pg, &redis, |s| {
        s.postgres.connect_timeout_ms = 10_000;
        s.redis.connect_timeout_ms = 10_000;
    })
    .await;
    let mut client = app.client();
    let (user, session) = signed_in(&mut client).await;
    let by_id = || FindByIdRequest { uuid: user.uuid.clone() };
    let by_email = || FindByEmailRequest { email: user.email.clone() };
    let limit = Duration::from_secs(3);

    redis.cut().await;
    for round in 0..3 {
        let mut c = client.clone();
        let took = [
            time_unavailable("GetMe", c.get_me(with_session(GetMeRequest {}, &session))).await,
            time_unavailable(
                "Login",
                c.login(LoginRequest { email: user.email.clone(), password: PASSWORD.into() }),
            )
            .await,
            time_unavailable("FindByID", c.find_by_id(with_session(by_id(), &session))).await,
            time_unavailable("FindByEmail", c.find_by_email(with_session(by_email(), &session)))
                .await,
        ];
        assert!(took.iter().all(|t| *t < limit), "redis refused, round {round}: {took:?}");
    }
    redis.restore();
    app.wait_ready(Duration::from_secs(10)).await;

    pg.cut().await;
    for round in 0..4 {
        let took =
            time_unavailable("Register", client.register(registration(&unique_email(), PASSWORD)))
                .await;
        assert!(took < limit, "postgres refused, call {round}: {took:?}");
    }
    pg.restore();
    app.wait_ready(Duration::from_secs(10)).await;
    register(&mut client, &unique_email(), PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_dependency_is_unavailable_within_the_connect_timeout() {
    let (pg, redis) =
        (ChaosProxy::start(postgres_addr()).await, ChaosProxy::start(redis_addr()).await);
    // The defaults: a checkout waits at most the connect timeout, and a
    // statement on a connection that went quiet the statement timeout (a
    // Redis reply 500 ms); each at most 1 s. The bound leaves room for a
    // loaded machine; the figures are printed.
    let app = behind_proxies(&pg, &redis, |_| {}).await;
    let settings = &app.settings;
    let slowest = settings
        .redis
        .connect_timeout()
        .max(settings.postgres.connect_timeout())
        .max(settings.postgres.query_timeout());
    assert!(slowest <= Duration::from_secs(1), "the defaults are at most 1 s");
    let limit = slowest + Duration::from_secs(3);
    let mut client = app.client();
    let (_, session) = signed_in(&mut client).await;

    redis.stall().await;
    for round in 0..3 {
        let took =
            time_unavailable("GetMe", client.get_me(with_session(GetMeRequest {}, &session))).await;
        assert!(took < limit, "redis silent, call {round}: {took:?}");
    }
    redis.restore();
    app.wait_ready(Duration::from_secs(10)).await;
    client.get_me(with_session(GetMeRequest {}, &session)).await.expect("recovered");

    pg.stall().await;
    for round in 0..3 {
        let took =
            time_unavailable("Register", client.register(registration(&unique_email(), PASSWORD)))
                .await;
        assert!(took < limit, "postgres silent, call {round}: {took:?}");
    }
    pg.restore();
    app.wait_ready(Duration::from_secs(10)).await;
    register(&mut client, &unique_email(), PASSWORD).await;
}

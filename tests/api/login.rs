use std::time::{Duration, Instant};

use tonic::Code;

use crate::support::{
    Backend, PASSWORD, TestApp, backend_tests, credentials, login, register, unique_email,
};

async fn login_returns_the_user_and_a_strong_session_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let email = unique_email();
    let registered = register(&mut client, &email, PASSWORD).await;
    let (user, session) = login(&mut client, &email, PASSWORD).await;
    assert_eq!(user.uuid, registered.uuid);
    assert_eq!(user.password, "", "no password or hash in responses");
    assert_eq!(session.len(), 64, "256 bits, hex");
    assert!(session.chars().all(|c| c.is_ascii_hexdigit()));
    let (_, second) = login(&mut client, &email, PASSWORD).await;
    assert_ne!(session, second, "every login gets a fresh session");
}

async fn email_case_and_whitespace_do_not_matter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let local = uuid::Uuid::new_v4().simple().to_string();
    register(&mut client, &format!("A{local}@X.io"), PASSWORD).await;
    login(&mut client, &format!("a{local}@x.io"), PASSWORD).await;
    login(&mut client, &format!("  A{local}@x.IO "), PASSWORD).await;
}

async fn passwords_are_used_exactly_as_typed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let email = unique_email();
    let password = "  spaces around  ";
    register(&mut client, &email, password).await;
    login(&mut client, &email, password).await;
    for near_miss in ["spaces around", "  spaces around", "  Spaces around  "] {
        let status = client.login(credentials(&email, near_miss)).await.expect_err(near_miss);
        assert_eq!(status.code(), Code::Unauthenticated, "{near_miss:?}");
    }
}

async fn unknown_email_and_wrong_password_look_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let wrong = client.login(credentials(&email, "wrong password!")).await.expect_err("wrong");
    let unknown = client.login(credentials(&unique_email(), PASSWORD)).await.expect_err("unknown");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());
}

async fn a_malformed_email_is_invalid_argument(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let status = app.client().login(credentials("nope", PASSWORD)).await.expect_err("bad");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("email"));
}

async fn repeated_failures_lock_the_account_until_the_window_ends(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.login.max_failures = 3;
        s.login.window_secs = 2;
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;

    for _ in 0..3 {
        let status = client.login(credentials(&email, "wrong password!")).await.expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // Locked: even the right password is refused, with a retry hint.
    let status = client.login(credentials(&email, PASSWORD)).await.expect_err("locked");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry: u64 = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after metadata");
    assert!((1..=2).contains(&retry), "{retry}");

    // Unknown accounts are throttled alike, so the lock reveals nothing.
    let ghost = unique_email();
    for _ in 0..3 {
        let status = client.login(credentials(&ghost, PASSWORD)).await.expect_err("ghost");
        assert_eq!(status.code(), Code::Unauthenticated, "within the budget: {status:?}");
    }
    let status = client.login(credentials(&ghost, PASSWORD)).await.expect_err("ghost");
    assert_eq!(status.code(), Code::ResourceExhausted);

    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    login(&mut client, &email, PASSWORD).await;
}

async fn a_successful_login_resets_the_failure_count(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.login.max_failures = 3).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    for _ in 0..2 {
        let status = client.login(credentials(&email, "wrong password!")).await.expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated, "within the budget: {status:?}");
    }
    login(&mut client, &email, PASSWORD).await;
    for _ in 0..2 {
        let status = client.login(credentials(&email, "wrong password!")).await.expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated, "counter started over");
    }
    login(&mut client, &email, PASSWORD).await;
}

async fn parallel_guesses_share_one_budget(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.login.max_failures = 5).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let guesses = (0..20).map(|i| {
        let mut client = app.client();
        let email = email.clone();
        tokio::spawn(async move {
            client.login(credentials(&email, &format!("guess number {i}"))).await
        })
    });
    let mut wrong = 0;
    let mut throttled = 0;
    for guess in futures_util::future::join_all(guesses).await {
        match guess.expect("task").expect_err("all wrong").code() {
            Code::Unauthenticated => wrong += 1,
            Code::ResourceExhausted => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((wrong, throttled), (5, 15), "only max_failures guesses reach the hasher");
}

async fn every_failed_login_takes_at_least_the_floor(backend: Backend) {
    // Long against a login's own time, so a loaded machine cannot push a
    // success past it.
    let floor = Duration::from_secs(2);
    let app = TestApp::spawn_with(backend, |s| {
        s.login.failure_floor_ms = 2000;
        s.login.max_failures = 100;
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let failures = [
        ("unknown email", credentials(&unique_email(), PASSWORD)),
        ("wrong password", credentials(&email, "not the password")),
    ];
    for (what, request) in failures {
        let started = Instant::now();
        let status = client.login(request).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        assert!(started.elapsed() >= floor, "{what} answered in {:?}", started.elapsed());
    }
    let started = Instant::now();
    login(&mut client, &email, PASSWORD).await;
    assert!(started.elapsed() < floor, "a success is not held back: {:?}", started.elapsed());
}

backend_tests!(
    every_failed_login_takes_at_least_the_floor,
    login_returns_the_user_and_a_strong_session_id,
    email_case_and_whitespace_do_not_matter,
    passwords_are_used_exactly_as_typed,
    unknown_email_and_wrong_password_look_the_same,
    a_malformed_email_is_invalid_argument,
    repeated_failures_lock_the_account_until_the_window_ends,
    a_successful_login_resets_the_failure_count,
    parallel_guesses_share_one_budget,
);

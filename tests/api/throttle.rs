//! The login throttle: the attacker is throttled, not the victim. Client
//! addresses are set through `x-forwarded-for` from the test's loopback
//! peer, trusted as a proxy (`net.trusted_proxies`).

use std::time::{Duration, Instant};

use auth_service::{
    config::Settings,
    grpc::proto::{ListSessionsRequest, LoginRequest},
};
use tonic::{Code, Request, metadata::MetadataValue};

use crate::support::{
    Backend, Client, PASSWORD, TestApp, backend_tests, credentials, register, unique_email,
    with_session,
};

/// A login as if from `address`, forwarded by the trusted local proxy.
fn from(address: &str, email: &str, password: &str) -> Request<LoginRequest> {
    let mut request = Request::new(credentials(email, password));
    let forwarded = MetadataValue::try_from(format!("{address}, 127.0.0.1")).expect("ascii");
    request.metadata_mut().insert("x-forwarded-for", forwarded);
    request
}

async fn code(client: &mut Client, request: Request<LoginRequest>) -> Code {
    match client.login(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn behind_local_proxy(s: &mut Settings) {
    s.net.trusted_proxies = vec!["127.0.0.1/32".into()];
}

async fn an_attackers_failures_do_not_lock_out_the_victim(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        behind_local_proxy(s);
        s.login.max_failures = 3;
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let attacker = "203.0.113.66";
    for _ in 0..3 {
        let answer = code(&mut client, from(attacker, &email, "a wrong guess")).await;
        assert_eq!(answer, Code::Unauthenticated);
    }
    let status = client.login(from(attacker, &email, PASSWORD)).await.expect_err("throttled");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());
    assert_eq!(code(&mut client, from("198.51.100.7", &email, PASSWORD)).await, Code::Ok);
}

async fn an_address_guessing_across_accounts_is_refused_for_every_account(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        behind_local_proxy(s);
        s.login.max_failures = 10;
        s.login.max_failures_per_address = 3;
    })
    .await;
    let mut client = app.client();
    let stuffer = "203.0.113.99";
    for _ in 0..3 {
        let email = unique_email();
        register(&mut client, &email, PASSWORD).await;
        assert_eq!(
            code(&mut client, from(stuffer, &email, "leaked elsewhere")).await,
            Code::Unauthenticated
        );
    }
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    assert_eq!(code(&mut client, from(stuffer, &email, PASSWORD)).await, Code::ResourceExhausted);
    assert_eq!(code(&mut client, from("198.51.100.8", &email, PASSWORD)).await, Code::Ok);
}

/// Attempts in flight hold the pair's budget, so correct logins beyond it
/// wait their turn (up to the throttle's 5 s wait) rather than being
/// refused: 8 logins, two at a time, need four verifies' time, a few
/// milliseconds each here.
async fn concurrent_correct_logins_wait_their_turn_and_all_succeed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.login.max_failures = 2).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let logins = (0..8).map(|_| {
        let mut client = app.client();
        let email = email.clone();
        tokio::spawn(async move { client.login(credentials(&email, PASSWORD)).await.map(drop) })
    });
    for login in futures_util::future::join_all(logins).await {
        login.expect("task").expect("a correct login waits its turn and succeeds");
    }
}

async fn failures_across_addresses_slow_the_account_down_but_never_lock_it(backend: Backend) {
    // Steps long against a login's own time, so a loaded machine does not
    // blur an undelayed login into a delayed one.
    let step = Duration::from_secs(1);
    let app = TestApp::spawn_with(backend, |s| {
        behind_local_proxy(s);
        s.login.account_delay_after = 2;
        s.login.account_delay_step_ms = 1000;
        s.login.account_delay_max_ms = 5000;
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let started = Instant::now();
    assert_eq!(code(&mut client, from("192.0.2.10", &email, PASSWORD)).await, Code::Ok);
    let undelayed = started.elapsed();
    for i in 1..=4 {
        let address = format!("203.0.113.{i}");
        assert_eq!(code(&mut client, from(&address, &email, "guess")).await, Code::Unauthenticated);
    }
    // Four failures, two over the threshold: two steps of delay, then in.
    let started = Instant::now();
    assert_eq!(code(&mut client, from("192.0.2.10", &email, PASSWORD)).await, Code::Ok);
    let delayed = started.elapsed();
    assert!(delayed >= step * 2, "delayed: {delayed:?}");
    assert!(
        delayed >= undelayed + step,
        "no delay before the attack: {undelayed:?}, then {delayed:?}"
    );
}

async fn forwarded_for_counts_only_from_a_trusted_proxy(backend: Backend) {
    // No trusted proxy: the header is the client's to forge, and ignored.
    let app = TestApp::spawn_with(backend, |s| s.login.max_failures = 2).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    for address in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(code(&mut client, from(address, &email, "guess")).await, Code::Unauthenticated);
    }
    let rotated = code(&mut client, from("203.0.113.3", &email, PASSWORD)).await;
    assert_eq!(rotated, Code::ResourceExhausted, "rotating the header changes nothing");

    // Behind a trusted proxy the forwarded client is recorded.
    let app = TestApp::spawn_with(backend, behind_local_proxy).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let session = client
        .login(from("203.0.113.5", &email, PASSWORD))
        .await
        .expect("login")
        .into_inner()
        .session_id;
    let listed = client
        .list_sessions(with_session(ListSessionsRequest {}, &session))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert_eq!(listed[0].client_address, "203.0.113.5");
}

backend_tests!(
    an_attackers_failures_do_not_lock_out_the_victim,
    an_address_guessing_across_accounts_is_refused_for_every_account,
    concurrent_correct_logins_wait_their_turn_and_all_succeed,
    failures_across_addresses_slow_the_account_down_but_never_lock_it,
    forwarded_for_counts_only_from_a_trusted_proxy,
);

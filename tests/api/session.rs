use std::time::Duration;

use auth_service::grpc::proto::{GetMeRequest, LogoutRequest};
use tonic::{Code, Request, metadata::MetadataValue};

use crate::support::{Backend, TestApp, backend_tests, get_me, signed_in, with_session};

async fn get_me_returns_the_session_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (user, session) = signed_in(&mut client).await;
    // Twice: the second answer comes from the cache and must be the same.
    for _ in 0..2 {
        let me = get_me(&mut client, &session).await;
        assert_eq!(me, user);
        assert_eq!(me.password, "");
    }
}

async fn get_me_without_a_valid_session_is_unauthenticated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let status = client.get_me(GetMeRequest {}).await.expect_err("missing");
    assert_eq!(status.code(), Code::Unauthenticated);
    for bogus in ["", "   ", "not-a-session", &"f".repeat(64), &"F".repeat(64)] {
        let mut request = Request::new(GetMeRequest {});
        request.metadata_mut().insert("session_id", MetadataValue::try_from(bogus).expect("ascii"));
        let status = client.get_me(request).await.expect_err(bogus);
        assert_eq!(status.code(), Code::Unauthenticated, "{bogus:?}");
    }
}

async fn logout_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (_, session) = signed_in(&mut client).await;
    let (_, other) = signed_in(&mut client).await;
    client.logout(with_session(LogoutRequest {}, &session)).await.expect("logout");

    let status = client.get_me(with_session(GetMeRequest {}, &session)).await.expect_err("gone");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client.logout(with_session(LogoutRequest {}, &session)).await.expect_err("twice");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client.logout(LogoutRequest {}).await.expect_err("no session");
    assert_eq!(status.code(), Code::Unauthenticated);
    // Other sessions are untouched.
    client.get_me(with_session(GetMeRequest {}, &other)).await.expect("other session");
}

async fn sessions_expire_after_their_ttl(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.session.ttl_secs = 1).await;
    let mut client = app.client();
    let (_, session) = signed_in(&mut client).await;
    client.get_me(with_session(GetMeRequest {}, &session)).await.expect("fresh");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let status = client.get_me(with_session(GetMeRequest {}, &session)).await.expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
}

backend_tests!(
    get_me_returns_the_session_user,
    get_me_without_a_valid_session_is_unauthenticated,
    logout_ends_the_session,
    sessions_expire_after_their_ttl,
);

//! What only the embedded backend has: a data directory that outlives the
//! process (sessions do not), and an in-memory mode.

use auth_service::grpc::proto::GetMeRequest;
use tonic::Code;

use crate::helpers::{
    Backend, PASSWORD, TestApp, backend_settings, get_me, login, register, signed_in,
    unique_database, unique_email, with_session,
};

#[tokio::test(flavor = "multi_thread")]
async fn users_survive_a_restart_and_sessions_do_not() {
    let database = unique_database();
    let settings = backend_settings(Backend::Embedded, &database);
    let mut first = TestApp::start(settings.clone(), database.clone()).await;
    first.wait_ready(std::time::Duration::from_secs(20)).await;
    let mut client = first.client();
    let email = unique_email();
    let user = register(&mut client, &email, PASSWORD).await;
    let (_, session) = login(&mut client, &email, PASSWORD).await;
    first.stop();

    let second = TestApp::start(settings, database).await;
    second.wait_ready(std::time::Duration::from_secs(20)).await;
    let mut client = second.client();
    let status = client
        .get_me(with_session(GetMeRequest {}, &session))
        .await
        .expect_err("sessions live in the process");
    assert_eq!(status.code(), Code::Unauthenticated);
    let (again, _) = login(&mut client, &email, PASSWORD).await;
    assert_eq!(again.uuid, user.uuid, "the account is still there");
    assert_eq!(again.created_at, user.created_at);
    drop(first);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_in_memory_database_serves_the_whole_api() {
    let app =
        TestApp::spawn_with(Backend::Embedded, |s| s.storage.data_dir = ":memory:".into()).await;
    let mut client = app.client();
    let (user, session) = signed_in(&mut client).await;
    assert_eq!(get_me(&mut client, &session).await.uuid, user.uuid);
    let (status, body) = app.get("/health/actors").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""backend":"embedded""#), "{body}");
}

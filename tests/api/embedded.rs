//! What only the embedded backend has: a data directory that outlives the
//! process (sessions do not), and an in-memory mode.

use auth_service::grpc::proto::{
    ChangePasswordRequest, FindByEmailRequest, FindByIdRequest, GetMeRequest, ListSessionsRequest,
    LogoutAllRequest, LogoutRequest, RevokeSessionRequest,
};
use tonic::Code;

use crate::support::{
    Backend, PASSWORD, TestApp, backend_settings, get_me, login, register, unique_database,
    unique_email, with_session,
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

/// Every RPC of `UserService`, on users and sessions held in memory.
#[tokio::test(flavor = "multi_thread")]
async fn an_in_memory_database_serves_the_whole_api() {
    let app =
        TestApp::spawn_with(Backend::Embedded, |s| s.storage.data_dir = ":memory:".into()).await;
    let mut client = app.client();
    let email = unique_email();
    let user = register(&mut client, &email, PASSWORD).await;
    let (_, session) = login(&mut client, &email, PASSWORD).await;
    let (_, other) = login(&mut client, &email, PASSWORD).await;
    assert_eq!(get_me(&mut client, &session).await.uuid, user.uuid);
    let by_id = FindByIdRequest { uuid: user.uuid.clone() };
    let found = client.find_by_id(with_session(by_id, &session)).await.expect("find by id");
    assert_eq!(found.into_inner().user.expect("user").email, email);
    let by_email = FindByEmailRequest { email: email.to_uppercase() };
    let found = client.find_by_email(with_session(by_email, &session)).await.expect("by email");
    assert_eq!(found.into_inner().user.expect("user").uuid, user.uuid);

    let listed =
        client.list_sessions(with_session(ListSessionsRequest {}, &session)).await.expect("list");
    let listed = listed.into_inner().sessions;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let handle = listed.iter().find(|s| !s.current).expect("the other session").handle.clone();
    let revoke = RevokeSessionRequest { handle };
    client.revoke_session(with_session(revoke, &session)).await.expect("revoke");
    let gone = client.get_me(with_session(GetMeRequest {}, &other)).await.expect_err("revoked");
    assert_eq!(gone.code(), Code::Unauthenticated);

    let change = ChangePasswordRequest {
        old_password: PASSWORD.into(),
        new_password: "a brand new passphrase".into(),
    };
    client.change_password(with_session(change, &session)).await.expect("change password");
    let (_, third) = login(&mut client, &email, "a brand new passphrase").await;
    let all = LogoutAllRequest { keep_current: true };
    let ended = client.logout_all(with_session(all, &session)).await.expect("logout all");
    assert_eq!(ended.into_inner().ended, 1);
    let gone = client.get_me(with_session(GetMeRequest {}, &third)).await.expect_err("ended");
    assert_eq!(gone.code(), Code::Unauthenticated);
    client.logout(with_session(LogoutRequest {}, &session)).await.expect("logout");
    let gone = client.get_me(with_session(GetMeRequest {}, &session)).await.expect_err("out");
    assert_eq!(gone.code(), Code::Unauthenticated);

    let (status, body) = app.get("/health/actors").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""backend":"embedded""#), "{body}");
}

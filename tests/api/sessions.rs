//! Users managing their sessions: ListSessions, RevokeSession, LogoutAll,
//! ChangePassword, on both backends.

use auth_service::grpc::proto::{
    ChangePasswordRequest, GetMeRequest, ListSessionsRequest, LoginRequest, LogoutAllRequest,
    RevokeSessionRequest, SessionInfo,
};
use tonic::Code;

use crate::support::{
    Backend, Client, PASSWORD, TestApp, backend_tests, login, register, unique_email, with_session,
};

async fn sessions_of(client: &mut Client, session: &str) -> Vec<SessionInfo> {
    client
        .list_sessions(with_session(ListSessionsRequest {}, session))
        .await
        .expect("list sessions")
        .into_inner()
        .sessions
}

async fn is_live(client: &mut Client, session: &str) -> bool {
    match client.get_me(with_session(GetMeRequest {}, session)).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::Unauthenticated => false,
        Err(status) => panic!("get me: {status:?}"),
    }
}

/// A fresh user with `n` sessions: (email, sessions).
async fn user_with_sessions(client: &mut Client, n: usize) -> (String, Vec<String>) {
    let email = unique_email();
    register(client, &email, PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..n {
        sessions.push(login(client, &email, PASSWORD).await.1);
    }
    (email, sessions)
}

async fn sessions_are_listed_by_handle_with_where_they_came_from(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (_, sessions) = user_with_sessions(&mut client, 2).await;
    let listed = sessions_of(&mut client, &sessions[0]).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed.iter().filter(|s| s.current).count(), 1, "{listed:?}");
    for info in &listed {
        assert!(!sessions.contains(&info.handle), "a handle is never the session id");
        assert!(!info.handle.is_empty());
        assert_eq!(info.client_address, "127.0.0.1");
        assert!(!info.user_agent.is_empty(), "{info:?}");
        let created = info.created_at.expect("created_at").seconds;
        assert!(created > 0 && info.last_seen_at.expect("last_seen_at").seconds >= created);
    }
    // Another user sees only their own.
    let (_, other) = user_with_sessions(&mut client, 1).await;
    assert_eq!(sessions_of(&mut client, &other[0]).await.len(), 1);
}

async fn a_revoked_session_ends_and_only_its_owner_may_revoke_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (_, sessions) = user_with_sessions(&mut client, 2).await;
    let listed = sessions_of(&mut client, &sessions[0]).await;
    let other_handle =
        listed.iter().find(|s| !s.current).expect("the other session").handle.clone();
    let own_handle = listed.iter().find(|s| s.current).expect("this session").handle.clone();

    // Someone else's session cannot name it.
    let (_, stranger) = user_with_sessions(&mut client, 1).await;
    let request = RevokeSessionRequest { handle: own_handle.clone() };
    let status = client
        .revoke_session(with_session(request, &stranger[0]))
        .await
        .expect_err("not the stranger's session");
    assert_eq!(status.code(), Code::NotFound);
    assert!(is_live(&mut client, &sessions[0]).await);

    let request = RevokeSessionRequest { handle: other_handle.clone() };
    client.revoke_session(with_session(request, &sessions[0])).await.expect("revoke");
    assert!(!is_live(&mut client, &sessions[1]).await, "revoked");
    assert!(is_live(&mut client, &sessions[0]).await, "the caller's own stays");
    let request = RevokeSessionRequest { handle: other_handle };
    let status =
        client.revoke_session(with_session(request, &sessions[0])).await.expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
}

async fn logout_all_ends_every_session_or_all_but_the_current(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (_, sessions) = user_with_sessions(&mut client, 3).await;
    let keep = LogoutAllRequest { keep_current: true };
    let ended = client.logout_all(with_session(keep, &sessions[0])).await.expect("logout all");
    assert_eq!(ended.into_inner().ended, 2);
    assert!(is_live(&mut client, &sessions[0]).await);
    for session in &sessions[1..] {
        assert!(!is_live(&mut client, session).await);
    }
    let all = LogoutAllRequest { keep_current: false };
    let ended = client.logout_all(with_session(all, &sessions[0])).await.expect("logout all");
    assert_eq!(ended.into_inner().ended, 1);
    assert!(!is_live(&mut client, &sessions[0]).await);
}

async fn changing_the_password_needs_the_old_one_and_ends_the_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (email, sessions) = user_with_sessions(&mut client, 2).await;
    let change = |old: &str, new: &str| ChangePasswordRequest {
        old_password: old.to_owned(),
        new_password: new.to_owned(),
    };
    let new_password = "an entirely new passphrase";

    let status = client
        .change_password(with_session(change("not the password", new_password), &sessions[0]))
        .await
        .expect_err("wrong old password");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client
        .change_password(with_session(change(PASSWORD, "short"), &sessions[0]))
        .await
        .expect_err("too short");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(is_live(&mut client, &sessions[1]).await, "failed changes end nothing");

    let ended = client
        .change_password(with_session(change(PASSWORD, new_password), &sessions[0]))
        .await
        .expect("change password");
    assert_eq!(ended.into_inner().ended, 1);
    assert!(is_live(&mut client, &sessions[0]).await, "the caller's session stays");
    assert!(!is_live(&mut client, &sessions[1]).await, "the others end");
    let old = LoginRequest { email: email.clone(), password: PASSWORD.into() };
    assert_eq!(client.login(old).await.expect_err("old").code(), Code::Unauthenticated);
    login(&mut client, &email, new_password).await;
}

async fn session_management_needs_a_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let codes = [
        client.list_sessions(ListSessionsRequest {}).await.map(drop),
        client.revoke_session(RevokeSessionRequest { handle: "x".into() }).await.map(drop),
        client.logout_all(LogoutAllRequest { keep_current: false }).await.map(drop),
        client
            .change_password(ChangePasswordRequest {
                old_password: PASSWORD.into(),
                new_password: "another good password".into(),
            })
            .await
            .map(drop),
    ];
    for answer in codes {
        assert_eq!(answer.expect_err("no session").code(), Code::Unauthenticated);
    }
}

backend_tests!(
    sessions_are_listed_by_handle_with_where_they_came_from,
    a_revoked_session_ends_and_only_its_owner_may_revoke_it,
    logout_all_ends_every_session_or_all_but_the_current,
    changing_the_password_needs_the_old_one_and_ends_the_other_sessions,
    session_management_needs_a_session,
);

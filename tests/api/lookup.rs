use auth_service::grpc::proto::{FindByEmailRequest, FindByIdRequest};
use tonic::Code;

use crate::support::{
    Backend, PASSWORD, TestApp, backend_tests, register, signed_in, unique_email, with_session,
};

async fn lookups_need_a_session_by_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let email = unique_email();
    let user = register(&mut client, &email, PASSWORD).await;

    let status = client
        .find_by_id(FindByIdRequest { uuid: user.uuid.clone() })
        .await
        .expect_err("no session");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .find_by_email(FindByEmailRequest { email: email.clone() })
        .await
        .expect_err("no session");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .find_by_email(with_session(FindByEmailRequest { email }, &"a".repeat(64)))
        .await
        .expect_err("unknown session");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn lookups_with_a_session_find_users(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (_, session) = signed_in(&mut client).await;
    let email = unique_email();
    let user = register(&mut client, &email, PASSWORD).await;

    // By id twice: from Postgres, then from the cache.
    for _ in 0..2 {
        let found = client
            .find_by_id(with_session(FindByIdRequest { uuid: user.uuid.clone() }, &session))
            .await
            .expect("by id")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(found, user);
    }
    let found = client
        .find_by_email(with_session(FindByEmailRequest { email: email.to_uppercase() }, &session))
        .await
        .expect("by email, any case")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(found, user);
    assert_eq!(found.password, "");
}

async fn lookups_report_missing_and_malformed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let (_, session) = signed_in(&mut client).await;

    let status = client
        .find_by_id(with_session(
            FindByIdRequest { uuid: uuid::Uuid::new_v4().to_string() },
            &session,
        ))
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .find_by_id(with_session(FindByIdRequest { uuid: "12345".into() }, &session))
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("uuid"));
    let status = client
        .find_by_email(with_session(FindByEmailRequest { email: unique_email() }, &session))
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .find_by_email(with_session(FindByEmailRequest { email: "x@".into() }, &session))
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn public_lookups_need_no_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.lookup.public = true).await;
    let mut client = app.client();
    let email = unique_email();
    let user = register(&mut client, &email, PASSWORD).await;
    let by_id = client.find_by_id(FindByIdRequest { uuid: user.uuid.clone() }).await.expect("id");
    assert_eq!(by_id.into_inner().user.expect("user"), user);
    let by_email = client.find_by_email(FindByEmailRequest { email }).await.expect("email");
    assert_eq!(by_email.into_inner().user.expect("user"), user);
}

backend_tests!(
    lookups_need_a_session_by_default,
    lookups_with_a_session_find_users,
    lookups_report_missing_and_malformed,
    public_lookups_need_no_session,
);

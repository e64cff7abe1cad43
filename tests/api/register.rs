use auth_service::grpc::proto::RegisterRequest;
use tonic::Code;

use crate::support::{
    Backend, PASSWORD, TestApp, backend_tests, login, register, registration, unique_email,
    with_session,
};

async fn register_returns_the_new_user_without_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let mut request = registration("  Grace.Hopper@Example.IO ", PASSWORD);
    request.first_name = "  Grace ".into();
    request.last_name = "Hopper".into();
    request.avatar = "https://example.io/grace.png".into();
    let user = client.register(request).await.expect("register").into_inner().user.expect("user");

    uuid::Uuid::parse_str(&user.uuid).expect("uuid");
    assert_eq!(user.email, "grace.hopper@example.io", "trimmed and lower-cased");
    assert_eq!((user.first_name.as_str(), user.last_name.as_str()), ("Grace", "Hopper"));
    assert_eq!(user.role, "user", "empty role means user");
    assert_eq!(user.avatar, "https://example.io/grace.png");
    assert_eq!(user.password, "", "no password or hash in responses");
    let created = user.created_at.expect("created_at");
    let updated = user.updated_at.expect("updated_at");
    let now = chrono::Utc::now().timestamp();
    assert!((created.seconds - now).abs() < 60, "created_at is now");
    assert!(updated.seconds >= created.seconds);
}

async fn invalid_fields_are_refused_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let long = "x".repeat(33);
    type Mutation = Box<dyn Fn(&mut RegisterRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("email", Box::new(|r| r.email = "not-an-email".into())),
        ("email", Box::new(|r| r.email = String::new())),
        ("email", Box::new(|r| r.email = format!("{}@example.com", "a".repeat(60)))),
        ("first_name", Box::new(|r| r.first_name = "   ".into())),
        ("first_name", Box::new(move |r| r.first_name = long.clone())),
        ("last_name", Box::new(|r| r.last_name = String::new())),
        ("password", Box::new(|r| r.password = "short".into())),
        ("password", Box::new(|r| r.password = "p".repeat(1025))),
        ("role", Box::new(|r| r.role = "root".into())),
        ("avatar", Box::new(|r| r.avatar = "a".repeat(251))),
    ];
    for (field, mutate) in cases {
        let mut request = registration(&unique_email(), PASSWORD);
        mutate(&mut request);
        let status = client.register(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field} named in {:?}", status.message());
    }
}

async fn a_taken_email_is_already_exists_whatever_its_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    for variant in [email.clone(), email.to_uppercase()] {
        let status = client.register(registration(&variant, PASSWORD)).await.expect_err("dup");
        assert_eq!(status.code(), Code::AlreadyExists, "{variant}");
    }
}

async fn concurrent_registrations_of_one_email_yield_exactly_one_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email();
    let attempts = (0..50).map(|i| {
        let mut client = app.client();
        // Mixed case too: the database, not the handler, settles the race.
        let email = if i % 2 == 0 { email.clone() } else { email.to_uppercase() };
        tokio::spawn(async move { client.register(registration(&email, PASSWORD)).await })
    });
    let results = futures_util::future::join_all(attempts).await;
    let mut ok = 0;
    let mut exists = 0;
    for result in results {
        match result.expect("task") {
            Ok(_) => ok += 1,
            Err(status) if status.code() == Code::AlreadyExists => exists += 1,
            Err(status) => panic!("unexpected {status:?}"),
        }
    }
    assert_eq!((ok, exists), (1, 49));
}

async fn admin_accounts_need_an_admin_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();

    let mut request = registration(&unique_email(), PASSWORD);
    request.role = "admin".into();
    let status = client.register(request.clone()).await.expect_err("anonymous admin");
    assert_eq!(status.code(), Code::PermissionDenied);

    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let (_, session) = login(&mut client, &email, PASSWORD).await;
    let status = client.register(with_session(request.clone(), &session)).await.expect_err("user");
    assert_eq!(status.code(), Code::PermissionDenied, "a user's session is not enough");

    let status =
        client.register(with_session(request, &"0".repeat(64))).await.expect_err("bogus session");
    assert_eq!(status.code(), Code::PermissionDenied);
}

backend_tests!(
    register_returns_the_new_user_without_password,
    invalid_fields_are_refused_naming_the_field,
    a_taken_email_is_already_exists_whatever_its_case,
    concurrent_registrations_of_one_email_yield_exactly_one_account,
    admin_accounts_need_an_admin_session,
);

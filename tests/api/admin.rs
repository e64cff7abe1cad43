use auth_service::cli::{AdminCreateArgs, ensure_admin};
use tonic::Code;

use crate::helpers::{
    Backend, PASSWORD, TestApp, backend_tests, blocking, login, register, registration,
    unique_email, with_session,
};

fn make_admin(app: &TestApp, email: &str, password: Option<&str>) -> String {
    let settings = app.settings.clone();
    let args = AdminCreateArgs {
        email: email.to_owned(),
        first_name: "Root".into(),
        last_name: "Admin".into(),
    };
    let password = password.map(str::to_owned);
    blocking(move || {
        ensure_admin(&settings, &args, || {
            password.ok_or_else(|| auth_service::cli::CliError::Input("no password".into()))
        })
    })
    .expect("admin command")
}

async fn the_cli_creates_an_admin_who_can_create_admins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let admin_email = unique_email();
    let out = make_admin(&app, &admin_email, Some("admin password 123"));
    assert!(out.contains("created"), "{out}");

    let (admin, session) = login(&mut client, &admin_email, "admin password 123").await;
    assert_eq!(admin.role, "admin");

    let mut request = registration(&unique_email(), PASSWORD);
    request.role = "admin".into();
    let created = client
        .register(with_session(request, &session))
        .await
        .expect("an admin may create an admin")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(created.role, "admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_promotes_an_existing_account_and_the_change_shows_at_once() {
    let app = TestApp::spawn(Backend::External).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let (_, session) = login(&mut client, &email, PASSWORD).await;
    // GetMe caches the user as "user".
    let me = client.get_me(with_session(Default::default(), &session)).await.expect("me");
    assert_eq!(me.into_inner().user.expect("user").role, "user");

    let out = make_admin(&app, &email.to_uppercase(), None);
    assert!(out.contains("promoted"), "{out}");

    let me = client.get_me(with_session(Default::default(), &session)).await.expect("me");
    assert_eq!(me.into_inner().user.expect("user").role, "admin", "cache was invalidated");
    // And the password is unchanged.
    login(&mut client, &email, PASSWORD).await;
    let status = client
        .login(auth_service::grpc::proto::LoginRequest {
            email,
            password: "admin password 123".into(),
        })
        .await
        .expect_err("old password only");
    assert_eq!(status.code(), Code::Unauthenticated);
}

backend_tests!(the_cli_creates_an_admin_who_can_create_admins,);

use auth_service::{
    cli::{AccountArgs, AdminCreateArgs, CliError, admin_account, ensure_admin},
    grpc::proto::{FindByEmailRequest, FindByIdRequest, GetMeRequest},
    service::AccountAction,
};
use tonic::Code;

use crate::support::{
    Backend, PASSWORD, TestApp, backend_tests, blocking, credentials, login, register,
    registration, unique_email, with_session,
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

/// `auth-service admin <action> --email`, as the CLI runs it.
fn account_command(app: &TestApp, action: AccountAction, email: &str) -> Result<String, CliError> {
    let settings = app.settings.clone();
    let args = AccountArgs::local(email.to_owned());
    blocking(move || admin_account(&settings, action, &args))
}

async fn a_disabled_account_cannot_log_in_and_is_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client();
    let email = unique_email();
    let user = register(&mut client, &email, PASSWORD).await;
    let (_, watcher) = crate::support::signed_in(&mut client).await;

    let out = account_command(&app, AccountAction::Disable, &email).expect("disable");
    assert!(out.contains("disabled"), "{out}");
    let status = client.login(credentials(&email, PASSWORD)).await.expect_err("disabled");
    assert_eq!(status.code(), Code::Unauthenticated);
    let by_email = FindByEmailRequest { email: email.clone() };
    let status = client.find_by_email(with_session(by_email, &watcher)).await.expect_err("hidden");
    assert_eq!(status.code(), Code::NotFound);
    let by_id = FindByIdRequest { uuid: user.uuid.clone() };
    let status = client.find_by_id(with_session(by_id, &watcher)).await.expect_err("hidden");
    assert_eq!(status.code(), Code::NotFound);

    let out = account_command(&app, AccountAction::Enable, &email).expect("enable");
    assert!(out.contains("enabled"), "{out}");
    login(&mut client, &email, PASSWORD).await;
    let unknown = account_command(&app, AccountAction::Disable, &unique_email());
    assert!(unknown.expect_err("no such account").to_string().contains("no account"));
}

backend_tests!(
    a_disabled_account_cannot_log_in_and_is_not_found,
    the_cli_creates_an_admin_who_can_create_admins,
);

#[tokio::test(flavor = "multi_thread")]
async fn revoking_or_disabling_ends_every_session_and_cached_copy_at_once() {
    let app = TestApp::spawn(Backend::External).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let first = login(&mut client, &email, PASSWORD).await.1;
    let second = login(&mut client, &email, PASSWORD).await.1;
    // Warm every cached copy: the sessions' and the lookup cache's.
    let (_, watcher) = crate::support::signed_in(&mut client).await;
    let lookup = || FindByEmailRequest { email: email.clone() };
    client.find_by_email(with_session(lookup(), &watcher)).await.expect("cached");

    let out = account_command(&app, AccountAction::RevokeSessions, &email).expect("revoke");
    assert!(out.contains("2 session(s) ended"), "{out}");
    for session in [&first, &second] {
        let status =
            client.get_me(with_session(GetMeRequest {}, session)).await.expect_err("ended");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let third = login(&mut client, &email, PASSWORD).await.1;

    let out = account_command(&app, AccountAction::Disable, &email).expect("disable");
    assert!(out.contains("1 session(s) ended"), "{out}");
    let status = client.get_me(with_session(GetMeRequest {}, &third)).await.expect_err("ended");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client.find_by_email(with_session(lookup(), &watcher)).await.expect_err("gone");
    assert_eq!(status.code(), Code::NotFound, "the cached copy was dropped at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_revoke_on_the_storage_points_to_the_running_service() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let refused =
        account_command(&app, AccountAction::RevokeSessions, &email).expect_err("embedded");
    assert!(refused.to_string().contains("--target"), "{refused}");
}

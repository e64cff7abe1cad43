//! PostgreSQL as platforms run it: behind PgBouncer in transaction pooling
//! mode, and failing over from a primary to its synchronous replica, which
//! then takes the primary's address (processes of the test's own, from
//! Debian's pgbouncer and postgresql packages).

use std::time::{Duration, Instant};

use auth_service::{
    cli::{AccountArgs, admin_account},
    config::SecretUrl,
    grpc::proto::{
        ChangePasswordRequest, FindByEmailRequest, FindByIdRequest, GetMeRequest, LoginRequest,
    },
    service::AccountAction,
};
use futures_util::future::join_all;

use crate::support::{
    Backend, PASSWORD, PgBouncer, PrivatePostgres, TestApp, blocking, credentials, execute_sql,
    postgres_server, query_sql, registration, unique_email, with_session,
};

/// The machine's PostgreSQL, as (host, port) of `TEST_POSTGRES_URL`.
fn server_address() -> (String, u16) {
    let server = postgres_server();
    let authority = server.rsplit('@').next().unwrap_or(&server);
    let authority = authority.trim_start_matches("postgres://").split('/').next().unwrap_or("");
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "5432"));
    (host.to_owned(), port.parse().expect("port"))
}

/// The service on the test's database through `bouncer` (two server
/// connections for its pool of 16: consecutive statements of one pooled
/// connection run on different servers), with `postgres.transaction_pooler`
/// as given; migrations (a session-level lock) go to PostgreSQL itself.
async fn behind(bouncer: &PgBouncer, transaction_pooler: bool) -> TestApp {
    let bouncer_port = bouncer.port;
    TestApp::spawn_with(Backend::External, |s| {
        let direct = s.postgres.url.expose().to_owned();
        let (_, database) = direct.rsplit_once('/').expect("database in url");
        s.postgres.url =
            SecretUrl::new(format!("postgres://postgres@127.0.0.1:{bouncer_port}/{database}"));
        s.postgres.transaction_pooler = transaction_pooler;
        s.postgres.migration_url = SecretUrl::new(direct);
    })
    .await
}

/// `n` users at once, each through registration, login, GetMe, lookups by
/// id (a cache miss reads PostgreSQL) and of a missing email, and a
/// password change (a read and a write in one call); the failures.
async fn journeys(app: &TestApp, n: usize) -> Vec<tonic::Status> {
    let journeys = (0..n).map(|_| {
        let mut client = app.client();
        async move {
            let email = unique_email();
            let user = client.register(registration(&email, PASSWORD)).await?.into_inner().user;
            let login = LoginRequest { email: email.clone(), password: PASSWORD.into() };
            let session = client.login(login).await?.into_inner().session_id;
            client.get_me(with_session(GetMeRequest {}, &session)).await?;
            let uuid = user.expect("user").uuid;
            let found = client.find_by_id(with_session(FindByIdRequest { uuid }, &session)).await?;
            assert_eq!(found.into_inner().user.expect("user").email, email);
            let lookup = FindByEmailRequest { email: unique_email() };
            match client.find_by_email(with_session(lookup, &session)).await {
                Err(status) if status.code() == tonic::Code::NotFound => {}
                other => other.map(drop)?,
            }
            let change = ChangePasswordRequest {
                old_password: PASSWORD.into(),
                new_password: "another good passphrase".into(),
            };
            client.change_password(with_session(change, &session)).await?;
            let again =
                LoginRequest { email: email.clone(), password: "another good passphrase".into() };
            client.login(again).await?;
            Ok::<_, tonic::Status>(())
        }
    });
    join_all(journeys).await.into_iter().filter_map(Result::err).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_user_store_path_works_behind_pgbouncer_in_transaction_mode() {
    let (host, port) = server_address();
    let bouncer = blocking(move || PgBouncer::start((&host, port), 2));
    let app = behind(&bouncer, true).await;

    let failures = journeys(&app, 40).await;
    assert!(failures.is_empty(), "behind PgBouncer: {failures:?}");

    // A registration race on one email: exactly one insert wins.
    let email = unique_email();
    let racers = (0..8).map(|_| {
        let mut client = app.client();
        let email = email.clone();
        async move { client.register(registration(&email, PASSWORD)).await.map(drop) }
    });
    let answers = join_all(racers).await;
    assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 1, "{answers:?}");
    for lost in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(lost.code(), tonic::Code::AlreadyExists, "{lost:?}");
    }

    // A disabled account cannot log in and is not found; enabled, it can.
    let settings = app.settings.clone();
    let args = AccountArgs::local(email.clone());
    blocking(move || admin_account(&settings, AccountAction::Disable, &args)).expect("disable");
    let mut client = app.client();
    let refused = client.login(credentials(&email, PASSWORD)).await.expect_err("disabled");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let settings = app.settings.clone();
    let args = AccountArgs::local(email.clone());
    blocking(move || admin_account(&settings, AccountAction::Enable, &args)).expect("enable");
    client.login(credentials(&email, PASSWORD)).await.expect("enabled again");

    // A Go-era bcrypt hash verifies and is upgraded to argon2id in place.
    let legacy = unique_email();
    let hash = bcrypt::hash("a go-era password", 4).expect("bcrypt");
    execute_sql(
        &app.database,
        vec![format!(
            "INSERT INTO users (user_id, first_name, last_name, email, password) VALUES \
             ('{}', 'Old', 'Timer', '{legacy}', '{hash}')",
            uuid::Uuid::new_v4()
        )],
    );
    client.login(credentials(&legacy, "a go-era password")).await.expect("bcrypt login");
    let stored = query_sql(
        &app.database,
        &format!("SELECT password AS value FROM users WHERE email = '{legacy}'"),
    );
    assert!(stored[0].starts_with("$argon2id$"), "upgraded: {}", &stored[0][..10]);
    client.login(credentials(&legacy, "a go-era password")).await.expect("argon2 login");

    drop(app);
    blocking(move || drop(bouncer));
}

/// What `postgres.transaction_pooler` guards against: with statements
/// cached per connection, the same load behind the same PgBouncer fails
/// (a statement prepared on one server connection is missing, or already
/// there, on the next).
#[tokio::test(flavor = "multi_thread")]
async fn without_transaction_pooler_the_same_load_fails_behind_pgbouncer() {
    let (host, port) = server_address();
    let bouncer = blocking(move || PgBouncer::start((&host, port), 2));
    let app = behind(&bouncer, false).await;
    let failures = journeys(&app, 40).await;
    eprintln!(
        "without transaction_pooler: {} of 40 journeys failed, e.g. {:?}",
        failures.len(),
        failures.first().map(|f| f.message())
    );
    assert!(!failures.is_empty(), "statements cached across PgBouncer's server connections");
    drop(app);
    blocking(move || drop(bouncer));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_failover_is_an_outage_survived_without_a_restart() {
    let (primary, replica) = blocking(|| {
        let primary = PrivatePostgres::start();
        let replica = primary.replica();
        // Synchronous from now on (the replica's copy of the settings came
        // before this): a commit is acknowledged once the replica has it.
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        primary.psql("SELECT pg_reload_conf()");
        assert_eq!(replica.psql("SELECT pg_is_in_recovery()"), "t", "a streaming replica");
        // The reload reaches the primary's processes asynchronously; until
        // the replica is listed as synchronous, commits need not wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while primary.psql("SELECT sync_state FROM pg_stat_replication") != "sync" {
            assert!(Instant::now() < deadline, "the replica never became synchronous");
            std::thread::sleep(Duration::from_millis(50));
        }
        (primary, replica)
    });
    let address = primary.port;
    let url = primary.url("auth");
    let app = TestApp::spawn_with(Backend::External, |s| {
        s.postgres.url = SecretUrl::new(url);
    })
    .await;

    // Registrations every 20 ms for 4 s; at 1 s the primary stops and the
    // promoted replica comes up on its address.
    let started = Instant::now();
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let mut client = app.client();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20 * i)).await;
                let email = unique_email();
                let answer = client.register(registration(&email, PASSWORD)).await;
                (started.elapsed(), email, answer.map(drop).map_err(|s| s.code()))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_over = blocking(move || {
        let began = started.elapsed();
        primary.crash();
        let mut replica = replica;
        replica.promote();
        replica.move_to(address);
        drop(primary);
        (began, started.elapsed(), replica)
    });
    let (stopped_at, back_at, new_primary) = failed_over;
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.expect("caller"));
    }

    let refused: Vec<_> = outcomes.iter().filter(|(.., answer)| answer.is_err()).collect();
    for (at, email, answer) in &refused {
        assert_eq!(answer, &Err(tonic::Code::Unavailable), "{email} at {at:?}");
    }
    let last_refusal = refused.iter().map(|(at, ..)| *at).max().unwrap_or_default();
    eprintln!(
        "postgres failover: primary stopped at {stopped_at:?}, promoted replica on its address \
         at {back_at:?}; {} of {} registrations refused (UNAVAILABLE), the last at \
         {last_refusal:?}",
        refused.len(),
        outcomes.len()
    );
    assert!(
        outcomes.iter().any(|(at, _, answer)| *at > back_at && answer.is_ok()),
        "registrations succeed again without a restart"
    );
    // Every acknowledged registration was on the replica before the
    // primary went: it logs in on the promoted one.
    let mut client = app.client();
    for (at, email, _) in outcomes.iter().filter(|(.., answer)| answer.is_ok()) {
        let login = LoginRequest { email: email.clone(), password: PASSWORD.into() };
        client.login(login).await.unwrap_or_else(|s| {
            panic!(
                "{email}, acknowledged at {at:?} (primary stopped at {stopped_at:?}, \
                 back at {back_at:?}): {s:?}"
            )
        });
    }
    drop(app);
    blocking(move || drop(new_primary));
}

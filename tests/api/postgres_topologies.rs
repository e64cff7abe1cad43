//! PostgreSQL as platforms run it: behind PgBouncer in transaction pooling
//! mode, and failing over from a primary to its synchronous replica, which
//! then takes the primary's address (processes of the test's own, from
//! Debian's pgbouncer and postgresql packages).

use std::time::{Duration, Instant};

use auth_service::{
    config::SecretUrl,
    grpc::proto::{ChangePasswordRequest, FindByEmailRequest, GetMeRequest, LoginRequest},
};
use futures_util::future::join_all;

use crate::helpers::{
    Backend, PASSWORD, PgBouncer, PrivatePostgres, TestApp, blocking, postgres_server,
    registration, unique_email, with_session,
};

/// The machine's PostgreSQL, as (host, port) of `TEST_POSTGRES_URL`.
fn server_address() -> (String, u16) {
    let server = postgres_server();
    let authority = server.rsplit('@').next().unwrap_or(&server);
    let authority = authority.trim_start_matches("postgres://").split('/').next().unwrap_or("");
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "5432"));
    (host.to_owned(), port.parse().expect("port"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_user_store_path_works_behind_pgbouncer_in_transaction_mode() {
    let (host, port) = server_address();
    // Two server connections for the service's pool of 16: consecutive
    // statements of one pooled connection run on different servers.
    let bouncer = blocking(move || PgBouncer::start((&host, port), 2));
    let bouncer_port = bouncer.port;
    let app = TestApp::spawn_with(Backend::External, |s| {
        let direct = s.postgres.url.expose().to_owned();
        let (_, database) = direct.rsplit_once('/').expect("database in url");
        s.postgres.url =
            SecretUrl::new(format!("postgres://postgres@127.0.0.1:{bouncer_port}/{database}"));
        s.postgres.transaction_pooler = true;
        // Migrations hold a session-level lock: they go to PostgreSQL.
        s.postgres.migration_url = SecretUrl::new(direct);
    })
    .await;

    // 40 users at once, each through registration, login, GetMe, a lookup
    // (a cache miss reads PostgreSQL) and a password change (a read and a
    // write in one call).
    let journeys = (0..40).map(|_| {
        let mut client = app.client();
        async move {
            let email = unique_email();
            client.register(registration(&email, PASSWORD)).await?;
            let login = LoginRequest { email: email.clone(), password: PASSWORD.into() };
            let session = client.login(login).await?.into_inner().session_id;
            client.get_me(with_session(GetMeRequest {}, &session)).await?;
            let lookup = FindByEmailRequest { email: unique_email() };
            match client.find_by_email(with_session(lookup, &session)).await {
                Err(status) if status.code() == tonic::Code::NotFound => {}
                other => panic!("a missing user: {other:?}"),
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
    let failures: Vec<tonic::Status> =
        join_all(journeys).await.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "behind PgBouncer: {failures:?}");
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

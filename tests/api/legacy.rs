//! Swapping the Go service for this one on the same database.

use tonic::Code;

use crate::support::{
    ScratchDatabase, TestApp, blocking, execute_sql, login, postgres_server, query_sql,
    test_settings, unique_database,
};

/// `01_create_initial_tables.up.sql` of the Go service, verbatim in effect.
const GO_SCHEMA: &str = r#"
DROP TABLE IF EXISTS users CASCADE;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS CITEXT;
CREATE TYPE role AS ENUM ('admin', 'user');
CREATE TABLE users
(
    user_id    UUID PRIMARY KEY                  DEFAULT uuid_generate_v4(),
    first_name VARCHAR(32)              NOT NULL CHECK ( first_name <> '' ),
    last_name  VARCHAR(32)              NOT NULL CHECK ( last_name <> '' ),
    email      VARCHAR(64) UNIQUE       NOT NULL CHECK ( email <> '' ),
    password   VARCHAR(250)             NOT NULL CHECK ( octet_length(password) <> 0 ),
    role       role                     NOT NULL DEFAULT 'user',
    avatar     VARCHAR(250),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE          DEFAULT CURRENT_TIMESTAMP
)"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_go_database_is_migrated_in_place_and_bcrypt_users_log_in() {
    let database = unique_database();
    execute_sql("postgres", vec![format!("CREATE DATABASE \"{database}\"")]);
    let ada_hash = bcrypt::hash("ada's go password", 4).expect("bcrypt");
    let bob_hash = bcrypt::hash("bob's go password", 4).expect("bcrypt");
    execute_sql(
        &database,
        vec![
            GO_SCHEMA.to_owned(),
            // As the Go service wrote rows: mixed-case email, empty avatar,
            // NULL updated_at are all possible there.
            format!(
                "INSERT INTO users (first_name, last_name, email, password, role, avatar, updated_at) VALUES \
                 ('Ada', 'Lovelace', 'Ada@Example.com', '{ada_hash}', 'admin', '', NULL), \
                 ('Bob', 'Builder', 'bob@example.com', '{bob_hash}', 'user', 'https://x.io/b.png', now())"
            ),
        ],
    );
    let before = query_sql(
        &database,
        "SELECT user_id::text || email || created_at::text AS value FROM users ORDER BY email",
    );

    let app = TestApp::start(test_settings(&database), database.clone()).await;
    app.wait_ready(std::time::Duration::from_secs(20)).await;
    let mut client = app.client();

    // Every row survived the migration unchanged.
    let after = query_sql(
        &database,
        "SELECT user_id::text || email || created_at::text AS value FROM users ORDER BY email",
    );
    assert_eq!(before, after);

    // Mixed-case email stored by Go: logs in with any case.
    let (ada, _) = login(&mut client, "ada@example.com", "ada's go password").await;
    assert_eq!((ada.role.as_str(), ada.avatar.as_str()), ("admin", ""));
    assert!(ada.updated_at.is_some(), "NULL updated_at was backfilled");
    let hash =
        query_sql(&database, "SELECT password AS value FROM users WHERE email = 'Ada@Example.com'");
    assert!(
        hash[0].starts_with("$argon2id$"),
        "bcrypt hash re-written as argon2id: {}",
        &hash[0][..10]
    );
    // And the new hash verifies.
    login(&mut client, "ADA@example.com", "ada's go password").await;

    // Bob has not logged in yet: still bcrypt. A wrong password changes nothing.
    let status = client
        .login(auth_service::grpc::proto::LoginRequest {
            email: "bob@example.com".into(),
            password: "not bob's".into(),
        })
        .await
        .expect_err("wrong");
    assert_eq!(status.code(), Code::Unauthenticated);
    let hash =
        query_sql(&database, "SELECT password AS value FROM users WHERE email = 'bob@example.com'");
    assert!(hash[0].starts_with("$2"), "untouched until a successful login");
    let (bob, _) = login(&mut client, "bob@example.com", "bob's go password").await;
    assert_eq!(bob.avatar, "https://x.io/b.png");

    // The schema now refuses case-only duplicates.
    let status = client
        .register(crate::support::registration("ADA@EXAMPLE.COM", "a new password"))
        .await
        .expect_err("taken");
    assert_eq!(status.code(), Code::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread")]
async fn case_only_duplicates_stop_the_migration_with_a_clear_error() {
    let scratch = ScratchDatabase::create();
    let database = scratch.name().to_owned();
    let hash = bcrypt::hash("x-password", 4).expect("bcrypt");
    execute_sql(
        &database,
        vec![
            GO_SCHEMA.to_owned(),
            format!(
                "INSERT INTO users (first_name, last_name, email, password) VALUES \
                 ('A', 'A', 'dup@example.com', '{hash}'), ('B', 'B', 'DUP@example.com', '{hash}')"
            ),
        ],
    );
    let url = format!("{}/{database}", postgres_server());
    let err =
        blocking(move || auth_service::actors::user_store::migrate::prepare_database(&url, false))
            .expect_err("refused");
    assert!(err.to_string().contains("different letter case"), "{err}");
    // Nothing was lost or half-applied.
    assert_eq!(query_sql(&database, "SELECT count(*)::text AS value FROM users"), ["2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let scratch = ScratchDatabase::named();
    let database = scratch.name().to_owned();
    let url = format!("{}/{database}", postgres_server());
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                auth_service::actors::user_store::migrate::prepare_database(&url, true)
            })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        applied += run.join().expect("thread").expect("migrates").len();
    }
    let migrations = auth_service::actors::user_store::migrate::MIGRATIONS;
    let expected = diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&migrations)
        .expect("embedded migrations")
        .len();
    assert_eq!(applied, expected, "each migration applied exactly once across replicas");
    assert_eq!(
        query_sql(&database, "SELECT count(*)::text AS value FROM __diesel_schema_migrations"),
        [expected.to_string()]
    );
}

//! Configuration as operators meet it: the binary run from a directory with
//! no `config/` beside it, what the production layer refuses, and
//! `auth-service config [--check]` agreeing with the start.

use std::time::Duration;

use crate::support::{
    BinaryService, binary_command, binary_cwd, postgres_server, query_sql, redis_url, register,
    run_to_exit, unique_database, unique_email,
};

/// Long enough for a start that stops at its configuration, on a loaded
/// machine; such a start takes milliseconds.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// The binary with `args` and `env`, from an empty directory, to its exit.
fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    run_in(&format!("config-{}", uuid::Uuid::new_v4().simple()), args, env)
}

/// [`run`] from the empty directory named after `name`.
fn run_in(name: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = binary_command(name);
    // Were a refused start to serve after all, it must not take real ports.
    command.env("AUTH__GRPC__ADDR", "127.0.0.1:0").env("AUTH__HTTP__ADDR", "127.0.0.1:0");
    command.args(args).envs(env.iter().copied());
    let result = run_to_exit(&mut command, EXIT_LIMIT);
    let _ = std::fs::remove_dir_all(binary_cwd(name));
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn app_env_local_serves_on_postgres_and_redis_from_any_directory() {
    let service = BinaryService::with_app_env("local", &[]).await;
    let (status, body) = service.readiness().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""backend":"external""#), "{body}");

    let mut client = service.client().await;
    let email = unique_email();
    let user = register(&mut client, &email, "a good password").await;
    let stored = query_sql(
        service.database(),
        &format!("SELECT user_id::text AS value FROM users WHERE email = '{email}'"),
    );
    assert_eq!(stored, [user.uuid], "the user is in the configured database");

    let logs = service.logs();
    let loaded = logs
        .iter()
        .find(|l| l.contains("configuration loaded"))
        .unwrap_or_else(|| panic!("a line saying what was loaded: {logs:?}"));
    assert!(loaded.contains("built-in local layer"), "{loaded}");
    assert!(loaded.contains(r#""backend":"external""#), "{loaded}");
    assert!(loaded.contains("AUTH__POSTGRES__URL"), "variables are named: {loaded}");
    assert!(!loaded.contains("postgres://"), "values are not: {loaded}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_allow_admits_exactly_the_named_key_and_the_start_logs_it() {
    let database = unique_database();
    // The sample credentials, on the test's own database.
    let sample_credentials = format!(
        "{}/{database}",
        postgres_server().replacen("postgres://postgres@", "postgres://postgres:postgres@", 1)
    );
    assert!(sample_credentials.contains("postgres:postgres@"), "{sample_credentials}");
    let production = [
        ("APP_ENV", "production"),
        ("AUTH__POSTGRES__URL", sample_credentials.as_str()),
        ("AUTH__REDIS__URL", "redis://:s3cret@cache.internal:6379/0"),
    ];
    let (ok, _, stderr) = run(&["config", "--check"], &production);
    assert!(!ok && stderr.contains("`postgres.url`"), "{stderr}");

    let allowed = [production.as_slice(), &[("AUTH__UNSAFE__ALLOW", "postgres.url")]].concat();
    let (ok, stdout, stderr) = run(&["config", "--check"], &allowed);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("unsafe settings allowed: postgres.url"), "{stdout}");
    assert!(stderr.contains("plaintext"), "the plaintext warning: {stderr}");

    let also_public = [allowed.as_slice(), &[("AUTH__LOOKUP__PUBLIC", "true")]].concat();
    let (ok, _, stderr) = run(&["config", "--check"], &also_public);
    assert!(!ok, "only the named key is allowed");
    assert!(stderr.contains("`lookup.public`") && !stderr.contains("`postgres.url`"), "{stderr}");

    // And the service itself starts on it, saying so.
    let service = BinaryService::with_app_env(
        "production",
        &[
            ("AUTH__POSTGRES__URL", sample_credentials.clone()),
            ("AUTH__POSTGRES__CREATE_DATABASE", "true".into()),
            ("AUTH__REDIS__URL", redis_url()),
            ("AUTH__UNSAFE__ALLOW", "postgres.url".into()),
        ],
    )
    .await;
    let logs = service.logs();
    let allowed: Vec<&String> = logs.iter().filter(|l| l.contains("UNSAFE SETTING")).collect();
    assert_eq!(allowed.len(), 1, "{logs:?}");
    assert!(allowed[0].contains(r#""key":"postgres.url""#), "{allowed:?}");
    assert!(logs.iter().any(|l| l.contains("plaintext")), "{logs:?}");
    drop(service);
    crate::support::drop_database(&database);
}

/// Every start the service refuses, `config --check` refuses with the same
/// message; every one it accepts, `config --check` accepts.
#[test]
fn config_check_fails_on_exactly_what_the_start_refuses() {
    let refused: &[(&[(&str, &str)], &str)] = &[
        (&[("APP_ENV", "production")], "`postgres.url` (built-in default)"),
        (&[("APP_ENV", "prod")], "APP_ENV=\"prod\""),
        (&[("AUTH_SESSION__TTL_SECS", "60")], "AUTH_SESSION__TTL_SECS"),
        (&[("AUTH__SESSION__TTL", "60")], "session.ttl"),
        (&[("AUTH__SESSION__TTL_SECS", "soon")], "session.ttl_secs"),
        (&[("AUTH__LOG__FILTER", "info,auth_service=[")], "log.filter"),
        (
            &[
                ("APP_ENV", "production"),
                ("AUTH__POSTGRES__URL", "postgres://auth:pw@db.internal/auth_db"),
                ("AUTH__REDIS__URL", "redis://:pw@cache.internal:6379/0"),
                ("RUST_LOG", "debug"),
            ],
            "`log.filter` (env RUST_LOG)",
        ),
    ];
    for (env, named) in refused {
        let name = format!("config-{}", uuid::Uuid::new_v4().simple());
        let (ok, _, check) = run_in(&name, &["config", "--check"], env);
        assert!(!ok, "{env:?}: config --check accepted it");
        assert!(check.contains(named), "{env:?}: {check}");
        let (ok, _, start) = run_in(&name, &["serve"], env);
        assert!(!ok, "{env:?}: the service started");
        assert_eq!(check.lines().next(), start.lines().next(), "{env:?}: the same refusal");
    }
    let accepted: &[&[(&str, &str)]] = &[
        &[],
        &[("APP_ENV", "local")],
        &[("APP_ENV", "docker"), ("AUTH__SESSION__TTL_SECS", "60")],
        &[("AUTH__LOG__FILTER", "debug"), ("AUTH__LOOKUP__PUBLIC", "true")],
        &[
            ("APP_ENV", "production"),
            ("AUTH__POSTGRES__URL", "postgres://auth:pw@127.0.0.1:6432/auth_db"),
            ("AUTH__REDIS__URL", "redis://:pw@127.0.0.1:6379/0"),
            ("AUTH_ADMIN_PASSWORD", "not a setting"),
        ],
    ];
    for env in accepted {
        let (ok, stdout, stderr) = run(&["config", "--check"], env);
        assert!(ok, "{env:?}: {stderr}");
        assert_eq!(stdout.lines().count(), 1, "--check prints its verdict only: {stdout}");
    }
}

#[test]
fn config_shows_where_each_value_came_from_and_no_password() {
    let name = format!("config-{}", uuid::Uuid::new_v4().simple());
    let cwd = binary_cwd(&name);
    std::fs::create_dir_all(cwd.join("config")).expect("config dir");
    let file = cwd.join("config/local.toml");
    std::fs::write(&file, "[session]\nttl_secs = 120\n").expect("write");
    let mut command = binary_command(&name);
    command
        .arg("config")
        .env("APP_ENV", "local")
        .env("AUTH__REDIS__URL", "redis://:hunter2@cache.internal:6379/0");
    let (ok, stdout, stderr) = run_to_exit(&mut command, EXIT_LIMIT);
    let _ = std::fs::remove_dir_all(&cwd);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{stdout}");
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in {stdout}"))
            .to_owned()
    };
    assert!(line("grpc.addr").ends_with("# built-in default"), "{stdout}");
    assert!(line("storage.backend").ends_with("# built-in local layer"), "{stdout}");
    let from_file = line("session.ttl_secs");
    assert!(from_file.starts_with("session.ttl_secs = 120 "), "{from_file}");
    assert!(from_file.ends_with(&format!("# file {}", file.display())), "{from_file}");
    let redis = line("redis.url");
    assert!(redis.contains(":<redacted>@cache.internal"), "{redis}");
    assert!(redis.ends_with("# env AUTH__REDIS__URL"), "{redis}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn help_describes_the_binary_and_its_configuration() {
    let (ok, stdout, _) = run(&["--help"], &[]);
    assert!(ok);
    for word in ["serve", "migrate", "admin", "config", "AUTH__", "APP_ENV", "--config-dir"] {
        assert!(stdout.contains(word), "{word} in --help:\n{stdout}");
    }
}

//! The loader, the production refusals and the report, end to end.
use std::{collections::BTreeMap, path::Path};

use super::*;

/// The built-in layers under `app_env`, with `variables` set.
fn inputs(app_env: Option<&str>, variables: &[(&str, &str)]) -> Inputs {
    Inputs {
        app_env: app_env.map(str::to_owned),
        config_dir: ConfigDir::None,
        variables: variables.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}

fn load(variables: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::load(&inputs(None, variables)).map(|l| l.settings)
}

/// A directory of its own under the target dir, emptied.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("auth-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).expect("scratch dir");
    dir
}

#[test]
fn embedded_defaults_match_the_contract() {
    let s = Settings::defaults().expect("defaults load");
    assert_eq!(s.storage.backend, StorageBackend::Embedded, "no configuration: embedded");
    assert_eq!(s.storage.data_dir, "./data");
    assert_eq!(s.grpc.addr.to_string(), "0.0.0.0:5000");
    assert_eq!(s.grpc.max_request_bytes, 64 * 1024);
    assert_eq!(s.http.addr.to_string(), "0.0.0.0:7070");
    assert_eq!(s.postgres.url.expose(), safety::SAMPLE_POSTGRES_URL);
    assert_eq!(s.redis.url.expose(), safety::SAMPLE_REDIS_URL);
    assert_eq!(s.tracing.otlp_endpoint, "");
    assert_eq!(s.session.ttl_secs, 3600);
    assert_eq!((s.argon2.memory_kib, s.argon2.iterations, s.argon2.parallelism), (19456, 2, 1));
    assert_eq!((s.login.max_failures, s.login.window_secs), (5, 900));
    assert!(!s.lookup.public);
    assert!(s.r#unsafe.allow.is_empty());
}

#[test]
fn every_built_in_layer_selects_external_storage_and_matches_its_file() {
    for (env, text) in layers::BUILT_IN_LAYERS {
        let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/{env}.toml"));
        assert_eq!(std::fs::read_to_string(on_disk).expect(env), *text, "{env}");
        let mut variables = vec![];
        if *env == "production" {
            variables = vec![
                ("AUTH__POSTGRES__URL", "postgres://auth:s3cret@db.internal/auth_db"),
                ("AUTH__REDIS__URL", "redis://:s3cret@cache.internal:6379/0"),
            ];
        }
        let loaded = Settings::load(&inputs(Some(env), &variables)).expect(env);
        assert_eq!(loaded.settings.storage.backend, StorageBackend::External, "{env}");
        assert_eq!(loaded.resolved.origin("storage.backend"), Some(&Origin::BuiltInLayer(env)));
    }
}

#[test]
fn the_app_env_layer_does_not_depend_on_the_working_directory() {
    let empty = scratch("empty");
    std::fs::remove_dir(empty.join("config")).expect("no config dir");
    let inputs = Inputs {
        app_env: Some("local".into()),
        config_dir: ConfigDir::Beside(empty),
        variables: BTreeMap::new(),
    };
    let loaded = Settings::load(&inputs).expect("local");
    assert_eq!(loaded.settings.storage.backend, StorageBackend::External);
    assert_eq!(loaded.resolved.layers, ["built-in default", "built-in local layer"]);
}

#[test]
fn files_override_the_built_in_layers_and_say_where_they_are() {
    let dir = scratch("override");
    std::fs::write(dir.join("config/local.toml"), "[session]\nttl_secs = 60\n").expect("write");
    std::fs::write(dir.join("config/default.toml"), "[grpc]\nworkers = 3\n").expect("write");
    let inputs = Inputs {
        app_env: Some("local".into()),
        config_dir: ConfigDir::Beside(dir.clone()),
        variables: BTreeMap::from([("AUTH__LOGIN__MAX_FAILURES".into(), "7".into())]),
    };
    let loaded = Settings::load(&inputs).expect("loads");
    let s = &loaded.settings;
    assert_eq!((s.session.ttl_secs, s.grpc.workers, s.login.max_failures), (60, 3, 7));
    let local = dir.join("config/local.toml");
    assert_eq!(loaded.resolved.origin("session.ttl_secs"), Some(&Origin::File(local.clone())));
    assert_eq!(
        loaded.resolved.origin("login.max_failures"),
        Some(&Origin::Variable("AUTH__LOGIN__MAX_FAILURES".into()))
    );
    assert_eq!(loaded.resolved.origin("grpc.addr"), Some(&Origin::BuiltInDefault));
    let layers = loaded.resolved.layers.join(" | ");
    assert!(layers.contains(&local.display().to_string()), "{layers}");

    // A file for an environment of the operator's own is a layer too.
    std::fs::write(dir.join("config/staging.toml"), "[storage]\nbackend = \"external\"\n")
        .expect("write");
    let staging = Inputs { app_env: Some("staging".into()), ..inputs.clone() };
    assert_eq!(
        Settings::load(&staging).expect("staging").settings.storage.backend,
        StorageBackend::External
    );

    // A named directory must exist.
    let missing = Inputs { config_dir: ConfigDir::Named(dir.join("nope")), ..inputs };
    let err = Settings::load(&missing).expect_err("missing dir").to_string();
    assert!(err.contains("nope") && err.contains("--config-dir"), "{err}");
}

#[test]
fn an_unknown_app_env_names_the_value_and_where_it_looked() {
    let dir = scratch("unknown-env");
    let inputs = Inputs {
        app_env: Some("prod".into()),
        config_dir: ConfigDir::Beside(dir.clone()),
        variables: BTreeMap::new(),
    };
    let err = Settings::load(&inputs).expect_err("unknown").to_string();
    assert!(err.contains("\"prod\""), "{err}");
    assert!(err.contains(&dir.join("config/prod.toml").display().to_string()), "{err}");
}

#[test]
fn lookalike_variables_stop_the_start_and_documented_ones_do_not() {
    let err = load(&[("AUTH_SESSION__TTL_SECS", "60")]).expect_err("lookalike").to_string();
    assert!(err.contains("AUTH_SESSION__TTL_SECS"), "{err}");
    let err = load(&[("AUTH__SESSION__TTL", "60")]).expect_err("no such key").to_string();
    assert!(err.contains("AUTH__SESSION__TTL") && err.contains("session.ttl"), "{err}");
    load(&[("AUTH_ADMIN_PASSWORD", "x"), ("AUTH_OFFLINE_RUST", "debian"), ("AUTHOR", "me")])
        .expect("not settings, and allowed");
    load(&[(CONFIG_DIR_VARIABLE, "/etc/auth")]).expect("read by the loader, not a setting");
}

#[test]
fn production_refuses_unsafe_settings_naming_each_key() {
    let production = |variables: &[(&str, &str)]| {
        Settings::load(&inputs(Some("production"), variables))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let good_pg = ("AUTH__POSTGRES__URL", "postgres://auth:s3cret@10.0.0.5:5432/auth_db");
    let good_redis = ("AUTH__REDIS__URL", "redis://:s3cret@127.0.0.1:6379/0");
    production(&[good_pg, good_redis]).expect("a loopback URL alone is fine");

    let err = production(&[good_redis]).expect_err("sample postgres url");
    assert!(err.contains("`postgres.url` (built-in default)"), "{err}");
    assert!(!err.contains("redis.url"), "{err}");
    let err = production(&[good_pg]).expect_err("sample redis url");
    assert!(err.contains("`redis.url`"), "{err}");
    let err = production(&[
        ("AUTH__POSTGRES__URL", "postgres://postgres:postgres@db.internal/auth_db"),
        good_redis,
    ])
    .expect_err("sample credentials");
    assert!(err.contains("postgres.url") && err.contains("postgres:postgres"), "{err}");
    let err = production(&[good_pg, good_redis, ("AUTH__STORAGE__BACKEND", "embedded")])
        .expect_err("embedded");
    assert!(err.contains("storage.backend"), "{err}");
    let err = production(&[good_pg, good_redis, ("AUTH__LOOKUP__PUBLIC", "true")])
        .expect_err("public lookups");
    assert!(err.contains("lookup.public"), "{err}");
    let err = production(&[good_pg, good_redis, ("AUTH__LOG__FILTER", "info,auth_service=debug")])
        .expect_err("debug logs");
    assert!(err.contains("log.filter"), "{err}");
    let err =
        production(&[good_pg, good_redis, ("RUST_LOG", "debug")]).expect_err("debug via RUST_LOG");
    assert!(err.contains("`log.filter` (env RUST_LOG)"), "{err}");

    // unsafe.allow admits exactly the keys it names.
    let allowed = [good_redis, ("AUTH__UNSAFE__ALLOW", "postgres.url")];
    let loaded = Settings::load(&inputs(Some("production"), &allowed)).expect("allowed");
    assert_eq!(loaded.allowed.iter().map(|r| r.key).collect::<Vec<_>>(), ["postgres.url"]);
    let err = production(&[
        good_redis,
        ("AUTH__UNSAFE__ALLOW", "postgres.url"),
        ("AUTH__LOOKUP__PUBLIC", "true"),
    ])
    .expect_err("only the named key");
    assert!(err.contains("lookup.public") && !err.contains("`postgres.url`"), "{err}");
    let err = production(&[good_pg, good_redis, ("AUTH__UNSAFE__ALLOW", "everything")])
        .expect_err("unknown key");
    assert!(err.contains("unsafe.allow") && err.contains("everything"), "{err}");

    // Outside production nothing is refused.
    load(&[("AUTH__LOOKUP__PUBLIC", "true"), ("AUTH__LOG__FILTER", "debug")]).expect("dev");
}

#[test]
fn bad_values_name_their_key() {
    let err = |key: &str, variable: &str, value: &str| {
        let e = load(&[(variable, value)]).expect_err(variable).to_string();
        assert!(e.contains(key), "{key} in {e}");
    };
    err("argon2.memory_kib", "AUTH__ARGON2__MEMORY_KIB", "lots");
    err("session.ttl_secs", "AUTH__SESSION__TTL_SECS", "0");
    err("postgres.url", "AUTH__POSTGRES__URL", "mysql://x");
    err("redis.url", "AUTH__REDIS__URL", "redis://host:notaport");
    err("grpc.addr", "AUTH__GRPC__ADDR", "not an address");
    err("argon2", "AUTH__ARGON2__ITERATIONS", "0");
    err("tracing.sample_ratio", "AUTH__TRACING__SAMPLE_RATIO", "1.5");
    err("storage.backend", "AUTH__STORAGE__BACKEND", "etcd");
    err("net.trusted_proxies", "AUTH__NET__TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/33");
    err("storage.data_dir", "AUTH__STORAGE__DATA_DIR", " ");
}

#[test]
fn redis_modes_need_their_seeds() {
    let defaults = load(&[]).expect("defaults");
    assert_eq!(defaults.redis.mode, RedisMode::Standalone);

    let err = load(&[("AUTH__REDIS__MODE", "cluster")]).expect_err("no seeds").to_string();
    assert!(err.contains("redis.urls"), "{err}");
    let err = load(&[("AUTH__REDIS__MODE", "sentinel"), ("AUTH__REDIS__URLS", "redis://s1:26379")])
        .expect_err("no master name")
        .to_string();
    assert!(err.contains("redis.sentinel_master"), "{err}");
    let err = load(&[
        ("AUTH__REDIS__MODE", "cluster"),
        ("AUTH__REDIS__URLS", "redis://a:1,redis://:pw@b:x"),
    ])
    .expect_err("bad seed")
    .to_string();
    assert!(err.contains("redis.urls") && !err.contains("pw"), "named, not shown: {err}");
    assert!(load(&[("AUTH__REDIS__MODE", "raft")]).is_err());

    let cluster = load(&[
        ("AUTH__REDIS__MODE", "cluster"),
        ("AUTH__REDIS__URLS", " redis://10.0.0.1:7000, redis://10.0.0.2:7000 ,"),
    ])
    .expect("cluster");
    assert_eq!(cluster.redis.seed_urls(), ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
    let sentinel = load(&[
        ("AUTH__REDIS__MODE", "sentinel"),
        ("AUTH__REDIS__URLS", "redis://s1:26379,redis://s2:26379,redis://s3:26379"),
        ("AUTH__REDIS__SENTINEL_MASTER", "auth"),
    ])
    .expect("sentinel");
    assert_eq!(sentinel.redis.seed_urls().len(), 3);
}

#[test]
fn unknown_keys_in_files_name_the_file() {
    let dir = scratch("unknown-key");
    std::fs::write(dir.join("config/default.toml"), "[session]\nttl = 5\n").expect("write");
    let inputs = Inputs {
        app_env: None,
        config_dir: ConfigDir::Named(dir.join("config")),
        variables: BTreeMap::new(),
    };
    let err = Settings::load(&inputs).expect_err("unknown key").to_string();
    assert!(err.contains("session.ttl") && err.contains("default.toml"), "{err}");
}

#[test]
fn the_report_shows_every_key_with_its_origin_and_no_password() {
    let loaded = Settings::load(&inputs(
        Some("local"),
        &[("AUTH__POSTGRES__URL", "postgres://auth:hunter2@db/auth_db")],
    ))
    .expect("loads");
    let text = render(&loaded.resolved);
    assert!(!text.contains("hunter2"), "{text}");
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key}: {text}"))
    };
    assert!(line("postgres.url").contains("auth:<redacted>@db"), "{text}");
    assert!(line("postgres.url").ends_with("# env AUTH__POSTGRES__URL"), "{text}");
    assert!(line("storage.backend").ends_with("# built-in local layer"), "{text}");
    assert!(line("grpc.addr").ends_with("# built-in default"), "{text}");
    let keys = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(keys, loaded.resolved.values.len());
}

#[test]
fn postgres_urls_get_a_connect_timeout() {
    let mut s = Settings::defaults().expect("defaults");
    s.postgres.url = SecretUrl::new("postgres://h/db");
    s.postgres.connect_timeout_ms = 1500;
    assert_eq!(s.postgres.url_with_connect_timeout(), "postgres://h/db?connect_timeout=2");
    s.postgres.url = SecretUrl::new("postgres://h/db?sslmode=require");
    assert_eq!(
        s.postgres.url_with_connect_timeout(),
        "postgres://h/db?sslmode=require&connect_timeout=2"
    );
    s.postgres.url = SecretUrl::new("postgres://h/db?connect_timeout=9");
    assert_eq!(s.postgres.url_with_connect_timeout(), "postgres://h/db?connect_timeout=9");
}

#[test]
fn secret_urls_are_redacted() {
    let url = SecretUrl::new("postgres://u:hunter2@db/x");
    assert_eq!(format!("{url:?}"), "postgres://<redacted>");
}

#[test]
fn tls_settings_are_checked_together() {
    let err = |vars: &[(&str, &str)], key: &str| {
        let e = load(vars).expect_err(key).to_string();
        assert!(e.contains(key), "{key} in {e}");
    };
    err(&[("AUTH__GRPC__TLS__CERT_FILE", "/x.crt")], "grpc.tls.key_file");
    err(&[("AUTH__GRPC__TLS__KEY_FILE", "/x.key")], "grpc.tls.cert_file");
    err(&[("AUTH__GRPC__TLS__CLIENT_AUTH", "required")], "grpc.tls.client_auth");
    err(
        &[
            ("AUTH__GRPC__TLS__CERT_FILE", "/x.crt"),
            ("AUTH__GRPC__TLS__KEY_FILE", "/x.key"),
            ("AUTH__GRPC__TLS__CLIENT_AUTH", "optional"),
        ],
        "grpc.tls.client_ca_file",
    );
    err(&[("AUTH__GRPC__TLS__RELOAD_INTERVAL_SECS", "60")], "grpc.tls.reload_interval_secs");
    err(&[("AUTH__GRPC__TLS__CLIENT_AUTH", "sometimes")], "client_auth");
    // The files themselves are read at load: a missing one names its setting.
    err(
        &[
            ("AUTH__GRPC__TLS__CERT_FILE", "/nonexistent.crt"),
            ("AUTH__GRPC__TLS__KEY_FILE", "/nonexistent.key"),
        ],
        "grpc.tls.cert_file",
    );
}

#[test]
fn postgres_sslmodes_are_libpqs_and_the_driver_gets_what_it_knows() {
    let err = load(&[("AUTH__POSTGRES__URL", "postgres://h/db?sslmode=allow")]).expect_err("allow");
    assert!(err.to_string().contains("postgres.url") && err.to_string().contains("allow"), "{err}");
    for (url, mode, driver) in [
        ("postgres://h/db", SslMode::Disable, "postgres://h/db?sslmode=disable"),
        ("postgres://h/db?sslmode=prefer", SslMode::Prefer, "postgres://h/db?sslmode=prefer"),
        (
            "postgres://h/db?a=1&sslmode=verify-full",
            SslMode::VerifyFull,
            "postgres://h/db?a=1&sslmode=require",
        ),
        (
            "postgres://h/db?sslmode=verify-ca&b=2",
            SslMode::VerifyCa,
            "postgres://h/db?b=2&sslmode=require",
        ),
    ] {
        assert_eq!(SslMode::of(url), Ok(mode), "{url}");
        assert_eq!(mode.driver_url(url), driver, "{url}");
    }
}

#[test]
fn public_lookups_pass_in_production_with_a_peer_allowlist() {
    let production = [
        ("AUTH__POSTGRES__URL", "postgres://auth:s3cret@10.0.0.5:5432/auth_db"),
        ("AUTH__REDIS__URL", "redis://:s3cret@127.0.0.1:6379/0"),
        ("AUTH__LOOKUP__PUBLIC", "true"),
    ];
    let err = Settings::load(&inputs(Some("production"), &production)).expect_err("no allowlist");
    assert!(err.to_string().contains("lookup.public"), "{err}");
    let allowed =
        [production.as_slice(), &[("AUTH__LOOKUP__ALLOWED_PEERS", "spiffe://a/b,spiffe://c/d")]]
            .concat();
    let loaded = Settings::load(&inputs(Some("production"), &allowed)).expect("allowlist");
    assert_eq!(loaded.settings.lookup.allowed_peers, ["spiffe://a/b", "spiffe://c/d"]);
    assert!(loaded.warnings.iter().any(|w| w.contains("plaintext")), "{:?}", loaded.warnings);
}

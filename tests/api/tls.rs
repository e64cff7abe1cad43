//! Transport security: TLS and client certificates on the gRPC port with
//! certificates made here, peers' identities allowing lookups and
//! AdminService, certificates rotating under a running service, refusals
//! at start, the CLI acting through a running service, and TLS to
//! PostgreSQL and Redis servers of the test's own.

use std::{path::Path, time::Duration};

use auth_service::{
    cli::{AccountArgs, RemoteArgs, admin_remote},
    config::{ClientAuth, SecretUrl, Settings},
    grpc::proto::{
        AdminUserRequest, FindByEmailRequest, GetMeRequest,
        admin_service_client::AdminServiceClient,
    },
    service::AccountAction,
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::support::{
    Backend, BinaryService, Client, PASSWORD, PrivatePostgres, TestApp, backend_tests,
    binary_command, binary_cwd, blocking,
    certs::{ClientSpec, Pair, Pki},
    get_me, login,
    redis::RedisProcess,
    register, run_to_exit, unique_database, unique_email, with_session,
};

const BILLING: &str = "spiffe://test.example/ns/billing/sa/api";
const OPS: &str = "spiffe://test.example/ns/ops/sa/admin";
const OTHER: &str = "spiffe://test.example/ns/other/sa/api";

/// TLS on the gRPC port with `server`, client certificates from `pki`'s CA
/// as `auth` says, and the two allowlists.
fn with_tls(pki: &Pki, server: &Pair, auth: ClientAuth) -> impl FnOnce(&mut Settings) {
    let (cert, key, ca) = (path(&server.cert), path(&server.key), path(&pki.ca_file));
    move |s| {
        s.grpc.tls.cert_file = cert;
        s.grpc.tls.key_file = key;
        if auth != ClientAuth::None {
            s.grpc.tls.client_ca_file = ca;
        }
        s.grpc.tls.client_auth = auth;
        s.grpc.tls.reload_interval_secs = 1;
        s.lookup.allowed_peers = vec![BILLING.into()];
        s.admin.allowed_peers = vec![OPS.into()];
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A channel to `app` over TLS, trusting `ca`, presenting `identity`.
async fn channel(
    app: &TestApp,
    ca: &Path,
    identity: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(pair.cert_pem(), pair.key_pem()));
    }
    Endpoint::from_shared(format!("https://{}", app.grpc_addr))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn client(app: &TestApp, ca: &Path, identity: Option<&Pair>) -> Client {
    Client::new(channel(app, ca, identity).await.expect("TLS connect"))
}

async fn admin(app: &TestApp, ca: &Path, identity: Option<&Pair>) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel(app, ca, identity).await.expect("TLS connect"))
}

async fn tls_serves_the_api_and_peers_are_known_by_their_certificates(backend: Backend) {
    let pki = Pki::new("api");
    let server = pki.server(&["localhost", "127.0.0.1"]);
    let app = TestApp::spawn_with(backend, with_tls(&pki, &server, ClientAuth::Optional)).await;
    let billing = pki.client(&ClientSpec { uri: Some(BILLING), ..ClientSpec::default() });
    let ops =
        pki.client(&ClientSpec { uri: Some(OPS), dns: &["ops.internal"], ..ClientSpec::default() });
    let other = pki.client(&ClientSpec { uri: Some(OTHER), ..ClientSpec::default() });

    // Without a certificate: the whole user journey over TLS.
    let mut anonymous = client(&app, &pki.ca_file, None).await;
    let email = unique_email();
    let user = register(&mut anonymous, &email, PASSWORD).await;
    let (_, session) = login(&mut anonymous, &email, PASSWORD).await;
    assert_eq!(get_me(&mut anonymous, &session).await.uuid, user.uuid);

    // Lookups without a session: only for an allowed peer.
    let lookup = || FindByEmailRequest { email: email.clone() };
    let status = anonymous.find_by_email(lookup()).await.expect_err("no session, no peer");
    assert_eq!(status.code(), Code::Unauthenticated);
    let found = client(&app, &pki.ca_file, Some(&billing)).await.find_by_email(lookup()).await;
    assert_eq!(found.expect("an allowed peer").into_inner().user.expect("user").uuid, user.uuid);
    let status = client(&app, &pki.ca_file, Some(&other)).await.find_by_email(lookup()).await;
    assert_eq!(status.expect_err("not allowed").code(), Code::Unauthenticated);

    // AdminService: an allowed peer or an admin's session; no one else.
    let request = || AdminUserRequest { email: email.clone() };
    let status = admin(&app, &pki.ca_file, None).await.disable_user(request()).await;
    assert_eq!(status.expect_err("neither").code(), Code::Unauthenticated);
    let status = admin(&app, &pki.ca_file, Some(&other)).await.disable_user(request()).await;
    assert_eq!(status.expect_err("not allowed").code(), Code::PermissionDenied);
    let status =
        admin(&app, &pki.ca_file, None).await.disable_user(with_session(request(), &session)).await;
    assert_eq!(status.expect_err("not an admin").code(), Code::PermissionDenied);
    let mut ops_admin = admin(&app, &pki.ca_file, Some(&ops)).await;
    let disabled = ops_admin.disable_user(request()).await.expect("an allowed peer").into_inner();
    assert_eq!((disabled.uuid.as_str(), disabled.sessions_ended), (user.uuid.as_str(), 1));
    let status = anonymous.get_me(with_session(GetMeRequest {}, &session)).await;
    assert_eq!(status.expect_err("its session ended").code(), Code::Unauthenticated);
    ops_admin.enable_user(request()).await.expect("enable");
    login(&mut anonymous, &email, PASSWORD).await;
    let status = ops_admin.reset_second_factor(request()).await.expect_err("no second factors");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = ops_admin.revoke_user_sessions(AdminUserRequest { email: unique_email() }).await;
    assert_eq!(status.expect_err("unknown").code(), Code::NotFound);

    // Plaintext on the TLS port: refused.
    let plaintext = Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("TCP connects");
    let status = Client::new(plaintext).get_me(with_session(GetMeRequest {}, &session)).await;
    assert!(status.is_err(), "plaintext is not served on the TLS port");
}

/// Every bad client certificate fails its handshake, never the process;
/// each failure is counted by reason.
#[tokio::test(flavor = "multi_thread")]
async fn required_client_certificates_refuse_every_bad_one_and_serve_the_good() {
    let pki = Pki::new("required");
    let stranger_ca = Pki::new("stranger");
    let server = pki.server(&["localhost", "127.0.0.1"]);
    let app =
        TestApp::spawn_with(Backend::Embedded, with_tls(&pki, &server, ClientAuth::Required)).await;
    let good = pki.client(&ClientSpec { uri: Some(BILLING), ..ClientSpec::default() });
    let expired =
        pki.client(&ClientSpec { uri: Some(BILLING), expired: true, ..ClientSpec::default() });
    let wrong_purpose = pki.client(&ClientSpec {
        uri: Some(BILLING),
        server_purpose: true,
        ..ClientSpec::default()
    });
    let foreign = stranger_ca.client(&ClientSpec { uri: Some(BILLING), ..ClientSpec::default() });

    let calls = async |identity: Option<&Pair>| {
        let channel = channel(&app, &pki.ca_file, identity).await?;
        Ok::<_, tonic::transport::Error>(
            Client::new(channel).find_by_email(FindByEmailRequest { email: unique_email() }).await,
        )
    };
    for (what, identity) in [
        ("no certificate", None),
        ("an expired certificate", Some(&expired)),
        ("a certificate for servers", Some(&wrong_purpose)),
        ("another CA's certificate", Some(&foreign)),
    ] {
        // TLS 1.3 finishes the client's side before the server judges its
        // certificate: the refusal can come at the first call instead.
        match calls(identity).await {
            Err(_) => {}
            Ok(answer) => assert!(answer.is_err(), "{what}: served {answer:?}"),
        }
    }
    let answer = calls(Some(&good)).await.expect("connects");
    assert_eq!(answer.expect_err("a missing user").code(), Code::NotFound, "a good one is served");

    let (_, metrics) = app.get("/metrics").await;
    for reason in ["no_certificate", "expired", "wrong_purpose", "unknown_ca", "ok"] {
        assert!(
            metrics.contains(&format!("auth_tls_handshakes_total{{result=\"{reason}\"}}")),
            "{reason} counted:\n{}",
            metrics.lines().filter(|l| l.contains("auth_tls")).collect::<Vec<_>>().join("\n")
        );
    }
    let expiry = metrics
        .lines()
        .find_map(|l| l.strip_prefix("auth_tls_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("expiry gauge");
    assert!(expiry > chrono::Utc::now().timestamp() as f64, "{expiry}");
}

/// Writes `pair` over the files the service reads, each in one rename.
fn replace_files(pair: &Pair, cert: &Path, key: &Path) {
    for (from, to) in [(&pair.cert, cert), (&pair.key, key)] {
        let staging = to.with_extension("staging");
        std::fs::copy(from, &staging).expect("copy");
        std::fs::rename(&staging, to).expect("rename");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_certificate_serves_new_connections_and_a_bad_one_is_refused() {
    let (first_ca, second_ca) = (Pki::new("first"), Pki::new("second"));
    let (cert, key) = (first_ca.dir().join("serving.crt"), first_ca.dir().join("serving.key"));
    replace_files(&first_ca.server(&["localhost"]), &cert, &key);
    let serving = Pair { cert: cert.clone(), key: key.clone() };
    let app =
        TestApp::spawn_with(Backend::Embedded, with_tls(&first_ca, &serving, ClientAuth::None))
            .await;
    let mut open = client(&app, &first_ca.ca_file, None).await;
    let (_, session) = login_fresh(&mut open).await;
    assert!(channel(&app, &second_ca.ca_file, None).await.is_err(), "the first certificate serves");

    replace_files(&second_ca.server(&["localhost"]), &cert, &key);
    let rotated = wait_for(Duration::from_secs(15), async || {
        channel(&app, &second_ca.ca_file, None).await.is_ok()
    })
    .await;
    assert!(rotated, "a new connection gets the new certificate");
    get_me(&mut open, &session).await;

    std::fs::write(&cert, "not a certificate").expect("break the file");
    let refused = wait_for(Duration::from_secs(15), async || {
        let (_, metrics) = app.get("/metrics").await;
        metrics.contains("auth_tls_reload_failures_total 1")
    })
    .await;
    assert!(refused, "a bad file is refused and counted");
    let mut late = client(&app, &second_ca.ca_file, None).await;
    get_me(&mut late, &session).await;
}

async fn login_fresh(client: &mut Client) -> (auth_service::grpc::proto::User, String) {
    let email = unique_email();
    register(client, &email, PASSWORD).await;
    login(client, &email, PASSWORD).await
}

async fn wait_for(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_at_once_and_an_expired_certificate_is_served_with_a_warning() {
    let (first_ca, second_ca) = (Pki::new("hup1"), Pki::new("hup2"));
    let expired = {
        let pair = first_ca.client(&ClientSpec {
            dns: &["localhost"],
            expired: true,
            server_purpose: true,
            ..ClientSpec::default()
        });
        let (cert, key) = (first_ca.dir().join("serving.crt"), first_ca.dir().join("serving.key"));
        replace_files(&pair, &cert, &key);
        Pair { cert, key }
    };
    let service = BinaryService::start(
        Backend::Embedded,
        &[
            ("AUTH__GRPC__TLS__CERT_FILE", path(&expired.cert)),
            ("AUTH__GRPC__TLS__KEY_FILE", path(&expired.key)),
            // Longest: the reload below is the signal's, not the poll's.
            ("AUTH__GRPC__TLS__RELOAD_INTERVAL_SECS", "10".into()),
        ],
    )
    .await;
    let logs = service.logs();
    assert!(logs.iter().any(|l| l.contains("HAS EXPIRED")), "a loud warning: {logs:?}");

    replace_files(&second_ca.server(&["localhost"]), &expired.cert, &expired.key);
    let pid = service.pid().to_string();
    let sent = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
    assert!(sent.success());
    let reloaded = wait_for(Duration::from_secs(5), async || {
        service
            .logs()
            .iter()
            .any(|l| l.contains("TLS certificate reloaded") && l.contains("SIGHUP"))
    })
    .await;
    assert!(reloaded, "reloaded on SIGHUP: {:?}", service.logs());
}

/// The binary refuses a start on TLS files that cannot serve, naming the
/// setting and the file; `config --check` says the same.
#[test]
fn unusable_tls_files_stop_the_start_naming_the_file() {
    let pki = Pki::new("refusals");
    let good = pki.server(&["localhost"]);
    let other = pki.server(&["localhost"]);
    let key_only = pki.dir().join("no-certificate.pem");
    std::fs::write(&key_only, good.key_pem()).expect("write");
    let missing = pki.dir().join("missing.pem");
    let cases: [(&str, &Path, &Path, Option<&Path>); 4] = [
        ("missing.pem", &missing, &good.key, None),
        ("does not match", &good.cert, &other.key, None),
        ("no-certificate.pem", &key_only, &good.key, None),
        ("no-certificate.pem", &good.cert, &good.key, Some(&key_only)),
    ];
    for (named, cert, key, client_ca) in cases {
        let name = format!("tls-{}", uuid::Uuid::new_v4().simple());
        let mut env = vec![
            ("AUTH__GRPC__ADDR", "127.0.0.1:0".to_owned()),
            ("AUTH__HTTP__ADDR", "127.0.0.1:0".to_owned()),
            ("AUTH__GRPC__TLS__CERT_FILE", path(cert)),
            ("AUTH__GRPC__TLS__KEY_FILE", path(key)),
        ];
        if let Some(ca) = client_ca {
            env.push(("AUTH__GRPC__TLS__CLIENT_CA_FILE", path(ca)));
            env.push(("AUTH__GRPC__TLS__CLIENT_AUTH", "optional".into()));
        }
        for args in [&["config", "--check"][..], &["serve"][..]] {
            let mut command = binary_command(&name);
            command.args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            let (ok, _, stderr) = run_to_exit(&mut command, Duration::from_secs(30));
            assert!(!ok, "{args:?} with {named}: started");
            assert!(stderr.contains(named) && stderr.contains("grpc.tls"), "{args:?}: {stderr}");
        }
        let _ = std::fs::remove_dir_all(binary_cwd(&name));
    }
}

/// `admin revoke --target`: through the running service's AdminService,
/// as an allowed peer, it reaches an embedded service's sessions.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_acts_through_a_running_embedded_service() {
    let pki = Pki::new("cli");
    let server = pki.server(&["localhost", "127.0.0.1"]);
    let app =
        TestApp::spawn_with(Backend::Embedded, with_tls(&pki, &server, ClientAuth::Optional)).await;
    let mut anonymous = client(&app, &pki.ca_file, None).await;
    let (user, session) = login_fresh(&mut anonymous).await;
    let ops = pki.client(&ClientSpec { uri: Some(OPS), ..ClientSpec::default() });
    let args = AccountArgs {
        email: user.email.clone(),
        remote: RemoteArgs {
            target: Some(format!("https://localhost:{}", app.grpc_addr.port())),
            cacert: Some(pki.ca_file.clone()),
            cert: Some(ops.cert.clone()),
            key: Some(ops.key.clone()),
        },
    };
    let out = blocking(move || admin_remote(AccountAction::RevokeSessions, &args)).expect("revoke");
    assert!(out.contains("1 session(s) ended"), "{out}");
    let status = anonymous.get_me(with_session(GetMeRequest {}, &session)).await;
    assert_eq!(status.expect_err("ended").code(), Code::Unauthenticated);

    // Without an allowed identity it is refused, and says so.
    let args = AccountArgs {
        email: user.email.clone(),
        remote: RemoteArgs {
            target: Some(format!("https://localhost:{}", app.grpc_addr.port())),
            cacert: Some(pki.ca_file.clone()),
            ..RemoteArgs::default()
        },
    };
    let refused =
        blocking(move || admin_remote(AccountAction::Disable, &args)).expect_err("refused");
    assert!(refused.to_string().contains("Unauthenticated"), "{refused}");
}

/// PostgreSQL with TLS: verify-full against the CA serves; verify-ca
/// accepts a certificate for another name; verify-full refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_is_verified_as_sslmode_says() {
    let pki = Pki::new("pg");
    let server = pki.server(&["localhost"]);
    let pg = blocking({
        let server = server.clone();
        move || PrivatePostgres::tls(&server)
    });
    let database = unique_database();
    let url = |host: &str, mode: &str| {
        format!("postgres://postgres@{host}:{}/{database}?sslmode={mode}", pg.port)
    };
    let ca = path(&pki.ca_file);
    for (host, mode) in
        [("localhost", "verify-full"), ("127.0.0.1", "verify-ca"), ("127.0.0.1", "require")]
    {
        let (url, ca) = (url(host, mode), ca.clone());
        let app = TestApp::spawn_with(Backend::External, move |s| {
            s.postgres.url = SecretUrl::new(url);
            s.postgres.ca_file = ca;
        })
        .await;
        let mut client = app.client();
        login_fresh(&mut client).await;
        let encrypted =
            pg.psql("SELECT count(*) FROM pg_stat_ssl WHERE ssl AND pid <> pg_backend_pid()");
        assert_ne!(encrypted, "0", "{mode}: the service's connections are encrypted");
    }
    let (wrong, ca) = (url("127.0.0.1", "verify-full"), ca.clone());
    let settings = |s: &mut Settings| {
        s.postgres.url = SecretUrl::new(wrong);
        s.postgres.ca_file = ca;
    };
    let app = TestApp::start_with(Backend::External, settings).await;
    let refused = wait_for(Duration::from_secs(20), async || {
        let (_, body) = app.get("/health/actors").await;
        body.contains("certificate not valid for name")
    })
    .await;
    let (_, actors) = app.get("/health/actors").await;
    assert!(refused, "the certificate's name is refused: {actors}");
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    drop(app);
    blocking(move || drop(pg));
}

/// Redis over TLS (`rediss://`), its certificate checked against the CA.
#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_serves_sessions() {
    let pki = Pki::new("redis");
    let server = pki.server(&["localhost"]);
    let ca_file = pki.ca_file.clone();
    let redis = blocking(move || RedisProcess::tls(&server, &ca_file));
    let (url, ca) = (format!("rediss://localhost:{}", redis.port), path(&pki.ca_file));
    let app = TestApp::spawn_with(Backend::External, move |s| {
        s.redis.url = SecretUrl::new(url);
        s.redis.ca_file = ca;
    })
    .await;
    let mut client = app.client();
    let (user, session) = login_fresh(&mut client).await;
    assert_eq!(get_me(&mut client, &session).await.uuid, user.uuid);
    drop(app);
    blocking(move || drop(redis));
}

backend_tests!(tls_serves_the_api_and_peers_are_known_by_their_certificates);

/// Over TLS the port's limits hold as in plaintext, and the request log
/// line names the calling peer.
#[tokio::test(flavor = "multi_thread")]
async fn limits_hold_over_tls_and_the_log_line_names_the_peer() {
    let pki = Pki::new("binary");
    let server = pki.server(&["localhost", "127.0.0.1"]);
    let service = BinaryService::start(
        Backend::Embedded,
        &[
            ("AUTH__GRPC__TLS__CERT_FILE", path(&server.cert)),
            ("AUTH__GRPC__TLS__KEY_FILE", path(&server.key)),
            ("AUTH__GRPC__TLS__CLIENT_CA_FILE", path(&pki.ca_file)),
            ("AUTH__GRPC__TLS__CLIENT_AUTH", "optional".into()),
        ],
    )
    .await;
    let peer = pki.client(&ClientSpec { uri: Some(OTHER), ..ClientSpec::default() });
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca_file).expect("ca")))
        .identity(Identity::from_pem(peer.cert_pem(), peer.key_pem()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", service.grpc_addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connects");
    let mut client = Client::new(channel);
    let mut oversized = crate::support::registration(&unique_email(), PASSWORD);
    oversized.avatar = "x".repeat(100 * 1024);
    let status = client.register(oversized).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The same connection still serves.
    login_fresh(&mut client).await;

    let (_, logs) = service.terminate().await;
    let named = logs
        .iter()
        .filter(|l| l.contains(r#""message":"rpc""#) && l.contains(&format!(r#""peer":"{OTHER}""#)))
        .count();
    assert!(named >= 3, "every request line names the peer: {logs:?}");
}

//! Deadlines, graceful shutdown, and the binary itself.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use crate::helpers::{
    PASSWORD, TestApp, postgres_server, redis_url, registration, unique_database, unique_email,
};

/// tonic's client enforces a deadline itself (answering CANCELLED locally),
/// so this speaks HTTP/2 directly to see what the server answers.
#[tokio::test(flavor = "multi_thread")]
async fn the_callers_deadline_is_deadline_exceeded() {
    let app = TestApp::spawn_with(|s| {
        s.argon2.memory_kib = 64 * 1024;
        s.argon2.iterations = 8;
        s.argon2.threads = 1;
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(app.grpc_addr).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);

    let message = prost::Message::encode_to_vec(&registration(&unique_email(), PASSWORD));
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
    frame.extend_from_slice(&message);
    let request =
        http::Request::post(format!("http://{}/userService.UserService/Register", app.grpc_addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "30m")
            .body(())
            .expect("request");
    let started = std::time::Instant::now();
    let (response, mut body) = h2.send_request(request, false).expect("send");
    body.send_data(frame.into(), true).expect("body");
    let response = response.await.expect("response");
    let status =
        response.headers().get("grpc-status").map(|v| v.to_str().unwrap_or("?").to_owned());
    assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED in {:?}", response.headers());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at the deadline, not after the work"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_in_flight_rpcs_finish() {
    let mut app = TestApp::spawn_with(|s| {
        s.argon2.memory_kib = 64 * 1024;
        s.argon2.iterations = 6;
        s.argon2.threads = 1;
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    let in_flight =
        tokio::spawn(async move { client.register(registration(&email, PASSWORD)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let grpc_addr = app.grpc_addr;
    app.stop();
    in_flight.await.expect("task").expect("the in-flight registration completed");
    assert!(tokio::net::TcpStream::connect(grpc_addr).await.is_err(), "no longer accepting");
}

#[test]
fn help_describes_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_auth-service")).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "migrate", "admin", "AUTH__"] {
        assert!(text.contains(word), "{word} in --help:\n{text}");
    }
}

#[test]
fn a_bad_setting_fails_the_start_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .env("AUTH__SESSION__TTL_SECS", "soon")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("session.ttl_secs"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let database = unique_database();
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .env("AUTH__GRPC__ADDR", "127.0.0.1:0")
        .env("AUTH__HTTP__ADDR", "127.0.0.1:0")
        .env("AUTH__POSTGRES__URL", format!("{}/{database}", postgres_server()))
        .env("AUTH__REDIS__URL", redis_url())
        .env("AUTH__LOG__FORMAT", "json")
        .env("AUTH__ARGON2__MEMORY_KIB", "1024")
        .env("AUTH__ARGON2__ITERATIONS", "1")
        // Nothing listens there: export fails, and must say so only once.
        .env("AUTH__TRACING__OTLP_ENDPOINT", format!("http://{}", closed_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start binary");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("auth-service listening"))
        .expect("listening line");
    let log: serde_json::Value = serde_json::from_str(&listening).expect("json log line");
    let http_addr: std::net::SocketAddr =
        log["fields"]["http_addr"].as_str().and_then(|a| a.parse().ok()).expect("http_addr");

    // Ready means migrated: the database exists before we stop and drop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while crate::helpers::http_get(http_addr, "/health/ready").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "binary never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The container HEALTHCHECK command agrees.
    let healthcheck = || {
        Command::new(env!("CARGO_BIN_EXE_auth-service"))
            .arg("healthcheck")
            .env("AUTH__HTTP__ADDR", http_addr.to_string())
            .output()
            .expect("healthcheck")
            .status
    };
    assert!(healthcheck().success());

    let killed =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(!healthcheck().success(), "unhealthy once stopped");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("SIGTERM received")), "{rest:?}");
    let export_warnings = rest.iter().filter(|l| l.contains("trace export failing")).count();
    assert_eq!(export_warnings, 1, "one warning for an unreachable collector: {rest:?}");
    crate::helpers::drop_database(&database);
}

/// A loopback port nothing listens on.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

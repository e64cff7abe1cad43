//! Deadlines, graceful shutdown, and the binary itself.

use std::time::Duration;

use crate::support::{
    Backend, BinaryService, PASSWORD, TestApp, backend_tests, binary_command, registration,
    run_to_exit, slow_hashing, unique_email,
};

/// tonic's client enforces a deadline itself (answering CANCELLED locally),
/// so this speaks HTTP/2 directly to see what the server answers.
async fn the_callers_deadline_is_deadline_exceeded(backend: Backend) {
    // A hash of several seconds: an answer well before it ended came from
    // the deadline, with room for a loaded machine.
    let app = TestApp::spawn_with(backend, |s| {
        slow_hashing(s, 64 * 1024, 32);
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
        started.elapsed() < Duration::from_millis(1500),
        "answered at the deadline, not after the work: {:?}",
        started.elapsed()
    );
}

async fn shutdown_lets_in_flight_rpcs_finish(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, |s| {
        slow_hashing(s, 64 * 1024, 6);
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    let in_flight =
        tokio::spawn(async move { client.register(registration(&email, PASSWORD)).await });
    // Stop only once the registration is hashing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = app.get("/health/actors").await;
        let report: serde_json::Value = serde_json::from_str(&body).expect("json");
        let hasher = report["actors"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "PasswordHasher"))
            .cloned();
        if hasher.is_some_and(|h| h["in_flight"].as_u64() >= Some(1)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registration never reached the hasher"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let grpc_addr = app.grpc_addr;
    app.stop();
    in_flight.await.expect("task").expect("the in-flight registration completed");
    assert!(tokio::net::TcpStream::connect(grpc_addr).await.is_err(), "no longer accepting");
}

async fn draining_flips_health_and_ends_watch_streams(backend: Backend) {
    use tokio_stream::StreamExt as _;
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let mut app = TestApp::spawn_with(backend, |s| s.grpc.drain_timeout_secs = 30).await;
    app.wait_grpc_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(watch.next().await.expect("first").expect("ok").status(), ServingStatus::Serving);

    let stopping = std::time::Instant::now();
    app.stop();
    // An open Watch stream must not hold the drain for its whole timeout.
    assert!(stopping.elapsed() < Duration::from_secs(15), "drain waited {:?}", stopping.elapsed());
    let mut seen = Vec::new();
    while let Some(Ok(update)) = watch.next().await {
        seen.push(update.status());
    }
    assert_eq!(seen.last(), Some(&ServingStatus::NotServing), "watchers told before the end");
}

async fn the_binary_serves_and_exits_cleanly_on_sigterm(backend: Backend) {
    // Nothing listens at the collector: export fails, and must say so once.
    let collector = format!("http://{}", closed_port());
    let service =
        BinaryService::start(backend, &[("AUTH__TRACING__OTLP_ENDPOINT", collector)]).await;
    let http_addr = service.http_addr;

    // The container HEALTHCHECK command agrees.
    let database = service.database().to_owned();
    let healthcheck = || {
        let mut command = binary_command(&database);
        command.arg("healthcheck").env("AUTH__HTTP__ADDR", http_addr.to_string());
        run_to_exit(&mut command, Duration::from_secs(30)).0
    };
    assert!(healthcheck());
    let (_, ready) = crate::support::http_get(http_addr, "/health/ready").await;
    assert!(ready.contains(&format!(r#""backend":"{backend}""#)), "{ready}");

    let (status, logs) = service.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(!healthcheck(), "unhealthy once stopped");
    let _ = std::fs::remove_dir_all(crate::support::binary_cwd(&database));
    assert!(logs.iter().any(|l| l.contains("SIGTERM received")), "{logs:?}");
    let export_warnings = logs.iter().filter(|l| l.contains("trace export failing")).count();
    assert_eq!(export_warnings, 1, "one warning for an unreachable collector: {logs:?}");
}

/// A loopback port nothing listens on.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

backend_tests!(
    the_callers_deadline_is_deadline_exceeded,
    shutdown_lets_in_flight_rpcs_finish,
    draining_flips_health_and_ends_watch_streams,
    the_binary_serves_and_exits_cleanly_on_sigterm,
);

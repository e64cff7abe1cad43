//! Connection limits from `grpc.*`: what one peer may send or hold, and how
//! long a connection lives. Transport behaviour, the same on both storage
//! backends: the transport tests run on the embedded one, which starts
//! fastest.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tonic::{Code, Request, metadata::MetadataValue};

use crate::support::{
    Backend, PASSWORD, TestApp, backend_tests, register, registration, unique_email,
};

async fn an_oversized_request_is_out_of_range_and_the_connection_lives_on(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.grpc.max_request_bytes = 8 * 1024).await;
    let mut client = app.client();

    let mut huge = registration(&unique_email(), PASSWORD);
    huge.avatar = "a".repeat(9 * 1024);
    let status = client.register(huge).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Under the limit the request is decoded, and validation speaks.
    let mut large = registration(&unique_email(), PASSWORD);
    large.avatar = "a".repeat(7 * 1024);
    let status = client.register(large).await.expect_err("avatar too long");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The same connection still serves.
    register(&mut client, &unique_email(), PASSWORD).await;
}

backend_tests!(an_oversized_request_is_out_of_range_and_the_connection_lives_on);

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_header_block_fails_the_call_not_the_connection() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| s.grpc.max_header_list_bytes = 4096).await;
    let mut client = app.client();
    let mut request = Request::new(registration(&unique_email(), PASSWORD));
    let padding = MetadataValue::try_from("x".repeat(8 * 1024)).expect("ascii");
    request.metadata_mut().insert("x-padding", padding);
    let status = client.register(request).await.expect_err("header block over the limit");
    // HTTP/2 answers 431 before gRPC sees the call; the client maps a
    // response without grpc-status to UNKNOWN.
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("431"), "Request Header Fields Too Large: {status:?}");
    register(&mut client, &unique_email(), PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_told_the_stream_limit() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| s.grpc.max_concurrent_streams = 7).await;
    let tcp = TcpStream::connect(app.grpc_addr).await.expect("connect");
    let (_send, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    // Drive the connection until the server's SETTINGS have been applied.
    let deadline = Instant::now() + Duration::from_secs(5);
    while connection.max_concurrent_send_streams() != 7 && Instant::now() < deadline {
        tokio::select! {
            ended = &mut connection => panic!("connection ended: {ended:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    assert_eq!(connection.max_concurrent_send_streams(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_is_closed_at_its_max_age() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.grpc.max_connection_age_secs = 1;
        s.grpc.max_connection_age_grace_secs = 1;
    })
    .await;
    let tcp = TcpStream::connect(app.grpc_addr).await.expect("connect");
    let (_send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let opened = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("closed by the server within its age and grace")
        .ok();
    let lived = opened.elapsed();
    assert!(lived >= Duration::from_millis(800), "closed too early: {lived:?}");
    // Clients reconnect and carry on.
    register(&mut app.client(), &unique_email(), PASSWORD).await;
}

/// An HTTP/2 peer that sends the preface and its SETTINGS, then never
/// answers anything (no PING acknowledgement): how long until the server
/// hangs up, if it does within `limit`.
async fn silent_peer_lifetime(app: &TestApp, limit: Duration) -> Option<Duration> {
    let mut tcp = TcpStream::connect(app.grpc_addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("settings");
    let opened = Instant::now();
    let mut buf = [0u8; 1024];
    let drained = async {
        // Read (and ignore) whatever the server sends until it closes.
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    };
    tokio::time::timeout(limit, drained).await.ok().map(|()| opened.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_stops_answering_pings_is_disconnected() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.grpc.keepalive_interval_secs = 1;
        s.grpc.keepalive_timeout_secs = 1;
        s.grpc.max_connection_age_secs = 0;
    })
    .await;
    let lived = silent_peer_lifetime(&app, Duration::from_secs(8)).await;
    let lived = lived.expect("disconnected after an unanswered PING");
    assert!(lived >= Duration::from_millis(1500), "before a PING could time out: {lived:?}");

    // Without keepalive the same peer is left alone.
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.grpc.keepalive_interval_secs = 0;
        s.grpc.max_connection_age_secs = 0;
    })
    .await;
    assert_eq!(silent_peer_lifetime(&app, Duration::from_secs(3)).await, None);
}

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{Backend, TestApp, backend_tests};

async fn health_endpoints_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/health/live").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["backend"], backend.to_string(), "readiness names the backend");

    let (status, body) = app.get("/health/actors").await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["backend"], backend.to_string());
    let actors = report["actors"].as_array().expect("actors");
    let names: Vec<&str> = actors.iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["UserStore", "SessionStore", "PasswordHasher", "Metrics"]);
    for actor in actors {
        for field in ["state", "restarts", "mailbox_capacity", "queued", "in_flight", "last_error"]
        {
            assert!(actor.get(field).is_some(), "{field} in {actor}");
        }
        assert_eq!(actor["restarts"], 0);
        // A clean start: no instance tripped over another (migrations).
        assert!(actor["last_error"].is_null(), "{actor}");
    }
}

async fn metrics_are_served_in_prometheus_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, 200);
    for name in
        ["auth_http_requests_total", "auth_actor_mailbox_capacity", "process_cpu_seconds_total"]
    {
        assert!(body.contains(name), "{name} missing");
    }
}

async fn grpc_health_reports_the_api_and_each_dependency(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The sampler publishes within a tick of readiness.
    let dependencies = backend.dependencies().map(|d| d.to_string());
    for service in
        ["", "userService.UserService"].into_iter().chain(dependencies.iter().map(String::as_str))
    {
        app.wait_grpc_health(service, ServingStatus::Serving, Duration::from_secs(10)).await;
    }
}

async fn reflection_v1_and_v1alpha_list_the_services(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let channel =
        Channel::from_shared(format!("http://{}", app.grpc_addr)).expect("uri").connect_lazy();

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut v1 = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        v1.server_reflection_info(tokio_stream::iter([request])).await.expect("v1").into_inner();
    let reply = replies.next().await.expect("reply").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected {reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in
        ["userService.UserService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }

    // The descriptor of user.proto resolves, imports included.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "userService.UserService".into(),
        )),
    };
    let mut replies =
        v1.server_reflection_info(tokio_stream::iter([request])).await.expect("v1").into_inner();
    let reply = replies.next().await.expect("reply").expect("ok");
    assert!(
        matches!(reply.message_response, Some(MessageResponse::FileDescriptorResponse(_))),
        "{reply:?}"
    );

    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest,
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaMessage,
        server_reflection_response::MessageResponse as AlphaResponse,
    };
    let mut alpha = AlphaClient::new(channel);
    let request = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaMessage::ListServices(String::new())),
    };
    let mut replies = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha")
        .into_inner();
    let reply = replies.next().await.expect("reply").expect("ok");
    let Some(AlphaResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected {reply:?}")
    };
    assert!(list.service.iter().any(|s| s.name == "userService.UserService"));
}

backend_tests!(
    health_endpoints_answer,
    metrics_are_served_in_prometheus_text,
    grpc_health_reports_the_api_and_each_dependency,
    reflection_v1_and_v1alpha_list_the_services,
);

//! Metrics, dashboards and traces, checked against the real service.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_service::grpc::proto::{GetMeRequest, LoginRequest, LogoutRequest};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::Span,
};
use tonic::{Request, metadata::MetadataValue};

use crate::support::{
    Backend, BinaryService, PASSWORD, TestApp, backend_tests, http_get_with, register,
    registration, unique_email, with_session,
};

/// Samples of one metric: label set and value (a histogram's count).
type Samples = Vec<(HashMap<String, String>, f64)>;

/// `{metric name → samples}` from a scrape, via a real Prometheus
/// text-format parser.
fn parse_scrape(text: &str) -> HashMap<String, Samples> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let labels = sample.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.entry(sample.metric).or_default().push((labels, value));
    }
    out
}

fn value(scrape: &HashMap<String, Samples>, metric: &str, wanted: &[(&str, &str)]) -> f64 {
    scrape
        .get(metric)
        .into_iter()
        .flatten()
        .filter(|(labels, _)| {
            wanted.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Runs a fixed set of RPCs: 2 Register OK, 1 AlreadyExists, 1 InvalidArgument,
/// 1 Login OK, 2 Login Unauthenticated, 1 GetMe OK, 1 GetMe Unauthenticated,
/// 1 Logout OK.
async fn scripted_traffic(app: &TestApp) {
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    register(&mut client, &unique_email(), PASSWORD).await;
    let _ = client.register(registration(&email, PASSWORD)).await.expect_err("taken");
    let _ = client.register(registration("bad", PASSWORD)).await.expect_err("invalid");
    let session = client
        .login(LoginRequest { email: email.clone(), password: PASSWORD.into() })
        .await
        .expect("login")
        .into_inner()
        .session_id;
    for _ in 0..2 {
        let _ = client
            .login(LoginRequest { email: email.clone(), password: "wrong password".into() })
            .await
            .expect_err("wrong");
    }
    client.get_me(with_session(GetMeRequest {}, &session)).await.expect("me");
    let _ = client.get_me(GetMeRequest {}).await.expect_err("anonymous");
    client.logout(with_session(LogoutRequest {}, &session)).await.expect("logout");
}

async fn grpc_metrics_count_exactly_what_happened(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    scripted_traffic(&app).await;
    let (status, text) = app.get("/metrics").await;
    assert_eq!(status, 200);
    let scrape = parse_scrape(&text);

    let svc = ("grpc_service", "userService.UserService");
    let unary = ("grpc_type", "unary");
    let handled = |method: &str, code: &str| {
        value(
            &scrape,
            "grpc_server_handled_total",
            &[svc, unary, ("grpc_method", method), ("grpc_code", code)],
        )
    };
    assert_eq!(handled("Register", "OK"), 2.0);
    assert_eq!(handled("Register", "AlreadyExists"), 1.0);
    assert_eq!(handled("Register", "InvalidArgument"), 1.0);
    assert_eq!(handled("Login", "OK"), 1.0);
    assert_eq!(handled("Login", "Unauthenticated"), 2.0);
    assert_eq!(handled("GetMe", "OK"), 1.0);
    assert_eq!(handled("GetMe", "Unauthenticated"), 1.0);
    assert_eq!(handled("Logout", "OK"), 1.0);

    for (method, total, ok) in
        [("Register", 4.0, 2.0), ("Login", 3.0, 1.0), ("GetMe", 2.0, 1.0), ("Logout", 1.0, 1.0)]
    {
        let labels = [svc, unary, ("grpc_method", method)];
        assert_eq!(value(&scrape, "grpc_server_started_total", &labels), total, "{method} started");
        assert_eq!(
            value(&scrape, "grpc_server_msg_received_total", &labels),
            total,
            "{method} received"
        );
        assert_eq!(value(&scrape, "grpc_server_msg_sent_total", &labels), ok, "{method} sent");
        assert_eq!(
            value(&scrape, "grpc_server_handling_seconds", &labels),
            total,
            "{method} observed"
        );
    }
    assert_eq!(value(&scrape, "auth_logins_total", &[("outcome", "ok")]), 1.0);
    assert_eq!(value(&scrape, "auth_logins_total", &[("outcome", "bad_credentials")]), 2.0);
    assert_eq!(value(&scrape, "auth_registrations_total", &[("outcome", "email_taken")]), 1.0);
    assert!(value(&scrape, "auth_password_hash_seconds", &[("operation", "verify")]) >= 3.0);
    assert!(value(&scrape, "auth_http_requests_total", &[]) >= 1.0, "actix-web-prom metrics");
}

/// Metric names a PromQL expression reads: identifiers left once strings,
/// label matchers, ranges, grouping clauses, functions and keywords go.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => cleaned.push(c),
        }
    }
    // Drop `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, `group_left(...)`.
    let mut out = String::new();
    let mut rest = cleaned.as_str();
    while let Some((before, after)) = split_clause(rest, &GROUPING_CLAUSES) {
        out.push_str(before);
        rest = after;
    }
    out.push_str(rest);
    const NOT_METRICS: &[&str] = &[
        "sum",
        "rate",
        "increase",
        "histogram_quantile",
        "max",
        "time",
        "min",
        "avg",
        "count",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "irate",
        "delta",
        "abs",
        "clamp_min",
        "topk",
        "bool",
        "offset",
    ];
    out.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| !t.is_empty() && !t.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .filter(|t| !NOT_METRICS.contains(t))
        .map(str::to_owned)
        .collect()
}

const GROUPING_CLAUSES: [&str; 6] =
    ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Splits at the first `<keyword> (...)`, returning text before it and after
/// its closing parenthesis.
fn split_clause<'a>(text: &'a str, keywords: &[&str]) -> Option<(&'a str, &'a str)> {
    let mut best: Option<(usize, usize)> = None;
    for keyword in keywords {
        let mut from = 0;
        while let Some(pos) = text[from..].find(keyword).map(|p| p + from) {
            let boundary_before = pos == 0
                || !text.as_bytes()[pos - 1].is_ascii_alphanumeric()
                    && text.as_bytes()[pos - 1] != b'_';
            let after = &text[pos + keyword.len()..];
            let trimmed = after.trim_start();
            if boundary_before && trimmed.starts_with('(') {
                let open = pos + keyword.len() + (after.len() - trimmed.len());
                if let Some(close) = text[open..].find(')')
                    && best.is_none_or(|(p, _)| pos < p)
                {
                    best = Some((pos, open + close + 1));
                }
                break;
            }
            from = pos + keyword.len();
        }
    }
    best.map(|(start, end)| (&text[..start], &text[end..]))
}

#[test]
fn promql_metric_extraction() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{grpc_service="x"}[1m]))) / ignoring(grpc_code) group_left sum(rate(grpc_server_handled_total[5m]))"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["grpc_server_handled_total", "grpc_server_handling_seconds_bucket"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_reads_exported_metrics() {
    let app = TestApp::spawn(Backend::External).await;
    scripted_traffic(&app).await;
    // One sampler tick fills the pool and dependency gauges.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, text) = app.get("/metrics").await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("dashboards dir") {
        let path = entry.expect("entry").path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                .expect("valid JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{}: no metric in {expr}", path.display());
                for name in names {
                    assert!(
                        exported.contains(name.as_str()),
                        "{}: {name} is not exported ({expr})",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "only {checked} metric references checked");

    // The Go service's gRPC dashboard graphs these two bare series.
    for name in ["grpc_server_msg_sent_total", "grpc_server_msg_received_total"] {
        assert!(exported.contains(name), "{name}");
    }
}

// ---- traces ----

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_with_traceparent_exports_one_connected_trace() {
    // An OTLP collector inside the test.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otlp_addr = listener.local_addr().expect("addr");
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    // The real binary, exporting to it.
    let service = BinaryService::start(
        Backend::External,
        &[("AUTH__TRACING__OTLP_ENDPOINT", format!("http://{otlp_addr}"))],
    )
    .await;
    let mut client = service.client().await;
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut login = Request::new(LoginRequest { email: email.clone(), password: PASSWORD.into() });
    login.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{trace_id}-{caller_span}-01")).expect("ascii"),
    );
    let session = client.login(login).await.expect("login").into_inner().session_id;

    // A Jaeger-instrumented caller: `uber-trace-id` continues its trace too.
    let jaeger_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut me = Request::new(LoginRequest { email, password: PASSWORD.into() });
    me.metadata_mut().insert(
        "uber-trace-id",
        MetadataValue::try_from(format!("{jaeger_trace}:b7ad6b7169203331:0:1")).expect("ascii"),
    );
    client.login(me).await.expect("login");
    drop(client);

    // The ops endpoints are traced too (tracing-actix-web), continuing the
    // caller's trace.
    let probe_trace = "5b8efff798038103d269b633813fc60c";
    let traceparent = format!("00-{probe_trace}-eee19b7ec3c1b174-01");
    let (status, _) =
        http_get_with(service.http_addr, "/health/live", &[("traceparent", &traceparent)]).await;
    assert_eq!(status, 200);

    // SIGTERM: the service flushes its batch of spans on the way out.
    let (status, logs) = service.terminate().await;
    assert!(status.success());
    let logs: Vec<serde_json::Value> =
        logs.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();

    let spans = receiver.spans.lock().expect("lock").clone();
    let trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "userService.UserService/Login",
        "SessionStore.ReserveLoginAttempt",
        "UserStore.FindCredentials",
        "PasswordHasher.VerifyPassword",
        "SessionStore.CreateSession",
        "postgres find_credentials",
        "redis reserve_login_attempt",
        "redis create_session",
    ] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }

    // One connected tree: the RPC span's parent is the caller's span; every
    // other span's parent is a span of this trace.
    let ids: BTreeSet<String> = trace.iter().map(|s| hex(&s.span_id)).collect();
    let rpc = trace.iter().find(|s| s.name == "userService.UserService/Login").expect("rpc span");
    assert_eq!(hex(&rpc.parent_span_id), caller_span);
    for span in &trace {
        if span.span_id != rpc.span_id {
            assert!(
                ids.contains(&hex(&span.parent_span_id)),
                "{} has a dangling parent",
                span.name
            );
        }
    }
    assert_eq!(attribute(rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(rpc, "rpc.service").as_deref(), Some("userService.UserService"));
    assert_eq!(attribute(rpc, "rpc.method").as_deref(), Some("Login"));
    assert_eq!(attribute(rpc, "rpc.grpc.status_code").as_deref(), Some("0"));
    let sql = trace.iter().find(|s| s.name == "postgres find_credentials").expect("sql span");
    assert_eq!(attribute(sql, "db.system").as_deref(), Some("postgresql"));
    // Actor spans hang off the RPC; SQL spans off their actor span.
    let actor = trace.iter().find(|s| s.name == "UserStore.FindCredentials").expect("actor span");
    assert_eq!(actor.parent_span_id, rpc.span_id);
    assert_eq!(sql.parent_span_id, actor.span_id);
    for span in &trace {
        for kv in &span.attributes {
            let text = format!("{:?}", kv.value);
            assert!(!text.contains(PASSWORD), "a password leaked into {}", span.name);
        }
    }

    assert!(
        spans.iter().any(|s| hex(&s.trace_id) == probe_trace && s.name.contains("/health/live")),
        "the HTTP span continues the caller's trace"
    );
    let jaeger: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == jaeger_trace).collect();
    assert!(
        jaeger.iter().any(|s| s.name == "userService.UserService/Login"),
        "uber-trace-id honoured"
    );

    // Logs: no secrets, and the per-RPC line carries the caller's trace id.
    for line in &logs {
        let text = line.to_string();
        assert!(!text.contains(PASSWORD) && !text.contains(&session), "secret in log: {text}");
    }
    let rpc_line = logs
        .iter()
        .find(|l| l["message"] == "rpc" && l["trace_id"] == trace_id)
        .unwrap_or_else(|| panic!("an rpc log line with the trace id in {logs:?}"));
    assert_eq!(rpc_line["fields"]["code"], "OK");
    assert_eq!(rpc_line["fields"]["method"], "userService.UserService/Login");
    assert!(rpc_line["fields"]["duration_ms"].as_f64().is_some());
}

backend_tests!(grpc_metrics_count_exactly_what_happened,);

//! Load generator for auth-service: the source of every performance figure.
//!
//! ```sh
//! cargo run --release -- serve &                       # or any running instance
//! cargo run --release --example loadgen -- --scenario get-me --concurrency 32 --duration-secs 10
//! ```
//!
//! Scenarios: `get-me`, `login`, `register`, `mixed` (80% GetMe, 10% Login,
//! 10% FindByID) and `isolation` (GetMe latency alone, then again while a
//! login flood saturates the password hasher). `--otlp-sink ADDR` also runs a
//! span sink that discards what the service exports (for tracing overhead:
//! start the service with AUTH__TRACING__OTLP_ENDPOINT=http://ADDR).
//! It stops by itself after the given duration.

// A command-line report is its whole output.
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use auth_service::grpc::proto::{
    FindByIdRequest, GetMeRequest, LoginRequest, RegisterRequest,
    user_service_client::UserServiceClient,
};
use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    GetMe,
    Login,
    Register,
    Mixed,
    Isolation,
}

#[derive(Debug, Parser)]
struct Args {
    /// gRPC endpoint of the service.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    target: String,
    #[arg(long, value_enum, default_value = "get-me")]
    scenario: Scenario,
    /// Concurrent callers (each with its own HTTP/2 connection).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured duration per phase.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Accounts created before measuring.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Also run an OTLP span sink on this address (e.g. 127.0.0.1:4317).
    #[arg(long)]
    otlp_sink: Option<std::net::SocketAddr>,
}

const PASSWORD: &str = "loadgen password 1234";

#[derive(Clone, Copy)]
enum Op {
    GetMe,
    Login,
    Register,
    FindById,
}

struct Account {
    email: String,
    uuid: String,
    session: String,
}

#[derive(Default)]
struct Stats {
    latencies: Vec<Duration>,
    codes: BTreeMap<String, u64>,
}

impl Stats {
    fn record(&mut self, started: Instant, result: Result<(), tonic::Status>) {
        self.latencies.push(started.elapsed());
        let code = match result {
            Ok(()) => "OK".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        *self.codes.entry(code).or_default() += 1;
    }

    fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        for (code, n) in other.codes {
            *self.codes.entry(code).or_default() += n;
        }
    }

    fn report(&mut self, label: &str, elapsed: Duration) {
        self.latencies.sort();
        let n = self.latencies.len();
        let pct = |p: f64| {
            if n == 0 {
                return 0.0;
            }
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        println!(
            "{label:<28} {n:>8} calls {:>9.1}/s   p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms   {:?}",
            n as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.95),
            pct(0.99),
            pct(1.0),
            self.codes
        );
    }
}

#[derive(Clone, Default)]
struct SpanSink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for SpanSink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn connect(target: &str) -> UserServiceClient<Channel> {
    let channel = Channel::from_shared(target.to_owned())
        .expect("target URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach {target}: {e}"));
    UserServiceClient::new(channel)
}

fn with_session<T>(message: T, session: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("session_id", MetadataValue::try_from(session).expect("ascii"));
    request
}

fn registration(email: String) -> RegisterRequest {
    RegisterRequest {
        email,
        first_name: "Load".into(),
        last_name: "Generator".into(),
        password: PASSWORD.into(),
        role: String::new(),
        avatar: String::new(),
    }
}

async fn setup(target: &str, users: usize) -> Arc<Vec<Account>> {
    let mut client = connect(target).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut accounts = Vec::with_capacity(users);
    for i in 0..users {
        let email = format!("load-{run}-{i}@example.com");
        let user = client
            .register(registration(email.clone()))
            .await
            .expect("register during setup")
            .into_inner()
            .user
            .expect("user");
        let session = client
            .login(LoginRequest { email: email.clone(), password: PASSWORD.into() })
            .await
            .expect("login during setup")
            .into_inner()
            .session_id;
        accounts.push(Account { email, uuid: user.uuid, session });
    }
    Arc::new(accounts)
}

/// One caller issuing `scenario` calls back to back until `until`.
async fn caller(
    target: String,
    scenario: Scenario,
    accounts: Arc<Vec<Account>>,
    until: Instant,
    seed: usize,
) -> Stats {
    let mut client = connect(&target).await;
    let mut stats = Stats::default();
    let mut i = seed;
    while Instant::now() < until {
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let account = &accounts[(i >> 33) % accounts.len()];
        let pick = (i >> 20) % 10;
        let op = match scenario {
            Scenario::GetMe | Scenario::Isolation => Op::GetMe,
            Scenario::Login => Op::Login,
            Scenario::Register => Op::Register,
            Scenario::Mixed => match pick {
                0 => Op::Login,
                1 => Op::FindById,
                _ => Op::GetMe,
            },
        };
        let started = Instant::now();
        let result = match op {
            Op::GetMe => {
                client.get_me(with_session(GetMeRequest {}, &account.session)).await.map(drop)
            }
            Op::Login => client
                .login(LoginRequest { email: account.email.clone(), password: PASSWORD.into() })
                .await
                .map(drop),
            Op::Register => client
                .register(registration(format!("r-{}@example.com", uuid::Uuid::new_v4().simple())))
                .await
                .map(drop),
            Op::FindById => client
                .find_by_id(with_session(
                    FindByIdRequest { uuid: account.uuid.clone() },
                    &account.session,
                ))
                .await
                .map(drop),
        };
        stats.record(started, result);
    }
    stats
}

async fn phase(
    args: &Args,
    scenario: Scenario,
    callers: usize,
    accounts: &Arc<Vec<Account>>,
) -> (Stats, Duration) {
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_secs);
    let tasks: Vec<_> = (0..callers)
        .map(|seed| {
            tokio::spawn(caller(
                args.target.clone(),
                scenario,
                Arc::clone(accounts),
                until,
                seed + 1,
            ))
        })
        .collect();
    let mut total = Stats::default();
    for task in tasks {
        total.merge(task.await.expect("caller"));
    }
    (total, started.elapsed())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sink = SpanSink::default();
    if let Some(addr) = args.otlp_sink {
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve(addr);
        tokio::spawn(server);
    }

    let accounts = setup(&args.target, args.users.max(1)).await;
    println!(
        "scenario {:?}, {} callers, {} s, {} accounts, target {}",
        args.scenario,
        args.concurrency,
        args.duration_secs,
        accounts.len(),
        args.target
    );

    if args.scenario == Scenario::Isolation {
        let (mut alone, elapsed) = phase(&args, Scenario::GetMe, args.concurrency, &accounts).await;
        alone.report("GetMe alone", elapsed);
        // Same GetMe callers, plus as many callers flooding Login.
        let (flood, get_me) = tokio::join!(
            phase(&args, Scenario::Login, args.concurrency * 4, &accounts),
            phase(&args, Scenario::GetMe, args.concurrency, &accounts),
        );
        let (mut get_me, elapsed) = get_me;
        get_me.report("GetMe during login flood", elapsed);
        let (mut flood, elapsed) = flood;
        flood.report("Login flood", elapsed);
        let shed = flood.codes.get(&format!("{:?}", Code::ResourceExhausted)).copied().unwrap_or(0);
        println!("login calls shed with RESOURCE_EXHAUSTED: {shed}");
    } else {
        let (mut stats, elapsed) = phase(&args, args.scenario, args.concurrency, &accounts).await;
        stats.report(&format!("{:?}", args.scenario), elapsed);
    }
    if args.otlp_sink.is_some() {
        tokio::time::sleep(Duration::from_secs(6)).await; // one batch interval
        println!("spans received by the sink: {}", sink.spans.load(Ordering::Relaxed));
    }
}

//! Load generator for auth-service: the source of every performance figure
//! in `BENCHMARKS.md`.
//!
//! It speaks gRPC over raw HTTP/2 (the `h2` crate, requests encoded once per
//! account), so a call costs it little more than the frames: it opens
//! `--connections` connections and keeps `--streams` calls in flight on each,
//! the way real gRPC clients multiplex. Every answer is counted by its gRPC
//! status; refusals (RESOURCE_EXHAUSTED) are reported apart from throughput.
//!
//! ```sh
//! target/release/examples/loadgen --rpc get-me --connections 16 --streams 16
//! target/release/examples/loadgen --rpc find-by-id --sweep --repeat 3
//! target/release/examples/loadgen --rpc get-me --connections 16 --streams 16 --rate 20000
//! target/release/examples/loadgen --rpc get-me --connections 16 --streams 16 --isolation
//! ```
//!
//! - Closed loop (default): each stream sends its next call when the last
//!   one answers.
//! - Open loop (`--rate R`): calls are due at a fixed total rate and each
//!   latency is measured from when its call was due, not when it was sent,
//!   so a server that stalls cannot hide its queueing (coordinated omission).
//! - `--sweep`: the standard table, in flight 16 (16×1 and 1×16), 64 (4×16),
//!   256 (16×16) and 1024 (16×64); `--points` for another list.
//! - `--isolation`: the same point alone, then again while a Login flood
//!   saturates the password hasher.
//! - `--server-pid`: also reports the server's CPU per call and its RSS.
//! - `--json`: one JSON object per measured point, for scripts.
//! - `--print-session`: register and log in one account, print its session
//!   id (for h2load, which cannot log in).
//!
//! Run it against `examples/echo_server.rs` for its own ceiling.

// A command-line report is its whole output.
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use auth_service::grpc::proto::{
    FindByEmailRequest, FindByIdRequest, GetMeRequest, LoginRequest, RegisterRequest,
    user_service_client::UserServiceClient,
};
use bytes::{BufMut as _, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use serde::Serialize;
use tonic::Request;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Rpc {
    GetMe,
    FindById,
    FindByEmail,
    Login,
    Register,
}

impl Rpc {
    fn path(self) -> &'static str {
        match self {
            Self::GetMe => "/userService.UserService/GetMe",
            Self::FindById => "/userService.UserService/FindByID",
            Self::FindByEmail => "/userService.UserService/FindByEmail",
            Self::Login => "/userService.UserService/Login",
            Self::Register => "/userService.UserService/Register",
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(about = "gRPC load generator for auth-service")]
struct Args {
    /// gRPC endpoint (plaintext HTTP/2); several, comma-separated, for
    /// replicas of one system: connections are dealt to them in turn.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    target: String,
    #[arg(long, value_enum, default_value = "get-me")]
    rpc: Rpc,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Run the standard sweep (16x1,1x16,4x16,16x16,16x64) instead of one point.
    #[arg(long)]
    sweep: bool,
    /// Points for --sweep, as CONNECTIONSxSTREAMS, comma-separated.
    #[arg(long, default_value = "16x1,1x16,4x16,16x16,16x64")]
    points: String,
    /// Measured seconds per point.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of load before measuring starts (connections warm, caches filled).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Open loop: total calls per second, due on a fixed schedule.
    #[arg(long)]
    rate: Option<f64>,
    /// Measure each point this many times; the median is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Accounts registered (and logged in) before measuring.
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Worker threads of the generator itself (1 leaves the other cores to
    /// the server, as h2load does by default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Send `grpc-timeout` with every call.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Also measure the point while a Login flood runs beside it.
    #[arg(long)]
    isolation: bool,
    /// Login flood for --isolation: connections.
    #[arg(long, default_value_t = 4)]
    flood_connections: usize,
    /// Login flood for --isolation: calls in flight per connection.
    #[arg(long, default_value_t = 16)]
    flood_streams: usize,
    /// Report the CPU time and RSS of these processes (the server, or its
    /// replicas, comma-separated; summed) per point.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Register and log in one account, print its session id and exit
    /// (for load generators that cannot log in, as h2load).
    #[arg(long)]
    print_session: bool,
    /// Print one JSON object per point instead of a table.
    #[arg(long)]
    json: bool,
    /// Also run an OTLP span sink on this address, discarding what it gets
    /// (for tracing overhead: AUTH__TRACING__OTLP_ENDPOINT=http://ADDR).
    #[arg(long)]
    otlp_sink: Option<SocketAddr>,
}

const PASSWORD: &str = "loadgen password 1234";

struct Account {
    session: http::HeaderValue,
    /// Encoded request bodies (gRPC-framed), one per RPC that needs one.
    find_by_id: Bytes,
    find_by_email: Bytes,
    login: Bytes,
}

/// A protobuf message in gRPC's length-prefixed framing.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("small message"));
    message.encode(&mut buf).expect("capacity reserved");
    buf.freeze()
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

/// Registers and logs in `users` accounts through a tonic client.
async fn setup(target: &str, users: usize) -> Arc<Vec<Account>> {
    let channel = tonic::transport::Channel::from_shared(target.to_owned())
        .expect("target URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach {target}: {e}"));
    let client = UserServiceClient::new(channel);
    let run = uuid::Uuid::new_v4().simple().to_string();
    // A few at a time: registration is one argon2 hash, login one verify.
    let tasks: Vec<_> = (0..users)
        .map(|i| {
            let mut client = client.clone();
            let email = format!("load-{run}-{i}@example.com");
            tokio::spawn(async move {
                let user = client
                    .register(registration(email.clone()))
                    .await
                    .unwrap_or_else(|s| panic!("register during setup: {s:?}"))
                    .into_inner()
                    .user
                    .expect("user");
                let login = LoginRequest { email: email.clone(), password: PASSWORD.into() };
                let session = client
                    .login(login.clone())
                    .await
                    .unwrap_or_else(|s| panic!("login during setup: {s:?}"))
                    .into_inner()
                    .session_id;
                Account {
                    session: http::HeaderValue::try_from(session).expect("ascii session id"),
                    find_by_id: grpc_frame(&FindByIdRequest { uuid: user.uuid }),
                    find_by_email: grpc_frame(&FindByEmailRequest { email }),
                    login: grpc_frame(&login),
                }
            })
        })
        .collect();
    let mut accounts = Vec::with_capacity(users);
    for task in tasks {
        accounts.push(task.await.expect("setup task"));
    }
    Arc::new(accounts)
}

/// What one run of one point measured.
#[derive(Default)]
struct Tally {
    /// Latencies of OK calls, in microseconds.
    ok_latencies_us: Vec<u32>,
    /// Answers by gRPC code name (and `transport` for broken streams).
    codes: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        self.ok_latencies_us.extend(other.ok_latencies_us);
        for (code, n) in other.codes {
            *self.codes.entry(code).or_default() += n;
        }
    }
}

fn code_name(code: i32) -> &'static str {
    match tonic::Code::from(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One call over an h2 connection; the gRPC status code, or `None` when
/// the stream broke.
async fn call(
    client: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    body: Bytes,
) -> Option<i32> {
    let mut client = client.clone().ready().await.ok()?;
    let (response, mut send) = client.send_request(request, false).ok()?;
    send.send_data(body, true).ok()?;
    let response = response.await.ok()?;
    if let Some(code) = grpc_status(response.headers()) {
        return Some(code); // trailers-only answer
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.ok()??;
    grpc_status(&trailers)
}

/// Everything a stream needs to build its calls.
struct Plan {
    uri: http::Uri,
    rpc: Rpc,
    accounts: Arc<Vec<Account>>,
    deadline: Option<String>,
    /// Counter for unique registration emails.
    registrations: AtomicU64,
    run: String,
    empty: Bytes,
}

impl Plan {
    fn request(&self, account: &Account) -> (http::Request<()>, Bytes) {
        let mut builder = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"))
            .header(http::header::TE, http::HeaderValue::from_static("trailers"));
        if let Some(deadline) = &self.deadline {
            builder = builder.header("grpc-timeout", deadline.as_str());
        }
        let body = match self.rpc {
            Rpc::GetMe => self.empty.clone(),
            Rpc::FindById => account.find_by_id.clone(),
            Rpc::FindByEmail => account.find_by_email.clone(),
            Rpc::Login => account.login.clone(),
            Rpc::Register => {
                let n = self.registrations.fetch_add(1, Ordering::Relaxed);
                grpc_frame(&registration(format!("reg-{}-{n}@example.com", self.run)))
            }
        };
        if matches!(self.rpc, Rpc::GetMe | Rpc::FindById | Rpc::FindByEmail) {
            builder = builder.header("session_id", account.session.clone());
        }
        (builder.body(()).expect("valid request"), body)
    }
}

/// When a stream's calls are due in open-loop mode.
#[derive(Clone, Copy)]
struct Schedule {
    first: Instant,
    interval: Duration,
}

/// One stream: calls back to back (or on its schedule) until `until`;
/// only calls that finish after `measure_from` are counted.
async fn stream(
    client: h2::client::SendRequest<Bytes>,
    plan: Arc<Plan>,
    seed: u64,
    measure_from: Instant,
    until: Instant,
    schedule: Option<Schedule>,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut due = schedule.map(|s| s.first);
    loop {
        let started = match (due, schedule) {
            (Some(at), Some(s)) => {
                if at >= until {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                due = Some(at + s.interval);
                at
            }
            _ => {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                now
            }
        };
        // xorshift: cheap, and each stream walks the accounts differently.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let account = &plan.accounts[(rng % plan.accounts.len() as u64) as usize];
        let (request, body) = plan.request(account);
        let code = call(&client, request, body).await;
        let finished = Instant::now();
        if finished < measure_from {
            continue;
        }
        let name = code.map_or("TRANSPORT", code_name);
        *tally.codes.entry(name).or_default() += 1;
        if code == Some(0) {
            let us = finished.duration_since(started).as_micros();
            tally.ok_latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
        if code.is_none() && client.clone().ready().await.is_err() {
            break; // the connection is gone
        }
    }
    tally
}

async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let _ = tcp.set_nodelay(true);
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake(tcp)
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 handshake with {addr}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs one load shape for warmup + duration and returns what it measured.
async fn drive(
    addrs: &[SocketAddr],
    plan: Arc<Plan>,
    connections: usize,
    streams: usize,
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
) -> Tally {
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        clients.push(connect(addrs[i % addrs.len()]).await);
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + duration;
    let total = connections * streams;
    let mut tasks = Vec::with_capacity(total);
    for (c, client) in clients.iter().enumerate() {
        for s in 0..streams {
            let index = c * streams + s;
            // Each stream carries 1/total of the rate, offset so the
            // streams' calls interleave evenly.
            let schedule = rate.map(|rate| {
                let interval = Duration::from_secs_f64(total as f64 / rate);
                Schedule { first: start + interval.mul_f64(index as f64 / total as f64), interval }
            });
            tasks.push(tokio::spawn(stream(
                client.clone(),
                Arc::clone(&plan),
                index as u64 + 1,
                measure_from,
                until,
                schedule,
            )));
        }
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("stream task"));
    }
    tally
}

/// CPU seconds used so far and resident memory of a process, from /proc.
/// CPU seconds and RSS KiB of every process in `pids`, summed; none when
/// there are none or one is gone.
fn servers_usage(pids: &[u32]) -> Option<(f64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .try_fold((0.0, 0), |(cpu, rss), pid| process_usage(*pid).map(|(c, r)| (cpu + c, rss + r)))
}

fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them (14th and 15th of the line).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    // USER_HZ is 100 on every Linux configuration we run on.
    Some((ticks / 100.0, rss_kib))
}

#[derive(Debug, Clone, Serialize)]
struct PointReport {
    target: String,
    rpc: Rpc,
    connections: usize,
    streams: usize,
    in_flight: usize,
    mode: &'static str,
    rate: Option<f64>,
    seconds: f64,
    ok: u64,
    ok_per_sec: f64,
    refused: u64,
    refused_per_sec: f64,
    /// Every other answer, by code.
    errors: BTreeMap<&'static str, u64>,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    server_cpu_cores: Option<f64>,
    server_cpu_us_per_call: Option<f64>,
    server_rss_mib: Option<f64>,
    /// Set when this is the median of several runs.
    runs: Option<Vec<f64>>,
}

fn report(
    args: &Args,
    rpc: Rpc,
    (connections, streams): (usize, usize),
    mut tally: Tally,
    seconds: f64,
    server: Option<(f64, u64)>,
) -> PointReport {
    tally.ok_latencies_us.sort_unstable();
    let n = tally.ok_latencies_us.len();
    let pct = |p: f64| {
        if n == 0 {
            return 0.0;
        }
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        f64::from(tally.ok_latencies_us[i]) / 1000.0
    };
    let ok = tally.codes.get("OK").copied().unwrap_or(0);
    let refused = tally.codes.get("RESOURCE_EXHAUSTED").copied().unwrap_or(0);
    let errors = tally
        .codes
        .iter()
        .filter(|(c, _)| !matches!(**c, "OK" | "RESOURCE_EXHAUSTED"))
        .map(|(c, n)| (*c, *n))
        .collect();
    let answered = tally.codes.values().sum::<u64>().max(1);
    PointReport {
        target: args.target.clone(),
        rpc,
        connections,
        streams,
        in_flight: connections * streams,
        mode: if args.rate.is_some() { "open" } else { "closed" },
        rate: args.rate,
        seconds,
        ok,
        ok_per_sec: ok as f64 / seconds,
        refused,
        refused_per_sec: refused as f64 / seconds,
        errors,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: pct(1.0),
        server_cpu_cores: server.map(|(cpu, _)| cpu / seconds),
        server_cpu_us_per_call: server.map(|(cpu, _)| cpu * 1e6 / answered as f64),
        server_rss_mib: server.map(|(_, rss)| rss as f64 / 1024.0),
        runs: None,
    }
}

fn print_header(json: bool) {
    if !json {
        println!(
            "{:<13} {:>8} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}  {:>9} {:>7}  other",
            "rpc",
            "conn×str",
            "flight",
            "ok/s",
            "refused/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "srv cores",
            "µs/call"
        );
    }
}

fn print_point(label: &str, r: &PointReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("serialisable"));
        return;
    }
    let runs = r.runs.as_ref().map_or(String::new(), |runs| {
        let lo = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = runs.iter().copied().fold(0.0, f64::max);
        format!("  runs {lo:.0}..{hi:.0}")
    });
    println!(
        "{:<13} {:>8} {:>6} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:>9} {:>7} {:>7}  {:?}{}",
        label,
        format!("{}×{}", r.connections, r.streams),
        r.in_flight,
        r.ok_per_sec,
        r.refused_per_sec,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.max_ms,
        r.server_cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
        r.server_cpu_us_per_call.map_or("-".into(), |c| format!("{c:.0}")),
        r.server_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
        r.errors,
        runs,
    );
}

fn parse_points(points: &str) -> Vec<(usize, usize)> {
    points
        .split(',')
        .map(|p| {
            let (c, s) =
                p.trim().split_once('x').unwrap_or_else(|| panic!("point {p:?}: want CxS"));
            (c.parse().expect("connections"), s.parse().expect("streams"))
        })
        .collect()
}

/// Measures one point `repeat` times; reports the median run by OK/s.
async fn measure(
    args: &Args,
    addrs: &[SocketAddr],
    plan: &Arc<Plan>,
    shape: (usize, usize),
) -> PointReport {
    let mut reports = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let before = servers_usage(&args.server_pid);
        let tally = drive(
            addrs,
            Arc::clone(plan),
            shape.0,
            shape.1,
            args.rate,
            Duration::from_secs(args.warmup_secs),
            Duration::from_secs(args.duration_secs),
        )
        .await;
        let after = servers_usage(&args.server_pid);
        // CPU over the whole run (warmup included) scaled to the measured part.
        let share = args.duration_secs as f64 / (args.duration_secs + args.warmup_secs) as f64;
        let server = before.zip(after).map(|((c0, _), (c1, rss))| ((c1 - c0) * share, rss));
        reports.push(report(args, plan.rpc, shape, tally, args.duration_secs as f64, server));
    }
    let runs: Vec<f64> = reports.iter().map(|r| r.ok_per_sec).collect();
    reports.sort_by(|a, b| a.ok_per_sec.total_cmp(&b.ok_per_sec));
    let mut median = reports.swap_remove(reports.len() / 2);
    if runs.len() > 1 {
        median.runs = Some(runs);
    }
    median
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

fn main() {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(args));
}

async fn run(args: Args) {
    let sink = SpanSink::default();
    if let Some(addr) = args.otlp_sink {
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve(addr);
        tokio::spawn(server);
    }

    let targets: Vec<&str> = args.target.split(',').map(str::trim).collect();
    let mut addrs = Vec::new();
    let mut authority = String::new();
    for target in &targets {
        let uri: http::Uri = target.parse().expect("target URI");
        authority = uri.authority().expect("target has host:port").to_string();
        addrs.push(
            tokio::net::lookup_host(&authority)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .unwrap_or_else(|| panic!("cannot resolve {authority}")),
        );
    }
    let addrs = addrs.as_slice();

    // Replicas share their storage: accounts made through one serve all.
    if args.print_session {
        let accounts = setup(targets[0], 1).await;
        println!("{}", accounts[0].session.to_str().unwrap_or_default());
        return;
    }
    let accounts = setup(targets[0], args.users.max(1)).await;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let plan = |rpc| {
        Arc::new(Plan {
            uri: format!("http://{authority}{}", Rpc::path(rpc)).parse().expect("uri"),
            rpc,
            accounts: Arc::clone(&accounts),
            deadline: args.deadline_ms.map(|ms| format!("{ms}m")),
            registrations: AtomicU64::new(0),
            run: run_id.clone(),
            empty: grpc_frame(&GetMeRequest {}),
        })
    };
    let main_plan = plan(args.rpc);

    if !args.json {
        println!(
            "target {} · {} accounts · {} s measured after {} s warmup · {} · loadgen threads {}",
            args.target,
            accounts.len(),
            args.duration_secs,
            args.warmup_secs,
            args.rate.map_or("closed loop".into(), |r| format!("open loop at {r:.0}/s")),
            args.threads,
        );
    }
    print_header(args.json);

    let shapes = if args.sweep {
        parse_points(&args.points)
    } else {
        vec![(args.connections, args.streams)]
    };
    for shape in shapes {
        let alone = measure(&args, addrs, &main_plan, shape).await;
        print_point(&format!("{:?}", args.rpc), &alone, args.json);
        if args.isolation {
            let flood_plan = plan(Rpc::Login);
            let flood_shape = (args.flood_connections, args.flood_streams);
            let flood_args = Args { rate: None, server_pid: Vec::new(), ..args.clone() };
            let (with_flood, flood) = tokio::join!(
                measure(&args, addrs, &main_plan, shape),
                measure(&flood_args, addrs, &flood_plan, flood_shape),
            );
            print_point(&format!("{:?}+flood", args.rpc), &with_flood, args.json);
            print_point("Login flood", &flood, args.json);
            if !args.json && alone.p99_ms > 0.0 {
                println!("p99 with the flood / p99 alone: {:.2}", with_flood.p99_ms / alone.p99_ms);
            }
        }
    }
    if args.otlp_sink.is_some() {
        tokio::time::sleep(Duration::from_secs(6)).await; // one batch interval
        if !args.json {
            println!("spans received by the sink: {}", sink.spans.load(Ordering::Relaxed));
        }
    }
}

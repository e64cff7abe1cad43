//! How long a failed login takes, by what failed: an unknown email, a wrong
//! password on an account hashed at the current argon2id cost, on a Go-era
//! bcrypt account, and on an account hashed at an older (cheaper) argon2
//! cost. Prints the median of each and its ratio to the unknown-email one,
//! without the floor (`login.failure_floor_ms = 0`: what timing would leak)
//! and with the configured default.
//!
//! ```sh
//! cargo run --release --example login_timing -- --samples 30
//! ```
//!
//! The service runs in process on embedded storage in a temporary directory,
//! with the argon2 cost of `config/default.toml`; the legacy accounts are
//! written straight into its database, as a migrated Go database holds them.

// A report tool: it prints.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use auth_service::{
    actors::{
        password_hasher::{Argon2Hasher, Workspace},
        user_store::SqliteUserRepository,
    },
    app::Application,
    config::{Settings, StorageBackend},
    domain::{Email, NewUser, Password, PasswordHash, PersonName, Role, UserId},
    grpc::proto::{LoginRequest, RegisterRequest, user_service_client::UserServiceClient},
};
use clap::Parser;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// Failed logins timed per kind and setting.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// bcrypt cost of the Go-era account (the Go service used 10).
    #[arg(long, default_value_t = 10)]
    bcrypt_cost: u32,
}

const PASSWORD: &str = "correct horse battery staple";
const KINDS: [&str; 4] =
    ["unknown email", "wrong password", "wrong password, bcrypt", "wrong password, older argon2"];

fn main() {
    let args = Args::parse();
    let default_floor = Settings::defaults().expect("defaults").login.failure_floor_ms;
    println!(
        "failed logins, {} of each, one at a time; median ms (ratio to unknown email)",
        args.samples
    );
    println!("{:<32} {:>22} {:>22}", "", "floor 0 ms", format!("floor {default_floor} ms"));
    let without = measure(&args, 0);
    let with = measure(&args, default_floor);
    for (i, kind) in KINDS.iter().enumerate() {
        let cell = |m: &[f64; 4]| format!("{:8.1} ({:.2})", m[i], m[i] / m[0]);
        println!("{kind:<32} {:>22} {:>22}", cell(&without), cell(&with));
    }
}

/// Medians of the four kinds, with `login.failure_floor_ms = floor_ms`.
fn measure(args: &Args, floor_ms: u64) -> [f64; 4] {
    let dir = std::env::temp_dir().join(format!("auth-login-timing-{}", uuid::Uuid::new_v4()));
    let mut settings = Settings::defaults().expect("defaults");
    settings.storage.backend = StorageBackend::Embedded;
    settings.storage.data_dir = dir.to_string_lossy().into_owned();
    settings.grpc.addr = "127.0.0.1:0".parse().expect("addr");
    settings.http.addr = "127.0.0.1:0".parse().expect("addr");
    settings.log.filter = "warn".into();
    settings.login.max_failures = u32::MAX;
    settings.login.failure_floor_ms = floor_ms;

    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service_settings = settings.clone();
    let service = std::thread::spawn(move || {
        let system = actix_rt::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime")
        });
        system.block_on(async move {
            let app = Application::build(service_settings).await.expect("service starts");
            addr_tx.send(app.grpc_addr()).expect("report address");
            app.run_until_stopped(async {
                let _ = stop_rx.await;
            })
            .await
            .expect("service stops");
        });
    });
    let addr = addr_rx.recv().expect("service address");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let medians = runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri");
        let mut client = UserServiceClient::new(channel.connect_lazy());
        let current = format!("current-{}@example.com", uuid::Uuid::new_v4().simple());
        register(&mut client, &current).await;
        let bcrypt_account = legacy_account(&settings, bcrypt_hash(args.bcrypt_cost)).await;
        let older_argon2 = Argon2Hasher::new(4096, 1, 1)
            .expect("params")
            .hash(&Password::parse_new(PASSWORD.into()).expect("pw"), &mut Workspace::default())
            .expect("hash");
        let older_account = legacy_account(&settings, older_argon2).await;
        let emails = [
            format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple()),
            current,
            bcrypt_account,
            older_account,
        ];
        let mut medians = [0.0; 4];
        for (median, email) in medians.iter_mut().zip(&emails) {
            *median = median_failure_ms(&mut client, email, args.samples).await;
        }
        medians
    });
    let _ = stop_tx.send(());
    service.join().expect("service thread");
    let _ = std::fs::remove_dir_all(dir);
    medians
}

async fn register(client: &mut UserServiceClient<Channel>, email: &str) {
    client
        .register(RegisterRequest {
            email: email.to_owned(),
            first_name: "Timing".into(),
            last_name: "Probe".into(),
            password: PASSWORD.into(),
            role: String::new(),
            avatar: String::new(),
        })
        .await
        .expect("register");
}

fn bcrypt_hash(cost: u32) -> PasswordHash {
    PasswordHash::new(bcrypt::hash(PASSWORD, cost).expect("bcrypt"))
}

/// Writes an account with `hash` into the service's database; its email.
async fn legacy_account(settings: &Settings, hash: PasswordHash) -> String {
    let email = format!("legacy-{}@example.com", uuid::Uuid::new_v4().simple());
    let repo = SqliteUserRepository::open(&settings.storage, unexported_timings()).expect("open");
    let new = NewUser {
        id: UserId::new_random(),
        email: Email::parse(&email, "email").expect("email"),
        first_name: PersonName::parse("Legacy", "first_name").expect("name"),
        last_name: PersonName::parse("Account", "last_name").expect("name"),
        role: Role::User,
        avatar: None,
        password_hash: hash,
    };
    repo.create_user(&new).await.expect("insert legacy account");
    email
}

/// The median time of `samples` logins to `email` with a wrong password.
async fn median_failure_ms(
    client: &mut UserServiceClient<Channel>,
    email: &str,
    samples: usize,
) -> f64 {
    let mut times: Vec<Duration> = Vec::with_capacity(samples);
    for _ in 0..samples {
        let request = LoginRequest { email: email.to_owned(), password: "wrong password!".into() };
        let started = Instant::now();
        let status = client.login(request).await.expect_err("a failed login");
        times.push(started.elapsed());
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

fn unexported_timings() -> prometheus::HistogramVec {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("login_timing_seconds", "unexported"),
        &["dependency", "operation", "outcome"],
    )
    .expect("histogram")
}

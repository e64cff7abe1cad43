//! Command line: `serve` (the default), `migrate`, `admin`, `config` and
//! `healthcheck`.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    actors::user_store::{SqliteUserRepository, migrate, sqlite},
    config::{self, Inputs, Resolved, Settings, SettingsError, StorageBackend},
    domain::{Email, Registration},
    error::AuthError,
    service::{AccountAction, Caller},
    system::{ActorSystem, SystemError},
    telemetry::metrics::Metrics,
};

/// How long an admin command waits for the stores to answer (the user
/// store migrates its schema first).
const READY_LIMIT: Duration = Duration::from_secs(10);

/// gRPC authentication service: register, log in with email and password
/// (argon2id), get a session; users in PostgreSQL and sessions in Redis, or,
/// with no configuration at all, on embedded storage (a SQLite file under
/// ./data, sessions in memory) for development.
///
/// Configuration, in layers, each overriding the one before:
///   1. the built-in defaults (embedded storage);
///   2. <config dir>/default.toml, if present;
///   3. the built-in layer APP_ENV names: local, docker or production, which
///      select PostgreSQL + Redis. They are compiled in, so APP_ENV means the
///      same wherever the binary runs; another value needs a file (4);
///   4. <config dir>/$APP_ENV.toml, if present;
///   5. AUTH__<SECTION>__<KEY> environment variables, e.g.
///      AUTH__GRPC__ADDR=0.0.0.0:5000, AUTH__POSTGRES__URL=postgres://...;
///      RUST_LOG overrides log.filter.
///
/// The config dir is --config-dir, AUTH__CONFIG_DIR, or ./config if it
/// exists. An unknown key, an unknown APP_ENV or a variable that looks like
/// a setting but is not one (AUTH_SESSION__TTL_SECS) stops the start.
/// APP_ENV=production refuses unsafe settings (embedded storage, the sample
/// URLs and credentials, public lookups, debug logging) unless
/// AUTH__UNSAFE__ALLOW names their keys. `auth-service config` shows every
/// effective value and where it came from; `config --check` fails on what
/// the start would refuse.
#[derive(Debug, Parser)]
#[command(name = "auth-service", version, about, long_about)]
pub struct Cli {
    /// Directory of configuration files (default.toml, <APP_ENV>.toml) that
    /// override the built-in layers; must exist. Default: ./config, if any.
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service and the ops HTTP server (the default).
    Serve,
    /// Create the database if needed, apply migrations, and exit.
    Migrate,
    /// Manage admin accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print every effective setting, one per line, with the layer it came
    /// from (built-in default, built-in APP_ENV layer, file, environment
    /// variable); passwords, keys and tokens redacted.
    Config(ConfigArgs),
    /// Exit 0 if the local service reports ready on /health/ready, else 1
    /// (for container HEALTHCHECKs: the image has no curl).
    Healthcheck,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account, or promote the existing account with that
    /// email. The password of a new account is read from the
    /// AUTH_ADMIN_PASSWORD environment variable or, if unset, from the first
    /// line of standard input; never from an argument.
    Create(AdminCreateArgs),
    /// End every session of an account and drop its cached copies at once
    /// (on external storage; an embedded service's sessions through
    /// --target).
    Revoke(AccountArgs),
    /// Disable an account: it can no longer log in, lookups do not find
    /// it, and its sessions end at once (as with `revoke`).
    Disable(AccountArgs),
    /// Enable a disabled account again.
    Enable(AccountArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print nothing but the verdict: exit non-zero on exactly what the
    /// service would refuse to start with (for deploy pipelines).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct AccountArgs {
    /// Email of the account.
    #[arg(long)]
    pub email: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Acting through a running service's AdminService instead of on the
/// storage directly (which reaches an embedded-storage service's sessions
/// too). The caller is a peer in `admin.allowed_peers` (--cert, --key) or
/// an admin's session (the AUTH_ADMIN_SESSION environment variable).
impl AccountArgs {
    /// Acting on the storage directly.
    pub fn local(email: impl Into<String>) -> Self {
        Self { email: email.into(), remote: RemoteArgs::default() }
    }
}

#[derive(Debug, Default, Args)]
pub struct RemoteArgs {
    /// The service, e.g. https://auth.internal:5000 (http:// for a
    /// plaintext port).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// PEM bundle of the CAs that sign the service's certificate (default:
    /// the system's roots).
    #[arg(long, value_name = "FILE", requires = "target")]
    pub cacert: Option<std::path::PathBuf>,
    /// PEM client certificate (its URI or DNS SAN must be allowed).
    #[arg(long, value_name = "FILE", requires_all = ["target", "key"])]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires_all = ["target", "cert"])]
    pub key: Option<std::path::PathBuf>,
}

impl AdminCommand {
    /// The account action and its arguments (all but `create`).
    pub fn account(&self) -> Option<(AccountAction, &AccountArgs)> {
        match self {
            Self::Revoke(args) => Some((AccountAction::RevokeSessions, args)),
            Self::Disable(args) => Some((AccountAction::Disable, args)),
            Self::Enable(args) => Some((AccountAction::Enable, args)),
            Self::Create(_) => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct AdminCreateArgs {
    /// Email of the admin account.
    #[arg(long)]
    pub email: String,
    /// First name, for a new account.
    #[arg(long, default_value = "Admin")]
    pub first_name: String,
    /// Last name, for a new account.
    #[arg(long, default_value = "Admin")]
    pub last_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Bootstrap(#[from] migrate::BootstrapError),
    #[error("{0}")]
    Input(String),
    #[error("cannot start a runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    EmbeddedStorage(#[from] sqlite::OpenError),
    #[error("configuration error: {0}")]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    System(#[from] SystemError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// `auth-service config [--check]`: the report on standard output (not with
/// `--check`); the start's verdict decides the result.
pub fn config(inputs: &Inputs, args: &ConfigArgs) -> Result<String, CliError> {
    if !args.check {
        let resolved = Resolved::read(inputs)?;
        let _ = write!(std::io::stdout(), "{}", config::render(&resolved));
    }
    let loaded = Settings::load(inputs)?;
    for warning in &loaded.warnings {
        let _ = writeln!(std::io::stderr(), "warning: {warning}");
    }
    let allowed: Vec<&str> = loaded.allowed.iter().map(|r| r.key).collect();
    Ok(format!(
        "# configuration OK: APP_ENV={}, storage {}{}",
        loaded.resolved.app_env.as_deref().unwrap_or("(unset)"),
        loaded.settings.storage.backend,
        if allowed.is_empty() {
            String::new()
        } else {
            format!(", unsafe settings allowed: {}", allowed.join(", "))
        }
    ))
}

/// `auth-service migrate`: blocking, so run it before any async runtime.
pub fn migrate(settings: &Settings) -> Result<String, CliError> {
    let applied = match settings.storage.backend {
        StorageBackend::External => migrate::prepare(&settings.postgres)?,
        StorageBackend::Embedded => {
            SqliteUserRepository::open(&settings.storage, unexported_timings())?.migrate()?
        }
    };
    Ok(if applied.is_empty() {
        "schema is current; nothing applied".to_owned()
    } else {
        format!("applied migrations: {}", applied.join(", "))
    })
}

/// `auth-service admin create`.
pub fn admin_create(settings: &Settings, args: AdminCreateArgs) -> Result<String, CliError> {
    ensure_admin(settings, &args, read_password)
}

/// Promotes the account with `args.email` to admin, or registers it as an
/// admin, through the same use case as Register, with the password
/// `password()` yields (asked for only when creating). Blocking: call it
/// outside any async runtime.
pub fn ensure_admin(
    settings: &Settings,
    args: &AdminCreateArgs,
    password: impl FnOnce() -> Result<String, CliError>,
) -> Result<String, CliError> {
    let email = Email::parse(&args.email, "email").map_err(input)?;
    let embedded = settings.storage.backend == StorageBackend::Embedded;
    with_system(settings, async |system| {
        let auth = &system.auth;
        if let Some(user) = auth.promote_to_admin(email.clone()).await? {
            return Ok(promoted(&user.id, embedded));
        }
        let registration = Registration::parse(
            &args.email,
            &args.first_name,
            &args.last_name,
            password()?,
            "admin",
            "",
        )
        .map_err(input)?;
        match auth.register(registration, &Caller::operator()).await {
            Ok(user) => Ok(format!("created admin account {}", user.id)),
            // Registered between our promote and our insert: promote it.
            Err(AuthError::EmailTaken) => match auth.promote_to_admin(email).await? {
                Some(user) => Ok(promoted(&user.id, embedded)),
                None => Err(CliError::Input("account vanished while promoting; retry".into())),
            },
            Err(other) => Err(other.into()),
        }
    })
}

fn promoted(id: &crate::domain::UserId, embedded: bool) -> String {
    let mut message = format!("promoted existing account {id} to admin");
    if embedded {
        // The embedded cache lives inside the running service, out of reach.
        message.push_str(
            "; a running embedded service keeps serving its cached copy of the user for up to \
             user_cache.ttl_secs",
        );
    }
    message
}

/// `auth-service admin revoke|disable|enable --email`. Blocking: call it
/// outside any async runtime.
pub fn admin_account(
    settings: &Settings,
    action: AccountAction,
    args: &AccountArgs,
) -> Result<String, CliError> {
    let email = Email::parse(&args.email, "email").map_err(input)?;
    let embedded = settings.storage.backend == StorageBackend::Embedded;
    if embedded && action == AccountAction::RevokeSessions {
        return Err(CliError::Input(
            "embedded storage keeps sessions inside the running service: act through it with \
             --target (as an admin: AUTH_ADMIN_SESSION, or an allowed peer's --cert and --key)"
                .into(),
        ));
    }
    with_system(settings, async |system| {
        let (user, ended) =
            system.auth.act_on_account(email.clone(), action).await.map_err(|e| match e {
                AuthError::UserNotFound => {
                    CliError::Input(format!("no account with email {}", email.as_str()))
                }
                other => other.into(),
            })?;
        let verb = if action == AccountAction::Disable { "disabled" } else { "revoked" };
        Ok(match action {
            AccountAction::Enable => format!("enabled account {}", user.id),
            // This process's sessions are not the running service's.
            _ if embedded => format!(
                "{verb} account {}: it cannot log in; sessions it holds in a running embedded \
                 service last until their copy of the account is user_cache.ttl_secs old",
                user.id
            ),
            _ => format!("{verb} account {}: {ended} session(s) ended", user.id),
        })
    })
}

/// Runs `work` against the actor system the settings name (one worker), on
/// an actix System of its own, once the stores answer. Blocking.
fn with_system<T>(
    settings: &Settings,
    work: impl AsyncFnOnce(&ActorSystem) -> Result<T, CliError>,
) -> Result<T, CliError> {
    actix_rt::System::new().block_on(async {
        let system = ActorSystem::start(settings, 1, Metrics::new()?)?;
        let result = match system.until_ready(READY_LIMIT).await {
            Ok(()) => work(&system).await,
            Err(e) => Err(e.into()),
        };
        system.workers.stop();
        actix::System::current().stop();
        result
    })
}

/// `admin revoke|disable|enable --target URL`: the action through the
/// running service's AdminService. Blocking.
pub fn admin_remote(action: AccountAction, args: &AccountArgs) -> Result<String, CliError> {
    use crate::grpc::proto::{AdminUserRequest, admin_service_client::AdminServiceClient};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let target = args.remote.target.clone().unwrap_or_default();
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
    };
    let mut endpoint = Endpoint::from_shared(target.clone())
        .map_err(|e| CliError::Input(format!("--target {target}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if target.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &args.remote.cacert {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&args.remote.cert, &args.remote.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| CliError::Input(format!("TLS for {target}: {e}")))?;
    }
    let mut request = tonic::Request::new(AdminUserRequest { email: args.email.clone() });
    if let Ok(session) = std::env::var("AUTH_ADMIN_SESSION") {
        let value = session
            .parse()
            .map_err(|_| CliError::Input("AUTH_ADMIN_SESSION is not a session id".into()))?;
        request.metadata_mut().insert(crate::grpc::SESSION_METADATA_KEY, value);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CliError::Input(format!("cannot reach {target}: {}", error_chain(&e))))?;
        let mut client = AdminServiceClient::new(channel);
        let answer = match action {
            AccountAction::RevokeSessions => client.revoke_user_sessions(request).await,
            AccountAction::Disable => client.disable_user(request).await,
            AccountAction::Enable => client.enable_user(request).await,
        }
        .map_err(|status| {
            CliError::Input(format!("{target} refused: {:?}: {}", status.code(), status.message()))
        })?
        .into_inner();
        Ok(match action {
            AccountAction::RevokeSessions => {
                format!(
                    "revoked account {}: {} session(s) ended",
                    answer.uuid, answer.sessions_ended
                )
            }
            AccountAction::Disable => {
                format!(
                    "disabled account {}: {} session(s) ended",
                    answer.uuid, answer.sessions_ended
                )
            }
            AccountAction::Enable => format!("enabled account {}", answer.uuid),
        })
    })
}

/// An error and its sources, one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn input(error: crate::domain::InvalidInput) -> CliError {
    CliError::Input(format!("--{error}"))
}

fn read_password() -> Result<String, CliError> {
    if let Ok(password) = std::env::var("AUTH_ADMIN_PASSWORD") {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let _ = write!(std::io::stderr(), "Password for the new admin (echoed): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    // Only the line terminator goes: passwords are used exactly as typed.
    let password =
        line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if password.is_empty() {
        return Err(CliError::Input(
            "no password: set AUTH_ADMIN_PASSWORD or pipe it on standard input".into(),
        ));
    }
    Ok(password.to_owned())
}

/// `auth-service healthcheck`: GET /health/ready on the configured ops port,
/// over loopback.
pub fn healthcheck(settings: &Settings) -> Result<String, CliError> {
    use std::{io::Read as _, net::TcpStream, time::Duration};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], settings.http.addr.port()));
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status_line = response.lines().next().unwrap_or_default().to_owned();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok("ready".to_owned())
    } else {
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Err(CliError::Input(format!("not ready: {status_line} {body}")))
    }
}

/// `migrate` serves no /metrics: the embedded repository times into a
/// registry that is never scraped.
fn unexported_timings() -> prometheus::HistogramVec {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("cli_dependency_operation_seconds", "unexported"),
        &["dependency", "operation", "outcome"],
    )
    .unwrap_or_else(|e| unreachable!("static metric definition is valid: {e}"))
}

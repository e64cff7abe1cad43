//! Command line: `serve` (the default), `migrate`, `admin`, `config` and
//! `healthcheck`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::{Args, Parser, Subcommand};

use crate::{
    actors::{
        password_hasher::{Argon2Hasher, Workspace},
        session_store::{RedisSessionRepository, SessionPolicy},
        user_store::{
            CreateUserError, PgUserRepository, SqliteUserRepository, UserRepository, migrate,
            sqlite,
        },
    },
    config::{self, Inputs, Resolved, Settings, SettingsError, StorageBackend},
    domain::{Email, NewUser, Password, PersonName, Role, User, UserId},
    error::DependencyError,
};

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
    /// (external storage; an embedded service holds its sessions itself).
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
}

/// What `admin` does to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    Revoke,
    Disable,
    Enable,
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
    #[error(transparent)]
    Dependency(#[from] DependencyError),
    #[error("{0}")]
    Input(String),
    #[error("cannot start a runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    EmbeddedStorage(#[from] sqlite::OpenError),
    #[error("configuration error: {0}")]
    Settings(#[from] SettingsError),
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
        StorageBackend::External => migrate::prepare_database(
            &settings.postgres.migration_url_with_connect_timeout(),
            settings.postgres.create_database,
        )?,
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

/// Promotes the account with `args.email` to admin, or creates it with the
/// password `password()` yields (asked for only when creating). Blocking:
/// call it outside any async runtime.
pub fn ensure_admin(
    settings: &Settings,
    args: &AdminCreateArgs,
    password: impl FnOnce() -> Result<String, CliError>,
) -> Result<String, CliError> {
    let email =
        Email::parse(&args.email, "email").map_err(|e| CliError::Input(format!("--{e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let users = users(settings, &runtime)?;
    runtime.block_on(async {
        if let Some(user) = users.promote_to_admin(&email).await? {
            forget_cached(settings, &user).await;
            return Ok(format!("promoted existing account {} to admin", user.id));
        }

        let password =
            Password::parse_new(password()?).map_err(|e| CliError::Input(e.to_string()))?;
        let hasher = Argon2Hasher::new(
            settings.argon2.memory_kib,
            settings.argon2.iterations,
            settings.argon2.parallelism,
        )
        .map_err(|e| CliError::Input(format!("argon2 settings: {e}")))?;
        let password_hash = hasher
            .hash(&password, &mut Workspace::default())
            .map_err(|e| CliError::Input(e.to_string()))?;
        let new = NewUser {
            id: UserId::new_random(),
            email: email.clone(),
            first_name: PersonName::parse(&args.first_name, "first-name")
                .map_err(|e| CliError::Input(format!("--{e}")))?,
            last_name: PersonName::parse(&args.last_name, "last-name")
                .map_err(|e| CliError::Input(format!("--{e}")))?,
            role: Role::Admin,
            avatar: None,
            password_hash,
        };
        match users.create(&new).await {
            Ok(user) => Ok(format!("created admin account {}", user.id)),
            // Registered between our promote and our insert: promote it.
            Err(CreateUserError::EmailTaken) => match users.promote_to_admin(&email).await? {
                Some(user) => {
                    forget_cached(settings, &user).await;
                    Ok(format!("promoted existing account {} to admin", user.id))
                }
                None => Err(CliError::Input("account vanished while promoting; retry".into())),
            },
            Err(CreateUserError::Dependency(e)) => Err(e.into()),
        }
    })
}

/// `auth-service admin revoke|disable|enable --email`. Blocking: call it
/// outside any async runtime.
pub fn admin_account(
    settings: &Settings,
    action: AccountAction,
    args: &AccountArgs,
) -> Result<String, CliError> {
    let email =
        Email::parse(&args.email, "email").map_err(|e| CliError::Input(format!("--{e}")))?;
    let embedded = settings.storage.backend == StorageBackend::Embedded;
    if embedded && action == AccountAction::Revoke {
        return Err(CliError::Input(
            "embedded storage keeps sessions inside the running service; restart it to end them all"
                .into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let users = users(settings, &runtime)?;
    runtime.block_on(async {
        let user = users
            .find_account_by_email(&email)
            .await?
            .ok_or_else(|| CliError::Input(format!("no account with email {}", email.as_str())))?;
        match action {
            AccountAction::Enable => {
                users.set_disabled(user.id, false).await?;
                return Ok(format!("enabled account {}", user.id));
            }
            AccountAction::Disable => users.set_disabled(user.id, true).await?,
            AccountAction::Revoke => {}
        }
        let ended = if embedded { None } else { Some(end_sessions(settings, &user).await?) };
        let verb = if action == AccountAction::Disable { "disabled" } else { "revoked" };
        Ok(match ended {
            Some(ended) => format!("{verb} account {}: {ended} session(s) ended", user.id),
            None => format!(
                "{verb} account {}: it cannot log in; sessions it holds in a running embedded \
                 service last until their copy of the account is user_cache.ttl_secs old",
                user.id
            ),
        })
    })
}

/// Ends every session of `user` and drops every cached copy of it.
async fn end_sessions(settings: &Settings, user: &User) -> Result<u32, CliError> {
    let sessions = sessions(settings)?;
    let ended = sessions.end_user_sessions(user.id, None).await?;
    sessions.invalidate_user(user).await?;
    Ok(ended)
}

/// The Redis session store the settings name.
fn sessions(settings: &Settings) -> Result<RedisSessionRepository, DependencyError> {
    let policy = SessionPolicy::from_settings(settings);
    RedisSessionRepository::new(&settings.redis, 1, policy, unexported_timings())
}

/// The user store the settings name, migrated; its pool lives on `runtime`.
fn users(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
) -> Result<UserRepository, CliError> {
    Ok(match settings.storage.backend {
        StorageBackend::External => {
            // Before entering the runtime: the migration runs its own.
            migrate(settings)?;
            let _entered = runtime.enter();
            UserRepository::Postgres(PgUserRepository::new(
                &settings.postgres,
                1,
                unexported_timings(),
            ))
        }
        StorageBackend::Embedded => {
            let repo = SqliteUserRepository::open(&settings.storage, unexported_timings())?;
            repo.migrate()?;
            UserRepository::Sqlite(repo)
        }
    })
}

/// Drops the cached copy of a changed user, so its new role shows at once.
/// The embedded cache lives inside the running service, out of reach.
async fn forget_cached(settings: &Settings, user: &User) {
    if settings.storage.backend == StorageBackend::Embedded {
        let _ = writeln!(
            std::io::stderr(),
            "note: a running embedded service keeps serving its cached copy of the user for up to user_cache.ttl_secs"
        );
        return;
    }
    let repo = match sessions(settings) {
        Ok(repo) => repo,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach redis to drop the cached user");
            return;
        }
    };
    if let Err(e) = repo.invalidate_user(user).await {
        let _ = writeln!(
            std::io::stderr(),
            "warning: could not drop the cached user from redis ({e}); the new role shows within user_cache.ttl_secs"
        );
    }
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

/// The CLI serves no /metrics: its repositories time into a registry that is
/// never scraped.
fn unexported_timings() -> prometheus::HistogramVec {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("cli_dependency_operation_seconds", "unexported"),
        &["dependency", "operation", "outcome"],
    )
    .unwrap_or_else(|e| unreachable!("static metric definition is valid: {e}"))
}

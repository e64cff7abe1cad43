//! Entry point. `serve` reads like the architecture: settings, telemetry,
//! the application (actors + both servers), then run until a signal.

use std::{io::Write as _, process::ExitCode};

use auth_service::{
    app::Application,
    cli::{self, AdminCommand, Cli, Command},
    config::{Inputs, Loaded, Settings},
    service::AccountAction,
    telemetry,
};
use clap::Parser as _;

/// See `Cargo.toml` for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let inputs = Inputs::from_process(cli.config_dir);
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config(args) = &command {
        return report(cli::config(&inputs, args));
    }
    // Through a running service: its settings are its own, not these.
    if let Command::Admin(admin) = &command
        && let Some((action, args)) = admin.account()
        && args.remote.target.is_some()
    {
        return report(cli::admin_remote(action, args));
    }
    let loaded = match Settings::load(&inputs) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&format!("configuration error: {e}")),
    };
    let settings = &loaded.settings;
    match command {
        Command::Serve => serve(loaded),
        Command::Migrate => report(cli::migrate(settings)),
        Command::Admin(AdminCommand::Create(args)) => report(cli::admin_create(settings, args)),
        Command::Admin(AdminCommand::Revoke(args)) => {
            report(cli::admin_account(settings, AccountAction::RevokeSessions, &args))
        }
        Command::Admin(AdminCommand::Disable(args)) => {
            report(cli::admin_account(settings, AccountAction::Disable, &args))
        }
        Command::Admin(AdminCommand::Enable(args)) => {
            report(cli::admin_account(settings, AccountAction::Enable, &args))
        }
        Command::Healthcheck => report(cli::healthcheck(settings)),
        Command::Config(args) => report(cli::config(&inputs, &args)),
    }
}

fn serve(loaded: Loaded) -> ExitCode {
    // The actix System runs on a small multi-thread Tokio runtime that keeps
    // the acceptor, the ops server, the metrics sampler and the trace
    // exporter; gRPC and the stores run on the worker arbiters (one per core).
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("auth-worker")
            .build()
            .expect("cannot start the Tokio runtime")
    });
    system.block_on(async move {
        let _telemetry = match telemetry::init(&loaded.settings.log, &loaded.settings.tracing) {
            Ok(guard) => guard,
            Err(e) => return fail(&e.to_string()),
        };
        loaded.log();
        let app = match Application::build(loaded.settings).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return fail(&e.to_string());
            }
        };
        match app.run_until_stopped(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn report(result: Result<String, cli::CliError>) -> ExitCode {
    match result {
        Ok(message) => {
            let _ = writeln!(std::io::stdout(), "{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "auth-service: {message}");
    ExitCode::FAILURE
}

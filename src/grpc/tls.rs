//! TLS on the gRPC port: the server's certificate (and, when asked for,
//! the client certificates it verifies), handshakes on the worker that
//! serves the connection, and certificates that rotate without a restart.
//!
//! The files are read again when they change (polled every
//! `grpc.tls.reload_interval_secs`) and on SIGHUP. A new configuration
//! serves new connections; open ones go on with the one they began with. A
//! file that does not load is refused, logged and counted
//! (`auth_tls_reload_failures_total`), and the last good configuration
//! keeps serving.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::{
    ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use tokio::{net::TcpStream, sync::watch};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    config::{ClientAuth, GrpcTlsSettings},
    telemetry::metrics::Metrics,
    tls::{self, MaterialError},
};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the configuration the settings name. Every problem names its file.
fn server_config(settings: &GrpcTlsSettings) -> Result<(ServerConfig, Option<i64>), MaterialError> {
    let cert_file = Path::new(&settings.cert_file);
    let certified = tls::certified_key(cert_file, Path::new(&settings.key_file))?;
    let expires = tls::not_after(&certified.cert);
    let builder = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(tls::PROTOCOL_VERSIONS)
        .map_err(|e| MaterialError { path: cert_file.to_owned(), reason: e.to_string() })?;
    let mut config = match client_verifier(settings)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, expires))
}

/// Verifies client certificates against `client_ca_file`, as
/// `client_auth` says: never asked for, or asked for and, when presented,
/// verified (optional), or demanded (required).
fn client_verifier(
    settings: &GrpcTlsSettings,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, MaterialError> {
    if settings.client_auth == ClientAuth::None {
        return Ok(None);
    }
    let ca_file = Path::new(&settings.client_ca_file);
    let roots = Arc::new(tls::ca_roots(ca_file)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, tls::provider());
    let builder = match settings.client_auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required | ClientAuth::None => builder,
    };
    let verifier = builder
        .build()
        .map_err(|e| MaterialError { path: ca_file.to_owned(), reason: e.to_string() })?;
    Ok(Some(verifier))
}

/// Terminates TLS for the workers: each connection handshakes with the
/// configuration current when it arrived.
#[derive(Clone)]
pub struct TlsTerminator {
    config: watch::Receiver<Arc<ServerConfig>>,
    metrics: Metrics,
}

impl TlsTerminator {
    /// The handshake of `tcp`; `None` (counted by reason) when it fails or
    /// takes too long. A failed handshake ends that connection, nothing
    /// else.
    pub async fn accept(&self, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config.borrow()));
        let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
        let reason = match outcome {
            Ok(Ok(stream)) => {
                self.metrics.tls_handshakes.with_label_values(&["ok"]).inc();
                return Some(stream);
            }
            Ok(Err(e)) => failure_reason(&e),
            Err(_) => "timeout",
        };
        self.metrics.tls_handshakes.with_label_values(&[reason]).inc();
        tracing::debug!(reason, "TLS handshake failed");
        None
    }
}

/// A failed handshake's reason, as a metric label.
fn failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "io";
    };
    match tls {
        Error::NoCertificatesPresented => "no_certificate",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "unknown_ca",
        Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => "wrong_purpose",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::PeerIncompatible(_) | Error::NoApplicationProtocol => "incompatible",
        _ => "protocol",
    }
}

/// When each file was last seen to change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps(Vec<Option<(SystemTime, u64)>>);

impl Stamps {
    fn of(files: &[PathBuf]) -> Self {
        Self(
            files
                .iter()
                .map(|f| {
                    std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
                })
                .collect(),
        )
    }
}

/// Reads the files again when they change or on SIGHUP, and swaps the
/// configuration new connections get.
pub struct TlsReloader {
    settings: GrpcTlsSettings,
    files: Vec<PathBuf>,
    stamps: Stamps,
    current: watch::Sender<Arc<ServerConfig>>,
    metrics: Metrics,
}

impl TlsReloader {
    /// Loads the configuration (a problem stops the start) and returns the
    /// terminator the workers use and the reloader that keeps it current.
    pub fn load(
        settings: &GrpcTlsSettings,
        metrics: &Metrics,
    ) -> Result<(Self, TlsTerminator), MaterialError> {
        let files: Vec<PathBuf> =
            [&settings.cert_file, &settings.key_file, &settings.client_ca_file]
                .into_iter()
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
                .collect();
        let stamps = Stamps::of(&files);
        let (config, expires) = server_config(settings)?;
        warn_if_expired(&settings.cert_file, expires);
        record_expiry(metrics, expires);
        let (current, receiver) = watch::channel(Arc::new(config));
        let terminator = TlsTerminator { config: receiver, metrics: metrics.clone() };
        let reloader =
            Self { settings: settings.clone(), files, stamps, current, metrics: metrics.clone() };
        Ok((reloader, terminator))
    }

    /// Runs until the terminators are gone: a reload on every change of
    /// the files and on every SIGHUP.
    pub async fn run(mut self) {
        let interval = Duration::from_secs(self.settings.reload_interval_secs);
        let mut hangups = hangups();
        loop {
            let signalled = tokio::select! {
                () = tokio::time::sleep(interval) => false,
                Some(()) = next_hangup(&mut hangups) => true,
            };
            if self.current.is_closed() {
                return;
            }
            let stamps = Stamps::of(&self.files);
            if signalled || stamps != self.stamps {
                self.stamps = stamps;
                self.reload(if signalled { "SIGHUP" } else { "file change" });
            }
        }
    }

    fn reload(&mut self, why: &'static str) {
        match server_config(&self.settings) {
            Ok((config, expires)) => {
                warn_if_expired(&self.settings.cert_file, expires);
                record_expiry(&self.metrics, expires);
                self.current.send_replace(Arc::new(config));
                tracing::info!(why, cert_file = %self.settings.cert_file, "TLS certificate reloaded");
            }
            Err(e) => {
                self.metrics.tls_reload_failures.inc();
                tracing::error!(
                    why,
                    error = %e,
                    "TLS reload refused; the previous certificate keeps serving"
                );
            }
        }
    }
}

/// An expired certificate is served anyway (a skewed clock must not take a
/// fleet down), loudly.
fn warn_if_expired(cert_file: &str, expires: Option<i64>) {
    let now = chrono::Utc::now().timestamp();
    if let Some(at) = expires.filter(|at| *at <= now) {
        let expired = chrono::DateTime::from_timestamp(at, 0).unwrap_or_default();
        tracing::warn!(%cert_file, %expired, "THE SERVER CERTIFICATE HAS EXPIRED: clients will refuse it");
    }
}

fn record_expiry(metrics: &Metrics, expires: Option<i64>) {
    metrics.tls_certificate_expiry.set(expires.unwrap_or(0));
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; certificates reload on change only");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}

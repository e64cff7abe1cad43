//! How the user store reaches PostgreSQL: over TLS as the URL's `sslmode`
//! says (rustls; `verify-ca` and `verify-full` against `postgres.ca_file`
//! or the system's roots), and with the set-up a transaction pooler needs.

use std::sync::Arc;

use diesel::{ConnectionError, ConnectionResult};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, SimpleAsyncConnection as _};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{
    config::{PostgresSettings, SslMode},
    tls::{self, MaterialError},
};

/// Opens connections to one URL's server as its `sslmode` says.
#[derive(Clone)]
pub struct PgConnector {
    mode: SslMode,
    tls: MakeRustlsConnect,
    /// `url` leads to a pooler in transaction mode (see `connect`).
    through_pooler: bool,
}

impl PgConnector {
    /// For `url` (its sslmode was checked when the settings loaded; an
    /// unknown one connects in plaintext's place only if it got past that).
    pub fn new(settings: &PostgresSettings, url: &str) -> Result<Self, MaterialError> {
        let mode = SslMode::of(url).unwrap_or(SslMode::Disable);
        Ok(Self {
            mode,
            tls: MakeRustlsConnect::new(client_config(mode, &settings.ca_file)?),
            through_pooler: settings.transaction_pooler,
        })
    }

    /// A plaintext connector (tests and tools on a local server).
    pub fn plaintext() -> Self {
        Self {
            mode: SslMode::Disable,
            tls: MakeRustlsConnect::new(unverified_config()),
            through_pooler: false,
        }
    }

    /// A connector for a server the service itself names (migrations to the
    /// database behind a pooler): never through the pooler.
    pub fn direct(mut self) -> Self {
        self.through_pooler = false;
        self
    }

    /// Connects to `url`.
    pub async fn connect(&self, url: &str) -> ConnectionResult<AsyncPgConnection> {
        let failed = |e: tokio_postgres::Error| ConnectionError::BadConnection(describe(&e));
        let url = self.mode.driver_url(url);
        let (client, connection) =
            tokio_postgres::connect(&url, self.tls.clone()).await.map_err(failed)?;
        if !self.through_pooler {
            return AsyncPgConnection::try_from_client_and_connection(client, connection).await;
        }
        // Behind a pooler in transaction mode the server behind a connection
        // can change at every transaction boundary, and outside a
        // transaction at every Sync. diesel-async's setup runs two prepared
        // statements (time zone, encoding) outside any transaction: a Parse
        // could reach one server and its Bind another ("prepared statement
        // does not exist"), failing the connect. Here the setup runs inside
        // a transaction of its own, which holds one server throughout; the
        // pooler replays the two settings on whichever server serves the
        // connection later. After it, each statement is prepared, run and
        // closed inside its transaction (see `PgUserRepository::run_in`),
        // so no statement is cached.
        //
        // Ends when the client is dropped or the server goes away; the
        // client's calls then fail and the pool drops the connection.
        tokio::spawn(connection);
        client.batch_execute("BEGIN").await.map_err(failed)?;
        let mut conn = AsyncPgConnection::try_from(client).await?;
        conn.batch_execute("COMMIT").await.map_err(ConnectionError::CouldntSetupConfiguration)?;
        conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        Ok(conn)
    }
}

/// A driver error with what the server or the network said: its own
/// `Display` is only "db error" or "error connecting to server".
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The TLS client configuration of a mode: libpq's meanings. `disable`
/// never uses it; `prefer` and `require` encrypt without checking the
/// certificate; `verify-ca` checks its chain; `verify-full` its chain and
/// the host name too.
fn client_config(mode: SslMode, ca_file: &str) -> Result<ClientConfig, MaterialError> {
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(tls::PROTOCOL_VERSIONS)
        .map_err(|e| MaterialError { path: ca_file.into(), reason: e.to_string() })?;
    let config = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => unverified_config(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(tls::client_roots(ca_file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, tls::provider())
                .build()
                .map_err(|e| MaterialError { path: ca_file.into(), reason: e.to_string() })?;
            let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyCa {
                Arc::new(Libpq { chain: Some(webpki) })
            } else {
                webpki
            };
            builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
        }
    };
    Ok(config)
}

/// Encrypts, checks no certificate (`prefer`, `require`).
fn unverified_config() -> ClientConfig {
    ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(tls::PROTOCOL_VERSIONS)
        .unwrap_or_else(|e| unreachable!("ring supports TLS 1.2 and 1.3: {e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Libpq { chain: None }))
        .with_no_client_auth()
}

/// The certificate checks libpq's modes ask for that rustls's own verifier
/// does not do: none at all (`prefer`, `require`: the channel is encrypted
/// and the handshake's signatures still check), or the chain but not the
/// name (`verify-ca`). `verify-full` uses rustls's verifier as it is.
#[derive(Debug)]
struct Libpq {
    /// The chain's verifier for `verify-ca`; none: nothing is checked.
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Libpq {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = tls::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = tls::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls::provider().signature_verification_algorithms.supported_schemes()
    }
}

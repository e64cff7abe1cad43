//! A development CA and certificates for TLS on the gRPC port, laid out as
//! cert-manager lays out its Secrets: `ca.crt`, `tls.crt`, `tls.key`, plus a
//! client certificate (`client.crt`, `client.key`) naming a peer by URI SAN.
//! For the compose stack, local runs and the manifests' checks; never for
//! production (the keys are written unencrypted, the CA lives in the same
//! directory).
//!
//! ```sh
//! cargo run --example dev_certs -- --out target/dev-tls \
//!     --dns localhost --dns auth-service --client-uri spiffe://dev.local/ns/ops/sa/admin
//! ```

// A command-line tool: its report goes to standard output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use clap::Parser;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Parser)]
struct Args {
    /// Directory to write the files to (created).
    #[arg(long)]
    out: PathBuf,
    /// A name (DNS or IP address) the server certificate is for; repeat.
    #[arg(long = "dns", default_value = "localhost")]
    names: Vec<String>,
    /// The URI SAN of the client certificate (its peer identity).
    #[arg(long, default_value = "spiffe://dev.local/ns/ops/sa/admin")]
    client_uri: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "auth-service development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut server = CertificateParams::new(args.names.clone())?;
    server.distinguished_name.push(DnType::CommonName, args.names[0].as_str());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server = server.signed_by(&server_key, &ca)?;

    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name.push(DnType::CommonName, "development client");
    client.subject_alt_names.push(SanType::URI(args.client_uri.as_str().try_into()?));
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client = client.signed_by(&client_key, &ca)?;

    let files = [
        ("ca.crt", ca.pem()),
        ("tls.crt", server.pem()),
        ("tls.key", server_key.serialize_pem()),
        ("client.crt", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    for (name, pem) in files {
        std::fs::write(args.out.join(name), pem)?;
    }
    // Readable by the service's own user in a container (keys included:
    // development material).
    #[cfg(unix)]
    for name in ["tls.key", "client.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(args.out.join(name), std::fs::Permissions::from_mode(0o644))?;
    }
    println!(
        "wrote ca.crt, tls.crt and tls.key (for {}), client.crt and client.key (peer {}) to {}",
        args.names.join(", "),
        args.client_uri,
        args.out.display()
    );
    Ok(())
}

//! Generates the gRPC code and the reflection descriptor set from
//! `proto/user.proto` with protox, a pure-Rust compiler: no system `protoc`;
//! and makes cargo rebuild when a migration changes.

use std::{env, error::Error, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `embed_migrations!` cannot tell cargo which files it reads.
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let descriptors = protox::compile(["user.proto"], ["proto"])?;
    // Server reflection serves this set; protox includes the imported
    // well-known types so clients can resolve `google.protobuf.Timestamp`.
    fs::write(out_dir.join("user_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}

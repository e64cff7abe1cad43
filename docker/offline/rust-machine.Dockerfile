# The build stage's stand-in for rust:1.95-slim-bookworm, carrying the
# building machine's official Rust toolchain (rustup's: rustc and cargo, the
# host's standard library and linker) as that image does; staged into
# rust/ by scripts/offline-images.sh. A C compiler for the bundled SQLite
# and as the linker driver. local-ca/: see rust.Dockerfile.
ARG BASE=auth-offline/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
COPY local-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && update-ca-certificates
COPY rust/ /usr/local/rust/
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version

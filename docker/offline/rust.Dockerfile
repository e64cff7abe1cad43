# The build stage's stand-in for rust:1.95-slim-bookworm: Debian's own Rust
# 1.96 (rustc-web and cargo-web, from bookworm-security), a C compiler for
# the bundled SQLite. No protoc: the build compiles the .proto in Rust.
# local-ca/ holds the building machine's own trust anchors (its
# /usr/local/share/ca-certificates, copied by scripts/offline-images.sh), so
# cargo can reach crates.io from behind a TLS-inspecting proxy.
ARG BASE=auth-offline/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
COPY local-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates rustc-web cargo-web gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && update-ca-certificates \
    && cargo --version && rustc --version

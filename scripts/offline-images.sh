#!/usr/bin/env bash
# Builds, from Debian's packages alone, the images the compose stack needs
# where no image registry can be reached (docker-compose.offline.yml uses
# them; docker/offline/ has one Dockerfile each):
#   auth-offline/debian:bookworm   debootstrap --variant=minbase, imported
#   auth-offline/cc:bookworm       glibc + libgcc, nonroot: for distroless/cc
#   auth-offline/rust:bookworm     for rust:1.95-slim: this machine's official
#                                  Rust toolchain if it has one, else
#                                  Debian's Rust 1.96 (see below)
#   auth-offline/postgres:15, auth-offline/redis:7,
#   auth-offline/prometheus:2, auth-offline/otlp-sink (for Jaeger)
# The debootstrap base is made once and kept (remove the image to remake
# it); the others are rebuilt through the build cache, so a second run takes
# seconds. Needs root (debootstrap), debootstrap, and a Docker engine
# (DOCKER_HOST is honoured; DOCKER names the client binary).
set -euo pipefail
cd "$(dirname "$0")/.."
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
base=auth-offline/debian:bookworm

if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  began=$(date +%s)
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
    tail -20 "$rootfs.log" >&2
    exit 1
  fi
  rm -f "$rootfs.log"
  # Rust 1.96 comes from bookworm-security; updates for everything else.
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security_mirror bookworm-security main
SOURCES
  # As Debian's own container images: no services started by package
  # scripts, no recommends, no package cache kept.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/90containers"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$docker" import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$base" >/dev/null
  echo "$base: made with debootstrap in $(($(date +%s) - began)) s"
fi

# The build context: docker/offline plus this machine's local trust anchors
# (for cargo in the Rust image, behind a TLS-inspecting proxy).
context=$(mktemp -d)
toolchain=$(mktemp -d)
trap 'rm -rf "$context" "$toolchain" "${rootfs:-}"' EXIT
cp -r docker/offline/. "$context"
mkdir "$context/local-ca"
cp /usr/local/share/ca-certificates/*.crt "$context/local-ca/" 2>/dev/null || true

# build TAG DOCKERFILE [CONTEXT [DOCKER-BUILD-ARGS...]]
build() {
  local tag=$1 dockerfile=$2 dir=${3:-$context} began
  shift $(($# < 3 ? $# : 3))
  began=$(date +%s)
  if ! "$docker" build --network host --build-arg "BASE=$base" "$@" \
    -f "$dir/$dockerfile" -t "$tag" "$dir" >"$dir/build.log" 2>&1; then
    tail -30 "$dir/build.log" >&2
    echo "$tag: build failed" >&2
    exit 1
  fi
  echo "$tag: $(($(date +%s) - began)) s"
}
build auth-offline/cc:bookworm cc.Dockerfile

# The build stage's Rust. Debian's rustc is built without the profile-guided
# and BOLT optimisation of the official releases and compiles this crate
# about 1.7x slower (the cold image build: 760 s), so where this machine has
# an official toolchain (rustup's), the image carries that one, as
# rust:1.95-slim-bookworm does; it is remade only when that toolchain or
# its Dockerfile changes. AUTH_OFFLINE_RUST=debian takes Debian's anyway.
rust_image=auth-offline/rust:bookworm
sysroot=$(rustc --print sysroot 2>/dev/null || true)
host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
if [ "${AUTH_OFFLINE_RUST:-}" != debian ] && [ -x "$sysroot/bin/cargo" ] \
  && [ -d "$sysroot/lib/rustlib/$host/lib" ]; then
  made_from="$("$sysroot/bin/rustc" -V), $(sha256sum docker/offline/rust-machine.Dockerfile | cut -c1-12)"
  if [ "$("$docker" image inspect -f '{{index .Config.Labels "auth-offline.made-from"}}' \
    "$rust_image" 2>/dev/null)" = "$made_from" ]; then
    echo "$rust_image: kept ($made_from)"
  else
    mkdir -p "$toolchain/rust/bin" "$toolchain/rust/lib/rustlib"
    cp "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$toolchain/rust/bin/"
    cp -a "$sysroot"/lib/lib*.so* "$toolchain/rust/lib/"
    cp -a "$sysroot/lib/rustlib/$host" "$toolchain/rust/lib/rustlib/"
    cp -r "$context/local-ca" docker/offline/rust-machine.Dockerfile "$toolchain/"
    build "$rust_image" rust-machine.Dockerfile "$toolchain" --label "auth-offline.made-from=$made_from"
  fi
else
  build "$rust_image" rust.Dockerfile
fi
build auth-offline/postgres:15 postgres.Dockerfile
build auth-offline/redis:7 redis.Dockerfile
build auth-offline/prometheus:2 prometheus.Dockerfile
build auth-offline/otlp-sink otlp-sink.Dockerfile

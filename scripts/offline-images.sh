#!/usr/bin/env bash
# Builds, from Debian's packages alone, the images the compose stack needs
# where no image registry can be reached (docker-compose.offline.yml uses
# them; docker/offline/ has one Dockerfile each):
#   auth-offline/debian:bookworm   debootstrap --variant=minbase, imported
#   auth-offline/cc:bookworm       glibc + libgcc, nonroot: for distroless/cc
#   auth-offline/rust:bookworm     Debian's Rust 1.96: for rust:1.95-slim
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
trap 'rm -rf "$context" "${rootfs:-}"' EXIT
cp -r docker/offline/. "$context"
mkdir "$context/local-ca"
cp /usr/local/share/ca-certificates/*.crt "$context/local-ca/" 2>/dev/null || true

build() {
  local tag=$1 dockerfile=$2 began
  began=$(date +%s)
  if ! "$docker" build --network host --build-arg "BASE=$base" \
    -f "$context/$dockerfile" -t "$tag" "$context" >"$context/build.log" 2>&1; then
    tail -30 "$context/build.log" >&2
    echo "$tag: build failed" >&2
    exit 1
  fi
  echo "$tag: $(($(date +%s) - began)) s"
}
build auth-offline/cc:bookworm cc.Dockerfile
build auth-offline/rust:bookworm rust.Dockerfile
build auth-offline/postgres:15 postgres.Dockerfile
build auth-offline/redis:7 redis.Dockerfile
build auth-offline/prometheus:2 prometheus.Dockerfile
build auth-offline/otlp-sink otlp-sink.Dockerfile

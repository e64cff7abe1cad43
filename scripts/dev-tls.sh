#!/usr/bin/env bash
# A development CA and certificates for TLS on the gRPC port, in docker/tls/
# (ca.crt, tls.crt and tls.key for localhost and auth-service, client.crt
# and client.key naming spiffe://dev.local/ns/ops/sa/admin). Made by the
# repository's own example (rcgen): no openssl needed. Never for
# production. See docker-compose.tls.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docker/tls}
cargo run --quiet --example dev_certs -- --out "$out" \
  --dns localhost --dns 127.0.0.1 --dns auth-service \
  --client-uri spiffe://dev.local/ns/ops/sa/admin

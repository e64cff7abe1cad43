#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, in one run (about 25 minutes on 2 cores).
#
#   scripts/benchmarks.sh            # all sections
#   scripts/benchmarks.sh sweep      # one section: ceiling sweep hashing
#                                    #   isolation tracing memory storage
#                                    #   replicas login-timing micro tls
#   BASELINE=/path/to/auth-service [BASELINE_DIR=its/checkout] \
#     scripts/benchmarks.sh versus   # the sweep of another build and this
#                                    #   one, back to back (not in "all");
#                                    #   the baseline runs in BASELINE_DIR
#                                    #   (builds before the built-in config
#                                    #   layers read ./config there)
#
# Needs PostgreSQL and Redis on localhost (the service runs with
# APP_ENV=local, logging at warn) and ports 5000, 5001, 7070 and 4317 free.
# The load generator runs on the same machine, one thread, as h2load does by
# default. Output goes to the terminal and target/benchmarks-<time>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

sections=${*:-ceiling sweep hashing isolation tracing memory storage replicas login-timing micro tls}
out="target/benchmarks-$(date -u +%Y%m%dT%H%M%SZ).txt"
mkdir -p target
exec > >(tee "$out") 2>&1

cargo build --quiet --release --bin auth-service --example loadgen --example echo_server --example dev_certs
loadgen=target/release/examples/loadgen
pid=""
service=target/release/auth-service
service_dir=.

stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap stop EXIT

# start ENV=VALUE...: the service with these settings (PostgreSQL + Redis
# unless they say otherwise), until ready; sets ready_ms to the time it took.
start() {
  stop
  local began
  began=$(date +%s%N)
  local log="$PWD/target/bench-service.log" binary
  binary=$(realpath "$service")
  (cd "$service_dir" && exec env APP_ENV=local AUTH__LOG__FILTER=warn "$@" "$binary") >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 500); do
    if target/release/auth-service healthcheck >/dev/null 2>&1; then
      ready_ms=$((($(date +%s%N) - began) / 1000000))
      return
    fi
    sleep 0.02
  done
  echo "the service did not become ready" >&2
  exit 1
}

section() { printf '\n## %s\n' "$*"; }

# handled METHOD: the answers to it so far by gRPC code, as JSON, from the
# service's own grpc_server_handled_total (h2load reads no gRPC trailers).
handled() {
  python3 - "$1" <<'PY'
import json, re, sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:7070/metrics", timeout=5).read().decode()
codes = {}
for line in text.splitlines():
    if line.startswith("grpc_server_handled_total{") and f'grpc_method="{sys.argv[1]}"' in line:
        code = re.search(r'grpc_code="([^"]+)"', line)[1]
        codes[code] = codes.get(code, 0) + int(float(line.rsplit(" ", 1)[1]))
print(json.dumps(codes))
PY
}

# h2 URL LABEL ARGS...: one h2load run of GetMe with $session, and the
# service's count of what it answered.
h2() {
  local url=$1 label=$2 before after
  shift 2
  before=$(handled GetMe)
  h2load "$@" -d target/bench-getme.bin -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "session_id: $session" "$url/userService.UserService/GetMe" >target/bench-h2load.txt 2>&1
  after=$(handled GetMe)
  python3 - "$label" "$before" "$after" <<'PY'
import json, re, sys
text = open("target/bench-h2load.txt").read()
label, before, after = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
codes = {c: n - before.get(c, 0) for c, n in after.items() if n - before.get(c, 0)}
rate = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
# h2load resets the calls still in flight when its time is up: the
# service counts those Canceled.
others = {c: n for c, n in codes.items() if c not in ("OK", "Canceled")}
print(f"{label:<30} {float(rate[3]):>8.0f} req/s   answered {codes}"
      + (f"   NOT OK: {others}" if others else ""))
PY
}

echo "# auth-service benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "# $(rustc --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

for s in $sections; do
  case $s in
  ceiling)
    section "Transport ceiling: the bare tonic echo server, same load generator"
    stop
    target/release/examples/echo_server --addr 127.0.0.1:5001 >/dev/null 2>&1 &
    pid=$!
    sleep 0.5
    $loadgen --target http://127.0.0.1:5001 --rpc get-me --sweep --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$pid"
    ;;
  versus)
    # Per RPC, the baseline then this build, each at 16, 256 and 1024 in
    # flight: the two measured minutes apart, not sessions apart.
    baseline=${BASELINE:?versus needs BASELINE=path/to/another/auth-service}
    for rpc in get-me find-by-id find-by-email; do
      for build in "$baseline" target/release/auth-service; do
        section "Sweep: $rpc, $build"
        if [ "$build" = "$baseline" ]; then dir=${BASELINE_DIR:-.}; else dir=.; fi
        service=$build service_dir=$dir start
        $loadgen --rpc "$rpc" --sweep --points 16x1,16x16,16x64 --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$pid"
      done
    done
    service=target/release/auth-service
    ;;
  tls)
    section "TLS on the gRPC port: GetMe at 16 x 16, plaintext then TLS (h2load, one thread, 5 s after 1 s; 3 runs each), and new TLS connections per second"
    if ! command -v h2load >/dev/null; then
      echo "needs h2load (Debian's nghttp2-client)"
    else
      certs=target/bench-tls
      target/release/examples/dev_certs --out "$certs" --dns 127.0.0.1 --dns localhost >/dev/null
      printf '\0\0\0\0\0' >target/bench-getme.bin
      start
      # The session lives in Redis: the TLS run below uses it too.
      session=$($loadgen --print-session)
      for run in 1 2 3; do
        h2 http://127.0.0.1:5000 "plaintext, run $run" -c 16 -m 16 -D 5 --warm-up-time=1
      done
      service_tls=(AUTH__GRPC__TLS__CERT_FILE=$certs/tls.crt AUTH__GRPC__TLS__KEY_FILE=$certs/tls.key
        AUTH__GRPC__TLS__CLIENT_CA_FILE=$certs/ca.crt AUTH__GRPC__TLS__CLIENT_AUTH=optional)
      start "${service_tls[@]}"
      for run in 1 2 3; do
        h2 https://127.0.0.1:5000 "TLS, run $run" -c 16 -m 16 -D 5 --warm-up-time=1
      done
      # 2 000 connections, one call each: handshake-bound.
      h2 https://127.0.0.1:5000 "TLS handshakes (1 call each)" -c 2000 -n 2000 -m 1
    fi
    ;;
  sweep)
    for rpc in get-me find-by-id find-by-email; do
      section "Sweep: $rpc"
      start
      $loadgen --rpc "$rpc" --sweep --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$pid"
    done
    ;;
  hashing)
    section "Login and Register (argon2id at the configured cost, $(nproc) cores)"
    start
    $loadgen --rpc login --connections 4 --streams 4 --repeat 3 --duration-secs 8 --warmup-secs 1 --users 16 --server-pid "$pid"
    $loadgen --rpc register --connections 4 --streams 4 --repeat 3 --duration-secs 8 --warmup-secs 1 --users 16 --server-pid "$pid"
    ;;
  isolation)
    section "Isolation: GetMe at 256 in flight, alone, then beside a Login flood (64 in flight)"
    start
    $loadgen --rpc get-me --connections 16 --streams 16 --isolation --duration-secs 6 --warmup-secs 1 --server-pid "$pid"
    ;;
  tracing)
    section "Tracing: export off, then on (sample ratio 0.1, the default), then on at 1.0"
    start
    $loadgen --rpc get-me --connections 16 --streams 16 --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$pid"
    start AUTH__TRACING__OTLP_ENDPOINT=http://127.0.0.1:4317
    $loadgen --rpc get-me --connections 16 --streams 16 --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$pid" --otlp-sink 127.0.0.1:4317
    start AUTH__TRACING__OTLP_ENDPOINT=http://127.0.0.1:4317 AUTH__TRACING__SAMPLE_RATIO=1.0
    $loadgen --rpc get-me --connections 16 --streams 16 --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$pid" --otlp-sink 127.0.0.1:4317
    ;;
  memory)
    section "Memory: idle, then 1000 connections x 16 streams (16 000 calls in flight)"
    start
    sleep 2
    echo "idle, before the first hash: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)"
    $loadgen --rpc get-me --connections 1000 --streams 16 --duration-secs 8 --warmup-secs 2 --server-pid "$pid"
    ;;
  storage)
    section "Storage backends: time to ready, then GetMe and FindByID at 256 in flight"
    rm -rf target/bench-data
    for backend in external embedded; do
      # Embedded: a fresh data directory, so the first start migrates.
      start AUTH__STORAGE__BACKEND=$backend AUTH__STORAGE__DATA_DIR=target/bench-data
      echo "$backend: ready in $ready_ms ms (first start)"
      start AUTH__STORAGE__BACKEND=$backend AUTH__STORAGE__DATA_DIR=target/bench-data
      echo "$backend: ready in $ready_ms ms (restart)"
      for rpc in get-me find-by-id; do
        $loadgen --rpc "$rpc" --connections 16 --streams 16 --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$pid"
      done
    done
    rm -rf target/bench-data
    ;;
  replicas)
    section "Replicas: one, then three sharing PostgreSQL and Redis (standalone, then a 3-master Cluster), GetMe and FindByID at 256 in flight"
    # On 2 cores three replicas share the same two cores as one: this shows
    # what running several costs, not how they scale.
    replica_pids=()
    cluster_pids=()
    cluster_dir=$(mktemp -d)
    stop_replicas() {
      for p in "${replica_pids[@]}" "${cluster_pids[@]}"; do kill "$p" 2>/dev/null || true; done
      # Only these: a bare `wait` would also wait for the output's tee.
      for p in "${replica_pids[@]}" "${cluster_pids[@]}"; do wait "$p" 2>/dev/null || true; done
      replica_pids=()
      cluster_pids=()
    }
    start_replicas() { # N ENV=VALUE...
      local n=$1 i
      shift
      stop
      for ((i = 0; i < n; i++)); do
        env APP_ENV=local AUTH__LOG__FILTER=warn AUTH__GRPC__ADDR=127.0.0.1:$((5000 + 10 * i)) \
          AUTH__HTTP__ADDR=127.0.0.1:$((7070 + 10 * i)) "$@" \
          target/release/auth-service >"target/bench-replica-$i.log" 2>&1 &
        replica_pids+=($!)
      done
      for ((i = 0; i < n; i++)); do
        until AUTH__HTTP__ADDR=127.0.0.1:$((7070 + 10 * i)) target/release/auth-service healthcheck >/dev/null 2>&1; do
          sleep 0.05
        done
      done
      targets=$(for ((i = 0; i < n; i++)); do printf 'http://127.0.0.1:%s,' $((5000 + 10 * i)); done)
      targets=${targets%,}
      servers=$(IFS=,; echo "${replica_pids[*]}")
    }
    for n in 1 3; do
      start_replicas "$n"
      echo "$n replica(s), standalone Redis"
      for rpc in get-me find-by-id; do
        $loadgen --target "$targets" --rpc "$rpc" --connections 16 --streams 16 --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$servers"
      done
      stop_replicas
    done
    for port in 7101 7102 7103; do
      mkdir -p "$cluster_dir/$port"
      redis-server --port "$port" --bind 127.0.0.1 --dir "$cluster_dir/$port" --save "" --appendonly no \
        --cluster-enabled yes --cluster-node-timeout 2000 >/dev/null 2>&1 &
      cluster_pids+=($!)
    done
    sleep 0.5
    redis-cli --cluster create 127.0.0.1:7101 127.0.0.1:7102 127.0.0.1:7103 --cluster-replicas 0 --cluster-yes >/dev/null
    until redis-cli -p 7101 cluster info | grep -q cluster_state:ok; do sleep 0.1; done
    for n in 1 3; do
      cluster_env=(AUTH__REDIS__MODE=cluster "AUTH__REDIS__URLS=redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103")
      start_replicas "$n" "${cluster_env[@]}"
      echo "$n replica(s), Redis Cluster of 3 masters"
      for rpc in get-me find-by-id; do
        $loadgen --target "$targets" --rpc "$rpc" --connections 16 --streams 16 --repeat 3 --duration-secs 5 --warmup-secs 1 --server-pid "$servers"
      done
      for p in "${replica_pids[@]}"; do kill "$p" 2>/dev/null || true; done
      wait "${replica_pids[@]}" 2>/dev/null || true
      replica_pids=()
    done
    stop_replicas
    rm -rf "$cluster_dir"
    ;;
  login-timing)
    section "Failed-login timing by what failed, without and with the floor"
    stop
    cargo run --quiet --release --example login_timing -- --samples 20
    ;;
  micro)
    section "Micro-benchmarks (cargo bench)"
    stop
    cargo bench --quiet --bench micro 2>&1 | grep -E '^[a-z].*time:|^ +time:|^[a-zA-Z].*$' | grep -v '^Benchmarking\|^Found\|outliers\|^Gnuplot'
    ;;
  *)
    echo "unknown section $s" >&2
    exit 2
    ;;
  esac
done
stop
echo
echo "written to $out"

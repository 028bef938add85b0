# Shared by tests/bench.sh, tests/bench_ab.sh and tests/bench_cpu.sh (sourced; callers keep their servers' pids in `pids`).

# start VAR LOG CMD...: runs CMD in the background and sets VAR to the URL of its `listening on` line.
start() {
  local var=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!)
  local url
  for _ in $(seq 1 200); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | sed 's/listening on //' || true)
    if [ -n "$url" ]; then printf -v "$var" '%s' "$url"; return 0; fi
    sleep 0.05
  done
  echo "server did not start: $*" >&2; cat "$log" >&2; return 1
}

# grpc_url VAR LOG: sets VAR to http://ADDR of the `listening on grpc://ADDR` line in LOG.
grpc_url() {
  local addr
  addr=$(grep -o 'listening on grpc://[0-9.:]*' "$2" | head -n1 | sed 's|listening on grpc://||')
  [ -n "$addr" ] || { echo "no gRPC listener in $2" >&2; cat "$2" >&2; return 1; }
  printf -v "$1" 'http://%s' "$addr"
}

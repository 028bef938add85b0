# Shared by tests/bench.sh and tests/bench_ab.sh (sourced; callers keep their servers' pids in `pids`).

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

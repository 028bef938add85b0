# Shared by the benchmark scripts (sourced): a scratch directory and the servers' pids, both gone
# when the script exits; starting servers; CPU ticks; a gateway's environment on the fake Bedrock.

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

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

# ticks PID: the CPU ticks (user + system) PID and the processes under it have spent.
ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/stat" ] && total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$total"
}

# on_fake URL: sets `fake_env` to the environment of a gateway that answers with Bedrock at the
# fake on URL, model bench.model (give it `--provider bedrock`).
on_fake() {
  fake_env=(AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
    NAGARE__PROVIDER__BEDROCK__ENDPOINT_URL="$1" NAGARE__MODELS__DEFAULT=bench.model NAGARE__MODELS__ALLOW='["bench.model"]')
}

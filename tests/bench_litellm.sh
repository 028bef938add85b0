#!/usr/bin/env bash
# Nagare's OpenAI dialect against a peer speaking the same dialect to the same upstream: the
# LiteLLM proxy (PyPI) and `nagare serve --provider bedrock`, both in front of one fake Bedrock
# (tests/src/bin/fake-bedrock.rs), driven by the same load (nagare-load, closed loop) with the same
# `/v1/chat/completions` body. Per case: a warm-up, then the measured run; each server's CPU
# (utime + stime of its whole process tree, from /proc) over the run divided by the requests it
# served, and the p50 at one connection minus the p50 straight to the fake. BENCH_RUNS rounds
# (default 3); medians. Writes docs/benchmark-litellm.md. Not run by CI: it installs LiteLLM
# (into target/litellm-venv, BENCH_LITELLM_VERSION) from PyPI, which takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP:-3}
runs=${BENCH_RUNS:-3}
conns=${BENCH_CONNECTIONS:-32}
version=${BENCH_LITELLM_VERSION:-1.110.2}
out=${BENCH_OUT:-docs/benchmark-litellm.md}
profile=${BENCH_PROFILE:-release}
venv=target/litellm-venv
# The proxy's own dependencies, as litellm 1.110.2's `proxy` extra lists them, but for the
# `litellm-proxy` and `litellm-enterprise` pins that PyPI as reachable here does not serve (the
# proxy runs without them), and the Azure clients it does not use here.
proxy_deps=("gunicorn>=23.0.0,<24.0" "uvicorn>=0.33.0,<1.0" "uvloop>=0.22.1,<1.0" "fastapi>=0.136.3,<1.0"
  "starlette>=1.0.1,<2.0" "backoff>=2.2.1,<3.0" "pyyaml>=6.0.3,<7.0" "rq>=2.7.0,<3.0" "orjson>=3.12.0,<4.0"
  "apscheduler>=3.11.2,<4.0" "fastapi-sso>=0.19.0,<1.0" "pyjwt>=2.13.0,<3.0" "python-multipart>=0.0.27,<1.0"
  "cryptography>=49.0.0,<51.0" "pynacl>=1.6.2,<2.0" "websockets>=15.0.1,<16.0" "boto3>=1.43.117,<2.0"
  "mcp>=2.3.0,<3" "pydantic>=2.12.0,<3" "litellm-enterprise==0.1.83" "restrictedpython>=8.5,<9.0"
  "rich>=13.9.4,<14.0" "expression>=5.6.0,<6.0" "backports-zstd>=1.0.0,<2.0" "semver>=3.0.4,<4"
  "soundfile>=0.12.1,<1.0" "polars>=1.38.1,<2.0" "inquirerpy>=0.3.4,<1.0" "tomlkit>=0.13.3,<1.0"
  "pyroscope-io>=0.8.16,<1.0" "granian>=2.7.4,<3.0" "hiredis>=3.5.0,<4.0" "httpx2>=2.10.0,<3")
if [ ! -x "$venv/bin/litellm" ] || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')" != "$version" ]; then
  echo "installing litellm==$version and its proxy's dependencies into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "litellm==$version" "${proxy_deps[@]}"
fi
cargo build --profile "$profile" --locked --bin nagare --bin nagare-load --bin fake-bedrock >&2
bin=target/$profile
[ "$profile" = dev ] && bin=target/debug

# shellcheck source=tests/bench_lib.sh
source tests/bench_lib.sh

start fake "$work/fake.log" "$bin/fake-bedrock"
fake_pid=${pids[-1]}
data="$work/data"
token=$("$bin/nagare" token --sub bench --data-dir "$data")
on_fake "$fake"
start nagare "$work/nagare.log" env NAGARE__RATE_LIMITS__REQUESTS_PER_MINUTE=0 NAGARE__RATE_LIMITS__TOKENS_PER_MINUTE=0 \
  NAGARE__MEMORY__ENABLED=false NAGARE__CACHE__ENABLED=false "${fake_env[@]}" \
  "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data" --provider bedrock
nagare_pid=${pids[-1]}

# LiteLLM's proxy: one worker, the model on Bedrock's Converse API at the fake, no cache, no
# database, no calls home (the bundled cost map, no telemetry).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/litellm.yaml" <<YAML
model_list:
  - model_name: bench.model
    litellm_params:
      model: bedrock/converse/bench.model
      aws_bedrock_runtime_endpoint: $fake
      aws_region_name: us-east-1
      aws_access_key_id: bench
      aws_secret_access_key: bench
general_settings:
  master_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
YAML
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR "$venv/bin/litellm" --config "$work/litellm.yaml" \
  --host 127.0.0.1 --port "$port" --num_workers 1 >"$work/litellm.log" 2>&1 &
pids+=($!)
litellm_pid=$!
litellm="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
  curl -sf "$litellm/health/liveliness" >/dev/null 2>&1 && break
  kill -0 "$litellm_pid" 2>/dev/null || { cat "$work/litellm.log" >&2; echo "litellm did not start" >&2; exit 1; }
  sleep 0.1
done

body='{"model":"bench.model","messages":[{"role":"user","content":"hello"}]}'
stream='{"model":"bench.model","messages":[{"role":"user","content":"hello"}],"stream":true}'
direct='{"messages":[{"role":"user","content":[{"text":"hello"}]}]}'
# measure NAME RUN PID TOKEN LOAD_ARGS...
measure() {
  local name=$1 run=$2 pid=$3 key=$4; shift 4
  "$bin/nagare-load" --header "authorization: Bearer $key" --json --seconds "$warmup" --warmup 0 "$@" >/dev/null
  local t0
  t0=$(ticks "$pid")
  "$bin/nagare-load" --header "authorization: Bearer $key" --json --seconds "$seconds" --warmup 0 "$@" >"$work/$name-$run.json"
  echo $(( $(ticks "$pid") - t0 )) >"$work/$name-$run.cpu"
}
for run in $(seq 1 "$runs"); do
  echo "round $run/$runs" >&2
  for who in nagare litellm; do
    pid_var=${who}_pid url_var=$who key=$token
    [ "$who" = litellm ] && key=sk-bench
    measure "$who" "$run" "${!pid_var}" "$key" --url "${!url_var}/v1/chat/completions" --body "$body" --connections "$conns"
    measure "${who}sse" "$run" "${!pid_var}" "$key" --url "${!url_var}/v1/chat/completions" --body "$stream" --connections "$conns"
    measure "${who}1" "$run" "${!pid_var}" "$key" --url "${!url_var}/v1/chat/completions" --body "$body" --connections 1
  done
  measure direct1 "$run" "$fake_pid" none --url "$fake/model/bench.model/converse" --body "$direct" --connections 1
done

mkdir -p "$(dirname "$out")"
python3 - "$work" "$out" "$runs" "$(getconf CLK_TCK)" "$seconds" "$conns" "$version" <<'PY'
import datetime, json, os, platform, statistics, subprocess, sys
work, out, runs, hz, seconds, conns, version = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:8]
def get(name, run):
    report = json.load(open(f"{work}/{name}-{run}.json"))
    ticks = int(open(f"{work}/{name}-{run}.cpu").read())
    n = max(report["requests"], 1)
    return {"cpu": ticks / hz * 1e6 / n, "rps": report["requests_per_second"], "p50": report["latency_ms"]["p50"],
            "errors": sum(report["errors"].values())}
rounds = range(1, runs + 1)
per = {name: [get(name, r) for r in rounds]
       for name in ["nagare", "nagaresse", "nagare1", "litellm", "litellmsse", "litellm1", "direct1"]}
med = statistics.median
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
lines = ["# Nagare and LiteLLM, the same dialect to the same upstream", "",
         "Generated by `tests/bench_litellm.sh` (not run by CI); what it measures is in",
         "[benchmarks.md](benchmarks.md#the-openai-dialect-against-litellm).", "",
         f"{datetime.date.today()}: {os.cpu_count()} cores ({cpu}), "
         f"{subprocess.run(['rustc', '--version'], capture_output=True, text=True).stdout.strip()}, "
         f"LiteLLM {version} (one worker). {runs} rounds of {seconds} s per case, closed loop; medians over the rounds; "
         "ratios taken within each round. Both call the same fake Bedrock's Converse API.", "",
         "| `/v1/chat/completions` | Nagare CPU µs/request | LiteLLM CPU µs/request | LiteLLM ÷ Nagare | Nagare requests/s | LiteLLM requests/s | errors |",
         "|---|---:|---:|---:|---:|---:|---:|"]
for label, a, b in [(f"unary, {conns} connections", "nagare", "litellm"),
                    (f"streamed, {conns} connections", "nagaresse", "litellmsse"),
                    ("unary, 1 connection", "nagare1", "litellm1")]:
    xs, ys = per[a], per[b]
    ratio = med([y["cpu"] / max(x["cpu"], 1e-9) for x, y in zip(xs, ys)])
    lines.append(f"| {label} | {med([x['cpu'] for x in xs]):.0f} | {med([y['cpu'] for y in ys]):.0f} | {ratio:.1f} "
                 f"| {med([x['rps'] for x in xs]):.0f} | {med([y['rps'] for y in ys]):.0f} "
                 f"| {sum(x['errors'] + y['errors'] for x, y in zip(xs, ys))} |")
over = lambda name: med([v["p50"] - d["p50"] for v, d in zip(per[name], per["direct1"])])
lines += ["", f"Overhead at one connection (p50 through the proxy minus p50 straight to the fake, "
          f"{med([d['p50'] for d in per['direct1']]):.3f} ms): Nagare **{over('nagare1'):.3f} ms**, "
          f"LiteLLM **{over('litellm1'):.3f} ms**.", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
failed = sum(x["errors"] for xs in per.values() for x in xs)
if failed:
    sys.exit(f"{failed} requests failed; see the errors column")
PY

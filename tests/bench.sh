#!/usr/bin/env bash
# Runs Nagare's benchmarks against release builds and writes docs/benchmark-results.md.
# Everything runs on loopback. BENCH_SECONDS (default 10) sets each run's measured length;
# CI runs it with BENCH_QUICK=1 (and tiny sizes) just to keep it working. Figures are never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP:-2}
rate=${BENCH_RATE:-1000}
out=${BENCH_OUT:-docs/benchmark-results.md}

# Every binary, the Lambda functions deploy/template.yaml names among them. BENCH_PROFILE=dev (CI's
# smoke run) uses the debug build the tests made, instead of a release build: the figures are then
# meaningless, but every tool and step still runs.
profile=${BENCH_PROFILE:-release}
cargo build --profile "$profile" --locked --workspace --bins >&2
bin=target/$profile
[ "$profile" = dev ] && bin=target/debug

# shellcheck source=tests/bench_lib.sh
source tests/bench_lib.sh

# Both gateways run in dev mode with one data dir; every request carries a token minted for it.
data="$work/data"
token=$("$bin/nagare" token --sub bench --data-dir "$data")
# `load_warmup=S load ...` lengthens one run's warm-up.
load() { "$bin/nagare-load" --seconds "$seconds" --warmup "${load_warmup:-$warmup}" --json --header "authorization: Bearer $token" "$@"; }

# The load generator repeats one body, so every gateway that measures the pipeline or its overhead
# runs with the response cache off (and memory off, so SQLite writes do not set the pace); the
# cache and memory get runs of their own.
plain="NAGARE__CACHE__ENABLED=false NAGARE__MEMORY__ENABLED=false"
# One token sends every request, so the per-principal rate limits and the cap on one user's
# WebSockets are lifted for every gateway; the idle-connection run needs more connections than
# the default cap (the cap stays under the file limit either way).
export NAGARE__RATE_LIMITS__REQUESTS_PER_MINUTE=0 NAGARE__RATE_LIMITS__TOKENS_PER_MINUTE=0
export NAGARE__WEBSOCKET__MAX_PER_PRINCIPAL=1000000 NAGARE__SERVER__MAX_CONNECTIONS=1000000
start fake "$work/fake.log" "$bin/fake-bedrock"
start mock "$work/mock.log" env $plain NAGARE__PROVIDER__MOCK__TTFT_MS=0 NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=0 \
  "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data"
on_fake "$fake"
start gw "$work/gw.log" env $plain "${fake_env[@]}" \
  "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data" --provider bedrock
start hits "$work/hits.log" env NAGARE__MEMORY__ENABLED=false NAGARE__PROVIDER__MOCK__TTFT_MS=0 \
  NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=0 "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data/hits"
start defaults "$work/defaults.log" env NAGARE__PROVIDER__MOCK__TTFT_MS=0 NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=0 \
  "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data/defaults"

start tasksgw "$work/tasksgw.log" env $plain NAGARE__PROVIDER__MOCK__TTFT_MS=0 NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=0 \
  "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data/tasks"
# The WebSocket chats' first token takes one token interval, like every other: the mock's clock
# (tokio's, which fires up to a millisecond or two after a due time) then delays every delta alike.
# With `ttft_ms = 0` the first delta alone would skip that clock, and its delay would be counted
# as every later delta's lateness (0.5 ms at p50 and 0.3 ms at p99, in three paired runs).
start wsgw "$work/wsgw.log" env NAGARE__CACHE__ENABLED=false NAGARE__PROVIDER__MOCK__TTFT_MS=20 \
  NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=50 "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data"
wsgw_pid=${pids[-1]}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

direct_body='{"messages":[{"role":"user","content":[{"text":"hello"}]}]}'
echo "1/14 /v1/chat closed loop, unpaced mock, 64 connections" >&2
load --url "$mock/v1/chat" --connections 64 >"$work/mock64.json"
echo "2/14 /v1/chat/stream closed loop, unpaced mock, 64 connections" >&2
load --url "$mock/v1/chat/stream" --connections 64 --mode sse >"$work/mocksse.json"
echo "3/14 fake Bedrock direct, open loop at $rate req/s" >&2
load --url "$fake/model/bench.model/converse-stream" --body "$direct_body" --connections 32 --rate "$rate" >"$work/direct.json"
echo "4/14 through Nagare to the fake, open loop at $rate req/s" >&2
load --url "$gw/v1/chat" --connections 32 --rate "$rate" >"$work/via.json"
# The same run as the gateway measured it: its gateway-overhead histogram (warm-up included).
python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "$gw/metrics" >"$work/via-metrics.txt"
echo "5/14 SSE through Nagare to the fake, open loop at $rate req/s" >&2
load --url "$gw/v1/chat/stream" --connections 32 --rate "$rate" --mode sse >"$work/viasse.json"
idle_conns=${BENCH_WS_IDLE:-10000}
echo "6/14 $idle_conns idle WebSocket connections: server RSS per connection" >&2
before=$(rss_kb "$wsgw_pid")
"$bin/nagare-load" --url "ws://${wsgw#http://}/v1/ws" --mode ws-idle --connections "$idle_conns" --seconds 3 --warmup 0 \
  --header "authorization: Bearer $token" --json >"$work/wsidle.json" 2>"$work/wsidle.err" &
idle_pid=$!
for _ in $(seq 1 600); do grep -q 'idle connections open' "$work/wsidle.err" && break; sleep 0.1; done
sleep 0.5
after=$(rss_kb "$wsgw_pid")
wait "$idle_pid"
echo "{\"before_kb\": $before, \"after_kb\": $after}" >"$work/wsrss.json"
streams=${BENCH_WS_STREAMS:-1000}
echo "7/14 $streams concurrent WebSocket chats, 100 tokens at 50 tokens/s: starts staggered, then in lockstep" >&2
# Independent users' chats start at independent times: the first chats start spread over one
# chat's length (2 s), and measuring begins once every connection is streaming. The second run
# starts them all within one token interval, so a thousand chats end and start again together
# every 2 s: a burst no real traffic makes, reported beside it.
ws_ramp=${BENCH_WS_RAMP:-2}
ws_body='{"message":"hi","model":"mock.long","inference":{"max_tokens":100}}'
load_warmup=$(awk "BEGIN { print $warmup + $ws_ramp }") load --url "ws://${wsgw#http://}/v1/ws" --mode ws \
  --connections "$streams" --delta-interval-ms 20 --ramp-seconds "$ws_ramp" --body "$ws_body" >"$work/wsstream.json"
load --url "ws://${wsgw#http://}/v1/ws" --mode ws --connections "$streams" --delta-interval-ms 20 \
  --body "$ws_body" >"$work/wslockstep.json"
grpc_url mockgrpc "$work/mock.log"
echo "8/14 gRPC Converse closed loop, unpaced mock, 64 connections" >&2
load --url "$mockgrpc" --mode grpc-unary --connections 64 >"$work/grpc64.json"
echo "9/14 gRPC ConverseStream and SSE on the unpaced mock, open loop at $rate req/s: time to first delta" >&2
load --url "$mockgrpc" --mode grpc-stream --connections 32 --rate "$rate" >"$work/grpcstream.json"
load --url "$mock/v1/chat/stream" --mode sse --connections 32 --rate "$rate" >"$work/sseopen.json"
echo "10/14 Lambda cold starts under the fake Runtime API" >&2
for f in authorizer ws http stream combine-results extract-text; do
  "$bin/lambda-coldstart" --function "$f" --binary "$bin/nagare-$f" --runs "${BENCH_COLD_RUNS:-20}" >"$work/cold-$f.json"
done
echo "11/14 cache hits, and the default config (memory records every chat), 64 connections" >&2
hits_token=$("$bin/nagare" token --sub bench --data-dir "$data/hits")
"$bin/nagare-load" --seconds "$seconds" --warmup "$warmup" --json --header "authorization: Bearer $hits_token" \
  --url "$hits/v1/chat" --connections 64 >"$work/hits.json"
defaults_token=$("$bin/nagare" token --sub bench --data-dir "$data/defaults")
"$bin/nagare-load" --seconds "$seconds" --warmup "$warmup" --json --header "authorization: Bearer $defaults_token" \
  --url "$defaults/v1/chat" --connections 64 >"$work/defaults.json"
echo "12/14 conversation memory on SQLite: history load + append, 50-exchange conversations" >&2
"$bin/memory-bench" --conversations "${BENCH_MEMORY_CONVERSATIONS:-200}" --rounds "${BENCH_MEMORY_ROUNDS:-10}" >"$work/memory.json"
kb_chunks=${BENCH_KB_CHUNKS:-100000}
echo "12/14 knowledge base: ingestion and retrieval over $kb_chunks passages, then chats with and without it" >&2
"$bin/kb-bench" --chunks "$kb_chunks" --queries "${BENCH_KB_QUERIES:-2000}" --database "$data/kb/nagare.db" >"$work/kb.json"
# kb-bench made the database; the gateway that serves it reads the secret this writes when it starts.
kb_token=$("$bin/nagare" token --sub bench --data-dir "$data/kb" --new-secret)
start kbgw "$work/kbgw.log" env $plain NAGARE__PROVIDER__MOCK__TTFT_MS=0 NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=0 \
  "$bin/nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data/kb"
# Words of kb-bench's generated corpus, none of them among its most common.
kb_question='What does rukamode mean for zubaruba and kokoka?'
for kb_case in plain grounded; do
  kb_ask=""
  [ "$kb_case" = grounded ] && kb_ask=',"knowledge_base":{"name":"bench"}'
  "$bin/nagare-load" --seconds "$seconds" --warmup "$warmup" --json --header "authorization: Bearer $kb_token" \
    --url "$kbgw/v1/chat" --connections 16 --body "{\"message\":\"$kb_question\"$kb_ask}" >"$work/kb-$kb_case.json"
done
echo "13/14 tasks through the embedded queue: submits, then completions while the backlog drains" >&2
tasks_token=$("$bin/nagare" token --sub bench --data-dir "$data/tasks")
"$bin/nagare-load" --seconds "$seconds" --warmup 0 --json --header "authorization: Bearer $tasks_token" \
  --url "$tasksgw/v1/tasks" --connections 16 --body '{"message":"summarize this document"}' >"$work/tasks.json"
# Completed tasks are chats on the `task` route: count them on /metrics over a few seconds.
python3 - "$tasksgw" "$seconds" >"$work/tasksdrain.json" <<'PY'
import json, sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
def done():
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith('nagare_chats_total{route="task"'))
a, t0 = done(), time.monotonic()
time.sleep(max(1.0, min(5.0, seconds)))
b, t1 = done(), time.monotonic()
json.dump({"completed_per_second": (b - a) / (t1 - t0), "completed": b}, sys.stdout)
PY
echo "14/14 criterion micro-benchmarks" >&2
crit="${CARGO_TARGET_DIR:-target}/criterion"
rm -rf "$crit"
crit_args=(-- --warm-up-time 1 --measurement-time "${BENCH_CRITERION_SECONDS:-3}")
[ "${BENCH_QUICK:-}" = 1 ] && crit_args=(-- --quick --warm-up-time 0.1 --measurement-time 0.1)
cargo bench --profile "$profile" --locked -p nagare-gateway --bench hot_paths "${crit_args[@]}" >&2
cargo bench --profile "$profile" --locked -p nagare-authorizer --bench verify "${crit_args[@]}" >&2
cargo bench --profile "$profile" --locked -p nagare-cache --bench key "${crit_args[@]}" >&2

mkdir -p "$(dirname "$out")"
python3 - "$work" "$out" "$seconds" "$rate" "$crit" "$streams" "$ws_ramp" <<'PY'
import glob, json, os, platform, subprocess, sys, datetime
work, out, seconds, rate, crit, streams, ws_ramp = sys.argv[1:8]
r = {n: json.load(open(os.path.join(work, n + ".json"))) for n in ["mock64", "mocksse", "direct", "via", "viasse", "hits", "defaults", "grpc64", "grpcstream", "sseopen"]}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
def lat(x, k): return x["latency_ms"][k]
# A short run may finish no stream inside its measured window: say so instead of failing.
def pct(p): return f"p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms (max {p['max']:.1f} ms)" if p else "n/a (no stream finished in the window)"
def errs(x): return sum(x["errors"].values())
lines = [
 "# Benchmark results", "", "Figures only; the tools and methods are in [benchmarks.md](benchmarks.md).", "",
 f"Generated by `tests/bench.sh` on {datetime.date.today()}: {os.cpu_count()} cores ({cpu}), {rustc}, release builds.",
 f"Each run: {seconds} s measured after a warm-up. The load generator (`nagare-load`) runs on the same cores as the",
 "servers, so absolute throughput is a lower bound. Overhead runs use an open loop at a fixed rate, with latency",
 "measured from each request's scheduled start (coordinated omission corrected). Requests through Nagare carry a",
 "dev-mode JWT, so the overhead includes verifying it; the direct calls to the fake need none. The load generator",
 "repeats one body, so the pipeline and overhead runs turn the response cache and memory off; the last two rows",
 "measure cache hits.", "",
 "| what | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |", "|---|---|---|---|---|---|---|",
]
rows = [("`/v1/chat`, unpaced mock, closed loop, 64 connections", "mock64"),
        ("`/v1/chat/stream` (SSE), unpaced mock, closed loop, 64 connections", "mocksse"),
        (f"fake Bedrock `converse-stream` direct, {rate} req/s", "direct"),
        (f"`/v1/chat` through Nagare to the fake Bedrock, {rate} req/s", "via"),
        (f"`/v1/chat/stream` through Nagare to the fake Bedrock, {rate} req/s", "viasse"),
        ("`/v1/chat` cache hits (memory off), closed loop, 64 connections", "hits"),
        ("`/v1/chat` cache hits with the default config (each chat recorded in SQLite), 64 connections", "defaults"),
        ("gRPC `ChatService.Converse`, unpaced mock, closed loop, 64 connections", "grpc64"),
        (f"gRPC `ChatService.ConverseStream`, unpaced mock, {rate} req/s", "grpcstream"),
        (f"`/v1/chat/stream` (SSE), unpaced mock, {rate} req/s", "sseopen")]
for name, k in rows:
    x = r[k]
    lines.append(f"| {name} | {x['requests_per_second']:.0f} | {lat(x,'p50'):.3f} | {lat(x,'p90'):.3f} | {lat(x,'p99'):.3f} | {lat(x,'p999'):.3f} | {errs(x)} |")
d, v = r["direct"], r["via"]
lines += ["", "Gateway overhead (through Nagare minus direct, same rate, same request, whole response):", "",
          "| percentile | direct ms | through Nagare ms | overhead ms |", "|---|---|---|---|"]
for p in ["p50", "p90", "p99", "p999"]:
    lines.append(f"| {p} | {lat(d,p):.3f} | {lat(v,p):.3f} | {lat(v,p)-lat(d,p):.3f} |")
# nagare_gateway_overhead_seconds{route="chat"} from the gateway's own /metrics after that run.
buckets, total, count = [], 0.0, 0
for line in open(os.path.join(work, "via-metrics.txt")):
    if not line.startswith("nagare_gateway_overhead_seconds") or 'route="chat"' not in line:
        continue
    value = float(line.rsplit(" ", 1)[1])
    if "_bucket" in line:
        buckets.append((float(line.split('le="', 1)[1].split('"', 1)[0]), value))
    elif "_sum" in line:
        total = value
    elif "_count" in line:
        count = int(value)
def bound(q):
    return next((le for le, n in buckets if n >= q * count), float("inf")) * 1000
if count:
    lines += ["", f"The gateway's own view of the same run (`nagare_gateway_overhead_seconds`, total minus the model call, per "
              f"request, {count} requests including the warm-up): mean {total / count * 1000:.3f} ms; p50 ≤ {bound(0.5):.3f} ms, "
              f"p99 ≤ {bound(0.99):.3f} ms (histogram bucket bounds)."]
s = r["viasse"].get("first_delta_ms")
if s:
    lines += ["", f"SSE through Nagare to the fake: time to first delta p50 {s['p50']:.3f} ms, p99 {s['p99']:.3f} ms."]
m = r["mocksse"].get("first_delta_ms")
if m:
    lines += [f"SSE on the unpaced mock, 64 connections: time to first delta p50 {m['p50']:.3f} ms, p99 {m['p99']:.3f} ms."]
g, o = r["grpcstream"].get("first_delta_ms"), r["sseopen"].get("first_delta_ms")
lines += ["", f"Time to first delta on the unpaced mock with `ttft_ms = 0` (the model takes no time, so this is all gateway and",
          f"client), open loop at {rate} req/s: gRPC `ConverseStream` {pct(g)}; SSE {pct(o)}."]
w = json.load(open(os.path.join(work, "wsrss.json")))
idle = json.load(open(os.path.join(work, "wsidle.json")))
ws = json.load(open(os.path.join(work, "wsstream.json")))
lock = json.load(open(os.path.join(work, "wslockstep.json")))
per = (w["after_kb"] - w["before_kb"]) / max(idle["requests"], 1)
lines += ["", "WebSocket (`/v1/ws`):", "",
          f"- {idle['requests']} idle connections held open: server RSS {w['before_kb']/1024:.1f} MB before, {w['after_kb']/1024:.1f} MB with them open, "
          f"**{per:.1f} KiB per connection** ({sum(idle['errors'].values())} failed to open).",
          f"- {ws['requests']} chats on {streams} concurrent connections (mock, 100 tokens at 50 tokens/s, so 2 s each; the "
          f"connections' first chats start spread over {ws_ramp} s), every delta counted against `usage.output_tokens` "
          f"({sum(ws['errors'].values())} errors): chat latency p50 {lat(ws,'p50'):.0f} ms, p99 {lat(ws,'p99'):.0f} ms; "
          f"first delta {pct(ws.get('first_delta_ms'))}; "
          f"each delta's lateness against the model's schedule, as the client read it, {pct(ws.get('delta_lateness_ms'))}; "
          f"**as it reached the client's socket (kernel receive time), {pct(ws.get('delta_socket_lateness_ms'))}**; in the same "
          f"window, a client thread sleeping 1 ms at a time woke late by {pct(ws.get('sleeper_lateness_ms'))}.",
          f"- The same with every chat starting within one token interval, so that all of them end and start again "
          f"together every 2 s ({sum(lock['errors'].values())} errors): lateness as read {pct(lock.get('delta_lateness_ms'))}; "
          f"at the socket {pct(lock.get('delta_socket_lateness_ms'))}."]
lines += ["", "Lambda binaries under the fake Lambda Runtime API (`lambda-coldstart`): time from exec to the first",
          "response posted, and peak RSS (VmHWM). The authorizer's first invocation includes fetching the JWKS from a",
          "local issuer; `nagare-ws` answers a `$connect`, storing the connection in a new SQLite database (no AWS here);",
          "`nagare-http` answers `POST /v1/chat` and `nagare-stream` streams `/v1/chat/stream` (unpaced mock, tasks off);",
          "`nagare-combine-results` combines two branch outputs; `nagare-extract-text` refuses an input naming no",
          "document (start-up and its S3 client, no read).", "",
          "| function | runs | cold start p50 ms | min ms | max ms | peak RSS MB |", "|---|---|---|---|---|---|"]
for f in ["authorizer", "ws", "http", "stream", "combine-results", "extract-text"]:
    c = json.load(open(os.path.join(work, f"cold-{f}.json")))
    cs = c["cold_start_ms"]
    lines.append(f"| nagare-{f} | {c['runs']} | {cs['p50']:.1f} | {cs['min']:.1f} | {cs['max']:.1f} | {c['peak_rss_mb']:.1f} |")
t, td = json.load(open(os.path.join(work, "tasks.json"))), json.load(open(os.path.join(work, "tasksdrain.json")))
lines += ["", "Tasks on the embedded SQLite queue (`POST /v1/tasks`, unpaced mock, 4 workers, cache and memory off): "
          f"**{t['requests_per_second']:.0f} submits/s** (16 connections, p99 {lat(t,'p99'):.2f} ms, {errs(t)} errors); then, with no "
          f"submits competing, **{td['completed_per_second']:.0f} tasks completed/s** while the backlog drained "
          f"({td['completed']:.0f} completed in all)."]
mem = json.load(open(os.path.join(work, "memory.json")))
mm = mem["micros"]
lines += ["", f"Conversation memory on SQLite (`memory-bench`): loading a {mem['exchanges']}-exchange conversation and appending",
          f"one exchange, {mem['samples']} samples: p50 {mm['p50']} µs, **p99 {mm['p99']} µs**, p99.9 {mm['p999']} µs, max {mm['max']} µs."]
kb = json.load(open(os.path.join(work, "kb.json")))
kr = kb["retrieve_micros"]
kp, kg = (json.load(open(os.path.join(work, f"kb-{c}.json"))) for c in ("plain", "grounded"))
lines += ["", f"Knowledge bases on SQLite (`kb-bench`): {kb['documents']:,} generated Markdown documents ({kb['bytes'] / 1e6:.1f} MB) "
          f"cut into {kb['passages']:,} passages, put as `PUT` puts them, at **{kb['ingest_mb_per_s']:.1f} MB/s** "
          f"({kb['passages_per_s']:,.0f} passages/s); then {kb['queries']:,} retrievals of {kb['results']} passages, one at a time: "
          f"p50 {kr['p50'] / 1000:.1f} ms, p90 {kr['p90'] / 1000:.1f} ms, **p99 {kr['p99'] / 1000:.1f} ms**, max {kr['max'] / 1000:.1f} ms.",
          f"`/v1/chat` on the unpaced mock, 16 connections, the same question: {kp['requests_per_second']:,.0f} req/s "
          f"(p50 {lat(kp,'p50'):.2f} ms) without a knowledge base, {kg['requests_per_second']:,.0f} req/s (p50 {lat(kg,'p50'):.2f} ms, "
          f"{errs(kg)} errors) answering from it."]
lines += ["", "Micro-benchmarks (criterion, median of the measured iterations; `cargo bench -p nagare-gateway` and",
          "`cargo bench -p nagare-authorizer`):", "", "| hot path | median | per second per core |", "|---|---|---|"]
for path in sorted(glob.glob(os.path.join(crit, "*", "new", "estimates.json"))):
    name = json.load(open(os.path.join(os.path.dirname(path), "benchmark.json")))["full_id"]
    ns = json.load(open(path))["median"]["point_estimate"]
    shown = f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"
    lines.append(f"| {name} | {shown} | {1e9 / ns:,.0f} |")
lines += ["", "Reproduce: `tests/bench.sh` (`BENCH_SECONDS`, `BENCH_RATE`, `BENCH_COLD_RUNS` to change the run length, rate and cold-start runs).", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY

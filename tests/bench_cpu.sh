#!/usr/bin/env bash
# The gateway's CPU per request, path by path, as ratios to its own HTTP floor (`GET /healthz`)
# measured in the same run, so that a noisy shared host cancels out. Writes docs/benchmark-cpu.md;
# how to read it, and how to profile any of these runs, is in docs/benchmarks.md.
#
# Each case: a warm-up run, then the measured run; the server's (and the fake Bedrock's) utime +
# stime from /proc over the measured run, divided by the requests it served. BENCH_RUNS rounds
# (default 3) run every case in turn, and the table gives each column's median over the rounds.
# BENCH_PERF=CASE (healthz, mock, mocksse, grpc, hit, bedrock, bedrocksse, image, via1, ws, openai,
# openaisse, anthropic, bedrockoa, via1oa) records the first
# round's measured run of that case with `perf record --call-graph dwarf` into target/perf-CASE.data;
# its CPU figure then includes perf's own cost.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${BENCH_SECONDS:-5}
warmup=${BENCH_WARMUP:-2}
runs=${BENCH_RUNS:-3}
conns=${BENCH_CONNECTIONS:-32}
streams=${BENCH_WS_STREAMS:-1000}
image_bytes=${BENCH_IMAGE_BYTES:-1048576}
uploaders=${BENCH_UPLOADERS:-4}
out=${BENCH_OUT:-docs/benchmark-cpu.md}
profile=${BENCH_PROFILE:-release}
cargo build --profile "$profile" --locked --bin nagare --bin nagare-load --bin fake-bedrock >&2
bin=target/$profile
[ "$profile" = dev ] && bin=target/debug
# BENCH_NAGARE=PATH measures another build of the gateway (e.g. the one before a change).
nagare=${BENCH_NAGARE:-$bin/nagare}

# shellcheck source=tests/bench_lib.sh
source tests/bench_lib.sh

data="$work/data"
token=$("$nagare" token --sub bench --data-dir "$data")
# Nothing but the path measured: no limits (one token sends everything), and the response cache
# and memory off except on the server that measures cache hits.
export NAGARE__RATE_LIMITS__REQUESTS_PER_MINUTE=0 NAGARE__RATE_LIMITS__TOKENS_PER_MINUTE=0
export NAGARE__WEBSOCKET__MAX_PER_PRINCIPAL=1000000 NAGARE__SERVER__MAX_CONNECTIONS=1000000
export NAGARE__MEMORY__ENABLED=false
unpaced="NAGARE__PROVIDER__MOCK__TTFT_MS=0 NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=0"
serve=("$nagare" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data")
start fake "$work/fake.log" "$bin/fake-bedrock"
fake_pid=${pids[-1]}
start mock "$work/mock.log" env NAGARE__CACHE__ENABLED=false $unpaced "${serve[@]}"
mock_pid=${pids[-1]}
grpc_url mockgrpc "$work/mock.log"
on_fake "$fake"
start gw "$work/gw.log" env NAGARE__CACHE__ENABLED=false "${fake_env[@]}" "${serve[@]}" --provider bedrock
gw_pid=${pids[-1]}
start hits "$work/hits.log" env $unpaced "${serve[@]}"
hits_pid=${pids[-1]}
# WebSocket chats at 50 tokens/s, as in tests/bench.sh.
start wsgw "$work/wsgw.log" env NAGARE__CACHE__ENABLED=false NAGARE__PROVIDER__MOCK__TTFT_MS=20 \
  NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND=50 "${serve[@]}"
ws_pid=${pids[-1]}

load() { "$bin/nagare-load" --header "authorization: Bearer $token" --json "$@"; }
# measure NAME RUN SERVER_PID LOAD_ARGS...: warm up, then the measured run; records the report and
# the ticks the server and the fake spent during it.
measure() {
  local name=$1 run=$2 pid=$3; shift 3
  load --seconds "$warmup" --warmup 0 "$@" >/dev/null
  local s0 f0
  profile_start "$name" "$run" "$pid"
  s0=$(ticks "$pid") f0=$(ticks "$fake_pid")
  load --seconds "$seconds" --warmup 0 "$@" >"$work/$name-$run.json"
  echo "$(( $(ticks "$pid") - s0 )) $(( $(ticks "$fake_pid") - f0 ))" >"$work/$name-$run.cpu"
  profile_stop
}
# profile_start NAME RUN PID: with BENCH_PERF=NAME, records PID in the first round; profile_stop ends it.
perf=
profile_start() {
  [ "${BENCH_PERF:-}" = "$1" ] && [ "$2" = 1 ] || return 0
  perf record -q -F "${BENCH_PERF_HZ:-999}" --call-graph dwarf,32768 -p "$3" -o "target/perf-$1.data" 2>"$work/perf.log" &
  perf=$!
  sleep 1
}
profile_stop() {
  [ -n "$perf" ] || return 0
  kill -INT "$perf"; wait "$perf" || true; perf=
  echo "profile: target/perf-$BENCH_PERF.data" >&2
}
direct_body='{"messages":[{"role":"user","content":[{"text":"hello"}]}]}'
# The same chat with one image (a PNG of BENCH_IMAGE_BYTES), uploaded once before the rounds.
image_id=$(python3 tests/upload_load.py once "$gw" "$token" "$image_bytes")
image_body='{"content":[{"type":"text","text":"hello"},{"type":"image","source":{"upload_id":"'$image_id'"}}]}'
# measure_uploads RUN: BENCH_UPLOADERS clients declaring and PUTting new PNGs of that size to the
# unpaced-mock server (files under its data dir) for the measured run.
measure_uploads() {
  local u0
  u0=$(ticks "$mock_pid")
  python3 tests/upload_load.py load "$mock" "$token" "$image_bytes" "$seconds" "$uploaders" >"$work/upload-$1.json"
  echo "$(( $(ticks "$mock_pid") - u0 )) 0" >"$work/upload-$1.cpu"
}
ws_body='{"message":"hi","model":"mock.long","inference":{"max_tokens":100}}'
# The dialects, asking what `{"message":"hello"}` asks on /v1/chat.
openai_body='{"messages":[{"role":"user","content":"hello"}]}'
openai_stream='{"messages":[{"role":"user","content":"hello"}],"stream":true}'
for run in $(seq 1 "$runs"); do
  echo "round $run/$runs" >&2
  measure healthz "$run" "$mock_pid" --url "$mock/healthz" --mode get --connections "$conns"
  measure mock "$run" "$mock_pid" --url "$mock/v1/chat" --connections "$conns"
  measure mocksse "$run" "$mock_pid" --url "$mock/v1/chat/stream" --mode sse --connections "$conns"
  measure grpc "$run" "$mock_pid" --url "$mockgrpc" --mode grpc-unary --connections "$conns"
  measure hit "$run" "$hits_pid" --url "$hits/v1/chat" --connections "$conns"
  measure bedrock "$run" "$gw_pid" --url "$gw/v1/chat" --connections "$conns"
  measure bedrocksse "$run" "$gw_pid" --url "$gw/v1/chat/stream" --mode sse --connections "$conns"
  measure image "$run" "$gw_pid" --url "$gw/v1/chat" --body "$image_body" --connections "$conns"
  measure openai "$run" "$mock_pid" --url "$mock/v1/chat/completions" --body "$openai_body" --connections "$conns"
  # Unary mode reads the streamed body to its end (data: [DONE]).
  measure openaisse "$run" "$mock_pid" --url "$mock/v1/chat/completions" --body "$openai_stream" --connections "$conns"
  measure anthropic "$run" "$mock_pid" --url "$mock/v1/messages" --body "$openai_body" --connections "$conns"
  measure bedrockoa "$run" "$gw_pid" --url "$gw/v1/chat/completions" --body "$openai_body" --connections "$conns"
  measure_uploads "$run"
  # One connection, one request at a time: latency through the gateway minus straight to the fake.
  measure direct1 "$run" "$fake_pid" --url "$fake/model/bench.model/converse-stream" --body "$direct_body" --connections 1
  measure via1 "$run" "$gw_pid" --url "$gw/v1/chat" --connections 1
  measure via1oa "$run" "$gw_pid" --url "$gw/v1/chat/completions" --body "$openai_body" --connections 1
  # WebSocket: the whole run (handshakes and chat starts included) over every delta read. The
  # chats start spread over one chat's length (2 s), like independent users'.
  profile_start ws "$run" "$ws_pid"
  w0=$(ticks "$ws_pid")
  load --url "ws://${wsgw#http://}/v1/ws" --mode ws --connections "$streams" --delta-interval-ms 20 \
    --ramp-seconds 2 --seconds "$seconds" --warmup "$(awk "BEGIN { print $warmup + 2 }")" --body "$ws_body" \
    >"$work/ws-$run.json"
  echo "$(( $(ticks "$ws_pid") - w0 )) 0" >"$work/ws-$run.cpu"
  profile_stop
done

mkdir -p "$(dirname "$out")"
python3 - "$work" "$out" "$runs" "$(getconf CLK_TCK)" "$seconds" "$conns" "$streams" "$image_bytes" "$uploaders" <<'PY'
import datetime, json, os, platform, statistics, subprocess, sys
work, out, runs, hz, seconds, conns, streams = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:8]
image_bytes, uploaders = int(sys.argv[8]), int(sys.argv[9])
def load(name, run):
    report = json.load(open(f"{work}/{name}-{run}.json"))
    server, fake = (int(t) for t in open(f"{work}/{name}-{run}.cpu").read().split())
    return report, server / hz * 1e6, fake / hz * 1e6
def per_request(name, run):
    report, server, fake = load(name, run)
    n = max(report["requests"], 1)
    return {"server": server / n, "fake": fake / n, "rps": report["requests_per_second"],
            "p50": report["latency_ms"]["p50"], "errors": sum(report["errors"].values())}
rows = [("healthz", "`GET /healthz` (the HTTP floor)", False),
        ("mock", "`/v1/chat`, unpaced mock", False),
        ("mocksse", "`/v1/chat/stream` (SSE), unpaced mock", False),
        ("grpc", "gRPC `Converse`, unpaced mock", False),
        ("hit", "`/v1/chat`, a cache hit", False),
        ("bedrock", "`/v1/chat`, `bedrock` provider to the fake", True),
        ("bedrocksse", "`/v1/chat/stream`, `bedrock` provider to the fake", True),
        ("image", f"`/v1/chat` with one {image_bytes / 2**20:.1f} MiB image, `bedrock` provider to the fake", True),
        ("openai", "`/v1/chat/completions` (OpenAI), unpaced mock", False),
        ("openaisse", "`/v1/chat/completions`, streamed, unpaced mock", False),
        ("anthropic", "`/v1/messages` (Anthropic), unpaced mock", False),
        ("bedrockoa", "`/v1/chat/completions`, `bedrock` provider to the fake", True)]
per = {name: [per_request(name, r) for r in range(1, runs + 1)] for name, _, _ in rows}
med = lambda xs: statistics.median(xs)
floor = [x["server"] for x in per["healthz"]]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
lines = ["# CPU per request", "",
         "Generated by `tests/bench_cpu.sh`; how to read it, and how to profile any row, is in",
         "[benchmarks.md](benchmarks.md#cpu-per-request).", "",
         f"{datetime.date.today()}: {os.cpu_count()} cores ({cpu}), "
         f"{subprocess.run(['rustc', '--version'], capture_output=True, text=True).stdout.strip()}. "
         f"{runs} rounds of {seconds} s per case, closed loop, {conns} connections; medians over the rounds. "
         "The ratio is taken within each round, then its median.", "",
         "| path | gateway CPU µs/request | × `/healthz` | fake Bedrock CPU µs/request | requests/s | errors |",
         "|---|---:|---:|---:|---:|---:|"]
for name, label, fake in rows:
    xs = per[name]
    ratio = med([x["server"] / max(f, 1e-9) for x, f in zip(xs, floor)])
    fake_cpu = f"{med([x['fake'] for x in xs]):.1f}" if fake else ""
    lines.append(f"| {label} | {med([x['server'] for x in xs]):.1f} | {ratio:.2f} | {fake_cpu} "
                 f"| {med([x['rps'] for x in xs]):.0f} | {sum(x['errors'] for x in xs)} |")
ws = []
for r in range(1, runs + 1):
    report, server, _ = load("ws", r)
    ws.append((server / max(report["deltas_received"], 1), report["deltas_received"], sum(report["errors"].values())))
lines.append(f"| one WebSocket delta, {streams} concurrent chats at 50 tokens/s | {med([w[0] for w in ws]):.1f} "
             f"| {med([w[0] / max(f, 1e-9) for w, f in zip(ws, floor)]):.2f} |  | {med([w[1] for w in ws]):.0f} deltas "
             f"| {sum(w[2] for w in ws)} |")
via = [per_request("via1", r) for r in range(1, runs + 1)]
via_oa = [per_request("via1oa", r) for r in range(1, runs + 1)]
direct = [per_request("direct1", r) for r in range(1, runs + 1)]
over = [v["p50"] - d["p50"] for v, d in zip(via, direct)]
added = med([i["server"] - b["server"] for i, b in zip(per["image"], per["bedrock"])])
uploads = []
for r in range(1, runs + 1):
    report = json.load(open(f"{work}/upload-{r}.json"))
    ticks = int(open(f"{work}/upload-{r}.cpu").read().split()[0])
    mib = report["bytes"] / 2**20
    uploads.append((mib / max(report["seconds"], 1e-9), ticks / hz * 1e3 / max(mib, 1e-9), report["errors"]))
lines += ["", f"One image adds **{added:.1f} µs** of gateway CPU to a chat through the `bedrock` provider (the image row "
          "minus the text row above it, taken within each round): reading the blob, writing it into the request's JSON as base64, and SigV4 hashing that body.",
          "", f"Uploads to the filesystem store: **{med([u[0] for u in uploads]):.1f} MiB/s** "
          f"({uploaders} clients declaring and PUTting new {image_bytes / 2**20:.1f} MiB PNGs, the clients on the same "
          f"cores), the gateway spending {med([u[1] for u in uploads]):.1f} ms of CPU per MiB "
          "(SHA-256, the format check, the write)."]
lines += ["", f"Overhead at one connection (`/v1/chat` through the gateway to the fake, minus straight to the fake, "
          f"p50): **{med(over):.3f} ms** (straight to the fake p50 {med([d['p50'] for d in direct]):.3f} ms; "
          f"the gateway's CPU at one connection {med([v['server'] for v in via]):.1f} µs/request); "
          f"through `/v1/chat/completions`: **{med([v['p50'] - d['p50'] for v, d in zip(via_oa, direct)]):.3f} ms** "
          f"({med([v['server'] for v in via_oa]):.1f} µs/request).", ""]
dialect = lambda a, b: med([x["server"] - y["server"] for x, y in zip(per[a], per[b])])
lines += [f"The dialects against `/v1/chat` on the same server, per request (differences taken within each round): "
          f"`/v1/chat/completions` **{dialect('openai', 'mock'):+.1f} µs** on the mock and "
          f"**{dialect('bedrockoa', 'bedrock'):+.1f} µs** to the fake Bedrock, streamed "
          f"{dialect('openaisse', 'mocksse'):+.1f} µs against `/v1/chat/stream`; `/v1/messages` "
          f"{dialect('anthropic', 'mock'):+.1f} µs.", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
# CPU spent on failed requests says nothing about the path: a run with errors fails.
failed = sum(x["errors"] for xs in per.values() for x in xs) + sum(w[2] for w in ws) \
    + sum(x["errors"] for x in via + via_oa + direct) + sum(u[2] for u in uploads)
if failed:
    sys.exit(f"{failed} requests failed; see the errors column")
PY

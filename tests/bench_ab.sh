#!/usr/bin/env bash
# A/B overhead of two `nagare` binaries: the same /v1/chat request at the same open-loop rate,
# through each to the fake Bedrock, in ABBA order over ROUNDS rounds, each round beside a direct
# run to the fake; also the gateway process's CPU per request (from /proc, its warm-up included).
# Use it to check that a change costs nothing measurable, e.g.:
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release --bin nagare)
#   tests/bench_ab.sh /tmp/base/target/release/nagare target/release/nagare
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: $0 BINARY_A BINARY_B" >&2; exit 2; }
a=$1 b=$2
rounds=${ROUNDS:-4} seconds=${BENCH_SECONDS:-10} rate=${BENCH_RATE:-1000}
cargo build --release --locked --bin nagare-load --bin fake-bedrock >&2
# shellcheck source=tests/bench_lib.sh
source tests/bench_lib.sh
start fake "$work/fake.log" target/release/fake-bedrock
token=$("$b" token --sub bench --data-dir "$work/data")
# Nothing but the pipeline: no cache, no memory, no limits (one token sends everything).
export NAGARE__RATE_LIMITS__REQUESTS_PER_MINUTE=0 NAGARE__RATE_LIMITS__TOKENS_PER_MINUTE=0
export NAGARE__CACHE__ENABLED=false NAGARE__MEMORY__ENABLED=false
on_fake "$fake"
export "${fake_env[@]}"
hz=$(getconf CLK_TCK)
load() { target/release/nagare-load --seconds "$seconds" --warmup 2 --json --connections 32 --rate "$rate" "$@"; }
for round in $(seq 1 "$rounds"); do
  load --url "$fake/model/bench.model/converse-stream" \
    --body '{"messages":[{"role":"user","content":[{"text":"hello"}]}]}' >"$work/direct-$round.json"
  order="a b"; [ $((round % 2)) = 0 ] && order="b a"
  for v in $order; do
    bin=$a; [ "$v" = b ] && bin=$b
    start gw "$work/gw.log" "$bin" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$work/data" --provider bedrock
    before=$(ticks "${pids[-1]}")
    load --url "$gw/v1/chat" --header "authorization: Bearer $token" >"$work/$v-$round.json"
    echo $(( $(ticks "${pids[-1]}") - before )) >"$work/$v-$round.cpu"
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  done
done
python3 - "$work" "$rounds" "$hz" "$seconds" <<'PY'
import json, statistics, sys
work, rounds, hz, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print("overhead = through Nagare minus direct, same round; ms. CPU = the gateway's, per request, µs")
print("| round | A p50 | B p50 | A p99 | B p99 | A CPU | B CPU |")
print("|---|---|---|---|---|---|---|")
over = {"a": {"p50": [], "p99": [], "cpu": []}, "b": {"p50": [], "p99": [], "cpu": []}}
for r in range(1, rounds + 1):
    d = json.load(open(f"{work}/direct-{r}.json"))["latency_ms"]
    row = {}
    for v in "ab":
        x = json.load(open(f"{work}/{v}-{r}.json"))
        assert not x["errors"], x["errors"]
        for p in ("p50", "p99"):
            row[v, p] = x["latency_ms"][p] - d[p]
            over[v][p].append(row[v, p])
        # The CPU covers the 2 s warm-up too: spread it over the requests of both.
        ticks = int(open(f"{work}/{v}-{r}.cpu").read())
        served = x["requests"] * (seconds + 2) / seconds
        row[v, "cpu"] = ticks / hz * 1e6 / max(served, 1)
        over[v]["cpu"].append(row[v, "cpu"])
    print(f"| {r} | {row['a','p50']:.3f} | {row['b','p50']:.3f} | {row['a','p99']:.3f} | {row['b','p99']:.3f} "
          f"| {row['a','cpu']:.0f} | {row['b','cpu']:.0f} |")
m = lambda v, p: statistics.median(over[v][p])
print(f"| median | {m('a','p50'):.3f} | {m('b','p50'):.3f} | {m('a','p99'):.3f} | {m('b','p99'):.3f} "
      f"| {m('a','cpu'):.0f} | {m('b','cpu'):.0f} |")
PY

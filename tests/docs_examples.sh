#!/usr/bin/env bash
# Runs the shell examples of README.md and docs/*.md as written, against a fresh `nagare serve` with
# its defaults (http://127.0.0.1:8080, gRPC on 127.0.0.1:50051, ./data in a scratch directory that
# is also the examples' working directory). Every ```sh block of a page runs, in order, in one bash
# session, as a reader following the page would. In a ```sh block curl's HTTP errors fail the
# example; a ```sh expect-errors block shows error answers on purpose. Blocks tagged otherwise are
# not run: ```sh-aws needs a deployed stack, ```sh-notrun says why beside it.
# `nagare` is the binary under test (target/debug by default); `cargo run --release --bin nagare --`
# in an example runs that binary too, so that the check needs no release build.
# Usage: tests/docs_examples.sh [BIN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${1:-target/debug}
[ -x "$bin/nagare" ] || { echo "$bin/nagare is missing: cargo build --bin nagare" >&2; exit 1; }
bin=$(cd "$bin" && pwd)
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (Debian: apt-get install $tool)" >&2; exit 1; }
done
for port in 8080 50051; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken: the examples talk to a fresh nagare serve there; stop what listens on it" >&2
    exit 1
  fi
done

work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/run" "$work/pages"
ln -s "$root/proto" "$work/run/proto"
(cd "$work/run" && exec "$bin/nagare" serve) >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
  grep -q "listening on grpc://" "$work/serve.log" && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; echo "nagare serve did not start" >&2; exit 1; }
  sleep 0.1
done

# One script per page: a preamble, then each ```sh block with its curl rule.
python3 - "$work/pages" README.md docs/*.md <<'PY'
import os, re, sys
out, pages = sys.argv[1], sys.argv[2:]
preamble = r'''set -euo pipefail
cargo() {
  if [ "${1:-} ${2:-} ${3:-} ${4:-} ${5:-}" = "run --release --bin nagare --" ]; then shift 5; nagare "$@"
  else command cargo "$@"; fi
}
strict() { curl() { command curl --fail-with-body "$@"; }; }
lenient() { unset -f curl; }
export TOKEN=${TOKEN:-$(nagare token --sub alice)}
'''
for page in pages:
    text = open(page).read()
    blocks = re.findall(r"^```(sh(?: expect-errors)?)\n(.*?)^```", text, re.S | re.M)
    if not blocks:
        continue
    script = [preamble]
    for i, (tag, body) in enumerate(blocks, 1):
        script.append("lenient" if tag.endswith("expect-errors") else "strict")
        script.append(f"echo '== {page} example {i}'")
        script.append(body)
    name = page.replace("/", "_").replace(".md", ".sh")
    open(os.path.join(out, name), "w").write("\n".join(script))
    print(f"{page}: {len(blocks)} examples", file=sys.stderr)
PY

failed=0 ran=0
for page in "$work"/pages/*.sh; do
  ran=$((ran + 1))
  if ! (cd "$work/run" && PATH="$bin:$root/tests/.venv/bin:$PATH" bash "$page") >"$page.log" 2>&1; then
    failed=$((failed + 1))
    echo "FAILED: the examples of $(basename "$page" .sh) (the last one run is named below):" >&2
    tail -n 30 "$page.log" >&2
    echo >&2
  fi
done
if [ "$failed" != 0 ]; then
  echo "docs examples: $failed of $ran pages failed; the server's log:" >&2
  tail -n 20 "$work/serve.log" >&2
  exit 1
fi
echo "docs examples: every example of $ran pages ran as written"

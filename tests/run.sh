#!/usr/bin/env bash
# Installs what cargo does not, then runs every check and test of the workspace.
# Idempotent: a second run installs nothing. Usage: tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# Python tools the tests start as servers (moto's DynamoDB/SQS server), in a venv of their own.
venv=tests/.venv
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/requirements.txt "$stamp"; then
  say "installing Python test servers into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$stamp"
fi
"$venv/bin/moto_server" --help >/dev/null || {
  echo "moto_server does not run; delete $venv and run tests/run.sh again" >&2
  exit 1
}
export PATH="$PWD/$venv/bin:$PATH"

# Installs the Debian package PACKAGE unless COMMAND is on the PATH (apt-get as root, else sudo).
apt_install() {
  local command=$1 package=$2
  command -v "$command" >/dev/null && return 0
  say "installing $package"
  local apt_get="apt-get"; [ "$(id -u)" = 0 ] || apt_get="sudo apt-get"
  $apt_get install -y --no-install-recommends "$package" >/dev/null \
    || { $apt_get update >/dev/null && $apt_get install -y --no-install-recommends "$package" >/dev/null; } \
    || { echo "could not install $package; install it (Debian: apt-get install $package)" >&2; exit 1; }
}
# redis-server for the Redis tier of the response cache; curl and jq for the docs' examples
# (tests/docs_examples.sh); openssl makes the certificate of the wss:// test.
apt_install redis-server redis-server
apt_install curl curl
apt_install jq jq
apt_install openssl openssl
# Debian's Chromium, which the browser app's tests drive through playwright-core (tests/js/web_app.mjs).
apt_install chromium chromium

# asl-validator (npm) for the Step Functions definitions in deploy/statemachines/, the Vercel AI
# SDK, which drives the OpenAI dialect (tests/js/vercel_chat.mjs), and playwright-core, which drives
# Chromium through the browser app (it never downloads a browser of its own).
apt_install node nodejs
apt_install npm npm
node_stamp=tests/node_modules/.lock-stamp
if [ ! -x tests/node_modules/.bin/asl-validator ] || ! cmp -s tests/package-lock.json "$node_stamp"; then
  say "installing Node test tools into tests/node_modules"
  npm ci --prefix tests --no-audit --no-fund --loglevel=error
  cp tests/package-lock.json "$node_stamp"
fi

for tool in "cargo fmt" "cargo clippy"; do
  $tool --version >/dev/null 2>&1 || { echo "$tool is missing: rustup component add ${tool#cargo }" >&2; exit 1; }
done

say "cfn-lint and asl-validator on deploy/"
cfn-lint deploy/template.yaml
for asl in deploy/statemachines/*.asl.json; do
  tests/node_modules/.bin/asl-validator --silent --json-path "$asl" \
    || { echo "$asl is not a valid state machine (tests/node_modules/.bin/asl-validator --json-path $asl)" >&2; exit 1; }
done

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "the docs' shell examples, against a fresh nagare serve"
cargo build --locked --bin nagare
tests/docs_examples.sh target/debug

say "cargo test"
cargo test --workspace --locked "$@"

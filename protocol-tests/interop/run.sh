#!/usr/bin/env bash
# Client interop suite for tusk: tus-js-client (Node), tuspy (Python), Uppy (headless Chromium).
# Usage: bash protocol-tests/interop/run.sh     (from the repository root, or from anywhere)
# Env:   TUSK_BIN      use this server binary instead of building target/debug/tusk
#        CHROMIUM_BIN  browser binary (default /usr/bin/chromium, from Debian's chromium package)
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$HERE"
T_START=$(date +%s)

header() { printf '\n==== %s ====\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- installs (idempotent)
header "install: chromium"
CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ -x "$CHROMIUM_BIN" ]; then
  echo "present: $CHROMIUM_BIN"
else
  echo "$CHROMIUM_BIN missing: apt-get install -y chromium"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 900 apt-get install -y chromium; then
    timeout 300 apt-get update && timeout 900 apt-get install -y chromium
  fi
  [ -x "$CHROMIUM_BIN" ] || die "chromium could not be installed ($CHROMIUM_BIN still missing); the Uppy part needs Debian's chromium package"
fi
"$CHROMIUM_BIN" --version 2>/dev/null | grep -i chromium || die "$CHROMIUM_BIN does not run"
export CHROMIUM_BIN

header "install: npm ci"
command -v node >/dev/null || die "node is not installed"
LOCK_HASH=$(hash_of package-lock.json)
if [ -f node_modules/.interop-lock-hash ] && [ "$(cat node_modules/.interop-lock-hash)" = "$LOCK_HASH" ]; then
  echo "node_modules up to date with package-lock.json"
else
  timeout 600 npm ci --no-audit --no-fund || die "npm ci failed"
  echo "$LOCK_HASH" > node_modules/.interop-lock-hash
fi

header "install: python venv (.venv)"
REQ_HASH=$(hash_of requirements.txt)
if [ -x .venv/bin/python ] && [ -f .venv/.interop-req-hash ] && [ "$(cat .venv/.interop-req-hash)" = "$REQ_HASH" ]; then
  echo ".venv up to date with requirements.txt"
else
  rm -rf .venv
  python3 -m venv .venv || die "python3 -m venv failed"
  timeout 600 .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt || die "pip install failed"
  echo "$REQ_HASH" > .venv/.interop-req-hash
fi
.venv/bin/python -c 'import importlib.metadata as m; print("tuspy", m.version("tuspy"))' || die "tuspy is not importable"

header "tusk binary"
if [ -n "${TUSK_BIN:-}" ]; then
  echo "TUSK_BIN=$TUSK_BIN"
else
  (cd "$ROOT" && timeout 900 cargo build -p tusk --bin tusk) || die "cargo build -p tusk --bin tusk failed"
  TUSK_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tusk"
fi
[ -x "$TUSK_BIN" ] || die "no tusk binary at $TUSK_BIN"

# ---------------------------------------------------------------- start tusk
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tusk-interop.XXXXXX")
TUSK_PID=""
cleanup() {
  if [ -n "$TUSK_PID" ] && kill -0 "$TUSK_PID" 2>/dev/null; then
    kill -TERM "$TUSK_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$TUSK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TUSK_PID" 2>/dev/null
    wait "$TUSK_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

header "start tusk"
mkdir -p "$WORK/data"
TUSK_DEMO__ENABLED=true "$TUSK_BIN" --host 127.0.0.1 --port 0 --data-dir "$WORK/data" >"$WORK/tusk.out" 2>"$WORK/tusk.err" &
TUSK_PID=$!
TUSK_URL=""
for _ in $(seq 1 300); do
  TUSK_URL=$(sed -n 's/^tusk listening on \(http[^ ]*\).*/\1/p' "$WORK/tusk.out" | head -n1)
  [ -n "$TUSK_URL" ] && break
  kill -0 "$TUSK_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$TUSK_URL" ]; then
  echo "--- tusk stderr"; cat "$WORK/tusk.err"
  die "tusk did not print its 'listening on' line within 30 s"
fi
echo "tusk pid $TUSK_PID at $TUSK_URL ($("$TUSK_BIN" --version 2>/dev/null || echo "$TUSK_BIN"))"
export TUSK_URL

# ---------------------------------------------------------------- parts
declare -a RESULTS=()
FAILED=0
part() { # part NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  header "$name"
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    RESULTS+=("PASS  $name (${dt}s)")
  else
    [ $rc -eq 124 ] && echo "  $name: timed out after ${limit}s"
    RESULTS+=("FAIL  $name (exit $rc, ${dt}s)")
    FAILED=1
  fi
  if ! kill -0 "$TUSK_PID" 2>/dev/null; then
    echo "--- tusk exited during $name; its stderr:"; tail -n 50 "$WORK/tusk.err"
    RESULTS+=("FAIL  tusk died during $name")
    FAILED=1
    exit 1
  fi
}

part "tus-js-client (Node)" 300 node node/tus-js-client.mjs
part "tuspy (Python)" 300 .venv/bin/python python/test_tuspy.py
part "Uppy (headless Chromium)" 300 node browser/uppy.mjs
part "demo page /demo/ (headless Chromium)" 300 node demo.mjs

# ---------------------------------------------------------------- summary
if grep -qiE ' (ERROR|panicked)' "$WORK/tusk.err"; then
  echo; echo "--- tusk logged errors:"; grep -iE ' (ERROR|panicked)' "$WORK/tusk.err" | tail -n 20
fi
header "summary ($(( $(date +%s) - T_START ))s)"
printf '%s\n' "${RESULTS[@]}"
if [ $FAILED -ne 0 ]; then
  echo "interop: FAILED"
  exit 1
fi
echo "interop: all parts passed"

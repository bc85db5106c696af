#!/usr/bin/env bash
# The README's second command: installs what is missing, then runs every check and test:
# formatting, clippy (native and wasm32), the Rust unit and integration tests, a short fuzzing and
# benchmark pass (the benchmark fails on a ratio below its floor), a release build of
# the demo, and the browser end-to-end tests (Playwright driving Chromium, with and without
# JavaScript) against that build on a fresh SQLite database.
#
# Environment: E2E_PORT (default: a free port), E2E_WORKERS (Playwright workers, default 2).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
source scripts/env.sh

# Each step's wall time, for the summary (docs/development.md keeps the figures).
timings=()
step_name=""
step_started=$SECONDS
step_done() {
  if [ -n "$step_name" ]; then timings+=("$(printf '%5d s  %s' "$((SECONDS - step_started))" "$step_name")"); fi
  step_name="" step_started=$SECONDS
}
step() {
  step_done
  step_name="${1%% (*}" step_started=$SECONDS
  printf '\n\033[1;34m[test]\033[0m %s\n' "$*"
}
started=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/sssync-test.XXXXXX")"
server_pid=""
csr_pid=""
tools_pid=""
release_pid=""
cleanup() {
  # The background installs and builds run in process groups of their own (setsid): stop them.
  if [ -n "$tools_pid" ]; then kill -- -"$tools_pid" 2>/dev/null || true; fi
  if [ -n "$release_pid" ]; then kill -- -"$release_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if [ -n "$csr_pid" ]; then kill "$csr_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step "installing what is missing (scripts/setup.sh --tests: what the lints need now, the rest in the background)"
bash scripts/setup.sh --tests --for-lints
# cargo-leptos, wasm-bindgen and Trunk compile for minutes on a fresh machine, Chromium downloads;
# no step needs them before the browser bundles, so they install beside the lints, the tests and
# the server build (when all is present, this takes a second).
# (Its exit status lands in tools.rc, for the release builds, which wait for it.)
setsid bash -c 'bash scripts/setup.sh --tests --after-lints; echo $? >"$1/tools.rc"' _ "$work" \
  >"$work/tools.log" 2>&1 &
tools_pid=$!

# The release builds (the servers, the benchmark, the browser bundles) start now, beside the lints,
# the Rust tests and the fuzzing: the tests leave half the machine idle (they wait on databases
# and sockets), the builds use it, and the release side is the longest path to the browser
# tests. They build in a target directory of their own, so that two cargo commands do not wait
# for each other's lock; every step after them uses it.
release_target="$SSSYNC_HOME/target-release"
release_builds() {
  export CARGO_TARGET_DIR="$release_target"
  local t=$SECONDS
  # The servers and the benchmark in one cargo invocation: one feature set, so their common
  # dependencies (all of them: serde's features differ between the apps alone) build once, not
  # four times. LEPTOS_OUTPUT_NAME as cargo-leptos sets it (leptos reads it at compile time).
  LEPTOS_OUTPUT_NAME=app cargo build --release -p demo-app -p chat-app -p sssync-starter -p todomvc-plain \
    -p sssync-bench --features demo-app/ssr,chat-app/ssr,sssync-starter/ssr,todomvc-plain/ssr
  echo "[test] the servers and the benchmark built in $((SECONDS - t)) s"
  # The browser bundles need cargo-leptos, wasm-bindgen and wasm-opt (installing since the start;
  # an hour at most).
  t=$SECONDS
  while [ ! -s "$work/tools.rc" ] && [ $((SECONDS - t)) -lt 3600 ]; do sleep 1; done
  grep -E '\[setup\]|error' "$work/tools.log" || true
  if [ "$(cat "$work/tools.rc" 2>/dev/null)" != 0 ]; then
    tail -n 40 "$work/tools.log"
    echo "[test] installing the tools or Chromium failed" >&2
    return 1
  fi
  echo "[test] waited $((SECONDS - t)) s for the tools"
  t=$SECONDS
  cargo leptos build --release --frontend-only
  echo "[test] the browser bundles built in $((SECONDS - t)) s"
}
setsid bash -c "set -euo pipefail; $(declare -f release_builds); work=$(printf %q "$work"); release_target=$(printf %q "$release_target"); release_builds" \
  >"$work/release.log" 2>&1 &
release_pid=$!

# PostgreSQL: the tests that need it run when it answers (and must, in CI).
pg_admin="${SSSYNC_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export SSSYNC_TEST_PG="${SSSYNC_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}"
if psql "$SSSYNC_TEST_PG" -q -t -c 'SELECT 1' >/dev/null 2>&1; then
  pg_status="PostgreSQL at ${SSSYNC_TEST_PG}: its tests ran"
  export E2E_PG_URL="$pg_admin"
elif [ -n "${CI:-}" ]; then
  echo "[test] PostgreSQL does not answer at $SSSYNC_TEST_PG, and CI needs it" >&2
  exit 1
else
  pg_status="PostgreSQL does not answer at ${SSSYNC_TEST_PG}: its tests were SKIPPED"
  printf '\033[1;33m[test]\033[0m %s\n' "$pg_status"
fi

# Native builds: the demo's server, the engine's server and native client (their tests need them).
native_features="demo-app/ssr,chat-app/ssr,sssync-starter/ssr,todomvc-plain/ssr,sssync-core/server,sssync-core/native-client"

step "formatting (cargo fmt --check), the layout (scripts/check-layout.py: no import circles, no file over 650 lines of code) and the guide (scripts/guide-files.py --check: its code is the files it comes from)"
cargo fmt --all -- --check
python3 scripts/check-layout.py
python3 scripts/guide-files.py --check

step "lints, native (cargo clippy)"
cargo clippy --workspace --all-targets --features "$native_features" -- -D warnings

step "lints, wasm32 (cargo clippy: the hydrate build, then the client-only build)"
cargo clippy --workspace --exclude sssync-fault --exclude sssync-bench --all-targets --target wasm32-unknown-unknown \
  --features demo-app/hydrate,chat-app/hydrate,sssync-starter/hydrate,todomvc-plain/hydrate -- -D warnings
cargo clippy -p demo-app -p sssync-leptos --all-targets --target wasm32-unknown-unknown \
  --features demo-app/csr -- -D warnings

step "one database each (an app compiles only the driver it enables: the starter SQLite, sssync-leptos with postgres only PostgreSQL)"
# The workspace's builds enable both (the demo does); these build each alone.
if cargo tree -p sssync-starter --features ssr -e normal --prefix none | grep -q '^sqlx-postgres '; then
  echo "the starter (SQLite only) links sqlx's PostgreSQL driver" >&2
  exit 1
fi
cargo check -p sssync-starter --features ssr
cargo check -p sssync-leptos --no-default-features --features ssr,postgres

step "building the Rust tests (cargo test --no-run)"
cargo test --workspace --features "$native_features" --no-run

step "Rust unit and integration tests (cargo test)"
cargo test --workspace --features "$native_features" 2>&1 | tee "$work/cargo-test.log"
rust_passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$work/cargo-test.log" |
  awk '{s += $4} END {print s + 0}')
rust_failed=$(grep -Eo '[0-9]+ failed' "$work/cargo-test.log" | awk '{s += $1} END {print s + 0}')

step "fuzzing, a short pass (scripts/fuzz.sh: every target at once, for 20 s)"
bash scripts/fuzz.sh 20

step "the release builds (the servers, the benchmark, then the browser bundles: cargo build --release, cargo leptos build --release --frontend-only)"
release_status=0
wait "$release_pid" || release_status=$?
release_pid=""
grep -E '^\[test\]|^\[setup\]|^error' "$work/release.log" || true
if [ "$release_status" -ne 0 ]; then
  tail -n 60 "$work/release.log"
  echo "[test] the release builds failed" >&2
  exit 1
fi
export CARGO_TARGET_DIR="$release_target"

# After the release builds: the SSR and bundle rows measure them.
step "benchmark, a short pass (sssync-bench perf --quick --check: ratios against baselines)"
bench_pg=()
if [ -n "${E2E_PG_URL:-}" ]; then bench_pg=(--pg "$SSSYNC_TEST_PG"); fi
"$CARGO_TARGET_DIR/release/sssync-bench" perf --quick --check "${bench_pg[@]}"

step "starting the demo server for the browser tests"
port="${E2E_PORT:-$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")}"
export E2E_BASE_URL="http://127.0.0.1:$port"
# Tests that kill and restart a server run their own, from the same build.
export E2E_SERVER_BIN="$CARGO_TARGET_DIR/release/demo-app" E2E_SITE_ROOT="$CARGO_TARGET_DIR/site"
export PLAYWRIGHT_JSON_OUTPUT_NAME="$work/e2e.json"
# The server under test: the release build, on a database of its own.
LEPTOS_SITE_ROOT="$CARGO_TARGET_DIR/site" LEPTOS_ENV=PROD LEPTOS_SITE_ADDR="127.0.0.1:$port" \
  DATABASE_URL="sqlite://$work/e2e.db" RUST_LOG=warn \
  "$CARGO_TARGET_DIR/release/demo-app" >"$work/server.log" 2>&1 &
server_pid=$!
# Wait (bounded) until it answers.
for _ in $(seq 1 100); do
  if curl -fs -o /dev/null "$E2E_BASE_URL/lists/health"; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/server.log"
    echo "[test] the demo server exited before answering" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS -o /dev/null "$E2E_BASE_URL/lists/health" || {
  cat "$work/server.log"
  echo "[test] the demo server did not answer within 10 s" >&2
  exit 1
}
# The client-only build, served by Trunk with the sync endpoint proxied to the server above.
step "building and serving the client-only (CSR) build (trunk serve)"
cargo fetch --target wasm32-unknown-unknown --quiet
csr_port="$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
# A debug build, as `trunk serve` gives a developer: it compiles in about half the time of an
# optimized one, and this one test needs no optimized bundle (the benchmark measures the hydrate
# release bundle).
trunk serve --offline --no-autoreload --dist "$work/csr-dist" --port "$csr_port" \
  --proxy-backend="ws://127.0.0.1:$port/sssync/ws" --proxy-ws >"$work/trunk.log" 2>&1 &
csr_pid=$!
export E2E_CSR_URL="http://127.0.0.1:$csr_port"
# A cold build takes minutes: wait (bounded) until it serves.
for _ in $(seq 1 1200); do
  if curl -fs -o /dev/null "$E2E_CSR_URL/"; then break; fi
  if ! kill -0 "$csr_pid" 2>/dev/null; then
    tail -n 40 "$work/trunk.log"
    echo "[test] trunk serve exited before serving" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fsS -o /dev/null "$E2E_CSR_URL/" || {
  tail -n 40 "$work/trunk.log"
  echo "[test] trunk serve did not serve within 10 minutes" >&2
  exit 1
}

step "browser end-to-end tests (Playwright, Chromium)"
e2e_status=0
(cd end2end && npx playwright test --reporter=list,json --workers="${E2E_WORKERS:-2}") || e2e_status=$?
read -r e2e_passed e2e_failed e2e_skipped < <(node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).stats;
  console.log(r.expected + r.flaky, r.unexpected, r.skipped);' "$PLAYWRIGHT_JSON_OUTPUT_NAME" 2>/dev/null ||
  echo "0 1 0")
if [ "$e2e_status" -ne 0 ]; then
  echo "[test] server log:"; tail -n 50 "$work/server.log"
fi

step_done
printf '\n\033[1;34m[test]\033[0m summary (%s s)\n' "$((SECONDS - started))"
printf '%s\n' "${timings[@]}"
echo "$pg_status"
echo "rust: $rust_passed passed, $rust_failed failed"
echo "e2e: $e2e_passed passed, $e2e_failed failed, $e2e_skipped skipped"
echo "$((rust_passed + e2e_passed)) passed, $((rust_failed + e2e_failed)) failed"
[ "$rust_failed" -eq 0 ] && [ "$e2e_failed" -eq 0 ] && [ "$e2e_status" -eq 0 ]

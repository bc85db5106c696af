#!/usr/bin/env bash
# Coverage-guided fuzzing of everything sssync decodes from untrusted bytes (tools/fuzz/fuzz_targets),
# with libFuzzer (libfuzzer-sys) on the stable toolchain: the coverage instrumentation is done
# with stable rustc flags (the ones cargo-fuzz passes), no nightly needed.
#
#   scripts/fuzz.sh                 every target, 20 s (the short pass scripts/test.sh runs)
#   scripts/fuzz.sh 600             every target, 10 minutes
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 0 client_deltas   one target, 10^7 executions
#
# The targets run side by side, each for the whole time given: the pass takes the time of one
# target, not of all of them.
#
# The corpus kept in the repository (tools/fuzz/corpus/<target>) seeds each run; what a run finds
# goes to a scratch folder (to keep it: scripts/fuzz.sh --merge, which minimizes it into the
# repository's corpus). A crash is saved under $SSSYNC_HOME/fuzz-artifacts and the script fails,
# printing the command that replays it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
source scripts/env.sh

merge=false
if [ "${1:-}" = "--merge" ]; then
  merge=true
  shift
fi
seconds="${1:-20}"
shift || true
all=(client_message events_body query_key client_messages client_deltas)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

host="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$SSSYNC_HOME/fuzz-target"
# With --target, these flags reach the fuzzed code only (not build scripts or proc macros).
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
printf '\033[1;34m[fuzz]\033[0m building the targets (instrumented, release)\n'
cargo build --quiet --manifest-path tools/fuzz/Cargo.toml --release --target "$host" --bins

artifacts="$SSSYNC_HOME/fuzz-artifacts"
mkdir -p "$artifacts"
status=0
running=()
for t in "${targets[@]}"; do
  bin="$CARGO_TARGET_DIR/$host/release/$t"
  kept="tools/fuzz/corpus/$t"
  mkdir -p "$kept"
  if $merge; then
    scratch="$SSSYNC_HOME/fuzz-found/$t"
    mkdir -p "$scratch"
    fresh="$(mktemp -d)"
    # Edge coverage only (no hit counters): a small corpus that reaches the same code.
    "$bin" -merge=1 -use_counters=0 -use_value_profile=0 "$fresh" "$kept" "$scratch" >/dev/null 2>&1
    rm -rf "$kept" && mv "$fresh" "$kept"
    printf '[fuzz] %s: corpus merged, %s inputs\n' "$t" "$(ls "$kept" | wc -l)"
    continue
  fi
  scratch="$SSSYNC_HOME/fuzz-found/$t"
  mkdir -p "$scratch"
  limit=(-max_total_time="$seconds")
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); fi
  log="$(mktemp)"
  "$bin" "${limit[@]}" -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
    "$scratch" "$kept" >"$log" 2>&1 &
  running+=("$t $! $log $bin")
done
for r in "${running[@]}"; do
  read -r t pid log bin <<<"$r"
  if wait "$pid"; then
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    printf '[fuzz] %s: %s executions, no crash\n' "$t" "${execs:-?}"
  else
    status=1
    tail -n 30 "$log"
    crash="$(ls -t "$artifacts/$t-"* 2>/dev/null | head -n 1 || true)"
    printf '[fuzz] %s: FAILED; replay: %s %s\n' "$t" "$bin" "${crash:-<the artifact above>}"
  fi
  rm -f "$log"
done
exit $status

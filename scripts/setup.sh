#!/usr/bin/env bash
# Installs what the demo and the tests need and is not there yet. Idempotent: a second run only
# checks. Versions and traps: see ../shared/TOOLCHAIN.md (facts checked on these machines).
#
#   scripts/setup.sh          what building and running the demo needs
#   scripts/setup.sh --tests  that, plus Trunk, Chromium and the end2end npm packages
#
# The test command splits the work in two, so that the rest (minutes of compiling the tools)
# installs in the background beside its first steps, which do not need it:
#   --for-lints    only what the lints and the Rust tests need: the wasm32 target, rustfmt, clippy
#   --after-lints  only the rest: wasm-opt, cargo-leptos, wasm-bindgen (and with --tests: Trunk,
#                  Chromium and the end2end npm packages)
#
# Each tool is checked first and installed only when missing or at the wrong version, with a line
# saying what is happening (the cargo installs take minutes).
set -euo pipefail

for_tests=false
first=true # the target and the components
rest=true  # wasm-opt, the cargo installs, Chromium and the npm packages
for arg in "$@"; do
  case "$arg" in
    --tests) for_tests=true ;;
    --for-lints) rest=false ;;
    --after-lints) first=false ;;
    *) echo "usage: scripts/setup.sh [--tests] [--for-lints | --after-lints]" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$here/scripts/env.sh"

CARGO_LEPTOS_VERSION=0.3.10
WASM_BINDGEN_VERSION=0.2.130 # must equal the wasm-bindgen in Cargo.lock (pinned in Cargo.toml)
BINARYEN_VERSION=132.0.0
TRUNK_VERSION=0.21.14

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# The tools are built for speed of building, not of running: they only orchestrate and rewrite a
# few small files, and cargo-leptos's own release profile (fat LTO, one codegen unit) alone took
# most of a fresh machine's first run. Config profiles override a package's own, for cargo install
# too. Unoptimized (opt-level 0), cargo-leptos builds in 4 minutes instead of 10 (at opt-level 1)
# or 21 (its own profile); measured in docs/development.md. With the system's OpenSSL found,
# cargo-leptos's copy (vendored, built from C) is not built.
tool_install() {
  local no_vendor=()
  if pkg-config --exists openssl 2>/dev/null; then no_vendor=(OPENSSL_NO_VENDOR=1); fi
  env "${no_vendor[@]}" CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_TARGET_DIR="$SSSYNC_HOME/tools-target" cargo install "$@"
}
elapsed() { printf '%ss' "$((SECONDS - $1))"; }

# What the lints and the Rust tests need: the wasm32 target and the components.
first_side() {
  # The wasm32 target.
  if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "wasm32-unknown-unknown target: present"
  else
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi

  # rustfmt and clippy (the test command checks formatting and lints).
  for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
      say "adding the $c component"
      rustup component add "$c"
    fi
  done
}

# What downloads: wasm-opt; for the tests, Chromium and the end2end npm packages (in the
# background, beside the compiles below, waited for at the end).
download_side() {
  # wasm-opt from the binaryen npm package (never Debian's binaryen: its wasm-opt 108 breaks the
  # bundle in the browser).
  if [ -x "$SSSYNC_TOOLS/binaryen/node_modules/.bin/wasm-opt" ] &&
    [ -f "$SSSYNC_TOOLS/binaryen/node_modules/binaryen/package.json" ] &&
    grep -q "\"version\": \"$BINARYEN_VERSION\"" "$SSSYNC_TOOLS/binaryen/node_modules/binaryen/package.json"; then
    say "wasm-opt (binaryen $BINARYEN_VERSION): present"
  else
    say "installing wasm-opt (binaryen $BINARYEN_VERSION from npm) into $SSSYNC_TOOLS/binaryen"
    mkdir -p "$SSSYNC_TOOLS/binaryen"
    npm install --silent --no-audit --no-fund --prefix "$SSSYNC_TOOLS/binaryen" "binaryen@$BINARYEN_VERSION"
  fi
}

browser_side() {
  # Chromium for the browser tests (Playwright cannot download its own browser here).
  if [ -x /usr/bin/chromium ]; then
    say "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
  else
    say "installing chromium from Debian packages (about a minute)"
    if [ "$(id -u)" -eq 0 ]; then sudo_cmd=(); else sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
    say "chromium installed: $(/usr/bin/chromium --version 2>/dev/null)"
  fi

  # The end-to-end test packages (Playwright's test runner; the browser is the one above).
  if [ -d "$here/end2end/node_modules/@playwright/test" ] &&
    [ "$here/end2end/node_modules/.package-lock.json" -nt "$here/end2end/package-lock.json" ]; then
    say "end2end npm packages: present"
  else
    say "installing the end2end npm packages"
    (cd "$here/end2end" && npm ci --silent --no-audit --no-fund)
  fi
}

# What compiles (minutes, once): one cargo install after the other.
compiled_side() {
  # cargo-leptos (0.3.11 needs a newer rustc; no_downloads: a missing tool is an error, not a
  # download).
  if cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
    say "cargo-leptos $CARGO_LEPTOS_VERSION: present"
  else
    say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 4 minutes on 2 cores, once)"
    t=$SECONDS
    tool_install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
    say "cargo-leptos installed in $(elapsed $t)"
  fi

  # The wasm-bindgen CLI, which cargo-leptos and Trunk run: exactly the library's version
  # (without --locked: see TOOLCHAIN.md).
  if wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
    say "wasm-bindgen $WASM_BINDGEN_VERSION: present"
  else
    say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 1 minute, once)"
    t=$SECONDS
    tool_install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
    say "wasm-bindgen-cli installed in $(elapsed $t)"
  fi

  # Trunk, for the tests' client-only (CSR) build of the demo (0.22 needs a newer rustc).
  if $for_tests; then
    if trunk --version 2>/dev/null | grep -q "$TRUNK_VERSION"; then
      say "trunk $TRUNK_VERSION: present"
    else
      say "installing trunk $TRUNK_VERSION (about 2 minutes, once)"
      t=$SECONDS
      tool_install trunk --version "$TRUNK_VERSION" --locked
      say "trunk installed in $(elapsed $t)"
    fi
  fi
}

browser_pid=""
if $first; then first_side; fi
if $rest; then
  download_side
  if $for_tests; then
    browser_log="$(mktemp)"
    browser_side >"$browser_log" 2>&1 &
    browser_pid=$!
  fi
  compiled_side
fi

# Chromium and the end2end packages (started above, beside the compiles).
if [ -n "$browser_pid" ]; then
  browser_status=0
  wait "$browser_pid" || browser_status=$?
  cat "$browser_log"
  rm -f "$browser_log"
  [ "$browser_status" -eq 0 ] || { say "installing Chromium or the end2end packages failed"; exit 1; }
fi

say "setup done"

#!/usr/bin/env bash
# The README's first command: installs what is missing, builds the demo (release) and runs it on
# the embedded SQLite. Environment (all optional):
#   LEPTOS_SITE_ADDR  where to listen            (default 127.0.0.1:3000)
#   DATABASE_URL      the database               (default sqlite://sssync-demo.db, in this folder)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
source scripts/env.sh

bash scripts/setup.sh
echo "[demo] building the demo (release; the first build takes several minutes)"
cargo leptos build --release

export LEPTOS_SITE_ROOT="$CARGO_TARGET_DIR/site"
export LEPTOS_ENV="${LEPTOS_ENV:-PROD}"
export LEPTOS_SITE_ADDR="${LEPTOS_SITE_ADDR:-127.0.0.1:3000}"
export DATABASE_URL="${DATABASE_URL:-sqlite://$here/sssync-demo.db}"
echo "[demo] starting on http://$LEPTOS_SITE_ADDR (Ctrl-C stops it)"
exec "$CARGO_TARGET_DIR/release/demo-app"

#!/usr/bin/env bash
# Copies the starter (examples/starter: one table, one query, one event, one page) out of this
# repository as an app of its own, depending on this checkout's sssync by path:
#
#   scripts/new-app.sh ../my-app && cd ../my-app && cargo leptos watch
#
# (`scripts/setup.sh` installs cargo-leptos and what it runs, once.) The app then serves at
# http://127.0.0.1:3000 on SQLite (`starter.db` in its folder) and rebuilds on every change.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: scripts/new-app.sh <folder> (a folder that does not exist yet)}"
if [ -e "$dest" ]; then
  echo "[new-app] $dest exists: name a folder that does not exist yet" >&2
  exit 1
fi
mkdir -p "$dest"
cp -R "$here/examples/starter/." "$dest/"
# The versions this repository tests.
cp "$here/Cargo.lock" "$dest/Cargo.lock"
toml="$dest/Cargo.toml"
# sssync from this checkout; the site where cargo-leptos puts it by default.
sed -i.bak -e "s|path = \"../../sssync-leptos\"|path = \"$here/sssync-leptos\"|" \
  -e 's|site-root = "target/starter-site"|site-root = "target/site"|' "$toml"
rm -f "$toml.bak"
cat >>"$toml" <<'TOML'

# An app of its own, not a member of the sssync workspace.
[workspace]

# The browser bundle (`lib-profile-release` above): small, no unwinding.
[profile.wasm-release]
inherits = "release"
opt-level = "z"
lto = true
codegen-units = 1
panic = "abort"
TOML
echo "[new-app] the starter is in $dest; run it with: cd $dest && cargo leptos watch"

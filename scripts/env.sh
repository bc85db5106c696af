# Sourced by the scripts: where tools and build output live. Both sit outside the clone so that a
# fresh clone (CI's, say) reuses the compiled dependencies and the installed tools.
: "${SSSYNC_HOME:=$HOME/.cache/sssync}"
: "${SSSYNC_TOOLS:=$SSSYNC_HOME/tools}"
: "${CARGO_TARGET_DIR:=$SSSYNC_HOME/target}"
export SSSYNC_HOME SSSYNC_TOOLS CARGO_TARGET_DIR
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$SSSYNC_TOOLS/binaryen/node_modules/.bin:$PATH"

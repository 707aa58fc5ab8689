# shellcheck shell=bash
# Fixtures for the KRM function tests (crates/hoist-cli/tests/krm_e2e.rs): real kpt catalog
# functions built from ../shared/peers/krm-functions-catalog-src.tar.gz by build-krm-functions:
#   set-namespace    js/wasm registers processResourceList (kpt's wasm glue); also wasip1
#   set-annotations  js/wasm command style (stdin -> stdout through fs, exits); also wasip1
# Cached in ${HOIST_TOOLS_DIR:-~/.cache/hoist-tools}/krm-functions (the builder skips outputs
# newer than the archive and itself). Exports HOIST_KRM_FUNCTIONS_DIR, and HOIST_NODE when
# node is available (the tests compare against node running Go's own wasm_exec.js).
krm_fixtures() {
  local peers="${HOIST_PEERS_DIR:-$root/../shared/peers}"
  local builder="$peers/build-krm-functions"
  local out="${HOIST_TOOLS_DIR:-$HOME/.cache/hoist-tools}/krm-functions"
  if [ ! -x "$builder" ]; then
    log "error: $builder is missing: the shared/ folder (with peers/) must sit next to the checkout, or set HOIST_PEERS_DIR"
    return 1
  fi
  mkdir -p "$out"
  log "krm: building set-namespace set-annotations (cached in $out)"
  "$builder" "$out" set-namespace set-annotations >/dev/null || {
    log "error: build-krm-functions failed"
    return 1
  }
  export HOIST_KRM_FUNCTIONS_DIR="$out"
  local node
  if node=$(command -v node 2>/dev/null); then
    export HOIST_NODE="$node"
  fi
  HOIST_GO_WASM_EXEC="$(go env GOROOT)/lib/wasm"
  export HOIST_GO_WASM_EXEC
}
krm_fixtures

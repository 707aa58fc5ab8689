# shellcheck shell=bash
# Fixtures of the controller's end-to-end tests (crates/hoist-cli/tests/atc_e2e.rs): the ATC
# test flight (testdata/atc, GOOS=wasip1), built once per source hash and cached.
# Sourced by scripts/test (set -euo pipefail, $root, log). Exports HOIST_ATC_TEST_FLIGHT.
atc_cache="${HOIST_TOOLS_DIR:-$HOME/.cache/hoist-tools}/atc"
atc_hash=$(cd "$root/testdata/atc" && find . -type f \( -name '*.go' -o -name 'go.mod' \) -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
atc_out="$atc_cache/$atc_hash/flight.wasm"
if [ ! -s "$atc_out" ]; then
  log "atc: building the ATC test flight (testdata/atc)"
  mkdir -p "$atc_cache/$atc_hash"
  if ! (cd "$root/testdata/atc" && GOOS=wasip1 GOARCH=wasm GOFLAGS=-mod=mod \
      go build -trimpath -ldflags='-s -w' -o "$atc_out.tmp" ./flight); then
    rm -f "$atc_out.tmp"
    if [ "${CI:-}" = "true" ]; then
      log "atc: building testdata/atc failed"
      return 1
    fi
    log "atc: building testdata/atc failed; the ATC end-to-end tests will skip"
  else
    mv "$atc_out.tmp" "$atc_out"
  fi
fi
if [ -s "$atc_out" ]; then
  export HOIST_ATC_TEST_FLIGHT="$atc_out"
  log "atc: test flight $HOIST_ATC_TEST_FLIGHT"
fi
unset atc_cache atc_hash atc_out

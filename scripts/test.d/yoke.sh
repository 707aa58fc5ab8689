# shellcheck shell=bash
# Fixtures for the Yoke interop tests: yoke's own example flights (basic, lookup; redis embeds an 81 MB chart and is left out) built
# with GOOS=wasip1 from the yoke v0.20.27 source archive in ../shared/peers, cached in
# ${HOIST_TOOLS_DIR:-~/.cache/hoist-tools}/yoke-examples-v0.20.27 (rebuilt when the archive
# changes). Exports HOIST_YOKE_EXAMPLES_DIR.
yoke_examples() {
  local peers="${HOIST_PEERS_DIR:-$root/../shared/peers}"
  local archive="$peers/yoke-v0.20.27-src.tar.gz"
  local out="${HOIST_TOOLS_DIR:-$HOME/.cache/hoist-tools}/yoke-examples-v0.20.27"
  local names=(basic lookup)
  if [ ! -f "$archive" ]; then
    log "error: $archive is missing: the shared/ folder (with peers/) must sit next to the checkout, or set HOIST_PEERS_DIR"
    return 1
  fi
  local stamp
  stamp="$( (sha256sum "$archive"; go version; printf '%s\n' "${names[@]}") | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$out/stamp" 2>/dev/null)" != "$stamp" ]; then
    log "building yoke's example flights (${names[*]}) from $archive"
    rm -rf "$out.new"
    mkdir -p "$out.new/src"
    tar -xzf "$archive" -C "$out.new/src"
    local name
    for name in "${names[@]}"; do
      (cd "$out.new/src/build" &&
        GOTOOLCHAIN=local GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm \
          go build -trimpath -o "$out.new/$name.wasm" "github.com/yokecd/yoke/examples/$name") ||
        { log "error: building yoke's example $name failed"; return 1; }
    done
    rm -rf "$out.new/src"
    printf '%s\n' "$stamp" >"$out.new/stamp"
    rm -rf "$out"
    mv "$out.new" "$out"
  fi
  export HOIST_YOKE_EXAMPLES_DIR="$out"
}
yoke_examples

# shellcheck shell=bash
# Fixtures for the policy tests (crates/hoist-cli/tests/policy_e2e.rs): real Kubewarden
# policies built from ../shared/peers/kubewarden-policies-src.tar.gz by
# build-kubewarden-policies, one per execution mode and host-capability path:
#   hoist-test-wapc                     waPC (Rust): codes, warnings, mutation, settings
#   go-wasi-policy-template             WASI (Go): mutation, settings validation
#   go-wasi-context-aware-test-policy   WASI host.call + a recorded session; record test
#   opa-policy-template                 OPA mode (Rego v0)
#   raw-validation-opa-policy           OPA mode, raw requests
#   gatekeeper-policy-template          Gatekeeper mode (Rego v1)
#   unique-ingress-policy               Gatekeeper, context aware, the `sprintf` builtin
# The other policies of the archive (the Rust kubewarden ones cost ~6 minutes together) are
# tested too when present in the same directory (HOIST_POLICIES_ALL=1 builds them here).
# Cached in ${HOIST_TOOLS_DIR:-~/.cache/hoist-tools}/kubewarden-policies, rebuilt when the
# archive, the build script or this list changes. Exports HOIST_POLICIES_DIR (modules and
# metadata) and HOIST_POLICIES_SRC_DIR (the archive's sources: test_data/, e2e.bats).
policy_fixtures() {
  local peers="${HOIST_PEERS_DIR:-$root/../shared/peers}"
  local archive="$peers/kubewarden-policies-src.tar.gz"
  local builder="$peers/build-kubewarden-policies"
  local out="${HOIST_TOOLS_DIR:-$HOME/.cache/hoist-tools}/kubewarden-policies"
  local names=(hoist-test-wapc go-wasi-policy-template go-wasi-context-aware-test-policy
    opa-policy-template raw-validation-opa-policy gatekeeper-policy-template unique-ingress-policy)
  if [ "${HOIST_POLICIES_ALL:-0}" = 1 ]; then
    mapfile -t names < <("$builder" --list | awk '{print $1}')
  fi
  if [ ! -f "$archive" ] || [ ! -x "$builder" ]; then
    log "error: $archive or $builder is missing: the shared/ folder (with peers/) must sit next to the checkout, or set HOIST_PEERS_DIR"
    return 1
  fi
  local stamp
  stamp="$( (sha256sum "$archive" "$builder"; go version) | sha256sum | cut -d' ' -f1)"
  mkdir -p "$out"
  if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" != "$stamp" ]; then
    # A new archive, builder or Go: drop everything built from the old ones.
    rm -rf "$out"/*.wasm "$out"/*.metadata.yml "$out/src"
  fi
  if [ ! -d "$out/src/kubewarden-policies" ]; then
    rm -rf "$out/src.new"
    mkdir -p "$out/src.new"
    tar -xzf "$archive" -C "$out/src.new"
    mv "$out/src.new" "$out/src"
  fi
  local missing=()
  local name
  for name in "${names[@]}"; do
    [ -f "$out/$name.wasm" ] && [ -f "$out/$name.metadata.yml" ] || missing+=("$name")
  done
  # Rego policies compile with testdata/policy/opa-build (OPA's compile package alone) unless
  # $OPA names an opa CLI: far less Go to compile on a cold machine than the whole CLI.
  policy_opa || return 1
  if [ ${#missing[@]} -gt 0 ]; then
    log "building Kubewarden policies: ${missing[*]} (cold: a few minutes, mostly the opa CLI and Rust)"
    PATH="$PATH:$HOME/.cargo/bin:/usr/local/go/bin" "$builder" "$out" "${missing[@]}" >/dev/null ||
      { log "error: build-kubewarden-policies failed for ${missing[*]}"; return 1; }
  fi
  printf '%s\n' "$stamp" >"$out/stamp"
  export HOIST_POLICIES_DIR="$out"
  export HOIST_POLICIES_SRC_DIR="$out/src/kubewarden-policies"
  policy_gate_fixtures "$out"
}

# Exports OPA: $OPA when set, else testdata/policy/opa-build (the `opa build -t wasm` subset
# the fixtures use, on OPA v1.22.4's own compile package; same modules byte for byte), built
# once into ${HOIST_TOOLS_DIR:-~/.cache/hoist-tools}/opa-build-<hash of its sources>.
policy_opa() {
  [ -n "${OPA:-}" ] && return 0
  local dir="$root/testdata/policy/opa-build"
  local key
  key="$( (cat "$dir/main.go" "$dir/go.mod" "$dir/go.sum"; go version) | sha256sum | cut -c1-16)"
  local out="${HOIST_TOOLS_DIR:-$HOME/.cache/hoist-tools}/opa-build-$key"
  if [ ! -x "$out/opa" ]; then
    log "building testdata/policy/opa-build (OPA's wasm compiler, once)"
    mkdir -p "$out"
    (cd "$dir" && PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
      go build -trimpath -o "$out/opa.new" .) >&2 ||
      { log "error: building testdata/policy/opa-build failed"; return 1; }
    mv "$out/opa.new" "$out/opa"
  fi
  export OPA="$out/opa"
}

# hoist's own test policies (testdata/policy/*.rego, Gatekeeper mode) for the gate's tests
# (crates/hoist-cli/tests/policy_gate_e2e.rs), compiled with the opa CLI the Rego policies above
# were built with (cached; a changed .rego rebuilds).
policy_gate_fixtures() {
  local out="$1/hoist-testdata"
  policy_opa || return 1
  local opa="$OPA"
  mkdir -p "$out"
  local rego name sum
  for rego in "$root"/testdata/policy/*.rego; do
    name=$(basename "$rego" .rego)
    sum=$(sha256sum "$rego" | cut -d' ' -f1)
    if [ ! -f "$out/$name.wasm" ] || [ "$(cat "$out/$name.sum" 2>/dev/null)" != "$sum" ]; then
      log "compiling $name.rego (opa build -t wasm -e policy/violation)"
      (cd "$(dirname "$rego")" && "$opa" build -t wasm -e policy/violation \
        -o "$out/$name.bundle.tar.gz" "$(basename "$rego")") >&2
      tar -xzPf "$out/$name.bundle.tar.gz" -O /policy.wasm >"$out/$name.wasm.new"
      mv "$out/$name.wasm.new" "$out/$name.wasm"
      printf '%s\n' "$sum" >"$out/$name.sum"
    fi
  done
  export HOIST_POLICY_TESTDATA_DIR="$out"
}
policy_fixtures

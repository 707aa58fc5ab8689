#!/usr/bin/env bash
# `hoist policy bench` against `kwctl bench` (when a kwctl binary is given) on real Kubewarden
# policies, one execution mode each, with upstream's test requests. Both time the warm path
# (an evaluator already built), validate_settings and validate. Prints a markdown table on
# stdout (evaluations per second of `validate`, and hoist's cold first evaluation).
#
#   bench/policy.sh
#
# Environment:
#   HOIST_BIN            hoist binary [target/release/hoist; built with cargo if missing]
#   KWCTL                kwctl 1.31 binary (../shared/peers/build-kwctl); without it only hoist runs
#   HOIST_POLICIES_DIR   built policies [${HOIST_TOOLS_DIR:-~/.cache/hoist-tools}/kubewarden-policies,
#                        filled by scripts/test.d/policy.sh]
#   WARMUP, MEASURE      seconds [1, 3]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
HOIST_BIN="${HOIST_BIN:-target/release/hoist}"
WARMUP="${WARMUP:-1}"
MEASURE="${MEASURE:-3}"
log() { printf 'bench/policy: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -z "${HOIST_POLICIES_DIR:-}" ]; then
  log "building the policy fixtures (scripts/test.d/policy.sh)"
  # shellcheck source=/dev/null
  log() { printf 'bench/policy: %s\n' "$*" >&2; }
  . scripts/test.d/policy.sh
fi
src="${HOIST_POLICIES_SRC_DIR:-$HOIST_POLICIES_DIR/src/kubewarden-policies}"
[ -x "$HOIST_BIN" ] || { log "building hoist (release)"; cargo build --release -p hoist-cli >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name | source dir | request | extra flags
cases="
hoist-test-wapc|hoist-test-wapc|test_data/pod_creation.json|--settings-path test_data/settings_deny_nginx.json
go-wasi-policy-template|go-wasi-policy-template|test_data/pod-creation.json|--settings-json {\"requiredAnnotations\":{\"fluxcd.io/cat\":\"sylvester\"}}
opa-policy-template|opa-policy-template|test_data/service_nodeport.json|
gatekeeper-policy-template|gatekeeper-policy-template|test_data/service_loadbalancer.json|
unique-ingress-policy|policies/unique-ingress-policy|test_data/ingress.json|--allow-context-aware --replay-host-capabilities-interactions test_data/k8s_ctx_duplicate.yml
pod-privileged-policy|policies/pod-privileged-policy|test_data/privileged_container.json|
"

echo "| policy | mode | hoist validate/s | kwctl validate/s | hoist / kwctl | hoist cold first evaluation |"
echo "|---|---|---:|---:|---:|---:|"
echo "$cases" | while IFS='|' read -r name dir request extra; do
  [ -n "$name" ] || continue
  module="$HOIST_POLICIES_DIR/$name.wasm"
  [ -f "$module" ] || { log "skipping $name: not built"; continue; }
  annotated="$work/$name.wasm"
  "$HOIST_BIN" policy annotate -m "$HOIST_POLICIES_DIR/$name.metadata.yml" -o "$annotated" "$module"
  # shellcheck disable=SC2086
  json=$(cd "$src/$dir" && "$HOIST_BIN" policy bench --warm-up-time "$WARMUP" --measurement-time "$MEASURE" \
    -o json -r "$request" $extra "$annotated")
  hoist_eps=$(echo "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["validate"]["evaluations_per_second"]))')
  mode=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["execution_mode"])')
  cold=$(echo "$json" | python3 -c 'import json,sys; print("%.0f ms" % (json.load(sys.stdin)["cold_start_ns"]/1e6))')
  kw_eps="-" ratio="-"
  if [ -n "${KWCTL:-}" ]; then
    # kwctl prints "elapsed [min mean max]: [a b c]" per label; take validate's mean.
    # shellcheck disable=SC2086
    out=$(cd "$src/$dir" && "$KWCTL" bench --warm-up-time "$WARMUP" --measurement-time "$MEASURE" \
      -r "$request" $extra "$annotated" 2>/dev/null || true)
    kw_eps=$(echo "$out" | python3 -c '
import re, sys
text = sys.stdin.read()
part = text.split("validate [")[-1] if "validate [" in text else ""
m = re.search(r"elapsed \[min mean max\]: \[\S+ (\S+?)(ns|µs|us|ms|s) ", part)
if not m: print("-"); sys.exit()
v, unit = float(m.group(1)), m.group(2)
ns = v * {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
print(round(1e9 / ns))')
    if [ "$kw_eps" != "-" ]; then
      ratio=$(python3 -c "print('%.1fx' % ($hoist_eps / $kw_eps))")
    fi
  fi
  echo "| $name | $mode | $hoist_eps | $kw_eps | $ratio | $cold |"
done

#!/usr/bin/env bash
# `hoist policy bench` against `kwctl bench` on real Kubewarden policies (every execution mode,
# upstream's test requests and settings), one run each, same module (annotated once by each
# tool), same request, same flags. Both time the warm path on an already built evaluator:
# validate_settings and validate. Also the cold first evaluation: one whole `run` process with
# no compiled-module cache (compile + instantiate + validate_settings + validate).
# Prints a markdown table on stdout.
#
#   bench/policy.sh [POLICY...]          (default: every built policy of the list below)
#
# Environment:
#   HOIST_BIN            hoist binary [target/release/hoist; built with cargo if missing]
#   KWCTL                kwctl 1.31 binary [~/.cache/hoist-tools/kwctl-v1.31.0/kwctl if present;
#                        ../shared/peers/build-kwctl builds it]; without it only hoist runs
#   HOIST_POLICIES_DIR   built policies [${HOIST_TOOLS_DIR:-~/.cache/hoist-tools}/kubewarden-policies,
#                        filled by scripts/test.d/policy.sh; HOIST_POLICIES_ALL=1 for all]
#   WARMUP, MEASURE      seconds per label [1, 3]
#
# Notes on kwctl: kwctl 1.31 bench with a replayed session answers only the first iteration
# (later ones time a "recorded responses is empty" failure: marked "replay*"); every kwctl
# process spends about 1 s trying to fetch the Sigstore trust root offline (included in its
# cold column, reported separately as "sigstore").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
tools="${HOIST_TOOLS_DIR:-$HOME/.cache/hoist-tools}"
HOIST_BIN="${HOIST_BIN:-target/release/hoist}"
if [ -z "${KWCTL:-}" ] && [ -x "$tools/kwctl-v1.31.0/kwctl" ]; then
  KWCTL="$tools/kwctl-v1.31.0/kwctl"
fi
WARMUP="${WARMUP:-1}"   # whole seconds: kwctl 1.31 refuses fractions
MEASURE="${MEASURE:-3}"
log() { printf 'bench/policy: %s\n' "$*" >&2; }

if [ -z "${HOIST_POLICIES_DIR:-}" ]; then
  if [ -f "$tools/kubewarden-policies/stamp" ]; then
    export HOIST_POLICIES_DIR="$tools/kubewarden-policies"
  else
    log "building the policy fixtures (scripts/test.d/policy.sh)"
    # shellcheck source=/dev/null
    . scripts/test.d/policy.sh
  fi
fi
src="${HOIST_POLICIES_SRC_DIR:-$HOIST_POLICIES_DIR/src/kubewarden-policies}"
HOIST_BIN="$(realpath "$HOIST_BIN" 2>/dev/null || echo "$HOIST_BIN")"
[ -x "$HOIST_BIN" ] || { log "building hoist (release)"; cargo build --release -p hoist-cli >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name|source dir|flags (upstream's first e2e.bats command, or a representative one)
cases="
hoist-test-wapc|hoist-test-wapc|-r test_data/pod_creation.json --settings-path test_data/settings_deny_nginx.json
pod-privileged-policy|policies/pod-privileged-policy|-r test_data/privileged_container.json
psa-label-enforcer-policy|policies/psa-label-enforcer-policy|-r test_data/namespace_with_no_labels.json --settings-path test_data/setting_all_modes_set.json
raw-validation-policy|policies/raw-validation-policy|--raw -r test_data/valid.json --settings-path test_data/settings.json
context-aware-demo|policies/context-aware-demo|-r test_data/pod_creation_missing_labels.json --allow-context-aware --replay-host-capabilities-interactions test_data/session-namespace-found.yml
go-wasi-policy-template|go-wasi-policy-template|-r test_data/pod-creation.json --settings-json {\"requiredAnnotations\":{\"fluxcd.io/cat\":\"sylvester\"}}
raw-validation-wasi-policy|policies/raw-validation-wasi-policy|--raw -r test_data/valid.json --settings-path test_data/settings.json
raw-mutation-wasi-policy|policies/raw-mutation-wasi-policy|--raw -r test_data/mutate.json --settings-path test_data/settings.json
go-wasi-context-aware-test-policy|policies/go-wasi-context-aware-test-policy|-r test_data/app_deployment.json --allow-context-aware --replay-host-capabilities-interactions test_data/session.yml
opa-policy-template|opa-policy-template|-e opa -r test_data/service_nodeport.json
disallow-service-nodeport-policy|policies/disallow-service-nodeport-policy|-e opa -r test_data/service_nodeport.json
raw-validation-opa-policy|policies/raw-validation-opa-policy|--raw -e opa -r test_data/valid.json
gatekeeper-policy-template|gatekeeper-policy-template|-e gatekeeper -r test_data/service_loadbalancer.json
unique-ingress-policy|policies/unique-ingress-policy|-r test_data/ingress.json --allow-context-aware --replay-host-capabilities-interactions test_data/k8s_ctx_no_duplicates.yml
"

# Evaluations per second of LABEL from kwctl bench's text (mean of "elapsed [min mean max]").
kwctl_eps() {
  python3 -c '
import re, sys
label = sys.argv[1]
text = re.sub(r"\x1b\[[0-9;]*m", "", sys.stdin.read())
m = re.search(r"(?m)^" + re.escape(label) + r" \[[^\n]*\n\s*elapsed\s*\[min mean max\]:\s*\[\S+ ([0-9.]+)(ns|µs|us|ms|s) ", text)
if not m: print("-"); sys.exit()
ns = float(m.group(1)) * {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[m.group(2)]
print(round(1e9 / ns))' "$1"
}

# Wall seconds of a command (output discarded).
wall() {
  python3 -c '
import subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("%.0f" % ((time.monotonic() - t) * 1000))' "$@"
}

ratio() { python3 -c "import sys; a, b = sys.argv[1:]; print('-' if '-' in (a, b) or float(b) == 0 else '%.1fx' % (float(a) / float(b)))" "$1" "$2"; }

only=("$@")
echo "| policy | mode | size | validate/s hoist | validate/s hoist, no time limit | validate/s kwctl | ratio | ratio, no time limit | validate_settings/s hoist | validate_settings/s kwctl | ratio | cold run hoist | cold run kwctl |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "$cases" | while IFS='|' read -r name dir flags; do
  [ -n "$name" ] || continue
  if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " == *" $name "* ]]; then continue; fi
  module="$HOIST_POLICIES_DIR/$name.wasm"
  [ -f "$module" ] || { log "skipping $name: not built"; continue; }
  log "$name"
  size=$(python3 -c "import os,sys; print('%.1f MB' % (os.path.getsize(sys.argv[1]) / 1e6))" "$module")
  annotated="$work/$name.hoist.wasm"
  "$HOIST_BIN" policy annotate -m "$HOIST_POLICIES_DIR/$name.metadata.yml" -o "$annotated" "$module"
  # shellcheck disable=SC2086
  # Optimised code, as kwctl runs (a first load would otherwise bench the baseline tier
  # while the optimised compile runs in the background).
  json=$(cd "$src/$dir" && HOIST_COMPILER=cranelift "$HOIST_BIN" policy bench --warm-up-time "$WARMUP" --measurement-time "$MEASURE" \
    -o json $flags "$annotated")
  read -r mode h_val h_set < <(echo "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["execution_mode"], round(d["validate"]["evaluations_per_second"]), round(d["validate_settings"]["evaluations_per_second"]))')
  # kwctl runs policies with no time limit (its code has no interruption checks); hoist does
  # the same when told `--timeout -1`: its default 10 s limit costs up to a fifth on Rego.
  # shellcheck disable=SC2086
  h_val_free=$(cd "$src/$dir" && HOIST_COMPILER=cranelift "$HOIST_BIN" policy bench --warm-up-time "$WARMUP" --measurement-time "$MEASURE" \
    --timeout=-1 -o json $flags "$annotated" | python3 -c '
import json, sys
print(round(json.load(sys.stdin)["validate"]["evaluations_per_second"]))')
  # Cold: a fresh compiled-module cache, one whole process.
  # shellcheck disable=SC2086
  h_cold=$(cd "$src/$dir" && HOIST_CACHE_DIR="$work/cache-$name" HOIST_BACKGROUND_COMPILE=0 \
    wall "$HOIST_BIN" policy run $flags "$annotated")
  k_val="-" k_set="-" k_cold="-"
  if [ -n "${KWCTL:-}" ]; then
    kw_module="$work/$name.kwctl.wasm"
    "$KWCTL" annotate -m "$HOIST_POLICIES_DIR/$name.metadata.yml" -o "$kw_module" "$module" 2>/dev/null
    # shellcheck disable=SC2086
    out=$(cd "$src/$dir" && "$KWCTL" bench --warm-up-time "$WARMUP" --measurement-time "$MEASURE" \
      $flags "$kw_module" 2>/dev/null || true)
    k_val=$(echo "$out" | kwctl_eps validate)
    k_set=$(echo "$out" | kwctl_eps validate_settings)
    # shellcheck disable=SC2086
    k_cold=$(cd "$src/$dir" && wall "$KWCTL" run --disable-wasmtime-cache $flags "$kw_module")
  fi
  note=""
  case "$flags" in *replay*) note=" (replay*)" ;; esac
  echo "| $name$note | $mode | $size | $h_val | $h_val_free | $k_val | $(ratio "$h_val" "$k_val") | $(ratio "$h_val_free" "$k_val") | $h_set | $k_set | $(ratio "$h_set" "$k_set") | ${h_cold} ms | ${k_cold} ms |"
done

#!/usr/bin/env bash
# The controller under load: time from creating N (200) instances of a small Airway to all
# of them Ready, reconcile throughput, and the controller's peak RSS. `hoist atc` runs as a
# process against a control plane of its own (scripts/control-plane), as its own service
# account (so its own writes skip its webhooks, as in a cluster), with its webhooks called
# by the API server over TLS on 127.0.0.1. Prints a markdown table on stdout (progress on
# stderr).
#
#   bench/atc.sh
#
# Environment:
#   HOIST_BIN     hoist binary [target/release/hoist]
#   N             instances [200]
#   CONCURRENCY   the controller's --concurrency [number of CPUs]
#   CLIENTS       parallel `kubectl apply` processes creating the instances [1: one apply of
#                 all N, so the N admissions run one after another]
#   HOIST_ATC_TEST_FLIGHT  the flight [built by scripts/test.d/atc.sh]
#   BENCH_OUT     scratch and results [bench-out/atc]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
HOIST_BIN="$(realpath "${HOIST_BIN:-target/release/hoist}")"
N="${N:-200}"
BENCH_OUT="$(mkdir -p "${BENCH_OUT:-bench-out/atc}" && realpath "${BENCH_OUT:-bench-out/atc}")"
log() { printf 'bench/atc: %s\n' "$*" >&2; }

[ -x "$HOIST_BIN" ] || { log "no hoist binary at $HOIST_BIN: cargo build --release -p hoist-cli"; exit 1; }
if [ -z "${HOIST_ATC_TEST_FLIGHT:-}" ]; then
  # shellcheck source=/dev/null
  source scripts/test.d/atc.sh
fi
: "${HOIST_ATC_TEST_FLIGHT:?the ATC test flight could not be built}"
KUBECTL="$(command -v kubectl || scripts/tools path kubectl)"

export HOIST_CONTROL_PLANE_DIR="$BENCH_OUT/cp"
rm -rf "$HOIST_CONTROL_PLANE_DIR"
eval "$(scripts/control-plane start)"
atc_pid=
cleanup() {
  [ -n "$atc_pid" ] && kill "$atc_pid" 2>/dev/null && wait "$atc_pid" 2>/dev/null
  scripts/control-plane stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

# The controller's own identity: a service account bound to cluster-admin.
k create namespace hoist-atc >/dev/null
k -n hoist-atc create serviceaccount controller >/dev/null
k create clusterrolebinding hoist-atc-controller --clusterrole cluster-admin \
  --serviceaccount hoist-atc:controller >/dev/null
token="$(k -n hoist-atc create token controller --duration 2h)"
server="$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')"
ca="$(k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
atc_kubeconfig="$BENCH_OUT/controller.kubeconfig"
cat >"$atc_kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: cp, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: atc, user: {token: "$token"}}]
contexts: [{name: atc, context: {cluster: cp, user: atc}}]
current-context: atc
EOF

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
rm -rf "$BENCH_OUT/cache"
log "starting hoist atc on 127.0.0.1:$port"
KUBECONFIG="$atc_kubeconfig" HOIST_LOG=hoist_atc=warn "$HOIST_BIN" atc --port "$port" \
  --webhook-url "https://127.0.0.1:$port" --cache-dir "$BENCH_OUT/cache" \
  ${CONCURRENCY:+--concurrency "$CONCURRENCY"} 2>"$BENCH_OUT/atc.log" &
atc_pid=$!
for _ in $(seq 1 240); do
  url="$(k get validatingwebhookconfiguration atc-airway -o jsonpath='{.webhooks[0].clientConfig.url}' 2>/dev/null || true)"
  [ "$url" = "https://127.0.0.1:$port/validations/airways.yoke.cd" ] && break
  sleep 0.25
done

group=bench.examples.com
cat >"$BENCH_OUT/airway.yaml" <<EOF
apiVersion: yoke.cd/v1alpha1
kind: Airway
metadata: {name: backends.$group}
spec:
  wasmUrls: {flight: "$HOIST_ATC_TEST_FLIGHT"}
  template:
    group: $group
    scope: Namespaced
    names: {kind: Backend, plural: backends, singular: backend}
    versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
EOF
k apply --server-side -f "$BENCH_OUT/airway.yaml" >/dev/null
k wait --for=condition=Ready --timeout=120s "airway/backends.$group" >/dev/null
CLIENTS="${CLIENTS:-1}"
rm -f "$BENCH_OUT"/instances-*.yaml
for i in $(seq 1 "$N"); do
  printf -- '---\napiVersion: %s/v1\nkind: Backend\nmetadata: {name: b%d, namespace: default}\nspec: {data: {i: "%d"}, replicas: 1}\n' \
    "$group" "$i" "$i" >>"$BENCH_OUT/instances-$((i % CLIENTS)).yaml"
done

# VmHWM counts every mapping of the same cached code file again (each load maps it; the pages
# are shared), so also sample what the process itself holds: its anonymous memory.
anon_peak_kb=0
file_peak_kb=0
sample_rss() {
  local a f
  a=$(awk '/RssAnon/ {print $2}' "/proc/$atc_pid/status" 2>/dev/null || echo 0)
  f=$(awk '/RssFile/ {print $2}' "/proc/$atc_pid/status" 2>/dev/null || echo 0)
  [ "${a:-0}" -gt "$anon_peak_kb" ] && anon_peak_kb=$a
  [ "${f:-0}" -gt "$file_peak_kb" ] && file_peak_kb=$f
  return 0
}
log "creating $N instances ($CLIENTS client(s))"
start=$(date +%s.%N)
pids=()
for f in "$BENCH_OUT"/instances-*.yaml; do
  k apply --server-side -f "$f" >/dev/null &
  pids+=($!)
done
while kill -0 "${pids[@]}" 2>/dev/null; do sample_rss; sleep 0.2; done
for pid in "${pids[@]}"; do wait "$pid"; done
created=$(date +%s.%N)
ready=0
while :; do
  sample_rss
  ready=$(k get "backends.$group" -n default -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)
  [ "$ready" -ge "$N" ] && break
  if python3 -c "import sys,time; sys.exit(0 if time.time()-$start < 600 else 1)"; then sleep 0.2; else
    log "only $ready of $N Ready after 600 s"; exit 1
  fi
done
done_at=$(date +%s.%N)
metrics="$(curl -sk "https://127.0.0.1:$port/metrics")"
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$atc_pid/status")
reconciles=$(printf '%s\n' "$metrics" | awk -F'} ' '/^hoist_atc_reconciles_total\{kind="Instance"\}/ {print $2}')
seconds=$(printf '%s\n' "$metrics" | awk -F'} ' '/^hoist_atc_reconcile_seconds_total\{kind="Instance"\}/ {print $2}')

python3 - "$N" "$start" "$created" "$done_at" "$rss_kb" "${reconciles:-0}" "${seconds:-0}" "$CLIENTS" "$anon_peak_kb" "$file_peak_kb" <<'EOF'
import os, sys
n, start, created, done, rss_kb, reconciles, seconds, clients, anon_kb, file_kb = sys.argv[1:]
n = int(n); start, created, done = float(start), float(created), float(done)
reconciles = int(float(reconciles)); seconds = float(seconds)
total = done - start
print(f"| measure | value |")
print(f"|---|---|")
print(f"| instances | {n} |")
print(f"| clients creating them | {clients} |")
print(f"| create all ({n} admissions with dry-run takeoff) | {created - start:.1f} s |")
print(f"| create to all Ready | {total:.1f} s |")
print(f"| Ready instances per second | {n / total:.1f} |")
print(f"| instance reconciles run | {reconciles} |")
print(f"| reconcile throughput | {reconciles / total:.1f} reconciles/s |")
print(f"| mean reconcile time | {1000 * seconds / max(reconciles, 1):.0f} ms |")
print(f"| controller peak RSS (VmHWM: file mappings counted once per mapping) | {int(rss_kb) / 1024:.0f} MB |")
print(f"| controller peak anonymous memory (RssAnon, sampled every 0.2 s) | {int(anon_kb) / 1024:.0f} MB |")
print(f"| controller peak file-backed resident (RssFile, sampled) | {int(file_kb) / 1024:.0f} MB |")
print(f"| machine | {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB |")
EOF

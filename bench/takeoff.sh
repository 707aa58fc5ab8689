#!/usr/bin/env bash
# Takeoff benchmark: one release of N ConfigMaps (default 500) on the local control plane,
# hoist vs the real yoke CLI: first install, no-op re-run, change 10 objects. Prints a
# markdown table of wall-clock seconds (median of RUNS runs, default 3).
#
#   scripts/control-plane start
#   bench/takeoff.sh            # HOIST_BIN=target/release/hoist, HOIST_YOKE=$(scripts/tools path yoke)
#
# Environment: N, RUNS, HOIST_BIN, HOIST_YOKE.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
cd "$HOIST_ROOT"

N="${N:-500}"
RUNS="${RUNS:-3}"
CHANGED=10

eval "$(scripts/control-plane env)" || die "no control plane: run scripts/control-plane start"
[[ -n "${KUBECONFIG:-}" ]] || die "scripts/control-plane env did not set KUBECONFIG"

HOIST_BIN="${HOIST_BIN:-}"
if [[ -z "$HOIST_BIN" ]]; then
  if [[ -x target/release/hoist ]]; then
    HOIST_BIN=target/release/hoist
  else
    log "building hoist (release)"
    cargo build --release -p hoist-cli >&2
    HOIST_BIN=target/release/hoist
  fi
fi

YOKE="${HOIST_YOKE:-}"
YOKE_NOTE=""
if [[ -z "$YOKE" ]]; then
  YOKE=$(scripts/tools path yoke) || { log "the real yoke CLI could not be built from ../shared/peers (scripts/tools path yoke)"; exit 1; }
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# flight FILE VALUE_OF_FIRST_10: N ConfigMaps, the first $CHANGED with a different value.
flight() {
  local file=$1 first=$2 i value
  : >"$file"
  for ((i = 0; i < N; i++)); do
    value=base
    ((i < CHANGED)) && value=$first
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%04d\ndata:\n  value: "%s"\n  index: "%d"\n' "$i" "$value" "$i" >>"$file"
  done
}
flight "$WORK/v1.yaml" base
flight "$WORK/v2.yaml" changed

now() { date +%s.%N; }

# timed OUTVAR CMD...: runs CMD (stdin from the caller), stores elapsed seconds.
timed() {
  local __var=$1 start end
  shift
  start=$(now)
  "$@" >/dev/null 2>"$WORK/stderr" || {
    cat "$WORK/stderr" >&2
    die "failed: $*"
  }
  end=$(now)
  printf -v "$__var" '%.2f' "$(echo "$end - $start" | bc -l)"
}

median() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : sprintf("%.2f", (a[NR/2] + a[NR/2+1]) / 2)}'
}

ensure_ns() {
  local ns=$1
  printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n' "$ns" |
    "$HOIST_BIN" takeoff -n default "bench-ns-$ns" >/dev/null 2>&1 || die "cannot create namespace $ns"
}

drop_ns() {
  "$HOIST_BIN" mayday --remove-namespaces -n default "bench-ns-$1" >/dev/null 2>&1 || true
}

# run_tool NAME: sets INSTALL NOOP CHANGE (medians).
run_tool() {
  local tool=$1 r ns install=() noop=() change=() t
  for ((r = 0; r < RUNS; r++)); do
    ns="bench-$tool-$$-$r"
    ensure_ns "$ns"
    case "$tool" in
      hoist)
        timed t "$HOIST_BIN" takeoff -n "$ns" bench <"$WORK/v1.yaml"; install+=("$t")
        timed t "$HOIST_BIN" takeoff -n "$ns" bench <"$WORK/v1.yaml"; noop+=("$t")
        timed t "$HOIST_BIN" takeoff -n "$ns" bench <"$WORK/v2.yaml"; change+=("$t")
        "$HOIST_BIN" mayday -n "$ns" bench >/dev/null 2>&1 || true
        ;;
      yoke)
        timed t "$YOKE" takeoff --namespace "$ns" bench <"$WORK/v1.yaml"; install+=("$t")
        timed t "$YOKE" takeoff --namespace "$ns" bench <"$WORK/v1.yaml"; noop+=("$t")
        timed t "$YOKE" takeoff --namespace "$ns" bench <"$WORK/v2.yaml"; change+=("$t")
        "$YOKE" mayday --namespace "$ns" bench >/dev/null 2>&1 || true
        ;;
    esac
    drop_ns "$ns"
  done
  INSTALL=$(median "${install[@]}")
  NOOP=$(median "${noop[@]}")
  CHANGE=$(median "${change[@]}")
}

need_cmd bc bc
log "hoist: $HOIST_BIN; $N ConfigMaps, $RUNS runs each"
run_tool hoist
H=("$INSTALL" "$NOOP" "$CHANGE")
if [[ -n "$YOKE" ]]; then
  log "yoke: $YOKE"
  run_tool yoke
  Y=("$INSTALL" "$NOOP" "$CHANGE")
else
  Y=(n/a n/a n/a)
fi

echo "Takeoff of one release with $N ConfigMaps on the local control plane (median of $RUNS, seconds):"
echo
echo "| step | hoist | yoke |"
echo "|---|---:|---:|"
echo "| first install | ${H[0]} | ${Y[0]} |"
echo "| no-op re-run | ${H[1]} | ${Y[1]} |"
echo "| change $CHANGED objects | ${H[2]} | ${Y[2]} |"
if [[ -n "$YOKE_NOTE" ]]; then
  echo
  echo "($YOKE_NOTE)"
fi

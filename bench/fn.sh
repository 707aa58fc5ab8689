#!/usr/bin/env bash
# KRM functions, two tables on stdout (markdown):
# 1. `hoist fn eval` against node running the same Go js/wasm KRM function the way released
#    kpt does (Go's wasm_exec.js plus kpt-style glue calling processResourceList):
#    set-namespace from the kpt catalog on a 50-resource ResourceList. hoist is measured with
#    an empty compiled-module cache (cold) and a filled one (warm).
# 2. `hoist fn render` of a 20-package tree (a root and 19 subpackages, 5 resources each) with
#    a 3-function pipeline (set-namespace, set-annotations js/wasm, set-annotations wasip1),
#    warm: once with the pipeline on the root only (3 function runs over 100 resources), once
#    with the pipeline in every package (60 function runs, depth-first; sibling subpackages
#    at once, hoist's default), that with `--jobs 1` (one package at a time, as kpt), and with
#    snapshots on (HOIST_GOJS_SNAPSHOT=1: js/wasm post-main and first-read-of-stdin snapshots,
#    wasip1 resume points; off by default) to show what they change.
#    Warm rows run optimised (Cranelift) code, what a user's cache holds once the background
#    compile after the first run is done (HOIST_COMPILER=cranelift; the cold row tiers).
#
#   bench/fn.sh
#
# Environment:
#   HOIST_BIN   hoist binary [target/release/hoist; built with cargo if missing]
#   FN          catalog function [set-namespace]; FN_ARGS its `-- k=v` [namespace=bench]
#   RESOURCES   ConfigMaps in the input [50]
#   RUNS        timed runs per row [5]
#   BENCH_OUT   inputs and raw results [bench-out/fn]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"

HOIST_BIN="${HOIST_BIN:-target/release/hoist}"
FN="${FN:-set-namespace}"
FN_ARGS="${FN_ARGS:-namespace=bench}"
RESOURCES="${RESOURCES:-50}"
RUNS="${RUNS:-5}"
BENCH_OUT="${BENCH_OUT:-bench-out/fn}"

log() { printf 'bench/fn: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is required"
command -v node >/dev/null || die "node is required (Debian package nodejs)"

load="$(cut -d' ' -f1 /proc/loadavg)"
fns="${HOIST_TOOLS_DIR:-$HOME/.cache/hoist-tools}/krm-functions"
"$root/../shared/peers/build-krm-functions" "$fns" "$FN" set-annotations >/dev/null || die "building functions failed"
module="$fns/$FN.wasm"
[ -x "$HOIST_BIN" ] || cargo build --release -p hoist-cli >&2
mkdir -p "$BENCH_OUT"
out="$(cd "$BENCH_OUT" && pwd)"

# Input: a ResourceList of $RESOURCES ConfigMaps, with kpt's functionConfig for node.
python3 - "$RESOURCES" "$FN_ARGS" "$out" <<'PY'
import sys
n, args, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
items = "".join(
    f"- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: cm-{i}\n    namespace: default\n"
    f"    annotations:\n      config.kubernetes.io/path: cm-{i}.yaml\n  data:\n    key: value-{i}\n"
    for i in range(n))
rl = "apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems:\n" + items
data = "".join(f"    {kv.split('=',1)[0]}: {kv.split('=',1)[1]}\n" for kv in args.split())
open(f"{out}/input.yaml", "w").write(rl)
open(f"{out}/input-with-config.yaml", "w").write(
    rl + "functionConfig:\n  apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: function-input\n  data:\n" + data)
PY

wasm_exec="$(go env GOROOT)/lib/wasm/wasm_exec.js"
node_cmd=(node "$root/testdata/krm/kpt-glue.js" "$wasm_exec" "$module")
# shellcheck disable=SC2206
hoist_cmd=("$HOIST_BIN" fn eval - -i "$module" -- $FN_ARGS)

# time_row NAME PREP STDIN CMD...: mean/min wall time and peak RSS over $RUNS runs.
time_row() {
  python3 - "$RUNS" "$@" <<'PY'
import resource, subprocess, sys, time, os
runs, name, prep, stdin, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
times, rss = [], 0
for _ in range(runs):
    if prep:
        subprocess.run(prep, shell=True, check=True)
    with open(stdin, "rb") as f:
        t = time.perf_counter()
        p = subprocess.run(cmd, stdin=f, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    if p.returncode != 0 or b"kind: ResourceList" not in p.stdout:
        sys.exit(f"{name}: run failed (exit {p.returncode})")
    rss = max(rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(f"{name}\t{sum(times)/len(times):.3f}\t{min(times):.3f}\t{rss/1024:.0f}")
PY
}

cache="$out/cache"
log "node (kpt's runtime) x$RUNS"
node_row=$(time_row "node + wasm_exec.js (kpt)" "" "$out/input-with-config.yaml" "${node_cmd[@]}")
log "hoist cold x$RUNS"
cold_row=$(HOIST_CACHE_DIR="$cache" HOIST_BACKGROUND_COMPILE=0 time_row "hoist fn eval, cold cache" "rm -rf '$cache'" "$out/input.yaml" "${hoist_cmd[@]}")
log "hoist warm x$RUNS"
HOIST_CACHE_DIR="$cache" HOIST_BACKGROUND_COMPILE=0 HOIST_COMPILER=cranelift "${hoist_cmd[@]}" <"$out/input.yaml" >/dev/null 2>&1
warm_row=$(HOIST_CACHE_DIR="$cache" HOIST_BACKGROUND_COMPILE=0 HOIST_COMPILER=cranelift time_row "hoist fn eval, warm cache" "" "$out/input.yaml" "${hoist_cmd[@]}")

node_mean=$(cut -f2 <<<"$node_row")
echo "fn eval of $FN ($(( $(stat -c %s "$module") / 1000000 )) MB js/wasm) on $RESOURCES resources; $RUNS runs; load $load; $(nproc) cores"
echo
echo "| runner | mean s | min s | peak RSS MiB | vs node |"
echo "|---|---:|---:|---:|---:|"
for row in "$node_row" "$cold_row" "$warm_row"; do
  IFS=$'\t' read -r name mean min rss <<<"$row"
  ratio=$(python3 -c "print(f'{$node_mean/$mean:.1f}x')")
  echo "| $name | $mean | $min | $rss | $ratio |"
done

# ---- fn render of a 20-package tree -----------------------------------------------------------
tree="$out/tree"
python3 - "$tree" <<'PY'
import os, shutil, sys
tree = sys.argv[1]
pipeline = """pipeline:
  mutators:
    - image: set-namespace:v0.4.1
      configMap:
        namespace: rendered
    - image: set-annotations:v0.1.4
      configMap:
        team: payments
    - image: set-annotations-wasi:v0.1.4
      configMap:
        tier: web
"""
def package(d, name, with_pipeline):
    os.makedirs(d, exist_ok=True)
    k = f"apiVersion: kpt.dev/v1\nkind: Kptfile\nmetadata:\n  name: {name}\n"
    open(f"{d}/Kptfile", "w").write(k + (pipeline if with_pipeline else ""))
    docs = [f"# {name} config {i}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-{i}\n  namespace: default\ndata:\n  key: value-{i}\n" for i in range(5)]
    open(f"{d}/resources.yaml", "w").write("---\n".join(docs))
for mode in ("root", "every"):
    base = f"{tree}/{mode}"
    shutil.rmtree(base, ignore_errors=True)
    package(base, "app", True)
    for i in range(19):
        package(f"{base}/pkg-{i:02d}", f"pkg-{i:02d}", mode == "every")
PY
printf '{"ghcr.io/kptdev/krm-functions-catalog/set-namespace": "%s", "ghcr.io/kptdev/krm-functions-catalog/set-annotations": "%s", "ghcr.io/kptdev/krm-functions-catalog/set-annotations-wasi": "%s"}\n' \
  "$module" "$fns/set-annotations.wasm" "$fns/set-annotations.wasip1.wasm" >"$out/images.json"

# render_row NAME MODE: mean/min wall time and peak RSS of `hoist fn render` on a fresh copy.
render_row() {
  python3 - "$RUNS" "$1" "$tree/$2" "$out/work" "$HOIST_BIN" <<'PY'
import os, resource, shutil, subprocess, sys, time
runs, name, src, work, hoist = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
jobs = ["--jobs", os.environ["RENDER_JOBS"]] if os.environ.get("RENDER_JOBS") else []
times, rss = [], 0
for _ in range(runs):
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    t = time.perf_counter()
    p = subprocess.run([hoist, "fn", "render", work, *jobs], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    times.append(time.perf_counter() - t)
    if p.returncode != 0:
        sys.exit(f"{name}: render failed: {p.stderr.decode()[-2000:]}")
    rss = max(rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(f"{name}\t{sum(times)/len(times):.3f}\t{min(times):.3f}\t{rss/1024:.0f}")
PY
}
export HOIST_FN_IMAGE_MAP="$out/images.json" HOIST_CACHE_DIR="$cache" HOIST_BACKGROUND_COMPILE=0 HOIST_COMPILER=cranelift
log "hoist fn render (warming the cache)"
render_row "warm-up" root >/dev/null
log "hoist fn render x$RUNS"
root_row=$(render_row "pipeline on the root (3 runs, 100 resources)" root)
every_row=$(render_row "pipeline in all 20 packages (60 runs)" every)
# One package at a time, as kpt renders (the default hydrates sibling subpackages at once).
serial_row=$(RENDER_JOBS=1 render_row "pipeline in all 20 packages, --jobs 1" every)
# The same with snapshots (later calls restore Go's state instead of starting it).
snap_row=$(HOIST_GOJS_SNAPSHOT=1 render_row "pipeline in all 20 packages, HOIST_GOJS_SNAPSHOT=1" every)
echo
echo "fn render of a 20-package tree, 3-function pipeline, warm cache; $RUNS runs"
echo
echo "| tree | mean s | min s | peak RSS MiB |"
echo "|---|---:|---:|---:|"
for row in "$root_row" "$every_row" "$serial_row" "$snap_row"; do
  IFS=$'\t' read -r name mean min rss <<<"$row"
  echo "| $name | $mean | $min | $rss |"
done

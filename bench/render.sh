#!/usr/bin/env bash
# Whole-process render time of the `realistic` flight: the native Go binary
# against `hoist render` with a cold and a warm compiled-module cache, for each
# Wasm compiler. Prints a markdown table on stdout (progress goes to stderr).
#
#   bench/render.sh                  # from anywhere in the checkout
#
# Environment:
#   HOIST_BIN   hoist binary [target/release/hoist; built with cargo if missing]
#   COMPILERS   compilers to measure, passed as HOIST_COMPILER [interpreter cranelift
#               winch]; `interpreter` is tier 0 (what a cold `hoist render` runs on: wasmi,
#               HOIST_INTERPRETER=always, cold row only, background compile off so runs do
#               not pile up); empty: native row only
#   FLIGHT      test flight to render [realistic]; yoke:NAME renders yoke's own example
#               NAME (basic, lookup), built from ../shared/peers by scripts/test.d/yoke.sh
#               (its native row is built here from the same archive)
#   HOIST_YOKE  the real yoke CLI for the yoke rows [scripts/tools path yoke]; YOKE=0
#               leaves them out
#   RUNS        timed runs per row [10]
#   WARMUP      warm-up runs per row [2]
#   BENCH_OUT   where inputs and raw results go [bench-out/render]
#   BENCH_TIMER hyperfine or python [hyperfine when installed]
#
# Uses hyperfine (Debian package `hyperfine`) when installed, else a python3
# timing loop; peak RSS comes from GNU time (`/usr/bin/time`, package `time`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

HOIST_BIN="${HOIST_BIN:-target/release/hoist}"
COMPILERS="${COMPILERS-interpreter cranelift winch}"
FLIGHT="${FLIGHT:-realistic}"
RUNS="${RUNS:-10}"
WARMUP="${WARMUP:-2}"
BENCH_OUT="${BENCH_OUT:-bench-out/render}"

if [ -z "${BENCH_TIMER:-}" ]; then
  if command -v hyperfine >/dev/null; then BENCH_TIMER=hyperfine; else BENCH_TIMER=python; fi
fi

log() { printf 'bench/render: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is required (Debian package python3)"
[ -x /usr/bin/time ] || die "/usr/bin/time is required for peak RSS (apt-get install time)"

load="$(cut -d' ' -f1 /proc/loadavg)" # before we add our own load

# --- inputs -------------------------------------------------------------------
native_target=()
[ "$FLIGHT" = realistic ] && native_target=(realistic-native)
testdata="${HOIST_TESTDATA_DIR:-target/testdata}"
if [[ "$FLIGHT" == yoke:* ]]; then
  # shellcheck source=/dev/null
  . scripts/test.d/yoke.sh || die "building yoke's example flights failed"
  module="$HOIST_YOKE_EXAMPLES_DIR/${FLIGHT#yoke:}.wasm"
  # The same example as a native Linux binary, for the "× native" column.
  native="$(mkdir -p "$BENCH_OUT/native" && cd "$BENCH_OUT/native" && pwd)/${FLIGHT#yoke:}"
  if [ ! -x "$native" ]; then
    log "building yoke's ${FLIGHT#yoke:} example natively"
    src="$(mktemp -d)"
    tar -xzf "${HOIST_PEERS_DIR:-$root/../shared/peers}/yoke-v0.20.27-src.tar.gz" -C "$src"
    (cd "$src/build" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -o "$native" \
      "github.com/yokecd/yoke/examples/${FLIGHT#yoke:}") || log "native build failed: no native row"
    rm -rf "$src"
  fi
else
  scripts/build-testdata "$FLIGHT" ${native_target[@]+"${native_target[@]}"} || die "building the $FLIGHT flight failed"
  module="$testdata/$FLIGHT.wasm"
  native="$testdata/$FLIGHT-native"
fi
[ -f "$module" ] || die "$module is missing after scripts/build-testdata"
[ -x "$native" ] || native=""

if [ ! -x "$HOIST_BIN" ]; then
  [ "$HOIST_BIN" = target/release/hoist ] || die "HOIST_BIN=$HOIST_BIN is not an executable"
  log "building hoist (cargo build --release -p hoist-cli)"
  cargo build --release -p hoist-cli >&2 || die "cargo build --release -p hoist-cli failed"
fi

mkdir -p "$BENCH_OUT"
out="$(cd "$BENCH_OUT" && pwd)"
input="$out/input.json"
cat >"$input" <<'JSON'
{
  "image": "ghcr.io/example/shop:2.8.1",
  "replicas": 3,
  "maxReplicas": 12,
  "port": 8080,
  "host": "shop.example.com",
  "cpu": "250m",
  "memory": "256Mi",
  "env": {"MODE": "production", "REGION": "eu-west-1"},
  "config": {"LOG_LEVEL": "info", "CACHE_TTL": "60s"},
  "labels": {"team": "payments"},
  "secret": {"API_TOKEN": "bench"}
}
JSON

q() { printf '%q' "$1"; }
hoist_cmd() { # hoist_cmd COMPILER CACHE_DIR
  local tier="HOIST_COMPILER=$1"
  [ "$1" = interpreter ] && tier="HOIST_INTERPRETER=always HOIST_BACKGROUND_COMPILE=0"
  printf '%s HOIST_CACHE_DIR=%s %s render %s --release bench --namespace bench -o json < %s > /dev/null' \
    "$tier" "$(q "$2")" "$(q "$HOIST_BIN")" "$(q "$module")" "$(q "$input")"
}
yoke_cmd() { # yoke_cmd CACHE_DIR
  printf 'KUBECONFIG=%s %s takeoff -stdout -compilation-cache %s -namespace bench bench %s < %s > /dev/null' \
    "$(q "$yoke_kubeconfig")" "$(q "$YOKE")" "$(q "$1")" "$(q "$module")" "$(q "$input")"
}
native_cmd() {
  printf 'YOKE_RELEASE=bench NAMESPACE=bench %s < %s > /dev/null' "$(q "$native")" "$(q "$input")"
}

# --- measurement --------------------------------------------------------------
# measure NAME PREPARE CMD: time CMD (after PREPARE each run), write $out/NAME.json
# in hyperfine's export format.
measure() {
  local name="$1" prepare="$2" cmd="$3"
  if [ "$BENCH_TIMER" = hyperfine ]; then
    local args=(--runs "$RUNS" --warmup "$WARMUP" --export-json "$out/$name.json" --style basic)
    [ -n "$prepare" ] && args+=(--prepare "$prepare")
    hyperfine "${args[@]}" "$cmd" >&2
  else
    python3 - "$out/$name.json" "$RUNS" "$WARMUP" "$prepare" "$cmd" <<'PY'
import json, statistics, subprocess, sys, time
path, runs, warmup, prepare, cmd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
times = []
for i in range(warmup + runs):
    if prepare:
        subprocess.run(prepare, shell=True, check=True)
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    if i >= warmup:
        times.append(time.perf_counter() - t)
r = {"command": cmd, "times": times, "mean": statistics.mean(times),
     "stddev": statistics.stdev(times) if len(times) > 1 else 0.0,
     "median": statistics.median(times), "min": min(times), "max": max(times)}
json.dump({"results": [r]}, open(path, "w"))
print(f"  {cmd}\n  mean {r['mean']*1000:.1f} ms ± {r['stddev']*1000:.1f}", file=sys.stderr)
PY
  fi
}

# peak_rss PREPARE CMD: median peak RSS in KiB over 3 runs.
peak_rss() {
  local prepare="$1" cmd="$2" i rss=()
  for i in 1 2 3; do
    [ -n "$prepare" ] && sh -c "$prepare"
    rss+=("$(/usr/bin/time -f %M -o "$out/rss.txt" sh -c "$cmd" && tail -n1 "$out/rss.txt")")
  done
  printf '%s\n' "${rss[@]}" | sort -n | sed -n 2p
}

# works CMD: run once; on failure, print why on stderr.
works() {
  local err
  if ! err="$(sh -c "$1" 2>&1 >/dev/null)"; then
    log "this command fails, its row is skipped: $1"
    printf '%s\n' "$err" | head -n 5 >&2
    return 1
  fi
}

rows=() # "label|compiler|json|rss_kib"
if [ -n "$native" ]; then
  cmd="$(native_cmd)"
  if works "$cmd"; then
    log "measuring: native Go binary"
    measure native "" "$cmd"
    rows+=("native Go binary|–|native|$(peak_rss "" "$cmd")")
  fi
else
  log "no $FLIGHT-native binary: no native row"
fi

for compiler in $COMPILERS; do
  cold_dir="$out/cache-cold-$compiler"
  warm_dir="$out/cache-warm-$compiler"
  rm -rf "$cold_dir" "$warm_dir"
  prepare="rm -rf $(q "$cold_dir")"
  cmd="$(hoist_cmd "$compiler" "$cold_dir")"
  if works "$cmd"; then
    log "measuring: hoist render, cold cache, $compiler"
    measure "cold-$compiler" "$prepare" "$cmd"
    rows+=("hoist render, cold cache|$compiler|cold-$compiler|$(peak_rss "$prepare" "$cmd")")
  fi
  [ "$compiler" = interpreter ] && continue # tier 0 runs only on a miss
  cmd="$(hoist_cmd "$compiler" "$warm_dir")"
  if works "$cmd"; then # this run also fills the cache
    log "measuring: hoist render, warm cache, $compiler"
    measure "warm-$compiler" "" "$cmd"
    rows+=("hoist render, warm cache|$compiler|warm-$compiler|$(peak_rss "" "$cmd")")
  fi
done
if [ "${YOKE:-}" != 0 ]; then
  YOKE="${HOIST_YOKE:-$(scripts/tools path yoke)}" || die "the real yoke CLI could not be built (scripts/tools path yoke); YOKE=0 leaves its rows out"
  # yoke insists on a kubeconfig file even for -stdout (it never calls the server then): a
  # stand-in pointing at a closed loopback port.
  yoke_kubeconfig="$out/kubeconfig-none"
  printf '%s\n' 'apiVersion: v1' 'kind: Config' \
    'clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]' \
    'users: [{name: none, user: {}}]' \
    'contexts: [{name: none, context: {cluster: none, user: none, namespace: bench}}]' \
    'current-context: none' >"$yoke_kubeconfig"
  cold_dir="$out/cache-cold-yoke"
  warm_dir="$out/cache-warm-yoke"
  rm -rf "$cold_dir" "$warm_dir"
  prepare="rm -rf $(q "$cold_dir")"
  cmd="$(yoke_cmd "$cold_dir")"
  if works "$cmd"; then
    log "measuring: yoke takeoff -stdout, cold cache"
    measure cold-yoke "$prepare" "$cmd"
    rows+=("yoke takeoff -stdout, cold cache|yoke (wazero)|cold-yoke|$(peak_rss "$prepare" "$cmd")")
  fi
  cmd="$(yoke_cmd "$warm_dir")"
  if works "$cmd"; then
    log "measuring: yoke takeoff -stdout, warm cache"
    measure warm-yoke "" "$cmd"
    rows+=("yoke takeoff -stdout, warm cache|yoke (wazero)|warm-yoke|$(peak_rss "" "$cmd")")
  fi
fi
[ "${#rows[@]}" -gt 0 ] || die "nothing could be measured (see the errors above)"

# --- report -------------------------------------------------------------------
cpu="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
hoist_version="$("$HOIST_BIN" --version 2>/dev/null | head -n1 || true)"
if [ "$BENCH_TIMER" = hyperfine ]; then
  timer="$(hyperfine --version)"
else
  timer="python3 timing loop"
fi
size="$(stat -c %s "$module")"

python3 - "$out" "$FLIGHT" "$size" "$(nproc)" "$cpu" "$(uname -r)" "${hoist_version:-hoist}" \
  "$(go version 2>/dev/null | cut -d' ' -f3)" "$timer" "$RUNS" "$WARMUP" "$(date -u +%Y-%m-%d)" "$load" \
  "${rows[@]}" <<'PY'
import json, os, sys
out, flight, size, ncpu, cpu, kernel, hoist, gov, timer, runs, warmup, day, load = sys.argv[1:14]
rows = [r.split("|") for r in sys.argv[14:]]

def result(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)["results"][0]

def ms(s):
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1000:.0f} ms" if s >= 0.1 else f"{s * 1000:.1f} ms"

def times(x):
    return f"{x:.0f}×" if x >= 100 else f"{x:.1f}×"

native = next((result(n) for _, _, n, _ in rows if n == "native"), None)
print(f"### `hoist render` (and `yoke takeoff -stdout`) of the `{flight}` flight ({int(size) / 1e6:.1f} MB of wasm)\n")
print(f"Machine: {ncpu} CPUs, {cpu}, Linux {kernel}. {hoist}, Go {gov.removeprefix('go')}, "
      f"{timer}: {runs} runs after {warmup} warm-ups, {day}; load average {load} at start. "
      "Whole-process wall time; cold = empty compiled-module cache each run.\n")
print("| run | compiler | mean ± σ | min | max | peak RSS | × native |")
print("|---|---|---|---|---|---|---|")
for label, compiler, name, rss in rows:
    r = result(name)
    ratio = times(r['mean'] / native['mean']) if native else "–"
    rss = f"{int(rss) / 1024:.0f} MiB" if rss.isdigit() else "?"
    print(f"| {label} | {compiler} | {ms(r['mean'])} ± {ms(r['stddev'])} | {ms(r['min'])} "
          f"| {ms(r['max'])} | {rss} | {ratio} |")
PY

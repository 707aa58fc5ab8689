#!/usr/bin/env bash
# Where a warm render's time goes, against the native binary of the same Go program.
# CPU time (perf's task-clock, all threads) is the main figure: unlike wall time it hardly
# moves with the machine's load, so the breakdown stays readable on a busy machine. Rows:
#
#   process start         `hoist --version`: exec, dynamic loading and relocation, exit
#   tiny flight, warm     + engine set-up, a cached module, instantiation, WASI, a `_start`
#                           that prints one constant object
#   FLIGHT, warm          + Go's runtime start, package initialisers and the flight itself
#   FLIGHT, native        the same Go program built for linux/amd64
#
# then the hottest symbols of the warm FLIGHT run (perf record), grouped: guest code, the
# kernel (page faults, exec, exit), hoist itself.
#
#   bench/warm.sh
#
# Environment:
#   HOIST_BIN   hoist binary [target/release/hoist; built with cargo if missing]
#   FLIGHT      yoke:NAME (yoke's example NAME, from ../shared/peers) [yoke:basic]
#   RUNS        runs per row [30]
#   BENCH_OUT   scratch directory [bench-out/warm]
#
# Needs perf (Debian package linux-perf) and Go.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$PATH:/usr/local/go/bin"

HOIST_BIN="${HOIST_BIN:-target/release/hoist}"
FLIGHT="${FLIGHT:-yoke:basic}"
RUNS="${RUNS:-30}"
BENCH_OUT="${BENCH_OUT:-bench-out/warm}"

log() { printf 'bench/warm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v perf >/dev/null || die "perf is required (apt-get install linux-perf)"
case "$FLIGHT" in
  yoke:*) example="${FLIGHT#yoke:}" ;;
  *) die "FLIGHT must be yoke:NAME (a yoke example with a native build)" ;;
esac
load="$(cut -d' ' -f1 /proc/loadavg)"

if [ ! -x "$HOIST_BIN" ]; then
  log "building $HOIST_BIN (release)"
  cargo build --release -p hoist-cli >&2
fi
HOIST_BIN="$(cd "$(dirname "$HOIST_BIN")" && pwd)/$(basename "$HOIST_BIN")"

mkdir -p "$BENCH_OUT"
BENCH_OUT="$(cd "$BENCH_OUT" && pwd)"

# --- inputs: the example as Wasm (scripts/test.d/yoke.sh) and natively -----------------
archive="${HOIST_PEERS_DIR:-$root/../shared/peers}/yoke-v0.20.27-src.tar.gz"
[ -f "$archive" ] || die "$archive is missing (../shared/peers must sit next to the checkout)"
# shellcheck source=/dev/null
. "$root/scripts/test.d/yoke.sh"
wasm="$HOIST_YOKE_EXAMPLES_DIR/$example.wasm"
[ -f "$wasm" ] || die "$wasm was not built"
native="$BENCH_OUT/$example-native"
if [ ! -x "$native" ]; then
  log "building yoke's $example example natively"
  src="$BENCH_OUT/src"
  rm -rf "$src" && mkdir -p "$src" && tar -xzf "$archive" -C "$src"
  (cd "$src/build" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -o "$native" \
    "github.com/yokecd/yoke/examples/$example") || die "native build failed"
  rm -rf "$src"
fi
empty="$BENCH_OUT/empty.wasm"
python3 - "$empty" <<'EOF'
import sys
# The smallest WASI command that prints one object: fd_write of a constant (hand-assembled).
doc = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"empty"}}'
def sleb(n):  # i32.const takes a signed LEB128
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            return bytes(out + bytes([b]))
        out.append(b | 0x80)
def vec(items): return bytes([len(items)]) + b"".join(items)
def sec(n, body): return bytes([n, len(body)]) + body
def name(s): return bytes([len(s)]) + s
i32 = 0x7f
types = vec([bytes([0x60, 4, i32, i32, i32, i32, 1, i32]), bytes([0x60, 0, 0])])
imports = vec([name(b"wasi_snapshot_preview1") + name(b"fd_write") + bytes([0x00, 0x00])])
funcs = vec([bytes([0x01])])
memory = vec([bytes([0x00, 0x01])])
exports = vec([name(b"memory") + bytes([0x02, 0x00]), name(b"_start") + bytes([0x00, 0x01])])
code = bytes([0x00,                                   # no locals
    0x41, 0x00, 0x41, 0x10, 0x36, 0x02, 0x00,            # mem[0] = 16 (iovec base)
    0x41, 0x04, 0x41]) + sleb(len(doc)) + bytes([0x36, 0x02, 0x00,  # mem[4] = len
    0x41, 0x01, 0x41, 0x00, 0x41, 0x01, 0x41, 0x08,      # fd 1, iovs 0, 1 iovec, nwritten at 8
    0x10, 0x00, 0x1a, 0x0b])                             # call fd_write; drop; end
codes = vec([bytes([len(code)]) + code])
data = vec([bytes([0x00, 0x41, 0x10, 0x0b, len(doc)]) + doc])  # len < 128: one LEB byte
wasm = (b"\0asm" + bytes([1, 0, 0, 0]) + sec(1, types) + sec(2, imports) + sec(3, funcs)
        + sec(5, memory) + sec(7, exports) + sec(10, codes) + sec(11, data))
open(sys.argv[1], "wb").write(wasm)
EOF
[ -s "$empty" ] || die "could not make the empty module"

export HOIST_CACHE_DIR="$BENCH_OUT/cache" HOIST_COMPILER=cranelift HOIST_BACKGROUND_COMPILE=0
export YOKE_RELEASE=bench NAMESPACE=bench
rm -rf "$HOIST_CACHE_DIR"
for m in "$empty" "$wasm"; do
  "$HOIST_BIN" render "$m" </dev/null >/dev/null || die "hoist render $m failed"
done
# Let the code files settle (the cache trusts a file's identity only after 2 s), then load
# once more so the identity is recorded: what every later warm run sees.
sleep 3
for m in "$empty" "$wasm"; do "$HOIST_BIN" render "$m" </dev/null >/dev/null; done

# perf stat -r: mean task-clock (ms of CPU) and mean wall time.
stat_row() {
  local name=$1
  shift
  local out
  out="$(perf stat -r "$RUNS" -x, -e task-clock -- "$@" 2>&1 >/dev/null </dev/null | grep task-clock)" ||
    die "perf stat failed for $name"
  local cpu_ms
  cpu_ms="$(printf '%s' "$out" | cut -d, -f1)"
  local wall_ms
  wall_ms="$(python3 - "$RUNS" "$@" <<'EOF'
import statistics, subprocess, sys, time
runs = int(sys.argv[1]); cmd = sys.argv[2:]
t = []
for _ in range(runs):
    s = time.perf_counter()
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.append((time.perf_counter() - s) * 1000)
print(f"{statistics.median(t):.1f}")
EOF
)"
  printf '%s|%s|%s\n' "$name" "$cpu_ms" "$wall_ms"
}

log "measuring ($RUNS runs a row; load average $load)"
rows=()
rows+=("$(stat_row "process start (hoist --version)" "$HOIST_BIN" --version)")
rows+=("$(stat_row "tiny flight, warm" "$HOIST_BIN" render "$empty")")
rows+=("$(stat_row "$example, warm (Cranelift code)" "$HOIST_BIN" render "$wasm")")
rows+=("$(stat_row "$example, native" "$native")")

native_cpu="$(printf '%s\n' "${rows[3]}" | cut -d'|' -f2)"
native_wall="$(printf '%s\n' "${rows[3]}" | cut -d'|' -f3)"
echo "Machine: $(nproc) CPUs, $(uname -sr); load average $load at start. $RUNS runs a row."
echo
echo "| run | CPU ms (task-clock, mean) | × native CPU | wall ms (median) | × native wall |"
echo "|---|---|---|---|---|"
for r in "${rows[@]}"; do
  IFS='|' read -r name cpu wall <<<"$r"
  python3 -c "import sys; n,c,w,nc,nw=sys.argv[1:]; print(f'| {n} | {float(c):.1f} | {float(c)/float(nc):.1f}× | {float(w):.1f} | {float(w)/float(nw):.1f}× |')" \
    "$name" "$cpu" "$wall" "$native_cpu" "$native_wall"
done

# --- where the warm run's CPU goes ------------------------------------------------------
log "profiling $RUNS warm runs"
perf record -q -F 10000 -o "$BENCH_OUT/perf.data" -- bash -c \
  "for i in \$(seq $RUNS); do '$HOIST_BIN' render '$wasm' </dev/null >/dev/null; done" 2>/dev/null
echo
echo "Where the warm $example run's CPU goes (perf record, $RUNS runs, share of all samples):"
echo
echo "| part | share |"
echo "|---|---|"
perf report -i "$BENCH_OUT/perf.data" --sort dso --stdio 2>/dev/null |
  awk -v bin="$(basename "$HOIST_BIN")" '/%/ && !/^#/ {
    pct=$1; sub("%","",pct); dso=$2
    if (dso ~ /\.cwasm$/) g+=pct; else if (dso ~ /kernel/) k+=pct; else if (dso==bin) h+=pct; else if (dso ~ /^(lib|ld-)/) o+=pct
  } END {
    printf "| guest code (Go runtime, initialisers, the flight) | %.0f%% |\n", g
    printf "| kernel (exec, page faults, memory set-up, exit) | %.0f%% |\n", k
    printf "| hoist (engine, cache load, WASI, output) | %.0f%% |\n", h
    printf "| libc and the dynamic loader | %.0f%% |\n", o
  }'
echo
echo "Hottest symbols:"
echo
echo '```'
perf report -i "$BENCH_OUT/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null |
  grep -v '^#' | grep '%' | head -15
echo '```'

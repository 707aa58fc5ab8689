#!/usr/bin/env bash
# Build the example flight into target/examples/hello-flight.wasm (or $1).
# Skips the build when the sources and `go version` are unchanged since the last one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/examples/hello-flight.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || {
  echo "hello-flight: go not found on PATH; install Go 1.26+ and retry" >&2
  exit 1
}

hash="$( { go version; cd "$here" && sha256sum go.mod main.go; } | sha256sum | cut -d' ' -f1)"
if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$hash" ]; then
  echo "hello-flight: $out is up to date" >&2
  exit 0
fi

mkdir -p "$(dirname "$out")"
echo "hello-flight: building $out" >&2
(cd "$here" && GOOS=wasip1 GOARCH=wasm go build -trimpath -o "$out.tmp" .) || {
  echo "hello-flight: go build failed (see above)" >&2
  exit 1
}
mv -f "$out.tmp" "$out"
echo "$hash" >"$out.stamp"
echo "hello-flight: built $out ($(stat -c %s "$out") bytes)" >&2

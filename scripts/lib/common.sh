# shellcheck shell=bash
# Shared helpers for hoist's shell scripts. Source it; do not run it.
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# The repository root (the directory holding scripts/).
HOIST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export HOIST_ROOT

# The script's name, for messages.
HOIST_PROG="${HOIST_PROG:-$(basename "$0")}"

# log MESSAGE...: progress on stderr.
log() {
  printf '%s: %s\n' "$HOIST_PROG" "$*" >&2
}

# die MESSAGE...: an error on stderr, exit 1.
die() {
  printf '%s: error: %s\n' "$HOIST_PROG" "$*" >&2
  exit 1
}

# need_cmd COMMAND DEBIAN_PACKAGE: fail clearly when a system command is missing.
# Scripts never install packages themselves; CI's install step does.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 ||
    die "'$1' not found: install the Debian package '$2' (apt-get install -y $2)"
}

# need_go: fail clearly when the Go toolchain is missing.
need_go() {
  if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
    PATH="/usr/local/go/bin:$PATH"
    export PATH
  fi
  command -v go >/dev/null 2>&1 ||
    die "'go' not found: install Go >= 1.25 (e.g. /usr/local/go, or the Debian package golang-go if new enough)"
}

# now_s: seconds since the epoch.
now_s() {
  date +%s
}

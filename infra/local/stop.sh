#!/usr/bin/env bash
# Stop what infra/local/start.sh started (web service and workers first, storage last),
# process group by process group, so no flow run, uvicorn or rclone child is left behind.
# Data stays in the state directory; delete that directory to start from scratch.
set -euo pipefail
# shellcheck source=infra/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_service() {
  local name=$1 pid
  pid=$(pid_of "$name")
  if ! is_running "$name"; then
    rm -f "$RUN_DIR/$name.pid"
    return
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 60); do  # up to 30 s for a graceful exit
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    echo "$name: did not stop in 30 s, killing" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid"
  echo "$name: stopped"
}

for name in web worker-gpu worker-cpu prefect-server s3; do
  stop_service "$name"
done

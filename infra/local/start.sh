#!/usr/bin/env bash
# Start the TiefVision stack on this machine, without Docker:
#   - S3 storage: `rclone serve s3` on 127.0.0.1:$TIEFVISION_LOCAL_S3_PORT (bucket "tiefvision"),
#   - a Prefect server on 127.0.0.1:$TIEFVISION_LOCAL_PREFECT_PORT (SQLite under the state dir),
#   - `tiefvision setup-prefect`: flow-result storage on that S3 and the process work pools
#     tiefvision-cpu and tiefvision-gpu (on one machine both are processes here; a GPU, if
#     any, is used through TIEFVISION_DEVICE=auto),
#   - one process worker per pool,
#   - the web service (`tiefvision serve`) on 127.0.0.1:$TIEFVISION_LOCAL_WEB_PORT, unless
#     that is "off".
# Then `source infra/local/env.sh` points the CLIs at it; infra/local/stop.sh stops it.
# Idempotent: a service that is already running is left alone. Returns once every service
# answers, so scripts (and tests) can use the stack right away.
set -euo pipefail
# shellcheck source=infra/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY=$(python_bin)
POOLS=(tiefvision-cpu tiefvision-gpu)
PREFECT_URL="http://127.0.0.1:$TIEFVISION_LOCAL_PREFECT_PORT"
# Server and worker keep their database, profiles and logs here, not in ~/.prefect.
export PREFECT_HOME="$TIEFVISION_LOCAL_STATE/prefect"

port_open() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

http_ok() {
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$1"
  else
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"
  fi
}

worker_online() {  # POOL
  "$PY" - "$PREFECT_URL/api/work_pools/$1/workers/filter" <<'PYEOF'
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
workers = json.load(urllib.request.urlopen(request, timeout=2))
sys.exit(0 if any(w.get("status") == "ONLINE" for w in workers) else 1)
PYEOF
}

# launch NAME PORT COMMAND...: start COMMAND in its own process group, logging to LOG_DIR.
launch() {
  local name=$1 port=$2
  shift 2
  if is_running "$name"; then
    echo "$name: already running (pid $(pid_of "$name"))"
    return
  fi
  if [ "$port" != - ] && port_open "$port"; then
    die "$name: port $port is taken by another program; set TIEFVISION_LOCAL_*_PORT"
  fi
  (cd "$REPO" && exec setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null) &
  echo $! >"$RUN_DIR/$name.pid"
  echo "$name: started (pid $!, log $LOG_DIR/$name.log)"
}

# wait_until NAME SECONDS WHAT CHECK...: poll CHECK; fail early if NAME's process died.
wait_until() {
  local name=$1 deadline=$((SECONDS + $2)) what=$3
  shift 3
  until "$@" >/dev/null 2>&1; do
    if ! is_running "$name"; then
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      die "$name exited before $what (log: $LOG_DIR/$name.log)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what (log: $LOG_DIR/$name.log)"
    sleep 0.5
  done
}

# rclone serves each top-level folder as a bucket: create ours before it starts.
mkdir -p "$TIEFVISION_LOCAL_STATE/s3/$TIEFVISION_LOCAL_BUCKET" "$PREFECT_HOME"
launch s3 "$TIEFVISION_LOCAL_S3_PORT" "$(tool rclone)" serve s3 "$TIEFVISION_LOCAL_STATE/s3" \
  --addr "127.0.0.1:$TIEFVISION_LOCAL_S3_PORT" \
  --auth-key "$AWS_ACCESS_KEY_ID,$AWS_SECRET_ACCESS_KEY" --config /dev/null
wait_until s3 30 "S3 on port $TIEFVISION_LOCAL_S3_PORT" port_open "$TIEFVISION_LOCAL_S3_PORT"

launch prefect-server "$TIEFVISION_LOCAL_PREFECT_PORT" env PREFECT_SERVER_ANALYTICS_ENABLED=false \
  "$PY" -m prefect server start --host 127.0.0.1 --port "$TIEFVISION_LOCAL_PREFECT_PORT"
wait_until prefect-server 300 "the Prefect server" http_ok "$PREFECT_URL/api/health"

"$(tool tiefvision)" setup-prefect --gpu-pool-type process | sed -e '/^Next/,$d' -e 's/^/setup-prefect: /'
for pool in "${POOLS[@]}"; do
  launch "worker-${pool#tiefvision-}" - "$PY" -m prefect worker start --pool "$pool" --type process
done
for pool in "${POOLS[@]}"; do
  wait_until "worker-${pool#tiefvision-}" 180 "a worker online in $pool" worker_online "$pool"
done

# On loopback without a token: a development server, writes open to this machine's users.
WEB_URL=
if [ "$TIEFVISION_LOCAL_WEB_PORT" != off ]; then
  WEB_URL="http://127.0.0.1:$TIEFVISION_LOCAL_WEB_PORT"
  launch web "$TIEFVISION_LOCAL_WEB_PORT" \
    "$(tool tiefvision)" serve --host 127.0.0.1 --port "$TIEFVISION_LOCAL_WEB_PORT"
  wait_until web 120 "the web service" http_ok "$WEB_URL/api/health"
fi

cat <<MSG

TiefVision local stack is up (state: $TIEFVISION_LOCAL_STATE)
  S3 endpoint   $TIEFVISION_S3_ENDPOINT_URL   store $TIEFVISION_STORE_URL
  Prefect UI    $PREFECT_URL
  Web UI        ${WEB_URL:-not started (TIEFVISION_LOCAL_WEB_PORT=off)}
Next:  source infra/local/env.sh && tiefvision ingest --images DIR
       TIEFVISION_IMAGES=DIR prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
       tiefvision trigger ingest/on-demand --param images=DIR --wait
Stop:  infra/local/stop.sh
MSG

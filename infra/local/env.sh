# shellcheck shell=bash
# Point the `tiefvision` and `prefect` command lines at the stack infra/local/start.sh runs:
#
#   source infra/local/env.sh
#   tiefvision ingest --images ~/photos          # store: s3://tiefvision/store on rclone
#
# Why a file to source: the workers start.sh launches read the same variables, so a flow run
# by a deployment and a command typed in this shell see the same store, database and server.
# Everything lives under $TIEFVISION_LOCAL_STATE (default ~/.local/state/tiefvision); the S3
# credentials are generated there once (rclone accepts any key pair it is started with).
# Ports: TIEFVISION_LOCAL_S3_PORT (9000, like MinIO), TIEFVISION_LOCAL_PREFECT_PORT (4200)
# and TIEFVISION_LOCAL_WEB_PORT (8000, `tiefvision serve`; set it to "off" to not start it).

TIEFVISION_LOCAL_STATE="${TIEFVISION_LOCAL_STATE:-$HOME/.local/state/tiefvision}"
# Absolute, so the SQLite URL below and the servers' working directories do not depend on $PWD.
mkdir -p "$TIEFVISION_LOCAL_STATE"
TIEFVISION_LOCAL_STATE="$(cd "$TIEFVISION_LOCAL_STATE" && pwd)"
export TIEFVISION_LOCAL_STATE
export TIEFVISION_LOCAL_S3_PORT="${TIEFVISION_LOCAL_S3_PORT:-9000}"
export TIEFVISION_LOCAL_PREFECT_PORT="${TIEFVISION_LOCAL_PREFECT_PORT:-4200}"
export TIEFVISION_LOCAL_WEB_PORT="${TIEFVISION_LOCAL_WEB_PORT:-8000}"
export TIEFVISION_LOCAL_BUCKET="${TIEFVISION_LOCAL_BUCKET:-tiefvision}"

if [ ! -s "$TIEFVISION_LOCAL_STATE/credentials" ]; then
  (
    umask 077
    printf 'tiefvision-%s %s\n' \
      "$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" \
      "$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')" >"$TIEFVISION_LOCAL_STATE/credentials"
  )
fi
read -r AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY <"$TIEFVISION_LOCAL_STATE/credentials"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=us-east-1

export TIEFVISION_STORE_URL="s3://$TIEFVISION_LOCAL_BUCKET/store"
export TIEFVISION_S3_ENDPOINT_URL="http://127.0.0.1:$TIEFVISION_LOCAL_S3_PORT"
# The store is on S3, so annotations need an explicit database: a SQLite file beside it.
export TIEFVISION_DATABASE_URL="sqlite:///$TIEFVISION_LOCAL_STATE/annotations.sqlite"
export PREFECT_API_URL="http://127.0.0.1:$TIEFVISION_LOCAL_PREFECT_PORT/api"

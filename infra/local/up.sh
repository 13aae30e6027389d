#!/usr/bin/env bash
# Start the local stack the way the demo does: SeaweedFS S3 on 127.0.0.1 (fresh keys,
# buckets raw and archive) and a Ray head with its dashboard for `ray job submit`.
#
#   infra/local/up.sh [STATE_DIR]        # default .local-stack/
#   source .local-stack/env.sh           # AWS_* for the S3 server, RAY_API_SERVER_ADDRESS
#   ray job submit --working-dir . -- python jobs/compress_bucket.py --input s3://raw/ --output s3://archive/
#   infra/local/down.sh [STATE_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=$(mkdir -p "${1:-$ROOT/.local-stack}" && cd "${1:-$ROOT/.local-stack}" && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PY")
cd "$ROOT"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "up.sh: $what did not start; logs in $STATE" >&2; exit 1; fi
    sleep 0.5
  done
}

if [[ -f "$STATE/s3.pid" ]] && kill -0 "$(cat "$STATE/s3.pid")" 2>/dev/null; then
  echo "up.sh: already running (state in $STATE); infra/local/down.sh first" >&2; exit 1
fi

setsid "$PY" -m devtools.localstack --dir "$STATE/s3" --env-file "$STATE/s3.env" >"$STATE/s3.log" 2>&1 &
echo $! >"$STATE/s3.pid"
wait_for 60 "SeaweedFS" test -s "$STATE/s3.env"
# shellcheck disable=SC1091
source "$STATE/s3.env"  # the Ray head (and so every submitted job) gets the S3 endpoint and keys

export PATH="$BIN:$PATH"  # the jobs' drivers run this environment's python
export RAY_AUTH_MODE=token  # Ray's token auth (clients need the same mode and token)
# loopback only: `ray start` swaps --node-ip-address=127.0.0.1 for the machine's reachable IP
# (ray._private.services.resolve_ip_for_localhost), and the GCS, raylet and workers listen on every
# interface unless their node IP is 127.0.0.1. Ray keeps 127.0.0.1 only as a single-machine Ray
# (ray_constants.ENABLE_RAY_CLUSTER off, the macOS/Windows default); no other node can join this head.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# the stack's own token, so a fresh machine (no ~/.ray/auth_token) works and other clusters keep theirs
export RAY_AUTH_TOKEN_PATH="$STATE/auth_token"
[[ -s "$RAY_AUTH_TOKEN_PATH" ]] || (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$RAY_AUTH_TOKEN_PATH")
RAY_TMP=$(mktemp -d /tmp/tlic-ray.XXXXXX)  # short (socket paths) and private: other Ray clusters never see it
echo "$RAY_TMP" >"$STATE/ray.tmp"
# every port Ray would otherwise take at a fixed default gets a free one, so this stack
# coexists with other Ray instances on the machine (tests, a notebook, a second stack)
PORTS=($("$PY" -c 'from devtools.localstack import free_ports; print(*free_ports(9))'))
setsid "$BIN/ray" start --head --block --node-ip-address=127.0.0.1 --port="${PORTS[0]}" \
  --dashboard-host=127.0.0.1 --dashboard-port="${PORTS[1]}" --include-dashboard=true \
  --dashboard-agent-listen-port="${PORTS[2]}" --dashboard-agent-grpc-port="${PORTS[3]}" \
  --runtime-env-agent-port="${PORTS[4]}" --metrics-export-port="${PORTS[5]}" \
  --node-manager-port="${PORTS[6]}" --object-manager-port="${PORTS[7]}" --ray-client-server-port="${PORTS[8]}" \
  --temp-dir="$RAY_TMP" --disable-usage-stats >"$STATE/ray.log" 2>&1 &
echo $! >"$STATE/ray.pid"
# any HTTP answer means it is up (with Ray's token auth on, an unauthenticated probe gets 401;
# `ray job submit` finds the token through RAY_AUTH_TOKEN_PATH, which env.sh exports)
wait_for 120 "the Ray dashboard" "$PY" -c "
import urllib.error, urllib.request
try:
    urllib.request.urlopen('http://127.0.0.1:${PORTS[1]}/api/version', timeout=2)
except urllib.error.HTTPError:
    pass"

# the dashboard answers before its job agent is ready: up means a job really runs
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:${PORTS[1]}
wait_for 180 "Ray job submission" bash -c \
  "\"$BIN/ray\" job submit --submission-id \"up-probe-\$RANDOM\$RANDOM\" -- python -c pass >>\"$STATE/ray.log\" 2>&1"

{ cat "$STATE/s3.env"; echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:${PORTS[1]}"; echo "export RAY_AUTH_MODE=token"
  echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
  echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"; echo "export PATH=$BIN:\$PATH"; } >"$STATE/env.sh"
chmod 600 "$STATE/env.sh"
echo "S3 at $AWS_ENDPOINT_URL, Ray dashboard at http://127.0.0.1:${PORTS[1]}"
echo "source $STATE/env.sh   # then: ray job submit --working-dir . -- python jobs/compress_bucket.py ..."

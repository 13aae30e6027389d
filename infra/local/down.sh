#!/usr/bin/env bash
# Stop what infra/local/up.sh started (only that: other Ray clusters on the machine are left alone).
#   infra/local/down.sh [STATE_DIR]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${1:-$ROOT/.local-stack}

stop_group() {  # stop_group PIDFILE: TERM the process group, KILL what is left after 20 s
  [[ -f "$1" ]] || return 0
  local pid; pid=$(cat "$1")
  kill -TERM -- "-$pid" 2>/dev/null
  for _ in $(seq 40); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null
  rm -f "$1"
}
stop_group "$STATE/ray.pid"
stop_group "$STATE/s3.pid"
[[ -f "$STATE/ray.tmp" ]] && rm -rf "$(cat "$STATE/ray.tmp")" "$STATE/ray.tmp"
rm -f "$STATE/env.sh" "$STATE/s3.env"
echo "local stack stopped (data kept in $STATE/s3)"

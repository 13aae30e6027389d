#!/usr/bin/env bash
# Training on a lent GPU machine (the `device` tool), across several ≤10-minute calls.
#
# The runs start in their own process session, so they keep training between calls
# while the machine is held; each call ends with `collect`, which brings the latest
# weights-only snapshots and logs back through $OUT (export them here with codec.export).
#
#   bench/train_on_gpu.sh start MINUTES     # run A: continue default@1 at 256² crops;
#                                           # run B: a wider fresh model, kept only if it
#                                           # does not slow A by more than 30%
#   bench/train_on_gpu.sh follow SECONDS    # print progress for a while
#   bench/train_on_gpu.sh wait SECONDS      # until both runs have finished (or SECONDS pass)
#   bench/train_on_gpu.sh collect DIR       # snapshots (B's in fp16 to fit the 16 MiB limit) + logs
#
# Data: ../shared/data/train-natural packed by bench/pack_training_data.py into .gpu/data (JPEG sources
# copied, lossless ones as JPEG q92 4:4:4, to fit the tool's 64 MiB tree limit; ignored by git, carried).
# The GPU image has torch but not pydantic/constriction: their wheels travel in .whl (see the device README).
set -uo pipefail
if [ -d .whl ] && [ ! -d /tmp/site/pydantic ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
RUNS=/tmp/tlic-runs
DATA=${DATA:-.gpu/data}
progress() { for r in A B; do [ -f "$RUNS/$r.log" ] && echo "$r: $(tr '\r' '\n' < "$RUNS/$r.log" | grep 'steps/s' | tail -1)"; done; }
last_rate() { grep -o '[0-9.]* steps/s' "$RUNS/$1.log" 2>/dev/null | tail -1 | cut -d' ' -f1; }
launch() {  # NAME ARGS...
  local name=$1; shift
  setsid nohup python3 -u -m codec.train --data "$DATA" --out "$RUNS/$name" --crop 256 --batch-size 16 \
    --checkpoint-every 250 --eval-every 2500 "$@" >"$RUNS/$name.log" 2>&1 < /dev/null &
}
case "$1" in
start)
  minutes=$2
  mkdir -p "$RUNS"
  nvidia-smi -L
  launch A --init default@1 --lr 1e-4 --max-minutes "$minutes" --steps 1000000 --lr-decay-at 0.75 0.92
  for _ in $(seq 60); do sleep 5; [ "$(grep -c 'steps/s' "$RUNS/A.log")" -ge 3 ] && break; done
  alone=$(last_rate A); echo "A alone: $alone steps/s"
  launch B --channels 128 --lr 3e-4 --max-minutes "$((minutes - 1))" --steps 1000000 --lr-decay-at 0.75 0.92
  sleep 75
  shared=$(last_rate A); echo "A beside B: $shared steps/s (B: $(last_rate B) steps/s)"
  if python3 -c "import sys; sys.exit(0 if float('${shared:-0}') >= 0.7 * float('${alone:-1}') else 1)"; then
    echo "keeping B"
  else
    echo "B slows A too much: stopping B"; pkill -f "out $RUNS/B" || true
  fi
  ;;
follow)
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do sleep 60; progress; done
  ;;
wait)
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ] && pgrep -f "codec.train" >/dev/null; do
    sleep 30; progress
  done
  ;;
collect)
  out=$2; mkdir -p "$out"
  for r in A B; do
    [ -f "$RUNS/$r.log" ] || continue
    tr '\r' '\n' < "$RUNS/$r.log" | grep -v '^train:' > "$out/$r.log"
    [ -f "$RUNS/$r/weights_snapshot.pt" ] || continue
    python3 - "$RUNS/$r/weights_snapshot.pt" "$out/$r.pt" "$r" <<'PY'
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
if sys.argv[3] == "B":
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
torch.save(state, sys.argv[2])
print(sys.argv[3], "step", state["step"])
PY
  done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
  ls -la "$out"
  ;;
esac

#!/usr/bin/env bash
# minnen2018@2 training on a lent GPU machine (the `device` tool), across several ≤10-minute calls,
# as bench/train_on_gpu.sh does for `default`. Resumable: the run keeps its checkpoint.pt; collect brings it back.
#
#   bench/train_minnen2018_on_gpu.sh start STEPS [INIT]   # INIT: minnen2018@2 (default) or a carried checkpoint.pt
#   bench/train_minnen2018_on_gpu.sh follow SECONDS       # print progress for a while
#   bench/train_minnen2018_on_gpu.sh collect DIR          # checkpoint + log into DIR ($OUT), then here:
#       python -m codec.families.minnen2018.train --out DIR --data ../shared/data/train-natural --finalize \
#              --register minnen2018@3
#
# Batch 64 of 64×64 crops, 16 iterations unrolled (the curriculum's 4 → 8 → 16 over the first 40%), lr 5e-4
# (×0.1 for the last 15%). Data: ../shared/data/train-natural packed into .gpu/data by bench/pack_training_data.py
# (carried). Wheels for what the GPU image lacks travel in .whl (see the device README).
set -uo pipefail
if [ -d .whl ] && [ ! -d /tmp/site/pydantic ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
RUN=/tmp/minnen2018-run
DATA=${DATA:-.gpu/data}
case "$1" in
start)
  mkdir -p "$RUN"
  nvidia-smi -L
  setsid nohup python3 -u -m codec.families.minnen2018.train --out "$RUN" --data "$DATA" --device cuda --threads 4 \
    --batch 64 --steps "$2" --iterations 16 --curriculum 0.2 0.4 --log-every 200 --checkpoint-every 500 \
    --init "${3:-minnen2018@2}" >"$RUN.log" 2>&1 < /dev/null &
  sleep 90; tail -3 "$RUN.log"
  ;;
follow)
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do sleep 60; tail -1 "$RUN.log"; done
  ;;
collect)
  mkdir -p "$2"; cp "$RUN/checkpoint.pt" "$RUN/train.log" "$2/"; ls -la "$2"
  ;;
esac

#!/usr/bin/env bash
# mL-BFGS on 1 rank (batch B) and on 2 torchrun ranks (gloo, batch B/2 per rank: the same global
# batch): metrics side by side, and the curvature-history bytes each rank holds (issue 12).
#   scripts/mlbfgs_two_ranks.sh OUT [LR] [extra `config` options, e.g. --epochs 1 --train-subset 2000]
# LR: the best mL-BFGS lr at batch 128 of results/mlbfgs-cifar10-cpu (best.md); default 0.1.
# Resumable: a finished run is skipped, an interrupted one continues (--resume).
set -euo pipefail
OUT=${1:?usage: $0 OUT [LR] [config options]}
LR=${2:-0.1}
shift $(( $# >= 2 ? 2 : 1 ))
PY=${PYTHON:-.venv/bin/python}
TORCHRUN=${TORCHRUN:-.venv/bin/torchrun}
export OMP_NUM_THREADS=1
$PY scripts/mlbfgs_two_ranks.py config --out "$OUT" --lr "$LR" "$@"
done_run() { [ -f "$1/summary.json" ] && grep -q '"completed"' "$1/summary.json" 2>/dev/null; }
if ! done_run "$OUT/one"; then
  $PY -m tamegrad.train --config-json "$OUT/one_rank.json" --run-dir "$OUT/one" --resume \
    --threads 1 --no-progress
fi
if ! done_run "$OUT/two"; then
  $TORCHRUN --nproc_per_node 2 --master_port "${MASTER_PORT:-29512}" -m tamegrad.train \
    --config-json "$OUT/two_ranks.json" --run-dir "$OUT/two" --resume --threads 1 --no-progress
fi
$PY scripts/mlbfgs_two_ranks.py compare "$OUT/one" "$OUT/two" | tee "$OUT/compare.md"
$PY scripts/mlbfgs_two_ranks.py memory --config "$OUT/one_rank.json" | tee "$OUT/memory_1rank.txt"
$TORCHRUN --nproc_per_node 2 --master_port "${MASTER_PORT:-29512}" \
  scripts/mlbfgs_two_ranks.py memory --config "$OUT/one_rank.json" | tee "$OUT/memory_2ranks.txt"

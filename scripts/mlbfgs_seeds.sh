#!/usr/bin/env bash
# Seed stage of mlbfgs-cifar10 (issue 12): every family's best lr of a finished sweep folder
# (seed 0) on seeds 0 1 2, in a second folder. Seed 0 is copied from the sweep (same config,
# so the grid runner skips it); seeds 1 and 2 run. Resumable like any `tamegrad reproduce`.
#   scripts/mlbfgs_seeds.sh [PROFILE] [SWEEP_OUT] [SEEDS_OUT] [extra reproduce options]
set -euo pipefail
PROFILE=${1:-cpu}
SWEEP=${2:-results/mlbfgs-cifar10-$PROFILE}
OUT=${3:-$SWEEP-seeds}
shift $(( $# >= 3 ? 3 : $# ))
PY=${PYTHON:-.venv/bin/python}
mapfile -t LABELS < <($PY -c "
import sys
from tamegrad.experiments.mlbfgs import seed_stage_labels
print('\n'.join(seed_stage_labels(sys.argv[1])))" "$SWEEP")
[ ${#LABELS[@]} -gt 0 ] || { echo "no finished sweep point in $SWEEP" >&2; exit 1; }
mkdir -p "$OUT"
for label in "${LABELS[@]}"; do
  slug=$($PY -c "import sys; from tamegrad.train.grid import slugify; print(slugify(sys.argv[1]))" "$label")
  if [ -d "$SWEEP/$slug/seed0" ] && [ ! -d "$OUT/$slug/seed0" ]; then
    mkdir -p "$OUT/$slug" && cp -r "$SWEEP/$slug/seed0" "$OUT/$slug/seed0"
  fi
done
printf 'seed stage: %s\n' "${LABELS[@]}"
exec ${TAMEGRAD:-.venv/bin/tamegrad} reproduce mlbfgs-cifar10 --profile "$PROFILE" --out "$OUT" \
  --seeds 0 1 2 --only "${LABELS[@]}" "$@"

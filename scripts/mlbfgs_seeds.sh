#!/usr/bin/env bash
# Seed stage of mlbfgs-cifar10 (issue 12): every family's best lr of a sweep folder (seed 0) on
# seeds 0 1 2, in a second folder (`tamegrad reproduce --best-of`: seed 0 is copied from the
# sweep; sweeps not complete yet are left out, so run it again as they finish). Resumable.
#   scripts/mlbfgs_seeds.sh [PROFILE] [SWEEP_OUT] [SEEDS_OUT] [extra reproduce options]
set -euo pipefail
PROFILE=${1:-cpu}
SWEEP=${2:-results/mlbfgs-cifar10-$PROFILE}
OUT=${3:-$SWEEP-seeds}
shift $(( $# >= 3 ? 3 : $# ))
exec ${TAMEGRAD:-.venv/bin/tamegrad} reproduce mlbfgs-cifar10 --profile "$PROFILE" --out "$OUT" \
  --seeds 0 1 2 --best-of "$SWEEP" "$@"

#!/usr/bin/env bash
# Commit the finished runs of a results folder (config, metrics, summary; checkpoints are
# git-ignored) with its regenerated tables and figures, leaving unfinished runs out.
#   scripts/commit_finished_runs.sh SUITE PROFILE OUT [MESSAGE]
set -euo pipefail
SUITE=${1:?usage: $0 SUITE PROFILE OUT [MESSAGE]}; PROFILE=${2:?}; OUT=${3:?}
PY=${PYTHON:-.venv/bin/python}
nice -n 10 "$PY" -c "import sys; from tamegrad.experiments import write_suite_outputs as w; \
w(sys.argv[1], sys.argv[2], sys.argv[3])" "$SUITE" "$PROFILE" "$OUT" > /dev/null
paths=()
for f in "$OUT"/*.json "$OUT"/*.md "$OUT"/*.png; do [ -e "$f" ] && paths+=("$f"); done
n=0
for d in "$OUT"/*/seed*; do
  if grep -q '"completed"' "$d/summary.json" 2>/dev/null; then paths+=("$d"); n=$((n + 1)); fi
done
git add -- "${paths[@]}"
if git diff --cached --quiet -- "${paths[@]}"; then echo "nothing new in $OUT"; exit 0; fi
git commit -q -m "${4:-results: $SUITE $PROFILE, $n finished runs so far, with tables}" -- "${paths[@]}"
git log --oneline -1

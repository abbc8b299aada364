#!/usr/bin/env bash
# Run a pytest selection N times in a row and count the runs that passed and failed, to measure
# flakiness (issue 11: the 2-process gloo tests).
#
#   scripts/repeat_tests.sh N [pytest args...]
#   scripts/repeat_tests.sh 20 tests/test_optim_ddp.py tests/test_ddp.py
#
# Prints one line per run (index, pass/FAIL, seconds, pytest's summary line), then
# "N passed, M failed" and the total time. The output of each failed run is kept in
# ${REPEAT_LOG_DIR:-/tmp/repeat_tests}/run<i>.log. Exit status: 0 if every run passed, else 1.
set -u
if [ $# -lt 1 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N [pytest args...]   (N >= 1 repetitions)" >&2
  exit 2
fi
n=$1
shift
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-.venv/bin/python}
logs=${REPEAT_LOG_DIR:-/tmp/repeat_tests}
mkdir -p "$logs"
passed=0
failed=0
start=$(date +%s)
for i in $(seq 1 "$n"); do
  t0=$(date +%s)
  if "$py" -m pytest -q -p no:cacheprovider "$@" >"$logs/run$i.log" 2>&1; then
    passed=$((passed + 1)); verdict=pass
    rm -f "$logs/run$i.log"
    summary=""
  else
    failed=$((failed + 1)); verdict=FAIL
    summary=$(grep -E "passed|failed|error" "$logs/run$i.log" | tail -1)
  fi
  echo "run $i/$n: $verdict ($(( $(date +%s) - t0 )) s) $summary"
done
echo "$passed passed, $failed failed (total $(( $(date +%s) - start )) s; pytest $*)"
[ "$failed" -eq 0 ]

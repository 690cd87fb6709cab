#!/usr/bin/env bash
# The reconcile loop of `make demo`, against a running lab: plan, apply, plan again (nothing to do).
# Usage: scripts/demo-loop.sh STATE_DIR LAB_DIR   (called by scripts/demo.sh once the lab is up)
set -euo pipefail
STATE="${1:-examples/binhdinh-sct}"
LABDIR="${2:-.lab/demo}"
MS="${MAILSTATE:-.venv/bin/mailstate}"

eval "$("$MS" lab env --dir "$LABDIR")"
# journal, audit log and initial-password files of the demo stay inside the lab directory
export MAILSTATE_HOME="${MAILSTATE_HOME:-$LABDIR/home}"

echo "== mailstate plan ($STATE)"
"$MS" plan --state "$STATE"

echo
echo "== mailstate apply --yes"
"$MS" apply --state "$STATE" --yes

echo
echo "== mailstate plan --detailed-exitcode (after apply: expect no changes, exit 0)"
set +e
"$MS" plan --state "$STATE" --detailed-exitcode
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "second plan exited $rc: the live system did not converge" >&2
  exit 1
fi
echo "converged: the second plan has nothing to do (exit 0)"

#!/usr/bin/env bash
# The reconcile loop of `make demo`, against a running lab: plan, apply, plan again (nothing left to do).
# Usage: scripts/demo-loop.sh STATE_DIR LAB_DIR   (scripts/demo.sh calls it once the lab is up)
# Journal, audit log and the initial-password file go to LAB_DIR/home (MAILSTATE_HOME), not the example.
set -euo pipefail
STATE="${1:-examples/binhdinh-sct}"
LABDIR="${2:-.lab/demo}"
MAILSTATE="${MAILSTATE:-.venv/bin/mailstate}"
command -v "$MAILSTATE" >/dev/null 2>&1 || MAILSTATE=mailstate

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

eval "$("$MAILSTATE" lab env --dir "$LABDIR")"
export MAILSTATE_HOME="${MAILSTATE_HOME:-$(cd "$LABDIR" && pwd)/home}"

step "plan (what apply would change in the empty lab)"
"$MAILSTATE" plan --state "$STATE"

step "apply --yes"
"$MAILSTATE" apply --state "$STATE" --yes

step "plan again --detailed-exitcode (expect no changes, exit 0)"
set +e
"$MAILSTATE" plan --state "$STATE" --detailed-exitcode
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "the second plan exited $rc: the live system did not converge" >&2
  exit 1
fi
echo "converged: the second plan has nothing to do (exit 0)"
echo "journal, audit log, initial passwords (0600): under $MAILSTATE_HOME (docs/operations.md)"

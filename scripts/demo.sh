#!/usr/bin/env bash
# make demo: start a lab (slapd + Dovecot + sshd on 127.0.0.1, unprivileged, TLS) for an example agency,
# point mailstate at it, check the example, then plan → apply → plan again (the second plan is empty).
# Usage: bash scripts/demo.sh EXAMPLE LABDIR        (make demo: EXAMPLE=examples/binhdinh-sct LABDIR=.lab/demo)
# Stop the lab afterwards with: make demo-down     (or: .venv/bin/mailstate lab down --dir LABDIR)
set -euo pipefail
EXAMPLE="${1:-examples/binhdinh-sct}"
LABDIR="${2:-.lab/demo}"
MAILSTATE="${MAILSTATE:-.venv/bin/mailstate}"
command -v "$MAILSTATE" >/dev/null 2>&1 || MAILSTATE=mailstate

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# A fresh lab every time (the demo shows a first apply onto an empty directory).
"$MAILSTATE" lab down --dir "$LABDIR" >/dev/null 2>&1 || true   # then `up --reset`: wipes the old lab

step "lab up ($LABDIR)"
if [ -f "$EXAMPLE/mailstate.toml" ]; then
  "$MAILSTATE" lab up --reset --dir "$LABDIR" --state "$EXAMPLE"
else
  echo "($EXAMPLE not found: starting the lab for sct.binhdinh.gov.vn)"
  "$MAILSTATE" lab up --reset --dir "$LABDIR" --domain sct.binhdinh.gov.vn --org-name "Sở Công Thương tỉnh Bình Định"
fi

# Every later command talks to the lab (MAILSTATE_LDAP_URL, …_IMAP_…, …_SSH_…; the lab's own throwaway secrets).
eval "$("$MAILSTATE" lab env --dir "$LABDIR")"

step "lab status"
"$MAILSTATE" lab status --dir "$LABDIR"

[ -f "$EXAMPLE/mailstate.toml" ] || { echo "no example state in $EXAMPLE: lab only"; exit 0; }

step "validate $EXAMPLE"
"$MAILSTATE" validate --state "$EXAMPLE"

# ---------------------------------------------------------------------------------------------------
# PLAN / APPLY — owned by the reconcile engineer (edit here): first plan, apply, second plan (empty).
# ---------------------------------------------------------------------------------------------------
MAILSTATE="$MAILSTATE" bash scripts/demo-loop.sh "$EXAMPLE" "$LABDIR"
# ---------------------------------------------------------------------------------------------------

step "done"
q="$(printf '%q' "$LABDIR")"
echo "the lab keeps running: $MAILSTATE lab status --dir $q; stop it with: make demo-down" \
  "(or $MAILSTATE lab down --dir $q)"

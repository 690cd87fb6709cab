#!/usr/bin/env bash
# Install the Debian packages the lab needs (slapd, ldap-utils, dovecot-imapd, dovecot-ldap,
# dovecot-lmtpd, postfix, postfix-ldap, openssh-server, openssl), and python3-venv (a fresh Debian 12 cannot `python3 -m venv` without it),
# without starting the system's own daemons. Idempotent: does nothing when all
# are installed. If a package's postinst started a system daemon anyway (no policy-rc.d honoured),
# that daemon is stopped again — only one this run started, never one that was running before.
set -euo pipefail
PKGS=(slapd ldap-utils dovecot-imapd dovecot-ldap dovecot-lmtpd postfix postfix-ldap openssh-server
      openssh-client openssl python3-venv)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-debs: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi

# Pids of the system daemons the packages might start (by their Debian pid files).
daemon_pids() {
  local f pid
  for f in /run/slapd/slapd.pid /run/dovecot/master.pid /run/sshd.pid /var/spool/postfix/pid/master.pid; do
    pid=""
    if [ -r "$f" ]; then read -r pid <"$f" || true; fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$f:$pid"; fi
  done
  return 0
}
before="$(daemon_pids)"

created_policy=""
cleanup() { if [ -n "$created_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# mailstate install-debs.sh: do not start daemons while installing\nexit 101\n' \
    | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi

echo "installing: ${missing[*]}"
# Postfix: "No configuration" — the package installs without writing a main.cf or starting a mail
# system; the lab runs its own instance from its own configuration directory.
if command -v debconf-set-selections >/dev/null 2>&1; then
  printf 'postfix postfix/main_mailer_type select No configuration\npostfix postfix/mailname string localhost\n' \
    | $SUDO debconf-set-selections
fi
# `env` inside sudo: sudo drops DEBIAN_FRONTEND from the environment, and slapd's debconf would then ask
# for an admin password interactively in the middle of `make demo`.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Stop what this install started despite policy-rc.d (the lab runs its own instances, unprivileged).
for entry in $(daemon_pids); do
  case "$before" in *"$entry"*) continue ;; esac
  pid="${entry##*:}"
  echo "stopping ${entry%%:*} (pid $pid), started by the package install"
  $SUDO kill "$pid" 2>/dev/null || true
done

# Keep the system daemons this install brought in from starting at the next boot with Debian's default
# configuration (slapd's dc=nodomain, Dovecot on every interface): the lab runs its own instances.
# Only services whose package this run installed; one that was installed before is left as it was.
for pair in slapd:slapd dovecot-imapd:dovecot openssh-server:ssh postfix:postfix; do
  pkg="${pair%%:*}"; svc="${pair##*:}"
  case " ${missing[*]} " in *" $pkg "*) ;; *) continue ;; esac
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --quiet "$svc" 2>/dev/null || true
  elif command -v update-rc.d >/dev/null 2>&1; then
    $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done
exit 0

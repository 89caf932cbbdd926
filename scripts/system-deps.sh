#!/usr/bin/env bash
# Installs the Debian packages pumpwatch talks to: `system-deps.sh run` what the local
# stack needs (the broker), `system-deps.sh test` (default) also what the tests need
# (PostgreSQL, a browser); both need a C compiler for the broker's retain guard.
# As root it uses apt-get; otherwise it names what is
# missing and how to get it.
set -euo pipefail
role=${1:-test}
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# A C compiler builds the broker's retain guard plugin (pumpwatch/retain_guard.c, no headers).
command -v "${CC:-cc}" >/dev/null 2>&1 || need+=(gcc)
if [ "$role" = test ]; then
    command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)  # browser tests (Playwright drives it)
    # PostgreSQL store tests start a throwaway server (initdb/pg_ctl, as the postgres user)
    command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The packaged service would hold port 1883; tests start their own brokers.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
    # Likewise the packaged PostgreSQL cluster (port 5432): tests run their own servers.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now postgresql >/dev/null 2>&1 || true; fi
else
    echo "missing system packages: ${need[*]}" >&2
    echo "install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi

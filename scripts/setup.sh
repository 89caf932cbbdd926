#!/usr/bin/env bash
# Idempotent set-up shared by run.sh and test.sh: a virtualenv in .venv with
# pumpwatch installed (editable) and its extras. Re-installs only when
# pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
extras=${1:-dev}

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "pumpwatch needs Python >= 3.11 ($PY not found)" >&2; exit 1
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    echo "pumpwatch needs Python >= 3.11, found $("$PY" --version 2>&1)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "installing python3-venv (Debian) ..."
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PY" -m venv "$VENV"
        else
            echo "python3 -m venv failed: install the python3-venv package" >&2; exit 1
        fi
    fi
fi
stamp="$VENV/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    echo "installing pumpwatch[$extras] into $VENV ..."
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[$extras]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
fi

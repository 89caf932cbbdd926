#!/usr/bin/env bash
# Quick start, command 2: set up and run every check (lint, types, tests).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh dev
bash scripts/system-deps.sh test
.venv/bin/ruff check dsp simulator edge cloud models pumpwatch tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"

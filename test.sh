#!/usr/bin/env bash
# Quick start, command 2: set up and run every check (lint, types, tests).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh dev
bash scripts/system-deps.sh test
.venv/bin/ruff check dsp simulator edge cloud models pumpwatch tests bench
.venv/bin/mypy
# Two workers, a test file kept on one worker (module fixtures built once): the suite is
# mostly waiting on brokers, servers and subprocesses, so both cores stay busy.
exec .venv/bin/python -m pytest -q -n "${PUMPWATCH_TEST_WORKERS:-2}" --dist loadfile "$@"

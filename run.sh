#!/usr/bin/env bash
# Quick start, command 1: set up and run the main job.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh dev
bash scripts/system-deps.sh run
exec .venv/bin/pumpwatch up "$@"

#!/usr/bin/env bash
# One command from a fresh clone to a running Wan2.2 container:
#   ./run.sh                 # then: docker attach wan22-inference
# Makes sure the wan22ctl CLI is installed (in ./.venv when it is not on PATH), then runs
# `wan22ctl up` with any arguments you pass (e.g. ./run.sh --pull, ./run.sh --stack videox-fun).
# Settings come from ./.env when present, else the defaults in .env.example.
set -euo pipefail
cd "$(dirname "$0")"

if [ -x .venv/bin/wan22ctl ]; then
    CLI=.venv/bin/wan22ctl
elif command -v wan22ctl >/dev/null 2>&1 && [ -z "${WAN22CTL_FORCE_VENV:-}" ]; then
    CLI=wan22ctl
else
    command -v python3 >/dev/null || { echo "run.sh: python3 is required (apt-get install python3 python3-venv)" >&2; exit 3; }
    echo "run.sh: installing wan22ctl into ./.venv"
    python3 -m venv .venv || { echo "run.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 3; }
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e .
    CLI=.venv/bin/wan22ctl
fi
exec "$CLI" up "$@"

#!/usr/bin/env bash
# The whole test suite (the command README names). Needs Docker, the test base image and olah:
# `bash .ci/run` installs and starts them on a fresh machine, then runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" -m pytest -q "$@"

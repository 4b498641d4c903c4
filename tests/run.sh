#!/usr/bin/env bash
# The whole test suite (the command README names). Needs Docker and the base image: see .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest -q "$@"

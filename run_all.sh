#!/usr/bin/env bash
# The main job: regenerate results/ with the default profile (phantom data, CPU).
# Usage: ./run_all.sh [--profile ci|default|paper] [more flags of `python -m reproduce all`]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh
exec python -m reproduce all "$@"

#!/usr/bin/env bash
# Create .venv from requirements.txt on first use (or when requirements.txt changed since).
# Sourced by run_all.sh and run_tests.sh; needs only python3.11 on PATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  echo "setting up $venv from requirements.txt (first use; a few minutes) ..." >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt" >&2
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export MPLBACKEND="${MPLBACKEND:-Agg}"

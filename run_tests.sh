#!/usr/bin/env bash
# The test suite. Default: everything but tests marked slow (under 20 minutes on 2 cores).
#   ./run_tests.sh            fast suite (what CI runs)
#   ./run_tests.sh --slow     only the slow tests (scale checks: 3,000-frame audit, multi-worker
#                             training); the default profile end to end is ./run_all.sh
#   ./run_tests.sh --all      both
# Any other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh
marker=(-m "not slow and not gpu")
case "${1:-}" in
  --slow) marker=(-m "slow"); shift ;;
  --all) marker=(); shift ;;
esac
exec python -m pytest "${marker[@]}" "$@"

#!/usr/bin/env bash
# Execute every notebook under nbval in the "test" setting (a few batches per
# step): cells tagged nbval-check-output are compared with the stored outputs.
# A failure's cell, output and traceback are also written to
# _build/html/reports/notebooks-test-mode.xml (CI keeps it as an artifact).
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
notebooks=(notebooks/*.ipynb)
if [ ${#notebooks[@]} -eq 0 ]; then
  echo "no notebooks to test"
  exit 0
fi
export TUCKERLAB_MODE=test MPLBACKEND=Agg
mkdir -p _build/html/reports
exec .venv/bin/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
  --nbval-cell-timeout=900 --junitxml=_build/html/reports/notebooks-test-mode.xml \
  "${notebooks[@]}"

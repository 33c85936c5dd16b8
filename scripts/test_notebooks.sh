#!/usr/bin/env bash
# Execute every notebook under nbval in the "test" setting (a few batches per
# step): cells marked NBVAL_CHECK_OUTPUT are compared with the stored outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
notebooks=(notebooks/*.ipynb)
if [ ${#notebooks[@]} -eq 0 ]; then
  echo "no notebooks to test"
  exit 0
fi
export TUCKERLAB_MODE=test MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
  --nbval-cell-timeout=900 "${notebooks[@]}"

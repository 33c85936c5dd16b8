#!/usr/bin/env bash
# Build the Jupyter Book (v1) with warnings as errors.
#
#   scripts/build_book.sh                 # execute notebooks (cached), quick mode unless TUCKERLAB_MODE is set
#   scripts/build_book.sh --no-execute    # CI check (alias --check): text, references, toc,
#                                         # cross-references; runs no notebook
#   scripts/build_book.sh --clean         # remove _build/html (and the execution cache) first
#
# jupyter-cache re-runs a notebook when its code changes, not when the package
# does, nor when the mode does; so the cache is dropped whenever tuckerlab/,
# pyproject.toml or TUCKERLAB_MODE changed since the last build.
#
# The log is kept in _build/build.log. Exit status is non-zero on any warning.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

execute=1
clean=0
for arg in "$@"; do
  case "$arg" in
    --no-execute|--check) execute=0 ;;
    --clean) clean=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build_book.sh: unknown option '$arg' (accepted: --no-execute or --check, --clean)" >&2; exit 2 ;;
  esac
done

if [[ -x .venv/bin/jupyter-book ]]; then
  jb=.venv/bin/jupyter-book
  py=.venv/bin/python
else
  jb=jupyter-book
  py=python
fi

version="$("$jb" --version | sed -n 's/^Jupyter Book *: *//p')"
case "$version" in
  1.*) ;;
  *) echo "build_book.sh: needs Jupyter Book 1.x (found '${version:-none}'); pip install 'jupyter-book>=1.0.4,<2'" >&2; exit 2 ;;
esac

# The published book shows quick-mode outputs unless the caller chose a mode.
export TUCKERLAB_MODE="${TUCKERLAB_MODE:-quick}"

mkdir -p _build
if [[ $clean == 1 ]]; then
  rm -rf _build/html _build/jupyter_execute _build/.doctrees
  [[ $execute == 1 ]] && rm -rf _build/.jupyter_cache
fi

if [[ $execute == 1 ]]; then
  stamp=_build/.jupyter_cache/tuckerlab-source.sha256
  current="$("$py" - <<'PY'
import hashlib
import os
from pathlib import Path

h = hashlib.sha256(os.environ["TUCKERLAB_MODE"].encode())
for p in sorted(Path("tuckerlab").rglob("*.py")) + [Path("pyproject.toml")]:
    h.update(str(p).encode())
    h.update(p.read_bytes())
print(h.hexdigest())
PY
)"
  if [[ -d _build/.jupyter_cache && "$(cat "$stamp" 2>/dev/null)" != "$current" ]]; then
    echo "build_book.sh: the package or the mode changed since the notebooks were executed: re-running all of them"
    rm -rf _build/.jupyter_cache
  fi
  mkdir -p _build/.jupyter_cache
  echo "$current" > "$stamp"
fi

config=_config.yml
if [[ $execute == 0 ]]; then
  # Same configuration with execution switched off.
  config=_build/_config.no-execute.yml
  "$py" - "$config" <<'PY'
import sys
import yaml

with open("_config.yml") as f:
    cfg = yaml.safe_load(f)
cfg.setdefault("execute", {})["execute_notebooks"] = "off"
with open(sys.argv[1], "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
PY
fi

start=$(date +%s)
status=0
# --all re-reads every page: an incremental build would not repeat the
# warnings of unchanged pages. Executed notebooks still come from the cache.
"$jb" build . --config "$config" --all -W -n --keep-going 2>&1 | tee _build/build.log || status=$?
# Belt and braces: fail on any warning in the log even if the exit status missed it.
if grep -E "(WARNING|ERROR|CRITICAL)[:]" _build/build.log >/dev/null; then
  echo "build_book.sh: the build reported warnings or errors (see _build/build.log)" >&2
  [[ $status == 0 ]] && status=1
fi
echo "build_book.sh: finished in $(( $(date +%s) - start )) s (mode ${TUCKERLAB_MODE}, execute=$execute, status $status)"
exit "$status"

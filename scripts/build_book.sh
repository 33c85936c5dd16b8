#!/usr/bin/env bash
# Build the Jupyter Book (v1) from the notebooks' stored outputs, with warnings as errors.
#
#   scripts/build_book.sh            # build into _build/html; runs no notebook
#   scripts/build_book.sh --clean    # remove _build/html and Sphinx's caches first
#   scripts/build_book.sh --check    # the same build (kept as the CI spelling)
#
# Nothing is executed here: the pages show the outputs stored in the
# notebooks, produced by `make reproduce` (scripts/reproduce.py), which records
# with each notebook the hash of the code that produced them;
# scripts/check_notebooks.py (run by `make test`) fails when they are stale.
#
# The log is kept in _build/build.log. Exit status is non-zero on any warning.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

clean=0
for arg in "$@"; do
  case "$arg" in
    --check|--no-execute) ;;
    --clean) clean=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build_book.sh: unknown option '$arg' (accepted: --clean, --check)" >&2; exit 2 ;;
  esac
done

if [[ -x .venv/bin/jupyter-book ]]; then
  jb=.venv/bin/jupyter-book
else
  jb=jupyter-book
fi

version="$("$jb" --version | sed -n 's/^Jupyter Book *: *//p')"
case "$version" in
  1.*) ;;
  *) echo "build_book.sh: needs Jupyter Book 1.x (found '${version:-none}'); pip install 'jupyter-book>=1.0.4,<2'" >&2; exit 2 ;;
esac

mkdir -p _build
if [[ $clean == 1 ]]; then
  rm -rf _build/html _build/jupyter_execute _build/.doctrees
fi

start=$(date +%s)
status=0
# --all re-reads every page: an incremental build would not repeat the
# warnings of unchanged pages.
"$jb" build . --all -W -n --keep-going 2>&1 | tee _build/build.log || status=$?
# Belt and braces: fail on any warning in the log even if the exit status missed it.
if grep -E "(WARNING|ERROR|CRITICAL)[:]" _build/build.log >/dev/null; then
  echo "build_book.sh: the build reported warnings or errors (see _build/build.log)" >&2
  [[ $status == 0 ]] && status=1
fi
echo "build_book.sh: finished in $(( $(date +%s) - start )) s (stored outputs, status $status)"
exit "$status"

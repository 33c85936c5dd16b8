#!/usr/bin/env python
"""Re-execute the book's notebooks and store their outputs, with a record of the run.

    python scripts/reproduce.py                    # every chapter, quick mode
    python scripts/reproduce.py 05_tt_lc           # one chapter (a name or a path)
    python scripts/reproduce.py --times            # the recorded time of each chapter
    python scripts/reproduce.py --times --json     # the same, machine-readable
    python scripts/reproduce.py --times --write-table   # the table of book/how_to_use.md, rewritten

(``make reproduce`` and ``make reproduce CHAPTER=05_tt_lc`` run this.)

Each notebook runs in its own kernel from ``notebooks/``, in the mode given
(``quick`` by default), and one line per chapter says how long it took. The
outputs are written back into the notebook with a record in
``metadata.tuckerlab``: the hash of the code cells that produced them (which
``scripts/check_notebooks.py`` compares with the code the notebook holds
later), the mode, the seconds, the machine and its load, the git commit and
the time. The book (``make book``) is built from these outputs without
running anything.

The outputs carry the commit they were produced from, so the working tree
must be clean: with uncommitted changes to tracked files this script stops,
unless ``--allow-dirty`` is given (then every provenance says "-dirty" and
``make test`` rejects the notebooks until they are run again from a commit).
Executed notebooks are written back only after the last chapter has run, so
that the first one written does not make the tree dirty for the next. A
failing chapter leaves its partial notebook and the error in
``_build/html/reports/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "_build" / "html" / "reports"
STAGING = ROOT / "_build" / "reproduce"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import check_notebooks  # noqa: E402


def chapters(names: list[str]) -> list[Path]:
    """Notebook paths for chapter names, stems or paths (all when empty)."""
    every = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not names:
        return every
    found = []
    for name in names:
        stem = Path(name).stem
        match = [p for p in every if p.stem == stem]
        if not match:
            known = ", ".join(p.stem for p in every)
            raise SystemExit(f"reproduce: no chapter {name!r}; chapters: {known}")
        found.extend(match)
    return found


def dirty_files() -> list[str]:
    """Tracked files with uncommitted changes (empty: the tree is clean)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def machine() -> str:
    from tuckerlab.results import device_name  # noqa: PLC0415

    return device_name("cpu")


def execute(path: Path, mode: str, timeout: int) -> tuple[dict, float, str | None]:
    """Run one notebook in a fresh kernel; returns (notebook, seconds, error)."""
    import nbformat  # noqa: PLC0415
    from nbclient import NotebookClient  # noqa: PLC0415
    from nbclient.exceptions import CellExecutionError  # noqa: PLC0415

    nb = nbformat.read(path, as_version=4)
    os.environ["TUCKERLAB_MODE"] = mode
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend stores the figures
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err)
    return nb, time.perf_counter() - start, error


def record(nb, path: Path, mode: str, seconds: float, load: tuple) -> dict:
    from tuckerlab.results import git_commit  # noqa: PLC0415

    return {
        "code_sha256": check_notebooks.code_hash(nb),
        "mode": mode,
        "seconds": round(seconds, 1),
        "machine": machine(),
        "load_average": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "git_commit": git_commit(ROOT),
        "executed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def times(paths: list[Path]) -> list[dict]:
    """The recorded run of each notebook (name, mode, seconds, machine, load, commit)."""
    rows = []
    for path in paths:
        rec = json.loads(path.read_text()).get("metadata", {}).get(check_notebooks.RECORD_KEY, {})
        rows.append({"chapter": path.stem, **{k: rec.get(k) for k in
                     ("mode", "seconds", "machine", "load_average", "git_commit", "executed_at")}})
    return rows


TABLE_START = "<!-- chapter-times:start (scripts/reproduce.py --times --write-table) -->"
TABLE_END = "<!-- chapter-times:end -->"
TEST_REPORT = REPORTS / "notebooks-test-mode.xml"


def test_mode_seconds(report: Path = TEST_REPORT) -> dict[str, float]:
    """Seconds per chapter of the last ``make test-notebooks`` (nbval's JUnit report), if there is one."""
    if not report.exists():
        return {}
    import xml.etree.ElementTree as ET  # noqa: PLC0415

    out: dict[str, float] = {}
    for case in ET.parse(report).iter("testcase"):
        stem = Path(case.get("file") or case.get("classname", "").replace(".", "/")).stem
        for path in NOTEBOOKS.glob("*.ipynb"):
            if path.stem in (case.get("classname", "") + " " + (case.get("file") or "") + " " + stem):
                out[path.stem] = out.get(path.stem, 0.0) + float(case.get("time", 0.0))
    return out


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def times_table(paths: list[Path], test_seconds: dict[str, float] | None = None) -> str:
    """The per-chapter time table (Markdown): quick mode as recorded, test mode, full mode estimated."""
    from tuckerlab.notebook import FULL_MODE_HOURS  # noqa: PLC0415

    test_seconds = test_mode_seconds() if test_seconds is None else test_seconds
    lines = [
        "| chapter | quick mode (measured) | machine, load average | test mode (measured) "
        "| full mode, one GPU (estimated) |",
        "|---|---|---|---|---|",
    ]
    for row in times(paths):
        quick = _minutes(row["seconds"]) if row["mode"] == "quick" else "-"
        load = row["load_average"][0] if row["load_average"] else None
        where = f"{row['machine'] or '-'}, {load:.1f}" if load is not None else (row["machine"] or "-")
        full = FULL_MODE_HOURS.get(row["chapter"])
        lines.append(f"| {row['chapter']} | {quick} | {where} | {_minutes(test_seconds.get(row['chapter']))} "
                     f"| {'-' if full is None else f'{full:g} h'} |")
    return "\n".join(lines)


def write_table(path: Path, table: str) -> None:
    """Replace the table between the markers of ``path`` with ``table``."""
    text = path.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"reproduce: {path} has no {TABLE_START} ... {TABLE_END} markers")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    path.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    parser.add_argument("--mode", default="quick", choices=("test", "quick", "full"))
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run with uncommitted changes (outputs then say -dirty)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--times", action="store_true", help="print the recorded times only")
    parser.add_argument("--json", action="store_true", help="with --times: as JSON")
    parser.add_argument("--write-table", action="store_true",
                        help="with --times: rewrite the time table of book/how_to_use.md")
    args = parser.parse_args(argv)
    paths = chapters(args.chapters)

    if args.times:
        rows = times(paths)
        if args.write_table:
            write_table(ROOT / "book" / "how_to_use.md", times_table(paths))
            print("reproduce: wrote the time table of book/how_to_use.md")
            return 0
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for r in rows:
                secs = "-" if r["seconds"] is None else f"{r['seconds']:.0f} s"
                print(f"{r['chapter']:<28}{r['mode'] or '-':>6}{secs:>9}  {r['machine'] or ''}"
                      f"  load {r['load_average'] or '-'}")
        return 0

    dirty = dirty_files()
    if dirty and not args.allow_dirty:
        print("reproduce: the working tree has uncommitted changes to "
              f"{', '.join(dirty)}.\nThe stored outputs name the commit that produced them: "
              "commit first, or pass --allow-dirty (make reproduce ALLOW_DIRTY=1) to run "
              "anyway with '-dirty' outputs.", file=sys.stderr)
        return 2
    if dirty:
        print("#" * 72 + "\n# reproduce: UNCOMMITTED CHANGES: every output will say '-dirty',\n"
              "# and make test will reject these notebooks until they run from a commit.\n"
              + "#" * 72, file=sys.stderr)

    STAGING.mkdir(parents=True, exist_ok=True)
    done: list[tuple[Path, Path]] = []
    failed = []
    total = time.perf_counter()
    print(f"reproduce: {len(paths)} chapter(s) in {args.mode} mode on {machine()}", flush=True)
    try:
        for k, path in enumerate(paths, start=1):
            print(f"[{k}/{len(paths)}] {path.stem} ...", flush=True)
            load = os.getloadavg()
            nb, seconds, error = execute(path, args.mode, args.timeout)
            if error is not None:
                REPORTS.mkdir(parents=True, exist_ok=True)
                (REPORTS / f"{path.stem}.err.log").write_text(error)
                import nbformat  # noqa: PLC0415

                nbformat.write(nb, REPORTS / path.name)
                failed.append(path.stem)
                print(f"[{k}/{len(paths)}] {path.stem}  FAILED after {seconds:.0f} s "
                      f"(see {(REPORTS / f'{path.stem}.err.log').relative_to(ROOT)})", flush=True)
                continue
            nb.metadata[check_notebooks.RECORD_KEY] = record(nb, path, args.mode, seconds, load)
            staged = STAGING / path.name
            import nbformat  # noqa: PLC0415

            nbformat.write(nb, staged)
            done.append((staged, path))
            print(f"[{k}/{len(paths)}] {path.stem}  {seconds:6.0f} s  ({seconds / 60:.1f} min, "
                  f"load {load[0]:.1f})", flush=True)
    finally:
        for staged, path in done:
            path.write_text(staged.read_text())
        if done:
            print(f"reproduce: stored the outputs of {', '.join(p.stem for _, p in done)}")
    print(f"reproduce: {len(done)} ran, {len(failed)} failed, "
          f"{(time.perf_counter() - total) / 60:.1f} min in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

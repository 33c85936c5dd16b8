#!/usr/bin/env python
"""Check that the book's notebooks follow its conventions (no execution).

    python scripts/check_notebooks.py                 # the whole book: toc, notebooks, citations
    python scripts/check_notebooks.py notebooks/01_tucker.ipynb
    python scripts/check_notebooks.py --new notebooks/05_topic.ipynb --title "A topic"

The conventions (see DEVELOPERS.md, "Notebook conventions"):

1. a ``# Title`` in the first markdown cell, and ``python3`` as kernel;
2. the first code cell is exactly the Colab-only install cell
   (:data:`tuckerlab.notebook.INSTALL_CELL`), tagged ``remove-cell``;
3. the second code cell calls ``tuckerlab.notebook.setup`` with
   ``chapter="<the notebook's file name>"``;
4. a function defined in a notebook is checked: some cell at or after its
   definition uses it together with an ``assert``, ``np.testing`` /
   ``torch.testing``, or a ``check_*`` call (library code is derived and
   compared, never silently redefined);
5. the notebook ends with an ``## Exercises`` section holding at least three
   ``{exercise}`` directives and a ``tuckerlab.exercises`` ``check_*`` call;
6. every ``{solution}`` folds away (``:class: dropdown``);
7. every ``{cite}`` key is in ``book/references.bib``;
8. ``_toc.yml`` lists every notebook, and every file it lists exists;
9. code lines fit the page: at most :data:`MAX_LINE` characters;
10. nbval markers are cell tags (``nbval-check-output``), not comments that
    the pages would show.

:func:`check_outputs` checks the stored outputs the book is built from: the
notebook records (in ``metadata.tuckerlab``, written by
``scripts/reproduce.py``) the hash of its code cells when they ran, and that
hash must still match; every code cell ran; no output comes from a
working tree with uncommitted changes (``-dirty`` in a provenance); and every
percentage the prose quotes with decimals ("65.59 %") is shown by an output
(as such, or as a fraction: 3.5 % as 0.035), so that a re-run cannot leave
the text quoting numbers the page no longer shows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIB = Path("book") / "references.bib"
TOC = Path("_toc.yml")
NOTEBOOK_DIR = Path("notebooks")

MIN_EXERCISES = 3
MAX_LINE = 88
#: Where scripts/reproduce.py records the run that produced the outputs.
RECORD_KEY = "tuckerlab"

_FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_DIRECTIVE = re.compile(r"^\s*(`{3,}|:{3,})\s*\{([\w:-]+)\}")
_CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
_DEF = re.compile(r"^(?:async\s+)?def\s+(\w+)\s*\(", re.M)
_CHECKED = re.compile(
    r"(^|[\s;(])assert\s|\b(np|numpy|torch)\.testing\.|\bcheck_\w+\s*\(", re.M
)
_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")
_BIB_ENTRY = re.compile(r"^\s*@(\w+)\s*\{\s*([^,\s]+)\s*,", re.M)
_TOC_FILE = re.compile(r"^\s*(?:-\s*)?(?:file|root)\s*:\s*([^\s#]+)", re.M)
_NBVAL_COMMENT = re.compile(r"^\s*#\s*NBVAL_\w+", re.M)
_DIRTY = re.compile(r"\b[0-9a-f]{7,40}-dirty\b")
_QUOTED_PERCENT = re.compile(r"(?<![\d.])(\d+\.\d{1,2})\s?%")


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def load_notebook(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def bib_keys(bib: Path) -> set[str]:
    text = bib.read_text(encoding="utf-8")
    return {key for kind, key in _BIB_ENTRY.findall(text) if kind.lower() not in {"comment", "string", "preamble"}}


def markdown_lines(text: str):
    """Lines of a markdown text outside code fences.

    The opening lines of MyST directives ({exercise}, {solution}, ...) are
    kept, and so is their content: it is markdown too.
    """
    stack: list[tuple[str, bool]] = []  # (fence mark, is a directive)
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m is None:
            if not stack or stack[-1][1]:
                yield line
            continue
        mark = m.group(1)
        top = stack[-1] if stack else None
        closes = (
            top is not None
            and line.strip() == mark
            and mark[0] == top[0][0]
            and len(mark) >= len(top[0])
        )
        if closes:
            stack.pop()
        elif top is None or top[1]:
            is_directive = _DIRECTIVE.match(line) is not None
            stack.append((mark, is_directive))
            if is_directive:
                yield line
        # a fence line inside a code block is code


def cited_keys(text: str) -> list[str]:
    keys = []
    for group in _CITE.findall(text):
        keys.extend(k.strip() for k in group.split(",") if k.strip())
    return keys


def toc_files(root: Path) -> list[str]:
    """Files named in _toc.yml (root and every file: entry), without suffix."""
    text = "\n".join(line for line in (root / TOC).read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))
    return [re.sub(r"\.(md|ipynb)$", "", f.strip("'\"")) for f in _TOC_FILE.findall(text)]


# ---------------------------------------------------------------------------
# one notebook
# ---------------------------------------------------------------------------

def install_cell() -> str:
    """:data:`tuckerlab.notebook.INSTALL_CELL`, the one source of the install line."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tuckerlab.notebook import INSTALL_CELL  # noqa: PLC0415

    return INSTALL_CELL


def _is_install_cell(src: str) -> bool:
    return src.strip() == install_cell().strip()


def _is_setup_cell(src: str) -> bool:
    if re.search(r"\btuckerlab\.notebook\.setup\s*\(", src):
        return True
    return bool(
        re.search(r"from\s+tuckerlab\.notebook\s+import\s+[^\n]*\bsetup\b", src)
        and re.search(r"(?<![\w.])setup\s*\(", src)
    )


def code_hash(nb: dict) -> str:
    """SHA-256 of a notebook's code cells: what its stored outputs depend on."""
    digest = hashlib.sha256()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            digest.update(_source(cell).rstrip().encode("utf-8") + b"\n\0")
    return digest.hexdigest()


def _output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
        for key in ("text/plain", "text/html", "text/markdown"):
            value = out.get("data", {}).get(key)
            if value is not None:
                parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts)


def check_notebook(path: Path, keys: set[str] | None = None) -> list[str]:
    """Problems of one notebook, as readable sentences (empty: it conforms)."""
    path = Path(path)
    name = path.name
    try:
        nb = load_notebook(path)
    except (OSError, json.JSONDecodeError) as err:
        return [f"{name}: cannot be read as a notebook ({err})"]
    problems: list[str] = []
    cells = nb.get("cells", [])
    code = [(i, _source(c)) for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    markdown = [(i, _source(c)) for i, c in enumerate(cells) if c.get("cell_type") == "markdown"]

    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"{name}: kernelspec name is {kernel!r}; use 'python3' so every machine can run it")

    # 1. title
    first_md = next((src for _, src in markdown if src.strip()), "")
    first_line = first_md.strip().splitlines()[0] if first_md.strip() else ""
    if not re.match(r"^#\s+\S", first_line):
        problems.append(f"{name}: the first markdown cell should start with the chapter title ('# Title')")

    # 2-3. install and set-up cells
    if not code or not _is_install_cell(code[0][1]):
        problems.append(
            f"{name}: the first code cell should be the Colab-only install cell, exactly "
            "tuckerlab.notebook.INSTALL_CELL (pip install from the repository, guarded by "
            "'google.colab' in sys.modules, its errors shown)"
        )
    elif "remove-cell" not in cells[code[0][0]].get("metadata", {}).get("tags", []):
        problems.append(f"{name}: tag the install cell 'remove-cell' so the pages do not show it")
    if len(code) < 2 or not _is_setup_cell(code[1][1]):
        problems.append(
            f"{name}: the second code cell should call "
            f"tuckerlab.notebook.setup(seed=..., chapter={path.stem!r}) "
            "(see tuckerlab.notebook.SETUP_CELL)"
        )
    elif not re.search(rf"chapter\s*=\s*[\"']{re.escape(path.stem)}[\"']", code[1][1]):
        problems.append(
            f"{name}: the set-up cell should pass chapter={path.stem!r} to "
            "tuckerlab.notebook.setup (it prints full mode's estimated time)"
        )

    # 9-10. what the page shows of the code
    for i, src in code:
        for j, line in enumerate(src.splitlines(), start=1):
            if len(line) > MAX_LINE:
                problems.append(
                    f"{name}: cell {i} line {j} has {len(line)} characters; "
                    f"at most {MAX_LINE} fit the page"
                )
        if _NBVAL_COMMENT.search(src):
            problems.append(
                f"{name}: cell {i} has an '# NBVAL_...' comment, which the page shows; "
                "use a cell tag instead (e.g. 'nbval-check-output')"
            )

    # 4. functions defined in the notebook are checked later on
    for k, (i, src) in enumerate(code):
        for m in _DEF.finditer(src):
            fn = m.group(1)
            used = re.compile(rf"(?<![\w.]){re.escape(fn)}\b")
            # The rest of the defining cell, then every later code cell: one of
            # them must both use the function and check something.
            later = [src[m.end():]] + [s for _, s in code[k + 1:]]
            if not any(_CHECKED.search(c) and used.search(c) for c in later):
                problems.append(
                    f"{name}: cell {i} defines {fn}() but nothing after it checks it: "
                    f"no later cell uses {fn} together with an assert, np.testing/torch.testing, "
                    "or a tuckerlab.exercises check_* call; derive it, then compare with the library"
                )

    # 5. the Exercises section comes last
    headings = []  # (cell index, level, text)
    for i, src in markdown:
        for line in markdown_lines(src):
            h = _HEADING.match(line)
            if h:
                headings.append((i, len(h.group(1)), h.group(2)))
    top = [h for h in headings if h[1] <= 2]
    is_ex = [lvl == 2 and text.lower().startswith("exercises") for _, lvl, text in top]
    exercises_at = None
    if not any(is_ex):
        problems.append(f"{name}: no '## Exercises' section")
    elif not is_ex[-1]:
        last = max(k for k, e in enumerate(is_ex) if e)
        problems.append(
            f"{name}: '## Exercises' must be the last section; found after it: {top[last + 1][2]!r}"
        )
    else:
        exercises_at = top[-1][0]
    if exercises_at is not None:
        section = [c for j, c in enumerate(cells) if j >= exercises_at]
        n_ex = sum(
            1
            for c in section if c.get("cell_type") == "markdown"
            for line in markdown_lines(_source(c))
            if (d := _DIRECTIVE.match(line)) and d.group(2) in ("exercise", "exercise-start")
        )
        if n_ex < MIN_EXERCISES:
            problems.append(
                f"{name}: the Exercises section has {n_ex} {{exercise}} directive(s); at least {MIN_EXERCISES} are needed"
            )
        calls = [_source(c) for c in section if c.get("cell_type") == "code"]
        has_call = any(_CHECK_CALL.search(s) for s in calls)
        imports = any("tuckerlab.exercises" in s or "tuckerlab import exercises" in s for _, s in code)
        if not (has_call and imports):
            problems.append(
                f"{name}: the Exercises section should run at least one tuckerlab.exercises check_* "
                "call on an answer"
            )

    # 6. solutions fold away
    for i, src in markdown:
        lines = src.splitlines()
        for j, line in enumerate(lines):
            d = _DIRECTIVE.match(line)
            if not d or d.group(2) not in ("solution", "solution-start"):
                continue
            options = []
            for opt in lines[j + 1:]:
                if not opt.strip().startswith(":") or _FENCE.match(opt):
                    break
                options.append(opt.strip())
            if not any(re.match(r":class:.*\bdropdown\b", o) for o in options):
                problems.append(f"{name}: the {{solution}} in cell {i} should fold away: add ':class: dropdown'")

    # 7. citations
    if keys is not None:
        for i, src in markdown:
            for key in cited_keys("\n".join(markdown_lines(src))):
                if key not in keys:
                    problems.append(f"{name}: cell {i} cites {key!r}, which is not in {BIB}")
    return problems


# ---------------------------------------------------------------------------
# stored outputs
# ---------------------------------------------------------------------------

def check_outputs(path: Path) -> list[str]:
    """Problems of a notebook's stored outputs (empty: they are current and clean).

    The book is built from these outputs without running anything, so they
    must come from the code the notebook holds now, from a committed tree.
    """
    path = Path(path)
    name = path.name
    rerun = f"run `make reproduce CHAPTER={path.stem}` from a clean commit"
    try:
        nb = load_notebook(path)
    except (OSError, json.JSONDecodeError) as err:
        return [f"{name}: cannot be read as a notebook ({err})"]
    problems = []
    record = nb.get("metadata", {}).get(RECORD_KEY, {})
    if not record.get("code_sha256"):
        problems.append(f"{name}: no record of the run that produced its outputs; {rerun}")
    elif record["code_sha256"] != code_hash(nb):
        problems.append(
            f"{name}: its code cells changed after its outputs were produced "
            f"(at {record.get('executed_at', '?')}); the stored outputs are stale: {rerun}"
        )
    commit = str(record.get("git_commit") or "")
    if commit.endswith("-dirty"):
        problems.append(f"{name}: its outputs were produced from a dirty tree ({commit}); {rerun}")
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code" or not _source(cell).strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"{name}: code cell {i} has not been run; {rerun}")
        dirty = _DIRTY.search(_output_text(cell))
        if dirty:
            problems.append(
                f"{name}: cell {i} shows a provenance from a dirty tree ({dirty.group()}); {rerun}"
            )
    outputs = "\n".join(_output_text(c) for c in nb.get("cells", []) if c.get("cell_type") == "code")
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "markdown":
            continue
        for m in _QUOTED_PERCENT.finditer("\n".join(markdown_lines(_source(cell)))):
            value = m.group(1)
            shown = {value, f"{float(value) / 100:.3f}", f"{float(value) / 100:.4f}"}
            if not any(v in outputs for v in shown):
                problems.append(
                    f"{name}: markdown cell {i} quotes {m.group(0)!r}, which no output shows; "
                    "quote the numbers the outputs print"
                )
    return problems


# ---------------------------------------------------------------------------
# the whole book
# ---------------------------------------------------------------------------

def check_book(root: Path = ROOT) -> list[str]:
    """Problems of the book: toc against files, citations, every notebook."""
    root = Path(root)
    problems: list[str] = []
    keys = bib_keys(root / BIB)
    listed = toc_files(root)
    for entry in listed:
        if not any((root / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")):
            problems.append(f"{TOC}: lists {entry!r}, but neither {entry}.md nor {entry}.ipynb exists")
    notebooks = sorted((root / NOTEBOOK_DIR).glob("*.ipynb"))
    for nb in notebooks:
        rel = nb.relative_to(root).with_suffix("").as_posix()
        if rel not in listed:
            problems.append(f"{TOC}: does not list {rel}.ipynb (add '- file: {rel}' to a part)")
    for md in sorted((root / "book").glob("*.md")):
        rel = md.relative_to(root).with_suffix("").as_posix()
        if rel not in listed:
            problems.append(f"{TOC}: does not list {rel}.md")
        for key in cited_keys("\n".join(markdown_lines(md.read_text(encoding="utf-8")))):
            if key not in keys:
                problems.append(f"{md.relative_to(root)}: cites {key!r}, which is not in {BIB}")
    for nb in notebooks:
        problems.extend(check_notebook(nb, keys))
        problems.extend(check_outputs(nb))
    return problems


# ---------------------------------------------------------------------------
# a conforming skeleton
# ---------------------------------------------------------------------------

def _cell(kind: str, text: str, **metadata) -> dict:
    cell = {"cell_type": kind, "metadata": metadata, "source": text.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def skeleton(title: str, slug: str, chapter: str = "01_tiny") -> dict:
    """A new notebook that already follows every convention.

    ``chapter`` is its file name without suffix, passed to ``setup``.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tuckerlab.notebook import INSTALL_CELL, SETUP_CELL  # noqa: PLC0415

    setup_cell = re.sub(r'chapter="[^"]*"', f'chapter="{chapter}"', SETUP_CELL)

    exercises = "\n\n".join(
        f"```{{exercise}}\n:label: {slug}-exercise-{k}\n\nExercise {k}.\n```\n\n"
        f"````{{solution}} {slug}-exercise-{k}\n:class: dropdown\n\nSolution {k}.\n````"
        for k in range(1, MIN_EXERCISES + 1)
    )
    cells = [
        _cell("markdown", f"# {title}\n\nWhat this chapter shows, in two sentences."),
        _cell("code", INSTALL_CELL.rstrip("\n"), tags=["remove-cell"]),
        _cell("code", setup_cell.rstrip("\n")),
        _cell("markdown", "## The idea\n\nText, equations and code."),
        _cell("markdown", "## Exercises\n\n" + exercises),
        _cell(
            "code",
            "from tuckerlab.exercises import check_tucker2_params\n\n\n"
            "def my_tucker2_params(T, S, kh, kw, r_out, r_in):\n"
            "    return S * r_in + kh * kw * r_in * r_out + r_out * T\n\n\n"
            "check_tucker2_params(my_tucker2_params)",
        ),
    ]
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_skeleton(path: Path, title: str) -> None:
    path = Path(path)
    if path.exists():
        raise SystemExit(f"{path} exists; not overwriting it")
    slug = re.sub(r"^\d+_", "", path.stem).replace("_", "-")
    nb = skeleton(title, slug, path.stem)
    for k, cell in enumerate(nb["cells"]):
        cell["id"] = f"{slug}-{k}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to check (default: the whole book)")
    parser.add_argument("--new", type=Path, metavar="PATH", help="write a conforming skeleton notebook to PATH")
    parser.add_argument("--title", default="Title", help="title of the --new notebook")
    args = parser.parse_args(argv)
    if args.new:
        write_skeleton(args.new, args.title)
        print(f"wrote {args.new}; add '- file: {args.new.with_suffix('').as_posix()}' to _toc.yml")
        return 0
    if args.notebooks:
        keys = bib_keys(ROOT / BIB)
        problems = [p for nb in args.notebooks for p in check_notebook(nb, keys) + check_outputs(nb)]
    else:
        problems = check_book(ROOT)
    for p in problems:
        print(p)
    if not problems:
        print("all conventions hold")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

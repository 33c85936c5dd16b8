"""Static checks of the book: configuration, toc, citations, notebook conventions.

Nothing is executed here (the notebooks run under nbval and in the book
build); these checks read files only. The checker itself is tested on small
notebooks written to tmp_path, good and broken.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("check_notebooks", ROOT / "scripts" / "check_notebooks.py")
cn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cn)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# ---------------------------------------------------------------------------
# the book as it is
# ---------------------------------------------------------------------------

def test_book_conventions_hold():
    problems = cn.check_book(ROOT)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_follows_conventions(path):
    problems = cn.check_notebook(path, cn.bib_keys(ROOT / cn.BIB))
    assert not problems, "\n".join(problems)


def test_bib_keys_are_unique_and_cover_the_seed_papers():
    text = (ROOT / cn.BIB).read_text(encoding="utf-8")
    keys = [k for kind, k in cn._BIB_ENTRY.findall(text) if kind.lower() != "comment"]
    assert len(keys) == len(set(keys)), "duplicate BibTeX keys"
    for doi in ("10.1109/TSUSC.2024.3425962", "10.12141/j.issn.1000-565X.230617", "10.1609/aaai.v36i8.20869"):
        assert doi in text
    for eprint in ("2107.12422", "2408.01534"):
        assert eprint in text


def test_config_keys():
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True
    assert cfg["execute"]["execute_notebooks"] == "cache"
    assert cfg["execute"]["timeout"] >= 600
    assert "sphinx_exercise" in cfg["sphinx"]["extra_extensions"]
    for bib in cfg["bibtex_bibfiles"]:
        assert (ROOT / bib).exists()
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["repository"]["url"] == "https://github.com/tuckerlab/tuckerlab"
    # Sphinx must not walk environments, tests or build outputs.
    for pattern in (".venv", "_build", "tests", "runs"):
        assert pattern in cfg["exclude_patterns"]


def test_cells_in_the_docs_are_the_ones_the_checker_accepts():
    from tuckerlab.notebook import INSTALL_CELL, SETUP_CELL

    assert cn._is_install_cell(INSTALL_CELL)
    assert cn._is_setup_cell(SETUP_CELL)
    how_to = (ROOT / "book" / "how_to_use.md").read_text(encoding="utf-8")
    assert INSTALL_CELL.strip() in how_to
    assert SETUP_CELL.strip() in how_to


# ---------------------------------------------------------------------------
# the checker on small notebooks
# ---------------------------------------------------------------------------

KEYS = {"kim2016compression"}


def _write(path: Path, nb: dict) -> Path:
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


@pytest.fixture
def good(tmp_path):
    return cn.skeleton("A tiny chapter", "tiny")


def _problems(tmp_path, nb, keys=KEYS):
    return cn.check_notebook(_write(tmp_path / "01_tiny.ipynb", nb), keys)


def _cells(nb, kind):
    return [c for c in nb["cells"] if c["cell_type"] == kind]


def _set(cell, text):
    cell["source"] = text.splitlines(keepends=True)


def test_skeleton_passes(tmp_path, good):
    assert _problems(tmp_path, good) == []


def test_skeleton_with_a_checked_derivation_and_a_citation_passes(tmp_path, good):
    nb = copy.deepcopy(good)
    nb["cells"][3:3] = [
        cn._cell("markdown", "As {cite:t}`kim2016compression` do, unfold:\n\n```python\n# not a heading\n```"),
        cn._cell("code", "def unfold(x, n):\n    return x.movedim(n, 0).reshape(x.shape[n], -1)"),
        cn._cell("code", "import torch\nx = torch.randn(2, 3, 4)\nassert unfold(x, 1).shape == (3, 8)"),
    ]
    assert _problems(tmp_path, nb) == []


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("no_title", "title"),
        ("no_install", "install cell"),
        ("install_unguarded", "install cell"),
        ("no_setup", "tuckerlab.notebook.setup"),
        ("unchecked_def", "defines tucker() but nothing after it checks it"),
        ("two_exercises", "has 2 {exercise}"),
        ("no_exercises", "no '## Exercises' section"),
        ("section_after_exercises", "must be the last section"),
        ("no_check_call", "check_* call"),
        ("solution_not_folded", ":class: dropdown"),
        ("unknown_citation", "'nosuchkey2099'"),
        ("other_kernel", "kernelspec"),
    ],
)
def test_broken_notebook_is_caught(tmp_path, good, breakage, expected):
    nb = copy.deepcopy(good)
    code, md = _cells(nb, "code"), _cells(nb, "markdown")
    if breakage == "no_title":
        _set(md[0], "Some text without a title.")
    elif breakage == "no_install":
        nb["cells"].remove(code[0])
    elif breakage == "install_unguarded":
        _set(code[0], "%%capture\n!pip install tuckerlab")
    elif breakage == "no_setup":
        _set(code[1], "import tuckerlab\nimport torch\ntorch.manual_seed(0)")
    elif breakage == "unchecked_def":
        nb["cells"].insert(3, cn._cell("code", "def tucker(x, rank):\n    return x"))
    elif breakage == "two_exercises":
        ex = md[-1]
        text = "".join(ex["source"])
        _set(ex, text[: text.index("```{exercise}\n:label: tiny-exercise-3")])
    elif breakage == "no_exercises":
        nb["cells"] = [c for c in nb["cells"] if "## Exercises" not in "".join(c["source"])]
    elif breakage == "section_after_exercises":
        nb["cells"].append(cn._cell("markdown", "## Summary\n\nWhat we saw."))
    elif breakage == "no_check_call":
        _set(code[-1], "answer = 42")
    elif breakage == "solution_not_folded":
        ex = md[-1]
        _set(ex, "".join(ex["source"]).replace(":class: dropdown\n", "", 1))
    elif breakage == "unknown_citation":
        _set(md[1], "## The idea\n\nAs {cite:p}`kim2016compression,nosuchkey2099` show.")
    elif breakage == "other_kernel":
        nb["metadata"]["kernelspec"]["name"] = "my-venv"
    problems = _problems(tmp_path, nb)
    assert any(expected in p for p in problems), problems


def test_unreadable_notebook_is_reported(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json", encoding="utf-8")
    assert "cannot be read" in cn.check_notebook(path, KEYS)[0]


def test_markdown_lines_skip_code_but_read_directives():
    text = "\n".join([
        "# Title",
        "```python",
        "# a comment, not a heading",
        "```",
        "````{solution} ex-1",
        ":class: dropdown",
        "## inside a directive",
        "```python",
        "# code in a solution",
        "```",
        "````",
        "## After",
    ])
    headings = [ln for ln in cn.markdown_lines(text) if ln.startswith("#")]
    assert headings == ["# Title", "## inside a directive", "## After"]


# ---------------------------------------------------------------------------
# the checker on a small book
# ---------------------------------------------------------------------------

@pytest.fixture
def tiny_book(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / cn.BIB, tmp_path / cn.BIB)
    (tmp_path / "book" / "preface.md").write_text("# Preface\n\nSee {cite:t}`he2016deep`.\n")
    _write(tmp_path / "notebooks" / "01_tiny.ipynb", cn.skeleton("Tiny", "tiny"))
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/preface\nparts:\n"
        "  - caption: Foundations\n    chapters:\n      - file: notebooks/01_tiny\n"
        "  # - file: notebooks/02_commented_out\n"
    )
    return tmp_path


def test_tiny_book_passes(tiny_book):
    assert cn.check_book(tiny_book) == []


def test_notebook_missing_from_toc_is_caught(tiny_book):
    _write(tiny_book / "notebooks" / "02_extra.ipynb", cn.skeleton("Extra", "extra"))
    assert any("does not list notebooks/02_extra" in p for p in cn.check_book(tiny_book))


def test_toc_entry_without_file_is_caught(tiny_book):
    toc = tiny_book / "_toc.yml"
    toc.write_text(toc.read_text() + "      - file: notebooks/03_missing\n")
    assert any("notebooks/03_missing" in p and "exists" in p for p in cn.check_book(tiny_book))


def test_unknown_citation_in_a_chapter_is_caught(tiny_book):
    (tiny_book / "book" / "preface.md").write_text("# Preface\n\n{cite:p}`nobody1999`\n")
    assert any("nobody1999" in p for p in cn.check_book(tiny_book))


def test_broken_notebook_in_the_book_is_caught(tiny_book):
    path = tiny_book / "notebooks" / "01_tiny.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"] = [c for c in nb["cells"] if "google.colab" not in "".join(c["source"])]
    _write(path, nb)
    assert any("install cell" in p for p in cn.check_book(tiny_book))


def test_every_bib_key_in_the_toc_chapters_is_defined():
    # Redundant with test_book_conventions_hold, but names the offending key.
    keys = cn.bib_keys(ROOT / cn.BIB)
    for md in (ROOT / "book").glob("*.md"):
        for key in cn.cited_keys(md.read_text(encoding="utf-8")):
            assert key in keys, f"{md.name} cites {key}"


def test_toc_parser_ignores_comments():
    files = cn.toc_files(ROOT)
    assert files[0] == "book/preface"
    text = (ROOT / "_toc.yml").read_text()
    commented = re.findall(r"^\s*#.*file:\s*(\S+)", text, re.M)
    for entry in commented:
        assert entry not in files or (ROOT / f"{entry}.ipynb").exists()

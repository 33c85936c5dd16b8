"""Static checks of the book: configuration, toc, citations, notebook conventions.

Nothing is executed here (the notebooks run under nbval and in the book
build); these checks read files only. The checker itself is tested on small
notebooks written to tmp_path, good and broken.
"""

from __future__ import annotations

import ast
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_outputs_are_current_and_clean(path):
    # The book is built from these outputs: they must come from the code the
    # notebook holds, run from a commit (make reproduce CHAPTER=...).
    problems = cn.check_outputs(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_code_lines_fit_the_page(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    long = [
        (i, line) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
        for line in cn._source(c).splitlines() if len(line) > cn.MAX_LINE
    ]
    assert not long, f"lines over {cn.MAX_LINE} characters: {long}"


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
    # The book is built from stored outputs: nothing runs while it builds.
    assert cfg["execute"]["execute_notebooks"] == "off"
    # MathJax is served from the build, not from a CDN.
    assert "sphinx-mathjax-offline" in cfg["sphinx"]["extra_extensions"]
    assert not cfg["sphinx"]["config"]["mathjax_path"].startswith(("http:", "https:", "//"))
    assert "sphinx_exercise" in cfg["sphinx"]["extra_extensions"]
    for bib in cfg["bibtex_bibfiles"]:
        assert (ROOT / bib).exists()
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    from tuckerlab.notebook import INSTALL_CELL, REPOSITORY_URL

    # One place for where the package is published: the Colab install line
    # installs from the repository the book names.
    assert cfg["repository"]["url"] == REPOSITORY_URL
    assert f"git+{REPOSITORY_URL}" in INSTALL_CELL
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


def test_install_cell_shows_pip_errors():
    from tuckerlab.notebook import INSTALL_CELL

    # %%capture would hide a failed install; -q only quietens a good one.
    assert "%%capture" not in INSTALL_CELL and "%pip install -q" in INSTALL_CELL
    assert 'if "google.colab" in sys.modules' in INSTALL_CELL


def test_how_to_use_lists_every_exercise_check():
    from tuckerlab import exercises

    how_to = (ROOT / "book" / "how_to_use.md").read_text(encoding="utf-8")
    checks = [n for n in exercises.__all__ if n.startswith("check_")]
    assert len(checks) >= 10
    missing = [n for n in checks if f"`{n}`" not in how_to]
    assert not missing, f"how_to_use.md does not list {missing}"


def _reproduce_module():
    spec = importlib.util.spec_from_file_location("reproduce_script", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(table: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| 0")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


def test_chapter_time_table_matches_the_notebooks_records():
    rp = _reproduce_module()
    how_to = (ROOT / "book" / "how_to_use.md").read_text(encoding="utf-8")
    assert rp.TABLE_START in how_to and rp.TABLE_END in how_to
    shown = _table_rows(how_to.split(rp.TABLE_START, 1)[1].split(rp.TABLE_END, 1)[0])
    expected = _table_rows(rp.times_table(rp.chapters([]), test_seconds={}))
    assert set(shown) == set(expected), "run: python scripts/reproduce.py --times --write-table"
    for chapter, cells in expected.items():
        # quick mode, machine and load, full-mode estimate; the test-mode column is whatever was last measured
        got = shown[chapter]
        assert [got[1], got[2], got[4]] == [cells[1], cells[2], cells[4]], (
            f"{chapter}: book/how_to_use.md says {got}, the notebook's record {cells}; "
            "run: python scripts/reproduce.py --times --write-table")


# ---------------------------------------------------------------------------
# the library map page
# ---------------------------------------------------------------------------

_lm_spec = importlib.util.spec_from_file_location("library_map", ROOT / "scripts" / "library_map.py")
lm = importlib.util.module_from_spec(_lm_spec)
_lm_spec.loader.exec_module(lm)


def _page_sections(text):
    sections, current = {}, None
    for line in text.splitlines():
        head = re.match(r"^## `([\w.]+)`\s*$", line)
        if head:
            current = sections.setdefault(head.group(1), [])
        elif current is not None and (row := re.match(r"^\| `([^`]+)` \|", line)):
            current.append(row.group(1))
    return sections


def test_library_map_lists_each_modules_public_api():
    sections = _page_sections(lm.PAGE.read_text(encoding="utf-8"))
    assert list(sections) == list(lm.MODULES)
    for module in lm.MODULES:
        assert sections[module] == lm.module_names(module), (
            f"book/library_map.md is out of date for {module}: "
            "run python scripts/library_map.py --write"
        )


def test_library_map_check_can_fail():
    text = lm.PAGE.read_text(encoding="utf-8")
    sections = _page_sections(text.replace("| `tensor_train` |", "| `tensor_trains` |"))
    assert sections["tuckerlab.decompose"] != lm.module_names("tuckerlab.decompose")


def test_library_map_shows_the_chapter_each_docstring_names():
    shown, module = {}, None
    for line in lm.PAGE.read_text(encoding="utf-8").splitlines():
        if head := re.match(r"^## `([\w.]+)`\s*$", line):
            module = head.group(1)
        elif row := re.match(r"^\| `([^`]+)` \|", line):
            shown[module, row.group(1)] = re.findall(r"\]\(\.\./(notebooks/[\w.-]+\.ipynb)\)", line)
    for module in lm.MODULES:
        for name in lm.module_names(module):
            obj = getattr(importlib.import_module(module), name)
            assert shown.get((module, name)) == [path for _, _, path in lm.chapter_links(obj)], (
                f"book/library_map.md shows another chapter for {module}.{name}: "
                "run python scripts/library_map.py --write"
            )


# ---------------------------------------------------------------------------
# docstrings name the chapter that explains them
# ---------------------------------------------------------------------------

def _public_objects():
    """``{id: (object, its public names)}`` over every module of the library map."""
    found = {}
    for module in lm.MODULES:
        for name in lm.module_names(module):
            obj = getattr(importlib.import_module(module), name)
            if lm._kind(obj) != "constant":
                found.setdefault(id(obj), (obj, set()))[1].add(name)
    return found


def _title(nb):
    first = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    head = re.match(r"#\s+(.*?)\s*$", cn._source(first).splitlines()[0])
    return head.group(1) if head else None


def _link_problems(obj, names, root=ROOT):
    """What is wrong with the ``Explained in:`` lines of ``obj`` (public as ``names``)."""
    label = "/".join(sorted(names))
    doc = " ".join((obj.__doc__ or "").split())
    links = lm.chapter_links(obj)
    problems = []
    if doc.count("Explained in:") != len(links):
        problems.append(f"{label}: an 'Explained in:' line does not read "
                        '\'Explained in: chapter N, "Title" (notebooks/NN_name.ipynb).\'')
    for number, title, path in links:
        file = root / path
        if not file.exists():
            problems.append(f"{label}: {path} does not exist")
            continue
        nb = json.loads(file.read_text(encoding="utf-8"))
        prefix = re.match(r"(\d+)_", file.name)
        if not prefix or number != int(prefix.group(1)):
            problems.append(f"{label}: {path} is chapter {prefix and int(prefix.group(1))}, not {number}")
        if title != _title(nb):
            problems.append(f"{label}: {path} is titled {_title(nb)!r}, not {title!r}")
        text = "\n".join(cn._source(c) for c in nb["cells"])
        if not any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text) for n in names):
            problems.append(f"{label}: {path} never mentions it")
    return problems


def _python(code):
    """A code cell as Python: IPython's %magic and !shell lines become ``pass``."""
    return "\n".join(re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in code.splitlines())


def _chapter_uses(nb):
    """``(module, name)`` of each tuckerlab name the code cells import or reach by attribute."""
    trees = [ast.parse(_python(cn._source(c))) for c in nb["cells"] if c["cell_type"] == "code"]
    aliases, uses = {}, set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tuckerlab":
            uses.update((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tuckerlab":
                    # import tuckerlab.x binds tuckerlab; import tuckerlab.x as y binds y
                    aliases[alias.asname or "tuckerlab"] = alias.name if alias.asname else "tuckerlab"
    for node in (n for tree in trees for n in ast.walk(tree)):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name) and node.id in aliases:
            dotted = ".".join([aliases[node.id], *parts])
            uses.add(tuple(dotted.rsplit(".", 1)))
    return uses


def _used_objects(nb, public):
    """The public functions and classes a notebook's code uses: ``{id: "module.name"}``."""
    used = {}
    for module, name in _chapter_uses(nb):
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue  # a module itself (tuckerlab.notebook), or not public
        if id(obj) in public:
            used.setdefault(id(obj), f"{module}.{name}")
    return used


def _unlinked_uses(nb, public):
    """The public names a notebook's code uses whose docstring names no chapter."""
    used = _used_objects(nb, public)
    return sorted(name for key, name in used.items() if not lm.chapter_links(public[key][0]))


def test_chapter_links_in_docstrings_point_to_chapters_that_mention_the_name():
    public = _public_objects()
    linked = [(obj, names) for obj, names in public.values() if lm.chapter_links(obj)]
    assert len(linked) >= 50
    problems = [p for obj, names in linked for p in _link_problems(obj, names)]
    assert not problems, "\n".join(problems)


def test_every_public_name_a_chapter_uses_names_a_chapter():
    # A new use of the library in a chapter gets an 'Explained in:' line in the docstring
    # (DEVELOPERS.md, "Docstrings").
    public = _public_objects()
    missing = []
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        used = _used_objects(nb, public)
        assert len(used) >= 8, f"{path.name}: the scan of its code found too little: {used}"
        missing += [f"{name} (used in {path.name})" for name in _unlinked_uses(nb, public)]
    assert not missing, "no 'Explained in:' line in the docstring of:\n" + "\n".join(sorted(missing))


def test_chapter_links_sit_on_public_names():
    # A line on a private helper or a method would escape the checks above.
    in_source = sum(" ".join(p.read_text(encoding="utf-8").split()).count("Explained in:")
                    for p in (ROOT / "tuckerlab").rglob("*.py"))
    on_public = sum(" ".join((obj.__doc__ or "").split()).count("Explained in:")
                    for obj, _ in _public_objects().values())
    assert in_source == on_public


def _documented(doc):
    def fn():
        pass

    fn.__doc__ = doc
    return fn


_TUCKER_CHAPTER = '"Tensors and the Tucker decomposition" (notebooks/01_tucker.ipynb).'


@pytest.mark.parametrize("doc, names, expected", [
    (f"Tucker.\n\n    Explained in: chapter 1, {_TUCKER_CHAPTER}", {"tucker"}, None),
    (f"Tucker.\n\n    Explained in: chapter 1,\n    {_TUCKER_CHAPTER}\n", {"tucker"}, None),
    (f"Tucker.\n\n    Explained in: chapter 1, {_TUCKER_CHAPTER}", {"lc_compress"}, "never mentions"),
    (f"Tucker.\n\n    Explained in: chapter 2, {_TUCKER_CHAPTER}", {"tucker"}, "is chapter 1, not 2"),
    ('Explained in: chapter 1, "Tucker" (notebooks/01_tucker.ipynb).', {"tucker"}, "is titled"),
    ('Explained in: chapter 9, "Later" (notebooks/09_later.ipynb).', {"tucker"}, "does not exist"),
    ("Explained in: notebooks/01_tucker.ipynb", {"tucker"}, "does not read"),
])
def test_chapter_link_check_catches(doc, names, expected):
    problems = _link_problems(_documented(doc), names)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_chapter_use_check_catches_an_unlinked_use(monkeypatch):
    from tuckerlab.metrics import count_params
    from tuckerlab.train import evaluate, fit

    nb = cn.skeleton("Tiny", "tiny")
    nb["cells"].append(cn._cell("code", (
        "from tuckerlab.train import (\n    fit,\n)\n"
        "if False:\n    %pip install nothing\n"
        "import tuckerlab.train\n"
        "import tuckerlab.metrics as tm\n"
        "fit(model, data, epochs=1)\n"
        "tuckerlab.train.evaluate(model, data)\n"
        "tm.count_params(model)"
    )))
    public = _public_objects()
    assert _unlinked_uses(nb, public) == []
    for fn in (fit, evaluate, count_params):
        monkeypatch.setattr(fn, "__doc__", "Undocumented.")
    assert _unlinked_uses(nb, public) == [
        "tuckerlab.metrics.count_params", "tuckerlab.train.evaluate", "tuckerlab.train.fit"]


# ---------------------------------------------------------------------------
# the stale-output check
# ---------------------------------------------------------------------------

def _executed(nb):
    """Mark every code cell as run and record the code hash, as reproduce.py does."""
    nb = copy.deepcopy(nb)
    for k, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = k + 1
    nb["metadata"][cn.RECORD_KEY] = {"code_sha256": cn.code_hash(nb), "git_commit": "0" * 40}
    return nb


def test_outputs_check_passes_a_fresh_run(tmp_path, good):
    assert cn.check_outputs(_write(tmp_path / "01_tiny.ipynb", _executed(good))) == []


def test_outputs_check_fails_when_code_changed_after_the_run(tmp_path, good):
    nb = _executed(good)
    code = _cells(nb, "code")
    _set(code[-1], cn._source(code[-1]) + "\nprint('edited')")
    problems = cn.check_outputs(_write(tmp_path / "01_tiny.ipynb", nb))
    assert any("changed after its outputs were produced" in p for p in problems), problems


def test_outputs_check_fails_on_a_real_chapter_edited_without_rerunning(tmp_path):
    path = ROOT / "notebooks" / "01_tucker.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert cn.check_outputs(path) == []
    cell = next(c for c in nb["cells"] if "def hosvd" in cn._source(c))
    _set(cell, cn._source(cell).replace("rank", "ranks"))
    problems = cn.check_outputs(_write(tmp_path / "01_tucker.ipynb", nb))
    assert any("stale" in p for p in problems), problems


def test_quoted_numbers_shown_by_an_output_pass(tmp_path, good):
    nb = _executed(good)
    _set(_cells(nb, "markdown")[1], "## The idea\n\n12.34 % of it, and 3.5% of that.")
    _cells(nb, "code")[-1]["outputs"] = [{"output_type": "stream", "name": "stdout",
                                          "text": ["accuracy 12.34%, kept 0.035\n"]}]
    assert cn.check_outputs(_write(tmp_path / "01_tiny.ipynb", nb)) == []


def test_outputs_check_ignores_markdown_and_tags(tmp_path, good):
    nb = _executed(good)
    _set(_cells(nb, "markdown")[0], "# Another title\n\nNew prose.")
    _cells(nb, "code")[-1]["metadata"]["tags"] = ["hide-input"]
    assert cn.check_outputs(_write(tmp_path / "01_tiny.ipynb", nb)) == []


@pytest.mark.parametrize("breakage, expected", [
    ("no_record", "no record of the run"),
    ("dirty_commit", "dirty tree"),
    ("dirty_output", "dirty tree"),
    ("not_run", "has not been run"),
    ("unshown_number", "quotes '12.34 %'"),
])
def test_outputs_check_catches(tmp_path, good, breakage, expected):
    nb = _executed(good)
    code = _cells(nb, "code")
    if breakage == "no_record":
        del nb["metadata"][cn.RECORD_KEY]
    elif breakage == "dirty_commit":
        nb["metadata"][cn.RECORD_KEY]["git_commit"] = "ab" * 20 + "-dirty"
    elif breakage == "dirty_output":
        code[-1]["outputs"] = [{"output_type": "stream", "name": "stdout",
                                "text": ["git_commit: " + "cd" * 20 + "-dirty\n"]}]
    elif breakage == "not_run":
        code[-1]["execution_count"] = None
    elif breakage == "unshown_number":
        _set(_cells(nb, "markdown")[1], "## The idea\n\nIt reaches 12.34 % here.")
    problems = cn.check_outputs(_write(tmp_path / "01_tiny.ipynb", nb))
    assert any(expected in p for p in problems), problems


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
        ("install_captured", "install cell"),
        ("install_visible", "remove-cell"),
        ("setup_without_chapter", "chapter='01_tiny'"),
        ("long_line", "at most 88 fit the page"),
        ("nbval_comment", "'# NBVAL_...' comment"),
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
        _set(code[0], "!pip install tuckerlab")
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
    elif breakage == "install_captured":
        _set(code[0], "%%capture\n" + cn._source(code[0]))
    elif breakage == "install_visible":
        code[0]["metadata"]["tags"] = []
    elif breakage == "setup_without_chapter":
        _set(code[1], "import tuckerlab.notebook\n\nmode = tuckerlab.notebook.setup(seed=0)")
    elif breakage == "long_line":
        _set(code[-1], cn._source(code[-1]) + "\nx = " + "1 + " * 40 + "1")
    elif breakage == "nbval_comment":
        _set(code[-1], "# NBVAL_CHECK_OUTPUT\n" + cn._source(code[-1]))
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
    _write(tmp_path / "notebooks" / "01_tiny.ipynb", _executed(cn.skeleton("Tiny", "tiny")))
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/preface\nparts:\n"
        "  - caption: Foundations\n    chapters:\n      - file: notebooks/01_tiny\n"
        "  # - file: notebooks/02_commented_out\n"
    )
    return tmp_path


def test_tiny_book_passes(tiny_book):
    assert cn.check_book(tiny_book) == []


def test_notebook_missing_from_toc_is_caught(tiny_book):
    _write(tiny_book / "notebooks" / "02_extra.ipynb",
           _executed(cn.skeleton("Extra", "extra", "02_extra")))
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

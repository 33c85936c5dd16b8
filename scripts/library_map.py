#!/usr/bin/env python
"""Write the book's library map: the public API of every module, from its ``__all__``.

    python scripts/library_map.py            # print the page
    python scripts/library_map.py --write    # write book/library_map.md

The page lists, per module, each name of its ``__all__`` with the first
line of its docstring and the chapter named on its ``Explained in:`` line
(:func:`chapter_links`). ``tests/test_book.py`` checks that the names on the
page are exactly each module's ``__all__``; when a module's public API or a
chapter link changes, run this script with ``--write`` (or edit the page by
hand).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "library_map.md"

#: The modules the page documents, in reading order.
MODULES = (
    "tuckerlab",
    "tuckerlab.decompose",
    "tuckerlab.formats",
    "tuckerlab.layers",
    "tuckerlab.layer_selection",
    "tuckerlab.surgery",
    "tuckerlab.metrics",
    "tuckerlab.latency",
    "tuckerlab.fuse",
    "tuckerlab.export",
    "tuckerlab.rank",
    "tuckerlab.rank.selectors",
    "tuckerlab.rank.network_budget",
    "tuckerlab.projection",
    "tuckerlab.methods",
    "tuckerlab.pipeline",
    "tuckerlab.train",
    "tuckerlab.models",
    "tuckerlab.data",
    "tuckerlab.serialization",
    "tuckerlab.results",
    "tuckerlab.runs",
    "tuckerlab.notebook",
    "tuckerlab.exercises",
    "tuckerlab.cli",
)

HEADER = """\
(library-map)=
# Library map

The public API of the `tuckerlab` package, module by module: every name a
module exports (its `__all__`) with the first line of its documentation
and, for the names a chapter uses, the chapter that explains it.
`help(name)` in Python shows the rest. The module contracts are described in
the repository's `DEVELOPERS.md`.
"""

#: The line by which a docstring names the chapter that explains it, e.g.
#: ``Explained in: chapter 1, "Tensors and the Tucker decomposition"
#: (notebooks/01_tucker.ipynb).`` (it may wrap; whitespace is normalised).
EXPLAINED = re.compile(
    r'Explained in: chapter (\d+), "([^"]+)" \((notebooks/[\w.-]+\.ipynb)\)\.'
)

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`~?([^`]+)`")


def _first_line(text: str | None) -> str:
    text = inspect.cleandoc(text or "").strip()
    if not text:
        return ""
    line = text.split("\n\n")[0].replace("\n", " ")
    line = _ROLE.sub(r"`\1`", line).replace("``", "`").replace("|", "\\|")
    return line


def _value(obj) -> str:
    text = repr(obj)
    if len(text) <= 60 and "\n" not in text:
        return "`" + text.replace("|", "\\|") + "`"
    return f"a `{type(obj).__name__}`"


def _kind(obj) -> str:
    if inspect.isclass(obj):
        return "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or callable(obj):
        return "function"
    return "constant"


def chapter_links(obj) -> list[tuple[int, str, str]]:
    """``(number, title, path)`` of each chapter the docstring of ``obj`` names.

    Reads the object's own ``__doc__`` (not one inherited by a subclass);
    constants have none of their own and give ``[]``.
    """
    if _kind(obj) == "constant":
        return []
    text = " ".join((obj.__doc__ or "").split())
    return [(int(n), title, path) for n, title, path in EXPLAINED.findall(text)]


def _chapters(obj) -> str:
    return ", ".join(f"[{title}](../{path})" for _, title, path in chapter_links(obj))


def module_names(name: str) -> list[str]:
    """The public names of module ``name`` (its ``__all__``)."""
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise SystemExit(f"library_map: {name} has no __all__")
    return list(names)


def render() -> str:
    parts = [HEADER]
    for name in MODULES:
        module = importlib.import_module(name)
        parts.append(f"\n## `{name}`\n\n{_first_line(module.__doc__)}\n")
        parts.append("| name | kind | what it is | explained in |\n|---|---|---|---|")
        for item in module_names(name):
            obj = getattr(module, item)
            kind = _kind(obj)
            doc = _first_line(obj.__doc__) if kind != "constant" else _value(obj)
            parts.append(f"| `{item}` | {kind} | {doc} | {_chapters(obj)} |")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    text = render()
    if args.write:
        PAGE.write_text(text, encoding="utf-8")
        print(f"wrote {PAGE.relative_to(ROOT)}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

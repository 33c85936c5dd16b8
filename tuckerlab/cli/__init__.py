"""The ``tuckerlab`` command: train, compress, evaluate and inspect models, and run the methods.

Every sub-command that produces numbers writes ``results.json`` (the numbers
and their provenance, see :mod:`tuckerlab.results`) into its output folder.
Each command lives in its own module with a ``register(subparsers)``
function; the command line only parses and prints, the library does the
work and holds the defaults.

Examples
--------
.. code-block:: bash

    tuckerlab train    --model resnet20 --data cifar10-subset --epochs 15 --out runs/r20
    tuckerlab compress runs/r20/model.pt --format tucker2 --rank evbmf --finetune-epochs 5
    tuckerlab evaluate runs/r20-tucker2/model.pt
    tuckerlab admm     --model resnet32 --format tt --rank params:0.33 --epochs 200 --finetune-epochs 200
    tuckerlab batude   runs/r20/model.pt --budget macs:0.4 --epochs 30 --finetune-epochs 30
    tuckerlab alternating runs/r20/model.pt --epsilon 1.0 --target-params 0.3 --finetune-epochs 5
    tuckerlab lwiq     runs/r20/model.pt --budget params:0.3 --finetune-epochs 5
    tuckerlab info     --model resnet56
    tuckerlab demo

``--plugins MODULE[,MODULE]`` imports modules first, so that formats and
rank selectors they register can be named on the command line.

Errors are one or two lines naming the flag or file, the value and what to
do; ``--debug`` (or ``TUCKERLAB_DEBUG=1``) shows the traceback of an
unexpected one. Exit status: 0 done, 2 bad input, 1 unexpected error, 130
interrupted (a training command resumes when run again).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from . import admm, alternating, batude, compare, deploy, lc, lwiq, train
from ._common import check_rank

__all__ = ["main", "build_parser"]

#: The modules that add sub-commands, in the order of ``tuckerlab --help``.
COMMANDS = (train, lc, admm, batude, alternating, lwiq, deploy, compare)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tuckerlab`` command."""
    from tuckerlab import __version__

    parser = argparse.ArgumentParser(
        prog="tuckerlab",
        description="Compress convolutional networks by tensor decomposition.",
    )
    parser.add_argument("--version", action="version", version=f"tuckerlab {__version__}")
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("TUCKERLAB_DEBUG")),
                        help="show the full traceback of an unexpected error (also TUCKERLAB_DEBUG=1)")
    parser.add_argument("--plugins", default=os.environ.get("TUCKERLAB_PLUGINS"),
                        help="modules to import first (comma-separated), e.g. ones registering formats or rank "
                             "selectors (default $TUCKERLAB_PLUGINS)")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _load_plugins(argv: Sequence[str] | None) -> None:
    """Import the ``--plugins`` modules before the parser is built (their formats become choices)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = os.environ.get("TUCKERLAB_PLUGINS", "")
    for i, arg in enumerate(argv):
        if arg == "--plugins" and i + 1 < len(argv):
            names = argv[i + 1]
        elif arg.startswith("--plugins="):
            names = arg.split("=", 1)[1]
    for name in filter(None, (n.strip() for n in names.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise SystemExit(f"tuckerlab: error: --plugins {name!r} cannot be imported: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tuckerlab`` and ``python -m tuckerlab``."""
    from tuckerlab.models import WeightsUnavailableError

    _load_plugins(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_rank(args)
        return args.func(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = f" (checkpoints under {out})" if out else ""
        print(f"tuckerlab {args.command}: interrupted{where}; run the same command again to resume from the last "
              "checkpoint (add --restart to start over)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, WeightsUnavailableError) as err:
        if args.debug:
            raise
        print(f"tuckerlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # unexpected: one line, the traceback on request
        if args.debug:
            raise
        print(f"tuckerlab {args.command}: unexpected error: {type(err).__name__}: {err}\n"
              "(run with --debug, or TUCKERLAB_DEBUG=1, for the traceback)", file=sys.stderr)
        return 1

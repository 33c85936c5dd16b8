"""``tuckerlab compare``: every method at one budget on one model and data set, resumable, in one table."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_compare(args: argparse.Namespace) -> int:
    """Run (or list) the cells of a comparison grid that are not done, then collect them into one table."""
    from tuckerlab.compare import cells, collect, load_grid, run_grid, write_table

    overrides = dict(model=args.model, data=args.data, methods=args.methods, budgets=args.budgets, seeds=args.seeds,
                     epochs=args.epochs, pretrain_epochs=args.pretrain_epochs)
    if args.extra:
        overrides["extra"] = args.extra.split()
    grid = load_grid(args.grid, **{k: v for k, v in overrides.items() if v is not None})
    root = Path(args.out)
    if args.list:
        for cell in cells(grid, root):
            if not cell.done or args.all:
                print(cell.command())
        return 0
    if not args.collect_only:
        run_grid(grid, root)
    table = collect(grid, root, latency=not args.no_latency)
    csv_path, md_path = write_table(table, root)
    if not args.no_figures:
        from tuckerlab.compare import plot_pareto

        plot_pareto(table, root / "pareto.png")
    print(md_path.read_text())
    print(f"table: {csv_path}  {md_path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="every method at one budget: a resumable grid and one table",
                       description=cmd_compare.__doc__)
    p.add_argument("--grid", default=None, help="TOML grid file (default: the one shipped with tuckerlab)")
    p.add_argument("--out", default="runs/compare", help="folder of the cells and the table (default runs/compare)")
    p.add_argument("--list", action="store_true", help="print one command per cell not done yet, run nothing")
    p.add_argument("--all", action="store_true", help="with --list: every cell, done or not")
    p.add_argument("--collect-only", action="store_true", help="run nothing; collect the cells that are done")
    p.add_argument("--no-latency", action="store_true", help="do not time the models (latency columns left empty)")
    p.add_argument("--no-figures", action="store_true", help="no Pareto figure")
    g = p.add_argument_group("grid overrides")
    g.add_argument("--model", default=None)
    g.add_argument("--data", default=None)
    g.add_argument("--methods", nargs="+", default=None)
    g.add_argument("--budgets", nargs="+", default=None, help="e.g. params:0.5 macs:0.25")
    g.add_argument("--seeds", nargs="+", type=int, default=None)
    g.add_argument("--epochs", type=int, default=None, help="total epochs per run, pre-training included")
    g.add_argument("--pretrain-epochs", type=int, default=None)
    g.add_argument("--extra", default=None, help="more flags for every command, quoted (e.g. '--device cuda')")
    p.set_defaults(func=cmd_compare)

"""Every method at one budget, one engine, one table: the comparison grid behind ``tuckerlab compare``.

A *grid* is methods x budgets x seeds on one model and data set, with one
total number of epochs for every run (the dense pre-training included for the
methods that start from a trained network). Each *cell* is an ordinary
``tuckerlab`` command writing ``model.pt`` and ``results.json`` into its own
folder, so

- a cell already done is not run again: an interrupted comparison resumes,
  and a grid can be split across machines that share the folder;
- ``tuckerlab compare --list`` prints one command per cell, for a job array
  or GNU parallel;
- :func:`collect` reads every cell back into one table (CSV and Markdown),
  measures each compressed model's CPU latency at batch 1 and 128 beside its
  dense network in the same process (kept in the cell as ``latency.json``),
  and averages over seeds with standard errors.

The methods and how each spends the epochs are in :data:`METHODS`: every
recipe is its paper's, scaled to the grid's total (stated per row in
``"epochs"``). A grid comes from a TOML file (:func:`load_grid`; the default
ships as ``tuckerlab/compare_default.toml``).
"""
from __future__ import annotations

import csv
import json
import math
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["Grid", "Cell", "METHODS", "MethodRecipe", "register_method", "load_grid", "cells", "run_grid", "collect",
           "paired_difference", "write_table", "plot_pareto"]

DEFAULT_GRID = Path(__file__).with_name("compare_default.toml")


@dataclass(frozen=True)
class Grid:
    """What to compare: methods x budgets x seeds, on one model and data set, at one total of epochs.

    Attributes
    ----------
    model, data : str
        Architecture and data set names.
    methods : tuple of str
        Keys of :data:`METHODS`.
    budgets : tuple of str
        ``"params:T"`` or ``"macs:T"``, ``T`` the compressed/original ratio.
    seeds : tuple of int
    epochs : int
        Total epochs of every run, pre-training included.
    pretrain_epochs : int
        Epochs of the dense network the trained-model methods start from.
    batch_size : int
    extra : tuple of str
        More flags given to every command (e.g. ``--max-steps-per-epoch 2``
        for a smoke run, ``--device cuda``).
    """

    model: str = "resnet20"
    data: str = "cifar10-subset"
    methods: tuple = ()
    budgets: tuple = ("params:0.5",)
    seeds: tuple = (0, 1, 2)
    epochs: int = 23
    pretrain_epochs: int = 15
    batch_size: int = 64
    extra: tuple = ()

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods={unknown!r}: not known; accepted: {', '.join(METHODS)}")
        for b in self.budgets:
            metric, _, value = str(b).partition(":")
            try:
                ok = metric in ("params", "macs") and 0.0 < float(value) <= 1.0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"budget {b!r}: write params:T or macs:T with T in (0, 1]")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ValueError(f"seeds={self.seeds!r}: give a list of integers")
        if not 1 <= self.pretrain_epochs < self.epochs:
            raise ValueError(f"pretrain_epochs={self.pretrain_epochs} must be in [1, epochs={self.epochs})")


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a method at a budget with a seed, or a dense network (``method="dense"``)."""

    method: str
    budget: str
    seed: int
    folder: Path
    argv: tuple
    epochs: str = ""

    @property
    def done(self) -> bool:
        return (self.folder / "results.json").is_file() and (self.folder / "model.pt").is_file()

    def command(self) -> str:
        """The shell command of this cell."""
        return "tuckerlab " + " ".join(shlex.quote(str(a)) for a in self.argv)


@dataclass(frozen=True)
class MethodRecipe:
    """How one method runs in the grid.

    ``argv(grid, budget, seed, dense_file, out)`` gives the command's
    arguments; ``epochs(grid)`` says how it spends the total.
    """

    label: str
    paper: str
    argv: Callable
    epochs: Callable
    from_scratch: bool = False


def _metric(budget: str) -> tuple[str, float]:
    metric, _, value = budget.partition(":")
    return metric, float(value)


def _common(grid: Grid, seed: int, out: Path) -> list[str]:
    return ["--data", grid.data, "--seed", str(seed), "--out", str(out), "--batch-size", str(grid.batch_size),
            "--no-progress", *grid.extra]


def _rest(grid: Grid) -> int:
    """Epochs left after the dense pre-training."""
    return grid.epochs - grid.pretrain_epochs


def _decompose(rank: Callable[[str], str], label: str, paper: str, fmt: str = "tucker2") -> MethodRecipe:
    def argv(grid, budget, seed, dense, out):
        return ["compress", str(dense), "--format", fmt, "--rank", rank(budget),
                "--finetune-epochs", str(_rest(grid)), "--lr", "0.02", "--schedule", "cosine",
                *_common(grid, seed, out)]

    return MethodRecipe(label, paper, argv, lambda g: f"{g.pretrain_epochs} dense + {_rest(g)} fine-tune")


def _lc(fmt: str) -> MethodRecipe:
    def argv(grid, budget, seed, dense, out):
        steps, ft = max(1, _rest(grid) - 2), 2
        return ["lc", str(dense), "--format", fmt, "--rank", budget, "--steps", str(steps), "--epochs-per-step", "1",
                "--finetune-epochs", str(ft), "--lr", "0.01", "--mu0", "0.05", "--mu-growth", "1.5",
                "--finetune-lr", "0.02", *_common(grid, seed, out)]

    return MethodRecipe(f"LC ({fmt})", "Idelbayev & Carreira-Perpinan 2020", argv,
                        lambda g: f"{g.pretrain_epochs} dense + {max(1, _rest(g) - 2)} L-steps + 2 fine-tune")


def _ttlc(grid, budget, seed, dense, out):
    metric, target = _metric(budget)
    if metric != "params":
        raise ValueError("TT-LC's double Bayesian ranks meet a parameter budget only")
    warmup = grid.pretrain_epochs // 3
    steps = grid.epochs - warmup
    return ["tt-lc", "--model", grid.model, "--target-params", str(target), "--warmup-epochs", str(warmup),
            "--steps", str(steps), "--epochs-per-step", "1", "--lr", "0.2", "--mu-growth", "1.5",
            *_common(grid, seed, out)]


def _admm(fmt: str) -> MethodRecipe:
    # the authors' recipe: ADMM from scratch, then as many epochs of fine-tuning (200 + 200), scaled to the total
    def argv(grid, budget, seed, dense, out):
        half = grid.epochs // 2
        return ["admm", "--model", grid.model, "--format", fmt, "--rank", budget, "--epochs", str(half),
                "--finetune-epochs", str(grid.epochs - half), "--rho", "0.8", "--update-every", "10", "--lr", "0.1",
                "--schedule", "cosine", "--finetune-lr", "0.02", *_common(grid, seed, out)]

    return MethodRecipe(f"ADMM ({fmt})", "Yin et al. 2021", argv,
                        lambda g: f"{g.epochs // 2} ADMM from scratch + {g.epochs - g.epochs // 2} fine-tune",
                        from_scratch=True)


def _batude(grid, budget, seed, dense, out):
    # ranks learned from the trained network under the grid's budget; the pull of ADMM's grid row (rho 0.8,
    # an M-step every 10 steps), since the recipe's rho = 1e-3 is meant for hundreds of epochs
    epochs = max(1, _rest(grid) - 2)
    return ["batude", str(dense), "--budget", budget, "--epochs", str(epochs), "--finetune-epochs", "2",
            "--rho", "0.8", "--update-every", "10", "--lr", "0.01", "--schedule", "cosine", "--finetune-lr", "0.02",
            *_common(grid, seed, out)]


def _lwiq(grid, budget, seed, dense, out):
    # TT ranks by layer significance at the grid's budget, then the fine-tuning of the other decompose rows
    return ["lwiq", str(dense), "--budget", budget, "--finetune-epochs", str(_rest(grid)), "--lr", "0.02",
            "--schedule", "cosine", *_common(grid, seed, out)]


def _alternating(grid, budget, seed, dense, out):
    # from the trained network, shrinking towards the grid's budget while the held-out accuracy stays within the
    # default 1 point; LC's grid pull (mu 0.05 x1.5 per round), one epoch per round, the short fine-tuning
    metric, _, target = budget.partition(":")
    rounds = max(1, _rest(grid) - 2)
    return ["alternating", str(dense), f"--target-{metric}", target, "--rounds", str(rounds),
            "--epochs-per-round", "1", "--mu0", "0.05", "--mu-growth", "1.5", "--lr", "0.01", "--finetune-epochs", "2",
            "--finetune-lr", "0.02", *_common(grid, seed, out)]


METHODS: dict[str, MethodRecipe] = {
    "evbmf": _decompose(lambda b: f"fit:{b}:evbmf", "EVBMF + fine-tune", "Kim et al. 2016"),
    "budget": _decompose(lambda b: b, "budget solver + fine-tune", "Idelbayev & Carreira-Perpinan 2020"),
    "bayesopt": _decompose(lambda b: f"fit:{b}:bayesopt:20", "BayesOpt + fine-tune", "Kim, Lee & Choe 2020"),
    "lc-tucker2": _lc("tucker2"),
    "lc-tt": _lc("tt"),
    "tt-lc": MethodRecipe("TT-LC", "Liu et al. 2024", _ttlc,
                          lambda g: f"{g.pretrain_epochs // 3} warm-up + {g.epochs - g.pretrain_epochs // 3} L-steps, "
                                    "from scratch", from_scratch=True),
    "admm-tt": _admm("tt"),
    "admm-tucker2": _admm("tucker2"),
    "batude": MethodRecipe("BATUDE (tucker2)", "Yin et al. 2022", _batude,
                           lambda g: f"{g.pretrain_epochs} dense + {max(1, _rest(g) - 2)} BATUDE + 2 fine-tune"),
    "alternating": MethodRecipe("accuracy-aware alternating (tucker2)", "Liu et al. 2025", _alternating,
                                lambda g: f"{g.pretrain_epochs} dense + up to {max(1, _rest(g) - 2)} alternating + "
                                          "2 fine-tune"),
    "lwiq": MethodRecipe("LWIQ (tt)", "Liu et al. 2024", _lwiq,
                         lambda g: f"{g.pretrain_epochs} dense + {_rest(g)} fine-tune"),
    # the proxy-based TT rank search LWIQ is compared with (its rank search time is in the table too)
    "proxy-search": _decompose(lambda b: f"proxy_search:{b}", "proxy search (tt) + fine-tune",
                               "Liu et al. 2024 (baseline)", fmt="tt"),
}


def register_method(key: str, recipe: MethodRecipe) -> None:
    """Add a method to :data:`METHODS` (a new method's module registers itself here)."""
    METHODS[key] = recipe


def load_grid(path: str | Path | None = None, **overrides) -> Grid:
    """The grid of a TOML file (default: the one shipped with the package), with ``overrides`` applied."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    path = Path(path) if path is not None else DEFAULT_GRID
    if not path.is_file():
        raise FileNotFoundError(f"grid file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        raw = tomllib.load(f).get("grid", {})
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = set(Grid.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown grid keys {unknown}; accepted: {sorted(known)}")
    return Grid(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def cells(grid: Grid, root: str | Path) -> list[Cell]:
    """Every cell of ``grid`` under ``root``: the dense networks first (one per seed), then the methods."""
    root = Path(root)
    out = []
    for seed in grid.seeds:
        folder = root / f"dense-seed{seed}"
        out.append(Cell("dense", "-", seed, folder, (
            "train", "--model", grid.model, "--data", grid.data, "--epochs", str(grid.pretrain_epochs), "--lr", "0.2",
            "--schedule", "onecycle", "--seed", str(seed), "--out", str(folder), "--batch-size", str(grid.batch_size),
            "--no-progress", *grid.extra), f"{grid.pretrain_epochs} dense"))
    for budget in grid.budgets:
        for method in grid.methods:
            recipe = METHODS[method]
            for seed in grid.seeds:
                folder = root / f"{method}-{budget.replace(':', '')}-seed{seed}"
                dense = root / f"dense-seed{seed}" / "model.pt"
                out.append(Cell(method, budget, seed, folder, tuple(recipe.argv(grid, budget, seed, dense, folder)),
                                recipe.epochs(grid)))
    return out


def run_grid(grid: Grid, root: str | Path, *, only: Sequence[str] | None = None, dry_run: bool = False,
             log=print) -> list[Cell]:
    """Run every cell not done yet (in process, one after the other); returns the cells that ran.

    A failing cell is reported and the grid goes on; its folder keeps no
    ``results.json``, so the next run tries it again.
    """
    from tuckerlab.cli import main

    ran = []
    for cell in cells(grid, root):
        if cell.done or (only and cell.method not in only and cell.method != "dense"):
            continue
        log(f"[{len(ran) + 1}] {cell.command()}")
        if dry_run:
            continue
        status = main(list(cell.argv))
        if status:
            log(f"    exit status {status}: {cell.folder} is left incomplete")
        ran.append(cell)
    return ran


def _sem(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def _latency(cell: Cell, dense_file: Path, batches=(1, 128), rounds: int = 5) -> dict:
    """CPU latency (median ms) of the cell's model and of its dense network, interleaved in this process; cached."""
    import torch

    from tuckerlab.metrics import measure_latency
    from tuckerlab.results import device_name
    from tuckerlab.serialization import load_model

    path = cell.folder / "latency.json"
    device = device_name(torch.device("cpu"))
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("device") == device and [int(b) for b in cached.get("batches", [])] == list(batches):
            return cached
    model, info = load_model(cell.folder / "model.pt")
    dense, _ = load_model(dense_file)
    shape = (info.get("in_channels", 3), 32, 32)
    out = {"device": device, "batches": list(batches)}
    for b in batches:
        times = {"model": [], "dense": []}
        for _ in range(rounds):
            for name, m in (("model", model), ("dense", dense)):
                times[name].append(measure_latency(m, shape, batch_size=b, warmup=2, repeats=5)["median_ms"])
        out[str(b)] = {k: statistics.median(v) for k, v in times.items()}
    path.write_text(json.dumps(out, indent=2))
    return out


def collect(grid: Grid, root: str | Path, *, latency: bool = True) -> list[dict]:
    """One row per (method, budget): the cells' numbers averaged over seeds, with standard errors.

    Every value comes from the cells' ``results.json`` (and ``latency.json``);
    a row lists the seeds it has. Missing cells are left out of the mean and
    counted in ``"missing"``.
    """
    root = Path(root)
    by_key: dict[tuple, list[dict]] = {}
    dense_acc = {}
    for cell in cells(grid, root):
        if not cell.done:
            by_key.setdefault((cell.method, cell.budget), [])
            continue
        res = json.loads((cell.folder / "results.json").read_text())
        numbers, prov = res["results"], res["provenance"]
        if cell.method == "dense":
            dense_acc[cell.seed] = numbers["test_accuracy"]
            by_key.setdefault(("dense", "-"), []).append({
                "seed": cell.seed, "accuracy": numbers["test_accuracy"], "params": numbers["params"],
                "macs": numbers["macs"], "wall_time_s": prov.get("wall_time_s"), "epochs": cell.epochs})
            continue
        final = numbers.get("accuracy_finetuned")
        final = numbers["accuracy_compressed"] if final is None else final
        row = {
            "seed": cell.seed, "accuracy": final, "params": numbers["params_after"], "macs": numbers["macs_after"],
            "params_cut": numbers["params_reduction"], "macs_cut": numbers["macs_reduction"],
            "wall_time_s": prov.get("wall_time_s"), "epochs": cell.epochs,
            "rank_search_s": (numbers.get("rank_selection") or {}).get("search_seconds"),
        }
        if latency:
            lat = _latency(cell, root / f"dense-seed{cell.seed}" / "model.pt")
            for b in lat["batches"]:
                row[f"latency_b{b}"] = lat[str(b)]["model"] / lat[str(b)]["dense"]
        by_key.setdefault((cell.method, cell.budget), []).append(row)
    table = []
    for (method, budget), rows in by_key.items():
        label = "dense" if method == "dense" else METHODS[method].label
        entry = {"method": method, "label": label, "budget": budget, "seeds": [r["seed"] for r in rows],
                 "missing": len(grid.seeds) - len(rows)}
        if rows:
            accs = [r["accuracy"] for r in rows]
            entry.update(accuracy=statistics.mean(accs), accuracy_sem=_sem(accs), epochs=rows[0]["epochs"])
            for key in ("params", "macs", "params_cut", "macs_cut", "wall_time_s", "rank_search_s",
                        "latency_b1", "latency_b128"):
                vals = [r[key] for r in rows if r.get(key) is not None]
                if vals:
                    entry[key] = statistics.mean(vals)
            if method != "dense":
                diffs = [r["accuracy"] - dense_acc[r["seed"]] for r in rows if r["seed"] in dense_acc]
                if diffs:
                    entry.update(vs_dense=statistics.mean(diffs), vs_dense_sem=_sem(diffs))
        table.append(entry)
    return table


def paired_difference(grid: Grid, root: str | Path, method: str, baseline: str, budget: str) -> dict:
    """Mean and standard error of ``method - baseline`` accuracy over the seeds both have (a paired comparison)."""
    def accs(m):
        out = {}
        for cell in cells(grid, root):
            if cell.method == m and cell.budget == budget and cell.done:
                r = json.loads((cell.folder / "results.json").read_text())["results"]
                a = r.get("accuracy_finetuned")
                out[cell.seed] = r["accuracy_compressed"] if a is None else a
        return out

    a, b = accs(method), accs(baseline)
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    return {"method": method, "baseline": baseline, "budget": budget, "n": len(diffs),
            "mean": statistics.mean(diffs) if diffs else math.nan, "sem": _sem(diffs)}


def plot_pareto(table: list[dict], path: str | Path) -> Path:
    """Accuracy against MACs and against CPU latency (batch 128), one point per method and budget, error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r.get("accuracy") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xlabel in ((axes[0], "macs", "MACs per image (M)"),
                            (axes[1], "latency_b128", "CPU latency at batch 128 (x dense)")):
        for r in rows:
            x = r.get(key, 1.0 if r["method"] == "dense" and key != "macs" else None)
            if x is None:
                continue
            x = x / 1e6 if key == "macs" else x
            ax.errorbar(x, 100 * r["accuracy"], yerr=100 * (r.get("accuracy_sem") or 0), fmt="o", capsize=3,
                        label=f"{r['label']} ({r['budget']})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_table(table: list[dict], folder: str | Path) -> tuple[Path, Path]:
    """``table.csv`` and ``table.md`` in ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = ["label", "budget", "seeds", "epochs", "params", "params_cut", "macs", "macs_cut", "latency_b1",
            "latency_b128", "accuracy", "accuracy_sem", "vs_dense", "vs_dense_sem", "wall_time_s", "rank_search_s",
            "missing"]
    with open(folder / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for row in table:
            w.writerow({k: row.get(k) for k in keys})

    def pct(v, sem=None):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{100 * v:.2f}" + ("" if sem is None or math.isnan(sem) else f" ± {100 * sem:.2f}")

    def seconds(v):
        return "" if v is None else f"{v:.1f} s"

    lines = ["| method | budget | seeds | epochs | params | cut | MACs | cut | latency b1 | latency b128 | "
             "top-1 % | vs dense | wall time | rank search |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['label']} | {r['budget']} | {len(r['seeds'])} | {r.get('epochs', '')} | "
            f"{r.get('params', 0) / 1e3:.1f}k | {pct(r.get('params_cut'))} | {r.get('macs', 0) / 1e6:.2f}M | "
            f"{pct(r.get('macs_cut'))} | {r.get('latency_b1', float('nan')):.2f} | "
            f"{r.get('latency_b128', float('nan')):.2f} | {pct(r.get('accuracy'), r.get('accuracy_sem'))} | "
            f"{pct(r.get('vs_dense'), r.get('vs_dense_sem'))} | {r.get('wall_time_s') or 0:.0f} s | "
            f"{seconds(r.get('rank_search_s'))} |")
    (folder / "table.md").write_text("\n".join(lines) + "\n")
    return folder / "table.csv", folder / "table.md"


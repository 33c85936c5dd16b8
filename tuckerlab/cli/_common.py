"""What the commands share: option groups, the model a command starts from, and how results are written.

The command line holds no library logic: a flag the user did not give is not
passed, so the library's default (or the method's paper recipe, its
``RECIPE``) applies, and help texts show those defaults read from the
library. A flag that does not apply to a command's variant is refused, never
ignored.
"""
from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "add_run_options", "add_training_options", "add_common", "add_method_start", "add_method_options",
    "default_of", "given", "device", "fraction", "load_dense", "starting_model", "write_compressed",
    "sibling", "refuse", "train_kwargs", "method_kwargs", "method_provenance", "rank_help", "check_rank",
]


def default_of(fn: Callable, name: str, recipe: dict | None = None):
    """The default of argument ``name`` of ``fn`` (``recipe[name]`` when the recipe sets it).

    Training settings that ``fn`` passes on to :func:`tuckerlab.train.fit`
    take :class:`tuckerlab.train.TrainConfig`'s default.
    """
    import dataclasses

    from tuckerlab.train import TrainConfig

    if recipe is not None and name in recipe:
        return recipe[name]
    param = inspect.signature(fn).parameters.get(name)
    if param is not None and param.default is not inspect.Parameter.empty:
        return param.default
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(name)
    if field is not None and field.default is not dataclasses.MISSING:
        return field.default
    return None


def given(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """``{library name: value}`` of the flags the user gave (``mapping`` is ``{dest: library name}``)."""
    return {lib: getattr(args, dest) for dest, lib in mapping.items() if getattr(args, dest, None) is not None}


def fraction(text: str) -> float:
    """``--target-params`` and friends: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    if not (0.0 < value <= 1.0) or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def refuse(args: argparse.Namespace, flags: Iterable[str], why: str) -> None:
    """``ValueError`` when any of ``flags`` (dest names) was given: they do not apply here."""
    used = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f, None) not in (None, False)]
    if used:
        raise ValueError(f"{', '.join(used)} {'does' if len(used) == 1 else 'do'} not apply {why}")


def rank_help() -> str:
    from tuckerlab.rank.selectors import SPEC_HELP

    return "ranks: " + str(SPEC_HELP)


def device(name: str | None):
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``; a GPU that is not there is refused."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r}: no CUDA GPU is available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"--device {name!r}: accepted are auto, cpu, cuda and cuda:N")
    return dev


def check_rank(args: argparse.Namespace) -> None:
    """``--rank``, if given: a rank specification, checked before anything is loaded or trained."""
    from tuckerlab.rank.selectors import as_selector

    text = getattr(args, "rank", None)
    if text is not None:
        try:
            as_selector(text)
        except ValueError as err:
            raise ValueError(f"--rank {text!r}: {err}") from None


# ----------------------------------------------------------------- options
def add_run_options(g, batch_size: int | None = None, label_smoothing: float | None = None) -> None:
    """Options every training command shares (batch, regularisation, seed, resumption)."""
    from tuckerlab.train import fit

    bs = batch_size if batch_size is not None else default_of(fit, "batch_size")
    ls = label_smoothing if label_smoothing is not None else default_of(fit, "label_smoothing")
    g.add_argument("--batch-size", type=int, default=bs, help=f"batch size (default {bs})")
    g.add_argument("--weight-decay", type=float, default=default_of(fit, "weight_decay"),
                   help=f"weight decay (default {default_of(fit, 'weight_decay')})")
    g.add_argument("--label-smoothing", type=float, default=ls, help=f"label smoothing (default {ls})")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--restart", action="store_true",
                   help="ignore an existing checkpoint in the output folder instead of resuming from it")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)


def add_training_options(p: argparse.ArgumentParser, epochs: int, lr: float, epochs_flag: str = "--epochs",
                         batch_size: int = 64, label_smoothing: float = 0.1) -> None:
    """The training group of ``train``, ``compress`` and ``demo``.

    Batch 64 with label smoothing 0.1 gave ResNet-20 on cifar10-subset about
    2 points more than batch 128 without, at the same CPU time per image:
    these commands' defaults for the offline data set.
    """
    from tuckerlab.train import SCHEDULES

    g = p.add_argument_group("training")
    g.add_argument(epochs_flag, type=int, default=epochs, help=f"epochs (default {epochs})")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    g.add_argument("--schedule", default="onecycle", help=f"{', '.join(SCHEDULES)} (default onecycle)")
    add_run_options(g, batch_size=batch_size, label_smoothing=label_smoothing)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--data-root", default=None,
                   help="data cache folder (default $TUCKERLAB_DATA or ~/.cache/tuckerlab)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_method_start(p: argparse.ArgumentParser, file_help: str, scratch_help: str) -> None:
    """Where a method command starts (a model file or a fresh architecture), and where it writes."""
    p.add_argument("model_file", nargs="?", help=file_help)
    p.add_argument("--model", default="resnet32",
                   help="architecture when starting from scratch (default resnet32; torchvision:NAME for torchvision's)")
    p.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="WEIGHTS",
                   help="with --model torchvision:NAME: start from torchvision's pretrained weights")
    p.add_argument("--data", default=None, help="data set (default: the model's, else cifar10-subset)")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--from-scratch", action="store_true", help=scratch_help)


def add_method_options(g, fn: Callable, recipe: dict, batch_size: int, label_smoothing: float) -> None:
    """Options every method command shares: C-step cost, fine-tuning, the run options."""
    g.add_argument("--hooi-iters", type=int, default=None,
                   help="cap on the HOOI sweeps of each projection (default: the decomposition's)")
    g.add_argument("--finetune-epochs", type=int, default=None,
                   help=f"epochs of fine-tuning of the compressed model (default {default_of(fn, 'finetune_epochs')})")
    g.add_argument("--finetune-lr", type=float, default=None,
                   help=f"fine-tuning learning rate (default {default_of(fn, 'finetune_lr', recipe)})")
    add_run_options(g, batch_size=batch_size, label_smoothing=label_smoothing)


# ------------------------------------------------------------ the models
def load_dense(model_file) -> tuple[Any, dict]:
    """A saved dense model and its info; a factorized one is refused."""
    from tuckerlab.serialization import load_model

    model, info = load_model(model_file)
    if info["compression"] is not None:
        raise SystemExit(f"{model_file} is already factorized ({info['compression']['method']}); "
                         "compress the dense model it came from")
    return model, info


def starting_model(args: argparse.Namespace, from_scratch: bool):
    """The dense model a method starts from: ``args.model_file``, or a fresh ``args.model`` (seeded).

    Returns ``(model, info, dataset, data)``; ``info`` has ``arch``,
    ``num_classes`` and ``in_channels``.
    """
    import torch

    from tuckerlab.data import load_dataset
    from tuckerlab.models import get_model

    if not from_scratch:
        model, info = load_dense(args.model_file)
        dataset = args.data or info["extra"].get("dataset") or "cifar10-subset"
        return model, info, dataset, load_dataset(dataset, root=args.data_root)
    dataset = args.data or "cifar10-subset"
    data = load_dataset(dataset, root=args.data_root)
    torch.manual_seed(args.seed)
    model = get_model(args.model, num_classes=data.num_classes, in_channels=data.image_shape[0],
                      **({"pretrained": args.pretrained} if getattr(args, "pretrained", None) else {}))
    info = {"arch": args.model, "num_classes": data.num_classes, "in_channels": data.image_shape[0]}
    return model, info, dataset, data


def method_start(args: argparse.Namespace, suffix: str):
    """Where a training method's command starts: ``(model, info, dataset, data, from_scratch, out)``.

    Without a model file the method starts from a fresh ``--model``
    (:func:`starting_model`); torchvision's pretrained weights count as a
    trained start. ``out`` is ``--out``, else a folder named with ``suffix``
    next to the model file's, or ``runs/ARCH-DATA-SUFFIX``.
    """
    from_scratch = not args.model_file
    model, info, dataset, data = starting_model(args, from_scratch=from_scratch)
    from_scratch = from_scratch and not args.pretrained  # torchvision's trained weights: a trained start
    out = Path(args.out) if args.out else (
        sibling(args.model_file, f"-{suffix}") if args.model_file
        else Path(f"runs/{info['arch']}-{dataset}-{suffix}"))
    return model, info, dataset, data, from_scratch, out


def step_schedule(args: argparse.Namespace, common: dict) -> None:
    """``--milestones``/``--gamma``, when given, as the step schedule's settings in ``common``."""
    step_kwargs = given(args, {"milestones": "milestones", "gamma": "gamma"})
    if step_kwargs:
        common["schedule_kwargs"] = step_kwargs


def sibling(model_file, suffix: str) -> Path:
    """The folder next to the one holding ``model_file``, its name suffixed (``runs/r20`` -> ``runs/r20-tt``)."""
    parent = Path(model_file).parent
    return parent.with_name(parent.name + suffix)


def write_compressed(out: Path, result, info: dict, dataset: str, prov: dict, extra: dict | None = None) -> None:
    """Save a compressed model and ``results.json`` (with provenance), print the report and summary.

    Under ``torchrun`` only rank 0 writes and prints (every process holds the same result).
    """
    from tuckerlab.results import provenance, write_results
    from tuckerlab.serialization import compression_of, save_model
    from tuckerlab.train.distributed import current

    if not current().is_main:
        return
    save_model(out / "model.pt", result.model, arch=info["arch"], num_classes=info["num_classes"],
               in_channels=info["in_channels"], compression=compression_of(result.report),
               extra={"dataset": dataset, **(extra or {})})
    path = write_results(out, result.to_dict(), provenance(dataset=dataset, model=info["arch"],
                                                            wall_time_s=result.seconds, **prov))
    print(result.report)
    print(result.summary())
    print(f"model: {out / 'model.pt'}   results: {path}")


# -------------------------------------------------------------- kwargs
def train_kwargs(args: argparse.Namespace, epochs: int, lr: float) -> dict[str, Any]:
    """Arguments of :func:`tuckerlab.train.fit` from the training group."""
    return dict(
        epochs=epochs, lr=lr, batch_size=args.batch_size, schedule=args.schedule, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, seed=args.seed, device=device(args.device), compile=args.compile,
        progress=not args.no_progress, max_steps_per_epoch=args.max_steps_per_epoch,
    )


def method_kwargs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Arguments of a method that every method command sets the same way (run options, fine-tuning)."""
    common = dict(
        batch_size=args.batch_size, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        seed=args.seed, device=device(args.device), compile=args.compile, progress=not args.no_progress,
        max_steps_per_epoch=args.max_steps_per_epoch, checkpoint_dir=out / "checkpoints", resume=not args.restart,
        execution="factorized",
    )
    common.update(given(args, {"finetune_epochs": "finetune_epochs", "finetune_lr": "finetune_lr"}))
    if args.hooi_iters is not None:
        common["projection_options"] = {"n_iter_max": args.hooi_iters}
    return common


def method_provenance(args: argparse.Namespace, fn: Callable, common: dict, recipe: dict | None = None,
                      **extra) -> dict[str, Any]:
    """Provenance of a method command: every setting in effect (given or default), without execution details."""
    skip = ("device", "checkpoint_dir", "progress", "seed", "model", "data", "callbacks", "specs")
    effective = {
        name: default_of(fn, name, recipe) for name, p in inspect.signature(fn).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in skip
    }
    effective.update({k: v for k, v in common.items() if k not in skip})
    plain = {k: v for k, v in effective.items() if v is None or isinstance(v, (bool, int, float, str, list, dict))}
    return {**plain, "seed": args.seed, "device": common["device"], "command": args.command,
            "model_file": str(args.model_file) if args.model_file else None, **extra}

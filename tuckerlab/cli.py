"""The ``tuckerlab`` command: train, compress, evaluate and inspect models.

Every sub-command that produces numbers writes ``results.json`` (the numbers
and their provenance, see :mod:`tuckerlab.results`) into its output folder.

Examples
--------
.. code-block:: bash

    tuckerlab train    --model resnet20 --data cifar10-subset --epochs 15 --out runs/r20
    tuckerlab compress runs/r20/model.pt --method tucker2 --rank evbmf --finetune-epochs 5
    tuckerlab evaluate runs/r20-tucker2/model.pt
    tuckerlab admm     --model resnet32 --format tt --rank params:0.33 --epochs 200 --finetune-epochs 200
    tuckerlab info     --model resnet56
    tuckerlab demo
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

def _rank_help() -> str:
    from tuckerlab.rank.spec import SPEC_HELP

    return "rank rule: " + SPEC_HELP


def _device(name: str | None):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _print_json(payload: dict) -> None:
    print(json.dumps(payload, indent=2))


def _train_kwargs(args: argparse.Namespace, epochs: int, lr: float) -> dict[str, Any]:
    return dict(
        epochs=epochs,
        lr=lr,
        batch_size=args.batch_size,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        device=_device(args.device),
        compile=args.compile,
        progress=not args.no_progress,
        max_steps_per_epoch=args.max_steps_per_epoch,
    )


def _model_summary(model, input_size) -> dict[str, int]:
    from tuckerlab.metrics import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, input_size)}


def _compression_spec(report) -> dict[str, Any]:
    return {"method": report.method, "ranks": {row.name: row.rank for row in report.rows}}


# ----------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from scratch and save ``model.pt`` and ``results.json``."""
    import torch

    from tuckerlab.data import load_dataset
    from tuckerlab.models import get_model
    from tuckerlab.results import Stopwatch, provenance, write_results
    from tuckerlab.serialization import save_model
    from tuckerlab.train import evaluate, fit

    out = Path(args.out or f"runs/{args.model}-{args.data}")
    data = load_dataset(args.data, root=args.data_root)
    torch.manual_seed(args.seed)
    model = get_model(args.model, num_classes=data.num_classes, in_channels=data.image_shape[0])
    kwargs = _train_kwargs(args, args.epochs, args.lr)
    with Stopwatch() as clock:
        history = fit(model, data, checkpoint_dir=out / "checkpoints", resume=not args.restart, **kwargs)
    test = evaluate(model, data, device=kwargs["device"])
    summary = _model_summary(model, data.image_shape)
    save_model(out / "model.pt", model, arch=args.model, num_classes=data.num_classes,
               in_channels=data.image_shape[0], extra={"dataset": args.data, **summary})
    results = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], **summary,
               "history": history.to_dict()}
    prov = provenance(dataset=args.data, model=args.model, seed=args.seed, device=kwargs["device"],
                      wall_time_s=clock.seconds, command="train", epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, schedule=args.schedule)
    path = write_results(out, results, prov)
    print(f"{args.model} on {args.data}: test accuracy {100 * test['accuracy']:.2f}% "
          f"({summary['params']:,} params, {summary['macs'] / 1e6:.2f}M MACs), "
          f"{clock.seconds:.0f} s on {prov['device_name']}")
    print(f"model: {out / 'model.pt'}   results: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a saved model on a data set's test split."""
    from tuckerlab.data import load_dataset
    from tuckerlab.results import Stopwatch, provenance, write_results
    from tuckerlab.serialization import load_model
    from tuckerlab.train import evaluate

    model, info = load_model(args.model_file)
    dataset = args.data or info["extra"].get("dataset") or "cifar10-subset"
    data = load_dataset(dataset, root=args.data_root)
    device = _device(args.device)
    with Stopwatch() as clock:
        test = evaluate(model, data, device=device)
    summary = _model_summary(model, data.image_shape)
    out = Path(args.out) if args.out else Path(args.model_file).parent / f"evaluate-{dataset}"
    prov = provenance(dataset=dataset, model=info["arch"], device=device, wall_time_s=clock.seconds,
                      command="evaluate", model_file=str(args.model_file))
    path = write_results(out, {"test_accuracy": test["accuracy"], "test_loss": test["loss"], **summary,
                               "compression": info["compression"]}, prov)
    print(f"{args.model_file}: test accuracy {100 * test['accuracy']:.2f}% on {dataset} "
          f"({summary['params']:,} params, {summary['macs'] / 1e6:.2f}M MACs)   results: {path}")
    return 0


def _write_compressed(out: Path, result, info: dict, dataset: str, prov: dict, extra: dict | None = None) -> None:
    """Save a compressed model and ``results.json`` (with provenance), print the report and summary."""
    from tuckerlab.results import provenance, write_results
    from tuckerlab.serialization import save_model

    save_model(out / "model.pt", result.model, arch=info["arch"], num_classes=info["num_classes"],
               in_channels=info["in_channels"], compression=_compression_spec(result.report),
               extra={"dataset": dataset, **(extra or {})})
    path = write_results(out, result.to_dict(), provenance(dataset=dataset, model=info["arch"],
                                                            wall_time_s=result.seconds, **prov))
    print(result.report)
    print(result.summary())
    print(f"model: {out / 'model.pt'}   results: {path}")


def _load_dense(model_file) -> tuple[Any, dict]:
    """A saved dense model and its info; a factorized one is refused."""
    from tuckerlab.serialization import load_model

    model, info = load_model(model_file)
    if info["compression"] is not None:
        raise SystemExit(f"{model_file} is already factorized ({info['compression']['method']}); "
                         "compress the dense model it came from")
    return model, info


def _sibling(model_file, suffix: str) -> Path:
    """The folder next to the one holding ``model_file``, its name suffixed (``runs/r20`` -> ``runs/r20-tt``)."""
    parent = Path(model_file).parent
    return parent.with_name(parent.name + suffix)


def _compress_and_finetune(model, info: dict, data, args: argparse.Namespace, out: Path, dataset: str) -> dict:
    """Run the classic pipeline, save the model and ``results.json``; shared by ``compress`` and ``demo``."""
    from tuckerlab.pipeline import compress_and_finetune

    kwargs = _train_kwargs(args, args.finetune_epochs, args.lr)
    kwargs["finetune_epochs"] = kwargs.pop("epochs")
    result = compress_and_finetune(model, data, args.method, args.rank, include_linear=args.include_linear,
                                   checkpoint_dir=out / "checkpoints", resume=not args.restart, **kwargs)
    _write_compressed(out, result, info, dataset, dict(
        seed=args.seed, device=kwargs["device"], command=args.command, method=args.method, rank=args.rank,
        finetune_epochs=args.finetune_epochs, lr=args.lr))
    return result.to_dict()


def cmd_compress(args: argparse.Namespace) -> int:
    """Factorize a saved model with a rank rule, optionally fine-tune, save."""
    from tuckerlab.data import load_dataset

    model, info = _load_dense(args.model_file)
    dataset = args.data or info["extra"].get("dataset") or "cifar10-subset"
    data = load_dataset(dataset, root=args.data_root)
    out = Path(args.out) if args.out else _sibling(args.model_file, f"-{args.method}")
    _compress_and_finetune(model, info, data, args, out, dataset)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Per-layer parameters and MACs of an architecture or a saved model."""
    from tuckerlab.metrics import count_macs, count_params, layer_macs
    from tuckerlab.models import get_model
    from tuckerlab.serialization import load_model

    if args.model_file:
        model, info = load_model(args.model_file)
        name = f"{info['arch']} ({args.model_file})"
    elif args.model:
        model = get_model(args.model, num_classes=args.num_classes, in_channels=args.input_size[0])
        name = args.model
    else:
        raise SystemExit("tuckerlab info: give --model NAME or a model file")
    input_size = tuple(args.input_size)
    macs = layer_macs(model, input_size)
    modules = dict(model.named_modules())
    rows = []
    for layer, m in macs.items():
        module = modules.get(layer)
        params = sum(p.numel() for p in module.parameters(recurse=False)) if module is not None else 0
        weight = getattr(module, "weight", None)
        shape = "x".join(map(str, weight.shape)) if weight is not None else ""
        rows.append({"layer": layer, "type": type(module).__name__, "weight": shape, "params": params, "macs": m})
    total = {"params": count_params(model), "macs": count_macs(model, input_size)}
    if args.json:
        _print_json({"model": name, "input_size": list(input_size), "layers": rows, "total": total})
        return 0
    width = max(len(r["layer"]) for r in rows) if rows else 5
    print(f"{name}: MACs per image of size {input_size}")
    print(f"{'layer':<{width}}  {'type':<16} {'weight':<14} {'params':>10} {'MACs':>14}")
    for r in rows:
        print(f"{r['layer']:<{width}}  {r['type']:<16} {r['weight']:<14} {r['params']:>10,} {r['macs']:>14,}")
    print(f"{'total':<{width}}  {'':<16} {'':<14} {total['params']:>10,} {total['macs']:>14,}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train ResNet-20 on the offline CIFAR-10 subset, compress it, fine-tune, report."""
    from tuckerlab.data import load_dataset
    from tuckerlab.models import get_model
    from tuckerlab.results import Stopwatch
    from tuckerlab.train import fit
    import torch

    data = load_dataset(args.data, root=args.data_root)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    model = get_model(args.model, num_classes=data.num_classes, in_channels=data.image_shape[0])
    print(f"[1/2] training {args.model} on {args.data} ({len(data.y_train):,} train / "
          f"{len(data.y_test):,} test images) for {args.epochs} epochs")
    with Stopwatch() as clock:
        history = fit(model, data, checkpoint_dir=out / "dense" / "checkpoints", resume=not args.restart,
                      **_train_kwargs(args, args.epochs, args.lr))
    print(f"dense test accuracy {100 * history.test_acc[-1]:.2f}% after {clock.seconds:.0f} s of training")
    print(f"[2/2] compressing with {args.method}, rank {args.rank!r}, fine-tuning {args.finetune_epochs} epochs")
    info = {"arch": args.model, "num_classes": data.num_classes, "in_channels": data.image_shape[0]}
    finetune = argparse.Namespace(**{**vars(args), "lr": args.finetune_lr})
    _compress_and_finetune(model, info, data, finetune, out / args.method, args.data)
    return 0


def _starting_model(args: argparse.Namespace, from_scratch: bool):
    """The dense model a training method starts from: ``args.model_file``, or a fresh ``args.model`` (seeded).

    Returns ``(model, info, dataset, data)``; ``info`` has ``arch``,
    ``num_classes`` and ``in_channels``.
    """
    import torch

    from tuckerlab.data import load_dataset
    from tuckerlab.models import get_model

    if not from_scratch:
        model, info = _load_dense(args.model_file)
        dataset = args.data or info["extra"].get("dataset") or "cifar10-subset"
        return model, info, dataset, load_dataset(dataset, root=args.data_root)
    dataset = args.data or "cifar10-subset"
    data = load_dataset(dataset, root=args.data_root)
    torch.manual_seed(args.seed)
    model = get_model(args.model, num_classes=data.num_classes, in_channels=data.image_shape[0])
    info = {"arch": args.model, "num_classes": data.num_classes, "in_channels": data.image_shape[0]}
    return model, info, dataset, data


def _method_kwargs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Arguments of ``lc_compress`` / ``admm_compress`` that every method command sets the same way."""
    common = dict(
        batch_size=args.batch_size, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        seed=args.seed, device=_device(args.device), compile=args.compile, progress=not args.no_progress,
        max_steps_per_epoch=args.max_steps_per_epoch, checkpoint_dir=out / "checkpoints", resume=not args.restart,
        finetune_epochs=args.finetune_epochs, execution="factorized",
    )
    if args.finetune_lr is not None:
        common["finetune_lr"] = args.finetune_lr
    if args.hooi_iters is not None:
        common["projection_options"] = {"n_iter_max": args.hooi_iters}
    return common


def _method_provenance(args: argparse.Namespace, common: dict, **extra) -> dict[str, Any]:
    """Provenance entries of a method command: its settings, without the execution details."""
    return dict(seed=args.seed, device=common["device"], command=args.command,
                model_file=str(args.model_file) if args.model_file else None, **extra,
                **{k: v for k, v in common.items() if k not in ("device", "checkpoint_dir", "progress", "seed")})


def cmd_lc(args: argparse.Namespace) -> int:
    """Compress by the LC algorithm (classic, from a trained model) or TT-LC (from scratch), save, report."""
    from tuckerlab.methods import lc_compress, tt_lc
    from tuckerlab.projection import Projector
    from tuckerlab.rank.spec import from_spec

    variant = args.variant
    tt = variant == "tt-lc"
    method = args.method or ("tt_tucker" if tt else "tucker2")
    if tt and method != "tt_tucker":
        raise ValueError(f"tt-lc compresses with TT-Tucker (--method tt_tucker), got --method {method}")
    if args.target_params is not None and args.rank is not None:
        raise ValueError("give --target-params or --rank, not both")
    if args.model_file and (tt or args.from_scratch):
        raise ValueError(f"{variant} {'trains from scratch' if tt else 'with --from-scratch'}: "
                         "give --model ARCH instead of a model file")
    if not args.model_file and not (tt or args.from_scratch):
        raise ValueError("lc starts from a trained model: give its model.pt (or --from-scratch with --model)")
    model, info, dataset, data = _starting_model(args, from_scratch=not args.model_file)
    arch = info["arch"]
    out = Path(args.out) if args.out else (
        _sibling(args.model_file, f"-{variant}-{method}") if args.model_file
        else Path(f"runs/{arch}-{dataset}-{variant}"))
    input_size = tuple(data.image_shape)
    common = _method_kwargs(args, out)
    common.update(mu0=args.mu0, mu_growth=args.mu_growth)
    for key in ("steps", "epochs_per_step", "lr", "warmup_epochs"):
        if getattr(args, key) is not None:
            common["n_steps" if key == "steps" else key] = getattr(args, key)
    if args.schedule is not None:
        common["schedule"] = args.schedule
    if tt:
        result = tt_lc(model, data, target_params_ratio=args.target_params, ranks=args.rank,
                       rank_update=args.rank_update, n_trials=args.bo_trials, include_linear=args.include_linear,
                       **common)
    else:
        spec = args.rank if args.rank is not None else f"params:{args.target_params or 0.5}"
        rank = from_spec(spec, model=model, method=method, input_size=input_size)
        specs = Projector.from_rank(model, method, rank, input_size=input_size, include_linear=args.include_linear)
        common.setdefault("n_steps", 50)
        common.setdefault("epochs_per_step", 15)
        result = lc_compress(model, data, specs, from_scratch=args.from_scratch, **common)
    _write_compressed(out, result, info, dataset, _method_provenance(
        args, common, variant=variant, method=method, target_params=args.target_params, rank=args.rank),
        extra={"variant": variant})
    return 0


def cmd_admm(args: argparse.Namespace) -> int:
    """Train towards low TT/Tucker rank by ADMM (Yin et al. 2021), decompose, optionally fine-tune, save, report."""
    from tuckerlab.methods import admm_compress

    if args.model_file and args.from_scratch:
        raise ValueError("admm with --from-scratch trains a fresh --model ARCH: give no model file")
    from_scratch = not args.model_file
    model, info, dataset, data = _starting_model(args, from_scratch=from_scratch)
    out = Path(args.out) if args.out else (
        _sibling(args.model_file, f"-admm-{args.format}") if args.model_file
        else Path(f"runs/{info['arch']}-{dataset}-admm-{args.format}"))
    common = _method_kwargs(args, out)
    common.update(rank=args.rank, format=args.format, epochs=args.epochs, rho=args.rho, rho_growth=args.rho_growth,
                  rho_max=args.rho_max, update_every=args.update_every, rescale_dual=args.rescale_dual, lr=args.lr,
                  schedule=args.schedule, include_linear=args.include_linear)
    step_kwargs = {k: getattr(args, k) for k in ("milestones", "gamma") if getattr(args, k) is not None}
    if step_kwargs:
        common["schedule_kwargs"] = step_kwargs
    result = admm_compress(model, data, from_scratch=from_scratch, **common)
    _write_compressed(out, result, info, dataset, _method_provenance(args, common, method=args.format,
                                                                     from_scratch=from_scratch))
    return 0


def _add_method_start(p: argparse.ArgumentParser, file_help: str, scratch_help: str) -> None:
    """Where a method command starts (a model file or a fresh architecture), and where it writes."""
    p.add_argument("model_file", nargs="?", help=file_help)
    p.add_argument("--model", default="resnet32", help="architecture when starting from scratch (default resnet32)")
    p.add_argument("--data", default=None, help="data set (default: the model's, else cifar10-subset)")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--from-scratch", action="store_true", help=scratch_help)


def _add_method_options(g, finetune_lr: str, batch_size: int, label_smoothing: float) -> None:
    """Options every method command shares: C-step cost, fine-tuning, the run options."""
    g.add_argument("--hooi-iters", type=int, default=None,
                   help="cap on the HOOI sweeps of each projection (default: the decomposition's, up to 100)")
    g.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning of the compressed model")
    g.add_argument("--finetune-lr", type=float, default=None, help=f"fine-tuning learning rate (default {finetune_lr})")
    _add_run_options(g, batch_size=batch_size, label_smoothing=label_smoothing)


def _add_lc_parsers(sub) -> None:
    """The ``lc`` and ``tt-lc`` sub-commands (one function, two defaults)."""
    for name, variant, help_ in (
        ("lc", "lc", "compress by the LC algorithm (Idelbayev & Carreira-Perpinan 2020)"),
        ("tt-lc", "tt-lc", "TT-LC: LC from scratch with TT-Tucker and double Bayesian ranks (Liu et al. 2024)"),
    ):
        p = sub.add_parser(name, help=help_, description=cmd_lc.__doc__)
        _add_method_start(p, "model.pt of a trained dense model (classic LC)",
                          "lc: start from a fresh --model, not a trained one")
        p.add_argument("--variant", choices=["lc", "tt-lc"], default=variant, help=f"default {variant}")
        g = p.add_argument_group("compression")
        g.add_argument("--method", default=None, choices=["tucker2", "tt", "tt_tucker", "cp"],
                       help="C-step format (default tucker2 for lc, tt_tucker for tt-lc)")
        g.add_argument("--target-params", type=float, default=None,
                       help="whole-model parameter ratio to keep, e.g. 0.3 (lc: ranks by solve_budget; "
                            "tt-lc: the target of the Bayesian global factor)")
        g.add_argument("--rank", default=None, help=_rank_help() + " (lc default: params:0.5)")
        g.add_argument("--include-linear", action="store_true", help="also compress linear layers (low rank)")
        g.add_argument("--rank-update", default="fixed", choices=["fixed", "shrink"],
                       help="tt-lc: keep the ranks chosen after warm-up, or re-estimate and shrink them at each C-step")
        g.add_argument("--bo-trials", type=int, default=20, help="tt-lc: Bayesian-optimisation trials (default 20)")
        g = p.add_argument_group("LC")
        g.add_argument("--steps", type=int, default=None, help="L-steps (default 50 for lc, 40 for tt-lc)")
        g.add_argument("--epochs-per-step", type=int, default=None, help="epochs per L-step (default 15 / 5)")
        g.add_argument("--warmup-epochs", type=int, default=None,
                       help="plain-training epochs before the ranks and the first C-step (default 0 / epochs-per-step)")
        g.add_argument("--mu0", type=float, default=1e-3, help="first penalty weight (default 1e-3)")
        g.add_argument("--mu-growth", type=float, default=1.25, help="mu multiplier per L-step (default 1.25)")
        g = p.add_argument_group("training")
        g.add_argument("--lr", type=float, default=None, help="peak L-step learning rate (default 7e-4 / 0.1)")
        g.add_argument("--schedule", default=None,
                       help="L-step schedule (default: x0.99 per epoch restarted each L-step for lc, exp_cyclic for tt-lc)")
        _add_method_options(g, "1e-4 / 1e-3", batch_size=128, label_smoothing=0.0)  # the LC papers' settings
        _add_common(p)
        p.set_defaults(func=cmd_lc)


def _update_every(text: str):
    """``--update-every``: ``epoch`` or a number of optimizer steps (checked by the library)."""
    if text == "epoch":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'epoch' or an integer number of steps, got {text!r}") from None


def _add_admm_parser(sub) -> None:
    """The ``admm`` sub-command."""
    p = sub.add_parser("admm", help="ADMM training towards low TT/Tucker rank, then decomposition (Yin et al. 2021)",
                       description=cmd_admm.__doc__)
    _add_method_start(p, "model.pt of a trained dense model (default: train a fresh --model from scratch, "
                         "as the authors do)", "train a fresh --model (the default without a model file)")
    g = p.add_argument_group("compression")
    g.add_argument("--format", default="tt", choices=["tt", "tucker2", "tt_tucker", "cp"],
                   help="format of the convolutions (default tt; tucker2 is Tucker on the channel modes)")
    g.add_argument("--rank", default="params:0.33", help=_rank_help() + " (default params:0.33, about 3x)")
    g.add_argument("--include-linear", action="store_true", help="also compress linear layers (low rank)")
    g = p.add_argument_group("ADMM")
    g.add_argument("--rho", type=float, default=1e-3, help="penalty weight (default 1e-3, the authors')")
    g.add_argument("--rho-growth", type=float, default=1.0, help="rho multiplier per update (default 1: constant)")
    g.add_argument("--rho-max", type=float, default=None, help="cap on rho (default none)")
    g.add_argument("--update-every", type=_update_every, default="epoch",
                   help="Z/U-update after every epoch (default) or every N optimizer steps")
    g.add_argument("--rescale-dual", action="store_true",
                   help="rescale U by rho_old/rho_new when rho changes (Boyd et al. 2011)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=200, help="epochs of the ADMM phase (default 200)")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    g.add_argument("--schedule", default="step",
                   help="schedule of the ADMM phase (default step: x0.2 at 55/200, 110/200, 165/200 of the epochs)")
    g.add_argument("--milestones", type=float, nargs="+", default=None, help="step schedule: epochs of the decays")
    g.add_argument("--gamma", type=float, default=None, help="step schedule: factor of each decay (default 0.2)")
    _add_method_options(g, "0.005", batch_size=128, label_smoothing=0.1)  # the authors' settings
    _add_common(p)
    p.set_defaults(func=cmd_admm)


# ----------------------------------------------------------------- parser
def _add_run_options(g, batch_size: int = 64, label_smoothing: float = 0.1) -> None:
    """Options every training command shares (batch, regularisation, seed, resumption)."""
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default {batch_size})")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default 5e-4)")
    g.add_argument("--label-smoothing", type=float, default=label_smoothing,
                   help=f"label smoothing (default {label_smoothing})")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--restart", action="store_true",
                   help="ignore an existing checkpoint in the output folder instead of resuming from it")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)


def _add_training_options(p: argparse.ArgumentParser, epochs: int, lr: float, epochs_flag: str = "--epochs") -> None:
    g = p.add_argument_group("training")
    g.add_argument(epochs_flag, type=int, default=epochs, help=f"epochs (default {epochs})")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    g.add_argument("--schedule", default="onecycle",
                   help="cosine, step, onecycle, constant or exp_cyclic (default onecycle)")
    # Batch 64 with label smoothing 0.1 gave ResNet-20 on cifar10-subset about
    # 2 points more than batch 128 without, at the same CPU time per image.
    _add_run_options(g)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--data-root", default=None, help="data cache folder (default $TUCKERLAB_DATA or ~/.cache/tuckerlab)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_compression_options(p: argparse.ArgumentParser, rank: str) -> None:
    p.add_argument("--method", default="tucker2", choices=["tucker2", "tt", "tt_tucker", "cp"],
                   help="factorization of the convolutions (default tucker2)")
    p.add_argument("--rank", default=rank, help=_rank_help() + f" (default {rank!r})")
    p.add_argument("--include-linear", action="store_true", help="also factorize linear layers (SVD)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tuckerlab`` command."""
    from tuckerlab import __version__

    parser = argparse.ArgumentParser(
        prog="tuckerlab",
        description="Compress convolutional networks by tensor decomposition.",
    )
    parser.add_argument("--version", action="version", version=f"tuckerlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)

    p = sub.add_parser("train", help="train a model from scratch", description=cmd_train.__doc__)
    p.add_argument("--model", default="resnet20", help="architecture (see `tuckerlab info --list`)")
    p.add_argument("--data", default="cifar10-subset", help="data set (default cifar10-subset, offline)")
    p.add_argument("--out", default=None, help="output folder (default runs/MODEL-DATA)")
    _add_training_options(p, epochs=15, lr=0.2)
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="factorize a trained model, optionally fine-tune",
                       description=cmd_compress.__doc__)
    p.add_argument("model_file", help="model.pt written by `tuckerlab train`")
    p.add_argument("--data", default=None, help="data set (default: the one the model was trained on)")
    p.add_argument("--out", default=None, help="output folder (default: next to the model, suffixed by the method)")
    _add_compression_options(p, rank="evbmf")
    _add_training_options(p, epochs=0, lr=0.01, epochs_flag="--finetune-epochs")
    _add_common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("evaluate", help="test accuracy of a saved model", description=cmd_evaluate.__doc__)
    p.add_argument("model_file")
    p.add_argument("--data", default=None, help="data set (default: the one the model was trained on)")
    p.add_argument("--out", default=None, help="output folder for results.json")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="per-layer parameters and MACs", description=cmd_info.__doc__)
    p.add_argument("model_file", nargs="?", help="a saved model (or use --model)")
    p.add_argument("--model", default=None, help="an architecture name")
    p.add_argument("--list", action="store_true", help="list the architectures and data sets")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--input-size", type=int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"))
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="train, compress and fine-tune ResNet-20 on the offline CIFAR-10 subset",
                       description=cmd_demo.__doc__)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default="cifar10-subset")
    p.add_argument("--out", default="runs/demo")
    _add_compression_options(p, rank="params:0.5")
    _add_training_options(p, epochs=15, lr=0.2)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--finetune-lr", type=float, default=0.02)
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    _add_lc_parsers(sub)
    _add_admm_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tuckerlab`` and ``python -m tuckerlab``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info" and args.list:
        from tuckerlab.data import list_datasets
        from tuckerlab.models import list_models

        print("models:  " + ", ".join(list_models()))
        print("data:    " + ", ".join(list_datasets()))
        return 0
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"tuckerlab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

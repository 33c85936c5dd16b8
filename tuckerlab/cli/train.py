"""``tuckerlab train``, ``evaluate``, ``info`` and ``demo``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_common, add_training_options, device, load_dense, train_kwargs


def _model_summary(model, input_size) -> dict[str, int]:
    from tuckerlab.metrics import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, input_size)}


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from scratch and save ``model.pt`` and ``results.json``."""
    import torch

    from tuckerlab.data import load_dataset
    from tuckerlab.models import get_model
    from tuckerlab.results import Stopwatch, provenance, write_results
    from tuckerlab.serialization import save_model
    from tuckerlab.train import evaluate, fit
    from tuckerlab.train.distributed import current

    out = Path(args.out or f"runs/{args.model}-{args.data}")
    data = load_dataset(args.data, root=args.data_root)
    torch.manual_seed(args.seed)
    model = get_model(args.model, num_classes=data.num_classes, in_channels=data.image_shape[0],
                      **({"pretrained": args.pretrained} if args.pretrained else {}))
    kwargs = train_kwargs(args, args.epochs, args.lr)
    with Stopwatch() as clock:
        history = fit(model, data, checkpoint_dir=out / "checkpoints", resume=not args.restart, **kwargs)
    test = evaluate(model, data, device=kwargs["device"])
    if not current().is_main:  # under torchrun every process holds the same model: rank 0 writes and reports
        return 0
    summary = _model_summary(model, data.image_shape)
    save_model(out / "model.pt", model, arch=args.model, num_classes=data.num_classes,
               in_channels=data.image_shape[0], extra={"dataset": args.data, **summary})
    results = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], **summary,
               "history": history.to_dict()}
    # the whole run: earlier, interrupted processes included (the clock saw only this one)
    earlier = history.wall_time_s - history.segments[-1]["wall_time_s"] if history.segments else 0.0
    prov = provenance(dataset=args.data, model=args.model, seed=args.seed, device=kwargs["device"],
                      wall_time_s=clock.seconds + earlier, command="train", epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, schedule=args.schedule,
                      wall_time_parts={"this_process_s": clock.seconds, "earlier_processes_s": earlier},
                      pretrained=args.pretrained)
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
    dev = device(args.device)
    with Stopwatch() as clock:
        test = evaluate(model, data, device=dev)
    summary = _model_summary(model, data.image_shape)
    out = Path(args.out) if args.out else Path(args.model_file).parent / f"evaluate-{dataset}"
    prov = provenance(dataset=dataset, model=info["arch"], device=dev, wall_time_s=clock.seconds,
                      command="evaluate", model_file=str(args.model_file))
    path = write_results(out, {"test_accuracy": test["accuracy"], "test_loss": test["loss"], **summary,
                               "compression": info["compression"]}, prov)
    print(f"{args.model_file}: test accuracy {100 * test['accuracy']:.2f}% on {dataset} "
          f"({summary['params']:,} params, {summary['macs'] / 1e6:.2f}M MACs)   results: {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Per-layer parameters and MACs of an architecture or a saved model."""
    from tuckerlab.metrics import count_macs, count_params, layer_macs
    from tuckerlab.models import get_model
    from tuckerlab.serialization import load_model

    if args.list:
        from tuckerlab.data import list_datasets
        from tuckerlab.formats import registered_formats
        from tuckerlab.models import list_models
        from tuckerlab.rank.selectors import selector_names

        print("models:    " + ", ".join(list_models()))
        print("data:      " + ", ".join(list_datasets()))
        print("formats:   " + ", ".join(registered_formats()))
        print("selectors: " + ", ".join(selector_names()))
        return 0
    if args.model_file:
        model, info = load_model(args.model_file)
        name = f"{info['arch']} ({args.model_file})"
    elif args.model:
        model = get_model(args.model, num_classes=args.num_classes, in_channels=args.input_size[0])
        name = args.model
    else:
        raise ValueError("give --model NAME or a model file")
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
    if args.latency is not None:
        total["latency_ms"] = _latency(model, args, input_size)
    if args.json:
        print(json.dumps({"model": name, "input_size": list(input_size), "layers": rows, "total": total}, indent=2))
        return 0
    width = max(len(r["layer"]) for r in rows) if rows else 5
    print(f"{name}: MACs per image of size {input_size}")
    print(f"{'layer':<{width}}  {'type':<16} {'weight':<14} {'params':>10} {'MACs':>14}")
    for r in rows:
        print(f"{r['layer']:<{width}}  {r['type']:<16} {r['weight']:<14} {r['params']:>10,} {r['macs']:>14,}")
    print(f"{'total':<{width}}  {'':<16} {'':<14} {total['params']:>10,} {total['macs']:>14,}")
    for what, ms in (total.get("latency_ms") or {}).items():
        print(f"latency ({what}): {ms:.3f} ms per batch of {args.latency} on {device(args.device)}")
    return 0


def _latency(model, args: argparse.Namespace, input_size) -> dict[str, float]:
    """Median latency of the model (and of ``--exported`` files) at batch ``--latency``, in the same process."""
    from tuckerlab.metrics import measure_latency

    dev = device(args.device)
    out = {"eager": measure_latency(model, input_size, device=dev, batch_size=args.latency)["median_ms"]}
    for path in args.exported or ():
        from tuckerlab.export import load_exported

        out[str(path)] = measure_latency(load_exported(path), input_size, device=dev,
                                         batch_size=args.latency)["median_ms"]
    return out


def compress_and_save(model, info: dict, data, args: argparse.Namespace, out: Path, dataset: str,
                      lr: float) -> dict:
    """Run the classic pipeline, save the model and ``results.json``; shared by ``compress`` and ``demo``."""
    from tuckerlab.pipeline import compress_and_finetune

    from ._common import write_compressed

    kwargs = train_kwargs(args, args.finetune_epochs, lr)
    kwargs["finetune_epochs"] = kwargs.pop("epochs")
    result = compress_and_finetune(model, data, args.format, args.rank, include_linear=args.include_linear,
                                   checkpoint_dir=out / "checkpoints", resume=not args.restart, **kwargs)
    write_compressed(out, result, info, dataset, dict(
        seed=args.seed, device=kwargs["device"], command=args.command, method=args.format, format=args.format,
        rank=args.rank, finetune_epochs=args.finetune_epochs, lr=lr))
    return result.to_dict()


def cmd_compress(args: argparse.Namespace) -> int:
    """Factorize a saved model with a rank selector, optionally fine-tune, save."""
    from tuckerlab.data import load_dataset

    from ._common import sibling

    model, info = load_dense(args.model_file)
    dataset = args.data or info["extra"].get("dataset") or "cifar10-subset"
    data = load_dataset(dataset, root=args.data_root)
    out = Path(args.out) if args.out else sibling(args.model_file, f"-{args.format}")
    compress_and_save(model, info, data, args, out, dataset, args.lr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train ResNet-20 on the offline CIFAR-10 subset, compress it, fine-tune, report."""
    import torch

    from tuckerlab.data import load_dataset
    from tuckerlab.models import get_model
    from tuckerlab.results import Stopwatch
    from tuckerlab.train import fit

    data = load_dataset(args.data, root=args.data_root)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    model = get_model(args.model, num_classes=data.num_classes, in_channels=data.image_shape[0])
    print(f"[1/2] training {args.model} on {args.data} ({data.num_images('train'):,} train / "
          f"{data.num_images('test'):,} test images) for {args.epochs} epochs")
    with Stopwatch() as clock:
        history = fit(model, data, checkpoint_dir=out / "dense" / "checkpoints", resume=not args.restart,
                      **train_kwargs(args, args.epochs, args.lr))
    print(f"dense test accuracy {100 * history.test_acc[-1]:.2f}% after {clock.seconds:.0f} s of training")
    print(f"[2/2] compressing with {args.format}, rank {args.rank!r}, fine-tuning {args.finetune_epochs} epochs")
    info = {"arch": args.model, "num_classes": data.num_classes, "in_channels": data.image_shape[0]}
    compress_and_save(model, info, data, args, out / args.format, args.data, args.finetune_lr)
    return 0


def add_format_options(p: argparse.ArgumentParser, rank: str) -> None:
    """``--format`` (``--method`` is its older name), ``--rank`` and ``--include-linear``."""
    from tuckerlab.formats import format_names

    from ._common import rank_help

    choices = list(format_names("conv", with_layer=True))
    p.add_argument("--format", "--method", dest="format", default="tucker2", choices=choices,
                   help="format of the convolutions (default tucker2; --method is an older name)")
    p.add_argument("--rank", default=rank, help=rank_help() + f" (default {rank!r})")
    p.add_argument("--include-linear", action="store_true", help="also factorize linear layers (low rank)")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model from scratch (or from torchvision's weights)",
                       description=cmd_train.__doc__)
    p.add_argument("--model", default="resnet20",
                   help="architecture (see `tuckerlab info --list`), or torchvision:NAME for any torchvision model")
    p.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="WEIGHTS",
                   help="torchvision:NAME only: start from torchvision's pretrained weights (optionally their name, "
                        "e.g. IMAGENET1K_V1); they are downloaded once and cached by torch")
    p.add_argument("--data", default="cifar10-subset", help="data set (default cifar10-subset, offline)")
    p.add_argument("--out", default=None, help="output folder (default runs/MODEL-DATA)")
    add_training_options(p, epochs=15, lr=0.2)
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="factorize a trained model, optionally fine-tune",
                       description=cmd_compress.__doc__)
    p.add_argument("model_file", help="model.pt written by `tuckerlab train`")
    p.add_argument("--data", default=None, help="data set (default: the one the model was trained on)")
    p.add_argument("--out", default=None, help="output folder (default: next to the model, suffixed by the format)")
    add_format_options(p, rank="evbmf")
    add_training_options(p, epochs=0, lr=0.01, epochs_flag="--finetune-epochs")
    add_common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("evaluate", help="test accuracy of a saved model", description=cmd_evaluate.__doc__)
    p.add_argument("model_file")
    p.add_argument("--data", default=None, help="data set (default: the one the model was trained on)")
    p.add_argument("--out", default=None, help="output folder for results.json")
    add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="per-layer parameters and MACs", description=cmd_info.__doc__)
    p.add_argument("model_file", nargs="?", help="a saved model (or use --model)")
    p.add_argument("--model", default=None, help="an architecture name")
    p.add_argument("--list", action="store_true", help="list the architectures, data sets, formats and selectors")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--input-size", type=int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"))
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--latency", type=int, default=None, metavar="BATCH",
                   help="also measure the latency (median ms) at this batch size")
    p.add_argument("--exported", nargs="+", default=None, metavar="FILE",
                   help="with --latency: also time these exported files (ONNX, .pt2, TorchScript)")
    p.add_argument("--device", default="auto", help="where to measure the latency (default: cuda if available)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="train, compress and fine-tune ResNet-20 on the offline CIFAR-10 subset",
                       description=cmd_demo.__doc__)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default="cifar10-subset")
    p.add_argument("--out", default="runs/demo")
    add_format_options(p, rank="params:0.5")
    add_training_options(p, epochs=15, lr=0.2)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--finetune-lr", type=float, default=0.02)
    add_common(p)
    p.set_defaults(func=cmd_demo)

"""Compressing to a measured-latency budget: is the compressed model really that fast, and how accurate is it?

For each model and batch size: train the dense network (checkpointed, so a
second run reads it back), choose Tucker-2 ranks for half the dense
network's measured latency on this device at that batch size
(``latency:0.5:B``) and, for comparison, for half its MACs (``macs:0.5``);
fine-tune both the same number of epochs; then fold BatchNorm, let
:func:`tuckerlab.latency.choose_execution` keep each layer's fastest
execution, and time every model in interleaved rounds in this process
(median per model). Ratios are against the dense model, eager and with its
BatchNorm folded too (the fair comparison: folding speeds the dense model as
well).

    python bench/bench_latency_budget.py                         # ResNet-20 and ResNet-56, batch 1 and 128
    python bench/bench_latency_budget.py --models resnet20 --batches 1 --epochs 1 --data synthetic  # a smoke run

The last line of output is a JSON record with the table and its provenance.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch


def _median_ms(models: dict, input_size, batch_size: int, rounds: int) -> dict[str, float]:
    """Median latency of each model over ``rounds`` interleaved rounds (one ``measure_latency`` each)."""
    from tuckerlab.metrics import measure_latency

    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(measure_latency(model, input_size, device="cpu", batch_size=batch_size,
                                               warmup=2, repeats=5)["median_ms"])
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    from tuckerlab.data import load_dataset
    from tuckerlab.fuse import fuse_for_inference
    from tuckerlab.latency import LatencyModel, choose_execution
    from tuckerlab.metrics import count_macs, count_params
    from tuckerlab.models import get_model
    from tuckerlab.pipeline import compress_and_finetune
    from tuckerlab.rank import solve_budget
    from tuckerlab.results import provenance
    from tuckerlab.train import evaluate, fit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 128])
    p.add_argument("--data", default="cifar10-subset")
    p.add_argument("--epochs", type=int, default=15, help="dense training epochs")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the timings")
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--out", default="runs/bench-latency-budget")
    args = p.parse_args(argv)
    data = load_dataset(args.data)
    input_size = tuple(data.image_shape)
    out = Path(args.out)
    rows = []
    t0 = time.perf_counter()
    train_threads = torch.get_num_threads()
    for arch in args.models:
        torch.set_num_threads(train_threads)
        torch.manual_seed(0)
        dense = get_model(arch, num_classes=data.num_classes, in_channels=input_size[0])
        fit(dense, data, epochs=args.epochs, lr=0.2, schedule="onecycle", batch_size=64, label_smoothing=0.1,
            checkpoint_dir=out / arch / "dense", device="cpu", progress=False,
            max_steps_per_epoch=args.max_steps_per_epoch)
        dense_acc = evaluate(dense, data)["accuracy"]
        dense_fused = fuse_for_inference(dense)
        for batch in args.batches:
            torch.set_num_threads(args.threads)  # ranks priced with the thread count they are timed with
            lat = LatencyModel(batch_size=batch, memory_format="channels_last")
            budgets = {
                "latency": solve_budget(dense, "tucker2", args.target, metric="latency", latency=lat,
                                        input_size=input_size).ranks,
                "macs": f"macs:{args.target}",
            }
            models = {"dense": dense, "dense fused": dense_fused}
            results = {}
            for name, ranks in budgets.items():
                torch.set_num_threads(train_threads)
                result = compress_and_finetune(
                    dense, data, "tucker2", rank=ranks, finetune_epochs=args.finetune_epochs, lr=0.02,
                    schedule="cosine", batch_size=64, label_smoothing=0.1, accuracy_dense=dense_acc,
                    checkpoint_dir=out / arch / f"{name}-{batch}", device="cpu", progress=False,
                    max_steps_per_epoch=args.max_steps_per_epoch,
                )
                torch.set_num_threads(args.threads)
                fast = fuse_for_inference(result.model)
                choose_execution(fast, input_size, batch_size=batch, apply="swap", memory_format="channels_last")
                models[f"{name} budget"] = fast
                results[name] = result
            ms = _median_ms({k: copy.deepcopy(m).eval() for k, m in models.items()}, input_size, batch, args.rounds)
            for name, result in results.items():
                rows.append({
                    "model": arch, "batch": batch, "budget": f"{name}:{args.target}",
                    "params": count_params(result.model), "macs": count_macs(result.model, input_size),
                    "macs_ratio": result.report.macs_after / result.report.macs_before,
                    "latency_ms": ms[f"{name} budget"], "dense_ms": ms["dense"], "dense_fused_ms": ms["dense fused"],
                    "latency_vs_dense": ms[f"{name} budget"] / ms["dense"],
                    "latency_vs_dense_fused": ms[f"{name} budget"] / ms["dense fused"],
                    "accuracy_dense": dense_acc, "accuracy_decomposed": result.accuracy_compressed,
                    "accuracy_finetuned": result.accuracy_finetuned,
                })
                r = rows[-1]
                print(f"{arch:9} batch {batch:4}  {r['budget']:12} MACs x{r['macs_ratio']:.2f}  latency "
                      f"{r['latency_vs_dense']:.2f} of dense ({r['latency_vs_dense_fused']:.2f} of dense fused)  "
                      f"accuracy {100 * r['accuracy_finetuned']:.2f}% (dense {100 * dense_acc:.2f}%)", flush=True)
    import os

    prov = provenance(dataset=args.data, model=",".join(args.models), seed=0, device="cpu",
                      wall_time_s=time.perf_counter() - t0, threads=args.threads, load=os.getloadavg()[0],
                      finetune_epochs=args.finetune_epochs, epochs=args.epochs)
    print(json.dumps({"rows": rows, "provenance": prov}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

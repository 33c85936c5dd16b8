"""Inference latency of compressed models against the dense model, in the same process.

For a CIFAR ResNet and each decomposition format (ranks from a whole-model
budget, ``macs:0.5`` by default), the forward pass is timed at each batch
size in these variants:

``eager``
    the model as :func:`tuckerlab.compress_model` returns it, NCHW;
``fused``
    :func:`tuckerlab.fuse.fuse_for_inference`: BatchNorm folded into the
    layer before it, TT-Tucker's consecutive 1x1 stages merged (exact);
``fused+cl``
    the same with weights and input in ``channels_last`` (NHWC);
``chosen+cl``
    then :func:`tuckerlab.latency.choose_execution` at that batch size and
    layout: each factorized layer swapped for its rebuilt dense conv where
    that is faster on this machine;
``compile(fused+cl)``
    :func:`torch.compile` of ``fused+cl`` (``--no-compile`` skips;
    compiling takes about a minute per model and batch size on a CPU).

The dense model gets the same variants (``fused`` folds its BatchNorms). All
variants of one batch size are timed in interleaved rounds (``--rounds``),
so a change of machine load hits all of them; each cell is the median over
rounds of the time per forward pass, and the ratio column is the median over
rounds of ``variant / dense eager NCHW`` of the same round. The 1-minute
load average is printed before and after each table. Latency-cache entries
go to a temporary file unless ``--cache`` is given.

    python bench/bench_inference.py                                  # ResNet-20, CPU, 1 thread, batch 1 and 128
    python bench/bench_inference.py --model resnet56 --threads 2 --no-compile
    python bench/bench_inference.py --formats tucker2 --budget macs:0.33
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import torch

try:
    import tuckerlab  # noqa: F401
except ImportError:  # running from a checkout without an install
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuckerlab.fuse import fuse_for_inference
from tuckerlab.latency import LatencyCache, choose_execution
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.models import get_model
from tuckerlab.rank import from_spec
from tuckerlab.results import device_name
from tuckerlab.surgery import compress_model

INPUT = (3, 32, 32)
CL = torch.channels_last


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}/{os.cpu_count()} CPUs" if hasattr(os, "getloadavg") else "load n/a"


def _variants(name, model, batch, device, args, cache):
    """``{label: (module, memory format)}`` for one model at one batch size."""
    fused = fuse_for_inference(model).to(device)
    fused_cl = copy.deepcopy(fused).to(memory_format=CL)
    out = {
        f"{name} eager": (model.to(device).eval(), torch.contiguous_format),
        f"{name} fused": (fused, torch.contiguous_format),
        f"{name} fused+cl": (fused_cl, CL),
    }
    if any(True for _ in _factorized(fused_cl)):
        chosen = copy.deepcopy(fused_cl)
        report = choose_execution(chosen, INPUT, batch, memory_format="channels_last", cache=cache, rounds=3)
        chosen = chosen.to(memory_format=CL)  # swapped-in dense convs arrive NCHW
        swapped = sum(c != "factorized" for c in report.choices.values())
        out[f"{name} chosen+cl ({swapped}/{len(report.choices)} dense)"] = (chosen, CL)
    if args.compile:
        compiled = torch.compile(fused_cl, dynamic=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(torch.randn(batch, *INPUT, device=device).contiguous(memory_format=CL))
        print(f"    compiled {name} fused+cl at batch {batch} in {time.perf_counter() - t0:.0f} s ({_load()})",
              flush=True)
        out[f"{name} compile(fused+cl)"] = (compiled, CL)
    return out


def _factorized(model):
    from tuckerlab.layers import FactorizedModule

    return (m for m in model.modules() if isinstance(m, FactorizedModule))


def _time(variants, batch, device, args):
    """Median ms per forward and median ratio to the first variant, over interleaved rounds."""
    x = torch.randn(batch, *INPUT, device=device)
    inputs = {fmt: x.contiguous(memory_format=fmt) for fmt in (torch.contiguous_format, CL)}
    calls = max(1, round(args.calls_at_batch1 / batch))
    times = {label: [] for label in variants}
    with torch.no_grad():
        for module, fmt in variants.values():
            for _ in range(2):
                module(inputs[fmt])
        for _ in range(args.rounds):
            for label, (module, fmt) in variants.items():
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(calls):
                    module(inputs[fmt])
                _sync(device)
                times[label].append((time.perf_counter() - t0) / calls * 1e3)
    base = next(iter(times.values()))
    return {
        label: (statistics.median(t), statistics.median(a / b for a, b in zip(t, base)))
        for label, t in times.items()
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", choices=["resnet20", "resnet32", "resnet56"])
    p.add_argument("--formats", nargs="+", default=["tucker2", "tt", "tt_tucker", "cp"])
    p.add_argument("--budget", default="macs:0.5", help="rank specification for every format (default macs:0.5)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 128])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (medians reported)")
    p.add_argument("--calls-at-batch1", type=int, default=16,
                   help="forward passes per timing at batch 1 (divided by the batch size, at least 1)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--cache", default=None, help="latency cache file (default: a temporary one)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or min(args.batch_sizes) < 1:
        p.error("--rounds, --threads and --batch-sizes must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; running on the CPU")
        device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    cache = LatencyCache(args.cache or os.path.join(tempfile.mkdtemp(), "latency.json"))

    torch.manual_seed(0)
    dense = get_model(args.model).eval()
    models = {"dense": dense}
    print(f"{args.model} on {device_name(device)}, torch {torch.__version__}, {args.threads} thread(s); {_load()}")
    print(f"{'model':<10} {'params':>9} {'MACs':>12} {'MACs ratio':>10}  compressed in")
    print(f"{'dense':<10} {count_params(dense):>9,} {count_macs(dense, INPUT):>12,} {1.0:>10.2f}")
    for fmt in args.formats:
        t0 = time.perf_counter()
        rank = from_spec(args.budget, model=dense, method=fmt, input_size=INPUT)
        models[fmt], report = compress_model(dense, fmt, rank, input_size=INPUT)
        models[fmt].eval()
        print(f"{fmt:<10} {report.params_after:>9,} {report.macs_after:>12,} "
              f"{report.macs_after / report.macs_before:>10.2f}  {time.perf_counter() - t0:.1f} s", flush=True)

    # Every model shares CifarResNet.forward, whose compiled graphs count against one recompile
    # limit (8 by default): past it torch.compile silently runs eager code.
    torch._dynamo.config.recompile_limit = 64
    x = torch.randn(4, *INPUT)
    for batch in args.batch_sizes:
        torch._dynamo.reset()  # the previous batch size's graphs are not needed any more
        print(f"\nbatch {batch}: building variants ({_load()})", flush=True)
        variants = {}
        for name, model in models.items():
            variants.update(_variants(name, model, batch, device, args, cache))
        with torch.no_grad():  # every rewrite computes the same function (choice swaps in exact rebuilds)
            for label, (module, fmt) in variants.items():
                ref = models[label.split(" ")[0]]
                diff = float((module(x.to(device).contiguous(memory_format=fmt)).cpu() - ref(x.to(device)).cpu()).abs().max())
                if diff > 1e-4:
                    print(f"    warning: {label} differs from eager by {diff:.2e}")
        print(f"batch {batch}: timing {len(variants)} variants, {args.rounds} interleaved rounds ({_load()})",
              flush=True)
        result = _time(variants, batch, device, args)
        width = max(len(label) for label in result)
        print(f"{'variant':<{width}} {'ms/batch':>10} {'vs dense eager':>15}")
        for label, (ms, ratio) in result.items():
            print(f"{label:<{width}} {ms:>10.3f} {ratio:>14.2f}x")
        print(f"({_load()} at the end)", flush=True)


if __name__ == "__main__":
    main()

"""Time of one LC C-step against one L-step epoch, ResNet-32, in the same process.

The C-step of LC (and of ADMM, alternating and budget methods) projects every
compressed layer onto its format (:func:`tuckerlab.projection.project_model`,
plus the distances the LC callback logs). It runs once per L-step, i.e. once
every ``epochs_per_step`` epochs; the target is that one C-step costs less
than 5 % of one L-step epoch, so that even with one epoch per L-step the
C-steps add under 5 % to the run.

What is measured, on the same model (ResNet-32, 30 compressed 3x3
convolutions: all but the first; ranks ``fixed_ratio(0.5)``), device and
thread count:

L-step
    SGD steps of :func:`tuckerlab.train.fit` on CIFAR-size synthetic data
    (``load_dataset("synthetic")``, 32x32x3, batch 128) with the LC penalty
    active (:class:`tuckerlab.methods.LCCallback`), and without it for
    reference. ``--steps`` steps are timed after ``--warmup-steps`` untimed
    ones (CUDA-synchronised at both ends) and the time per step is
    **scaled to a full CIFAR-10 epoch of 391 steps** (50,000 images / 128).
C-step
    ``projector.project(model)`` and ``projector.distances(...)`` for each
    format, median of ``--repeats`` runs, on the weights of the same model.

    python bench/bench_cstep.py                        # CPU
    python bench/bench_cstep.py --device cuda          # GPU (bf16 autocast, channels_last, as fit does)
    python bench/bench_cstep.py --formats tucker2 --options method=hosvd
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

try:
    import tuckerlab  # noqa: F401
except ImportError:  # running from a checkout without an install
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuckerlab.data import load_dataset
from tuckerlab.methods import LCCallback
from tuckerlab.models import get_model
from tuckerlab.projection import Projector
from tuckerlab.rank import fixed_ratio
from tuckerlab.results import device_name
from tuckerlab.train import Callback, fit

STEPS_PER_EPOCH = 391  # 50,000 CIFAR-10 training images / batch 128, last partial batch kept


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(Callback):
    """Wall time from the end of step ``first`` to the end of step ``last`` (synchronised)."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.seconds = first, last, None

    def on_step_end(self, trainer, step):
        if step in (self.first, self.last):
            _sync(trainer.device)
            if step == self.first:
                self._t0 = time.perf_counter()
            else:
                self.seconds = time.perf_counter() - self._t0


def time_steps(model, data, device, args, callbacks=()) -> float:
    """Seconds per optimisation step of ``fit`` (after the warm-up steps)."""
    timer = StepTimer(args.warmup_steps, args.warmup_steps + args.steps)
    fit(model, data, epochs=1, lr=0.01, batch_size=args.batch_size, schedule="constant", device=device,
        max_steps_per_epoch=args.warmup_steps + args.steps, eval_every=0, progress=False,
        callbacks=[*callbacks, timer])
    return timer.seconds / args.steps


def time_c_step(projector: Projector, model, device, repeats: int) -> float:
    """Median seconds of one C-step: project every layer and measure the distances (as LCCallback does)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        targets = projector.project(model)
        projector.distances(model, targets)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hooi_comparison(model, ratio: float, device, repeats: int) -> None:
    """Tucker-2 C-step: the default (capped, cold and warm-started) against HOOI run to convergence.

    The warm start is what LC and ADMM do: the weights move a little
    between two C-steps (here 0.1% of each layer's norm, about what one
    L-step epoch does late in training) and HOOI starts from the previous
    C-step's factors.
    """
    from tuckerlab.formats import HOOI_SWEEPS

    converged = Projector.from_rank(model, "tucker2", fixed_ratio(ratio), decompose_kwargs={"n_iter_max": 100})
    capped = Projector.from_rank(model, "tucker2", fixed_ratio(ratio))
    weights = capped.weights(model)
    g = torch.Generator().manual_seed(1)
    moved = {n: w.detach() + 1e-3 * w.detach().norm() / w.numel() ** 0.5 * torch.randn(w.shape, generator=g).to(w)
             for n, w in weights.items()}
    warm = capped.warm_starts(capped.decompose_tensors(weights))

    def run(proj, warm_start=None):
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            out = proj.reconstruct(proj.decompose_tensors(moved, warm=warm_start), moved)
            _sync(device)
            times.append(time.perf_counter() - t0)
        err = sum(float((out[n] - moved[n]).double().square().sum()) for n in moved) ** 0.5
        return statistics.median(times), err

    t_ref, e_ref = run(converged)
    print(f"Tucker-2 C-step, HOOI to convergence (n_iter_max=100, the default before) against the default "
          f"(n_iter_max={HOOI_SWEEPS}); median of {repeats}, same process:")
    print(f"  converged       {t_ref:8.3f} s   error 1 (reference)")
    for label, proj, start in (("capped, cold", capped, None), ("capped, warm", capped, warm)):
        t, e = run(proj, start)
        print(f"  {label:<15} {t:8.3f} s   {t_ref / t:5.1f}x faster   error {e / e_ref:.5f}x")


def time_penalty(cb: LCCallback, model, device, repeats: int = 20) -> float:
    """Median seconds of the LC penalty's forward and backward alone (what LC adds to a step)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        cb.penalty(model).backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return statistics.median(times)


def parse_options(items):
    out = {}
    for item in items or ():
        key, _, value = item.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet32")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed L-step SGD steps (default 10)")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="C-step repetitions (median)")
    p.add_argument("--formats", nargs="+", default=["tucker2", "tt", "tt_tucker"])
    p.add_argument("--ratio", type=float, default=0.5, help="ranks: fixed_ratio(RATIO) (default 0.5)")
    p.add_argument("--options", nargs="*", help="decomposition options, e.g. method=hosvd n_iter_max=10")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    options = parse_options(args.options)

    n_train = args.batch_size * (args.warmup_steps + args.steps)
    data = load_dataset("synthetic", n_train=n_train, n_test=args.batch_size)
    torch.manual_seed(0)
    model = get_model(args.model, num_classes=data.num_classes)
    specs = {f: Projector.from_rank(model, f, fixed_ratio(args.ratio), decompose_kwargs=options)
             for f in args.formats}

    plain = time_steps(model, data, device, args)
    lc_cb = LCCallback(specs[args.formats[0]], mu0=1e-3, epochs_per_step=1)
    lc = time_steps(model, data, device, args, callbacks=[lc_cb])
    epoch = lc * STEPS_PER_EPOCH

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"{args.model} on {device_name(device)}{threads}; batch {args.batch_size}")
    print(f"L-step epoch = {STEPS_PER_EPOCH} steps (CIFAR-10: 50,000 images / {args.batch_size}), "
          f"timed over {args.steps} steps after {args.warmup_steps} warm-up steps and scaled")
    print(f"  SGD step, plain:           {1e3 * plain:9.1f} ms")
    pen = time_penalty(lc_cb, model, device)
    print(f"  SGD step, LC penalty on:   {1e3 * lc:9.1f} ms  ({100 * (lc / plain - 1):+.1f}%)")
    print(f"  LC penalty fwd+bwd alone:  {1e3 * pen:9.2f} ms  ({100 * pen / plain:.2f}% of a plain step)")
    print(f"  one L-step epoch:          {epoch:9.2f} s")
    print(f"C-step (project {len(specs[args.formats[0]])} layers + distances), ranks fixed_ratio({args.ratio}), "
          f"options {options or 'default'}; median of {args.repeats}:")
    worst = 0.0
    for fmt, proj in specs.items():
        c = time_c_step(proj, model, device, args.repeats)
        ratio = c / epoch
        worst = max(worst, ratio)
        print(f"  {fmt:<10} {c:8.3f} s   = {100 * ratio:6.2f}% of an L-step epoch")
    print(f"target: C-step < 5% of an L-step epoch -> {'met' if worst < 0.05 else 'NOT met'} "
          f"(worst {100 * worst:.2f}%)")
    if "tucker2" in args.formats and not options:
        hooi_comparison(model, args.ratio, device, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time tuckerlab.decompose against tensorly on every conv layer of ResNet-56.

Two C-step workloads, each over all conv weights of a CIFAR ResNet-56 (55
layers, 16/32/64 channels, 3x3), at half ranks:

(a) Tucker-2 (modes 0 and 1) by HOOI: HOSVD then a fixed number of sweeps,
    tolerance 0, so both libraries do the same work;
(b) TT-SVD of the weight permuted to (S, Kh, Kw, T), the TTConv2d layout.

Both libraries run in this one process on the same tensors; each pass over
all layers is repeated and the median is reported, with the mean relative
reconstruction error to show both compute the same thing.

    python bench/bench_decompose.py                  # CPU, one thread
    python bench/bench_decompose.py --threads 0      # CPU, torch's default threads
    python bench/bench_decompose.py --device cuda    # skips if no CUDA
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

import tensorly as tl
from tensorly.decomposition import partial_tucker as tl_partial_tucker
from tensorly.decomposition import tensor_train as tl_tensor_train

from tuckerlab.decompose import tensor_train, tucker


def resnet56_conv_weights(device, dtype) -> tuple[list[torch.Tensor], str]:
    """Conv weights of ResNet-56: from tuckerlab.models if present, else by shape."""
    try:
        from tuckerlab.models import get_model

        model = get_model("resnet56", num_classes=10)
        ws = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        source = "tuckerlab.models resnet56 (initial weights)"
    except Exception:  # models not available: the same shapes, random entries
        g = torch.Generator().manual_seed(0)
        shapes = [(16, 3, 3, 3)]
        c_in = 16
        for c in (16, 32, 64):
            for block in range(9):
                shapes += [(c, c_in, 3, 3), (c, c, 3, 3)]
                c_in = c
        ws = [torch.randn(s, generator=g) / (s[1] * 9) ** 0.5 for s in shapes]
        source = "random tensors of ResNet-56 shapes"
    return [w.to(device=device, dtype=dtype).contiguous() for w in ws], source


def half(n: int) -> int:
    return max(1, n // 2)


def half_tt_ranks(shape) -> tuple[int, ...]:
    """Half of the largest TT ranks, lowered where a neighbour cannot carry them."""
    d = len(shape)
    r = [1] + [half(min(_prod(shape[:k]), _prod(shape[k:]))) for k in range(1, d)] + [1]
    for k in range(1, d):
        r[k] = min(r[k], r[k - 1] * shape[k - 1])
    for k in range(d - 1, 0, -1):
        r[k] = min(r[k], shape[k] * r[k + 1])
    return tuple(r)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def rel_err(approx, exact) -> float:
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


def time_pass(fn, items, repeats, device) -> tuple[float, list]:
    """Median seconds of ``[fn(x) for x in items]`` over ``repeats``, and one result list."""
    out = [fn(x) for x in items]  # warm-up (kernel selection, lazy init)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = [fn(x) for x in items]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sweeps", type=int, default=10, help="HOOI sweeps after the HOSVD")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default); the matrices are "
                        "small, so more threads mostly add overhead")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA not available: skipping.")
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    weights, source = resnet56_conv_weights(device, dtype)
    perm = [w.permute(1, 2, 3, 0).contiguous() for w in weights]
    tk_ranks = [(half(w.shape[0]), half(w.shape[1])) for w in weights]
    tt_ranks = [half_tt_ranks(tuple(x.shape)) for x in perm]
    n = args.sweeps

    def tl_tucker2(i):
        (core, factors), _ = tl_partial_tucker(
            weights[i], tk_ranks[i], modes=[0, 1], n_iter_max=n, tol=0
        )
        return tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])

    def our_tucker2(i):
        return tucker(weights[i], tk_ranks[i], modes=(0, 1), n_iter_max=n, tol=0).to_tensor()

    def tl_tt(i):
        return tl.tt_to_tensor(tl_tensor_train(perm[i], list(tt_ranks[i])))

    def our_tt(i):
        return tensor_train(perm[i], rank=tt_ranks[i]).to_tensor()

    # Reconstruction is part of the C-step (Delta(Theta)), so it is timed too.
    tasks = [
        (f"Tucker-2 HOOI ({n} sweeps), half ranks", tl_tucker2, our_tucker2, weights),
        ("TT-SVD (S,Kh,Kw,T), half ranks", tl_tt, our_tt, perm),
    ]
    old_backend = tl.get_backend()
    tl.set_backend("pytorch")
    idx = list(range(len(weights)))
    rows = []
    try:
        for name, tl_fn, our_fn, targets in tasks:
            t_tl, out_tl = time_pass(tl_fn, idx, args.repeats, device)
            t_us, out_us = time_pass(our_fn, idx, args.repeats, device)
            e_tl = statistics.mean(rel_err(o, t) for o, t in zip(out_tl, targets))
            e_us = statistics.mean(rel_err(o, t) for o, t in zip(out_us, targets))
            rows.append((name, t_tl, t_us, e_tl, e_us))
    finally:
        tl.set_backend(old_backend)

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{len(weights)} conv layers ({source}), {args.dtype}, {dev}, "
          f"torch {torch.__version__}, tensorly {tl.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    head = f"{'workload':<36} {'tensorly ms':>12} {'tuckerlab ms':>13} {'ratio':>7} {'err tl':>8} {'err ours':>9}"
    print(head)
    print("-" * len(head))
    for name, t_tl, t_us, e_tl, e_us in rows:
        print(f"{name:<36} {1e3 * t_tl:12.1f} {1e3 * t_us:13.1f} {t_tl / t_us:6.2f}x "
              f"{e_tl:8.4f} {e_us:9.4f}")
    print("ratio = tensorly time / tuckerlab time (higher: tuckerlab faster); "
          "err = mean relative reconstruction error over layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())

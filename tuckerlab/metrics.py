"""Parameters, MACs and latency of a model.

MACs versus FLOPs
-----------------
The compression literature (He et al. 2016, Kim et al. 2016, LC, TT-LC,
BATUDE, ...) reports "FLOPs" that are in fact multiply-accumulates (MACs):
ResNet-20 on CIFAR-10 is quoted at "41M FLOPs", which is the number of MACs
of its convolutions and linear layer. :func:`count_macs` returns that number.
It is computed with :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts two FLOPs (a multiply and an add) per MAC, divided by two.

What is counted: the matrix products and convolutions that
``FlopCounterMode`` knows (``conv``, ``mm``, ``addmm``, ``bmm``,
attention, ...), with grouped and depthwise convolutions counted by their
actual ``in_channels / groups`` fan-in. What is not: bias additions,
BatchNorm, activations, pooling, residual additions and other element-wise
operations; they are small next to the convolutions, and the literature
leaves them out too.
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs", "layer_macs", "measure_latency"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared parameters counted once).

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
    trainable_only : bool, default False
        Count only parameters with ``requires_grad=True``.

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example_input(model: nn.Module, input_size: Sequence[int], batch_size: int = 1, device=None) -> torch.Tensor:
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    if device is None:
        device = ref.device if ref is not None else "cpu"
    return torch.randn(batch_size, *input_size, device=device, dtype=dtype)


class _EvalNoGrad:
    """Put a model in eval mode under ``no_grad`` and restore its modes afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        return self.model

    def __exit__(self, *exc) -> None:
        self.no_grad.__exit__(*exc)
        for m, training in self.modes:
            m.training = training


MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def memory_format_of(memory_format: str | torch.memory_format) -> tuple[str, torch.memory_format]:
    """``(name, torch.memory_format)`` of ``"contiguous"``/``"channels_last"`` or a ``torch.memory_format``."""
    for name, fmt in MEMORY_FORMATS.items():
        if memory_format == name or memory_format is fmt:
            return name, fmt
    raise ValueError(
        f"`memory_format` must be one of {tuple(MEMORY_FORMATS)} (or the torch.memory_format), "
        f"got {memory_format!r}."
    )


class _MemoryFormat:
    """Put a model's 4-D weights in a memory format, and back afterwards.

    ``nn.Module.to(memory_format=...)`` rewrites the weights in place; the
    weights that were contiguous are made contiguous again on exit, so that
    code reading them with ``view`` keeps working.
    """

    def __init__(self, model: nn.Module, memory_format: torch.memory_format | None) -> None:
        self.model, self.memory_format = model, memory_format

    def __enter__(self):
        if self.memory_format is not None:
            self.contiguous = [t for t in self._tensors() if t.is_contiguous()]
            self.model.to(memory_format=self.memory_format)
        return self.model

    def __exit__(self, *exc) -> None:
        if self.memory_format is not None:
            was = {id(t) for t in self.contiguous}
            for t in self._tensors():
                if id(t) in was and not t.is_contiguous():
                    t.data = t.data.contiguous()

    def _tensors(self):
        return [t for t in (*self.model.parameters(), *self.model.buffers()) if t.dim() == 4]


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass, per image.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode under ``no_grad`` (its mode is restored), on the
        device and in the dtype of its first parameter.
    input_size : sequence of int, default (3, 32, 32)
        Shape of one input without the batch dimension.

    Returns
    -------
    int
        ``FlopCounterMode`` FLOPs of a batch of one, divided by two. This is
        what papers on CNN compression call "FLOPs". Bias, BatchNorm,
        activations and other element-wise operations are not counted (see
        the module docstring).

    Examples
    --------
    >>> count_macs(nn.Conv2d(3, 16, 3, padding=1), (3, 32, 32))  # 32*32*16*3*3*3
    442368
    """
    x = _example_input(model, input_size)
    with _EvalNoGrad(model), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def layer_macs(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> dict[str, int]:
    """MACs per image of every leaf module that runs in one forward pass.

    Parameters
    ----------
    model : torch.nn.Module
    input_size : sequence of int, default (3, 32, 32)

    Returns
    -------
    dict of str to int
        Qualified module name (as in ``model.named_modules()``) to MACs, in
        the order the modules first run. Leaf modules are modules without
        children, and factorized layers (:mod:`tuckerlab.layers`) as wholes; modules that do no counted
        work (BatchNorm, ReLU, pooling) appear with 0. A module called several
        times is summed. Work done outside leaf modules (functional calls in a
        ``forward``) is in :func:`count_macs` only.
    """
    x = _example_input(model, input_size)
    result: dict[str, int] = {}
    handles = []
    counter = FlopCounterMode(display=False)
    starts: dict[str, list[int]] = {}

    def pre_hook(name):
        def hook(module, args):
            starts.setdefault(name, []).append(counter.get_total_flops())
        return hook

    def post_hook(name):
        def hook(module, args, output):
            start = starts[name].pop()
            result[name] = result.get(name, 0) + (counter.get_total_flops() - start) // 2
        return hook

    from tuckerlab.layers import FactorizedModule

    # A factorized layer counts as one leaf even though it holds containers
    # (ParameterList) of its factors; nothing below it is hooked.
    factorized: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in factorized):
            continue
        if isinstance(module, FactorizedModule):
            factorized.append(name)
        if isinstance(module, FactorizedModule) or next(module.children(), None) is None:
            handles.append(module.register_forward_pre_hook(pre_hook(name)))
            handles.append(module.register_forward_hook(post_hook(name)))
    try:
        with _EvalNoGrad(model), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return result


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int] = (3, 32, 32),
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    memory_format: str | torch.memory_format = "channels_last",
) -> dict:
    """Wall-clock time of a forward pass (eval mode, ``no_grad``).

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device`` (``nn.Module.to`` moves it in place); its
        training/eval mode is restored afterwards.
    input_size : sequence of int, default (3, 32, 32)
        One input without the batch dimension.
    device : str or torch.device, default "cpu"
    batch_size : int, default 1
    warmup : int, default 10
        Untimed passes first (allocator, cuDNN autotuning, caches).
    repeats : int, default 50
        Timed passes; each is timed on its own, with
        ``torch.cuda.synchronize`` before reading the clock on CUDA.
    memory_format : {"channels_last", "contiguous"} or torch.memory_format, default "channels_last"
        Layout of a 4-D input and of the model's 4-D weights while timing
        (the weights are put back afterwards). ``channels_last`` (NHWC) is
        what oneDNN's and cuDNN's fastest convolution kernels read. Measured
        on a 2-core CPU (1 thread, ``bench/bench_inference.py``, ResNet-20
        with BatchNorm folded, models at half the MACs): channels_last took
        0.90x (batch 1) and 0.79x (batch 128) of the NCHW time for the dense
        model, 0.97x / 0.70x for Tucker-2, 0.80x / 0.62x for CP, 0.61x and
        0.76x at batch 128 for TT and TT-Tucker, but 1.14x at batch 1 for
        those two. It is the default on every device (the training engine
        uses it on GPUs); pass ``"contiguous"`` to time NCHW. Inputs that
        are not 4-D are left as they are.

    Returns
    -------
    dict
        ``median_ms``, ``mean_ms``, ``p10_ms``, ``p90_ms``, ``min_ms``,
        ``max_ms`` (per batch), ``throughput`` (images per second at the
        median), ``batch_size``, ``device``, ``repeats``, ``memory_format``.

    Notes
    -----
    Decomposed convolutions are often no faster than dense ones on GPUs
    (memory-bound 1x1 convolutions, kernel choice): measure, do not infer
    latency from MACs.
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1, got {repeats}.")
    fmt_name, fmt = memory_format_of(memory_format)
    device = torch.device(device)
    model.to(device)
    x = _example_input(model, input_size, batch_size, device)
    cuda = device.type == "cuda"
    times = []
    with _EvalNoGrad(model), _MemoryFormat(model, fmt if x.dim() == 4 else None):
        if x.dim() == 4:
            x = x.contiguous(memory_format=fmt)
        for _ in range(warmup):
            model(x)
        if cuda:
            torch.cuda.synchronize(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    median = statistics.median(times)

    def quantile(q: float) -> float:
        pos = q * (len(times) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(times) - 1)
        return times[lo] + (times[hi] - times[lo]) * (pos - lo)

    return {
        "median_ms": median,
        "mean_ms": statistics.fmean(times),
        "p10_ms": quantile(0.1),
        "p90_ms": quantile(0.9),
        "min_ms": times[0],
        "max_ms": times[-1],
        "throughput": batch_size / (median / 1e3) if median > 0 else float("inf"),
        "batch_size": batch_size,
        "device": str(device),
        "repeats": repeats,
        "memory_format": fmt_name if x.dim() == 4 else "contiguous",
    }

"""Measured latency of factorized layers, per device, and the fastest execution of each.

Fewer MACs is not less time: each stage of a factorized chain is one more
kernel call and one more pass over the activations, and small 1x1
convolutions are memory-bound. On a 2-core CPU (channels_last), a Tucker-2
ResNet-20 at half the MACs was measured 1.4x *slower* than the dense network
at batch 1 and 0.82x of its time at batch 128 (the chapter "Factorized
convolutions" shows the run). Which execution of a layer is fastest depends
on the device, the batch size, the layer's shape and its rank, so this
module measures it:

:func:`choose_execution`
    times, for every factorized layer of a model, its factorized chain, its
    reconstructed execution, the dense convolution rebuilt from it
    (``layer.to_conv()``) and, when given, the original dense layer; then
    keeps the factorized chain, switches the execution, or swaps in the
    dense convolution, whichever is fastest, and returns an
    :class:`ExecutionReport`.
:class:`LatencyModel`
    latency of a convolution's factorized replacement at *any* rank, at a
    given batch size on this device, interpolated from a grid of ranks
    measured once per layer shape: what a latency budget needs to price
    candidate ranks without building each layer (see "For the budget
    solver" below).
:class:`LatencyCache`
    every measurement, kept in a JSON file (``latency.json`` under
    :func:`tuckerlab.data.default_root`, i.e. ``$TUCKERLAB_DATA`` or
    ``~/.cache/tuckerlab``) under a key of device name (and CPU threads),
    torch version, layer class, weight shape, rank, convolution
    hyper-parameters, input shape, batch size, dtype and memory format, so
    that a second run on the same machine measures nothing.

Timings are medians of :class:`torch.utils.benchmark.Timer` blocks (with
CUDA synchronisation), in eval mode under ``no_grad``, with as many threads
as torch uses at the time.

For the budget solver
---------------------
A whole-model latency budget ``latency:T`` (``T`` times the dense model's
measured latency at batch ``B`` on this device) can be priced as::

    lat = LatencyModel(batch_size=B)                        # device, dtype, memory format, cache
    total = lat.model_ms(dense_model, input_size)           # measured whole dense model
    for each candidate layer (conv, its input (H, W), candidate ranks):
        dense = lat.dense_ms(conv, in_hw)                    # measured once, cached
        fact = lat.factorized_ms(conv, "tucker2", ranks, in_hw)   # array, interpolated
        cost = numpy.minimum(fact, dense)                    # the execution choice keeps the faster
    fixed = total - sum(dense of every candidate layer)      # BatchNorm, ReLU, pooling, skipped layers
    predicted = fixed + sum(chosen cost of every layer)      # <= T * total

The first :meth:`LatencyModel.factorized_ms` call for a layer shape
measures its grid (25 ranks for Tucker-2 by default: a few seconds per
shape on a CPU at batch 128); every later query, for any rank, is an
interpolation. After compressing, :func:`choose_execution` applies the
per-layer choice the prediction assumed.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from tuckerlab.formats import get_format
from tuckerlab.layers import (
    CPConv2d,
    FactorizedConv2d,
    FactorizedModule,
    LowRankLinear,
    TTConv2d,
    TTTuckerConv2d,
    TuckerConv2d,
)
from tuckerlab.metrics import _EvalNoGrad, memory_format_of
from tuckerlab.results import device_name

__all__ = [
    "LatencyCache",
    "LatencyModel",
    "ExecutionReport",
    "LayerTiming",
    "choose_execution",
    "time_module",
    "CANDIDATES",
    "RANK_AXES",
]

#: What :func:`choose_execution` times for each factorized layer.
CANDIDATES = ("factorized", "reconstructed", "dense", "original")

_CACHE_FORMAT = "tuckerlab-latency/1"


# ---------------------------------------------------------------- keys
def _layer_key(module: nn.Module, rank) -> dict:
    """Class, weight shape, rank and hyper-parameters: what fixes a layer's cost."""
    shape = _weight_shape(module)
    key = {"layer": type(module).__name__, "weight": list(shape), "rank": _plain(rank)}
    if isinstance(module, (nn.Conv2d, FactorizedConv2d)):
        key.update(
            stride=list(module.stride),
            padding=module.padding if isinstance(module.padding, str) else list(module.padding),
            dilation=list(module.dilation),
            groups=int(module.groups),
            padding_mode=module.padding_mode,
        )
    key["bias"] = getattr(module, "bias", None) is not None
    return key


def _weight_shape(module: nn.Module) -> tuple[int, ...]:
    if isinstance(module, FactorizedConv2d):
        return (module.out_channels, module.in_channels, *module.kernel_size)
    if isinstance(module, LowRankLinear):
        return (module.out_features, module.in_features)
    if hasattr(module, "weight") and isinstance(module.weight, torch.Tensor):
        return tuple(module.weight.shape)
    raise ValueError(f"cannot tell the weight shape of a {type(module).__name__}")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return int(value) if value is not None else None


# -------------------------------------------------------------------- cache
class LatencyCache:
    """Measured latencies in a JSON file, keyed by everything that changes them.

    Parameters
    ----------
    path : path-like, optional
        Default ``latency.json`` in :func:`tuckerlab.data.default_root`
        (``$TUCKERLAB_DATA`` or ``~/.cache/tuckerlab``).

    Notes
    -----
    A key is the JSON of a dict with ``device``
    (:func:`tuckerlab.results.device_name`: the GPU, or the CPU with its
    core and thread counts),
    ``torch`` (version), ``layer`` (class), ``weight`` (shape), ``rank``,
    the convolution's ``stride``, ``padding``, ``dilation``, ``groups``,
    ``padding_mode`` and ``bias``, ``execution``, ``input`` (one input's
    shape), ``batch``, ``dtype`` and ``memory_format``. A value holds
    ``median_ms``, ``iqr_ms``, ``runs`` and ``measured`` (UTC time).
    :meth:`save` merges with what other processes wrote meanwhile and
    replaces the file atomically.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        if path is None:
            from tuckerlab.data import default_root

            path = default_root() / "latency.json"
        self.path = Path(path)
        self.entries: dict[str, dict] = self._read()
        self._new: dict[str, dict] = {}

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"latency cache {str(self.path)!r} is not readable JSON ({err}); delete it to start afresh"
            ) from err
        if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
            raise ValueError(
                f"{str(self.path)!r} is not a tuckerlab latency cache (format {_CACHE_FORMAT!r}); "
                "delete it or pass another path"
            )
        return dict(data.get("entries", {}))

    @staticmethod
    def key(fields: dict) -> str:
        """The string key of a dict of fields (sorted JSON)."""
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def get(self, fields: dict) -> dict | None:
        """The stored measurement for these fields, or None."""
        return self.entries.get(self.key(fields))

    def put(self, fields: dict, value: dict) -> None:
        """Store a measurement (kept in memory until :meth:`save`)."""
        k = self.key(fields)
        self.entries[k] = value
        self._new[k] = value

    def save(self) -> Path:
        """Write the file: entries on disk, updated with this object's new ones."""
        merged = self._read() if self.path.is_file() else {}
        merged.update(self._new)
        self.entries = {**merged, **self.entries}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": _CACHE_FORMAT, "entries": merged}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
        self._new = {}
        return self.path

    def __len__(self) -> int:
        return len(self.entries)


# ------------------------------------------------------------------- timing
def time_module(module: nn.Module, x: torch.Tensor, min_run_time: float = 0.05) -> dict:
    """Median time of ``module(x)`` (eval mode, ``no_grad``).

    Parameters
    ----------
    module : torch.nn.Module
        On the device of ``x``, in the memory format wanted.
    x : torch.Tensor
        One batch.
    min_run_time : float, default 0.05
        Seconds of timed runs (:meth:`torch.utils.benchmark.Timer.blocked_autorange`,
        which repeats the call in blocks and synchronises CUDA).

    Returns
    -------
    dict
        ``median_ms``, ``iqr_ms``, ``runs`` (calls timed).
    """
    from torch.utils import benchmark

    with _EvalNoGrad(module):
        module(x)  # warm-up: allocator, oneDNN/cuDNN kernel choice
        timer = benchmark.Timer(
            "module(x)", globals={"module": module, "x": x}, num_threads=torch.get_num_threads()
        )
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "runs": len(m.times) * m.number_per_run}


class _Timer:
    """Measure modules at one batch size, dtype, memory format and device, through the cache."""

    def __init__(self, batch_size, device, dtype, memory_format, cache, min_run_time, rounds):
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if rounds < 1:
            raise ValueError(f"`rounds` must be >= 1, got {rounds!r}.")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.dtype = dtype
        self.format_name, self.memory_format = memory_format_of(memory_format)
        self.cache = cache if cache is not None else LatencyCache()
        self.min_run_time = float(min_run_time)
        self.rounds = int(rounds)
        self.base = {
            "device": device_name(self.device),
            "torch": torch.__version__,
            "batch": self.batch_size,
            "dtype": str(dtype).replace("torch.", ""),
            "memory_format": self.format_name,
        }

    def fields(self, module, rank, execution, input_shape) -> dict:
        return {**self.base, **_layer_key(module, rank), "execution": execution, "input": list(input_shape)}

    def _prepare(self, module, input_shape, inputs: dict):
        """The module on the device, in the dtype and layout; one random input per shape (shared)."""
        shape = tuple(int(d) for d in input_shape)
        if shape not in inputs:
            x = torch.randn(self.batch_size, *shape, device=self.device, dtype=self.dtype)
            inputs[shape] = x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x
        module = module.to(self.device, self.dtype)
        if inputs[shape].dim() == 4:
            module = module.to(memory_format=self.memory_format)
        return module, inputs[shape]

    def measure(self, jobs: Sequence[tuple[dict, nn.Module, Sequence[int]]]) -> list[float]:
        """Median ms of each ``(fields, module, input shape)``; missing ones are measured.

        The jobs not in the cache are measured in ``rounds`` interleaved
        rounds (so that a change of machine load hits all of them) and the
        median of the rounds' medians is stored.
        """
        todo, inputs = {}, {}
        for fields, module, shape in jobs:
            k = self.cache.key(fields)
            if self.cache.get(fields) is None and k not in todo:
                todo[k] = (fields, *self._prepare(module, shape, inputs))
        if todo:
            runs = {k: [] for k in todo}
            for _ in range(self.rounds):
                for k, (fields, module, x) in todo.items():
                    runs[k].append(time_module(module, x, self.min_run_time))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for k, (fields, _, _) in todo.items():
                r = runs[k]
                self.cache.put(
                    fields,
                    {
                        "median_ms": float(np.median([m["median_ms"] for m in r])),
                        "iqr_ms": float(np.median([m["iqr_ms"] for m in r])),
                        "runs": int(sum(m["runs"] for m in r)),
                        "measured": stamp,
                    },
                )
            self.cache.save()
        return [self.cache.get(fields)["median_ms"] for fields, _, _ in jobs]


def _model_device_dtype(model: nn.Module, device=None, dtype=None):
    ref = next(iter(model.parameters()), None)
    if device is None:
        device = ref.device if ref is not None else torch.device("cpu")
    if dtype is None:
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    return torch.device(device), dtype


# ------------------------------------------------------- execution choice
@dataclass
class LayerTiming:
    """Timings of one factorized layer and the execution chosen for it.

    Attributes
    ----------
    name : str
        Qualified name in the model.
    layer : str
        Class of the factorized layer.
    weight : tuple of int
        Shape of the dense weight it stands for.
    rank
        The layer's rank.
    input : tuple of int
        One input's shape (without batch).
    times_ms : dict of str to float
        Median time per candidate (see :data:`CANDIDATES`) at the batch size
        of the report.
    choice : str
        The candidate kept.
    """

    name: str
    layer: str
    weight: tuple
    rank: object
    input: tuple
    times_ms: dict
    choice: str

    @property
    def speedup(self) -> float:
        """Time of the factorized chain over the time of the choice."""
        return self.times_ms["factorized"] / self.times_ms[self.choice]


@dataclass
class ExecutionReport:
    """Outcome of :func:`choose_execution`.

    Attributes
    ----------
    layers : list of LayerTiming
    batch_size : int
    device : str
        :func:`tuckerlab.results.device_name` of the device measured.
    dtype, memory_format : str
    apply : str or None
        What was done with the choice (``"swap"``, ``"mode"``, None).
    """

    layers: list[LayerTiming]
    batch_size: int
    device: str
    dtype: str
    memory_format: str
    apply: str | None
    candidates: tuple = field(default_factory=tuple)

    def total_ms(self, execution: str | None = None) -> float:
        """Sum over layers of the chosen time, or of one candidate's (``"factorized"``, ``"dense"``, ...)."""
        return sum(t.times_ms[execution or t.choice] for t in self.layers)

    @property
    def choices(self) -> dict[str, str]:
        """``{layer name: chosen execution}``."""
        return {t.name: t.choice for t in self.layers}

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "device": self.device,
            "dtype": self.dtype,
            "memory_format": self.memory_format,
            "apply": self.apply,
            "layers": [
                {"name": t.name, "layer": t.layer, "weight": list(t.weight), "rank": _plain(t.rank),
                 "input": list(t.input), "times_ms": dict(t.times_ms), "choice": t.choice}
                for t in self.layers
            ],
        }

    def __str__(self) -> str:
        cands = self.candidates or (tuple(self.layers[0].times_ms) if self.layers else ())
        width = max([5] + [len(t.name) for t in self.layers])
        lines = [
            f"per-layer execution at batch {self.batch_size} on {self.device} ({self.dtype}, {self.memory_format}); "
            "median ms per call",
            f"{'layer':<{width}}  {'class':<15}" + "".join(f"{c:>14}" for c in cands) + "  choice",
        ]
        for t in self.layers:
            cells = "".join(f"{t.times_ms[c]:>14.3f}" if c in t.times_ms else f"{'':>14}" for c in cands)
            lines.append(f"{t.name:<{width}}  {t.layer:<15}{cells}  {t.choice}")
        totals = "".join(
            f"{self.total_ms(c):>14.3f}" if all(c in t.times_ms for t in self.layers) else f"{'':>14}"
            for c in cands
        )
        lines.append(f"{'total':<{width}}  {'':<15}{totals}  {self.total_ms():.3f}")
        return "\n".join(lines)


def _input_shapes(model: nn.Module, input_size, device, dtype) -> dict[str, tuple[int, ...]]:
    """One input's shape (without batch) at each factorized layer, from a batch-1 forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, FactorizedModule):
            def hook(mod, args, name=name):
                shapes.setdefault(name, tuple(args[0].shape[1:]))
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with _EvalNoGrad(model):
            model(torch.randn(1, *input_size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return shapes


def _dense_of(layer: FactorizedModule) -> nn.Module:
    return layer.to_linear() if isinstance(layer, LowRankLinear) else layer.to_conv()


def _with_execution(layer: FactorizedModule, execution: str) -> FactorizedModule:
    clone = copy.deepcopy(layer)
    clone.execution = execution
    return clone


_APPLY = {"swap": ("factorized", "dense", "original"), "mode": ("factorized", "reconstructed"), None: None}


def choose_execution(
    model: nn.Module,
    input_size: Sequence[int] = (3, 32, 32),
    batch_size: int = 1,
    *,
    original: nn.Module | dict | None = None,
    apply: str | None = "swap",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    memory_format: str | torch.memory_format = "contiguous",
    cache: LatencyCache | None = None,
    min_run_time: float = 0.05,
    rounds: int = 3,
) -> ExecutionReport:
    """Time each factorized layer's executions on this device and keep the fastest.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        A model with factorized layers (:mod:`tuckerlab.layers`); changed in
        place unless ``apply=None``.
    input_size : sequence of int, default (3, 32, 32)
        One model input without the batch dimension; a forward pass at
        batch 1 finds each layer's input shape.
    batch_size : int, default 1
        The batch size the model will run at (the choice depends on it).
    original : torch.nn.Module or dict, optional
        The dense model the factorized one was made from (layers looked up
        by the same names), or ``{layer name: dense layer}``. Its layers are
        timed too (``"original"``) and, under ``apply="swap"``, a layer
        whose dense execution wins gets a copy of its original layer back
        instead of the rebuilt ``to_conv()``: the uncompressed weights, so
        the model's function changes (as when a budget keeps a layer dense).
    apply : {"swap", "mode", None}, default "swap"
        ``"swap"``: choose among the factorized chain and the dense layer
        (``to_conv()``/``to_linear()``, or the original) and swap the dense
        one in where it wins: fastest inference, but the model no longer
        has the factorized structure that :func:`tuckerlab.serialization.save_model`
        records. ``"mode"``: choose among ``execution="factorized"`` and
        ``"reconstructed"`` (the dense weight rebuilt at each call) and set
        it: the model keeps its structure. ``None``: measure and report only.
    device, dtype : optional
        Where and in what precision to time; default the model's.
    memory_format : {"contiguous", "channels_last"}, default "contiguous"
        Layout of the activations and weights when timing; use the one the
        model will run in.
    cache : LatencyCache, optional
        Default :class:`LatencyCache` ``()`` (the file under the data root).
    min_run_time : float, default 0.05
        Seconds of timed calls per candidate and round.
    rounds : int, default 3
        Rounds over all candidates of a model (interleaved); the median is kept.

    Returns
    -------
    ExecutionReport
        One :class:`LayerTiming` per factorized layer, in model order.

    Raises
    ------
    ValueError
        Unknown ``apply``, a bad ``batch_size``, a model without factorized
        layers, or an ``original`` lacking one of the layers.

    Notes
    -----
    ``"dense"`` and ``"original"`` are the same operation when the original
    layer is a plain convolution of the same hyper-parameters, so they share
    a cache entry.
    """
    if apply not in _APPLY:
        raise ValueError(f"`apply` must be one of {tuple(_APPLY)}, got {apply!r}.")
    device, dtype = _model_device_dtype(model, device, dtype)
    timer = _Timer(batch_size, device, dtype, memory_format, cache, min_run_time, rounds)
    input_size = tuple(int(d) for d in input_size)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, FactorizedModule)}
    if not layers:
        raise ValueError("`model` has no factorized layer (tuckerlab.layers) to choose an execution for.")
    shapes = _input_shapes(model, input_size, device, dtype)
    originals = {}
    if original is not None:
        lookup = original if isinstance(original, dict) else dict(original.named_modules())
        missing = sorted(n for n in layers if n not in lookup)
        if missing:
            raise ValueError(f"`original` has no layer named {missing}.")
        originals = {n: lookup[n] for n in layers}

    jobs, where = [], []
    for name, layer in layers.items():
        if name not in shapes:
            continue  # not run by the forward pass
        candidates = {
            "factorized": (layer.rank, _with_execution(layer, "factorized")),
            "reconstructed": (layer.rank, _with_execution(layer, "reconstructed")),
            "dense": (None, _dense_of(layer)),
        }
        if name in originals:
            candidates["original"] = (None, copy.deepcopy(originals[name]))
        for cand, (rank, module) in candidates.items():
            execution = cand if cand in ("factorized", "reconstructed") else "dense"
            jobs.append((timer.fields(module, rank, execution, shapes[name]), module, shapes[name]))
            where.append((name, cand))
    times = timer.measure(jobs)

    per_layer: dict[str, dict[str, float]] = {}
    for (name, cand), t in zip(where, times):
        per_layer.setdefault(name, {})[cand] = t
    allowed = _APPLY[apply] or _APPLY["swap"]
    report_layers = []
    for name, t in per_layer.items():
        layer = layers[name]
        options = [c for c in allowed if c in t]
        if "original" in options and "dense" in options:
            options.remove("dense")  # same operation; the original's weights are the point of passing it
        choice = min(options, key=lambda c: t[c])
        report_layers.append(
            LayerTiming(name, type(layer).__name__, _weight_shape(layer), layer.rank, shapes[name], t, choice)
        )
        if apply == "mode":
            layer.execution = choice
        elif apply == "swap" and choice != "factorized":
            new = copy.deepcopy(originals[name]) if choice == "original" else _dense_of(layer)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
    return ExecutionReport(
        report_layers, timer.batch_size, timer.base["device"], timer.base["dtype"], timer.format_name, apply,
        tuple(c for c in CANDIDATES if any(c in t.times_ms for t in report_layers)),
    )


# ----------------------------------------------------------- latency model
def _tt_bounds(s, kh, kw, t):
    return min(s, kh * kw * t), min(s * kh, kw * t), min(s * kh * kw, t)


@dataclass(frozen=True)
class _Axes:
    """How a format's rank maps to the grid axes the latency is interpolated on."""

    cls: type
    bounds: object  # (T, S, Kh, Kw) -> upper bound of each axis
    to_rank: object  # grid point (ints) -> the layer's rank
    to_point: object  # the layer's rank -> grid point


def _tt_tucker_rank(p, shape):
    t, s, kh, kw = shape
    r_out, r_in, r2 = p
    r2 = min(r2, r_in * kh, kw * r_out)
    return ((r_out, r_in), (r_in, r2, r_out))


#: The rank axes interpolated for each format: Tucker-2 ``(r_out, r_in)``;
#: CP ``R`` (up to the rank whose parameters equal the dense layer's); TT
#: ``(r1, r2, r3)``; TT-Tucker ``(r_out, r_in, r2)`` with ``r1 = r_in`` and
#: ``r3 = r_out``, the ranks the budget solver searches.
RANK_AXES: dict[str, _Axes] = {
    "tucker2": _Axes(
        TuckerConv2d,
        lambda t, s, kh, kw: (t, s),
        lambda p, shape: (p[0], p[1]),
        lambda r: (r[0], r[1]) if not isinstance(r, int) else (r, r),
    ),
    "cp": _Axes(
        CPConv2d,
        lambda t, s, kh, kw: (max(1, (t * s * kh * kw) // (t + s + kh + kw)),),
        lambda p, shape: p[0],
        lambda r: (int(r),),
    ),
    "tt": _Axes(
        TTConv2d,
        lambda t, s, kh, kw: _tt_bounds(s, kh, kw, t),
        # a grid point whose ranks TT-SVD cannot reach is timed at the nearest reachable ranks below it
        lambda p, shape: get_format("tt").scale_rank(shape, tuple(p), 1.0, 1),
        lambda r: tuple(r)[-4:-1] if len(tuple(r)) == 5 else tuple(r),
    ),
    "tt_tucker": _Axes(
        TTTuckerConv2d,
        lambda t, s, kh, kw: (t, s, min(s * kh, kw * t)),
        _tt_tucker_rank,
        lambda r: (r[0][0], r[0][1], r[1][1]),
    ),
}


def _grid_axis(bound: int, fractions: Sequence[float] | None, step: int | None = None) -> list[int]:
    if step is not None:
        return sorted({min(bound, k) for k in range(step, bound + step, step)})
    return sorted({max(1, min(bound, math.ceil(f * bound))) for f in fractions})


class LatencyModel:
    """Latency of convolutions and of their factorized replacements at any rank, on this device.

    Parameters
    ----------
    batch_size : int
        Images per call the latencies are for.
    device : str or torch.device, default "cpu"
    dtype : torch.dtype, default torch.float32
    memory_format : {"contiguous", "channels_last"}, default "contiguous"
    cache : LatencyCache, optional
        Default :class:`LatencyCache` ``()``.
    fractions : sequence of float, optional
        Grid of each rank axis, as fractions of the axis's bound (rounded up
        to integers, duplicates dropped). Default ``(1/8, 1/4, 1/2, 3/4, 1)``
        for one- and two-axis formats (5 or 25 layers measured per layer
        shape) and ``(1/4, 1/2, 1)`` for TT and TT-Tucker (27).
    step : int, optional
        Instead of ``fractions``: every multiple of ``step`` up to the
        axis's bound, and the bound. With a budget restricted to ranks that
        are multiples of ``step`` (``multiple_of`` of
        :func:`tuckerlab.rank.solve_budget`) every candidate is then a
        measured point (e.g. ``step=8``: 64 Tucker-2 layers for a 64-channel
        convolution).
    min_run_time : float, default 0.02
        Seconds of timed calls per grid point.
    rounds : int, default 1
        Interleaved rounds per grid (median kept).

    Notes
    -----
    Latency is interpolated linearly between grid points
    (:class:`scipy.interpolate.RegularGridInterpolator`); a rank below the
    smallest grid point gets that point's latency (an over-estimate: the
    time of small layers is dominated by per-call overhead), and no rank
    exceeds the largest. Exact ranks already in the cache (measured by
    :func:`choose_execution` or earlier) are not interpolated.

    How good the interpolation is, measured on a 2-core CPU (1 thread) for
    a Tucker-2 layer 32 -> 32 channels, 3x3, on 16x16 inputs, grid and
    seven off-grid ranks timed in the same interleaved rounds: at batch 1
    the interpolated latency was 0.96-1.08 of the measured one; at batch 128
    0.85-1.20, ranks that are not multiples of 8 being mostly slower than
    interpolation between the aligned grid points suggests (the vector
    width of the convolution kernels). Use ``step`` for a budget on aligned
    ranks.
    """

    def __init__(
        self,
        batch_size: int,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        memory_format: str | torch.memory_format = "contiguous",
        cache: LatencyCache | None = None,
        fractions: Sequence[float] | None = None,
        step: int | None = None,
        min_run_time: float = 0.02,
        rounds: int = 1,
    ) -> None:
        if fractions is not None and (
            not len(fractions) or any(not (0 < float(f) <= 1) for f in fractions)
        ):
            raise ValueError(f"`fractions` must be values in (0, 1], got {fractions!r}.")
        if step is not None and (isinstance(step, bool) or int(step) != step or step < 1):
            raise ValueError(f"`step` must be a positive integer, got {step!r}.")
        if step is not None and fractions is not None:
            raise ValueError("give `fractions` or `step`, not both.")
        self.fractions = None if fractions is None else tuple(float(f) for f in fractions)
        self.step = None if step is None else int(step)
        self._timer = _Timer(batch_size, device, dtype, memory_format, cache, min_run_time, rounds)
        self._grids: dict[str, object] = {}

    @property
    def batch_size(self) -> int:
        return self._timer.batch_size

    @property
    def cache(self) -> LatencyCache:
        return self._timer.cache

    @staticmethod
    def _input(conv: nn.Conv2d, in_hw) -> tuple[int, int, int]:
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"`conv` must be a torch.nn.Conv2d, got {type(conv).__name__}.")
        h, w = (int(d) for d in in_hw)
        return (conv.in_channels, h, w)

    def dense_ms(self, conv: nn.Conv2d, in_hw: Sequence[int]) -> float:
        """Measured latency of a dense convolution on inputs of spatial size ``in_hw`` (cached).

        Parameters
        ----------
        conv : torch.nn.Conv2d
            The layer, or any with the same shape and hyper-parameters.
        in_hw : (int, int)
            Height and width of its input.

        Returns
        -------
        float
            Median milliseconds per call at ``batch_size``.
        """
        shape = self._input(conv, in_hw)
        probe = copy.deepcopy(conv)
        return self._timer.measure([(self._timer.fields(probe, None, "dense", shape), probe, shape)])[0]

    def _layer(self, conv: nn.Conv2d, method: str, rank) -> FactorizedConv2d:
        axes = RANK_AXES[method]
        return axes.cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, rank, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        )

    def _grid(self, conv: nn.Conv2d, method: str, shape):
        from scipy.interpolate import RegularGridInterpolator

        axes = RANK_AXES[method]
        wshape = tuple(conv.weight.shape)
        bounds = axes.bounds(*wshape)
        fractions = self.fractions or ((0.125, 0.25, 0.5, 0.75, 1.0) if len(bounds) <= 2 else (0.25, 0.5, 1.0))
        coords = [_grid_axis(b, fractions, self.step) for b in bounds]
        key = self._timer.cache.key({"method": method, **self._timer.fields(conv, None, "grid", shape),
                                     "coords": coords})
        if key in self._grids:
            return self._grids[key]
        points = list(np.ndindex(*[len(c) for c in coords]))
        jobs = []
        for idx in points:
            rank = axes.to_rank(tuple(c[i] for c, i in zip(coords, idx)), wshape)
            layer = self._layer(conv, method, rank)
            jobs.append((self._timer.fields(layer, layer.rank, "factorized", shape), layer, shape))
        values = np.empty([len(c) for c in coords])
        for idx, t in zip(points, self._timer.measure(jobs)):
            values[idx] = t
        grid = (coords, RegularGridInterpolator(coords, values, method="linear"))
        self._grids[key] = grid
        return grid

    def factorized_ms(self, conv: nn.Conv2d, method: str, rank, in_hw: Sequence[int]):
        """Latency of ``conv`` replaced by a factorized layer of ``rank`` (factorized execution).

        Parameters
        ----------
        conv : torch.nn.Conv2d
            The dense layer (its shape and hyper-parameters are used, not its
            weights).
        method : {"tucker2", "cp", "tt", "tt_tucker"}
        rank : rank or list of ranks
            In the method's form (``(r_out, r_in)`` for Tucker-2); a list
            gives an array.
        in_hw : (int, int)
            Height and width of the layer's input.

        Returns
        -------
        float or numpy.ndarray
            Milliseconds per call at ``batch_size``: the cached measurement
            of that exact rank if there is one, else interpolated from the
            layer shape's grid (measured on first use).
        """
        if method not in RANK_AXES:
            raise ValueError(f"`method` must be one of {tuple(RANK_AXES)}, got {method!r}.")
        shape = self._input(conv, in_hw)
        single = not isinstance(rank, list)
        ranks = [rank] if single else rank
        axes = RANK_AXES[method]
        coords, interp = self._grid(conv, method, shape)
        out = np.empty(len(ranks))
        for i, r in enumerate(ranks):
            point = tuple(int(v) for v in axes.to_point(r))
            if len(point) != len(coords):
                raise ValueError(f"rank {r!r} does not have the form of a {method!r} rank.")
            # the layer's own rank form, as stored by measurements of built layers
            layer_rank = r if method == "tt_tucker" else axes.to_rank(point, tuple(conv.weight.shape))
            fields = self._timer.fields(conv, layer_rank, "factorized", shape)
            fields.update(layer=axes.cls.__name__, groups=1)
            exact = self._timer.cache.get(fields)
            if exact is not None:
                out[i] = exact["median_ms"]
            else:
                clipped = [min(max(v, c[0]), c[-1]) for v, c in zip(point, coords)]
                out[i] = float(interp(clipped)[0])
        return float(out[0]) if single else out

    def best_ms(self, conv: nn.Conv2d, method: str, rank, in_hw: Sequence[int]):
        """``min(factorized_ms, dense_ms)``: the latency after :func:`choose_execution`."""
        fact = self.factorized_ms(conv, method, rank, in_hw)
        best = np.minimum(fact, self.dense_ms(conv, in_hw))
        return float(best) if np.ndim(best) == 0 else best

    def model_ms(self, model: nn.Module, input_size: Sequence[int] = (3, 32, 32), repeats: int = 20) -> float:
        """Measured median latency of a whole model at ``batch_size`` (not cached).

        Uses :func:`tuckerlab.metrics.measure_latency` with this object's
        device and memory format.
        """
        from tuckerlab.metrics import measure_latency

        probe = copy.deepcopy(model).to(dtype=self._timer.dtype)
        return measure_latency(
            probe, tuple(input_size), device=self._timer.device, batch_size=self.batch_size, warmup=3,
            repeats=repeats, memory_format=self._timer.memory_format,
        )["median_ms"]

"""LWIQ: tensor-train ranks from layer-wise imprinting quantitation, and the proxy search it is compared with.

Liu et al. (2024) choose the TT ranks of a trained network from each
layer's *significance*, measured by a proxy classifier attached to the
layer, and scale all ranks by one factor to meet a budget, so that a new
budget needs no new search. Only the abstract of the paper is public; the
design below follows its description and weight imprinting (Qi, Brown &
Lowe, 2018), and every choice the abstract leaves open is a parameter:

1. **Features.** One batched forward pass (forward hooks, on the model's
   device) over training images records each selected layer's output,
   pooled to at most ``pool_size`` values per image
   (:func:`pool_features`: adaptive average pooling to a grid, then
   flattened; or channel pooling) and L2-normalised.
2. **Imprinting.** On a *calibration* split of the training set, the class
   weights of each layer are the normalised means of its normalised
   features per class (:func:`imprint_weights`); no training.
3. **Proxy accuracy.** On a separate *held-out* split of the training set,
   each image is given the class of its nearest imprint by cosine
   (:func:`imprint_accuracy`). The test split is never read.
4. **Significance** (:func:`layer_significance`): by default the gain of a
   layer's proxy accuracy over the previous selected layer's (the network's
   input for the first), clipped at zero; or the accuracy itself, a softmax
   of the gains, or uniform. Scaled so that the largest is 1, and raised to
   at least ``floor`` so that no layer is left with rank 1 for want of a
   gain.
5. **Ranks** (:func:`allocate_ranks`): bond ``k`` of layer ``l`` gets
   ``significance_l x alpha x (the bond's largest rank)``, rounded and made
   a valid rank by the format (:meth:`~tuckerlab.formats.Format.scale_rank`);
   the one factor ``alpha`` is bisected until the whole model's parameters
   or MACs meet the budget, within 1 % below it. What the rounding leaves of
   the budget is then spent one bond at a time, on the bond of the most
   significant layer per unit of cost.

The proxy accuracies are cached on the selector, keyed by the model, the
state of its weights, the data and the settings that change them: a new
budget (:meth:`LWIQRanks.with_budget`) re-runs only step 5.

:class:`ProxySearchRanks` is the kind of method LWIQ is compared with, a
proxy-based automatic TT rank search: an evolutionary search over per-layer
rank shares, each candidate brought to the same budget by step 5 and scored
by the accuracy of the decomposed network (no fine-tuning) on the same
held-out split. Both are rank selectors (``lwiq:params:0.3``,
``proxy_search:params:0.3:20``); :func:`tuckerlab.pipeline.compress_and_finetune`
times their search the same way (``rank_selection["search_seconds"]``).

References
----------
M. Liu, P. Sun, S. Ren, S. Luo, Y. Yu and Y. Bai, "An Adaptive
Tensor-Train Decomposition Approach for Efficient Deep Neural Network
Compression", arXiv:2408.01534, 2024.

H. Qi, M. Brown and D. G. Lowe, "Low-Shot Learning with Imprinted
Weights", CVPR 2018.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tuckerlab.formats import get_format

from .selectors import RankSelector, format_for, register_selector

__all__ = [
    "LWIQRanks", "ProxySearchRanks", "LWIQScores", "Allocation",
    "pool_features", "imprint_weights", "imprint_accuracy", "layer_significance", "allocate_ranks",
    "training_splits", "POOLINGS", "SIGNIFICANCES",
]

#: How a layer's output is pooled to a fixed length (:func:`pool_features`).
POOLINGS = ("avg", "channel")
#: How significance is read off the proxy accuracies (:func:`layer_significance`).
SIGNIFICANCES = ("gain", "accuracy", "softmax", "uniform")

_TOL = 0.01  # the achieved ratio lies in [(1 - _TOL) target, target]


# ------------------------------------------------------------- checks
def _positive_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _choice(value, name: str, accepted) -> str:
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not accepted; accepted: {', '.join(accepted)}")
    return value


def _parse_budget(budget):
    """``budget`` read by the one budget parser of the package (``params:0.3``, ``macs:3x``, ``params:150000``)."""
    from tuckerlab.rank.network_budget import parse_budget

    return parse_budget(budget, "budget")


# ----------------------------------------------------------- features
def pool_features(x: torch.Tensor, pool_size: int, pooling: str = "avg") -> torch.Tensor:
    """A batch of layer outputs as at most ``pool_size`` values per image (not normalised).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` (a convolution's output) or ``(N, ...)`` (anything
        else, flattened).
    pool_size : int
        The most values kept per image.
    pooling : {"avg", "channel"}
        ``"avg"``: adaptive average pooling of each channel to a ``g x g``
        grid, ``g = floor(sqrt(pool_size / C))``, then flattened (``C g^2``
        values); ``"channel"``: the spatial mean of each channel (``C``
        values). In both, when ``C > pool_size`` (or for non-image outputs
        longer than ``pool_size``), adjacent values are averaged down to
        ``pool_size`` (adaptive average pooling in 1-D).

    Returns
    -------
    torch.Tensor
        ``(N, D)`` float32 on ``x``'s device, ``D <= pool_size``.
    """
    pool_size = _positive_int(pool_size, "pool_size")
    _choice(pooling, "pooling", POOLINGS)
    x = x.detach().float()
    if x.dim() == 4:
        g = math.isqrt(pool_size // x.shape[1]) if pooling == "avg" else 0
        x = F.adaptive_avg_pool2d(x, g) if g >= 1 else x.mean(dim=(2, 3))
    x = x.flatten(1)
    if x.shape[1] > pool_size:
        x = F.adaptive_avg_pool1d(x.unsqueeze(1), pool_size).squeeze(1)
    return x


def imprint_weights(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Imprinted class weights: the normalised mean of each class's L2-normalised features (Qi et al., 2018).

    Parameters
    ----------
    features : torch.Tensor
        ``(N, D)``.
    labels : torch.Tensor
        ``(N,)`` integers in ``[0, num_classes)``.
    num_classes : int

    Returns
    -------
    torch.Tensor
        ``(num_classes, D)``, each row of unit norm (a class without
        images has a zero row, which no image is nearest to unless all are).
    """
    num_classes = _positive_int(num_classes, "num_classes")
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be (N, D) and labels (N,), got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    f = F.normalize(features.float(), dim=1)
    sums = torch.zeros(num_classes, f.shape[1], device=f.device).index_add_(0, labels.to(f.device).long(), f)
    return F.normalize(sums, dim=1)


def imprint_accuracy(calibration: torch.Tensor, calibration_labels: torch.Tensor, held_out: torch.Tensor,
                     held_out_labels: torch.Tensor, num_classes: int) -> float:
    """Top-1 accuracy on ``held_out`` of the classifier imprinted on ``calibration`` (nearest imprint by cosine).

    Parameters
    ----------
    calibration, held_out : torch.Tensor
        ``(N, D)`` and ``(M, D)`` features of one layer.
    calibration_labels, held_out_labels : torch.Tensor
        ``(N,)`` and ``(M,)``.
    num_classes : int

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    w = imprint_weights(calibration, calibration_labels, num_classes)
    pred = (F.normalize(held_out.float(), dim=1) @ w.T).argmax(dim=1)
    return float((pred == held_out_labels.to(pred.device)).float().mean())


def layer_significance(accuracies: Mapping[str, float], input_accuracy: float = 0.0, *,
                       significance: str = "gain", floor: float = 0.1, temperature: float = 0.05) -> dict[str, float]:
    """Each layer's significance from the proxy accuracies, in ``[floor, 1]``.

    Parameters
    ----------
    accuracies : mapping of str to float
        Proxy accuracy of each layer, in the order the layers run.
    input_accuracy : float
        Proxy accuracy of the network's input (the "previous layer" of the
        first one).
    significance : {"gain", "accuracy", "softmax", "uniform"}
        ``"gain"``: ``max(a_l - a_{l-1}, 0)``; ``"accuracy"``: ``a_l``;
        ``"softmax"``: ``exp((a_l - a_{l-1}) / temperature)``; ``"uniform"``:
        1 for every layer.
    floor : float
        Smallest significance, in ``(0, 1]``, after dividing by the largest.
        When every raw value is 0 (no layer gains), all layers get 1.
    temperature : float
        Of ``"softmax"``, > 0.

    Returns
    -------
    dict of str to float
    """
    _choice(significance, "significance", SIGNIFICANCES)
    floor = _unit(floor, "floor")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    names = list(accuracies)
    acc = np.array([float(accuracies[n]) for n in names])
    gains = np.diff(np.concatenate([[float(input_accuracy)], acc]))
    raw = {"gain": np.clip(gains, 0.0, None), "accuracy": acc,
           "softmax": np.exp((gains - gains.max(initial=0.0)) / temperature),
           "uniform": np.ones(len(names))}[significance]
    top = raw.max(initial=0.0)
    scaled = raw / top if top > 0 else np.ones(len(names))
    return {n: float(max(s, floor)) for n, s in zip(names, scaled)}


def _unit(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not (0.0 < v <= 1.0):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return v


def training_splits(n_train: int, calibration: int, held_out: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint calibration and held-out indices into the training split, drawn with ``seed``.

    The held-out images come first in one random permutation, so the same
    ``held_out`` and ``seed`` give the same held-out split whatever
    ``calibration`` is (:class:`LWIQRanks` and :class:`ProxySearchRanks`
    score on the same images). When the training split is smaller than
    ``calibration + held_out``, both shrink in proportion.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Calibration and held-out indices (int64, CPU).
    """
    n_train = _positive_int(n_train, "n_train", 2)
    calibration = _positive_int(calibration, "calibration")
    held_out = _positive_int(held_out, "held_out")
    if calibration + held_out > n_train:
        held = max(1, min(n_train - 1, round(n_train * held_out / (calibration + held_out))))
        calibration, held_out = n_train - held, held
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(int(seed)))
    return perm[held_out:held_out + calibration], perm[:held_out]


def _device_of(model: nn.Module, context) -> torch.device:
    if context is not None and context.device is not None:
        return torch.device(context.device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _images(data, indices: torch.Tensor, device, batch_size: int):
    """Normalised float32 batches of training images at ``indices`` on ``device``, with their labels."""
    from tuckerlab.data import normalize

    mean = torch.as_tensor(data.mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(data.std, dtype=torch.float32, device=device)
    for start in range(0, len(indices), batch_size):
        x, y = data.take("train", indices[start:start + batch_size])
        yield normalize(x.to(device), mean, std), y.to(device=device, dtype=torch.long)


# ------------------------------------------------------------ allocation
@dataclass
class Allocation:
    """Ranks of every layer at one budget (:func:`allocate_ranks`).

    Attributes
    ----------
    ranks : dict of str to rank
    factor : float
        The global factor ``alpha``.
    achieved : float
        Whole-model compressed/original ratio of ``metric``.
    target : float
    metric : {"params", "macs"}
    filled : int
        Bonds raised by one after the bisection to use what rounding left.
    """

    ranks: dict
    factor: float
    achieved: float
    target: float
    metric: str
    filled: int = 0


def _bumps(rank):
    """Each rank with one entry raised by one (flat ranks only)."""
    if isinstance(rank, int):
        return [rank + 1]
    if isinstance(rank, tuple) and all(isinstance(r, int) for r in rank):
        return [tuple(r + (i == k) for i, r in enumerate(rank)) for k in range(len(rank))]
    return []


def allocate_ranks(layers, format, significance: Mapping[str, float], metric: str, target: float, *,
                   min_rank: int = 1, fill: bool = True) -> Allocation:
    """Ranks ``significance x alpha x largest rank`` per bond, ``alpha`` bisected to meet a budget.

    Parameters
    ----------
    layers : LayerSelection
        From :func:`tuckerlab.layer_selection.select_layers` (its totals are
        the whole model's).
    format : str or Format
        Of the convolutions; linear layers use ``"lowrank"``.
    significance : mapping of str to float
        Positive weight of each layer to rank (layers not named stay dense).
    metric : {"params", "macs"}
    target : float
        Whole-model compressed/original ratio, > 0.
    min_rank : int
        Smallest rank of any bond.
    fill : bool
        Spend what the rounding leaves of the budget one bond at a time
        (largest significance per unit of cost first) until the ratio is
        within 1 % below the target.

    Returns
    -------
    Allocation
        ``achieved <= target``, within 1 % of it unless every layer is at
        its full rank or the rank grid allows no closer choice.

    Raises
    ------
    ValueError
        For an unknown metric, a target <= 0, a non-positive significance,
        or a target below what the smallest ranks give (the message says
        how low it can go).
    """
    fmt = get_format(format)
    _choice(metric, "metric", ("params", "macs"))
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"target must be a ratio > 0, got {target!r}")
    min_rank = _positive_int(min_rank, "min_rank")
    bad = {n: s for n, s in significance.items() if not (s > 0 and math.isfinite(s))}
    if bad:
        raise ValueError(f"significance must be positive and finite, got {bad}")
    infos = [layers[n] for n in significance]
    index = 0 if metric == "params" else 1
    total = float(layers.total_params if metric == "params" else layers.total_macs)
    fixed = total - sum(info.dense_cost()[index] for info in infos)
    fmts = {info.name: format_for(info, fmt) for info in infos}
    full = {info.name: fmts[info.name].full_rank(info.weight_shape) for info in infos}
    costs: dict = {}

    def cost(info, rank) -> float:
        key = (info.name, rank)
        if key not in costs:
            costs[key] = float(info.cost(fmts[info.name], rank)[index])
        return costs[key]

    def at(alpha: float) -> dict:
        return {info.name: fmts[info.name].scale_rank(info.weight_shape, full[info.name],
                                                      alpha * significance[info.name], min_rank)
                for info in infos}

    def ratio(ranks: dict) -> float:
        return (fixed + sum(cost(info, ranks[info.name]) for info in infos)) / total

    smallest = ratio(at(0.0))
    if smallest > target * (1 + 1e-12):
        raise ValueError(f"{metric} target {target:.4g} is unreachable: the smallest ranks give a ratio of "
                         f"{smallest:.4f}; ask for at least that")
    hi = 1.0 / min(significance.values())  # every layer at its full rank
    if ratio(at(hi)) <= target:
        ranks = at(hi)
        return Allocation(ranks, hi, ratio(ranks), float(target), metric)
    lo = 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(at(mid)) <= target else (lo, mid)
    ranks = at(lo)
    achieved, filled = ratio(ranks), 0
    while fill and achieved < target * (1 - _TOL):
        best = None
        for info in infos:
            f, cur = fmts[info.name], ranks[info.name]
            for bumped in _bumps(cur):
                try:
                    new = f.scale_rank(info.weight_shape, bumped, 1.0, min_rank)
                except (ValueError, TypeError):
                    continue
                extra = cost(info, new) - cost(info, cur)
                if new == cur or extra <= 0 or achieved + extra / total > target:
                    continue
                gain = significance[info.name] / extra
                if best is None or gain > best[0]:
                    best = (gain, info.name, new, extra)
        if best is None:
            break
        _, name, new, extra = best
        ranks[name] = new
        achieved += extra / total
        filled += 1
    return Allocation(ranks, lo, ratio(ranks), float(target), metric, filled)


def _target(budget, layers) -> tuple[str, float]:
    """``(metric, compressed/original ratio)`` of a parsed budget for the selected model."""
    total = layers.total_params if budget.metric == "params" else layers.total_macs
    return budget.metric, budget.allowed(total) / float(total)


# ----------------------------------------------------------------- LWIQ
@dataclass
class LWIQScores:
    """What one forward pass measured: the proxy accuracy of every selected layer.

    Attributes
    ----------
    accuracy : dict of str to float
        Held-out proxy accuracy of each layer, in the order the layers run.
    input_accuracy : float
        The same for the network's input, pooled alike.
    calibration_images, held_out_images : int
    feature_sizes : dict of str to int
        Pooled length of each layer's features.
    seconds : float
        Wall time of the forward pass and the imprinting.
    """

    accuracy: dict
    input_accuracy: float
    calibration_images: int
    held_out_images: int
    feature_sizes: dict = field(default_factory=dict)
    seconds: float = 0.0


def _state_key(model: nn.Module) -> tuple:
    """Identity of the model's weights: each tensor's storage and in-place version (cheap, no hashing)."""
    return tuple((k, v.data_ptr(), v._version) for k, v in model.state_dict(keep_vars=True).items())


class LWIQRanks(RankSelector):
    """Layer-wise imprinting quantitation: ranks by proxy-classifier significance, scaled to a budget.

    Scores every selected layer of a trained network by the held-out
    accuracy of a classifier imprinted on its pooled features, turns the
    accuracies into significances and gives bond ``k`` of layer ``l``
    ``significance_l x alpha x (largest rank of the bond)``, with the one
    factor ``alpha`` bisected to meet the budget (see the module docstring
    for each step). Spec ``lwiq:METRIC:T[:POOL]``, e.g. ``lwiq:params:0.3``.

    Parameters
    ----------
    budget : str or Budget
        ``"params:T"`` or ``"macs:T"`` (``T`` in ``(0, 1]``, a fraction of
        the dense model), ``"params:3.2x"`` (a reduction factor) or
        ``"params:N"`` (a count), as :func:`tuckerlab.rank.network_budget.parse_budget` reads it.
    pool_size : int
        The most values kept of each layer's output per image.
    pooling : {"avg", "channel"}
        See :func:`pool_features`.
    significance : {"gain", "accuracy", "softmax", "uniform"}
        See :func:`layer_significance`.
    floor : float
        Smallest significance, in ``(0, 1]``.
    calibration, held_out : int
        Training images to imprint on and to measure the proxy accuracy on
        (disjoint, :func:`training_splits`; fewer when the training split is
        smaller).
    batch_size : int
        Images per forward pass.
    min_rank : int
        Smallest rank of any bond.
    seed : int
        Of the splits.

    Attributes
    ----------
    scores : LWIQScores or None
        Of the last :meth:`select`.
    allocation : Allocation or None
        Of the last :meth:`select`.
    forward_passes : int
        How many times the scores were measured (not read from the cache).

    References
    ----------
    M. Liu, P. Sun, S. Ren, S. Luo, Y. Yu and Y. Bai, "An Adaptive
    Tensor-Train Decomposition Approach for Efficient Deep Neural Network
    Compression", arXiv:2408.01534, 2024.

    H. Qi, M. Brown and D. G. Lowe, "Low-Shot Learning with Imprinted
    Weights", CVPR 2018.

    Examples
    --------
    >>> sel = LWIQRanks("params:0.3", pool_size=64)   # doctest: +SKIP
    >>> ranks = sel.select(model, get_format("tt"), layers, SelectionContext(data=data))  # doctest: +SKIP
    >>> ranks_half = sel.with_budget("params:0.5").select(model, ...)  # no new forward pass  # doctest: +SKIP
    """

    name = "lwiq"
    needs_data = True

    def __init__(self, budget="params:0.3", *, pool_size: int = 100, pooling: str = "avg",
                 significance: str = "gain", floor: float = 0.1, calibration: int = 1000, held_out: int = 1000,
                 batch_size: int = 256, min_rank: int = 1, seed: int = 0):
        self.budget = _parse_budget(budget)
        self.pool_size = _positive_int(pool_size, "pool_size")
        self.pooling = _choice(pooling, "pooling", POOLINGS)
        self.significance = _choice(significance, "significance", SIGNIFICANCES)
        self.floor = _unit(floor, "floor")
        self.calibration = _positive_int(calibration, "calibration")
        self.held_out = _positive_int(held_out, "held_out")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.min_rank = _positive_int(min_rank, "min_rank")
        self.seed = int(seed)
        self._cache: dict = {}
        self.forward_passes = 0
        self.scores: LWIQScores | None = None
        self.allocation: Allocation | None = None
        self.seconds: dict = {}

    def with_budget(self, budget) -> LWIQRanks:
        """The same selector at another budget, sharing the cached scores (only the bisection runs again)."""
        other = copy.copy(self)
        other.budget = _parse_budget(budget)
        other.spec, other.allocation = None, None
        return other

    def config(self) -> dict:
        return {"selector": self.name, "budget": self.budget.spec, "pool_size": self.pool_size,
                "pooling": self.pooling, "significance": self.significance, "floor": self.floor,
                "calibration": self.calibration, "held_out": self.held_out, "min_rank": self.min_rank,
                "seed": self.seed}

    def info(self) -> dict:
        out = super().info()
        if self.scores is not None:
            out.update(proxy_accuracy=dict(self.scores.accuracy), input_accuracy=self.scores.input_accuracy,
                       calibration_images=self.scores.calibration_images,
                       held_out_images=self.scores.held_out_images)
        if self.allocation is not None:
            a = self.allocation
            out.update(layer_significance=self._significance(), factor=a.factor, achieved=a.achieved,
                       target=a.target, metric=a.metric, filled=a.filled)
        out.update({f"{k}_seconds": v for k, v in self.seconds.items()})
        return out

    # ------------------------------------------------------------ scores
    def measure(self, model: nn.Module, layers, data, device=None) -> LWIQScores:
        """The proxy accuracy of every selected layer (one batched forward pass; cached)."""
        device = torch.device(device) if device is not None else _device_of(model, None)
        names = tuple(info.name for info in layers)
        key = (id(model), _state_key(model), id(data), data.num_images("train"), names, self.pool_size,
               self.pooling, self.calibration, self.held_out, self.seed, str(device))
        if key in self._cache:
            return self._cache[key]
        start = time.perf_counter()
        calib, held = training_splits(data.num_images("train"), self.calibration, self.held_out, self.seed)
        order = torch.cat([calib, held])
        feats: dict[str, list] = {n: [] for n in names}

        def hook(name):
            def fn(module, args, out):
                if len(feats[name]) < batches[0]:  # a layer called twice per pass keeps its first call
                    feats[name].append(pool_features(out, self.pool_size, self.pooling))
            return fn

        batches = [0]
        inputs, labels = [], []
        handles = [info.module.register_forward_hook(hook(info.name)) for info in layers]
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                for x, y in _images(data, order, device, self.batch_size):
                    batches[0] += 1
                    model(x)
                    inputs.append(pool_features(x, self.pool_size, self.pooling))
                    labels.append(y)
        finally:
            for h in handles:
                h.remove()
            model.train(was)
        y = torch.cat(labels)
        nc, n_cal = int(data.num_classes), len(calib)

        def acc(f):
            f = torch.cat(f)
            return imprint_accuracy(f[:n_cal], y[:n_cal], f[n_cal:], y[n_cal:], nc)

        missing = [n for n in names if not feats[n]]
        if missing:
            raise ValueError(f"lwiq: layers {missing} did not run in the forward pass; skip them")
        scores = LWIQScores(
            accuracy={n: acc(feats[n]) for n in names}, input_accuracy=acc(inputs),
            calibration_images=n_cal, held_out_images=len(held),
            feature_sizes={n: int(feats[n][0].shape[1]) for n in names}, seconds=time.perf_counter() - start)
        self._cache.clear()  # one model at a time: the last one's scores (shared with with_budget's copies)
        self._cache[key] = scores
        self.forward_passes += 1
        return scores

    def _significance(self) -> dict:
        return layer_significance(self.scores.accuracy, self.scores.input_accuracy,
                                  significance=self.significance, floor=self.floor)

    def select(self, model, format, layers, context):
        data = context.require_data(self.name)
        start = time.perf_counter()
        self.scores = self.measure(model, layers, data, _device_of(model, context))
        scored = time.perf_counter()
        metric, target = _target(self.budget, layers)
        self.allocation = allocate_ranks(layers, format, self._significance(), metric, target,
                                         min_rank=self.min_rank)
        self.seconds = {"scores": scored - start, "allocation": time.perf_counter() - scored}
        return dict(self.allocation.ranks)


# ------------------------------------------------------ the proxy search
class ProxySearchRanks(RankSelector):
    """A proxy-based automatic rank search: per-layer rank shares evolved, each scored by a decomposed network.

    A candidate is a share ``s_l`` in ``[floor, 1]`` per layer; its ranks
    are those of :func:`allocate_ranks` with ``s`` as the significance, so
    every candidate meets the same budget. Its score (the proxy) is the
    top-1 accuracy, on the held-out split of the training set
    (:func:`training_splits`, the same images as :class:`LWIQRanks`), of the
    network whose selected weights are replaced by their decompositions at
    those ranks, without fine-tuning. The search is a (1+1) evolution
    strategy: the first candidate is uniform, each next one multiplies the
    best shares so far by ``exp(sigma z)``, ``z`` standard normal, and is
    kept when it scores higher. Decompositions are cached per layer and
    rank. Spec ``proxy_search:METRIC:T[:N]`` (``N`` trials).

    Parameters
    ----------
    budget : str or Budget
        As for :class:`LWIQRanks`.
    n_trials : int
        Candidates scored.
    sigma : float
        Mutation scale (log-normal), > 0.
    floor : float
        Smallest share, in ``(0, 1]``.
    held_out : int
        Training images the candidates are scored on.
    batch_size, min_rank, seed
        As for :class:`LWIQRanks` (``seed`` also drives the mutations).

    Attributes
    ----------
    history : list of float
        Score of every candidate, in order.
    best_score : float or None
    allocation : Allocation or None

    Notes
    -----
    Liu et al. (2024) compare LWIQ with "the state-of-the-art proxy-based
    automatic tensor rank selection method" without naming it in the
    abstract; this search is a stand-in of that kind, not that method.

    References
    ----------
    M. Liu, P. Sun, S. Ren, S. Luo, Y. Yu and Y. Bai, "An Adaptive
    Tensor-Train Decomposition Approach for Efficient Deep Neural Network
    Compression", arXiv:2408.01534, 2024.
    """

    name = "proxy_search"
    needs_data = True

    def __init__(self, budget="params:0.3", *, n_trials: int = 20, sigma: float = 0.5, floor: float = 0.1,
                 held_out: int = 1000, batch_size: int = 256, min_rank: int = 1, seed: int = 0):
        self.budget = _parse_budget(budget)
        self.n_trials = _positive_int(n_trials, "n_trials")
        if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a number > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.floor = _unit(floor, "floor")
        self.held_out = _positive_int(held_out, "held_out")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.min_rank = _positive_int(min_rank, "min_rank")
        self.seed = int(seed)
        self.history: list[float] = []
        self.best_score: float | None = None
        self.allocation: Allocation | None = None

    def config(self) -> dict:
        return {"selector": self.name, "budget": self.budget.spec, "n_trials": self.n_trials, "sigma": self.sigma,
                "floor": self.floor, "held_out": self.held_out, "min_rank": self.min_rank, "seed": self.seed}

    def info(self) -> dict:
        out = super().info()
        out.update(history=list(self.history), best_score=self.best_score)
        if self.allocation is not None:
            out.update(achieved=self.allocation.achieved, target=self.allocation.target,
                       metric=self.allocation.metric)
        return out

    def select(self, model, format, layers, context):
        from tuckerlab.projection import project

        data = context.require_data(self.name)
        device = _device_of(model, context)
        metric, target = _target(self.budget, layers)
        _, held = training_splits(data.num_images("train"), 1, self.held_out, self.seed)
        batches = list(_images(data, held, device, self.batch_size))
        clone = copy.deepcopy(model).eval()
        modules = dict(clone.named_modules())
        infos = list(layers)
        fmt = get_format(format)
        projected: dict = {}

        def score(ranks) -> float:
            with torch.no_grad():
                for info in infos:
                    key = (info.name, ranks[info.name])
                    if key not in projected:
                        projected[key] = project(info.module.weight.detach(), format_for(info, fmt).name,
                                                 ranks[info.name])
                    modules[info.name].weight.copy_(projected[key])
                hits = sum(int((clone(x).argmax(1) == y).sum()) for x, y in batches)
            return hits / len(held)

        rng = np.random.default_rng(self.seed)
        shares = np.ones(len(infos))
        best = None
        self.history = []
        for trial in range(self.n_trials):
            cand = shares if trial == 0 else np.clip(best[1] * np.exp(self.sigma * rng.standard_normal(len(infos))),
                                                     self.floor, 1.0)
            alloc = allocate_ranks(layers, fmt, {i.name: float(s) for i, s in zip(infos, cand)}, metric, target,
                                   min_rank=self.min_rank)
            s = score(alloc.ranks)
            self.history.append(s)
            if best is None or s > best[0]:
                best = (s, cand, alloc)
        self.best_score, _, self.allocation = best
        return dict(self.allocation.ranks)


# ------------------------------------------------------------- registry
def _budget_spec(arg, who: str) -> tuple[str, str | None]:
    """``METRIC:T[:EXTRA]`` -> (``"METRIC:T"``, EXTRA or None)."""
    if not arg:
        raise ValueError(f"{who} needs a budget, e.g. {who}:params:0.3")
    parts = arg.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{who}:{arg} is not {who}:METRIC:T[:N]")
    return ":".join(parts[:2]), (parts[2] if len(parts) == 3 else None)


def _int_arg(text, name):
    if text is None:
        return None
    if not text.isdigit():
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return int(text)


def _lwiq(arg):
    budget, pool = _budget_spec(arg, "lwiq")
    pool = _int_arg(pool, "pool_size")
    return LWIQRanks(budget) if pool is None else LWIQRanks(budget, pool_size=pool)


def _proxy_search(arg):
    budget, n = _budget_spec(arg, "proxy_search")
    n = _int_arg(n, "n_trials")
    return ProxySearchRanks(budget) if n is None else ProxySearchRanks(budget, n_trials=n)


register_selector("lwiq", _lwiq, help="lwiq:METRIC:T[:POOL] (LWIQ: imprinting significance x one factor)")
register_selector("proxy_search", _proxy_search,
                  help="proxy_search:METRIC:T[:N] (N-trial evolutionary search scored by the decomposed accuracy)")

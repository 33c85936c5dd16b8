"""Ranks of every layer for a whole-model budget (Lagrangian rank selection).

Idelbayev & Carreira-Perpinan (2020) choose the rank of each layer ``l`` as

.. math:: r_l(\\lambda) = \\arg\\min_r \\; \\mathrm{err}_l(r) + \\lambda\\, \\mathrm{cost}_l(r)

with one multiplier ``lambda`` shared by all layers, and tune ``lambda`` so
that the compressed model meets a target. :func:`solve_budget` bisects
``lambda`` (on a log scale) until the whole model's compressed/original
ratio of parameters or MACs is at most the target and within 1 % of it; the
layers' own ``cost()`` class methods give ``cost_l``, and the singular values
of the weight's unfoldings give ``err_l`` without decomposing anything.

Error model (``error="truncation"``): with ``E(A, r) = sum_{h > r} s_h(A)^2``
the squared singular values an SVD truncation of matrix ``A`` discards,

- Tucker-2 ``(r_out, r_in)``: ``E(W_(0), r_out) + E(W_(1), r_in)``, the
  bound on the squared error of the truncated HOSVD (De Lathauwer et al.,
  2000) from the mode-0 and mode-1 unfoldings;
- TT ``(r1, r2, r3)``: ``sum_k E(W_<k>, r_k)`` over the three TT unfoldings
  of the weight as ``(S, Kh, Kw, T)`` (``(S, Kh Kw T)``, ``(S Kh, Kw T)``,
  ``(S Kh Kw, T)``), the bound on the squared error of TT-SVD (Oseledets,
  2011, Theorem 2.2);
- TT-Tucker: the Tucker-2 terms plus ``E(W_<2>, r2)``; the search keeps
  ``r1 = r_in`` and ``r3 = r_out`` (the TT bonds next to the Tucker factors
  do not truncate) so that three ranks ``(r_out, r_in, r2)`` are searched;
  the sum is again an upper bound of the squared error;
- CP ``R``: no closed form exists. A tensor of multilinear rank
  ``(r_out, r_in, Kh, Kw)`` has CP rank at most the product ``p`` of its three
  smallest sizes, so CP rank ``p`` reproduces the Tucker-2 truncation
  ``(r_out, r_in)`` exactly: the error at ``R`` is taken as the smallest
  Tucker-2 bound over the ``(r_out, r_in)`` with ``p <= R``, interpolated
  linearly in ``R`` between the values of ``p`` (a smooth upper-bound proxy;
  the true CP error of an alternating least squares fit may be lower);
- low rank (``nn.Linear``, ``(out, in)`` matrix): ``E(W, r)``, exact
  (Eckart-Young).

``error="relative"`` divides each layer's error by ``||W_l||_F^2`` so that
layers of different scales weigh the same.

Each layer may also stay dense (error 0, its original cost) when that is the
better choice for the final ``lambda`` (``keep_dense=True``, as in the paper,
where the rank may equal the full rank).

References
----------
Y. Idelbayev and M. A. Carreira-Perpinan, "Low-rank compression of neural
nets: learning the rank of each layer", CVPR 2020.

L. De Lathauwer, B. De Moor and J. Vandewalle, "A multilinear singular value
decomposition", SIAM J. Matrix Anal. Appl. 21(4):1253-1278, 2000.

I. V. Oseledets, "Tensor-train decomposition", SIAM J. Sci. Comput.
33(5):2295-2317, 2011.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from tuckerlab.formats._spectra import dim_candidates as _dim_candidates

__all__ = ["BudgetResult", "solve_budget"]

# Relative tolerance on the whole-model ratio (achieved in [(1 - tol) target, target]).
_TOL = 0.01


@dataclass
class BudgetResult:
    """Outcome of :func:`solve_budget`.

    Attributes
    ----------
    ranks : dict of str to rank
        Rank of every layer chosen for compression, in the format of the
        method (layers that stay dense are absent). Usable as the ``rank``
        argument of :func:`tuckerlab.surgery.compress_model`.
    achieved : float
        Whole-model compressed/original ratio of ``metric`` with these ranks.
    target : float
        The requested ratio.
    lam : float
        The multiplier ``lambda`` of the Lagrangian choice (errors normalised
        by the sum of the layers' largest errors, costs by the model total),
        before the greedy fill described in :func:`solve_budget`.
    metric : str
        ``"params"`` or ``"macs"``.
    smallest_ratio : float
        The smallest whole-model ratio any choice of ranks reaches.
    report : list of dict
        One row per candidate layer: ``name``, ``shape``, ``rank`` (``None``
        when kept dense), ``params``, ``macs``, ``original_params``,
        ``original_macs``, ``error`` (the error model above, for the chosen
        rank) and ``relative_error`` (``error / ||W||^2``).
    totals : dict
        ``original`` and ``compressed`` whole-model totals of ``metric``.
    """

    ranks: dict
    achieved: float
    target: float
    lam: float
    metric: str
    smallest_ratio: float
    report: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)

    def summary(self) -> str:
        """A plain-text table of the chosen ranks."""
        lines = [f"target {self.target:.4f}  achieved {self.achieved:.4f}  ({self.metric})"]
        for row in self.report:
            lines.append(
                f"{row['name']:<28} {str(row['rank']):<26} "
                f"{row[self.metric]:>10} / {row['original_' + self.metric]:<10} "
                f"rel.err {row['relative_error']:.3f}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------- layers
@dataclass
class _Layer:
    """A selected layer with its candidate ranks, their errors and costs."""

    info: Any
    fmt: Any
    orig_params: int
    orig_macs: int
    norm2: float
    ranks: list = field(default_factory=list)
    err: np.ndarray | None = None
    params: np.ndarray | None = None
    macs: np.ndarray | None = None
    ms: np.ndarray | None = None  # latency of each candidate (metric "latency")
    dense_ms: float | None = None

    @property
    def name(self) -> str:
        return self.info.name


def _weight(info) -> torch.Tensor:
    w = info.module.weight.detach()
    if not w.is_floating_point() or w.dtype in (torch.float16, torch.bfloat16):
        w = w.float()
    return w


def _cost_arrays(layer: _Layer, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Parameters and MACs (all calls) of every candidate rank, from the format's cost."""
    info = layer.info
    key = (layer.fmt.name, info.weight_shape, info.out_hw, info.in_hw, info.bias)
    table = cache.setdefault(key, {})
    params = np.empty(len(layer.ranks))
    macs = np.empty(len(layer.ranks))
    for i, r in enumerate(layer.ranks):
        if r not in table:
            table[r] = layer.fmt.cost(info.weight_shape, r, info.out_hw, info.in_hw, bias=info.bias)
        params[i], macs[i] = table[r]
    return params, macs * info.calls


# --------------------------------------------------------------------- solver
def _choose(layers, costs, errs, dense_cost, lam, keep_dense):
    """Per layer argmin of err + lam * cost; index -1 means dense."""
    choice = []
    for c, e, dc in zip(costs, errs, dense_cost):
        obj = e + lam * c
        i = int(np.argmin(obj))
        if keep_dense and lam * dc <= obj[i]:
            i = -1
        choice.append(i)
    return choice


def _total(choice, costs, dense_cost) -> float:
    return float(sum(dc if i < 0 else c[i] for i, c, dc in zip(choice, costs, dense_cost)))


def _greedy_fill(choice, costs, errs, dense_cost, slack, keep_dense):
    """Spend what is left of the budget on the best error decrease per unit cost."""
    choice = list(choice)
    while True:
        best = None
        for l, (c, e, dc) in enumerate(zip(costs, errs, dense_cost)):
            i = choice[l]
            cur_c = dc if i < 0 else c[i]
            cur_e = 0.0 if i < 0 else e[i]
            if i < 0:
                continue
            dcst = c - cur_c
            derr = cur_e - e
            ok = (derr > 0) & (dcst <= slack)
            gain = np.where(ok, derr / np.maximum(dcst, 1e-300), -np.inf)
            j = int(np.argmax(gain))
            if np.isfinite(gain[j]) and (best is None or gain[j] > best[0]):
                best = (gain[j], l, j, dcst[j])
            if keep_dense and cur_e > 0 and dc - cur_c <= slack:
                g = cur_e / max(dc - cur_c, 1e-300)
                if best is None or g > best[0]:
                    best = (g, l, -1, dc - cur_c)
        if best is None:
            return choice
        _, l, j, spent = best
        choice[l] = j
        slack -= spent


def solve_budget(
    model: nn.Module,
    method: str = "tucker2",
    target: float = 0.5,
    metric: str = "params",
    input_size: Sequence[int] = (3, 32, 32),
    multiple_of: int | None = None,
    skip: Iterable[str] | Callable[[str, nn.Module], bool] | str | None = None,
    error: str = "truncation",
    include_linear: bool = False,
    skip_first: bool = True,
    skip_pointwise: bool = True,
    keep_dense: bool = True,
    max_candidates: int | None = None,
    layers=None,
    latency=None,
) -> BudgetResult:
    """Per-layer ranks meeting a whole-model parameter or MAC budget.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        The network (its weights define the errors). Not modified.
    method : str or Format
        ``"tucker2"``, ``"tt"``, ``"tt_tucker"``, ``"cp"`` or ``"lowrank"``
        (``nn.Linear`` only); selected ``nn.Linear`` layers use ``"lowrank"``.
    target : float
        Wanted compressed/original ratio of the whole model's ``metric``, in
        ``(0, 1]``. Layers that are not compressed (skipped, BatchNorm,
        linear unless ``include_linear``) count at their full size.
    metric : {"params", "macs", "latency"}
        What the budget counts. Totals come from
        :func:`tuckerlab.metrics.count_params` / :func:`~tuckerlab.metrics.count_macs`;
        ``"latency"`` is the measured latency on this device at one batch
        size (``latency``): each layer costs the faster of its factorized
        and its dense execution (what :func:`tuckerlab.latency.choose_execution`
        keeps after compression), interpolated from measurements of its
        shape, and the rest of the model its measured share.
    input_size : sequence of int
        One input without the batch dimension; sets the output sizes used for
        MACs.
    multiple_of : int, optional
        Only ranks that are multiples of this (e.g. 8 for tensor cores); a
        dimension smaller than it keeps its full size. Ranks never exceed the
        dimension.
    skip : iterable of str, str or callable, optional
        Layer names (``fnmatch`` patterns such as ``"layer1.*"``) or a
        predicate ``skip(name, module) -> bool`` for layers to leave dense.
    error : {"truncation", "relative"}
        ``err_l``: the squared truncation error bound of the module docstring,
        or the same divided by ``||W_l||^2``.
    include_linear : bool
        Also give ``nn.Linear`` layers a low rank (``LowRankLinear``).
    skip_first, skip_pointwise : bool
        Leave the first convolution to run and the 1x1 convolutions dense,
        the defaults of :func:`tuckerlab.surgery.compress_model`, so that
        ``compress_model(model, method, result.ranks)`` builds exactly the
        model this budget describes.
    keep_dense : bool
        Let a layer stay dense when that is the better choice.
    max_candidates : int, optional
        At most this many ranks tried per bond (evenly spread between the
        smallest and the largest allowed). Default 512 for
        Tucker-2, CP and low rank, 24 for TT and TT-Tucker (whose candidates
        are triples).
    latency : LatencyModel, optional
        With ``metric="latency"``: the device, batch size and cache of the
        measurements (:class:`tuckerlab.latency.LatencyModel`; default batch 1
        on the CPU). Linear layers are not priced by latency and stay dense.
    layers : LayerSelection, optional
        The layers to rank, from :func:`tuckerlab.layer_selection.select_layers`
        (then ``skip``, ``include_linear``, ``skip_first``, ``skip_pointwise``
        and ``input_size`` are those of the selection); by default they are
        selected here.

    Returns
    -------
    BudgetResult
        ``ranks`` (dict for ``compress_model``), ``achieved`` ratio (at most
        ``target`` and, whenever the rank grid allows it, within 1 % of it),
        ``lam``, ``smallest_ratio`` and a per-layer ``report``.

    Raises
    ------
    ValueError
        If ``target`` is not in ``(0, 1]``, if it is below the smallest ratio
        reachable (the message gives that ratio), or for an unknown
        ``metric``, ``error`` or ``method``.

    Notes
    -----
    ``lambda`` is bisected on a log scale over errors and costs normalised by
    their model-wide totals, until the ratio lies within 1 % below the
    target. The ratio is a step function of ``lambda`` and the Lagrangian
    choices skip some budgets, so what is left of the budget is then spent
    greedily on the rank increases with the largest error decrease per unit
    of cost (this never increases any layer's error).

    References
    ----------
    Y. Idelbayev and M. A. Carreira-Perpinan, "Low-rank compression of
    neural nets: learning the rank of each layer", CVPR 2020.

    Examples
    --------
    >>> from tuckerlab.models import get_model
    >>> from tuckerlab.rank import solve_budget
    >>> res = solve_budget(get_model("resnet20"), "tucker2", target=0.5)
    >>> abs(res.achieved - 0.5) <= 0.005
    True
    """
    from tuckerlab.layer_selection import select_layers

    from .rules import rank_format
    from .selectors import format_for

    fmt = rank_format(method)
    try:
        target_f = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"target must be a number in (0, 1], got {target!r}") from None
    if not (0.0 < target_f <= 1.0) or not math.isfinite(target_f):
        raise ValueError(f"target must be a compressed/original ratio in (0, 1], got {target!r}")
    if metric not in ("params", "macs", "latency"):
        raise ValueError(f"metric must be 'params', 'macs' or 'latency', got {metric!r}")
    if error not in ("truncation", "relative"):
        raise ValueError(f"error must be 'truncation' or 'relative', got {error!r}")
    if multiple_of is not None and (
        isinstance(multiple_of, bool) or int(multiple_of) != multiple_of or multiple_of < 1
    ):
        raise ValueError(f"multiple_of must be a positive integer or None, got {multiple_of!r}")
    if max_candidates is None:
        max_candidates = 24 if fmt.name in ("tt", "tt_tucker") else 512
    if isinstance(max_candidates, bool) or int(max_candidates) < 2:
        raise ValueError(f"max_candidates must be an integer >= 2, got {max_candidates!r}")
    multiple_of = int(multiple_of) if multiple_of else None
    if layers is None:
        layers = select_layers(model, skip=skip, include_linear=include_linear or fmt.kind == "linear",
                               skip_first=skip_first, skip_pointwise=skip_pointwise, input_size=tuple(input_size),
                               convs=fmt.kind != "linear")
    chosen = []
    for info in layers:
        if info.calls == 0 or (metric == "latency" and info.kind != "conv"):
            continue  # did not run (no cost to trade), or a linear layer under a latency budget
        orig_params, orig_macs = info.dense_cost()
        w = _weight(info)
        chosen.append(_Layer(info, format_for(info, fmt), orig_params, orig_macs, float(torch.sum(w.double() ** 2))))
    if not chosen:
        raise ValueError("no layer to compress: every nn.Conv2d / nn.Linear is skipped or unsupported")
    if metric == "latency":
        from tuckerlab.latency import LatencyModel

        latency = latency if latency is not None else LatencyModel(batch_size=1)
        total = float(latency.model_ms(model, layers.input_size))
    else:
        total = float(layers.total_params if metric == "params" else layers.total_macs)
    cache: dict = {}

    def cands(n):
        return _dim_candidates(int(n), multiple_of, int(max_candidates))

    for layer in chosen:
        layer.ranks, layer.err = layer.fmt.budget_candidates(_weight(layer.info), cands)
    layers = [layer for layer in chosen if layer.ranks]  # no valid rank: stays dense
    if not layers:
        raise ValueError(f"no layer has a valid {fmt.name!r} rank with multiple_of={multiple_of}")
    for layer in layers:
        if error == "relative":
            layer.err = layer.err / max(layer.norm2, 1e-300)
        layer.params, layer.macs = _cost_arrays(layer, cache)
        if metric == "latency":
            info = layer.info
            layer.dense_ms = latency.dense_ms(info.module, info.in_hw) * info.calls
            layer.ms = np.minimum(latency.factorized_ms(info.module, layer.fmt.name, list(layer.ranks), info.in_hw)
                                  * info.calls, layer.dense_ms)

    def cost_of(layer):
        return {"params": layer.params, "macs": layer.macs, "latency": layer.ms}[metric]

    def dense_of(layer):
        return {"params": layer.orig_params, "macs": layer.orig_macs, "latency": layer.dense_ms}[metric]

    costs = [cost_of(layer) for layer in layers]
    dense_cost = [float(dense_of(layer)) for layer in layers]
    errs = [layer.err for layer in layers]
    fixed = total - sum(dense_cost)  # everything the solver does not touch
    budget = target_f * total - fixed

    min_cost = sum(min(float(c.min()), dc) if keep_dense else float(c.min()) for c, dc in zip(costs, dense_cost))
    smallest = (fixed + min_cost) / total
    if target_f < smallest * (1 - 1e-12):
        raise ValueError(
            f"target {target_f:g} is unreachable: even the smallest ranks give a {metric} ratio of "
            f"{smallest:.4f}; ask for a target >= {smallest:.4f} (or compress more layers)"
        )

    # normalised units: errors by their model-wide maximum, costs by the total
    e_scale = max(sum(float(e.max()) for e in errs), 1e-300)
    errs_n = [e / e_scale for e in errs]
    costs_n = [c / total for c in costs]
    dense_n = [dc / total for dc in dense_cost]
    budget_n = budget / total

    def total_n(lam):
        ch = _choose(layers, costs_n, errs_n, dense_n, lam, keep_dense)
        return ch, _total(ch, costs_n, dense_n)

    lo, hi = -30.0, 30.0  # log10 lambda: lo -> largest ranks, hi -> smallest
    ch_hi, t_hi = total_n(10.0**hi)
    best = (10.0**hi, ch_hi, t_hi)
    ch_lo, t_lo = total_n(10.0**lo)
    if t_lo <= budget_n * (1 + 1e-12):
        best = (10.0**lo, ch_lo, t_lo)
    else:
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            ch, t = total_n(10.0**mid)
            if t <= budget_n * (1 + 1e-12):
                hi, best = mid, (10.0**mid, ch, t)
                if t >= budget_n - _TOL * target_f:
                    break
            else:
                lo = mid
            if hi - lo < 1e-9:
                break
    lam, choice, t = best
    if t < budget_n:
        choice = _greedy_fill(choice, costs_n, errs_n, dense_n, budget_n - t, keep_dense)

    ranks, report = {}, []
    compressed = fixed
    for layer, i, c, dc in zip(layers, choice, costs, dense_cost):
        if i < 0:
            p, m, e, rank, spent = layer.orig_params, layer.orig_macs, 0.0, None, dc
        else:
            rank = layer.ranks[i]
            p, m, e, spent = int(layer.params[i]), int(layer.macs[i]), float(layer.err[i]), float(c[i])
            ranks[layer.name] = rank
        compressed += spent
        rel = e if error == "relative" else e / max(layer.norm2, 1e-300)
        row = dict(name=layer.name, shape=layer.info.weight_shape, rank=rank, params=int(p), macs=int(m),
                   original_params=int(layer.orig_params), original_macs=int(layer.orig_macs),
                   error=e, relative_error=rel)
        if metric == "latency":
            row.update(latency=spent, original_latency=dc)
        report.append(row)
    return BudgetResult(
        ranks=ranks,
        achieved=compressed / total,
        target=target_f,
        lam=float(lam),
        metric=metric,
        smallest_ratio=smallest,
        report=report,
        totals={"original": total, "compressed": compressed},
    )

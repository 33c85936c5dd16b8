"""One budget for a whole network: parse it, check it can be met, and spend it over the layers' Tucker-2 ranks.

A budget is a fraction of the dense model's MACs or parameters (``macs:0.4``),
a reduction factor (``macs:2.52x``) or an absolute count (``params:150000``).
:func:`budget_ranks` chooses the ranks of all layers jointly, greedily removing
the singular value with the least energy per unit of cost saved, with each
layer's exact cost from the format registry. BATUDE's M-step
(:mod:`tuckerlab.methods.batude`), the accuracy-aware alternating method's
budget stop (:mod:`tuckerlab.methods.alternating`) and the LWIQ selector
(:mod:`tuckerlab.rank.lwiq`) read their budgets here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

__all__ = ["ENERGIES", "Budget", "parse_budget", "check_budget", "budget_ranks", "BudgetStep", "cost_tables", "smallest_costs"]

#: What the budget step weighs against the cost: squared singular values, or their fraction of ``||X_(n)||^2``.
ENERGIES = ("absolute", "relative")

_UNITS = ("params", "macs")
_ACCEPTED = ("'macs:F' or 'params:F' with F in (0, 1] a fraction of the dense model, 'macs:Rx' a reduction "
             "factor R >= 1, or 'macs:N' an absolute count N > 1 (e.g. 'macs:2e8', 'params:150000')")


# ------------------------------------------------------------------ budget
@dataclass(frozen=True)
class Budget:
    """A whole-network budget: ``metric`` (``"params"`` or ``"macs"``), a fraction of the dense model or a count.

    Attributes
    ----------
    metric : {"params", "macs"}
    value : float
        The fraction in ``(0, 1]``, or the absolute count (``absolute``).
    absolute : bool
    spec : str
        The text it was read from.
    """

    metric: str
    value: float
    absolute: bool
    spec: str

    def allowed(self, dense_total: float) -> float:
        """The budget in units of ``metric`` for a dense model of ``dense_total``."""
        return float(self.value) if self.absolute else float(self.value) * float(dense_total)


def parse_budget(budget, name: str = "budget") -> Budget:
    """A :class:`Budget` from ``"macs:0.4"``, ``"macs:2.5x"``, ``"params:150000"`` (or a :class:`Budget`).

    A fraction is checked as the budget rank selectors check it
    (:mod:`tuckerlab.rank.selectors`); a value above 1 is an absolute count
    when it is a whole number, and an error otherwise.

    Raises
    ------
    ValueError
        Naming ``name``, the value and what is accepted, for an unknown unit,
        a value ``<= 0``, a fraction above 1 or a factor below 1.
    """
    from tuckerlab.rank.selectors import _fraction

    if isinstance(budget, Budget):
        return budget

    def bad(why):
        return ValueError(f"{name}={budget!r}: {why}; accepted: {_ACCEPTED}")

    if not isinstance(budget, str):
        raise bad("not a budget string")
    unit, sep, text = budget.strip().partition(":")
    unit, text = unit.strip().lower(), text.strip()
    if not sep or unit not in _UNITS:
        hint = " (the paper's FLOPs are multiply-accumulates: write 'macs:')" if unit in ("flops", "flop") else ""
        raise bad(f"unknown unit {unit!r}{hint}")
    if text.lower().endswith("x"):  # a reduction factor: dense / compressed
        try:
            factor = float(text[:-1])
        except ValueError:
            raise bad(f"{text!r} is not a reduction factor") from None
        if not (math.isfinite(factor) and factor >= 1):
            raise bad(f"a reduction factor must be >= 1, got {text!r}")
        return Budget(unit, 1.0 / factor, False, budget)
    try:
        value = float(text)
    except ValueError:
        raise bad(f"{text!r} is not a number") from None
    if math.isfinite(value) and value > 1 and value.is_integer():
        return Budget(unit, value, True, budget)
    try:
        value = _fraction(text, f"{unit} fraction")
    except ValueError as err:
        raise bad(f"{err} (a count must be a whole number > 1)") from None
    return Budget(unit, value, False, budget)


class _CostTable:
    """``(params, MACs with all calls)`` of one layer's Tucker-2 form at every rank pair, filled on demand."""

    def __init__(self, info, fmt):
        t, s = info.weight_shape[:2]
        self.info, self.fmt = info, fmt
        self.full = (int(t), int(s))
        self.table = np.full((2, t + 1, s + 1), -1, dtype=np.int64)

    def at(self, r_out, r_in) -> np.ndarray:
        """Costs of the rank pairs ``(r_out, r_in)`` (arrays of equal shape, or ints): ``(2, ...)``."""
        r_out, r_in = np.broadcast_arrays(np.asarray(r_out), np.asarray(r_in))
        got = self.table[:, r_out, r_in]
        for i in np.flatnonzero(got[0].ravel() < 0):
            ro, ri = int(r_out.ravel()[i]), int(r_in.ravel()[i])
            self.table[:, ro, ri] = self.info.cost(self.fmt, (ro, ri))
        return self.table[:, r_out, r_in]


@dataclass
class BudgetStep:
    """What the budget step chose.

    Attributes
    ----------
    ranks : dict of str to (int, int)
        ``(r_out, r_in)`` of every compressed layer.
    cost : float
        The whole network's ``metric`` at these ranks (the layers not
        compressed at their dense cost).
    allowed : float
        The budget in units of ``metric``.
    dense : float
        The dense network's ``metric``.
    metric : str
    params, macs : int
        The whole network's parameters and MACs at these ranks.
    removed : dict of str to (int, int)
        Singular values removed per layer and mode.
    """

    ranks: dict
    cost: float
    allowed: float
    dense: float
    metric: str
    params: int
    macs: int
    removed: dict = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return self.cost <= self.allowed

    @property
    def ratio(self) -> float:
        """Compressed / dense ``metric``."""
        return self.cost / self.dense

    @property
    def reduction(self) -> float:
        """Dense / compressed ``metric`` ("2.52x")."""
        return self.dense / self.cost


def cost_tables(selection, fmt, cache: dict | None) -> dict[str, _CostTable]:
    cache = {} if cache is None else cache
    out = {}
    for info in selection:
        key = (info.weight_shape, info.out_hw, info.in_hw, info.bias, info.calls)
        if key not in cache:
            cache[key] = _CostTable(info, fmt)
        out[info.name] = cache[key]
    return out


def smallest_costs(selection, tables, budget: Budget) -> tuple[float, float, float]:
    """``(smallest reachable, allowed, dense)`` whole-network ``metric``."""
    k = _UNITS.index(budget.metric)
    dense = float(selection.total_params if k == 0 else selection.total_macs)
    fixed = dense - sum(float(info.dense_cost()[k]) for info in selection)
    smallest = fixed + sum(float(tables[info.name].at(1, 1)[k]) for info in selection)
    return smallest, budget.allowed(dense), dense


def check_budget(selection, budget, name: str = "budget", format="tucker2", cache: dict | None = None) -> Budget:
    """``budget`` parsed and checked reachable for the layers of ``selection``; a ValueError naming it if not."""
    from tuckerlab.formats import get_format

    b = parse_budget(budget, name)
    if not len(selection):
        raise ValueError(f"{name}={b.spec!r}: no layer to compress (every convolution is skipped)")
    smallest, allowed, dense = smallest_costs(selection, cost_tables(selection, get_format(format), cache), b)
    if smallest > allowed:
        raise ValueError(
            f"{name}={b.spec!r} is unreachable: rank (1, 1) in every compressed layer still gives {b.metric} "
            f"{smallest:.0f} ({smallest / dense:.4f} of the dense {dense:.0f}); ask for at least "
            f"{b.metric}:{math.ceil(smallest / dense * 1e4) / 1e4:g} (or compress more layers); accepted: {_ACCEPTED}")
    return b


def budget_ranks(spectra: Mapping[str, tuple], selection, budget, *, energy: str = "absolute",
                 format="tucker2", cache: dict | None = None) -> BudgetStep:
    """The budget step: Tucker-2 ranks of all layers, jointly, so that the whole network meets ``budget``.

    From full ranks, the move with the least removed energy per unit of cost
    saved is taken until the network's cost is within the budget; a move
    removes the ``k`` smallest kept singular values of one mode of one
    layer, ``k`` minimising that ratio (usually 1; more where one removal
    saves nothing, next to full rank), and the last move only as many as
    the budget needs. See the module docstring.

    Parameters
    ----------
    spectra : mapping of str to (array, array)
        ``{layer: (s_out, s_in)}``: singular values (descending) of the
        layer's mode-1 and mode-2 unfoldings (values beyond a spectrum's
        length count as zero).
    selection : LayerSelection
        The compressed layers (shapes, output sizes, calls) and the dense
        network's totals (:func:`tuckerlab.layer_selection.select_layers`);
        the layers not in it count at their dense cost.
    budget : str or Budget
        ``"macs:0.4"``, ``"params:0.5"``, ``"macs:2.5x"``, ``"macs:2e8"``
        (:func:`parse_budget`).
    energy : {"absolute", "relative"}
        ``s^2``, or ``s^2`` over the unfolding's ``sum s^2`` (scale-free
        between layers).
    format : str
        The layers' format (``"tucker2"``): its ``cost`` prices each rank pair.
    cache : dict, optional
        Cost tables kept between calls (keyed by layer shape).

    Returns
    -------
    BudgetStep

    Raises
    ------
    ValueError
        For a bad or unreachable budget (see :func:`check_budget`), an
        unknown ``energy``, or spectra not naming the selection's layers.
    """
    from tuckerlab.formats import get_format

    if energy not in ENERGIES:
        raise ValueError(f"energy must be one of {ENERGIES}, got {energy!r}")
    fmt = get_format(format)
    cache = {} if cache is None else cache
    b = check_budget(selection, budget, format=fmt, cache=cache)
    tables = cost_tables(selection, fmt, cache)
    names = [info.name for info in selection]
    if set(spectra) != set(names):
        raise ValueError(f"spectra name the layers {sorted(spectra)}, the selection {sorted(names)}")
    k_metric = _UNITS.index(b.metric)
    _, allowed, dense = smallest_costs(selection, tables, b)
    # what the budget step does not touch: the layers left dense, BatchNorm, ... (params, MACs)
    fixed = [float(total) - sum(float(info.dense_cost()[k]) for info in selection)
             for k, total in enumerate((selection.total_params, selection.total_macs))]

    energies = {}
    for name in names:
        per = []
        for mode, s in enumerate(spectra[name]):
            full = tables[name].full[mode]
            e = np.zeros(full)
            s = np.asarray(s, dtype=np.float64)[:full]
            e[: s.size] = s**2
            if energy == "relative":
                e = e / max(float(e.sum()), 1e-300)
            per.append(e)
        energies[name] = per
    ranks = {name: list(tables[name].full) for name in names}

    def layer_cost(name) -> float:
        return float(tables[name].at(*ranks[name])[k_metric])

    def best_move(name, mode):
        r = ranks[name][mode]
        if r <= 1:
            return None
        ks = np.arange(1, r)
        new = r - ks
        other = np.full_like(new, ranks[name][1 - mode])
        cost_new = tables[name].at(new, other)[k_metric] if mode == 0 else tables[name].at(other, new)[k_metric]
        saved = layer_cost(name) - cost_new.astype(np.float64)
        removed = np.cumsum(energies[name][mode][:r][::-1])[: r - 1]
        ok = saved > 0
        if not ok.any():
            return None
        ratio = np.where(ok, removed / np.where(ok, saved, 1.0), np.inf)
        i = int(np.lexsort((-np.where(ok, saved, -np.inf), ratio))[0])
        return float(ratio[i]), -float(saved[i]), int(ks[i])

    moves = {(n, m): best_move(n, m) for n in names for m in (0, 1)}
    order = {key: i for i, key in enumerate(moves)}
    total = fixed[k_metric] + sum(layer_cost(n) for n in names)
    while total > allowed:
        live = [(mv[0], mv[1], order[key], key) for key, mv in moves.items() if mv is not None]
        if not live:  # cannot happen for a reachable budget (checked above); kept as a guard
            raise ValueError(f"budget={b.spec!r}: the budget step found no rank left to remove")
        *_, (name, mode) = min(live)
        before, k = layer_cost(name), moves[(name, mode)][2]
        ranks[name][mode] -= k
        if total + layer_cost(name) - before <= allowed and k > 1:
            # the last move: only as many removals as the budget needs (still monotone in the budget)
            r = ranks[name][mode] + k
            for j in range(1, k):
                ranks[name][mode] = r - j
                if total + layer_cost(name) - before <= allowed:
                    break
            else:
                ranks[name][mode] = r - k
        total += layer_cost(name) - before
        moves[(name, 0)], moves[(name, 1)] = best_move(name, 0), best_move(name, 1)

    costs = np.array([tables[n].at(*ranks[n]) for n in names], dtype=np.float64).reshape(-1, 2).sum(0)
    params, macs = int(round(fixed[0] + costs[0])), int(round(fixed[1] + costs[1]))
    return BudgetStep(
        ranks={n: tuple(ranks[n]) for n in names}, cost=float((params, macs)[k_metric]), allowed=allowed,
        dense=dense, metric=b.metric, params=params, macs=macs,
        removed={n: (tables[n].full[0] - ranks[n][0], tables[n].full[1] - ranks[n][1]) for n in names},
    )

"""TT-LC's "double Bayesian" ranks: EVBMF per layer, times one factor found by Bayesian optimisation.

Liu et al. (2024) choose TT-Tucker ranks twice by Bayesian rules: EVBMF
(Nakajima et al., 2013) per layer, and one global factor scaling them found
by Bayesian optimisation (after Kim, Lee & Choe, 2020) to meet the
compression target. :class:`DoubleBayesianRanks` is that choice as a rank
selector (registered as ``double_bayesian``; ``double_bayesian:0.3`` meets a
parameter ratio of 0.3).

References
----------
W. Liu et al., "A TT-Tucker decomposition-based LC convolutional neural
network compression method without pre-training", J. South China Univ.
Tech. 52(7):29-38, 2024.

T. Kim, J. Lee, Y. Choe, "Bayesian optimization-based global optimal rank
selection for compression of convolutional neural networks", IEEE Access
8:17605-17618, 2020.

S. Nakajima et al., "Global analytic solution of fully-observed variational
Bayesian matrix factorization", JMLR 14:1-37, 2013.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from tuckerlab.formats import get_format, rank_from_json, rank_to_json

from .selectors import RankSelector, RuleRanks, format_for, register_selector

__all__ = ["DoubleBayesianRanks"]


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


class DoubleBayesianRanks(RankSelector):
    """EVBMF ranks per layer, times one factor found by Bayesian optimisation (TT-LC).

    The first :meth:`select` reads the EVBMF ranks of every layer
    (:func:`tuckerlab.rank.evbmf_rule` with ``weakening`` and ``min_rank``)
    and runs :func:`tuckerlab.rank.bayesopt_global_factor` on them. Its
    factor lies in ``(0, 1]``; when even the EVBMF ranks compress more than
    the target asks (typical early in training, when EVBMF still sees mostly
    noise), the base ranks are first multiplied by the smallest ``scale_up``
    in 1, 2, 4, ... that reaches the target (clipped to full rank), so the
    search covers ``(0, scale_up]`` times the EVBMF ranks. Later calls (rank
    updates during training) read the EVBMF ranks of the current weights and
    scale them the same way with the factor found.

    With a target, the objective of a factor is the parameter-weighted mean
    relative projection error when the whole model's compressed/original
    parameter ratio meets the target, and ``1 + relative excess`` when it
    does not (every feasible factor beats every infeasible one). Without a
    target, the default objective of ``bayesopt_global_factor`` (error +
    size ratio).

    Parameters
    ----------
    target_params_ratio : float, optional
        Whole-model compressed/original parameter ratio to meet (e.g. 0.3
        keeps 30 % of the parameters).
    n_trials : int
        Objective evaluations of the search (the first ``n_startup_trials``
        random).
    n_startup_trials : int
        Random points before the Gaussian process (10 in Kim, Lee & Choe).
    bounds : (float, float)
        Search interval of the factor, inside ``(0, 1]``.
    weakening : float
        EVBMF weakening in ``[0, 1]`` (1: plain EVBMF; smaller: ranks closer
        to full), see :func:`tuckerlab.rank.evbmf_rank`.
    min_rank : int
        Smallest rank of any bond.
    seed : int
        Seed of the Bayesian optimisation.

    Attributes
    ----------
    factor : float or None
        The global factor found by the search (None before the first call).
    scale_up : int
        Multiplier of the EVBMF ranks before the search.
    base_ranks : dict
        EVBMF ranks of the first call.
    value : float or None
        Objective at the factor.
    params_ratio : float or None
        Whole-model parameter ratio with the chosen ranks.
    """

    name = "double_bayesian"

    def __init__(
        self,
        target_params_ratio: float | None = None,
        *,
        n_trials: int = 20,
        n_startup_trials: int = 10,
        bounds: tuple[float, float] = (0.05, 1.0),
        weakening: float = 1.0,
        min_rank: int = 1,
        seed: int = 0,
    ):
        if target_params_ratio is not None:
            t = float(target_params_ratio)
            if not 0.0 < t <= 1.0:
                raise ValueError(f"target_params_ratio must be in (0, 1], got {target_params_ratio!r}")
            target_params_ratio = t
        self.target_params_ratio = target_params_ratio
        self.n_trials = _check_int(n_trials, "n_trials", 1)
        self.n_startup_trials = _check_int(n_startup_trials, "n_startup_trials", 0)
        self.bounds = tuple(float(b) for b in bounds)
        from .rules import evbmf_rule

        self._rule = evbmf_rule(weakening=weakening, min_rank=min_rank)  # checks both now
        self.weakening, self.min_rank = float(weakening), int(min_rank)
        self.seed = int(seed)
        self.factor: float | None = None
        self.base_ranks: dict = {}
        self.value: float | None = None
        self.params_ratio: float | None = None
        self.scale_up: int = 1

    def config(self) -> dict:
        return {
            "selector": self.name, "target_params_ratio": self.target_params_ratio, "n_trials": self.n_trials,
            "n_startup_trials": self.n_startup_trials, "bounds": list(self.bounds), "weakening": self.weakening,
            "min_rank": self.min_rank, "seed": self.seed,
        }

    # ------------------------------------------------------------ pieces
    @staticmethod
    def params_ratio_of(model: nn.Module, ranks: Mapping[str, Any], fmt="tt_tucker") -> float:
        """Whole-model compressed/original parameter ratio if ``ranks`` were applied (biases unchanged)."""
        fmt = get_format(fmt)
        total = sum(p.numel() for p in model.parameters())
        after = total
        for name, rank in ranks.items():
            module = model.get_submodule(name)
            f = get_format("lowrank") if isinstance(module, nn.Linear) else fmt
            shape = tuple(module.weight.shape)
            after += int(f.cost(shape, rank, None if f.kind == "linear" else (1, 1))[0]) - module.weight.numel()
        return after / total

    def smallest_params_ratio(self, model: nn.Module, format, layers) -> float:
        """The whole-model ratio with every rank at ``min_rank`` on ``layers``."""
        fmt = get_format(format)
        ranks = {}
        for info in layers:
            f = format_for(info, fmt)
            ranks[info.name] = f.scale_rank(info.weight_shape, f.full_rank(info.weight_shape), 0.0, self.min_rank)
        return self.params_ratio_of(model, ranks, fmt)

    def _objective(self, model: nn.Module, fmt):
        """``objective(ranks, factor)`` for a target (see the class docstring), or the default."""
        if self.target_params_ratio is None:
            return "reconstruction"
        target = self.target_params_ratio
        cache: dict = {}

        def objective(ranks: dict, factor: float) -> float:
            ratio = self.params_ratio_of(model, ranks, fmt)
            if ratio > target:
                return 1.0 + (ratio - target) / target
            err = total = 0.0
            for name, rank in ranks.items():
                module = model.get_submodule(name)
                key = (name, rank)
                if key not in cache:
                    f = get_format("lowrank") if isinstance(module, nn.Linear) else fmt
                    w = module.weight.detach()
                    p = f.reconstruct(f.decompose(w, rank, **f.check_options(None)))
                    norm = float(torch.linalg.vector_norm(w.double()))
                    cache[key] = float(torch.linalg.vector_norm((w - p).double())) / norm if norm > 0 else 0.0
                n = module.weight.numel()
                err += n * cache[key]
                total += n
            return err / total

        return objective

    def _evbmf(self, model: nn.Module, fmt, layers) -> dict[str, Any]:
        """EVBMF ranks of the selected layers."""
        return RuleRanks(self._rule).select(model, fmt, layers, None)

    def _grow(self, info, fmt, rank, k: int):
        """``k`` times ``rank``, clipped to the layer's full ranks and made reachable."""
        return format_for(info, fmt).scale_rank(info.weight_shape, rank, float(k), self.min_rank)

    def _scale_up(self, model: nn.Module, fmt, layers, evbmf: dict) -> int:
        """Smallest ``k`` in 1, 2, 4, ... whose grown EVBMF ranks reach ``target_params_ratio``."""
        if self.target_params_ratio is None:
            return 1
        k, previous = 1, None
        while True:
            grown = {n: self._grow(layers[n], fmt, r, k) for n, r in evbmf.items()}
            if self.params_ratio_of(model, grown, fmt) >= self.target_params_ratio or grown == previous:
                return k
            k, previous = 2 * k, grown

    # ----------------------------------------------------------- selector
    def select(self, model, format, layers, context):
        """The double Bayesian search the first time, rescaled EVBMF ranks of the current weights after."""
        from .bayesopt import bayesopt_global_factor

        fmt = get_format(format)
        evbmf = self._evbmf(model, fmt, layers)
        if self.factor is None:
            self.scale_up = self._scale_up(model, fmt, layers, evbmf)
            base = {n: self._grow(layers[n], fmt, r, self.scale_up) for n, r in evbmf.items()}
            result = bayesopt_global_factor(
                model, fmt, objective=self._objective(model, fmt), base=base, n_trials=self.n_trials,
                bounds=self.bounds, seed=self.seed, min_rank=self.min_rank, n_startup_trials=self.n_startup_trials,
                layers=layers,
            )
            ratio = self.params_ratio_of(model, result.ranks, fmt)
            if self.target_params_ratio is not None and ratio > self.target_params_ratio * (1 + 1e-9):
                raise ValueError(
                    f"target_params_ratio={self.target_params_ratio} was not met: the best factor found "
                    f"({result.factor:.4f}) gives a parameter ratio of {ratio:.4f}; raise n_trials or lower "
                    f"bounds[0]={self.bounds[0]}"
                )
            self.factor, self.value, self.params_ratio = result.factor, result.value, ratio
            self.base_ranks = dict(evbmf)
            return dict(result.ranks)
        out = {}
        for name, r in evbmf.items():
            info = layers[name]
            grown = self._grow(info, fmt, r, self.scale_up)
            out[name] = format_for(info, fmt).scale_rank(info.weight_shape, grown, self.factor, self.min_rank)
        return out

    def info(self) -> dict:
        """What was chosen, in plain values (for results)."""
        return {
            "rule": "double Bayesian (EVBMF per layer x BayesOpt global factor)",
            "target_params_ratio": self.target_params_ratio,
            "factor": self.factor,
            "scale_up": self.scale_up,
            "evbmf_scale": None if self.factor is None else self.factor * self.scale_up,
            "objective_value": self.value,
            "params_ratio_at_selection": self.params_ratio,
            "base_ranks": {n: rank_to_json(r) for n, r in self.base_ranks.items()},
            "n_trials": self.n_trials,
            "weakening": self.weakening,
        }

    def state_dict(self) -> dict:
        return {
            "factor": self.factor,
            "value": self.value,
            "params_ratio": self.params_ratio,
            "scale_up": self.scale_up,
            "base_ranks": {n: rank_to_json(r) for n, r in self.base_ranks.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.factor, self.value, self.params_ratio = state["factor"], state["value"], state["params_ratio"]
        self.scale_up = int(state["scale_up"])
        self.base_ranks = {n: rank_from_json(r) for n, r in state["base_ranks"].items()}


def _from_spec(arg):
    return DoubleBayesianRanks(None if arg in (None, "") else float(arg))


register_selector("double_bayesian", _from_spec, help="double_bayesian[:T] (TT-LC's EVBMF x BayesOpt factor)")

"""Ranks by Bayesian optimisation (Gaussian-process search with Optuna).

Two searches:

- :func:`bayesopt_ranks` with ``per_layer=True``: for every convolution its
  Tucker-2 ranks ``(R1, R2) = (r_out, r_in)``, each in ``[2, dim - 1]``,
  minimising ``relative reconstruction error + compressed/original size``,
  the size term penalised when the factorized layer is larger than the dense
  one (Kim, Lee & Choe, 2020);
- :func:`bayesopt_global_factor` (or ``per_layer=False``): one factor
  ``f`` in ``(0, 1]`` scaling per-layer base ranks (by default the EVBMF
  ranks), scored by any objective the caller passes, such as the validation
  error after a short fine-tune. EVBMF per layer plus a Bayesian search for
  the global factor is the "double Bayesian" rank selection of TT-LC.

Both use :class:`optuna.samplers.GPSampler` (a Gaussian process with a
Matern-5/2 kernel and log expected improvement) after
``n_startup_trials = 10`` random points, seeded: the same seed gives the same
ranks. Optuna's log messages are silenced unless ``verbose=True``.

References
----------
Kim, Lee and Choe, Bayesian optimisation of the Tucker-2 ranks of
convolutional layers, IEEE Access 8:17605, 2020.

W. Liu et al., "TT-LC: TT-Tucker decomposition in the LC framework without
pre-training", J. South China Univ. Tech. 52(7):29-38, 2024.

Y.-D. Kim et al., "Compression of deep convolutional neural networks for
fast and low power mobile applications", ICLR 2016.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from tuckerlab.formats import Format

from .rules import evbmf_rule, fixed_ratio, rank_format

__all__ = ["BayesOptResult", "GlobalFactorResult", "bayesopt_ranks", "bayesopt_global_factor", "scale_rank"]


@dataclass
class BayesOptResult:
    """Outcome of :func:`bayesopt_ranks` with ``per_layer=True``.

    Attributes
    ----------
    ranks : dict or tuple
        ``{layer name: (r_out, r_in)}`` for a model; the pair itself for a
        single weight.
    value : dict or float
        Best objective value per layer (or the one value for a weight).
    studies : dict or optuna.Study
        The Optuna studies, for inspection (``study.trials_dataframe()``).
    """

    ranks: dict | tuple
    value: dict | float
    studies: dict | object = field(repr=False, default=None)


@dataclass
class GlobalFactorResult:
    """Outcome of :func:`bayesopt_global_factor`.

    Attributes
    ----------
    factor : float
        The best global factor.
    ranks : dict
        ``{layer name: rank}``: the base ranks scaled by ``factor``.
    value : float
        The objective at ``factor``.
    base_ranks : dict
        The unscaled per-layer ranks.
    study : optuna.Study
        The Optuna study.
    """

    factor: float
    ranks: dict
    value: float
    base_ranks: dict
    study: object = field(repr=False, default=None)


# ---------------------------------------------------------------------- optuna
@contextlib.contextmanager
def _optuna_quiet(verbose: bool):
    import optuna

    old = optuna.logging.get_verbosity()
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(old)


def _study(optuna, seed: int, n_startup_trials: int, deterministic: bool):
    sampler = optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=n_startup_trials, deterministic_objective=deterministic
    )
    return optuna.create_study(direction="minimize", sampler=sampler)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


# ------------------------------------------------------- reconstruction errors
def _relative_error(weight: torch.Tensor, fmt: Format, rank) -> float:
    """``||W - W_hat|| / ||W||`` of the decomposition of ``weight`` in ``fmt`` at ``rank``."""
    with torch.no_grad():
        w = weight.detach()
        rank = fmt.validate_rank(w.shape, rank)
        w_hat = fmt.reconstruct(fmt.decompose(w, rank, **fmt.check_options(None)))
        norm = float(torch.linalg.vector_norm(w.double()))
        return float(torch.linalg.vector_norm((w - w_hat).double())) / norm if norm > 0 else 0.0


def _params(weight: torch.Tensor, fmt: Format, rank) -> tuple[int, int]:
    """(factorized, dense) parameter counts of the weight (biases left out)."""
    shape = tuple(weight.shape)
    return int(fmt.cost(shape, rank, None if fmt.kind == "linear" else (1, 1))[0]), math.prod(shape)


def _size_term(ratio: float, penalty: float) -> float:
    return ratio + penalty * max(0.0, ratio - 1.0)


# ------------------------------------------------------------------ per layer
def _rank_range(dim: int) -> tuple[int, int]:
    """``[2, dim - 1]`` as in Kim, Lee & Choe (2020), shrunk for tiny dims."""
    lo = min(2, dim)
    return lo, max(lo, dim - 1)


def _search_layer(optuna, weight: torch.Tensor, name: str, objective, n_trials, seed, n_startup_trials, penalty):
    fmt = rank_format("tucker2")
    t, s = weight.shape[:2]
    (lo_o, hi_o), (lo_i, hi_i) = _rank_range(t), _rank_range(s)
    cache: dict = {}

    def score(rank) -> float:
        if rank not in cache:
            if objective == "reconstruction":
                p, dense = _params(weight, fmt, rank)
                cache[rank] = _relative_error(weight, fmt, rank) + _size_term(p / dense, penalty)
            else:
                cache[rank] = float(objective(name, weight.detach(), rank))
        return cache[rank]

    if lo_o == hi_o and lo_i == hi_i:  # nothing to search
        rank = (lo_o, lo_i)
        return rank, score(rank), None

    def fn(trial) -> float:
        r_out = trial.suggest_int("r_out", lo_o, hi_o) if hi_o > lo_o else lo_o
        r_in = trial.suggest_int("r_in", lo_i, hi_i) if hi_i > lo_i else lo_i
        return score((r_out, r_in))

    study = _study(optuna, seed, n_startup_trials, deterministic=objective == "reconstruction")
    study.optimize(fn, n_trials=n_trials)
    best = study.best_trial.params
    rank = (best.get("r_out", lo_o), best.get("r_in", lo_i))
    return rank, study.best_value, study


def bayesopt_ranks(
    model_or_weight,
    method: str = "tucker2",
    n_trials: int = 30,
    per_layer: bool = True,
    objective="reconstruction",
    seed: int = 0,
    skip=None,
    n_startup_trials: int = 10,
    penalty: float = 10.0,
    verbose: bool = False,
    skip_first: bool = True,
    skip_pointwise: bool = True,
    input_size=(3, 32, 32),
    layers=None,
    **global_kw,
):
    """Tucker-2 ranks by Bayesian optimisation (Kim, Lee & Choe, 2020).

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    model_or_weight : torch.nn.Module or torch.Tensor
        A network (every ``nn.Conv2d`` with ``groups=1`` that is not skipped
        gets its own search) or one conv weight ``(T, S, Kh, Kw)``.
    method : str or Format
        ``"tucker2"`` for the per-layer search (the paper's setting); any
        format with ``per_layer=False``.
    n_trials : int
        Objective evaluations per layer (the first ``n_startup_trials`` are
        random).
    per_layer : bool
        ``False`` searches one global factor instead: see
        :func:`bayesopt_global_factor`, which receives ``method``,
        ``n_trials``, ``objective``, ``seed``, ``skip``, ``n_startup_trials``
        and ``**global_kw``.
    objective : "reconstruction" or callable
        Per layer: ``"reconstruction"`` minimises ``e + c + penalty * max(0,
        c - 1)`` with ``e = ||W - W_hat||_F / ||W||_F`` for the Tucker-2 layer
        built with the ranks (:class:`tuckerlab.layers.TuckerConv2d`) and
        ``c`` its compressed/original parameter ratio; a callable
        ``objective(name, weight, (r_out, r_in)) -> float`` is minimised
        instead.
    seed : int
        Seeds the sampler (layer ``i`` of a model uses ``seed + i``).
    skip : iterable of str, str or callable, optional
        Layer names (``fnmatch`` patterns) or a predicate ``skip(name,
        module)`` for layers to leave out.
    n_startup_trials : int
        Random points before the Gaussian process takes over (10 in the
        paper).
    penalty : float
        Slope of the extra penalty on a size ratio above 1.
    verbose : bool
        Keep Optuna's log messages.
    skip_first, skip_pointwise : bool
        Leave out the first convolution to run and the 1x1 convolutions, as
        :func:`tuckerlab.surgery.compress_model` does by default.
    input_size : sequence of int
        One input without the batch dimension (finds the first convolution).
    layers : LayerSelection, optional
        The layers to search (:func:`tuckerlab.layer_selection.select_layers`);
        by default selected here with ``skip``, ``skip_first``,
        ``skip_pointwise`` and ``input_size``.

    Returns
    -------
    BayesOptResult or GlobalFactorResult
        ``ranks`` (a dict for a model, a pair for a weight), best ``value``
        and the studies; a :class:`GlobalFactorResult` when
        ``per_layer=False``.

    Raises
    ------
    ValueError
        For a per-layer search with a method other than Tucker-2, a weight
        that is not 4-D, or ``n_trials < 1``.

    References
    ----------
    Kim, Lee & Choe, IEEE Access 8:17605, 2020.
    """
    if not per_layer:
        if not isinstance(model_or_weight, nn.Module):
            raise ValueError("per_layer=False searches a global factor over the layers of a model; pass an nn.Module")
        return bayesopt_global_factor(
            model_or_weight, method=method, objective=objective, n_trials=n_trials, seed=seed, skip=skip,
            n_startup_trials=n_startup_trials, penalty=penalty, verbose=verbose, skip_first=skip_first,
            skip_pointwise=skip_pointwise, input_size=input_size, layers=layers, **global_kw,
        )
    if global_kw:
        raise TypeError(f"unexpected arguments for a per-layer search: {sorted(global_kw)}")
    if rank_format(method).name != "tucker2":
        raise ValueError(
            f"the per-layer search looks for Tucker-2 ranks (method='tucker2'), got method={method!r}; "
            "use per_layer=False to scale the ranks of other methods by a global factor"
        )
    _check_int(n_trials, "n_trials", 1)
    _check_int(n_startup_trials, "n_startup_trials", 0)
    if not (objective == "reconstruction" or callable(objective)):
        raise ValueError(f"objective must be 'reconstruction' or a callable, got {objective!r}")
    seed = int(seed)

    with _optuna_quiet(verbose) as optuna:
        if isinstance(model_or_weight, nn.Module):
            ranks, values, studies = {}, {}, {}
            if layers is None:
                from tuckerlab.layer_selection import select_layers

                layers = select_layers(model_or_weight, skip=skip, skip_first=skip_first,
                                       skip_pointwise=skip_pointwise, input_size=input_size)
            convs = [info for info in layers if info.kind == "conv" and info.calls > 0]
            for i, info in enumerate(convs):
                ranks[info.name], values[info.name], studies[info.name] = _search_layer(
                    optuna, info.module.weight.detach(), info.name, objective, n_trials, seed + i,
                    n_startup_trials, penalty,
                )
            return BayesOptResult(ranks, values, studies)
        w = model_or_weight
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"model_or_weight must be an nn.Module or a torch.Tensor, got {type(w).__name__}")
        if w.ndim != 4:
            raise ValueError(f"weight must be a 4-D conv weight (T, S, Kh, Kw), got shape {tuple(w.shape)}")
        w = w.detach()
        if not w.is_floating_point():
            w = w.float()
        rank, value, study = _search_layer(optuna, w, "weight", objective, n_trials, seed, n_startup_trials, penalty)
        return BayesOptResult(rank, value, study)


# --------------------------------------------------------------- global factor
def scale_rank(module: nn.Module, method, base, factor: float, min_rank: int = 1):
    """A layer's rank ``base`` scaled by ``factor`` and made valid for the layer.

    Parameters
    ----------
    module : nn.Conv2d or nn.Linear
        The layer the rank is for (its shape bounds the ranks).
    method : str or Format
        The format of the rank (a linear layer always uses ``"lowrank"``).
    base : rank
        The rank in the format's form.
    factor : float
        Multiplier of every rank entry (rounded, at least ``min_rank``).
    min_rank : int
        Lower bound for every rank.

    Returns
    -------
    rank
        The scaled rank, at most the full rank; TT ranks are lowered where
        needed so that TT-SVD of the layer's weight accepts them
        (:meth:`tuckerlab.formats.Format.scale_rank`).
    """
    fmt = rank_format("lowrank") if isinstance(module, nn.Linear) else rank_format(method)
    return fmt.scale_rank(tuple(module.weight.shape), base, factor, min_rank)


def bayesopt_global_factor(
    model: nn.Module,
    method: str = "tucker2",
    objective="reconstruction",
    base="evbmf",
    n_trials: int = 20,
    bounds: tuple[float, float] = (0.05, 1.0),
    seed: int = 0,
    skip=None,
    min_rank: int = 1,
    include_linear: bool = False,
    n_startup_trials: int = 10,
    penalty: float = 10.0,
    verbose: bool = False,
    skip_first: bool = True,
    skip_pointwise: bool = True,
    input_size=(3, 32, 32),
    layers=None,
) -> GlobalFactorResult:
    """One factor scaling every layer's base ranks, found by Bayesian optimisation.

    Each layer ``l`` gets ``max(min_rank, round(f * r_l))`` for every entry
    of its base rank ``r_l`` (TT ranks then lowered where needed to stay
    reachable); a Gaussian-process search over ``f`` in ``bounds`` minimises
    ``objective``. With EVBMF base ranks this is the "double Bayesian" rank
    selection of TT-LC: EVBMF per layer, Bayesian optimisation globally.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        The network; only read.
    method : str or Format
        ``"tucker2"``, ``"tt"``, ``"tt_tucker"``, ``"cp"``.
    objective : "reconstruction" or callable
        A callable ``objective(ranks, factor) -> float`` is minimised, where
        ``ranks`` is ``{layer name: rank}`` for
        :func:`tuckerlab.surgery.compress_model` (e.g. compress a copy,
        fine-tune briefly and return the validation error).
        ``"reconstruction"`` minimises ``sum_l (P_l / P) e_l + c + penalty *
        max(0, c - 1)``, with ``e_l`` the relative reconstruction error of
        layer ``l`` (built by its factorized layer class), ``P_l`` its dense
        parameters, ``P = sum_l P_l`` and ``c`` the compressed/original
        parameter ratio of these layers.
    base : "evbmf", "full", callable or dict
        Base ranks: EVBMF ranks (:func:`~tuckerlab.rank.evbmf_rule`), full
        ranks (then ``f`` is a fixed ratio), a rank rule, or a dict
        ``{layer name: rank}``.
    n_trials : int
        Objective evaluations.
    bounds : (float, float)
        Search interval for ``f``, inside ``(0, 1]``.
    seed : int
        Seeds the sampler; the same seed gives the same factor.
    skip : iterable of str, str or callable, optional
        Layers to leave out.
    min_rank : int
        Lower bound of every scaled rank.
    include_linear : bool
        Also scale ranks of ``nn.Linear`` layers (``LowRankLinear``).
    n_startup_trials : int
        Random points before the Gaussian process takes over.
    penalty : float
        As in :func:`bayesopt_ranks`.
    verbose : bool
        Keep Optuna's log messages.
    skip_first, skip_pointwise, input_size, layers
        As in :func:`bayesopt_ranks`.

    Returns
    -------
    GlobalFactorResult
        ``factor``, ``ranks``, ``value``, ``base_ranks`` and the study.

    Raises
    ------
    ValueError
        If ``bounds`` is not inside ``(0, 1]``, no layer has a base rank, or
        an argument is out of range.

    References
    ----------
    W. Liu et al., J. South China Univ. Tech. 52(7):29-38, 2024 (TT-LC);
    Kim, Lee & Choe, IEEE Access 8:17605, 2020.
    """
    fmt = rank_format(method)
    _check_int(n_trials, "n_trials", 1)
    _check_int(n_startup_trials, "n_startup_trials", 0)
    _check_int(min_rank, "min_rank", 1)
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (low, high) inside (0, 1], got {bounds!r}") from None
    if not (0.0 < low < high <= 1.0):
        raise ValueError(f"bounds must satisfy 0 < low < high <= 1, got {bounds!r}")
    if not (objective == "reconstruction" or callable(objective)):
        raise ValueError(f"objective must be 'reconstruction' or a callable, got {objective!r}")

    if layers is None:
        from tuckerlab.layer_selection import select_layers

        layers = select_layers(model, skip=skip, include_linear=include_linear, skip_first=skip_first,
                               skip_pointwise=skip_pointwise, input_size=input_size)
    modules = {info.name: info.module for info in layers}
    if isinstance(base, dict):
        base_ranks = {n: base[n] for n in modules if base.get(n) is not None}
    else:
        if base == "evbmf":
            rule = evbmf_rule(min_rank=min_rank)
        elif base == "full":
            rule = fixed_ratio(1.0)
        elif callable(base):
            rule = base
        else:
            raise ValueError(f"base must be 'evbmf', 'full', a rank rule or a dict, got {base!r}")
        base_ranks = {}
        for name, module in modules.items():
            r = rule(name, module, "lowrank" if isinstance(module, nn.Linear) else fmt.name)
            if r is not None:
                base_ranks[name] = r
    if not base_ranks:
        raise ValueError("no layer has a base rank: nothing to scale")
    modules = {n: modules[n] for n in base_ranks}

    def ranks_for(f: float) -> dict:
        return {n: scale_rank(modules[n], fmt, base_ranks[n], f, min_rank) for n in base_ranks}

    cache: dict = {}

    def reconstruction(ranks: dict) -> float:
        total = sum(modules[n].weight.numel() for n in ranks)
        err, comp = 0.0, 0
        for n, r in ranks.items():
            key = (n, r)
            if key not in cache:
                m = modules[n]
                f = rank_format("lowrank") if isinstance(m, nn.Linear) else fmt
                cache[key] = (_relative_error(m.weight, f, r), _params(m.weight, f, r)[0])
            e, p = cache[key]
            err += modules[n].weight.numel() / total * e
            comp += p
        return err + _size_term(comp / total, penalty)

    scores: dict = {}

    def fn(trial) -> float:
        f = trial.suggest_float("factor", low, high)
        ranks = ranks_for(f)
        key = tuple(sorted(ranks.items()))
        if objective != "reconstruction":
            return float(objective(ranks, f))
        if key not in scores:
            scores[key] = reconstruction(ranks)
        return scores[key]

    with _optuna_quiet(verbose) as optuna:
        study = _study(optuna, int(seed), n_startup_trials, deterministic=objective == "reconstruction")
        study.optimize(fn, n_trials=n_trials)
    f = float(study.best_trial.params["factor"])
    return GlobalFactorResult(f, ranks_for(f), float(study.best_value), base_ranks, study)

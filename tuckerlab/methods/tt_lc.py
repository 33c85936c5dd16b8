"""TT-LC: LC from scratch with a TT-Tucker C-step and "double Bayesian" ranks (Liu et al., 2024).

TT-LC (Liu W., Zhang, Zhang, Meng, Zhang, Liu; J. South China Univ. Tech.
52(7):29-38, 2024) is the LC algorithm (:mod:`tuckerlab.methods.lc`) with

1. no pre-trained model: the L-steps start from a random initialisation;
2. an exponential cyclic learning rate in the L-steps (Smith, 2017;
   schedule ``"exp_cyclic"`` of :mod:`tuckerlab.train.schedules`);
3. a TT-Tucker C-step: Tucker factors on the channel modes, a tensor train
   on the ``(r_in, Kh, Kw, r_out)`` core (:class:`~tuckerlab.layers.TTTuckerConv2d`);
4. ranks chosen twice by Bayesian rules: EVBMF per layer (Nakajima et al.,
   2013; :func:`tuckerlab.rank.evbmf_rank` with method ``"tt_tucker"``) and
   one global factor scaling them, found by Bayesian optimisation
   (:func:`tuckerlab.rank.bayesopt_global_factor`, after Kim, Lee & Choe,
   2020), to meet the compression target.

What the paper does not say (PAPERS.md), and what is chosen here, each a
parameter of :func:`tt_lc`:

- **When the ranks are chosen.** At a random initialisation EVBMF sees
  noise (ranks near ``min_rank``). The ranks are therefore chosen after
  ``warmup_epochs`` epochs of plain training (default: one L-step's worth),
  at the initial C-step. With ``rank_update="shrink"`` they are also
  re-estimated at every later C-step (EVBMF of the current weights times the
  global factor found once), and each rank may only shrink.
- **The BayesOpt objective.** With ``target_params_ratio`` the objective of a
  factor is the parameter-weighted mean relative projection error
  ``sum_l (P_l / P) ||W_l - Pi(W_l)|| / ||W_l||`` when the whole model's
  compressed/original parameter ratio meets the target, and ``1 +
  relative excess`` when it does not (every feasible factor beats every
  infeasible one). Without a target, the default objective of
  :func:`~tuckerlab.rank.bayesopt_global_factor` (error + size ratio).
  The factor lies in ``bounds`` inside ``(0, 1]`` and multiplies the EVBMF
  ranks times ``scale_up``, the smallest power of two with which the target
  is reachable (1 when the EVBMF ranks are already large enough), so the
  ranks can end up above the EVBMF ones when EVBMF compresses more than
  asked; the EVBMF ranks set how the budget is shared between layers.
- **Learning rate.** One triangular cycle per L-step (``step_size`` = half an
  L-step) between ``lr / 100`` and ``lr``, the amplitude decaying
  exponentially over the whole run to 10 % (``schedule_scope="run"``);
  the rate is low at the end of every L-step, just before its C-step.
- **Layers.** Every convolution but the first and the 1x1 ones (as
  :func:`~tuckerlab.surgery.compress_model`); the classifier stays dense.
- **Run length.** 40 L-steps of 5 epochs after 5 warm-up epochs, ``mu0 =
  1e-3``, growth 1.25 (the LC values of Idelbayev & Carreira-Perpinan, 2020),
  no fine-tuning.

References
----------
W. Liu, Z. Zhang, N. Zhang, J. Meng, M. Zhang, J. Liu, "A TT-Tucker
decomposition-based LC convolutional neural network compression method
without pre-training", J. South China Univ. Tech. (Nat. Sci.) 52(7):29-38,
2024, doi 10.12141/j.issn.1000-565X.230617.

Y. Idelbayev and M. A. Carreira-Perpinan, "Low-rank compression of neural
nets: learning the rank of each layer", CVPR 2020.

S. Nakajima, M. Sugiyama, S. D. Babacan and R. Tomioka, "Global analytic
solution of fully-observed variational Bayesian matrix factorization",
JMLR 14:1-37, 2013.

T. Kim, J. Lee and Y. Choe, "Bayesian optimization-based global optimal rank
selection for compression of convolutional neural networks", IEEE Access
8:17605-17618, 2020.

L. N. Smith, "Cyclical learning rates for training neural networks", WACV 2017.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from tuckerlab.projection import LayerSpec, Projector, project
from ._penalty import SpecRanks, _check_positive_int, _describe
from .lc import LCResult, lc_compress

__all__ = ["DoubleBayesianRanks", "tt_lc"]

_FORMAT = "tt_tucker"


def _layer_format(module: nn.Module) -> str:
    return "lowrank" if isinstance(module, nn.Linear) else _FORMAT


def _weight_params(module: nn.Module, rank) -> int:
    """Parameters of the factorized weight of ``module`` at ``rank`` (bias left out)."""
    from tuckerlab.layers import LowRankLinear
    from tuckerlab.surgery import METHODS

    shape = tuple(module.weight.shape)
    if isinstance(module, nn.Linear):
        return int(LowRankLinear.cost(shape, rank)[0])
    return int(METHODS[_FORMAT].cost(shape, rank, (1, 1))[0])


class DoubleBayesianRanks:
    """TT-Tucker ranks: EVBMF per layer, times one factor found by Bayesian optimisation.

    A rank selector for :class:`~tuckerlab.methods.LCCallback`:
    ``selector(model, current) -> Projector``. The first call reads the
    EVBMF ranks of every layer to compress (:func:`tuckerlab.rank.evbmf_rule`
    with ``weakening`` and ``min_rank``) and runs
    :func:`tuckerlab.rank.bayesopt_global_factor` on them. Its factor lies in
    ``(0, 1]``; when even the EVBMF ranks compress more than the target asks
    (typical early in training, when EVBMF still sees mostly noise), the base
    ranks are first multiplied by the smallest ``scale_up`` in 1, 2, 4, ...
    that reaches the target (clipped to full rank), so the search covers
    ``(0, scale_up]`` times the EVBMF ranks. Later calls
    (``rank_update="shrink"``) read the EVBMF ranks of the current weights
    and scale them the same way with the factor found.

    Parameters
    ----------
    target_params_ratio : float, optional
        Whole-model compressed/original parameter ratio to meet (e.g. 0.3
        keeps 30 % of the parameters). None: the default objective of
        :func:`~tuckerlab.rank.bayesopt_global_factor`.
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
    skip, include_linear, skip_first, skip_pointwise
        Which layers are compressed, as in
        :func:`tuckerlab.surgery.compress_model` (linear layers get
        ``"lowrank"``).
    input_size : sequence of int
        One input without the batch dimension.

    Attributes
    ----------
    factor : float or None
        The global factor found by the search (None before the first call).
    scale_up : int
        Multiplier of the EVBMF ranks before the search (the ranks are
        about ``factor * scale_up`` times the EVBMF ranks).
    base_ranks : dict
        EVBMF ranks of the first call.
    value : float or None
        Objective at the factor.
    params_ratio : float or None
        Whole-model parameter ratio with the chosen ranks.

    References
    ----------
    .. [1] W. Liu et al., J. South China Univ. Tech. 52(7):29-38, 2024 (TT-LC).
    .. [2] T. Kim, J. Lee, Y. Choe, IEEE Access 8:17605-17618, 2020.
    .. [3] S. Nakajima et al., JMLR 14:1-37, 2013.
    """

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
        skip=None,
        include_linear: bool = False,
        skip_first: bool = True,
        skip_pointwise: bool = True,
        input_size=(3, 32, 32),
    ):
        if target_params_ratio is not None:
            t = float(target_params_ratio)
            if not 0.0 < t <= 1.0:
                raise ValueError(f"target_params_ratio must be in (0, 1], got {target_params_ratio!r}")
            target_params_ratio = t
        self.target_params_ratio = target_params_ratio
        self.n_trials = _check_positive_int(n_trials, "n_trials")
        self.n_startup_trials = _check_positive_int(n_startup_trials, "n_startup_trials", 0)
        self.bounds = tuple(float(b) for b in bounds)
        from tuckerlab.rank import evbmf_rule

        self._rule = evbmf_rule(weakening=weakening, min_rank=min_rank)  # checks both now
        self.weakening, self.min_rank = float(weakening), int(min_rank)
        self.seed = int(seed)
        self.skip, self.include_linear = skip, bool(include_linear)
        self.skip_first, self.skip_pointwise = bool(skip_first), bool(skip_pointwise)
        self.input_size = tuple(int(d) for d in input_size)
        self.factor: float | None = None
        self.base_ranks: dict = {}
        self.value: float | None = None
        self.params_ratio: float | None = None
        self.scale_up: int = 1

    def __repr__(self) -> str:
        return (
            f"DoubleBayesianRanks(target_params_ratio={self.target_params_ratio}, n_trials={self.n_trials}, "
            f"n_startup_trials={self.n_startup_trials}, bounds={self.bounds}, weakening={self.weakening}, "
            f"min_rank={self.min_rank}, seed={self.seed}, skip={_describe(self.skip)}, "
            f"include_linear={self.include_linear}, "
            f"skip_first={self.skip_first}, skip_pointwise={self.skip_pointwise}, input_size={self.input_size})"
        )

    # ------------------------------------------------------------ pieces
    def _modules(self, model: nn.Module, names) -> dict[str, nn.Module]:
        return {n: model.get_submodule(n) for n in names}

    def params_ratio_of(self, model: nn.Module, ranks: Mapping[str, Any]) -> float:
        """Whole-model compressed/original parameter ratio if ``ranks`` were applied."""
        total = sum(p.numel() for p in model.parameters())
        after = total
        for name, rank in ranks.items():
            module = model.get_submodule(name)
            after += _weight_params(module, rank) - module.weight.numel()
        return after / total

    def smallest_params_ratio(self, model: nn.Module) -> float:
        """The whole-model ratio with every rank at ``min_rank`` on the layers that would be compressed."""
        proj = Projector.from_rank(
            model, _FORMAT, lambda name, module, method: self.min_rank if method == "svd"
            else ((self.min_rank,) * 2, (self.min_rank,) * 3),
            input_size=self.input_size, skip=self.skip, include_linear=self.include_linear,
            skip_first=self.skip_first, skip_pointwise=self.skip_pointwise,
        )
        return self.params_ratio_of(model, proj.ranks)

    def _objective(self, model: nn.Module):
        """``objective(ranks, factor)`` for a target (see the module docstring), or the default."""
        if self.target_params_ratio is None:
            return "reconstruction"
        target = self.target_params_ratio
        cache: dict = {}

        def objective(ranks: dict, factor: float) -> float:
            ratio = self.params_ratio_of(model, ranks)
            if ratio > target:
                return 1.0 + (ratio - target) / target
            err = total = 0.0
            for name, rank in ranks.items():
                module = model.get_submodule(name)
                key = (name, rank)
                if key not in cache:
                    w = module.weight.detach()
                    p = project(w, _layer_format(module), rank)
                    norm = float(torch.linalg.vector_norm(w.double()))
                    cache[key] = float(torch.linalg.vector_norm((w - p).double())) / norm if norm > 0 else 0.0
                n = module.weight.numel()
                err += n * cache[key]
                total += n
            return err / total

        return objective

    def _specs(self, model: nn.Module, ranks: Mapping[str, Any]) -> Projector:
        return Projector({n: LayerSpec(_layer_format(model.get_submodule(n)), r) for n, r in ranks.items()})

    def _evbmf(self, model: nn.Module) -> dict[str, Any]:
        """EVBMF ranks of the layers that would be compressed (``compress_model``'s choice)."""
        return Projector.from_rank(
            model, _FORMAT, self._rule, input_size=self.input_size, skip=self.skip,
            include_linear=self.include_linear, skip_first=self.skip_first, skip_pointwise=self.skip_pointwise,
        ).ranks

    def _grow(self, module: nn.Module, rank, k: int):
        """``k`` times ``rank``, clipped to the full ranks of the layer and made reachable."""
        from tuckerlab.rank import scale_rank

        if isinstance(module, nn.Linear):
            return min(k * int(rank), min(module.weight.shape))
        t, s = module.weight.shape[:2]
        (r_out, r_in), tt = rank
        grown = ((min(k * r_out, t), min(k * r_in, s)), tuple(k * r for r in tt))
        return scale_rank(module, _FORMAT, grown, 1.0, self.min_rank)

    def _scale_up(self, model: nn.Module, evbmf: dict) -> int:
        """Smallest ``k`` in 1, 2, 4, ... whose grown EVBMF ranks reach ``target_params_ratio``.

        The factor of :func:`~tuckerlab.rank.bayesopt_global_factor` lies in
        ``(0, 1]``; with base ranks ``k`` times the EVBMF ranks (clipped to
        full rank) it scales the EVBMF ranks by up to ``k``, so a target
        above what the EVBMF ranks give is reachable too.
        """
        if self.target_params_ratio is None:
            return 1
        k, previous = 1, None
        while True:
            grown = {n: self._grow(model.get_submodule(n), r, k) for n, r in evbmf.items()}
            if self.params_ratio_of(model, grown) >= self.target_params_ratio or grown == previous:
                return k
            k, previous = 2 * k, grown

    # ----------------------------------------------------------- selector
    def __call__(self, model: nn.Module, current: Projector | None = None) -> Projector:
        """Ranks for ``model``: the double Bayesian search the first time, rescaled EVBMF after."""
        from tuckerlab.rank import bayesopt_global_factor
        from tuckerlab.rank import scale_rank

        evbmf = self._evbmf(model)
        if self.factor is None:
            self.scale_up = self._scale_up(model, evbmf)
            base = {n: self._grow(model.get_submodule(n), r, self.scale_up) for n, r in evbmf.items()}
            result = bayesopt_global_factor(
                model, _FORMAT, objective=self._objective(model), base=base, n_trials=self.n_trials,
                bounds=self.bounds, seed=self.seed, skip=self.skip, min_rank=self.min_rank,
                include_linear=self.include_linear, n_startup_trials=self.n_startup_trials,
                skip_first=self.skip_first, skip_pointwise=self.skip_pointwise, input_size=self.input_size,
            )
            ratio = self.params_ratio_of(model, result.ranks)
            if self.target_params_ratio is not None and ratio > self.target_params_ratio * (1 + 1e-9):
                raise ValueError(
                    f"target_params_ratio={self.target_params_ratio} was not met: the best factor found "
                    f"({result.factor:.4f}) gives a parameter ratio of {ratio:.4f}; raise n_trials or lower "
                    f"bounds[0]={self.bounds[0]}"
                )
            self.factor, self.value, self.params_ratio = result.factor, result.value, ratio
            self.base_ranks = dict(evbmf)
            return self._specs(model, result.ranks)
        names = current.names if current is not None else list(evbmf)
        ranks = {}
        for name in names:
            module = model.get_submodule(name)
            grown = self._grow(module, evbmf[name], self.scale_up)
            ranks[name] = scale_rank(module, _layer_format(module), grown, self.factor, self.min_rank)
        return self._specs(model, ranks)

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
            "base_ranks": {n: _plain(r) for n, r in self.base_ranks.items()},
            "n_trials": self.n_trials,
            "weakening": self.weakening,
        }

    def state_dict(self) -> dict:
        return {
            "factor": self.factor,
            "value": self.value,
            "params_ratio": self.params_ratio,
            "scale_up": self.scale_up,
            "base_ranks": {n: _plain(r) for n, r in self.base_ranks.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.factor, self.value, self.params_ratio = state["factor"], state["value"], state["params_ratio"]
        self.scale_up = int(state["scale_up"])
        self.base_ranks = {n: _tuple(r) for n, r in state["base_ranks"].items()}


def _plain(rank):
    return [_plain(r) for r in rank] if isinstance(rank, (list, tuple)) else int(rank)


def _tuple(rank):
    return tuple(_tuple(r) for r in rank) if isinstance(rank, (list, tuple)) else rank


def tt_lc(
    model: nn.Module,
    data,
    *,
    target_params_ratio: float | None = None,
    ranks=None,
    n_steps: int = 40,
    epochs_per_step: int = 5,
    warmup_epochs: int | None = None,
    rank_update: str = "fixed",
    mu0: float = 1e-3,
    mu_growth: float = 1.25,
    lr: float = 0.1,
    schedule: str = "exp_cyclic",
    schedule_kwargs: Mapping | None = None,
    schedule_scope: str = "run",
    n_trials: int = 20,
    bounds: tuple[float, float] = (0.05, 1.0),
    weakening: float = 1.0,
    min_rank: int = 1,
    skip=None,
    include_linear: bool = False,
    from_scratch: bool = True,
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-3,
    seed: int = 0,
    **lc_kwargs: Any,
) -> LCResult:
    """TT-LC (Liu et al., 2024): LC from scratch, TT-Tucker C-step, double Bayesian ranks.

    Runs :func:`~tuckerlab.methods.lc_compress` with the TT-LC choices (see
    the module docstring for those the paper leaves open) and returns the
    compressed model with its parameter and MAC cuts (``result.report``,
    ``result.summary()``).

    Parameters
    ----------
    model : torch.nn.Module
        A freshly initialised network (``from_scratch=True``: no
        pre-training), e.g. ``get_model("resnet32")`` under a seed. Not
        modified.
    data : ImageDataset
    target_params_ratio : float, optional
        Whole-model compressed/original parameter ratio to meet (TT-LC
        reports 69.6 % of the parameters cut on ResNet-32, i.e. about 0.30).
    ranks : str, dict, rank rule or rank, optional
        Fixed TT-Tucker ranks instead of the double Bayesian choice (a
        :func:`tuckerlab.rank.spec.from_spec` string such as ``"evbmf"`` or
        ``"params:0.3"``, or what :func:`~tuckerlab.surgery.compress_model`
        takes), read at the initial C-step. Exclusive with
        ``target_params_ratio``.
    n_steps, epochs_per_step : int
        L-steps and their length (default 40 x 5 epochs).
    warmup_epochs : int, optional
        Plain-training epochs before the ranks are chosen and the initial
        C-step runs (default ``epochs_per_step``).
    rank_update : {"fixed", "shrink"}
        Keep the ranks of the initial C-step, or re-estimate them at every
        C-step and keep the elementwise minimum.
    mu0, mu_growth : float
        Penalty path (default 1e-3, x1.25).
    lr : float
        Peak learning rate of the cyclic schedule.
    schedule, schedule_kwargs, schedule_scope
        Default ``"exp_cyclic"`` over the whole run with ``base_lr = lr /
        100`` and ``step_size = epochs_per_step / 2`` (one cycle per L-step).
    n_trials : int
        Bayesian-optimisation trials for the global factor.
    bounds : (float, float)
        Search interval of the global factor.
    weakening : float
        EVBMF weakening (1 = plain EVBMF).
    min_rank : int
        Smallest rank of any bond.
    skip, include_linear
        Layers left out; also factorize ``nn.Linear`` layers (low rank).
    from_scratch : bool
        Start from the weights passed in without measuring a reference
        accuracy (True, the TT-LC setting).
    finetune_epochs, finetune_lr
        Optional fine-tuning of the compressed model.
    seed : int
        Seed of training and of the Bayesian optimisation.
    **lc_kwargs
        More arguments of :func:`~tuckerlab.methods.lc_compress` and
        :func:`~tuckerlab.train.fit` (``batch_size``, ``device``,
        ``checkpoint_dir``, ``progress``, ``max_steps_per_epoch``, ...).

    Returns
    -------
    LCResult
        ``rank_selection`` records the EVBMF base ranks, the global factor and
        the parameter ratio at selection.

    Raises
    ------
    ValueError
        If both ``target_params_ratio`` and ``ranks`` are given, or the
        target is below what rank-``min_rank`` layers reach (checked before
        training), or for any invalid LC argument.

    References
    ----------
    .. [1] W. Liu et al., "A TT-Tucker decomposition-based LC convolutional
       neural network compression method without pre-training", J. South
       China Univ. Tech. 52(7):29-38, 2024.
    .. [2] Y. Idelbayev and M. A. Carreira-Perpinan, CVPR 2020.
    .. [3] S. Nakajima et al., JMLR 14:1-37, 2013.
    .. [4] T. Kim, J. Lee, Y. Choe, IEEE Access 8:17605-17618, 2020.
    """
    if target_params_ratio is not None and ranks is not None:
        raise ValueError("give target_params_ratio (double Bayesian ranks) or ranks (fixed), not both")
    _check_positive_int(epochs_per_step, "epochs_per_step")
    warmup = epochs_per_step if warmup_epochs is None else warmup_epochs
    input_size = tuple(data.image_shape)
    layer_kw = dict(skip=skip, include_linear=include_linear)
    if ranks is not None:
        selector = SpecRanks(ranks, input_size, layer_kw, format=_FORMAT)
    else:
        selector = DoubleBayesianRanks(
            target_params_ratio, n_trials=n_trials, bounds=bounds, weakening=weakening, min_rank=min_rank,
            seed=seed, input_size=input_size, **layer_kw,
        )
        if target_params_ratio is not None:
            smallest = selector.smallest_params_ratio(model)
            if selector.target_params_ratio < smallest:
                raise ValueError(
                    f"target_params_ratio={target_params_ratio} cannot be met: with every rank at "
                    f"min_rank={min_rank} the model keeps {smallest:.4f} of its parameters"
                )
    if schedule == "exp_cyclic" and schedule_kwargs is None and schedule_scope == "run":
        schedule_kwargs = {"base_lr": lr / 100, "step_size": epochs_per_step / 2}
    return lc_compress(
        model, data, None, n_steps=n_steps, epochs_per_step=epochs_per_step, mu0=mu0, mu_growth=mu_growth,
        lr=lr, schedule=schedule, schedule_kwargs=schedule_kwargs, schedule_scope=schedule_scope,
        warmup_epochs=warmup, rank_selector=selector, rank_update=rank_update, from_scratch=from_scratch,
        finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, seed=seed, **lc_kwargs,
    )

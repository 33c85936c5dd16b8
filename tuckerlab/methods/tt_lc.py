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

from torch import nn

from tuckerlab.rank.double_bayesian import DoubleBayesianRanks

from ._base import MethodResult, _check_positive_int
from .lc import lc_compress

__all__ = ["DoubleBayesianRanks", "tt_lc"]

_FORMAT = "tt_tucker"


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
) -> MethodResult:
    """TT-LC (Liu et al., 2024): LC from scratch, TT-Tucker C-step, double Bayesian ranks.

    Runs :func:`~tuckerlab.methods.lc_compress` with the TT-LC choices (see
    the module docstring for those the paper leaves open) and returns the
    compressed model with its parameter and MAC cuts (``result.report``,
    ``result.summary()``).

    Explained in: chapter 5, "TT-LC: compressing while training, without pre-training"
    (notebooks/05_tt_lc.ipynb).

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
    ranks : rank selector, str, dict, rank rule or rank, optional
        TT-Tucker ranks instead of the double Bayesian choice (``"evbmf"``,
        ``"params:0.3"``, any registered selector, or what
        :func:`~tuckerlab.surgery.compress_model` takes), chosen at the
        initial C-step. Exclusive with ``target_params_ratio``.
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
    MethodResult
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
    if ranks is None:
        ranks = DoubleBayesianRanks(target_params_ratio, n_trials=n_trials, bounds=bounds, weakening=weakening,
                                    min_rank=min_rank, seed=seed)
        if target_params_ratio is not None:
            from tuckerlab.layer_selection import select_layers

            layers = select_layers(model, skip=skip, include_linear=include_linear, input_size=data.image_shape)
            smallest = ranks.smallest_params_ratio(model, _FORMAT, layers)
            if ranks.target_params_ratio < smallest:
                raise ValueError(
                    f"target_params_ratio={target_params_ratio} cannot be met: with every rank at "
                    f"min_rank={min_rank} the model keeps {smallest:.4f} of its parameters"
                )
    if schedule == "exp_cyclic" and schedule_kwargs is None and schedule_scope == "run":
        schedule_kwargs = {"base_lr": lr / 100, "step_size": epochs_per_step / 2}
    return lc_compress(
        model, data, None, n_steps=n_steps, epochs_per_step=epochs_per_step, mu0=mu0, mu_growth=mu_growth,
        lr=lr, schedule=schedule, schedule_kwargs=schedule_kwargs, schedule_scope=schedule_scope,
        warmup_epochs=warmup, format=_FORMAT, rank=ranks, skip=skip, include_linear=include_linear,
        rank_update=rank_update, from_scratch=from_scratch, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
        seed=seed, method="tt-lc", **lc_kwargs,
    )

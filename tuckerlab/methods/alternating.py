r"""Accuracy-aware alternating Tucker: Tucker-2 ranks shrunk during training while validation accuracy holds.

Liu, Xie, Wen, Xie and Li (2025) pose compression as one problem that weighs
the network's accuracy against its parameter size under Tucker decomposition,
and solve it by alternating a *network-training* sub-problem and a *Tucker
decomposition* sub-problem, choosing the ranks of all layers during training
so that only a short fine-tuning is needed. Only the abstract is public (no
equations, rank rule or settings); this module is our reading of it, every
choice below marked *ours* in the chapter and exposed as a parameter.

Each compressed convolution ``l`` (weight ``W_l`` of shape ``(T, S, Kh,
Kw)``) has a Tucker-2 approximation ``T_l`` of ranks ``(r_out, r_in)``. The
method alternates, in *rounds*:

1. **training sub-problem**: ``epochs_per_round`` epochs of SGD on ``L(W) +
   mu/2 sum_l ||W_l - T_l||^2`` with the ``T_l`` fixed
   (:meth:`AlternatingCallback.penalty`, added to the loss by
   :func:`tuckerlab.train.fit`); ``mu *= mu_growth`` after every round, as in
   LC (:mod:`tuckerlab.methods.lc`), and the learning-rate schedule restarts
   every round (:class:`~tuckerlab.methods.LStepSchedule`);
2. **Tucker sub-problem**: per layer, the smallest Tucker-2 ranks (fewest
   parameters, or MACs with a MACs budget) whose truncation error stays
   within the tolerance ``delta_l ||W_l||`` (:func:`tolerance_ranks`), then
   ``T_l`` = HOOI of ``W_l`` at those ranks, warm-started from the previous
   round's factors (:class:`~tuckerlab.projection.Projector`). The rule is
   the truncated-HOSVD error bound (De Lathauwer et al., 2000): with
   ``s_{n,h}`` the singular values of the mode-``n`` unfolding,

   .. math:: \|W - T\|^2 \le \sum_{h > r_{out}} s_{1,h}^2 + \sum_{h > r_{in}} s_{2,h}^2,

   and HOOI started from the HOSVD only lowers the error, so the pair of
   least cost whose bound is at most ``delta_l^2 ||W_l||^2`` keeps the
   tolerance (:func:`tuckerlab.formats._spectra.tucker2_tails`). A layer
   whose ranks did not change starts HOOI from its last factors instead,
   nearer the fixed point but without that guarantee; the log keeps the
   bound and the actual error side by side;
3. **accuracy check**: the decomposed network (``W_l`` replaced by ``T_l``)
   is evaluated on a validation split held out from the *training* set
   (:func:`holdout_split`; the test set is never looked at, and the training
   sub-problem and the fine-tuning never see the held-out images). Its drop
   against the starting dense network, ``max(0, acc_dense - acc)`` in
   percentage points, decides the next tolerance.

The tolerance control (*ours*). One global tolerance ``delta`` sets every
layer's, ``delta_l = min(sqrt 2, delta (p_l / mean p)^beta)`` with ``p_l``
the layer's dense parameter count: ``beta = 0`` treats layers alike,
``beta > 0`` gives the large layers more error, trading accuracy for size
where size is. Every round first tries a looser tolerance ``delta + step``
with ranks never above the current ones (so while accuracy holds, ranks only
shrink). If the drop stays **strictly** below ``epsilon`` it is kept and the
step doubles; otherwise the try is dropped, the step halves, the current
ranks are decomposed again, and if even they now cost more than ``epsilon``
the tolerance is tightened by the step (ranks may then grow). ``epsilon =
0`` therefore never compresses a full-rank start. With a ``budget``
(``"params:0.3"``, ``"macs:0.4"``, see
:func:`~tuckerlab.rank.network_budget.parse_budget`), a try whose ranks meet it is
bisected down to the smallest tolerance that does, and loosening stops there
(it resumes only if a later check fails). The rounds stop when the ranks did
not change in a round in which they could no longer shrink (budget met, the
step fallen below ``tolerance_step / 16``, or ``delta = sqrt 2``), or after
``rounds`` rounds. The factorized model is then built from the last round's
factors and fine-tuned for ``finetune_epochs`` epochs.

:class:`AlternatingCallback` is the algorithm; :func:`alternating_compress`
runs it with one call of :func:`tuckerlab.train.fit` and returns the
compressed model.

References
----------
C. Liu, K. Xie, J. Wen, G. Xie and K. Li, "An accuracy-preserving neural
network compression via Tucker decomposition", IEEE Transactions on
Sustainable Computing 10(2):262-273, 2025 (online 29 July 2024),
doi:10.1109/TSUSC.2024.3425962.

L. De Lathauwer, B. De Moor and J. Vandewalle, "On the best rank-1 and rank-(R1,
R2, ..., RN) approximation of higher-order tensors", SIAM J. Matrix Anal.
Appl. 21(4):1324-1342, 2000.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from tuckerlab.formats._spectra import tail_at, tucker2_tails
from tuckerlab.rank.network_budget import (
    Budget,
    check_budget,
    cost_tables,
    parse_budget,
    smallest_costs,
)
from tuckerlab.train import Callback, evaluate, make_schedule
from tuckerlab.train import distributed as _dist

from ._base import (
    LayerChoice,
    MethodResult,
    ProjectionCallback,
    _check_positive_int,
    _metric,
    run_method,
)
from .lc import LStepSchedule, _check_mu, _steps_per_epoch

__all__ = ["AlternatingCallback", "alternating_compress", "Holdout", "holdout_split", "tolerance_ranks", "RECIPE",
           "MAX_TOLERANCE"]

#: Our recipe (the paper's settings are not public): rounds of 2 epochs from a trained model, LC's penalty path,
#: one point of validation accuracy, a tenth of the training set held out, and a brief fine-tuning.
RECIPE = dict(rounds=20, epochs_per_round=2, epsilon=1.0, beta=0.0, mu0=1e-3, mu_growth=1.25, lr=0.01,
              tolerance=0.0, tolerance_step=0.05, validation=0.1, finetune_epochs=5, finetune_lr=0.005)

#: The largest useful tolerance: ``delta = sqrt 2`` admits ranks (1, 1) for any weight (the bound is at most
#: ``2 ||W||^2``).
MAX_TOLERANCE = math.sqrt(2.0)


def _number(value, name: str, accepted: str, ok: Callable[[float], bool], allow_inf: bool = False) -> float:
    """``value`` as a float if a real number (finite unless ``allow_inf``) passing ``ok``; else a ValueError."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value)
            or (math.isinf(value) and not allow_inf) or not ok(float(value))):
        raise ValueError(f"{name}={value!r}: must be {accepted}")
    return float(value)


def _check_settings(epsilon, beta, tolerance, tolerance_step, rounds, epochs_per_round):
    eps = _number(epsilon, "epsilon", "a number >= 0 of percentage points of validation accuracy (math.inf: no "
                  "accuracy check)", lambda v: v >= 0, allow_inf=True)
    b = _number(beta, "beta", "a finite number >= 0 (0: one tolerance for all layers; larger: more error for "
                "larger layers)", lambda v: v >= 0)
    tol = _number(tolerance, "tolerance", f"a relative error in [0, {MAX_TOLERANCE:.4f}] (0: a full-rank start)",
                  lambda v: 0 <= v <= MAX_TOLERANCE)
    step = _number(tolerance_step, "tolerance_step", f"a number in (0, {MAX_TOLERANCE:.4f}]",
                   lambda v: 0 < v <= MAX_TOLERANCE)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r}: must be an integer >= 1 (training + Tucker rounds)")
    if isinstance(epochs_per_round, bool) or not isinstance(epochs_per_round, int) or epochs_per_round < 1:
        raise ValueError(f"epochs_per_round={epochs_per_round!r}: must be an integer >= 1")
    return eps, b, tol, step


# ---------------------------------------------------------------- the split
@dataclasses.dataclass(frozen=True)
class Holdout:
    """A training set split into the part trained on and a held-out validation part.

    Attributes
    ----------
    train : ImageDataset
        The training images not held out (its test split is the original
        test split, for the reported accuracies only).
    validation : ImageDataset
        The held-out training images as its ``"test"`` split (evaluate with
        ``split="test"``); its training split is empty.
    train_indices, val_indices : torch.Tensor
        Indices into the original training split (disjoint, sorted, together
        all of it).
    seed : int
    """

    train: Any
    validation: Any
    train_indices: torch.Tensor
    val_indices: torch.Tensor
    seed: int


def holdout_split(data, validation=0.1, seed: int = 0) -> Holdout:
    """Hold out part of the *training* split as a validation set (the test split is left alone).

    The held-out images are the first ``n_val`` of ``torch.randperm(N)``
    under a generator seeded with ``seed`` (``N`` training images), so the
    same seed and data give the same split on every machine and after a
    resume; both parts keep the original order.

    Parameters
    ----------
    data : ImageDataset
        An in-memory data set (a streaming one is refused).
    validation : float or int
        A fraction in ``(0, 1)`` of the training images, or a count in
        ``[1, N - 1]``.
    seed : int

    Returns
    -------
    Holdout

    Raises
    ------
    ValueError
        For a bad ``validation`` or a streaming data set.
    """
    from tuckerlab.data import ImageDataset

    if not isinstance(data, ImageDataset):
        raise ValueError(f"the alternating method holds out part of an in-memory training set; got "
                         f"{type(data).__name__} (load an in-memory data set)")
    n = data.num_images("train")
    accepted = f"a fraction in (0, 1) or a count in [1, {n - 1}] of the {n} training images"
    if isinstance(validation, bool) or not isinstance(validation, numbers.Real) or not math.isfinite(validation):
        raise ValueError(f"validation={validation!r}: must be {accepted}")
    if isinstance(validation, numbers.Integral) or validation >= 1:
        if float(validation) != int(validation):
            raise ValueError(f"validation={validation!r}: must be {accepted}")
        n_val = int(validation)
    else:
        n_val = int(round(float(validation) * n)) if validation > 0 else 0
    if not 1 <= n_val <= n - 1:
        raise ValueError(f"validation={validation!r}: must be {accepted} (gives {n_val} held-out images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    dev = data.x_train.device
    xv, yv = data.x_train[val_idx.to(dev)], data.y_train[val_idx.to(dev)]
    train = dataclasses.replace(data, x_train=data.x_train[train_idx.to(dev)], y_train=data.y_train[train_idx.to(dev)])
    val = dataclasses.replace(data, x_train=xv[:0], y_train=yv[:0], x_test=xv, y_test=yv)
    return Holdout(train, val, train_idx, val_idx, int(seed))


# ---------------------------------------------------------------- the rank rule
def _bound_ranks(t0: np.ndarray, t1: np.ndarray, allowed: float, full: tuple[int, int],
                 cost: Callable[[np.ndarray, np.ndarray], np.ndarray], cap=None):
    """Least-cost ``(r_out, r_in) <= cap`` with ``t0[r_out] + t1[r_in] <= allowed``, or None if there is none."""
    ca, cb = cap if cap is not None else full
    a = np.arange(1, int(ca) + 1)
    room = allowed - tail_at(t0, a)
    tb = tail_at(t1, np.arange(1, int(cb) + 1))  # non-increasing in r_in
    b_min = 1 + (tb[None, :] > room[:, None]).sum(1)  # smallest feasible r_in for each r_out
    ok = b_min <= cb
    if not ok.any():
        return None
    a, b_min = a[ok], b_min[ok]
    # the least r_in is the cheapest but for a full-rank input factor, which is folded away: try both
    ra, rb = np.concatenate([a, a]), np.concatenate([b_min, np.full_like(b_min, cb)])
    c = np.asarray(cost(ra, rb), dtype=np.float64)
    err = tail_at(t0, ra) + tail_at(t1, rb)
    i = int(np.lexsort((ra, err, c))[0])  # least cost, then least error, then least r_out
    return int(ra[i]), int(rb[i])


def tolerance_ranks(weight: torch.Tensor, tolerance: float, *, cap=None, cost=None) -> tuple[int, int]:
    """The smallest Tucker-2 ranks whose truncated-HOSVD error bound is within ``tolerance * ||W||``.

    Among the pairs ``(r_out, r_in)`` (at most ``cap``) with
    ``sum_{h > r_out} s_{1,h}^2 + sum_{h > r_in} s_{2,h}^2 <= tolerance^2
    ||W||^2`` (``s_n`` the singular values of the mode-``n`` unfolding), the
    one of least ``cost``; ties go to the smaller error. HOOI at these ranks
    then has ``||W - T|| <= tolerance ||W||``.

    Parameters
    ----------
    weight : torch.Tensor
        A conv weight ``(T, S, Kh, Kw)``.
    tolerance : float
        Relative error in ``[0, sqrt 2]``; 0 gives the full rank (up to
        exact zeros of the spectra).
    cap : (int, int), optional
        Largest ranks allowed; if no pair under it keeps the tolerance, ``cap``
        itself is returned.
    cost : callable, optional
        ``cost(r_out, r_in)`` on integer arrays; default the Tucker-2 layer's
        parameters (:func:`tuckerlab.formats.get_format` ``("tucker2").cost``).

    Returns
    -------
    (int, int)
    """
    from tuckerlab.formats import get_format

    tol = _number(tolerance, "tolerance", f"a relative error in [0, {MAX_TOLERANCE:.4f}]",
                  lambda v: 0 <= v <= MAX_TOLERANCE + 1e-12)
    shape = tuple(weight.shape)
    if cost is None:
        fmt = get_format("tucker2")

        def cost(ra, rb):
            return np.array([fmt.cost(shape, (int(x), int(y)))[0] for x, y in zip(ra, rb)], dtype=np.float64)

    t0, t1 = tucker2_tails(weight)
    got = _bound_ranks(t0, t1, _allowed(tol, t0[0]), (shape[0], shape[1]), cost, cap)
    return tuple(int(r) for r in cap) if got is None else got


def _allowed(tol: float, norm2: float) -> float:
    """``tol^2 ||W||^2``, with a little room for rounding (tolerance 0 must admit the full rank)."""
    return tol * tol * norm2 * (1 + 1e-9) + 1e-300


# ---------------------------------------------------------------- the callback
class AlternatingCallback(ProjectionCallback):
    r"""Accuracy-aware alternating Tucker as a :class:`~tuckerlab.train.Callback` of :func:`~tuckerlab.train.fit`.

    Before the first epoch: the dense network's validation accuracy (the
    reference of every check), then the initial Tucker step at
    ``tolerance`` (round 0). Every step adds ``mu/2 sum_l ||W_l - T_l||^2``
    to the loss. After every ``epochs_per_round`` epochs: a Tucker step and
    an accuracy check that loosen or tighten the tolerance (see the module
    docstring); ``mu *= mu_growth``; ``trainer.stop`` once the ranks are
    stable.

    Parameters
    ----------
    specs : Projector or mapping
        ``{layer name: ("tucker2", rank)}``: the compressed convolutions (the
        ranks are replaced by round 0's).
    validation : ImageDataset
        The held-out images, as the ``"test"`` split
        (:attr:`Holdout.validation`).
    epsilon : float
        Largest validation-accuracy drop, in percentage points, that the
        tolerance may cost (kept while the drop is strictly below it);
        ``math.inf`` switches the check off.
    beta : float
        Size weight ``>= 0`` of the layers' tolerances (``delta_l = delta (p_l
        / mean p)^beta``).
    budget : str or Budget, optional
        ``"params:0.3"``, ``"macs:0.4"``, ``"macs:2.5x"``, ``"params:150000"``:
        where the shrinking stops (:func:`~tuckerlab.rank.network_budget.parse_budget`).
    rounds : int
        Most rounds (training + Tucker step).
    epochs_per_round : int
    mu0, mu_growth : float
        Penalty weight of the first round and its growth per round (as
        :class:`~tuckerlab.methods.LCCallback`).
    tolerance : float
        Starting relative tolerance in ``[0, sqrt 2]`` (0: full ranks).
    tolerance_step : float
        First loosening step; doubled after a kept try, halved after a
        dropped one; loosening ends below ``tolerance_step / 16``.
    selection : LayerSelection, optional
        The layers with their shapes and the dense totals (default: selected
        from the model at the start of training).
    projection_options : mapping, optional
        HOOI options of every Tucker step (e.g. ``{"n_iter_max": 10}``).
    verbose : bool
        One line per round.

    Attributes
    ----------
    projector : Projector
        The layers and their current ranks.
    tolerance, step : float
        The current global tolerance and loosening step.
    mu : float
        Penalty weight of the current (or next) round.
    round : int
        Completed rounds (0 after the initial Tucker step).
    targets : dict of str to torch.Tensor or None
        ``T_l``; None before round 0.
    reference : float or None
        Validation accuracy of the starting dense network.
    stop_reason : str or None
        ``"stable"`` once the ranks stopped changing (else None).
    log : list of dict
        One record per round (``round`` 0 is the initial Tucker step):
        ``epoch``, ``mu`` (of the round just trained), ``action``
        (``"start"``, ``"loosen"``, ``"budget"``: loosened to the budget,
        ``"keep"``: the try was dropped, ``"tighten"``, ``"hold"``: no
        loosening left), ``tolerance`` (after the round), ``tried`` (the
        tolerance tried, or None), ``step`` (the next one), ``ranks``,
        ``params`` and ``macs`` of the whole network at these ranks,
        ``ratio`` (params, or the budget's metric, over the dense network's),
        ``budget_met``, ``val_reference``, ``val_dense`` (the current dense
        weights), ``val_decomposed`` (at the round's ranks), ``drop``
        (points), ``drop_tried`` (of the tried tolerance, or None),
        ``bound`` and ``relative`` (the HOSVD bound and the actual ``||W -
        T|| / ||W||`` over all layers), ``layers`` (``{name: {"tolerance",
        "bound", "relative"}}``), ``train_loss``, ``test_acc`` and
        ``seconds``.

    Notes
    -----
    The per-epoch ``logs`` get ``mu`` and ``alt_round`` (1-based round of
    the epoch), and at a round's end ``alt_tolerance``, ``alt_drop`` and
    ``alt_ratio``.

    :meth:`state_dict` holds the tolerance, step, ``mu``, the round count,
    ``T``, the ranks, the reference accuracy and the log, so a resumed run
    repeats the uninterrupted one exactly; resuming with other settings
    raises :class:`~tuckerlab.train.IncompatibleCheckpointError`.
    """

    method_name = "alternating"

    def __init__(
        self,
        specs,
        validation,
        *,
        epsilon: float = 1.0,
        beta: float = 0.0,
        budget=None,
        rounds: int = 20,
        epochs_per_round: int = 2,
        mu0: float = 1e-3,
        mu_growth: float = 1.25,
        tolerance: float = 0.0,
        tolerance_step: float = 0.05,
        selection=None,
        projection_options: Mapping | None = None,
        verbose: bool = False,
        data=None,
        validation_info: Mapping | None = None,
    ):
        self.epsilon, self.beta, self.tolerance0, self.tolerance_step = _check_settings(
            epsilon, beta, tolerance, tolerance_step, rounds, epochs_per_round)
        self.rounds, self.epochs_per_round = rounds, epochs_per_round
        self.mu0, self.mu_growth = _check_mu(mu0, mu_growth)
        self.budget: Budget | None = None if budget is None else parse_budget(budget)
        if specs is None:
            raise ValueError("specs: give the convolutions to compress, {layer name: ('tucker2', rank)}")
        super().__init__(
            specs, projection_options=projection_options, verbose=verbose, data=data,
            config={"epsilon": self.epsilon, "beta": self.beta, "budget": None if self.budget is None
                    else self.budget.spec, "rounds": rounds, "epochs_per_round": epochs_per_round, "mu0": self.mu0,
                    "mu_growth": self.mu_growth, "tolerance": self.tolerance0, "tolerance_step": self.tolerance_step,
                    "validation": dict(validation_info or {"images": validation.num_images("test")})},
        )
        bad = sorted(n for n, s in self.projector.items() if s.format != "tucker2")
        if bad:
            raise ValueError(f"specs: the alternating method chooses Tucker-2 ranks; layers {bad} have another format")
        self.validation = validation
        self.selection = selection
        self.min_step = self.tolerance_step / 16
        self.tolerance, self.step, self.frozen = self.tolerance0, self.tolerance_step, False
        self.mu = self.mu0
        self.round = 0
        self.reference: float | None = None
        self.stop_reason: str | None = None
        self.targets: dict[str, torch.Tensor] | None = None
        self.decompositions: dict | None = None  # factors of the last Tucker step (not checkpointed)
        self._anchors: list[torch.Tensor] | None = None
        self._costs: dict = {}
        self._val_on = None

    # ------------------------------------------------------------ the rule
    def _metric_index(self) -> int:
        return 1 if self.budget is not None and self.budget.metric == "macs" else 0

    def _layer_tolerances(self, delta: float) -> dict[str, float]:
        p = {i.name: float(i.dense_cost()[0]) for i in self.selection}
        mean = sum(p.values()) / len(p)
        return {n: min(MAX_TOLERANCE, delta * (p[n] / mean) ** self.beta) for n in self.projector.names}

    def _rule(self, tails, delta: float, caps: Mapping | None) -> dict[str, tuple[int, int]]:
        tables = cost_tables(self.selection, self._fmt, self._costs)
        k = self._metric_index()
        out = {}
        for n, tol in self._layer_tolerances(delta).items():
            t0, t1 = tails[n]
            table = tables[n]
            cap = None if caps is None else tuple(caps[n])
            got = _bound_ranks(t0, t1, _allowed(tol, t0[0]), table.full,
                               lambda ra, rb, table=table: table.at(ra, rb)[k], cap)
            out[n] = cap if got is None else got
        return out

    def _totals(self, ranks) -> tuple[int, int]:
        """The whole network's ``(params, MACs)`` at ``ranks`` (the other layers at their dense cost)."""
        tables = cost_tables(self.selection, self._fmt, self._costs)
        fixed = [float(t) - sum(float(i.dense_cost()[k]) for i in self.selection)
                 for k, t in enumerate((self.selection.total_params, self.selection.total_macs))]
        c = np.array([tables[n].at(*ranks[n]) for n in self.projector.names], dtype=np.float64).reshape(-1, 2).sum(0)
        return int(round(fixed[0] + c[0])), int(round(fixed[1] + c[1]))

    def _meets(self, ranks) -> bool:
        if self.budget is None:
            return False
        _, allowed, _ = smallest_costs(self.selection, cost_tables(self.selection, self._fmt, self._costs), self.budget)
        return self._totals(ranks)[self._metric_index()] <= allowed

    def _to_budget(self, tails, lo: float, hi: float, caps) -> tuple[float, dict]:
        """The smallest tolerance in ``(lo, hi]`` whose ranks meet the budget (those at ``hi`` do), by bisection."""
        best = self._rule(tails, hi, caps)
        for _ in range(40):
            if hi - lo <= 1e-6 * max(hi, 1e-12):
                break
            mid = 0.5 * (lo + hi)
            ranks = self._rule(tails, mid, caps)
            if self._meets(ranks):
                hi, best = mid, ranks
            else:
                lo = mid
        return hi, best

    # ----------------------------------------------------- the sub-problems
    def _tails(self, model) -> dict:
        with torch.no_grad():
            w = self.projector.weights(model)
            return {n: tucker2_tails(w[n]) for n in self.projector.names}

    def _tucker(self, trainer, ranks) -> None:
        """``T_l`` = HOOI of ``W_l`` at ``ranks`` (warm-started where a layer's rank did not change)."""
        ranks = _dist.broadcast_object({n: tuple(r) for n, r in ranks.items()})  # rank 0's on every process
        self.projector = self.projector.with_ranks(ranks)
        self._cache = None
        with torch.no_grad():
            weights = self.projector.weights(trainer.model)
            self.decompositions = self._decompose(weights)
            self.targets = self.projector.reconstruct(self.decompositions, trainer.model)
            _dist.broadcast_tensors(self.targets)  # rank 0's values, in place
        self._anchors = None

    def _val_accuracy(self, trainer, targets=None) -> float:
        """Validation accuracy of the dense weights, or with ``targets`` in their place (weights restored after)."""
        model = trainer.model
        if self._val_on is None or self._val_on[0] != trainer.device:
            self._val_on = (trainer.device, self.validation.to(trainer.device))
        with torch.no_grad():
            saved = {}
            if targets is not None:
                w = self.projector.weights(model)
                for n, t in targets.items():
                    saved[n] = w[n].detach().clone()
                    w[n].copy_(t)
            try:
                acc = evaluate(model, self._val_on[1], split="test", device=trainer.device)["accuracy"]
            finally:
                for n, t in saved.items():
                    w[n].copy_(t)
        return float(_dist.broadcast_object(float(acc)))  # one verdict on every process

    def _drop(self, acc: float) -> float:
        """Accuracy drop against the dense reference, in points; a gain counts as no drop."""
        return max(0.0, 100.0 * (self.reference - acc))

    def _can_loosen(self) -> bool:
        return not self.frozen and self.step >= self.min_step and self.tolerance < MAX_TOLERANCE

    # ------------------------------------------------------------- rounds
    def _start(self, trainer, epoch: int) -> None:
        """Round 0: the reference accuracy, then the Tucker step at the starting tolerance."""
        t0 = time.perf_counter()
        self.reference = self._val_accuracy(trainer)
        tails = self._tails(trainer.model)
        ranks = self._rule(tails, self.tolerance, None)
        action = "start"
        if self._meets(ranks):
            self.tolerance, ranks = self._to_budget(tails, 0.0, self.tolerance, None)
            self.frozen, action = True, "budget"
        self._tucker(trainer, ranks)
        acc = self._val_accuracy(trainer, self.targets)
        self._record(trainer, epoch, None, 0.0, action, None, None, acc, self.reference, tails,
                     time.perf_counter() - t0)

    def _round_step(self, trainer, epoch: int, logs) -> dict:
        t_start = time.perf_counter()
        model = trainer.model
        tails = self._tails(model)
        current = {n: tuple(r) for n, r in self.projector.ranks.items()}
        acc_dense = self._val_accuracy(trainer)
        tried = drop_tried = None
        action = "hold"
        if self._can_loosen():
            tried = min(self.tolerance + self.step, MAX_TOLERANCE)
            ranks = self._rule(tails, tried, current)
            reached = self._meets(ranks)
            if reached:
                tried, ranks = self._to_budget(tails, self.tolerance, tried, current)
            self._tucker(trainer, ranks)
            acc = self._val_accuracy(trainer, self.targets)
            drop_tried = self._drop(acc)
            if drop_tried < self.epsilon:
                self.tolerance, self.frozen = tried, reached
                self.step = self.step * 2
                action = "budget" if reached else "loosen"
            else:
                self.step, action = self.step / 2, "keep"
        if action in ("hold", "keep"):
            self._tucker(trainer, current)
            acc = self._val_accuracy(trainer, self.targets)
            if not self._drop(acc) < self.epsilon:  # the current ranks no longer hold: tighten (ranks may grow)
                self.tolerance = max(0.0, self.tolerance - self.step)
                self.frozen, action = False, "tighten"
                self._tucker(trainer, self._rule(tails, self.tolerance, None))
                acc = self._val_accuracy(trainer, self.targets)
        self.round += 1
        rec = self._record(trainer, epoch + 1, logs, self.mu, action, tried, drop_tried, acc, acc_dense, tails,
                           time.perf_counter() - t_start)
        changed = {n: tuple(r) for n, r in self.projector.ranks.items()} != current
        if not changed and not self._can_loosen():
            self.stop_reason = "stable"
        return rec

    def _record(self, trainer, epoch, logs, mu, action, tried, drop_tried, acc, acc_dense, tails, seconds) -> dict:
        ranks = {n: tuple(r) for n, r in self.projector.ranks.items()}
        params, macs = self._totals(ranks)
        k = self._metric_index()
        dense = float((self.selection.total_params, self.selection.total_macs)[k])
        total, layers = self._distances(trainer.model, self.targets)
        tols = self._layer_tolerances(self.tolerance)
        bound2 = norm2 = 0.0
        for n, (t0, t1) in tails.items():
            b = float(tail_at(t0, ranks[n][0]) + tail_at(t1, ranks[n][1]))
            bound2, norm2 = bound2 + b, norm2 + float(t0[0])
            layers[n].update(tolerance=tols[n], bound=math.sqrt(b / t0[0]) if t0[0] > 0 else 0.0)
        rec = {
            "round": self.round,
            "epoch": epoch,
            "mu": mu,
            "action": action,
            "tolerance": self.tolerance,
            "tried": tried,
            "step": self.step,
            "ranks": self._ranks(),
            "params": params,
            "macs": macs,
            "ratio": (params, macs)[k] / dense,
            "budget_met": self._meets(ranks) if self.budget is not None else None,
            "val_reference": self.reference,
            "val_dense": acc_dense,
            "val_decomposed": acc,
            "drop": self._drop(acc),
            "drop_tried": drop_tried,
            "bound": math.sqrt(bound2 / norm2) if norm2 > 0 else 0.0,
            "relative": total["relative"],
            "layers": layers,
            "train_loss": _metric(logs, "train_loss"),
            "test_acc": _metric(logs, "test_acc"),
            "seconds": seconds,
        }
        self.log.append(rec)
        self._write(
            f"round {rec['round']} (epoch {epoch}): {action}, tolerance {self.tolerance:.4g}, validation "
            f"{100 * acc:.2f}% (drop {rec['drop']:.2f} points), params {params} ({100 * rec['ratio']:.1f}% of "
            f"dense{'' if k == 0 else ' MACs'}), ranks {rec['ranks']}, {seconds:.2f} s")
        return rec

    # -------------------------------------------------------------- hooks
    def on_fit_begin(self, trainer) -> None:
        from tuckerlab.formats import get_format
        from tuckerlab.layer_selection import select_layers

        super().on_fit_begin(trainer)
        self._fmt = get_format("tucker2")
        if self.selection is None:
            self.selection = select_layers(trainer.model, names=self.projector.names, skip_first=False,
                                           skip_pointwise=False, input_size=tuple(trainer.data.image_shape))
        if self.budget is not None:
            check_budget(self.selection, self.budget, cache=self._costs)

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if self.targets is None:
            self._start(trainer, epoch)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """``mu/2 * sum_l ||W_l - T_l||^2`` (None before round 0)."""
        if self.targets is None:
            return None
        if self._anchors is None:
            self._anchors = [self.targets[n] for n in self.projector.names]
        return self._quadratic(model, self._anchors, self.mu)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        logs["mu"] = self.mu
        logs["alt_round"] = epoch // self.epochs_per_round + 1
        if (epoch + 1) % self.epochs_per_round:
            return
        rec = self._round_step(trainer, epoch, logs)
        logs["alt_tolerance"], logs["alt_drop"], logs["alt_ratio"] = rec["tolerance"], rec["drop"], rec["ratio"]
        self.mu *= self.mu_growth
        if self.stop_reason is not None:
            trainer.stop = True

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            **self._base_state(),
            "tolerance": self.tolerance,
            "step": self.step,
            "frozen": self.frozen,
            "mu": self.mu,
            "round": self.round,
            "reference": self.reference,
            "stop_reason": self.stop_reason,
            "targets": None if self.targets is None else dict(self.targets),
        }

    def load_state_dict(self, state: dict) -> None:
        self._load_base_state(state)
        self.tolerance, self.step = float(state["tolerance"]), float(state["step"])
        self.frozen, self.mu, self.round = bool(state["frozen"]), float(state["mu"]), int(state["round"])
        self.reference = None if state["reference"] is None else float(state["reference"])
        self.stop_reason = state["stop_reason"]
        self.targets = None if state["targets"] is None else dict(state["targets"])
        self.decompositions = None
        self._anchors = None
        self._warm_from(self.targets)

    # -------------------------------------------------------- the result
    def final_decompositions(self) -> dict | None:
        """The factors of the last Tucker step (after a resume with nothing left to train: of ``T`` again)."""
        if self.decompositions is None and self.targets is not None:
            self.decompositions = self.projector.decompose_tensors(self.targets)
        return self.decompositions

    def rank_selection(self) -> dict | None:
        last = self.log[-1] if self.log else None
        out = {"rule": "alternating", "epsilon": self.epsilon, "beta": self.beta,
               "budget": None if self.budget is None else self.budget.spec, "rounds": self.round,
               "max_rounds": self.rounds, "stop": self.stop_reason or "rounds",
               "validation": self._config["validation"]}
        if last:
            out.update(tolerance=last["tolerance"], drop=last["drop"], val_reference=last["val_reference"],
                       val_decomposed=last["val_decomposed"], budget_met=last["budget_met"], ratio=last["ratio"])
        return out

    def summary_line(self) -> str:
        last = self.log[-1] if self.log else None
        if not last:
            return ""
        eps = "off" if math.isinf(self.epsilon) else f"{self.epsilon:g}"
        return (f"{self.round} rounds ({self.stop_reason or 'round limit'}), tolerance {last['tolerance']:.4g}, "
                f"validation drop {last['drop']:.2f} points (epsilon {eps})")


# ---------------------------------------------------------------- driver
def alternating_compress(
    model: nn.Module,
    data,
    *,
    epsilon: float = 1.0,
    beta: float = 0.0,
    budget=None,
    rounds: int = 20,
    epochs_per_round: int = 2,
    mu0: float = 1e-3,
    mu_growth: float = 1.25,
    tolerance: float = 0.0,
    tolerance_step: float = 0.05,
    validation=0.1,
    lr: float = 0.01,
    schedule: str | Callable[[int], float] = "cosine",
    schedule_kwargs: Mapping | None = None,
    skip=None,
    projection_options: Mapping | None = None,
    from_scratch: bool = False,
    finetune_epochs: int = 5,
    finetune_lr: float = 0.005,
    finetune_schedule: str | Callable[[int], float] = "cosine",
    finetune_schedule_kwargs: Mapping | None = None,
    execution: str = "factorized",
    device: torch.device | str | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    callbacks: Iterable[Callback] = (),
    progress: bool = True,
    **fit_kwargs: Any,
) -> MethodResult:
    """Compress a trained model by accuracy-aware alternating Tucker (Liu et al., 2025).

    A validation split is held out from the training set
    (:func:`holdout_split`, seeded by ``seed``); a copy of the model is
    trained on the rest for at most ``rounds * epochs_per_round`` epochs
    with :class:`AlternatingCallback`, stopping once the ranks are stable;
    the factorized model is built from the last Tucker step's factors,
    evaluated on the test set and fine-tuned for ``finetune_epochs`` epochs
    on the same training part. The layers are those
    :func:`~tuckerlab.surgery.compress_model` compresses by default (the
    convolutions but the first and the 1x1 ones), less ``skip``.

    Parameters
    ----------
    model : torch.nn.Module
        A trained model (the accuracy checks compare with it).
    data : ImageDataset
        An in-memory data set (:func:`tuckerlab.data.load_dataset`).
    epsilon : float
        Largest validation-accuracy drop in percentage points (``>= 0``;
        ``math.inf``: no check, only the budget or the rounds stop the
        shrinking).
    beta : float
        Size weight ``>= 0`` of the layers' tolerances.
    budget : str or Budget, optional
        ``"params:0.3"``, ``"macs:0.4"``, ...: where the shrinking stops.
    rounds, epochs_per_round, mu0, mu_growth, tolerance, tolerance_step
        See :class:`AlternatingCallback`.
    validation : float or int
        Held-out fraction (or count) of the training images.
    lr, schedule, schedule_kwargs
        Peak learning rate and schedule of each round's training, restarted
        every round (:class:`~tuckerlab.methods.LStepSchedule`).
    skip : str, iterable of str or callable, optional
        Convolutions left dense.
    projection_options : mapping, optional
        HOOI options of every Tucker step and of the final model.
    from_scratch : bool
        The model is an untrained initialisation: no reference test accuracy
        (the accuracy checks then compare with the untrained network).
    finetune_epochs, finetune_lr, finetune_schedule, finetune_schedule_kwargs
        The short fine-tuning of the compressed model (0 epochs: none).
    execution, device, seed, checkpoint_dir, resume, callbacks, progress
        As in :func:`~tuckerlab.methods.lc_compress` (checkpoints in
        ``alternating/`` and ``finetune/``; an interrupted run resumes
        exactly).
    **fit_kwargs
        More arguments of :func:`tuckerlab.train.fit` for both phases.

    Returns
    -------
    MethodResult
        ``log`` (``"alternating_log"`` in ``to_dict()``) holds every round's
        ranks, tolerances, accuracies and sizes; ``rank_selection`` the
        settings, the split, the number of rounds, the stop reason and the
        fine-tuning epochs.

    Raises
    ------
    ValueError
        Before any training, naming the argument, its value and the accepted
        range: ``epsilon``, ``beta``, ``tolerance``, ``tolerance_step``,
        ``validation``, ``rounds``, ``epochs_per_round``, ``mu0``,
        ``mu_growth``, a bad or unreachable ``budget``, or no layer to
        compress.

    References
    ----------
    .. [1] C. Liu, K. Xie, J. Wen, G. Xie and K. Li, "An accuracy-preserving
       neural network compression via Tucker decomposition", IEEE Trans.
       Sustainable Computing 10(2):262-273, 2025,
       doi:10.1109/TSUSC.2024.3425962.

    Examples
    --------
    >>> result = alternating_compress(trained, load_dataset("cifar10"), epsilon=1.0,
    ...                               budget="params:0.3")  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    from tuckerlab.formats import get_format
    from tuckerlab.projection import Projector

    _check_settings(epsilon, beta, tolerance, tolerance_step, rounds, epochs_per_round)
    _check_mu(mu0, mu_growth)
    _check_positive_int(finetune_epochs, "finetune_epochs", 0)
    b = None if budget is None else parse_budget(budget)
    split = holdout_split(data, validation, seed)
    selection = LayerChoice(skip).select(model, tuple(data.image_shape))
    if not len(selection):
        raise ValueError(f"skip={skip!r}: no convolution of {type(model).__name__} to compress "
                         "(the first conv and 1x1 convs stay dense)")
    if b is not None:
        check_budget(selection, b)
    fmt = get_format("tucker2")
    specs = Projector.from_ranks(model, fmt, {i.name: fmt.full_rank(i.weight_shape) for i in selection}, selection,
                                 projection_options)
    callback = AlternatingCallback(
        specs, split.validation, epsilon=epsilon, beta=beta, budget=b, rounds=rounds,
        epochs_per_round=epochs_per_round, mu0=mu0, mu_growth=mu_growth, tolerance=tolerance,
        tolerance_step=tolerance_step, selection=selection, projection_options=projection_options,
        verbose=progress, data=split.train,
        validation_info={"images": int(split.val_indices.numel()), "of": data.num_images("train"),
                         "seed": int(seed), "split": "held out from the training set; not trained on"},
    )
    spe = _steps_per_epoch(split.train, fit_kwargs.get("batch_size", 128), fit_kwargs.get("max_steps_per_epoch"))
    inner = make_schedule(schedule, lr=lr, epochs=epochs_per_round, steps_per_epoch=spe, kwargs=schedule_kwargs)
    result = run_method(
        model, split.train, callback, method="alternating", phase="alternating", epochs=rounds * epochs_per_round,
        lr=lr, schedule=LStepSchedule(inner, epochs_per_round * spe), from_scratch=from_scratch,
        finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr, finetune_schedule=finetune_schedule,
        finetune_schedule_kwargs=finetune_schedule_kwargs, execution=execution, device=device, seed=seed,
        checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks, progress=progress,
        fit_kwargs=fit_kwargs, log_key="alternating_log", label="alternating dense", selection=selection,
    )
    result.rank_selection = {**(result.rank_selection or {}), "finetune_epochs": finetune_epochs}
    result.final_line = result.final_line + f"; fine-tuned {finetune_epochs} epochs"
    return result

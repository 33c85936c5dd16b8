r"""The learning-compression (LC) algorithm as hooks on the training engine.

LC (Carreira-Perpinan, 2017) compresses a network by solving

.. math:: \min_{W, \Theta} L(W) \quad \text{s.t.} \quad W = \Delta(\Theta)

with a quadratic penalty whose weight ``mu`` grows along a path
``mu_0 < mu_1 < ...``. For each ``mu`` it alternates

- the **L-step**: SGD on ``L(W) + mu/2 ||W - Delta(Theta)||^2`` with
  ``Theta`` fixed (the penalty is :meth:`LCCallback.penalty`, added to the loss
  by :func:`tuckerlab.train.fit`);
- the **C-step**: ``Theta = argmin ||W - Delta(Theta)||^2``, the projection
  of the current weights onto the compressed format
  (:mod:`tuckerlab.projection`), at the end of each L-step;

then ``mu *= growth``. Before the first L-step, ``Theta`` is the projection
of the starting weights (the "direct compression"). The compressed model is
the last ``Delta(Theta)``, built with factorized layers. Low-rank LC
(Idelbayev & Carreira-Perpinan, 2020) uses ``mu_0 = 1e-3``, growth 1.25,
50 L-steps of 15 epochs with lr ``7e-4 * 0.99^epoch`` restarted at every
L-step, Nesterov momentum 0.9, from a trained reference model.

:class:`LCCallback` is the algorithm; :func:`lc_compress` runs it with one
call of :func:`tuckerlab.train.fit` and returns the compressed model.

References
----------
M. A. Carreira-Perpinan, "Model compression as constrained optimization, with
application to neural nets. Part I: general framework", arXiv:1707.01209, 2017.

M. A. Carreira-Perpinan and Y. Idelbayev, "'Learning-compression' algorithms
for neural net pruning", CVPR 2018.

Y. Idelbayev and M. A. Carreira-Perpinan, "Low-rank compression of neural
nets: learning the rank of each layer", CVPR 2020.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from tuckerlab.train import Callback, make_schedule

from ._base import (
    RANK_UPDATES,
    LayerChoice,
    MethodResult,
    ProjectionCallback,
    _check_positive_int,
    _metric,
    run_method,
)

__all__ = ["LCCallback", "LCResult", "LStepSchedule", "lc_compress", "RANK_UPDATES", "RECIPE"]

#: The low-rank LC recipe of Idelbayev & Carreira-Perpinan (2020): 50 L-steps of 15 epochs, mu from 1e-3
#: times 1.25 per step, L-step lr 7e-4 decayed x0.99 per epoch and restarted at each step; fine-tuning at 1e-4.
#: The paper learns each layer's rank with a cost criterion; ``rank_params`` is the stand-in used when no rank
#: is given: the budget solver's ranks at this fraction of the parameters.
RECIPE = dict(n_steps=50, epochs_per_step=15, mu0=1e-3, mu_growth=1.25, lr=7e-4, finetune_lr=1e-4, rank_params=0.5)

#: The result of :func:`lc_compress` (one class for every method).
LCResult = MethodResult


def _check_mu(mu0, mu_growth) -> tuple[float, float]:
    try:
        mu0_, growth_ = float(mu0), float(mu_growth)
    except (TypeError, ValueError):
        raise ValueError(f"mu0 and mu_growth must be numbers, got mu0={mu0!r}, mu_growth={mu_growth!r}") from None
    if not (mu0_ > 0 and math.isfinite(mu0_)):
        raise ValueError(f"mu0 must be a finite number > 0 (the first penalty weight), got {mu0!r}")
    if not (growth_ >= 1 and math.isfinite(growth_)):
        raise ValueError(f"mu_growth must be a finite number >= 1 (mu never decreases in LC), got {mu_growth!r}")
    return mu0_, growth_


class LStepSchedule:
    """A learning-rate schedule restarted at every L-step.

    ``factor(step) = inner((step - offset) mod period)`` from step ``offset``
    on (the first L-step), and ``inner(step mod period)`` before it (the
    warm-up epochs, if any). Low-rank LC (Idelbayev & Carreira-Perpinan,
    2020) decays the rate by 0.99 per epoch and restarts the decay at every
    L-step: ``inner`` is then a :class:`~tuckerlab.train.schedules.StepDecay`
    with a milestone every epoch.

    Parameters
    ----------
    inner : callable
        ``inner(step_in_l_step) -> factor``, e.g. from
        :func:`tuckerlab.train.make_schedule` built for one L-step.
    period : int
        Steps per L-step (``epochs_per_step * steps_per_epoch``).
    offset : int
        Steps before the first L-step (warm-up).

    Notes
    -----
    Only plain values live in the instance ``__dict__`` (the LR scheduler
    saves it in checkpoints, which are loaded with ``weights_only=True``);
    ``inner`` is kept in a slot and described in ``repr`` so that a changed
    schedule is caught when a run is resumed.
    """

    __slots__ = ("_inner", "__dict__")

    def __init__(self, inner: Callable[[int], float], period: int, offset: int = 0):
        self._inner = inner
        self.period = _check_positive_int(int(period), "period")
        self.offset = _check_positive_int(int(offset), "offset", 0)
        self.inner = repr(inner)

    def __call__(self, step: int) -> float:
        s = step - self.offset if step >= self.offset else step
        return self._inner(s % self.period)

    def __repr__(self) -> str:
        return f"LStepSchedule({self.inner}, period={self.period}, offset={self.offset})"


class LCCallback(ProjectionCallback):
    r"""The LC algorithm as a :class:`~tuckerlab.train.Callback` of :func:`~tuckerlab.train.fit`.

    Epochs ``0 .. warmup_epochs - 1`` are plain training (no penalty). Then:
    the initial C-step (``Theta`` = projection of the current weights, and
    the ranks chosen by the ``rank`` selector if given), followed by L-steps of
    ``epochs_per_step`` epochs each, with the penalty
    ``mu/2 sum_l ||W_l - Delta(Theta_l)||^2``; at the end of each L-step a
    C-step projects every compressed layer again and ``mu *= mu_growth``.

    Explained in: chapter 5, "TT-LC: compressing while training, without pre-training"
    (notebooks/05_tt_lc.ipynb).

    Parameters
    ----------
    specs : Projector or mapping, optional
        ``{layer name: (format, rank)}`` (see :mod:`tuckerlab.projection`).
        Exclusive with ``rank``.
    mu0 : float
        Penalty weight of the first L-step (> 0); 1e-3 in Idelbayev &
        Carreira-Perpinan (2020).
    mu_growth : float
        ``mu`` is multiplied by it after every C-step (>= 1); 1.25 in the
        paper.
    epochs_per_step : int
        Epochs of one L-step (15 in the paper).
    warmup_epochs : int
        Epochs of plain training before the initial C-step (0 in classic LC,
        which starts from a trained model; see :func:`tuckerlab.methods.tt_lc`).
    format : str or Format
        Format of the convolutions when ``rank`` chooses the ranks.
    rank : rank selector, str, dict, rule or rank, optional
        Chooses the layers' ranks at the initial C-step (after the warm-up,
        from the weights, and the data for selectors that look at it):
        anything :func:`tuckerlab.rank.selectors.as_selector` takes.
        ``rank_selector`` is an older name for it.
    layers : LayerChoice, optional
        Which layers the selector ranks.
    rank_update : {"fixed", "shrink"}
        See :class:`~tuckerlab.methods._base.ProjectionCallback`.
    multipliers : bool
        Use the augmented Lagrangian (Carreira-Perpinan, 2017, section 4):
        Lagrange multipliers ``lambda``, the L-step on ``L(W) - lambda^T (W -
        Delta) + mu/2 ||W - Delta||^2``, the C-step projecting ``W -
        lambda/mu``, then ``lambda <- lambda - mu (W - Delta(Theta))``. ``W``
        then reaches the constrained optimum at a finite ``mu``, where the
        quadratic penalty (False, the default) only approaches it as ``mu ->
        inf``.
    projection_options : mapping, optional
        Decomposition options for every layer whose spec has none (see
        :class:`~tuckerlab.projection.Projector`), e.g. ``{"n_iter_max":
        10}``: HOOI from its HOSVD start reaches within 0.1 % of the
        converged projection error in a few sweeps, several times faster
        than the default of up to 100 sweeps (matters on GPUs, where small
        eigen-decompositions are slow). The compressed model is built with
        the same options.
    verbose : bool
        Print one line per C-step.

    Attributes
    ----------
    projector : Projector or None
        The layers, formats and (current) ranks.
    mu : float
        Penalty weight of the current (or next) L-step.
    lc_step : int
        Completed L-steps (each followed by its C-step).
    targets : dict of str to torch.Tensor or None
        ``Delta(Theta)`` per layer; None before the initial C-step.
    log : list of dict
        One record per C-step (``step`` 0 is the initial one): ``epoch``,
        ``mu`` (of the L-step just finished), ``train_loss``, ``test_acc``,
        ``distance`` and ``relative`` (``||W - Delta(Theta)|| / ||W||`` over
        all compressed layers after the C-step), ``distance_before`` (to the
        previous ``Delta(Theta)``, the one the L-step was pulled towards),
        ``layers`` (``{name: {"distance", "relative"}}``), ``ranks`` and
        ``seconds`` (C-step time).

    Notes
    -----
    The per-epoch ``logs`` (and so :class:`~tuckerlab.train.History`) get
    ``mu`` (0 during warm-up), ``lc_step`` (1-based L-step of the epoch, 0
    during warm-up) and, in epochs that end with a C-step,
    ``lc_distance``, ``lc_rel_distance`` and ``lc_distance_before``.

    SGD on the penalty alone is stable while ``lr * mu < 2 (1 + momentum)``;
    with a constant learning rate a fast-growing ``mu`` eventually breaks
    this, which is one reason LC decays (and restarts) the rate per L-step.

    :meth:`state_dict` holds ``mu``, the step count, the projected weights,
    the specs, the log and the selector's state, so a run resumed from a
    checkpoint repeats the uninterrupted one exactly; it also holds the
    hyper-parameters, and resuming with different ones raises
    :class:`~tuckerlab.train.IncompatibleCheckpointError`.

    References
    ----------
    .. [1] M. A. Carreira-Perpinan, "Model compression as constrained
       optimization, with application to neural nets. Part I: general
       framework", arXiv:1707.01209, 2017.
    .. [2] Y. Idelbayev and M. A. Carreira-Perpinan, "Low-rank compression
       of neural nets: learning the rank of each layer", CVPR 2020.
    """

    method_name = "LC"

    def __init__(
        self,
        specs=None,
        mu0: float = 1e-3,
        mu_growth: float = 1.25,
        epochs_per_step: int = 1,
        *,
        warmup_epochs: int = 0,
        format="tucker2",
        rank=None,
        rank_selector=None,
        layers: LayerChoice | None = None,
        rank_update: str = "fixed",
        multipliers: bool = False,
        projection_options: Mapping | None = None,
        verbose: bool = False,
        data=None,
    ):
        self.mu0, self.mu_growth = _check_mu(mu0, mu_growth)
        if not isinstance(multipliers, bool):
            raise ValueError(f"multipliers must be True or False, got {multipliers!r}")
        self.multipliers = multipliers
        self.epochs_per_step = _check_positive_int(epochs_per_step, "epochs_per_step")
        self.warmup_epochs = _check_positive_int(warmup_epochs, "warmup_epochs", 0)
        if rank_update not in RANK_UPDATES:
            raise ValueError(f"rank_update must be one of {RANK_UPDATES}, got {rank_update!r}")
        super().__init__(
            specs, format=format, rank=rank if rank is not None else rank_selector, layers=layers,
            rank_update=rank_update, projection_options=projection_options, verbose=verbose, data=data,
            config={
                "mu0": self.mu0,
                "mu_growth": self.mu_growth,
                "epochs_per_step": self.epochs_per_step,
                "warmup_epochs": self.warmup_epochs,
                "rank_update": rank_update,
                **({"multipliers": True} if multipliers else {}),
            },
        )
        self.mu = self.mu0
        self.lc_step = 0
        self.targets: dict[str, torch.Tensor] | None = None
        self.lam: dict[str, torch.Tensor] | None = None  # Lagrange multipliers (multipliers=True)
        self._anchors: list[torch.Tensor] | None = None
        self.decompositions: dict | None = None  # factors of the last C-step (not checkpointed)

    # ------------------------------------------------------------ helpers
    def _record(self, trainer, epoch: int, logs: dict | None, mu: float, before: float, seconds: float) -> dict:
        total, layers = self._distances(trainer.model, self.targets)
        rec = {
            "step": self.lc_step,
            "epoch": epoch,
            "mu": mu,
            "train_loss": _metric(logs, "train_loss"),
            "test_acc": _metric(logs, "test_acc"),
            "distance": total["distance"],
            "relative": total["relative"],
            "distance_before": before,
            "layers": layers,
            "ranks": self._ranks(),
            "seconds": seconds,
        }
        if self.lam is not None:
            rec["multiplier_norm"] = math.sqrt(sum(float(t.double().square().sum()) for t in self.lam.values()))
        self.log.append(rec)
        if self.verbose:
            what = "initial C-step" if rec["step"] == 0 else f"LC step {rec['step']}"
            loss = "" if math.isnan(rec["train_loss"]) else f", train loss {rec['train_loss']:.4f}"
            self._write(
                f"{what} (epoch {epoch}): mu {mu:.4g}{loss}, ||W - Delta(Theta)|| {rec['distance']:.4g} "
                f"({100 * rec['relative']:.2f}% of ||W||), C-step {seconds:.2f} s"
            )
        return rec

    def _c_step(self, model: nn.Module) -> None:
        """``Theta = argmin ||W - lambda/mu - Delta(Theta)||``: the factors and ``Delta(Theta)``; then lambda.

        Without multipliers ``lambda = 0``. With them, after the projection
        ``lambda <- lambda - mu (W - Delta(Theta))`` (augmented Lagrangian).
        """
        names = self.projector.names
        weights = self.projector.weights(model)
        with torch.no_grad():
            if self.lam is not None:
                shifted = dict(zip(names, torch._foreach_sub([weights[n] for n in names],
                                                             [self.lam[n] / self.mu for n in names])))
                self.decompositions = self._decompose(shifted)
            else:
                self.decompositions = self._decompose(weights)
            self.targets = self.projector.reconstruct(self.decompositions, model)
            if self.multipliers:
                if self.lam is None:  # the initial C-step: lambda starts at 0
                    self.lam = {n: torch.zeros_like(self.targets[n]) for n in names}
                else:
                    for n in names:
                        self.lam[n].sub_(self.mu * (weights[n] - self.targets[n]))
        self._sync_tensors(targets=self.targets, multipliers=self.lam)  # rank 0's on every process
        self._anchors = None

    def _initial_c_step(self, trainer, epoch: int) -> None:
        t0 = time.perf_counter()
        self._choose_ranks(trainer)
        self._c_step(trainer.model)
        self._record(trainer, epoch, None, 0.0, math.nan, time.perf_counter() - t0)

    # -------------------------------------------------------------- hooks
    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if self.targets is None and epoch >= self.warmup_epochs:
            self._initial_c_step(trainer, epoch)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """``mu/2 * sum_l ||W_l - Delta(Theta_l) - lambda_l/mu||^2`` (None before the initial C-step).

        Up to a constant this is ``-lambda^T (W - Delta) + mu/2 ||W - Delta||^2``,
        the augmented Lagrangian's L-step; without multipliers ``lambda = 0``.
        """
        if self.targets is None:
            return None
        if self._anchors is None:
            names = self.projector.names
            self._anchors = [self.targets[n] if self.lam is None else self.targets[n] + self.lam[n] / self.mu
                             for n in names]
        return self._quadratic(model, self._anchors, self.mu)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        in_lc = epoch >= self.warmup_epochs and self.targets is not None
        logs["mu"] = self.mu if in_lc else 0.0
        logs["lc_step"] = (epoch - self.warmup_epochs) // self.epochs_per_step + 1 if in_lc else 0
        if not in_lc or (epoch - self.warmup_epochs + 1) % self.epochs_per_step:
            return
        model = trainer.model
        t0 = time.perf_counter()
        before = self.projector.distances(model, self.targets)["total"]["distance"]
        self._update_ranks(trainer)
        self._c_step(model)
        mu = self.mu
        self.lc_step += 1
        rec = self._record(trainer, epoch + 1, logs, mu, before, time.perf_counter() - t0)
        logs["lc_distance"] = rec["distance"]
        logs["lc_rel_distance"] = rec["relative"]
        logs["lc_distance_before"] = before
        self.mu = mu * self.mu_growth
        self._anchors = None

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            **self._base_state(),
            "mu": self.mu,
            "lc_step": self.lc_step,
            "targets": None if self.targets is None else dict(self.targets),
            **({"multipliers": None if self.lam is None else dict(self.lam)} if self.multipliers else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self._load_base_state(state)
        self.mu = float(state["mu"])
        self.lc_step = int(state["lc_step"])
        self.targets = None if state["targets"] is None else {n: t for n, t in state["targets"].items()}
        lam = state.get("multipliers")
        self.lam = None if lam is None else {n: t.clone() for n, t in lam.items()}
        self._anchors = None
        self.decompositions = None
        self._warm_from(self.targets)

    # -------------------------------------------------------- the result
    def final_decompositions(self) -> dict | None:
        """The factors of the last C-step: the compressed model is ``Delta(Theta)`` itself.

        After a resume that had nothing left to train, ``Delta(Theta)`` (kept
        in the checkpoint) is decomposed again: it has the ranks exactly.
        """
        if self.decompositions is None and self.targets is not None:
            self.decompositions = self.projector.decompose_tensors(self.targets)
        return self.decompositions

    def summary_line(self) -> str:
        last = self.log[-1] if self.log else None
        return (f"final ||W - Delta(Theta)|| = {last['distance']:.4g} ({100 * last['relative']:.2f}% of ||W||), "
                f"mu = {last['mu']:.4g}") if last else ""

# ---------------------------------------------------------------- driver
def _steps_per_epoch(data, batch_size: int, max_steps_per_epoch: int | None) -> int:
    """Steps per epoch as :func:`tuckerlab.train.fit` counts them."""
    steps = data.num_images("train") // batch_size
    if max_steps_per_epoch is not None:
        steps = max(1, min(steps, int(max_steps_per_epoch)))
    return steps


def lc_compress(
    model: nn.Module,
    data,
    specs=None,
    *,
    n_steps: int,
    epochs_per_step: int = 1,
    mu0: float = 1e-3,
    mu_growth: float = 1.25,
    lr: float = 7e-4,
    schedule: str | Callable[[int], float] | None = None,
    schedule_kwargs: Mapping | None = None,
    schedule_scope: str = "lstep",
    warmup_epochs: int = 0,
    format="tucker2",
    rank=None,
    rank_selector=None,
    skip=None,
    include_linear: bool = False,
    rank_update: str = "fixed",
    multipliers: bool = False,
    projection_options: Mapping | None = None,
    from_scratch: bool = False,
    method: str = "lc",
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-4,
    finetune_schedule: str = "cosine",
    finetune_schedule_kwargs: Mapping | None = None,
    execution: str = "factorized",
    device: torch.device | str | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    callbacks: Iterable[Callback] = (),
    progress: bool = True,
    **fit_kwargs: Any,
) -> LCResult:
    """Compress a model by the LC algorithm: one :func:`~tuckerlab.train.fit` with :class:`LCCallback`.

    The model passed in is not modified: a copy is trained. After
    ``warmup_epochs + n_steps * epochs_per_step`` epochs, the compressed
    model is built with factorized layers from the final projection
    (:func:`tuckerlab.projection.to_factorized`) and optionally fine-tuned
    (a second ``fit``, on the factors).

    Explained in: chapter 6, "ADMM: training towards low tensor-train rank"
    (notebooks/06_admm_tt.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        A trained reference model (classic LC) or a fresh initialisation
        (``from_scratch=True``).
    data : ImageDataset
        From :func:`tuckerlab.data.load_dataset`.
    specs : Projector or mapping, optional
        ``{layer name: (format, rank)}``. Exclusive with ``rank``.
    n_steps : int
        Number of L-steps (each followed by a C-step); 50 in Idelbayev &
        Carreira-Perpinan (2020).
    epochs_per_step : int
        Epochs per L-step (15 in the paper).
    mu0, mu_growth : float
        Penalty path ``mu_k = mu0 * mu_growth**k`` (1e-3 and 1.25 in the paper).
    lr : float
        Peak learning rate of the L-steps (7e-4 in the paper, for a trained
        model).
    schedule : str or callable, optional
        Learning-rate schedule (see :func:`tuckerlab.train.fit`). None: the
        paper's ``0.99`` decay per epoch (``"step"`` with a milestone every
        epoch).
    schedule_kwargs : mapping, optional
        Arguments of a named schedule.
    schedule_scope : {"lstep", "run"}
        ``"lstep"``: the schedule spans one L-step and restarts at every
        L-step (:class:`LStepSchedule`; a callable is then called with the
        step within the L-step). ``"run"``: it spans the whole LC phase as in
        a plain ``fit`` (TT-LC's exponential cyclic rate).
    warmup_epochs : int
        Plain-training epochs before the initial C-step.
    format : str or Format
        Format of the convolutions with ``rank`` (linear layers, with
        ``include_linear``, get ``"lowrank"``).
    rank : rank selector, str, dict, rank rule or rank, optional
        The ranks of the layers :func:`~tuckerlab.surgery.compress_model`
        would compress (``skip``, ``include_linear``): ``"params:0.5"``,
        ``"evbmf"``, a registered selector, a dict, a rule or one rank
        (:func:`tuckerlab.rank.selectors.as_selector`), chosen at the
        initial C-step. ``rank_selector`` is an older name for it.
    skip, include_linear
        Which layers a ``rank`` selector ranks.
    rank_update : {"fixed", "shrink"}
        See :class:`LCCallback`.
    multipliers : bool
        The augmented-Lagrangian form (see :class:`LCCallback`).
    projection_options : mapping, optional
        Decomposition options of every C-step (see :class:`LCCallback`).
    from_scratch : bool
        The model passed in is an untrained initialisation (TT-LC: no
        pre-training): its test accuracy is not measured as a reference.
        The weights are used as they are; build the model with
        :func:`tuckerlab.models.get_model` under a seed.
    method : str
        The method's name in the result (``"tt-lc"`` for TT-LC).
    finetune_epochs : int
        Epochs of fine-tuning of the compressed model (0: none).
    finetune_lr, finetune_schedule, finetune_schedule_kwargs
        Its learning rate, schedule and the schedule's arguments.
    execution : {"factorized", "reconstructed"}
        Execution mode of the compressed model's layers.
    device : torch.device or str, optional
        Default: CUDA when available. The C-steps run there too.
    seed : int
        Seed of both ``fit`` calls.
    checkpoint_dir : path-like, optional
        Checkpoints of the LC phase (``lc/``) and of the fine-tuning
        (``finetune/``); an interrupted run resumes exactly.
    resume : bool
        Resume from ``checkpoint_dir`` when it holds a checkpoint.
    callbacks : iterable of Callback
        More hooks for the LC phase (logging, early stopping, ...).
    progress : bool
        Progress bars and one line per C-step.
    **fit_kwargs
        More arguments of :func:`tuckerlab.train.fit` for both phases
        (``batch_size``, ``weight_decay``, ``momentum``, ``nesterov``,
        ``label_smoothing``, ``max_steps_per_epoch``, ...). Weight decay
        applies to every parameter, BatchNorm and biases included (the
        engine's default); ``decay_bn_bias=False`` exempts them. It acts on
        ``W`` beside the penalty, pulling the L-step towards 0 as well as
        towards ``Delta(Theta)``.

    Returns
    -------
    MethodResult
        With the C-steps' log as ``log`` (``"lc_log"`` in ``to_dict()``).

    Raises
    ------
    ValueError
        For bad specs (unknown layer or format, rank out of range: checked
        before any training), ``mu0 <= 0``, ``mu_growth < 1`` or bad counts.

    References
    ----------
    See :class:`LCCallback`.

    Examples
    --------
    >>> result = lc_compress(trained, data, format="tucker2", rank="params:0.5", n_steps=50,
    ...                      epochs_per_step=15)  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    _check_positive_int(n_steps, "n_steps")
    _check_positive_int(finetune_epochs, "finetune_epochs", 0)
    if specs is not None and (rank is not None or rank_selector is not None):
        raise ValueError("give specs ({layer: (format, rank)} or a Projector) or rank (a selector), not both")
    if schedule_scope not in ("lstep", "run"):
        raise ValueError(f"schedule_scope must be 'lstep' or 'run', got {schedule_scope!r}")
    callback = LCCallback(
        specs, mu0, mu_growth, epochs_per_step, warmup_epochs=warmup_epochs, format=format, rank=rank,
        rank_selector=rank_selector, layers=LayerChoice(skip, include_linear), rank_update=rank_update,
        multipliers=multipliers, projection_options=projection_options, verbose=progress, data=data,
    )
    epochs = warmup_epochs + n_steps * epochs_per_step
    if schedule_scope == "lstep":
        spe = _steps_per_epoch(data, fit_kwargs.get("batch_size", 128), fit_kwargs.get("max_steps_per_epoch"))
        if schedule is None:
            schedule = "step"
            schedule_kwargs = {"milestones": list(range(1, epochs_per_step)), "gamma": 0.99, **(schedule_kwargs or {})}
        inner = make_schedule(schedule, lr=lr, epochs=epochs_per_step, steps_per_epoch=spe, kwargs=schedule_kwargs)
        run_schedule, run_kwargs = LStepSchedule(inner, epochs_per_step * spe, warmup_epochs * spe), None
    else:
        run_schedule, run_kwargs = (schedule or "cosine"), schedule_kwargs
    return run_method(
        model, data, callback, method=method, phase="lc", epochs=epochs, lr=lr, schedule=run_schedule,
        schedule_kwargs=run_kwargs, from_scratch=from_scratch, finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr, finetune_schedule=finetune_schedule,
        finetune_schedule_kwargs=finetune_schedule_kwargs, execution=execution, device=device, seed=seed,
        checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks, progress=progress,
        fit_kwargs=fit_kwargs, log_key="lc_log", label="LC dense",
    )

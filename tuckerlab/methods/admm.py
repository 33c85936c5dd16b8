r"""ADMM training towards low TT (or Tucker) rank (Yin, Sui, Liao & Yuan, CVPR 2021).

Yin et al. train the network in its **dense** form under the constraint that
each compressed layer's weight has the chosen tensor-train (or Tucker) ranks,

.. math:: \min_W L(W) \quad \text{s.t.} \quad W_l \in \mathcal{C}_l
          = \{\text{weights of TT rank} \le r_l\},

and only decompose the weights at the end. With a copy ``Z`` of the
constrained weights, ``min L(W) + sum_l g_l(Z_l)`` subject to ``W = Z``
(``g_l`` the indicator of ``C_l``), the scaled-form augmented Lagrangian is
``L(W) + sum_l g_l(Z_l) + rho/2 ||W_l - Z_l + U_l||^2 - rho/2 ||U_l||^2``
(Boyd et al., 2011, section 3.1.1), and ADMM alternates

1. the **W-update** ``W = argmin L(W) + rho/2 sum_l ||W_l - Z_l + U_l||^2``,
   approximated by SGD: the penalty is :meth:`ADMMCallback.penalty`, added
   to the loss by :func:`tuckerlab.train.fit`, for one epoch (the authors'
   code) or ``k`` optimizer steps;
2. the **Z-update** ``Z_l = Pi_l(W_l + U_l)``, the projection onto the
   format at the layer's rank (TT-SVD for TT, HOOI for Tucker;
   :mod:`tuckerlab.projection`);
3. the **dual update** ``U_l = U_l + W_l - Z_l``.

It starts from ``Z = Pi(W)``, ``U = 0``. Progress is read from the primal
residual ``||W - Z||`` and the dual residual ``rho ||Z - Z_prev||`` (Boyd et
al., 2011, section 3.3). ``C_l`` is not convex, so nothing guarantees
convergence; in practice ``||W - Z||`` shrinks and the dense weights end
close to the low-rank set, so that decomposing them (the compressed model is
built from the final ``W`` with the same ranks) loses little accuracy, which
fine-tuning then recovers.

``rho`` may grow by ``rho_growth`` after every update (capped by
``rho_max``). The authors keep ``rho = 1e-3`` and leave ``U`` as it is when
``rho`` changes; Boyd et al. (2011, section 3.4.1) rescale the scaled dual
``U`` by ``rho_old / rho_new`` so that the unscaled dual ``rho U`` is kept
(``rescale_dual=True``).

The authors' recipe (their repository): an ADMM phase of 200 epochs, SGD with
learning rate 0.1 multiplied by 0.2 every 55 epochs, batch 128, label
smoothing 0.1, ``rho = 1e-3``; then fine-tuning of the TT (or Tucker) model
for 200 epochs at 0.005 multiplied by 0.4 every 55 epochs. Their ranks are
set by hand per model; here they come from a rank specification
(``"params:0.33"`` for about 3x fewer parameters, ``"evbmf"``, a dict, ...)
read from the model before training.

:class:`ADMMCallback` is the algorithm; :func:`admm_compress` runs it with one
call of :func:`tuckerlab.train.fit` and returns the compressed model.

References
----------
M. Yin, Y. Sui, S. Liao and B. Yuan, "Towards efficient tensor
decomposition-based DNN model compression with optimization framework",
CVPR 2021, arXiv:2107.12422.

S. Boyd, N. Parikh, E. Chu, B. Peleato and J. Eckstein, "Distributed
optimization and statistical learning via the alternating direction method of
multipliers", Foundations and Trends in Machine Learning 3(1):1-122, 2011.
"""
from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from tuckerlab.train import Callback

from ._base import LayerChoice, MethodResult, ProjectionCallback, _check_positive_int, _metric, run_method

__all__ = ["ADMMCallback", "ADMMResult", "admm_compress", "authors_step", "RECIPE"]

#: The authors' recipe (Yin et al., 2021, their repository): 200 ADMM epochs at lr 0.1 (x0.2 every 55 of 200
#: epochs), rho = 1e-3, label smoothing 0.1, then 200 fine-tuning epochs at 0.005 (x0.4 every 55 of 200).
RECIPE = dict(epochs=200, lr=0.1, rho=1e-3, label_smoothing=0.1, finetune_epochs=200, finetune_lr=0.005)

#: The result of :func:`admm_compress` (one class for every method).
ADMMResult = MethodResult

#: Milestones of the authors' step schedules, as fractions of the run (every 55 of 200 epochs).
_AUTHORS_MILESTONES = (55 / 200, 110 / 200, 165 / 200)


def _check_number(value, name: str, accepted: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite real number passing ``ok``; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


def _check_rho(rho, rho_growth, rho_max) -> tuple[float, float, float | None]:
    rho_ = _check_number(rho, "rho", "a finite number >= 0 (the penalty weight; 0 trains without it)",
                         lambda v: v >= 0)
    growth = _check_number(rho_growth, "rho_growth", "a finite number >= 1 (rho never decreases)",
                           lambda v: v >= 1)
    if rho_max is not None:
        rho_max = _check_number(rho_max, "rho_max", f"None or a finite number >= rho (= {rho_!r})",
                                lambda v: v >= rho_)
    return rho_, growth, rho_max


def _check_update_every(update_every):
    if update_every == "epoch":
        return "epoch"
    if isinstance(update_every, bool) or not isinstance(update_every, numbers.Integral) or update_every < 1:
        raise ValueError(
            f"update_every must be 'epoch' or an integer >= 1 (optimizer steps between updates), got {update_every!r}"
        )
    return int(update_every)


class ADMMCallback(ProjectionCallback):
    r"""ADMM towards low-rank weights as a :class:`~tuckerlab.train.Callback` of :func:`~tuckerlab.train.fit`.

    Before the first epoch: ``Z = Pi(W)`` (the projection of every compressed
    layer onto its format and rank; the ranks chosen by ``rank_selector`` if
    given) and ``U = 0``. Every step adds ``rho/2 sum_l ||W_l - Z_l +
    U_l||^2`` to the loss. After every epoch (or every ``update_every``
    optimizer steps): ``Z = Pi(W + U)``, ``U = U + W - Z``, then ``rho *=
    rho_growth`` (at most ``rho_max``).

    Parameters
    ----------
    specs : Projector or mapping, optional
        ``{layer name: (format, rank)}`` (see :mod:`tuckerlab.projection`);
        any format of :data:`tuckerlab.projection.FORMATS`. May be None when
        ``rank_selector`` chooses the layers and ranks.
    rho : float
        Penalty weight, ``>= 0`` (1e-3 in Yin et al., 2021). With 0 the run
        is plain training (the penalty is left out; the projections and the
        log still run).
    rho_growth : float
        ``rho`` is multiplied by it after every update (``>= 1``; 1 keeps
        it constant, as the authors do).
    rho_max : float, optional
        Cap on ``rho`` (``>= rho``).
    update_every : "epoch" or int
        When the Z- and U-updates run: after every epoch (the authors'
        choice), or after every ``k`` optimizer steps (counted over the
        whole run).
    rescale_dual : bool
        When ``rho`` changes, multiply ``U`` by ``rho_old / rho_new`` (Boyd
        et al., 2011, section 3.4.1: the unscaled dual ``rho U`` is kept).
        False (default): ``U`` is left as it is, as in the authors' code.
    format : str or Format
        Format of the convolutions when ``rank`` chooses the ranks.
    rank : rank selector, str, dict, rule or rank, optional
        Chooses the ranks before the first projection (unless ``specs``
        gives them) and, with ``rank_update="shrink"``, proposes new ranks at
        every update (:class:`~tuckerlab.methods._base.ProjectionCallback`).
        ``rank_selector`` is an older name for it.
    layers : LayerChoice, optional
        Which layers the selector ranks.
    rank_update : {"fixed", "shrink"}
        See :class:`~tuckerlab.methods._base.ProjectionCallback`.
    projection_options : mapping, optional
        Decomposition options for every layer whose spec has none (see
        :class:`~tuckerlab.projection.Projector`), e.g. ``{"n_iter_max":
        10}`` to bound HOOI for Tucker formats.
    verbose : bool
        Print one line per update.

    Attributes
    ----------
    projector : Projector or None
        The layers, formats and ranks.
    rho : float
        Penalty weight of the current (or next) steps.
    updates : int
        Completed Z/U-updates (the initial projection not counted).
    Z : dict of str to torch.Tensor or None
        The projected weights, on the weights' device; None before the
        initial projection.
    U : dict of str to torch.Tensor or None
        The scaled dual variables.
    log : list of dict
        One record per update (``update`` 0 is the initial projection):
        ``epoch`` (1-based epoch during or after which it ran, 0 before
        training), ``step`` (global optimizer step), ``rho`` (of the steps
        before the update; 0 for the initial projection), ``primal`` and
        ``relative`` (``||W - Z||`` over all compressed layers after the
        update, and its ratio to ``||W||``), ``dual`` (``rho ||Z -
        Z_prev||``, NaN for the initial projection), ``layers`` (``{name:
        {"primal", "relative", "dual"}}``), ``ranks``, ``train_loss`` and
        ``test_acc`` (of the epoch, when the update ran at its end; NaN
        otherwise) and ``seconds`` (time of the update, the projection
        dominating).

    Notes
    -----
    The per-epoch ``logs`` (and so :class:`~tuckerlab.train.History`) get
    ``rho`` (of the epoch's last step) and ``admm_updates`` (completed
    updates) and, in epochs in which an update ran, the residuals of the
    last one: ``admm_primal``, ``admm_rel_primal`` and ``admm_dual``.

    The penalty pulls ``W`` towards ``Z - U``; this anchor is computed once
    per update, so each step costs one fused subtraction and norm over the
    compressed layers.

    :meth:`state_dict` holds ``rho``, the update count, ``Z``, ``U``, the
    specs, the log and the selector's state, so a run resumed from a
    checkpoint repeats the uninterrupted one exactly; it also holds the
    hyper-parameters, and resuming with different ones raises
    :class:`~tuckerlab.train.IncompatibleCheckpointError`.

    References
    ----------
    .. [1] M. Yin, Y. Sui, S. Liao and B. Yuan, "Towards efficient tensor
       decomposition-based DNN model compression with optimization
       framework", CVPR 2021, arXiv:2107.12422.
    .. [2] S. Boyd, N. Parikh, E. Chu, B. Peleato and J. Eckstein,
       "Distributed optimization and statistical learning via the
       alternating direction method of multipliers", Foundations and Trends
       in Machine Learning 3(1):1-122, 2011.
    """

    method_name = "ADMM"

    def __init__(
        self,
        specs=None,
        rho: float = 1e-3,
        rho_growth: float = 1.0,
        *,
        rho_max: float | None = None,
        update_every: str | int = "epoch",
        rescale_dual: bool = False,
        format="tt",
        rank=None,
        rank_selector=None,
        layers: LayerChoice | None = None,
        rank_update: str = "fixed",
        projection_options: Mapping | None = None,
        verbose: bool = False,
        data=None,
    ):
        self.rho0, self.rho_growth, self.rho_max = _check_rho(rho, rho_growth, rho_max)
        self.update_every = _check_update_every(update_every)
        self.rescale_dual = bool(rescale_dual)
        super().__init__(
            specs, format=format, rank=rank if rank is not None else rank_selector, layers=layers,
            rank_update=rank_update, projection_options=projection_options, verbose=verbose, data=data,
            config={
                "rho": self.rho0,
                "rho_growth": self.rho_growth,
                "rho_max": self.rho_max,
                "update_every": self.update_every,
                "rescale_dual": self.rescale_dual,
            },
        )
        self.rho = self.rho0
        self.updates = 0
        self.Z: dict[str, torch.Tensor] | None = None
        self.U: dict[str, torch.Tensor] | None = None
        self._anchors: list[torch.Tensor] | None = None  # Z - U in projector order
        self._step_rho = self.rho  # rho of the latest training step

    # ------------------------------------------------------------ internals
    def _set_variables(self, z: dict[str, torch.Tensor] | None, u: dict[str, torch.Tensor] | None) -> None:
        self.Z, self.U = z, u
        if z is None:
            self._anchors = None
            return
        names = self.projector.names
        with torch.no_grad():
            self._anchors = torch._foreach_sub([z[n] for n in names], [u[n] for n in names])

    def _next_rho(self, rho: float) -> float:
        nxt = rho * self.rho_growth
        return nxt if self.rho_max is None else min(nxt, self.rho_max)

    def _record(self, trainer, epoch: int, rho: float, dual: list[float] | None, seconds: float) -> dict:
        total, layers = self._distances(trainer.model, self.Z, key="primal")
        names = self.projector.names
        duals = [rho * d for d in dual] if dual is not None else [math.nan] * len(names)
        for n, d in zip(names, duals):
            layers[n]["dual"] = d
        rec = {
            "update": self.updates,
            "epoch": epoch,
            "step": trainer.step,
            "rho": rho,
            "primal": total["distance"],
            "relative": total["relative"],
            "dual": math.sqrt(sum(d * d for d in duals)),
            "layers": layers,
            "ranks": self._ranks(),
            "train_loss": math.nan,
            "test_acc": math.nan,
            "seconds": seconds,
        }
        self.log.append(rec)
        what = "initial projection" if rec["update"] == 0 else f"ADMM update {rec['update']}"
        self._write(
            f"{what} (epoch {epoch}, step {rec['step']}): rho {rho:.4g}, ||W - Z|| {rec['primal']:.4g} "
            f"({100 * rec['relative']:.2f}% of ||W||), dual residual {rec['dual']:.4g}, {seconds:.2f} s"
        )
        return rec

    def _initial_projection(self, trainer, epoch: int) -> None:
        model = trainer.model
        t0 = time.perf_counter()
        self._choose_ranks(trainer)
        weights = self.projector.weights(model)
        with torch.no_grad():
            z = self.projector.reconstruct(self._decompose(weights), weights)
        self._sync_tensors(Z=z)  # rank 0's on every process
        self._set_variables(z, {n: torch.zeros_like(t) for n, t in z.items()})
        self._record(trainer, epoch, 0.0, None, time.perf_counter() - t0)

    def _update(self, trainer, epoch: int) -> None:
        """``Z = Pi(W + U)``, ``U = U + W - Z``, then the next ``rho``."""
        t0 = time.perf_counter()
        self._update_ranks(trainer)
        names = self.projector.names
        weights = self._weights(trainer.model)
        z_old = [self.Z[n] for n in names]
        u_old = [self.U[n] for n in names]
        with torch.no_grad():
            shifted = dict(zip(names, torch._foreach_add(weights, u_old)))
            z = self.projector.reconstruct(self._decompose(shifted), shifted)
            z_new = [z[n] for n in names]
            u_new = torch._foreach_add(u_old, torch._foreach_sub(weights, z_new))
            rho = self.rho
            self.rho = self._next_rho(rho)
            if self.rescale_dual and self.rho != rho:
                torch._foreach_mul_(u_new, rho / self.rho)
            self._sync_tensors(Z=z, U=dict(zip(names, u_new)))  # rank 0's on every process
            moved = torch.stack(
                [torch.linalg.vector_norm(d.double()) for d in torch._foreach_sub(z_new, z_old)]
            ).cpu().tolist()
        self._set_variables(z, dict(zip(names, u_new)))
        self.updates += 1
        self._record(trainer, epoch, rho, moved, time.perf_counter() - t0)

    # -------------------------------------------------------------- hooks
    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if self.Z is None:
            self._initial_projection(trainer, epoch)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """``rho/2 * sum_l ||W_l - Z_l + U_l||^2`` (None before the initial projection and when ``rho = 0``)."""
        if self._anchors is None or self.rho == 0:
            return None
        return self._quadratic(model, self._anchors, self.rho)

    def on_step_end(self, trainer, step: int) -> None:
        self._step_rho = self.rho
        if self.update_every != "epoch" and step % self.update_every == 0:
            self._update(trainer, trainer.epoch + 1)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.update_every == "epoch":
            self._update(trainer, epoch + 1)
        last = self.log[-1]
        if last["update"] > 0 and last["step"] == trainer.step:  # ran at the end of this epoch
            last["train_loss"], last["test_acc"] = _metric(logs, "train_loss"), _metric(logs, "test_acc")
        logs["rho"] = self._step_rho
        logs["admm_updates"] = self.updates
        if last["update"] > 0 and last["epoch"] == epoch + 1:
            logs["admm_primal"] = last["primal"]
            logs["admm_rel_primal"] = last["relative"]
            logs["admm_dual"] = last["dual"]

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            **self._base_state(),
            "rho": self.rho,
            "updates": self.updates,
            "Z": None if self.Z is None else dict(self.Z),
            "U": None if self.U is None else dict(self.U),
        }

    def load_state_dict(self, state: dict) -> None:
        self._load_base_state(state)
        self.rho = float(state["rho"])
        self.updates = int(state["updates"])
        z, u = state["Z"], state["U"]
        self._set_variables(None if z is None else dict(z), None if u is None else dict(u))
        self._warm_from(self.Z)

    def summary_line(self) -> str:
        last = self.log[-1] if self.log else None
        return (f"final ||W - Z|| = {last['primal']:.4g} ({100 * last['relative']:.2f}% of ||W||), "
                f"rho = {last['rho']:.4g}") if last else ""


# ---------------------------------------------------------------- driver
def authors_step(epochs: int, gamma: float, kwargs: Mapping | None = None) -> dict:
    """Arguments of the ``"step"`` schedule of Yin et al.'s code, scaled to a run of ``epochs`` epochs.

    Their runs multiply the learning rate by ``gamma`` every 55 of 200 epochs
    (0.2 in the ADMM phase, 0.4 in fine-tuning); here the milestones are the
    same fractions of ``epochs``. ``kwargs`` overrides any entry.

    Explained in: chapter 6, "ADMM: training towards low tensor-train rank"
    (notebooks/06_admm_tt.ipynb).

    Examples
    --------
    >>> authors_step(20, 0.4)
    {'milestones': [5.5, 11.0, 16.5], 'gamma': 0.4}
    """
    return {"milestones": [f * epochs for f in _AUTHORS_MILESTONES], "gamma": gamma, **dict(kwargs or {})}


def admm_compress(
    model: nn.Module,
    data,
    specs=None,
    *,
    rank=None,
    format: str = "tt",
    epochs: int,
    rho: float = 1e-3,
    rho_growth: float = 1.0,
    rho_max: float | None = None,
    update_every: str | int = "epoch",
    rescale_dual: bool = False,
    lr: float = 0.1,
    schedule: str | Callable[[int], float] = "step",
    schedule_kwargs: Mapping | None = None,
    label_smoothing: float = 0.1,
    skip=None,
    include_linear: bool = False,
    rank_update: str = "fixed",
    projection_options: Mapping | None = None,
    from_scratch: bool = False,
    finetune_epochs: int = 0,
    finetune_lr: float = 0.005,
    finetune_schedule: str | Callable[[int], float] = "step",
    finetune_schedule_kwargs: Mapping | None = None,
    execution: str = "factorized",
    device: torch.device | str | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    callbacks: Iterable[Callback] = (),
    progress: bool = True,
    **fit_kwargs: Any,
) -> ADMMResult:
    """Compress a model by ADMM training towards low rank (Yin et al., 2021), then decompose it.

    The model passed in is not modified: a copy is trained for ``epochs``
    epochs with :class:`ADMMCallback` (one :func:`~tuckerlab.train.fit`);
    the compressed model is then built from the final dense weights with the
    same ranks (:func:`tuckerlab.projection.to_factorized`), evaluated and
    optionally fine-tuned (a second ``fit``, on the factors).

    Explained in: chapter 6, "ADMM: training towards low tensor-train rank"
    (notebooks/06_admm_tt.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        A trained model, or a fresh initialisation (``from_scratch=True``;
        the authors' code runs the ADMM phase from scratch).
    data : ImageDataset
        From :func:`tuckerlab.data.load_dataset`.
    specs : Projector or mapping, optional
        ``{layer name: (format, rank)}``. Exclusive with ``rank``.
    rank : rank selector, str, dict, rank rule or rank, optional
        The ranks of ``format`` for the layers that
        :func:`~tuckerlab.surgery.compress_model` would compress: a
        specification (``"params:0.33"`` for about 3x fewer parameters,
        ``"macs:0.5"``, ``"evbmf"``, ``"ratio:0.5"``, ``"4,4,4"``, any
        registered selector), a dict ``{layer: rank}``, a rank rule or one
        rank for every layer (:func:`tuckerlab.rank.selectors.as_selector`).
        Read from ``model`` (and ``data``, for selectors that look at it)
        before training. Exclusive with ``specs``.
    format : {"tt", "tucker2", "tt_tucker", "cp"}
        Format of the convolutions with ``rank`` (``nn.Linear`` layers, with
        ``include_linear``, get ``"lowrank"``). Not used with ``specs``.
    epochs : int
        Epochs of the ADMM phase (200 in the authors' code).
    rho, rho_growth, rho_max, update_every, rescale_dual
        See :class:`ADMMCallback` (default: ``rho = 1e-3`` constant, an
        update per epoch, as the authors).
    lr : float
        Peak learning rate of the ADMM phase (0.1 in the authors' code).
    schedule : str or callable
        Learning-rate schedule of the ADMM phase (see
        :func:`tuckerlab.train.fit`). ``"step"`` without ``milestones`` in
        ``schedule_kwargs`` is the authors' x0.2 every 55 of 200 epochs,
        scaled to ``epochs``.
    schedule_kwargs : mapping, optional
        Arguments of a named schedule (``milestones`` in epochs, ``gamma``,
        ...).
    label_smoothing : float
        Label smoothing of both phases (0.1 in the authors' code).
    skip, include_linear
        Layers left out, and also factorizing ``nn.Linear`` layers (low
        rank), with ``rank`` (as in :func:`~tuckerlab.surgery.compress_model`).
    rank_update : {"fixed", "shrink"}
        With ``"shrink"`` the ``rank`` selector proposes ranks at every
        update and each rank may only shrink.
    projection_options : mapping, optional
        Decomposition options of every projection and of the compressed
        model (see :class:`ADMMCallback`).
    from_scratch : bool
        The model passed in is an untrained initialisation: its test
        accuracy is not measured as a reference. A rank read off its
        weights (``"params:..."``, ``"evbmf"``, ...) is then read off random
        weights, as in the authors' code (a warning says so); give
        ``specs`` or a literal rank to choose them yourself.
    finetune_epochs : int
        Epochs of fine-tuning of the compressed model (0: none; 200 in the
        authors' code).
    finetune_lr : float
        Its peak learning rate (0.005 in the authors' code).
    finetune_schedule, finetune_schedule_kwargs
        Its schedule; ``"step"`` without ``milestones`` is the authors' x0.4
        every 55 of 200 epochs, scaled to ``finetune_epochs``.
    execution : {"factorized", "reconstructed"}
        Execution mode of the compressed model's layers.
    device : torch.device or str, optional
        Default: CUDA when available. The projections run there too.
    seed : int
        Seed of both ``fit`` calls.
    checkpoint_dir : path-like, optional
        Checkpoints of the ADMM phase (``admm/``) and of the fine-tuning
        (``finetune/``); an interrupted run resumes exactly.
    resume : bool
        Resume from ``checkpoint_dir`` when it holds a checkpoint.
    callbacks : iterable of Callback
        More hooks for the ADMM phase.
    progress : bool
        Progress bars and one line per update.
    **fit_kwargs
        More arguments of :func:`tuckerlab.train.fit` for both phases
        (``batch_size``, ``weight_decay``, ``momentum``,
        ``max_steps_per_epoch``, ...). Weight decay applies to every
        parameter, BatchNorm and biases included, as in the authors' code;
        ``decay_bn_bias=False`` exempts them.

    Returns
    -------
    MethodResult
        With the updates' log as ``log`` (``"admm_log"`` in ``to_dict()``).

    Raises
    ------
    ValueError
        Before any training, naming the argument: for ``specs`` and ``rank``
        both or neither given, a bad ``format``, a rank out of range or an
        unreachable budget, ``rho`` negative or not a finite number,
        ``rho_growth < 1``, ``rho_max < rho``, ``update_every`` neither
        ``"epoch"`` nor a positive integer, ``epochs < 1``, or specs with no
        factorized form (e.g. full ``"tucker"``).

    References
    ----------
    .. [1] M. Yin, Y. Sui, S. Liao and B. Yuan, "Towards efficient tensor
       decomposition-based DNN model compression with optimization
       framework", CVPR 2021, arXiv:2107.12422.
    .. [2] S. Boyd et al., "Distributed optimization and statistical
       learning via the alternating direction method of multipliers",
       Foundations and Trends in Machine Learning 3(1):1-122, 2011.

    Examples
    --------
    >>> from tuckerlab.data import load_dataset  # doctest: +SKIP
    >>> from tuckerlab.models import get_model  # doctest: +SKIP
    >>> data = load_dataset("cifar10")  # doctest: +SKIP
    >>> result = admm_compress(get_model("resnet32"), data, rank="params:0.33", format="tt", epochs=200,
    ...                        from_scratch=True, finetune_epochs=200)  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    _check_positive_int(epochs, "epochs")
    _check_positive_int(finetune_epochs, "finetune_epochs", 0)
    _check_rho(rho, rho_growth, rho_max)
    _check_update_every(update_every)
    if specs is not None and rank is not None:
        raise ValueError("give specs ({layer: (format, rank)} or a Projector) or rank (a rank specification), not both")
    selector = None
    layers = LayerChoice(skip, include_linear)
    if rank is not None:
        from tuckerlab.formats import format_names
        from tuckerlab.projection import Projector
        from tuckerlab.rank.selectors import as_selector

        names = format_names("conv", with_layer=True)
        if format not in names:
            accepted = ", ".join(map(repr, ["tt", *(n for n in names if n != "tt")]))
            raise ValueError(
                f"format={format!r}: must be one of {accepted} (a compressed model is built from it; full "
                "'tucker' has no factorized layer, 'tucker2' is Tucker on the channel modes)"
            )
        try:
            selector = as_selector(rank)
            specs = Projector.from_rank(model, format, selector, input_size=data.image_shape, data=data,
                                        skip=skip, include_linear=include_linear)
        except ValueError as err:
            raise ValueError(f"rank={rank!r}: {err}") from None
        from tuckerlab.rank.selectors import FixedRanks, UniformRank

        if from_scratch and not isinstance(selector, (FixedRanks, UniformRank)):
            warnings.warn(
                f"rank={rank!r} is read off the weights of an untrained model (from_scratch=True): the ranks follow "
                "the random initialisation, as in the authors' code; pass specs or a literal rank to choose them",
                UserWarning, stacklevel=2,
            )
    elif specs is None:
        raise ValueError(
            "give the ranks: specs ({layer: (format, rank)} or a Projector) or rank (e.g. 'params:0.33', "
            "'evbmf', a dict {layer: rank} or one rank)"
        )
    callback = ADMMCallback(
        specs, rho, rho_growth, rho_max=rho_max, update_every=update_every, rescale_dual=rescale_dual,
        format=format, rank=selector if rank_update != "fixed" else None, layers=layers, rank_update=rank_update,
        projection_options=projection_options, verbose=progress, data=data,
    )
    if schedule == "step":
        schedule_kwargs = authors_step(epochs, 0.2, schedule_kwargs)
    if finetune_schedule == "step":
        finetune_schedule_kwargs = authors_step(finetune_epochs, 0.4, finetune_schedule_kwargs)
    result = run_method(
        model, data, callback, method="admm", phase="admm", epochs=epochs, lr=lr, schedule=schedule,
        schedule_kwargs=schedule_kwargs, from_scratch=from_scratch, finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr, finetune_schedule=finetune_schedule,
        finetune_schedule_kwargs=finetune_schedule_kwargs, execution=execution, device=device, seed=seed,
        checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks, progress=progress,
        fit_kwargs={"label_smoothing": label_smoothing, **fit_kwargs}, log_key="admm_log", label="ADMM dense",
    )
    if selector is not None and result.rank_selection is None:
        result.rank_selection = selector.info()
    return result

r"""BATUDE: budget-aware Tucker-2 ranks learned during training (Yin, Phan, Zang, Liao & Yuan, AAAI 2022).

BATUDE learns the Tucker ranks of every layer in one training run, under one
budget for the whole network (FLOPs or parameters), instead of fixing them
before training. Only the abstract of the paper is public; a secondary
review describes the method as a nuclear-norm-regularised problem with a
global rank budget, solved by a budget-constrained alternating direction
Lagrangian whose greedy step picks the singular-value thresholds, hence the
Tucker-2 ranks ``(R1, R2)`` of each layer, at each iteration. This module
is our reading of that description (the chapter discusses the choices):

For each compressed convolution ``l`` with weight ``W_l`` of shape ``(T,
S, Kh, Kw)`` there are split variables ``M_{l,1}``, ``M_{l,2}`` for its
mode-1 (output channels, ``T x S Kh Kw``) and mode-2 (input channels, ``S x
T Kh Kw``) unfoldings ``W_(1)``, ``W_(2)``, and multipliers ``Y_{l,n}``
(the overlapped trace norm of Tomioka et al., 2010). With ``rho > 0`` the
method alternates

1. the **W-step**: SGD on ``L(W) + rho/2 sum_{l,n} ||W_(n) - M_{l,n} +
   Y_{l,n}/rho||^2`` (:meth:`BATUDECallback.penalty`, added to the loss by
   :func:`tuckerlab.train.fit`), for an epoch or ``k`` optimizer steps;
2. the **M-step**: the SVD of every ``X_{l,n} = W_(n) + Y_{l,n}/rho``, then
   the **budget step** (:func:`budget_ranks`): starting from full ranks,
   repeatedly remove the singular value with the least energy ``s^2`` per
   unit of cost saved, over all layers and both modes at once, until the
   whole network's MACs (or parameters) meet the budget; a removal from
   mode 1 lowers the layer's ``r_out``, from mode 2 its ``r_in``, and the
   cost is the Tucker-2 layer's exact cost from the format registry; then
   ``M_{l,n}`` is ``X_{l,n}`` thresholded to its rank (hard: the truncated
   SVD; soft: singular values shrunk by the first one removed, the proximal
   step of the nuclear norm);
3. the **dual step** ``Y_{l,n} = Y_{l,n} + rho (W_(n) - M_{l,n})``, then
   ``rho *= rho_growth`` (at most ``rho_max``).

It starts from ``M = `` the thresholded ``W`` and ``Y = 0``. At the end, the
dense weights are decomposed by HOOI at the last learned ranks, the
factorized model is built and, optionally, fine-tuned
(:func:`~tuckerlab.methods._base.run_method`).

The budget step in detail. A layer's cost is not convex in its ranks: a
Tucker-2 factor of full rank is square and folded into the core, so going
from ``r_out = T`` to ``T - 1`` adds a ``T x (T - 1)`` factor and costs
more. Each candidate move therefore removes the ``k >= 1`` smallest kept
values of one mode, ``k`` chosen to minimise removed energy per cost saved
(the lower convex hull of the cost), ties going to the larger saving. The
sequence of moves depends only on the spectra and the costs, and the budget
only decides where it stops (the last move removing only as many values as
the budget needs): a smaller budget never gives larger ranks.

The paper's settings are not public. :data:`RECIPE` follows the same group's
ADMM code (Yin et al., CVPR 2021): ``rho = 1e-3``, an M-step per epoch, lr
0.1 with x0.2 steps, label smoothing 0.1, fine-tuning at 0.005 with x0.4
steps; the budget ``macs:0.4`` is about the paper's ResNet-18 point (2.52x
fewer FLOPs; FLOPs in the paper are multiply-accumulates, MACs here).

:class:`BATUDECallback` is the algorithm; :func:`batude_compress` runs it with
one call of :func:`tuckerlab.train.fit` and returns the compressed model.

References
----------
M. Yin, H. Phan, X. Zang, S. Liao and B. Yuan, "BATUDE: Budget-aware neural
network compression based on Tucker decomposition", AAAI 2022,
doi:10.1609/aaai.v36i8.20869.

M. Yin, Y. Sui, S. Liao and B. Yuan, "Towards efficient tensor
decomposition-based DNN model compression with optimization framework",
CVPR 2021, arXiv:2107.12422.

R. Tomioka, K. Hayashi and H. Kashima, "Estimation of low-rank tensors via
convex optimization", arXiv:1010.0789, 2010.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from tuckerlab.formats._spectra import unfold
from tuckerlab.rank.network_budget import (
    ENERGIES,
    BudgetStep,
    budget_ranks,
    check_budget,
    parse_budget,
)
from tuckerlab.train import Callback
from tuckerlab.train import distributed as _dist

from ._base import (
    LayerChoice,
    MethodResult,
    ProjectionCallback,
    _check_positive_int,
    _metric,
    run_method,
)
from .admm import _check_number, _check_rho, _check_update_every, authors_step

# The whole-network budget (Budget, parse_budget, budget_ranks, ...) lives in tuckerlab.rank.network_budget.
__all__ = ["BATUDECallback", "batude_compress", "threshold", "THRESHOLDS", "RECIPE"]

#: Our recipe (the paper's is not public): the same group's ADMM code (Yin et al., 2021) for training and
#: fine-tuning, and about the paper's ResNet-18 budget (2.52x fewer FLOPs, i.e. 40% of the dense MACs).
RECIPE = dict(budget="macs:0.4", epochs=200, lr=0.1, rho=1e-3, label_smoothing=0.1, finetune_epochs=200,
              finetune_lr=0.005)

#: How an M-step thresholds the singular values beyond the chosen rank.
THRESHOLDS = ("hard", "soft")

# --------------------------------------------------------------- thresholds
def threshold(x: torch.Tensor, rank: int, kind: str = "hard", svd=None) -> torch.Tensor:
    """``x`` (a matrix) with its singular values beyond ``rank`` thresholded away.

    ``"hard"``: the truncated SVD (the nearest matrix of rank ``rank``).
    ``"soft"``: every singular value lowered by ``tau = s_{rank+1}``, the
    largest one removed (the proximal step of ``tau ||.||_*``); the rank
    is ``rank`` unless ``s_rank = s_{rank+1}``. At or above ``x``'s rank,
    ``x`` itself (bit for bit). The SVD runs in float64 (``svd``:
    ``torch.linalg.svd(x.double(), full_matrices=False)`` when already
    computed); the result has ``x``'s dtype.
    """
    if kind not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {kind!r}")
    if rank >= min(x.shape):
        return x
    u, s, vh = svd if svd is not None else torch.linalg.svd(x.double(), full_matrices=False)
    kept = s[:rank] if kind == "hard" else s[:rank] - s[rank]
    return ((u[:, :rank] * kept) @ vh[:rank]).to(x.dtype)


def _fold(m: torch.Tensor, mode: int, shape) -> torch.Tensor:
    """The inverse of :func:`tuckerlab.formats._spectra.unfold`."""
    moved = (shape[mode], *(n for i, n in enumerate(shape) if i != mode))
    return m.reshape(moved).movedim(0, mode)


# ------------------------------------------------------------------ callback
def _check_settings(rho, rho_growth, rho_max, update_every, threshold, energy):
    """``(rho, rho_growth, rho_max, update_every)`` checked, with ``threshold`` and ``energy``; ValueError naming one."""
    _check_number(rho, "rho", "a finite number > 0 (the multipliers are divided by it)", lambda v: v > 0)
    checked = (*_check_rho(rho, rho_growth, rho_max), _check_update_every(update_every))
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    if energy not in ENERGIES:
        raise ValueError(f"energy must be one of {ENERGIES}, got {energy!r}")
    return checked


class BATUDECallback(ProjectionCallback):
    r"""BATUDE (budget-aware Tucker-2 ranks learned in training) as a :class:`~tuckerlab.train.Callback`.

    Before the first epoch: an M-step on the starting weights (``Y = 0``;
    no dual step). Every step adds ``rho/2 sum_{l,n} ||W_l - M_{l,n} +
    Y_{l,n}/rho||^2`` to the loss (``M`` and ``Y`` folded back to the
    weight's shape, where the unfolding's norm is the same). After every
    epoch (or every ``update_every`` optimizer steps): an M-step with its
    budget step, the dual step and the next ``rho`` (see the module
    docstring). The projector's ranks are the last budget step's.

    Parameters
    ----------
    specs : Projector or mapping
        ``{layer name: ("tucker2", rank)}``: the compressed convolutions
        (their ranks are only a start: the first M-step sets them).
    budget : str or Budget
        The whole network's budget (:func:`parse_budget`): ``"macs:0.4"``,
        ``"params:0.5"``, ``"macs:2.5x"``, ``"macs:2e8"``.
    rho : float
        Penalty weight, ``> 0`` (the multipliers are divided by it).
    rho_growth, rho_max
        ``rho`` is multiplied by ``rho_growth`` (``>= 1``) after every
        M-step, up to ``rho_max``. ``Y`` is the unscaled multiplier, so it
        needs no rescaling when ``rho`` changes.
    update_every : "epoch" or int
        When the M- and dual steps run.
    threshold : {"hard", "soft"}
        How M-steps cut the singular values beyond the chosen ranks.
    energy : {"absolute", "relative"}
        What the budget step weighs against the cost saved (:func:`budget_ranks`).
    selection : LayerSelection, optional
        The layers with their shapes and the dense totals (default: selected
        from the model at the start of training).
    projection_options : mapping, optional
        HOOI options of the final decomposition (e.g. ``{"n_iter_max": 10}``).
    verbose : bool
        One line per M-step.

    Attributes
    ----------
    projector : Projector
        The layers and their current ranks.
    budget : Budget
    rho : float
    updates : int
        Completed M-steps after the initial one.
    M, Y : dict of str to [torch.Tensor, torch.Tensor] or None
        Split variables and multipliers of modes 1 and 2 per layer, each of
        the weight's shape; None before the initial M-step.
    last_step : BudgetStep or None
    log : list of dict
        One record per M-step (``update`` 0 is the initial one): ``epoch``,
        ``step``, ``rho`` (of the steps before it; 0 for the initial one),
        ``ranks`` (``{layer: [r_out, r_in]}``, the rank trajectory),
        ``params``, ``macs``, ``cost``, ``ratio``, ``reduction`` (dense /
        compressed ``metric``), ``allowed``, ``budget_met``, ``primal``
        (``sqrt(sum ||W - M||^2)`` over layers and modes after the step) and
        ``relative`` (its ratio to ``sqrt(2) ||W||``), ``dual`` (``rho
        ||M - M_prev||``, NaN for the initial step), ``train_loss``,
        ``test_acc`` (NaN when not at an epoch's end) and ``seconds``.

    Notes
    -----
    The per-epoch ``logs`` get ``rho``, ``batude_updates`` and, in epochs
    with an M-step, ``batude_cost`` (the ratio to the dense network),
    ``batude_primal`` and ``batude_dual``.

    :meth:`state_dict` holds ``rho``, the update count, ``M``, ``Y``, the
    ranks and the log, so a resumed run repeats the uninterrupted one
    exactly; resuming with other hyper-parameters raises
    :class:`~tuckerlab.train.IncompatibleCheckpointError`. Under
    ``torchrun`` rank 0's ranks, ``M`` and ``Y`` are sent to every process.
    """

    method_name = "BATUDE"

    def __init__(
        self,
        specs,
        budget="macs:0.4",
        rho: float = 1e-3,
        rho_growth: float = 1.0,
        *,
        rho_max: float | None = None,
        update_every: str | int = "epoch",
        threshold: str = "hard",
        energy: str = "absolute",
        selection=None,
        projection_options: Mapping | None = None,
        verbose: bool = False,
        data=None,
    ):
        self.budget = parse_budget(budget)
        self.rho0, self.rho_growth, self.rho_max, self.update_every = _check_settings(
            rho, rho_growth, rho_max, update_every, threshold, energy)
        self.threshold, self.energy = threshold, energy
        if specs is None:
            raise ValueError("specs: give the convolutions to compress, {layer name: ('tucker2', rank)}")
        super().__init__(
            specs, projection_options=projection_options, verbose=verbose, data=data,
            config={"budget": self.budget.spec, "rho": self.rho0, "rho_growth": self.rho_growth,
                    "rho_max": self.rho_max, "update_every": self.update_every, "threshold": threshold,
                    "energy": energy},
        )
        bad = sorted(n for n, s in self.projector.items() if s.format != "tucker2")
        if bad:
            raise ValueError(f"specs: BATUDE learns Tucker-2 ranks; layers {bad} have another format")
        self.selection = selection
        self.rho = self.rho0
        self.updates = 0
        self.M: dict[str, list[torch.Tensor]] | None = None
        self.Y: dict[str, list[torch.Tensor]] | None = None
        self.last_step: BudgetStep | None = None
        self._anchors: list[torch.Tensor] | None = None  # M - Y/rho, modes 1 then 2, in projector order
        self._costs: dict = {}  # cost tables, by layer shape
        self._step_rho = self.rho

    # ------------------------------------------------------------ internals
    def _set_variables(self, m, y) -> None:
        self.M, self.Y = m, y
        if m is None:
            self._anchors = None
            return
        names = self.projector.names
        with torch.no_grad():
            self._anchors = [m[n][k] - y[n][k] / self.rho for k in (0, 1) for n in names]

    def _next_rho(self, rho: float) -> float:
        nxt = rho * self.rho_growth
        return nxt if self.rho_max is None else min(nxt, self.rho_max)

    def _m_step(self, trainer, epoch: int) -> None:
        """SVDs, the budget step, thresholds, the dual step and the next ``rho`` (the initial step: no dual)."""
        t0 = time.perf_counter()
        names = self.projector.names
        weights = self._weights(trainer.model)
        initial = self.M is None
        rho = self.rho
        with torch.no_grad():
            x, svds, spectra = {}, {}, {}
            for n, w in zip(names, weights):
                # a copy: at full rank M is X itself, and must not alias the trained weight
                x[n] = [unfold(w.detach().clone() if initial else w + self.Y[n][k] / rho, k) for k in (0, 1)]
                svds[n] = [torch.linalg.svd(m.double(), full_matrices=False) for m in x[n]]
                spectra[n] = tuple(s.S.cpu().numpy() for s in svds[n])
            step = budget_ranks(spectra, self.selection, self.budget, energy=self.energy, cache=self._costs)
            step = _dist.broadcast_object(step)  # rank 0's ranks on every process (spectra may differ in last bits)
            ranks = step.ranks
            m_new = {n: [_fold(threshold(x[n][k], ranks[n][k], self.threshold, svds[n][k]).to(w.dtype), k, w.shape)
                         for k in (0, 1)] for n, w in zip(names, weights)}
            if initial:
                y_new = {n: [torch.zeros_like(w), torch.zeros_like(w)] for n, w in zip(names, weights)}
            else:
                y_new = {n: [self.Y[n][k] + rho * (w - m_new[n][k]) for k in (0, 1)] for n, w in zip(names, weights)}
            flat = {f"{g}/{n}/{k}": t for g, v in (("M", m_new), ("Y", y_new)) for n in names for k, t in
                    enumerate(v[n])}
            _dist.broadcast_tensors(flat)  # rank 0's values, in place
            moved = None if initial else math.sqrt(sum(
                float(torch.linalg.vector_norm((m_new[n][k] - self.M[n][k]).double())) ** 2
                for n in names for k in (0, 1)))
            if not initial:
                self.rho = self._next_rho(rho)
                self.updates += 1
        self.projector = self.projector.with_ranks(ranks)
        self._cache = None
        self.last_step = step
        self._set_variables(m_new, y_new)
        self._record(trainer, epoch, 0.0 if initial else rho, moved, step, time.perf_counter() - t0)

    def _record(self, trainer, epoch, rho, moved, step: BudgetStep, seconds) -> dict:
        names = self.projector.names
        with torch.no_grad():
            ws = self._weights(trainer.model)
            primal = math.sqrt(sum(float(torch.linalg.vector_norm((w - self.M[n][k]).double())) ** 2
                                   for n, w in zip(names, ws) for k in (0, 1)))
            norm = math.sqrt(2 * sum(float(torch.linalg.vector_norm(w.double())) ** 2 for w in ws))
        rec = {
            "update": self.updates,
            "epoch": epoch,
            "step": trainer.step,
            "rho": rho,
            "ranks": self._ranks(),
            "metric": step.metric,
            "params": step.params,
            "macs": step.macs,
            "cost": step.cost,
            "allowed": step.allowed,
            "ratio": step.ratio,
            "reduction": step.reduction,
            "budget_met": step.met,
            "primal": primal,
            "relative": primal / norm if norm > 0 else math.nan,
            "dual": math.nan if moved is None else rho * moved,
            "train_loss": math.nan,
            "test_acc": math.nan,
            "seconds": seconds,
        }
        self.log.append(rec)
        what = "initial M-step" if rec["update"] == 0 else f"BATUDE M-step {rec['update']}"
        self._write(
            f"{what} (epoch {epoch}, step {rec['step']}): {step.metric} {100 * step.ratio:.1f}% of dense "
            f"({step.reduction:.2f}x), ||W - M|| {primal:.4g}, ranks {rec['ranks']}, {seconds:.2f} s"
        )
        return rec

    # -------------------------------------------------------------- hooks
    def on_fit_begin(self, trainer) -> None:
        super().on_fit_begin(trainer)
        if self.selection is None:
            from tuckerlab.layer_selection import select_layers

            self.selection = select_layers(trainer.model, names=self.projector.names, skip_first=False,
                                           skip_pointwise=False, input_size=tuple(trainer.data.image_shape))
        check_budget(self.selection, self.budget, cache=self._costs)

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if self.M is None:
            self._m_step(trainer, epoch)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """``rho/2 * sum_{l,n} ||W_l - M_{l,n} + Y_{l,n}/rho||^2`` (None before the initial M-step)."""
        if self._anchors is None:
            return None
        ws = self._weights(model)
        norms = torch._foreach_norm(torch._foreach_sub(ws + ws, self._anchors))
        return (0.5 * self.rho) * torch.stack(norms).square().sum()

    def on_step_end(self, trainer, step: int) -> None:
        self._step_rho = self.rho
        if self.update_every != "epoch" and step % self.update_every == 0:
            self._m_step(trainer, trainer.epoch + 1)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.update_every == "epoch":
            self._m_step(trainer, epoch + 1)
        last = self.log[-1]
        if last["update"] > 0 and last["step"] == trainer.step:
            last["train_loss"], last["test_acc"] = _metric(logs, "train_loss"), _metric(logs, "test_acc")
        logs["rho"] = self._step_rho
        logs["batude_updates"] = self.updates
        if last["update"] > 0 and last["epoch"] == epoch + 1:
            logs["batude_cost"] = last["ratio"]
            logs["batude_primal"] = last["primal"]
            logs["batude_dual"] = last["dual"]

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            **self._base_state(),
            "rho": self.rho,
            "updates": self.updates,
            "M": None if self.M is None else {n: list(v) for n, v in self.M.items()},
            "Y": None if self.Y is None else {n: list(v) for n, v in self.Y.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self._load_base_state(state)
        self.rho = float(state["rho"])
        self.updates = int(state["updates"])
        m, y = state["M"], state["Y"]
        self._set_variables(None if m is None else {n: list(v) for n, v in m.items()},
                            None if y is None else {n: list(v) for n, v in y.items()})
        self.last_step = None

    def rank_selection(self) -> dict | None:
        last = self.log[-1] if self.log else None
        out = {"rule": f"batude:{self.budget.spec}", "budget": self.budget.spec, "metric": self.budget.metric,
               "threshold": self.threshold, "energy": self.energy, "m_steps": len(self.log)}
        if last:
            out.update(allowed=last["allowed"], achieved=last["ratio"], budget_met=last["budget_met"],
                       reduction=last["reduction"])
        return out

    def summary_line(self) -> str:
        last = self.log[-1] if self.log else None
        return (f"ranks learned in {len(self.log)} M-steps, budget {self.budget.spec} "
                f"{'met' if last['budget_met'] else 'NOT met'}; final ||W - M|| = {last['primal']:.4g} "
                f"({100 * last['relative']:.2f}%), rho = {last['rho']:.4g}") if last else ""


# ------------------------------------------------------------------ driver
def batude_compress(
    model: nn.Module,
    data,
    budget="macs:0.4",
    *,
    epochs: int,
    rho: float = 1e-3,
    rho_growth: float = 1.0,
    rho_max: float | None = None,
    update_every: str | int = "epoch",
    threshold: str = "hard",
    energy: str = "absolute",
    lr: float = 0.1,
    schedule: str | Callable[[int], float] = "step",
    schedule_kwargs: Mapping | None = None,
    label_smoothing: float = 0.1,
    skip=None,
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
) -> MethodResult:
    """Compress a model by BATUDE (Yin et al., 2022): Tucker-2 ranks learned in training under a whole-network budget.

    The model passed in is not modified: a copy is trained for ``epochs``
    epochs with :class:`BATUDECallback`; the compressed model is then the
    HOOI Tucker-2 decomposition of the final dense weights at the learned
    ranks, evaluated and optionally fine-tuned. The layers are those
    :func:`~tuckerlab.surgery.compress_model` compresses by default (the
    convolutions but the first and the 1x1 ones, as the authors' ResNets),
    less ``skip``.

    Parameters
    ----------
    model : torch.nn.Module
        A trained model, or a fresh one (``from_scratch=True``).
    data : ImageDataset
        From :func:`tuckerlab.data.load_dataset`.
    budget : str or Budget
        ``"macs:0.4"`` (40% of the dense MACs, 2.5x fewer FLOPs),
        ``"params:0.5"``, ``"macs:2.52x"``, or an absolute count
        ``"macs:2e8"`` (:func:`parse_budget`).
    epochs : int
        Epochs of the training phase in which the ranks are learned.
    rho, rho_growth, rho_max, update_every, threshold, energy
        See :class:`BATUDECallback`.
    lr, schedule, schedule_kwargs
        The training phase's peak learning rate and schedule; ``"step"``
        without ``milestones`` is x0.2 every 55 of 200 epochs, scaled to
        ``epochs`` (:func:`~tuckerlab.methods.authors_step`).
    label_smoothing : float
        Label smoothing of both phases.
    skip : str, iterable of str or callable, optional
        Convolutions left dense (names or ``fnmatch`` patterns).
    projection_options : mapping, optional
        Options of the final HOOI.
    from_scratch : bool
        The model is an untrained initialisation: no reference accuracy.
    finetune_epochs, finetune_lr, finetune_schedule, finetune_schedule_kwargs
        Fine-tuning of the compressed model (``"step"``: x0.4 every 55 of
        200 epochs, scaled).
    execution, device, seed, checkpoint_dir, resume, callbacks, progress
        As in :func:`~tuckerlab.methods.admm_compress` (checkpoints in
        ``batude/`` and ``finetune/``; an interrupted run resumes exactly).
    **fit_kwargs
        More arguments of :func:`tuckerlab.train.fit` for both phases.

    Returns
    -------
    MethodResult
        ``log`` (``"batude_log"`` in ``to_dict()``) holds every M-step's
        ranks, cost and whether the budget was met; ``rank_selection`` the
        budget, the ratio achieved and the reduction; :meth:`summary`
        ends with the FLOPs (MACs) reduction, dense / compressed.

    Raises
    ------
    ValueError
        Before any training, naming the argument: a bad or unreachable
        ``budget`` (unknown unit, ``<= 0``, a fraction above 1), ``rho <=
        0``, ``rho_growth < 1``, ``rho_max < rho``, a bad ``update_every``,
        ``threshold`` or ``energy``, ``epochs < 1``, or no layer to compress.

    References
    ----------
    .. [1] M. Yin, H. Phan, X. Zang, S. Liao and B. Yuan, "BATUDE:
       Budget-aware neural network compression based on Tucker
       decomposition", AAAI 2022, doi:10.1609/aaai.v36i8.20869.

    Examples
    --------
    >>> from tuckerlab.data import load_dataset  # doctest: +SKIP
    >>> from tuckerlab.models import get_model  # doctest: +SKIP
    >>> result = batude_compress(get_model("resnet20"), load_dataset("cifar10"), "macs:0.4",
    ...                          epochs=30, finetune_epochs=30)  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    from tuckerlab.formats import get_format
    from tuckerlab.projection import Projector

    _check_positive_int(epochs, "epochs")
    _check_positive_int(finetune_epochs, "finetune_epochs", 0)
    b = parse_budget(budget)
    callback_args = dict(rho=rho, rho_growth=rho_growth, rho_max=rho_max, update_every=update_every,
                         threshold=threshold, energy=energy)
    _check_settings(**callback_args)
    selection = LayerChoice(skip).select(model, tuple(data.image_shape))
    if not len(selection):
        raise ValueError(f"budget={b.spec!r}: no convolution of {type(model).__name__} to compress "
                         "(the first conv and 1x1 convs stay dense; check skip)")
    check_budget(selection, b)
    fmt = get_format("tucker2")
    specs = Projector.from_ranks(model, fmt, {i.name: fmt.full_rank(i.weight_shape) for i in selection}, selection,
                                 projection_options)
    callback = BATUDECallback(specs, b, **callback_args, selection=selection,
                              projection_options=projection_options, verbose=progress, data=data)
    if schedule == "step":
        schedule_kwargs = authors_step(epochs, 0.2, schedule_kwargs)
    if finetune_schedule == "step":
        finetune_schedule_kwargs = authors_step(finetune_epochs, 0.4, finetune_schedule_kwargs)
    result = run_method(
        model, data, callback, method="batude", phase="batude", epochs=epochs, lr=lr, schedule=schedule,
        schedule_kwargs=schedule_kwargs, from_scratch=from_scratch, finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr, finetune_schedule=finetune_schedule,
        finetune_schedule_kwargs=finetune_schedule_kwargs, execution=execution, device=device, seed=seed,
        checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks, progress=progress,
        fit_kwargs={"label_smoothing": label_smoothing, **fit_kwargs}, log_key="batude_log",
        label="BATUDE dense", selection=selection,
    )
    r = result.report
    flops = r.macs_before / r.macs_after if r.macs_after else math.inf
    params = r.params_before / r.params_after if r.params_after else math.inf
    result.rank_selection = {**(result.rank_selection or {}), "flops_reduction": flops, "params_reduction": params}
    result.final_line = (f"FLOPs reduction {flops:.2f}x (dense / compressed MACs), parameters {params:.2f}x; "
                         + result.final_line)
    return result

r"""The one base every compression method shares: projections during training, one driver, one result.

Every method of :mod:`tuckerlab.methods` is "train with a pull towards a
projection": LC (Carreira-Perpinan, 2017) pulls the dense weights ``W``
towards ``Delta(Theta)``, ADMM (Yin et al., 2021) towards ``Z - U``, the
coming alternating and budget-aware methods towards their own anchors, all
built from projections onto a compressed format
(:mod:`tuckerlab.projection`). This module holds what they share:

- :class:`ProjectionCallback`, the base callback: the layers and ranks (a
  :class:`~tuckerlab.projection.Projector`, or a rank selector choosing
  them when the first projection runs, from the data if it wants), rank
  updates during training (``rank_update="shrink"``: re-selected and never
  grown, for every method), the fused quadratic penalty, distances for the
  logs, verbose lines, and the checkpoint state with its settings check;
- :class:`MethodResult`, the one result of every method and of the classic
  decompose-then-fine-tune pipeline: accuracies (reference, dense, before
  and after fine-tuning), parameters and MACs, ranks, the method's log,
  ``summary()`` and ``to_dict()``;
- :func:`run_method`, the one driver: copy the model, one
  :func:`~tuckerlab.train.fit` with the method's callback (none for the
  pipeline), the factorized model (from the factors of the last projection
  when the method keeps them), its accuracy, optional fine-tuning.

Data-parallel runs (``torchrun``, :mod:`tuckerlab.train.distributed`): every
process runs the same projections and rank selections, and rank 0's result
then replaces the others' (:meth:`ProjectionCallback._sync_ranks`,
:meth:`ProjectionCallback._sync_tensors`), so the layers, ranks, projected
targets, dual variables, warm starts and a rank selector's state (all of the
callback's ``state_dict``) are the same on every process, bit for bit, even
where decompositions on different GPUs differ in their last bits or a rank
selector looks at each process's own data. Every process computing (rather
than rank 0 alone) costs no wall time, since the others would wait, and
keeps any collective inside a selector matched. The factorized model is rank
0's on every process too. In a single process all of this is a no-op.

A new method subclasses :class:`ProjectionCallback` (its anchors and
updates) and calls :func:`run_method`; see ``methods/lc.py`` for the shape.

References
----------
M. A. Carreira-Perpinan, "Model compression as constrained optimization, with
application to neural nets. Part I: general framework", arXiv:1707.01209, 2017.

M. Yin, Y. Sui, S. Liao and B. Yuan, "Towards efficient tensor
decomposition-based DNN model compression with optimization framework",
CVPR 2021, arXiv:2107.12422.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import torch
from torch import nn

from tuckerlab.projection import Projector, to_factorized
from tuckerlab.train import Callback, History, IncompatibleCheckpointError, evaluate, fit
from tuckerlab.train import distributed as _dist

__all__ = ["ProjectionCallback", "MethodResult", "run_method", "RANK_UPDATES", "LayerChoice"]

#: How ranks may change at the projections after the first.
RANK_UPDATES = ("fixed", "shrink")


def _check_positive_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _metric(logs: Mapping | None, key: str) -> float:
    """``logs[key]`` as a float, NaN without logs."""
    return float(logs[key]) if logs else math.nan


def _sync_model(model: nn.Module) -> None:
    """Rank 0's parameters and buffers in ``model`` on every process, in place (no-op in a single process)."""
    if not _dist.current().enabled:
        return
    state = model.state_dict()
    got = _dist.broadcast_tensors(state)
    bad = sorted(k for k in state if got.get(k) is not state[k])
    if bad or set(got) != set(state):
        raise RuntimeError(f"the processes built compressed models of different shapes ({', '.join(bad) or 'names'}); "
                           "their ranks should have been synchronised before")


@dataclass(frozen=True)
class _Slot:
    """Where a tensor sits in a structure sent by :func:`_rank0_nested`."""

    path: str


def _rank0_nested(obj):
    """Rank 0's ``obj`` (dicts, lists and tuples of tensors and plain values) on every process.

    A collective; ``obj`` itself in a single process. Tensors arrive where
    this process keeps its own tensor of that place (copies: this process's
    are not overwritten), else on the device collectives use.
    """
    info = _dist.current()
    if not info.enabled:
        return obj
    tensors: dict[str, torch.Tensor] = {}

    def strip(x, path):
        if isinstance(x, torch.Tensor):
            tensors[path] = x
            return _Slot(path)
        if isinstance(x, Mapping):
            return {k: strip(v, f"{path}/{k}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(strip(v, f"{path}/{i}") for i, v in enumerate(x))
        return x

    skeleton = strip(obj, "")
    skeleton = _dist.broadcast_object(skeleton if info.is_main else None)
    got = _dist.broadcast_tensors(tensors if info.is_main else {k: t.clone() for k, t in tensors.items()})

    def fill(x):
        if isinstance(x, _Slot):
            return got[x.path]
        if isinstance(x, Mapping):
            return {k: fill(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(fill(v) for v in x)
        return x

    return fill(skeleton)


def _shrink(old, new):
    """Elementwise minimum of two ranks of the same form (nested tuples or ints)."""
    if isinstance(old, (tuple, list)):
        return tuple(_shrink(a, b) for a, b in zip(old, new))
    return min(int(old), int(new))


@dataclass(frozen=True)
class LayerChoice:
    """Which layers a method compresses when a selector chooses their ranks.

    The rules of :func:`tuckerlab.layer_selection.select_layers` (``skip``,
    ``include_linear``, ``skip_first``, ``skip_pointwise``).
    """

    skip: Any = None
    include_linear: bool = False
    skip_first: bool = True
    skip_pointwise: bool = True

    def config(self) -> dict:
        skip = self.skip
        if callable(skip):
            skip = f"{skip.__module__}.{getattr(skip, '__qualname__', type(skip).__qualname__)}"
        elif skip is not None and not isinstance(skip, str):
            skip = list(skip)
        return {"skip": skip, "include_linear": self.include_linear, "skip_first": self.skip_first,
                "skip_pointwise": self.skip_pointwise}

    def select(self, model: nn.Module, input_size):
        from tuckerlab.layer_selection import select_layers

        return select_layers(model, skip=self.skip, include_linear=self.include_linear,
                             skip_first=self.skip_first, skip_pointwise=self.skip_pointwise, input_size=input_size)


# --------------------------------------------------------------- callback
class ProjectionCallback(Callback):
    """Base of the callbacks that train dense weights towards projections of themselves.

    Subclasses set :attr:`method_name`, keep their anchors and
    hyper-parameters, call :meth:`_choose_ranks` before their first
    projection and :meth:`_update_ranks` before later ones, use
    :meth:`_quadratic` in :meth:`penalty`, and :meth:`_base_state` /
    :meth:`_load_base_state` in their ``state_dict`` / ``load_state_dict``.
    What each projection computes from the weights (targets, duals, split
    variables) goes through :meth:`_sync_tensors`, so that every process of
    a data-parallel run holds rank 0's values (ranks are synchronised by
    :meth:`_choose_ranks` and :meth:`_update_ranks`).

    Parameters
    ----------
    specs : Projector or mapping, optional
        ``{layer name: (format, rank)}`` (see :mod:`tuckerlab.projection`).
        With ``rank`` too, these are the first ranks and the selector only
        proposes the updates.
    format : str or Format
        Format of the convolutions when a ``rank`` selector chooses the
        ranks (linear layers, with ``layers.include_linear``, get
        ``"lowrank"``).
    rank : rank selector, str, dict, rule or rank, optional
        Anything :func:`tuckerlab.rank.selectors.as_selector` takes; the
        ranks are chosen when the first projection runs (``"params:0.3"``,
        ``"evbmf"``, a registered selector that looks at the data, ...).
    layers : LayerChoice, optional
        Which layers a selector ranks (default: ``compress_model``'s).
    rank_update : {"fixed", "shrink"}
        ``"fixed"``: the ranks of the first projection are kept.
        ``"shrink"``: before each later projection the selector proposes
        ranks for the current weights and each rank becomes the elementwise
        minimum of the current and the proposed one (ranks never grow, so a
        budget met once stays met).
    projection_options : mapping, optional
        Decomposition options for every layer whose spec has none.
    verbose : bool
        Print one line per projection (through ``tqdm.write``).
    config : mapping
        The subclass's hyper-parameters, plain values; with the ranks'
        origin and the options they form the settings a checkpoint must have
        been written with (:meth:`_load_base_state`).

    Attributes
    ----------
    projector : Projector or None
        The layers, formats and ranks (None until a selector chose them).
    selector : RankSelector or None
    log : list of dict
        One record per projection, filled by the subclass.
    """

    #: The method's name in messages ("LC", "ADMM").
    method_name: ClassVar[str] = "projection"

    def __init__(
        self,
        specs=None,
        *,
        format="tucker2",
        rank=None,
        layers: LayerChoice | None = None,
        rank_update: str = "fixed",
        projection_options: Mapping | None = None,
        verbose: bool = False,
        config: Mapping | None = None,
        data=None,
    ):
        from tuckerlab.formats import get_format
        from tuckerlab.rank.selectors import as_selector

        self.projection_options = dict(projection_options or {})
        if specs is None and rank is None:
            raise ValueError("give the layers to compress (specs) or a rank_selector (rank=...) that chooses them")
        if rank_update not in RANK_UPDATES:
            raise ValueError(f"rank_update must be one of {RANK_UPDATES}, got {rank_update!r}")
        if rank_update == "shrink" and rank is None:
            raise ValueError("rank_update='shrink' needs a rank_selector (rank=...) to propose new ranks")
        self.projector: Projector | None = (
            Projector(specs, **self.projection_options) if specs is not None else None
        )
        self.format = get_format(format) if rank is not None else None
        self.selector = as_selector(rank) if rank is not None else None
        self.layer_choice = layers or LayerChoice()
        self.rank_update = rank_update
        self.data = data
        self.verbose = bool(verbose)
        self.log: list[dict] = []
        self.layers = None  # the LayerSelection a selector ranked
        self._cache: tuple[int, list[torch.Tensor], list[str]] | None = None
        self.warm: dict | None = None  # Projector.warm_starts of the last projection (checkpointed)
        origin = None if self.selector is None else {
            "format": self.format.name, **self.selector.config(), "layers": self.layer_choice.config()}
        self._config = {
            **dict(config or {}),
            "specs": self.projector.to_dict() if self.projector is not None else None,
            "rank_selector": origin,
            "projection_options": dict(self.projection_options),
        }
        if rank_update != "fixed" and "rank_update" not in self._config:
            self._config["rank_update"] = rank_update

    # ------------------------------------------------------------ internals
    def _weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The compressed layers' weight parameters in projector order (cached per model)."""
        names = self.projector.names
        if self._cache is None or self._cache[0] != id(model) or self._cache[2] != names:
            w = self.projector.weights(model)
            self._cache = (id(model), [w[n] for n in names], names)
        return self._cache[1]

    def _context(self, trainer):
        from tuckerlab.rank.selectors import SelectionContext

        return SelectionContext(
            data=self.data if self.data is not None else trainer.data, device=trainer.device, seed=trainer.seed,
            input_size=tuple(trainer.data.image_shape),
        )

    def _select(self, trainer) -> Projector:
        """Layers and ranks proposed by the selector for the current weights, checked."""
        model = trainer.model
        if self.layers is None:
            self.layers = self.layer_choice.select(model, tuple(trainer.data.image_shape))
        layers = self.layers if self.projector is None else self.layers.only(self.projector.names)
        ranks = self.selector.select(model, self.format, layers, self._context(trainer))
        return Projector.from_ranks(model, self.format, ranks, layers, self.projection_options, self.selector)

    def _choose_ranks(self, trainer) -> None:
        """Let the selector (if any) set the projector, unless ranks were given; called before the first projection."""
        if self.selector is not None and self.projector is None:
            self.projector = self._select(trainer)
            self._cache = None
        self._sync_ranks()

    def _update_ranks(self, trainer) -> None:
        """With ``rank_update="shrink"``: the elementwise minimum of the current and the proposed ranks."""
        if self.rank_update != "shrink":
            return
        proposed = self._select(trainer)
        if set(proposed.names) != set(self.projector.names):
            raise ValueError("the rank selector changed the set of compressed layers; 'shrink' only lowers ranks")
        self.projector = self.projector.with_ranks(
            {n: _shrink(s.rank, proposed[n].rank) for n, s in self.projector.items()}
        ).validate(trainer.model)
        self._cache = None
        self._sync_ranks()

    def _decompose(self, tensors: Mapping[str, torch.Tensor]) -> dict:
        """The projector's decompositions of ``tensors``, warm-started from the previous projection.

        Consecutive projections see slowly changing weights: HOOI started
        from the last factors reaches the same fixed point in fewer sweeps.
        """
        decompositions = self.projector.decompose_tensors(tensors, warm=self.warm)
        self.warm = _rank0_nested(self.projector.warm_starts(decompositions))  # checkpointed: rank 0's
        return decompositions

    def _warm_from(self, projections: Mapping[str, torch.Tensor] | None) -> None:
        """Warm starts recovered from checkpointed projections (checkpoints written without them).

        A projection has the ranks exactly, so its own decomposition spans
        the subspaces the lost factors spanned, and HOOI continues as it would have.
        """
        if self.warm is None and projections is not None and self.projector is not None:
            self.warm = _rank0_nested(self.projector.warm_starts(self.projector.decompose_tensors(projections)))

    def _quadratic(self, model: nn.Module, anchors: list[torch.Tensor], weight: float) -> torch.Tensor:
        """``weight/2 * sum_l ||W_l - anchors_l||^2``, fused over the layers."""
        # One fused kernel per op for all layers (CUDA), instead of a few per layer.
        norms = torch._foreach_norm(torch._foreach_sub(self._weights(model), anchors))
        return (0.5 * weight) * torch.stack(norms).square().sum()

    def _distances(self, model: nn.Module, targets: Mapping[str, torch.Tensor],
                   key: str = "distance") -> tuple[dict, dict]:
        """``(total, layers)``: ``||W - target||`` and its ratio to ``||W||``, overall and per layer."""
        d = self.projector.distances(model, targets)
        total = d.pop("total")
        return total, {n: {key: v["distance"], "relative": v["relative"]} for n, v in d.items()}

    def _ranks(self) -> dict:
        """``{name: rank}`` in plain values (for the log)."""
        return {n: s.to_dict()["rank"] for n, s in self.projector.items()}

    def _write(self, line: str) -> None:
        if self.verbose:
            from tqdm.auto import tqdm

            tqdm.write(line)

    # ------------------------------------------------- data-parallel runs
    def _sync_ranks(self) -> None:
        """Rank 0's layers, formats and ranks on every process (a collective; no-op in a single process).

        Called after every rank choice or update, so that a selector giving
        other ranks on another process (its own data, a last-bit difference
        in a spectrum) cannot make the processes project differently.
        """
        if not _dist.current().enabled:
            return
        specs = _dist.broadcast_object(None if self.projector is None else dict(self.projector.specs))
        if specs is None:
            if self.projector is not None:
                raise RuntimeError("rank 0 has no layers and ranks yet where this process has")
        elif self.projector is None or specs != self.projector.specs:
            self.projector = Projector(specs)
            self._cache = None
        if hasattr(self.selector, "state_dict") and hasattr(self.selector, "load_state_dict"):
            state = _rank0_nested(self.selector.state_dict())  # e.g. a factor found once, used by later proposals
            if not _dist.current().is_main:
                self.selector.load_state_dict(state)

    def _sync_tensors(self, **groups: Mapping[str, torch.Tensor] | None) -> None:
        """Rank 0's values written in place into each group's tensors (a collective; no-op in a single process).

        ``groups`` are the method's state dicts (``targets=...``, ``Z=...``,
        ``U=...``), each ``{layer name: tensor}``; ranks are synchronised
        before, so the shapes agree on every process. One broadcast for all.
        """
        if not _dist.current().enabled:
            return
        flat = {f"{g}/{n}": t for g, tensors in groups.items() if tensors is not None for n, t in tensors.items()}
        got = _dist.broadcast_tensors(flat)
        bad = sorted(k for k in set(flat) | set(got) if got.get(k) is not flat.get(k))
        if bad:
            raise RuntimeError(f"{self.method_name}: the processes hold different layers or shapes ({', '.join(bad)}); "
                               "their ranks should have been synchronised before")

    # ----------------------------------------------------- for the driver
    def final_decompositions(self) -> dict | None:
        """Factors of the last projection of the final weights, if the method keeps them (None: decompose W)."""
        return None

    def summary_line(self) -> str:
        """The method's last line of a result's summary ('' for none)."""
        return ""

    def rank_selection(self) -> dict | None:
        """How the ranks were chosen (plain values), when a selector chose them."""
        return None if self.selector is None else self.selector.info()

    # -------------------------------------------------------------- hooks
    def on_fit_begin(self, trainer) -> None:
        if self.projector is not None:
            self.projector = self.projector.validate(trainer.model)
        self._cache = None
        self._sync_ranks()  # ranks read off the weights before training, once per process
        self._config = _dist.broadcast_object(self._config)  # with them, what a checkpoint is checked against

    # -------------------------------------------------------------- state
    def _base_state(self) -> dict:
        """Settings, specs, log and selector state (the subclass adds its own entries)."""
        state = {
            "config": copy.deepcopy(self._config),
            "specs": None if self.projector is None else self.projector.to_dict(),
            "log": copy.deepcopy(self.log),
            "warm": self.warm,
        }
        if self.selector is not None and hasattr(self.selector, "state_dict"):
            state["selector"] = self.selector.state_dict()
        return state

    def _load_base_state(self, state: Mapping) -> None:
        """Check the settings, then restore what :meth:`_base_state` saved.

        Raises
        ------
        IncompatibleCheckpointError
            If the checkpoint was written with other settings; the message
            names them.
        """
        saved = state.get("config")
        if saved != self._config:
            keys = sorted(set(saved or {}) | set(self._config))
            diff = [k for k in keys if (saved or {}).get(k) != self._config.get(k)]
            raise IncompatibleCheckpointError(
                f"the checkpoint was written by an {self.method_name} run with other settings ({', '.join(diff)}); "
                "use another checkpoint_dir, delete it, or pass resume=False to start over"
            )
        self.projector = None if state["specs"] is None else Projector.from_dict(state["specs"])
        self.log = copy.deepcopy(list(state["log"]))
        self.warm = state.get("warm")  # absent from older checkpoints: the next projection starts afresh
        if "selector" in state and hasattr(self.selector, "load_state_dict"):
            self.selector.load_state_dict(state["selector"])
        self._cache = None


# ---------------------------------------------------------------- results
@dataclass
class MethodResult:
    """What a compression method (or the decompose-then-fine-tune pipeline) produced.

    Attributes
    ----------
    model : torch.nn.Module
        The compressed model (factorized layers), fine-tuned if asked.
    report : tuckerlab.surgery.CompressionReport
        Ranks, parameters and MACs per layer and in total.
    projector : Projector
        The layers, formats and ranks.
    method : str
        The method's name (``"decompose"``, ``"lc"``, ``"tt-lc"``, ``"admm"``, ...).
    dense_model : torch.nn.Module or None
        The dense network at the end of the method's training phase (its
        weights ``W``); the model passed in for the pipeline.
    history : History or None
        Per-epoch record of the training phase (with the method's columns);
        None without one (the pipeline).
    log : list of dict
        One record per projection (the method's log).
    accuracy_reference : float or None
        Test accuracy of the model passed in (None when training from
        scratch).
    accuracy_dense : float or None
        Test accuracy of the dense weights at the end of the training phase
        (the reference for the pipeline).
    accuracy_compressed : float
        Test accuracy of the compressed model, before fine-tuning.
    accuracy_finetuned : float or None
        After fine-tuning (None without).
    finetune_history : History or None
    seconds : float
        Wall time of training, compression and fine-tuning, the processes
        of earlier, resumed parts of the run included.
    wall_time : dict
        ``{"this_process_s", "earlier_processes_s"}``: how ``seconds``
        splits between this call and the interrupted ones it resumed.
    rank_selection : dict or None
        How the ranks were chosen, when a selector chose them.
    log_key : str
        Key of the log in :meth:`to_dict` (``"lc_log"``, ``"admm_log"``, ...).
    label : str
        Name of the dense accuracy in :meth:`summary`.
    final_line : str
        The method's last line of :meth:`summary`.
    """

    model: nn.Module
    report: Any
    projector: Projector
    method: str = "decompose"
    dense_model: nn.Module | None = None
    history: History | None = None
    log: list = field(default_factory=list)
    accuracy_reference: float | None = None
    accuracy_dense: float | None = None
    accuracy_compressed: float = math.nan
    accuracy_finetuned: float | None = None
    finetune_history: History | None = None
    seconds: float = 0.0
    rank_selection: dict | None = None
    log_key: str = "log"
    label: str = "dense"
    final_line: str = ""
    wall_time: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """The final accuracy: fine-tuned if fine-tuned, else compressed."""
        return self.accuracy_compressed if self.accuracy_finetuned is None else self.accuracy_finetuned

    @property
    def accuracy_decomposed(self) -> float:
        """The accuracy right after decomposition (the pipeline's name for :attr:`accuracy_compressed`)."""
        return self.accuracy_compressed

    @property
    def lc_log(self) -> list:
        """The LC name of :attr:`log`."""
        return self.log

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (for ``results.json``)."""
        r = self.report
        return {
            "method": self.method,
            "accuracy_reference": self.accuracy_reference,
            "accuracy_dense": self.accuracy_dense,
            "accuracy_compressed": self.accuracy_compressed,
            "accuracy_finetuned": self.accuracy_finetuned,
            **r.totals(),
            "report": r.to_dict(),
            "specs": self.projector.to_dict(),
            self.log_key: self.log,
            "history": self.history.to_dict() if self.history is not None else None,
            "finetune_history": self.finetune_history.to_dict() if self.finetune_history is not None else None,
            "rank_selection": self.rank_selection,
            "seconds": round(self.seconds, 2),
            "wall_time": {k: round(v, 2) for k, v in self.wall_time.items()},
        }

    def summary(self) -> str:
        """Accuracies, then parameters and MACs before and after, then the method's final line."""
        parts = []
        if self.accuracy_reference is not None and self.history is not None:
            parts.append(f"reference {100 * self.accuracy_reference:.2f}%")
        if self.accuracy_dense is not None:
            parts.append(f"{self.label} {100 * self.accuracy_dense:.2f}%")
        parts.append(f"compressed {100 * self.accuracy_compressed:.2f}%")
        if self.accuracy_finetuned is not None:
            parts.append(f"fine-tuned {100 * self.accuracy_finetuned:.2f}%")
        tail = f"\n{self.final_line}" if self.final_line else ""
        return "accuracy: " + ", ".join(parts) + "\n" + self.report.cost_line() + tail


# ---------------------------------------------------------------- driver
def _final_accuracy(history: History, model: nn.Module, data, device) -> float:
    acc = history.last().get("test_acc", math.nan) if len(history) else math.nan
    if acc is None or math.isnan(acc):
        acc = evaluate(model, data, device=device)["accuracy"]
    return float(acc)


def run_method(
    model: nn.Module,
    data,
    callback: ProjectionCallback | None = None,
    *,
    specs: Projector | None = None,
    method: str,
    phase: str | None = None,
    epochs: int = 0,
    lr: float = 0.1,
    schedule="cosine",
    schedule_kwargs: Mapping | None = None,
    from_scratch: bool = False,
    accuracy_reference: float | None = None,
    finetune_epochs: int = 0,
    finetune_lr: float = 0.01,
    finetune_schedule="cosine",
    finetune_schedule_kwargs: Mapping | None = None,
    execution: str = "factorized",
    device=None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    callbacks: Iterable[Callback] = (),
    progress: bool = True,
    fit_kwargs: Mapping[str, Any] | None = None,
    log_key: str = "log",
    label: str = "dense",
    selection=None,
) -> MethodResult:
    """Train a copy of ``model`` with the method's callback, build the factorized model, optionally fine-tune it.

    The steps every method shares: the model passed in is copied (not
    modified); the layers, ranks and the compressed model's form are checked
    before any training (when already known); the reference accuracy is
    measured (unless ``from_scratch`` or given); one
    :func:`~tuckerlab.train.fit` trains the copy with ``[callback,
    *callbacks]`` for ``epochs`` epochs (checkpoints in
    ``checkpoint_dir/phase``); the compressed model is built from the factors
    of the method's last projection, or from the final dense weights, with
    the callback's ranks (:func:`~tuckerlab.projection.to_factorized`) and
    evaluated; with ``finetune_epochs > 0`` a second ``fit`` fine-tunes its
    factors (checkpoints in ``checkpoint_dir/finetune``).

    Parameters
    ----------
    model, data
        As in :func:`~tuckerlab.train.fit`.
    callback : ProjectionCallback, optional
        The method; None with ``specs`` for decompose-then-fine-tune.
    specs : Projector, optional
        The layers and ranks when there is no callback.
    method : str
        The method's name in the result.
    phase : str, optional
        Sub-folder of ``checkpoint_dir`` for the training phase (``"lc"``,
        ``"admm"``).
    epochs, lr, schedule, schedule_kwargs
        The training phase's length and learning-rate schedule.
    from_scratch : bool
        The model is an untrained initialisation: no reference accuracy.
    accuracy_reference : float, optional
        The model's test accuracy when already known.
    finetune_epochs, finetune_lr, finetune_schedule, finetune_schedule_kwargs
        Fine-tuning of the compressed model (0 epochs: none).
    execution : {"factorized", "reconstructed"}
        Execution mode of the compressed model's layers.
    device, seed, checkpoint_dir, resume, progress
        As in :func:`~tuckerlab.train.fit`, for both phases.
    callbacks : iterable of Callback
        More hooks for the training phase.
    fit_kwargs : mapping
        More arguments of ``fit`` for both phases.
    log_key, label
        Names of the method's log and of its dense accuracy in the result.
    selection : LayerSelection, optional
        The layer selection the ranks were chosen on (its skipped layers go
        into the report).

    Returns
    -------
    MethodResult
    """
    from tuckerlab.results import Stopwatch

    if (callback is None) == (specs is None):
        raise ValueError("run_method needs a callback (a training method) or specs (decompose then fine-tune)")
    _check_positive_int(epochs, "epochs", 0)
    _check_positive_int(finetune_epochs, "finetune_epochs", 0)
    fit_kwargs = dict(fit_kwargs or {})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: join now, evaluate on this process's GPU
        device = _dist.setup(device)[1]
    dense = copy.deepcopy(model) if callback is not None else model
    projector = specs if callback is None else callback.projector
    if projector is not None:  # every rank, and the compressed model's form, checked before training
        projector = projector.validate(dense)
        projector.factorized_method()
        if callback is not None:
            callback.projector = projector
    input_size = tuple(data.image_shape)
    if accuracy_reference is None and not from_scratch:
        accuracy_reference = evaluate(dense, data, device=device)["accuracy"]
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

    with Stopwatch() as clock:
        history, accuracy_dense, decompositions = None, accuracy_reference, None
        if callback is not None:
            history = fit(
                dense, data, epochs=epochs, lr=lr, schedule=schedule, schedule_kwargs=schedule_kwargs,
                callbacks=[callback, *callbacks], checkpoint_dir=ckpt / (phase or method) if ckpt else None,
                resume=resume, device=device, seed=seed, progress=progress, **fit_kwargs,
            )
            accuracy_dense = _final_accuracy(history, dense, data, device)
            projector, decompositions = callback.projector, callback.final_decompositions()
        if selection is None and callback is not None:
            selection = callback.layers  # the layers a selector ranked (None for given specs)
        compressed, report = to_factorized(dense, projector, execution=execution, input_size=input_size,
                                           decompositions=decompositions, selection=selection)
        _sync_model(compressed)  # rank 0's factors on every process (decompositions may differ in the last bits)
        accuracy_compressed = evaluate(compressed, data, device=device)["accuracy"]
        finetune_history = accuracy_finetuned = None
        if finetune_epochs > 0:
            finetune_history = fit(
                compressed, data, epochs=finetune_epochs, lr=finetune_lr, schedule=finetune_schedule,
                schedule_kwargs=finetune_schedule_kwargs, checkpoint_dir=ckpt / "finetune" if ckpt else None,
                resume=resume, device=device, seed=seed, progress=progress, **fit_kwargs,
            )
            accuracy_finetuned = _final_accuracy(finetune_history, compressed, data, device)
    # a resumed run: the training segments of the interrupted processes count too
    earlier = sum(h.wall_time_s - h.segments[-1]["wall_time_s"]
                  for h in (history, finetune_history) if h is not None and h.segments)
    return MethodResult(
        model=compressed,
        report=report,
        projector=projector,
        method=method,
        dense_model=dense,
        history=history,
        log=copy.deepcopy(callback.log) if callback is not None else [],
        accuracy_reference=accuracy_reference,
        accuracy_dense=accuracy_dense,
        accuracy_compressed=accuracy_compressed,
        accuracy_finetuned=accuracy_finetuned,
        finetune_history=finetune_history,
        seconds=clock.seconds + earlier,
        wall_time={"this_process_s": clock.seconds, "earlier_processes_s": earlier},
        rank_selection=callback.rank_selection() if callback is not None else None,
        log_key=log_key,
        label=label,
        final_line=callback.summary_line() if callback is not None else "",
    )

r"""What the penalty methods share: a quadratic pull towards projected weights, and the run around it.

LC (Carreira-Perpinan, 2017) and ADMM (Yin et al., 2021) both train the
dense weights ``W`` of some layers with a penalty ``c/2 sum_l ||W_l -
A_l||^2`` towards *anchors* ``A_l`` built from projections of the weights
onto a compressed format (:mod:`tuckerlab.projection`): LC's anchor is
``Delta(Theta)``, ADMM's is ``Z - U``. Both then build the compressed model
from the final weights with the same ranks and may fine-tune it. This
module holds those common parts:

- :class:`PenaltyCallback`, the base of :class:`~tuckerlab.methods.LCCallback`
  and :class:`~tuckerlab.methods.ADMMCallback`: the layers and ranks
  (a :class:`~tuckerlab.projection.Projector`, or a rank selector that
  chooses them), the fused penalty, distances for the logs, verbose lines
  and the checkpoint state with its settings check;
- :class:`SpecRanks`, a rank selector from a fixed specification (a
  :func:`tuckerlab.rank.spec.from_spec` string, a dict, a rule or a rank);
- :class:`PenaltyResult` and :func:`compress_with_penalty`: copy the model,
  one :func:`~tuckerlab.train.fit` with the method's callback, the
  factorized model (:func:`~tuckerlab.projection.to_factorized`), its
  accuracy, optional fine-tuning.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import torch
from torch import nn

from tuckerlab.projection import Projector, project, to_factorized
from tuckerlab.train import Callback, History, IncompatibleCheckpointError, evaluate, fit

__all__ = ["PenaltyCallback", "PenaltyResult", "SpecRanks", "compress_with_penalty"]


def _check_positive_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _describe(obj) -> str | None:
    """A description of ``obj`` that is the same in every process (no memory addresses)."""
    if obj is None:
        return None
    text = repr(obj)
    return type(obj).__qualname__ if " at 0x" in text else text


def _metric(logs: Mapping | None, key: str) -> float:
    """``logs[key]`` as a float, NaN without logs."""
    return float(logs[key]) if logs else math.nan


# --------------------------------------------------------------- callback
class PenaltyCallback(Callback):
    """Base of the callbacks that pull compressed layers towards anchors built from projections.

    Subclasses set :attr:`method_name`, keep their anchors and hyper-parameters,
    and call :meth:`_quadratic` from :meth:`penalty`, :meth:`_base_state` /
    :meth:`_load_base_state` from their ``state_dict`` / ``load_state_dict``.

    Parameters
    ----------
    specs : Projector or mapping, optional
        ``{layer name: (format, rank)}`` (see :mod:`tuckerlab.projection`).
        May be None when ``rank_selector`` chooses the layers and ranks.
    rank_selector : callable, optional
        ``rank_selector(model, current) -> specs``; if it has
        ``state_dict``/``load_state_dict`` they are saved with the callback's
        state.
    projection_options : mapping, optional
        Decomposition options for every layer whose spec has none (see
        :class:`~tuckerlab.projection.Projector`).
    verbose : bool
        Print one line per projection (through ``tqdm.write``, so progress
        bars stay intact).
    config : mapping
        The subclass's hyper-parameters, plain values. With the specs, the
        selector and the options they form the settings a checkpoint must
        have been written with (:meth:`_load_base_state`).

    Attributes
    ----------
    projector : Projector or None
        The layers, formats and ranks (None until a selector chose them).
    rank_selector : callable or None
    projection_options : dict
    verbose : bool
    log : list of dict
        One record per projection, filled by the subclass.
    """

    #: The method's name in messages ("LC", "ADMM").
    method_name: ClassVar[str] = "penalty"

    def __init__(
        self,
        specs=None,
        *,
        rank_selector=None,
        projection_options: Mapping | None = None,
        verbose: bool = False,
        config: Mapping | None = None,
    ):
        self.projection_options = dict(projection_options or {})
        if specs is None and rank_selector is None:
            raise ValueError("give the layers to compress (specs) or a rank_selector that chooses them")
        if rank_selector is not None and not callable(rank_selector):
            raise ValueError(f"rank_selector must be callable, got {rank_selector!r}")
        self.projector: Projector | None = (
            Projector(specs, **self.projection_options) if specs is not None else None
        )
        self.rank_selector = rank_selector
        self.verbose = bool(verbose)
        self.log: list[dict] = []
        self._cache: tuple[int, list[torch.Tensor], list[str]] | None = None
        self._config = {
            **dict(config or {}),
            "specs": self.projector.to_dict() if self.projector is not None else None,
            "rank_selector": _describe(rank_selector),
            "projection_options": dict(self.projection_options),
        }

    # ------------------------------------------------------------ internals
    def _weights(self, model: nn.Module) -> list[torch.Tensor]:
        """The compressed layers' weight parameters in projector order (cached per model)."""
        names = self.projector.names
        if self._cache is None or self._cache[0] != id(model) or self._cache[2] != names:
            w = self.projector.weights(model)
            self._cache = (id(model), [w[n] for n in names], names)
        return self._cache[1]

    def _select(self, model: nn.Module, current: Projector | None) -> Projector:
        """Layers and ranks proposed by the selector for the current weights, checked."""
        return Projector(self.rank_selector(model, current), **self.projection_options).validate(model)

    def _choose_ranks(self, model: nn.Module) -> None:
        """Let the selector (if any) set the projector; called before the first projection."""
        if self.rank_selector is not None:
            self.projector = self._select(model, self.projector)
            self._cache = None

    def _project(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: projection of tensors[name]}`` with each layer's format, rank and options."""
        return {n: project(tensors[n], s.format, s.rank, **s.options) for n, s in self.projector.items()}

    def _quadratic(self, model: nn.Module, anchors: list[torch.Tensor], weight: float) -> torch.Tensor:
        """``weight/2 * sum_l ||W_l - anchors_l||^2``, fused over the layers."""
        # One fused kernel per op for all layers (CUDA), instead of a few per layer.
        norms = torch._foreach_norm(torch._foreach_sub(self._weights(model), anchors))
        return (0.5 * weight) * torch.stack(norms).square().sum()

    def _distances(self, model: nn.Module, targets: Mapping[str, torch.Tensor], key: str = "distance") -> tuple[dict, dict]:
        """``(total, layers)``: ``||W - target||`` and its ratio to ``||W||``, overall and per layer.

        ``total`` has ``"distance"``, ``"norm"`` and ``"relative"``; ``layers``
        is ``{name: {key: distance, "relative": ratio}}``.
        """
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

    # -------------------------------------------------------------- hooks
    def on_fit_begin(self, trainer) -> None:
        if self.projector is not None:
            self.projector = self.projector.validate(trainer.model)
        self._cache = None

    # -------------------------------------------------------------- state
    def _base_state(self) -> dict:
        """Settings, specs, log and selector state (the subclass adds its own entries)."""
        state = {
            "config": copy.deepcopy(self._config),
            "specs": None if self.projector is None else self.projector.to_dict(),
            "log": copy.deepcopy(self.log),
        }
        if self.rank_selector is not None and hasattr(self.rank_selector, "state_dict"):
            state["selector"] = self.rank_selector.state_dict()
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
        if "selector" in state and hasattr(self.rank_selector, "load_state_dict"):
            self.rank_selector.load_state_dict(state["selector"])
        self._cache = None


# ---------------------------------------------------------- rank selector
class SpecRanks:
    """A rank selector from a fixed specification (string, dict, rule or literal), read at selection time.

    Parameters
    ----------
    ranks : str, dict, rank rule or rank
        A :func:`tuckerlab.rank.spec.from_spec` string (``"params:0.33"``,
        ``"macs:0.5"``, ``"evbmf"``, ``"ratio:0.5"``, ``"8,8"``, ...) or what
        :meth:`~tuckerlab.projection.Projector.from_rank` takes.
    input_size : sequence of int
        One input without the batch dimension (for MAC budgets).
    compress_kwargs : dict
        Layer choice of :func:`~tuckerlab.surgery.compress_model` (``skip``,
        ``include_linear``, ...).
    format : str
        Format of the convolutions (``"tucker2"``, ``"tt"``, ``"tt_tucker"``
        or ``"cp"``).
    """

    def __init__(self, ranks, input_size, compress_kwargs: dict, format: str = "tt_tucker"):
        self.ranks, self.input_size, self.compress_kwargs = ranks, tuple(input_size), dict(compress_kwargs)
        self.format = format

    def __repr__(self) -> str:
        ranks = getattr(self.ranks, "description", None) or _describe(self.ranks)
        kwargs = {k: _describe(v) for k, v in self.compress_kwargs.items()}
        fmt = "" if self.format == "tt_tucker" else f", format={self.format!r}"  # TT-LC's repr as before
        return f"SpecRanks({ranks}, {kwargs}{fmt})"

    def __call__(self, model: nn.Module, current: Projector | None = None) -> Projector:
        from tuckerlab.rank.spec import from_spec

        rank = self.ranks
        if isinstance(rank, str):
            rank = from_spec(rank, model=model, method=self.format, input_size=self.input_size)
        return Projector.from_rank(model, self.format, rank, input_size=self.input_size, **self.compress_kwargs)

    def info(self) -> dict:
        return {"rule": repr(self)}


# ---------------------------------------------------------------- results
@dataclass
class PenaltyResult:
    """What a penalty method (LC, ADMM) produced; subclasses add the method's log.

    Attributes
    ----------
    model : torch.nn.Module
        The compressed model (factorized layers), fine-tuned if asked.
    dense_model : torch.nn.Module
        The dense network at the end of the method's training phase.
    report : tuckerlab.surgery.CompressionReport
        Ranks, parameters and MACs per layer and in total.
    projector : Projector
        The final layers, formats and ranks.
    history : History
        Per-epoch record of the training phase (with the method's columns).
    accuracy_reference : float or None
        Test accuracy of the model passed in (None when training from
        scratch).
    accuracy_dense : float
        Test accuracy of the dense network at the end of the training phase.
    accuracy_compressed : float
        Test accuracy of the compressed model, before fine-tuning.
    accuracy_finetuned : float or None
        After fine-tuning (None without).
    finetune_history : History or None
    seconds : float
        Wall time of training, compression and fine-tuning.
    rank_selection : dict or None
        How the ranks were chosen, when a selector chose them.
    """

    #: Name of the log field of the subclass, and its key in :meth:`to_dict`.
    _log_field: ClassVar[str] = "log"
    _log_key: ClassVar[str] = "log"
    #: Name of the training phase in :meth:`summary`.
    _label: ClassVar[str] = "dense"

    model: nn.Module
    dense_model: nn.Module
    report: Any
    projector: Projector
    history: History
    accuracy_reference: float | None
    accuracy_dense: float
    accuracy_compressed: float
    accuracy_finetuned: float | None = None
    finetune_history: History | None = None
    seconds: float = 0.0
    rank_selection: dict | None = None

    @property
    def accuracy(self) -> float:
        """The final accuracy: fine-tuned if fine-tuned, else compressed."""
        return self.accuracy_compressed if self.accuracy_finetuned is None else self.accuracy_finetuned

    def _log(self) -> list:
        return getattr(self, self._log_field)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (for ``results.json``)."""
        r = self.report
        return {
            "accuracy_reference": self.accuracy_reference,
            "accuracy_dense": self.accuracy_dense,
            "accuracy_compressed": self.accuracy_compressed,
            "accuracy_finetuned": self.accuracy_finetuned,
            **r.totals(),
            "report": r.to_dict(),
            "specs": self.projector.to_dict(),
            self._log_key: self._log(),
            "history": self.history.to_dict(),
            "finetune_history": self.finetune_history.to_dict() if self.finetune_history is not None else None,
            "rank_selection": self.rank_selection,
            "seconds": round(self.seconds, 2),
        }

    def _summary_tail(self) -> str:
        """The method's last line of :meth:`summary` (starting with a newline), or ''."""
        return ""

    def summary(self) -> str:
        """Accuracies, then parameters and MACs before and after, then the method's final distance."""
        parts = []
        if self.accuracy_reference is not None:
            parts.append(f"reference {100 * self.accuracy_reference:.2f}%")
        parts += [f"{self._label} {100 * self.accuracy_dense:.2f}%", f"compressed {100 * self.accuracy_compressed:.2f}%"]
        if self.accuracy_finetuned is not None:
            parts.append(f"fine-tuned {100 * self.accuracy_finetuned:.2f}%")
        return "accuracy: " + ", ".join(parts) + "\n" + self.report.cost_line() + self._summary_tail()


# ---------------------------------------------------------------- driver
def _final_accuracy(history: History, model: nn.Module, data, device) -> float:
    acc = history.last().get("test_acc", math.nan) if len(history) else math.nan
    if acc is None or math.isnan(acc):
        acc = evaluate(model, data, device=device)["accuracy"]
    return float(acc)


def compress_with_penalty(
    model: nn.Module,
    data,
    callback: PenaltyCallback,
    *,
    phase: str,
    epochs: int,
    lr: float,
    schedule,
    schedule_kwargs: Mapping | None,
    from_scratch: bool,
    finetune_epochs: int,
    finetune_lr: float,
    finetune_schedule,
    finetune_schedule_kwargs: Mapping | None = None,
    execution: str,
    device,
    seed: int,
    checkpoint_dir: str | os.PathLike | None,
    resume: bool,
    callbacks: Iterable[Callback],
    progress: bool,
    fit_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """Train a copy of ``model`` with ``callback``, build the factorized model, optionally fine-tune it.

    The steps every penalty method shares: the model passed in is copied
    (not modified); the callback's layers and ranks, and the compressed
    model's form, are checked before any training; the reference accuracy
    is measured (unless ``from_scratch``); one :func:`~tuckerlab.train.fit`
    trains the copy with ``[callback, *callbacks]`` (checkpoints in
    ``checkpoint_dir/phase``); the compressed model is built from the final
    dense weights with the callback's ranks
    (:func:`~tuckerlab.projection.to_factorized`) and evaluated; with
    ``finetune_epochs > 0`` a second ``fit`` fine-tunes its factors
    (checkpoints in ``checkpoint_dir/finetune``).

    Parameters
    ----------
    model, data
        As in :func:`~tuckerlab.train.fit`.
    callback : PenaltyCallback
        The method.
    phase : str
        Sub-folder of ``checkpoint_dir`` for the training phase (``"lc"``,
        ``"admm"``).
    epochs, lr, schedule, schedule_kwargs
        The training phase's length and learning-rate schedule.
    from_scratch : bool
        The model is an untrained initialisation: no reference accuracy.
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

    Returns
    -------
    dict
        The fields of :class:`PenaltyResult` except ``rank_selection``.
    """
    from tuckerlab.results import Stopwatch

    dense = copy.deepcopy(model)
    if callback.projector is not None:  # every rank, and the compressed model's form, checked before training
        callback.projector = callback.projector.validate(dense)
        callback.projector.factorized_method()
    input_size = tuple(data.image_shape)
    accuracy_reference = None if from_scratch else evaluate(dense, data, device=device)["accuracy"]
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

    with Stopwatch() as clock:
        history = fit(
            dense, data, epochs=epochs, lr=lr, schedule=schedule, schedule_kwargs=schedule_kwargs,
            callbacks=[callback, *callbacks], checkpoint_dir=ckpt / phase if ckpt else None, resume=resume,
            device=device, seed=seed, progress=progress, **fit_kwargs,
        )
        accuracy_dense = _final_accuracy(history, dense, data, device)
        compressed, report = to_factorized(dense, callback.projector, execution=execution, input_size=input_size)
        accuracy_compressed = evaluate(compressed, data, device=device)["accuracy"]
        finetune_history = accuracy_finetuned = None
        if finetune_epochs > 0:
            finetune_history = fit(
                compressed, data, epochs=finetune_epochs, lr=finetune_lr, schedule=finetune_schedule,
                schedule_kwargs=finetune_schedule_kwargs, checkpoint_dir=ckpt / "finetune" if ckpt else None,
                resume=resume, device=device, seed=seed, progress=progress, **fit_kwargs,
            )
            accuracy_finetuned = _final_accuracy(finetune_history, compressed, data, device)
    return dict(
        model=compressed,
        dense_model=dense,
        report=report,
        projector=callback.projector,
        history=history,
        accuracy_reference=accuracy_reference,
        accuracy_dense=accuracy_dense,
        accuracy_compressed=accuracy_compressed,
        accuracy_finetuned=accuracy_finetuned,
        finetune_history=finetune_history,
        seconds=clock.seconds,
    )

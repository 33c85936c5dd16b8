"""The classic compression pipeline in one call.

trained model → rank rule (EVBMF by default) → factorized model → fine-tune
→ report, as in Kim et al. (2016): decompose every convolution of a trained
network with ranks chosen per layer, then recover the accuracy lost in the
decomposition by a short fine-tuning of the whole factorized network.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from tuckerlab.results import Stopwatch
from tuckerlab.surgery import CompressionReport, compress_model
from tuckerlab.train import History, evaluate, fit

__all__ = ["PipelineResult", "compress_and_finetune"]


@dataclass
class PipelineResult:
    """What :func:`compress_and_finetune` produced.

    Attributes
    ----------
    model : torch.nn.Module
        The factorized (and fine-tuned) model.
    report : CompressionReport
        Per-layer ranks, parameters and MACs before and after.
    accuracy_dense, accuracy_decomposed : float
        Test accuracy of the input model and right after the decomposition.
    accuracy_finetuned : float or None
        Test accuracy after fine-tuning (None without fine-tuning).
    history : History or None
        The fine-tuning history.
    seconds : float
        Wall time of decomposition and fine-tuning.
    """

    model: nn.Module
    report: CompressionReport
    accuracy_dense: float
    accuracy_decomposed: float
    accuracy_finetuned: float | None
    history: History | None
    seconds: float

    @property
    def accuracy(self) -> float:
        """The final accuracy: fine-tuned if fine-tuned, else decomposed."""
        return self.accuracy_decomposed if self.accuracy_finetuned is None else self.accuracy_finetuned

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (for ``results.json``)."""
        r = self.report
        return {
            "accuracy_dense": self.accuracy_dense,
            "accuracy_decomposed": self.accuracy_decomposed,
            "accuracy_finetuned": self.accuracy_finetuned,
            **r.totals(),
            "report": r.to_dict(),
            "finetune_history": self.history.to_dict() if self.history is not None else None,
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        """Two lines: accuracies, then parameters and MACs before and after."""
        acc = (f"accuracy: dense {100 * self.accuracy_dense:.2f}%, "
               f"decomposed {100 * self.accuracy_decomposed:.2f}%")
        if self.accuracy_finetuned is not None:
            acc += f", fine-tuned {100 * self.accuracy_finetuned:.2f}%"
        return acc + "\n" + self.report.cost_line()


def compress_and_finetune(
    model: nn.Module,
    data,
    method: str = "tucker2",
    rank: Any = "evbmf",
    *,
    finetune_epochs: int = 5,
    lr: float = 0.01,
    schedule: str = "cosine",
    include_linear: bool = False,
    device=None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    compress_kwargs: dict | None = None,
    accuracy_dense: float | None = None,
    **fit_kwargs: Any,
) -> PipelineResult:
    """Decompose a trained model, fine-tune it and report (Kim et al. 2016).

    Parameters
    ----------
    model : torch.nn.Module
        A trained model; it is not modified.
    data : ImageDataset
        From :func:`tuckerlab.data.load_dataset`; fine-tuning uses its train
        split, accuracies its test split.
    method : {"tucker2", "tt", "tt_tucker", "cp"}
        The factorization of the convolutions.
    rank : str, rank rule, dict or rank
        A specification string for :func:`tuckerlab.rank.from_spec`
        (``"evbmf"``, ``"energy:0.9"``, ``"params:0.3"``, ...), or anything
        :func:`tuckerlab.compress_model` accepts.
    finetune_epochs : int
        Epochs of fine-tuning of the whole factorized model; 0 skips it.
    lr, schedule : float, str
        Fine-tuning learning rate and schedule (see :func:`tuckerlab.train.fit`).
    include_linear : bool
        Also factorize linear layers.
    device : torch.device or str, optional
        Where to fine-tune and evaluate (default as :func:`~tuckerlab.train.fit`).
    checkpoint_dir : path-like, optional
        Checkpoints of the fine-tuning, resumed when ``resume``.
    resume : bool
        Resume an interrupted fine-tuning from ``checkpoint_dir``.
    compress_kwargs : dict, optional
        More arguments of :func:`tuckerlab.compress_model` (``skip``,
        ``decompose_kwargs``, ...).
    accuracy_dense : float, optional
        Test accuracy of ``model`` when already known (comparing several
        rules on one model); measured otherwise.
    **fit_kwargs
        More arguments of :func:`tuckerlab.train.fit` (``batch_size``,
        ``seed``, ``progress``, ...).

    Returns
    -------
    PipelineResult

    References
    ----------
    Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang and D. Shin, "Compression of
    Deep Convolutional Neural Networks for Fast and Low Power Mobile
    Applications", ICLR 2016.
    """
    from tuckerlab.rank import from_spec

    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    input_size = tuple(data.image_shape)
    if isinstance(rank, str):
        rank = from_spec(rank, model=model, method=method, input_size=input_size)
    if accuracy_dense is None:
        accuracy_dense = evaluate(model, data, device=device)["accuracy"]
    with Stopwatch() as clock:
        small, report = compress_model(model, method, rank, include_linear=include_linear,
                                       input_size=input_size, **(compress_kwargs or {}))
        accuracy_decomposed = evaluate(small, data, device=device)["accuracy"]
        history = accuracy_finetuned = None
        if finetune_epochs > 0:
            history = fit(small, data, epochs=finetune_epochs, lr=lr, schedule=schedule, device=device,
                          checkpoint_dir=checkpoint_dir, resume=resume, **fit_kwargs)
            # fit evaluates after its last epoch; evaluate again only if told not to.
            accuracy_finetuned = history.last().get("test_acc", math.nan)
            if math.isnan(accuracy_finetuned):
                accuracy_finetuned = evaluate(small, data, device=device)["accuracy"]
    return PipelineResult(small, report, accuracy_dense, accuracy_decomposed, accuracy_finetuned, history,
                          clock.seconds)

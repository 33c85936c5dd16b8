"""The classic compression pipeline in one call.

trained model → rank selector (EVBMF by default) → factorized model →
fine-tune → report, as in Kim et al. (2016): decompose every convolution of a
trained network with ranks chosen per layer, then recover the accuracy lost
in the decomposition by a short fine-tuning of the whole factorized network.
It is the methods' driver (:func:`tuckerlab.methods.run_method`) without a
training phase, and returns the same :class:`~tuckerlab.methods.MethodResult`.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

from torch import nn

from tuckerlab.methods._base import MethodResult, run_method

__all__ = ["PipelineResult", "compress_and_finetune"]

#: The result of :func:`compress_and_finetune` (one class for every method).
PipelineResult = MethodResult


def compress_and_finetune(
    model: nn.Module,
    data,
    format="tucker2",
    rank: Any = "evbmf",
    *,
    finetune_epochs: int = 5,
    lr: float = 0.01,
    schedule: str = "cosine",
    schedule_kwargs: dict | None = None,
    include_linear: bool = False,
    device=None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    compress_kwargs: dict | None = None,
    accuracy_dense: float | None = None,
    method: str | None = None,
    **fit_kwargs: Any,
) -> MethodResult:
    """Decompose a trained model, fine-tune it and report (Kim et al. 2016).

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        A trained model; it is not modified.
    data : ImageDataset
        From :func:`tuckerlab.data.load_dataset`; fine-tuning uses its train
        split, accuracies its test split.
    format : {"tucker2", "tt", "tt_tucker", "cp"}
        The format of the convolutions.
    rank : rank selector, str, dict, rank rule or rank
        A specification (``"evbmf"``, ``"energy:0.9"``, ``"params:0.3"``, any
        registered selector), or anything :func:`tuckerlab.compress_model`
        accepts; selectors that look at the data get ``data``.
    finetune_epochs : int
        Epochs of fine-tuning of the whole factorized model; 0 skips it.
    lr, schedule : float, str
        Fine-tuning learning rate and schedule (see :func:`tuckerlab.train.fit`).
    schedule_kwargs : mapping, optional
        The schedule's settings (e.g. ``authors_step(...)`` for ``"step"``).
    include_linear : bool
        Also factorize linear layers.
    device : torch.device or str, optional
        Where to fine-tune and evaluate (default as :func:`~tuckerlab.train.fit`).
    checkpoint_dir : path-like, optional
        Checkpoints of the fine-tuning, resumed when ``resume``.
    resume : bool
        Resume an interrupted fine-tuning from ``checkpoint_dir``.
    compress_kwargs : dict, optional
        Layer choice and decomposition options of
        :func:`tuckerlab.compress_model` (``skip``, ``skip_first``,
        ``skip_pointwise``, ``decompose_kwargs``).
    accuracy_dense : float, optional
        Test accuracy of ``model`` when already known (comparing several
        rules on one model); measured otherwise.
    method : str, optional
        Older name of ``format``.
    **fit_kwargs
        More arguments of :func:`tuckerlab.train.fit` (``batch_size``,
        ``seed``, ``progress``, ...).

    Returns
    -------
    MethodResult
        ``accuracy_reference`` and ``accuracy_dense`` are the model's,
        ``accuracy_compressed`` right after the decomposition (also
        ``accuracy_decomposed``), ``finetune_history`` the fine-tuning's.

    References
    ----------
    Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang and D. Shin, "Compression of
    Deep Convolutional Neural Networks for Fast and Low Power Mobile
    Applications", ICLR 2016.
    """
    from tuckerlab.layer_selection import select_layers
    from tuckerlab.projection import Projector

    if method is not None:
        warnings.warn("compress_and_finetune(method=...) is now format=...", DeprecationWarning, stacklevel=2)
        format = method
    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    kwargs = dict(compress_kwargs or {})
    options = kwargs.pop("decompose_kwargs", None)
    input_size = tuple(data.image_shape)
    from tuckerlab.rank.selectors import as_selector

    layers = select_layers(model, include_linear=include_linear, input_size=input_size, **kwargs)
    selector = as_selector(rank)
    start = time.perf_counter()
    specs = Projector.from_rank(model, format, selector, data=data, layers=layers, decompose_kwargs=options)
    search = time.perf_counter() - start
    result = run_method(
        model, data, specs=specs, method="decompose", accuracy_reference=accuracy_dense,
        finetune_epochs=finetune_epochs, finetune_lr=lr, finetune_schedule=schedule,
        finetune_schedule_kwargs=schedule_kwargs, device=device,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=fit_kwargs.pop("progress", True),
        seed=fit_kwargs.pop("seed", 0), fit_kwargs=fit_kwargs, selection=layers,
    )
    result.rank_selection = {**selector.info(), "search_seconds": search}  # the rank search's own wall time
    result.seconds += search
    return result

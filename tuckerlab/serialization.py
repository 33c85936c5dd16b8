"""Saving and loading models, dense or factorized, as portable files.

A model file holds the architecture's name and arguments, the factorization
applied to it (method and per-layer ranks) and the ``state_dict``; loading
rebuilds the architecture with :func:`tuckerlab.models.get_model`, applies the
same factorization with :func:`tuckerlab.surgery.compress_model`, then loads
the weights. No pickled modules are stored, so files survive refactoring.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["save_model", "load_model", "FORMAT"]

FORMAT = "tuckerlab-model/1"


def _plain_rank(rank: Any) -> Any:
    """Ranks as JSON-friendly nested lists/ints (tuples become lists)."""
    if isinstance(rank, (list, tuple)):
        return [_plain_rank(r) for r in rank]
    return int(rank)


def _tuple_rank(rank: Any) -> Any:
    if isinstance(rank, list):
        return tuple(_tuple_rank(r) for r in rank)
    return rank


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    compression: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` so that :func:`load_model` can rebuild it.

    Parameters
    ----------
    path : path-like
        Destination file (conventionally ``model.pt``). Written atomically.
    model : nn.Module
        The model, dense or factorized by :func:`tuckerlab.compress_model`.
    arch : str
        Name accepted by :func:`tuckerlab.models.get_model`.
    num_classes, in_channels : int
        Arguments the architecture was built with.
    compression : dict, optional
        ``{"method": str, "ranks": {layer name: rank}}`` describing the
        factorization, as found in a :class:`~tuckerlab.surgery.CompressionReport`.
        ``None`` for a dense model.
    extra : dict, optional
        Anything else worth keeping (metrics, provenance).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compression is not None:
        compression = {
            "method": compression["method"],
            "ranks": {name: _plain_rank(r) for name, r in compression["ranks"].items()},
        }
    payload = {
        "format": FORMAT,
        "arch": arch,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "compression": compression,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`.

    Returns
    -------
    model : nn.Module
        The model with its weights, in eval mode.
    info : dict
        The file's metadata: ``arch``, ``num_classes``, ``in_channels``,
        ``compression`` and ``extra``.
    """
    from tuckerlab.models import get_model
    from tuckerlab.surgery import compress_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a tuckerlab model file (format {FORMAT!r}); "
            "training checkpoints (checkpoints/last.pt) are resumed with `tuckerlab train --resume`, "
            "the finished model is the run's model.pt"
        )
    model = get_model(payload["arch"], num_classes=payload["num_classes"], in_channels=payload["in_channels"])
    compression = payload.get("compression")
    if compression is not None:
        ranks = {name: _tuple_rank(r) for name, r in compression["ranks"].items()}
        model, _ = compress_model(
            model, compression["method"], ranks, skip_first=False, skip_pointwise=False,
            include_linear=True,
        )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    info = {k: payload[k] for k in ("arch", "num_classes", "in_channels", "compression", "extra")}
    return model, info

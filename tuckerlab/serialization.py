"""Saving and loading models, dense or factorized, as portable files.

A model file holds the architecture's name and arguments, the factorization
applied to it (the convolutions' format, and each layer's format and rank)
and the ``state_dict``; loading rebuilds the architecture with
:func:`tuckerlab.models.get_model`, swaps in factorized layers of the
recorded formats and ranks (:func:`tuckerlab.surgery.build_compressed`,
nothing is decomposed), then loads the weights. No pickled modules are
stored, so files survive refactoring.

Files of the first version (``tuckerlab-model/1``) load too: their layers'
formats are read from the method (``"lowrank"`` for linear layers), and
square Tucker factors they stored are folded into the cores
(:meth:`tuckerlab.formats.Format.upgrade_state`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuckerlab.formats import get_format

__all__ = ["save_model", "load_model", "compression_of", "FORMAT"]

FORMAT = "tuckerlab-model/2"
#: Versions :func:`load_model` reads.
_READABLE = ("tuckerlab-model/1", FORMAT)


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
        ``{"method": conv format, "ranks": {layer name: rank}}`` describing
        the factorization (linear layers are ``"lowrank"``), as found in a
        :class:`~tuckerlab.surgery.CompressionReport`; an optional
        ``"formats": {layer name: format}`` overrides the per-layer formats.
        ``None`` for a dense model.
    extra : dict, optional
        Anything else worth keeping (metrics, provenance).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compression is not None:
        formats = _layer_formats(model, compression)
        compression = {
            "method": compression["method"],
            "ranks": {name: get_format(formats[name]).rank_to_json(r) for name, r in compression["ranks"].items()},
            "formats": formats,
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


def compression_of(report) -> dict[str, Any]:
    """The ``compression`` argument of :func:`save_model` for a model built with ``report``."""
    return {
        "method": report.method,
        "ranks": {row.name: row.rank for row in report.rows},
        "formats": {row.name: row.method for row in report.rows},
    }


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

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE:
        raise ValueError(
            f"{str(path)!r} is not a tuckerlab model file (format {FORMAT!r}); "
            "training checkpoints (checkpoints/last.pt) are resumed by running the same `tuckerlab` command "
            "again (resuming is the default), the finished model is the run's model.pt"
        )
    model = get_model(payload["arch"], num_classes=payload["num_classes"], in_channels=payload["in_channels"])
    compression = payload.get("compression")
    state = dict(payload["state_dict"])
    if compression is not None:
        model, compression = _factorize(model, compression, state, upgrade=payload["format"] != FORMAT)
    model.load_state_dict(state)
    model.eval()
    info = {k: payload[k] for k in ("arch", "num_classes", "in_channels", "extra")}
    info["compression"] = compression
    return model, info


def _layer_formats(model: nn.Module, compression: dict) -> dict[str, str]:
    """``{layer: format}``: the recorded ones, else the layer's own (a factorized layer's format, ``lowrank``
    for an ``nn.Linear``), else the method."""
    given = compression.get("formats") or {}
    out = {}
    for name in compression["ranks"]:
        module = model.get_submodule(name)
        own = getattr(type(module), "format_name", None) or ("lowrank" if isinstance(module, nn.Linear) else None)
        out[name] = given.get(name) or own or compression["method"]
    return out


def _factorize(model: nn.Module, compression: dict, state: dict, upgrade: bool):
    """The model with empty factorized layers of the recorded formats and ranks; ``state`` upgraded in place."""
    from tuckerlab.projection import LayerSpec
    from tuckerlab.surgery import build_compressed

    formats = _layer_formats(model, compression)
    specs = {}
    for name, rank in compression["ranks"].items():
        fmt = get_format(formats[name])
        rank = fmt.validate_rank(model.get_submodule(name).weight.shape, fmt.rank_from_json(rank), layer=name)
        specs[name] = LayerSpec(fmt.name, rank)
        if upgrade:
            fmt.upgrade_state(state, name + ".", tuple(model.get_submodule(name).weight.shape), rank)
    model, _ = build_compressed(model, specs, None, inplace=True)
    return model, {**compression, "formats": formats}

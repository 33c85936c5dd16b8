"""Checkpoints that resume a run exactly.

A checkpoint is one ``torch.save`` file (``last.pt``) holding everything the
next epoch depends on: model, optimizer, scheduler and gradient-scaler
states, the epoch and global step, the history, every callback's
``state_dict()``, the random-number generators (torch CPU and CUDA, NumPy,
Python) and a fingerprint of the arguments of the run. It is written to a
temporary file in the same directory and moved into place with
:func:`os.replace`, so a run killed while saving leaves the previous
checkpoint intact.

Everything stored is made of tensors and plain Python values, so files are
read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = [
    "FORMAT_VERSION",
    "IncompatibleCheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "fingerprint",
]

FORMAT_VERSION = 1


class IncompatibleCheckpointError(RuntimeError):
    """A checkpoint was written by a run with different arguments."""


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path : path-like
        Destination file; its directory is created if needed.
    state : mapping
        What to save (tensors and plain Python values).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path-like
        The file.
    map_location : optional
        Passed to :func:`torch.load` (e.g. the device to load tensors on).

    Returns
    -------
    dict
    """
    return torch.load(path, map_location=map_location, weights_only=True)


def get_rng_state() -> dict[str, Any]:
    """The state of torch (CPU and every CUDA device), NumPy and Python RNGs.

    Converted to tensors and plain values so that it loads with
    ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)}:{x.dtype}"
    if isinstance(x, type):
        return f"{x.__module__}.{x.__qualname__}"
    return repr(x)


def fingerprint(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Hash of the arguments that determine a run's trajectory.

    Parameters
    ----------
    args : mapping
        Argument names to values (nested mappings, sequences, numbers,
        strings, tensors and objects with a stable ``repr``).

    Returns
    -------
    digest : str
        SHA-256 hex digest of the canonical JSON form.
    canonical : dict
        The JSON form itself, stored next to the digest so that an
        incompatible resume can say which arguments differ.
    """
    canonical = _jsonable(dict(args))
    text = json.dumps(canonical, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), canonical


def check_compatible(path: str | os.PathLike, saved: Mapping, digest: str, canonical: Mapping) -> None:
    """Raise :class:`IncompatibleCheckpointError` if ``saved`` came from other arguments."""
    if saved.get("format_version") != FORMAT_VERSION:
        raise IncompatibleCheckpointError(
            f"{path} has checkpoint format {saved.get('format_version')!r}, "
            f"this version of tuckerlab reads format {FORMAT_VERSION}; "
            "delete it or pass resume=False to start over"
        )
    if saved.get("args_hash") == digest:
        return
    old = saved.get("args", {})
    keys = sorted(set(old) | set(canonical))
    diff = [f"{k}: checkpoint {old.get(k)!r} != now {canonical.get(k)!r}" for k in keys if old.get(k) != canonical.get(k)]
    raise IncompatibleCheckpointError(
        f"cannot resume from {path}: it was written by a run with different arguments "
        f"({'; '.join(diff) or 'hash mismatch'}). Use another checkpoint_dir, delete the "
        "file, or pass resume=False to start over."
    )

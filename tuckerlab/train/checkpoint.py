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

What a resumed run must share with the run that wrote the checkpoint
--------------------------------------------------------------------
The fingerprint covers what decides the trajectory: epochs, learning rate,
global batch size, optimizer and schedule settings, label smoothing,
augmentation, seed, step cap, the model's class and parameter shapes, the
data's shapes, the callbacks' classes, and the number of processes. A
checkpoint resumes only if all of them match, except:

``world_size`` (the number of processes) may change
    The global batch size is a setting and the permutation of each epoch
    depends on the seed only, so with any number of processes every step
    trains on the same images, with the same learning rate; DDP averages
    the gradients of the local batches into the gradient of the global
    batch. What does change: BatchNorm computes batch statistics per
    process (over ``batch_size / world_size`` images), the augmentation of
    each process is drawn from its own stream, and sums are taken in
    another order. So a run resumed on another number of processes
    continues the same optimisation, but not bit for bit; a warning says
    so. Without BatchNorm and augmentation it matches the uninterrupted run
    to float rounding (tested). The global batch must still divide by the
    new number of processes.

Execution details are not in the fingerprint and may change freely: the
device, precision (``amp``), ``channels_last``, ``compile``, the progress
bar, the evaluation cadence and a streaming data set's number of workers.
For a bit-identical resume keep the same device, number of processes, of
threads and of DataLoader workers (streamed data draws its augmentation in
the workers).
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
    "check_compatible",
    "MAY_CHANGE_ON_RESUME",
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


# Fingerprint entries that may differ on resume (see the module notes).
MAY_CHANGE_ON_RESUME = ("world_size",)


def check_compatible(path: str | os.PathLike, saved: Mapping, digest: str, canonical: Mapping) -> list[str]:
    """Raise :class:`IncompatibleCheckpointError` if ``saved`` came from other arguments.

    Parameters
    ----------
    path : path-like
        The checkpoint (for messages).
    saved : mapping
        Its contents.
    digest, canonical : str, dict
        :func:`fingerprint` of the run that wants to resume.

    Returns
    -------
    list of str
        Entries of :data:`MAY_CHANGE_ON_RESUME` that differ, described as
        ``"world_size 2 (now 1)"``; empty when the fingerprints are equal.
    """
    if saved.get("format_version") != FORMAT_VERSION:
        raise IncompatibleCheckpointError(
            f"{path} has checkpoint format {saved.get('format_version')!r}, "
            f"this version of tuckerlab reads format {FORMAT_VERSION}; "
            "delete it or pass resume=False to start over"
        )
    if saved.get("args_hash") == digest:
        return []
    old = saved.get("args", {})
    keys = sorted(set(old) | set(canonical))
    differ = [k for k in keys if old.get(k) != canonical.get(k)]
    if differ and set(differ) <= set(MAY_CHANGE_ON_RESUME):
        return [f"{k} {old.get(k)!r} (now {canonical.get(k)!r})" for k in differ]
    diff = [f"{k}: checkpoint {old.get(k)!r} != now {canonical.get(k)!r}" for k in differ]
    raise IncompatibleCheckpointError(
        f"cannot resume from {path}: it was written by a run with different arguments "
        f"({'; '.join(diff) or 'hash mismatch'}). Use another checkpoint_dir, delete the "
        "file, or pass resume=False to start over."
    )

"""Provenance of every number tuckerlab reports, and ``results.json``.

Every figure shown in the book or printed by the command line comes from a
run; this module records where it came from (data set, model, seed, device,
library versions, git commit, wall time) next to the number itself.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["git_commit", "device_name", "provenance", "write_results", "read_results", "Stopwatch"]


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """Commit hash of the git checkout holding ``path`` (default: this package).

    Returns ``None`` when the code does not run from a git checkout (for
    example after ``pip install``), with ``"-dirty"`` appended when the
    working tree has uncommitted changes to tracked files.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )
        suffix = "-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return commit.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: str | torch.device | None = None) -> str:
    """Human-readable name of ``device``: the GPU model, or the CPU and its core count.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def provenance(
    *,
    dataset: str | None = None,
    model: str | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    wall_time_s: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Where a result comes from, as a JSON-ready dict.

    Parameters
    ----------
    dataset, model : str, optional
        Names as given to :func:`tuckerlab.data.load_dataset` and
        :func:`tuckerlab.models.get_model`.
    seed : int, optional
        The run's seed.
    device : str or torch.device, optional
        Where the run happened; recorded with the hardware's name.
    wall_time_s : float, optional
        Wall-clock duration of the run in seconds.
    **extra
        Any further settings worth keeping (epochs, method, ranks, ...).

    Returns
    -------
    dict
        Keys ``dataset``, ``model``, ``seed``, ``device``, ``device_name``,
        ``torch``, ``tuckerlab``, ``python``, ``git_commit``, ``finished_at``
        (UTC, ISO 8601), ``wall_time_s`` and the extras.
    """
    from tuckerlab import __version__

    record: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "device": str(device) if device is not None else "cpu",
        "device_name": device_name(device),
        "torch": torch.__version__,
        "tuckerlab": __version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 2),
    }
    record.update(extra)
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def write_results(path: str | os.PathLike, results: Mapping[str, Any], provenance: Mapping[str, Any]) -> Path:
    """Write ``{"results": ..., "provenance": ...}`` to ``path`` as JSON.

    ``path`` may be a directory, in which case ``results.json`` is written
    inside it. The file is written atomically (temporary file, then rename) so
    an interrupted run never leaves half a file behind.
    """
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        path = path / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"results": _jsonable(dict(results)), "provenance": _jsonable(dict(provenance))}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`write_results` (a path or its directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text())


class Stopwatch:
    """Wall-clock timer for a run: ``with Stopwatch() as sw: ...; sw.seconds``.

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).
    """

    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

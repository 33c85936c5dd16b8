"""Data-parallel training across processes (``torchrun --nproc_per_node=N``).

:func:`~tuckerlab.train.fit` calls :func:`setup` first. Without the
``WORLD_SIZE`` environment variable that ``torchrun`` sets (or with
``WORLD_SIZE=1``) nothing happens. Otherwise the default process group is
initialised (NCCL on CUDA, Gloo on CPU) unless the caller already did, each
rank uses ``cuda:LOCAL_RANK`` on a GPU machine, and the model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`.

Every rank draws the same per-epoch permutation of the training set; the
global batch of ``batch_size`` images of step ``s`` is split into
``world_size`` equal slices and rank ``r`` trains on slice ``r``. Gradients
are averaged by DDP, so one step is the same SGD step as in a single process
with the same global batch (BatchNorm statistics are per rank). Metrics are
summed across ranks once per epoch, BatchNorm running statistics are copied
from rank 0 at the end of each epoch so every rank holds the same model, and
only rank 0 writes checkpoints and shows progress.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "all_reduce_sum", "broadcast_buffers", "any_true"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def setup(device: torch.device | str | None) -> tuple[DistInfo, torch.device]:
    """Join the process group described by the environment, if any.

    Parameters
    ----------
    device : torch.device, str or None
        Requested device. ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is
        available and the CPU otherwise. An explicit ``"cuda"`` becomes
        ``cuda:LOCAL_RANK`` in a multi-process run.

    Returns
    -------
    info : DistInfo
    device : torch.device
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if world <= 1:
        return DistInfo(), device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        atexit.register(_destroy)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), device


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (so all ranks stop together)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if not info.enabled:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)

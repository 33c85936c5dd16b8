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
only rank 0 writes checkpoints and shows progress. A streamed data set is
sharded the same way (:class:`~torch.utils.data.DistributedSampler` over
the epoch's permutation), so the global batch of a step is the same images
for any number of processes, and a checkpoint resumes on another number of
processes (see :mod:`tuckerlab.train.checkpoint` for what changes).

Commands (one machine with 8 GPUs; two machines of 8 GPUs, the same command
on both; two CPU processes, which use Gloo)::

    torchrun --nproc-per-node 8 train.py
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29500 --rdzv-id run1 train.py
    torchrun --nproc-per-node 2 train.py

State of the compression methods: a callback whose state is computed at an
epoch end (projections, duals, ranks) must hold the same values on every
rank. Either compute it from values that are identical on every rank (the
weights are, after each DDP step; the BatchNorm statistics are, after the
engine's end-of-epoch broadcast) with deterministic algorithms, or compute it
on rank 0 and send it with :func:`broadcast_tensors` (tensors) or
:func:`broadcast_object` (small Python values such as chosen ranks);
:func:`same_on_all_ranks` checks it in tests. Every rank must call these
helpers at the same point, as with any collective.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "setup",
    "current",
    "all_reduce_sum",
    "broadcast_buffers",
    "any_true",
    "broadcast_tensors",
    "broadcast_object",
    "same_on_all_ranks",
]


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


def current() -> DistInfo:
    """Where this process stands in the initialised process group (a single process if none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _comm_device() -> torch.device:
    """Where collectives need their tensors: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_src(src: int, info: DistInfo) -> None:
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < info.world_size:
        raise ValueError(f"src must be a rank in [0, {info.world_size}), got {src!r}")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; for small Python values).

    Parameters
    ----------
    obj : object
        Anything picklable; ignored on the other ranks (pass ``None``).
    src : int
        The rank whose object is sent.

    Returns
    -------
    object
        ``obj`` of rank ``src``; in a single process, ``obj`` itself.

    Notes
    -----
    Tensors inside ``obj`` travel pickled and are unpickled on the device
    they had on ``src``; send tensors with :func:`broadcast_tensors`.
    """
    info = current()
    if not info.enabled:
        return obj
    _check_src(src, info)
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_tensors(tensors: Mapping[str, torch.Tensor] | None, src: int = 0) -> dict[str, torch.Tensor]:
    """Rank ``src``'s named tensors on every rank.

    Every rank calls it at the same point. Names, shapes and dtypes come
    from ``src``, so the other ranks may pass ``None`` or tensors of other
    shapes (e.g. before they know the ranks ``src`` chose).

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor, or None
        On ``src``: what to send. On the other ranks: tensors to overwrite
        in place where the name, shape and dtype match (parameters and
        buffers keep their identity), else ignored.
    src : int
        The rank whose tensors are sent.

    Returns
    -------
    dict of str to torch.Tensor
        ``src``'s names in ``src``'s order. A matching tensor given on this
        rank is returned itself, filled in; a new one is on the device of
        the tensor of that name given here, else on the device collectives
        use (the current GPU under NCCL, the CPU under Gloo). In a single
        process, ``dict(tensors)``.
    """
    info = current()
    if not info.enabled:
        return dict(tensors or {})
    _check_src(src, info)
    mine = dict(tensors or {})
    is_src = info.rank == src
    meta = broadcast_object([(k, tuple(v.shape), v.dtype) for k, v in mine.items()] if is_src else None, src)
    comm = _comm_device()
    out: dict[str, torch.Tensor] = {}
    for name, shape, dtype in meta:
        local = mine.get(name)
        if is_src or (local is not None and tuple(local.shape) == shape and local.dtype == dtype):
            buf = local
        else:
            buf = torch.empty(shape, dtype=dtype, device=local.device if local is not None else comm)
        if buf.device == comm and buf.is_contiguous():
            dist.broadcast(buf.detach(), src=src)
        else:
            tmp = buf.detach().to(comm).contiguous()
            dist.broadcast(tmp, src=src)
            if not is_src:
                buf.detach().copy_(tmp)
        out[name] = buf
    return out


def same_on_all_ranks(tensors: Mapping[str, torch.Tensor]) -> bool:
    """True if every rank holds the same names and exactly equal values (a collective; for tests).

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor

    Returns
    -------
    bool
        The same answer on every rank; True in a single process.
    """
    info = current()
    if not info.enabled:
        return True
    ref = broadcast_tensors({k: v.detach().clone() for k, v in tensors.items()}, src=0)
    ok = set(ref) == set(tensors) and all(
        ref[k].shape == v.shape and torch.equal(ref[k].to(v.device), v.detach()) for k, v in tensors.items()
    )
    flag = torch.tensor([1.0 if ok else 0.0], device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)

"""The training loop: :func:`fit`, :func:`evaluate` and the :class:`Trainer` behind them.

Data path (after Jordan's airbench): for an in-memory
:class:`~tuckerlab.data.ImageDataset` the uint8 images are moved to the
device once and stay there. Each step gathers a batch by index from a
per-epoch permutation, crops, flips and normalises it on the device with
:func:`tuckerlab.data.random_crop_flip` and :func:`tuckerlab.data.normalize`,
and runs forward and backward. There is no DataLoader and no per-step host
synchronisation: losses and correct counts are summed in device tensors and
read once per epoch. A :class:`~tuckerlab.data.StreamingDataset` (ImageNet,
image folders) comes instead in uint8 batches from DataLoader workers and
is normalised on the device the same way (:mod:`tuckerlab.train.feeds`). On
CUDA the default is channels_last memory format and bfloat16 autocast; the
CPU runs the same code in float32.

Mixed precision and BatchNorm: under :func:`torch.autocast`, convolutions
and linear layers run in bfloat16, ``batch_norm`` is in neither of
autocast's cast lists and runs on its bfloat16 input, but its weight, bias
and running statistics stay float32 tensors and the CPU and cuDNN kernels
accumulate the batch statistics in float32, so BatchNorm keeps float32
parameters and statistics (what airbench gets by converting BatchNorm back
to float). The master weights, the optimizer, the loss (``cross_entropy`` is
autocast to float32) and the callbacks' penalties stay float32. bfloat16
has float32's exponent range, so no gradient scaler is needed; ``amp="fp16"``
adds one.

Reproducibility: the permutation of epoch ``e`` comes from a CPU
:class:`torch.Generator` seeded from ``(seed, e)`` and the augmentation from
a generator seeded from ``(seed, e, rank)``, so an epoch does not depend on
how earlier epochs ran and a resumed run repeats the uninterrupted one bit
for bit on the CPU (on CUDA up to the nondeterminism of cuDNN kernels).

Safety: labels outside the classes of the data set or of the model's output
are refused before training; an epoch whose training loss or weights are not
finite stops the run with :class:`TrainingDiverged` before anything is
saved, so the last checkpoint stays the last good one.
"""

from __future__ import annotations

import contextlib
import math
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import normalize
from . import distributed as _dist
from .callbacks import History
from .config import AMP_DTYPES, TrainConfig
from .feeds import check_data, make_feed
from .checkpoint import (
    FORMAT_VERSION,
    check_compatible,
    fingerprint,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .schedules import make_schedule

__all__ = ["fit", "evaluate", "Trainer", "TrainingDiverged", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "last.pt"


def _resolve_amp(amp, device: torch.device) -> torch.dtype | None:
    if amp is None:
        amp = "bf16" if device.type == "cuda" else False
    if amp is False:
        return None
    if amp is True:
        return torch.bfloat16
    if isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        return amp
    if isinstance(amp, str) and amp.lower() in AMP_DTYPES:
        return AMP_DTYPES[amp.lower()]
    raise ValueError(f"amp must be None, True, False, 'bf16' or 'fp16', got {amp!r}")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _describe(obj: Any) -> Any:
    """A stable description of an argument for the checkpoint fingerprint."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_describe(v) for v in obj]
    if isinstance(obj, torch.optim.Optimizer):
        return {"type": type(obj).__qualname__, "defaults": _describe(obj.defaults)}
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, torch.Tensor):
        return f"tensor{tuple(obj.shape)}"
    r = repr(obj)
    return type(obj).__qualname__ if " at 0x" in r else r


class TrainingDiverged(ValueError):
    """The training loss or the weights stopped being finite.

    Raised at the end of the epoch where it happened, before that epoch is
    checkpointed, so the checkpoint on disk (if any) holds the last epoch
    whose loss and weights were finite.

    Attributes
    ----------
    epoch : int
        The 1-based epoch that diverged.
    train_loss : float
        Its mean training loss (``nan`` or ``inf`` unless only the weights
        went bad).
    checkpoint : pathlib.Path or None
        The last good checkpoint, if one was written or resumed from.
    last_good_epoch : int or None
        The epochs it holds.
    """

    def __init__(self, message: str, *, epoch: int, train_loss: float, checkpoint: Path | None,
                 last_good_epoch: int | None):
        super().__init__(message)
        self.epoch, self.train_loss = epoch, train_loss
        self.checkpoint, self.last_good_epoch = checkpoint, last_good_epoch


def _prepare(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = normalize(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def _evaluate(
    module: Callable,
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    channels_last: bool,
    amp_dtype: torch.dtype | None,
    dist_info: _dist.DistInfo = _dist.DistInfo(),
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``module`` over this rank's ``batches``, summed over ranks; one host sync."""
    device = mean.device
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, correct, count
    for xb, yb in batches:
        xb = _prepare(xb, mean, std, channels_last)
        with _autocast(device, amp_dtype):
            out = module(xb)
        out = out.float()
        sums[0] += F.cross_entropy(out, yb, reduction="sum")
        sums[1] += (out.argmax(1) == yb).sum()
        sums[2] += yb.shape[0]
    _dist.all_reduce_sum(sums, dist_info)
    loss, correct, count = sums.tolist()
    model.train(was_training)
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}


def evaluate(
    model: nn.Module,
    data: Any,
    split: str = "test",
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    *,
    channels_last: bool | None = None,
    amp: bool | str | None = None,
) -> dict[str, float]:
    """Loss and accuracy of a classifier on one split of a data set.

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier. It is moved to ``device`` when one is given, put in
        eval mode for the evaluation and back in its previous mode after.
    data : ImageDataset or StreamingDataset
        As returned by :func:`tuckerlab.data.load_dataset`: uint8 images,
        labels and the per-channel ``mean``/``std`` used for normalisation.
        A streaming data set is read through its DataLoader, with its
        evaluation transform (e.g. resize and centre crop).
    split : {"test", "train"}
        Which images (not augmented); ``"test"`` of an image folder is its
        ``val/``.
    device : torch.device or str, optional
        Default: the device of the model's parameters.
    batch_size : int, optional
        Images per forward pass; default 1000 in memory, 256 streamed.
    channels_last : bool, optional
        Memory format of the inputs; default: on CUDA only.
    amp : bool or {"bf16", "fp16"}, optional
        Autocast dtype; default: bfloat16 on CUDA, none on the CPU.

    Returns
    -------
    dict
        ``{"loss": mean cross-entropy, "accuracy": fraction correct}``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    check_data(data)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    feed = make_feed(data, device, splits=(split,))
    return _evaluate(
        model,
        model,
        feed.eval_batches(split, batch_size),
        feed.mean,
        feed.std,
        channels_last=channels_last,
        amp_dtype=_resolve_amp(amp, device),
    )


@torch.no_grad()
def _check_labels(model: nn.Module, feed, channels_last: bool) -> None:
    """Refuse labels the loss cannot take, before any step (cross_entropy would raise IndexError mid-run)."""
    num_classes = feed.num_classes
    top = -1
    for split in ("train", "test"):
        y = feed.labels(split)
        if y.numel() == 0:
            continue
        lo, hi = (int(v) for v in torch.stack([y.min(), y.max()]).tolist())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise ValueError(
                f"labels of the {split} split must lie in [0, {num_classes}) (the data set has {num_classes} "
                f"classes), got labels from {lo} to {hi}"
            )
        top = max(top, hi)
    was_training = model.training
    model.eval()
    out = model(_prepare(feed.sample(), feed.mean, feed.std, channels_last))
    model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return one tensor of logits (batch, classes), got {shape}")
    if top >= out.shape[1]:
        raise ValueError(
            f"the model outputs {out.shape[1]} logits per image but the labels go up to {top} "
            f"({num_classes if num_classes is not None else top + 1} classes); build the model with "
            f"num_classes={num_classes if num_classes is not None else top + 1}"
        )


def _param_groups(model: nn.Module, lr: float, weight_decay: float, decay_bn_bias: bool) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_bn_bias:
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]


class Trainer:
    """State of one training run; callbacks receive it.

    Build it with the arguments of :func:`fit` (a :class:`TrainConfig`
    and/or its fields as keywords) and call :meth:`fit`, or just call
    :func:`fit`. Attributes callbacks may read (and, with care, change):

    Attributes
    ----------
    config : TrainConfig
        The validated settings of the run.
    model : torch.nn.Module
        The model being trained, unwrapped, on ``device``.
    module : callable
        What the forward pass calls: ``model``, or its DDP and/or compiled
        wrapper.
    optimizer : torch.optim.Optimizer
    scheduler : torch.optim.lr_scheduler.LambdaLR
        Stepped after every optimizer step.
    scaler : torch.amp.GradScaler or None
        Only with ``amp="fp16"``.
    epoch : int
        During an epoch, its 0-based index; after :meth:`fit`, the number of
        completed epochs.
    step : int
        Optimizer steps taken so far (global, across epochs).
    epochs, steps_per_epoch : int
        Length of the run.
    device : torch.device
    data : ResidentFeed or StreamFeed
        Where batches come from (:mod:`tuckerlab.train.feeds`): the data
        set's tensors on ``device`` (``x_train``, ``y_train``, ``x_test``,
        ``y_test``, ``mean``, ``std``), or the DataLoaders of a streaming
        data set.
    history : History
        Its ``segments`` and ``wall_time_s`` add up the wall time of every
        :meth:`fit` call that contributed, across resumes.
    stop : bool
        Set to True in a hook to end training after the current epoch.
    dist : tuckerlab.train.distributed.DistInfo
        Rank and world size (``dist.is_main`` on the process that writes).
    resumed_from : int or None
        Completed epochs found in the checkpoint this run resumed from.
    """

    def __init__(self, model: nn.Module, data: Any, config: TrainConfig | None = None, **overrides: Any):
        cfg = self.config = TrainConfig.build(config, **overrides)
        check_data(data)
        self.dist, self.device = _dist.setup(cfg.device)
        world = self.dist.world_size
        if cfg.batch_size % world:
            raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the number of processes ({world})")
        # Resident images go to the device once; streamed ones come per batch.
        self.data = make_feed(data, self.device, self.dist, seed=cfg.seed)
        n_train = self.data.n_train
        if cfg.batch_size > n_train:
            raise ValueError(f"batch_size ({cfg.batch_size}) is larger than the training set ({n_train} images)")

        self.epochs = int(cfg.epochs)
        self.batch_size = int(cfg.batch_size)
        self.local_batch_size = self.batch_size // world
        self.steps_per_epoch = n_train // self.batch_size  # the incomplete last batch is dropped
        if cfg.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, int(cfg.max_steps_per_epoch))
        self.seed = int(cfg.seed)
        self.label_smoothing = float(cfg.label_smoothing)
        self.augment = bool(cfg.augment)
        self.eval_every = int(cfg.eval_every)
        self.progress = bool(cfg.progress)
        self.callbacks = list(cfg.callbacks)
        self.channels_last = self.device.type == "cuda" if cfg.channels_last is None else bool(cfg.channels_last)
        self.amp_dtype = _resolve_amp(cfg.amp, self.device)

        # Model, wrappers.
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        _check_labels(model, self.data, self.channels_last)
        module: Callable = model
        if self.dist.enabled:
            ids = [self.device] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        eval_module: Callable = model
        if cfg.compile:
            compile = cfg.compile
            opts = {"mode": compile} if isinstance(compile, str) else dict(compile) if isinstance(compile, Mapping) else {}
            module = torch.compile(module, **opts)
            eval_module = module if not self.dist.enabled else torch.compile(model, **opts)
        elif not self.dist.enabled:
            eval_module = module
        self.module, self._eval_module = module, eval_module

        # Optimizer, schedule, scaler.
        groups = _param_groups(model, cfg.lr, cfg.weight_decay, cfg.decay_bn_bias)
        if cfg.optimizer is None:
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                             nesterov=bool(cfg.nesterov) and cfg.momentum > 0)
        elif isinstance(cfg.optimizer, torch.optim.Optimizer):
            self.optimizer = cfg.optimizer
        else:
            self.optimizer = cfg.optimizer(groups)
        self._factor = make_schedule(cfg.schedule, lr=cfg.lr, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
                                     kwargs=cfg.schedule_kwargs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._factor)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None

        self.history = History()
        self.epoch = 0
        self.step = 0
        self.stop = False
        self.resumed_from: int | None = None
        self._saved_epoch: int | None = None  # epochs in the checkpoint on disk, written or resumed
        self._segment: dict[str, Any] | None = None  # this fit() call's part of the wall time

        self.checkpoint_path = Path(cfg.checkpoint_dir) / CHECKPOINT_NAME if cfg.checkpoint_dir is not None else None
        self.resume = bool(cfg.resume)
        # What decides the trajectory; device, precision, compile, progress and
        # evaluation cadence are execution details and may change on resume.
        self.args_hash, self.args = fingerprint(
            {
                "epochs": self.epochs,
                "lr": cfg.lr,
                "batch_size": self.batch_size,
                "momentum": cfg.momentum,
                "nesterov": cfg.nesterov,
                "weight_decay": cfg.weight_decay,
                "decay_bn_bias": cfg.decay_bn_bias,
                "schedule": _describe(cfg.schedule),
                "schedule_kwargs": _describe(cfg.schedule_kwargs or {}),
                "label_smoothing": self.label_smoothing,
                "augment": self.augment,
                "seed": self.seed,
                "max_steps_per_epoch": cfg.max_steps_per_epoch,
                "optimizer": _describe(cfg.optimizer),
                "world_size": world,
                "model": [type(model).__qualname__] + [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()],
                "data": [self.data.shape("train"), self.data.shape("test")],
                "callbacks": [type(cb).__qualname__ for cb in self.callbacks],
            }
        )

    # ------------------------------------------------------------------ state
    @property
    def lr(self) -> float:
        """Learning rate of the next step (first parameter group)."""
        return self.optimizer.param_groups[0]["lr"]

    @property
    def wall_time_s(self) -> float:
        """Wall-clock seconds of the whole run so far, every resumed part included (see :class:`History`)."""
        return self.history.wall_time_s

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds."""
        return {
            "format_version": FORMAT_VERSION,
            "args_hash": self.args_hash,
            "args": self.args,
            "epoch": self.epoch,
            "step": self.step,
            "stopped": self.stop,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "history": self.history.to_dict(),
            "segments": [dict(seg) for seg in self.history.segments],
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "rng": get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (model, optimizer, ..., RNG states)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if len(state["callbacks"]) != len(self.callbacks):
            raise ValueError(f"checkpoint holds {len(state['callbacks'])} callback states, this run has {len(self.callbacks)} callbacks")
        for cb, s in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(s)
        self.history = History.from_dict(state["history"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.stop = bool(state["stopped"])
        if "segments" in state:
            self.history.segments = [dict(seg) for seg in state["segments"]]
        elif self.epoch:  # written before wall times were kept: the epochs' own times
            self.history.segments = [{
                "start_epoch": 0, "end_epoch": self.epoch, "wall_time_s": float(sum(self.history["time"])),
                "world_size": int(state.get("args", {}).get("world_size", 1)), "estimated": True,
            }]
        set_rng_state(state["rng"])

    def _maybe_resume(self) -> None:
        if self.checkpoint_path is None or not self.resume or not self.checkpoint_path.exists():
            return
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        changed = check_compatible(self.checkpoint_path, state, self.args_hash, self.args)
        self.load_state_dict(state)
        self.resumed_from = self._saved_epoch = self.epoch
        if changed and self.dist.is_main:
            warnings.warn(
                f"{self.checkpoint_path} was written by a run with {'; '.join(changed)}; it resumes with the same "
                "global batches in the same order and the same schedule, but not bit for bit (BatchNorm statistics "
                "and augmentation are drawn per process): see tuckerlab.train.checkpoint",
                stacklevel=3,
            )

    def _update_segment(self) -> None:
        if self._segment is not None:
            self._segment["end_epoch"] = self.epoch
            self._segment["wall_time_s"] = time.perf_counter() - self._t_fit

    def _save(self) -> None:
        self._update_segment()
        if self.checkpoint_path is not None and self.dist.is_main:
            save_checkpoint(self.checkpoint_path, self.state_dict())
        if self.checkpoint_path is not None:
            self._saved_epoch = self.epoch

    # ------------------------------------------------------------------ loop
    def _train_epoch(self, epoch: int, bar) -> tuple[float, float, bool]:
        """Run one epoch of steps; returns (mean loss, accuracy, weights finite) over all ranks."""
        d, dev, b = self.data, self.device, self.local_batch_size
        sums = torch.zeros(4, device=dev, dtype=torch.float64)  # loss, correct, count, non-finite tensors
        self.model.train()
        batches = d.train_batches(epoch, self.steps_per_epoch, self.batch_size, self.augment)
        try:
            for x, y in batches:
                x = _prepare(x, d.mean, d.std, self.channels_last)
                with _autocast(dev, self.amp_dtype):
                    out = self.module(x)
                    loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
                total = loss
                for cb in self.callbacks:
                    p = cb.penalty(self.model)
                    if p is not None:
                        total = total + p
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(total).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    total.backward()
                    self.optimizer.step()
                self.scheduler.step()
                self.step += 1

                with torch.no_grad():
                    sums[0] += loss.detach() * b
                    sums[1] += (out.detach().argmax(1) == y).sum()
                    sums[2] += b
                for cb in self.callbacks:
                    cb.on_step_end(self, self.step)
                bar.update(1)
        finally:
            batches.close()
        with torch.no_grad():  # read with the sums: no extra host sync
            state = [t for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()]
            if state:
                sums[3] = torch.stack([t.isfinite().all() for t in state]).logical_not().sum()
        _dist.all_reduce_sum(sums, self.dist)
        loss_sum, correct, count, bad = sums.tolist()  # the epoch's one host sync
        return loss_sum / count, correct / count, bad == 0

    def evaluate(self, split: str = "test", batch_size: int | None = None) -> dict[str, float]:
        """Evaluate the current model on ``split`` (all ranks take part, each on its share)."""
        return _evaluate(
            self._eval_module,
            self.model,
            self.data.eval_batches(split, batch_size),
            self.data.mean,
            self.data.std,
            channels_last=self.channels_last,
            amp_dtype=self.amp_dtype,
            dist_info=self.dist,
        )

    def _diverged(self, epoch: int, train_loss: float, finite_weights: bool) -> TrainingDiverged:
        what = f"mean training loss {train_loss:.4g}" + ("" if finite_weights else "; weights not finite")
        if self._saved_epoch is not None:
            where = (f"the last good checkpoint is {self.checkpoint_path} (after epoch {self._saved_epoch}), "
                     "left as it was")
        elif self.checkpoint_path is not None:
            where = f"no good checkpoint: nothing was saved to {self.checkpoint_path} before this epoch"
        else:
            where = "no checkpoint was written (checkpoint_dir=None)"
        return TrainingDiverged(
            f"training diverged in epoch {epoch + 1} of {self.epochs} ({what}); {where}. Lower lr "
            f"(peak {self.config.lr!r}) or add warm-up (schedule_kwargs), and start over with resume=False.",
            epoch=epoch + 1,
            train_loss=train_loss,
            checkpoint=self.checkpoint_path if self._saved_epoch is not None else None,
            last_good_epoch=self._saved_epoch,
        )

    def fit(self) -> History:
        """Train for the remaining epochs; returns the history.

        ``on_fit_begin`` runs first, on the model as passed in; then, if a
        compatible checkpoint exists and ``resume`` is true, the model,
        optimizer, scheduler, history, callbacks' states and RNG states are
        restored from it and training continues after its last epoch.

        Raises
        ------
        TrainingDiverged
            An epoch ended with a non-finite training loss or non-finite
            weights; it is not recorded or saved.
        """
        self._t_fit = time.perf_counter()
        torch.manual_seed(self.seed)
        for cb in self.callbacks:
            cb.on_fit_begin(self)
        self._maybe_resume()
        self._segment = {"start_epoch": self.epoch, "end_epoch": self.epoch, "wall_time_s": 0.0,
                         "world_size": self.dist.world_size, "estimated": False}
        self.history.segments.append(self._segment)
        bar = tqdm(
            total=self.epochs * self.steps_per_epoch,
            initial=self.step,
            disable=not (self.progress and self.dist.is_main),
            unit="step",
            dynamic_ncols=True,
        )
        try:
            while self.epoch < self.epochs and not self.stop:
                epoch = self.epoch
                bar.set_description(f"epoch {epoch + 1}/{self.epochs}")
                t0 = time.perf_counter()
                for cb in self.callbacks:
                    cb.on_epoch_begin(self, epoch)
                train_loss, train_acc, finite_weights = self._train_epoch(epoch, bar)
                if not (math.isfinite(train_loss) and finite_weights):  # same verdict on every rank
                    raise self._diverged(epoch, train_loss, finite_weights)
                train_time = time.perf_counter() - t0
                _dist.broadcast_buffers(self.model, self.dist)
                last = epoch + 1 == self.epochs
                test = {"loss": math.nan, "accuracy": math.nan}
                if self.eval_every > 0 and ((epoch + 1) % self.eval_every == 0 or last):
                    test = self.evaluate("test")
                logs = {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "test_loss": test["loss"],
                    "test_acc": test["accuracy"],
                    "lr": self.scheduler.base_lrs[0] * self._factor(self.step - 1),
                }
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, logs)
                self.stop = _dist.any_true(self.stop, self.dist, self.device)
                logs["time"] = time.perf_counter() - t0
                logs["train_time"] = train_time
                self.history.append(logs)
                self.epoch = epoch + 1
                self._save()
                bar.set_postfix(
                    loss=f"{train_loss:.3f}",
                    acc=f"{train_acc:.3f}",
                    test_acc="-" if math.isnan(test["accuracy"]) else f"{test['accuracy']:.3f}",
                    refresh=False,
                )
        finally:
            bar.close()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        self._update_segment()
        return self.history


def fit(model: nn.Module, data: Any, config: TrainConfig | None = None, **overrides: Any) -> History:
    """Train a classifier with SGD on an image data set.

    The one training loop of tuckerlab; compression methods hook into it with
    ``callbacks``. The model is trained in place (and left on ``device``).

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        Classifier mapping normalised images ``(N, C, H, W)`` to logits.
    data : ImageDataset or StreamingDataset
        From :func:`tuckerlab.data.load_dataset`: in memory, uint8
        ``x_train``, ``x_test`` ``(N, C, H, W)``, int labels ``y_train``,
        ``y_test``, per-channel ``mean`` and ``std`` in [0, 1] units
        (batches gathered and augmented on the device); or streamed from
        disk by DataLoader workers (``"imagefolder:PATH"``, or
        :meth:`ImageDataset.streaming`). Labels must lie in
        ``[0, num_classes)`` and below the model's number of outputs.
    config : TrainConfig, optional
        The settings; every field is described there.
    **overrides
        Fields of :class:`TrainConfig` (``epochs``, ``lr``, ``batch_size``,
        ``schedule``, ``callbacks``, ``checkpoint_dir``, ...), applied on top
        of ``config``; ``epochs`` is required when there is no ``config``.

    Returns
    -------
    History
        Per-epoch losses, accuracies, learning rate and times;
        ``history.wall_time_s`` is the wall time of the whole run, resumed
        parts included (``history.segments`` lists them).

    Raises
    ------
    ValueError
        A setting outside what it accepts (see :class:`TrainConfig`), or
        labels outside the classes of the data set or of the model.
    TrainingDiverged
        An epoch ended with a non-finite training loss or weights (a
        subclass of ValueError; the message names the epoch and the last
        good checkpoint, which is not overwritten).
    IncompatibleCheckpointError
        ``checkpoint_dir`` holds a checkpoint of a run with other settings.

    Notes
    -----
    Runs under ``torchrun --nproc_per_node=N`` as DistributedDataParallel
    (see :mod:`tuckerlab.train.distributed`). On the CPU a run is
    deterministic for a given ``seed`` and number of threads, and a resumed
    run ends bit-identical to an uninterrupted one.

    Examples
    --------
    >>> from tuckerlab.data import load_dataset
    >>> from tuckerlab.models import get_model
    >>> data = load_dataset("cifar10-subset")
    >>> model = get_model("resnet20")
    >>> history = fit(model, data, epochs=15, lr=0.2, schedule="onecycle")  # doctest: +SKIP
    >>> cfg = TrainConfig(epochs=15, lr=0.2, schedule="onecycle")
    >>> history = fit(model, data, cfg, seed=1)  # doctest: +SKIP
    """
    return Trainer(model, data, config, **overrides).fit()

"""The training loop: :func:`fit`, :func:`evaluate` and the :class:`Trainer` behind them.

Data path (after Jordan's airbench): the uint8 images are moved to the
device once and stay there. Each step gathers a batch by index from a
per-epoch permutation, crops, flips and normalises it on the device with
:func:`tuckerlab.data.random_crop_flip` and :func:`tuckerlab.data.normalize`,
and runs forward and backward. There is no DataLoader and no per-step host
synchronisation: losses and correct counts are summed in device tensors and
read once per epoch. On CUDA the default is channels_last memory format and
bfloat16 autocast; the CPU runs the same code in float32.

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
a generator on the device seeded from ``(seed, e, rank)``, so an epoch does
not depend on how earlier epochs ran and a resumed run repeats the
uninterrupted one bit for bit on the CPU (on CUDA up to the nondeterminism
of cuDNN kernels).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import normalize, random_crop_flip
from . import distributed as _dist
from .callbacks import Callback, History
from .config import AMP_DTYPES, TrainConfig
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

__all__ = ["fit", "evaluate", "Trainer", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "last.pt"


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (independent streams per tuple)."""
    entropy = [int(k) % (2**63) for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


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


def _check_data(data: Any) -> None:
    for attr in ("x_train", "y_train", "x_test", "y_test", "mean", "std"):
        if not hasattr(data, attr):
            raise TypeError(
                f"data must look like tuckerlab.data.ImageDataset (x_train, y_train, x_test, "
                f"y_test, mean, std); it has no attribute {attr!r}"
            )
    for split in ("train", "test"):
        x = getattr(data, f"x_{split}")
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f"data.x_{split} must be uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")


class _OnDevice:
    """The data set's tensors moved to one device, with the normalisation constants."""

    def __init__(self, data: Any, device: torch.device, splits: Iterable[str] = ("train", "test")):
        for split in splits:
            setattr(self, f"x_{split}", getattr(data, f"x_{split}").to(device))
            setattr(self, f"y_{split}", getattr(data, f"y_{split}").to(device=device, dtype=torch.long))
        self.mean = torch.as_tensor(data.mean, dtype=torch.float32).to(device)
        self.std = torch.as_tensor(data.std, dtype=torch.float32).to(device)
        self.num_classes = getattr(data, "num_classes", None)


def _prepare(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = normalize(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def _evaluate(
    module: Callable,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    batch_size: int,
    channels_last: bool,
    amp_dtype: torch.dtype | None,
    dist_info: _dist.DistInfo = _dist.DistInfo(),
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``module`` on ``(x, y)``; one host sync."""
    device = mean.device
    was_training = model.training
    model.eval()
    if dist_info.enabled:  # every rank takes its share, sums are all-reduced
        x, y = x[dist_info.rank :: dist_info.world_size], y[dist_info.rank :: dist_info.world_size]
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, correct, count
    for i in range(0, x.shape[0], batch_size):
        xb = _prepare(x[i : i + batch_size].to(device, non_blocking=True), mean, std, channels_last)
        yb = y[i : i + batch_size].to(device, non_blocking=True)
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
    batch_size: int = 1000,
    *,
    channels_last: bool | None = None,
    amp: bool | str | None = None,
) -> dict[str, float]:
    """Loss and accuracy of a classifier on one split of an in-memory data set.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier. It is moved to ``device`` when one is given, put in
        eval mode for the evaluation and back in its previous mode after.
    data : ImageDataset
        As returned by :func:`tuckerlab.data.load_dataset`: uint8 images,
        labels and the per-channel ``mean``/``std`` used for normalisation.
    split : {"test", "train"}
        Which images (not augmented).
    device : torch.device or str, optional
        Default: the device of the model's parameters.
    batch_size : int
        Images per forward pass.
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
    _check_data(data)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    d = _OnDevice(data, device, splits=(split,))
    return _evaluate(
        model,
        model,
        getattr(d, f"x_{split}"),
        getattr(d, f"y_{split}"),
        d.mean,
        d.std,
        batch_size=batch_size,
        channels_last=channels_last,
        amp_dtype=_resolve_amp(amp, device),
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
    data : object
        The data set's tensors on ``device`` (``x_train``, ``y_train``,
        ``x_test``, ``y_test``, ``mean``, ``std``).
    history : History
    stop : bool
        Set to True in a hook to end training after the current epoch.
    dist : tuckerlab.train.distributed.DistInfo
        Rank and world size (``dist.is_main`` on the process that writes).
    resumed_from : int or None
        Completed epochs found in the checkpoint this run resumed from.
    """

    def __init__(self, model: nn.Module, data: Any, config: TrainConfig | None = None, /, **overrides: Any):
        cfg = self.config = TrainConfig.build(config, **overrides)
        _check_data(data)
        self.dist, self.device = _dist.setup(cfg.device)
        world = self.dist.world_size
        if cfg.batch_size % world:
            raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the number of processes ({world})")
        n_train = data.x_train.shape[0]
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

        # Data on the device, once.
        self.data = _OnDevice(data, self.device)

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
                "data": [tuple(data.x_train.shape), tuple(data.x_test.shape)],
                "callbacks": [type(cb).__qualname__ for cb in self.callbacks],
            }
        )

    # ------------------------------------------------------------------ state
    @property
    def lr(self) -> float:
        """Learning rate of the next step (first parameter group)."""
        return self.optimizer.param_groups[0]["lr"]

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
        set_rng_state(state["rng"])

    def _maybe_resume(self) -> None:
        if self.checkpoint_path is None or not self.resume or not self.checkpoint_path.exists():
            return
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        check_compatible(self.checkpoint_path, state, self.args_hash, self.args)
        self.load_state_dict(state)
        self.resumed_from = self.epoch

    def _save(self) -> None:
        if self.checkpoint_path is not None and self.dist.is_main:
            save_checkpoint(self.checkpoint_path, self.state_dict())

    # ------------------------------------------------------------------ loop
    def _train_epoch(self, epoch: int, bar) -> tuple[float, float]:
        """Run one epoch of steps; returns (mean loss, accuracy) over all ranks."""
        d, dev = self.data, self.device
        b, rank = self.local_batch_size, self.dist.rank
        n = d.x_train.shape[0]
        perm_gen = torch.Generator().manual_seed(_derive_seed(self.seed, 0, epoch))
        perm = torch.randperm(n, generator=perm_gen).to(dev)
        aug_gen = torch.Generator(device=dev).manual_seed(_derive_seed(self.seed, 1, epoch, rank))
        sums = torch.zeros(3, device=dev, dtype=torch.float64)  # loss, correct, count
        self.model.train()
        for i in range(self.steps_per_epoch):
            start = i * self.batch_size + rank * b
            idx = perm[start : start + b]
            x, y = d.x_train[idx], d.y_train[idx]
            if self.augment:
                x = random_crop_flip(x, padding=4, generator=aug_gen)
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
        _dist.all_reduce_sum(sums, self.dist)
        loss_sum, correct, count = sums.tolist()  # the epoch's one host sync
        return loss_sum / count, correct / count

    def evaluate(self, split: str = "test", batch_size: int = 1000) -> dict[str, float]:
        """Evaluate the current model on the resident ``split`` (all ranks take part)."""
        return _evaluate(
            self._eval_module,
            self.model,
            getattr(self.data, f"x_{split}"),
            getattr(self.data, f"y_{split}"),
            self.data.mean,
            self.data.std,
            batch_size=batch_size,
            channels_last=self.channels_last,
            amp_dtype=self.amp_dtype,
            dist_info=self.dist,
        )

    def fit(self) -> History:
        """Train for the remaining epochs; returns the history.

        ``on_fit_begin`` runs first, on the model as passed in; then, if a
        compatible checkpoint exists and ``resume`` is true, the model,
        optimizer, scheduler, history, callbacks' states and RNG states are
        restored from it and training continues after its last epoch.
        """
        torch.manual_seed(self.seed)
        for cb in self.callbacks:
            cb.on_fit_begin(self)
        self._maybe_resume()
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
                train_loss, train_acc = self._train_epoch(epoch, bar)
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
        return self.history


def fit(model: nn.Module, data: Any, config: TrainConfig | None = None, /, **overrides: Any) -> History:
    """Train a classifier with SGD on an image data set.

    The one training loop of tuckerlab; compression methods hook into it with
    ``callbacks``. The model is trained in place (and left on ``device``).

    Parameters
    ----------
    model : torch.nn.Module
        Classifier mapping normalised images ``(N, C, H, W)`` to logits.
    data : ImageDataset
        From :func:`tuckerlab.data.load_dataset`: uint8 ``x_train``,
        ``x_test`` ``(N, C, H, W)``, int labels ``y_train``, ``y_test``,
        per-channel ``mean`` and ``std`` in [0, 1] units.
    config : TrainConfig, optional
        The settings; every field is described there.
    **overrides
        Fields of :class:`TrainConfig` (``epochs``, ``lr``, ``batch_size``,
        ``schedule``, ``callbacks``, ``checkpoint_dir``, ...), applied on top
        of ``config``; ``epochs`` is required when there is no ``config``.

    Returns
    -------
    History
        Per-epoch losses, accuracies, learning rate and times.

    Raises
    ------
    ValueError
        A setting outside what it accepts (see :class:`TrainConfig`).
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

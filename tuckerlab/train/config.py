"""The settings of a training run, validated in one place: :class:`TrainConfig`.

:func:`~tuckerlab.train.fit` and :class:`~tuckerlab.train.Trainer` take a
``TrainConfig`` and/or its fields as keyword arguments::

    fit(model, data, epochs=30, lr=0.2)                        # fields as keywords
    cfg = TrainConfig(epochs=30, lr=0.2, schedule="onecycle")
    fit(model, data, cfg)                                      # a config
    fit(model, data, cfg, lr=0.1)                              # a config with overrides

Every field is checked when the config is built (also by
:func:`dataclasses.replace`), so a bad value fails before any model or data
is touched, with a :class:`ValueError` naming the field, the value and what
is accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import torch

from .callbacks import Callback
from .schedules import make_schedule

__all__ = ["TrainConfig", "AMP_DTYPES", "COMPILE_MODES"]

AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _bad(name: str, value: Any, accepted: str) -> ValueError:
    return ValueError(f"{name} must be {accepted}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"  # numpy's bool too


def _check_int(name: str, v: Any, low: int, *, optional: bool = False) -> None:
    if optional and v is None:
        return
    if not _is_int(v) or v < low:
        raise _bad(name, v, f"an integer >= {low}" + (" or None" if optional else ""))


def _check_real(name: str, v: Any, accepted: str, ok: Callable[[float], bool]) -> None:
    if not _is_real(v) or not math.isfinite(float(v)) or not ok(float(v)):
        raise _bad(name, v, accepted)


def _check_bool(name: str, v: Any, *, optional: bool = False) -> None:
    if optional and v is None:
        return
    if not _is_bool(v):
        raise _bad(name, v, "True or False" + (" or None" if optional else ""))


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one call of :func:`~tuckerlab.train.fit`.

    Parameters
    ----------
    epochs : int
        Passes over the training set, >= 0. An epoch is ``len(train split)
        // batch_size`` steps over a fresh random permutation (the incomplete
        last batch is dropped), capped by ``max_steps_per_epoch``.
    lr : float
        Peak learning rate, finite and > 0 (scaled per step by
        ``schedule``).
    batch_size : int
        Global batch size, >= 1 and at most the size of the training set;
        under DDP each of ``W`` processes takes ``batch_size / W`` images per
        step, so it must be divisible by ``W``.
    momentum : float
        SGD momentum, in [0, 1).
    nesterov : bool
        Nesterov's variant of momentum (used only when ``momentum > 0``).
    weight_decay : float
        L2 penalty coefficient of SGD (coupled, as in ``torch.optim.SGD``),
        finite and >= 0.
    decay_bn_bias : bool
        If True (default, as in the ResNet papers and the reference recipes
        of the methods reproduced here), weight decay applies to every
        parameter. If False, BatchNorm weights and biases and all biases
        (parameters with fewer than 2 dimensions) are not decayed, a common
        choice in modern recipes.
    schedule : {"cosine", "step", "onecycle", "constant", "exp_cyclic"} or callable
        Learning-rate schedule, evaluated every step; a callable maps the
        global step to a multiplier of ``lr``. See
        :mod:`tuckerlab.train.schedules`.
    schedule_kwargs : dict, optional
        Parameters of the schedule (e.g. ``{"milestones": [100, 150],
        "gamma": 0.1}`` for "step", ``{"base_lr": 1e-3, "step_size": 4,
        "gamma": 0.9999}`` for "exp_cyclic", ``{"warmup": 5}`` for
        "cosine"); epoch-valued entries are converted to steps. Unknown
        names are an error.
    label_smoothing : float
        Label smoothing of the training loss (Szegedy et al. 2016), in
        [0, 1); test losses are plain cross-entropy.
    augment : bool
        Augment the training images: for in-memory data sets a random crop
        (4-pixel zero padding) and horizontal flip; for streamed data sets
        their own training transform (e.g. ``RandomResizedCrop`` and flip
        for image folders).
    seed : int
        >= 0. Seeds the per-epoch permutation and augmentation streams and
        the global torch RNG at the start (dropout); the model's
        initialisation is the caller's.
    device : torch.device or str, optional
        Default: ``cuda`` (``cuda:LOCAL_RANK`` under torchrun) when
        available, else the CPU.
    channels_last : bool, optional
        Channels-last memory format for model and inputs; default on CUDA.
    amp : bool or {"bf16", "fp16"}, optional
        Autocast dtype for the forward pass (also ``"bfloat16"``,
        ``"float16"``, ``torch.bfloat16``, ``torch.float16``; True means
        bfloat16, False none); default bfloat16 on CUDA and none (float32)
        on the CPU. See the notes on BatchNorm in
        :mod:`tuckerlab.train.engine`.
    compile : bool, str or dict
        ``torch.compile`` the model: True, a compile mode (one of
        :data:`COMPILE_MODES`) or a dict of ``torch.compile`` keyword
        arguments.
    callbacks : sequence of Callback
        Hooks (penalties, C-steps, early stopping, logging); each must be a
        :class:`~tuckerlab.train.Callback`.
    checkpoint_dir : path-like, optional
        Where ``last.pt`` is written atomically after every epoch (by rank 0).
    resume : bool
        Continue from ``checkpoint_dir/last.pt`` when it exists. A
        checkpoint from a run with other settings raises
        :class:`~tuckerlab.train.checkpoint.IncompatibleCheckpointError`
        (see :mod:`tuckerlab.train.checkpoint` for what may differ).
    progress : bool
        Show a tqdm progress bar (a widget in notebooks, text in terminals).
    eval_every : int
        >= 0: evaluate on the test split every ``eval_every`` epochs and
        after the last one; 0 never.
    max_steps_per_epoch : int, optional
        Cap (>= 1) on the steps of an epoch (quick runs, benchmarks).
    optimizer : torch.optim.Optimizer or callable, optional
        Replaces SGD: an optimizer instance used as is, or a callable taking
        the parameter groups (with ``lr`` and ``weight_decay`` set) and
        returning an optimizer, e.g. ``torch.optim.AdamW``.

    Raises
    ------
    ValueError
        A field outside what it accepts (the message names the field, the
        value and what is accepted).

    References
    ----------
    C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens and Z. Wojna, "Rethinking
    the Inception Architecture for Computer Vision", CVPR 2016.

    Examples
    --------
    >>> cfg = TrainConfig(epochs=30, lr=0.2, schedule="onecycle")
    >>> cfg.replace(lr=0.1).lr
    0.1
    >>> TrainConfig(epochs=1, lr=float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got nan
    """

    epochs: int
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bn_bias: bool = True
    schedule: str | Callable[[int], float] = "cosine"
    schedule_kwargs: Mapping | None = None
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    device: torch.device | str | None = None
    channels_last: bool | None = None
    amp: bool | str | torch.dtype | None = None
    compile: bool | str | Mapping = False
    callbacks: Sequence[Callback] = field(default=())
    checkpoint_dir: str | os.PathLike | None = None
    resume: bool = True
    progress: bool = True
    eval_every: int = 1
    max_steps_per_epoch: int | None = None
    optimizer: torch.optim.Optimizer | Callable | None = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 0)
        _check_real("lr", self.lr, "a finite number > 0", lambda v: v > 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_real("momentum", self.momentum, "a number in [0, 1)", lambda v: 0 <= v < 1)
        _check_bool("nesterov", self.nesterov)
        _check_real("weight_decay", self.weight_decay, "a finite number >= 0", lambda v: v >= 0)
        _check_bool("decay_bn_bias", self.decay_bn_bias)
        self._check_schedule()
        _check_real("label_smoothing", self.label_smoothing, "a number in [0, 1)", lambda v: 0 <= v < 1)
        _check_bool("augment", self.augment)
        _check_int("seed", self.seed, 0)
        self._check_device()
        _check_bool("channels_last", self.channels_last, optional=True)
        if not (self.amp is None or _is_bool(self.amp) or self.amp in (torch.bfloat16, torch.float16)
                or (isinstance(self.amp, str) and self.amp.lower() in AMP_DTYPES)):
            raise _bad("amp", self.amp, "None, True, False, 'bf16', 'fp16', 'bfloat16', 'float16', "
                       "torch.bfloat16 or torch.float16")
        if not (_is_bool(self.compile) or self.compile in COMPILE_MODES or isinstance(self.compile, Mapping)):
            raise _bad("compile", self.compile, f"True, False, a mode in {COMPILE_MODES} or a dict of "
                       "torch.compile keyword arguments")
        callbacks = self.callbacks
        if isinstance(callbacks, (str, bytes, Callback, Mapping)):
            raise _bad("callbacks", callbacks, "a sequence of tuckerlab.train.Callback (wrap a single one in a list)")
        try:
            object.__setattr__(self, "callbacks", tuple(callbacks))
        except TypeError:
            raise _bad("callbacks", callbacks, "a sequence of tuckerlab.train.Callback") from None
        for i, cb in enumerate(self.callbacks):
            if not isinstance(cb, Callback):
                raise _bad(f"callbacks[{i}]", cb, "a tuckerlab.train.Callback (subclass it)")
        if self.checkpoint_dir is not None and (
            not isinstance(self.checkpoint_dir, (str, os.PathLike)) or os.fspath(self.checkpoint_dir) == ""
        ):
            raise _bad("checkpoint_dir", self.checkpoint_dir, "None or a non-empty path")
        _check_bool("resume", self.resume)
        _check_bool("progress", self.progress)
        _check_int("eval_every", self.eval_every, 0)
        _check_int("max_steps_per_epoch", self.max_steps_per_epoch, 1, optional=True)
        if not (self.optimizer is None or isinstance(self.optimizer, torch.optim.Optimizer) or callable(self.optimizer)):
            raise _bad("optimizer", self.optimizer, "None, a torch.optim.Optimizer, or a callable taking "
                       "parameter groups and returning one (e.g. torch.optim.AdamW)")

    def _check_schedule(self) -> None:
        if not (callable(self.schedule) or isinstance(self.schedule, str)):
            raise _bad("schedule", self.schedule, "a schedule name or a callable step -> factor")
        if self.schedule_kwargs is not None and not isinstance(self.schedule_kwargs, Mapping):
            raise _bad("schedule_kwargs", self.schedule_kwargs, "None or a dict")
        # The one place that knows names and parameters: build it once for a
        # nominal run length (the engine rebuilds it for the real one).
        make_schedule(self.schedule, lr=float(self.lr), epochs=max(1, self.epochs), steps_per_epoch=1,
                      kwargs=self.schedule_kwargs)

    def _check_device(self) -> None:
        if self.device is None or isinstance(self.device, torch.device):
            return
        if not isinstance(self.device, (str, int)) or isinstance(self.device, bool):
            raise _bad("device", self.device, "None, a torch.device or a device string such as 'cpu' or 'cuda:0'")
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError, TypeError):
            raise _bad("device", self.device, "None, a torch.device or a device string such as 'cpu' or 'cuda:0'") from None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the settings, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def build(cls, config: "TrainConfig | None" = None, /, **overrides: Any) -> "TrainConfig":
        """``config`` with ``overrides`` applied, or a new config from ``overrides``.

        Parameters
        ----------
        config : TrainConfig, optional
        **overrides
            Fields to set.

        Raises
        ------
        TypeError
            ``config`` is not a TrainConfig, a keyword is not a field, or
            ``epochs`` is missing without a config.
        ValueError
            A field's value is not accepted.
        """
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a tuckerlab.train.TrainConfig or None, got {type(config).__name__}")
        names = cls.field_names()
        unknown = [k for k in overrides if k not in names]
        if unknown:
            hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, names, 1)) else repr(k)
                     for k in unknown]
            raise TypeError(f"unknown training setting(s) {', '.join(hints)}; accepted: {', '.join(names)}")
        if config is None:
            if "epochs" not in overrides:
                raise TypeError("the number of epochs is required: pass epochs=... or a TrainConfig")
            return cls(**overrides)
        return dataclasses.replace(config, **overrides) if overrides else config

    def replace(self, **overrides: Any) -> "TrainConfig":
        """A copy with some fields changed (validated like a new config)."""
        return type(self).build(self, **overrides)

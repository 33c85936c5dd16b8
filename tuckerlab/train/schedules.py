"""Learning-rate schedules, evaluated once per optimisation step.

Every schedule is a small callable object ``factor(step) -> float`` giving the
multiplier of the peak learning rate ``lr`` passed to :func:`~tuckerlab.train.fit`
at global step ``step = 0, 1, ..., total_steps - 1``. The engine wraps it in
:class:`torch.optim.lr_scheduler.LambdaLR`, so the learning rate of step ``t``
is ``lr * factor(t)`` and the scheduler's ``state_dict`` goes into checkpoints.
The objects hold plain numbers only, so they pickle and print well.

Build one by name with :func:`make_schedule`:

========== ==================================================================
name       keyword arguments (``schedule_kwargs``) and their defaults
========== ==================================================================
constant   ``warmup=0``
step       ``milestones=(0.5 E, 0.75 E)`` in epochs, ``gamma=0.1``, ``warmup=0``
cosine     ``final=0.0`` (final lr / lr), ``warmup=0``
onecycle   ``pct_start=0.25``, ``div_factor=25``, ``final_div_factor=1e4``,
           ``anneal="cos"``
exp_cyclic ``base_lr=lr/10`` (absolute), ``step_size=2`` (epochs per half
           cycle), ``gamma=None`` (per step; default: amplitude 10% at the end)
========== ==================================================================

``warmup`` is a number of epochs of linear warm-up from ``lr / steps`` to
``lr``; ``E`` is the number of epochs.

References
----------
L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.

I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm
Restarts", ICLR 2017.

L. N. Smith and N. Topin, "Super-Convergence: Very Fast Training of Neural
Networks Using Large Learning Rates", SPIE 11006, 2019.

W. Liu et al., "TT-LC: TT-Tucker decomposition in the LC framework without
pre-training", J. South China Univ. Tech. 52(7):29-38, 2024.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

__all__ = [
    "Constant",
    "StepDecay",
    "Cosine",
    "OneCycle",
    "ExpCyclic",
    "SCHEDULES",
    "make_schedule",
]


def _warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up multiplier: ``(step + 1) / warmup_steps`` until it reaches 1."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


class _Schedule:
    """Base class: a picklable ``factor(step) -> float`` with a readable repr."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(_Schedule):
    """Constant learning rate, after an optional linear warm-up.

    Parameters
    ----------
    warmup_steps : int
        Steps of linear warm-up (0 for none).
    """

    def __init__(self, warmup_steps: int = 0):
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        return _warmup_factor(step, self.warmup_steps)


class StepDecay(_Schedule):
    """Piecewise-constant decay: multiply by ``gamma`` at each milestone.

    ``factor(t) = gamma ** #{m in milestones : t >= m}`` (after warm-up), the
    classic ResNet recipe (He et al. 2016: /10 at 32k and 48k iterations).

    Parameters
    ----------
    milestones : sequence of int
        Steps at which the learning rate drops.
    gamma : float
        Multiplier applied at each milestone.
    warmup_steps : int
        Steps of linear warm-up (0 for none).
    """

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1, warmup_steps: int = 0):
        self.milestones = tuple(sorted(int(m) for m in milestones))
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        drops = sum(step >= m for m in self.milestones)
        return self.gamma**drops * _warmup_factor(step, self.warmup_steps)


class Cosine(_Schedule):
    """Cosine annealing from ``lr`` to ``final * lr`` (Loshchilov & Hutter 2017).

    After ``warmup_steps`` of linear warm-up, with ``T = total_steps -
    warmup_steps`` and ``s = step - warmup_steps``::

        factor = final + (1 - final) * (1 + cos(pi * s / T)) / 2

    This is SGDR without restarts, the usual 200-epoch CIFAR recipe.

    Parameters
    ----------
    total_steps : int
        Number of optimisation steps of the whole run.
    final : float
        Final learning rate as a fraction of the peak.
    warmup_steps : int
        Steps of linear warm-up (0 for none).

    References
    ----------
    I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", ICLR 2017.
    """

    def __init__(self, total_steps: int, final: float = 0.0, warmup_steps: int = 0):
        self.total_steps = int(total_steps)
        self.final = float(final)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup_factor(step, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        s = min(step - self.warmup_steps, span)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * s / span))


class OneCycle(_Schedule):
    """The one-cycle policy (Smith & Topin 2019), learning rate only.

    The rate rises from ``lr / div_factor`` to ``lr`` over the first
    ``pct_start`` of the steps, then anneals (cosine or linear) to
    ``lr / (div_factor * final_div_factor)``. Same shape as
    :class:`torch.optim.lr_scheduler.OneCycleLR`, whose defaults we keep except
    ``pct_start`` (0.25 instead of 0.3); momentum is not cycled.

    Parameters
    ----------
    total_steps : int
        Number of optimisation steps of the whole run.
    pct_start : float
        Fraction of the steps spent rising.
    div_factor : float
        Peak lr / initial lr.
    final_div_factor : float
        Initial lr / final lr.
    anneal : {"cos", "linear"}
        Shape of both phases.

    References
    ----------
    L. N. Smith and N. Topin, "Super-Convergence: Very Fast Training of Neural
    Networks Using Large Learning Rates", SPIE 11006, 2019.
    """

    def __init__(
        self,
        total_steps: int,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: str = "cos",
    ):
        if anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got {anneal!r}")
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.anneal = anneal

    def _interp(self, start: float, end: float, frac: float) -> float:
        frac = min(max(frac, 0.0), 1.0)
        if self.anneal == "cos":
            return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * frac))
        return start + (end - start) * frac

    def __call__(self, step: int) -> float:
        start = 1.0 / self.div_factor
        end = start / self.final_div_factor
        up = max(1, round(self.pct_start * self.total_steps) - 1)
        down = max(1, self.total_steps - 1 - up)
        if step <= up:
            return self._interp(start, 1.0, step / up)
        return self._interp(1.0, end, (step - up) / down)


class ExpCyclic(_Schedule):
    """Exponential cyclic learning rate (Smith 2017, "exp_range").

    Triangular cycles between ``base_lr`` and ``max_lr`` whose amplitude
    decays geometrically with the iteration count ``t``::

        cycle = floor(1 + t / (2 * step_size))
        x     = |t / step_size - 2 * cycle + 1|
        lr(t) = base_lr + (max_lr - base_lr) * max(0, 1 - x) * gamma ** t

    so each cycle lasts ``2 * step_size`` steps, starts at ``base_lr``, peaks
    at ``base_lr + (max_lr - base_lr) * gamma ** t`` half-way, and the peaks
    shrink towards ``base_lr``. This is the L-step schedule of TT-LC (Liu et
    al. 2024). The factor returned is ``lr(t) / max_lr``.

    Parameters
    ----------
    max_lr : float
        Upper bound of the first cycle (the ``lr`` of ``fit``).
    base_lr : float
        Lower bound of every cycle.
    step_size : int
        Steps in half a cycle (Smith suggests 2-10 epochs' worth).
    gamma : float
        Amplitude decay per step, ``0 < gamma <= 1``.

    References
    ----------
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks",
    WACV 2017.
    """

    def __init__(self, max_lr: float, base_lr: float, step_size: int, gamma: float = 1.0):
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1 step, got {step_size}")
        if not 0.0 <= base_lr <= max_lr:
            raise ValueError(f"need 0 <= base_lr <= max_lr, got base_lr={base_lr}, max_lr={max_lr}")
        self.max_lr = float(max_lr)
        self.base_lr = float(base_lr)
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        cycle = math.floor(1 + step / (2 * self.step_size))
        x = abs(step / self.step_size - 2 * cycle + 1)
        lr = self.base_lr + (self.max_lr - self.base_lr) * max(0.0, 1.0 - x) * self.gamma**step
        return lr / self.max_lr if self.max_lr > 0 else 0.0


SCHEDULES = ("constant", "step", "cosine", "onecycle", "exp_cyclic")


def make_schedule(
    name: str | Callable[[int], float],
    *,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    kwargs: Mapping | None = None,
) -> Callable[[int], float]:
    """Build the per-step multiplier ``factor(step)`` of a named schedule.

    Parameters
    ----------
    name : str or callable
        One of :data:`SCHEDULES`, or a callable ``factor(step) -> float``
        returned as is (``kwargs`` must then be empty).
    lr : float
        Peak learning rate (used by ``exp_cyclic``, whose ``base_lr`` is
        absolute).
    epochs, steps_per_epoch : int
        Length of the run; epoch-valued arguments are converted to steps.
    kwargs : mapping, optional
        Schedule parameters, see the table in the module docstring. Epoch
        counts (``warmup``, ``milestones``, ``step_size``) may be fractional.

    Returns
    -------
    callable
        ``factor(step) -> float``, picklable when ``name`` is a string.

    Raises
    ------
    ValueError
        For an unknown name or unknown keyword arguments.
    """
    kw = dict(kwargs or {})
    if callable(name):
        if kw:
            raise ValueError("schedule_kwargs must be empty when schedule is a callable")
        return name
    total = max(1, epochs * steps_per_epoch)

    def steps(n_epochs: float) -> int:
        return int(round(float(n_epochs) * steps_per_epoch))

    def take(allowed: dict) -> dict:
        unknown = set(kw) - set(allowed)
        if unknown:
            raise ValueError(
                f"unknown schedule_kwargs {sorted(unknown)} for schedule {name!r}; "
                f"accepted: {sorted(allowed)}"
            )
        return {**allowed, **kw}

    if name == "constant":
        a = take({"warmup": 0})
        return Constant(steps(a["warmup"]))
    if name == "step":
        a = take({"milestones": (epochs * 0.5, epochs * 0.75), "gamma": 0.1, "warmup": 0})
        return StepDecay([steps(m) for m in a["milestones"]], a["gamma"], steps(a["warmup"]))
    if name == "cosine":
        a = take({"final": 0.0, "warmup": 0})
        return Cosine(total, a["final"], steps(a["warmup"]))
    if name == "onecycle":
        a = take({"pct_start": 0.25, "div_factor": 25.0, "final_div_factor": 1e4, "anneal": "cos"})
        return OneCycle(total, a["pct_start"], a["div_factor"], a["final_div_factor"], a["anneal"])
    if name == "exp_cyclic":
        a = take({"base_lr": lr / 10, "step_size": 2, "gamma": None})
        half = max(1, steps(a["step_size"]))
        gamma = a["gamma"]
        if gamma is None:
            # Amplitude shrinks to 10% of its first value by the last step.
            gamma = 0.1 ** (1.0 / total)
        return ExpCyclic(lr, a["base_lr"], half, gamma)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES} or pass a callable")

"""Hooks into the training loop, and the record it returns.

Compression methods (LC, ADMM, alternating training, budget-aware training)
are :class:`Callback` subclasses handed to :func:`~tuckerlab.train.fit`; they
never copy the loop. The order of calls in one run is::

    on_fit_begin(trainer)
    for each epoch:
        on_epoch_begin(trainer, epoch)
        for each step:
            loss = cross_entropy + sum(cb.penalty(model) for cb in callbacks)
            backward, optimizer step, scheduler step
            on_step_end(trainer, step)
        evaluate (every ``eval_every`` epochs)
        on_epoch_end(trainer, epoch, logs)      # may edit logs, set trainer.stop
        history.append(logs); checkpoint
    on_fit_end(trainer)

``epoch`` is 0-based in hooks; ``step`` is the global step count *after* the
step (1 for the first). Hooks run on every rank under DDP.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Trainer

__all__ = ["Callback", "History"]


class Callback:
    """Base class for training hooks; override what you need.

    A callback that keeps state across epochs (LC's ``mu`` and ``Delta``,
    ADMM's ``Z`` and ``U``) returns it from :meth:`state_dict` and restores it
    in :meth:`load_state_dict`: checkpoints save it every epoch, so a resumed
    run continues exactly. The state must be made of tensors and plain Python
    values (numbers, strings, lists, tuples, dicts), as for any torch
    ``state_dict``, because checkpoints are loaded with ``weights_only=True``.

    Hooks must avoid host synchronisation in :meth:`on_step_end` and
    :meth:`penalty` (no ``.item()``, no printing of tensors): they run every
    step.
    """

    def on_fit_begin(self, trainer: "Trainer") -> None:
        """Called once before the first epoch (also when resuming)."""

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def on_step_end(self, trainer: "Trainer", step: int) -> None:
        """Called after the optimizer and scheduler step ``step`` (global, 1-based)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict) -> None:
        """Called after epoch ``epoch`` and its evaluation.

        ``logs`` holds the epoch's metrics (see :class:`History`); a callback
        may add its own numbers (they become history columns) or set
        ``trainer.stop = True`` to end training after this epoch.
        """

    def on_fit_end(self, trainer: "Trainer") -> None:
        """Called once after the last epoch (not after an exception)."""

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A scalar added to the training loss of every step, or ``None``.

        Receives the unwrapped model (not the DDP or compiled wrapper). The
        penalty is computed outside autocast, in the parameters' precision.
        Example: LC's ``mu / 2 * ||W - Delta(Theta)||^2``.
        """
        return None

    def state_dict(self) -> dict:
        """State saved in checkpoints (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


class History:
    """Per-epoch record of a training run.

    Columns (lists of equal length, one entry per completed epoch):

    ``epoch``
        1-based epoch number.
    ``train_loss``, ``train_acc``
        Mean cross-entropy (with label smoothing, without penalties) and
        accuracy on the augmented training batches of the epoch.
    ``test_loss``, ``test_acc``
        On the test split; ``nan`` in epochs without evaluation.
    ``lr``
        Learning rate of the epoch's last step (first parameter group).
    ``time``
        Wall-clock seconds of the epoch, training and evaluation.
    ``train_time``
        Seconds of the training steps alone.

    plus any key a callback added to ``logs``.

    A run resumed from a checkpoint is made of several calls of
    :meth:`Trainer.fit <tuckerlab.train.Trainer.fit>`: ``segments`` lists
    them, each a dict with ``start_epoch`` and ``end_epoch`` (completed
    epochs before and after it), ``wall_time_s`` (from the start of the
    call to its last checkpoint, or to its end), ``world_size`` (processes)
    and ``estimated`` (True only for a checkpoint written before wall times
    were kept: then the sum of its epochs' ``time``). A killed run's work
    after its last checkpoint is repeated, not counted. :attr:`wall_time_s`
    is their total: what a results file should report as the run's wall
    time.
    """

    BASE = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "time", "train_time")

    def __init__(self, columns: dict[str, list] | None = None, segments: list[dict] | None = None):
        self.columns: dict[str, list] = {k: [] for k in self.BASE}
        if columns:
            for k, v in columns.items():
                self.columns[k] = list(v)
        self.segments: list[dict] = [dict(s) for s in segments or ()]

    @property
    def wall_time_s(self) -> float:
        """Wall-clock seconds of the whole run: the sum over ``segments``."""
        return float(sum(s["wall_time_s"] for s in self.segments))

    def append(self, logs: dict[str, Any]) -> None:
        """Add one epoch; keys seen for the first time are back-filled with ``nan``."""
        n = len(self)
        for k in logs:
            if k not in self.columns:
                self.columns[k] = [math.nan] * n
        for k, col in self.columns.items():
            v = logs.get(k, math.nan)
            col.append(v.item() if isinstance(v, torch.Tensor) else v)

    def __len__(self) -> int:
        return len(self.columns["epoch"])

    def __getitem__(self, key: str) -> list:
        return self.columns[key]

    def __getattr__(self, key: str) -> list:
        columns = self.__dict__.get("columns")
        if columns is not None and key in columns:
            return columns[key]
        raise AttributeError(key)

    def last(self) -> dict[str, Any]:
        """The last epoch's row as a dict (empty before the first epoch)."""
        return {k: v[-1] for k, v in self.columns.items()} if len(self) else {}

    def to_dict(self) -> dict[str, list]:
        """Plain ``{column: list}`` copy (JSON-serialisable)."""
        return {k: list(v) for k, v in self.columns.items()}

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> "History":
        """Inverse of :meth:`to_dict`."""
        return cls(d)

    def __repr__(self) -> str:
        if not len(self):
            return "History(0 epochs)"
        last = self.last()
        return (
            f"History({len(self)} epochs, last: train_loss={last['train_loss']:.4f}, "
            f"train_acc={last['train_acc']:.4f}, test_acc={last['test_acc']:.4f})"
        )

    def plot(self, axes=None):
        """Plot losses, accuracies and learning rate against epochs.

        Parameters
        ----------
        axes : sequence of 3 matplotlib Axes, optional
            Created in a new figure when omitted.

        Returns
        -------
        axes
            The three Axes (loss, accuracy, learning rate).
        """
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        ep = self.columns["epoch"]
        for split in ("train", "test"):
            axes[0].plot(ep, self.columns[f"{split}_loss"], label=split)
            axes[1].plot(ep, self.columns[f"{split}_acc"], label=split)
        axes[2].plot(ep, self.columns["lr"])
        for ax, name in zip(axes, ("loss", "accuracy", "learning rate")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
        axes[0].legend()
        return axes


"""The one training loop of tuckerlab.

:func:`fit` trains a classifier on an in-memory data set with the data kept on
the device (batched crops and flips, no DataLoader), per-step learning-rate
schedules, bfloat16 autocast and channels_last on CUDA, exact resumption from
checkpoints and DistributedDataParallel under ``torchrun``. Compression
methods hook into it with :class:`Callback` objects (loss penalties, C-steps
at epoch ends) and never copy it. :func:`evaluate` measures loss and
accuracy.

Modules: :mod:`~tuckerlab.train.engine` (the loop),
:mod:`~tuckerlab.train.schedules`, :mod:`~tuckerlab.train.callbacks`
(hooks and :class:`History`), :mod:`~tuckerlab.train.checkpoint`,
:mod:`~tuckerlab.train.distributed`, :mod:`~tuckerlab.train.config`
(:class:`TrainConfig`, the settings of a run, validated in one place).
"""

from .callbacks import Callback, History
from .checkpoint import IncompatibleCheckpointError, load_checkpoint
from .config import TrainConfig
from .engine import CHECKPOINT_NAME, Trainer, TrainingDiverged, evaluate, fit
from .schedules import SCHEDULES, make_schedule

__all__ = [
    "fit",
    "evaluate",
    "Trainer",
    "TrainConfig",
    "Callback",
    "History",
    "make_schedule",
    "SCHEDULES",
    "IncompatibleCheckpointError",
    "TrainingDiverged",
    "load_checkpoint",
    "CHECKPOINT_NAME",
]

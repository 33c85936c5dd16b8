"""Compression methods: each is the training engine plus hooks plus the shared projection.

- :mod:`~tuckerlab.methods.lc`: the learning-compression (LC) algorithm
  (Carreira-Perpinan, 2017; Idelbayev & Carreira-Perpinan, 2020):
  :class:`LCCallback` and :func:`lc_compress`;
- :mod:`~tuckerlab.methods.tt_lc`: TT-LC (Liu et al., 2024), LC from scratch
  with a TT-Tucker C-step, an exponential cyclic learning rate and "double
  Bayesian" ranks: :func:`tt_lc` and :class:`DoubleBayesianRanks`;
- :mod:`~tuckerlab.methods.admm`: ADMM training of the dense network towards
  low TT or Tucker rank, then decomposition and fine-tuning (Yin et al.,
  2021): :class:`ADMMCallback`, :func:`admm_compress` and the authors' step
  schedule :func:`authors_step`.

LC and ADMM share their base callback, result and driver
(:mod:`~tuckerlab.methods._penalty`). A method never copies the training
loop (:func:`tuckerlab.train.fit`) nor a decomposition
(:mod:`tuckerlab.decompose`, reached through :mod:`tuckerlab.projection`).
"""

from .admm import ADMMCallback, ADMMResult, admm_compress, authors_step
from .lc import LCCallback, LCResult, LStepSchedule, lc_compress
from .tt_lc import DoubleBayesianRanks, tt_lc

__all__ = [
    "LCCallback", "LCResult", "LStepSchedule", "lc_compress", "DoubleBayesianRanks", "tt_lc",
    "ADMMCallback", "ADMMResult", "admm_compress", "authors_step",
]

"""Compression methods: each is the training engine plus hooks plus the shared projection.

- :mod:`~tuckerlab.methods.lc`: the learning-compression (LC) algorithm
  (Carreira-Perpinan, 2017; Idelbayev & Carreira-Perpinan, 2020):
  :class:`LCCallback` and :func:`lc_compress`;
- :mod:`~tuckerlab.methods.tt_lc`: TT-LC (Liu et al., 2024), LC from scratch
  with a TT-Tucker C-step, an exponential cyclic learning rate and "double
  Bayesian" ranks (:class:`tuckerlab.rank.DoubleBayesianRanks`): :func:`tt_lc`;
- :mod:`~tuckerlab.methods.admm`: ADMM training of the dense network towards
  low TT or Tucker rank, then decomposition and fine-tuning (Yin et al.,
  2021): :class:`ADMMCallback`, :func:`admm_compress` and the authors' step
  schedule :func:`authors_step`;
- :mod:`~tuckerlab.methods.batude`: BATUDE (Yin et al., 2022), Tucker-2 ranks
  of all layers learned in training under one FLOPs or parameter budget:
  :class:`BATUDECallback` and :func:`batude_compress`;
- :mod:`~tuckerlab.methods.alternating`: accuracy-aware alternating Tucker
  (Liu et al., 2025), Tucker-2 ranks shrunk between rounds of training while
  the accuracy on a validation split held out from the training set holds:
  :class:`AlternatingCallback` and :func:`alternating_compress`.

They share one base (:mod:`~tuckerlab.methods._base`): the projection
callback :class:`ProjectionCallback` (layers and ranks given or chosen by any
rank selector, rank updates during training, the fused penalty, checkpoint
state), one driver :func:`run_method` and one result :class:`MethodResult`,
which the decompose-then-fine-tune pipeline (:mod:`tuckerlab.pipeline`)
returns too. Each method takes ``format=`` and ``rank=`` the same way, and
keeps its paper's settings in a ``RECIPE`` dict. A method never copies the
training loop (:func:`tuckerlab.train.fit`) nor a decomposition
(:mod:`tuckerlab.formats`, reached through :mod:`tuckerlab.projection`).
"""

from tuckerlab.rank.double_bayesian import DoubleBayesianRanks

from ._base import LayerChoice, MethodResult, ProjectionCallback, run_method
from .admm import ADMMCallback, ADMMResult, admm_compress, authors_step
from .alternating import AlternatingCallback, alternating_compress
from .batude import BATUDECallback, batude_compress
from .lc import LCCallback, LCResult, LStepSchedule, lc_compress
from .tt_lc import tt_lc

__all__ = [
    "ProjectionCallback", "MethodResult", "run_method", "LayerChoice",
    "LCCallback", "LCResult", "LStepSchedule", "lc_compress", "DoubleBayesianRanks", "tt_lc",
    "ADMMCallback", "ADMMResult", "admm_compress", "authors_step",
    "BATUDECallback", "batude_compress",
    "AlternatingCallback", "alternating_compress",
]

"""Factorized layers built from trained ones.

Each layer stores its weight as factors (:class:`TuckerConv2d`,
:class:`TTConv2d`, :class:`TTTuckerConv2d`, :class:`CPConv2d`,
:class:`LowRankLinear`) and runs either as a chain of small layers
(``execution="factorized"``) or as one dense layer rebuilt from the factors
(``execution="reconstructed"``); :func:`set_execution` switches a whole model.
Every class has ``from_conv`` (``from_linear``), ``from_factors``,
``to_conv`` (``to_linear``), ``n_params``, ``rank`` and a class method
``cost(weight_shape, rank, output_hw)`` giving ``(params, MACs)``.
"""

from ._base import EXECUTION_MODES, FactorizedConv2d, FactorizedModule, conv2d_cost, set_execution
from .cp import CPConv2d
from .linear import LowRankLinear
from .tt import TTConv2d
from .tt_tucker import TTTuckerConv2d
from .tucker import TuckerConv2d

__all__ = [
    "TuckerConv2d",
    "TTConv2d",
    "TTTuckerConv2d",
    "CPConv2d",
    "LowRankLinear",
    "set_execution",
    "conv2d_cost",
    "FactorizedModule",
    "FactorizedConv2d",
    "EXECUTION_MODES",
]

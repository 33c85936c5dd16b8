"""The formats a weight can be stored in, and their registry: one object per format.

=============  ======================================  ===============================================
format         rank (the one convention: the argument   layer
               everywhere and the layer's ``.rank``)
=============  ======================================  ===============================================
``tucker2``    ``(r_out, r_in)``                        :class:`~tuckerlab.layers.TuckerConv2d`
``tucker``     one rank per mode                        none (projection only)
``tt``         ``(r1, r2, r3)``: inner TT ranks of      :class:`~tuckerlab.layers.TTConv2d`
               the ``(S, Kh, Kw, T)`` layout
``tt_tucker``  ``((r_out, r_in), (r1, r2, r3))``, TT    :class:`~tuckerlab.layers.TTTuckerConv2d`
               on the ``(r_in, Kh, Kw, r_out)`` core
``cp``         ``R``                                    :class:`~tuckerlab.layers.CPConv2d`
``lowrank``    ``r`` (``nn.Linear`` weights)            :class:`~tuckerlab.layers.LowRankLinear`
=============  ======================================  ===============================================

Conv weights are ``(T, S, Kh, Kw)`` = (out, in, kernel height, kernel
width); ranks of channel modes are written out before in. Int shorthands are
accepted where unambiguous (an int for both Tucker-2 ranks, an int cap for
TT bonds) and normalised by :meth:`Format.validate_rank` to the form above.
A Tucker factor whose rank equals its channel count is folded into the core
(it would be a square matrix).

Decomposition objects of :mod:`tuckerlab.decompose` keep the tensor
conventions of that module (e.g. ``TTTensor.rank`` is the full tuple
``(1, r1, r2, r3, 1)``); :meth:`Format.rank_of` turns them into the rank above.

Old spellings (``svd``, ``tensor_train``, ...) are accepted by
:func:`get_format` with a ``DeprecationWarning``. ``tucker`` always means
full Tucker here.
"""
from ._base import (
    HOOI_SWEEPS,
    Format,
    format_names,
    get_format,
    rank_from_json,
    rank_to_json,
    register_format,
    registered_formats,
    unregister_format,
)
from .tucker2 import Tucker2
from .tucker import Tucker
from .tt import TT
from .tt_tucker import TTTucker
from .cp import CP
from .lowrank import LowRank

__all__ = [
    "HOOI_SWEEPS", "Format", "register_format", "unregister_format", "get_format", "format_names", "registered_formats",
    "rank_to_json", "rank_from_json",
    "Tucker2", "Tucker", "TT", "TTTucker", "CP", "LowRank",
]

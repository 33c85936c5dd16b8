"""Tensor decompositions of torch tensors.

Every function takes a floating-point torch tensor on any device and returns
a container on the same device, in the same dtype, with ``.to_tensor()``,
``.n_params`` and ``.rank``:

- :func:`tucker` -> :class:`TuckerTensor`; rank: ranks of the decomposed modes.
- :func:`tensor_train` -> :class:`TTTensor`; rank: ``(1, r_1, ..., r_{d-1}, 1)``.
- :func:`tt_tucker` -> :class:`TTTuckerTensor`; rank: ``(tucker ranks, TT ranks of the core)``.
- :func:`cp` -> :class:`CPTensor`; rank: the number of rank-one terms.

Invalid ranks raise ``ValueError`` naming the mode or bond, the value and the
range accepted; nothing is clipped.
"""
from ._cp import cp
from ._results import CPTensor, TTTensor, TTTuckerTensor, TuckerTensor
from ._tt import tensor_train
from ._tt_tucker import tt_tucker
from ._tucker import tucker

__all__ = [
    "tucker",
    "tensor_train",
    "tt_tucker",
    "cp",
    "TuckerTensor",
    "TTTensor",
    "TTTuckerTensor",
    "CPTensor",
]

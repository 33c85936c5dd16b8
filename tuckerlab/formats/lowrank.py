"""Low rank of a linear weight: its truncated SVD (Eckart-Young)."""
from __future__ import annotations

import math

import torch

from tuckerlab.decompose._validation import validate_tucker_rank
from tuckerlab.layers import LowRankLinear

from . import _spectra as sp
from ._base import Format, register_format

__all__ = ["LowRank"]


class LowRank(Format):
    """Best rank-``r`` approximation of an ``(out, in)`` weight: rank ``r`` (an int).

    Layer :class:`~tuckerlab.layers.LowRankLinear`.

    The decomposition is the truncated SVD ``W ~ U_r S_r V_r^T``, stored as
    ``(U_r S_r^{1/2}, V_r S_r^{1/2})``; the projection it gives is the exact
    Euclidean one (Eckart-Young), up to the precision of the SVD.
    """

    name = "lowrank"
    description = "low rank of a linear weight: two thin matrices (truncated SVD)"
    kind = "linear"
    layer = LowRankLinear
    rank_doc = "r, an int in [1, min(out, in)]"

    def normalize_rank(self, shape, rank):
        return validate_tucker_rank(rank, (min(shape),), (0,))[0]

    def full_rank(self, shape):
        return int(min(_matrix(shape)))

    def decompose(self, weight, rank, **options):
        u, s, vh = torch.linalg.svd(weight.detach(), full_matrices=False)
        root = s[:rank].sqrt()
        return (u[:, :rank] * root, vh[:rank].t() * root)

    def reconstruct(self, decomposition):
        u, v = decomposition
        return u @ v.t()

    def rank_of(self, decomposition):
        return int(decomposition[0].shape[1])

    def layer_from_factors(self, module, decomposition, execution="factorized"):
        return LowRankLinear.from_factors(decomposition, bias=module.bias, execution=execution)

    def empty_layer(self, module, rank, execution="factorized"):
        return LowRankLinear(
            module.in_features, module.out_features, rank, bias=module.bias is not None, execution=execution,
            device=module.weight.device, dtype=module.weight.dtype,
        )

    def cost(self, shape, rank, output_hw=None, input_hw=None, *, bias=False):
        return LowRankLinear.cost(shape, rank, output_hw, bias=bias)

    # ---------------------------------------------------------- searches
    def rule_rank(self, weight, select, min_rank):
        return sp.matrix_rule_rank(weight.reshape(weight.shape[0], -1), select, min_rank)

    def ratio_rank(self, shape, ratio, min_rank):
        return sp.ratio_of(self.full_rank(shape), ratio, min_rank)

    def scale_rank(self, shape, rank, factor, min_rank):
        return min(max(min_rank, int(round(factor * rank))), self.full_rank(shape))

    def budget_candidates(self, weight, candidates):
        m = weight.reshape(weight.shape[0], -1)
        t = sp.tail(sp.squared_svals(m))
        r = candidates(min(m.shape))
        return [int(x) for x in r], sp.tail_at(t, r)


def _matrix(shape) -> tuple[int, int]:
    """The matrix a weight is read as: ``(out, in)``, or ``(T, S Kh Kw)`` for a conv weight."""
    return int(shape[0]), int(math.prod(shape[1:]))


register_format(LowRank())

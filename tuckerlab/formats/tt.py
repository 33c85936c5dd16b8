"""Tensor train of a conv weight permuted to ``(S, Kh, Kw, T)`` (Garipov et al., 2016)."""
from __future__ import annotations

import numpy as np

from tuckerlab.decompose import tensor_train
from tuckerlab.decompose._validation import validate_tt_rank
from tuckerlab.layers import TTConv2d
from tuckerlab.layers.tt import from_tt_layout, to_tt_layout

from . import _spectra as sp
from ._base import Format, register_format

__all__ = ["TT"]


class TT(Format):
    """TT-SVD of the weight in the ``(S, Kh, Kw, T)`` layout: inner ranks ``(r1, r2, r3)``.

    Layer :class:`~tuckerlab.layers.TTConv2d` (1x1, Kh x 1, 1 x Kw, 1x1).
    The rank is written as the three inner TT ranks; ``(1, r1, r2, r3, 1)``
    and an int cap (bond ``k`` gets ``min(cap, its largest rank)``) are
    accepted and normalised to the inner triple, which is also the layer's
    ``.rank``.
    """

    name = "tt"
    description = "tensor train on (S, Kh, Kw, T): 1x1, Kh x 1, 1 x Kw, 1x1 (Garipov et al. 2016)"
    kind = "conv"
    layer = TTConv2d
    options = ()
    rank_doc = "(r1, r2, r3) inner TT ranks of the (S, Kh, Kw, T) layout, or an int cap"

    @staticmethod
    def _dims(shape):
        t, s, kh, kw = (int(n) for n in shape)
        return (s, kh, kw, t)

    def normalize_rank(self, shape, rank):
        return validate_tt_rank(rank, self._dims(shape))[1:-1]

    def full_rank(self, shape):
        return sp.tt_max_ranks(self._dims(shape))

    def decompose(self, weight, rank, **options):
        return tensor_train(to_tt_layout(weight.detach()), rank)

    def reconstruct(self, decomposition):
        return from_tt_layout(decomposition.to_tensor())

    def rank_of(self, decomposition):
        return tuple(decomposition.rank[1:-1])



    # ---------------------------------------------------------- searches
    def rule_rank(self, weight, select, min_rank):
        return sp.tt_rule_ranks(to_tt_layout(weight), select, min_rank)

    def ratio_rank(self, shape, ratio, min_rank):
        dims = self._dims(shape)
        return sp.tt_feasible([sp.ratio_of(m, ratio, min_rank) for m in sp.tt_max_ranks(dims)], dims)

    def scale_rank(self, shape, rank, factor, min_rank):
        dims = self._dims(shape)
        scaled = [min(max(min_rank, int(round(factor * r))), m) for r, m in zip(rank, sp.tt_max_ranks(dims))]
        return sp.tt_feasible(scaled, dims)

    def budget_candidates(self, weight, candidates):
        t, s, kh, kw = weight.shape
        x = to_tt_layout(weight)
        first = sp.tail(sp.squared_svals(x.reshape(s, -1)))
        mid = sp.tail(sp.squared_svals(x.reshape(s * kh, kw * t)))
        last = sp.tail(sp.squared_svals(x.reshape(-1, t)))
        a, b, c = np.meshgrid(candidates(min(s, kh * kw * t)), candidates(min(s * kh, kw * t)),
                              candidates(min(s * kh * kw, t)), indexing="ij")
        a, b, c = a.ravel(), b.ravel(), c.ravel()
        # only reachable TT ranks: r_{k+1} <= r_k n_k and r_k <= n_k r_{k+1}
        keep = (a <= kh * b) & (b <= a * kh) & (b <= kw * c) & (c <= b * kw)
        a, b, c = a[keep], b[keep], c[keep]
        err = sp.tail_at(first, a) + sp.tail_at(mid, b) + sp.tail_at(last, c)
        return list(zip(a.tolist(), b.tolist(), c.tolist())), err


register_format(TT())

"""CP of a conv weight (Lebedev et al., 2015)."""
from __future__ import annotations

import numpy as np

from tuckerlab.decompose import cp
from tuckerlab.decompose._validation import validate_cp_rank
from tuckerlab.layers import CPConv2d

from . import _spectra as sp
from ._base import Format, register_format

__all__ = ["CP"]


class CP(Format):
    """CP by alternating least squares: rank ``R`` (an int), layer :class:`~tuckerlab.layers.CPConv2d`.

    CP has no closed-form projection: ALS finds a local optimum. The
    default ``random_state=0`` makes every decomposition reproducible (ALS
    draws random columns when the rank exceeds a dimension).
    """

    name = "cp"
    description = "CP: 1x1, depthwise Kh x 1, depthwise 1 x Kw, 1x1 (Lebedev et al. 2015)"
    kind = "conv"
    layer = CPConv2d
    options = ("n_iter_max", "tol", "init", "random_state")
    default_options = {"random_state": 0}
    rank_doc = "R, an int"

    def normalize_rank(self, shape, rank):
        return validate_cp_rank(rank, shape)

    def full_rank(self, shape):
        return validate_cp_rank(int(np.prod(shape)) // max(shape), shape)

    def decompose(self, weight, rank, **options):
        return cp(weight.detach(), rank, **options)

    def rank_of(self, decomposition):
        return int(decomposition.rank)



    # ---------------------------------------------------------- searches
    def rule_rank(self, weight, select, min_rank):
        """``max(r_out, r_in)`` of the Tucker-2 rule ranks (CP has no unfolding of its own)."""
        (r_out, *_), (r_in, *_) = sp.tucker2_rule_ranks(weight, select, min_rank)
        return max(r_out, r_in)

    def ratio_rank(self, shape, ratio, min_rank):
        return sp.ratio_of(max(shape[0], shape[1]), ratio, min_rank)

    def scale_rank(self, shape, rank, factor, min_rank):
        return min(max(min_rank, int(round(factor * rank))), self.full_rank(shape))

    def budget_candidates(self, weight, candidates):
        """CP rank ``R`` with the smallest Tucker-2 bound over ``(r_out, r_in)`` whose CP rank fits in ``R``.

        A tensor of multilinear rank ``(r_out, r_in, Kh, Kw)`` has CP rank at
        most the product ``p`` of its three smallest sizes, so CP rank ``p``
        reproduces that Tucker-2 truncation exactly; the error at ``R`` is the
        envelope of those bounds, interpolated linearly in ``R`` (a smooth
        upper-bound proxy; ALS may do better).
        """
        t, s, kh, kw = weight.shape
        t0, t1 = sp.tucker2_tails(weight)
        ro, ri = np.meshgrid(np.arange(1, t + 1), np.arange(1, s + 1), indexing="ij")
        sizes = np.sort(np.stack([ro, ri, np.full_like(ro, kh), np.full_like(ro, kw)]), axis=0)
        p = (sizes[0] * sizes[1] * sizes[2]).ravel()
        e = (sp.tail_at(t0, ro) + sp.tail_at(t1, ri)).ravel()
        order = np.argsort(p, kind="stable")
        p, e = p[order], np.minimum.accumulate(e[order])
        last = np.r_[p[1:] != p[:-1], True]  # envelope value at each distinct product
        xp, fp = np.r_[0, p[last]], np.r_[t0[0] + t1[0], e[last]]
        r = candidates(int(p[-1]))
        return [int(x) for x in r], np.interp(r, xp, fp)


register_format(CP())

"""Tucker-2: Tucker factors on the two channel modes of a conv weight (Kim et al., 2016)."""
from __future__ import annotations

import numpy as np

from tuckerlab.decompose import tucker
from tuckerlab.decompose._validation import validate_tucker_rank
from tuckerlab.layers import TuckerConv2d

from . import _spectra as sp
from ._base import HOOIFormat, register_format

__all__ = ["Tucker2"]


class Tucker2(HOOIFormat):
    """Tucker-2 of a conv weight ``(T, S, Kh, Kw)``: rank ``(r_out, r_in)``.

    Layer :class:`~tuckerlab.layers.TuckerConv2d`.

    The decomposition is HOOI (or HOSVD) of modes 0 and 1; a factor whose
    rank equals its channel count is an orthogonal matrix that the layer
    folds into the core (no 1x1 stage, no parameters spent on it).
    """

    name = "tucker2"
    description = "Tucker-2: 1x1 (S -> r_in), Kh x Kw (r_in -> r_out), 1x1 (r_out -> T) (Kim et al. 2016)"
    kind = "conv"
    layer = TuckerConv2d
    rank_doc = "(r_out, r_in), or an int for both"

    def normalize_rank(self, shape, rank):
        return validate_tucker_rank(rank, shape, (0, 1))

    def full_rank(self, shape):
        return (int(shape[0]), int(shape[1]))

    def decompose(self, weight, rank, **options):
        return tucker(weight.detach(), rank, modes=(0, 1), **options)

    def upgrade_state(self, state, prefix, shape, rank):
        TuckerConv2d.fold_full_rank_factors(state, prefix)

    # ---------------------------------------------------------- searches
    def rule_rank(self, weight, select, min_rank):
        (r_out, *_), (r_in, *_) = sp.tucker2_rule_ranks(weight, select, min_rank)
        return (r_out, r_in)

    def ratio_rank(self, shape, ratio, min_rank):
        return (sp.ratio_of(shape[0], ratio, min_rank), sp.ratio_of(shape[1], ratio, min_rank))

    def scale_rank(self, shape, rank, factor, min_rank):
        return tuple(min(max(min_rank, int(round(factor * r))), int(n)) for r, n in zip(rank, shape[:2]))

    def budget_candidates(self, weight, candidates):
        t, s = weight.shape[:2]
        t0, t1 = sp.tucker2_tails(weight)
        ro, ri = np.meshgrid(candidates(t), candidates(s), indexing="ij")
        ro, ri = ro.ravel(), ri.ravel()
        return list(zip(ro.tolist(), ri.tolist())), sp.tail_at(t0, ro) + sp.tail_at(t1, ri)


register_format(Tucker2())


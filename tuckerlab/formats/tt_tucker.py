"""TT-Tucker: Tucker factors on the channel modes, a tensor train on the core (the C-step of TT-LC)."""
from __future__ import annotations

import numpy as np
import torch

from tuckerlab.decompose import tt_tucker
from tuckerlab.layers import TTTuckerConv2d
from tuckerlab.layers.tt import from_tt_layout, to_tt_layout
from tuckerlab.layers.tt_tucker import _tt_tucker_rank

from . import _spectra as sp
from ._base import HOOI_SWEEPS, Format, register_format

__all__ = ["TTTucker"]


class TTTucker(Format):
    """TT-Tucker of a conv weight: rank ``((r_out, r_in), (r1, r2, r3))``.

    Layer :class:`~tuckerlab.layers.TTTuckerConv2d`.

    The Tucker part is written ``(r_out, r_in)`` as for Tucker-2; the TT
    part is the inner TT ranks of the ``(r_in, Kh, Kw, r_out)`` core (or an
    int cap). A pair of two ints (``(8, 8)``) is ambiguous and refused.
    In this layout (factors on the two end modes of the TT) a TT-Tucker
    weight is also a TT weight with ranks ``(r1, r2, r3)``.
    """

    name = "tt_tucker"
    description = "TT-Tucker: Tucker factors on the channels, TT on the (r_in, Kh, Kw, r_out) core (Liu et al. 2024)"
    kind = "conv"
    layer = TTTuckerConv2d
    options = ("method", "n_iter_max", "tol")
    default_options = {"n_iter_max": HOOI_SWEEPS}
    rank_doc = "((r_out, r_in), (r1, r2, r3)); the TT part may be an int cap"

    def normalize_rank(self, shape, rank):
        t, s, kh, kw = shape
        return _tt_tucker_rank(rank, (kh, kw), (t, s))

    def full_rank(self, shape):
        t, s, kh, kw = (int(n) for n in shape)
        return ((t, s), sp.tt_max_ranks((s, kh, kw, t)))

    def decompose(self, weight, rank, **options):
        (r_out, r_in), tt = rank
        # modes 0 and 3 of the (S, Kh, Kw, T) layout are (in, out)
        return tt_tucker(to_tt_layout(weight.detach()), (r_in, r_out), tt, modes=(0, 3), **options)

    def reconstruct(self, decomposition):
        return from_tt_layout(decomposition.to_tensor())

    def rank_of(self, decomposition):
        (r_in, r_out), tt = decomposition.rank
        return ((r_out, r_in), tuple(tt[1:-1]))

    def upgrade_state(self, state, prefix, shape, rank):
        TTTuckerConv2d.fold_full_rank_factors(state, prefix)

    # ---------------------------------------------------------- searches
    def rule_rank(self, weight, select, min_rank):
        (r_out, u_out, noise_out), (r_in, u_in, noise_in) = sp.tucker2_rule_ranks(weight, select, min_rank, True)
        core = torch.einsum("tshw,ta,sb->abhw", weight, u_out, u_in)
        # the core is an orthogonal projection of W: the same noise variance as W
        select = sp.with_core_noise(select, (noise_out, noise_in))
        return ((r_out, r_in), sp.tt_rule_ranks(to_tt_layout(core), select, min_rank))

    def ratio_rank(self, shape, ratio, min_rank):
        t, s, kh, kw = shape
        r_out, r_in = sp.ratio_of(t, ratio, min_rank), sp.ratio_of(s, ratio, min_rank)
        dims = (r_in, kh, kw, r_out)
        tt = sp.tt_feasible([sp.ratio_of(m, ratio, min_rank) for m in sp.tt_max_ranks(dims)], dims)
        return ((r_out, r_in), tt)

    def scale_rank(self, shape, rank, factor, min_rank):
        t, s, kh, kw = shape
        (r_out, r_in), tt = rank
        r_out, r_in = (min(max(min_rank, int(round(factor * r))), n) for r, n in ((r_out, t), (r_in, s)))
        dims = (r_in, kh, kw, r_out)
        scaled = [min(max(min_rank, int(round(factor * r))), m) for r, m in zip(tt, sp.tt_max_ranks(dims))]
        return ((r_out, r_in), sp.tt_feasible(scaled, dims))

    def budget_candidates(self, weight, candidates):
        """Candidates ``(r_out, r_in, r2)`` with ``r1 = min(r_in, Kh Kw r_out)``, ``r3 = min(r_out, r_in Kh Kw)``.

        The TT bonds next to the Tucker factors do not truncate, so three
        ranks are searched; the error is the Tucker-2 bound plus the middle
        TT unfolding's.
        """
        t, s, kh, kw = weight.shape
        t0, t1 = sp.tucker2_tails(weight)
        mid = sp.tail(sp.squared_svals(to_tt_layout(weight).reshape(s * kh, kw * t)))
        ro, ri, r2 = np.meshgrid(candidates(t), candidates(s), candidates(min(s * kh, kw * t)), indexing="ij")
        ro, ri, r2 = ro.ravel(), ri.ravel(), r2.ravel()
        r1, r3 = np.minimum(ri, kh * kw * ro), np.minimum(ro, ri * kh * kw)
        keep = (r1 <= kh * r2) & (r2 <= r1 * kh) & (r2 <= kw * r3) & (r3 <= r2 * kw)
        ro, ri, r1, r2, r3 = ro[keep], ri[keep], r1[keep], r2[keep], r3[keep]
        cols = zip(ro.tolist(), ri.tolist(), r1.tolist(), r2.tolist(), r3.tolist())
        ranks = [((a, b), (c, d, e)) for a, b, c, d, e in cols]
        return ranks, sp.tail_at(t0, ro) + sp.tail_at(t1, ri) + sp.tail_at(mid, r2)


register_format(TTTucker())

"""Spectra of a weight's unfoldings: what the rank rules and the budget solver read ranks from.

Shared by the formats' rank-search hooks (:meth:`Format.rule_rank`,
:meth:`Format.budget_candidates`). A *spectral selector* is a callable
``select(s, shape, norm2) -> rank`` turning the singular values ``s`` of a
matrix of ``shape`` (squared Frobenius norm ``norm2``) into a rank; the rules
of :mod:`tuckerlab.rank.rules` (EVBMF, energy) are such selectors. A selector
may also carry a noise estimate: ``last_noise`` after a call, and
``with_noise(sigma2)`` returning a selector that uses a given noise variance
for derived matrices (the later TT unfoldings, a Tucker core), which are
orthogonal projections of the weight with too few singular values to
estimate the noise again.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "unfold", "squared_svals", "svals", "tail", "tucker2_tails", "tail_at", "clip_rank", "tt_feasible",
    "matrix_rule_rank", "tucker2_rule_ranks", "tt_rule_ranks", "dim_candidates",
]


def unfold(w: torch.Tensor, mode: int) -> torch.Tensor:
    """The mode-``mode`` unfolding ``(n_mode, prod of the other sizes)``."""
    return w.movedim(mode, 0).reshape(w.shape[mode], -1)


def squared_svals(m: torch.Tensor) -> np.ndarray:
    """Squared singular values of ``m``, descending, in float64.

    Eigenvalues of the smaller Gram matrix: only the squares are needed, and
    this is much faster than an SVD for the skinny unfoldings of conv weights.
    """
    m = m.detach().double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    e = torch.linalg.eigvalsh(gram).cpu().numpy()[::-1]
    return np.clip(e, 0.0, None)


def svals(m: torch.Tensor) -> tuple[np.ndarray, float]:
    """Singular values of ``m`` (float64 numpy) and its squared Frobenius norm."""
    s = torch.linalg.svdvals(m)
    return s.detach().double().cpu().numpy(), float(torch.sum(m.double() ** 2))


def tail(e: np.ndarray) -> np.ndarray:
    """``t[r] = sum_{h >= r} e_h`` for ``r = 0..len(e)`` (``t[len] = 0``): what a rank-``r`` truncation drops."""
    return np.concatenate([np.cumsum(e[::-1])[::-1], [0.0]])


def tucker2_tails(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tail` of the squared singular values of the mode-0 and mode-1 unfoldings (the Tucker-2 bound)."""
    return tail(squared_svals(unfold(w, 0))), tail(squared_svals(unfold(w, 1)))


def tail_at(t: np.ndarray, r) -> np.ndarray:
    """``t`` at ranks ``r`` (ranks beyond the spectrum drop nothing)."""
    return t[np.minimum(r, t.size - 1)]


def clip_rank(r: int, full: int, min_rank: int) -> int:
    """``r`` in ``[min_rank, full]`` (``min_rank`` never pushes a rank above ``full``)."""
    return int(min(max(int(r), min_rank), full))


def tt_feasible(ranks: Sequence[int], dims: Sequence[int]) -> tuple[int, ...]:
    """Largest TT ranks ``<= ranks`` that a tensor of shape ``dims`` can have.

    Core ``k`` is ``(r_k, n_k, r_{k+1})`` with ``r_0 = r_d = 1``; a rank is
    reachable only if ``r_{k+1} <= r_k n_k`` and ``r_k <= n_k r_{k+1}``.
    """
    r = [1, *(max(1, int(x)) for x in ranks), 1]
    n = [int(d) for d in dims]
    changed = True
    while changed:
        changed = False
        for k in range(1, len(r) - 1):
            cap = min(r[k - 1] * n[k - 1], n[k] * r[k + 1])
            if r[k] > cap:
                r[k], changed = cap, True
    return tuple(r[1:-1])


def _with_noise(select, sigma2):
    fn = getattr(select, "with_noise", None)
    return fn(sigma2) if callable(fn) else select


def matrix_rule_rank(m: torch.Tensor, select: Callable, min_rank: int) -> int:
    """The rank ``select`` reads off the singular values of matrix ``m``, clipped."""
    s, norm2 = svals(m)
    return clip_rank(select(s, tuple(m.shape), norm2), min(m.shape), min_rank)


def tucker2_rule_ranks(w: torch.Tensor, select: Callable, min_rank: int, vectors: bool = False):
    """``[(rank, leading vectors or None, noise estimate)]`` of the mode-0 and mode-1 unfoldings."""
    out = []
    for mode in (0, 1):
        m = unfold(w, mode)
        if vectors:
            u, s_t, _ = torch.linalg.svd(m, full_matrices=False)
            s, norm2 = s_t.detach().double().cpu().numpy(), float(torch.sum(m.double() ** 2))
        else:
            u = None
            s, norm2 = svals(m)
        r = clip_rank(select(s, tuple(m.shape), norm2), min(m.shape), min_rank)
        out.append((r, None if u is None else u[:, :r], getattr(select, "last_noise", None)))
    return out


def tt_rule_ranks(t: torch.Tensor, select: Callable, min_rank: int) -> tuple[int, ...]:
    """Sequential TT-SVD ranks of a 4-way tensor, read by ``select`` off the matrices TT-SVD truncates.

    A selector that estimates noise does so on the first unfolding only and
    keeps that estimate for the later (projected) matrices.
    """
    n = t.shape
    c = t.reshape(n[0], -1)
    ranks = []
    for k in range(3):
        _, s_t, vh = torch.linalg.svd(c, full_matrices=False)
        s = s_t.detach().double().cpu().numpy()
        r = clip_rank(select(s, tuple(c.shape), float(torch.sum(c.double() ** 2))), min(c.shape), min_rank)
        if k == 0:
            select = _with_noise(select, getattr(select, "last_noise", None))
        ranks.append(r)
        c = (s_t[:r, None] * vh[:r]).reshape(r * n[k + 1], -1)
    # a small later rank caps the earlier ones (r_k <= n_k r_{k+1})
    return tt_feasible(ranks, n)


def with_core_noise(select, noises):
    """The selector for a Tucker core, given the noise estimates of the channel unfoldings (their mean)."""
    known = [s for s in noises if s is not None]
    return _with_noise(select, sum(known) / len(known)) if known else select


def dim_candidates(n: int, multiple_of: int | None, max_candidates: int) -> np.ndarray:
    """Ranks tried for a bond of full size ``n``: all, or multiples of ``multiple_of``; at most ``max_candidates``."""
    if multiple_of:
        c = np.arange(multiple_of, n + 1, multiple_of)
        if c.size == 0:
            c = np.array([n])
    else:
        c = np.arange(1, n + 1)
    if c.size > max_candidates:
        idx = np.unique(np.round(np.linspace(0, c.size - 1, max_candidates)).astype(int))
        c = c[idx]
    return c


def ratio_of(full: int, ratio: float, min_rank: int) -> int:
    """``round(ratio * full)``, at least 1 and ``min_rank``, at most ``full``."""
    return clip_rank(max(1, int(round(ratio * full))), full, min_rank)


def tt_max_ranks(dims: Sequence[int]) -> tuple[int, ...]:
    """The largest inner TT ranks of a tensor of shape ``dims``."""
    return tuple(min(math.prod(dims[: k + 1]), math.prod(dims[k + 1:])) for k in range(len(dims) - 1))

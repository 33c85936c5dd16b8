"""Tensor-train decomposition by TT-SVD."""
from __future__ import annotations

import torch

from ._results import TTTensor
from ._tucker import fix_signs
from ._validation import check_tensor, compute_dtype, validate_eps, validate_tt_rank

__all__ = ["tensor_train"]


def _truncate(c: torch.Tensor, rank: int | None, delta2: float | None):
    """Best rank-``r`` split ``c ~= U W``: ``U`` orthonormal columns, ``W = U^T c``.

    ``r`` is ``rank`` or, when ``rank`` is None, the smallest rank whose
    discarded energy (sum of the dropped squared singular values) is at most
    ``delta2``.
    """
    rows, cols = c.shape
    if rows > cols:
        # Tall: orthogonalise first, then split the square triangular factor.
        # The Gram matrix of a tall matrix would be rank-deficient, and
        # U = c V / sigma divides by singular values that may be zero.
        q, r_mat = torch.linalg.qr(c)
        u, w = _truncate(r_mat, rank, delta2)
        return q @ u, w
    # Short and wide: eigenvectors of the small Gram matrix are the left
    # singular vectors, and its eigenvalues the squared singular values. In
    # float64, because the Gram matrix squares the condition number.
    c64 = c.to(torch.float64)
    evals, evecs = torch.linalg.eigh(c64 @ c64.T)
    if rank is None:
        dropped = torch.cumsum(evals.clamp_min(0), 0) <= delta2
        rank = max(rows - int(dropped.sum()), 1)
    u = fix_signs(evecs[:, rows - rank :].flip(1)).to(c.dtype)
    return u, u.T @ c


def tt_svd(x: torch.Tensor, rank: tuple | None = None, eps: float | None = None) -> list:
    """TT cores of ``x`` for a validated full rank tuple, or a tolerance ``eps``."""
    shape = x.shape
    d = len(shape)
    delta2 = None
    if rank is None:
        # Oseledets' delta: the errors of the d - 1 truncations add in squares.
        norm2 = float(torch.linalg.vector_norm(x, dtype=torch.float64)) ** 2
        delta2 = eps**2 * norm2 / max(d - 1, 1)
    cores = []
    r_prev = 1
    c = x
    for k in range(d - 1):
        c = c.reshape(r_prev * shape[k], -1)
        u, c = _truncate(c, None if rank is None else rank[k + 1], delta2)
        r = u.shape[1]
        cores.append(u.reshape(r_prev, shape[k], r))
        r_prev = r
    cores.append(c.reshape(r_prev, shape[-1], 1))
    return cores


def tensor_train(tensor: torch.Tensor, rank=None, *, eps: float | None = None) -> TTTensor:
    """Tensor-train decomposition by TT-SVD.

    ``tensor[i_0, ..., i_{d-1}] ~= G_0[:, i_0, :] G_1[:, i_1, :] ... G_{d-1}[:, i_{d-1}, :]``
    with cores ``G_k`` of shape ``(r_k, n_k, r_{k+1})``, ``r_0 = r_d = 1``.
    The cores are computed left to right by truncated SVDs of successive
    unfoldings; all but the last have orthonormal unfoldings
    ``(r_k n_k, r_{k+1})`` (left-orthogonal form).

    Give exactly one of ``rank`` and ``eps``.

    Explained in: chapter 2, "Tensor trains and TT-Tucker"
    (notebooks/02_tensor_train.ipynb).

    Parameters
    ----------
    tensor : torch.Tensor
        Floating-point tensor, any device. float32/float64 are computed in
        their own dtype, float16/bfloat16 in float32 and cast back.
    rank : int or sequence of int, optional
        The full tuple ``(1, r_1, ..., r_{d-1}, 1)``; or the ``d - 1`` inner
        ranks ``(r_1, ..., r_{d-1})``; or an int cap: bond ``k`` gets
        ``min(cap, largest rank at bond k)``. Each ``r_k`` must lie in
        ``[1, min(n_0...n_{k-1}, n_k...n_{d-1})]`` and be reachable from its
        neighbours: ``r_k <= r_{k-1} n_{k-1}`` and ``r_k <= n_k r_{k+1}``.
    eps : float, optional
        Relative Frobenius error tolerance (> 0): the ranks are the smallest
        such that ``||tensor - TT|| <= eps ||tensor||`` (delta-truncation
        of Oseledets 2011, Algorithm 1). Singular values are resolved down
        to about ``sqrt(machine eps) * sigma_max`` (3e-4 in float32, 1e-8 in
        float64); an ``eps`` near or below that still holds but the ranks
        it gives may be larger than needed.

    Returns
    -------
    TTTensor
        On the input's device, in the input's dtype.

    Raises
    ------
    TypeError
        If ``tensor`` is not a floating-point torch tensor.
    ValueError
        If both or neither of ``rank`` and ``eps`` are given, if ``eps <= 0``,
        or if a rank is out of range; the message names the bond and the
        range accepted.

    Notes
    -----
    The truncated SVD of each short, wide unfolding is taken from the
    eigen-decomposition of its Gram matrix, and tall unfoldings are first
    reduced by a QR factorisation; both are faster than a dense SVD for the
    small matrices of conv weights.

    References
    ----------
    .. [1] I. V. Oseledets, "Tensor-train decomposition", SIAM J. Sci. Comput.
       33(5):2295-2317, 2011.

    Examples
    --------
    >>> w = torch.randn(64, 3, 3, 64)  # a conv weight permuted to (S, Kh, Kw, T)
    >>> tensor_train(w, rank=(1, 32, 96, 32, 1)).rank
    (1, 32, 96, 32, 1)
    >>> tensor_train(w, rank=16).rank
    (1, 16, 16, 16, 1)
    """
    check_tensor(tensor)
    if (rank is None) == (eps is None):
        raise ValueError(
            f"rank={rank!r}, eps={eps!r}: give exactly one of rank (TT ranks or "
            f"an int cap) and eps (a relative error tolerance)"
        )
    if rank is not None:
        rank = validate_tt_rank(rank, tuple(tensor.shape))
    else:
        eps = validate_eps(eps)
    with torch.no_grad():
        x = tensor.detach().to(compute_dtype(tensor.dtype))
        cores = tt_svd(x, rank, eps)
        cores = [c.to(tensor.dtype).contiguous() for c in cores]
    return TTTensor(cores=cores)


"""TT-Tucker: Tucker factors on some modes, a tensor train for the core."""
from __future__ import annotations

import torch

from ._results import TTTensor, TTTuckerTensor
from ._tt import tt_svd
from ._tucker import tucker_factors
from ._validation import (
    check_tensor,
    compute_dtype,
    validate_method,
    validate_modes,
    validate_n_iter_max,
    validate_tol,
    validate_tt_rank,
    validate_tucker_rank,
)

__all__ = ["tt_tucker"]


def tt_tucker(
    tensor: torch.Tensor,
    tucker_rank,
    tt_rank,
    modes=None,
    *,
    method: str = "hooi",
    n_iter_max: int = 100,
    tol: float = 1e-8,
) -> TTTuckerTensor:
    """TT-Tucker decomposition: a Tucker decomposition with a TT core.

    First ``tensor ~= core x_{m in modes} U_m`` (see :func:`tucker`), then the
    core is split by TT-SVD (see :func:`tensor_train`). On a conv weight the
    Tucker factors act on the channel modes and the tensor train on the small
    core, the C-step of TT-LC.

    Explained in: chapter 2, "Tensor trains and TT-Tucker"
    (notebooks/02_tensor_train.ipynb).

    Parameters
    ----------
    tensor : torch.Tensor
        Floating-point tensor, any device. float32/float64 are computed in
        their own dtype, float16/bfloat16 in float32 and cast back.
    tucker_rank : int or sequence of int
        Tucker ranks, as ``rank`` in :func:`tucker` (one per entry of ``modes``).
    tt_rank : int or sequence of int
        TT ranks of the core (whose size along ``modes[i]`` is
        ``tucker_rank[i]``), as ``rank`` in :func:`tensor_train`: the full
        tuple ``(1, r_1, ..., r_{d-1}, 1)``, the ``d - 1`` inner ranks, or an
        int cap.
    modes : int or sequence of int, optional
        Modes carrying Tucker factors; None (default) means all.
    method : {"hooi", "hosvd"}
        How the Tucker factors are computed, as in :func:`tucker`.
    n_iter_max, tol
        HOOI stopping rule, as in :func:`tucker`.

    Returns
    -------
    TTTuckerTensor
        On the input's device, in the input's dtype.

    Raises
    ------
    TypeError
        If ``tensor`` is not a floating-point torch tensor.
    ValueError
        If a rank, ``modes`` or ``method`` is invalid; the message names the
        mode or bond and the range accepted.

    Notes
    -----
    Truncating the factors and then the core is the sequential (not the
    jointly optimal) TT-Tucker approximation; its squared error is at most
    the sum of the squared errors of the two steps, since the Tucker
    projection is orthogonal.

    References
    ----------
    .. [1] W. Liu et al., "TT-LC: TT-Tucker decomposition in the LC framework
       without pre-training", J. South China Univ. Tech. 52(7):29-38, 2024.
    .. [2] I. V. Oseledets, "Tensor-train decomposition", SIAM J. Sci. Comput.
       33(5):2295-2317, 2011.
    .. [3] L. De Lathauwer, B. De Moor, J. Vandewalle, "On the best rank-1 and
       rank-(R1, R2, ..., RN) approximation of higher-order tensors", SIAM J.
       Matrix Anal. Appl. 21(4):1324-1342, 2000.

    Examples
    --------
    >>> w = torch.randn(64, 3, 3, 32)  # conv weight permuted to (S, Kh, Kw, T)
    >>> tt = tt_tucker(w, tucker_rank=(32, 16), tt_rank=(16, 16, 16), modes=(0, 3))
    >>> tt.rank
    ((32, 16), (1, 16, 16, 16, 1))
    """
    check_tensor(tensor)
    modes = validate_modes(modes, tensor.ndim)
    ranks = validate_tucker_rank(tucker_rank, tensor.shape, modes, name="tucker_rank")
    core_shape = list(tensor.shape)
    for m, r in zip(modes, ranks):
        core_shape[m] = r
    full_tt = validate_tt_rank(tt_rank, tuple(core_shape), name="tt_rank")
    validate_method(method, ("hooi", "hosvd"))
    n_iter_max = validate_n_iter_max(n_iter_max)
    tol = validate_tol(tol)

    with torch.no_grad():
        x = tensor.detach().to(compute_dtype(tensor.dtype))
        core, factors = tucker_factors(x, ranks, modes, method, n_iter_max, tol)
        cores = tt_svd(core, full_tt)
        dtype = tensor.dtype
        cores = [c.to(dtype).contiguous() for c in cores]
        factors = [f.to(dtype).contiguous() if f is not None else None for f in factors]
    return TTTuckerTensor(factors=factors, tt=TTTensor(cores=cores), modes=modes)

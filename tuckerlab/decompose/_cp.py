"""CP (CANDECOMP/PARAFAC) decomposition, by tensorly's ALS."""
from __future__ import annotations

import warnings

import torch

from ._results import CPTensor
from ._validation import (
    check_tensor,
    compute_dtype,
    validate_cp_rank,
    validate_method,
    validate_n_iter_max,
    validate_tol,
)

__all__ = ["cp"]


def cp(
    tensor: torch.Tensor,
    rank: int,
    n_iter_max: int = 200,
    tol: float = 1e-10,
    init: str = "svd",
    random_state=None,
) -> CPTensor:
    """CP decomposition ``tensor ~= sum_r w_r a^0_r o a^1_r o ... o a^{d-1}_r``.

    Alternating least squares (tensorly's ``parafac`` on its pytorch backend,
    switched on for this call only and for this thread only).

    Parameters
    ----------
    tensor : torch.Tensor
        Floating-point tensor, any device. float32/float64 are computed in
        their own dtype, float16/bfloat16 in float32 and cast back.
    rank : int
        Number of rank-one terms, in ``[1, prod(shape) / max(shape)]``
        (a tensor never needs more).
    n_iter_max : int
        Maximum number of ALS sweeps.
    tol : float
        ALS stops when a sweep changes the relative reconstruction error
        by less than ``tol``.
    init : {"svd", "random"}
        Initial factors: leading left singular vectors of the unfoldings
        (padded with random columns where ``rank`` exceeds a dimension), or
        uniform random.
    random_state : None, int or numpy.random.RandomState
        Seed for whatever is random in the initialisation; an int makes the
        result reproducible.

    Returns
    -------
    CPTensor
        Factors with unit-norm columns, the scale in ``weights``; on the
        input's device, in the input's dtype.

    Raises
    ------
    TypeError
        If ``tensor`` is not a floating-point torch tensor.
    ValueError
        If ``rank``, ``n_iter_max``, ``tol`` or ``init`` is invalid.

    Notes
    -----
    Unlike Tucker and TT, the best rank-``R`` CP approximation may not exist
    and ALS finds a local optimum that depends on ``init``.

    References
    ----------
    .. [1] T. G. Kolda, B. W. Bader, "Tensor decompositions and applications",
       SIAM Review 51(3):455-500, 2009.
    .. [2] V. Lebedev, Y. Ganin, M. Rakhuba, I. Oseledets, V. Lempitsky,
       "Speeding-up convolutional neural networks using fine-tuned
       CP-decomposition", ICLR 2015.

    Examples
    --------
    >>> w = torch.randn(16, 16, 3, 3)
    >>> cp(w, rank=8, random_state=0).rank
    8
    """
    check_tensor(tensor)
    rank = validate_cp_rank(rank, tuple(tensor.shape))
    n_iter_max = validate_n_iter_max(n_iter_max)
    tol = validate_tol(tol)
    validate_method(init, ("svd", "random"), name="init")

    if tensor.ndim == 1:  # a vector is its own rank-one term (rank is 1 here)
        with torch.no_grad():
            x = tensor.detach().to(compute_dtype(tensor.dtype))
            norm = torch.linalg.vector_norm(x)
            factor = torch.where(norm > 0, x / norm, torch.ones_like(x) / x.numel() ** 0.5)
            return CPTensor(
                weights=norm.reshape(1).to(tensor.dtype),
                factors=[factor.reshape(-1, 1).to(tensor.dtype)],
            )

    import tensorly as tl
    from tensorly.cp_tensor import cp_normalize
    from tensorly.decomposition import parafac

    with torch.no_grad(), tl.backend_context("pytorch", local_threadsafe=True), \
            warnings.catch_warnings():
        # A rank above a dimension is valid: tensorly then pads the SVD
        # initialisation with random columns, and says so.
        warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
        x = tensor.detach().to(compute_dtype(tensor.dtype))
        res = parafac(
            x,
            rank,
            n_iter_max=n_iter_max,
            init=init,
            tol=tol,
            random_state=random_state,
        )
        weights, factors = cp_normalize(res)
        dtype = tensor.dtype
        weights = weights.to(dtype).contiguous()
        factors = [f.to(dtype).contiguous() for f in factors]
    return CPTensor(weights=weights, factors=factors)

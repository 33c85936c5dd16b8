"""Tucker decomposition: HOSVD and HOOI, full or on a subset of modes."""
from __future__ import annotations

import math

import torch

from ._results import TuckerTensor
from ._validation import (
    check_tensor,
    compute_dtype,
    validate_method,
    validate_modes,
    validate_n_iter_max,
    validate_tol,
    validate_tucker_rank,
)

__all__ = ["tucker"]


def fix_signs(u: torch.Tensor) -> torch.Tensor:
    """Flip columns so that the largest-magnitude entry of each is positive.

    Singular vectors are defined up to sign; fixing it makes results
    comparable across devices, backends and calls.
    """
    idx = u.abs().argmax(0, keepdim=True)
    return u * torch.sign(u.gather(0, idx))


def leading_eigvecs(gram: torch.Tensor, r: int, dtype: torch.dtype) -> torch.Tensor:
    """The ``r`` leading eigenvectors of a symmetric PSD matrix, largest first.

    For an unfolding ``A`` these are its leading left singular vectors: the
    eigen-decomposition of the small Gram matrix ``A A^T`` is much cheaper
    than an SVD of ``A`` when ``A`` is short and wide, as conv unfoldings are,
    and avoids the slow small-matrix SVD path of CUDA.

    ``gram`` comes in float64 (see :func:`gram`); the eigenvectors are
    returned in ``dtype``.
    """
    _, vecs = torch.linalg.eigh(gram)
    return fix_signs(vecs[:, vecs.shape[1] - r :].flip(1)).to(dtype)


def gram(x: torch.Tensor, mode: int) -> torch.Tensor:
    """``A A^T`` in float64 for ``A`` the mode-``mode`` unfolding of ``x``.

    Forming ``A A^T`` squares the condition number: in float32 every
    direction whose singular value is below about ``1e-4 sigma_max`` is lost
    in rounding, which would leave a projection error of about 1e-4 even on
    an exactly low-rank float32 tensor. The Gram matrix is small
    (``n x n`` for a mode of size ``n``), so float64 costs little.
    """
    a = x.movedim(mode, 0).reshape(x.shape[mode], -1).to(torch.float64)
    return a @ a.T


def mode_dot_t(x: torch.Tensor, u: torch.Tensor, mode: int) -> torch.Tensor:
    """``x x_mode u^T`` for ``u`` of shape (n, r): ``mode`` shrinks from n to r."""
    return torch.tensordot(x, u, dims=([mode], [0])).movedim(-1, mode)


def project(x: torch.Tensor, factors, modes, skip=None) -> torch.Tensor:
    """Multiply ``x`` by ``factors[m]^T`` along every mode in ``modes`` but ``skip``."""
    # Shrink the modes that shrink most first, so intermediates stay small.
    order = sorted(
        (m for m in modes if m != skip),
        key=lambda m: factors[m].shape[1] / factors[m].shape[0],
    )
    for m in order:
        x = mode_dot_t(x, factors[m], m)
    return x


def tucker_factors(
    x: torch.Tensor,
    ranks: tuple,
    modes: tuple,
    method: str = "hooi",
    n_iter_max: int = 100,
    tol: float = 1e-8,
    init=None,
):
    """Core and factors (list over all modes) of an already validated problem.

    ``init``: validated starting factors, one per entry of ``modes``, in
    ``x``'s dtype and device (HOOI then skips the HOSVD).
    """
    # A mode kept at full rank has an orthogonal factor that projects onto
    # everything, so HOOI only needs to update the truncated modes; with one
    # or none of them HOSVD is already optimal (and a warm start not needed).
    active = [m for m, r in zip(modes, ranks) if r < x.shape[m]]
    if len(active) < 2:
        init = None
    factors = [None] * x.ndim
    for k, (m, r) in enumerate(zip(modes, ranks)):
        factors[m] = init[k] if init is not None else leading_eigvecs(gram(x, m), r, x.dtype)

    if method == "hosvd" or len(active) < 2 or n_iter_max == 0:
        return project(x, factors, modes), factors

    norm2 = float(torch.linalg.vector_norm(x, dtype=torch.float64)) ** 2
    if norm2 == 0.0:
        return project(x, factors, modes), factors
    # Changes smaller than the dtype's resolution cannot be measured.
    tol = max(tol, torch.finfo(x.dtype).eps)
    prev_err = math.inf
    for _ in range(n_iter_max):
        for m in active:
            y = project(x, factors, modes, skip=m)
            factors[m] = leading_eigvecs(gram(y, m), factors[m].shape[1], x.dtype)
        # The last partial projection only misses the last active mode.
        core = mode_dot_t(y, factors[active[-1]], active[-1])
        core2 = float(torch.linalg.vector_norm(core, dtype=torch.float64)) ** 2
        err = math.sqrt(max(norm2 - core2, 0.0) / norm2)
        # HOOI never increases the error in exact arithmetic; a rise or a
        # small decrease means it has converged to rounding level.
        if prev_err - err < tol:
            break
        prev_err = err
    return core, factors


def _check_init(init, x: torch.Tensor, ranks: tuple, modes: tuple, method: str):
    """``init`` as a list of factors in ``x``'s dtype and device, or ValueError naming the mode."""
    if init is None:
        return None
    if method != "hooi":
        raise ValueError(f"init= starts HOOI; method={method!r} does not iterate (use method='hooi')")
    factors = [init.factors[m] for m in init.modes] if isinstance(init, TuckerTensor) else list(init)
    if len(factors) != len(modes):
        raise ValueError(f"init has {len(factors)} factors; modes={modes} needs one per mode")
    out = []
    for f, m, r in zip(factors, modes, ranks):
        want = (int(x.shape[m]), int(r))
        if not isinstance(f, torch.Tensor) or tuple(f.shape) != want:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"init factor of mode {m} has shape {got}: must be {want} (mode size, rank)")
        out.append(f.detach().to(device=x.device, dtype=x.dtype))
    return out


def tucker(
    tensor: torch.Tensor,
    rank,
    modes=None,
    method: str = "hooi",
    n_iter_max: int = 100,
    tol: float = 1e-8,
    random_state=None,
    init=None,
) -> TuckerTensor:
    """Tucker decomposition of a tensor, on all modes or on a subset.

    ``tensor ~= core x_{m in modes} U_m`` with ``U_m`` of shape
    ``(tensor.shape[m], r_m)`` with orthonormal columns. On a conv weight
    ``(T, S, Kh, Kw)``, ``modes=(0, 1)`` gives the Tucker-2 decomposition of
    Kim et al. (2016): the spatial modes are left whole.

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).

    Parameters
    ----------
    tensor : torch.Tensor
        Floating-point tensor, any device. float32/float64 are computed in
        their own dtype, float16/bfloat16 in float32 and cast back.
    rank : int or sequence of int
        An int is used for every decomposed mode; a sequence has one entry
        per entry of ``modes``. Each ``r_m`` must lie in ``[1, shape[m]]``.
    modes : int or sequence of int, optional
        Modes to decompose, in the order of ``rank``. None (default) means
        all modes (full Tucker). Negative values count from the end.
    method : {"hooi", "hosvd"}
        ``"hosvd"``: truncated higher-order SVD (one pass). ``"hooi"``:
        higher-order orthogonal iteration started from the HOSVD, which
        never does worse.
    n_iter_max : int
        Maximum number of HOOI sweeps (0 returns the HOSVD).
    tol : float
        HOOI stops when a sweep lowers the relative reconstruction error by
        less than ``tol`` (raised to the machine epsilon of the compute dtype,
        below which changes cannot be measured).
    random_state : None, int or numpy.random.RandomState
        Accepted for symmetry with the other decompositions; both methods
        are deterministic, so it has no effect.
    init : TuckerTensor or sequence of torch.Tensor, optional
        Starting factors for HOOI, one ``(shape[m], r_m)`` matrix with
        orthonormal columns per entry of ``modes`` (or a decomposition with
        those factors, e.g. the previous one of a slowly changing tensor).
        HOOI then starts from them instead of the HOSVD: a warm start, which
        a few sweeps bring to the fixed point the previous iterations were
        approaching. Only with ``method="hooi"``.

    Returns
    -------
    TuckerTensor
        On the input's device, in the input's dtype.

    Raises
    ------
    TypeError
        If ``tensor`` is not a floating-point torch tensor.
    ValueError
        If ``rank``, ``modes``, ``method``, ``n_iter_max`` or ``tol`` is
        invalid; the message names the mode and the range accepted.

    Notes
    -----
    Each factor is taken from the eigenvectors of the Gram matrix ``A A^T``
    of an unfolding ``A`` rather than from an SVD of ``A``: conv unfoldings
    are short and wide, so this is several times faster, in particular on
    GPUs. Forming ``A A^T`` squares the condition number, so the Gram matrix
    and its eigen-decomposition are computed in float64 whatever the input
    dtype: a float32 input then gets factors as accurate as a float32 SVD
    would give (an exactly low-rank float32 tensor is reproduced at its own
    rank to about 1e-7 relative error), at the price of one float64 product
    of the unfolding with itself.

    References
    ----------
    .. [1] L. De Lathauwer, B. De Moor, J. Vandewalle, "A multilinear singular
       value decomposition", SIAM J. Matrix Anal. Appl. 21(4):1253-1278, 2000.
    .. [2] L. De Lathauwer, B. De Moor, J. Vandewalle, "On the best rank-1 and
       rank-(R1, R2, ..., RN) approximation of higher-order tensors", SIAM J.
       Matrix Anal. Appl. 21(4):1324-1342, 2000.
    .. [3] Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang, D. Shin, "Compression
       of deep convolutional neural networks for fast and low power mobile
       applications", ICLR 2016.
    .. [4] T. G. Kolda, B. W. Bader, "Tensor decompositions and applications",
       SIAM Review 51(3):455-500, 2009.

    Examples
    --------
    >>> w = torch.randn(64, 32, 3, 3)
    >>> tk = tucker(w, rank=(32, 16), modes=(0, 1))
    >>> tk.rank, tk.core.shape
    ((32, 16), torch.Size([32, 16, 3, 3]))
    """
    check_tensor(tensor)
    modes = validate_modes(modes, tensor.ndim)
    ranks = validate_tucker_rank(rank, tensor.shape, modes)
    validate_method(method, ("hooi", "hosvd"))
    n_iter_max = validate_n_iter_max(n_iter_max)
    tol = validate_tol(tol)

    with torch.no_grad():
        x = tensor.detach().to(compute_dtype(tensor.dtype))
        start = _check_init(init, x, ranks, modes, method)
        core, factors = tucker_factors(x, ranks, modes, method, n_iter_max, tol, start)
        dtype = tensor.dtype
        core = core.to(dtype).contiguous()
        factors = [f.to(dtype).contiguous() if f is not None else None for f in factors]
    return TuckerTensor(core=core, factors=factors, modes=modes)

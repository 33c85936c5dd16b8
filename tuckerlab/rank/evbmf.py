"""Empirical variational Bayesian matrix factorisation (EVBMF).

The global analytic solution of fully observed EVBMF (Nakajima et al., 2013)
gives, for a noisy matrix ``Y = B A^T + E`` with i.i.d. Gaussian noise of
variance ``sigma2``, the Bayes-optimal rank and the shrunk singular values in
closed form. With ``sigma2`` unknown, it is found by a one-dimensional
minimisation of the EVB free energy. Kim et al. (2016) use the EVBMF rank of
the unfoldings of a convolution kernel as its Tucker ranks.

Notation (``L <= M``; a taller matrix is transposed internally):

- ``alpha = L / M``; ``gamma_h`` the singular values of ``Y``, descending;
- ``x_h = gamma_h**2 / (M * sigma2)``;
- ``tau_(alpha)`` the unique zero of ``Phi(t) + Phi(t / alpha)`` with
  ``Phi(z) = log(1 + z) / z - 1/2``. At ``alpha = 1`` it is ``2.5129``;
  ``2.5129 * sqrt(alpha)`` is a close approximation elsewhere (the EVB
  threshold it gives is within 1.1 % of the exact one), but only the exact
  root makes the free energy below continuous, so the exact root is used;
- ``x_ = (1 + tau_) (1 + alpha / tau_)``; the EVB threshold is
  ``gamma_EVB = sqrt(M sigma2 x_)`` and the rank is ``#{h : gamma_h > gamma_EVB}``;
- the estimator of each retained component is
  ``d_h = gamma_h / 2 (1 - (L + M) sigma2 / gamma_h**2
  + sqrt((1 - (L + M) sigma2 / gamma_h**2)**2 - 4 L M sigma2**2 / gamma_h**4))``,
  which equals ``M sigma2 tau(x_h) / gamma_h`` with
  ``tau(x) = (x - 1 - alpha + sqrt((x - 1 - alpha)**2 - 4 alpha)) / 2``;
- the EVB free energy as a function of ``sigma2`` is, up to constants and the
  factor ``1 / L``,
  ``L log sigma2 + ||Y||_F**2 / (M sigma2) + sum_{h <= H, x_h > x_} psi1(x_h)``
  with ``psi1(x) = log(tau(x) + 1) + alpha log(tau(x) / alpha + 1) - tau(x)``;
  it is minimised between ``max(gamma_{Hb+1}**2 / (M x_),
  sum_{h > Hb} gamma_h**2 / (M (L - Hb)))`` and ``||Y||_F**2 / (L M)``, where
  ``Hb = min(ceil(L / (1 + alpha)) - 1, H)``.

References
----------
S. Nakajima, M. Sugiyama, S. D. Babacan and R. Tomioka, "Global analytic
solution of fully-observed variational Bayesian matrix factorization",
Journal of Machine Learning Research 14:1-37, 2013.

S. Nakajima, R. Tomioka, M. Sugiyama and S. D. Babacan, "Condition for
perfect dimensionality recovery by variational Bayesian PCA", Journal of
Machine Learning Research 16:3757-3811, 2015.

Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang and D. Shin, "Compression of
deep convolutional neural networks for fast and low power mobile
applications", ICLR 2016.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

__all__ = ["EVBMFResult", "evbmf", "evb_tau", "evb_threshold"]

# Number of log-spaced points scanned before the bounded Brent refinement.
_GRID = 64


@dataclass(frozen=True)
class EVBMFResult:
    """Outcome of :func:`evbmf`.

    Attributes
    ----------
    rank : int
        Number of singular values above the EVB threshold (capped by
        ``max_rank``).
    sigma2 : float
        Noise variance, the given one or the EVB estimate.
    threshold : float
        EVB threshold on the singular values, ``sqrt(M sigma2 x_)``.
    singular_values : torch.Tensor
        All singular values of the input, descending, on its device.
    shrunk_singular_values : torch.Tensor
        ``d_h`` for ``h < rank``, the EVB estimates of the retained
        singular values (each below the corresponding ``singular_values``).
    sigma2_bounds : tuple of float or None
        The interval searched for ``sigma2``; ``None`` when it was given.
    tau : float
        ``tau_(alpha)``, the root defining the threshold.
    U, V : torch.Tensor or None
        With ``factors=True``, the leading ``rank`` left ``(L, rank)`` and
        right ``(M, rank)`` singular vectors in the input's orientation, so
        that ``U @ diag(d) @ V.T`` is the EVB estimate of the matrix.
    """

    rank: int
    sigma2: float
    threshold: float
    singular_values: torch.Tensor
    shrunk_singular_values: torch.Tensor
    sigma2_bounds: tuple[float, float] | None
    tau: float
    U: torch.Tensor | None = None
    V: torch.Tensor | None = None

    def reconstruct(self) -> torch.Tensor:
        """EVB estimate ``U diag(d) V^T`` (needs ``factors=True``).

        Returns
        -------
        torch.Tensor
            The denoised, rank-``rank`` matrix in the input's shape.
        """
        if self.U is None or self.V is None:
            raise ValueError("reconstruct() needs the factors: call evbmf(..., factors=True)")
        return (self.U * self.shrunk_singular_values.to(self.U.dtype)) @ self.V.T


@lru_cache(maxsize=256)
def evb_tau(alpha: float) -> float:
    """``tau_(alpha)``: the zero of ``Phi(t) + Phi(t / alpha)``.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    alpha : float
        Aspect ratio ``L / M`` in ``(0, 1]``.

    Returns
    -------
    float
        The root; ``2.5129`` at ``alpha = 1`` (Nakajima et al., 2015).
    """
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")

    def phi(z: float) -> float:
        return math.log1p(z) / z - 0.5

    # Phi decreases from 1/2 (z -> 0) to -1/2 (z -> inf), so the sum changes
    # sign exactly once.
    return brentq(lambda t: phi(t) + phi(t / alpha), 1e-12, 1e12, xtol=1e-14, rtol=1e-14, maxiter=500)


def _x_lower(alpha: float) -> float:
    t = evb_tau(alpha)
    return (1.0 + t) * (1.0 + alpha / t)


def evb_threshold(shape: tuple[int, int], sigma2: float) -> float:
    """EVB threshold on the singular values for a given noise variance.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    shape : tuple of int
        ``(rows, cols)`` of the matrix, either orientation.
    sigma2 : float
        Noise variance.

    Returns
    -------
    float
        ``sqrt(M sigma2 (1 + tau_) (1 + alpha / tau_))`` with ``M`` the larger
        side and ``alpha`` the aspect ratio.
    """
    L, M = sorted(int(n) for n in shape)
    return math.sqrt(M * float(sigma2) * _x_lower(L / M))


def _tau_of_x(x: np.ndarray, alpha: float) -> np.ndarray:
    b = x - 1.0 - alpha
    return 0.5 * (b + np.sqrt(np.maximum(b * b - 4.0 * alpha, 0.0)))


def _x_minus_tau(x: np.ndarray, alpha: float) -> np.ndarray:
    """``x - tau(x)`` without cancellation for large ``x``.

    ``x - tau = ((x + 1 + alpha) - sqrt((x - 1 - alpha)^2 - 4 alpha)) / 2`` and
    the product of that bracket with its conjugate is ``4 (x (1 + alpha) + alpha)``.
    """
    b = x - 1.0 - alpha
    root = np.sqrt(np.maximum(b * b - 4.0 * alpha, 0.0))
    return 2.0 * (x * (1.0 + alpha) + alpha) / ((x + 1.0 + alpha) + root)


def _free_energy(sigma2: float, g2: np.ndarray, L: int, M: int, H: int, x_low: float) -> float:
    """EVB free energy (up to constants, times ``L``) as a function of sigma2.

    ``L log sigma2 + sum_h x_h + sum_{h <= H, x_h > x_} psi1(x_h)``, arranged
    so that the large terms ``x_h`` and ``-tau(x_h)`` of the retained
    components cancel analytically rather than in floating point.
    """
    alpha = L / M
    x = g2 / (M * sigma2)
    signal = np.zeros(x.shape, dtype=bool)
    signal[:H] = x[:H] > x_low
    value = L * math.log(sigma2) + float(np.sum(x[~signal]))
    if signal.any():
        xs = x[signal]
        tau = _tau_of_x(xs, alpha)
        value += float(np.sum(_x_minus_tau(xs, alpha) + np.log1p(tau) + alpha * np.log1p(tau / alpha)))
    return value


def _sigma2_bounds(g2: np.ndarray, L: int, M: int, H: int, x_low: float) -> tuple[float, float]:
    alpha = L / M
    upper = float(np.sum(g2)) / (L * M)
    hb = min(math.ceil(L / (1.0 + alpha)) - 1, H)  # < L always
    lower = max(float(g2[hb]) / (M * x_low), float(np.sum(g2[hb:])) / (M * (L - hb)))
    return lower, upper


def _estimate_sigma2(g2: np.ndarray, L: int, M: int, H: int) -> tuple[float, tuple[float, float]]:
    x_low = _x_lower(L / M)
    lower, upper = _sigma2_bounds(g2, L, M, H, x_low)
    if upper <= 0.0:
        return 0.0, (0.0, 0.0)
    # An exactly low-rank matrix has lower bound 0 and the minimum there;
    # keep the search on a positive interval.
    lower = max(lower, upper * 1e-12)
    if lower >= upper * (1.0 - 1e-12):
        return upper, (lower, upper)

    def f(log_s2: float) -> float:
        return _free_energy(math.exp(log_s2), g2, L, M, H, x_low)

    # The free energy can have several local minima: scan a log grid, then
    # refine the best cell with bounded Brent.
    a, b = math.log(lower), math.log(upper)
    grid = np.linspace(a, b, _GRID)
    values = np.array([f(t) for t in grid])
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, _GRID - 1)]
    res = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    best = float(res.x) if res.fun <= values[i] else float(grid[i])
    return math.exp(best), (lower, upper)


def _check_matrix(matrix, name: str = "matrix") -> torch.Tensor:
    if not isinstance(matrix, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(matrix).__name__}")
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got a tensor of shape {tuple(matrix.shape)}")
    if matrix.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(matrix.shape)}")
    if matrix.is_complex():
        raise TypeError(f"{name} must be real, got dtype {matrix.dtype}")
    if not matrix.is_floating_point() or matrix.dtype in (torch.float16, torch.bfloat16):
        matrix = matrix.to(torch.float32)
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} contains NaN or infinite values (shape {tuple(matrix.shape)})")
    return matrix


def _evbmf_scalars(
    s: np.ndarray, norm2: float, shape: tuple[int, int], sigma2: float | None, max_rank: int | None
) -> tuple[int, float, float, np.ndarray, tuple[float, float] | None, float]:
    """EVBMF from singular values alone.

    Returns ``(rank, sigma2, threshold, d, bounds, tau)`` with ``d`` the shrunk
    values of the retained components. ``s`` are float64, descending.
    """
    L, M = sorted(int(n) for n in shape)
    alpha = L / M
    H = L if max_rank is None else max(0, min(int(max_rank), L))
    g2 = np.zeros(L)
    g2[: min(L, s.size)] = (s[:L].astype(np.float64)) ** 2
    bounds = None
    if sigma2 is None:
        sigma2, bounds = _estimate_sigma2(g2, L, M, H)
    tau = evb_tau(alpha)
    threshold = math.sqrt(M * sigma2 * _x_lower(alpha))
    rank = int(np.sum(np.sqrt(g2[:H]) > threshold)) if norm2 > 0 else 0
    g = np.sqrt(g2[:rank])
    if rank and sigma2 > 0:
        q = 1.0 - (L + M) * sigma2 / g**2
        disc = np.maximum(q**2 - 4.0 * L * M * sigma2**2 / g**4, 0.0)
        d = 0.5 * g * (q + np.sqrt(disc))
    else:
        d = g.copy()
    return rank, float(sigma2), threshold, d, bounds, tau


def evbmf(
    matrix: torch.Tensor, sigma2: float | None = None, max_rank: int | None = None, factors: bool = False
) -> EVBMFResult:
    """Global analytic EVBMF of a matrix: rank, noise variance, shrinkage.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    matrix : torch.Tensor
        A 2-D real tensor of any shape ``(rows, cols)``, on any device. The
        SVD runs on the tensor's device (integer and half precision inputs in
        float32); the scalar optimisation for ``sigma2`` runs on the host in
        float64.
    sigma2 : float, optional
        Noise variance. ``None`` estimates it by minimising the EVB free
        energy between the bounds of Nakajima et al. (2015): a 64-point
        log-spaced scan, then bounded Brent (``scipy.optimize.minimize_scalar``)
        around the best point.
    max_rank : int, optional
        Largest rank ``H`` of the factorisation; default ``min(rows, cols)``.
    factors : bool
        Also return the leading singular vectors (``U``, ``V``).

    Returns
    -------
    EVBMFResult
        ``rank``, ``sigma2``, ``threshold``, ``singular_values``,
        ``shrunk_singular_values`` and, with ``factors=True``, ``U`` and ``V``.
        A zero matrix gives rank 0 and ``sigma2 = 0``.

    Raises
    ------
    TypeError
        If ``matrix`` is not a real torch tensor.
    ValueError
        If ``matrix`` is not 2-D, is empty or holds non-finite values, or if
        ``sigma2`` is negative or ``max_rank`` is below 0.

    References
    ----------
    S. Nakajima, M. Sugiyama, S. D. Babacan and R. Tomioka, "Global analytic
    solution of fully-observed variational Bayesian matrix factorization",
    JMLR 14:1-37, 2013.

    Examples
    --------
    >>> import torch
    >>> from tuckerlab.rank import evbmf
    >>> g = torch.Generator().manual_seed(0)
    >>> signal = torch.randn(60, 3, generator=g) @ torch.randn(3, 80, generator=g)
    >>> evbmf(signal + 0.1 * torch.randn(60, 80, generator=g)).rank
    3
    """
    Y = _check_matrix(matrix)
    if sigma2 is not None:
        sigma2 = float(sigma2)
        if not (math.isfinite(sigma2) and sigma2 >= 0):
            raise ValueError(f"sigma2 must be a finite number >= 0, got {sigma2}")
    if max_rank is not None and int(max_rank) < 0:
        raise ValueError(f"max_rank must be >= 0, got {max_rank}")
    if factors:
        U, s, Vh = torch.linalg.svd(Y, full_matrices=False)
    else:
        s = torch.linalg.svdvals(Y)
    norm2 = float(torch.sum(Y.double() ** 2))
    rank, sigma2, threshold, d, bounds, tau = _evbmf_scalars(
        s.detach().double().cpu().numpy(), norm2, tuple(Y.shape), sigma2, max_rank
    )
    out_U = out_V = None
    if factors:
        out_U, out_V = U[:, :rank], Vh[:rank].T
    return EVBMFResult(
        rank=rank,
        sigma2=sigma2,
        threshold=threshold,
        singular_values=s,
        shrunk_singular_values=torch.as_tensor(d, dtype=s.dtype, device=s.device),
        sigma2_bounds=bounds,
        tau=tau,
        U=out_U,
        V=out_V,
    )

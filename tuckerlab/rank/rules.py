"""Rank rules: a weight in, the ranks of its factorized layer out.

Three ways to read ranks off a weight, each also available as a *rank rule*
``rule(name, module, format_name) -> rank`` for
:func:`tuckerlab.surgery.compress_model`:

- :func:`evbmf_rank` / :func:`evbmf_rule`: the EVBMF rank of unfoldings of
  the weight (Kim et al., 2016), optionally *weakened* towards full rank;
- :func:`energy_rank` / :func:`energy_rule`: the smallest ranks keeping a
  fraction of the squared singular values (the "energy") of each unfolding;
- :func:`fixed_ratio`: a fixed fraction of every dimension ("half ranks").

Ranks are written as the formats of :mod:`tuckerlab.formats` write them
(``(r_out, r_in)`` for ``"tucker2"``, ...). In the rules' ``method``
argument, ``"tucker"`` is still read as Tucker-2 (with a deprecation
warning): write ``"tucker2"``.

Which unfoldings
----------------
Each format reads its ranks off its own matrices
(:meth:`tuckerlab.formats.Format.rule_rank`). Tucker-2 ranks come from the mode-0 ``(T, S Kh Kw)`` and mode-1
``(S, T Kh Kw)`` unfoldings. TT ranks come from the *sequential* unfoldings
of TT-SVD (Oseledets, 2011): ``r1`` from the ``(S, Kh Kw T)`` unfolding, then
the retained part ``diag(s) V^T`` (``r1`` rows) is reshaped to
``(r1 Kh, Kw T)`` for ``r2``, and to ``(r2 Kw, T)`` for ``r3``. These are the
matrices whose truncation TT-SVD actually performs, so each rank is read off
the matrix it will truncate. TT-Tucker ranks: ``(r_out, r_in)`` as for
Tucker-2, then the TT ranks of the core ``W x_0 U_out^T x_1 U_in^T`` (``U``
the leading singular vectors of the unfoldings) permuted to
``(r_in, Kh, Kw, r_out)``. With EVBMF, the noise variance is estimated on
the first TT unfolding (for TT-Tucker: the mean of the estimates of the two
channel unfoldings) and reused for the later matrices: they are orthogonal
projections of the weight, so they carry noise of the same variance, but are
too small to estimate it again. TT ranks are finally lowered where needed to
be reachable (``r_k <= n_k r_(k+1)``), as TT-SVD requires. CP has no
unfolding of its own; the rules use ``max(r_out, r_in)`` of the Tucker-2
ranks (weakening acts on those), and :func:`fixed_ratio` scales
``max(T, S)``. A linear weight (or a conv weight with ``method="lowrank"``)
uses the ``(T, S Kh Kw)`` matrix.

Every rank is clipped to ``[min_rank, full]`` where ``full`` is the size of
the smaller side of the matrix it is read from (``min_rank`` never pushes a
rank above ``full``).

References
----------
Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang and D. Shin, "Compression of
deep convolutional neural networks for fast and low power mobile
applications", ICLR 2016.

S. Nakajima, M. Sugiyama, S. D. Babacan and R. Tomioka, "Global analytic
solution of fully-observed variational Bayesian matrix factorization",
JMLR 14:1-37, 2013.

J. Gusak, M. Kholiavchenko, E. Ponomarev, L. Markeeva, P. Blagoveschensky,
A. Cichocki and I. Oseledets, "Automated multi-stage compression of neural
networks", ICCV Workshops 2019 (weakened EVBMF ranks).

I. V. Oseledets, "Tensor-train decomposition", SIAM J. Sci. Comput.
33(5):2295-2317, 2011.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from tuckerlab.formats import Format, get_format

from .evbmf import _evbmf_scalars

__all__ = [
    "METHODS",
    "canonical_method",
    "rank_format",
    "evbmf_rank",
    "evbmf_rule",
    "energy_rank",
    "energy_rule",
    "fixed_ratio",
    "fixed_ratio_rank",
]

#: Formats with rank rules, by name (the old spellings are accepted with a warning by :func:`canonical_method`).
METHODS = ("tucker2", "tt", "tt_tucker", "cp", "lowrank")

RankRule = Callable[[str, nn.Module, str], object]


def rank_format(method) -> Format:
    """The format a rank rule is asked for.

    ``"tucker"`` meant Tucker-2 in the rank rules of earlier versions; it is
    still read so, with a ``DeprecationWarning`` (``"tucker"`` is full Tucker
    everywhere else). Other old spellings (``"svd"``, ``"tensor_train"``,
    ...) are accepted with a warning too.
    """
    if isinstance(method, Format):
        return method
    if isinstance(method, str) and method.lower() == "tucker":
        warnings.warn("method 'tucker' in rank rules means Tucker-2: write 'tucker2'", DeprecationWarning,
                      stacklevel=3)
        return get_format("tucker2")
    fmt = get_format(method.lower() if isinstance(method, str) else method, old_spellings=True)
    if fmt.name not in METHODS:
        raise ValueError(f"method={method!r}: rank rules know {', '.join(map(repr, METHODS))}")
    return fmt


def canonical_method(method: str) -> str:
    """The format name of a decomposition method, old spellings accepted (see :func:`rank_format`).

    Returns
    -------
    str
        One of ``"tucker2"``, ``"tt"``, ``"tt_tucker"``, ``"cp"``, ``"lowrank"``.
    """
    return rank_format(method).name


# --------------------------------------------------------------------- checks
def _check_weight(weight, fmt: Format) -> torch.Tensor:
    if isinstance(weight, nn.Parameter):
        weight = weight.detach()
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    weight = weight.detach()
    if fmt.kind == "linear":
        if weight.ndim not in (2, 4):
            raise ValueError(
                f"weight must be a 2-D linear or 4-D conv weight for method 'lowrank', got shape {tuple(weight.shape)}"
            )
    elif weight.ndim == 2:
        pass  # a linear weight: an int rank whatever the method
    elif weight.ndim != 4:
        raise ValueError(
            f"weight must be a 4-D conv weight (T, S, Kh, Kw) or a 2-D linear weight (out, in), "
            f"got shape {tuple(weight.shape)}"
        )
    if weight.numel() == 0:
        raise ValueError(f"weight must not be empty, got shape {tuple(weight.shape)}")
    if not weight.is_floating_point() or weight.dtype in (torch.float16, torch.bfloat16):
        weight = weight.float()
    return weight


def _check_fraction(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not (0.0 < v <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


def _check_min_rank(min_rank) -> int:
    if isinstance(min_rank, bool) or not isinstance(min_rank, (int, np.integer)) or min_rank < 1:
        raise ValueError(f"min_rank must be an integer >= 1, got {min_rank!r}")
    return int(min_rank)


# ------------------------------------------------------- spectral selectors
class _EVBMFSelector:
    """The EVBMF rank of a matrix, weakened towards full rank (a spectral selector, see ``formats._spectra``)."""

    def __init__(self, weakening: float, sigma2: float | None = None) -> None:
        self.weakening = weakening
        self.sigma2 = sigma2
        self.last_noise: float | None = None

    def with_noise(self, sigma2: float | None) -> "_EVBMFSelector":
        """The same selector with the noise variance given (not estimated)."""
        return _EVBMFSelector(self.weakening, sigma2)

    def __call__(self, s, shape, norm2):
        rank, sigma2 = _evbmf_scalars(s, norm2, shape, self.sigma2, None)[:2]
        self.last_noise = sigma2
        full = min(shape)
        # weakening w: r = full - w (full - r_EVBMF); w = 1 is plain EVBMF.
        return int(round(full - self.weakening * (full - rank)))


class _EnergySelector:
    """The smallest rank keeping a fraction of the squared singular values."""

    def __init__(self, energy: float) -> None:
        self.energy = energy

    def __call__(self, s, shape, norm2):
        e = np.cumsum(s.astype(np.float64) ** 2)
        if e.size == 0 or e[-1] <= 0:
            return 0
        # smallest r with sum_{h<=r} s_h^2 >= energy * sum_h s_h^2 (tiny slack
        # so that energy=1 gives the numerical rank, not a rounding artefact)
        return int(np.searchsorted(e, self.energy * e[-1] * (1 - 1e-12)) + 1)


def _ranks(weight, method, select, min_rank: int, ratio: float | None = None):
    fmt = rank_format(method)
    w = _check_weight(weight, fmt)
    if w.ndim == 2:
        fmt = get_format("lowrank")
    if ratio is not None:
        return fmt.ratio_rank(tuple(w.shape), ratio, min_rank)
    return fmt.rule_rank(w, select, min_rank)


# ----------------------------------------------------------------- EVBMF ranks
def evbmf_rank(weight, method: str = "tucker2", weakening: float = 1.0, min_rank: int = 1):
    """Ranks of a layer from EVBMF of the unfoldings of its weight.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    weight : torch.Tensor
        A conv weight ``(T, S, Kh, Kw)`` or a linear weight ``(out, in)``, on
        any device.
    method : str or Format
        ``"tucker2"``, ``"tt"``, ``"tt_tucker"``, ``"cp"`` or ``"lowrank"``
        (see the module docstring for the unfoldings used).
    weakening : float
        ``w`` in ``[0, 1]``: each rank becomes ``round(full - w (full -
        r_EVBMF))``, so ``w = 1`` is the EVBMF rank and ``w = 0`` full rank.
        EVBMF ranks of trained layers are often too aggressive to fine-tune
        from; weakening (Gusak et al., 2019) moves them towards full rank.
    min_rank : int
        Lower bound for every rank (a weight that EVBMF finds
        indistinguishable from noise has EVBMF rank 0).

    Returns
    -------
    tuple or int
        The rank in the format of ``method`` (see the module docstring).

    References
    ----------
    Kim et al., ICLR 2016; Nakajima et al., JMLR 2013; Gusak et al., ICCVW
    2019.

    Examples
    --------
    >>> import torch
    >>> from tuckerlab.rank import evbmf_rank
    >>> g = torch.Generator().manual_seed(0)
    >>> w = torch.einsum("ta,sb,abhw->tshw", torch.randn(32, 4, generator=g),
    ...                  torch.randn(16, 3, generator=g), torch.randn(4, 3, 3, 3, generator=g))
    >>> evbmf_rank(w + 1e-3 * torch.randn(w.shape, generator=g))
    (4, 3)
    """
    try:
        w_ = float(weakening)
    except (TypeError, ValueError):
        raise ValueError(f"weakening must be a number in [0, 1], got {weakening!r}") from None
    if not 0.0 <= w_ <= 1.0:
        raise ValueError(f"weakening must be in [0, 1], got {weakening!r}")
    return _ranks(weight, method, _EVBMFSelector(w_), _check_min_rank(min_rank))


def energy_rank(weight, method: str = "tucker2", energy: float = 0.9, min_rank: int = 1):
    """Smallest ranks keeping a fraction of the energy of each unfolding.

    For every unfolding (the same ones as :func:`evbmf_rank`) the rank is the
    smallest ``r`` with ``sum_{h <= r} s_h^2 >= energy * sum_h s_h^2``.

    Parameters
    ----------
    weight : torch.Tensor
        A conv weight ``(T, S, Kh, Kw)`` or a linear weight ``(out, in)``.
    method : str or Format
        ``"tucker2"``, ``"tt"``, ``"tt_tucker"``, ``"cp"`` or ``"lowrank"``.
    energy : float
        Retained fraction of the squared Frobenius norm, in ``(0, 1]``.
    min_rank : int
        Lower bound for every rank.

    Returns
    -------
    tuple or int
        The rank in the format of ``method``.

    Raises
    ------
    ValueError
        If ``energy`` is outside ``(0, 1]``.
    """
    return _ranks(weight, method, _EnergySelector(_check_fraction(energy, "energy")), _check_min_rank(min_rank))


def fixed_ratio_rank(weight, method: str = "tucker2", ratio: float = 0.5, min_rank: int = 1):
    """Ranks that are a fixed fraction of each dimension.

    Every rank is ``max(min_rank, round(ratio * full))`` with ``full`` the
    largest rank possible at that position: ``T`` and ``S`` for Tucker-2;
    for TT the largest rank of each bond of ``(S, Kh, Kw, T)``,
    ``(min(S, Kh Kw T), min(S Kh, Kw T), min(S Kh Kw, T))``, then lowered
    where needed to stay reachable (``r_k <= n_k r_(k+1)``,
    ``r_(k+1) <= r_k n_k``); for TT-Tucker the Tucker-2 ranks, then the same
    on the ``(r_in, Kh, Kw, r_out)`` core; ``max(T, S)`` for CP and
    ``min(out, in)`` for a linear weight.

    Parameters
    ----------
    weight : torch.Tensor
        A conv or linear weight (only its shape is used).
    method : str or Format
        ``"tucker2"``, ``"tt"``, ``"tt_tucker"``, ``"cp"`` or ``"lowrank"``.
    ratio : float
        Fraction in ``(0, 1]``.
    min_rank : int
        Lower bound for every rank.

    Returns
    -------
    tuple or int
        The rank in the format of ``method``.
    """
    ratio = _check_fraction(ratio, "ratio")
    return _ranks(weight, method, None, _check_min_rank(min_rank), ratio=ratio)


# ----------------------------------------------------------------------- rules
def _module_weight(module: nn.Module):
    """The weight of a module a rule can rank, or ``None`` (skip)."""
    if isinstance(module, nn.Conv2d):
        return None if module.groups != 1 else module.weight
    if isinstance(module, nn.Linear):
        return module.weight
    return None


def _make_rule(fn: Callable, description: str, **kw) -> RankRule:
    def rule(name: str, module: nn.Module, method: str):
        weight = _module_weight(module)
        if weight is None:
            return None
        return fn(weight, method, **kw)

    rule.__name__ = rule.__qualname__ = description.split("(")[0]
    rule.__doc__ = f"Rank rule {description}: ``rule(name, module, method) -> rank``."
    rule.description = description
    return rule


def evbmf_rule(weakening: float = 1.0, min_rank: int = 1) -> RankRule:
    """Rank rule giving :func:`evbmf_rank` of each layer.

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).

    Parameters
    ----------
    weakening : float
        See :func:`evbmf_rank`.
    min_rank : int
        See :func:`evbmf_rank`.

    Returns
    -------
    callable
        ``rule(name, module, method)`` returning the rank of an
        ``nn.Conv2d`` (``groups=1``) or ``nn.Linear``, ``None`` (skip) for
        any other module. Usable as ``compress_model(model, method,
        rank=evbmf_rule())``.
    """
    evbmf_rank(torch.ones(1, 1), "lowrank", weakening=weakening, min_rank=min_rank)  # validate now
    return _make_rule(evbmf_rank, f"evbmf_rule(weakening={weakening}, min_rank={min_rank})",
                      weakening=weakening, min_rank=min_rank)


def energy_rule(energy: float = 0.9, min_rank: int = 1) -> RankRule:
    """Rank rule giving :func:`energy_rank` of each layer (``energy`` in ``(0, 1]``, checked now).

    Returns ``rule(name, module, format_name)``, None for modules it cannot rank.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).
    """
    energy = _check_fraction(energy, "energy")
    _check_min_rank(min_rank)
    return _make_rule(energy_rank, f"energy_rule(energy={energy}, min_rank={min_rank})",
                      energy=energy, min_rank=min_rank)


def fixed_ratio(ratio: float, min_rank: int = 1) -> RankRule:
    """Rank rule keeping a fixed fraction of every dimension ("half ranks"), :func:`fixed_ratio_rank` per layer.

    ``ratio`` in ``(0, 1]`` is checked now; each rank is ``max(min_rank,
    round(ratio * full))``. Returns ``rule(name, module, format_name)``, None
    for modules it cannot rank.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Examples
    --------
    >>> from torch import nn
    >>> from tuckerlab.rank import fixed_ratio
    >>> fixed_ratio(0.5)("conv", nn.Conv2d(16, 32, 3), "tucker2")
    (16, 8)
    """
    ratio = _check_fraction(ratio, "ratio")
    _check_min_rank(min_rank)
    return _make_rule(fixed_ratio_rank, f"fixed_ratio(ratio={ratio}, min_rank={min_rank})",
                      ratio=ratio, min_rank=min_rank)


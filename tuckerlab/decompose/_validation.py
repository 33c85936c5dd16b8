"""Argument checks shared by every decomposition.

Every check lives here so that all decompositions reject the same inputs with
the same messages: each message names the argument, the mode or bond it
concerns, the value given and the range accepted. Nothing is clipped.
"""
from __future__ import annotations

import math
import operator
from numbers import Real
from typing import Iterable, Sequence

import torch

__all__ = [
    "check_tensor",
    "compute_dtype",
    "validate_modes",
    "validate_tucker_rank",
    "validate_tt_rank",
    "validate_eps",
    "validate_cp_rank",
    "validate_method",
    "validate_n_iter_max",
    "validate_tol",
    "max_tt_ranks",
]


def check_tensor(tensor, name: str = "tensor") -> torch.Tensor:
    """Return ``tensor`` if it is a floating-point torch tensor of order >= 1."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(tensor).__module__}."
            f"{type(tensor).__qualname__}"
        )
    if not tensor.is_floating_point():
        raise TypeError(
            f"{name} must have a real floating-point dtype "
            f"(float16, bfloat16, float32 or float64), got {tensor.dtype}"
        )
    if tensor.ndim < 1:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d tensor")
    return tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype the algorithms run in: float32/float64 as given, float32 otherwise.

    Half and bfloat16 have too little precision for eigen-decompositions and
    linear solves (and most linalg kernels do not accept them).
    """
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _checked_int(value, where: str, allowed: str) -> int:
    """``value`` as a Python int, or ValueError (bools and floats are refused).

    ``where`` is the ``name=value ...`` text that opens the message.
    """
    if isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and value.is_floating_point()
    ):
        raise ValueError(f"{where}: must be an integer in {allowed}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{where}: must be an integer in {allowed}") from None


def _plain(x):
    """0-d tensors and numpy scalars as Python numbers, so messages read plainly."""
    return x.item() if hasattr(x, "item") and getattr(x, "ndim", None) == 0 else x


def _is_sequence(x) -> bool:
    """True for lists, tuples, 1-d arrays and tensors; False for scalars and str."""
    if isinstance(x, str):
        return False
    if hasattr(x, "ndim"):  # torch tensors and numpy arrays, 0-d ones are scalars
        return x.ndim >= 1
    return isinstance(x, Iterable)


def validate_modes(modes, ndim: int, name: str = "modes") -> tuple[int, ...]:
    """Normalise ``modes`` (None = all, an int, or a sequence) to a tuple of ints.

    Negative modes count from the end as in torch. The order given is kept:
    rank entries follow it.
    """
    if modes is None:
        return tuple(range(ndim))
    allowed = f"[{-ndim}, {ndim - 1}]"
    modes = tuple(map(_plain, modes)) if _is_sequence(modes) else (_plain(modes),)
    if not modes:
        raise ValueError(f"{name}=(): must name at least one mode in {allowed}")
    out = []
    for i, m in enumerate(modes):
        m = _checked_int(m, f"{name}[{i}]={m!r}", allowed)
        if not -ndim <= m < ndim:
            raise ValueError(
                f"{name}[{i}]={m} is out of range for a tensor with {ndim} "
                f"dimensions: must be an integer in {allowed}"
            )
        m %= ndim
        if m in out:
            raise ValueError(f"{name}[{i}]={modes[i]} repeats mode {m}: modes must be distinct")
        out.append(m)
    return tuple(out)


def validate_tucker_rank(
    rank, shape: Sequence[int], modes: tuple[int, ...], name: str = "rank"
) -> tuple[int, ...]:
    """Tucker ranks, one per entry of ``modes``, each in ``[1, shape[mode]]``."""
    if _is_sequence(rank):
        rank = tuple(map(_plain, rank))
        if len(rank) != len(modes):
            raise ValueError(
                f"{name}={rank!r} has {len(rank)} entries: must be an int or a "
                f"sequence with one entry per decomposed mode, i.e. {len(modes)} "
                f"entries for modes {modes}"
            )
        labels = [f"{name}[{i}]" for i in range(len(modes))]
    else:
        rank = (_plain(rank),) * len(modes)
        labels = [name] * len(modes)
    out = []
    for label, r, m in zip(labels, rank, modes):
        n = shape[m]
        allowed = f"[1, {n}]"
        where = f"{label}={r!r} for mode {m} of size {n}"
        r = _checked_int(r, where, allowed)
        if not 1 <= r <= n:
            raise ValueError(f"{where}: must be an integer in {allowed}")
        out.append(r)
    return tuple(out)


def max_tt_ranks(shape: Sequence[int]) -> tuple[int, ...]:
    """Largest TT ranks of a tensor of ``shape``: ``(1, ..., min(left, right), ..., 1)``."""
    d = len(shape)
    return tuple(
        min(math.prod(shape[:k]), math.prod(shape[k:])) if 0 < k < d else 1
        for k in range(d + 1)
    )


def validate_tt_rank(rank, shape: Sequence[int], name: str = "rank") -> tuple[int, ...]:
    """Full TT rank tuple ``(1, r_1, ..., r_{d-1}, 1)`` from what the user gave.

    Accepted: an int cap (every bond gets ``min(cap, largest rank there)``),
    the full tuple with ones at both ends, or the ``d - 1`` inner ranks.
    Entries of a tuple must be reachable: ``r_k`` is at most the largest rank
    of bond ``k`` and at most ``r_{k-1} n_{k-1}`` and ``n_k r_{k+1}`` (a core
    ``(r_{k-1}, n_{k-1}, r_k)`` cannot carry more).
    """
    shape = tuple(shape)
    d = len(shape)
    mx = max_tt_ranks(shape)
    if not _is_sequence(rank):
        rank = _plain(rank)
        cap = _checked_int(rank, f"{name}={rank!r}", "[1, inf) (a cap on every bond)")
        if cap < 1:
            raise ValueError(f"{name}={cap}: must be an integer in [1, inf) (a cap on every bond)")
        return tuple(min(cap, m) for m in mx)

    rank = tuple(map(_plain, rank))
    if len(rank) == d + 1:
        offset = 0
        for i in (0, d):
            r = _checked_int(rank[i], f"{name}[{i}]={rank[i]!r}", "[1, 1]")
            if r != 1:
                raise ValueError(
                    f"{name}[{i}]={r} is a boundary rank of shape {shape}: must be 1"
                )
    elif len(rank) == d - 1:
        offset = 1  # inner ranks: rank[i] belongs to bond i + 1
    else:
        raise ValueError(
            f"{name}={rank!r} has {len(rank)} entries: for a tensor of order {d} "
            f"give the full tuple (1, r_1, ..., r_{d - 1}, 1) of {d + 1} entries, "
            f"the {d - 1} inner ranks, or an int cap"
        )
    full = [1] * (d + 1)
    for k in range(1, d):
        i = k - offset
        where = f"{name}[{i}]={rank[i]!r} at bond {k} (between modes {k - 1} and {k}) of shape {shape}"
        r = _checked_int(rank[i], where, f"[1, {mx[k]}]")
        if not 1 <= r <= mx[k]:
            raise ValueError(f"{where}: must be an integer in [1, {mx[k]}]")
        full[k] = r
    for k in range(1, d):
        i = k - offset
        left = full[k - 1] * shape[k - 1]
        right = shape[k] * full[k + 1]
        hi = min(mx[k], left, right)
        if full[k] > hi:
            why = (
                f"rank at bond {k - 1} times size of mode {k - 1} = {full[k - 1]}*{shape[k - 1]}"
                if left < right
                else f"size of mode {k} times rank at bond {k + 1} = {shape[k]}*{full[k + 1]}"
            )
            raise ValueError(
                f"{name}[{i}]={full[k]} at bond {k} (between modes {k - 1} and {k}) of "
                f"shape {shape}: must be an integer in [1, {hi}] given its neighbours "
                f"(at most {why})"
            )
    return tuple(full)


def validate_eps(eps, name: str = "eps") -> float:
    """A relative error tolerance: a finite real number > 0."""
    if isinstance(eps, bool) or not isinstance(eps, (Real, torch.Tensor)):
        raise ValueError(f"{name}={eps!r}: must be a real number > 0")
    eps = float(eps)
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"{name}={eps!r}: must be a finite real number > 0")
    return eps


def validate_cp_rank(rank, shape: Sequence[int], name: str = "rank") -> int:
    """CP rank: an int in ``[1, min_k prod_{j != k} n_j]``.

    The upper bound is the classic one (Kolda & Bader 2009, sec. 3.1): any
    tensor is a sum of that many rank-one terms (one per fibre of its
    largest mode), so a larger rank is never needed.
    """
    hi = math.prod(shape) // max(shape) if min(shape) > 0 else 0
    allowed = f"[1, {hi}]"
    rank = _plain(rank)
    r = _checked_int(rank, f"{name}={rank!r} for shape {tuple(shape)}", allowed)
    if not 1 <= r <= hi:
        raise ValueError(f"{name}={r} for shape {tuple(shape)}: must be an integer in {allowed}")
    return r


def validate_method(method, allowed: Sequence[str], name: str = "method") -> str:
    if method not in allowed:
        raise ValueError(f"{name}={method!r}: must be one of {', '.join(map(repr, allowed))}")
    return method


def validate_n_iter_max(n_iter_max, name: str = "n_iter_max") -> int:
    n = _checked_int(n_iter_max, f"{name}={n_iter_max!r}", "[0, inf)")
    if n < 0:
        raise ValueError(f"{name}={n}: must be an integer in [0, inf)")
    return n


def validate_tol(tol, name: str = "tol") -> float:
    if isinstance(tol, bool) or not isinstance(tol, Real) or not (
        tol >= 0 and math.isfinite(tol)
    ):
        raise ValueError(f"{name}={tol!r}: must be a finite real number >= 0")
    return float(tol)

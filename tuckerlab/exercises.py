"""Checks students run on their own answers to the book's exercises.

Each ``check_*`` function calls the student's function on a few inputs,
compares with what the book's conventions give, and either prints one line
saying the answer passed or raises :class:`AssertionError` with a hint of what
differs (shape, values, which mode). Inputs are float64 torch tensors on the
CPU; an answer may return a torch tensor or a NumPy array.

Conventions (see the notation chapter of the book):

- modes are numbered from 0;
- the mode-``n`` unfolding of ``X`` with shape ``(I_0, ..., I_{d-1})`` is the
  ``I_n x (prod of the other sizes)`` matrix whose columns run over the other
  indices in row-major order (the last index changes fastest), as
  :func:`torch.reshape` orders them;
- ``X x_n U`` multiplies mode ``n`` by ``U`` of shape ``(J, I_n)``; the new
  mode of size ``J`` stays in position ``n``;
- TT cores have shape ``(r_{k-1}, I_k, r_k)`` with ``r_0 = r_d = 1``;
- a conv weight is ``(T, S, Kh, Kw)``; a Tucker-2 conv with ranks
  ``(r_out, r_in)`` is a 1x1 conv ``S -> r_in``, a ``Kh x Kw`` conv
  ``r_in -> r_out`` and a 1x1 conv ``r_out -> T``, without bias in the count.

Example
-------
>>> from tuckerlab.exercises import check_unfold
>>> def my_unfold(X, n):
...     return X.movedim(n, 0).reshape(X.shape[n], -1)
>>> check_unfold(my_unfold)  # doctest: +ELLIPSIS
check_unfold passed: ...
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = [
    "check_fold",
    "check_hosvd",
    "check_mode_product",
    "check_tt_svd",
    "check_tucker2_macs",
    "check_tucker2_params",
    "check_unfold",
]

_DTYPE = torch.float64


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _passed(name: str, what: str) -> None:
    print(f"{name} passed: {what}")


def _call(fn: Callable, name: str, *args: Any) -> Any:
    """Call the student's function; turn its exception into a hint with context."""
    try:
        return fn(*args)
    except Exception as err:  # the student's code may raise anything
        shown = ", ".join(_describe(a) for a in args)
        raise AssertionError(
            f"{name}: your function raised {type(err).__name__}: {err}\n"
            f"  called as fn({shown})"
        ) from err


def _describe(a: Any) -> str:
    if isinstance(a, torch.Tensor):
        return f"tensor of shape {tuple(a.shape)}"
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape}"
    return repr(a)


def _to_tensor(x: Any, what: str) -> torch.Tensor:
    """The student's result as a float64 CPU tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", _DTYPE)
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise AssertionError(
            f"{what} should be a torch tensor or a NumPy array, got {type(x).__name__}"
        ) from err


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=_DTYPE)


def _unfold(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.movedim(n, 0).reshape(x.shape[n], -1)


def _unfold_kolda_bader(x: torch.Tensor, n: int) -> torch.Tensor:
    """Unfolding with the other indices in column-major order (first fastest)."""
    y = x.movedim(n, 0)
    rest = list(range(1, y.ndim))[::-1]
    return y.permute(0, *rest).reshape(x.shape[n], -1)


def _mode_product(x: torch.Tensor, u: torch.Tensor, n: int) -> torch.Tensor:
    return torch.tensordot(u, x, dims=([1], [n])).movedim(0, n)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-8, atol: float = 1e-10) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    diff = (a - b).abs()
    idx = np.unravel_index(int(diff.argmax()), tuple(diff.shape))
    return f"largest difference {float(diff.max()):.3g} at index {tuple(int(i) for i in idx)}"


def _count(got: Any, name: str, what: str) -> int:
    """The student's count as an int: an integer, or a float with an integer value; else a failed check."""
    if not isinstance(got, (int, np.integer)) and not (isinstance(got, float) and got.is_integer()):
        raise AssertionError(f"{name}: {what} is an integer, got {got!r}")
    return int(got)


def _rel_err(x: torch.Tensor, approx: torch.Tensor) -> float:
    return float(torch.linalg.norm(x - approx) / torch.linalg.norm(x))


# ---------------------------------------------------------------------------
# unfolding, folding, n-mode product
# ---------------------------------------------------------------------------

_UNFOLD_SHAPES = ((3, 4, 5), (2, 3, 4, 5), (4, 6))


def _unfold_cases():
    """``(shape, X, n)`` for every mode ``n`` of ``X = arange(...).reshape(shape)``, each shape of :data:`_UNFOLD_SHAPES`."""
    for shape in _UNFOLD_SHAPES:
        x = torch.arange(math.prod(shape), dtype=_DTYPE).reshape(shape)
        for n in range(len(shape)):
            yield shape, x, n


def check_unfold(fn: Callable) -> None:
    """Check ``fn(X, n)``: the mode-``n`` unfolding of ``X``.

    ``fn(X, n)`` must return the matrix of shape ``(X.shape[n], X.numel() //
    X.shape[n])`` whose row ``i`` holds the entries with index ``i`` in mode
    ``n``, the other indices in row-major order (the last changes fastest).

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).
    """
    name = "check_unfold"
    count = 0
    for shape, x, n in _unfold_cases():
        got = _to_tensor(_call(fn, name, x, n), f"{name}: the result for mode {n}")
        want = _unfold(x, n)
        where = f"mode {n} of a tensor of shape {shape}"
        if got.shape != want.shape:
            hint = ""
            others = [m for m in range(len(shape)) if m != n and got.shape == _unfold(x, m).shape]
            if got.shape == want.T.shape:
                hint = " (rows and columns are swapped: mode n indexes the rows)"
            elif others:
                hint = f" (the shape of the mode-{others[0]} unfolding; modes are numbered from 0)"
            elif got.ndim != 2:
                hint = " (an unfolding is a matrix)"
            raise AssertionError(
                f"{name}: {where}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}{hint}"
            )
        if torch.equal(got, want):
            count += 1
            continue
        hint = ""
        if torch.equal(got, _unfold_kolda_bader(x, n)):
            hint = (
                "\n  your columns follow the column-major order of Kolda & Bader (the first "
                "remaining index changes fastest); this book orders them row-major, the "
                "way torch.reshape does: the last remaining index changes fastest"
            )
        raise AssertionError(
            f"{name}: {where}: the shape is right but the entries differ "
            f"({_max_diff(got, want)}); the input is torch.arange(...).reshape{shape}, "
            f"so row i must hold the entries whose mode-{n} index is i{hint}"
        )
    _passed(name, f"{count} unfoldings of tensors of order 2 to 4 match")


def check_fold(fn: Callable) -> None:
    """Check ``fn(M, n, shape)``: the inverse of the mode-``n`` unfolding.

    ``fn(_unfold(X, n), n, X.shape)`` must give back ``X``.

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).
    """
    name = "check_fold"
    count = 0
    for shape, x, n in _unfold_cases():
        got = _to_tensor(_call(fn, name, _unfold(x, n), n, tuple(shape)),
                         f"{name}: the result for mode {n}")
        where = f"folding mode {n} back to shape {shape}"
        if tuple(got.shape) != tuple(shape):
            raise AssertionError(f"{name}: {where}: got shape {tuple(got.shape)}")
        if not torch.equal(got, x):
            raise AssertionError(
                f"{name}: {where}: the shape is right but the entries differ "
                f"({_max_diff(got, x)}); fold must undo unfold exactly: move mode {n} to "
                f"the front, reshape with the other sizes in their order, then move it back"
            )
        count += 1
    _passed(name, f"fold(unfold(X, n), n, X.shape) == X for {count} (tensor, mode) pairs")


def check_mode_product(fn: Callable) -> None:
    """Check ``fn(X, U, n)``: the ``n``-mode product ``X x_n U``.

    ``U`` has shape ``(J, I_n)``; the result has the shape of ``X`` with
    ``I_n`` replaced by ``J``, in the same position.

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).
    """
    name = "check_mode_product"
    gen = _generator(1)
    cases = []
    shape = (3, 4, 5)
    for n in range(3):
        for j in (shape[n], 2, 6):  # square first (its hints are the clearest), shrinking, growing
            cases.append((shape, n, j))
    cases.append(((2, 3, 4, 5), 2, 3))
    for shape, n, j in cases:
        x = _randn(*shape, gen=gen)
        u = _randn(j, shape[n], gen=gen)
        got = _to_tensor(_call(fn, name, x, u, n), f"{name}: the result")
        want = _mode_product(x, u, n)
        where = f"X of shape {shape}, U of shape {(j, shape[n])}, mode {n}"
        if got.shape != want.shape:
            hint = ""
            moved = want.movedim(n, 0)
            if got.shape == moved.shape:
                hint = f" (the new mode of size {j} must stay in position {n}, not move to the front)"
            raise AssertionError(
                f"{name}: {where}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}{hint}"
            )
        if not _close(got, want):
            hint = ""
            if j == shape[n] and _close(got, _mode_product(x, u.T, n)):
                hint = "\n  you multiplied by U^T: X x_n U contracts mode n of X with the columns of U"
            raise AssertionError(f"{name}: {where}: values differ ({_max_diff(got, want)}){hint}")
    _passed(name, f"{len(cases)} products match (shrinking, square and growing U, every mode)")


# ---------------------------------------------------------------------------
# Tucker / HOSVD
# ---------------------------------------------------------------------------

def _split_tucker(result: Any, name: str) -> tuple[Any, list]:
    if hasattr(result, "core") and hasattr(result, "factors"):
        return result.core, list(result.factors)
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return result[0], list(result[1])
    raise AssertionError(
        f"{name}: your function should return (core, factors), factors a list of matrices; "
        f"got {type(result).__name__}"
    )


def _library_hosvd_error(x: torch.Tensor, rank: Sequence[int]) -> float | None:
    try:
        from tuckerlab.decompose import tucker  # noqa: PLC0415
    except ImportError:
        return None
    approx = tucker(x, rank=tuple(rank), method="hosvd").to_tensor()
    return _rel_err(x, approx)


def check_hosvd(fn: Callable) -> None:
    """Check ``fn(X, rank)``: the truncated higher-order SVD of ``X``.

    ``fn`` returns ``(core, factors)`` with ``factors[n]`` of shape
    ``(I_n, rank[n])``: the leading ``rank[n]`` left singular vectors of the
    mode-``n`` unfolding (orthonormal columns), and ``core`` of shape
    ``rank``, equal to ``X x_0 U_0^T x_1 U_1^T ...``. The reconstruction error
    is compared with :func:`tuckerlab.decompose.tucker` (``method="hosvd"``).

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).
    """
    name = "check_hosvd"
    gen = _generator(2)
    cases = [((6, 5, 4), (3, 3, 2)), ((4, 6, 3, 5), (2, 3, 3, 2)), ((5, 4, 3), (5, 4, 3))]
    report = []
    compared = True
    for shape, rank in cases:
        x = _randn(*shape, gen=gen)
        core, factors = _split_tucker(_call(fn, name, x, tuple(rank)), name)
        core = _to_tensor(core, f"{name}: the core")
        where = f"X of shape {shape}, rank {rank}"
        if len(factors) != len(shape):
            raise AssertionError(
                f"{name}: {where}: expected {len(shape)} factors (one per mode), got {len(factors)}"
            )
        us = []
        for n, f in enumerate(factors):
            u = _to_tensor(f, f"{name}: factor {n}")
            if tuple(u.shape) != (shape[n], rank[n]):
                hint = " (transposed?)" if tuple(u.shape) == (rank[n], shape[n]) else ""
                raise AssertionError(
                    f"{name}: {where}: factor {n} should have shape {(shape[n], rank[n])}, "
                    f"got {tuple(u.shape)}{hint}"
                )
            gram_err = float((u.T @ u - torch.eye(rank[n], dtype=_DTYPE)).abs().max())
            if gram_err > 1e-8:
                raise AssertionError(
                    f"{name}: {where}: the columns of factor {n} are not orthonormal "
                    f"(U^T U differs from the identity by up to {gram_err:.3g})"
                )
            lead = torch.linalg.svd(_unfold(x, n), full_matrices=False).U[:, : rank[n]]
            gap = float(torch.linalg.norm(u @ u.T - lead @ lead.T))
            if gap > 1e-6:
                raise AssertionError(
                    f"{name}: {where}: factor {n} does not span the leading {rank[n]} left "
                    f"singular vectors of the mode-{n} unfolding (projectors differ by {gap:.3g})"
                )
            us.append(u)
        if tuple(core.shape) != tuple(rank):
            raise AssertionError(
                f"{name}: {where}: the core should have shape {tuple(rank)}, got {tuple(core.shape)}"
            )
        want_core = x
        for n, u in enumerate(us):
            want_core = _mode_product(want_core, u.T, n)
        if not _close(core, want_core, rtol=1e-7, atol=1e-9):
            raise AssertionError(
                f"{name}: {where}: the factors are right but the core is not X multiplied by "
                f"U_n^T in every mode ({_max_diff(core, want_core)})"
            )
        approx = core
        for n, u in enumerate(us):
            approx = _mode_product(approx, u, n)
        err = _rel_err(x, approx)
        ref = _library_hosvd_error(x, rank)
        if ref is not None and abs(err - ref) > 1e-6:
            raise AssertionError(
                f"{name}: {where}: relative reconstruction error {err:.6f}, "
                f"tuckerlab.decompose.tucker(method='hosvd') gives {ref:.6f}"
            )
        report.append(f"{err:.3f}")
        compared = compared and ref is not None
    _passed(
        name,
        "orthonormal factors spanning the leading singular vectors, core = X x_n U_n^T; "
        f"relative errors {', '.join(report)}" + (" match the library" if compared else ""),
    )


# ---------------------------------------------------------------------------
# tensor train
# ---------------------------------------------------------------------------

def _tt_to_tensor(cores: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    out = cores[0].reshape(cores[0].shape[1], -1)  # (I_0, r_1)
    for g in cores[1:]:
        r = g.shape[0]
        out = (out.reshape(-1, r) @ g.reshape(r, -1)).reshape(-1, g.shape[2])
    return out.reshape(tuple(shape))


def _tt_error_bound(x: torch.Tensor, ranks: Sequence[int]) -> float:
    """Oseledets (2011), Thm 2.2: ||X - TT||^2 <= sum_k (best rank-r_k error of unfolding k)^2."""
    total = 0.0
    for k, r in enumerate(ranks, start=1):
        s = torch.linalg.svdvals(x.reshape(math.prod(x.shape[:k]), -1))
        total += float((s[r:] ** 2).sum())
    return math.sqrt(total) / float(torch.linalg.norm(x))


def _library_tt_error(x: torch.Tensor, ranks: Sequence[int]) -> float | None:
    try:
        from tuckerlab.decompose import tensor_train  # noqa: PLC0415
    except ImportError:
        return None
    return _rel_err(x, tensor_train(x, rank=tuple(ranks)).to_tensor())


def check_tt_svd(fn: Callable) -> None:
    """Check ``fn(X, ranks)``: the TT-SVD of ``X`` with inner ranks ``(r_1, ..., r_{d-1})``.

    ``fn`` returns the list of ``d`` cores, core ``k`` of shape
    ``(r_{k-1}, I_k, r_k)`` with ``r_0 = r_d = 1``. A tensor that has these
    TT ranks must be reconstructed exactly; for any other tensor the error
    must respect the TT-SVD bound of Oseledets (2011) and match
    :func:`tuckerlab.decompose.tensor_train`.

    Explained in: chapter 2, "Tensor trains and TT-Tucker"
    (notebooks/02_tensor_train.ipynb).
    """
    name = "check_tt_svd"
    gen = _generator(3)
    # 1) a tensor built from cores with the given ranks: TT-SVD is exact on it.
    exact_shape, exact_ranks = (4, 5, 6), (2, 3)
    full = (1, *exact_ranks, 1)
    cores = [_randn(full[k], exact_shape[k], full[k + 1], gen=gen) for k in range(3)]
    x_exact = _tt_to_tensor(cores, exact_shape)
    # 2) generic tensors: truncation.
    cases = [(x_exact, exact_ranks, True)]
    for shape, ranks in (((4, 5, 6, 3), (2, 3, 2)), ((3, 4, 5), (3, 4))):
        cases.append((_randn(*shape, gen=gen), ranks, False))
    errors = []
    for x, ranks, exact in cases:
        shape = tuple(x.shape)
        full = (1, *ranks, 1)
        where = f"X of shape {shape}, TT ranks {tuple(ranks)}"
        got = _call(fn, name, x, tuple(ranks))
        if hasattr(got, "factors"):
            got = got.factors
        got = list(got) if isinstance(got, (list, tuple)) else got
        if not isinstance(got, list):
            raise AssertionError(f"{name}: your function should return a list of cores, got {type(got).__name__}")
        if len(got) != len(shape):
            raise AssertionError(
                f"{name}: {where}: expected {len(shape)} cores (one per mode), got {len(got)}"
            )
        gs = []
        for k, g in enumerate(got):
            g = _to_tensor(g, f"{name}: core {k}")
            want = (full[k], shape[k], full[k + 1])
            if tuple(g.shape) != want:
                hint = ""
                if g.ndim == 2 and k in (0, len(shape) - 1):
                    hint = " (keep the boundary rank 1 as a dimension: every core is 3-way)"
                raise AssertionError(
                    f"{name}: {where}: core {k} should have shape (r_{k}, I_{k}, r_{k + 1}) = {want}, "
                    f"got {tuple(g.shape)}{hint}"
                )
            gs.append(g)
        err = _rel_err(x, _tt_to_tensor(gs, shape))
        if exact:
            if err > 1e-9:
                raise AssertionError(
                    f"{name}: {where}: this tensor has exactly these TT ranks, so TT-SVD must "
                    f"reconstruct it (relative error {err:.3g})"
                )
        else:
            bound = _tt_error_bound(x, ranks)
            if err > bound * (1 + 1e-9) + 1e-12:
                raise AssertionError(
                    f"{name}: {where}: relative error {err:.4f} exceeds the TT-SVD bound "
                    f"sqrt(sum_k delta_k^2)/||X|| = {bound:.4f}; each step must keep the leading "
                    f"singular vectors of the current unfolding"
                )
            ref = _library_tt_error(x, ranks)
            if ref is not None and abs(err - ref) > 1e-6:
                raise AssertionError(
                    f"{name}: {where}: relative error {err:.6f}, "
                    f"tuckerlab.decompose.tensor_train gives {ref:.6f}"
                )
        errors.append(f"{err:.3f}")
    _passed(
        name,
        f"core shapes right, exact on a tensor of these TT ranks, relative errors {', '.join(errors)} "
        "within the TT-SVD bound",
    )


# ---------------------------------------------------------------------------
# Tucker-2 convolution cost
# ---------------------------------------------------------------------------

_TUCKER2_LAYERS = (
    # T, S, Kh, Kw, r_out, r_in
    (64, 32, 3, 3, 16, 8),
    (16, 64, 3, 3, 4, 12),
    (10, 20, 5, 3, 7, 2),
    (128, 128, 1, 1, 32, 32),
)


def _tucker2_params(t: int, s: int, kh: int, kw: int, r_out: int, r_in: int) -> int:
    return s * r_in + kh * kw * r_in * r_out + r_out * t


def _tucker2_hint(got: Any, t: int, s: int, kh: int, kw: int, r_out: int, r_in: int, scale: int = 1) -> str:
    known = {
        t * s * kh * kw: "that is the dense convolution's count, not the factorized one",
        _tucker2_params(t, s, kh, kw, r_in, r_out): (
            "r_in and r_out are swapped: the first 1x1 conv maps S -> r_in, "
            "the last maps r_out -> T"
        ),
        _tucker2_params(t, s, kh, kw, r_out, r_in) + t: "count weights only, no bias",
        _tucker2_params(t, s, kh, kh, r_out, r_in): "the kernel is Kh x Kw, not Kh x Kh",
        s * r_in + r_out * t: "the middle Kh x Kw conv (the core) is missing",
        kh * kw * r_in * r_out: "the two 1x1 convs (the factors) are missing",
    }
    for value, hint in known.items():
        if got == value * scale:
            return f"\n  {hint}"
    return ""


def check_tucker2_params(fn: Callable) -> None:
    """Check ``fn(T, S, Kh, Kw, r_out, r_in)``: weights of a Tucker-2 conv.

    A ``Kh x Kw`` conv with weight ``(T, S, Kh, Kw)`` factorized with ranks
    ``(r_out, r_in)`` (Kim et al., 2016) is a 1x1 conv ``S -> r_in``, a
    ``Kh x Kw`` conv ``r_in -> r_out`` and a 1x1 conv ``r_out -> T``; count
    their weights (no bias).

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).
    """
    name = "check_tucker2_params"
    for layer in _TUCKER2_LAYERS:
        t, s, kh, kw, r_out, r_in = layer
        got = _call(fn, name, *layer)
        want = _tucker2_params(*layer)
        got = _count(got, name, "a parameter count")
        if got != want:
            raise AssertionError(
                f"{name}: T={t}, S={s}, Kh={kh}, Kw={kw}, r_out={r_out}, r_in={r_in}: "
                f"expected {want}, got {got}{_tucker2_hint(got, *layer)}"
            )
    _passed(name, f"{len(_TUCKER2_LAYERS)} layers, square and rectangular kernels")


def check_tucker2_macs(fn: Callable) -> None:
    """Check ``fn(T, S, Kh, Kw, r_out, r_in, H, W)``: MACs of a Tucker-2 conv per image.

    Stride 1 and "same" padding, so every one of the three convs produces an
    ``H x W`` output; a multiply-accumulate (MAC) is one weight applied at
    one output position (what papers often call a FLOP).

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).
    """
    name = "check_tucker2_macs"
    sizes = ((32, 32), (8, 16), (1, 1))
    for layer, (h, w) in zip(_TUCKER2_LAYERS, sizes * 2):
        t, s, kh, kw, r_out, r_in = layer
        got = _call(fn, name, *layer, h, w)
        want = h * w * _tucker2_params(*layer)
        got = _count(got, name, "a MAC count")
        if got != want:
            hint = _tucker2_hint(got, *layer, scale=h * w)
            if got == 2 * want:
                hint = "\n  count one multiply-accumulate as one operation, not two"
            elif got == _tucker2_params(*layer):
                hint = "\n  that is the parameter count: each weight is used at every output position"
            raise AssertionError(
                f"{name}: T={t}, S={s}, Kh={kh}, Kw={kw}, r_out={r_out}, r_in={r_in}, H={h}, W={w}: "
                f"expected {want}, got {got}{hint}"
            )
    _passed(name, f"{len(_TUCKER2_LAYERS)} layers at several output sizes")


# ---------------------------------------------------------------------------
# EVBMF threshold
# ---------------------------------------------------------------------------

# (rows, cols, sigma2): square, wide, tall, very wide; unit and non-unit noise
_EVB_CASES = ((16, 16, 0.25), (64, 576, 1.0), (300, 40, 2e-3), (10, 1000, 4.0))
_EVB_RTOL = 0.015  # tau = 2.5129 sqrt(alpha) gives the threshold within 1.1 %


def _evb_hint(got: float, rows: int, cols: int, sigma2: float) -> str:
    small, large = sorted((rows, cols))
    alpha = small / large
    from tuckerlab.rank import evb_tau

    tau = evb_tau(alpha)
    x = (1 + tau) * (1 + alpha / tau)
    known = [
        (math.sqrt(large * sigma2) * (1 + math.sqrt(alpha)),
         "that is the edge of the Marchenko-Pastur bulk, sigma (sqrt(M) + sqrt(L)), the largest "
         "singular value pure noise reaches; the EVB threshold lies above it"),
        (math.sqrt(small * sigma2 * x), "M is the LARGER side of the matrix (alpha = L / M <= 1)"),
        (large * sigma2 * x, "that is the squared threshold: take the square root"),
        (math.sqrt(large * math.sqrt(sigma2) * x), "sigma2 is the noise variance, not its square root"),
        (math.sqrt(large * sigma2 * (1 + 2.5129) * (1 + alpha / 2.5129)),
         "tau depends on the aspect ratio: tau is about 2.5129 sqrt(alpha), not 2.5129"),
        (math.sqrt(large * sigma2 * (1 + tau) * (1 + 1 / tau)), "the second factor is (1 + alpha / tau)"),
    ]
    for value, hint in known:
        if math.isclose(got, value, rel_tol=_EVB_RTOL) and not math.isclose(value, math.sqrt(large * sigma2 * x),
                                                                             rel_tol=_EVB_RTOL):
            return f"\n  {hint}"
    return ""


def check_evbmf_threshold(fn: Callable) -> None:
    """Check ``fn(shape, sigma2)``: the EVB threshold on the singular values.

    For an ``L x M`` matrix (``L <= M``; ``shape`` may be given either way
    round) with noise variance ``sigma2``, EVBMF keeps the singular values
    above ``sqrt(M sigma2 (1 + tau) (1 + alpha / tau))`` with ``alpha = L / M``
    (Nakajima et al., 2013). ``tau`` is the root of ``Phi(t) + Phi(t / alpha)
    = 0``; the approximation ``tau = 2.5129 sqrt(alpha)`` is accepted (the
    threshold must be within 1.5 % of :func:`tuckerlab.rank.evb_threshold`).

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).
    """
    from tuckerlab.rank import evb_threshold

    name = "check_evbmf_threshold"
    worst = 0.0
    for rows, cols, sigma2 in _EVB_CASES:
        got = _call(fn, name, (rows, cols), sigma2)
        try:
            got = float(got)
        except (TypeError, ValueError) as err:
            raise AssertionError(f"{name}: a threshold is one number, got {got!r}") from err
        want = evb_threshold((rows, cols), sigma2)
        rel = abs(got - want) / want if math.isfinite(got) else math.inf
        if not rel <= _EVB_RTOL:
            raise AssertionError(
                f"{name}: shape {(rows, cols)}, sigma2 = {sigma2}: expected {want:.6g} "
                f"(within {100 * _EVB_RTOL:.1f}%), got {got:.6g}{_evb_hint(got, rows, cols, sigma2)}"
            )
        worst = max(worst, rel)
    _passed(name, f"{len(_EVB_CASES)} shapes (wide and tall), largest relative difference {100 * worst:.2f}%")


__all__.append("check_evbmf_threshold")


# ---------------------------------------------------------------------------
# TT-Tucker parameter count
# ---------------------------------------------------------------------------

_TT_TUCKER_LAYERS = (
    # T, S, Kh, Kw, (r_out, r_in), (r1, r2, r3)
    (64, 64, 3, 3, (32, 24), (12, 16, 20)),
    (32, 16, 3, 3, (8, 12), (4, 6, 8)),
    (10, 20, 5, 3, (7, 5), (3, 4, 2)),
    (128, 96, 3, 3, (40, 40), (40, 40, 40)),
)


def _tt_tucker_hint(got: int, t: int, s: int, kh: int, kw: int, tucker, tt) -> str:
    (r_out, r_in), (r1, r2, r3) = tucker, tt
    chain = r_in * r1 + r1 * kh * r2 + r2 * kw * r3 + r3 * r_out
    known = {
        t * s * kh * kw: "that is the dense convolution's count, not the factorized one",
        chain: "the two Tucker factors (S x r_in and r_out x T) are missing",
        s * r_in + t * r_out + r_in * r_out * kh * kw: "that is Tucker-2: the core is itself a tensor train here",
        s * r_in + t * r_out + r_out * r1 + r1 * kh * r2 + r2 * kw * r3 + r3 * r_in: (
            "r_in and r_out are swapped in the TT chain: its first core is r_in x r1, its last r3 x r_out"),
        s * r1 + r1 * kh * r2 + r2 * kw * r3 + r3 * t: "that is the plain TT conv, without the Tucker factors",
        s * r_in + t * r_out + chain + t: "count weights only, no bias",
    }
    return f"\n  {known[got]}" if got in known else ""


def check_tt_tucker_params(fn: Callable) -> None:
    """Check ``fn(T, S, Kh, Kw, tucker_ranks, tt_ranks)``: weights of a TT-Tucker conv.

    A ``(T, S, Kh, Kw)`` weight in TT-Tucker format (the C-step of TT-LC,
    Liu et al., 2024) has Tucker factors on its channel modes, ``S x r_in``
    and ``r_out x T`` with ``tucker_ranks = (r_out, r_in)``, and a core of
    shape ``(r_in, Kh, Kw, r_out)`` stored as a tensor train with cores
    ``(1, r_in, r1)``, ``(r1, Kh, r2)``, ``(r2, Kw, r3)``, ``(r3, r_out, 1)``
    and ``tt_ranks = (r1, r2, r3)``. Count all their entries (no bias); the
    answer must agree with :meth:`tuckerlab.layers.TTTuckerConv2d.cost` (the
    cases keep every Tucker rank below its channel count: at full rank the
    layer folds the square factor into the TT core).

    Explained in: chapter 5, "TT-LC: compressing while training, without pre-training"
    (notebooks/05_tt_lc.ipynb).
    """
    from tuckerlab.layers import TTTuckerConv2d

    name = "check_tt_tucker_params"
    for t, s, kh, kw, tucker, tt in _TT_TUCKER_LAYERS:
        got = _call(fn, name, t, s, kh, kw, tucker, tt)
        want = TTTuckerConv2d.cost((t, s, kh, kw), (tucker, tt), (1, 1))[0]
        got = _count(got, name, "a parameter count")
        if got != want:
            raise AssertionError(
                f"{name}: T={t}, S={s}, Kh={kh}, Kw={kw}, (r_out, r_in)={tucker}, (r1, r2, r3)={tt}: "
                f"expected {want}, got {got}{_tt_tucker_hint(got, t, s, kh, kw, tucker, tt)}"
            )
    _passed(name, f"{len(_TT_TUCKER_LAYERS)} layers, square and rectangular kernels")


__all__.append("check_tt_tucker_params")


# ---------------------------------------------------------------------------
# One ADMM update
# ---------------------------------------------------------------------------

def check_admm_update(fn: Callable) -> None:
    """Check ``fn(W, U, project) -> (Z, U_new)``: the Z- and U-updates of ADMM.

    For the constraint "``W`` has low rank", written ``W = Z`` with ``Z`` in
    the low-rank set (Yin et al., 2021; Boyd et al., 2011, scaled form), one
    update is ``Z = project(W + U)`` and ``U_new = U + W - Z``. ``project``
    is given (here a rank-2 truncated SVD of a matrix); the answer must use
    it and must not change ``W`` or ``U`` in place.

    Explained in: chapter 6, "ADMM: training towards low tensor-train rank"
    (notebooks/06_admm_tt.ipynb).
    """
    name = "check_admm_update"
    gen = _generator(3)

    def project(m):
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return (u[:, :2] * s[:2]) @ vh[:2]

    for rows, cols in ((6, 5), (4, 9)):
        w, u = _randn(rows, cols, gen=gen), 0.1 * _randn(rows, cols, gen=gen)
        w0, u0 = w.clone(), u.clone()
        got = _call(fn, name, w, u, project)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise AssertionError(f"{name}: return the pair (Z, U_new), got {_describe(got)}")
        z, u_new = (_to_tensor(x, what) for x, what in zip(got, ("Z", "U_new")))
        for x, what in ((z, "Z"), (u_new, "U_new")):
            if x.shape != w0.shape:
                raise AssertionError(f"{name}: {what} has shape {tuple(x.shape)}, W has {tuple(w0.shape)}")
        if not (torch.equal(w, w0) and torch.equal(u, u0)):
            raise AssertionError(f"{name}: W or U was changed in place; return new tensors instead")
        want_z = project(w0 + u0)
        if not _close(z, want_z, rtol=1e-8, atol=1e-10):
            hint = ""
            if _close(z, project(w0)):
                hint = "\n  Z projects W + U, not W alone: the scaled dual U carries the accumulated residual"
            elif _close(z, w0 + u0):
                hint = "\n  Z must be projected onto the low-rank set (call project)"
            raise AssertionError(f"{name}: Z differs from project(W + U) ({_max_diff(z, want_z)}){hint}")
        want_u = u0 + w0 - want_z
        if not _close(u_new, want_u, rtol=1e-8, atol=1e-10):
            hint = ""
            if _close(u_new, u0 + want_z - w0):
                hint = "\n  the sign is reversed: U_new = U + W - Z"
            elif _close(u_new, w0 - want_z):
                hint = "\n  U accumulates the residuals: add W - Z to the old U"
            raise AssertionError(f"{name}: U_new differs from U + W - Z ({_max_diff(u_new, want_u)}){hint}")
    _passed(name, "two matrices, rank-2 projection")


__all__.append("check_admm_update")

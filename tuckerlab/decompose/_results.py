"""Containers returned by the decompositions.

Each holds its factors as plain torch tensors on the input's device and in the
input's dtype, and knows its ranks, its parameter count and how to rebuild
the dense tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._validation import compute_dtype

__all__ = ["TuckerTensor", "TTTensor", "TTTuckerTensor", "CPTensor"]


def _mode_dot(x: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """``x`` times ``matrix`` (n, r) along ``mode`` of size r: that mode becomes n."""
    return torch.tensordot(matrix, x, dims=([1], [mode])).movedim(0, mode)


def tucker_to_tensor(core: torch.Tensor, factors, modes) -> torch.Tensor:
    """Dense tensor ``core x_{m} U_m`` over ``modes`` (factors indexed by mode)."""
    out_dtype = core.dtype
    work = compute_dtype(out_dtype)
    out = core.to(work)
    # Expand the modes that grow least first, so intermediates stay small.
    order = sorted(modes, key=lambda m: factors[m].shape[0] / factors[m].shape[1])
    for m in order:
        out = _mode_dot(out, factors[m].to(work), m)
    return out.to(out_dtype).contiguous()


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + ")"


@dataclass(eq=False, repr=False)
class TuckerTensor:
    """A (partial) Tucker decomposition ``core x_{m in modes} factors[m]``.

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).

    Attributes
    ----------
    core : torch.Tensor
        Core tensor: size ``rank[i]`` along ``modes[i]``, the original size
        along every mode that is not decomposed.
    factors : list of (torch.Tensor or None)
        One entry per mode of the original tensor: for a decomposed mode ``m``
        a ``(shape[m], r_m)`` matrix with orthonormal columns, None otherwise.
    modes : tuple of int
        Decomposed modes, in the order the ranks refer to.
    """

    core: torch.Tensor
    factors: list
    modes: tuple

    @property
    def rank(self) -> tuple:
        """Ranks of the decomposed modes, in the order of ``modes``."""
        return tuple(int(self.factors[m].shape[1]) for m in self.modes)

    @property
    def shape(self) -> torch.Size:
        """Shape of the tensor that ``to_tensor`` returns."""
        return torch.Size(
            f.shape[0] if f is not None else n for f, n in zip(self.factors, self.core.shape)
        )

    @property
    def n_params(self) -> int:
        """Entries of the core plus entries of the factors of decomposed modes."""
        return self.core.numel() + sum(self.factors[m].numel() for m in self.modes)

    def to_tensor(self) -> torch.Tensor:
        """The dense tensor, on the factors' device and in their dtype."""
        return tucker_to_tensor(self.core, self.factors, self.modes)

    def __repr__(self) -> str:
        return (
            f"TuckerTensor(shape={_shape_str(self.shape)}, modes={self.modes}, "
            f"rank={self.rank}, n_params={self.n_params})"
        )


@dataclass(eq=False, repr=False)
class TTTensor:
    """A tensor train: ``T[i_0, ..., i_{d-1}] = G_0[:, i_0, :] ... G_{d-1}[:, i_{d-1}, :]``.

    Explained in: chapter 2, "Tensor trains and TT-Tucker"
    (notebooks/02_tensor_train.ipynb).

    Attributes
    ----------
    cores : list of torch.Tensor
        Core ``k`` has shape ``(r_k, n_k, r_{k+1})`` with ``r_0 = r_d = 1``.
    """

    cores: list

    @property
    def rank(self) -> tuple:
        """Full TT rank tuple ``(1, r_1, ..., r_{d-1}, 1)``."""
        return tuple(int(c.shape[0]) for c in self.cores) + (int(self.cores[-1].shape[2]),)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(int(c.shape[1]) for c in self.cores)

    @property
    def n_params(self) -> int:
        """Sum over cores of ``r_k n_k r_{k+1}``."""
        return sum(c.numel() for c in self.cores)

    def to_tensor(self) -> torch.Tensor:
        """The dense tensor, on the cores' device and in their dtype."""
        out_dtype = self.cores[0].dtype
        work = compute_dtype(out_dtype)
        out = self.cores[0].to(work).reshape(-1, self.cores[0].shape[2])
        for c in self.cores[1:]:
            r, n, r_next = c.shape
            out = (out @ c.to(work).reshape(r, n * r_next)).reshape(-1, r_next)
        return out.reshape(self.shape).to(out_dtype)

    def __repr__(self) -> str:
        return (
            f"TTTensor(shape={_shape_str(self.shape)}, rank={self.rank}, "
            f"n_params={self.n_params})"
        )


@dataclass(eq=False, repr=False)
class TTTuckerTensor:
    """A Tucker decomposition whose core is stored as a tensor train.

    Attributes
    ----------
    factors : list of (torch.Tensor or None)
        As in :class:`TuckerTensor`: ``(shape[m], r_m)`` with orthonormal
        columns for a decomposed mode ``m``, None for the others.
    tt : TTTensor
        Tensor train of the Tucker core.
    modes : tuple of int
        Decomposed modes, in the order the Tucker ranks refer to.
    """

    factors: list
    tt: TTTensor
    modes: tuple

    @property
    def rank(self) -> tuple:
        """``(tucker ranks in the order of modes, full TT rank tuple of the core)``."""
        return tuple(int(self.factors[m].shape[1]) for m in self.modes), self.tt.rank

    @property
    def shape(self) -> torch.Size:
        return torch.Size(
            f.shape[0] if f is not None else n for f, n in zip(self.factors, self.tt.shape)
        )

    @property
    def n_params(self) -> int:
        """TT cores of the core plus the factors of the decomposed modes."""
        return self.tt.n_params + sum(self.factors[m].numel() for m in self.modes)

    def to_tensor(self) -> torch.Tensor:
        """The dense tensor, on the factors' device and in their dtype."""
        return tucker_to_tensor(self.tt.to_tensor(), self.factors, self.modes)

    def __repr__(self) -> str:
        tk, tt = self.rank
        return (
            f"TTTuckerTensor(shape={_shape_str(self.shape)}, modes={self.modes}, "
            f"rank=({tk}, {tt}), n_params={self.n_params})"
        )


@dataclass(eq=False, repr=False)
class CPTensor:
    """A CP (CANDECOMP/PARAFAC) decomposition ``sum_r w_r a^0_r o ... o a^{d-1}_r``.

    Attributes
    ----------
    weights : torch.Tensor
        Shape ``(rank,)``.
    factors : list of torch.Tensor
        Factor ``k`` has shape ``(n_k, rank)`` with unit-norm columns.
    """

    weights: torch.Tensor
    factors: list

    @property
    def rank(self) -> int:
        return int(self.weights.shape[0])

    @property
    def shape(self) -> torch.Size:
        return torch.Size(int(f.shape[0]) for f in self.factors)

    @property
    def n_params(self) -> int:
        """``rank * sum(shape)``: the weights fold into any factor, so they are not counted."""
        return sum(f.numel() for f in self.factors)

    def to_tensor(self) -> torch.Tensor:
        """The dense tensor, on the factors' device and in their dtype."""
        out_dtype = self.weights.dtype
        work = compute_dtype(out_dtype)
        fs = [f.to(work) for f in self.factors]
        left = fs[0] * self.weights.to(work)
        if len(fs) == 1:
            return left.sum(1).to(out_dtype)
        # Khatri-Rao product of the other factors, row index in C order.
        right = fs[1]
        for f in fs[2:]:
            right = (right[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
        return (left @ right.T).reshape(self.shape).to(out_dtype)

    def __repr__(self) -> str:
        return (
            f"CPTensor(shape={_shape_str(self.shape)}, rank={self.rank}, "
            f"n_params={self.n_params})"
        )

"""TT-Tucker convolution: Tucker factors on the channels, tensor train on the core."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ._base import FactorizedConv2d
from .tt import (
    from_tt_layout,
    _tt_chain,
    _tt_chain_macs,
    _tt_chain_params,
    _tt_cores_from,
    _tt_cores_params,
    _tt_rank,
    _tt_to_tensor,
)
from .tucker import _tucker_rank


def _tt_tucker_rank(rank, kernel_size, channels=None) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """``((r_out, r_in), (r1, r2, r3))`` checked for a kernel and, when given, ``channels = (T, S)``.

    The Tucker part must be a pair ``(r_out, r_in)`` (or an int for both) and
    the TT part the inner ranks of the ``(r_in, Kh, Kw, r_out)`` core (or an
    int cap); a pair of two ints such as ``(8, 8)`` is ambiguous and refused.
    """
    if not (isinstance(rank, Sequence) and not isinstance(rank, str) and len(rank) == 2) or not all(
        isinstance(part, (int, Sequence)) and not isinstance(part, bool) for part in rank
    ) or all(isinstance(part, int) for part in rank):
        raise ValueError(
            f"TTTuckerConv2d rank must be ((r_out, r_in), (r1, r2, r3)) (the TT part may be an int cap), "
            f"got {rank!r}."
        )
    r_out, r_in = _tucker_rank(rank[0], channels, name="tucker_rank")
    kh, kw = kernel_size
    return (r_out, r_in), _tt_rank(rank[1], (r_in, kh, kw, r_out), "TTTuckerConv2d", name="tt_rank")


class TTTuckerConv2d(FactorizedConv2d):
    r"""TT-Tucker convolution: Tucker factors on the channel modes, TT on the core.

    The weight, permuted to ``(S, Kh, Kw, T)``, is written as

    .. math:: W = C \times_0 U_{in} \times_3 U_{out},

    with ``U_in (S, r_in)``, ``U_out (T, r_out)``, and the core
    ``C (r_in, Kh, Kw, r_out)`` itself stored as a tensor train with cores
    ``(1, r_in, r1)``, ``(r1, Kh, r2)``, ``(r2, Kw, r3)``, ``(r3, r_out, 1)``.
    A Tucker factor whose rank equals its channel count is square: it is
    folded into the neighbouring TT core and not stored (None), as in
    :class:`TuckerConv2d`.
    In ``"factorized"`` execution it runs as 1x1 (S -> r_in), 1x1
    (r_in -> r1), Kh x 1 (r1 -> r2), 1 x Kw (r2 -> r3), 1x1 (r3 -> r_out),
    1x1 (r_out -> T), with the height stride/padding/dilation on the
    ``Kh x 1`` stage and those of width on the ``1 x Kw`` stage. The
    consecutive 1x1 stages are kept apart so that the stored factors are the
    ones that run.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    rank : ((int, int), (int, int, int))
        ``((r_out, r_in), (r1, r2, r3))``; an int Tucker part means the same
        rank for both, an int TT part is a cap on every bond.
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As in :class:`torch.nn.Conv2d` (``groups=1`` only); ``execution``, ``device`` and ``dtype`` as in
        :class:`~tuckerlab.layers.FactorizedConv2d`.

    Attributes
    ----------
    factor_in : nn.Parameter, shape ``(S, r_in)``, or None when ``r_in = S``
    factor_out : nn.Parameter, shape ``(T, r_out)``, or None when ``r_out = T``
    cores : nn.ParameterList of the four TT cores of the Tucker core
    bias : nn.Parameter or None

    Notes
    -----
    This is the format of the C-step of TT-LC (Liu et al., 2024); the TT part
    follows Garipov et al. (2016) and the Tucker part Kim et al. (2016).

    References
    ----------
    .. [1] T. Garipov, D. Podoprikhin, A. Novikov, D. Vetrov, "Ultimate
       tensorization: compressing convolutional and FC layers alike",
       arXiv:1611.03214, 2016.
    .. [2] Y.-D. Kim et al., "Compression of deep convolutional neural
       networks for fast and low power mobile applications", ICLR 2016.
    .. [3] W. Liu et al., "TT-LC: TT-Tucker decomposition in the LC
       framework", J. South China Univ. Tech. 52(7), 2024.
    """

    format_name = "tt_tucker"

    def _build(self, rank, factory: dict) -> None:
        kh, kw = self.kernel_size
        (r_out, r_in), tt_rank = _tt_tucker_rank(rank, self.kernel_size, (self.out_channels, self.in_channels))
        self._factor("factor_in", self.in_channels, r_in, factory)
        self._factor("factor_out", self.out_channels, r_out, factory)
        self.cores = _tt_cores_params((r_in, kh, kw, r_out), tt_rank, factory["device"], factory["dtype"])

    def reset_parameters(self) -> None:
        """Random factors whose rebuilt weight has the variance of ``nn.Conv2d``'s default."""
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        factors = [f for f in (self.factor_in, self.factor_out) if f is not None]
        contracted = math.prod(f.shape[1] for f in factors) * math.prod(self.rank[1])
        self._init_chain((*factors, *self.cores), contracted, 1.0 / (3 * fan_in))
        self._reset_bias(fan_in)

    @property
    def rank(self) -> tuple[tuple[int, int], tuple[int, int, int]]:
        """``((r_out, r_in), (r1, r2, r3))``."""
        tt = tuple(int(c.shape[-1]) for c in self.cores[:3])
        return (int(self.cores[3].shape[1]), int(self.cores[0].shape[1])), tt

    @classmethod
    def _unpack(cls, decomposition):
        """A :class:`~tuckerlab.decompose.TTTuckerTensor` of the ``(S, Kh, Kw, T)``-permuted weight with
        Tucker factors on modes 0 and 3, or ``((U_out, U_in), cores)``; square factors are folded into the
        neighbouring TT cores."""
        if hasattr(decomposition, "tt"):
            factors = list(decomposition.factors)
            if len(factors) != 4 or factors[1] is not None or factors[2] is not None:
                raise ValueError(
                    "TTTuckerConv2d needs a TT-Tucker decomposition of the (S, Kh, Kw, T) weight "
                    "with Tucker factors on modes 0 and 3."
                )
            u_in, u_out = factors[0], factors[3]
            cores = _tt_cores_from(decomposition.tt)
        else:
            (u_out, u_in), cores = decomposition
            cores = _tt_cores_from(cores)
        cores = list(cores)
        if u_in is not None and u_in.shape[0] == u_in.shape[1] == cores[0].shape[1]:  # square: fold it
            cores[0], u_in = torch.einsum("xia,si->xsa", cores[0], u_in), None
        if u_out is not None and u_out.shape[0] == u_out.shape[1] == cores[3].shape[1]:
            cores[3], u_out = torch.einsum("coz,to->ctz", cores[3], u_out), None
        kh, kw = cores[1].shape[1], cores[2].shape[1]
        rank = ((cores[3].shape[1], cores[0].shape[1]), tuple(c.shape[-1] for c in cores[:3]))
        tensors = {f"cores.{k}": c for k, c in enumerate(cores)}
        tensors.update({k: v for k, v in (("factor_in", u_in), ("factor_out", u_out)) if v is not None})
        return (u_in.shape[0] if u_in is not None else cores[0].shape[1],
                u_out.shape[0] if u_out is not None else cores[3].shape[1], (kh, kw), rank, tensors)

    @staticmethod
    def fold_full_rank_factors(state: dict, prefix: str) -> None:
        """Fold square factors saved by an older layout into the TT cores, in a state dict (in place)."""
        for key, core, eq in (("factor_in", "cores.0", "xia,si->xsa"), ("factor_out", "cores.3", "coz,to->ctz")):
            u = state.get(prefix + key)
            if u is not None and u.shape[0] == u.shape[1]:
                state[prefix + core] = torch.einsum(eq, state[prefix + core], u)
                del state[prefix + key]

    def reconstruct_weight(self) -> torch.Tensor:
        core = _tt_to_tensor(self.cores)
        if self.factor_in is not None:
            core = torch.einsum("ihwo,si->shwo", core, self.factor_in)
        if self.factor_out is not None:
            core = torch.einsum("shwo,to->shwt", core, self.factor_out)
        return from_tt_layout(core)

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor_in is not None:
            x = F.conv2d(x, self.factor_in.t()[:, :, None, None])
        if self.factor_out is None:
            return _tt_chain(self, x, self.cores, self.bias)
        x = _tt_chain(self, x, self.cores)
        return F.conv2d(x, self.factor_out[:, :, None, None], self.bias)

    @classmethod
    def _cost(cls, shape, rank, output_hw, input_hw) -> tuple[int, int]:
        """The Tucker factors ``S r_in + T r_out`` (a folded factor counts 0) and the TT chain on the core."""
        t, s, kh, kw = shape
        (r_out, r_in), tt = _tt_tucker_rank(rank, (kh, kw), (t, s))
        (ho, wo), (hi, wi) = output_hw, input_hw
        f_in, f_out = (s * r_in if r_in < s else 0), (t * r_out if r_out < t else 0)
        params = f_in + f_out + _tt_chain_params(r_in, kh, kw, r_out, tt)
        macs = hi * wi * f_in + _tt_chain_macs(r_in, kh, kw, r_out, tt, (ho, wo), (hi, wi)) + ho * wo * f_out
        return params, macs

__all__ = ["TTTuckerConv2d"]

"""Tucker-2 convolution (Kim et al., 2016)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import FactorizedConv2d


def _tucker_rank(rank, shape=None, name: str = "rank") -> tuple[int, int]:
    """``(r_out, r_in)`` from a pair or an int; checked against ``shape = (T, S, ...)`` when given."""
    if shape is not None:
        from tuckerlab.decompose._validation import validate_tucker_rank

        return validate_tucker_rank(rank, tuple(shape), (0, 1), name=name)
    if isinstance(rank, int) and not isinstance(rank, bool):
        return (rank, rank)
    if isinstance(rank, Sequence) and len(rank) == 2:
        return (int(rank[0]), int(rank[1]))
    raise ValueError(f"TuckerConv2d rank must be (r_out, r_in) or an int, got {rank!r}.")


class TuckerConv2d(FactorizedConv2d):
    r"""Tucker-2 convolution: 1x1 (S -> r_in), Kh x Kw (r_in -> r_out), 1x1 (r_out -> T).

    The weight ``W`` of shape ``(T, S, Kh, Kw)`` is stored as a Tucker
    decomposition on its two channel modes,

    .. math:: W = G \times_0 U_{out} \times_1 U_{in},

    with core ``G`` of shape ``(r_out, r_in, Kh, Kw)``, ``U_out`` of shape
    ``(T, r_out)`` and ``U_in`` of shape ``(S, r_in)``. The spatial modes
    are not decomposed (they are small). In ``"factorized"`` execution the
    layer runs as three convolutions; the stride, padding and dilation of the
    original layer go on the middle one.

    A factor whose rank equals its channel count (``r_out = T`` or ``r_in =
    S``) is a square matrix that adds nothing a core cannot hold: it is
    folded into the core and not stored (the attribute is None and its 1x1
    stage does not run), so a full-rank mode costs no parameters or MACs.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    rank : (int, int) or int
        ``(r_out, r_in)``, each in ``[1, T]`` and ``[1, S]``; an int uses the
        same rank for both.
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As in :class:`torch.nn.Conv2d` (``groups=1`` only); ``execution``, ``device`` and ``dtype`` as in
        :class:`~tuckerlab.layers.FactorizedConv2d`.

    Attributes
    ----------
    core : nn.Parameter, shape ``(r_out, r_in, Kh, Kw)``
    factor_out : nn.Parameter, shape ``(T, r_out)``, or None when ``r_out = T``
    factor_in : nn.Parameter, shape ``(S, r_in)``, or None when ``r_in = S``
    bias : nn.Parameter or None

    Notes
    -----
    Parameters: ``S r_in + r_in r_out Kh Kw + r_out T`` (+ ``T`` bias; a
    folded factor's term is 0), against ``T S Kh Kw`` for the dense layer. On
    a 1x1 convolution the layer is a product of three matrices.

    References
    ----------
    .. [1] Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang, D. Shin, "Compression
       of deep convolutional neural networks for fast and low power mobile
       applications", ICLR 2016.
    .. [2] L. R. Tucker, "Some mathematical notes on three-mode factor
       analysis", Psychometrika 31, 1966.

    Examples
    --------
    >>> conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    >>> layer = TuckerConv2d.from_conv(conv, rank=(8, 4))
    >>> layer.rank
    (8, 4)
    """

    format_name = "tucker2"

    def _build(self, rank, factory: dict) -> None:
        kh, kw = self.kernel_size
        r_out, r_in = _tucker_rank(rank, (self.out_channels, self.in_channels))
        self.core = nn.Parameter(torch.empty(r_out, r_in, kh, kw, **factory))
        self._factor("factor_out", self.out_channels, r_out, factory)
        self._factor("factor_in", self.in_channels, r_in, factory)

    def reset_parameters(self) -> None:
        """Random factors whose rebuilt weight has the variance of ``nn.Conv2d``'s default."""
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        factors = [f for f in (self.factor_out, self.factor_in) if f is not None]
        contracted = math.prod(f.shape[1] for f in factors)
        self._init_chain((self.core, *factors), contracted, 1.0 / (3 * fan_in))
        self._reset_bias(fan_in)

    @property
    def rank(self) -> tuple[int, int]:
        """``(r_out, r_in)``."""
        return (self.core.shape[0], self.core.shape[1])

    # ---------------------------------------------------------- construction
    @classmethod
    def _unpack(cls, decomposition):
        """A :class:`~tuckerlab.decompose.TuckerTensor` of modes ``(0, 1)`` of a ``(T, S, Kh, Kw)`` weight,
        or ``(core, (U_out, U_in))``; square factors are folded into the core."""
        if hasattr(decomposition, "core"):
            core, factors = decomposition.core, list(decomposition.factors)
            if len(factors) != 4 or any(f is not None for f in factors[2:]):
                raise ValueError("TuckerConv2d needs a Tucker decomposition of modes (0, 1) of a 4-D weight.")
            u_out, u_in = factors[0], factors[1]
        else:
            core, (u_out, u_in) = decomposition
        if core.ndim != 4:
            raise ValueError(f"Tucker-2 core must be 4-D (r_out, r_in, Kh, Kw), got shape {tuple(core.shape)}.")
        core, u_out, u_in = _fold_square_factors(core, u_out, u_in)
        r_out, r_in, kh, kw = core.shape
        tensors = {"core": core, "factor_out": u_out, "factor_in": u_in}
        return (u_in.shape[0] if u_in is not None else r_in, u_out.shape[0] if u_out is not None else r_out,
                (kh, kw), (r_out, r_in), {k: v for k, v in tensors.items() if v is not None})

    @staticmethod
    def fold_full_rank_factors(state: dict, prefix: str) -> None:
        """Fold square factors saved by an older layout into the core, in a state dict (in place).

        Files written before square factors were folded store ``factor_out``
        of shape ``(T, T)`` (``factor_in`` ``(S, S)``) at full rank; the
        layer now keeps them in the core.
        """
        core = state.get(prefix + "core")
        if core is None:
            return
        u_out, u_in = state.get(prefix + "factor_out"), state.get(prefix + "factor_in")
        core, u_out2, u_in2 = _fold_square_factors(core, u_out, u_in)
        state[prefix + "core"] = core
        for key, old, new in (("factor_out", u_out, u_out2), ("factor_in", u_in, u_in2)):
            if old is not None and new is None:
                del state[prefix + key]

    # --------------------------------------------------------------- compute
    def reconstruct_weight(self) -> torch.Tensor:
        w = self.core
        if self.factor_out is not None:
            w = torch.einsum("abhw,ta->tbhw", w, self.factor_out)
        if self.factor_in is not None:
            w = torch.einsum("tbhw,sb->tshw", w, self.factor_in)
        return w

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor_in is not None:
            x = F.conv2d(x, self.factor_in.t()[:, :, None, None])
        x = self._pad(x, True, True)
        last = self.factor_out is None
        x = F.conv2d(x, self.core, self.bias if last else None, self.stride, self._conv_pad, self.dilation)
        return x if last else F.conv2d(x, self.factor_out[:, :, None, None], self.bias)

    @classmethod
    def _cost(cls, shape, rank, output_hw, input_hw) -> tuple[int, int]:
        """``params = S r_in + r_out r_in Kh Kw + T r_out``;
        ``macs = Hi Wi S r_in + Ho Wo (r_in r_out Kh Kw + r_out T)``.

        The term of a folded factor (``r_in = S`` or ``r_out = T``) is 0.
        """
        t, s, kh, kw = shape
        r_out, r_in = _tucker_rank(rank, (t, s))
        (ho, wo), (hi, wi) = output_hw, input_hw
        f_in, f_out = (s * r_in if r_in < s else 0), (t * r_out if r_out < t else 0)
        params = f_in + r_out * r_in * kh * kw + f_out
        macs = hi * wi * f_in + ho * wo * (r_in * r_out * kh * kw + f_out)
        return params, macs

def _fold_square_factors(core, u_out, u_in):
    """``(core, u_out, u_in)`` with square factors multiplied into the core (and replaced by None)."""
    if u_out is not None and u_out.shape[0] == u_out.shape[1] == core.shape[0]:
        core, u_out = torch.einsum("abhw,ta->tbhw", core, u_out), None
    if u_in is not None and u_in.shape[0] == u_in.shape[1] == core.shape[1]:
        core, u_in = torch.einsum("abhw,sb->ashw", core, u_in), None
    return core, u_out, u_in


__all__ = ["TuckerConv2d"]

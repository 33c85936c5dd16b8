"""TT-Tucker convolution: Tucker factors on the channels, tensor train on the core."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import FactorizedConv2d
from .tt import (
    _tt_chain,
    _tt_chain_macs,
    _tt_chain_params,
    _tt_cores_from,
    _tt_cores_params,
    _tt_rank,
    _tt_to_tensor,
)
from .tucker import _tucker_rank


def _tt_tucker_rank(rank, kernel_size) -> tuple[tuple[int, int], tuple[int, int, int]]:
    if isinstance(rank, Sequence) and len(rank) == 2:
        r_out, r_in = _tucker_rank(rank[0])
        kh, kw = kernel_size
        return (r_out, r_in), _tt_rank(rank[1], (r_in, kh, kw, r_out), "TTTuckerConv2d")
    raise ValueError(
        f"TTTuckerConv2d rank must be ((r_out, r_in), (r1, r2, r3)), got {rank!r}."
    )


class TTTuckerConv2d(FactorizedConv2d):
    r"""TT-Tucker convolution: Tucker factors on the channel modes, TT on the core.

    The weight, permuted to ``(S, Kh, Kw, T)``, is written as

    .. math:: W = C \times_0 U_{in} \times_3 U_{out},

    with ``U_in (S, r_in)``, ``U_out (T, r_out)``, and the core
    ``C (r_in, Kh, Kw, r_out)`` itself stored as a tensor train with cores
    ``(1, r_in, r1)``, ``(r1, Kh, r2)``, ``(r2, Kw, r3)``, ``(r3, r_out, 1)``.
    In ``"factorized"`` execution it runs as 1x1 (S -> r_in), 1x1
    (r_in -> r1), Kh x 1 (r1 -> r2), 1 x Kw (r2 -> r3), 1x1 (r3 -> r_out),
    1x1 (r_out -> T), with the height stride/padding/dilation on the
    ``Kh x 1`` stage and those of width on the ``1 x Kw`` stage. The
    consecutive 1x1 stages are kept apart so that the stored factors are the
    ones that run.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    rank : ((int, int), (int, int, int))
        ``((r_out, r_in), (r1, r2, r3))``; an int Tucker part means the same
        rank for both, an int TT part is a cap on every bond.
    stride, padding, dilation, groups, bias, padding_mode
        As in :class:`torch.nn.Conv2d`; only ``groups=1`` is accepted.
    execution : {"factorized", "reconstructed"}
    device, dtype

    Attributes
    ----------
    factor_in : nn.Parameter, shape ``(S, r_in)``
    factor_out : nn.Parameter, shape ``(T, r_out)``
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

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        rank,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        execution: str = "factorized",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, execution,
            device, dtype,
        )
        kh, kw = self.kernel_size
        (r_out, r_in), tt_rank = _tt_tucker_rank(rank, self.kernel_size)
        self.factor_in = nn.Parameter(torch.empty(self.in_channels, r_in, device=device, dtype=dtype))
        self.factor_out = nn.Parameter(torch.empty(self.out_channels, r_out, device=device, dtype=dtype))
        self.cores = _tt_cores_params((r_in, kh, kw, r_out), tt_rank, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random factors whose rebuilt weight has the variance of ``nn.Conv2d``'s default."""
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        (r_out, r_in), (r1, r2, r3) = self.rank
        self._init_chain(
            (self.factor_in, self.factor_out, *self.cores), r_in * r_out * r1 * r2 * r3, 1.0 / (3 * fan_in)
        )
        self._reset_bias(fan_in)

    @property
    def rank(self) -> tuple[tuple[int, int], tuple[int, int, int]]:
        """``((r_out, r_in), (r1, r2, r3))``."""
        tt = tuple(int(c.shape[-1]) for c in self.cores[:3])
        return (int(self.factor_out.shape[1]), int(self.factor_in.shape[1])), tt

    @classmethod
    def from_factors(
        cls,
        decomposition,
        *,
        stride=1,
        padding=0,
        dilation=1,
        bias: torch.Tensor | None = None,
        padding_mode: str = "zeros",
        execution: str = "factorized",
    ) -> "TTTuckerConv2d":
        """Build the layer from a TT-Tucker decomposition of the ``(S, Kh, Kw, T)``-permuted weight.

        Parameters
        ----------
        decomposition : TTTuckerTensor or ((U_out, U_in), cores)
            A :class:`tuckerlab.decompose.TTTuckerTensor` of the permuted
            weight with Tucker factors on modes 0 and 3 (``factors`` is
            ``[U_in, None, None, U_out]`` and ``tt`` the TT of the core), or
            ``U_out (T, r_out)``, ``U_in (S, r_in)`` and the four TT cores.
        stride, padding, dilation, padding_mode, bias, execution
            As in :meth:`TuckerConv2d.from_factors`.

        Returns
        -------
        TTTuckerConv2d
        """
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
        kh, kw = cores[1].shape[1], cores[2].shape[1]
        rank = ((u_out.shape[1], u_in.shape[1]), tuple(c.shape[-1] for c in cores[:3]))
        layer = cls(
            u_in.shape[0], u_out.shape[0], (kh, kw), rank,
            stride=stride, padding=padding, dilation=dilation, bias=bias is not None,
            padding_mode=padding_mode, execution=execution, device=u_in.device, dtype=u_in.dtype,
        )
        with torch.no_grad():
            layer.factor_in.copy_(u_in)
            layer.factor_out.copy_(u_out)
            for p, c in zip(layer.cores, cores):
                p.copy_(c)
        layer._copy_bias(bias)
        return layer

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank, execution: str = "factorized", **decompose_kwargs) -> "TTTuckerConv2d":
        """Compress a trained ``nn.Conv2d`` by a TT-Tucker decomposition of its weight.

        Parameters
        ----------
        conv : torch.nn.Conv2d
            With ``groups=1``.
        rank : ((int, int), (int, int, int))
            ``((r_out, r_in), (r1, r2, r3))``; checked by
            :func:`tuckerlab.decompose.tt_tucker`.
        execution : {"factorized", "reconstructed"}
        **decompose_kwargs
            Passed to :func:`tuckerlab.decompose.tt_tucker`.

        Returns
        -------
        TTTuckerConv2d
        """
        cls._check_conv(conv, cls.__name__)
        from tuckerlab.decompose import tt_tucker

        if not (isinstance(rank, Sequence) and len(rank) == 2):
            raise ValueError(f"TTTuckerConv2d rank must be ((r_out, r_in), (r1, r2, r3)), got {rank!r}.")
        tucker_rank, tt_rank = rank
        if isinstance(tucker_rank, Sequence):
            tucker_rank = (tucker_rank[1], tucker_rank[0])  # modes (0, 3) of (S, Kh, Kw, T) are (in, out)
        weight = conv.weight.detach().permute(1, 2, 3, 0)
        dec = tt_tucker(weight, tucker_rank, tt_rank, modes=(0, 3), **decompose_kwargs)
        return cls.from_factors(dec, **cls._conv_kwargs(conv, execution))

    def reconstruct_weight(self) -> torch.Tensor:
        core = _tt_to_tensor(self.cores)
        return torch.einsum("ihwo,si,to->tshw", core, self.factor_in, self.factor_out)

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.factor_in.t()[:, :, None, None])
        x = _tt_chain(self, x, self.cores)
        return F.conv2d(x, self.factor_out[:, :, None, None], self.bias)

    @classmethod
    def cost(
        cls, weight_shape, rank, output_hw, input_hw=None, *, stride=1, bias: bool = False
    ) -> tuple[int, int]:
        """Parameters and MACs (per image) of a TT-Tucker layer, without building it.

        MACs are those of ``"factorized"`` execution; ``"reconstructed"``
        execution costs the dense convolution plus rebuilding the weight.

        Parameters
        ----------
        weight_shape : sequence of int
            ``(T, S, Kh, Kw)`` of the dense layer.
        rank : ((int, int), (int, int, int))
        output_hw, input_hw, stride, bias
            As in :meth:`TuckerConv2d.cost`.

        Returns
        -------
        (params, macs) : tuple of int
            The Tucker factors ``S r_in + T r_out`` plus the TT chain on
            ``(r_in, Kh, Kw, r_out)`` (see :meth:`TTConv2d.cost`).
        """
        t, s, kh, kw = (int(d) for d in weight_shape)
        (r_out, r_in), tt = _tt_tucker_rank(rank, (kh, kw))
        (ho, wo), (hi, wi) = cls._hw(output_hw, input_hw, stride)
        params = s * r_in + t * r_out + _tt_chain_params(r_in, kh, kw, r_out, tt) + (t if bias else 0)
        macs = (
            hi * wi * s * r_in
            + _tt_chain_macs(r_in, kh, kw, r_out, tt, (ho, wo), (hi, wi))
            + ho * wo * r_out * t
        )
        return params, macs


__all__ = ["TTTuckerConv2d"]

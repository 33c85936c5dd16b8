"""Tensor-train convolution (Garipov et al., 2016)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import FactorizedConv2d


def to_tt_layout(weight: torch.Tensor) -> torch.Tensor:
    """A conv weight ``(T, S, Kh, Kw)`` in the ``(S, Kh, Kw, T)`` layout its tensor train runs in."""
    return weight.permute(1, 2, 3, 0)


def from_tt_layout(tensor: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_tt_layout`: ``(S, Kh, Kw, T)`` back to ``(T, S, Kh, Kw)``."""
    return tensor.permute(3, 0, 1, 2)


def _tt_rank(rank, shape: Sequence[int], owner: str = "TTConv2d", name: str = "rank") -> tuple[int, int, int]:
    """``(r1, r2, r3)`` of a tensor of ``shape``, from an inner triple, ``(1, r1, r2, r3, 1)`` or an int cap.

    Checked as :func:`tuckerlab.decompose.tensor_train` checks it: every
    rank at least 1 and reachable (an int cap gives bond ``k`` ``min(cap,
    n1..nk, n(k+1)..n4)``).
    """
    from tuckerlab.decompose._validation import validate_tt_rank

    if not isinstance(rank, (int, Sequence)) or isinstance(rank, (bool, str)):
        raise ValueError(f"{owner} TT rank must be (r1, r2, r3), (1, r1, r2, r3, 1) or an int, got {rank!r}.")
    return validate_tt_rank(rank, tuple(int(n) for n in shape), name=name)[1:-1]


def _tt_cores_from(decomposition) -> list[torch.Tensor]:
    cores = list(decomposition.cores) if hasattr(decomposition, "cores") else list(decomposition)
    if len(cores) != 4 or any(c.ndim != 3 for c in cores):
        raise ValueError("a 4-D weight needs 4 TT cores of shape (r_{k-1}, n_k, r_k).")
    if cores[0].shape[0] != 1 or cores[-1].shape[-1] != 1:
        raise ValueError("the first and last TT cores must have boundary rank 1.")
    return cores


def _tt_cores_params(shape: Sequence[int], rank: tuple[int, int, int], device, dtype) -> nn.ParameterList:
    full = (1, *rank, 1)
    return nn.ParameterList(
        nn.Parameter(torch.empty(full[k], shape[k], full[k + 1], device=device, dtype=dtype)) for k in range(4)
    )


def _tt_to_tensor(cores) -> torch.Tensor:
    """Full ``(n1, n2, n3, n4)`` tensor of four TT cores."""
    return torch.einsum("xia,ahb,bwc,coz->ihwo", *cores)


def _tt_chain(layer: FactorizedConv2d, x: torch.Tensor, cores, bias=None) -> torch.Tensor:
    """Run four TT cores of a ``(C_in, Kh, Kw, C_out)`` kernel as 1x1, Kh x 1, 1 x Kw, 1x1."""
    g1, g2, g3, g4 = cores
    x = F.conv2d(x, g1[0].t()[:, :, None, None])
    x = layer._conv_h(x, g2.permute(2, 0, 1)[:, :, :, None])
    x = layer._conv_w(x, g3.permute(2, 0, 1)[:, :, None, :])
    return F.conv2d(x, g4[:, :, 0].t()[:, :, None, None], bias)


def _tt_chain_macs(c_in, kh, kw, c_out, rank, output_hw, input_hw) -> int:
    r1, r2, r3 = rank
    (ho, wo), (hi, wi) = output_hw, input_hw
    return hi * wi * c_in * r1 + ho * wi * r1 * r2 * kh + ho * wo * (r2 * r3 * kw + r3 * c_out)


def _tt_chain_params(c_in, kh, kw, c_out, rank) -> int:
    r1, r2, r3 = rank
    return c_in * r1 + r1 * kh * r2 + r2 * kw * r3 + r3 * c_out


class TTConv2d(FactorizedConv2d):
    r"""Tensor-train convolution: 1x1 (S -> r1), Kh x 1 (r1 -> r2), 1 x Kw (r2 -> r3), 1x1 (r3 -> T).

    The weight, permuted to ``(S, Kh, Kw, T)``, is stored in tensor-train
    (TT) format with cores ``G1 (1, S, r1)``, ``G2 (r1, Kh, r2)``,
    ``G3 (r2, Kw, r3)``, ``G4 (r3, T, 1)``:

    .. math:: W[t, s, h, w] = G_1[s]\, G_2[h]\, G_3[w]\, G_4[t].

    Because the spatial modes have their own cores, the convolution splits
    into a vertical and a horizontal one. The height stride, padding and
    dilation go on the ``Kh x 1`` stage and those of width on the ``1 x Kw``
    stage, so anisotropic settings are kept exactly.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    rank : (int, int, int) or int
        Inner TT ranks ``(r1, r2, r3)`` (``(1, r1, r2, r3, 1)`` is accepted
        too); an int is a cap: bond ``k`` gets ``min(cap, its largest
        rank)``. Each rank must be reachable (see Notes).
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As in :class:`torch.nn.Conv2d` (``groups=1`` only); ``execution``, ``device`` and ``dtype`` as in
        :class:`~tuckerlab.layers.FactorizedConv2d`.

    Attributes
    ----------
    cores : nn.ParameterList of four 3-D parameters
    bias : nn.Parameter or None

    Notes
    -----
    Full rank is ``r1 = min(S, Kh Kw T)``, ``r2 = min(S Kh, Kw T)``,
    ``r3 = min(S Kh Kw, T)``. On a 1x1 convolution the spatial cores become
    ``r1 x r2`` and ``r2 x r3`` matrices, so the layer is a product of four
    matrices (a low-rank factorisation of the ``T x S`` weight); it works,
    but :class:`TuckerConv2d` is the more economical choice there.

    References
    ----------
    .. [1] T. Garipov, D. Podoprikhin, A. Novikov, D. Vetrov, "Ultimate
       tensorization: compressing convolutional and FC layers alike",
       arXiv:1611.03214, 2016.
    .. [2] A. Novikov, D. Podoprikhin, A. Osokin, D. Vetrov, "Tensorizing
       neural networks", NeurIPS 2015.
    .. [3] I. V. Oseledets, "Tensor-train decomposition", SIAM J. Sci.
       Comput. 33(5), 2011.
    """

    format_name = "tt"

    def _build(self, rank, factory: dict) -> None:
        kh, kw = self.kernel_size
        dims = (self.in_channels, kh, kw, self.out_channels)
        self.cores = _tt_cores_params(dims, _tt_rank(rank, dims), factory["device"], factory["dtype"])

    def reset_parameters(self) -> None:
        """Random cores whose rebuilt weight has the variance of ``nn.Conv2d``'s default."""
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        r1, r2, r3 = self.rank
        self._init_chain(self.cores, r1 * r2 * r3, 1.0 / (3 * fan_in))
        self._reset_bias(fan_in)

    @property
    def rank(self) -> tuple[int, int, int]:
        """Inner TT ranks ``(r1, r2, r3)``."""
        return tuple(int(c.shape[-1]) for c in self.cores[:3])

    @classmethod
    def _unpack(cls, decomposition):
        """A :class:`~tuckerlab.decompose.TTTensor` of the ``(S, Kh, Kw, T)``-permuted weight, or its four
        cores ``(1, S, r1)``, ``(r1, Kh, r2)``, ``(r2, Kw, r3)``, ``(r3, T, 1)``."""
        cores = _tt_cores_from(decomposition)
        s, kh, kw, t = (c.shape[1] for c in cores)
        rank = tuple(c.shape[-1] for c in cores[:3])
        return s, t, (kh, kw), rank, {f"cores.{k}": c for k, c in enumerate(cores)}

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank=None, execution: str = "factorized", **decompose_kwargs) -> "TTConv2d":
        """Compress a trained ``nn.Conv2d`` by TT-SVD of its ``(S, Kh, Kw, T)``-permuted weight.

        Parameters
        ----------
        conv : torch.nn.Conv2d
            With ``groups=1``.
        rank : (int, int, int) or int, optional
            Inner TT ranks, checked by :func:`tuckerlab.decompose.tensor_train`.
        execution : {"factorized", "reconstructed"}
        **decompose_kwargs
            Passed to :func:`tuckerlab.decompose.tensor_train`, e.g. ``eps``
            (relative accuracy with which TT-SVD chooses the ranks itself,
            instead of ``rank``).

        Returns
        -------
        TTConv2d
        """
        if rank is None:  # ranks chosen by TT-SVD itself from a tolerance
            cls._check_conv(conv, cls.__name__)
            from tuckerlab.decompose import tensor_train

            dec = tensor_train(to_tt_layout(conv.weight.detach()), None, **decompose_kwargs)
            return cls.from_factors(dec, **cls._conv_kwargs(conv, execution))
        return cls._from_conv_via_format(conv, rank, execution, decompose_kwargs)

    def reconstruct_weight(self) -> torch.Tensor:
        return from_tt_layout(_tt_to_tensor(self.cores))

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return _tt_chain(self, x, self.cores, self.bias)

    @classmethod
    def _cost(cls, shape, rank, output_hw, input_hw) -> tuple[int, int]:
        """``params = S r1 + r1 Kh r2 + r2 Kw r3 + r3 T``;
        ``macs = Hi Wi S r1 + Ho Wi r1 r2 Kh + Ho Wo (r2 r3 Kw + r3 T)``.

        The ``Kh x 1`` stage keeps the input width.
        """
        t, s, kh, kw = shape
        r = _tt_rank(rank, (s, kh, kw, t))
        return _tt_chain_params(s, kh, kw, t, r), _tt_chain_macs(s, kh, kw, t, r, output_hw, input_hw)

__all__ = ["TTConv2d", "to_tt_layout", "from_tt_layout"]

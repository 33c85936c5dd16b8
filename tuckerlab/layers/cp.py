"""CP convolution (Lebedev et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import FactorizedConv2d


def _cp_rank(rank, shape=None) -> int:
    """The CP rank, an int; checked against the weight ``shape`` when given."""
    if shape is not None:
        from tuckerlab.decompose._validation import validate_cp_rank

        return validate_cp_rank(rank, tuple(int(n) for n in shape))
    if isinstance(rank, int) and not isinstance(rank, bool):
        return rank
    raise ValueError(f"CPConv2d rank must be an int, got {rank!r}.")


class CPConv2d(FactorizedConv2d):
    r"""CP convolution: 1x1 (S -> R), depthwise Kh x 1, depthwise 1 x Kw, 1x1 (R -> T).

    The weight is a sum of ``R`` rank-one tensors (canonical polyadic
    decomposition),

    .. math:: W[t, s, h, w] = \sum_{r=1}^{R} A_{out}[t, r]\, A_{in}[s, r]\, A_h[h, r]\, A_w[w, r],

    which runs as four cheap convolutions (Lebedev et al., 2015): a 1x1
    convolution to ``R`` channels, a depthwise ``Kh x 1`` and a depthwise
    ``1 x Kw`` convolution on those channels, and a 1x1 convolution to ``T``.
    The height stride/padding/dilation go on the ``Kh x 1`` stage and those
    of width on the ``1 x Kw`` stage. The CP weights (``lambda``) are folded
    into ``A_out``.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    rank : int
        The CP rank ``R``, in ``[1, T S Kh Kw / max(T, S, Kh, Kw)]``.
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As in :class:`torch.nn.Conv2d` (``groups=1`` only); ``execution``, ``device`` and ``dtype`` as in
        :class:`~tuckerlab.layers.FactorizedConv2d`.

    Attributes
    ----------
    factor_out : nn.Parameter, shape ``(T, R)``
    factor_in : nn.Parameter, shape ``(S, R)``
    factor_h : nn.Parameter, shape ``(Kh, R)``
    factor_w : nn.Parameter, shape ``(Kw, R)``
    bias : nn.Parameter or None

    Notes
    -----
    On a 1x1 convolution the depthwise stages are per-channel scalings, so
    the layer is a rank-``R`` factorisation of the ``T x S`` matrix (as
    :class:`LowRankLinear`); it is accepted. CP decomposition is computed by
    alternating least squares and may need more iterations than the default
    to reach a given accuracy; Lebedev et al. fine-tune afterwards.

    References
    ----------
    .. [1] V. Lebedev, Y. Ganin, M. Rakhuba, I. Oseledets, V. Lempitsky,
       "Speeding-up convolutional neural networks using fine-tuned
       CP-decomposition", ICLR 2015.
    """

    format_name = "cp"

    def _build(self, rank, factory: dict) -> None:
        kh, kw = self.kernel_size
        r = _cp_rank(rank, (self.out_channels, self.in_channels, kh, kw))
        self.factor_out = nn.Parameter(torch.empty(self.out_channels, r, **factory))
        self.factor_in = nn.Parameter(torch.empty(self.in_channels, r, **factory))
        self.factor_h = nn.Parameter(torch.empty(kh, r, **factory))
        self.factor_w = nn.Parameter(torch.empty(kw, r, **factory))

    def reset_parameters(self) -> None:
        """Random factors whose rebuilt weight has the variance of ``nn.Conv2d``'s default."""
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self._init_chain(
            (self.factor_out, self.factor_in, self.factor_h, self.factor_w), self.rank, 1.0 / (3 * fan_in)
        )
        self._reset_bias(fan_in)

    @property
    def rank(self) -> int:
        """The CP rank ``R``."""
        return int(self.factor_out.shape[1])

    @classmethod
    def _unpack(cls, decomposition):
        """A :class:`~tuckerlab.decompose.CPTensor` of a ``(T, S, Kh, Kw)`` weight, or its ``weights`` (``(R,)``
        or None) and the four factors ``(T, R)``, ``(S, R)``, ``(Kh, R)``, ``(Kw, R)``; the weights are folded
        into ``A_out``."""
        if hasattr(decomposition, "factors"):
            weights, factors = decomposition.weights, list(decomposition.factors)
        else:
            weights, factors = decomposition
            factors = list(factors)
        if len(factors) != 4:
            raise ValueError(f"CPConv2d needs 4 CP factors of a (T, S, Kh, Kw) weight, got {len(factors)}.")
        a_out, a_in, a_h, a_w = factors
        if weights is not None:
            a_out = a_out * weights
        return (a_in.shape[0], a_out.shape[0], (a_h.shape[0], a_w.shape[0]), a_out.shape[1],
                {"factor_out": a_out, "factor_in": a_in, "factor_h": a_h, "factor_w": a_w})

    def reconstruct_weight(self) -> torch.Tensor:
        return torch.einsum("tr,sr,hr,wr->tshw", self.factor_out, self.factor_in, self.factor_h, self.factor_w)

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        r = self.rank
        x = F.conv2d(x, self.factor_in.t()[:, :, None, None])
        x = self._conv_h(x, self.factor_h.t()[:, None, :, None], groups=r)
        x = self._conv_w(x, self.factor_w.t()[:, None, None, :], groups=r)
        return F.conv2d(x, self.factor_out[:, :, None, None], self.bias)

    @classmethod
    def _cost(cls, shape, rank, output_hw, input_hw) -> tuple[int, int]:
        """``params = R (S + Kh + Kw + T)``; ``macs = Hi Wi S R + Ho Wi R Kh + Ho Wo R (Kw + T)``."""
        t, s, kh, kw = shape
        r = _cp_rank(rank, shape)
        (ho, wo), (hi, wi) = output_hw, input_hw
        return r * (s + kh + kw + t), hi * wi * s * r + ho * wi * r * kh + ho * wo * r * (kw + t)

__all__ = ["CPConv2d"]

"""Low-rank linear layer (truncated SVD)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._base import FactorizedModule


class LowRankLinear(FactorizedModule):
    r"""Linear layer with a rank-``r`` weight ``W = U V^T``.

    ``U`` (``factor_out``) has shape ``(out_features, r)`` and ``V``
    (``factor_in``) ``(in_features, r)``. ``"factorized"`` execution computes
    ``(x V) U^T + b`` (two thin matrix products), ``"reconstructed"``
    computes ``x (U V^T)^T + b``.

    :meth:`from_linear` takes the best rank-``r`` approximation in Frobenius
    norm (Eckart-Young), the truncated SVD ``W ~ U_r S_r V_r^T``, and splits
    ``S_r`` evenly: ``U = U_r S_r^{1/2}``, ``V = V_r S_r^{1/2}``.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    in_features, out_features : int
    rank : int
        ``1 <= rank <= min(in_features, out_features)``.
    bias : bool, default True
    execution : {"factorized", "reconstructed"}
    device, dtype

    References
    ----------
    .. [1] E. Denton, W. Zaremba, J. Bruna, Y. LeCun, R. Fergus, "Exploiting
       linear structure within convolutional networks for efficient
       evaluation", NeurIPS 2014.
    .. [2] A. Novikov, D. Podoprikhin, A. Osokin, D. Vetrov, "Tensorizing
       neural networks", NeurIPS 2015 (low-rank baselines for FC layers).
    """

    #: Name of the format (:mod:`tuckerlab.formats`) that decomposes weights for this layer.
    format_name = "lowrank"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        execution: str = "factorized",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(execution)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._check_rank(rank, self.out_features, self.in_features)
        kw_ = dict(device=device, dtype=dtype)
        self.factor_out = nn.Parameter(torch.empty(self.out_features, rank, **kw_))
        self.factor_in = nn.Parameter(torch.empty(self.in_features, rank, **kw_))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **kw_))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @staticmethod
    def _check_rank(rank, out_features: int, in_features: int) -> None:
        limit = min(out_features, in_features)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
            raise ValueError(
                f"LowRankLinear rank must be an int in [1, {limit}] = [1, min(out_features={out_features}, "
                f"in_features={in_features})], got {rank!r}."
            )

    def reset_parameters(self) -> None:
        """Random factors whose product has the variance of ``nn.Linear``'s default weight."""
        self._init_chain((self.factor_out, self.factor_in), self.rank, 1.0 / (3 * self.in_features))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            with torch.no_grad():
                self.bias.uniform_(-bound, bound)

    @property
    def rank(self) -> int:
        return int(self.factor_out.shape[1])

    @classmethod
    def from_factors(
        cls, factors, *, bias: torch.Tensor | None = None, execution: str = "factorized"
    ) -> "LowRankLinear":
        """Build the layer from ``(U, V)`` with ``W = U V^T``.

        Parameters
        ----------
        factors : (tensor, tensor)
            ``U (out_features, r)`` and ``V (in_features, r)``.
        bias : tensor of shape ``(out_features,)`` or None
        execution : {"factorized", "reconstructed"}

        Returns
        -------
        LowRankLinear
        """
        u, v = factors
        layer = cls(
            v.shape[0], u.shape[0], u.shape[1], bias=bias is not None, execution=execution,
            device=u.device, dtype=u.dtype,
        )
        with torch.no_grad():
            layer.factor_out.copy_(u)
            layer.factor_in.copy_(v)
            if bias is not None:
                layer.bias.copy_(bias.detach())
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, execution: str = "factorized") -> "LowRankLinear":
        """Compress a trained ``nn.Linear`` by truncated SVD of its weight.

        Parameters
        ----------
        linear : torch.nn.Linear
        rank : int
            ``1 <= rank <= min(out_features, in_features)``.
        execution : {"factorized", "reconstructed"}

        Returns
        -------
        LowRankLinear
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"LowRankLinear.from_linear expects a torch.nn.Linear, got {type(linear).__name__}; "
                "use TuckerConv2d/TTConv2d/TTTuckerConv2d/CPConv2d.from_conv for nn.Conv2d layers."
            )
        from tuckerlab.formats import get_format

        fmt = get_format(cls.format_name)
        cls._check_rank(rank, linear.out_features, linear.in_features)
        return fmt.layer_from_factors(linear, fmt.decompose(linear.weight.detach(), rank), execution)

    def reconstruct_weight(self) -> torch.Tensor:
        """The dense ``(out_features, in_features)`` weight (differentiable)."""
        return self.factor_out @ self.factor_in.t()

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.factor_in.t()), self.factor_out, self.bias)

    def _forward_reconstructed(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.reconstruct_weight(), self.bias)

    def to_linear(self) -> nn.Linear:
        """A dense ``nn.Linear`` with the rebuilt weight (no parameters shared)."""
        w = self.reconstruct_weight().detach()
        lin = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device=w.device, dtype=w.dtype
        )
        with torch.no_grad():
            lin.weight.copy_(w)
            if self.bias is not None:
                lin.bias.copy_(self.bias.detach())
        return lin

    @classmethod
    def cost(cls, weight_shape, rank: int, output_hw=None, input_hw=None, *, bias: bool = False) -> tuple[int, int]:
        """Parameters and MACs of a low-rank linear layer, without building it.

        MACs are those of ``"factorized"`` execution; ``"reconstructed"``
        execution costs the dense product plus rebuilding the weight.

        Parameters
        ----------
        weight_shape : (int, int)
            ``(out_features, in_features)``.
        rank : int
        output_hw : sequence of int, optional
            Number of rows the layer is applied to per sample, as a shape
            (its product is used); ``None`` means one row (an ``(N, in)``
            input). Kept for the same call signature as the conv layers.
        input_hw : ignored
        bias : bool, default False

        Returns
        -------
        (params, macs) : tuple of int
            ``params = r (in + out) (+ out)``, ``macs = rows * r (in + out)``.
        """
        out_f, in_f = (int(d) for d in weight_shape)
        rows = math.prod(int(d) for d in output_hw) if output_hw is not None else 1
        return rank * (in_f + out_f) + (out_f if bias else 0), rows * rank * (in_f + out_f)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.bias is not None}, execution={self.execution!r}"
        )


__all__ = ["LowRankLinear"]

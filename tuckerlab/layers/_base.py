"""Common parts of the factorized layers.

A factorized layer keeps its weight as a few small factors (its *storage*) and
can run in two ways (its *execution*):

``"factorized"``
    a chain of small convolutions (or matrix products), one per factor; this is
    what makes a compressed network cheaper at inference time;
``"reconstructed"``
    the dense weight is rebuilt from the factors at every call and one ordinary
    convolution runs; training methods that work on the dense weight (LC,
    ADMM) and hardware on which small convolutions are slow want this.

Both are differentiable with respect to the factors and compute the same
function. Keeping storage and execution apart follows the design of TensorLy-
Torch (Kossaifi et al., "TensorLy-Torch", 2021); the code here is our own.
"""

from __future__ import annotations

import math
from typing import ClassVar, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

EXECUTION_MODES = ("factorized", "reconstructed")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_F_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")


def _check_execution(mode: str) -> str:
    if mode not in EXECUTION_MODES:
        raise ValueError(f"`execution` must be one of {EXECUTION_MODES}, got {mode!r}.")
    return mode


def conv2d_cost(weight_shape: Sequence[int], output_hw: Sequence[int], *, bias: bool = False) -> tuple[int, int]:
    """Parameters and MACs of a dense ``nn.Conv2d`` (``groups=1``).

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    weight_shape : sequence of int
        ``(T, S, Kh, Kw)``.
    output_hw : sequence of int
        ``(Ho, Wo)``, the spatial size of the output for one image.
    bias : bool, default False
        Count ``T`` bias parameters (biases are never counted as MACs).

    Returns
    -------
    (params, macs) : tuple of int
        MACs for one image: ``Ho * Wo * T * S * Kh * Kw``.
    """
    t, s, kh, kw = (int(d) for d in weight_shape)
    ho, wo = (int(d) for d in output_hw)
    return t * s * kh * kw + (t if bias else 0), ho * wo * t * s * kh * kw


class FactorizedModule(nn.Module):
    """Base of every factorized layer: execution mode and parameter count.

    Subclasses implement ``_forward_factorized`` and ``_forward_reconstructed``
    and a class method ``cost``.
    """

    def __init__(self, execution: str = "factorized") -> None:
        super().__init__()
        self._execution = _check_execution(execution)

    @property
    def execution(self) -> str:
        """``"factorized"`` (chain of small layers) or ``"reconstructed"`` (one dense layer)."""
        return self._execution

    @execution.setter
    def execution(self, mode: str) -> None:
        self._execution = _check_execution(mode)

    @property
    def n_params(self) -> int:
        """Number of stored parameters (factors and bias)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._execution == "factorized":
            return self._forward_factorized(x)
        return self._forward_reconstructed(x)

    def _forward_factorized(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _forward_reconstructed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _init_chain(factors: Iterable[torch.Tensor], contracted: int, target_var: float) -> None:
        """Initialise factors so that the rebuilt weight has variance ``target_var``.

        A weight entry is a sum of ``contracted`` products of one entry of each
        factor; with i.i.d. zero-mean entries of standard deviation ``s`` in
        ``n`` factors its variance is ``contracted * s**(2n)``.
        """
        factors = list(factors)
        std = (target_var / max(contracted, 1)) ** (1.0 / (2 * len(factors)))
        with torch.no_grad():
            for f in factors:
                f.normal_(0.0, std)


class FactorizedConv2d(FactorizedModule):
    """Base of the factorized 2-D convolutions.

    Holds the hyper-parameters of the convolution the layer stands for
    (channels, kernel size, stride, padding, dilation, padding mode, bias),
    the padding logic shared by all layouts, ``to_conv`` and the input checks
    of ``from_conv``.

    Only ``groups=1`` convolutions are accepted: a grouped convolution is
    already block-diagonal over channels, and decomposing its weight as one
    tensor would mix the groups. ``padding_mode`` may be any of
    ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``; the padding
    is applied along each spatial axis just before the factor that convolves
    along that axis, which gives the same result as padding the input first
    because the stages before it act on channels only.

    Subclasses implement ``_build(rank, factory_kwargs)`` (create the
    factors), ``reset_parameters``, ``rank``, ``_unpack`` (read a
    decomposition for :meth:`from_factors`), ``reconstruct_weight``,
    ``_forward_factorized`` and the class method ``cost``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    rank
        The layer's rank, written as its format writes it
        (:mod:`tuckerlab.formats`); checked against the shape.
    stride, padding, dilation, groups, bias, padding_mode
        As in :class:`torch.nn.Conv2d`; only ``groups=1`` is accepted.
    execution : {"factorized", "reconstructed"}
    device, dtype
        Where the (randomly initialised) factors are created.
    """

    #: Name of the format (:mod:`tuckerlab.formats`) that decomposes weights for this layer.
    format_name: ClassVar[str] = ""

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
        super().__init__(execution)
        if groups != 1:
            raise ValueError(
                f"{type(self).__name__} supports only groups=1 convolutions, got groups={groups}; "
                "grouped and depthwise convolutions are left as they are."
            )
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {PADDING_MODES}, got {padding_mode!r}.")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.groups = 1
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"`padding` string must be 'same' or 'valid', got {padding!r}.")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions.")
            self.padding = padding
            if padding == "valid":
                pads = ((0, 0), (0, 0))
            else:
                pads = []
                for d, k in zip(self.dilation, self.kernel_size):
                    total = d * (k - 1)
                    pads.append((total // 2, total - total // 2))
                pads = tuple(pads)
        else:
            self.padding = _pair(padding, "padding")
            pads = tuple((p, p) for p in self.padding)
        # For each axis: padding done inside the convolution (symmetric zero
        # padding) or by F.pad just before it (other modes, asymmetric 'same').
        self._pads = pads
        self._conv_pad = tuple(
            p0 if (padding_mode == "zeros" and p0 == p1) else 0 for (p0, p1) in pads
        )
        self._pre_pad = tuple(
            (p0 + p1 > 0) and not (padding_mode == "zeros" and p0 == p1) for (p0, p1) in pads
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._build(rank, dict(device=device, dtype=dtype))
        self.reset_parameters()

    def _build(self, rank, factory: dict) -> None:  # pragma: no cover - abstract
        """Create the factor parameters for ``rank`` (``factory`` holds ``device`` and ``dtype``)."""
        raise NotImplementedError

    def reset_parameters(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ----------------------------------------------------------- construction
    @classmethod
    def _unpack(cls, decomposition) -> tuple[int, int, tuple[int, int], object, dict]:  # pragma: no cover
        """``(in_channels, out_channels, kernel_size, rank, {parameter name: tensor})`` of a decomposition."""
        raise NotImplementedError

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
    ):
        """Build the layer from factors: the decomposition of a weight in the layer's format.

        Parameters
        ----------
        decomposition
            What the layer's format decomposes a weight into
            (:meth:`tuckerlab.formats.Format.decompose`), or the factors
            themselves (see the class's ``_unpack``).
        stride, padding, dilation, padding_mode
            Hyper-parameters of the convolution, as in :class:`torch.nn.Conv2d`.
        bias : tensor of shape ``(T,)`` or None
        execution : {"factorized", "reconstructed"}

        Returns
        -------
        FactorizedConv2d
            Of the class it is called on.
        """
        in_channels, out_channels, kernel_size, rank, tensors = cls._unpack(decomposition)
        ref = next(iter(tensors.values()))
        layer = cls(
            in_channels, out_channels, kernel_size, rank, stride=stride, padding=padding, dilation=dilation,
            bias=bias is not None, padding_mode=padding_mode, execution=execution, device=ref.device,
            dtype=ref.dtype,
        )
        with torch.no_grad():
            for name, value in tensors.items():
                layer.get_parameter(name).copy_(value)
        layer._copy_bias(bias)
        return layer

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank, execution: str = "factorized", **decompose_kwargs):
        """Compress a trained ``nn.Conv2d``: its weight decomposed in the layer's format at ``rank``.

        Parameters
        ----------
        conv : torch.nn.Conv2d
            With ``groups=1``.
        rank
            As the format writes it; checked against the weight's shape.
        execution : {"factorized", "reconstructed"}
        **decompose_kwargs
            Options of the format's decomposition (e.g. ``method``,
            ``n_iter_max`` for Tucker; ``n_iter_max``, ``random_state`` for CP).
        """
        return cls._from_conv_via_format(conv, rank, execution, decompose_kwargs)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_conv(conv: nn.Module, cls_name: str) -> None:
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(
                f"{cls_name}.from_conv expects a torch.nn.Conv2d, got {type(conv).__name__}; "
                "use LowRankLinear.from_linear for nn.Linear layers."
            )
        if conv.groups != 1:
            raise ValueError(
                f"{cls_name}.from_conv supports only groups=1 convolutions, got groups={conv.groups} "
                f"(in_channels={conv.in_channels}); grouped and depthwise convolutions are left as they are."
            )
        if conv.padding_mode not in PADDING_MODES:  # pragma: no cover - torch accepts only these
            raise ValueError(f"padding_mode {conv.padding_mode!r} is not supported; accepted: {PADDING_MODES}.")

    @classmethod
    def _from_conv_via_format(cls, conv: nn.Module, rank, execution: str, options: dict):
        """``from_conv``: the layer's format checks the rank and decomposes the weight, then the layer is built."""
        cls._check_conv(conv, cls.__name__)
        from tuckerlab.formats import get_format

        fmt = get_format(cls.format_name)
        rank = fmt.validate_rank(conv.weight.shape, rank)
        dec = fmt.decompose(conv.weight.detach(), rank, **fmt.check_options(options, shape=conv.weight.shape))
        return fmt.layer_from_factors(conv, dec, execution)

    @staticmethod
    def _conv_kwargs(conv: nn.Conv2d, execution: str) -> dict:
        return dict(
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias,
            padding_mode=conv.padding_mode,
            execution=execution,
        )

    def _factor(self, name: str, channels: int, rank: int, kw_: dict) -> None:
        """A ``(channels, rank)`` channel factor, or None when ``rank == channels``.

        A square factor adds nothing the neighbouring core cannot hold, so it
        is folded there and not stored: no parameters, no 1x1 stage.
        """
        if rank < channels:
            setattr(self, name, nn.Parameter(torch.empty(channels, rank, **kw_)))
        else:
            self.register_parameter(name, None)

    def _reset_bias(self, fan_in: int) -> None:
        if self.bias is not None:
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            with torch.no_grad():
                self.bias.uniform_(-bound, bound)

    def _copy_bias(self, bias) -> None:
        if bias is not None:
            with torch.no_grad():
                self.bias.copy_(bias.detach())

    # ----------------------------------------------------------------- padding
    def _pad(self, x: torch.Tensor, height: bool, width: bool) -> torch.Tensor:
        """Apply the explicit (``F.pad``) part of the padding along the given axes."""
        (pt, pb), (pl, pr) = self._pads
        pad_h = height and self._pre_pad[0]
        pad_w = width and self._pre_pad[1]
        if not (pad_h or pad_w):
            return x
        pad = (pl if pad_w else 0, pr if pad_w else 0, pt if pad_h else 0, pb if pad_h else 0)
        return F.pad(x, pad, mode=_F_PAD_MODE[self.padding_mode])

    def _dense_conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """One convolution with ``weight`` and this layer's hyper-parameters."""
        x = self._pad(x, True, True)
        return F.conv2d(x, weight, self.bias, self.stride, self._conv_pad, self.dilation)

    def _conv_h(self, x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """The ``Kh x 1`` stage: height stride, padding and dilation."""
        x = self._pad(x, True, False)
        return F.conv2d(
            x, weight, None, (self.stride[0], 1), (self._conv_pad[0], 0), (self.dilation[0], 1), groups
        )

    def _conv_w(self, x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """The ``1 x Kw`` stage: width stride, padding and dilation."""
        x = self._pad(x, False, True)
        return F.conv2d(
            x, weight, None, (1, self.stride[1]), (0, self._conv_pad[1]), (1, self.dilation[1]), groups
        )

    # ------------------------------------------------------------------ dense
    def reconstruct_weight(self) -> torch.Tensor:
        """The dense ``(T, S, Kh, Kw)`` weight rebuilt from the factors (differentiable)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _forward_reconstructed(self, x: torch.Tensor) -> torch.Tensor:
        return self._dense_conv(x, self.reconstruct_weight())

    def to_conv(self) -> nn.Conv2d:
        """A dense ``nn.Conv2d`` with the rebuilt weight and the same hyper-parameters.

        Returns
        -------
        torch.nn.Conv2d
            A new module (no parameters are shared with this layer).
        """
        weight = self.reconstruct_weight().detach()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=1,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias.detach())
        return conv

    @classmethod
    def cost(cls, weight_shape, rank, output_hw, input_hw=None, *, stride=1, bias: bool = False) -> tuple[int, int]:
        """Parameters and MACs (per image) of the layer, without building it.

        MACs are those of ``"factorized"`` execution; ``"reconstructed"``
        execution costs the dense convolution plus rebuilding the weight.

        Parameters
        ----------
        weight_shape : sequence of int
            ``(T, S, Kh, Kw)`` of the dense layer.
        rank
            As the layer takes it.
        output_hw : (int, int)
            Spatial size of the layer's output.
        input_hw : (int, int), optional
            Spatial size of its input (the first stage runs there); by
            default ``output_hw`` times ``stride``.
        stride : int or (int, int), default 1
            Used only to infer ``input_hw``.
        bias : bool, default False
            Count the ``T`` bias parameters.

        Returns
        -------
        (params, macs) : tuple of int
            The formulas are in each layer's ``_cost``.
        """
        t, s, kh, kw = (int(d) for d in weight_shape)
        out, inp = cls._hw(output_hw, input_hw, stride)
        params, macs = cls._cost((t, s, kh, kw), rank, out, inp)
        return params + (t if bias else 0), macs

    @classmethod
    def _cost(cls, shape, rank, output_hw, input_hw) -> tuple[int, int]:  # pragma: no cover - abstract
        """``(params without bias, MACs)`` for ``shape = (T, S, Kh, Kw)`` and the spatial sizes."""
        raise NotImplementedError

    @staticmethod
    def _hw(output_hw, input_hw, stride) -> tuple[tuple[int, int], tuple[int, int]]:
        ho, wo = (int(d) for d in output_hw)
        if input_hw is None:
            sh, sw = _pair(stride, "stride")
            return (ho, wo), (ho * sh, wo * sw)
        hi, wi = (int(d) for d in input_hw)
        return (ho, wo), (hi, wi)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
            f"stride={self.stride}"
        )
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + f", execution={self.execution!r}"


def set_execution(model: nn.Module, mode: str) -> nn.Module:
    """Set the execution mode of every factorized layer in ``model``.

    Explained in: chapter 3, "Factorized convolutions"
    (notebooks/03_factorized_convolutions.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        Any module; layers that are not factorized are left alone.
    mode : {"factorized", "reconstructed"}
        ``"factorized"`` runs the chain of small layers, ``"reconstructed"``
        rebuilds each dense weight and runs one layer.

    Returns
    -------
    torch.nn.Module
        ``model`` itself (changed in place).
    """
    _check_execution(mode)
    for module in model.modules():
        if isinstance(module, FactorizedModule):
            module.execution = mode
    return model

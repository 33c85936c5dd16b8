"""Exact rewrites of a model for inference: fewer, larger stages, same function.

A factorized convolution ends in a 1x1 stage (a matrix applied to every
pixel), and in CNNs it is usually followed by an eval-mode BatchNorm, which
is a per-channel affine map: the two compose into one 1x1 stage. Two 1x1
stages in a row with nothing between them are one 1x1 stage too. Both
rewrites change no output beyond floating-point rounding and remove whole
passes over the activations, which is where a factorized chain loses time
against one dense convolution (small 1x1 convolutions are memory-bound).

:func:`fold_batchnorm`
    every ``BatchNorm2d`` whose input is the output of a convolution (dense
    ``nn.Conv2d`` or a factorized layer of :mod:`tuckerlab.layers`) used
    nowhere else is folded into that layer's last 1x1 factor (its weight,
    for a dense convolution) and bias, and replaced by ``nn.Identity``;
:func:`merge_pointwise`
    the two pairs of consecutive 1x1 stages of a TT-Tucker layer (the
    Tucker input factor then the first TT core; the last TT core then the
    Tucker output factor) are multiplied out, which turns the layer into the
    :class:`~tuckerlab.layers.TTConv2d` with the same TT ranks. The merged
    chain always does fewer MACs, since a TT rank never exceeds the Tucker
    rank beside it.
:func:`fuse_for_inference`
    both, on a copy in eval mode.

Which BatchNorm follows which convolution is read from the data flow of one
:mod:`torch.fx` trace of the model (factorized layers as leaves), not from
the order of its attributes; a model that ``torch.fx`` cannot trace is
reported with the tracer's error.

Not rewritten: consecutive 1x1 stages of *different* layers (a dense 1x1
convolution feeding a factorized layer with nothing between them), which
these CIFAR and ImageNet networks do not have (a ReLU always separates two
layers), and chains of a layer with a 1x1 kernel (no class holds the merged
result with fewer stages).
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn

from tuckerlab.layers import CPConv2d, FactorizedModule, TTConv2d, TTTuckerConv2d, TuckerConv2d

__all__ = ["fuse_for_inference", "fold_batchnorm", "merge_pointwise"]


class _LeafTracer(torch.fx.Tracer):
    """A tracer that keeps factorized layers whole (their forward branches on the execution mode)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, FactorizedModule) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> torch.fx.Graph:
    try:
        return _LeafTracer().trace(model)
    except Exception as err:  # torch.fx raises many types (TraceError, TypeError, ...)
        raise ValueError(
            f"{type(model).__name__} cannot be traced by torch.fx, so which layer feeds which BatchNorm "
            f"is unknown: {type(err).__name__}: {err}"
        ) from err


def _output_factor(layer: nn.Module) -> tuple[torch.Tensor, int] | None:
    """The stored tensor whose slices along one axis belong to the output channels, and that axis."""
    if isinstance(layer, TTConv2d) or (isinstance(layer, TTTuckerConv2d) and layer.factor_out is None):
        return layer.cores[-1], 1  # (r3, T, 1); a square output factor is folded into it
    if isinstance(layer, TuckerConv2d) and layer.factor_out is None:
        return layer.core, 0  # (T, r_in, Kh, Kw): the square output factor is folded into the core
    if isinstance(layer, (TuckerConv2d, TTTuckerConv2d, CPConv2d)):
        return layer.factor_out, 0  # (T, r)
    if type(layer) is nn.Conv2d:
        return layer.weight, 0  # (T, S/groups, Kh, Kw)
    return None


def _fold_into(layer: nn.Module, bn: nn.BatchNorm2d) -> None:
    """``bn(layer(x))`` becomes ``layer(x)``: scale the output factor, shift the bias."""
    factor, axis = _output_factor(layer)
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.weight is not None:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    shape = [1] * factor.ndim
    shape[axis] = -1
    with torch.no_grad():
        factor.mul_(scale.reshape(shape).to(factor.dtype))
        shift = shift.to(factor.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(shift.clone())
        else:
            layer.bias.mul_(scale.to(factor.dtype)).add_(shift)


def _foldable_bn(bn: nn.Module) -> bool:
    return (
        isinstance(bn, nn.BatchNorm2d)
        and not bn.training
        and bn.track_running_stats
        and bn.running_mean is not None
    )


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every eval-mode BatchNorm2d into the convolution that feeds it, in place.

    Parameters
    ----------
    model : torch.nn.Module
        Its BatchNorm layers must be in eval mode (running statistics); one
        in training mode is left as it is.

    Returns
    -------
    list of (str, str)
        ``(layer name, BatchNorm name)`` of each fold; each of those
        BatchNorms is now ``nn.Identity`` and the layer has a bias.

    Notes
    -----
    A fold is made only when the BatchNorm's input is the output of one
    call of a dense ``nn.Conv2d`` (plain class, any ``groups``) or a
    factorized convolution, that output goes nowhere else, and each module
    is called once in the forward pass. With ``y = W x + b`` and the
    BatchNorm ``gamma (y - mu) / sqrt(var + eps) + beta``, the new output
    factor is ``diag(s) W`` and the new bias ``s (b - mu) + beta`` with
    ``s = gamma / sqrt(var + eps)``. For a factorized layer ``W`` is its
    last 1x1 factor, so the factorized and the reconstructed execution both
    stay exact.

    Raises
    ------
    ValueError
        ``torch.fx`` cannot trace the model.
    """
    graph = _trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or not _foldable_bn(modules[node.target]):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        layer = modules[source.target]
        if (
            _output_factor(layer) is None
            or len(source.users) != 1
            or calls[source.target] != 1
            or calls[node.target] != 1
        ):
            continue
        _fold_into(layer, modules[node.target])
        _replace(model, node.target, nn.Identity())
        folded.append((source.target, node.target))
    return folded


def _tt_tucker_as_tt(layer: TTTuckerConv2d) -> TTConv2d:
    """The TT convolution with the Tucker factors multiplied into the outer TT cores."""
    g1, g2, g3, g4 = (c.detach() for c in layer.cores)
    # (1, S, r1) and (r3, T, 1); a square factor is already folded into its core
    first = g1 if layer.factor_in is None else torch.einsum("si,xia->xsa", layer.factor_in.detach(), g1)
    last = g4 if layer.factor_out is None else torch.einsum("to,coz->ctz", layer.factor_out.detach(), g4)
    return TTConv2d.from_factors(
        [first, g2, g3, last],
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        bias=None if layer.bias is None else layer.bias.detach(),
        padding_mode=layer.padding_mode,
        execution=layer.execution,
    )


def merge_pointwise(model: nn.Module) -> list[str]:
    """Multiply out consecutive 1x1 stages inside factorized layers, in place.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of str
        Names of the layers rewritten (each :class:`~tuckerlab.layers.TTTuckerConv2d`
        is now a :class:`~tuckerlab.layers.TTConv2d` with the same TT ranks).

    Notes
    -----
    A TT-Tucker layer runs 1x1 (S -> r_in), 1x1 (r_in -> r1), Kh x 1,
    1 x Kw, 1x1 (r3 -> r_out), 1x1 (r_out -> T). The merged first stage costs
    ``S r1`` MACs per pixel against ``S r_in + r_in r1`` (and ``r1 <= r_in``),
    the merged last one ``r3 T`` against ``r3 r_out + r_out T``. The merged
    layer stores ``S r1 + r3 T`` numbers in its outer cores instead of
    ``S r_in + r_in r1 + r3 r_out + r_out T``, which is fewer unless the
    Tucker ranks are far below the TT ranks' bounds.
    """
    merged = []
    for name, module in list(model.named_modules()):
        if isinstance(module, TTTuckerConv2d):
            _replace(model, name, _tt_tucker_as_tt(module))
            merged.append(name)
    return merged


def fuse_for_inference(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The model with BatchNorm folded into convolutions and 1x1 stages merged, in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        Dense or factorized.
    inplace : bool, default False
        Rewrite ``model`` itself instead of a deep copy.

    Returns
    -------
    torch.nn.Module
        In eval mode, computing the same function as ``model`` in eval mode
        (up to floating-point rounding), with :func:`merge_pointwise` and
        :func:`fold_batchnorm` applied. Its ``state_dict`` differs (folded
        BatchNorms are gone), so save the model before fusing, not after.

    Raises
    ------
    ValueError
        ``torch.fx`` cannot trace the model.

    Examples
    --------
    >>> fast = fuse_for_inference(compressed_model)  # doctest: +SKIP
    >>> torch.testing.assert_close(fast(x), compressed_model.eval()(x))  # doctest: +SKIP
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    merge_pointwise(model)
    fold_batchnorm(model)
    return model

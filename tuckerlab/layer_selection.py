"""Which layers of a model are compressed: the one layer selection every part of tuckerlab uses.

:func:`select_layers` walks a model once: it runs one forward pass of a
batch of one (eval mode, no gradient) with hooks that record each
candidate layer's input and output shapes and how often it runs, and counts
the whole model's MACs in the same pass. The rule, applied in one place for
:func:`~tuckerlab.surgery.compress_model`, the budget solver, Bayesian
optimisation, the rank selectors and the methods' projections:

- candidates are ``nn.Conv2d`` and ``nn.Linear`` layers (linear projections
  inside ``nn.MultiheadAttention`` are not: attention calls their weights
  directly);
- grouped and depthwise convolutions (``groups != 1``) are never decomposed;
- ``nn.Linear`` layers only with ``include_linear=True``;
- the first convolution to run (``skip_first``, few input channels and
  little to gain) and 1x1 convolutions (``skip_pointwise``) are left dense
  by default;
- ``skip`` names layers (``fnmatch`` patterns or a predicate) to leave as
  they are; a pattern that matches no module is an error;
- ``names`` restricts the selection to given layers (the rules above still
  apply to them).
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["LayerInfo", "LayerSelection", "select_layers", "skip_predicate", "check_layer_names"]


@dataclass
class LayerInfo:
    """One selected layer: its module and what one forward pass saw of it.

    Attributes
    ----------
    name : str
        Qualified name, as in ``model.named_modules()``.
    module : torch.nn.Module
        The layer itself (not a copy).
    kind : {"conv", "linear"}
    weight_shape : tuple of int
    input_shape, output_shape : tuple of int or None
        Shapes of one sample (no batch dimension) at the layer's first call;
        None when the layer did not run in the forward pass.
    calls : int
        How many times it ran in one forward pass (0: not at all).
    bias : bool
    """

    name: str
    module: nn.Module
    kind: str
    weight_shape: tuple
    input_shape: tuple | None
    output_shape: tuple | None
    calls: int
    bias: bool

    @property
    def in_hw(self) -> tuple | None:
        """Spatial size of the input (convolutions), or None."""
        return tuple(self.input_shape[-2:]) if self.kind == "conv" and self.input_shape is not None else None

    @property
    def out_hw(self) -> tuple | None:
        """Spatial size of the output (convolutions); for linear layers the leading dims of one sample's output."""
        if self.output_shape is None:
            return None
        if self.kind == "conv":
            return tuple(self.output_shape[-2:])
        return tuple(self.output_shape[:-1]) or None

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    def dense_cost(self) -> tuple[int, int]:
        """``(params, MACs per image)`` of the layer as it is (all its calls)."""
        params = math.prod(self.weight_shape) + (self.weight_shape[0] if self.bias else 0)
        if self.calls == 0:
            return params, 0
        rows = math.prod(self.out_hw) if self.out_hw else 1
        return params, rows * math.prod(self.weight_shape) * self.calls

    def cost(self, fmt, rank) -> tuple[int, int]:
        """``(params, MACs per image)`` of the layer in format ``fmt`` at ``rank`` (all its calls)."""
        params, macs = fmt.cost(self.weight_shape, rank, self.out_hw, self.in_hw, bias=self.bias)
        return params, macs * self.calls


@dataclass
class LayerSelection:
    """The layers chosen for compression, in the order they run, with the model's totals.

    Attributes
    ----------
    layers : dict of str to LayerInfo
    skipped : list of (str, str)
        Candidate layers left out, with the reason.
    input_size : tuple of int
    total_params : int
        Parameters of the whole model.
    total_macs : int
        MACs per image of the whole model (one ``FlopCounterMode`` pass).
    """

    layers: dict
    skipped: list = field(default_factory=list)
    input_size: tuple = (3, 32, 32)
    total_params: int = 0
    total_macs: int = 0

    def __iter__(self):
        return iter(self.layers.values())

    def __len__(self) -> int:
        return len(self.layers)

    def __contains__(self, name) -> bool:
        return name in self.layers

    def __getitem__(self, name: str) -> LayerInfo:
        return self.layers[name]

    @property
    def names(self) -> list[str]:
        return list(self.layers)

    def modules(self) -> dict[str, nn.Module]:
        """``{name: module}`` of the selected layers."""
        return {n: info.module for n, info in self.layers.items()}

    def only(self, names: Iterable[str], reason: str | Callable[[str], str] = "no rank") -> "LayerSelection":
        """The selection restricted to ``names``; the others go to ``skipped`` with ``reason`` (or ``reason(name)``)."""
        keep = set(names)
        why = reason if callable(reason) else (lambda name: reason)
        return LayerSelection(
            {n: i for n, i in self.layers.items() if n in keep},
            [*self.skipped, *((n, why(n)) for n in self.layers if n not in keep)],
            self.input_size, self.total_params, self.total_macs,
        )


def skip_predicate(skip, names: Iterable[str] | None = None) -> Callable[[str, nn.Module], bool]:
    """``skip`` (None, a name or ``fnmatch`` pattern, several, or a predicate) as a predicate.

    With ``names`` (the model's module names), a pattern that matches none of
    them raises ``ValueError``.
    """
    if skip is None:
        return lambda name, module: False
    if callable(skip):
        return skip
    patterns = [skip] if isinstance(skip, str) else list(skip)
    if names is not None:
        names = list(names)
        unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unknown:
            raise ValueError(f"`skip` entries match no module of the model: {unknown}")
    return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_layer_names(model: nn.Module, names: Iterable[str]) -> list[str]:
    """``names`` as a list, after checking that each is an ``nn.Conv2d`` or ``nn.Linear`` of ``model``.

    Raises ``ValueError`` listing the names that are not in the model, or
    the ones that are other modules (with their types).
    """
    names = list(names)
    modules = dict(model.named_modules())
    unknown = sorted(set(names) - set(modules))
    if unknown:
        raise ValueError(f"layer names that are not in the model: {unknown}")
    wrong = sorted(set(names) - set(_candidates(model)))
    if wrong:
        raise ValueError(
            f"layers that are not nn.Conv2d or nn.Linear layers: {[(n, type(modules[n]).__name__) for n in wrong]}"
        )
    return names


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    return {
        n: m for n, m in modules.items()
        if isinstance(m, nn.Conv2d)
        or (isinstance(m, nn.Linear) and not isinstance(modules.get(n.rpartition(".")[0]), nn.MultiheadAttention))
    }


def _forward_pass(model: nn.Module, modules: dict[str, nn.Module], input_size) -> tuple[dict, int]:
    """``({name: [(input shape, output shape), ...]}, total MACs)`` of one eval-mode pass of a batch of one."""
    shapes: dict[str, list] = {}

    def hook(name):
        def fn(module, args, out):
            shapes.setdefault(name, []).append((tuple(args[0].shape[1:]), tuple(out.shape[1:])))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    x = torch.zeros(1, *input_size, device=device, dtype=dtype)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.train(mode)
    return shapes, counter.get_total_flops() // 2


def select_layers(
    model: nn.Module,
    *,
    skip=None,
    include_linear: bool = False,
    skip_first: bool = True,
    skip_pointwise: bool = True,
    input_size: Sequence[int] = (3, 32, 32),
    names: Iterable[str] | None = None,
    convs: bool = True,
) -> LayerSelection:
    """The layers of ``model`` to compress, in the order they run (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Only read (one forward pass in eval mode; its modes are restored).
    skip : str, iterable of str or callable, optional
        Names or ``fnmatch`` patterns of layers to leave dense, or a
        predicate ``skip(name, module) -> bool``.
    include_linear : bool
        Also select ``nn.Linear`` layers.
    skip_first, skip_pointwise : bool
        Leave the first convolution to run, and 1x1 convolutions, dense.
    input_size : sequence of int
        One input without the batch dimension.
    names : iterable of str, optional
        Only these layers (each must be an ``nn.Conv2d`` or ``nn.Linear`` of
        the model); the other rules still apply.
    convs : bool
        Select convolutions (False: linear layers only).

    Returns
    -------
    LayerSelection

    Raises
    ------
    ValueError
        For a ``skip`` pattern or a name in ``names`` that matches no module,
        a name that is not a convolution or linear layer, or a model with NaN
        or Inf parameters (named).
    """
    from tuckerlab.projection import check_finite

    input_size = tuple(int(d) for d in input_size)
    check_finite(dict(model.named_parameters()), "parameter")  # a broken model is not compressed, even in part
    all_names = [n for n, _ in model.named_modules()]
    skipped_fn = skip_predicate(skip, all_names)
    candidates = _candidates(model)
    wanted = None if names is None else check_layer_names(model, names)
    shapes, total_macs = _forward_pass(model, candidates, input_size)
    # run order first, then candidates that did not run (in module order)
    order = [n for n in shapes] + [n for n in candidates if n not in shapes]
    first = next((n for n in shapes if isinstance(candidates[n], nn.Conv2d)), None)
    if first is None:
        first = next((n for n in candidates if isinstance(candidates[n], nn.Conv2d)), None)
    layers, skipped = {}, []
    for name in order:
        module = candidates[name]
        linear = isinstance(module, nn.Linear)
        if wanted is not None and name not in wanted:
            continue
        if linear and not include_linear:
            skipped.append((name, "linear (include_linear=False)"))
            continue
        if not linear and not convs:
            continue
        if skipped_fn(name, module):
            skipped.append((name, "skip"))
            continue
        if not linear:
            if module.groups != 1:
                skipped.append((name, f"groups={module.groups}"))
                continue
            if skip_first and name == first:
                skipped.append((name, "first conv"))
                continue
            if skip_pointwise and tuple(module.kernel_size) == (1, 1):
                skipped.append((name, "1x1 conv"))
                continue
        seen = shapes.get(name)
        layers[name] = LayerInfo(
            name=name, module=module, kind="linear" if linear else "conv",
            weight_shape=tuple(module.weight.shape),
            input_shape=seen[0][0] if seen else None, output_shape=seen[0][1] if seen else None,
            calls=len(seen) if seen else 0, bias=module.bias is not None,
        )
    total_params = sum(p.numel() for p in model.parameters())
    return LayerSelection(layers, skipped, input_size, total_params, total_macs)

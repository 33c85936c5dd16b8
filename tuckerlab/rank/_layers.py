"""Which layers of a model the model-level rank searches consider.

The same choice as :func:`tuckerlab.surgery.compress_model` makes by default
(first convolution and 1x1 convolutions left dense, grouped convolutions and
``nn.Linear`` layers left out unless asked), so that ranks found for a model
are the ranks ``compress_model`` applies.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Sequence

import torch
from torch import nn


def skip_predicate(skip) -> Callable[[str, nn.Module], bool]:
    """``skip`` (names, ``fnmatch`` patterns, a predicate or None) as a predicate."""
    if skip is None:
        return lambda name, module: False
    if callable(skip):
        return skip
    patterns = [skip] if isinstance(skip, str) else list(skip)
    return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def forward_shapes(model: nn.Module, modules: dict[str, nn.Module], input_size: Sequence[int]) -> dict[str, list]:
    """``{name: [(input shape, output shape), ...]}`` of one forward pass of a batch of one.

    Keys are in the order the modules first run; modules that do not run are
    absent. The model runs in eval mode under ``no_grad``; its modes are
    restored.
    """
    shapes: dict[str, list] = {}

    def hook(name):
        def fn(module, args, out):
            shapes.setdefault(name, []).append((tuple(args[0].shape), tuple(out.shape)))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    ref = next(model.parameters())
    x = torch.zeros(1, *input_size, device=ref.device, dtype=ref.dtype)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.train(mode)
    return shapes


def select_layers(
    model: nn.Module,
    skip=None,
    include_linear: bool = False,
    skip_first: bool = True,
    skip_pointwise: bool = True,
    input_size: Sequence[int] = (3, 32, 32),
    convs: bool = True,
) -> tuple[dict[str, nn.Module], dict[str, list]]:
    """Layers to rank, in the order they run, and their forward shapes."""
    skipped = skip_predicate(skip)
    candidates = {
        n: m for n, m in model.named_modules()
        if (isinstance(m, nn.Conv2d) and m.groups == 1) or isinstance(m, nn.Linear)
    }
    shapes = forward_shapes(model, candidates, tuple(input_size))
    first = next((n for n in shapes if isinstance(candidates[n], nn.Conv2d)), None)
    chosen = {}
    for name in shapes:
        module = candidates[name]
        if skipped(name, module):
            continue
        if isinstance(module, nn.Linear):
            if include_linear:
                chosen[name] = module
            continue
        if not convs or (skip_first and name == first):
            continue
        if skip_pointwise and tuple(module.kernel_size) == (1, 1):
            continue
        chosen[name] = module
    return chosen, {n: shapes[n] for n in chosen}

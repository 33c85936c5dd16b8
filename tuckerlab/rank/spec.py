"""Rank choices written as short strings (for the command line and configs).

==================  ==========================================================
specification       meaning
==================  ==========================================================
``evbmf``           EVBMF ranks of the unfoldings (:func:`evbmf_rule`)
``evbmf:W``         EVBMF ranks weakened by ``W`` in ``[0, 1]`` (1 = plain)
``energy:E``        smallest ranks keeping a fraction ``E`` of the energy
``ratio:R``         ``R`` times every dimension (:func:`fixed_ratio`)
``params:T``        whole-model parameter ratio ``T`` (:func:`solve_budget`)
``macs:T``          whole-model MAC ratio ``T`` (:func:`solve_budget`)
``bayesopt[:N]``    Bayesian optimisation with ``N`` trials per search
                    (per-layer Tucker-2 ranks for ``tucker2``, a global factor
                    on EVBMF ranks for the other formats)
``lwiq:M:T[:P]``    LWIQ: TT ranks from imprinted layer significance times
                    one factor meeting the ``M`` (``params``/``macs``)
                    budget ``T``, features pooled to ``P`` values
                    (:class:`~tuckerlab.rank.LWIQRanks`)
``proxy_search``    ``proxy_search:M:T[:N]``, the proxy-based search LWIQ is
                    compared with, ``N`` candidates
                    (:class:`~tuckerlab.rank.ProxySearchRanks`)
``NAME[:ARG]``      any selector registered with
                    :func:`~tuckerlab.rank.selectors.register_selector`
``8,8``             one literal rank for every layer (``8`` for CP;
                    ``8,8;4,6,4`` for TT-Tucker)
==================  ==========================================================

Fractions must lie in ``(0, 1]``. The strings are parsed by
:func:`tuckerlab.rank.selectors.as_selector`; :func:`from_spec` resolves one
for a model into what :func:`~tuckerlab.surgery.compress_model` takes.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .selectors import SPEC_HELP, SelectionContext, SpectralRanks, UniformRank, as_selector

__all__ = ["from_spec", "SPEC_HELP"]


def from_spec(spec: str, model: nn.Module | None = None, method: str = "tucker2",
              input_size: Sequence[int] = (3, 32, 32)):
    """Turn a rank specification string into what ``compress_model`` accepts.

    Parameters
    ----------
    spec : str
        See the table in the module docstring.
    model : torch.nn.Module, optional
        Needed by ``params:``, ``macs:``, ``bayesopt`` and every selector
        that looks at the whole model.
    method : str
        The format of the convolutions (``"tucker2"``, ``"tt"``,
        ``"tt_tucker"``, ``"cp"``).
    input_size : sequence of int
        One input without the batch dimension (for MACs).

    Returns
    -------
    rank rule, dict or rank
        A rank rule (``evbmf``, ``energy``, ``ratio``), a ``{layer name:
        rank}`` dict (selectors that look at the model) or one literal rank.

    Raises
    ------
    ValueError
        If the specification is not understood, a fraction is outside
        ``(0, 1]``, a budget cannot be met, or a model is missing.
    """
    from tuckerlab.layer_selection import select_layers

    from .rules import rank_format

    if not isinstance(spec, str):
        raise ValueError(f"rank specification must be a string, got {spec!r}")
    selector = as_selector(spec)
    if isinstance(selector, UniformRank):
        return selector.rank
    if isinstance(selector, SpectralRanks):
        return selector._rule
    if not isinstance(model, nn.Module):
        raise ValueError(f"rank specification {spec!r} needs the model")
    layers = select_layers(model, input_size=input_size)
    return selector.select(model, rank_format(method), layers, SelectionContext(input_size=tuple(input_size)))

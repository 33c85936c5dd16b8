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
                    on EVBMF ranks for the other methods)
``8,8``             one literal rank for every layer (``8`` for CP;
                    ``8,8;4,6,4`` for TT-Tucker)
==================  ==========================================================

Fractions must lie in ``(0, 1]``.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .bayesopt import bayesopt_global_factor, bayesopt_ranks
from .budget import solve_budget
from .rules import _check_fraction, canonical_method, energy_rule, evbmf_rule, fixed_ratio

__all__ = ["from_spec", "SPEC_HELP"]

SPEC_HELP = (
    "evbmf, evbmf:W (weakened, W in [0, 1]), energy:E, ratio:R, params:T, macs:T "
    "(E, R, T in (0, 1]), bayesopt[:N], or a literal rank such as 8,8"
)


def _literal(text: str):
    groups = [g for g in text.split(";")]
    parsed = []
    for g in groups:
        parts = [p.strip() for p in g.split(",")]
        if not all(p.isdigit() for p in parts):
            return None
        parsed.append(tuple(int(p) for p in parts) if len(parts) > 1 else int(parts[0]))
    return tuple(parsed) if len(parsed) > 1 else parsed[0]


def from_spec(spec: str, model: nn.Module | None = None, method: str = "tucker2",
              input_size: Sequence[int] = (3, 32, 32)):
    """Turn a rank specification string into what ``compress_model`` accepts.

    Parameters
    ----------
    spec : str
        See the table in the module docstring.
    model : torch.nn.Module, optional
        Needed by ``params:``, ``macs:`` and ``bayesopt`` (which look at the
        whole model).
    method : str
        The decomposition (``"tucker2"``, ``"tt"``, ``"tt_tucker"``, ``"cp"``).
    input_size : sequence of int
        One input without the batch dimension (for MACs).

    Returns
    -------
    rank rule, dict or rank
        A rank rule, a ``{layer name: rank}`` dict or one literal rank.

    Raises
    ------
    ValueError
        If the specification is not understood, a fraction is outside
        ``(0, 1]``, a budget cannot be met, or a model is missing.
    """
    if not isinstance(spec, str):
        raise ValueError(f"rank specification must be a string, got {spec!r}")
    text = spec.strip().lower()
    name, _, arg = text.partition(":")
    literal = _literal(text)
    if literal is not None:
        return literal
    if name == "evbmf":
        weakening = 1.0
        if arg:
            try:
                weakening = float(arg)
            except ValueError:
                raise ValueError(f"rank specification {spec!r}: weakening must be a number in [0, 1]") from None
        return evbmf_rule(weakening=weakening)
    if name in ("energy", "ratio") and arg:
        value = _check_fraction(_number(arg, spec), name)
        return energy_rule(value) if name == "energy" else fixed_ratio(value)
    if name in ("params", "macs") and arg:
        target = _number(arg, spec)
        _require_model(model, spec)
        return solve_budget(model, method, target, metric=name, input_size=input_size).ranks
    if name == "bayesopt":
        n_trials = 30
        if arg:
            if not arg.isdigit() or int(arg) < 1:
                raise ValueError(f"rank specification {spec!r}: the number of trials must be a positive integer")
            n_trials = int(arg)
        _require_model(model, spec)
        if canonical_method(method) == "tucker":
            return bayesopt_ranks(model, method, n_trials=n_trials, input_size=input_size).ranks
        return bayesopt_global_factor(model, method, n_trials=n_trials, input_size=input_size).ranks
    raise ValueError(f"rank specification {spec!r} is not understood; accepted: {SPEC_HELP}")


def _number(arg: str, spec: str) -> float:
    try:
        return float(arg)
    except ValueError:
        raise ValueError(f"rank specification {spec!r}: {arg!r} is not a number in (0, 1]") from None


def _require_model(model, spec: str) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"rank specification {spec!r} needs the model")

"""Rank selectors: one protocol for every way of choosing ranks, and a registry of them by name.

A *rank selector* chooses the ranks of the layers a model compresses::

    selector.select(model, format, layers, context) -> {layer name: rank}

- ``model`` is only read;
- ``format`` is the :class:`~tuckerlab.formats.Format` of the convolutions
  (``nn.Linear`` layers, when selected, use ``"lowrank"``: see
  :func:`format_for`);
- ``layers`` is the :class:`~tuckerlab.layer_selection.LayerSelection` of
  the layers to compress, with their shapes and how often they run;
- ``context`` is a :class:`SelectionContext`: the data set, the device, a
  seed, and helpers to draw batches or evaluate, so a selector may look at
  activations or accuracies (not only at weights).

A layer left out of the returned dict stays dense. Ranks are checked by the
caller against the format (:meth:`~tuckerlab.formats.Format.validate_rank`).
A selector also describes itself in plain values (:meth:`RankSelector.config`,
used to recognise a checkpoint's settings and written to ``results.json``)
and may keep state (``state_dict``/``load_state_dict``) for exact resumes.

Everything that chose ranks before is an adapter onto this protocol
(:func:`as_selector`): a specification string (``"params:0.3"``, ``"evbmf"``,
``"bayesopt:20"``, ``"8,8"``, or any registered name), a dict ``{layer:
rank}``, a rank rule ``rule(name, module, format_name)`` and one literal rank.
New selectors are registered by name with :func:`register_selector` and are
then usable from Python, ``from_spec`` strings and the command line
(``--rank NAME[:ARG]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from tuckerlab.formats import Format, get_format

__all__ = [
    "RankSelector", "SelectionContext", "register_selector", "unregister_selector", "selector_names",
    "as_selector", "format_for",
    "UniformRank", "FixedRanks", "RuleRanks", "SpectralRanks", "BudgetRanks", "BayesOptRanks", "ScaledToBudget",
    "SPEC_HELP", "parse_literal",
]


def format_for(info, fmt: Format) -> Format:
    """The format of one selected layer: ``fmt`` for convolutions, ``"lowrank"`` for linear layers."""
    return get_format("lowrank") if info.kind == "linear" else fmt


@dataclass
class SelectionContext:
    """What a rank selector may look at besides the weights.

    Attributes
    ----------
    data : ImageDataset or None
        The training data set (selectors must not use its test split).
    device : torch.device or None
        Where to run forward passes (default: the model's).
    seed : int
        For anything random a selector does.
    input_size : tuple of int
        One input without the batch dimension.
    """

    data: Any = None
    device: torch.device | None = None
    seed: int = 0
    input_size: tuple = (3, 32, 32)

    def require_data(self, who: str):
        """The data set, or a ``ValueError`` saying that ``who`` needs one."""
        if self.data is None:
            raise ValueError(f"the rank selector {who!r} looks at the data: pass data (a data set) to select ranks")
        return self.data

    def train_batch(self, n: int = 128, *, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` training images (normalised, float32, on :attr:`device`) and their labels, drawn with a seed."""
        from tuckerlab.data import normalize

        data = self.require_data("train_batch")
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        idx = torch.randperm(data.num_images("train"), generator=g)[:n]
        device = self.device or torch.device("cpu")
        mean = torch.as_tensor(data.mean, dtype=torch.float32, device=device)
        std = torch.as_tensor(data.std, dtype=torch.float32, device=device)
        x, y = data.take("train", idx)
        return normalize(x.to(device), mean, std), y.to(device=device, dtype=torch.long)


class RankSelector:
    """Base of the rank selectors: override :meth:`select` (and :meth:`config` for the settings).

    Attributes
    ----------
    name : str
        The registered name (empty for adapters that are not registered).
    needs_data : bool
        Whether :meth:`select` reads ``context.data``.
    """

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    #: The specification string the selector was made from (set by :func:`as_selector`), or None.
    spec: str | None = None

    def select(self, model: nn.Module, format: Format, layers, context: SelectionContext) -> dict[str, Any]:
        raise NotImplementedError

    def config(self) -> dict:
        """The selector's settings in plain values (checkpoints compare these; results record them)."""
        return {"selector": self.name or type(self).__qualname__}

    def info(self) -> dict:
        """What was chosen, in plain values (for results): the rule (its specification) and :meth:`config`."""
        return {"rule": self.spec or repr(self), **self.config()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "selector")
        return f"{type(self).__name__}({args})"


# ------------------------------------------------------------------ adapters
class UniformRank(RankSelector):
    """One literal rank for every selected layer (linear layers need an int)."""

    def __init__(self, rank):
        self.rank = rank

    def select(self, model, format, layers, context):
        out = {}
        for info in layers:
            if info.kind == "linear" and not (isinstance(self.rank, int) and not isinstance(self.rank, bool)):
                raise ValueError(
                    f"Linear layer {info.name!r} needs an int rank, got {self.rank!r}; pass a dict or a rank rule "
                    "to give linear layers their own rank."
                )
            out[info.name] = self.rank
        return out

    def config(self) -> dict:
        from tuckerlab.formats import rank_to_json

        return {"selector": "rank", "rank": rank_to_json(self.rank)}


class FixedRanks(RankSelector):
    """Ranks given per layer: ``{layer name: rank}`` (a value of None leaves the layer dense)."""

    def __init__(self, ranks: Mapping[str, Any]):
        self.ranks = dict(ranks)

    def select(self, model, format, layers, context):
        return {n: r for n, r in self.ranks.items() if n in layers and r is not None}

    def config(self) -> dict:
        from tuckerlab.formats import rank_to_json

        ranks = {n: None if r is None else rank_to_json(r) for n, r in self.ranks.items()}
        return {"selector": "ranks", "ranks": ranks}


class RuleRanks(RankSelector):
    """A rank rule ``rule(name, module, format_name) -> rank or None`` applied to each selected layer."""

    def __init__(self, rule: Callable):
        self.rule = rule

    def select(self, model, format, layers, context):
        out = {}
        for info in layers:
            r = self.rule(info.name, info.module, format_for(info, format).name)
            if r is not None:
                out[info.name] = r
        return out

    def config(self) -> dict:
        desc = getattr(self.rule, "description", None) or f"{self.rule.__module__}.{self.rule.__qualname__}"
        return {"selector": "rule", "rule": desc}


# ------------------------------------------------------------------ registry
_REGISTRY: dict[str, tuple[Callable[[str | None], RankSelector], str]] = {}


def register_selector(name: str, factory: Callable[[str | None], RankSelector] | None = None, *,
                      help: str = "", replace: bool = False):
    """Register a rank selector under ``name``: ``factory(arg) -> RankSelector`` for the spec ``name[:arg]``.

    Usable as a decorator on a :class:`RankSelector` subclass whose
    constructor takes the spec argument (a string, or None without one)::

        @register_selector("gradnorm", help="gradnorm[:F]: ...")
        class GradNorm(RankSelector):
            def __init__(self, arg=None): ...

    Raises ``ValueError`` for a name already taken (unless ``replace``), an
    empty name, or one with ``:`` or ``,`` in it.
    """
    if not isinstance(name, str) or not name or any(c in name for c in ":,;") or name != name.strip().lower():
        raise ValueError(f"a selector name must be a non-empty lower-case word without ':', ',' or ';', got {name!r}")

    def add(factory):
        if name in _REGISTRY and not replace:
            raise ValueError(f"rank selector {name!r} is already registered (pass replace=True to replace it)")
        _REGISTRY[name] = (factory, help or f"{name}[:ARG]")
        return factory

    return add(factory) if factory is not None else add


def unregister_selector(name: str) -> None:
    """Remove the selector called ``name`` from the registry (e.g. a test's)."""
    if name not in _REGISTRY:
        raise ValueError(f"rank selector {name!r} is not registered")
    del _REGISTRY[name]


def selector_names() -> tuple[str, ...]:
    """Registered selector names."""
    return tuple(_REGISTRY)


def _spec_help() -> str:
    return ", ".join(h for _, h in _REGISTRY.values()) + ", or a literal rank such as 8,8 (8,8;4,6,4 for TT-Tucker)"


class _SpecHelp(str):
    """The list of accepted specifications, read when printed (selectors may be registered later)."""

    def __str__(self) -> str:
        return _spec_help()

    __repr__ = __str__

    def __format__(self, spec) -> str:
        return format(_spec_help(), spec)


SPEC_HELP = _SpecHelp("rank specifications")


def parse_literal(text: str):
    """``"8,8"`` -> ``(8, 8)``, ``"8"`` -> ``8``, ``"8,8;4,6,4"`` -> ``((8, 8), (4, 6, 4))``; None if not a literal."""
    parsed = []
    for group in text.split(";"):
        parts = [p.strip() for p in group.split(",")]
        if not all(p.isdigit() for p in parts):
            return None
        parsed.append(tuple(int(p) for p in parts) if len(parts) > 1 else int(parts[0]))
    return tuple(parsed) if len(parsed) > 1 else parsed[0]


def _from_string(spec: str) -> RankSelector:
    text = spec.strip().lower()
    literal = parse_literal(text)
    if literal is not None:
        selector = UniformRank(literal)
        selector.spec = spec
        return selector
    name, sep, arg = text.partition(":")
    if name not in _REGISTRY:
        raise ValueError(f"rank specification {spec!r} is not understood; accepted: {_spec_help()}")
    factory = _REGISTRY[name][0]
    try:
        selector = factory(arg if sep else None)
    except ValueError as err:
        raise ValueError(f"rank specification {spec!r}: {err}") from None
    selector.spec = spec
    return selector


def as_selector(rank) -> RankSelector:
    """Any way of giving ranks as a :class:`RankSelector`.

    Parameters
    ----------
    rank : RankSelector, str, dict, callable or rank
        A selector (returned as it is); a specification string (a registered
        name with its argument, e.g. ``"params:0.3"``, or a literal such as
        ``"8,8"``); a dict ``{layer name: rank}``; a rank rule
        ``rule(name, module, format_name)``; or one rank for every layer.
    """
    if isinstance(rank, RankSelector):
        return rank
    if isinstance(rank, str):
        return _from_string(rank)
    if isinstance(rank, Mapping):
        return FixedRanks(rank)
    if callable(rank):
        return RuleRanks(rank)
    if rank is None:
        raise ValueError("rank=None: give ranks (a specification such as 'params:0.5', a dict, a rule or a rank)")
    return UniformRank(rank)


# ------------------------------------------------------------- built-ins
def _fraction(arg, what: str) -> float:
    try:
        v = float(arg)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={arg!r} is not a number in (0, 1]") from None
    if not (0.0 < v <= 1.0) or not math.isfinite(v):
        raise ValueError(f"{what} must be in (0, 1], got {v!r}")
    return v


class SpectralRanks(RankSelector):
    """A rank rule of :mod:`tuckerlab.rank.rules` (EVBMF, energy, fixed ratio) as a selector."""

    def __init__(self, kind: str, value: float, min_rank: int = 1):
        from .rules import energy_rule, evbmf_rule, fixed_ratio

        makers = {"evbmf": lambda: evbmf_rule(weakening=value, min_rank=min_rank),
                  "energy": lambda: energy_rule(value, min_rank),
                  "ratio": lambda: fixed_ratio(value, min_rank)}
        self.kind, self.value, self.min_rank = kind, float(value), int(min_rank)
        self._rule = makers[kind]()  # checks the arguments now
        self.name = kind

    def select(self, model, format, layers, context):
        return RuleRanks(self._rule).select(model, format, layers, context)

    def config(self) -> dict:
        key = {"evbmf": "weakening", "energy": "energy", "ratio": "ratio"}[self.kind]
        return {"selector": self.kind, key: self.value, "min_rank": self.min_rank}


@dataclass
class BudgetRanks(RankSelector):
    """Ranks meeting a whole-model parameter, MAC or measured-latency budget (:func:`~tuckerlab.rank.solve_budget`).

    Attributes
    ----------
    target : float
        Compressed/original ratio in ``(0, 1]``.
    metric : {"params", "macs", "latency"}
        ``"latency"``: the dense model's latency measured on the context's
        device at ``options["batch_size"]`` (default 1).
    options : dict
        More arguments of :func:`~tuckerlab.rank.solve_budget` (``multiple_of``,
        ``error``, ``keep_dense``, ``max_candidates``), and ``batch_size``
        for a latency budget.
    """

    target: float
    metric: str = "params"
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.metric not in ("params", "macs", "latency"):
            raise ValueError(f"metric must be 'params', 'macs' or 'latency', got {self.metric!r}")
        self.target = _fraction(self.target, f"{self.metric} target")
        self.result = None

    @property
    def name(self) -> str:  # the spec name is the metric
        return self.metric

    def select(self, model, format, layers, context):
        from .budget import solve_budget

        options = dict(self.options)
        if self.metric == "latency":
            from tuckerlab.latency import LatencyModel

            options["latency"] = LatencyModel(batch_size=options.pop("batch_size", 1),
                                              device=context.device or "cpu")
        self.result = solve_budget(model, format, self.target, metric=self.metric, layers=layers, **options)
        return dict(self.result.ranks)

    def config(self) -> dict:
        return {"selector": self.metric, "target": self.target, **self.options}

    def info(self) -> dict:
        out = super().info()
        if self.result is not None:
            out.update(achieved=self.result.achieved, smallest_ratio=self.result.smallest_ratio)
        return out


class BayesOptRanks(RankSelector):
    """Bayesian-optimisation ranks: per layer for Tucker-2 (Kim, Lee & Choe, 2020), else a global factor on EVBMF."""

    name = "bayesopt"

    def __init__(self, n_trials: int = 30, seed: int = 0):
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"the number of trials must be a positive integer, got {n_trials!r}")
        self.n_trials, self.seed = n_trials, int(seed)

    def select(self, model, format, layers, context):
        from .bayesopt import bayesopt_global_factor, bayesopt_ranks

        if format.name == "tucker2":
            return dict(bayesopt_ranks(model, format, n_trials=self.n_trials, seed=self.seed, layers=layers).ranks)
        return dict(bayesopt_global_factor(model, format, n_trials=self.n_trials, seed=self.seed, layers=layers).ranks)

    def config(self) -> dict:
        return {"selector": "bayesopt", "n_trials": self.n_trials, "seed": self.seed}


def _number(arg, default, what):
    if arg is None:
        return default
    try:
        return float(arg)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {arg!r}") from None


def _evbmf(arg):
    w = _number(arg, 1.0, "weakening")
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"weakening must be a number in [0, 1], got {arg!r}")
    return SpectralRanks("evbmf", w)


def _needs(arg, what):
    if arg is None or arg == "":
        raise ValueError(f"{what} needs a value, e.g. {what}:0.5")
    return arg


def _trials(arg):
    if arg is None:
        return BayesOptRanks()
    if not arg.isdigit() or int(arg) < 1:
        raise ValueError("the number of trials must be a positive integer")
    return BayesOptRanks(int(arg))


register_selector("evbmf", _evbmf, help="evbmf, evbmf:W (weakened, W in [0, 1])")
register_selector("energy", lambda a: SpectralRanks("energy", _fraction(_needs(a, "energy"), "energy")),
                  help="energy:E")
register_selector("ratio", lambda a: SpectralRanks("ratio", _fraction(_needs(a, "ratio"), "ratio")), help="ratio:R")
register_selector("params", lambda a: BudgetRanks(_needs(a, "params"), "params"), help="params:T")
register_selector("macs", lambda a: BudgetRanks(_needs(a, "macs"), "macs"),
                  help="macs:T (E, R, T in (0, 1])")
register_selector("bayesopt", _trials, help="bayesopt[:N]")


class ScaledToBudget(RankSelector):
    """Another selector's ranks, all scaled by one factor so that the model meets a parameter or MAC budget.

    Rank rules such as EVBMF or per-layer Bayesian optimisation choose ranks
    without a budget; comparing them with budgeted methods needs them at the
    same size. The factor ``f`` (bisected; ``f > 1`` grows ranks, at most to
    full rank) multiplies every rank entry of every layer
    (:meth:`~tuckerlab.formats.Format.scale_rank`), so the rule still decides
    how the budget is shared between layers. Spec: ``fit:params:0.5:evbmf``.

    Parameters
    ----------
    inner : RankSelector or spec
    metric : {"params", "macs"}
    target : float
        Compressed/original ratio of the whole model, in ``(0, 1]``.
    """

    name = "fit"

    def __init__(self, inner, metric: str, target):
        if metric not in ("params", "macs"):
            raise ValueError(f"metric must be 'params' or 'macs', got {metric!r}")
        self.inner = as_selector(inner)
        self.metric, self.target = metric, _fraction(target, f"{metric} target")
        self.factor: float | None = None
        self.achieved: float | None = None

    @property
    def needs_data(self):  # noqa: D401 - a property mirroring the inner selector
        return self.inner.needs_data

    def config(self) -> dict:
        return {"selector": "fit", "metric": self.metric, "target": self.target, "inner": self.inner.config()}

    def info(self) -> dict:
        return {**super().info(), "factor": self.factor, "achieved": self.achieved}

    def select(self, model, format, layers, context):
        base = self.inner.select(model, format, layers, context)
        infos = [layers[n] for n in base]
        index = 0 if self.metric == "params" else 1
        total = layers.total_params if self.metric == "params" else layers.total_macs
        fixed = total - sum(info.dense_cost()[index] for info in infos)

        def scaled(f):
            return {info.name: format_for(info, format).scale_rank(info.weight_shape, base[info.name], f, 1)
                    for info in infos}

        def ratio(ranks):
            return (fixed + sum(info.cost(format_for(info, format), ranks[info.name])[index] for info in infos)) / total

        lo, hi = 0.0, 1.0
        if ratio(scaled(lo)) > self.target:
            raise ValueError(f"{self.metric} target {self.target} is unreachable: rank 1 everywhere gives "
                             f"{ratio(scaled(lo)):.4f}")
        while ratio(scaled(hi)) <= self.target and hi < 1e6:
            if scaled(hi) == scaled(2 * hi):  # full rank reached: the budget allows everything
                break
            lo, hi = hi, 2 * hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ratio(scaled(mid)) <= self.target else (lo, mid)
        self.factor = lo
        ranks = scaled(lo)
        self.achieved = ratio(ranks)
        return ranks


def _fit(arg):
    metric, _, rest = _needs(arg, "fit").partition(":")
    target, _, inner = rest.partition(":")
    if not inner:
        raise ValueError("fit needs a budget and a rule, e.g. fit:params:0.5:evbmf")
    return ScaledToBudget(inner, metric, target)


register_selector("fit", _fit, help="fit:METRIC:T:RULE (RULE's ranks scaled to a params or macs budget)")


def _latency(arg):
    target, _, batch = _needs(arg, "latency").partition(":")
    if batch and (not batch.isdigit() or int(batch) < 1):
        raise ValueError(f"the batch size of a latency budget must be a positive integer, got {batch!r}")
    return BudgetRanks(target, "latency", {"batch_size": int(batch) if batch else 1})


register_selector("latency", _latency, help="latency:T[:B] (T of the dense latency at batch B, default 1)")

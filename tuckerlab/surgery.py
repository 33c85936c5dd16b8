"""Replace the convolutions (and optionally linear layers) of any model by factorized ones.

:func:`compress_model` walks a model, decomposes the weight of every
eligible ``nn.Conv2d`` (``nn.Linear``) with one method and a rank chosen per
layer, swaps in the factorized layer of :mod:`tuckerlab.layers` and returns
the new model with a :class:`CompressionReport` (parameters and MACs per
layer and in total, measured with :mod:`tuckerlab.metrics`).
"""

from __future__ import annotations

import copy
import fnmatch
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from torch import nn

from tuckerlab.layers import EXECUTION_MODES, CPConv2d, LowRankLinear, TTConv2d, TTTuckerConv2d, TuckerConv2d
from tuckerlab.metrics import count_macs, count_params, layer_macs

__all__ = ["compress_model", "replace_module", "CompressionReport", "LayerRecord", "METHODS"]

#: Method name -> factorized conv class.
METHODS: dict[str, type] = {
    "tucker2": TuckerConv2d,
    "tt": TTConv2d,
    "tt_tucker": TTTuckerConv2d,
    "cp": CPConv2d,
}
#: Method name passed to rank rules for ``nn.Linear`` layers.
LINEAR_METHOD = "svd"


def _to_tuple(x):
    """Lists (from JSON) back to tuples, recursively."""
    if isinstance(x, (list, tuple)):
        return tuple(_to_tuple(v) for v in x)
    return x


def _ratio(before: int, after: int) -> float:
    return before / after if after else float("inf")


@dataclass
class LayerRecord:
    """One compressed layer: what it was, the rank it got, and its cost before and after.

    ``params_*`` count the layer's own parameters (bias included);
    ``macs_*`` are per image, measured on the report's ``input_size``.
    """

    name: str
    weight_shape: tuple
    method: str
    rank: Any
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def params_ratio(self) -> float:
        """``params_before / params_after`` (compression ratio)."""
        return _ratio(self.params_before, self.params_after)

    @property
    def macs_ratio(self) -> float:
        """``macs_before / macs_after`` (speed-up in MACs)."""
        return _ratio(self.macs_before, self.macs_after)


@dataclass
class CompressionReport:
    """What :func:`compress_model` did.

    Attributes
    ----------
    method : str
        The conv method (``nn.Linear`` rows have method ``"svd"``).
    input_size : tuple of int
        Input shape (without batch) the MACs were measured on.
    rows : list of LayerRecord
        The compressed layers, in module order.
    skipped : list of (str, str)
        Eligible layers left as they were, with the reason.
    params_before, params_after : int
        Parameters of the whole model (:func:`tuckerlab.metrics.count_params`).
    macs_before, macs_after : int
        MACs per image of the whole model (:func:`tuckerlab.metrics.count_macs`).
    """

    method: str
    input_size: tuple
    rows: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0

    @property
    def params_ratio(self) -> float:
        """Whole-model compression ratio ``params_before / params_after``."""
        return _ratio(self.params_before, self.params_after)

    @property
    def macs_ratio(self) -> float:
        """Whole-model ``macs_before / macs_after``."""
        return _ratio(self.macs_before, self.macs_after)

    @property
    def params_reduction(self) -> float:
        """Fraction of the parameters removed, ``1 - after / before``."""
        return 1.0 - self.params_after / self.params_before if self.params_before else 0.0

    @property
    def macs_reduction(self) -> float:
        """Fraction of the MACs removed, ``1 - after / before``."""
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def totals(self) -> dict:
        """Whole-model parameters and MACs before and after, and the fractions removed."""
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_reduction": self.params_reduction,
            "macs_reduction": self.macs_reduction,
        }

    def cost_line(self) -> str:
        """One line: parameters and MACs before -> after, with the cut in percent."""
        return (
            f"params {self.params_before:,} -> {self.params_after:,} (-{100 * self.params_reduction:.1f}%), "
            f"MACs {self.macs_before / 1e6:.2f}M -> {self.macs_after / 1e6:.2f}M (-{100 * self.macs_reduction:.1f}%)"
        )

    # ---------------------------------------------------------------- export
    def to_dicts(self) -> list[dict]:
        """One plain dict per compressed layer (e.g. for ``pandas.DataFrame(report.to_dicts())``)."""
        out = []
        for r in self.rows:
            d = asdict(r)
            d["weight_shape"] = list(r.weight_shape)
            d["rank"] = json.loads(json.dumps(r.rank))
            d["params_ratio"] = r.params_ratio
            d["macs_ratio"] = r.macs_ratio
            out.append(d)
        return out

    def to_dict(self) -> dict:
        """Everything as JSON-ready built-in types."""
        return {
            "method": self.method,
            "input_size": list(self.input_size),
            "layers": [
                {k: v for k, v in d.items() if k not in ("params_ratio", "macs_ratio")} for d in self.to_dicts()
            ],
            "skipped": [[name, reason] for name, reason in self.skipped],
            "totals": {
                "params_before": self.params_before,
                "params_after": self.params_after,
                "macs_before": self.macs_before,
                "macs_after": self.macs_after,
                "params_ratio": self.params_ratio,
                "macs_ratio": self.macs_ratio,
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as a JSON string (:meth:`from_json` reads it back)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> "CompressionReport":
        rows = [
            LayerRecord(**{**d, "weight_shape": tuple(d["weight_shape"]), "rank": _to_tuple(d["rank"])})
            for d in data["layers"]
        ]
        t = data["totals"]
        return cls(
            method=data["method"],
            input_size=tuple(data["input_size"]),
            rows=rows,
            skipped=[tuple(s) for s in data["skipped"]],
            params_before=t["params_before"],
            params_after=t["params_after"],
            macs_before=t["macs_before"],
            macs_after=t["macs_after"],
        )

    @classmethod
    def from_json(cls, text: str) -> "CompressionReport":
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        header = ("layer", "weight", "method", "rank", "params", "params'", "x", "MACs", "MACs'", "x")
        lines = [
            (
                r.name,
                "x".join(str(d) for d in r.weight_shape),
                r.method,
                str(r.rank).replace(" ", ""),
                f"{r.params_before:,}",
                f"{r.params_after:,}",
                f"{r.params_ratio:.2f}",
                f"{r.macs_before:,}",
                f"{r.macs_after:,}",
                f"{r.macs_ratio:.2f}",
            )
            for r in self.rows
        ]
        total = (
            "model total", "", "", "",
            f"{self.params_before:,}", f"{self.params_after:,}", f"{self.params_ratio:.2f}",
            f"{self.macs_before:,}", f"{self.macs_after:,}", f"{self.macs_ratio:.2f}",
        )
        table = [header, *lines, total]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        left = 4  # text columns are left-aligned, numbers right-aligned

        def fmt(row):
            return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        rule = "-" * len(fmt(header))
        out = [
            f"Compression report ({self.method}, MACs per image of size {tuple(self.input_size)})",
            fmt(header),
            rule,
            *(fmt(r) for r in lines),
            rule,
            fmt(total),
            f"params {-100 * self.params_reduction:+.1f}%, MACs {-100 * self.macs_reduction:+.1f}%",
        ]
        if self.skipped:
            out.append("skipped: " + ", ".join(f"{n} ({why})" for n, why in self.skipped))
        return "\n".join(out)


def replace_module(model: nn.Module, name: str, new_module: nn.Module) -> nn.Module:
    """Put ``new_module`` at the qualified name ``name`` of ``model``; return the old module.

    Parameters
    ----------
    model : torch.nn.Module
    name : str
        As in ``model.named_modules()``, e.g. ``"layer1.0.conv1"``.
    new_module : torch.nn.Module

    Returns
    -------
    torch.nn.Module
        The module that was replaced.
    """
    if not name:
        raise ValueError("replace_module cannot replace the model itself (name '').")
    try:
        old = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no submodule named {name!r}.") from None
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new_module)
    return old


def _resolve_skip(skip, names: set[str]) -> Callable[[str, nn.Module], bool]:
    if skip is None:
        return lambda name, module: False
    if callable(skip):
        return skip
    patterns = [skip] if isinstance(skip, str) else list(skip)
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unknown:
        raise ValueError(f"`skip` entries match no module of the model: {unknown}.")
    return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def compress_model(
    model: nn.Module,
    method: str,
    rank,
    skip: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
    include_linear: bool = False,
    skip_first: bool = True,
    skip_pointwise: bool = True,
    execution: str = "factorized",
    inplace: bool = False,
    input_size=(3, 32, 32),
    decompose_kwargs: dict | None = None,
) -> tuple[nn.Module, CompressionReport]:
    """Replace the convolutions of ``model`` by factorized layers.

    Parameters
    ----------
    model : torch.nn.Module
        Any model. It is deep-copied first unless ``inplace=True``.
    method : {"tucker2", "tt", "tt_tucker", "cp"}
        :class:`~tuckerlab.layers.TuckerConv2d`, :class:`~tuckerlab.layers.TTConv2d`,
        :class:`~tuckerlab.layers.TTTuckerConv2d` or :class:`~tuckerlab.layers.CPConv2d`.
    rank : rank, dict or callable
        - one rank, in the form of the method (see ``DEVELOPERS.md``: e.g.
          ``(r_out, r_in)`` for ``"tucker2"``), used for every layer; with
          ``include_linear=True`` it must be an int to serve linear layers too;
        - a dict ``{qualified layer name: rank}``: only those layers are
          compressed (the skip rules below still apply to them); a value of
          None leaves the layer as it is; names that are not in the model,
          or that are not ``nn.Conv2d``/``nn.Linear`` layers, raise
          ``ValueError``;
        - a rank rule ``rule(name, module, method) -> rank or None`` (None
          leaves the layer as it is). For ``nn.Linear`` layers the rule is
          called with ``method="svd"`` and must return an int.
    skip : iterable of str or callable, optional
        Layer names (or ``fnmatch`` patterns such as ``"layer1.*"``) to
        leave as they are, or a predicate ``skip(name, module) -> bool``.
        An entry that matches no module raises ``ValueError``.
    include_linear : bool, default False
        Also replace ``nn.Linear`` layers by :class:`~tuckerlab.layers.LowRankLinear`.
    skip_first : bool, default True
        Leave the first convolution (the first to run on the input) as it is:
        it has few input channels and little to gain.
    skip_pointwise : bool, default True
        Leave 1x1 convolutions as they are.
    execution : {"factorized", "reconstructed"}, default "factorized"
        Execution mode of the new layers.
    inplace : bool, default False
        Change ``model`` itself instead of a copy.
    input_size : sequence of int, default (3, 32, 32)
        One input (without batch) used to measure MACs before and after.
    decompose_kwargs : dict, optional
        Passed to the conv classes' ``from_conv`` (e.g. ``{"method": "hosvd"}``
        for Tucker, ``{"n_iter_max": 500, "random_state": 0}`` for CP).

    Returns
    -------
    model : torch.nn.Module
        The compressed model (``model`` itself when ``inplace=True``).
    report : CompressionReport
        Layers compressed, ranks, parameters and MACs before and after,
        skipped layers with the reason.

    Notes
    -----
    Grouped and depthwise convolutions (``groups != 1``) are never
    decomposed; they are listed in ``report.skipped``. Invalid ranks raise
    the ``ValueError`` of :mod:`tuckerlab.decompose`, which names the mode
    and the accepted range.

    Examples
    --------
    >>> from tuckerlab.rank import fixed_ratio  # doctest: +SKIP
    >>> small, report = compress_model(model, "tucker2", fixed_ratio(0.5))  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; accepted: {sorted(METHODS)}.")
    if execution not in EXECUTION_MODES:
        raise ValueError(f"`execution` must be one of {EXECUTION_MODES}, got {execution!r}.")
    conv_cls = METHODS[method]
    decompose_kwargs = dict(decompose_kwargs or {})
    input_size = tuple(int(d) for d in input_size)
    new = model if inplace else copy.deepcopy(model)

    modules = dict(new.named_modules())
    eligible = {
        n: m
        for n, m in modules.items()
        if isinstance(m, nn.Conv2d)
        or (
            isinstance(m, nn.Linear)
            and not isinstance(modules.get(n.rpartition(".")[0]), nn.MultiheadAttention)
        )
    }

    if isinstance(rank, dict):
        unknown = sorted(set(rank) - set(modules))
        if unknown:
            raise ValueError(f"`rank` dict names modules that are not in the model: {unknown}.")
        wrong = sorted(set(rank) - set(eligible))
        if wrong:
            raise ValueError(
                f"`rank` dict names modules that are not nn.Conv2d or nn.Linear layers: "
                f"{[(n, type(modules[n]).__name__) for n in wrong]}."
            )
    skip_fn = _resolve_skip(skip, set(modules))

    macs_before_layer = layer_macs(new, input_size)
    macs_before = count_macs(new, input_size)
    params_before = count_params(new)
    convs_run = [n for n in macs_before_layer if isinstance(modules.get(n), nn.Conv2d)]
    convs_all = [n for n, m in eligible.items() if isinstance(m, nn.Conv2d)]
    first_conv = (convs_run or convs_all or [None])[0]

    def rank_for(name, module, layer_method):
        if isinstance(rank, dict):
            return rank.get(name), ("rank None" if name in rank else "not in the rank dict")
        if callable(rank):
            return rank(name, module, layer_method), "rule returned None"
        return rank, "rank None"

    rows, skipped, replacements = [], [], []
    for name, module in eligible.items():
        is_linear = isinstance(module, nn.Linear)
        if is_linear and not include_linear:
            skipped.append((name, "linear (include_linear=False)"))
            continue
        if skip_fn(name, module):
            skipped.append((name, "skip"))
            continue
        if not is_linear:
            if module.groups != 1:
                skipped.append((name, f"groups={module.groups}"))
                continue
            if skip_first and name == first_conv:
                skipped.append((name, "first conv"))
                continue
            if skip_pointwise and tuple(module.kernel_size) == (1, 1):
                skipped.append((name, "1x1 conv"))
                continue
        layer_method = LINEAR_METHOD if is_linear else method
        r, why = rank_for(name, module, layer_method)
        if r is None:
            skipped.append((name, why))
            continue
        if is_linear:
            if not (isinstance(r, int) and not isinstance(r, bool)):
                raise ValueError(
                    f"Linear layer {name!r} needs an int rank, got {r!r}; pass a dict or a rank rule "
                    "to give linear layers their own rank."
                )
            new_layer = LowRankLinear.from_linear(module, r, execution=execution)
        else:
            new_layer = conv_cls.from_conv(module, r, execution=execution, **decompose_kwargs)
        replacements.append((name, new_layer))
        rows.append(
            LayerRecord(
                name=name,
                weight_shape=tuple(module.weight.shape),
                method=layer_method,
                rank=_to_tuple(new_layer.rank),
                params_before=sum(p.numel() for p in module.parameters()),
                params_after=new_layer.n_params,
                macs_before=macs_before_layer.get(name, 0),
                macs_after=0,
            )
        )

    for name, new_layer in replacements:
        replace_module(new, name, new_layer)

    macs_after_layer = layer_macs(new, input_size)
    for row in rows:
        row.macs_after = macs_after_layer.get(row.name, 0)
    report = CompressionReport(
        method=method,
        input_size=input_size,
        rows=rows,
        skipped=skipped,
        params_before=params_before,
        params_after=count_params(new),
        macs_before=macs_before,
        macs_after=count_macs(new, input_size),
    )
    return new, report

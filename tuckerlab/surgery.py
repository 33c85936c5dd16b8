"""Replace the convolutions (and optionally linear layers) of any model by factorized ones.

:func:`compress_model` works in steps, each of which other parts of the
package reuse on its own:

1. **select** the layers (:func:`tuckerlab.layer_selection.select_layers`:
   one forward pass gives the layers, their shapes and the model's MACs);
2. **resolve** their ranks (any rank selector,
   :mod:`tuckerlab.rank.selectors`) and check them against the format
   (:mod:`tuckerlab.formats`);
3. **decompose** the weights;
4. **build** the factorized layers from the factors and swap them in
   (:func:`build_compressed`, which the methods call with the factors their
   last projection computed, and which :mod:`tuckerlab.serialization` calls
   without factors to rebuild a saved model);
5. **measure**: a :class:`CompressionReport` of parameters and MACs per
   layer and in total, from the formats' exact costs (no further forward
   pass).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

from torch import nn

from tuckerlab.formats import format_names, get_format, rank_from_json, rank_to_json
from tuckerlab.layers import EXECUTION_MODES
from tuckerlab.metrics import count_params, layer_macs

__all__ = ["compress_model", "build_compressed", "replace_module", "CompressionReport", "LayerRecord"]


def _ratio(before: int, after: int) -> float:
    return before / after if after else float("inf")


class _Ratios:
    """``params_ratio`` and ``macs_ratio`` of anything with ``params_before/after`` and ``macs_before/after``."""

    @property
    def params_ratio(self) -> float:
        """``params_before / params_after`` (compression ratio)."""
        return _ratio(self.params_before, self.params_after)

    @property
    def macs_ratio(self) -> float:
        """``macs_before / macs_after`` (speed-up in MACs)."""
        return _ratio(self.macs_before, self.macs_after)


@dataclass
class LayerRecord(_Ratios):
    """One compressed layer: what it was, the rank it got, and its cost before and after.

    ``params_*`` count the layer's own parameters (bias included);
    ``macs_*`` are per image, measured on the report's ``input_size``.
    """

    name: str
    weight_shape: tuple
    method: str  # the layer's format
    rank: Any
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass
class CompressionReport(_Ratios):
    """What :func:`compress_model` did.

    Attributes
    ----------
    method : str
        The format of the convolutions (``nn.Linear`` rows have ``"lowrank"``).
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
            d["rank"] = rank_to_json(r.rank)
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
            LayerRecord(**{**d, "weight_shape": tuple(d["weight_shape"]), "rank": rank_from_json(d["rank"])})
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


def _conv_format(format):
    """The conv format with a layer called ``format``; ``ValueError`` listing them otherwise."""
    names = format_names("conv", with_layer=True)
    if isinstance(format, str) and format in names:
        return get_format(format)
    if not isinstance(format, str) and getattr(format, "name", None) in names:
        return format
    raise ValueError(f"Unknown method {format!r}; accepted: {sorted(names)}.")


def build_compressed(
    model: nn.Module,
    specs: Mapping,
    decompositions: Mapping[str, Any] | None = None,
    *,
    execution: str = "factorized",
    inplace: bool = False,
    selection=None,
) -> tuple[nn.Module, "CompressionReport | None"]:
    """Swap in the factorized layers ``specs`` describes, built from ``decompositions``.

    Parameters
    ----------
    model : torch.nn.Module
        Deep-copied first unless ``inplace``.
    specs : mapping
        ``{layer name: LayerSpec}`` (format, rank, options), validated.
    decompositions : mapping, optional
        ``{layer name: what the format's decompose returned}``; the layers
        are built from them. None: layers at the ranks of ``specs`` with the
        layer's initialisation (to load saved weights into; nothing is
        decomposed).
    execution : {"factorized", "reconstructed"}
    inplace : bool
    selection : LayerSelection, optional
        The layers' shapes and the model's totals
        (:func:`tuckerlab.layer_selection.select_layers`). With it a
        :class:`CompressionReport` is returned, else None.

    Returns
    -------
    model, report
    """
    if execution not in EXECUTION_MODES:
        raise ValueError(f"`execution` must be one of {EXECUTION_MODES}, got {execution!r}.")
    new = model if inplace else copy.deepcopy(model)
    rows, layers = [], {}
    for name, spec in specs.items():
        module = new.get_submodule(name)
        fmt = get_format(spec.format)
        if decompositions is None:
            layer = fmt.empty_layer(module, spec.rank, execution)
        else:
            layer = fmt.layer_from_factors(module, decompositions[name], execution)
        layers[name] = layer
        if selection is not None:
            info = selection[name]
            before_params, before_macs = info.dense_cost()
            rows.append(LayerRecord(
                name=name, weight_shape=info.weight_shape, method=fmt.name, rank=layer.rank,
                params_before=before_params, params_after=layer.n_params, macs_before=before_macs,
                macs_after=info.cost(fmt, layer.rank)[1],
            ))
    for name, layer in layers.items():
        replace_module(new, name, layer)
    if selection is None:
        return new, None
    if execution != "factorized":  # the formats' costs describe factorized execution: measure instead
        measured = layer_macs(new, selection.input_size)
        for row in rows:
            row.macs_after = measured.get(row.name, 0)
    conv = {spec.format for spec in specs.values() if spec.format != "lowrank"}
    report = CompressionReport(
        method=next(iter(conv), "lowrank") if len(conv) <= 1 else "mixed",
        input_size=selection.input_size,
        rows=rows,
        skipped=list(selection.skipped),
        params_before=selection.total_params,
        params_after=count_params(new),
        macs_before=selection.total_macs,
        macs_after=selection.total_macs - sum(r.macs_before - r.macs_after for r in rows),
    )
    return new, report


def _skip_reason(selector, name: str) -> str:
    from tuckerlab.rank.selectors import FixedRanks, RuleRanks

    if isinstance(selector, FixedRanks):
        return "rank None" if name in selector.ranks else "not in the rank dict"
    if isinstance(selector, RuleRanks):
        return "rule returned None"
    return "no rank"


def compress_model(
    model: nn.Module,
    format,
    rank,
    skip: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
    include_linear: bool = False,
    skip_first: bool = True,
    skip_pointwise: bool = True,
    execution: str = "factorized",
    inplace: bool = False,
    input_size=(3, 32, 32),
    decompose_kwargs: dict | None = None,
    *,
    data=None,
    context=None,
) -> tuple[nn.Module, CompressionReport]:
    """Replace the convolutions of ``model`` by factorized layers.

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).

    Parameters
    ----------
    model : torch.nn.Module
        Any model. It is deep-copied first unless ``inplace=True``.
    format : {"tucker2", "tt", "tt_tucker", "cp"} or Format
        The format of the convolutions (:mod:`tuckerlab.formats`); selected
        ``nn.Linear`` layers use ``"lowrank"``.
    rank : rank selector, str, dict, callable or rank
        Anything :func:`tuckerlab.rank.selectors.as_selector` takes:

        - one rank in the format's form (e.g. ``(r_out, r_in)`` for
          ``"tucker2"``), used for every layer; with ``include_linear=True``
          it must be an int to serve linear layers too;
        - a dict ``{qualified layer name: rank}``: only those layers are
          compressed (the skip rules below still apply to them); a value of
          None leaves the layer as it is; names that are not in the model,
          or that are not ``nn.Conv2d``/``nn.Linear`` layers, raise
          ``ValueError``;
        - a rank rule ``rule(name, module, format_name) -> rank or None``
          (None leaves the layer as it is); ``nn.Linear`` layers are asked
          with ``"lowrank"`` and must get an int;
        - a specification string (``"evbmf"``, ``"params:0.3"``, any
          registered selector) or a :class:`~tuckerlab.rank.selectors.RankSelector`.
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
        Decomposition options of the convolutions' format (e.g.
        ``{"method": "hosvd"}`` for Tucker-2, ``{"n_iter_max": 500}`` for CP).
    data : ImageDataset, optional
        For rank selectors that look at the data.
    context : SelectionContext, optional
        Everything a selector may look at (built from ``data`` and
        ``input_size`` when not given).

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
    decomposed; they are listed in ``report.skipped``. Invalid ranks raise a
    ``ValueError`` that names the layer, the mode or bond and the accepted
    range; every rank is checked before any weight is decomposed. A model
    with NaN or Inf parameters anywhere is refused, naming them.

    Examples
    --------
    >>> from tuckerlab.rank import fixed_ratio  # doctest: +SKIP
    >>> small, report = compress_model(model, "tucker2", fixed_ratio(0.5))  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    from tuckerlab.layer_selection import check_layer_names, select_layers
    from tuckerlab.projection import LayerSpec
    from tuckerlab.rank.selectors import FixedRanks, SelectionContext, as_selector

    fmt = _conv_format(format)
    if execution not in EXECUTION_MODES:
        raise ValueError(f"`execution` must be one of {EXECUTION_MODES}, got {execution!r}.")
    selector = as_selector(rank)
    if isinstance(selector, FixedRanks):
        check_layer_names(model, selector.ranks)
    input_size = tuple(int(d) for d in input_size)
    selection = select_layers(model, skip=skip, include_linear=include_linear, skip_first=skip_first,
                              skip_pointwise=skip_pointwise, input_size=input_size)
    if context is None:
        context = SelectionContext(data=data, input_size=input_size)
    ranks = selector.select(model, fmt, selection, context)
    options = fmt.check_options(decompose_kwargs)
    specs = {}
    for info in selection:
        if ranks.get(info.name) is None:
            continue
        f = get_format("lowrank") if info.kind == "linear" else fmt
        specs[info.name] = LayerSpec(f.name, f.validate_rank(info.weight_shape, ranks[info.name], layer=info.name),
                                     options if f is fmt else {})
    selection = selection.only(specs, reason=lambda name: _skip_reason(selector, name))
    decompositions = {
        name: get_format(spec.format).decompose(model.get_submodule(name).weight.detach(), spec.rank, **spec.options)
        for name, spec in specs.items()
    }
    new, report = build_compressed(model, specs, decompositions, execution=execution, inplace=inplace,
                                   selection=selection)
    report.method = fmt.name
    return new, report

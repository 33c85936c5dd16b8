"""The C-step every compression method shares: a weight, a format, a rank in; its nearest decomposed weight out.

LC (Carreira-Perpinan, 2017), ADMM (Yin et al., 2021), alternating
train/decompose and budget-aware training all alternate SGD on the dense
weights ``W`` with a *projection* ``Delta(Theta) = Pi(W)``: the weight of
the given format and rank closest to ``W`` (exactly or, for Tucker and CP,
as closely as the decomposition algorithm finds). This module is that
projection, and nothing else: the algorithms live in
:mod:`tuckerlab.decompose`, the factorized layers in :mod:`tuckerlab.layers`.

The formats and how their ranks are written are those of the registry,
:mod:`tuckerlab.formats` (``tucker2``, ``tucker``, ``tt``, ``tt_tucker``,
``cp``, ``lowrank`` and any format registered later); this module adds no
knowledge of its own about any of them.

Three levels:

- :func:`project` and :func:`decompose_weight` for one weight;
- :class:`LayerSpec` (format, rank, decomposition options) and
  :class:`Projector` (layer name -> spec) for a model, with
  :func:`project_model` (the C-step: every layer at once, on the weights'
  device) and :func:`to_factorized` (the compressed model with factorized
  layers, built from the factors of the last projection when they are
  given, by :func:`tuckerlab.surgery.build_compressed`);
- :func:`validate_rank`, which checks a rank against a weight shape with the
  messages of :mod:`tuckerlab.decompose` and names the layer and format.

References
----------
M. A. Carreira-Perpinan, "Model compression as constrained optimization, with
application to neural nets. Part I: general framework", arXiv:1707.01209, 2017.

Y. Idelbayev and M. A. Carreira-Perpinan, "Low-rank compression of neural
nets: learning the rank of each layer", CVPR 2020.

W. Liu et al., "TT-LC: TT-Tucker decomposition in the LC framework without
pre-training", J. South China Univ. Tech. 52(7):29-38, 2024.

M. Yin, Y. Sui, S. Liao and B. Yuan, "Towards efficient tensor decomposition-
based DNN model compression with optimization framework", CVPR 2021.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from tuckerlab.decompose._validation import check_tensor
from tuckerlab.formats import Format, format_names, get_format

__all__ = [
    "FORMATS",
    "check_finite",
    "LayerSpec",
    "Projector",
    "project",
    "decompose_weight",
    "reconstruct",
    "validate_rank",
    "project_model",
    "to_factorized",
]


class _FormatNames:
    """The registered format names, read when used (formats may be registered later)."""

    def __iter__(self):
        return iter(format_names())

    def __contains__(self, name) -> bool:
        return name in format_names()

    def __len__(self) -> int:
        return len(format_names())

    def __repr__(self) -> str:
        return repr(format_names())


#: Names of the formats :func:`project` accepts (the registry of :mod:`tuckerlab.formats`).
FORMATS = _FormatNames()


def check_finite(tensors: Mapping[str, torch.Tensor], what: str = "layer") -> None:
    """Raise ``ValueError`` naming every tensor of ``tensors`` with NaN or Inf entries (and how many).

    A decomposition of a non-finite weight fails deep inside an eigensolver
    ("ill-conditioned") or returns garbage; this check says which weight it
    is instead. One host synchronisation for all tensors.
    """
    if not tensors:
        return
    with torch.no_grad():
        bad = torch.stack([(~torch.isfinite(t.detach())).sum() for t in tensors.values()]).cpu().tolist()
    named = [f"{what} {n!r} ({b} of {t.numel()} values)" for (n, t), b in zip(tensors.items(), bad) if b]
    if named:
        raise ValueError(f"non-finite (NaN or Inf) weights in {', '.join(named[:8])}"
                         f"{' and more' if len(named) > 8 else ''}")


def validate_rank(shape, format, rank, *, layer: str | None = None):
    """Check ``rank`` for a weight of ``shape`` and return it in the format's canonical form.

    Parameters
    ----------
    shape : sequence of int
        Shape of the weight (``(T, S, Kh, Kw)`` for convolutions, ``(out,
        in)`` for linear layers).
    format : str or Format
        A registered format (:mod:`tuckerlab.formats`).
    rank
        As the format writes it.
    layer : str, optional
        Layer name, put at the start of error messages.

    Returns
    -------
    rank
        Exactly the ``.rank`` of the factorized layer built with it (int
        shorthands expanded).

    Raises
    ------
    ValueError
        For an unknown format, a weight of the wrong order, or a rank out of
        range: the message names the layer, the format, the mode or bond,
        the value and the range accepted (nothing is clipped).
    """
    return get_format(format).validate_rank(shape, rank, layer=layer)


def decompose_weight(weight: torch.Tensor, format, rank, **options):
    """Decompose ``weight`` in ``format`` at ``rank``.

    Parameters
    ----------
    weight : torch.Tensor
        Floating-point weight on any device (not modified; no gradient flows).
    format : str or Format
        A registered format.
    rank
        See :func:`validate_rank`.
    **options
        The format's decomposition options (e.g. ``method``, ``n_iter_max``
        for ``tucker2``; ``random_state`` defaults to 0 for ``cp`` so that
        projections are reproducible); an unknown option is an error.

    Returns
    -------
    decomposition
        In the layout the format's layer is built from;
        :func:`reconstruct` turns it back into a weight of the original shape.
    """
    fmt = get_format(format)
    check_tensor(weight, "weight")
    rank = fmt.validate_rank(weight.shape, rank)
    return fmt.decompose(weight.detach(), rank, **fmt.check_options(options, shape=weight.shape))


def reconstruct(decomposition, format) -> torch.Tensor:
    """The weight, in its original layout, of a decomposition from :func:`decompose_weight`."""
    return get_format(format).reconstruct(decomposition)


def project(weight: torch.Tensor, format: str, rank, **options) -> torch.Tensor:
    """The nearest weight of ``format`` and ``rank``: ``Delta(Theta)`` of the LC C-step.

    Explained in: chapter 5, "TT-LC: compressing while training, without pre-training"
    (notebooks/05_tt_lc.ipynb).

    Parameters
    ----------
    weight : torch.Tensor
        Floating-point weight on any device.
    format : str
        One of :data:`FORMATS`.
    rank
        See :func:`validate_rank`.
    **options
        Decomposition options, see :func:`decompose_weight`.

    Returns
    -------
    torch.Tensor
        ``reconstruct(decompose_weight(weight, format, rank), format)``: same
        shape, device, dtype and memory layout (e.g. channels_last) as
        ``weight``, without gradient history.

    Notes
    -----
    For ``tucker2``, ``tt``, ``tt_tucker`` and ``lowrank`` the result is the
    projection computed by truncated SVDs / HOOI: for low rank the Euclidean
    projection (Eckart-Young), for Tucker-2 the HOOI fixed point (a local
    optimum of the Euclidean projection, in practice the best one), and for
    TT and TT-Tucker the quasi-optimal sequential one (within ``sqrt(d - 1)``
    of the best, Oseledets 2011), each up to rounding in the weight's dtype:
    the Gram matrices are diagonalised in float64, so a float32 weight's
    projection is as accurate as a float32 SVD gives (about 1e-7 relative
    on a weight that is already in the set), and LC/ADMM distances can fall
    to that level. CP has no closed-form projection;
    ALS gives a local optimum.

    References
    ----------
    .. [1] M. A. Carreira-Perpinan, "Model compression as constrained
       optimization, with application to neural nets. Part I: general
       framework", arXiv:1707.01209, 2017.
    .. [2] I. V. Oseledets, "Tensor-train decomposition", SIAM J. Sci.
       Comput. 33(5):2295-2317, 2011.

    Examples
    --------
    >>> w = torch.randn(32, 16, 3, 3)
    >>> p = project(w, "tucker2", (8, 4))
    >>> p.shape, torch.linalg.matrix_rank(p.reshape(32, -1)).item()
    (torch.Size([32, 16, 3, 3]), 8)
    """
    with torch.no_grad():
        return _like(weight, reconstruct(decompose_weight(weight, format, rank, **options), format))


def _like(weight: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``dense`` with the shape, dtype, device and strides of ``weight`` (channels_last stays channels_last)."""
    return torch.empty_like(weight, requires_grad=False).copy_(dense)


# ------------------------------------------------------------------- models
@dataclass(frozen=True)
class LayerSpec:
    """How one layer is compressed: a format, a rank and decomposition options.

    Attributes
    ----------
    format : str
        One of :data:`FORMATS`.
    rank
        In the form of the format (see :func:`validate_rank`).
    options : dict
        Decomposition options (see :func:`decompose_weight`).
    """

    format: str
    rank: Any
    options: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "format", get_format(self.format).name)
        object.__setattr__(self, "options", dict(self.options))

    @property
    def fmt(self) -> Format:
        """The :class:`~tuckerlab.formats.Format` object."""
        return get_format(self.format)

    def to_dict(self) -> dict:
        """Plain values (JSON- and checkpoint-ready)."""
        return {"format": self.format, "rank": self.fmt.rank_to_json(self.rank), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LayerSpec":
        return cls(d["format"], get_format(d["format"]).rank_from_json(d["rank"]), d.get("options", {}))


def _as_spec(value, name: str) -> LayerSpec:
    if isinstance(value, LayerSpec):
        return value
    if isinstance(value, Mapping):
        return LayerSpec.from_dict(value)
    if isinstance(value, (tuple, list)) and len(value) in (2, 3) and isinstance(value[0], str):
        return LayerSpec(*value)
    raise ValueError(
        f"layer {name!r}: a spec must be a LayerSpec, a (format, rank) pair or a dict, got {value!r}"
    )


class Projector:
    """Layer names of a model mapped to a :class:`LayerSpec`: the C-step of a whole model.

    Explained in: chapter 5, "TT-LC: compressing while training, without pre-training"
    (notebooks/05_tt_lc.ipynb).

    Parameters
    ----------
    specs : mapping
        ``{qualified layer name: spec}`` where a spec is a
        :class:`LayerSpec`, a ``(format, rank)`` or ``(format, rank,
        options)`` tuple, or a dict with those keys.
    **options
        Decomposition options for every layer whose spec has none of its own
        (e.g. ``n_iter_max=10`` to bound HOOI); each format gets the options
        it takes (see :func:`decompose_weight`), ``lowrank`` and ``tt``
        none.

    Examples
    --------
    >>> from tuckerlab.models import get_model  # doctest: +SKIP
    >>> model = get_model("resnet20")  # doctest: +SKIP
    >>> proj = Projector({"layer1.0.conv1": ("tucker2", (8, 8))}).validate(model)  # doctest: +SKIP
    >>> targets = proj.project(model)  # {name: Delta(Theta)}  # doctest: +SKIP
    """

    def __init__(self, specs: Mapping[str, Any], **options):
        if isinstance(specs, Projector):
            specs = specs.specs
        if not isinstance(specs, Mapping):
            raise ValueError(f"specs must be a mapping {{layer name: spec}}, got {type(specs).__name__}")
        if not specs:
            raise ValueError("specs is empty: name at least one layer to compress")
        out = {}
        for name, value in specs.items():
            spec = _as_spec(value, name)
            own = spec.fmt.own_options(options)
            if own and not spec.options:
                spec = LayerSpec(spec.format, spec.rank, own)
            out[str(name)] = spec
        self.specs: dict[str, LayerSpec] = out

    # --------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self):
        return iter(self.specs)

    def __getitem__(self, name: str) -> LayerSpec:
        return self.specs[name]

    def items(self):
        return self.specs.items()

    @property
    def names(self) -> list[str]:
        """Layer names, in the order given."""
        return list(self.specs)

    @property
    def ranks(self) -> dict[str, Any]:
        """``{layer name: rank}``."""
        return {n: s.rank for n, s in self.specs.items()}

    @property
    def formats(self) -> set[str]:
        return {s.format for s in self.specs.values()}

    def with_ranks(self, ranks: Mapping[str, Any]) -> "Projector":
        """The same layers, formats and options with some ranks replaced."""
        unknown = sorted(set(ranks) - set(self.specs))
        if unknown:
            raise ValueError(f"ranks name layers that this projector does not have: {unknown}")
        return Projector({
            n: LayerSpec(s.format, ranks.get(n, s.rank), s.options) for n, s in self.specs.items()
        })

    def to_dict(self) -> dict:
        """``{name: {"format", "rank", "options"}}`` in plain values (checkpoints, JSON)."""
        return {n: s.to_dict() for n, s in self.specs.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Projector":
        return cls({n: LayerSpec.from_dict(v) for n, v in d.items()})

    def __repr__(self) -> str:
        body = ", ".join(f"{n!r}: ({s.format!r}, {s.rank!r})" for n, s in self.specs.items())
        return f"Projector({{{body}}})"

    # -------------------------------------------------------------- checks
    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``{name: weight parameter}`` of the named layers of ``model``."""
        out = {}
        for name in self.specs:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"layer {name!r}: {type(model).__name__} has no submodule of that name") from None
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor):
                raise ValueError(f"layer {name!r}: {type(module).__name__} has no weight tensor to compress")
            out[name] = weight
        return out

    def validate(self, model: nn.Module) -> "Projector":
        """Check every spec against ``model``; return a projector with normalised ranks.

        Checks that each layer exists and is a module its format compresses
        (a ``groups=1`` ``nn.Conv2d``, an ``nn.Linear`` for ``lowrank``),
        that its rank is in range (see :func:`validate_rank`) and that the
        options are known. Raises ``ValueError`` naming the layer, the
        format, the rank and the range accepted.
        """
        weights = self.weights(model)
        out = {}
        for name, spec in self.specs.items():
            fmt, shape = spec.fmt, weights[name].shape
            fmt.check_module(model.get_submodule(name), name)
            rank = fmt.validate_rank(shape, spec.rank, layer=name)
            fmt.check_options(spec.options, layer=name, shape=shape)
            out[name] = LayerSpec(spec.format, rank, spec.options)
        return Projector(out)

    # ------------------------------------------------------------ C-step
    def decompose(self, model: nn.Module) -> dict[str, Any]:
        """``{name: decomposition}`` of the current weights (see :func:`decompose_weight`).

        Raises ``ValueError`` naming the layers whose weights are not finite.
        """
        return self.decompose_tensors(self.weights(model))

    def decompose_tensors(self, tensors: Mapping[str, torch.Tensor], warm: Mapping | None = None) -> dict[str, Any]:
        """``{name: decomposition of tensors[name]}`` in each layer's format, rank and options.

        ``warm`` is what :meth:`warm_starts` returned for earlier
        decompositions: each layer whose rank has not changed since starts
        from its previous factors (HOOI for the Tucker formats), the others
        start afresh.
        """
        check_finite(tensors)
        out = {}
        for n, s in self.specs.items():
            opts = s.fmt.check_options(s.options)
            start = (warm or {}).get(n)
            if start is not None and start["rank"] == s.fmt.rank_to_json(s.rank):
                opts.update(start["options"])
            out[n] = s.fmt.decompose(tensors[n].detach(), s.rank, **opts)
        return out

    def warm_starts(self, decompositions: Mapping[str, Any]) -> dict[str, dict]:
        """``{name: {"rank", "options"}}``: how the next :meth:`decompose_tensors` may start from ``decompositions``.

        Plain values and tensors, so a training method can checkpoint them
        (a resumed run then continues exactly as an uninterrupted one).
        Layers whose format has no warm start are left out.
        """
        out = {}
        for n, s in self.specs.items():
            opts = s.fmt.warm_start(decompositions[n], s.fmt.check_options(s.options))
            if opts:
                out[n] = {"rank": s.fmt.rank_to_json(s.rank), "options": opts}
        return out

    def reconstruct(self, decompositions: Mapping[str, Any], like) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` rebuilt from ``decompositions``, each like ``like[name]`` (shape, dtype, layout).

        ``like`` is a model (its layers' weights) or a mapping of tensors.
        """
        like = self.weights(like) if isinstance(like, nn.Module) else like
        with torch.no_grad():
            return {n: _like(like[n], s.fmt.reconstruct(decompositions[n])) for n, s in self.specs.items()}

    def project(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``{name: Delta(Theta)}``: every named weight projected, on its own device."""
        return self.reconstruct(self.decompose(model), model)

    def project_tensors(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: projection of tensors[name]}`` in each layer's format, rank and options (ADMM's ``W + U``)."""
        return self.reconstruct(self.decompose_tensors(tensors), tensors)

    def distances(self, model: nn.Module, targets: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        """``||W - target||`` and ``||W||`` per layer, plus ``"total"`` over all layers.

        Returns
        -------
        dict
            ``{name: {"distance", "norm", "relative"}}`` and the same under
            ``"total"`` (root of the sum of squares), as Python floats (one
            host synchronisation).
        """
        weights = self.weights(model)
        with torch.no_grad():
            rows = torch.stack([
                torch.stack([
                    torch.linalg.vector_norm((weights[n] - targets[n]).double()),
                    torch.linalg.vector_norm(weights[n].double()),
                ]).cpu()
                for n in self.specs
            ]).tolist()
        out = {}
        for n, (d, w) in zip(self.specs, rows):
            out[n] = {"distance": d, "norm": w, "relative": d / w if w > 0 else 0.0}
        d = math.sqrt(sum(r[0] ** 2 for r in rows))
        w = math.sqrt(sum(r[1] ** 2 for r in rows))
        out["total"] = {"distance": d, "norm": w, "relative": d / w if w > 0 else 0.0}
        return out

    # ---------------------------------------------------------- factorized
    def factorized_method(self) -> tuple[str, dict]:
        """The convolution format and its options, checked to have one factorized form.

        Raises ``ValueError`` when the specs have no factorized form: a
        format without a layer (full Tucker), several convolution formats,
        or different options for different convolutions (a model file
        records one format for the convolutions).
        """
        conv = [s for s in self.specs.values() if s.format != "lowrank"]
        for s in conv:
            s.fmt.require_layer()
        formats = {s.format for s in conv}
        if len(formats) > 1:
            raise ValueError(f"a compressed model has one convolution format, got {sorted(formats)}")
        if len({repr(sorted(s.options.items())) for s in conv}) > 1:
            raise ValueError("a compressed model needs the same decomposition options for every convolution")
        if not conv:
            return "tucker2", {}
        return conv[0].format, conv[0].fmt.check_options(conv[0].options)

    def to_factorized(self, model: nn.Module, **kwargs):
        """See :func:`to_factorized`."""
        return to_factorized(model, self, **kwargs)

    @classmethod
    def from_rank(cls, model: nn.Module, format, rank, *, input_size=(3, 32, 32), data=None, context=None,
                  skip=None, include_linear: bool = False, skip_first: bool = True, skip_pointwise: bool = True,
                  decompose_kwargs: Mapping | None = None, layers=None) -> "Projector":
        """The layers and ranks :func:`~tuckerlab.surgery.compress_model` would choose, without decomposing.

        Parameters
        ----------
        model : torch.nn.Module
            Only read.
        format : {"tucker2", "tt", "tt_tucker", "cp"} or Format
            Format of the convolutions (``nn.Linear`` layers, with
            ``include_linear=True``, get ``"lowrank"``).
        rank : rank selector, str, dict, rank rule or rank
            As ``compress_model`` takes it.
        input_size : sequence of int
            One input without the batch dimension.
        data, context
            For selectors that look at the data (see ``compress_model``).
        skip, include_linear, skip_first, skip_pointwise, decompose_kwargs
            As in ``compress_model``.
        layers : LayerSelection, optional
            The layers already selected (the other layer arguments are then
            not used).

        Returns
        -------
        Projector

        Raises
        ------
        ValueError
            If no layer is selected, or a rank does not fit its layer.
        """
        from tuckerlab.layer_selection import check_layer_names, select_layers
        from tuckerlab.rank.selectors import FixedRanks, SelectionContext, as_selector
        from tuckerlab.surgery import _conv_format

        fmt = _conv_format(format)
        selector = as_selector(rank)
        if isinstance(selector, FixedRanks):
            check_layer_names(model, selector.ranks)
        if layers is None:
            layers = select_layers(model, skip=skip, include_linear=include_linear, skip_first=skip_first,
                                   skip_pointwise=skip_pointwise, input_size=input_size)
        if context is None:
            context = SelectionContext(data=data, input_size=tuple(input_size))
        return cls.from_ranks(model, fmt, selector.select(model, fmt, layers, context), layers,
                              decompose_kwargs, rank)

    @classmethod
    def from_ranks(cls, model: nn.Module, format, ranks: Mapping[str, Any], layers, options=None,
                   what=None) -> "Projector":
        """A validated projector from ``{layer: rank}`` of selected ``layers`` (linear ones get ``lowrank``)."""
        from tuckerlab.rank.selectors import format_for

        fmt = get_format(format)
        chosen = {}
        for info in layers:
            r = ranks.get(info.name)
            if r is not None:
                f = format_for(info, fmt)
                chosen[info.name] = LayerSpec(f.name, r, dict(options or {}) if f is fmt else {})
        if not chosen:
            raise ValueError(f"rank {what if what is not None else ranks!r} selects no layer of "
                             f"{type(model).__name__} to compress")
        return cls(chosen).validate(model)


def as_projector(specs) -> Projector:
    """``specs`` (a :class:`Projector` or a mapping) as a :class:`Projector`."""
    return specs if isinstance(specs, Projector) else Projector(specs)


def project_model(model: nn.Module, specs) -> dict[str, torch.Tensor]:
    """The C-step: ``{layer name: projected dense weight}`` for every layer of ``specs``.

    Parameters
    ----------
    model : torch.nn.Module
        Its weights are read, not modified; decompositions run on the
        weights' device (the GPU when the model is there).
    specs : Projector or mapping
        ``{layer name: (format, rank)}`` or :class:`LayerSpec` values.

    Returns
    -------
    dict of str to torch.Tensor
        Each projected weight with the shape, device, dtype and layout of the
        layer's weight.

    Raises
    ------
    ValueError
        If a layer is missing, a format does not fit its layer or a rank is
        out of range (checked for every layer before any is decomposed).
    """
    return as_projector(specs).validate(model).project(model)


def to_factorized(model: nn.Module, specs, *, execution: str = "factorized", input_size=(3, 32, 32),
                  decompositions: Mapping[str, Any] | None = None, selection=None):
    """The compressed model: every layer of ``specs`` replaced by its factorized layer.

    The factors are ``decompositions`` when given (the factors of the last
    projection, e.g. LC's final C-step, so nothing is decomposed again), and
    otherwise the decomposition of the model's current weights; each new
    layer's ``reconstruct_weight()`` equals ``project_model(model,
    specs)[name]`` up to rounding.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified (a copy is compressed).
    specs : Projector or mapping
        One convolution format with a layer (``tucker2``, ``tt``,
        ``tt_tucker``, ``cp``, ...), with the same options for every
        convolution, plus ``lowrank`` for ``nn.Linear`` layers.
    execution : {"factorized", "reconstructed"}
        Execution mode of the new layers.
    input_size : sequence of int
        One input (without batch) to measure MACs.
    decompositions : mapping, optional
        ``{name: decomposition}`` of every layer of ``specs``.
    selection : LayerSelection, optional
        The selection the layers came from (same architecture): its shapes
        and totals are reused, and its skipped layers go into the report;
        by default the layers are selected again (one forward pass).

    Returns
    -------
    model : torch.nn.Module
    report : tuckerlab.surgery.CompressionReport
        Ranks, parameters and MACs per layer and in total.
    """
    from tuckerlab.layer_selection import select_layers
    from tuckerlab.surgery import build_compressed

    proj = as_projector(specs).validate(model)
    method, _ = proj.factorized_method()
    if decompositions is None:
        decompositions = proj.decompose(model)
    if selection is None or not set(proj.names) <= set(selection.names):
        selection = select_layers(model, names=proj.names, include_linear=True, skip_first=False,
                                  skip_pointwise=False, input_size=input_size)
    selection = selection.only(proj.names, reason="no rank")
    new, report = build_compressed(model, proj.specs, decompositions, execution=execution, selection=selection)
    report.method = method
    return new, report

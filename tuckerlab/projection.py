"""The C-step every compression method shares: a weight, a format, a rank in; its nearest decomposed weight out.

LC (Carreira-Perpinan, 2017), ADMM (Yin et al., 2021), alternating
train/decompose and budget-aware training all alternate SGD on the dense
weights ``W`` with a *projection* ``Delta(Theta) = Pi(W)``: the weight of
the given format and rank closest to ``W`` (exactly or, for Tucker and CP,
as closely as the decomposition algorithm finds). This module is that
projection, and nothing else: the algorithms live in
:mod:`tuckerlab.decompose`, the factorized layers in :mod:`tuckerlab.layers`.

Formats and their ranks (weight ``(T, S, Kh, Kw)`` = (out, in, kernel height,
kernel width), as in ``DEVELOPERS.md``):

=============  ======================================  ======================================
format         rank                                    decomposition (layer)
=============  ======================================  ======================================
``tucker2``    ``(r_out, r_in)`` or an int             Tucker of modes ``(0, 1)``
                                                       (:class:`~tuckerlab.layers.TuckerConv2d`)
``tucker``     one rank per mode, or an int            Tucker of every mode (no layer)
``tt``         ``(r1, r2, r3)``, ``(1, r1, r2, r3,     TT-SVD of the weight permuted to
               1)`` or an int cap                      ``(S, Kh, Kw, T)``
                                                       (:class:`~tuckerlab.layers.TTConv2d`)
``tt_tucker``  ``((r_out, r_in), (r1, r2, r3))``       Tucker factors on the channel modes,
                                                       TT on the ``(r_in, Kh, Kw, r_out)``
                                                       core (:class:`~tuckerlab.layers.TTTuckerConv2d`)
``cp``         an int                                  CP by ALS
                                                       (:class:`~tuckerlab.layers.CPConv2d`)
``lowrank``    an int                                  best rank-``r`` approximation of a
                                                       linear weight ``(out, in)``
                                                       (:class:`~tuckerlab.layers.LowRankLinear`)
=============  ======================================  ======================================

Note that here ``"tucker"`` is the full Tucker decomposition; the rank rules
of :mod:`tuckerlab.rank` say ``"tucker"`` for Tucker-2, which is
``"tucker2"`` here (as in :func:`tuckerlab.surgery.compress_model`).

Three levels:

- :func:`project` and :func:`decompose_weight` for one weight;
- :class:`LayerSpec` (format, rank, decomposition options) and
  :class:`Projector` (layer name -> spec) for a model, with
  :func:`project_model` (the C-step: every layer at once, on the weights'
  device) and :func:`to_factorized` (the compressed model with factorized
  layers, built by :func:`tuckerlab.surgery.compress_model`, which performs
  the very same projection once more and measures parameters and MACs);
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

from tuckerlab.decompose import cp, tensor_train, tt_tucker, tucker
from tuckerlab.decompose._validation import (
    _is_sequence,
    check_tensor,
    validate_cp_rank,
    validate_tt_rank,
    validate_tucker_rank,
)

__all__ = [
    "FORMATS",
    "LayerSpec",
    "Projector",
    "project",
    "decompose_weight",
    "reconstruct",
    "validate_rank",
    "project_model",
    "to_factorized",
]

#: Formats accepted by :func:`project`.
FORMATS = ("tucker2", "tucker", "tt", "tt_tucker", "cp", "lowrank")

#: Formats whose weight is a 4-D conv weight; ``tucker`` and ``cp`` take any order >= 2.
_CONV_ONLY = ("tucker2", "tt", "tt_tucker")

#: Decomposition options each format accepts (passed to :mod:`tuckerlab.decompose`).
_OPTIONS = {
    "tucker2": ("method", "n_iter_max", "tol", "random_state"),
    "tucker": ("method", "n_iter_max", "tol", "random_state"),
    "tt": (),
    "tt_tucker": ("method", "n_iter_max", "tol"),
    "cp": ("n_iter_max", "tol", "init", "random_state"),
    "lowrank": (),
}

#: Defaults that make every projection deterministic (CP's ALS draws random
#: columns when its rank exceeds a dimension).
_DEFAULT_OPTIONS = {"cp": {"random_state": 0}}


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: must be one of {', '.join(map(repr, FORMATS))}")
    return format


def _context(format: str, shape, layer: str | None) -> str:
    where = f"layer {layer!r} " if layer is not None else ""
    return f"{where}(format {format!r}, weight shape {tuple(int(n) for n in shape)})"


def _options(format: str, options: Mapping | None, layer: str | None = None, shape=()) -> dict:
    """``options`` checked against the format, with its defaults filled in."""
    opts = {**_DEFAULT_OPTIONS.get(format, {}), **dict(options or {})}
    unknown = sorted(set(opts) - set(_OPTIONS[format]))
    if unknown:
        accepted = ", ".join(_OPTIONS[format]) or "none"
        raise ValueError(
            f"{_context(format, shape, layer)}: unknown decomposition option(s) {unknown}; accepted: {accepted}"
        )
    return opts


def _lowrank_mode(shape) -> int:
    """The mode of a matrix decomposed for ``lowrank``: the smaller side (cheaper Gram matrix)."""
    return 0 if shape[0] <= shape[1] else 1


def validate_rank(shape, format: str, rank, *, layer: str | None = None):
    """Check ``rank`` for a weight of ``shape`` and return it in the layers' form.

    Parameters
    ----------
    shape : sequence of int
        Shape of the weight (``(T, S, Kh, Kw)`` for convolutions, ``(out,
        in)`` for linear layers).
    format : str
        One of :data:`FORMATS`.
    rank
        As in the module docstring.
    layer : str, optional
        Layer name, put at the start of error messages.

    Returns
    -------
    rank
        ``(r_out, r_in)`` for ``tucker2``; one int per mode for ``tucker``;
        the inner TT ranks ``(r1, r2, r3)`` for ``tt``; ``((r_out, r_in),
        (r1, r2, r3))`` for ``tt_tucker``; an int for ``cp`` and ``lowrank``.
        Int caps and full TT tuples are expanded, so the result is exactly
        the ``.rank`` of the factorized layer built with it.

    Raises
    ------
    ValueError
        For an unknown format, a weight of the wrong order, or a rank out of
        range: the message names the layer, the format, the mode or bond,
        the value and the range accepted (the checks of
        :mod:`tuckerlab.decompose`; nothing is clipped).
    """
    _check_format(format)
    shape = tuple(int(n) for n in shape)
    ctx = _context(format, shape, layer)
    if format in _CONV_ONLY and len(shape) != 4:
        raise ValueError(f"{ctx}: format {format!r} needs a 4-D conv weight (T, S, Kh, Kw)")
    if format == "lowrank" and len(shape) != 2:
        raise ValueError(f"{ctx}: format 'lowrank' needs a 2-D linear weight (out, in)")
    if format in ("tucker", "cp") and len(shape) < 2:
        raise ValueError(f"{ctx}: format {format!r} needs a weight with at least 2 dimensions")
    try:
        if format == "tucker2":
            return validate_tucker_rank(rank, shape, (0, 1))
        if format == "tucker":
            return validate_tucker_rank(rank, shape, tuple(range(len(shape))))
        if format == "tt":
            t, s, kh, kw = shape
            return validate_tt_rank(rank, (s, kh, kw, t))[1:-1]
        if format == "tt_tucker":
            if not (_is_sequence(rank) and len(rank) == 2):
                raise ValueError(f"rank={rank!r}: must be ((r_out, r_in), (r1, r2, r3))")
            t, s, kh, kw = shape
            r_out, r_in = validate_tucker_rank(rank[0], shape, (0, 1), name="tucker_rank")
            tt = validate_tt_rank(rank[1], (r_in, kh, kw, r_out), name="tt_rank")[1:-1]
            return ((r_out, r_in), tt)
        if format == "cp":
            return validate_cp_rank(rank, shape)
        return validate_tucker_rank(rank, shape, (_lowrank_mode(shape),))[0]
    except ValueError as err:
        raise ValueError(f"{ctx}: {err}") from None


def decompose_weight(weight: torch.Tensor, format: str, rank, **options):
    """Decompose ``weight`` in ``format`` at ``rank`` with :mod:`tuckerlab.decompose`.

    Parameters
    ----------
    weight : torch.Tensor
        Floating-point weight on any device (not modified; no gradient flows).
    format : str
        One of :data:`FORMATS`.
    rank
        See :func:`validate_rank`.
    **options
        Decomposition options: ``method``, ``n_iter_max``, ``tol``,
        ``random_state`` for ``tucker2``/``tucker``; ``method``,
        ``n_iter_max``, ``tol`` for ``tt_tucker``; ``n_iter_max``, ``tol``,
        ``init``, ``random_state`` for ``cp`` (``random_state`` defaults to
        0 so that projections are reproducible); none for ``tt`` and
        ``lowrank``.

    Returns
    -------
    TuckerTensor, TTTensor, TTTuckerTensor or CPTensor
        In the layout the layers' ``from_factors`` take: ``tt`` and
        ``tt_tucker`` decompose the weight permuted to ``(S, Kh, Kw, T)``
        (``tt_tucker`` with Tucker factors on modes ``(0, 3)``); ``lowrank``
        is a Tucker decomposition of one mode of the matrix (its smaller
        side), i.e. its truncated SVD. :func:`reconstruct` turns it back into
        a weight of the original shape.
    """
    check_tensor(weight, "weight")
    rank = validate_rank(weight.shape, format, rank)
    opts = _options(format, options, shape=weight.shape)
    w = weight.detach()
    if format == "tucker2":
        return tucker(w, rank, modes=(0, 1), **opts)
    if format == "tucker":
        return tucker(w, rank, **opts)
    if format == "tt":
        return tensor_train(w.permute(1, 2, 3, 0), rank)
    if format == "tt_tucker":
        (r_out, r_in), tt = rank
        return tt_tucker(w.permute(1, 2, 3, 0), (r_in, r_out), tt, modes=(0, 3), **opts)
    if format == "cp":
        return cp(w, rank, **opts)
    return tucker(w, rank, modes=(_lowrank_mode(w.shape),), method="hosvd")


def reconstruct(decomposition, format: str) -> torch.Tensor:
    """The weight (original layout) of a decomposition from :func:`decompose_weight`.

    Parameters
    ----------
    decomposition
        What :func:`decompose_weight` returned for ``format``.
    format : str
        One of :data:`FORMATS`.

    Returns
    -------
    torch.Tensor
        ``decomposition.to_tensor()``, permuted back to ``(T, S, Kh, Kw)``
        for ``tt`` and ``tt_tucker``.
    """
    _check_format(format)
    dense = decomposition.to_tensor()
    if format in ("tt", "tt_tucker"):
        dense = dense.permute(3, 0, 1, 2)
    return dense


def project(weight: torch.Tensor, format: str, rank, **options) -> torch.Tensor:
    """The nearest weight of ``format`` and ``rank``: ``Delta(Theta)`` of the LC C-step.

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
    projection computed by truncated SVDs / HOOI, which for Tucker-2 and
    low rank is the exact Euclidean projection (HOOI converged) and for TT
    and TT-Tucker the quasi-optimal sequential one (within ``sqrt(d - 1)`` of
    the best, Oseledets 2011). CP has no closed-form projection; ALS gives a
    local optimum.

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
        dense = reconstruct(decompose_weight(weight, format, rank, **options), format)
        # empty_like keeps the weight's strides (channels_last stays channels_last).
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
        _check_format(self.format)
        object.__setattr__(self, "options", dict(self.options))

    def to_dict(self) -> dict:
        """Plain values (JSON- and checkpoint-ready)."""
        return {"format": self.format, "rank": _plain(self.rank), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LayerSpec":
        return cls(d["format"], _tuple(d["rank"]), d.get("options", {}))


def _plain(rank):
    return [_plain(r) for r in rank] if isinstance(rank, (list, tuple)) else int(rank)


def _tuple(rank):
    return tuple(_tuple(r) for r in rank) if isinstance(rank, (list, tuple)) else rank


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
            own = {k: v for k, v in options.items() if k in _OPTIONS[spec.format]}
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

        Checks that each layer exists and is a ``groups=1`` ``nn.Conv2d`` (an
        ``nn.Linear`` for ``lowrank``), that its format fits its weight and
        that its rank is in range (see :func:`validate_rank`), and that the
        options are known. Raises ``ValueError`` naming the layer, the
        format, the rank and the range accepted.
        """
        weights = self.weights(model)
        out = {}
        for name, spec in self.specs.items():
            module = model.get_submodule(name)
            ctx = _context(spec.format, weights[name].shape, name)
            if spec.format == "lowrank":
                if not isinstance(module, nn.Linear):
                    raise ValueError(f"{ctx}: 'lowrank' compresses nn.Linear layers, this is a {type(module).__name__}")
            elif not isinstance(module, nn.Conv2d):
                raise ValueError(
                    f"{ctx}: {spec.format!r} compresses nn.Conv2d layers, this is a {type(module).__name__} "
                    "(use 'lowrank' for nn.Linear)"
                )
            elif module.groups != 1:
                raise ValueError(f"{ctx}: grouped convolutions (groups={module.groups}) cannot be decomposed")
            rank = validate_rank(weights[name].shape, spec.format, spec.rank, layer=name)
            _options(spec.format, spec.options, name, weights[name].shape)
            out[name] = LayerSpec(spec.format, rank, spec.options)
        return Projector(out)

    # ------------------------------------------------------------ C-step
    def decompose(self, model: nn.Module) -> dict[str, Any]:
        """``{name: decomposition}`` of the current weights (see :func:`decompose_weight`)."""
        weights = self.weights(model)
        return {n: decompose_weight(weights[n], s.format, s.rank, **s.options) for n, s in self.specs.items()}

    def project(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``{name: Delta(Theta)}``: every named weight projected, on its own device."""
        weights = self.weights(model)
        return {n: project(weights[n], s.format, s.rank, **s.options) for n, s in self.specs.items()}

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
        """The ``compress_model`` method and ``decompose_kwargs`` that build these layers.

        Raises ``ValueError`` when the specs have no factorized form: the full
        Tucker format (no layer), several convolution formats, or different
        options for different convolutions (a model file records one method).
        """
        conv = [s for s in self.specs.values() if s.format != "lowrank"]
        formats = {s.format for s in conv}
        if "tucker" in formats:
            raise ValueError(
                "format 'tucker' (full Tucker) has no factorized layer in tuckerlab.layers; use 'tucker2' "
                "(Tucker on the channel modes) to build a compressed model"
            )
        if len(formats) > 1:
            raise ValueError(f"a compressed model has one convolution format, got {sorted(formats)}")
        if len({repr(sorted(s.options.items())) for s in conv}) > 1:
            raise ValueError("a compressed model needs the same decomposition options for every convolution")
        if not conv:
            return "tucker2", {}
        return conv[0].format, _options(conv[0].format, conv[0].options)

    def to_factorized(self, model: nn.Module, **kwargs):
        """See :func:`to_factorized`."""
        return to_factorized(model, self, **kwargs)

    @classmethod
    def from_rank(cls, model: nn.Module, format: str, rank, *, input_size=(3, 32, 32), **compress_kwargs) -> "Projector":
        """The layers and ranks that :func:`~tuckerlab.surgery.compress_model` would choose.

        Parameters
        ----------
        model : torch.nn.Module
            Only read.
        format : {"tucker2", "tt", "tt_tucker", "cp"}
            Format of the convolutions (``nn.Linear`` layers, with
            ``include_linear=True``, get ``"lowrank"``).
        rank : rank, dict or rank rule
            As ``compress_model`` takes it (e.g. the output of
            :func:`tuckerlab.rank.spec.from_spec`).
        input_size : sequence of int
            One input without the batch dimension.
        **compress_kwargs
            ``skip``, ``include_linear``, ``skip_first``, ``skip_pointwise``,
            ``decompose_kwargs`` of ``compress_model``.

        Returns
        -------
        Projector

        Raises
        ------
        ValueError
            If no layer is selected, or a rank does not fit its layer.

        Notes
        -----
        The layer choice is ``compress_model``'s own: it is run on the model
        with a rule that records each eligible layer's rank and returns None,
        so nothing is decomposed. The default thus skips the first
        convolution and the 1x1 convolutions exactly as ``compress_model``
        does.
        """
        from tuckerlab.surgery import METHODS, compress_model

        if format not in METHODS:
            raise ValueError(f"format={format!r}: a model-wide rank needs one of {sorted(METHODS)}")
        options = dict(compress_kwargs.get("decompose_kwargs") or {})
        if isinstance(rank, Mapping):
            unknown = sorted(set(rank) - {n for n, _ in model.named_modules()})
            if unknown:
                raise ValueError(f"the rank dict names modules that are not in the model: {unknown}")
        chosen: dict[str, LayerSpec] = {}

        def record(name, module, method):
            if callable(rank):
                r = rank(name, module, method)
            elif isinstance(rank, Mapping):
                r = rank.get(name)
            else:
                r = rank
            if r is not None:
                fmt = "lowrank" if method == "svd" else format
                chosen[name] = LayerSpec(fmt, r, options if fmt != "lowrank" else {})
            return None  # decompose nothing

        compress_model(model, format, record, input_size=input_size, **compress_kwargs)
        if not chosen:
            raise ValueError(f"rank {rank!r} selects no layer of {type(model).__name__} to compress")
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


def to_factorized(model: nn.Module, specs, *, execution: str = "factorized", input_size=(3, 32, 32)):
    """The compressed model: every layer of ``specs`` replaced by its factorized layer.

    The factors are the projection of the model's current weights (the
    final C-step): :func:`tuckerlab.surgery.compress_model` runs the same
    decomposition with the same ranks and options as :func:`project`, so
    each new layer's ``reconstruct_weight()`` equals ``project_model(model,
    specs)[name]`` up to rounding.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified (a copy is compressed).
    specs : Projector or mapping
        One convolution format among ``tucker2``, ``tt``, ``tt_tucker``,
        ``cp`` (the model file format records one method), with the same
        options for every convolution, plus ``lowrank`` for ``nn.Linear``
        layers. ``tucker`` (full Tucker) has no factorized layer.
    execution : {"factorized", "reconstructed"}
        Execution mode of the new layers.
    input_size : sequence of int
        One input (without batch) to measure MACs.

    Returns
    -------
    model : torch.nn.Module
    report : tuckerlab.surgery.CompressionReport
        Ranks, parameters and MACs per layer and in total.
    """
    from tuckerlab.surgery import compress_model

    proj = as_projector(specs).validate(model)
    method, decompose_kwargs = proj.factorized_method()
    return compress_model(
        model,
        method,
        proj.ranks,
        include_linear="lowrank" in proj.formats,
        skip_first=False,
        skip_pointwise=False,
        execution=execution,
        input_size=input_size,
        decompose_kwargs=decompose_kwargs,
    )

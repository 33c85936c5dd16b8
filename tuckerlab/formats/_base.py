"""The :class:`Format` base class and the registry of formats.

A *format* is one way of storing a layer's weight as factors. It knows, in
one place: which layers it applies to, the layout its decomposition works in
(e.g. the ``(S, Kh, Kw, T)`` permutation of a TT), how a rank is written and
checked, the full rank, the decomposition, the reconstruction, the factorized
layer it builds, the parameters and MACs of that layer, and how a rank is
written to JSON. Everything else in tuckerlab (surgery, projection, rank
rules, the budget solver, Bayesian optimisation, the methods, model files and
the command line) reads the registry instead of dispatching on names.

Adding a format is one module: subclass :class:`Format`, fill in the
methods, and call :func:`register_format` with an instance.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "Format",
    "register_format",
    "unregister_format",
    "get_format",
    "format_names",
    "registered_formats",
    "rank_to_json",
    "rank_from_json",
]


#: HOOI sweeps the Tucker formats run unless told otherwise (``n_iter_max``).
#: On ResNet-32's 30 3x3 convolutions at half rank, 10 sweeps from the HOSVD
#: leave the error within 0.05% of 100 sweeps (0.04% on random
#: initialisations, whose flat spectra converge slowest), at 4-5x less time;
#: warm-started from the previous C-step, within 0.02%.
HOOI_SWEEPS = 10


def rank_to_json(rank: Any) -> Any:
    """A rank as plain JSON values: tuples become lists, integers plain ints."""
    if isinstance(rank, (list, tuple)):
        return [rank_to_json(r) for r in rank]
    return int(rank)


def rank_from_json(value: Any) -> Any:
    """The inverse of :func:`rank_to_json`: lists become tuples, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(rank_from_json(v) for v in value)
    return value


def _context(name: str, shape, layer: str | None) -> str:
    where = f"layer {layer!r} " if layer is not None else ""
    return f"{where}(format {name!r}, weight shape {tuple(int(n) for n in shape)})"


class Format:
    """One way of storing a layer's weight as factors.

    Subclasses set the class attributes and implement :meth:`normalize_rank`,
    :meth:`full_rank`, :meth:`decompose`, :meth:`reconstruct`,
    :meth:`layer_from_factors` and :meth:`cost`; formats with a factorized
    layer set :attr:`layer`. The rank-search hooks (:meth:`rule_rank`,
    :meth:`ratio_rank`, :meth:`scale_rank`, :meth:`budget_candidates`) are
    optional: a format without them simply cannot be used with those rank
    rules (the error says so).

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"tucker2"``.
    description : str
        One line for help texts.
    kind : {"conv", "linear", "any"}
        What it compresses: ``nn.Conv2d`` (``groups=1``) weights, ``nn.Linear``
        weights, or any tensor (no layer).
    layer : type or None
        The factorized module class it builds (None: projection only).
    options : tuple of str
        Decomposition options :meth:`decompose` accepts.
    default_options : dict
        Options used when none are given (e.g. a seed for CP).
    rank_doc : str
        How the rank is written (documented once here, used in messages).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "conv"
    layer: ClassVar[type | None] = None
    options: ClassVar[tuple[str, ...]] = ()
    default_options: ClassVar[Mapping[str, Any]] = {}
    rank_doc: ClassVar[str] = ""

    # ------------------------------------------------------------- modules
    def accepts(self, module: nn.Module) -> bool:
        """Whether this format can compress ``module``."""
        if self.kind == "linear":
            return isinstance(module, nn.Linear)
        if self.kind == "conv":
            return isinstance(module, nn.Conv2d) and module.groups == 1
        return isinstance(getattr(module, "weight", None), torch.Tensor)

    def check_module(self, module: nn.Module, layer: str | None = None) -> None:
        """Raise ``ValueError`` naming the layer when ``module`` is not one this format compresses."""
        weight = getattr(module, "weight", None)
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
        ctx = _context(self.name, shape, layer)
        if self.kind == "linear" and not isinstance(module, nn.Linear):
            raise ValueError(f"{ctx}: {self.name!r} compresses nn.Linear layers, this is a {type(module).__name__}")
        if self.kind == "conv":
            if not isinstance(module, nn.Conv2d):
                raise ValueError(
                    f"{ctx}: {self.name!r} compresses nn.Conv2d layers, this is a {type(module).__name__} "
                    "(use 'lowrank' for nn.Linear)"
                )
            if module.groups != 1:
                raise ValueError(f"{ctx}: grouped convolutions (groups={module.groups}) cannot be decomposed")
        if not isinstance(weight, torch.Tensor):
            raise ValueError(f"{ctx}: {type(module).__name__} has no weight tensor to compress")

    # ---------------------------------------------------------------- ranks
    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` (without context) when a weight of ``shape`` has the wrong order."""
        if self.kind == "conv" and len(shape) != 4:
            raise ValueError(f"format {self.name!r} needs a 4-D conv weight (T, S, Kh, Kw)")
        if self.kind == "linear" and len(shape) != 2:
            raise ValueError(f"format {self.name!r} needs a 2-D linear weight (out, in)")
        if self.kind == "any" and len(shape) < 2:
            raise ValueError(f"format {self.name!r} needs a weight with at least 2 dimensions")

    def normalize_rank(self, shape: tuple[int, ...], rank) -> Any:
        """``rank`` checked for a weight of ``shape`` and written in its one canonical form.

        Raises ``ValueError`` naming the mode or bond, the value and the
        range (no layer context: :meth:`validate_rank` adds it).
        """
        raise NotImplementedError

    def validate_rank(self, shape, rank, *, layer: str | None = None) -> Any:
        """Check ``rank`` for a weight of ``shape``; return it in canonical form.

        The canonical form is exactly the ``.rank`` of the factorized layer
        built with it. Errors name the layer (when given), the format and
        the weight shape, then the mode or bond, the value and the range.
        """
        shape = tuple(int(n) for n in shape)
        try:
            self.check_shape(shape)
            return self.normalize_rank(shape, rank)
        except ValueError as err:
            raise ValueError(f"{_context(self.name, shape, layer)}: {err}") from None

    def full_rank(self, shape: tuple[int, ...]) -> Any:
        """The largest rank of a weight of ``shape`` (no compression)."""
        raise NotImplementedError

    def rank_to_json(self, rank) -> Any:
        """Plain JSON values (lists and ints)."""
        return rank_to_json(rank)

    def rank_from_json(self, value) -> Any:
        """A rank read back from JSON (tuples again)."""
        return rank_from_json(value)

    # ------------------------------------------------------------- options
    def check_options(self, options: Mapping | None, *, layer: str | None = None, shape=()) -> dict:
        """``options`` checked against :attr:`options`, with the defaults filled in."""
        opts = {**dict(self.default_options), **dict(options or {})}
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise ValueError(
                f"{_context(self.name, shape, layer)}: unknown decomposition option(s) {unknown}; accepted: {accepted}"
            )
        return opts

    def own_options(self, options: Mapping) -> dict:
        """The entries of ``options`` this format accepts (the rest are another format's)."""
        return {k: v for k, v in dict(options).items() if k in self.options}

    # --------------------------------------------------------- the weights
    def decompose(self, weight: torch.Tensor, rank, **options) -> Any:
        """Decompose ``weight`` (validated canonical ``rank``) into this format's factors."""
        raise NotImplementedError

    def reconstruct(self, decomposition) -> torch.Tensor:
        """The weight, in its original layout, from what :meth:`decompose` returned (default: ``to_tensor()``)."""
        return decomposition.to_tensor()

    def rank_of(self, decomposition) -> Any:
        """The canonical rank of a decomposition returned by :meth:`decompose`."""
        raise NotImplementedError

    def warm_start(self, decomposition, options: Mapping) -> dict:
        """Options that start the next :meth:`decompose` at the same rank from ``decomposition``.

        Iterative training methods project slowly changing weights again and
        again; an iterative decomposition started from the previous result
        needs few iterations. ``options`` are the checked options the next
        decomposition runs with. Plain tensors only (they are checkpointed);
        ``{}`` (the default) where the format or the options have no warm
        start.
        """
        return {}

    # --------------------------------------------------------------- layers
    def require_layer(self) -> None:
        """Raise ``ValueError`` when this format builds no factorized layer (a projection-only format)."""
        if self.layer is None:
            raise ValueError(f"format {self.name!r} has no factorized layer: it can be projected onto, not built")

    def layer_from_factors(self, module: nn.Module, decomposition, execution: str = "factorized") -> nn.Module:
        """The factorized layer standing for ``module`` built from ``decomposition``.

        The default builds :attr:`layer` with ``from_factors`` and the
        convolution's hyper-parameters.
        """
        self.require_layer()
        return self.layer.from_factors(decomposition, **self.layer._conv_kwargs(module, execution))

    def empty_layer(self, module: nn.Module, rank, execution: str = "factorized") -> nn.Module:
        """A factorized layer for ``module`` at ``rank``, its factors randomly initialised.

        Used to rebuild a saved model before its weights are loaded: nothing
        is decomposed. The default builds :attr:`layer` with the
        convolution's hyper-parameters.
        """
        self.require_layer()
        kwargs = self.layer._conv_kwargs(module, execution)
        kwargs["bias"] = kwargs["bias"] is not None
        return self.layer(module.in_channels, module.out_channels, module.kernel_size, rank, **kwargs,
                          device=module.weight.device, dtype=module.weight.dtype)

    def upgrade_state(self, state: dict, prefix: str, shape: tuple[int, ...], rank) -> None:
        """Rewrite, in place, the saved weights of one layer written by an older layout.

        The default does nothing; formats whose stored factors changed
        override it (see :mod:`tuckerlab.serialization`).
        """

    # ---------------------------------------------------------------- costs
    def cost(self, shape, rank, output_hw=None, input_hw=None, *, bias: bool = False) -> tuple[int, int]:
        """``(params, MACs)`` of the factorized layer for one image (one call); default: the layer's ``cost``."""
        self.require_layer()
        return self.layer.cost(shape, rank, output_hw or (1, 1), input_hw, bias=bias)

    # ------------------------------------------------------ rank searches
    def rule_rank(self, weight: torch.Tensor, select: Callable, min_rank: int) -> Any:
        """The rank a spectral rule (EVBMF, energy) reads off ``weight`` (see :mod:`tuckerlab.rank.rules`)."""
        raise ValueError(f"format {self.name!r} has no spectral rank rule (EVBMF, energy)")

    def ratio_rank(self, shape, ratio: float, min_rank: int) -> Any:
        """``ratio`` times each entry of the full rank, made valid."""
        raise ValueError(f"format {self.name!r} has no fixed-ratio rank")

    def scale_rank(self, shape, rank, factor: float, min_rank: int) -> Any:
        """``factor`` times each entry of ``rank``, rounded and made valid (at most full rank)."""
        raise ValueError(f"format {self.name!r} cannot scale ranks")

    def budget_candidates(self, weight: torch.Tensor, candidates: Callable[[int], Any]):
        """Candidate ranks and their squared-error bound, for the budget solver.

        ``candidates(n)`` gives the ranks tried for a bond of full size ``n``.
        Returns ``(ranks, errors)`` (a list and a numpy array).
        """
        raise ValueError(f"format {self.name!r} has no error model for the budget solver")

    def __repr__(self) -> str:
        return f"<format {self.name!r}: {self.description}>"


_REGISTRY: dict[str, Format] = {}

#: Old spellings accepted at the public edge, with a deprecation warning.
_ALIASES = {
    "tucker-2": "tucker2", "tucker_2": "tucker2",
    "tensor_train": "tt", "tensor-train": "tt", "tensortrain": "tt",
    "tt-tucker": "tt_tucker", "tttucker": "tt_tucker", "tucker_tt": "tt_tucker",
    "cpd": "cp", "parafac": "cp",
    "svd": "lowrank", "low_rank": "lowrank", "low-rank": "lowrank", "linear": "lowrank",
}


class HOOIFormat(Format):
    """What the Tucker formats share: HOOI's options, capped at :data:`HOOI_SWEEPS`, and its warm start."""

    options = ("method", "n_iter_max", "tol", "random_state", "init")
    default_options = {"n_iter_max": HOOI_SWEEPS}

    def rank_of(self, decomposition):
        return tuple(decomposition.rank)

    def warm_start(self, decomposition, options):
        # HOOI from the previous factors (see tuckerlab.decompose.tucker's init);
        # HOSVD is one pass, with nothing to start.
        if options.get("method", "hooi") != "hooi" or "init" in options:
            return {}
        return {"init": [decomposition.factors[m] for m in decomposition.modes]}


def register_format(fmt: Format, *, replace: bool = False) -> Format:
    """Add ``fmt`` to the registry under ``fmt.name``; returns it.

    Raises ``ValueError`` when the name is taken (unless ``replace``) or empty.
    """
    if not isinstance(fmt, Format):
        raise TypeError(f"register_format takes a Format instance, got {type(fmt).__name__}")
    if not fmt.name or not isinstance(fmt.name, str):
        raise ValueError(f"a format needs a non-empty name, got {fmt.name!r}")
    if fmt.name in _REGISTRY and not replace:
        raise ValueError(f"format {fmt.name!r} is already registered (pass replace=True to replace it)")
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> Format:
    """Remove the format called ``name`` from the registry (e.g. a test's); returns it."""
    if name not in _REGISTRY:
        raise ValueError(f"format={name!r} is not registered")
    return _REGISTRY.pop(name)


def get_format(name, *, kind: str | None = None, old_spellings: bool = False) -> Format:
    """The registered format called ``name`` (a :class:`Format` is returned as it is).

    Parameters
    ----------
    name : str or Format
    kind : {"conv", "linear"}, optional
        Also require that the format compresses this kind of layer.
    old_spellings : bool
        Accept the old names (``"svd"``, ``"tensor_train"``, ...) with a
        ``DeprecationWarning``: for the public entry points that used to take
        them. Inside the package names are exact.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the registered ones) or a
        format of the wrong kind.
    """
    if isinstance(name, Format):
        fmt = name
    else:
        key = name
        if old_spellings and isinstance(name, str) and name.lower() in _ALIASES:
            key = _ALIASES[name.lower()]
            warnings.warn(f"format {name!r} is an old spelling; write {key!r}", DeprecationWarning, stacklevel=3)
        if key not in _REGISTRY:
            raise ValueError(f"format={name!r}: must be one of {', '.join(map(repr, _REGISTRY))}")
        fmt = _REGISTRY[key]
    if kind is not None and fmt.kind != kind:
        names = ", ".join(repr(n) for n in format_names(kind))
        raise ValueError(f"format={fmt.name!r} compresses {fmt.kind} weights; a {kind} format is needed: {names}")
    return fmt


def format_names(kind: str | None = None, *, with_layer: bool = False) -> tuple[str, ...]:
    """Registered format names, optionally of one kind and/or with a factorized layer."""
    return tuple(
        n for n, f in _REGISTRY.items()
        if (kind is None or f.kind == kind) and (not with_layer or f.layer is not None)
    )


def registered_formats() -> dict[str, Format]:
    """A copy of the registry ``{name: Format}``."""
    return dict(_REGISTRY)

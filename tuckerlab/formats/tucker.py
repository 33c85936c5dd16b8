"""Full Tucker: a factor on every mode (a projection only; no factorized layer)."""
from __future__ import annotations

from tuckerlab.decompose import tucker
from tuckerlab.decompose._validation import validate_tucker_rank

from ._base import HOOIFormat, register_format

__all__ = ["Tucker"]


class Tucker(HOOIFormat):
    """Tucker decomposition of every mode of a weight of any order >= 2: one rank per mode.

    There is no factorized layer for it (the spatial factors would need a
    layout of their own); it serves the projections of LC and ADMM and the
    teaching chapters. :class:`~tuckerlab.formats.tucker2.Tucker2` is the
    layer-building Tucker variant.
    """

    name = "tucker"
    description = "full Tucker: a factor on every mode (projection only, no layer)"
    kind = "any"
    layer = None
    rank_doc = "one rank per mode, or an int for every mode"

    def normalize_rank(self, shape, rank):
        return validate_tucker_rank(rank, shape, tuple(range(len(shape))))

    def full_rank(self, shape):
        return tuple(int(n) for n in shape)

    def decompose(self, weight, rank, **options):
        return tucker(weight.detach(), rank, **options)

    def require_layer(self):
        raise ValueError(
            "format 'tucker' (full Tucker) has no factorized layer in tuckerlab.layers; use 'tucker2' "
            "(Tucker on the channel modes) to build a compressed model"
        )

    def layer_from_factors(self, module, decomposition, execution="factorized"):
        self.require_layer()

    def empty_layer(self, module, rank, execution="factorized"):
        self.require_layer()

    def scale_rank(self, shape, rank, factor, min_rank):
        return tuple(min(max(min_rank, int(round(factor * r))), int(n)) for r, n in zip(rank, shape))


register_format(Tucker())

"""tuckerlab: compress convolutional networks by tensor decomposition.

The most used entry points are re-exported here; the subpackages hold the
rest: :mod:`tuckerlab.decompose` (tensor algorithms), :mod:`tuckerlab.layers`
(factorized modules), :mod:`tuckerlab.rank` (rank rules), :mod:`tuckerlab.train`
(the training engine), :mod:`tuckerlab.models`, :mod:`tuckerlab.data`.
"""
__version__ = "0.1.0"

from tuckerlab.metrics import count_macs, count_params, layer_macs, measure_latency
from tuckerlab.surgery import CompressionReport, compress_model

__all__ = [
    "__version__",
    "compress_model",
    "CompressionReport",
    "count_params",
    "count_macs",
    "layer_macs",
    "measure_latency",
]

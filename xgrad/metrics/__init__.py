"""Discrepancy metrics between a gradient and its reference, and the tolerance table.

The status of a comparison is decided by one number, the normwise relative error
``||g - ref||_2 / ||ref||_2``, against a per-dtype tolerance (:data:`TOLERANCES`). The other
metrics are there to explain a status, not to decide it.

Three modules, one idea each:

* :mod:`~xgrad.metrics.tolerances`: the tolerance table, noise floors, unit roundoffs and
  statuses (what a comparison is judged by);
* :mod:`~xgrad.metrics.definition`: the :class:`Metrics` record and its plain definition,
  :func:`compare_arrays`;
* :mod:`~xgrad.metrics.fused`: the engine the runner uses, :class:`PreparedReference`, which
  measures every framework of an entry against the reference in one chunked pass.
"""

from xgrad.metrics.definition import Metrics, compare_arrays, json_float
from xgrad.metrics.definition import ulp_distance as ulp_distance
from xgrad.metrics.fused import CHUNK as CHUNK
from xgrad.metrics.fused import PARALLEL_CHUNKS as PARALLEL_CHUNKS
from xgrad.metrics.fused import EntryComparison, PreparedReference
from xgrad.metrics.tolerances import (
    NOISE_FLOORS,
    RELATIVE_NOISE,
    STATUSES,
    TOLERANCES,
    UNIT_ROUNDOFF,
    rtol_note,
    tolerance,
)
from xgrad.metrics.tolerances import OK_STATUSES as OK_STATUSES

__all__ = [
    "NOISE_FLOORS",
    "EntryComparison",
    "PreparedReference",
    "RELATIVE_NOISE",
    "STATUSES",
    "TOLERANCES",
    "UNIT_ROUNDOFF",
    "Metrics",
    "compare_arrays",
    "json_float",
    "rtol_note",
    "tolerance",
]
# Also importable from here, as before the split (the `x as x` imports): OK_STATUSES,
# ulp_distance, and the fused pass's CHUNK and PARALLEL_CHUNKS (to change those, patch
# xgrad.metrics.fused, which reads them).

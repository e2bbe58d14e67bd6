"""Every evaluation the server serves, into a flageval telemetry pipeline.

:func:`record` is the only place an evaluation of the server enters a pipeline: the
package's own ``flageval._record.record``, which hands over the same snapshot the hook
takes (flag key, resolution details, evaluation context) on the same bounded hand-off,
starts the pipeline's worker on first use, never raises (a failure is counted as
``hook_error``), and does nothing with the killswitch set.
"""

from __future__ import annotations

from flageval._record import record

__all__ = ["record"]

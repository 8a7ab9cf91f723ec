"""Where host calls go: the component's imports, or the TestHost of a test.

Exactly one backend is current while a run is on; outside a run (natively)
host calls fail with a message that says how to test a job.
"""

from __future__ import annotations

from typing import Any

#: Job classes passed to export(), in order.
exported: list[type] = []

_current: Any = None


def install(backend: Any) -> Any:
    """Makes ``backend`` current; returns the one it replaces."""
    global _current
    previous, _current = _current, backend
    return previous


def current() -> Any:
    if _current is None:
        raise RuntimeError(
            "a quartzite_sdk host function was called outside a run; natively, "
            "run job code under quartzite_sdk.testing.TestHost"
        )
    return _current

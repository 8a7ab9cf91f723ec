"""Plain configuration from the job's ``config`` grants, read through
``wasi:config/store``: values an operator sets per job (a channel name, an API
base URL) without rebuilding the component. Not for credentials: those are
secret grants, which the host puts into requests itself and the job never sees::

    from quartzite_sdk import config

    channel = config.get("channel") or "#general"

Both functions raise :class:`quartzite_sdk.Retry` when the host cannot serve
config right now. Under :class:`quartzite_sdk.testing.TestHost` the values are
the ones a test set with ``TestHost.config(key, value)``.
"""

from __future__ import annotations

from . import _host


def get(key: str) -> str | None:
    """The value of config key ``key``; None when the job's grants give none."""
    if not isinstance(key, str):
        raise TypeError(f"config.get: the key must be a str, not {type(key).__name__}")
    return _host.current().config_get(key)


def get_all() -> dict[str, str]:
    """Every config key and value the job's grants give."""
    return dict(_host.current().config_get_all())

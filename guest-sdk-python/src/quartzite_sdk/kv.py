"""The job's durable key-value state, kept by the host between runs.

Keys are per job: two jobs never see each other's keys.
"""

from __future__ import annotations

import json
from typing import Any

from . import _host


def get(key: str) -> bytes | None:
    """The raw bytes stored under ``key``, or None."""
    return _host.current().kv_get(key)


def set(key: str, value: bytes | str) -> None:  # noqa: A001 (mirrors the WIT name)
    """Stores raw bytes (a str is stored as UTF-8) under ``key``."""
    if isinstance(value, str):
        value = value.encode()
    _host.current().kv_set(key, bytes(value))


def delete(key: str) -> bool:
    """Deletes ``key``; returns whether it existed."""
    return _host.current().kv_delete(key)


def get_json(key: str, default: Any = None) -> Any:
    """The JSON value stored under ``key`` by :func:`set_json`, or ``default``."""
    from . import Fatal

    raw = get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError as e:
        raise Fatal(f"kv key {key!r} does not hold JSON: {e}") from None


def set_json(key: str, value: Any) -> None:
    """Stores ``value`` as JSON under ``key``."""
    from . import Fatal

    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as e:
        raise Fatal(f"cannot serialize kv value for {key!r}: {e}") from None
    set(key, text.encode())

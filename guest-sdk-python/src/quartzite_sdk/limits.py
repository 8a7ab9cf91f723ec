"""The host's rules for what a job passes it, as numbers and checks.

The real host enforces these in the sandbox; :class:`quartzite_sdk.testing.TestHost`
enforces the same ones natively, so a job whose tests pass under pytest is not
refused for a key, name or size once it runs for real. The host's test suite
checks that every number here equals the host's own.
"""

MAX_KV_KEY = 256
MAX_KV_VALUE = 1 << 20
KV_MAX_KEYS = 10_000
KV_MAX_BYTES = 16 << 20
MAX_LOCK_NAME = 256
MAX_LOCKS_HELD = 16
MAX_EVENT_NAME = 128
MAX_EVENT_KEY = 256
MAX_EVENT_PAYLOAD = 64 << 10
MAX_EMITS_PER_RUN = 1_000
MAX_LOG_BYTES = 64 << 10
MAX_LOG_LINE = 4096
MAX_OUTPUT_BYTES = 1 << 20
#: Requests a run may send when its grants set no other bound.
HTTP_MAX_REQUESTS = 100

_EVENT_CHARS = set("._-:/")


def check_event_name(name: str) -> str | None:
    """What is wrong with an event name, in the host's words; None when it is fine."""
    size = len(name.encode())
    if size == 0 or size > MAX_EVENT_NAME:
        return f"event name {name!r} must be 1 to {MAX_EVENT_NAME} bytes"
    if not (name[0].isascii() and name[0].isalnum()):
        return f"event name {name!r} must start with a letter or digit"
    for c in name:
        if not ((c.isascii() and c.isalnum()) or c in _EVENT_CHARS):
            return f"event name {name!r} contains {c!r}; use letters, digits and . _ - : /"
    return None


def check_kv_key(key: str) -> str | None:
    """What is wrong with a kv key, in the host's words; None when it is fine."""
    size = len(key.encode())
    if size == 0:
        return "kv key is empty"
    if size > MAX_KV_KEY:
        return f"kv key is {size} bytes; the limit is {MAX_KV_KEY}"
    return None


def check_lock_name(name: str) -> str | None:
    """What is wrong with a lock name, in the host's words; None when it is fine."""
    size = len(name.encode())
    if size == 0 or size > MAX_LOCK_NAME:
        return f"lock name must be 1 to {MAX_LOCK_NAME} bytes"
    return None

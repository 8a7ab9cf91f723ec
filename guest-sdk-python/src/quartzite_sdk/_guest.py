"""The component side: the ``quartzite:job/runner`` export and the host
backend over the imports componentize-py generates (``wit_world``).

Only a component imports this module (through the entry module that
``quartzite_sdk.build`` writes); natively ``wit_world`` does not exist.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from wit_world import exports
from wit_world.imports import host, store
from componentize_py_types import Err

try:
    from wit_world.imports import types
except ImportError:  # next to wasi:http/types the contract's types take the package's name
    from wit_world.imports import quartzite_job_types as types

from . import Context, Event, Fatal, Lock, Overlap, Retry, _host, _run
# Imported now, while the component is built: a module first imported during
# a run is not found (the component carries no files, only the interpreter's
# state after the job module and its imports have loaded).
from . import _guest_http

_LEVELS = {
    "trace": types.LogLevel.TRACE,
    "debug": types.LogLevel.DEBUG,
    "info": types.LogLevel.INFO,
    "warn": types.LogLevel.WARN,
    "error": types.LogLevel.ERROR,
}

_OVERLAP = {
    Overlap.ALLOW: types.Overlap.ALLOW,
    Overlap.FORBID: types.Overlap.FORBID,
    Overlap.SKIP: types.Overlap.SKIP,
}


def _convert(err: Err) -> Exception:
    e = err.value
    if isinstance(e, types.HostError_InvalidArgument):
        return Fatal(f"invalid argument: {e.value}")
    if isinstance(e, types.HostError_LimitExceeded):
        return Fatal(f"limit exceeded: {e.value}")
    if isinstance(e, types.HostError_Timeout):
        return Retry("timed out waiting for the host")
    if isinstance(e, types.HostError_Cancelled):
        return Retry("run cancelled")
    if isinstance(e, types.HostError_Unavailable):
        return Retry(f"host unavailable: {e.value}")
    return Retry(f"host error: {e!r}")


def _config_error(err: Err) -> Exception:
    return Retry(f"config unavailable: {err.value.value}")


class _Backend:
    def log(self, level: str, message: str) -> None:
        host.log(_LEVELS[level], message)

    def cancelled(self) -> bool:
        return host.cancelled()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def kv_get(self, key: str) -> bytes | None:
        try:
            return host.kv_get(key)
        except Err as e:
            raise _convert(e) from None

    def kv_set(self, key: str, value: bytes) -> None:
        try:
            host.kv_set(key, value)
        except Err as e:
            raise _convert(e) from None

    def kv_delete(self, key: str) -> bool:
        try:
            return host.kv_delete(key)
        except Err as e:
            raise _convert(e) from None

    def lock(self, name: str, timeout_ms: int) -> Lock:
        try:
            guard = host.lock(name, timeout_ms)
        except Err as e:
            if isinstance(e.value, types.HostError_Timeout):
                raise Retry(f"lock {name!r} not acquired within {timeout_ms} ms") from None
            raise _convert(e) from None
        return Lock(guard.name(), guard.fencing_token(), lambda: guard.__exit__(None, None, None))

    def trigger_event(self) -> Event | None:
        e = host.trigger_event()
        if e is None:
            return None
        return Event(e.id, e.name, e.payload, e.key, e.depth, e.emitted_at, e.source_job)

    def emit(self, name: str, payload: str, key: str | None) -> str:
        try:
            return host.emit(name, payload, key)
        except Err as e:
            raise _convert(e) from None

    def config_get(self, key: str) -> str | None:
        try:
            return store.get(key)
        except Err as e:
            raise _config_error(e) from None

    def config_get_all(self) -> list[tuple[str, str]]:
        try:
            return store.get_all()
        except Err as e:
            raise _config_error(e) from None

    def http_send(self, request: Any) -> Any:
        return _guest_http.send(request)


_host.install(_Backend())


class Runner(exports.Runner):
    """The component's export: describe() and run() of the exported job."""

    def describe(self) -> types.JobInfo:
        info = _run.the_job()().describe()
        return types.JobInfo(
            name=info.name,
            version=info.version,
            description=info.description,
            default_schedule=info.default_schedule,
            overlap=None if info.overlap is None else _OVERLAP[info.overlap],
        )

    def run(self, ctx: types.Context) -> types.Outcome:
        context = Context(
            job_key=ctx.job_key,
            trigger_key=ctx.trigger_key,
            fire_id=ctx.fire_id,
            scheduled_at_ms=ctx.scheduled_at,
            fired_at_ms=ctx.fired_at,
            attempt=ctx.attempt,
            recovering=ctx.recovering,
            data_json=ctx.data,
        )
        try:
            details, new_data = _run.run(_run.the_job(), context)
        except _run.Failed as f:
            failure = types.Failure_Retry(f.message) if f.retryable else types.Failure_Fatal(f.message)
            raise Err(failure) from None
        return types.Outcome(details=details, new_data=new_data)

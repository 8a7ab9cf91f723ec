"""Write Quartzite jobs in Python.

A job is a subclass of :class:`Job` with a ``run`` method, exported once per
module with :func:`export`::

    import quartzite_sdk as q

    class Counter(q.Job):
        name = "counter"
        version = "1.0.0"

        def run(self, ctx: q.Context):
            count = q.kv.get_json("count", 0) + 1
            q.kv.set_json("count", count)
            q.log.info(f"run number {count}")
            return {"count": count}          # the run's details in history

    q.export(Counter)

``python -m quartzite_sdk.build job.py -o job.wasm`` turns the module into a
component; :class:`quartzite_sdk.testing.TestHost` runs it under pytest. The
bindings componentize-py generates stay inside this package: a job deals in
:class:`Context`, :class:`Outcome`, :class:`Retry`/:class:`Fatal` and the
helpers here (:mod:`kv <quartzite_sdk.kv>`, :func:`lock`, :func:`cancelled`,
:mod:`log <quartzite_sdk.log>`, :func:`emit`, :mod:`config <quartzite_sdk.config>`,
:mod:`http <quartzite_sdk.http>`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from . import _host

__all__ = [
    "Job", "JobInfo", "Overlap", "Context", "Event", "Outcome", "Retry", "Fatal",
    "export", "kv", "log", "lock", "Lock", "cancelled", "now", "emit", "config", "http",
]


class Retry(Exception):
    """A transient failure: the job's retry policy applies.

    Any other exception a run raises is treated as a retry too, with its type
    and message; raise :class:`Fatal` when trying again cannot help.
    """


class Fatal(Exception):
    """A permanent failure: the fire is never retried."""


class Overlap(Enum):
    """Whether fires of a job may overlap; the operator's setting wins."""
    ALLOW = "allow"
    FORBID = "forbid"
    SKIP = "skip"


@dataclass(frozen=True)
class JobInfo:
    """What a job says about itself (``quartzite module inspect`` shows it)."""
    name: str
    version: str
    description: str | None = None
    default_schedule: str | None = None
    overlap: Overlap | None = None


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


@dataclass(frozen=True)
class Event:
    """The event that started a fire."""
    id: str
    name: str
    payload_json: str
    key: str | None
    depth: int
    emitted_at_ms: int
    source_job: str | None

    @property
    def payload(self) -> Any:
        """The payload, parsed from JSON."""
        return json.loads(self.payload_json)

    @property
    def emitted_at(self) -> datetime:
        """When the event was accepted."""
        return _from_ms(self.emitted_at_ms)


@dataclass(frozen=True)
class Context:
    """What the host says about the fire being run."""
    job_key: str
    trigger_key: str
    #: Unique per fire and stable across retries and recovery: an idempotency key.
    fire_id: str
    scheduled_at_ms: int
    fired_at_ms: int
    #: 1 for the first run of a fire, 2 for its first retry, and so on.
    attempt: int
    #: True when this run re-executes a fire whose node died mid-run.
    recovering: bool
    data_json: str

    @property
    def data(self) -> Any:
        """The job data parsed from JSON: a dict for a manifest's ``data = {...}``,
        None for a job without data.

        Raises :class:`Fatal` when the data is not JSON: it would not be on retry either.
        """
        text = self.data_json.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as e:
            raise Fatal(f"job data is not JSON: {e}") from None

    @property
    def scheduled_at(self) -> datetime:
        """When the fire was due (UTC)."""
        return _from_ms(self.scheduled_at_ms)

    @property
    def fired_at(self) -> datetime:
        """When this run started (UTC)."""
        return _from_ms(self.fired_at_ms)

    @property
    def event(self) -> Event | None:
        """The event that started this fire; None for a fire of any other trigger."""
        return _host.current().trigger_event()


@dataclass
class Outcome:
    """A successful run's report: ``details`` (any JSON value) go to the task
    history; ``new_data``, when given, replaces the job data for later fires.
    A run may also return a plain value, which becomes the details."""
    details: Any = None
    new_data: Any = field(default=None)
    has_new_data: bool = field(default=False, repr=False)

    def __init__(self, details: Any = None, **kwargs: Any) -> None:
        self.details = details
        self.has_new_data = "new_data" in kwargs
        self.new_data = kwargs.pop("new_data", None)
        if kwargs:
            raise TypeError(f"Outcome got unexpected arguments: {sorted(kwargs)}")


class Job:
    """Subclass this. Set ``name`` and ``version`` (and optionally
    ``description``, ``default_schedule``, ``overlap``), or override
    :meth:`describe`; implement :meth:`run`."""

    name: str = ""
    version: str = "0.0.0"
    description: str | None = None
    #: A Quartz cron expression used when the operator gives no schedule.
    default_schedule: str | None = None
    overlap: Overlap | None = None

    def describe(self) -> JobInfo:
        """Name, version and hints for the host."""
        return JobInfo(
            name=self.name or type(self).__name__.lower(),
            version=self.version,
            description=self.description,
            default_schedule=self.default_schedule,
            overlap=self.overlap,
        )

    def run(self, ctx: Context) -> Any:
        """Runs one fire. Return details (a dict, list, str, number or None) or
        an :class:`Outcome`; raise :class:`Retry` or :class:`Fatal` to fail."""
        raise NotImplementedError(f"{type(self).__name__}.run is not implemented")


def export(job: type[Job]) -> type[Job]:
    """Makes ``job`` the job of this component. Call it once, at module level
    (it also works as a class decorator)."""
    if not (isinstance(job, type) and issubclass(job, Job)):
        raise TypeError(f"export() takes a Job subclass, not {job!r}")
    _host.exported.append(job)
    return job


def cancelled() -> bool:
    """True once the run should stop early: its timeout was reached or the node
    is shutting down. Long jobs check it between steps and return."""
    return _host.current().cancelled()


def now() -> datetime:
    """The current time (UTC): the host's clock, or the fake clock of a TestHost."""
    return _host.current().now()


class Lock:
    """A held cluster lock. Use it with ``with``; it is released when the block
    ends, and by the host when the run ends in any way."""

    def __init__(self, name: str, fencing_token: int, release: Any) -> None:
        self.name = name
        #: Grows every time the lock changes hands: give it to systems that can
        #: refuse writes carrying an older token.
        self.fencing_token = fencing_token
        self._release = release

    def release(self) -> None:
        """Releases the lock now (again does nothing)."""
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock(name: str, timeout: float = 10.0) -> Lock:
    """Takes the cluster-wide lock ``name``, waiting at most ``timeout`` seconds.

    Raises :class:`Retry` when the lock stays taken or the run is cancelled,
    :class:`Fatal` when the name is not acceptable.
    """
    ms = max(0, min(int(timeout * 1000), 2**32 - 1))
    return _host.current().lock(name, ms)


def emit(name: str, payload: Any = None, key: str | None = None) -> str:
    """Emits the event ``name`` with ``payload`` (serialized as JSON): every job
    subscribed to it fires once. Returns the event's id. A retried run that
    emits the same events in the same order does not emit them twice; with
    ``key``, emitting that key for that name again starts nothing.
    """
    try:
        text = json.dumps(payload)
    except (TypeError, ValueError) as e:
        raise Fatal(f"cannot serialize the payload of {name!r}: {e}") from None
    return _host.current().emit(name, text, key)


from . import config, http, kv, log  # noqa: E402  (they use the names above)

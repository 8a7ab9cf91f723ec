"""Run job logic natively under pytest, without building a component.

:class:`TestHost` plays the host: it hands the job its data, keeps kv state
and locks in memory, captures log lines, owns a fake clock, and can cancel the
run after a given number of ``cancelled()`` checks, serves config values and
answers HTTP requests from stubs. It refuses what the real host refuses, with
the same messages (see :mod:`quartzite_sdk.limits`)::

    from quartzite_sdk.testing import TestHost

    def test_counts():
        host = TestHost()
        assert host.run(Counter).details == {"count": 1}
        assert host.run(Counter).details == {"count": 2}
        assert host.kv_json("count") == 2

    def test_fetches():
        host = TestHost().config("base", "https://api.example.com")
        host.stub_http("https://api.example.com/v1/items", 200, "[1, 2, 3]")
        assert host.run(Fetch).details == 3
        assert host.http_requests[0].url == "https://api.example.com/v1/items"

A request to a URL without a stub is refused as :class:`quartzite_sdk.http.Denied`,
as the host refuses a URL no grant matches; so is a header the host sets
itself, and past :data:`quartzite_sdk.limits.HTTP_MAX_REQUESTS` requests in
a run a request raises :class:`quartzite_sdk.http.Limit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from . import Context, Event, Fatal, Job, Lock, Retry, _host, _run, limits
from .http import Denied, HttpError, Limit, Request, Response


@dataclass(frozen=True)
class LogLine:
    """One captured log line."""
    level: str
    message: str


@dataclass(frozen=True)
class Emitted:
    """An event a job emitted."""
    name: str
    payload_json: str
    key: str | None

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)


@dataclass(frozen=True)
class RunResult:
    """What one run returned: details and new data parsed from JSON, or the failure."""
    ok: bool
    details: Any = None
    new_data: Any = None
    has_new_data: bool = False
    retryable: bool = False
    message: str = ""


class RunFailed(AssertionError):
    """Raised by :meth:`TestHost.run` when the run fails and ``expect_ok`` is set."""


def _invalid(message: str) -> Fatal:
    return Fatal(f"invalid argument: {message}")


def _limit(message: str) -> Fatal:
    return Fatal(f"limit exceeded: {message}")


class TestHost:
    """The in-memory stand-in for the host."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        data: Any = None,
        *,
        data_json: str | None = None,
        job_key: str = "test/job",
        fire_id: str | None = None,
        attempt: int = 1,
        now: datetime | None = None,
        cancel_after_checks: int | None = None,
        kv_max_keys: int = limits.KV_MAX_KEYS,
        kv_max_bytes: int = limits.KV_MAX_BYTES,
        max_kv_value: int = limits.MAX_KV_VALUE,
        event: tuple[str, Any] | None = None,
    ) -> None:
        # The job data: a Python value (sent as JSON), or raw JSON text.
        self.data_json = data_json if data_json is not None else ("" if data is None else json.dumps(data))
        self.job_key = job_key
        self.fire_id = fire_id
        self.attempt = attempt
        self.recovering = False
        self.clock = now or datetime(2030, 1, 1, tzinfo=timezone.utc)
        self.cancel_after_checks = cancel_after_checks
        self.kv_max_keys = kv_max_keys
        self.kv_max_bytes = kv_max_bytes
        self.max_kv_value = max_kv_value
        self.kv: dict[str, bytes] = {}
        self.logs: list[LogLine] = []
        self.logs_dropped = 0
        self.emitted: list[Emitted] = []
        self.held: dict[str, int] = {}
        self.foreign: set[str] = set()
        self._event = None
        if event is not None:
            name, payload = event
            self._event = Event("test-event", name, json.dumps(payload), None, 0, self._ms(), None)
        self._emitted_keys: list[tuple[str, str]] = []
        self._next_token = 0
        self._runs = 0
        self._checks = 0
        self._emits = 0
        self._log_bytes = 0
        self._fire = ""
        #: Config keys and values, as ``config`` grants give them.
        self.config_values: dict[str, str] = {}
        #: Every request the job made (redirect hops and refused ones too), in order.
        self.http_requests: list[Request] = []
        self._stubs: list[tuple[str, list[Response | HttpError]]] = []
        self._requests_this_run = 0

    # --- what a test sets up and reads ---------------------------------

    def advance(self, seconds: float) -> None:
        """Moves the fake clock forward."""
        self.clock += timedelta(seconds=seconds)

    def hold_lock_elsewhere(self, name: str) -> None:
        """Pretends another node holds lock ``name``, so the job's ``lock`` times out."""
        self.foreign.add(name)

    def config(self, key: str, value: str) -> "TestHost":
        """Sets config key ``key``, as a ``config`` grant would. Returns the host."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("TestHost.config takes a str key and a str value")
        self.config_values[key] = value
        return self

    def stub_http(
        self,
        url: str,
        status: int = 200,
        body: str | bytes = "",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> "TestHost":
        """Answers requests to ``url`` (exact, or a prefix ending in ``*``) with
        ``status``, ``body`` and ``headers`` (default: ``content-type:
        application/json``). Stubbing a URL again queues another answer: each
        is given once, in order, and the last one repeats. Returns the host."""
        if headers is None:
            pairs = [("content-type", "application/json")]
        else:
            pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
        raw = body.encode() if isinstance(body, str) else bytes(body)
        return self._stub(url, Response(int(status), pairs, raw))

    def stub_http_error(self, url: str, error: HttpError) -> "TestHost":
        """Answers requests to ``url`` with ``error`` (a denial, a network failure...)."""
        if not isinstance(error, HttpError):
            raise TypeError(f"stub_http_error takes an http.HttpError, not {type(error).__name__}")
        return self._stub(url, error)

    def _stub(self, url: str, answer: Response | HttpError) -> "TestHost":
        for u, answers in self._stubs:
            if u == url:
                answers.append(answer)
                return self
        self._stubs.append((url, [answer]))
        return self

    def kv_json(self, key: str) -> Any:
        """The kv value under ``key`` parsed as JSON (None when absent)."""
        raw = self.kv.get(key)
        return None if raw is None else json.loads(raw)

    def messages(self) -> list[str]:
        """The captured log messages, in order."""
        return [line.message for line in self.logs]

    def run(self, job: type[Job], *, expect_ok: bool = True) -> RunResult:
        """Runs ``job`` once, as the host runs one fire. Locks it still holds
        afterwards are released, as the host releases them. With ``expect_ok``
        (the default) a failed run raises :class:`RunFailed`."""
        self._runs += 1
        self._checks = 0
        self._emits = 0
        self._log_bytes = 0
        self._requests_this_run = 0
        self._fire = self.fire_id or f"test-fire-{self._runs}"
        ctx = Context(
            job_key=self.job_key,
            trigger_key="test/trigger",
            fire_id=self._fire,
            scheduled_at_ms=self._ms(),
            fired_at_ms=self._ms(),
            attempt=self.attempt,
            recovering=self.recovering,
            data_json=self.data_json,
        )
        previous = _host.install(self)
        try:
            details, new_data = _run.run(job, ctx)
        except _run.Failed as f:
            result = RunResult(ok=False, retryable=f.retryable, message=f.message)
        else:
            size = len((details or "").encode()) + len((new_data or "").encode())
            if size > limits.MAX_OUTPUT_BYTES:
                result = RunResult(
                    ok=False,
                    message=f"the run returned {size} bytes of details and data; "
                    f"the limit is {limits.MAX_OUTPUT_BYTES}",
                )
            else:
                if new_data is not None:
                    self.data_json = new_data
                result = RunResult(
                    ok=True,
                    details=None if details is None else json.loads(details),
                    new_data=None if new_data is None else json.loads(new_data),
                    has_new_data=new_data is not None,
                )
        finally:
            _host.install(previous)
            self.held.clear()
        if expect_ok and not result.ok:
            kind = "retryable" if result.retryable else "fatal"
            raise RunFailed(f"the run failed ({kind}): {result.message}")
        return result

    # --- the backend the SDK calls --------------------------------------

    def _ms(self) -> int:
        return int(self.clock.timestamp() * 1000)

    def _is_cancelled(self) -> bool:
        n = self.cancel_after_checks
        return n is not None and (n == 0 or self._checks > n)

    def log(self, level: str, message: str) -> None:
        raw = message.encode()[: limits.MAX_LOG_LINE]
        message = raw.decode(errors="ignore")
        size = len(message.encode())
        if self.logs_dropped or self._log_bytes + size > limits.MAX_LOG_BYTES:
            self.logs_dropped += 1
            return
        self._log_bytes += size
        self.logs.append(LogLine(level, message))

    def cancelled(self) -> bool:
        self._checks += 1
        return self._is_cancelled()

    def now(self) -> datetime:
        return self.clock

    def kv_get(self, key: str) -> bytes | None:
        if (why := limits.check_kv_key(key)) is not None:
            raise _invalid(why)
        return self.kv.get(key)

    def kv_set(self, key: str, value: bytes) -> None:
        if (why := limits.check_kv_key(key)) is not None:
            raise _invalid(why)
        if len(value) > self.max_kv_value:
            raise _limit(f"kv value is {len(value)} bytes; the limit is {self.max_kv_value}")
        others = [v for k, v in self.kv.items() if k != key]
        if len(others) >= self.kv_max_keys or sum(map(len, others)) + len(value) > self.kv_max_bytes:
            raise _limit(
                f"the job's kv state may hold at most {self.kv_max_keys} keys "
                f"and {self.kv_max_bytes} bytes of values"
            )
        self.kv[key] = value

    def kv_delete(self, key: str) -> bool:
        if (why := limits.check_kv_key(key)) is not None:
            raise _invalid(why)
        return self.kv.pop(key, None) is not None

    def lock(self, name: str, timeout_ms: int) -> Lock:
        if (why := limits.check_lock_name(name)) is not None:
            raise _invalid(why)
        if len(self.held) >= limits.MAX_LOCKS_HELD:
            raise _limit(f"a run may hold at most {limits.MAX_LOCKS_HELD} locks")
        if self._is_cancelled():
            raise Retry("run cancelled")
        if name in self.foreign or name in self.held:
            # A single-threaded fake cannot wait for a release: time passes instead.
            self.clock += timedelta(milliseconds=timeout_ms)
            raise Retry(f"lock {name!r} not acquired within {timeout_ms} ms")
        self._next_token += 1
        token = self._next_token
        self.held[name] = token
        return Lock(name, token, lambda: self.held.pop(name, None))

    def trigger_event(self) -> Event | None:
        return self._event

    def emit(self, name: str, payload: str, key: str | None) -> str:
        if (why := limits.check_event_name(name)) is not None:
            raise _invalid(why)
        if key is not None and not 1 <= len(key.encode()) <= limits.MAX_EVENT_KEY:
            raise _invalid(f"idempotency key must be 1 to {limits.MAX_EVENT_KEY} bytes")
        if len(payload.encode()) > limits.MAX_EVENT_PAYLOAD:
            raise _limit(
                f"event payload is {len(payload.encode())} bytes; the limit is {limits.MAX_EVENT_PAYLOAD}"
            )
        if self._emits >= limits.MAX_EMITS_PER_RUN:
            raise _limit(f"a run may emit at most {limits.MAX_EMITS_PER_RUN} events")
        if self._is_cancelled():
            raise Retry("run cancelled")
        self._emits += 1
        # As the host does: a keyless emit is keyed by the fire and its position.
        seen = (name, key if key is not None else f"fire:{self._fire}:{self._emits}")
        if seen in self._emitted_keys:
            return f"test-event-{self._emitted_keys.index(seen) + 1}"
        self._emitted_keys.append(seen)
        self.emitted.append(Emitted(name, payload, key))
        return f"test-event-{len(self.emitted)}"

    def config_get(self, key: str) -> str | None:
        return self.config_values.get(key)

    def config_get_all(self) -> list[tuple[str, str]]:
        return list(self.config_values.items())

    def http_send(self, request: Request) -> Response:
        self.http_requests.append(request)
        self._requests_this_run += 1
        if self._requests_this_run > limits.HTTP_MAX_REQUESTS:
            raise Limit("the run's request or connection limit")
        url = request.url
        for pattern, answers in self._stubs:
            hit = url.startswith(pattern[:-1]) if pattern.endswith("*") else url == pattern
            if hit:
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if isinstance(answer, HttpError):
                    raise answer
                return Response(answer.status, list(answer.headers), answer.body)
        raise Denied(
            f"no stub for {url} (TestHost denies what it was not told about, "
            "as the host denies what is not granted)"
        )

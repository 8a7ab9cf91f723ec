"""Outbound HTTP from a job: a small blocking client over ``wasi:http``.

The host sends a request only to URLs the job's ``http`` grants name, and puts
in the credentials of its secret grants itself: a job never holds them. An
error says who said no::

    from quartzite_sdk import http

    items = http.get_json("https://api.example.com/v1/items")
    r = http.post_json("https://api.example.com/v1/items", {"name": "x"})
    r.error_for_status()
    r = http.request("PUT", url, headers={"x-a": "1"}, body=b"...", timeout=5)

- :class:`Denied`: the host refused (no grant matches, a private address, a
  header the host sets itself). Trying again cannot help.
- :class:`Limit`: a per-run bound (requests, bytes, connections) was reached.
- :class:`Network`: resolving, connecting, TLS or reading failed, or it timed out.
- :class:`Status`: the server answered 4xx or 5xx (from
  :meth:`Response.error_for_status`; :func:`get_json` calls it).
- :class:`Invalid`: the request could not be built (bad URL, method, header or body).

All are :class:`HttpError`. One that escapes a run fails it as a retry when
trying later may help (:attr:`HttpError.retryable`: network errors, 5xx, 429)
and fatally otherwise. Redirects of GET and HEAD (and every 303) are followed
up to ``max_redirects`` times; the host checks each hop against the grants.

Calls block until the response is read whole: a job's ``run`` is synchronous.
Under :class:`quartzite_sdk.testing.TestHost` requests go to the stubs a test
set up, and a URL without a stub is denied, as an ungranted one is by the host.
"""

from __future__ import annotations

import json as _json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from . import _host

__all__ = [
    "HttpError", "Denied", "Limit", "Network", "Status", "Invalid",
    "Request", "Response", "request", "get", "get_json", "post_json",
]

#: Redirects followed by default.
DEFAULT_MAX_REDIRECTS = 5

#: Headers the host sets itself and refuses from a job (wasmtime's default list).
FORBIDDEN_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings",
})

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class HttpError(Exception):
    """Why a request did not give a usable response. ``kind`` is one of
    ``denied``, ``limit``, ``network``, ``status``, ``invalid``."""

    kind = ""
    _prefix = ""

    def __init__(self, message: str) -> None:
        super().__init__(f"{self._prefix}{message}")
        #: What went wrong, without the kind's prefix.
        self.detail = message

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed: network errors, 5xx and 429."""
        return False


class Denied(HttpError):
    """The host refused the request: no grant matches its URL, its host
    resolves to an address the job may not reach, or it sets a header the
    host keeps for itself."""
    kind = "denied"
    _prefix = "request denied by the host: "


class Limit(HttpError):
    """A per-run bound (requests, bytes, connections) was reached."""
    kind = "limit"
    _prefix = "request over the run's limits: "


class Network(HttpError):
    """Resolving, connecting, TLS or reading failed, or it timed out."""
    kind = "network"
    _prefix = "network error: "

    @property
    def retryable(self) -> bool:
        return True


class Invalid(HttpError):
    """The request could not be built, or a response body was not what the
    job expected (not JSON)."""
    kind = "invalid"
    _prefix = "invalid request: "


class Status(HttpError):
    """The server answered with an error status (400 or more)."""
    kind = "status"

    def __init__(self, status: int, body: str, retry_after: float | None = None) -> None:
        self.status = status
        #: The response body as text, cut to 1 KiB.
        self.body = body
        #: The ``Retry-After`` of the response in seconds, when given in seconds.
        self.retry_after = retry_after
        Exception.__init__(self, f"server answered {status}: {body}")
        self.detail = body

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status == 429


def _cut(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore")


@dataclass
class Response:
    """A received response, its body read whole."""
    status: int
    #: The headers in the order received, as (name, value) pairs.
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for n, v in self.headers:
            if n.lower() == wanted:
                return v
        return None

    def bytes(self) -> bytes:  # noqa: A003 (mirrors text() and json())
        """The body as it came."""
        return self.body

    def text(self) -> str:
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; :class:`Invalid` when it is not JSON."""
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise Invalid(f"response body is not the expected JSON: {e}") from None

    def error_for_status(self) -> "Response":
        """The response itself when its status is below 400; :class:`Status` otherwise."""
        if self.status < 400:
            return self
        retry_after = None
        value = self.header("retry-after")
        if value is not None and value.strip().isdigit():
            retry_after = float(int(value.strip()))
        raise Status(self.status, _cut(self.text(), 1024), retry_after)


def _headers(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise Invalid(f"headers: {item!r} is not a (name, value) pair") from None
        if not isinstance(name, str) or not isinstance(value, str):
            raise Invalid(f"header {name!r}: name and value must be str, not "
                          f"{type(name).__name__} and {type(value).__name__}")
        out.append((name, value))
    return out


@dataclass
class Request:
    """A request to send; :func:`request` builds and sends one."""
    method: str
    #: The whole URL, query included.
    url: str
    #: Headers to send, in order.
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: The body (empty: none).
    body: bytes = b""
    #: Seconds to wait for connecting and for the response to start (the
    #: host's limits still apply); None: the host's limits only.
    timeout: float | None = None
    #: Redirects of a GET or HEAD followed at most.
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    def check(self) -> None:
        """Raises :class:`Invalid` (or :class:`Denied` for a header the host
        sets) when the request cannot be sent as it is."""
        if not isinstance(self.method, str) or not _TOKEN.match(self.method):
            raise Invalid(f"method {self.method!r} is not an HTTP method name")
        if not isinstance(self.url, str):
            raise Invalid(f"the URL must be a str, not {type(self.url).__name__}")
        scheme, _, _ = split_url(self.url)
        if scheme.lower() not in ("http", "https"):
            raise Invalid(f"scheme {scheme!r} of {self.url!r}: only http and https are sent")
        for name, value in self.headers:
            if not _TOKEN.match(name):
                raise Invalid(f"header name {name!r} is not a valid token")
            if any(c in value for c in "\r\n\0"):
                raise Invalid(f"header {name!r}: the value holds a line break or NUL")
            if name.lower() in FORBIDDEN_HEADERS:
                raise Denied(f"header {name!r} is set by the host, not by jobs")
        if not isinstance(self.body, (bytes, bytearray)):
            raise Invalid(f"the body must be bytes or str, not {type(self.body).__name__}")
        t = self.timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))
                              or not math.isfinite(t) or t <= 0):
            raise Invalid(f"timeout {t!r}: give a positive number of seconds, or None")
        n = self.max_redirects
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise Invalid(f"max_redirects {n!r}: give a whole number, 0 or more")

    def send(self) -> Response:
        """Sends the request, following redirects as the module docs say.

        Raises any :class:`HttpError` but :class:`Status`: an error status is
        a response (see :meth:`Response.error_for_status`).
        """
        current = replace(self, headers=_headers(self.headers))
        current.check()
        current.method = current.method.upper()
        current.body = bytes(current.body)
        left = current.max_redirects
        while True:
            response = _host.current().http_send(current)
            follow = response.status in (301, 302, 303, 307, 308) and (
                current.method in ("GET", "HEAD") or response.status == 303
            )
            location = response.header("location")
            if not follow or location is None or left == 0:
                return response
            left -= 1
            nxt = replace(current, url=resolve_url(current.url, location))
            if response.status == 303:
                nxt.method = "GET"
                nxt.body = b""
            current = nxt


_UNSET: Any = object()


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes | str | None = None,
    json: Any = _UNSET,
    timeout: float | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
) -> Response:
    """Sends ``method url`` and returns the response, whatever its status.

    ``body`` is sent as given (a str as UTF-8); ``json`` is serialized and sent
    with ``Content-Type: application/json`` (give one of the two). ``timeout``
    bounds connecting and waiting for the response, in seconds.
    """
    hs = _headers(headers)
    if json is not _UNSET:
        if body is not None:
            raise Invalid("give body or json, not both")
        try:
            body = _json.dumps(json)
        except (TypeError, ValueError) as e:
            raise Invalid(f"the JSON body cannot be serialized: {e}") from None
        if not any(n.lower() == "content-type" for n, _ in hs):
            hs.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode()
    return Request(method, url, hs, b"" if body is None else body, timeout, max_redirects).send()


def get(url: str, **options: Any) -> Response:
    """``GET url`` (options as :func:`request` takes them)."""
    return request("GET", url, **options)


def get_json(url: str, **options: Any) -> Any:
    """``GET url``, an error status raised as :class:`Status`, the body parsed as JSON."""
    return get(url, **options).error_for_status().json()


def post_json(url: str, body: Any, **options: Any) -> Response:
    """``POST url`` with ``body`` as JSON; the response as it came."""
    return request("POST", url, json=body, **options)


def split_url(url: str) -> tuple[str, str, str]:
    """``scheme://authority/path?query`` as (scheme, authority, path-and-query)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise Invalid(f"{url!r} is not an absolute URL")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
    authority, path = (rest, "/") if cut < 0 else (rest[:cut], rest[cut:])
    if path.startswith("?"):
        path = "/" + path
    if not authority:
        raise Invalid(f"{url!r} has no host")
    return scheme, authority, path


def resolve_url(base: str, location: str) -> str:
    """A ``Location`` header against the URL it came from."""
    if "://" in location:
        return location
    scheme, authority, _ = split_url(base)
    if location.startswith("//"):
        return f"{scheme}:{location}"
    if location.startswith("/"):
        return f"{scheme}://{authority}{location}"
    raise Invalid(f"redirect to {location!r}: relative paths are not followed")

"""``quartzite_sdk.http`` inside a component: one request over the
``wasi:http`` imports, blocking on their pollables.

In a component built with ``--no-wasi-http`` the imports do not exist and
every request raises :class:`Invalid`.
"""

from __future__ import annotations

from componentize_py_types import Err, Ok

from .http import Denied, HttpError, Invalid, Limit, Network, Request, Response, split_url

try:
    from wit_world.imports import outgoing_handler, streams
    from wit_world.imports import wasi_http_types as ht
except ImportError:  # built against the world without wasi:http
    outgoing_handler = None

_METHODS = {
    "GET": "Method_Get", "HEAD": "Method_Head", "POST": "Method_Post", "PUT": "Method_Put",
    "DELETE": "Method_Delete", "PATCH": "Method_Patch", "OPTIONS": "Method_Options",
}


def _from_code(code: object) -> HttpError:
    if isinstance(code, (ht.ErrorCode_HttpRequestDenied, ht.ErrorCode_DestinationIpProhibited)):
        return Denied("the job's grants do not allow this request")
    if isinstance(code, ht.ErrorCode_ConnectionLimitReached):
        return Limit("the run's request or connection limit")
    if isinstance(code, ht.ErrorCode_HttpRequestBodySize):
        return Limit("the run's request body bytes")
    if isinstance(code, ht.ErrorCode_HttpResponseBodySize):
        return Limit("the run's response body bytes")
    if isinstance(code, ht.ErrorCode_HttpRequestUriInvalid):
        return Invalid("the URL")
    return Network(type(code).__name__.removeprefix("ErrorCode_"))


def _stream_error(e: Err) -> HttpError:
    err = e.value
    if isinstance(err, streams.StreamError_Closed):
        return Network("the stream closed early")
    code = ht.http_error_code(err.value)
    if code is not None:
        return _from_code(code)
    # wasmtime 48 hands body errors over as text only.
    first = (err.value.to_debug_string().splitlines() or [""])[0]
    return Limit(first) if "body size exceeds limit" in first else Network(first)


def send(request: Request) -> Response:
    if outgoing_handler is None:
        raise Invalid(
            "this component was built without wasi:http (quartzite_sdk.build --no-wasi-http); "
            "build it without that flag to make requests"
        )
    scheme, authority, path = split_url(request.url)
    fields = ht.Fields()
    entries = list(request.headers)
    # A known length, not chunked: simple servers read bodies by it.
    if request.body and not any(n.lower() == "content-length" for n, _ in entries):
        entries.insert(0, ("content-length", str(len(request.body))))
    for name, value in entries:
        try:
            fields.append(name, value.encode())
        except Err as e:
            if isinstance(e.value, ht.HeaderError_Forbidden):
                raise Denied(f"header {name!r} is set by the host, not by jobs") from None
            raise Invalid(f"header {name!r}") from None
    outgoing = ht.OutgoingRequest(fields)
    method = _METHODS.get(request.method)
    method = getattr(ht, method)() if method else ht.Method_Other(request.method)
    try:
        outgoing.set_method(method)
        outgoing.set_scheme(ht.Scheme_Https() if scheme.lower() == "https" else ht.Scheme_Http())
        outgoing.set_authority(authority)
        outgoing.set_path_with_query(path)
    except Err:
        raise Invalid(f"the host cannot send to {request.url!r}") from None
    body = outgoing.body()
    options = ht.RequestOptions()
    if request.timeout is not None:
        ns = int(request.timeout * 1e9)
        for setter in (options.set_connect_timeout, options.set_first_byte_timeout):
            try:
                setter(ns)
            except Err:
                pass  # the host keeps its own bound
    try:
        pending = outgoing_handler.handle(outgoing, options)
    except Err as e:
        raise _from_code(e.value) from None
    # Children go before their parents, as the resources require: the body
    # stream before the body is finished, the response before its future.
    # A server may answer before it has read the body and close the
    # connection: the write then fails, and the answer is still the response.
    failed: HttpError | None = None
    if request.body:
        with body.write() as stream:
            data = request.body
            for at in range(0, len(data), 4096):
                try:
                    stream.blocking_write_and_flush(data[at : at + 4096])
                except Err as e:
                    failed = _stream_error(e)
                    break
    try:
        ht.OutgoingBody.finish(body, None)
    except Err as e:
        failed = failed or _from_code(e.value)
    with pending.subscribe() as ready:
        ready.block()
    got = pending.get()
    if got is None or isinstance(got, Err):
        raise failed or Network("the response was not delivered")
    if not isinstance(got.value, Ok):
        raise failed if isinstance(failed, Limit) else _from_code(got.value.value)
    with got.value.value as incoming:
        status = incoming.status()
        with incoming.headers() as hs:
            headers = [(n, v.decode("utf-8", errors="replace")) for n, v in hs.entries()]
        chunks = []
        with incoming.consume() as incoming_body:
            with incoming_body.stream() as stream:
                while True:
                    try:
                        chunks.append(stream.blocking_read(64 << 10))
                    except Err as e:
                        if isinstance(e.value, streams.StreamError_Closed):
                            break
                        raise _stream_error(e) from None
    pending.__exit__(None, None, None)
    return Response(status, headers, b"".join(chunks))

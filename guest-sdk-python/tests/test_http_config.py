"""config and http under the native test host: what a job sees, and what the
test host refuses as the real host would."""

import pytest

import quartzite_sdk as q
from quartzite_sdk import config, http, limits
from quartzite_sdk.testing import TestHost


def _run(host, body):
    class Probe(q.Job):
        def run(self, ctx):
            return body()

    return host.run(Probe, expect_ok=False)


class Fetch(q.Job):
    def run(self, ctx):
        base = config.get("base") or "https://default.example"
        items = http.get_json(f"{base}/v1/items")
        return {"n": len(items), "channel": config.get("channel")}


def test_config_reads_what_the_test_host_sets():
    host = TestHost().config("channel", "#ops").config("base", "https://api.example.com")
    host.stub_http("https://api.example.com/v1/items", 200, "[1, 2, 3]")
    assert host.run(Fetch).details == {"n": 3, "channel": "#ops"}
    assert _run(host, config.get_all).details == {"channel": "#ops", "base": "https://api.example.com"}
    assert _run(TestHost(), lambda: config.get("channel")).details is None
    assert _run(TestHost(), config.get_all).details == {}
    r = _run(TestHost(), lambda: config.get(7))
    assert r.retryable and "the key must be a str, not int" in r.message


def test_requests_are_recorded_with_method_headers_and_body():
    host = TestHost().stub_http("https://api.example.com/*", 201, '{"id": 9}', headers={"x-r": "1"})

    def post():
        r = http.post_json("https://api.example.com/v1/items", {"name": "a"}, headers=[("x-a", "1")])
        return {"status": r.status, "id": r.json()["id"], "x-r": r.header("X-R"), "ct": r.header("content-type")}

    assert _run(host, post).details == {"status": 201, "id": 9, "x-r": "1", "ct": None}
    (sent,) = host.http_requests
    assert (sent.method, sent.url, sent.body) == ("POST", "https://api.example.com/v1/items", b'{"name": "a"}')
    assert sent.headers == [("x-a", "1"), ("content-type", "application/json")]
    assert sent.max_redirects == 5 and sent.timeout is None


def test_an_unstubbed_url_is_denied_like_an_ungranted_one():
    host = TestHost().stub_http("https://api.example.com/v1/items", 200, "[]")
    r = _run(host, lambda: http.get("https://api.example.com/v1/other").status)
    assert not r.retryable
    assert r.message.startswith("request denied by the host: no stub for https://api.example.com/v1/other")
    with pytest.raises(http.Denied):
        host.http_send(http.Request("GET", "https://elsewhere.example/"))
    assert [x.url for x in host.http_requests][0] == "https://api.example.com/v1/other"


def test_error_kinds_and_whether_a_run_retries():
    def status(code, headers=None):
        host = TestHost().stub_http("https://a.example/x", code, "nope", headers=headers)
        return _run(host, lambda: http.get("https://a.example/x").error_for_status().status)

    r = status(404)
    assert (r.retryable, r.message) == (False, "server answered 404: nope")
    assert status(503).retryable and status(429).retryable
    assert status(204).details == 204

    host = TestHost().stub_http("https://a.example/x", 429, "slow", headers=[("Retry-After", " 7 ")])

    def caught():
        try:
            http.get_json("https://a.example/x")
        except http.Status as e:
            return [e.kind, e.status, e.body, e.retry_after, e.retryable]

    assert _run(host, caught).details == ["status", 429, "slow", 7.0, True]
    host = TestHost().stub_http_error("https://a.example/x", http.Network("connection refused"))
    r = _run(host, lambda: http.get("https://a.example/x"))
    assert (r.retryable, r.message) == (True, "network error: connection refused")
    long = "é" * 1000
    host = TestHost().stub_http("https://a.example/x", 500, long)
    r = _run(host, lambda: http.get("https://a.example/x").error_for_status())
    assert len(r.message.encode()) == len("server answered 500: ") + 1024


def test_stubs_queue_and_the_last_repeats():
    host = (TestHost().stub_http("https://a.example/n", 200, "1").stub_http("https://a.example/n", 200, "2"))
    got = _run(host, lambda: [http.get("https://a.example/n").text() for _ in range(3)])
    assert got.details == ["1", "2", "2"]


def test_redirects_of_get_are_followed_up_to_the_limit():
    host = (TestHost()
            .stub_http("https://a.example/old", 302, "", headers=[("Location", "/new")])
            .stub_http("https://a.example/new", 200, "here"))
    assert _run(host, lambda: http.get("https://a.example/old").text()).details == "here"
    assert [x.url for x in host.http_requests] == ["https://a.example/old", "https://a.example/new"]
    assert _run(host, lambda: http.get("https://a.example/old", max_redirects=0).status).details == 302
    # A POST is not redirected by a 302, and a 303 turns it into a bodiless GET.
    assert _run(host, lambda: http.post_json("https://a.example/old", 1).status).details == 302
    host = (TestHost()
            .stub_http("https://a.example/form", 303, "", headers=[("location", "https://b.example/done")])
            .stub_http("https://b.example/done", 200, "ok"))
    assert _run(host, lambda: http.post_json("https://a.example/form", {"a": 1}).text()).details == "ok"
    hop = host.http_requests[1]
    assert (hop.method, hop.url, hop.body) == ("GET", "https://b.example/done", b"")
    loop = TestHost().stub_http("https://a.example/loop", 301, "", headers=[("location", "/loop")])
    assert _run(loop, lambda: http.get("https://a.example/loop").status).details == 301
    assert len(loop.http_requests) == 6, "the first request and five redirects"
    rel = TestHost().stub_http("https://a.example/r", 302, "", headers=[("location", "next")])
    r = _run(rel, lambda: http.get("https://a.example/r"))
    assert r.message == "invalid request: redirect to 'next': relative paths are not followed"


@pytest.mark.parametrize("call, words", [
    (lambda: http.get("api.example.com/x"), "'api.example.com/x' is not an absolute URL"),
    (lambda: http.get("https:///x"), "'https:///x' has no host"),
    (lambda: http.get("ftp://a.example/"), "scheme 'ftp' of 'ftp://a.example/'"),
    (lambda: http.request("GET X", "https://a.example/"), "method 'GET X' is not an HTTP method name"),
    (lambda: http.get("https://a.example/", headers={"bad name": "1"}), "header name 'bad name'"),
    (lambda: http.get("https://a.example/", headers={"x": "a\r\nb"}), "holds a line break"),
    (lambda: http.get("https://a.example/", headers=[("x",)]), "is not a (name, value) pair"),
    (lambda: http.get("https://a.example/", timeout=0), "timeout 0: give a positive number"),
    (lambda: http.get("https://a.example/", max_redirects=-1), "max_redirects -1"),
    (lambda: http.request("POST", "https://a.example/", body=1), "the body must be bytes or str, not int"),
    (lambda: http.request("POST", "https://a.example/", body="a", json=1), "give body or json, not both"),
    (lambda: http.post_json("https://a.example/", {1, 2}), "the JSON body cannot be serialized"),
])
def test_bad_requests_say_what_is_wrong_and_send_nothing(call, words):
    host = TestHost().stub_http("https://a.example/*", 200, "")
    r = _run(host, call)
    assert not r.retryable and r.message.startswith("invalid request: ") and words in r.message, r.message
    assert host.http_requests == []


def test_headers_the_host_sets_and_the_request_count_are_refused():
    host = TestHost().stub_http("https://a.example/*", 200, "{}")
    r = _run(host, lambda: http.get("https://a.example/", headers={"Transfer-Encoding": "chunked"}))
    assert r.message == "request denied by the host: header 'Transfer-Encoding' is set by the host, not by jobs"

    def many():
        for i in range(limits.HTTP_MAX_REQUESTS + 1):
            http.get(f"https://a.example/{i}")

    r = _run(host, many)
    assert (r.retryable, r.message) == (False, "request over the run's limits: the run's request or connection limit")
    assert _run(host, lambda: http.get("https://a.example/again").status).details == 200, "the count is per run"


def test_a_non_json_body_is_invalid_and_bytes_come_back_as_sent():
    host = TestHost().stub_http("https://a.example/b", 200, b"\xff\x00not json")
    r = _run(host, lambda: http.get_json("https://a.example/b"))
    assert r.message.startswith("invalid request: response body is not the expected JSON")
    assert _run(host, lambda: list(http.get("https://a.example/b").bytes()[:2])).details == [255, 0]
    assert _run(host, lambda: http.get("https://a.example/b").text()[0]).details == "\ufffd"


def test_stub_arguments_are_checked():
    with pytest.raises(TypeError, match="http.HttpError"):
        TestHost().stub_http_error("https://a.example/", "boom")
    with pytest.raises(TypeError, match="str key"):
        TestHost().config("k", 1)

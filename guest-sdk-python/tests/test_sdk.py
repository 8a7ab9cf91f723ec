"""The Python SDK under its native test host: the rules a job relies on."""

import pytest

import quartzite_sdk as q
from quartzite_sdk import limits
from quartzite_sdk.testing import RunFailed, TestHost


class Counter(q.Job):
    name = "counter"
    version = "1.2.3"
    overlap = q.Overlap.FORBID

    def run(self, ctx):
        count = q.kv.get_json("count", 0) + 1
        q.kv.set_json("count", count)
        q.log.info(f"run {count} of fire {ctx.fire_id}")
        return {"count": count, "who": (ctx.data or {}).get("who")}


def test_kv_survives_runs_and_data_arrives_as_a_dict():
    host = TestHost({"who": "py"})
    assert host.run(Counter).details == {"count": 1, "who": "py"}
    assert host.run(Counter).details == {"count": 2, "who": "py"}
    assert host.kv_json("count") == 2
    assert host.messages() == ["run 1 of fire test-fire-1", "run 2 of fire test-fire-2"]


def test_describe_takes_the_class_attributes():
    info = Counter().describe()
    assert (info.name, info.version, info.overlap) == ("counter", "1.2.3", q.Overlap.FORBID)


class Flaky(q.Job):
    def run(self, ctx):
        if ctx.attempt < 3:
            raise q.Retry(f"attempt {ctx.attempt} fails")
        if ctx.data == "fatal":
            raise q.Fatal("bad input")
        return "ok"


def test_retry_fatal_and_unexpected_errors_are_told_apart():
    r = TestHost(attempt=1).run(Flaky, expect_ok=False)
    assert (r.ok, r.retryable, r.message) == (False, True, "attempt 1 fails")
    r = TestHost("fatal", attempt=3).run(Flaky, expect_ok=False)
    assert (r.ok, r.retryable, r.message) == (False, False, "bad input")
    assert TestHost(attempt=3).run(Flaky).details == "ok"

    class Broken(q.Job):
        def run(self, ctx):
            return {}["missing"]

    r = TestHost().run(Broken, expect_ok=False)
    assert r.retryable and r.message == "KeyError: 'missing'"
    with pytest.raises(RunFailed, match="retryable"):
        TestHost().run(Broken)


class Steps(q.Job):
    def run(self, ctx):
        done = 0
        with q.lock("steps", timeout=1) as guard:
            while done < 10 and not q.cancelled():
                done += 1
            return q.Outcome({"done": done, "token": guard.fencing_token}, new_data={"last": done})


def test_cancellation_locks_and_new_data():
    host = TestHost(cancel_after_checks=3)
    r = host.run(Steps)
    assert r.details == {"done": 3, "token": 1}
    assert r.new_data == {"last": 3}
    assert host.data_json == '{"last": 3}'
    assert host.held == {}, "the lock is released after the block"
    host.hold_lock_elsewhere("steps")
    r = host.run(Steps, expect_ok=False)
    assert r.retryable and "not acquired within 1000 ms" in r.message
    r = TestHost(cancel_after_checks=0).run(Steps, expect_ok=False)
    assert (r.retryable, r.message) == (True, "run cancelled")


def _run_body(host, body):
    class Probe(q.Job):
        def run(self, ctx):
            return body()

    return host.run(Probe, expect_ok=False)


def test_kv_limits_match_the_host():
    r = _run_body(TestHost(), lambda: q.kv.set("k" * (limits.MAX_KV_KEY + 1), b"x"))
    assert r.message == "invalid argument: kv key is 257 bytes; the limit is 256"
    assert not r.retryable
    r = _run_body(TestHost(), lambda: q.kv.get(""))
    assert r.message == "invalid argument: kv key is empty"
    host = TestHost(kv_max_keys=2, kv_max_bytes=10)

    def fill():
        q.kv.set("a", b"12345")
        q.kv.set("b", b"12345")
        q.kv.set("a", b"123456")

    r = _run_body(host, fill)
    assert "at most 2 keys and 10 bytes" in r.message
    assert host.kv["a"] == b"12345"
    r = _run_body(TestHost(max_kv_value=4), lambda: q.kv.set("a", b"12345"))
    assert r.message == "limit exceeded: kv value is 5 bytes; the limit is 4"


def test_events_follow_the_host_rules_and_a_retry_emits_once():
    for bad, words in [("report done", "contains ' '"), ("-x", "must start"), ("", "must be 1 to 128")]:
        r = _run_body(TestHost(), lambda bad=bad: q.emit(bad, 1))
        assert words in r.message and not r.retryable
    r = _run_body(TestHost(), lambda: q.emit("ok", "x" * limits.MAX_EVENT_PAYLOAD))
    assert r.message.startswith("limit exceeded: event payload is")
    host = TestHost(fire_id="f1")
    for _ in range(2):
        _run_body(host, lambda: q.emit("a.done", {"n": 1}))
    assert [(e.name, e.payload) for e in host.emitted] == [("a.done", {"n": 1})]
    host = TestHost(event=("order.created", {"id": 7}))
    r = host.run(type("Reader", (q.Job,), {"run": lambda self, ctx: ctx.event.payload}))
    assert r.details == {"id": 7}


def test_locks_are_bounded():
    r = _run_body(TestHost(), lambda: q.lock(""))
    assert r.message == "invalid argument: lock name must be 1 to 256 bytes"
    r = _run_body(TestHost(), lambda: [q.lock(f"l{i}") for i in range(limits.MAX_LOCKS_HELD + 1)])
    assert r.message == "limit exceeded: a run may hold at most 16 locks"


def test_logs_past_the_cap_are_dropped_and_the_clock_is_fake():
    host = TestHost()

    def loud():
        for _ in range(20):
            q.log.info("y" * 8192)
        return q.now().isoformat()

    r = _run_body(host, loud)
    assert r.details == "2030-01-01T00:00:00+00:00"
    assert len(host.logs) == 16 and all(len(line.message) == 4096 for line in host.logs)
    assert host.logs_dropped == 4
    host.advance(90)
    assert _run_body(host, lambda: q.now().minute).details == 1


def test_outside_a_run_host_calls_say_how_to_test():
    with pytest.raises(RuntimeError, match="TestHost"):
        q.kv.get("x")


def test_oversized_output_fails_the_run():
    r = _run_body(TestHost(), lambda: "x" * limits.MAX_OUTPUT_BYTES)
    assert "bytes of details and data" in r.message

from quartzite_sdk.testing import TestHost

from job import {{type_name}}


def test_greets_and_counts_across_runs():
    host = TestHost({"name": "test"})
    host.run({{type_name}})
    result = host.run({{type_name}})
    assert result.details == {"greeting": "hello, test", "count": 2}
    assert host.kv_json("count") == 2
    assert host.messages()[1].startswith("hello, test (run 2")

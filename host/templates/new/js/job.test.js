import { test } from "node:test";
import assert from "node:assert/strict";
import { TestHost } from "quartzite-sdk/testing";
import {{type_name}} from "./job.js";

test("greets and counts across runs", () => {
  const host = new TestHost({ data: { name: "test" } });
  host.run({{type_name}});
  const result = host.run({{type_name}});
  assert.deepEqual(result.details, { greeting: "hello, test", count: 2 });
  assert.equal(host.kvJson("count"), 2);
  assert.ok(host.messages()[1].startsWith("hello, test (run 2"));
});

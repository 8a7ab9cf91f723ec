"""counter-py: keeps a count in the job's durable kv state, so it survives
across runs, restarts and nodes. With data {"fail_attempts": N} the first N
attempts of every fire fail with a retry, to show the retry policy at work."""

import quartzite_sdk as q


class Counter(q.Job):
    name = "counter-py"
    version = "1.0.0"
    description = "counts its runs in durable kv state (Python)"
    # Two runs at once would both read the same count and lose an update.
    overlap = q.Overlap.FORBID

    def run(self, ctx: q.Context):
        data = ctx.data or {}
        if ctx.attempt <= data.get("fail_attempts", 0):
            raise q.Retry(f"attempt {ctx.attempt} fails on purpose")
        count = q.kv.get_json("count", 0) + 1
        q.kv.set_json("count", count)
        q.kv.set("last-fire", ctx.fire_id)
        q.log.info(f"run number {count}")
        return {"count": count, "attempt": ctx.attempt}


q.export(Counter)

"""{{name}}: greets whoever the job data names and counts its runs in the
job's durable kv state."""

import quartzite_sdk as q


class {{type_name}}(q.Job):
    name = "{{name}}"
    version = "0.1.0"
    description = "greets and counts its runs"

    def run(self, ctx: q.Context):
        data = ctx.data or {}  # the job data, e.g. data = { name = "world" }
        name = data.get("name", "world")
        count = q.kv.get_json("count", 0) + 1
        q.kv.set_json("count", count)
        q.log.info(f"hello, {name} (run {count}, fire {ctx.fire_id})")
        return {"greeting": f"hello, {name}", "count": count}


q.export({{type_name}})

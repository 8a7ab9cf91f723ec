"""noop-py: does nothing, in Python: what the host path costs for a Python job."""

import quartzite_sdk as q


class Noop(q.Job):
    name = "noop-py"
    version = "1.0.0"

    def run(self, ctx):
        return None


q.export(Noop)

"""report-py: a long job. Takes the cluster lock `report` so only one runs at a
time, works in steps, checkpoints its progress per fire in kv, and stops early
when the host cancels the run (timeout or shutdown); a retry of the same fire
resumes from the checkpoint. When done it emits `report.done`.

With data {"ignore_cancel": true} it never looks at cancelled(): the host then
stops it when the run's grace period after the timeout is over."""

import time

import quartzite_sdk as q


class Report(q.Job):
    name = "report-py"
    version = "1.0.0"
    description = "builds a report in steps under a cluster lock; stops when cancelled (Python)"
    overlap = q.Overlap.FORBID

    def run(self, ctx: q.Context):
        data = {"steps": 5, "step_ms": 100, "lock_timeout_ms": 2000, "ignore_cancel": False}
        data.update(ctx.data or {})
        steps = data["steps"]
        with q.lock("report", timeout=data["lock_timeout_ms"] / 1000) as guard:
            checkpoint = f"checkpoint/{ctx.fire_id}"
            done = q.kv.get_json(checkpoint, 0)
            if done:
                q.log.info(f"resuming fire {ctx.fire_id} at step {done}")
            while done < steps:
                if not data["ignore_cancel"] and q.cancelled():
                    q.log.info(f"cancelled after {done} of {steps} steps")
                    raise q.Retry(f"cancelled after {done} of {steps} steps")
                time.sleep(data["step_ms"] / 1000)
                done += 1
                q.kv.set_json(checkpoint, done)
                q.log.info(f"step {done} of {steps} done")
            q.kv.delete(checkpoint)
            token = guard.fencing_token
        q.emit("report.done", {"steps": done, "fire": ctx.fire_id})
        return {"steps": done, "fencing_token": token}


q.export(Report)

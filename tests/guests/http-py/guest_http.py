"""A test guest written with the Python SDK: makes the requests its data names
and reads config, so host tests can check the SDK's config and http against
the real host. The same data and details as tests/guests/http-client (Rust):

    {"requests": [{"url": "http://127.0.0.1:8080/a", "method": "GET",
                   "headers": [["x-a", "1"]], "body": "...", "max_redirects": 0}],
     "config": true}

Each request's result goes into the details' "results": {"status", "body",
"content_type"} or {"error": "denied" | "limit" | "network" | "invalid",
"message"}; with "config" the details' "config" holds {"all", "channel"}.
"""

import quartzite_sdk as q
from quartzite_sdk import config, http


class GuestHttp(q.Job):
    name = "guest-http-py"
    version = "0.1.0"
    description = "makes the HTTP requests its data names (Python SDK)"

    def run(self, ctx):
        data = ctx.data or {}
        results = []
        for r in data.get("requests", []):
            try:
                resp = http.request(
                    r.get("method", "GET"),
                    r["url"],
                    headers=[tuple(h) for h in r.get("headers", [])],
                    body=r.get("body"),
                    max_redirects=r.get("max_redirects", http.DEFAULT_MAX_REDIRECTS),
                )
            except http.HttpError as e:
                results.append({"error": e.kind, "message": str(e)})
            else:
                results.append({
                    "status": resp.status,
                    "body": resp.text(),
                    "content_type": resp.header("content-type"),
                })
        cfg = None
        if data.get("config"):
            cfg = {"all": sorted([k, v] for k, v in config.get_all().items()),
                   "channel": config.get("channel")}
        return {"results": results, "config": cfg}


q.export(GuestHttp)

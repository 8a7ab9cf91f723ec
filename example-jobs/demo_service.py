#!/usr/bin/env python3
"""The small local HTTP service `./dev.sh demo` starts for the notify and sync
examples, on 127.0.0.1 only.

  POST /hooks/notify   a webhook: wants `Authorization: Bearer <token>` (the
                       token is the demo's secret); answers 503 with
                       Retry-After: 1 to the first try of each idempotency key,
                       then 200, so the demo shows a retry
  GET  /api/items      a paged JSON API: ?limit=N&cursor=C ->
                       {"items": [...], "next_cursor": "..." | null}
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = sys.argv[2] if len(sys.argv) > 2 else "demo-webhook-token"
ITEMS = [{"id": i, "name": f"item-{i}"} for i in range(1, 26)]
seen_keys = set()


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if self.path != "/hooks/notify":
            return self.answer(404, {"error": "no such hook"})
        length = int(self.headers.get("content-length") or 0)
        message = json.loads(self.rfile.read(length) or b"{}") or {}
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.answer(401, {"error": "bad credential"})
        key = self.headers.get("idempotency-key", "")
        if key not in seen_keys:
            seen_keys.add(key)
            return self.answer(503, {"error": "warming up"}, [("retry-after", "1")])
        print(f"demo webhook: {message.get('channel')}: {message.get('text')}", flush=True)
        return self.answer(200, {"ok": True})

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/api/items":
            return self.answer(404, {"error": "not found"})
        q = parse_qs(url.query)
        limit = int(q.get("limit", ["10"])[0])
        start = int(q.get("cursor", ["0"])[0])
        page = ITEMS[start:start + limit]
        nxt = start + limit
        self.answer(200, {"items": page, "next_cursor": str(nxt) if nxt < len(ITEMS) else None})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8787
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

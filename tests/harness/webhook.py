"""A real HTTP endpoint behind a Prefect notification block (CustomWebhookNotificationBlock).

``with notification_hook(monkeypatch, "ops-alerts") as bodies:`` starts the receiver on a free port, saves the
block, points ``CHARHUB_OPS_NOTIFY_BLOCK`` at it and yields the list of request bodies received.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["notification_hook", "wait_for_body"]


@contextmanager
def notification_hook(monkeypatch, block_name: str) -> Iterator[list[str]]:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    bodies: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        CustomWebhookNotificationBlock(name=block_name, url=f"http://127.0.0.1:{server.server_port}/hook",
                                       json_data={"text": "{{subject}}: {{body}}"}).save(block_name, overwrite=True)
        monkeypatch.setenv("CHARHUB_OPS_NOTIFY_BLOCK", f"custom-webhook/{block_name}")
        yield bodies
    finally:
        server.shutdown()
        server.server_close()


def wait_for_body(bodies: list[str], *words: str, timeout: float = 30) -> str:
    """The first body received holding every one of ``words`` (waiting up to ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [b for b in bodies if all(w in b for w in words)]
        if hits:
            return hits[0]
        time.sleep(0.3)
    raise AssertionError(f"no notification containing {words}; received: {bodies}")

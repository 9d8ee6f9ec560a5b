"""Bluesky and Mastodon as HTTP servers on 127.0.0.1, answering from their documented APIs.

The answers are synthetic, built from the shapes the APIs document: Bluesky's XRPC
``com.atproto.server.createSession`` and ``com.atproto.repo.createRecord`` (errors as
``{"error", "message"}``), Mastodon's ``GET /api/v2/instance`` and ``POST /api/v1/statuses``
(errors as ``{"error"}``). A test scripts the next answers of a route and reads back every request
the server got.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BLUESKY_DID = "did:plc:z72i7hdynmk6r22z27h6tvur"
BLUESKY_HANDLE = "doppel.bsky.social"
BLUESKY_RKEY = "3kq2gxk4aqk2c"


@dataclass
class Request:
    """One request the fake network received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeNetwork:
    """Scripted answers per ``(method, path)``: each answer is used once, the last one stays."""

    routes: dict[tuple[str, str], list[tuple[int, Any, dict[str, str]]]] = field(
        default_factory=dict
    )
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(
        self,
        method: str,
        path: str,
        status: int,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        replace: bool = True,
    ) -> None:
        """Answer ``method path`` with ``status`` and the JSON ``body`` (``replace``: from now on;
        otherwise after the answers already scripted)."""
        with self._lock:
            answers = self.routes.setdefault((method, path), [])
            if replace:
                answers.clear()
            answers.append((status, body, headers or {}))

    def calls(self, method: str, path: str) -> list[Request]:
        """The requests received for one route, oldest first."""
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def answer(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append(request)
            answers = self.routes.get((request.method, request.path))
            if not answers:
                return 404, {"error": "NotFound", "message": "no such route"}, {}
            return answers.pop(0) if len(answers) > 1 else answers[0]


def _handler(network: FakeNetwork) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            path = self.path.split("?", 1)[0]
            request = Request(self.command, path, dict(self.headers.items()), body)
            status, payload, headers = network.answer(request)
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def serve(network: FakeNetwork) -> Iterator[FakeNetwork]:
    """Run ``network`` on a free port of 127.0.0.1 until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(network))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    network.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield network
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def bluesky() -> FakeNetwork:
    """A Bluesky PDS whose login and post succeed."""
    network = FakeNetwork()
    network.reply(
        "POST",
        "/xrpc/com.atproto.server.createSession",
        200,
        {
            "accessJwt": "access-jwt-1",
            "refreshJwt": "refresh-jwt-1",
            "handle": BLUESKY_HANDLE,
            "did": BLUESKY_DID,
            "active": True,
        },
    )
    network.reply(
        "POST",
        "/xrpc/com.atproto.repo.createRecord",
        200,
        {
            "uri": f"at://{BLUESKY_DID}/app.bsky.feed.post/{BLUESKY_RKEY}",
            "cid": "bafyreig2fjxi3rptqdgylg7e5hmjl6mcke7rn2b6cugzlqq3i4zu6rq52q",
            "commit": {"cid": "bafyreib2", "rev": "3kq2gxk4b3s2c"},
            "validationStatus": "valid",
        },
    )
    return network


def mastodon(max_characters: int | None = 500) -> FakeNetwork:
    """A Mastodon server with that character limit (None: its instance answer omits it)."""
    network = FakeNetwork()
    statuses: dict[str, Any] = {"max_media_attachments": 4, "characters_reserved_per_url": 23}
    if max_characters is not None:
        statuses["max_characters"] = max_characters
    network.reply(
        "GET",
        "/api/v2/instance",
        200,
        {
            "domain": "mastodon.example",
            "title": "Mastodon",
            "version": "4.3.0",
            "configuration": {"statuses": statuses},
        },
    )
    network.reply(
        "POST",
        "/api/v1/statuses",
        200,
        {
            "id": "113371093580426345",
            "created_at": "2026-01-01T06:00:00.000Z",
            "visibility": "public",
            "uri": "https://mastodon.example/users/doppel/statuses/113371093580426345",
            "url": "https://mastodon.example/@doppel/113371093580426345",
            "content": "<p>posted</p>",
        },
    )
    return network
